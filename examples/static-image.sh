#!/usr/bin/env bash
# Builds a workspace binary statically linked and a FROM-scratch image around it, so no
# registry is needed. Usage: static-image.sh PACKAGE BINARY TAG DOCKERFILE_FOLDER
set -euo pipefail
package=$1 binary=$2 tag=$3 dockerfile_dir=$(cd "$4" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
cd "$root"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --locked --target "$target" -p "$package"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$dockerfile_dir/Dockerfile" "$context/"
cp "target/$target/release/$binary" "$context/"
# Quiet unless it fails (the legacy builder's deprecation notice is noise here).
if ! out=$(docker build --quiet -t "$tag" "$context" 2>&1); then
  echo "$out" >&2
  exit 1
fi
echo "built $tag" >&2
