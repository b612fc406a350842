#!/usr/bin/env bash
# Builds the image moat-test-scorer:latest (or the tag given as $1) of the test scorer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../../examples/static-image.sh" moat-test-scorer test-scorer "${1:-moat-test-scorer:latest}" "$here"
