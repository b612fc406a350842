#!/usr/bin/env bash
# Is moat-bench the bottleneck? It and wrk (Debian's package) load the same plain hyper
# server in turns (wrk, moat-bench, wrk, moat-bench, ...), closed loop, same connections;
# prints each tool's median rate over the rounds and their ratio.
#
#   bash benches/self-check.sh [ROUNDS (5)] [CONNECTIONS (16)] [SECONDS (5)]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5} connections=${2:-16} seconds=${3:-5}
command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null; }
command -v jq >/dev/null || { apt-get install -y -q jq >/dev/null; }
cargo build --release -q -p moat-bench
threads=$(nproc)

out=$(mktemp)
./target/release/plain-server 127.0.0.1:0 "$threads" >"$out" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
url="http://$(head -1 "$out")/score"

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
wrk_rates=() bench_rates=()
for round in $(seq "$rounds"); do
    w=$(wrk -t"$threads" -c"$connections" -d"${seconds}s" "$url" | awk '/Requests\/sec/ {print $2}')
    b=$(./target/release/moat-bench -c "$connections" -z "${seconds}s" --json "$url" | jq .achieved_rps)
    echo "round $round: wrk $w/s, moat-bench $b/s"
    wrk_rates+=("$w") bench_rates+=("$b")
done
w=$(printf '%s\n' "${wrk_rates[@]}" | median)
b=$(printf '%s\n' "${bench_rates[@]}" | median)
echo "median over $rounds rounds: wrk $w/s, moat-bench $b/s, moat-bench/wrk $(awk "BEGIN {printf \"%.2f\", $b / $w}")"
