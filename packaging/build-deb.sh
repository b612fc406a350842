#!/usr/bin/env bash
# Builds the Debian package, target/debian/moat_<version>-1_<arch>.deb: moat and moat-bench,
# the systemd unit, the default config (a conffile), the man page, shell completions and the
# cloud-init example. Installs cargo-deb once if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb (once)" >&2
    cargo install cargo-deb --version 3.8.0 --locked
fi
cargo build --release --locked -p moat -p moat-bench
mkdir -p target/packaging
target/release/moat man > target/packaging/moat.1
target/release/moat completion bash > target/packaging/moat.bash
target/release/moat completion zsh > target/packaging/_moat
target/release/moat completion fish > target/packaging/moat.fish
cargo deb -p moat --no-build --locked "$@"
