#!/usr/bin/env bash
# A/B of ingest throughput between two arc-node binaries: every workload runs on a fresh node
# (empty data directory, port 18000, fdatasync), the old binary then the new one, 15 s each.
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY [ARC_BENCH_BINARY]
set -u
OLD=${1:?old arc-node binary}
NEW=${2:?new arc-node binary}
B=${3:-${CARGO_TARGET_DIR:-target}/release/arc-bench}
T=bench-token-0123456789abcdefghijklmnopqrstuv
export ARC_BENCH_TOKEN=$T
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() { # binary label args...
  local bin=$1 label=$2; shift 2
  rm -rf "$work/node" && mkdir -p "$work/node" && cd "$work/node" || exit 1
  ARC_SERVER_PORT=18000 ARC_WAL_SYNC_MODE=fdatasync ARC_AUTH_BOOTSTRAP_TOKEN=$T RUST_LOG=warn $bin > node.log 2>&1 &
  local pid=$!
  for i in $(seq 100); do curl -sf localhost:18000/ready >/dev/null && break; sleep 0.1; done
  echo "$label $* :: $($B --url http://127.0.0.1:18000 --concurrency 8 --duration 15 "$@" 2>&1 | tail -1)"
  kill -TERM $pid; wait $pid 2>/dev/null
}
for args in "write --format msgpack --batch-size 5000" "write --format lp --batch-size 5000 --measurement cpu_lp" "write --format msgpack --batch-size 10000" "write --format lp --batch-size 10000 --measurement cpu_lp"; do
  run "$OLD" old $args
  run "$NEW" new $args
done
