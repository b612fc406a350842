#!/usr/bin/env bash
# Builds the sample scorer as a statically linked binary and the image moat-sample-scorer:latest
# (or the tag given as $1) from it. No registry is needed: the image is FROM scratch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tag=${1:-moat-sample-scorer:latest}
target=x86_64-unknown-linux-gnu
cd "$root"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --locked \
  --target "$target" -p moat-sample-scorer
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here/Dockerfile" "$context/"
cp "target/$target/release/sample-scorer" "$context/"
# Quiet unless it fails (the legacy builder's deprecation notice is noise here).
if ! out=$(docker build --quiet -t "$tag" "$context" 2>&1); then
  echo "$out" >&2
  exit 1
fi

echo "built $tag" >&2
