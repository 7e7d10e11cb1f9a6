#!/usr/bin/env bash
# Sustained many-table ingest against fresh nodes on S3 with remote-like round trips: moto's
# S3 server (pip install "moto[server]") on 127.0.0.1:19000 behind scripts/delay-proxy.py
# (DELAY seconds each way per chunk, default 0.01) on 127.0.0.1:19002. Every other setting is
# the default. Per binary: DURATION seconds (default 45) of writes at 8 connections, then the
# rows flushed meanwhile, flushes, catalog commits and peak RSS.
#   scripts/bench-s3-latency.sh ARC_NODE_BINARY... (env: DURATION, DELAY, BENCH_ARGS, ARC_BENCH)
#   BENCH_ARGS defaults to "--format lp --batch-size 200 --payloads 2000 --tables 200".
set -u
cd "$(dirname "$0")/.." || exit 1
T=bench-token-0123456789abcdefghijklmnopqrstuv
export ARC_BENCH_TOKEN=$T
B=${ARC_BENCH:-${CARGO_TARGET_DIR:-target}/release/arc-bench}
D=${DURATION:-45}
ARGS=${BENCH_ARGS:---format lp --batch-size 200 --payloads 2000 --tables 200}
metric() { awk -v name="$1" '$1 == name { print $2 }'; }
moto_server -p 19000 >/dev/null 2>&1 &
moto=$!
python3 scripts/delay-proxy.py 19002 19000 "${DELAY:-0.01}" &
proxy=$!
trap 'kill $moto $proxy 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null localhost:19002/ && break; sleep 0.1; done
for bin in "$@"; do
  work=$(mktemp -d)
  bucket=bench$RANDOM$RANDOM
  curl -sf -X PUT "localhost:19000/$bucket" >/dev/null || { echo "cannot create bucket"; exit 1; }
  (
    cd "$work" || exit 1
    ARC_STORAGE_BACKEND=s3 ARC_STORAGE_S3_BUCKET=$bucket ARC_STORAGE_S3_REGION=us-east-1 \
      ARC_STORAGE_S3_ENDPOINT=http://127.0.0.1:19002 ARC_STORAGE_S3_ACCESS_KEY=a \
      ARC_STORAGE_S3_SECRET_KEY=b ARC_STORAGE_S3_USE_SSL=false ARC_STORAGE_S3_PATH_STYLE=true \
      ARC_SERVER_PORT=18120 ARC_AUTH_BOOTSTRAP_TOKEN=$T RUST_LOG=warn "$bin" > node.log 2>&1 &
    pid=$!
    for _ in $(seq 200); do curl -sf localhost:18120/ready >/dev/null && break; sleep 0.1; done
    # shellcheck disable=SC2086
    line=$("$B" --url http://127.0.0.1:18120 --concurrency 8 --duration "$D" write $ARGS 2>&1 \
      | grep -v "first error" | tail -1)
    m=$(curl -s localhost:18120/metrics)
    rows=$(echo "$m" | metric arc_flush_rows_total)
    flushes=$(echo "$m" | metric arc_flush_seconds_count)
    commits=$(echo "$m" | metric arc_catalog_commit_seconds_count)
    commit_sum=$(echo "$m" | metric arc_catalog_commit_seconds_sum)
    echo "$(basename "$bin"): $line"
    echo "   flushed $(awk -v r="${rows:-0}" -v d="$D" 'BEGIN { printf "%.0f", r / d }') rows/s," \
      "$flushes flushes, $commits commits (mean $(awk -v s="$commit_sum" -v c="$commits" 'BEGIN { printf "%.1f", 1000 * s / c }') ms)," \
      "VmHWM $(awk '/VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status")"
    kill -TERM $pid
    wait $pid 2>/dev/null
  )
  rm -rf "$work"
done
