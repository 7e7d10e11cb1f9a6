//! Metric names and recording helpers of this crate, in one place.
//!
//! The binary installs the recorder (Prometheus); until then every call here is a no-op, so
//! tests need no setup. Label values are bounded: `outcome` takes the values of
//! [`CommitOutcome`].

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Catalog commits by outcome (`ok`, `fenced`, `rejected`, `unavailable`, `error`).
pub const CATALOG_COMMITS_TOTAL: &str = "arc_catalog_commits_total";
/// Wall time of one catalog commit, retries included.
pub const CATALOG_COMMIT_SECONDS: &str = "arc_catalog_commit_seconds";
/// Flushes committed together in one catalog record (a group commit of tables flushing at
/// once; 1 when a flush had the record to itself).
pub const CATALOG_FLUSHES_PER_COMMIT: &str = "arc_catalog_flushes_per_commit";
/// The highest catalog sequence number this process has applied.
pub const CATALOG_SEQ: &str = "arc_catalog_seq";
/// Catalog commit attempts whose outcome was ambiguous (an error from the store) and had to be
/// read back.
pub const CATALOG_AMBIGUOUS_TOTAL: &str = "arc_catalog_ambiguous_puts_total";
/// Catalog log records deleted because a checkpoint kept in the store covers them.
pub const CATALOG_LOG_RECORDS_DELETED_TOTAL: &str = "arc_catalog_log_records_deleted_total";
/// Times this process's catalog state jumped to a newer checkpoint because the records after
/// it were truncated (a follower or committer more than two checkpoint intervals behind).
pub const CATALOG_CATCH_UPS_TOTAL: &str = "arc_catalog_catch_ups_total";
/// Data objects uploaded by [`crate::writer::upload_and_commit`].
pub const STORAGE_OBJECTS_UPLOADED_TOTAL: &str = "arc_storage_objects_uploaded_total";
/// Bytes of data objects uploaded.
pub const STORAGE_UPLOADED_BYTES_TOTAL: &str = "arc_storage_uploaded_bytes_total";
/// Objects downloaded into the local object cache (cache misses).
pub const STORAGE_CACHE_DOWNLOADS_TOTAL: &str = "arc_storage_cache_downloads_total";

/// How a catalog commit ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The record landed and is valid.
    Ok,
    /// A newer epoch exists.
    Fenced,
    /// The record's precondition failed.
    Rejected,
    /// The store gave no definite answer within the allowed attempts.
    Unavailable,
    /// Any other error (corrupt log, invalid request).
    Error,
}

impl CommitOutcome {
    fn label(self) -> &'static str {
        match self {
            CommitOutcome::Ok => "ok",
            CommitOutcome::Fenced => "fenced",
            CommitOutcome::Rejected => "rejected",
            CommitOutcome::Unavailable => "unavailable",
            CommitOutcome::Error => "error",
        }
    }
}

/// Registers descriptions and units of this crate's metrics with the installed recorder.
pub fn describe() {
    describe_counter!(
        CATALOG_COMMITS_TOTAL,
        Unit::Count,
        "catalog commits by outcome"
    );
    describe_histogram!(
        CATALOG_COMMIT_SECONDS,
        Unit::Seconds,
        "wall time of one catalog commit, retries included"
    );
    describe_histogram!(
        CATALOG_FLUSHES_PER_COMMIT,
        Unit::Count,
        "flushes committed together in one catalog record"
    );
    describe_gauge!(CATALOG_SEQ, "highest catalog sequence number applied");
    describe_counter!(
        CATALOG_AMBIGUOUS_TOTAL,
        Unit::Count,
        "catalog puts whose outcome had to be read back"
    );
    describe_counter!(
        CATALOG_LOG_RECORDS_DELETED_TOTAL,
        Unit::Count,
        "catalog log records deleted behind the checkpoints kept"
    );
    describe_counter!(
        CATALOG_CATCH_UPS_TOTAL,
        Unit::Count,
        "catalog states moved to a newer checkpoint past truncated records"
    );
    describe_counter!(
        STORAGE_OBJECTS_UPLOADED_TOTAL,
        Unit::Count,
        "data objects uploaded"
    );
    describe_counter!(
        STORAGE_UPLOADED_BYTES_TOTAL,
        Unit::Bytes,
        "bytes of data objects uploaded"
    );
    describe_counter!(
        STORAGE_CACHE_DOWNLOADS_TOTAL,
        Unit::Count,
        "objects downloaded into the local object cache"
    );
}

pub(crate) fn record_commit(outcome: CommitOutcome, elapsed: Duration) {
    counter!(CATALOG_COMMITS_TOTAL, "outcome" => outcome.label()).increment(1);
    histogram!(CATALOG_COMMIT_SECONDS).record(elapsed.as_secs_f64());
}

pub(crate) fn record_flushes_per_commit(flushes: usize) {
    histogram!(CATALOG_FLUSHES_PER_COMMIT).record(flushes as f64);
}

pub(crate) fn set_catalog_seq(seq: u64) {
    // A gauge is an f64; sequence numbers stay far below 2^53.
    gauge!(CATALOG_SEQ).set(seq as f64);
}

pub(crate) fn record_ambiguous_put() {
    counter!(CATALOG_AMBIGUOUS_TOTAL).increment(1);
}

pub(crate) fn record_log_records_deleted(count: u64) {
    counter!(CATALOG_LOG_RECORDS_DELETED_TOTAL).increment(count);
}

pub(crate) fn record_catch_up() {
    counter!(CATALOG_CATCH_UPS_TOTAL).increment(1);
}

pub(crate) fn record_upload(bytes: u64) {
    counter!(STORAGE_OBJECTS_UPLOADED_TOTAL).increment(1);
    counter!(STORAGE_UPLOADED_BYTES_TOTAL).increment(bytes);
}

pub(crate) fn record_cache_download() {
    counter!(STORAGE_CACHE_DOWNLOADS_TOTAL).increment(1);
}
