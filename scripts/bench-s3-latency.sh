#!/usr/bin/env bash
# scripts/bench-sustained.sh against S3 with remote-like round trips: moto's S3 server
# (pip install "moto[server]") on 127.0.0.1:19000 behind scripts/delay-proxy.py (DELAY seconds
# each way per chunk, default 0.01) on 127.0.0.1:19002, a fresh bucket per binary, every other
# node setting the default.
#   scripts/bench-s3-latency.sh ARC_NODE_BINARY... (env: DURATION, DELAY, BENCH_ARGS, ARC_BENCH)
#   BENCH_ARGS defaults to "--format lp --batch-size 200 --payloads 2000 --tables 200".
set -u
cd "$(dirname "$0")/.." || exit 1
moto_server -p 19000 >/dev/null 2>&1 &
moto=$!
python3 scripts/delay-proxy.py 19002 19000 "${DELAY:-0.01}" &
proxy=$!
trap 'kill $moto $proxy 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null localhost:19002/ && break; sleep 0.1; done
export BENCH_ARGS=${BENCH_ARGS:---format lp --batch-size 200 --payloads 2000 --tables 200}
export DURATION=${DURATION:-45}
for bin in "$@"; do
  bucket=bench$RANDOM$RANDOM
  curl -sf -X PUT "localhost:19000/$bucket" >/dev/null || { echo "cannot create bucket $bucket"; exit 1; }
  NODE_ENV="ARC_STORAGE_BACKEND=s3 ARC_STORAGE_S3_BUCKET=$bucket ARC_STORAGE_S3_REGION=us-east-1
    ARC_STORAGE_S3_ENDPOINT=http://127.0.0.1:19002 ARC_STORAGE_S3_ACCESS_KEY=a
    ARC_STORAGE_S3_SECRET_KEY=b ARC_STORAGE_S3_USE_SSL=false ARC_STORAGE_S3_PATH_STYLE=true" \
    scripts/bench-sustained.sh "$bin"
done
