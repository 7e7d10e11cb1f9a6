//! Metrics of the binary (HTTP, ingest, group commit, flushes) and the Prometheus recorder.
//!
//! Names follow `arc_<area>_<thing>_<unit>`; label values are bounded (route templates, not
//! raw paths; outcomes from a fixed set). The crates record their own metrics (`arc_wal_*`,
//! `arc_catalog_*`, `arc_query_*`) through the same global recorder.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Installs the global Prometheus recorder once per process and returns its handle; `None` if
/// another recorder was installed first (several nodes in one test process). A node that
/// steps down starts again in the same process and gets the same handle.
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE.get_or_init(install_recorder).clone()
}

fn install_recorder() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .ok()?
        .install_recorder()
        .ok()?;
    describe();
    arc_wal::describe_metrics();
    arc_storage::metrics::describe();
    arc_query::describe_metrics();
    arc_auth::metrics::describe();
    arc_gossip::describe_metrics();
    arc_compact::metrics::describe();
    gauge!("arc_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Some(handle)
}

fn describe() {
    describe_counter!(
        "arc_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!("arc_http_request_seconds", "HTTP request latency by route");
    describe_counter!("arc_ingest_rows_total", "Rows acknowledged, by format");
    describe_counter!(
        "arc_ingest_bytes_total",
        "Request body bytes received, by format"
    );
    describe_counter!(
        "arc_ingest_rejected_total",
        "Write requests rejected, by reason"
    );
    describe_counter!(
        "arc_ingest_skipped_lines_total",
        "Bad lines left out of lenient line protocol writes (ingest.lenient_line_protocol)"
    );
    describe_histogram!(
        "arc_wal_group_commit_requests",
        "Requests sharing one WAL sync"
    );
    describe_histogram!(
        "arc_wal_group_commit_seconds",
        "Duration of one group commit sync"
    );
    describe_counter!("arc_flush_total", "Table flushes, by outcome");
    describe_counter!("arc_flush_rows_total", "Rows written to Parquet by flushes");
    describe_counter!("arc_flush_bytes_total", "Parquet bytes written by flushes");
    describe_histogram!(
        "arc_flush_seconds",
        "Duration of one flushed chunk, from the start of its encoding to its catalog commit (waits for an encoder, the chunk before it and the group commit included)"
    );
    describe_gauge!("arc_buffer_rows", "Acknowledged rows not yet flushed");
    describe_gauge!(
        "arc_buffer_bytes",
        "Arrow bytes of acknowledged rows not yet flushed (writes get 503 past ingest.max_buffered_bytes)"
    );
    describe_gauge!(
        "arc_queries_running",
        "Queries running now (at most query.max_concurrent)"
    );
    describe_counter!(
        "arc_query_refused_total",
        "Queries refused before they ran, by reason (concurrency: query.max_concurrent reached)"
    );
    describe_gauge!(
        "arc_standby_wal_bytes",
        "Entry bytes in a standby writer's own write-ahead log at start (may hold acknowledged rows no flush covers)"
    );
    describe_histogram!(
        "arc_replication_ack_wait_seconds",
        "Primary: how long a group commit waited after its local sync until every in-sync standby had it, by outcome (ok, timeout)"
    );
    describe_gauge!(
        "arc_replication_isr_size",
        "Primary: standbys in the committed in-sync set"
    );
    describe_counter!(
        "arc_replication_isr_changes_total",
        "Primary: isr records committed, by change (add, remove)"
    );
    describe_gauge!(
        "arc_replication_follower_lag_lsns",
        "Primary: LSNs a follower is behind the local durable LSN, by node and role"
    );
    describe_gauge!(
        "arc_replication_follower_lag_seconds",
        "Primary: age of the oldest entry a follower has not confirmed, by node and role"
    );
    describe_gauge!(
        "arc_replication_follower_connected",
        "Primary: 1 while a follower's stream is up, by node and role"
    );
    describe_counter!(
        "arc_replication_reconnects_total",
        "Follower: streams (re)subscribed to the primary, by how the previous one ended"
    );
    describe_gauge!(
        "arc_replication_applied_lsn",
        "Follower: highest LSN whose rows are visible here"
    );
    describe_counter!(
        "arc_failovers_total",
        "Promotions this node won, by reason (dead, silent, unhealthy, switchover)"
    );
    describe_counter!(
        "arc_failover_held_back_total",
        "Standby: failover checks that found the primary needing replacement and did not promote, by why (cooldown, ineligible, cut_off: no other node answers, link_cut: another node hears the primary)"
    );
    describe_counter!(
        "arc_switchovers_total",
        "Planned switchovers this primary handed its epoch over in"
    );
    describe_histogram!(
        "arc_switchover_unavailable_seconds",
        "Planned switchover: from closing writes to the new primary serving"
    );
    describe_counter!(
        "arc_step_downs_total",
        "Times this primary learned of a newer epoch and stepped down to standby"
    );
    describe_histogram!(
        "arc_failover_detection_seconds",
        "From the failover trigger first holding to the promote attempt"
    );
    describe_histogram!(
        "arc_failover_promotion_seconds",
        "From the promote attempt to serving writes (promote record, WAL replay, writer start)"
    );
    describe_gauge!(
        "arc_failover_last_timestamp_seconds",
        "When this node last took over as primary (Unix seconds)"
    );
    describe_gauge!(
        "arc_replication_received_lsn",
        "Follower: highest LSN received from the primary (acknowledged or not)"
    );
    describe_gauge!(
        "arc_replication_commit_lsn",
        "Follower: the primary's acknowledged LSN as last heard"
    );
    describe_gauge!("arc_build_info", "Build information");
    describe_gauge!("arc_http_connections", "Open HTTP API connections");
    describe_counter!(
        "arc_http_connections_refused_total",
        "Connections closed at once because server.max_connections and the probe reserve were full"
    );
    describe_counter!(
        "arc_http_connections_timed_out_total",
        "Connections closed by the server, by reason (idle_timeout, header_read_timeout, tls_handshake_timeout, evicted: an idle one closed to make room past server.max_connections)"
    );
    describe_counter!(
        "arc_forward_requests_total",
        "Requests forwarded to another node, by need (write, query, compaction) and outcome"
    );
    describe_counter!(
        "arc_cluster_bootstrap_total",
        "Bootstrap races for the first writer epoch, by outcome (won, lost)"
    );
    describe_gauge!("arc_health_score", "This node's health score (0-100)");
    describe_counter!(
        "arc_compaction_runs_total",
        "Compaction scheduler runs, by trigger (schedule, manual) and outcome (ok, error)"
    );
    describe_histogram!(
        "arc_compaction_run_seconds",
        "Duration of one compaction scheduler run"
    );
    describe_gauge!(
        "arc_compaction_pending_jobs",
        "Jobs of the current compaction run not yet finished on this node"
    );
    describe_counter!(
        "arc_compaction_gc_runs_total",
        "Garbage collector runs, by outcome (ok, error)"
    );
    describe_gauge!(
        "arc_health_status",
        "1 for this node's current health status (healthy, degraded, unhealthy), else 0"
    );
}

/// Records a forwarded request.
pub fn record_forward(need: &'static str, outcome: &'static str) {
    counter!("arc_forward_requests_total", "need" => need, "outcome" => outcome).increment(1);
}

/// Records one compaction run.
pub fn record_compaction_run(trigger: &'static str, ok: bool, elapsed: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("arc_compaction_runs_total", "trigger" => trigger, "outcome" => outcome).increment(1);
    histogram!("arc_compaction_run_seconds").record(elapsed.as_secs_f64());
}

/// Sets the gauge of compaction jobs not yet finished.
pub fn set_compaction_pending_jobs(jobs: usize) {
    gauge!("arc_compaction_pending_jobs").set(jobs as f64);
}

/// Records one garbage collector run.
pub fn record_compaction_gc(ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("arc_compaction_gc_runs_total", "outcome" => outcome).increment(1);
}

/// Records the outcome of a bootstrap race.
pub fn record_bootstrap(outcome: &'static str) {
    counter!("arc_cluster_bootstrap_total", "outcome" => outcome).increment(1);
}

/// Records the latest health check.
pub fn record_health(health: &arc_gossip::Health) {
    gauge!("arc_health_score").set(f64::from(health.score));
    for status in [
        arc_gossip::HealthStatus::Healthy,
        arc_gossip::HealthStatus::Degraded,
        arc_gossip::HealthStatus::Unhealthy,
    ] {
        gauge!("arc_health_status", "status" => status.to_string())
            .set(if status == health.status { 1.0 } else { 0.0 });
    }
}

/// Records one HTTP request.
pub fn record_http(route: &str, method: &str, status: u16, elapsed: Duration) {
    counter!(
        "arc_http_requests_total",
        "route" => route.to_string(),
        "method" => method.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
    histogram!("arc_http_request_seconds", "route" => route.to_string())
        .record(elapsed.as_secs_f64());
}

/// Records an acknowledged write.
pub fn record_ingest(format: &'static str, rows: u64, bytes: u64) {
    counter!("arc_ingest_rows_total", "format" => format).increment(rows);
    counter!("arc_ingest_bytes_total", "format" => format).increment(bytes);
}

/// Records the bad lines a lenient line protocol write left out.
pub fn record_skipped_lines(lines: u64) {
    counter!("arc_ingest_skipped_lines_total").increment(lines);
}

/// Records a rejected write.
pub fn record_rejected(reason: &'static str) {
    counter!("arc_ingest_rejected_total", "reason" => reason).increment(1);
}

/// A query holding its `query.max_concurrent` permit, counted in `arc_queries_running` until
/// it is dropped.
pub struct RunningQuery {
    /// Released when the query ends.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl RunningQuery {
    /// Counts the query that holds `permit` as running.
    pub fn start(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        gauge!("arc_queries_running").increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for RunningQuery {
    fn drop(&mut self) {
        gauge!("arc_queries_running").decrement(1.0);
    }
}

/// Counts a query refused before it ran, by reason.
pub fn record_query_refused(reason: &'static str) {
    counter!("arc_query_refused_total", "reason" => reason).increment(1);
}

/// Records one group commit.
pub fn record_wal_group(requests: usize, elapsed: Duration) {
    histogram!("arc_wal_group_commit_requests").record(requests as f64);
    histogram!("arc_wal_group_commit_seconds").record(elapsed.as_secs_f64());
}

/// Records one table flush.
pub fn record_flush(outcome: &'static str, rows: u64, bytes: u64, elapsed: Duration) {
    counter!("arc_flush_total", "outcome" => outcome).increment(1);
    if outcome == "ok" {
        counter!("arc_flush_rows_total").increment(rows);
        counter!("arc_flush_bytes_total").increment(bytes);
    }
    histogram!("arc_flush_seconds").record(elapsed.as_secs_f64());
}

/// Sets the gauge of entry bytes found in a standby writer's WAL at start.
pub fn record_standby_wal_bytes(bytes: u64) {
    gauge!("arc_standby_wal_bytes").set(bytes as f64);
}

/// Records how long a group commit waited for its acknowledgement.
pub fn record_ack_wait(outcome: &'static str, elapsed: Duration) {
    histogram!("arc_replication_ack_wait_seconds", "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// Records a committed ISR change and the new size.
pub fn record_isr_change(change: &'static str, size: usize) {
    counter!("arc_replication_isr_changes_total", "change" => change).increment(1);
    set_isr_size(size);
}

/// Sets the ISR size gauge.
pub fn set_isr_size(size: usize) {
    gauge!("arc_replication_isr_size").set(size as f64);
}

/// Sets one follower's lag and connection gauges (primary).
pub fn set_follower(node: &str, role: &'static str, lag_lsns: u64, lag_ms: u64, connected: bool) {
    let labels = [("node", node.to_string()), ("role", role.to_string())];
    gauge!("arc_replication_follower_lag_lsns", &labels).set(lag_lsns as f64);
    gauge!("arc_replication_follower_lag_seconds", &labels).set(lag_ms as f64 / 1000.0);
    gauge!("arc_replication_follower_connected", &labels).set(if connected { 1.0 } else { 0.0 });
}

/// Counts a follower's (re)subscription, by how the previous stream ended.
pub fn record_reconnect(previous_end: &'static str) {
    counter!("arc_replication_reconnects_total", "previous_end" => previous_end).increment(1);
}

/// Sets a follower's received, visible and commit LSN gauges.
pub fn set_follower_lsns(received: u64, visible: u64, commit: u64) {
    gauge!("arc_replication_received_lsn").set(received as f64);
    gauge!("arc_replication_applied_lsn").set(visible as f64);
    gauge!("arc_replication_commit_lsn").set(commit as f64);
}

/// Records a promotion this node won.
pub fn record_failover(
    reason: &'static str,
    detection: Duration,
    promotion: Duration,
    at_unix_ms: u64,
) {
    counter!("arc_failovers_total", "reason" => reason).increment(1);
    histogram!("arc_failover_detection_seconds").record(detection.as_secs_f64());
    histogram!("arc_failover_promotion_seconds").record(promotion.as_secs_f64());
    gauge!("arc_failover_last_timestamp_seconds").set(at_unix_ms as f64 / 1000.0);
}

/// Counts a failover check that held back: `why` is `cooldown`, `ineligible`, `cut_off` or
/// `link_cut`.
pub fn record_failover_held_back(why: &'static str) {
    counter!("arc_failover_held_back_total", "why" => why).increment(1);
}

/// Records a planned switchover this primary carried out: how long writes were refused.
pub fn record_switchover(unavailable: Duration) {
    counter!("arc_switchovers_total").increment(1);
    histogram!("arc_switchover_unavailable_seconds").record(unavailable.as_secs_f64());
}

/// Counts a step-down of this primary (a newer epoch owns the catalog).
pub fn record_step_down() {
    counter!("arc_step_downs_total").increment(1);
}

/// Sets the buffered-rows gauge.
pub fn set_buffer_rows(rows: u64) {
    gauge!("arc_buffer_rows").set(rows as f64);
}

/// Sets the buffered-bytes gauge.
pub fn set_buffer_bytes(bytes: u64) {
    gauge!("arc_buffer_bytes").set(bytes as f64);
}

/// Sets the number of open HTTP API connections.
pub fn set_connections(open: usize) {
    gauge!("arc_http_connections").set(open as f64);
}

/// Counts a connection closed at once because the connection limit was reached.
pub fn record_connection_refused() {
    counter!("arc_http_connections_refused_total").increment(1);
}

/// Counts a connection closed by one of the server's timeouts.
pub fn record_connection_timeout(reason: &'static str) {
    counter!("arc_http_connections_timed_out_total", "reason" => reason).increment(1);
}
