#!/usr/bin/env bash
# Runs every test of weir on a fresh machine: installs what the tests need,
# then runs the whole workspace's tests. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust toolchain: present on the supported machines; install through rustup if missing.
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "error: cargo not found; install Rust (rustup) first" >&2
    exit 1
  fi
fi

# What the integration tests start themselves (a JDK and Maven for the
# Kafka broker, and its jars) is installed by scripts/deps.sh.
if [ -x scripts/deps.sh ]; then
  scripts/deps.sh
fi

# the WebAssembly guests the wasm tests run (adds the wasm32-wasip2 target)
bash scripts/build-guests.sh

# A fresh clone has nothing to reuse, so CI skips incremental state (it is
# most of a debug target directory's size).
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

cargo build --workspace --all-targets --locked
# the Kubernetes manifests in deploy/ (schemas, references, the shipped pipeline)
bash scripts/validate-deploy.sh
cargo test --workspace --locked -- --test-threads="${WEIR_TEST_THREADS:-2}"
# The fuzz targets build apart (sanitizers, their own target directory); in
# CI the test build is no longer needed, and its disk goes to them.
if [ "${CI:-}" = true ]; then
  rm -rf target/debug
fi
df -h . >&2
# a short run of every fuzz target (their seeds and saved regressions first)
WEIR_FUZZ_SECONDS="${WEIR_FUZZ_SECONDS:-20}" bash scripts/fuzz.sh
