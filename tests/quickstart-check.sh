#!/usr/bin/env bash
# Runs ./quickstart.sh in a throw-away home as a new user would, checks that it prints the
# seed's predictions, then removes what it made (endpoint, containers, daemon, home).
set -euo pipefail
cd "$(dirname "$0")/.."
export MOAT_HOME=$(mktemp -d)
moat=target/release/moat
cleanup() {
  "$moat" online-endpoint delete -n quickstart-ep --yes >/dev/null 2>&1 || true
  if [ -f "$MOAT_HOME/serve.pid" ]; then
    pid=$(cat "$MOAT_HOME/serve.pid")
    # The first SIGTERM drains (shutdown_delay_s); the second cuts the delay short.
    kill "$pid" 2>/dev/null || true
    sleep 0.5
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # The kernel rules stay when the daemon stops (fail closed); this home is gone for good.
  [ -f "$MOAT_HOME/id" ] && nft delete table inet "moat_$(cat "$MOAT_HOME/id")" 2>/dev/null || true
  rm -rf "$MOAT_HOME"
}
trap cleanup EXIT
out=$(./quickstart.sh)
echo "$out"
grep -q '^\[11055\.97724552[0-9]*,4503\.07953610[0-9]*\]$' <<<"$out" || { echo "quickstart-check: predictions missing" >&2; exit 1; }
grep -q '^scoring_uri: http://127\.0\.0\.1:[0-9]*/endpoints/quickstart-ep/score$' <<<"$out" || { echo "quickstart-check: scoring_uri missing" >&2; exit 1; }
echo "quickstart-check: ok" >&2
