#!/usr/bin/env bash
# Acknowledgement latency of 1-line writes at 1, 8 and 64 connections, beside the disk's own
# fdatasync latency measured in the same run on the same directory, and the floor under both: a
# GET /health at the same concurrency (the HTTP stack and the load generator alone, no write
# work). One fresh node with every default (fdatasync, port 18100), 15 s per concurrency.
# Each connection first sends again as soon as it has its answer (closed loop: the machine's
# saturation point); then 8 and 64 connections share a fixed RATE of requests per second
# (open loop, default 1000), where a request held back by a slow answer is timed from when it
# was due, as clients that write on a schedule (Telegraf, collectors) see it.
#   scripts/bench-latency.sh [ARC_NODE_BINARY] [ARC_BENCH_BINARY]
set -u
TARGET=${CARGO_TARGET_DIR:-target}
NODE=${1:-$TARGET/release/arc-node}
B=${2:-$TARGET/release/arc-bench}
T=bench-token-0123456789abcdefghijklmnopqrstuv
export ARC_BENCH_TOKEN=$T
work=$(mktemp -d)
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/node/data/wal" && cd "$work/node" || exit 1
RATE=${RATE:-1000}
echo "disk  :: $($B fsync --dir data/wal --duration 10 | tail -1)"
ARC_SERVER_PORT=18100 ARC_AUTH_BOOTSTRAP_TOKEN=$T RUST_LOG=warn "$NODE" > node.log 2>&1 &
pid=$!
for i in $(seq 300); do curl -sf localhost:18100/ready >/dev/null && break; sleep 0.1; done
# The node's CPU time (user + system, in clock ticks) so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
# Runs arc-bench with the given arguments; prints its summary and the node's CPU time per
# request during the run (steadier than latency on a shared machine).
measure() {
  local before after line requests
  before=$(cpu_ticks)
  line=$($B --url http://127.0.0.1:18100 "$@" 2>&1 | tail -1)
  after=$(cpu_ticks)
  requests=${line%% *}
  requests=${requests%.*}
  echo "$line, node CPU $(( (after - before) * 1000000 / $(getconf CLK_TCK) / (requests > 0 ? requests : 1) )) us/request"
}
for connections in 1 8 64; do
  echo "c=$connections :: $(measure --concurrency $connections --duration 15 \
    write --format lp --batch-size 1 --payloads 4096)"
  echo "c=$connections GET /health :: $(measure --concurrency $connections --duration 15 \
    get --path /health)"
done
for connections in 8 64; do
  echo "c=$connections at $RATE/s :: $(measure --concurrency $connections --duration 15 \
    --rate "$RATE" write --format lp --batch-size 1 --payloads 4096)"
  echo "c=$connections at $RATE/s GET /health :: $(measure --concurrency $connections \
    --duration 15 --rate "$RATE" get --path /health)"
done
echo "disk  :: $($B fsync --dir data/wal --duration 10 | tail -1)"
