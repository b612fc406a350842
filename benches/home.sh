# Sourced by the benchmark scripts: a throw-away moat home and what moat made under it.
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
