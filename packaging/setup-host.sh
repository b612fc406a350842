#!/usr/bin/env bash
# Sets up what building and running moat needs on a Debian or Ubuntu machine, and does
# nothing that is already done: Rust's cargo (said, not installed), protoc and the well-known
# protos (the etcd client's build), nftables, and a running Docker engine (Debian's docker.io,
# started if it is installed but not running). Installs need root; otherwise it says in one
# line what is missing. Extra Debian packages to check for can be given as arguments, each as
# COMMAND=PACKAGE (tests/setup.sh adds the test tools so).
set -euo pipefail

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }

missing=()
command -v protoc >/dev/null 2>&1 && [ -e /usr/include/google/protobuf/timestamp.proto ] || missing+=(protobuf-compiler libprotobuf-dev)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
docker info >/dev/null 2>&1 || command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
for wanted in "$@"; do
  command -v "${wanted%%=*}" >/dev/null 2>&1 || missing+=("${wanted#*=}")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: missing Debian packages (install them as root): ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: the Docker engine is not running: start it as root (systemctl start docker, or dockerd)" >&2
    exit 1
  fi
  echo "setup: starting dockerd" >&2
  if command -v systemctl >/dev/null 2>&1 && systemctl start docker >/dev/null 2>&1; then
    :
  else
    (setsid dockerd >/tmp/moat-dockerd.log 2>&1 &)
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not come up; see /tmp/moat-dockerd.log" >&2; exit 1; }
fi
