#!/usr/bin/env bash
# Refreshes audit/advisory-db from a checkout of https://github.com/rustsec/advisory-db:
# the advisories of every crate in moat's lock files (and only those: the check needs no
# more, and the repository stays small), with the list of crates they were taken for and
# the database's commit. Run it when a dependency is added (audit/check.sh says so) and now
# and then for new advisories:
#
#   git clone https://github.com/rustsec/advisory-db /tmp/advisory-db
#   audit/refresh.sh /tmp/advisory-db
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source_db=${1:?give a checkout of rustsec/advisory-db}
db="$here/advisory-db"
rm -rf "$db"
mkdir -p "$db/crates"
"$here/crates.sh" > "$here/covered.txt"
while read -r crate; do
    if [[ -d "$source_db/crates/$crate" ]]; then
        cp -r "$source_db/crates/$crate" "$db/crates/"
    fi
done < "$here/covered.txt"
cp "$source_db/LICENSE.txt" "$db/"
git -C "$source_db" log -1 --format='%H %cI' > "$here/advisory-db.commit"
echo "$(ls "$db/crates" | wc -l) crates with advisories, of $(wc -l < "$here/covered.txt") in the lock files"
