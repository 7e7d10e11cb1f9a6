#!/bin/sh
# kill -9 drills of the primary (issue 11): runs the failover test with ARC_FAILOVER_DRILLS
# drills (default 20) and prints p50 and p99 of kill -9 -> first acknowledged write, split into
# detection (kill -> promote written), promotion (promote, replay, start) and catch-up (the
# rest). Real binaries on loopback: 1 primary, 2 standbys, 1 reader, 4 writing clients.
#
#   scripts/bench-failover.sh            # 20 drills, default cluster.failover_timeout (3s)
#   ARC_FAILOVER_DRILLS=40 ARC_CLUSTER_FAILOVER_TIMEOUT=1500ms scripts/bench-failover.sh
#
# The test's cluster runs a 200ms gossip heartbeat and 1s health checks; every other setting is
# the default unless given here.
set -eu
cd "$(dirname "$0")/.."
# The compiled DuckDB of .ci/run's target directory, not a second cold build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arc-node/target}"
drills="${ARC_FAILOVER_DRILLS:-20}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
ARC_FAILOVER_DRILLS="$drills" cargo test --release --test it -- \
    failover::test_kill_9_of_the_primary_under_load_loses_nothing --exact --nocapture >"$log" 2>&1 || {
    tail -50 "$log"
    exit 1
}
grep -a '^drill ' "$log"
grep -a '^drill ' "$log" | awk '
function seconds(text) {
    sub(/:$/, "", text)
    if (text ~ /ms$/) { sub(/ms$/, "", text); return text / 1000 }
    sub(/s$/, "", text); return text + 0
}
function pct(values, n, p,    i, j, t, k) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
        if (values[j] < values[i]) { t = values[i]; values[i] = values[j]; values[j] = t }
    k = int((n - 1) * p + 0.5) + 1
    return values[k]
}
{
    n++
    for (i = 1; i <= NF; i++) {
        if ($i == "in") total[n] = seconds($(i + 1))
        if ($i == "detection") detection[n] = $(i + 1) / 1000
        if ($i == "promotion") promotion[n] = $(i + 1) / 1000
        if ($i == "catch-up") catchup[n] = $(i + 1) / 1000
    }
}
END {
    printf "%d drills      p50      p99\n", n
    printf "total       %6.2f s %6.2f s\n", pct(total, n, 0.5), pct(total, n, 0.99)
    printf "detection   %6.2f s %6.2f s\n", pct(detection, n, 0.5), pct(detection, n, 0.99)
    printf "promotion   %6.3f s %6.3f s\n", pct(promotion, n, 0.5), pct(promotion, n, 0.99)
    printf "catch-up    %6.2f s %6.2f s\n", pct(catchup, n, 0.5), pct(catchup, n, 0.99)
}'
