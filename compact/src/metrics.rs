//! Metric names and recording helpers of compaction, in one place.
//!
//! The binary installs the recorder; until then every call is a no-op. Label values are
//! bounded: `tier` is `hourly` or `daily`, `outcome` is `committed`, `voided`, `skipped` or
//! `error`.

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

use crate::job::JobReport;
use crate::plan::Tier;

/// Jobs by tier and outcome.
pub const JOBS_TOTAL: &str = "arc_compact_jobs_total";
/// Wall time of one job, by tier.
pub const JOB_SECONDS: &str = "arc_compact_job_seconds";
/// Rows read by committed jobs, by tier.
pub const ROWS_IN_TOTAL: &str = "arc_compact_rows_in_total";
/// Rows written by committed jobs, by tier.
pub const ROWS_OUT_TOTAL: &str = "arc_compact_rows_out_total";
/// Input bytes of committed jobs, by tier.
pub const BYTES_IN_TOTAL: &str = "arc_compact_bytes_in_total";
/// Output bytes of committed jobs, by tier.
pub const BYTES_OUT_TOTAL: &str = "arc_compact_bytes_out_total";
/// Objects taken out of the catalog by committed jobs, by tier.
pub const FILES_REMOVED_TOTAL: &str = "arc_compact_files_removed_total";
/// Swap commits refused because a newer epoch was promoted during the job (then re-committed
/// under it), by tier.
pub const SWAPS_FENCED_TOTAL: &str = "arc_compact_swaps_fenced_total";
/// Objects deleted by the garbage collector.
pub const GC_OBJECTS_DELETED_TOTAL: &str = "arc_compact_gc_objects_deleted_total";
/// Bytes deleted by the garbage collector.
pub const GC_BYTES_DELETED_TOTAL: &str = "arc_compact_gc_bytes_deleted_total";

/// Registers descriptions and units of this crate's metrics with the installed recorder.
pub fn describe() {
    describe_counter!(
        JOBS_TOTAL,
        Unit::Count,
        "compaction jobs by tier and outcome"
    );
    describe_histogram!(
        JOB_SECONDS,
        Unit::Seconds,
        "wall time of one compaction job"
    );
    describe_counter!(
        ROWS_IN_TOTAL,
        Unit::Count,
        "rows read by committed compaction jobs"
    );
    describe_counter!(
        ROWS_OUT_TOTAL,
        Unit::Count,
        "rows written by committed compaction jobs"
    );
    describe_counter!(
        BYTES_IN_TOTAL,
        Unit::Bytes,
        "input bytes of committed compaction jobs"
    );
    describe_counter!(
        BYTES_OUT_TOTAL,
        Unit::Bytes,
        "output bytes of committed compaction jobs"
    );
    describe_counter!(
        FILES_REMOVED_TOTAL,
        Unit::Count,
        "objects swapped out of the catalog by compaction"
    );
    describe_counter!(
        SWAPS_FENCED_TOTAL,
        Unit::Count,
        "compaction swap commits fenced by a newer epoch (a failover during the job) and retried under it"
    );
    describe_counter!(
        GC_OBJECTS_DELETED_TOTAL,
        Unit::Count,
        "unreferenced objects deleted by the garbage collector"
    );
    describe_counter!(
        GC_BYTES_DELETED_TOTAL,
        Unit::Bytes,
        "bytes of unreferenced objects deleted by the garbage collector"
    );
}

pub(crate) fn record_job(report: &JobReport) {
    let tier = report.tier.as_str();
    counter!(JOBS_TOTAL, "tier" => tier, "outcome" => report.outcome.label()).increment(1);
    histogram!(JOB_SECONDS, "tier" => tier).record(report.elapsed.as_secs_f64());
    if let crate::job::JobOutcome::Committed { .. } = report.outcome {
        counter!(ROWS_IN_TOTAL, "tier" => tier).increment(report.rows_in);
        counter!(ROWS_OUT_TOTAL, "tier" => tier).increment(report.rows_out);
        counter!(BYTES_IN_TOTAL, "tier" => tier).increment(report.bytes_in);
        counter!(BYTES_OUT_TOTAL, "tier" => tier).increment(report.bytes_out);
        counter!(FILES_REMOVED_TOTAL, "tier" => tier).increment(report.files_in as u64);
    }
}

pub(crate) fn record_job_error(tier: Tier, elapsed: Duration) {
    counter!(JOBS_TOTAL, "tier" => tier.as_str(), "outcome" => "error").increment(1);
    histogram!(JOB_SECONDS, "tier" => tier.as_str()).record(elapsed.as_secs_f64());
}

pub(crate) fn record_swap_fenced(tier: Tier) {
    counter!(SWAPS_FENCED_TOTAL, "tier" => tier.as_str()).increment(1);
}

pub(crate) fn record_gc(objects: u64, bytes: u64) {
    counter!(GC_OBJECTS_DELETED_TOTAL).increment(objects);
    counter!(GC_BYTES_DELETED_TOTAL).increment(bytes);
}
