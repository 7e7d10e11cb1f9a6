#!/usr/bin/env bash
# Sustained ingest against fresh nodes with every default (port 18120): DURATION seconds
# (default 60) of writes at 8 connections, then what the node flushed meanwhile, its catalog
# commits, the log objects left and its peak RSS. Backpressure (503) shows in the error count.
#   scripts/bench-sustained.sh ARC_NODE_BINARY... (env: DURATION, BENCH_ARGS, ARC_BENCH, NODE_ENV)
#   BENCH_ARGS defaults to "--format lp --batch-size 5000"; add "--tables 64" for many tables.
#   NODE_ENV: more KEY=VALUE settings for the node, space-separated (another storage backend).
set -u
T=bench-token-0123456789abcdefghijklmnopqrstuv
export ARC_BENCH_TOKEN=$T
B=${ARC_BENCH:-${CARGO_TARGET_DIR:-target}/release/arc-bench}
D=${DURATION:-60}
metric() { awk -v name="$1" '$1 == name { print $2 }'; }
for bin in "$@"; do
  work=$(mktemp -d)
  (
    cd "$work" || exit 1
    # shellcheck disable=SC2086
    env ${NODE_ENV:-} ARC_SERVER_PORT=18120 ARC_AUTH_BOOTSTRAP_TOKEN=$T RUST_LOG=warn "$bin" \
      > node.log 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf localhost:18120/ready >/dev/null && break; sleep 0.1; done
    # shellcheck disable=SC2086
    line=$("$B" --url http://127.0.0.1:18120 --concurrency 8 --duration "$D" write \
      ${BENCH_ARGS:---format lp --batch-size 5000} 2>&1 | grep -v "first error" | tail -1)
    m=$(curl -s localhost:18120/metrics)
    rows=$(echo "$m" | metric arc_flush_rows_total)
    flushes=$(echo "$m" | metric arc_flush_seconds_count)
    flush_sum=$(echo "$m" | metric arc_flush_seconds_sum)
    commits=$(echo "$m" | metric arc_catalog_commit_seconds_count)
    commit_sum=$(echo "$m" | metric arc_catalog_commit_seconds_sum)
    echo "$(basename "$bin"): $line"
    echo "   flushed $(awk -v r="${rows:-0}" -v d="$D" 'BEGIN { printf "%.0f", r / d }') rows/s," \
      "$flushes flushes (mean $(awk -v s="$flush_sum" -v c="$flushes" 'BEGIN { printf "%.1f", 1000 * s / c }') ms)," \
      "$commits commits (mean $(awk -v s="$commit_sum" -v c="$commits" 'BEGIN { printf "%.2f", 1000 * s / c }') ms)," \
      "log objects $(find data/storage/_catalog/log -type f 2>/dev/null | wc -l) (local storage)," \
      "VmHWM $(awk '/VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status")"
    kill -TERM $pid
    wait $pid 2>/dev/null
  )
  rm -rf "$work"
done
