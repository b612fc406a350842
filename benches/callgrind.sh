#!/usr/bin/env bash
# The instructions moat executes per proxied request, counted by valgrind's callgrind: user
# space only, and repeatable to a few tenths of a percent (unlike time on a shared machine).
#
#   sudo bash benches/callgrind.sh [MOAT (target/release/moat)] [REQUESTS (20000)] [BODY_FILE]
#
# Starts MOAT under callgrind with instrumentation off, in a throw-away home: one endpoint
# (key auth, public network access disabled so the access policy runs) whose deployment runs
# the sample scorer. Sends 2,000 requests to warm up, turns counting on, sends REQUESTS with
# moat-bench over 4 connections (the sample request, or BODY_FILE), turns counting off, and
# prints the instructions per request. Compare two builds by passing each binary (for one of
# an older commit: `git worktree add /tmp/before <commit>` and build it there). With RATE set
# (requests per second), the requests are sent at that rate (open loop) instead of as fast as
# moat answers: at a low rate every request finds the workers idle, as at a rate a load
# balancer spreads over many nodes, and what waking up costs is counted too. CALLGRIND_OPTS
# adds options (`--dump-instr=yes` with a `--profile profiling` build: costs by source line;
# `--cache-sim=yes --branch-sim=yes`: simulated cache misses and mispredicted branches, best
# with WORKERS=1, as callgrind runs all threads on one simulated cache). WORKERS is moat's
# worker threads (2).
# With PROXY=nginx (or nginx-log, with an access line like moat's), nginx is counted instead,
# under the same load: one worker process (`master_process off`), `proxy_pass` with keep-alive
# to the same scorer container, which moat (not counted) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/home.sh
. benches/home.sh
moat=$(realpath "${1:-target/release/moat}")
requests=${2:-20000}
body=$(realpath "${3:-examples/model-1/sample-request.json}")
bench=$(realpath "${BENCH:-target/release/moat-bench}")
need valgrind valgrind
need jq jq
[ -x "$bench" ] || cargo build --quiet --release --locked -p moat-bench
docker image inspect moat-sample-scorer:latest >/dev/null 2>&1 || examples/sample-scorer/build-image.sh >/dev/null

out=$(mktemp -d /tmp/moat-callgrind.XXXXXX)
export MOAT_HOME="$out/home"
mkdir -p "$MOAT_HOME"
proxy=${PROXY:-moat}
case $proxy in
moat | nginx | nginx-log) ;;
*) echo "PROXY is moat, nginx or nginx-log, not $proxy" >&2; exit 2 ;;
esac
[ "$proxy" = moat ] || need nginx nginx-light
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    remove_home_resources "$MOAT_HOME"
    [ -n "${KEEP:-}" ] || rm -rf "$out"
}
trap cleanup EXIT
counted() { # command...: runs it under callgrind, counting nothing until told
    # shellcheck disable=SC2086 # CALLGRIND_OPTS is a list of options
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out" ${CALLGRIND_OPTS:-} \
        "$@" 2>"$out/valgrind.log" &
    pid=$!
    pids+=("$pid")
}

serve=("$moat" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --workers "${WORKERS:-2}" --log-file "$MOAT_HOME/moat.log")
if [ "$proxy" = moat ]; then
    counted "${serve[@]}"
else
    "${serve[@]}" &
    pids+=($!)
fi
for _ in $(seq 600); do "$moat" online-endpoint list >/dev/null 2>&1 && break; sleep 0.1; done

sample_endpoint cg-bench "$out"
if [ "$proxy" != moat ]; then
    port=$(free_port)
    nginx_conf "$out/nginx.conf" "$port" "$container" "$([ "$proxy" = nginx ] || echo "$out/access.log")"
    counted nginx -p "$out" -c "$out/nginx.conf" -g 'daemon off; master_process off;'
    uri="http://127.0.0.1:$port/score"
    for _ in $(seq 600); do curl -s -o /dev/null "$uri" && break; sleep 0.1; done
fi

load() {
    "$bench" --json -c 4 ${RATE:+-q "$RATE"} -n "$1" -H 'Content-Type: application/json' -H "Authorization: Bearer $key" -D "$body" "$uri"
}
load 2000 >/dev/null
callgrind_control -i on "$pid" >/dev/null
load "$requests" >"$out/load.json"
callgrind_control -i off "$pid" >/dev/null
callgrind_control -d "$pid" >/dev/null
ok=$(jq '.status["200"] // 0' "$out/load.json")
[ "$ok" = "$requests" ] || { echo "only $ok of $requests requests answered 200: $(cat "$out/load.json")" >&2; exit 1; }
total=$(cat "$out"/callgrind.out* | awk '/^totals:/ {s += $2} END {printf "%d", s}')
counted_name="$(basename "$(dirname "$(dirname "$moat")")")/$(basename "$moat")"
[ "$proxy" = moat ] || counted_name="$proxy $(nginx -v 2>&1 | sed 's/.*nginx\///')"
echo "$counted_name: $((total / requests)) instructions per request ($total over $requests requests)"
