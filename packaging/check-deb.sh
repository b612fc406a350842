#!/usr/bin/env bash
# CI: builds the Debian package and installs it into a throw-away root with dpkg --root (its
# own dpkg database; the dependencies are not in it, hence --force-depends), then checks what
# a user would find there: the binaries run, the unit, the config as a conffile, the man page
# and completions, and the package's control fields. The root is removed, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/build-deb.sh >/dev/null 2>&1 || bash packaging/build-deb.sh
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
deb=$(ls target/debian/moat_"$version"-1_*.deb)
root=$(mktemp -d /tmp/moat-deb-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"

fail() { echo "check-deb: $*" >&2; exit 1; }
control=$(dpkg-deb --field "$deb")
grep -q '^Depends:.*docker.io' <<<"$control" || fail "Depends lacks docker.io: $control"
grep -q '^Depends:.*nftables' <<<"$control" || fail "Depends lacks nftables: $control"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/moat/config.yaml || fail "config.yaml is not a conffile"

out=$(dpkg --root="$root" --force-depends --log=/dev/null -i "$deb" 2>&1) || fail "dpkg -i: $out"
dpkg --root="$root" -s moat | grep -q '^Status: install ok installed' || fail "not installed"
for f in usr/bin/moat usr/bin/moat-bench lib/systemd/system/moat.service etc/moat/config.yaml \
    usr/share/man/man1/moat.1.gz usr/share/bash-completion/completions/moat \
    usr/share/zsh/vendor-completions/_moat usr/share/fish/vendor_completions.d/moat.fish \
    usr/share/doc/moat/examples/cloud-init.yaml; do
    [[ -e $root/$f ]] || fail "$f missing"
done
[[ $("$root/usr/bin/moat" --version) == "moat $version" ]] || fail "moat --version"
"$root/usr/bin/moat-bench" --help >/dev/null || fail "moat-bench --help"
cmp -s "$root/etc/moat/config.yaml" packaging/config.yaml || fail "config differs"
out=$(dpkg --root="$root" --force-depends --log=/dev/null -r moat 2>&1) || fail "dpkg -r: $out"
[[ ! -e $root/usr/bin/moat && -e $root/etc/moat/config.yaml ]] || fail "remove keeps the conffile, and only it"
echo "check-deb: $(basename "$deb") builds, installs, runs and removes cleanly"
