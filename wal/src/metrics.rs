//! The WAL's metrics: names, descriptions and the handles the writer records into.
//!
//! Handles are resolved once, in [`crate::Wal::open`], against the recorder installed at that
//! moment; install the recorder (and call [`describe_metrics`]) before opening the WAL, or the
//! handles are no-ops.

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

/// Entries appended.
pub const APPENDS_TOTAL: &str = "arc_wal_appends_total";
/// Bytes appended, frame headers included.
pub const APPEND_BYTES_TOTAL: &str = "arc_wal_append_bytes_total";
/// Duration of the `fsync`/`fdatasync` in each `sync()` (not recorded in `async` mode).
pub const FSYNC_SECONDS: &str = "arc_wal_fsync_seconds";
/// Segment files currently live, the active one included.
pub const SEGMENTS: &str = "arc_wal_segments";
/// Recoveries that found a torn or corrupt entry and cut the log there.
pub const RECOVERY_TRUNCATIONS_TOTAL: &str = "arc_wal_recovery_truncations_total";

/// Registers the descriptions and units of the WAL's metrics with the installed recorder.
pub fn describe_metrics() {
    describe_counter!(APPENDS_TOTAL, Unit::Count, "Entries appended to the WAL.");
    describe_counter!(
        APPEND_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes appended to the WAL, frame headers included."
    );
    describe_histogram!(
        FSYNC_SECONDS,
        Unit::Seconds,
        "Duration of the fsync or fdatasync of one WAL group commit."
    );
    describe_gauge!(SEGMENTS, Unit::Count, "Live WAL segment files.");
    describe_counter!(
        RECOVERY_TRUNCATIONS_TOTAL,
        Unit::Count,
        "WAL recoveries that cut the log at a torn or corrupt entry."
    );
}

/// Handles the writer records into on its hot path.
pub(crate) struct WalMetrics {
    pub(crate) appends: Counter,
    pub(crate) append_bytes: Counter,
    pub(crate) fsync_seconds: Histogram,
    pub(crate) segments: Gauge,
}

impl WalMetrics {
    /// Resolves the handles against the current recorder.
    pub(crate) fn new() -> Self {
        Self {
            appends: counter!(APPENDS_TOTAL),
            append_bytes: counter!(APPEND_BYTES_TOTAL),
            fsync_seconds: histogram!(FSYNC_SECONDS),
            segments: gauge!(SEGMENTS),
        }
    }
}

/// Counts one recovery that cut the log.
pub(crate) fn record_recovery_truncation() {
    counter!(RECOVERY_TRUNCATIONS_TOTAL).increment(1);
}
