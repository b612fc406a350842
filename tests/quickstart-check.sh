#!/usr/bin/env bash
# Runs ./quickstart.sh in a throw-away home as a new user would, checks that it prints the
# seed's predictions, then removes what it made (endpoint, containers, daemon, home).
set -euo pipefail
cd "$(dirname "$0")/.."
export MOAT_HOME=$(mktemp -d)
moat=target/release/moat
cleanup() {
  "$moat" online-endpoint delete -n quickstart-ep --yes >/dev/null 2>&1 || true
  [ -f "$MOAT_HOME/serve.pid" ] && kill "$(cat "$MOAT_HOME/serve.pid")" 2>/dev/null || true
  sleep 1
  rm -rf "$MOAT_HOME"
}
trap cleanup EXIT
out=$(./quickstart.sh)
echo "$out"
grep -q '^\[11055\.97724552[0-9]*,4503\.07953610[0-9]*\]$' <<<"$out" || { echo "quickstart-check: predictions missing" >&2; exit 1; }
grep -q '^scoring_uri: http://127\.0\.0\.1:[0-9]*/endpoints/quickstart-ep/score$' <<<"$out" || { echo "quickstart-check: scoring_uri missing" >&2; exit 1; }
echo "quickstart-check: ok" >&2
