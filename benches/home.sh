# Sourced by the benchmark scripts: a throw-away moat home and what moat made under it, the
# sample scorer behind one endpoint, and nginx in front of the same scorer.
#
#   sample_endpoint NAME DIR     (moat serving, MOAT_HOME set) creates endpoint NAME (key
#                                auth, public network access disabled, so that the access
#                                policy runs) with deployment blue of the sample scorer, room
#                                for CONNECTIONS (16) requests at once; sets key, uri and
#                                container (the scorer's address)
#   nginx_conf FILE PORT CONTAINER [LOG]
#                                writes a one-worker nginx config proxying 127.0.0.1:PORT to
#                                CONTAINER:5001 with keep-alive; with LOG (a file), an access
#                                line like moat's
#   free_port                    a free TCP port on 127.0.0.1
#   cpu_seconds PID              CPU seconds (user + system) of PID and its children so far
#   need COMMAND PACKAGE         installs the Debian PACKAGE when COMMAND is missing
#
#   remove_home_resources HOME   removes the containers, networks and kernel table of the
#                                moat home HOME (run it once moat has stopped: moat restores
#                                its kernel table when it finds it gone)

remove_home_resources() {
    local id_file="$1/id" id ids nets
    [ -f "$id_file" ] || return 0
    id=$(cat "$id_file")
    ids=$(docker ps -aq --filter "label=moat.home=$id")
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
    nets=$(docker network ls -q --filter "label=moat.home=$id")
    [ -z "$nets" ] || docker network rm $nets >/dev/null
    nft delete table inet "moat_$id" 2>/dev/null || true
}

sample_endpoint() {
    local name=$1 spec="$2/$1-blue.yml"
    sed -e "s|path: model/|path: $PWD/examples/model-1/model/|" examples/model-1/blue-deployment.yml >"$spec"
    printf 'request_settings:\n  max_concurrent_requests_per_instance: %s\n  max_queue_wait_ms: 5000\n' \
        "${CONNECTIONS:-16}" >>"$spec"
    "$moat" online-endpoint create -n "$name" -f examples/model-1/endpoint.yml --set public_network_access=disabled >/dev/null
    "$moat" online-deployment create -n blue -e "$name" -f "$spec" --all-traffic >/dev/null
    key=$("$moat" online-endpoint get-credentials -n "$name" -o tsv --query primaryKey)
    uri=$("$moat" online-endpoint show -n "$name" -o tsv --query scoring_uri)
    container=$("$moat" online-deployment show -n blue -e "$name" -o tsv --query 'instances[0].address')
}

nginx_conf() {
    local dir log="access_log off;"
    dir=$(dirname "$1")
    [ -z "${4:-}" ] || log="include $PWD/benches/nginx-moatlike-log.conf; access_log $4 moatlike buffer=64k flush=1s;"
    cat >"$1" <<EOF
worker_processes 1;
pid $dir/nginx-$2.pid;
error_log $dir/nginx-$2-error.log warn;
events { worker_connections 4096; }
http {
    $log
    upstream scorer { server $3:5001; keepalive 256; }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://scorer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cpu_seconds() {
    local total=0 p
    for p in $1 $(pgrep -P "$1" || true); do
        # A child may end between pgrep and the read (moat lists its nft table every 3 s):
        # its time is then not counted, rather than the whole sum lost (a round read moat's
        # CPU since its start as the run's).
        total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{print t + ($14 + $15) / hz}' "/proc/$p/stat" 2>/dev/null ||
            echo "$total")
    done
    echo "$total"
}

need() { command -v "$1" >/dev/null || { echo "==> installing $2" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; }; }
