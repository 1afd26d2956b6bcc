#!/usr/bin/env bash
# Builds the WebAssembly guests in wasm/guests (the SDK's example functions
# and the test functions) for wasm32-wasip2, and copies the components to
# wasm/guests/out/NAME.wasm. Called by scripts/test.sh and by the tests
# when a component is missing; safe to run again (cargo rebuilds only what
# changed).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "guests: adding the wasm32-wasip2 target with rustup" >&2
  rustup target add wasm32-wasip2 >&2
fi

locked=()
[ -f wasm/guests/Cargo.lock ] && locked=(--locked)
cargo build --release --target wasm32-wasip2 "${locked[@]}" \
  --manifest-path wasm/guests/Cargo.toml --workspace >&2

mkdir -p wasm/guests/out
for wasm in wasm/guests/target/wasm32-wasip2/release/*.wasm; do
  name="$(basename "$wasm" .wasm)"
  cp "$wasm" "wasm/guests/out/${name//_/-}.wasm"
done
ls wasm/guests/out >&2
