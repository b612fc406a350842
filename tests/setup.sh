#!/usr/bin/env bash
# Sets up what moat's build and tests need on a fresh Debian machine, and does nothing that is
# already done: what moat itself needs (packaging/setup-host.sh: protoc, nftables, a running
# Docker engine), then docker-registry (the image-pull test), etcd-server and etcdctl (the
# fleet tests), a C++ compiler (libFuzzer, for fuzz/run.sh), dpkg-deb (the package check) and
# cargo-nextest. Installs need root on Debian or Ubuntu; otherwise it says in one line what is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/setup-host.sh etcd=etcd-server etcdctl=etcd-client docker-registry=docker-registry c++=g++ dpkg-deb=dpkg

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi
