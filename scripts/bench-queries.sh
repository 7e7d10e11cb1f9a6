#!/usr/bin/env bash
# Query timings over a table written by 40 s of line protocol ingest (arc-bench, 8 connections,
# 5,000 lines a request: about 100 M rows in about 2,000 flushed objects, compaction off).
#   scripts/bench-queries.sh WRITER_BINARY QUERY_BINARY [DIR]
# WRITER_BINARY ingests into DIR (default: a temporary directory; an existing DIR/data is
# reused as is), QUERY_BINARY then answers each query three times (execution_time_ms).
set -u
T=bench-token-0123456789abcdefghijklmnopqrstuv
B=${ARC_BENCH:-${CARGO_TARGET_DIR:-target}/release/arc-bench}
WRITER=${1:?writer binary}
QUERIER=${2:?query binary}
DIR=${3:-$(mktemp -d)}
start() {
  ARC_COMPACTION_ENABLED=false ARC_SERVER_PORT=18140 ARC_AUTH_BOOTSTRAP_TOKEN=$T RUST_LOG=warn \
    "$1" > "$DIR/node.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -sf localhost:18140/ready >/dev/null && break; sleep 0.1; done
}
query() {
  curl -s -H "Authorization: Bearer $T" localhost:18140/api/v1/query -d "{\"sql\":\"$1\"}"
}
cd "$DIR" || exit 1
if [ ! -d data ]; then
  start "$WRITER"
  ARC_BENCH_TOKEN=$T "$B" --url http://127.0.0.1:18140 --concurrency 8 --duration 40 write \
    --format lp --batch-size 5000 2>&1 | tail -1
  curl -s -X POST -H "Authorization: Bearer $T" localhost:18140/api/v1/write/line-protocol/flush >/dev/null
  kill $pid; wait $pid 2>/dev/null
fi
echo "storage: $(du -sm data/storage | cut -f1) MB in $(find data/storage -name '*.parquet' | wc -l) objects"
start "$QUERIER"
range=$(query "SELECT min(time), max(time) FROM bench.cpu" | grep -o '"data":\[\["[^"]*","[^"]*"' | cut -d'"' -f4,6)
first=${range%%\"*}
# Two minutes from the first minute on: about 40 % of the rows.
from=$(date -u -d "${first%.*}Z + 60 seconds" +%Y-%m-%dT%H:%M:%SZ)
to=$(date -u -d "${first%.*}Z + 180 seconds" +%Y-%m-%dT%H:%M:%SZ)
for sql in "SELECT count(*) FROM bench.cpu" \
  "SELECT max(usage_idle) FROM bench.cpu" \
  "SELECT host, avg(usage_idle) FROM bench.cpu GROUP BY host ORDER BY host LIMIT 3" \
  "SELECT avg(usage_idle) FROM bench.cpu WHERE time >= '$from' AND time < '$to'" \
  "SELECT date_trunc('minute', time) AS m, avg(usage_idle) FROM bench.cpu GROUP BY m ORDER BY m"; do
  times=""
  for _ in 1 2 3; do
    times="$times $(query "$sql" | grep -o '"execution_time_ms":[0-9]*' | cut -d: -f2)"
  done
  echo "$sql ::$times ms"
done
kill $pid; wait $pid 2>/dev/null
