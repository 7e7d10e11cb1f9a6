#!/usr/bin/env bash
# Gossip figures with real arc-node processes on loopback (BENCHMARKS.md):
#   - converge: from starting N processes until every node's /api/v1/cluster shows N healthy;
#   - detect: from SIGKILL of one reader until every other node shows it dead.
#
#   scripts/bench-cluster.sh [--nodes 5] [--heartbeat 200ms] [--base-port 8100] [--dir DIR]
#
# The cluster is 1 writer and N-1 readers, started with scripts/local-cluster.sh (same binary
# rules: $ARC_NODE_BIN or target/release/arc-node). Needs curl.
set -euo pipefail

nodes=5
heartbeat=200ms
base_port=8100
dir=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --nodes) nodes=$2; shift 2 ;;
        --heartbeat) heartbeat=$2; shift 2 ;;
        --base-port) base_port=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
[[ $nodes =~ ^[0-9]+$ && $nodes -ge 2 ]] || { echo "bench-cluster: --nodes must be 2 or more" >&2; exit 2; }
command -v curl >/dev/null || { echo "bench-cluster: needs curl" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
if [[ -z $dir ]]; then
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
fi
cluster() { "$here/local-cluster.sh" "$@" --dir "$dir/cluster" --base-port "$base_port"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

started=$(now)
cluster start --writers 1 --readers $((nodes - 1)) --compactors 0 --heartbeat "$heartbeat" >/dev/null
ready=$(since "$started")
token=$(cat "$dir/cluster/admin-token")
get() { curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$1$2"; }

# Every node must show all N healthy.
for ((i = 1; i <= nodes; i++)); do
    until get $((base_port + i)) /api/v1/cluster | grep -q "\"healthy_nodes\":$nodes[,}]"; do
        sleep 0.05
    done
done
converged=$(since "$started")

victim=reader-$((nodes - 1))
kill -KILL "$(cat "$dir/cluster/$victim/pid")"
killed=$(now)
for ((i = 1; i < nodes; i++)); do
    until get $((base_port + i)) "/api/v1/cluster/nodes/$victim" | grep -q '"state":"dead"'; do
        sleep 0.05
    done
done
detected=$(since "$killed")
cluster stop >/dev/null
echo "nodes=$nodes heartbeat=$heartbeat all_ready_s=$ready converged_s=$converged detect_dead_s=$detected"
