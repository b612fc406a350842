#!/usr/bin/env bash
# Checks every crate in moat's lock files (the daemon's and the fuzz targets') against the
# RustSec advisories kept in audit/advisory-db, offline (CI has no way to fetch the
# database). Fails on any advisory not listed in audit/accepted.txt with its reason, and on a
# crate the kept advisories were not taken for (a new dependency: run audit/refresh.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

if ! cargo audit --version >/dev/null 2>&1; then
    echo "installing cargo-audit (once)"
    cargo install cargo-audit --version 0.22.2 --locked -j "$(nproc)"
fi

missing=$(comm -23 <("$here/crates.sh") <(sort -u "$here/covered.txt"))
if [[ -n $missing ]]; then
    echo "audit/advisory-db was not taken for these crates of the lock files; run audit/refresh.sh:" >&2
    echo "$missing" | sed 's/^/  /' >&2
    exit 1
fi

ignore=()
while read -r id _; do
    [[ -z $id || $id == \#* ]] && continue
    ignore+=(--ignore "$id")
done < "$here/accepted.txt"

echo "advisory database at $(cut -d' ' -f2 "$here/advisory-db.commit") (rustsec/advisory-db $(cut -c1-12 "$here/advisory-db.commit"))"
for lock in "$root/Cargo.lock" "$root/fuzz/Cargo.lock"; do
    cargo audit --db "$here/advisory-db" --no-fetch --no-yanked --stale --color never -f "$lock" "${ignore[@]}"
done
