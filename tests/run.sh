#!/usr/bin/env bash
# The test command: sets up what the tests need (tests/setup.sh: Docker, etcd, protoc,
# docker-registry, cargo-nextest), builds the images the Docker tests run, then runs every
# test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
examples/sample-scorer/build-image.sh
tests/test-scorer/build-image.sh

cargo nextest run --workspace --locked "$@"
