#!/usr/bin/env bash
# What WAL replication costs, on loopback, in one run:
#   - ingest rows/s and ack p50/p99 of a standalone node, then of a clustered primary with 0, 1
#     and 2 in-sync standby writers: MessagePack (1000 rows/request) and 1-line line protocol,
#     8 in flight, $DURATION s each (default 10); every run on fresh nodes, measured once each
#     standby is in sync (a write acknowledged as replicated:N);
#   - ack-to-visible on a reader (primary, 1 standby, 1 reader) under that MessagePack load:
#     $SAMPLES rows (default 300) written one at a time to the primary, each timed from its 204
#     until the reader's answers count it (`arc-bench visible`, no x-arc-min-lsn).
# API ports 18200-18203, gossip UDP 19200-19203. Needs curl.
#   [DURATION=10] [SAMPLES=300] scripts/bench-replication.sh [ARC_NODE_BINARY] [ARC_BENCH_BINARY]
set -u
TARGET=${CARGO_TARGET_DIR:-target}
NODE=$(realpath "${1:-$TARGET/release/arc-node}")
B=$(realpath "${2:-$TARGET/release/arc-bench}")
DURATION=${DURATION:-10}
SAMPLES=${SAMPLES:-300}
T=bench-token-0123456789abcdefghijklmnopqrstuv
SECRET=bench-secret-0123456789abcdef
export ARC_BENCH_TOKEN=$T
work=$(mktemp -d)
pids=()
load=""
# SIGTERM every node (each drains and flushes), then waits for it; SIGKILL past 60 s.
stop_nodes() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    pids=()
}
trap '[[ -n $load ]] && kill -TERM $load 2>/dev/null; stop_nodes; rm -rf "$work"' EXIT

run=0
# start NAME INDEX [VAR=VALUE...]: a node with API port 18200+INDEX in $work/$run/NAME (its
# working directory, so no default path leaves it), storage in $work/$run/storage.
start() {
    local dir=$work/$run/$1 port=$((18200 + $2))
    shift 2
    mkdir -p "$dir"
    (cd "$dir" && exec env ARC_SERVER_PORT=$port ARC_WAL_DIRECTORY="$dir/wal" \
        ARC_QUERY_CACHE_DIR="$dir/cache" ARC_STORAGE_LOCAL_PATH="$work/$run/storage" \
        ARC_AUTH_BOOTSTRAP_TOKEN=$T RUST_LOG=warn "$@" "$NODE" >"$dir/node.log" 2>&1) &
    pids+=($!)
    for _ in $(seq 600); do
        curl -sf "localhost:$port/ready" >/dev/null && return
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-replication: $(basename "$dir") not ready; its log:" >&2
    tail -n 20 "$dir/node.log" >&2
    exit 1
}
# member ID ROLE INDEX: a cluster member gossiping on UDP 19200+INDEX, seeded by index 0.
member() {
    start "$1" "$3" ARC_CLUSTER_ENABLED=true ARC_CLUSTER_NODE_ID="$1" ARC_CLUSTER_ROLE="$2" \
        ARC_CLUSTER_CLUSTER_NAME="bench-$$-$run" ARC_CLUSTER_SEEDS=127.0.0.1:19200 \
        ARC_CLUSTER_COORDINATOR_ADDR=127.0.0.1:$((19200 + $3)) ARC_CLUSTER_SHARED_SECRET=$SECRET \
        ARC_CLUSTER_HEARTBEAT_INTERVAL=200ms ARC_CLUSTER_REPLICATION_ADDR=127.0.0.1:0
}
# cluster STANDBYS [READERS]: a primary (started alone, so it wins the bootstrap), its standby
# writers and readers; returns once a write is acknowledged as replicated to every standby.
cluster() {
    member writer-0 writer 0
    local i want=local
    for ((i = 1; i <= $1; i++)); do member "writer-$i" writer "$i"; done
    for ((i = 1; i <= ${2:-0}; i++)); do member "reader-$i" reader $(($1 + i)); done
    (($1 > 0)) && want=replicated:$1
    for _ in $(seq 600); do
        curl -si -XPOST localhost:18200/api/v1/write/line-protocol -H "Authorization: Bearer $T" \
            -H 'x-arc-database: bench' --data-binary 'probe,p=x v=1i' |
            grep -qi "^x-arc-durability: $want" && return
        sleep 0.1
    done
    echo "bench-replication: no write acknowledged as $want in 60 s" >&2
    exit 1
}
# measure LABEL SETUP...: for each load, fresh nodes from SETUP, the load, then stop them.
measure() {
    local label=$1 format
    shift
    for format in msgpack lp; do
        run=$((run + 1))
        "$@"
        local args=(--format msgpack --batch-size 1000)
        [[ $format == lp ]] && args=(--format lp --batch-size 1 --payloads 4096)
        printf '%-19s :: %s\n' "$label $format" "$("$B" --url http://127.0.0.1:18200 \
            --concurrency 8 --duration "$DURATION" write "${args[@]}" 2>&1 | tail -2 | paste -sd ' ')"
        stop_nodes
        rm -rf "${work:?}/$run"
    done
}

measure standalone start standalone 0
for standbys in 0 1 2; do measure "standbys=$standbys" cluster "$standbys"; done

run=$((run + 1))
cluster 1 1
"$B" --url http://127.0.0.1:18200 --concurrency 8 --duration 3600 write --format msgpack \
    --batch-size 1000 >/dev/null 2>&1 &
load=$!
sleep 2
printf '%-19s :: %s\n' visible "$("$B" --url http://127.0.0.1:18200 visible \
    --reader-url http://127.0.0.1:18202 --samples "$SAMPLES" 2>&1 | tail -2 | paste -sd ' ')"
kill -TERM $load 2>/dev/null
wait $load 2>/dev/null
load=""
