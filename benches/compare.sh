#!/usr/bin/env bash
# moat measured against its peers on this machine, in one run.
#
#   sudo [PIN=1] bash benches/compare.sh [ROUNDS (5)] [SECONDS per measurement (8)] [CONNECTIONS (16)]
#
# Installs what it needs from Debian (nginx, haproxy, wrk, jq) when missing, builds moat,
# moat-bench and the sample scorer image, and starts `moat serve` in a throw-away home with
# one endpoint `cmp-one` (deployment blue, key auth, public network access disabled so the
# access policy runs) and one endpoint `cmp-split` (deployments blue and green, 50/50).
# The targets, all loaded with the sample request by moat-bench:
#
#   direct     blue's scorer container itself
#   nginx      nginx proxy_pass to that same container (upstream keep-alive)
#   nginx-log  the same, plus what moat does on every request that nginx can be told to:
#              a random request id sent to the container and back, and a JSON access line
#              (buffered, as moat's lines are written in batches). moat also checks a key and
#              an access policy and counts metrics; nginx here does not
#   haproxy    haproxy in front of that same container (connection reuse)
#   moat       moat, endpoint cmp-one (whose only instance is that same container)
#   moat-split moat, endpoint cmp-split (two deployments, two more containers)
#
# Then a rate ladder (moat-bench --rates) per target, once, from 5 % to 50 % of the direct
# maximum in steps of 5 %, 3 s a step: each target's knee, the first step whose p99 is more
# than twice its p99 at the first step.
#
# Then streamed answers: the test scorer's `/stream` (an event stream, one event per chunk) in
# deployment `stream` of endpoint cmp-stream, loaded directly, through nginx (`proxy_buffering
# off`, so it passes events on as they come) and through moat: the time to the first event
# (median of 20 requests of 5 events each, per round, from curl's time to the first byte:
# the scorer sends its head with its first event) and events per second (one request of
# 20,000 events sent as fast as they are read).
#
# Every proxy gets WORKERS worker threads (the machine's CPUs): nginx worker_processes,
# haproxy nbthread, moat serve --workers. With PIN=1, each proxy instead gets one worker and
# CPU 1 to itself (all its processes and threads, moat's log writer included), while the load
# generator, curl and the scorer containers run on CPU 0: on a 2-CPU machine where all of them
# share both CPUs, a round's figures move with where the scheduler put the load generator
# (BENCHMARKS.md); a proxy alone on its CPU is measured by its own cost.
# After a warm-up that loads every proxy once for a whole measurement (not counted), rounds
# interleave the proxies, each round starting one place later and every other round in reverse
# order (A B C D E, E D C B A... rotated), so that none always runs first or always after the
# same one; moat and nginx run back to back in every round, in turns first, so that a round's
# moat / nginx compares two measurements seconds apart rather than up to four runs apart. (On
# this VM a proxy's CPU is at times a fifth slower, for spells of a few seconds: even two
# runs back to back can fall in different spells, BENCHMARKS.md.)
# The scorer loaded directly runs after the proxies' rounds of each phase, followed
# by a pause: a proxy loaded in the 10-15 s after the direct load does about a third less
# (BENCHMARKS.md), and with direct in the rotation nginx, which followed it, was measured in
# that state in most rounds.
# First the maximum throughput (closed loop, CONNECTIONS connections), then latency at fixed
# offered rates (open loop): half the slowest proxy's median maximum (the shared rate; a
# quarter with PIN=1) and one and a half times that, rates every proxy sustains, so their
# columns show what a proxy adds rather than how its queue grows when overloaded (a rate set
# from the direct maximum, as before, was above every proxy's on this machine). CPU seconds
# per 10k requests of each proxy's processes come from /proc, during the throughput runs (the
# machine saturated) and during the runs at the shared rate (the same load for every proxy).
# Prints a Markdown table of medians over the rounds, with the ratios moat/direct, moat/nginx,
# moat/nginx-log and moat/haproxy, then moat/nginx and moat/nginx-log round by round; the raw
# moat-bench JSON stays in the output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=benches/home.sh
. benches/home.sh
rounds=${1:-5} seconds=${2:-8} connections=${3:-16}
if [ -n "${PIN:-}" ]; then
    [ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs two CPUs: one for the proxy, one for the rest" >&2; exit 1; }
    # Pinned, the proxies' maxima are what CPU 0 can send and score (close to direct's), and
    # the open-loop load generator costs more a request than the closed loop: half of that
    # would overload CPU 0, so the latency rates are a quarter of it and three eighths.
    workers=1 on_proxy=(taskset -c 1) on_load=(taskset -c 0) share=0.25
else
    workers=$(nproc) on_proxy=() on_load=() share=0.5
fi

need nginx nginx-light
need haproxy haproxy
need wrk wrk
need jq jq
need curl curl
docker info >/dev/null

echo "==> building moat, moat-bench and the sample scorer image" >&2
cargo build --quiet --release --locked -p moat -p moat-bench
examples/sample-scorer/build-image.sh >/dev/null
tests/test-scorer/build-image.sh >/dev/null
moat="$root/target/release/moat"
bench="$root/target/release/moat-bench"

out=${OUT:-$(mktemp -d /tmp/moat-compare.XXXXXX)}
mkdir -p "$out"
export MOAT_HOME="$out/home"
mkdir -p "$MOAT_HOME"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    remove_home_resources "$MOAT_HOME"
}
trap cleanup EXIT

echo "==> moat serve --workers $workers (home $MOAT_HOME)" >&2
"${on_proxy[@]}" "$moat" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --workers "$workers" --log-file "$MOAT_HOME/moat.log" &
moat_pid=$!
pids+=("$moat_pid")
for _ in $(seq 100); do "$moat" online-endpoint list >/dev/null 2>&1 && break; sleep 0.1; done

deployment() { # endpoint name
    local file="$out/$1-$2.yml"
    sed -e "s/^name: blue/name: $2/" -e "s/^endpoint_name: .*/endpoint_name: $1/" \
        -e "s|path: model/|path: $root/examples/model-1/model/|" examples/model-1/blue-deployment.yml >"$file"
    # Room for every connection at once: a 429 would count as a failure.
    printf 'request_settings:\n  max_concurrent_requests_per_instance: %s\n  max_queue_wait_ms: 5000\n' "$connections" >>"$file"
    echo "==> deployment $2 of $1" >&2
    "$moat" online-deployment create -f "$file" >/dev/null
}
for ep in cmp-one cmp-split; do
    "$moat" online-endpoint create -n "$ep" -f examples/model-1/endpoint.yml --set public_network_access=disabled >/dev/null
done
deployment cmp-one blue
deployment cmp-split blue
deployment cmp-split green
"$moat" online-endpoint create -n cmp-stream -f examples/model-1/endpoint.yml >/dev/null
cat >"$out/stream.yml" <<EOF
name: stream
endpoint_name: cmp-stream
environment:
  image: moat-test-scorer:latest
  inference_config:
    liveness_route: {port: 5001, path: /live}
    readiness_route: {port: 5001, path: /ready}
    scoring_route: {port: 5001, path: /stream}
instance_type: Standard_F2s_v2
request_settings: {request_timeout_ms: 5000, max_concurrent_requests_per_instance: 4}
EOF
echo "==> deployment stream of cmp-stream" >&2
"$moat" online-deployment create -f "$out/stream.yml" --all-traffic >/dev/null
streamer=$("$moat" online-deployment show -n stream -e cmp-stream -o tsv --query 'instances[0].address')
key_stream=$("$moat" online-endpoint get-credentials -n cmp-stream -o tsv --query primaryKey)
uri_stream=$("$moat" online-endpoint show -n cmp-stream -o tsv --query scoring_uri)
"$moat" online-endpoint update -n cmp-one --traffic "blue=100" >/dev/null
"$moat" online-endpoint update -n cmp-split --traffic "blue=50 green=50" >/dev/null
container=$("$moat" online-deployment show -n blue -e cmp-one -o tsv --query 'instances[0].address')
key_one=$("$moat" online-endpoint get-credentials -n cmp-one -o tsv --query primaryKey)
key_split=$("$moat" online-endpoint get-credentials -n cmp-split -o tsv --query primaryKey)
uri_one=$("$moat" online-endpoint show -n cmp-one -o tsv --query scoring_uri)
uri_split=$("$moat" online-endpoint show -n cmp-split -o tsv --query scoring_uri)
if [ -n "${PIN:-}" ]; then
    # The scorers are dockerd's children, not moat's: they get CPU 0 from Docker.
    # shellcheck disable=SC2046 # one argument per container
    docker update --cpuset-cpus 0 $(docker ps -q --filter "label=moat.home=$(cat "$MOAT_HOME/id")") >/dev/null
fi

nginx_port=$(free_port)
nginx_log_port=$(free_port)
mkdir -p "$out/nginx"
cat >"$out/nginx/nginx.conf" <<EOF
worker_processes $workers;
pid $out/nginx/nginx.pid;
error_log $out/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream scorer { server $container:5001; keepalive 256; }
    upstream streamer { server $streamer:5001; keepalive 16; }
    include $root/benches/nginx-moatlike-log.conf;
    server {
        listen 127.0.0.1:$nginx_log_port;
        access_log $out/nginx/access.log moatlike buffer=64k flush=1s;
        location / {
            proxy_pass http://scorer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-ID \$request_id;
            add_header X-Request-ID \$request_id always;
        }
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://scorer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /stream {
            proxy_pass http://streamer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
echo "==> nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') on 127.0.0.1:$nginx_port" >&2
"${on_proxy[@]}" nginx -p "$out/nginx" -c "$out/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
pids+=("$nginx_pid")

haproxy_port=$(free_port)
cat >"$out/haproxy.cfg" <<EOF
global
    nbthread $workers
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend scoring
    bind 127.0.0.1:$haproxy_port
    default_backend scorer
backend scorer
    server blue $container:5001
EOF
echo "==> haproxy $(haproxy -v | head -1 | awk '{print $3}') on 127.0.0.1:$haproxy_port" >&2
"${on_proxy[@]}" haproxy -f "$out/haproxy.cfg" -db &
haproxy_pid=$!
pids+=("$haproxy_pid")
sleep 1

declare -A url key pid
url[direct]="http://$container:5001/score"
url[nginx]="http://127.0.0.1:$nginx_port/score"
url[nginx-log]="http://127.0.0.1:$nginx_log_port/score"
url[haproxy]="http://127.0.0.1:$haproxy_port/score"
url[moat]=$uri_one
url[moat-split]=$uri_split
key[moat]=$key_one
key[moat-split]=$key_split
pid[nginx]=$nginx_pid
pid[nginx-log]=$nginx_pid
pid[haproxy]=$haproxy_pid
pid[moat]=$moat_pid
pid[moat-split]=$moat_pid
proxies=(nginx nginx-log haproxy moat moat-split)
targets=(direct "${proxies[@]}")
# After the direct load, the scorer's own passage, not measured.
settle() { echo "    (20 s for the scorer to settle after the direct load)" >&2; sleep 20; }

load() { # target args...
    local t=$1; shift
    local headers=(-H 'Content-Type: application/json')
    [ -z "${key[$t]:-}" ] || headers+=(-H "Authorization: Bearer ${key[$t]}")
    "${on_load[@]}" "$bench" --json -c "$connections" -z "${duration:-${seconds}s}" "${headers[@]}" -D examples/model-1/sample-request.json "$@" "${url[$t]}"
}

# load's result into FILE, with the target's CPU seconds during it as cpu_s.
measured() { # file target load-args...
    local file=$1 t=$2 before after
    shift 2
    before=$([ -n "${pid[$t]:-}" ] && cpu_seconds "${pid[$t]}" || echo 0)
    load "$t" "$@" >"$file"
    after=$([ -n "${pid[$t]:-}" ] && cpu_seconds "${pid[$t]}" || echo 0)
    jq --argjson cpu "$(awk -v a="$after" -v b="$before" 'BEGIN {print a - b}')" '. + {cpu_s: $cpu}' \
        "$file" >"$file.tmp" && mv "$file.tmp" "$file"
}

# Warm-up, discarded: every proxy loaded once for a whole measurement (each proxy's first
# connections to the scorer, its allocator's first growth).
echo "==> warm-up: each proxy once, ${seconds}s, not counted" >&2
for t in "${proxies[@]}"; do load "$t" >/dev/null 2>&1 || true; done

# Round r starts at the r-th unit, and even rounds go backwards (A B C D, B A D C, C D A B,
# D C B A, ...): no proxy always goes first or always follows the same one. nginx and moat
# are one unit, nginx first in odd rounds and moat in even ones.
units=("nginx moat" nginx-log haproxy moat-split)
rotated() { # round
    local n=${#units[@]} i step unit
    step=$((($1 % 2) ? 1 : n - 1))
    for i in $(seq 0 $((n - 1))); do
        unit=${units[$(((i * step + $1 - 1) % n))]}
        [ "$unit" = "nginx moat" ] && (($1 % 2 == 0)) && unit="moat nginx"
        # shellcheck disable=SC2086 # a unit's words are its proxies, a line each
        printf '%s\n' $unit
    done
}

throughput() { # target round
    measured "$out/max-$1-$2.json" "$1"
    echo "    round $2 $1: $(jq -r '"\(.achieved_rps | floor)/s, errors \([.errors[]] | add), non-200 \([.status | to_entries[] | select(.key != "200") | .value] | add // 0)"' "$out/max-$1-$2.json")" >&2
}
echo "==> throughput: $rounds rounds, closed loop, $connections connections, ${seconds}s each" >&2
for r in $(seq "$rounds"); do
    for t in $(rotated "$r"); do throughput "$t" "$r"; done
done
for r in $(seq "$rounds"); do throughput direct "$r"; done
settle

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
med() { # prefix target jq-expression
    # Files are <prefix>-<target>-<round>.json: the digit keeps moat from matching moat-split.
    for f in "$out/$1-$2-"[0-9]*.json; do jq -r "$3" "$f"; done | median
}
direct_max=$(med max direct .achieved_rps)
slowest_max=$(for t in nginx nginx-log haproxy moat moat-split; do med max "$t" .achieved_rps; done | sort -g | head -1)
shared=$(awk -v m="$slowest_max" -v s="$share" 'BEGIN {printf "%d", m * s}')
busy=$(awk -v m="$slowest_max" -v s="$share" 'BEGIN {printf "%d", m * s * 1.5}')
rates=("$shared" "$busy")

echo "==> latency: $rounds rounds, open loop at ${rates[*]}/s ($share and 1.5 x $share of the slowest proxy's $slowest_max/s)" >&2
at_rate() { # target round rate
    measured "$out/q$3-$1-$2.json" "$1" -q "$3"
    echo "    round $2 $1 at $3/s: p99 $(jq .latency_us.p99 "$out/q$3-$1-$2.json") us" >&2
}
for r in $(seq "$rounds"); do
    for q in "${rates[@]}"; do
        for t in $(rotated "$r"); do at_rate "$t" "$r" "$q"; done
    done
done
for r in $(seq "$rounds"); do
    for q in "${rates[@]}"; do at_rate direct "$r" "$q"; done
done
settle

echo "==> ladder: open loop from 5 % to 50 % of direct's $direct_max/s, 3s a step" >&2
ladder_rates=$(awk -v m="$direct_max" 'BEGIN {for (i = 1; i <= 10; i++) printf "%s%d", (i > 1 ? "," : ""), m * 0.05 * i}')
for t in "${proxies[@]}" direct; do
    duration=3s load "$t" --rates "$ladder_rates" >"$out/ladder-$t.json"
    echo "    $t: knee at $(jq -r '(.steps[0].latency_us.p99) as $f | [.steps[] | select(.latency_us.p99 > 2 * $f)][0].offered_rps // "none"' "$out/ladder-$t.json")/s" >&2
done

declare -A surl skey
surl[direct]="http://$streamer:5001/stream"
surl[nginx]="http://127.0.0.1:$nginx_port/stream"
surl[moat]=$uri_stream
skey[moat]=$key_stream
stream_targets=(direct nginx moat)
stream() { # target body -> "time to first byte, total" in seconds
    local t=$1 auth=()
    [ -z "${skey[$t]:-}" ] || auth=(-H "Authorization: Bearer ${skey[$t]}")
    "${on_load[@]}" curl -sS -o /dev/null -w '%{time_starttransfer} %{time_total}\n' "${auth[@]}" \
        -H 'Content-Type: application/json' -d "$2" "${surl[$t]}"
}
echo "==> streaming: $rounds rounds, time to first event and events per second" >&2
for r in $(seq "$rounds"); do
    for t in $(rotated "$r" | grep -xE 'nginx|moat') direct; do
        for _ in $(seq 20); do stream "$t" '{"events": 5, "gap_ms": 1}'; done | awk '{print $1 * 1000000}' |
            median >"$out/ttfe-$t-$r"
        stream "$t" '{"events": 20000, "gap_ms": 0}' | awk '{printf "%d\n", 20000 / $2}' >"$out/eps-$t-$r"
        echo "    round $r $t: first event $(cat "$out/ttfe-$t-$r") us, $(cat "$out/eps-$t-$r") events/s" >&2
    done
done
smed() { cat "$out/$1-$2-"[0-9]* | median; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "-"; else printf "%.2f", a / b}'; }
{
    echo -n "| Target | max rate (req/s) | CPU s / 10k req | CPU s / 10k req at $shared/s |"
    for q in "${rates[@]}"; do echo -n " p50 at $q/s (µs) | p99 at $q/s (µs) |"; done
    echo " errors + non-200 |"
    echo "|---|---|---|---|---|---|---|---|---|"
    declare -A max cpu10k cpushared p99s p99b
    for t in "${targets[@]}"; do
        max[$t]=$(med max "$t" .achieved_rps)
        cpu10k[$t]=$(med max "$t" 'if .requests > 0 then .cpu_s / .requests * 10000 else 0 end')
        cpushared[$t]=$(med "q$shared" "$t" 'if .requests > 0 then .cpu_s / .requests * 10000 else 0 end')
        p99s[$t]=$(med "q$shared" "$t" .latency_us.p99)
        p99b[$t]=$(med "q$busy" "$t" .latency_us.p99)
        bad=$(for f in "$out/"*"-$t-"[0-9]*.json; do jq '[.errors[]] + [.status | to_entries[] | select(.key != "200") | .value] | add // 0' "$f"; done | awk '{s += $1} END {print s}')
        cpu_cell=$([ -n "${pid[$t]:-}" ] && printf '%.3f | %.3f' "${cpu10k[$t]}" "${cpushared[$t]}" || echo "- | -")
        printf '| %s | %.0f | %s |' "$t" "${max[$t]}" "$cpu_cell"
        for q in "${rates[@]}"; do
            printf ' %s | %s |' "$(med "q$q" "$t" .latency_us.p50)" "$(med "q$q" "$t" .latency_us.p99)"
        done
        printf ' %s |\n' "$bad"
    done
    echo
    echo "| Ratio | max rate | CPU / request | CPU / request at $shared/s | p99 at $shared/s | p99 at $busy/s |"
    echo "|---|---|---|---|---|---|"
    row() { # label a b
        local cpu_ratio=- cpu_shared=-
        [ "$3" = direct ] || cpu_ratio=$(ratio "${cpu10k[$2]}" "${cpu10k[$3]}")
        [ "$3" = direct ] || cpu_shared=$(ratio "${cpushared[$2]}" "${cpushared[$3]}")
        echo "| $1 | $(ratio "${max[$2]}" "${max[$3]}") | $cpu_ratio | $cpu_shared | $(ratio "${p99s[$2]}" "${p99s[$3]}") | $(ratio "${p99b[$2]}" "${p99b[$3]}") |"
    }
    row "moat / direct" moat direct
    row "moat / nginx" moat nginx
    row "moat / nginx-log" moat nginx-log
    row "moat / haproxy" moat haproxy
    row "moat-split / moat" moat-split moat
    echo
    # The goals are per round: each round's own ratios, not only the medians'.
    per_round() { # peer prefix jq-expression
        for r in $(seq "$rounds"); do
            echo "$(ratio "$(jq -r "$3" "$out/$2-moat-$r.json")" "$(jq -r "$3" "$out/$2-$1-$r.json")")"
        done | paste -sd' '
    }
    cpu_per_request='if .requests > 0 then .cpu_s / .requests else 0 end'
    for peer in nginx nginx-log; do
        echo "moat / $peer per round: max rate $(per_round "$peer" max .achieved_rps); CPU / request $(per_round "$peer" max "$cpu_per_request");"
        echo "CPU / request at $shared/s $(per_round "$peer" "q$shared" "$cpu_per_request"); p99 at $shared/s $(per_round "$peer" "q$shared" .latency_us.p99)."
        echo
    done
    echo
    echo "| Ladder (5 % to 50 % of direct, 3 s a step) | p99 at the first step (µs) | knee: first rate with p99 over twice that (req/s) | p99 at the knee (µs) |"
    echo "|---|---|---|---|"
    for t in "${targets[@]}"; do
        jq -r --arg t "$t" '(.steps[0].latency_us.p99) as $f | ([.steps[] | select(.latency_us.p99 > 2 * $f)][0]) as $k
            | "| \($t) | \($f) | \($k.offered_rps // "none" | if type == "number" then floor else . end) | \($k.latency_us.p99 // "-") |"' "$out/ladder-$t.json"
    done
    echo
    echo "| Streamed answer | time to first event (µs) | events per second | first event vs direct | events/s vs direct |"
    echo "|---|---|---|---|---|"
    for t in "${stream_targets[@]}"; do
        echo "| $t | $(smed ttfe "$t") | $(smed eps "$t") | $(ratio "$(smed ttfe "$t")" "$(smed ttfe direct)") | $(ratio "$(smed eps "$t")" "$(smed eps direct)") |"
    done
    echo
    echo "Medians over $rounds interleaved rounds; $connections connections; ${seconds}s per measurement; $workers workers per proxy${PIN:+, each proxy alone on CPU 1, load generator and scorers on CPU 0}."
    echo "Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB;"
    echo "$(. /etc/os-release && echo "$PRETTY_NAME"), $(rustc --version | cut -d' ' -f1-2), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), haproxy $(haproxy -v | head -1 | awk '{print $3}'), Docker $(docker version -f '{{.Server.Version}}')."
} | tee "$out/table.md"
echo "(raw results in $out)" >&2
