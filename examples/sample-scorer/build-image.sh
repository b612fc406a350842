#!/usr/bin/env bash
# Builds the image moat-sample-scorer:latest (or the tag given as $1) of the sample scorer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../static-image.sh" moat-sample-scorer sample-scorer "${1:-moat-sample-scorer:latest}" "$here"
