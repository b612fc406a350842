#!/usr/bin/env bash
# moat and nginx at the same time on the same CPU: what each costs a request, measured over
# the same seconds.
#
#   sudo bash benches/duel.sh [ROUNDS (6)] [SECONDS (5)] [RATE (5000)]
#
# On this VM a CPU is at times a fifth slower for spells of a few seconds (BENCHMARKS.md): two
# runs, even back to back, can differ by more than moat and nginx do, and compare.sh's rounds
# say more about the spells than about the proxies. Here the two run at once, one worker each,
# both on CPU 1, in two cgroups of equal CPU weight; each is loaded by its own moat-bench, and
# the load generators and the scorer container run on CPU 0. A slow spell slows both alike, so
# the ratio of their CPU time per request (user and system, from /proc, all their processes
# and threads) holds from round to round where each one's own figure does not.
#
# Two phases of ROUNDS runs of SECONDS each (after one warm-up run of each phase):
#   closed loop  16 connections each, as fast as they answer: CPU 1 is shared out between the
#                two by their weights, and the one that costs less a request answers more;
#   open loop    RATE requests a second each (coordinated-omission corrected latency).
# Each row is one run: both proxies' rates, CPU µs per request, p99 in µs and moat / nginx;
# then the medians. With LOG=1 nginx also writes an access line like moat's (nginx-log in
# compare.sh). MOAT=PATH duels another build of moat (a change's before and after, each
# against nginx) instead of this tree's release build. Needs two CPUs, root (cgroups, taskset),
# Docker, nginx, jq, and a release build of moat-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/home.sh
. benches/home.sh
rounds=${1:-6} seconds=${2:-5} rate=${3:-5000}
[ "$(nproc)" -ge 2 ] || { echo "duel.sh needs two CPUs: one for the proxies, one for the rest" >&2; exit 1; }
need nginx nginx-light
need jq jq
docker info >/dev/null
if [ -n "${MOAT:-}" ]; then
  cargo build --quiet --release --locked -p moat-bench
else
  cargo build --quiet --release --locked -p moat -p moat-bench
fi
docker image inspect moat-sample-scorer:latest >/dev/null 2>&1 || examples/sample-scorer/build-image.sh >/dev/null
moat=${MOAT:-$PWD/target/release/moat}
bench=$PWD/target/release/moat-bench

out=$(mktemp -d /tmp/moat-duel.XXXXXX)
export MOAT_HOME="$out/home"
mkdir -p "$MOAT_HOME"
# cgroup v1's cpu controller, or v2's: each proxy in a group of the default weight.
if [ -d /sys/fs/cgroup/cpu ]; then
    groups=/sys/fs/cgroup/cpu/$(basename "$out")
else
    groups=/sys/fs/cgroup/$(basename "$out")
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
fi
pids=()
cleanup() {
    # The rounds' pipeline first, so that no row is made of proxies being stopped.
    pkill -P $$ 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    remove_home_resources "$MOAT_HOME"
    for group in "$groups"/* "$groups"; do [ ! -d "$group" ] || rmdir "$group"; done
    rm -rf "$out"
}
trap cleanup EXIT

taskset -c 1 "$moat" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --workers 1 \
    --log-file "$MOAT_HOME/moat.log" 2>"$out/moat.err" &
moat_pid=$!
pids+=("$moat_pid")
for _ in $(seq 600); do "$moat" online-endpoint list >/dev/null 2>&1 && break; sleep 0.1; done
sample_endpoint duel "$out"
# shellcheck disable=SC2046 # one argument per container
docker update --cpuset-cpus 0 $(docker ps -q --filter "label=moat.home=$(cat "$MOAT_HOME/id")") >/dev/null
port=$(free_port)
nginx_conf "$out/nginx.conf" "$port" "$container" "$([ -z "${LOG:-}" ] || echo "$out/access.log")"
taskset -c 1 nginx -p "$out" -c "$out/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
pids+=("$nginx_pid")
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
mkdir -p "$groups/moat" "$groups/nginx"
# A process moved with all its threads; those started later are born in its group.
echo "$moat_pid" >"$groups/moat/cgroup.procs"
for p in "$nginx_pid" $(pgrep -P "$nginx_pid"); do echo "$p" >"$groups/nginx/cgroup.procs"; done
nginx_name=nginx
[ -z "${LOG:-}" ] || nginx_name=nginx-log

load() { # file url [key] load-args...
    local file=$1 url=$2 key=$3
    shift 3
    local headers=(-H 'Content-Type: application/json')
    [ -z "$key" ] || headers+=(-H "Authorization: Bearer $key")
    taskset -c 0 "$bench" --json -c 16 -z "${seconds}s" "${headers[@]}" -D examples/model-1/sample-request.json "$@" "$url" >"$file"
}
both() { # name load-args...: one run of both at once, a row
    local name=$1 m0 n0 m1 n1 waiter
    shift
    m0=$(cpu_seconds "$moat_pid") n0=$(cpu_seconds "$nginx_pid")
    load "$out/$name-moat.json" "$uri" "$key" "$@" &
    waiter=$!
    load "$out/$name-nginx.json" "http://127.0.0.1:$port/score" "" "$@"
    wait "$waiter"
    m1=$(cpu_seconds "$moat_pid") n1=$(cpu_seconds "$nginx_pid")
    jq -n -r --arg name "$name" --argjson mt "$(awk -v a="$m1" -v b="$m0" 'BEGIN {print a - b}')" \
        --argjson nt "$(awk -v a="$n1" -v b="$n0" 'BEGIN {print a - b}')" \
        --slurpfile m "$out/$name-moat.json" --slurpfile n "$out/$name-nginx.json" '
        def us($seconds; $r): $seconds * 1e6 / $r.requests;
        def failed($r): ([$r.errors[]] | add) + ([$r.status | to_entries[] | select(.key != "200") | .value] | add // 0);
        ($m[0]) as $m | ($n[0]) as $n |
        [$name, ($m.achieved_rps | floor), ($n.achieved_rps | floor), ($m.achieved_rps / $n.achieved_rps),
         us($mt; $m), us($nt; $n), (us($mt; $m) / us($nt; $n)),
         $m.latency_us.p99, $n.latency_us.p99, ($m.latency_us.p99 / $n.latency_us.p99), failed($m) + failed($n)]
        | map(if type == "number" and . != floor then (. * 1000 | round / 1000) else . end) | @tsv'
}
phase() { # title load-args...
    local title=$1 r
    shift
    echo "==> $title: $rounds runs of ${seconds}s, moat and $nginx_name at once" >&2
    both warm-up "$@" >/dev/null
    for r in $(seq "$rounds"); do both "$r" "$@"; done
}

{
    printf 'run\tmoat req/s\t%s req/s\tratio\tmoat CPU us/req\t%s CPU us/req\tratio\tmoat p99 us\t%s p99 us\tratio\tfailed\n' \
        "$nginx_name" "$nginx_name" "$nginx_name"
    phase "closed loop" | sed 's/^/closed /'
    phase "open loop at $rate/s each" -q "$rate" | sed "s/^/$rate\/s /"
} | tee "$out/rows.tsv" | column -t -s $'\t'
echo
for kind in closed "$rate/s"; do
    awk -F'\t' -v kind="$kind" '
        function median(a, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
            return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
        }
        index($1, kind " ") == 1 { n++; rate[n] = $4; cpu[n] = $7; p99[n] = $10; if ($11 > 0) failed += $11 }
        END { printf "%s: medians of moat / %s over %d runs: rate %.3f, CPU per request %.3f, p99 %.3f%s\n",
                     kind, other, n, median(rate, n), median(cpu, n), median(p99, n), failed ? "; FAILED REQUESTS: " failed : "" }' \
        other="$nginx_name" "$out/rows.tsv"
done
