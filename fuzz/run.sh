#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on stable Rust (no
# nightly needed: the sanitizer-coverage passes are -C flags; moat is safe Rust, so a crash
# is a panic, which libFuzzer catches without AddressSanitizer) and runs them.
#
#   fuzz/run.sh                 every target, 1,000,000 inputs each (FUZZING.md's runs)
#   fuzz/run.sh -runs=20000     every target briefly (CI)
#   fuzz/run.sh spec -max_total_time=60
#
# Each target starts from its corpus in fuzz/corpus/<target> (kept small in the repository)
# and writes what it learns to a scratch copy; crashes land in fuzz/artifacts/<target>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
targets=(proxy_protocol credentials dns_query client_hello proxy_target spec container_answer client_request head_syntax)
if [[ $# -gt 0 && $1 != -* ]]; then targets=("$1"); shift; fi
args=("$@")
[[ ${#args[@]} -eq 0 ]] && args=(-runs=1000000)

export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
# An explicit target keeps the instrumentation off build scripts and proc macros.
triple=$(rustc -vV | sed -n 's/^host: //p')
cargo build --manifest-path "$here/Cargo.toml" --release --locked --bins --target "$triple" -j "$(nproc)"
bin="$CARGO_TARGET_DIR/$triple/release"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "$here/artifacts/$target" "$scratch/$target"
    cp -r "$here/corpus/$target/." "$scratch/$target/" 2>/dev/null || true
    echo "== $target ${args[*]}"
    "$bin/$target" "$scratch/$target" -artifact_prefix="$here/artifacts/$target/" \
        -max_len=65536 -print_final_stats=1 "${args[@]}" 2>&1 | grep -E "^(#[0-9]+ *DONE|Done|stat::|INFO: Seed|==|.*panicked|SUMMARY)" || true
    # libFuzzer exits non-zero on a crash; grep above keeps the output short, so ask again.
    if [[ -n $(ls -A "$here/artifacts/$target") ]]; then
        echo "fuzz target $target crashed: see $here/artifacts/$target" >&2
        exit 1
    fi
done
