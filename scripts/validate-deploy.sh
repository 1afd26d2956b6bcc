#!/usr/bin/env bash
# Validates deploy/k8s: the Kubernetes and KEDA schemas (npm's
# kubernetes-models packages), references between the manifests, and
# `weir validate` on the pipeline file the ConfigMap carries. Called by
# scripts/test.sh after the build; needs Node.js and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
weir="${WEIR_BIN:-target/debug/weir}"
if [ ! -x "$weir" ]; then
  echo "error: $weir not built (cargo build first)" >&2
  exit 1
fi
(cd deploy/validate && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
WEIR_BIN="$PWD/$weir" node deploy/validate/validate.mjs
