#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a while (default 30 s each; set
# WEIR_FUZZ_SECONDS), on the stable toolchain: cargo-fuzz is installed from
# the crate registry when missing, and RUSTC_BOOTSTRAP=1 lets the stable
# compiler build with AddressSanitizer (the flag cargo-fuzz passes is
# otherwise nightly-only). A crash fails the run and leaves its input in
# fuzz/artifacts/TARGET/; add it to fuzz/regressions/TARGET/ (replayed by
# `scripts/fuzz.sh --replay`, which scripts/test.sh runs) and fix it.
#
#   scripts/fuzz.sh                 every target, WEIR_FUZZ_SECONDS each
#   scripts/fuzz.sh pgoutput        one target
#   scripts/fuzz.sh --replay        every saved regression input, once
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION="0.13.1"
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
export RUSTC_BOOTSTRAP=1

seconds="${WEIR_FUZZ_SECONDS:-30}"
replay=false
targets=()
for arg in "$@"; do
  case "$arg" in
    --replay) replay=true ;;
    *) targets+=("$arg") ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

for target in "${targets[@]}"; do
  seeds="fuzz/seeds/$target"
  # the pipeline files' seeds are the examples themselves
  [ "$target" = pipeline_file ] && seeds="examples"
  regressions="fuzz/regressions/$target"
  mkdir -p "fuzz/corpus/$target" "$regressions"
  if $replay; then
    # every saved input once: a crash found earlier must stay fixed
    echo "fuzz.sh: $target: replaying the saved inputs" >&2
    mkdir -p "$seeds"
    cargo fuzz run --fuzz-dir fuzz "$target" "$regressions" "$seeds" -- -runs=0
  else
    echo "fuzz.sh: $target: fuzzing for ${seconds}s" >&2
    mkdir -p "$seeds"
    cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "$seeds" "$regressions" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10
  fi
done
