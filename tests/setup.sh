#!/usr/bin/env bash
# Sets up what moat's build and tests need on a fresh Debian machine, and does nothing that is
# already done: a running Docker engine (Debian's docker.io), docker-registry (the image-pull
# test), etcd-server and etcdctl (the fleet tests), protoc and the well-known protos (the
# etcd client's build), a C++ compiler (libFuzzer, for fuzz/run.sh), nft, cargo-nextest. Installs need root on Debian or Ubuntu; otherwise it
# says in one line what is missing.
set -euo pipefail

missing=()
command -v protoc >/dev/null 2>&1 && [ -e /usr/include/google/protobuf/timestamp.proto ] || missing+=(protobuf-compiler libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
docker info >/dev/null 2>&1 || command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)

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
  echo "setup: starting dockerd" >&2
  (setsid dockerd >/tmp/moat-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not come up; see /tmp/moat-dockerd.log" >&2; exit 1; }
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi
