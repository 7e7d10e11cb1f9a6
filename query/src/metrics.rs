//! The query crate's metrics, defined in one place.
//!
//! - `arc_query_total{outcome}`: queries by outcome (`ok`, `parse_error`, `forbidden`,
//!   `invalid`, `unknown_table`, `execution_error`). A query rejected by
//!   [`crate::analyze`] is counted there; one that reaches [`crate::QueryEngine::execute`] is
//!   counted there, once.
//! - `arc_query_seconds`: time DuckDB spent on a query (preparing the fresh rows, planning,
//!   running and collecting the result).
//! - `arc_query_rows_total`: rows returned by successful queries.

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

use crate::error::QueryError;

/// Queries by outcome.
pub const QUERY_TOTAL: &str = "arc_query_total";
/// Query execution time in seconds.
pub const QUERY_SECONDS: &str = "arc_query_seconds";
/// Rows returned by successful queries.
pub const QUERY_ROWS_TOTAL: &str = "arc_query_rows_total";

/// Registers descriptions and units of the query metrics with the installed recorder.
pub fn describe_metrics() {
    describe_counter!(QUERY_TOTAL, Unit::Count, "queries by outcome");
    describe_histogram!(QUERY_SECONDS, Unit::Seconds, "query execution time");
    describe_counter!(QUERY_ROWS_TOTAL, Unit::Count, "rows returned by queries");
}

/// Returns the bounded `outcome` label of an error.
fn outcome_of(error: &QueryError) -> &'static str {
    match error {
        QueryError::Parse(_) => "parse_error",
        QueryError::Forbidden(_) => "forbidden",
        QueryError::Invalid(_) => "invalid",
        QueryError::UnknownTable(_) => "unknown_table",
        QueryError::Execution(_) => "execution_error",
        QueryError::Limit(_) => "limit",
        QueryError::Interrupted(_) => "interrupted",
    }
}

/// Counts a query that failed.
pub(crate) fn record_failure(error: &QueryError) {
    counter!(QUERY_TOTAL, "outcome" => outcome_of(error)).increment(1);
}

/// Counts a query that ran to the end, with its time and row count.
pub(crate) fn record_success(elapsed: Duration, rows: usize) {
    counter!(QUERY_TOTAL, "outcome" => "ok").increment(1);
    histogram!(QUERY_SECONDS).record(elapsed.as_secs_f64());
    counter!(QUERY_ROWS_TOTAL).increment(rows as u64);
}

/// Records the time of a query that failed while running.
pub(crate) fn record_execution_time(elapsed: Duration) {
    histogram!(QUERY_SECONDS).record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_label_every_error_kind() {
        assert_eq!(outcome_of(&QueryError::Parse(String::new())), "parse_error");
        assert_eq!(
            outcome_of(&QueryError::Forbidden(String::new())),
            "forbidden"
        );
        assert_eq!(outcome_of(&QueryError::Invalid(String::new())), "invalid");
        assert_eq!(
            outcome_of(&QueryError::UnknownTable(String::new())),
            "unknown_table"
        );
        assert_eq!(
            outcome_of(&QueryError::Execution(String::new())),
            "execution_error"
        );
    }
}
