#!/usr/bin/env bash
# The test command: builds the sample scorer image the Docker tests run, then every test of
# the workspace. Needs a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
examples/sample-scorer/build-image.sh
tests/test-scorer/build-image.sh

cargo nextest run --workspace --locked "$@"
