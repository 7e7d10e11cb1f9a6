#!/usr/bin/env bash
# Compaction benchmark (BENCHMARKS.md "Compaction"): one standalone node, fdatasync, port 18000.
#   scripts/bench-compaction.sh [ARC_NODE_BINARY] [ARC_BENCH_BINARY]
# 1. loads DAYS closed days (from 2025-03-01) of `hist.cpu` as a steady ingest would leave them:
#    every hour gets FLUSHES small objects (one flush round writes every hour once); and a small
#    table `ref.cpu` (never compacted here) for the query latency of steps 3;
# 2. times a query over that day (before compaction);
# 3. runs ingest (arc-bench write, msgpack, into bench.cpu) and queries (arc-bench query over
#    ref.cpu) together for WINDOW seconds
#    with compaction idle, then for WINDOW seconds while compaction runs (hourly, then daily,
#    re-triggered until the window ends), then idle again: the same node and data;
# 4. reports merge rows/s and MiB/s per tier, objects before/after, and the day query after
#    hourly and after daily compaction.
# Knobs (environment): DAYS (3), FLUSHES (40), ROWS (2500 rows per hour and flush), WINDOW (20 s),
# WRITE_CONCURRENCY (2), BATCH (5000), QUERY_SECONDS (10).
set -u
NODE=${1:-${CARGO_TARGET_DIR:-target}/release/arc-node}
BENCH=${2:-${CARGO_TARGET_DIR:-target}/release/arc-bench}
NODE=$(realpath "$NODE"); BENCH=$(realpath "$BENCH")
DAYS=${DAYS:-3}
FLUSHES=${FLUSHES:-40}
ROWS=${ROWS:-2500}
WINDOW=${WINDOW:-20}
WRITE_CONCURRENCY=${WRITE_CONCURRENCY:-2}
BATCH=${BATCH:-5000}
QUERY_SECONDS=${QUERY_SECONDS:-10}
PORT=18000
URL=http://127.0.0.1:$PORT
T=bench-token-0123456789abcdefghijklmnopqrstuv
export ARC_BENCH_TOKEN=$T
work=$(mktemp -d)
node_pid=
cleanup() { [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
api() { curl -sf -H "Authorization: Bearer $T" "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
objects() { find "$work/node/data/storage/hist" -name '*.parquet' 2>/dev/null | wc -l; }

echo "machine: $(nproc) cores; $(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}'); $(uname -r)"
mkdir -p "$work/node" && cd "$work/node" || exit 1
# No scheduled compaction or collection during the run: the script triggers every run.
ARC_SERVER_PORT=$PORT ARC_WAL_SYNC_MODE=fdatasync ARC_AUTH_BOOTSTRAP_TOKEN=$T RUST_LOG=warn \
  ARC_COMPACTION_INTERVAL=1h ARC_COMPACTION_GC_INTERVAL=1h "$NODE" > node.log 2>&1 &
node_pid=$!
for _ in $(seq 200); do curl -sf $URL/ready >/dev/null && break; sleep 0.1; done

echo "loading: $DAYS days x 24 hours x $FLUSHES flushes x $ROWS rows into hist.cpu (from 2025-03-01)"
started=$SECONDS
python3 - "$URL" "$T" "$FLUSHES" "$ROWS" "$DAYS" <<'PY'
import sys, urllib.request, random
url, token, flushes, rows, days = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
first_day = 1740787200 * 10**9
hour = 3600 * 10**9
step = hour // (flushes * rows)
rng = random.Random(7)
def post(path, body, db=None):
    headers = {"Authorization": "Bearer " + token}
    if db:
        headers["x-arc-database"] = db
    request = urllib.request.Request(url + path, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request) as response:
        assert response.status in (200, 204), response.status
def load(db, days, flushes, rows):
    for flush in range(flushes):
        for d in range(days):
            lines = []
            for h in range(24):
                base = first_day + d * 24 * hour + h * hour
                for k in range(rows):
                    t = base + (k * flushes + flush) * step
                    lines.append("cpu,host=host-%d,region=r%d usage_user=%.3f,usage_system=%.3f,usage_idle=%.3f,requests=%di %d"
                                 % (k % 100, k % 4, rng.random() * 100, rng.random() * 50, rng.random() * 100, k, t))
            post("/api/v1/write/line-protocol", ("\n".join(lines) + "\n").encode(), db=db)
        post("/api/v1/write/line-protocol/flush", b"")
load("hist", days, flushes, rows)
load("ref", 1, 4, 2500)
PY
echo "loaded in $((SECONDS - started)) s; objects of hist.cpu before compaction: $(objects)"

DAY_SQL="SELECT host, count(*), avg(usage_user), max(usage_idle), sum(requests) FROM hist.cpu WHERE time >= '2025-03-01T00:00:00Z' AND time < '2025-03-02T00:00:00Z' GROUP BY host"
day_query() { # label
  echo "day query $1: $("$BENCH" --url $URL --concurrency 1 --duration "$QUERY_SECONDS" query --database hist --sql "$DAY_SQL" 2>&1 | tail -1)"
}
day_query "before compaction ($(objects) objects)"

LIVE_SQL="SELECT host, count(*), avg(usage_user), max(usage_idle) FROM ref.cpu GROUP BY host"
window() { # label
  "$BENCH" --url $URL --concurrency "$WRITE_CONCURRENCY" --duration "$WINDOW" --json write --format msgpack --batch-size "$BATCH" > "$work/write.json" 2>&1 &
  local writer=$!
  "$BENCH" --url $URL --concurrency 1 --duration "$WINDOW" --json query --database ref --sql "$LIVE_SQL" > "$work/query.json" 2>&1 &
  local reader=$!
  wait $writer $reader
  echo "$1: ingest $(json '"%.0f rows/s, p50 %.1f ms, p99 %.1f ms, errors %d" % (d["rows_per_s"], d["p50_ms"], d["p99_ms"], d["errors"])' < "$work/write.json");" \
       "query $(json '"%.2f/s, p50 %.1f ms, p99 %.1f ms, errors %d" % (d["requests_per_s"], d["p50_ms"], d["p99_ms"], d["errors"])' < "$work/query.json")"
}

window "idle      "

# Compaction during the window: hourly, then daily, re-triggered while the window lasts; the
# time a run was going is measured between polls.
(
  start=$EPOCHREALTIME; end=$(python3 -c "print($start + $WINDOW)"); busy=0; tiers=(hourly daily); i=0
  prev=$EPOCHREALTIME
  while python3 -c "import sys; sys.exit(0 if $EPOCHREALTIME < $end else 1)"; do
    if api -XPOST "$URL/api/v1/compaction/trigger?database=hist&tier=${tiers[$((i % 2))]}" >/dev/null; then i=$((i + 1)); fi
    sleep 0.2
    running=$(api "$URL/api/v1/compaction/status" | json 'd["data"]["run"] is not None')
    now=$EPOCHREALTIME
    [ "$running" = True ] && busy=$(python3 -c "print($busy + $now - $prev)")
    prev=$now
  done
  echo "$busy" > "$work/busy"; echo "$i" > "$work/runs"
) &
driver=$!
window "compacting"
wait $driver
echo "a compaction run was going during $(python3 -c "print(round(100 * $(cat "$work/busy") / $WINDOW))")% of the window ($(cat "$work/runs") runs triggered)"
# Let the last run finish before the idle window.
for _ in $(seq 600); do [ "$(api "$URL/api/v1/compaction/status" | json 'd["data"]["run"] is None')" = True ] && break; sleep 0.5; done
window "idle again"

# Whatever the window left: finish hourly and daily, then report per-tier merge rates.
for tier in hourly daily; do
  api -XPOST "$URL/api/v1/compaction/trigger?database=hist&tier=$tier" >/dev/null
  sleep 0.2
  for _ in $(seq 600); do [ "$(api "$URL/api/v1/compaction/status" | json 'd["data"]["run"] is None')" = True ] && break; sleep 0.5; done
done
api "$URL/api/v1/compaction/status" > "$work/status.json"
curl -sf $URL/metrics > "$work/metrics.txt"
python3 - "$work/status.json" "$work/metrics.txt" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))["data"]
t = d["totals"]
print("totals: %d jobs, objects %d -> %d, %.1f MiB -> %.1f MiB, rows %d -> %d" % (
    t["jobs_committed"], t["files_before"], t["files_after"], t["bytes_before"] / 2**20,
    t["bytes_after"] / 2**20, t["rows_in"], t["rows_out"]))
metrics = {}
for line in open(sys.argv[2]):
    m = re.match(r'(arc_compact_\w+)\{tier="(\w+)"\} ([0-9.e+]+)$', line.strip())
    if m:
        metrics[(m.group(1), m.group(2))] = float(m.group(3))
for tier in ("hourly", "daily"):
    seconds = metrics.get(("arc_compact_job_seconds_sum", tier))
    if not seconds:
        continue
    rows = metrics.get(("arc_compact_rows_in_total", tier), 0)
    size = metrics.get(("arc_compact_bytes_in_total", tier), 0)
    files = metrics.get(("arc_compact_files_removed_total", tier), 0)
    jobs = metrics.get(("arc_compact_job_seconds_count", tier), 0)
    print("%s: %d jobs, %d files in, %.0f rows/s, %.1f MiB/s of input Parquet (job time %.1f s, loaded and idle jobs together)" % (
        tier, jobs, files, rows / seconds, size / 2**20 / seconds, seconds))
PY
echo "live objects of hist.cpu after daily compaction: 1 per day (files on disk until gc_grace passes: $(objects))"
day_query "after daily compaction"
