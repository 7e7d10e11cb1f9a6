#!/usr/bin/env bash
# A local arc-node cluster on loopback, sharing one local storage directory.
#
#   scripts/local-cluster.sh start [--writers 2] [--readers 2] [--compactors 1]
#                                  [--dir ./local-cluster] [--base-port 8100] [--heartbeat 500ms]
#   scripts/local-cluster.sh status [--dir ./local-cluster]
#   scripts/local-cluster.sh stop   [--dir ./local-cluster]
#
# Node i (from 0) serves its API on base-port+1+i, gossips on UDP base-port+1001+i and would
# replicate on UDP base-port+2001+i. The binary is $ARC_NODE_BIN, else target/release/arc-node
# (under $CARGO_TARGET_DIR if set), built with `cargo build --release --bin arc-node` if
# missing. `start` prints the admin token and the API addresses; `stop` sends SIGTERM (each
# node drains and flushes) and waits for every node to exit.
set -euo pipefail

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

command=${1:-}
[[ -n $command ]] || usage
shift
writers=2
readers=2
compactors=1
dir=./local-cluster
base_port=8100
heartbeat=500ms
while [[ $# -gt 0 ]]; do
    case $1 in
        --writers) writers=$2; shift 2 ;;
        --readers) readers=$2; shift 2 ;;
        --compactors) compactors=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --base-port) base_port=$2; shift 2 ;;
        --heartbeat) heartbeat=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "local-cluster: unknown option $1" >&2; usage ;;
    esac
done
for number in "$writers" "$readers" "$compactors" "$base_port"; do
    [[ $number =~ ^[0-9]+$ ]] || { echo "local-cluster: not a number: $number" >&2; exit 2; }
done

# GET a path on 127.0.0.1:port (with the admin token when one is given); prints the response,
# status line first (nothing when nothing answers).
http_get() {
    local port=$1 path=$2 token=${3:-}
    if ! { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
        return
    fi
    local auth=""
    [[ -n $token ]] && auth="Authorization: Bearer $token"$'\r\n'
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s\r\n' "$path" "$auth" >&3
    timeout 5 cat <&3 || true
    exec 3<&- 3>&-
}

# The HTTP status code of GET port path (000 when nothing answers).
http_status() {
    local line
    line=$(http_get "$1" "$2" | head -n 1)
    line=${line#HTTP/* }
    echo "${line:0:3}"
}

binary() {
    if [[ -n ${ARC_NODE_BIN:-} ]]; then
        echo "$ARC_NODE_BIN"
        return
    fi
    local root
    root=$(cd "$(dirname "$0")/.." && pwd)
    local path="${CARGO_TARGET_DIR:-$root/target}/release/arc-node"
    if [[ ! -x $path ]]; then
        echo "local-cluster: building arc-node (cargo build --release --bin arc-node)" >&2
        (cd "$root" && cargo build --release --bin arc-node >&2)
    fi
    echo "$path"
}

# Runs a check until it passes; past $deadline, stops the cluster and fails naming `what`.
wait_until() {
    local what=$1
    shift
    until "$@"; do
        if ((SECONDS > deadline)); then
            echo "local-cluster: $what after 120 s" >&2
            stop
            exit 1
        fi
        sleep 0.2
    done
}

# Whether the node in directory $1 answers /ready; fails the start at once if it exited.
is_ready() {
    local node_dir=$1
    if ! kill -0 "$(cat "$node_dir/pid")" 2>/dev/null; then
        echo "local-cluster: $(basename "$node_dir") exited; its log:" >&2
        tail -n 40 "$node_dir/node.log" >&2
        stop
        exit 1
    fi
    [[ $(http_status "$(cat "$node_dir/port")" /ready) == 200 ]]
}

sees_everyone() {
    http_get "$1" /api/v1/cluster "$token" | grep -q "\"healthy_nodes\":$total[,}]"
}

knows_primary() {
    http_get "$1" /api/v1/cluster "$token" | grep -q '"primary":"'
}

start() {
    if compgen -G "$dir/*/pid" >/dev/null; then
        echo "local-cluster: $dir already has a cluster; run: $0 stop --dir $dir" >&2
        exit 1
    fi
    local bin
    bin=$(binary)
    mkdir -p "$dir/storage"
    dir=$(cd "$dir" && pwd)
    local secret token
    secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    token="arc-local-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    echo "$token" >"$dir/admin-token"
    chmod 600 "$dir/admin-token"
    local roles=()
    for ((i = 0; i < writers; i++)); do roles+=("writer"); done
    for ((i = 0; i < readers; i++)); do roles+=("reader"); done
    for ((i = 0; i < compactors; i++)); do roles+=("compactor"); done
    [[ ${#roles[@]} -gt 0 ]] || { echo "local-cluster: no nodes asked for" >&2; exit 2; }
    local seeds="127.0.0.1:$((base_port + 1001)),127.0.0.1:$((base_port + 1001 + ${#roles[@]} - 1))"
    local index=0
    local -A counts=()
    for role in "${roles[@]}"; do
        counts[$role]=$((${counts[$role]:-0} + 1))
        local id="$role-${counts[$role]}"
        local node_dir="$dir/$id"
        mkdir -p "$node_dir"
        (
            cd "$node_dir"
            env ARC_SERVER_HOST=127.0.0.1 \
                ARC_SERVER_PORT=$((base_port + 1 + index)) \
                ARC_STORAGE_BACKEND=local \
                ARC_STORAGE_LOCAL_PATH="$dir/storage" \
                ARC_WAL_DIRECTORY="$node_dir/wal" \
                ARC_QUERY_CACHE_DIR="$node_dir/cache" \
                ARC_AUTH_BOOTSTRAP_TOKEN="$token" \
                ARC_CLUSTER_ENABLED=true \
                ARC_CLUSTER_NODE_ID="$id" \
                ARC_CLUSTER_ROLE="$role" \
                ARC_CLUSTER_CLUSTER_NAME=local \
                ARC_CLUSTER_SEEDS="$seeds" \
                ARC_CLUSTER_COORDINATOR_ADDR="127.0.0.1:$((base_port + 1001 + index))" \
                ARC_CLUSTER_REPLICATION_ADDR="127.0.0.1:$((base_port + 2001 + index))" \
                ARC_CLUSTER_SHARED_SECRET="$secret" \
                ARC_CLUSTER_HEARTBEAT_INTERVAL="$heartbeat" \
                ARC_CLUSTER_HEALTH_CHECK_INTERVAL=2s \
                "$bin" >"$node_dir/node.log" 2>&1 &
            echo $! >"$node_dir/pid"
        )
        echo "$((base_port + 1 + index))" >"$node_dir/port"
        index=$((index + 1))
    done
    deadline=$((SECONDS + 120))
    total=${#roles[@]}
    for node_dir in "$dir"/*/; do
        [[ -f $node_dir/pid ]] || continue
        wait_until "$(basename "$node_dir") not ready" is_ready "$node_dir"
    done
    # Ready nodes still need a few gossip rounds to know each other and the primary.
    for node_dir in "$dir"/*/; do
        [[ -f $node_dir/pid ]] || continue
        wait_until "$(basename "$node_dir") does not see $total healthy nodes" \
            sees_everyone "$(cat "$node_dir/port")"
        if ((writers > 0)); then
            wait_until "$(basename "$node_dir") knows no primary" \
                knows_primary "$(cat "$node_dir/port")"
        fi
    done
    echo "local cluster 'local' is up in $dir"
    echo "admin token: $token"
    status
    echo
    echo "try: curl -s -H 'Authorization: Bearer $token' http://127.0.0.1:$((base_port + 1))/api/v1/cluster"
    echo "stop: $0 stop --dir $dir"
}

status() {
    local node_dir
    for node_dir in "$dir"/*/; do
        [[ -f $node_dir/pid ]] || continue
        local port pid state
        port=$(cat "$node_dir/port")
        pid=$(cat "$node_dir/pid")
        if kill -0 "$pid" 2>/dev/null; then state=running; else state=stopped; fi
        printf '%-14s http://127.0.0.1:%s  pid %s  %s\n' "$(basename "$node_dir")" "$port" "$pid" "$state"
    done
}

stop() {
    local node_dir pids=()
    for node_dir in "$dir"/*/; do
        [[ -f $node_dir/pid ]] || continue
        local pid
        pid=$(cat "$node_dir/pid")
        if kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); fi
        rm -f "$node_dir/pid"
    done
    local deadline=$((SECONDS + 60))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS > deadline)); then
                echo "local-cluster: pid $pid did not stop in 60 s; killing it" >&2
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    done
    echo "local cluster in $dir stopped (${#pids[@]} node(s)); data kept in $dir"
}

case $command in
    start) start ;;
    status) status ;;
    stop) stop ;;
    *) usage ;;
esac
