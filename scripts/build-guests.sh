#!/usr/bin/env bash
# Builds the WebAssembly guests in wasm/guests (the SDK's example functions
# and the test functions) for wasm32-wasip2, and the Python examples in
# wasm/guests-python with componentize-py, into wasm/guests/out/NAME.wasm. Called by scripts/test.sh and by the tests
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

# The Python example (wasm/guests-python), made a component by
# componentize-py (from PyPI; it bundles CPython into the component).
COMPONENTIZE_PY_VERSION=0.25.1
if ! componentize-py --version 2>/dev/null | grep -q " ${COMPONENTIZE_PY_VERSION}\$"; then
  echo "guests: installing componentize-py ${COMPONENTIZE_PY_VERSION} with pip" >&2
  python3 -m pip install --quiet --disable-pip-version-check "componentize-py==${COMPONENTIZE_PY_VERSION}" >&2 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
         "componentize-py==${COMPONENTIZE_PY_VERSION}" >&2
fi
componentize_py="$(command -v componentize-py || echo "python3 -m componentize_py")"
for app in wasm/guests-python/*/app.py; do
  src="$(dirname "$app")"
  out="wasm/guests/out/python-$(basename "$src").wasm"
  # rebuild only when the source or the interface changed
  if [ ! -f "$out" ] || [ "$app" -nt "$out" ] || [ wasm/wit/weir-function.wit -nt "$out" ]; then
    (cd "$src" && $componentize_py -d ../../wit -w function componentize app -o "../../../$out" >&2)
  fi
done
ls wasm/guests/out >&2
