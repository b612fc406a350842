#!/usr/bin/env bash
# Every crate name in moat's lock files, sorted, once each.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sed -n 's/^name = "\(.*\)"$/\1/p' "$root/Cargo.lock" "$root/fuzz/Cargo.lock" | sort -u
