//! The query engine of arc-node: checks SQL, finds what it reads, runs it in DuckDB over
//! Parquet files and fresh rows, and encodes the result the way Arc's clients expect.
//!
//! A query runs in two phases so that the async caller can fetch files in between:
//!
//! 1. [`analyze`] (pure, no I/O) parses the SQL with a real parser, refuses anything that is
//!    not a read-only query, answers `SHOW` itself, and returns a [`SelectPlan`]: the tables
//!    the query reads with the time range that can matter for each, and the query rewritten
//!    to read generated CTEs instead of tables.
//! 2. The caller resolves each table to a [`ResolvedTable`] (its schema, the local Parquet
//!    files overlapping the range, its fresh rows) and calls [`QueryEngine::execute`]
//!    (blocking; run it in `spawn_blocking`), which returns a [`QueryResult`].
//!
//! Then [`to_json_bytes`] / [`to_json`] / [`to_arrow_ipc`] encode the result, and
//! [`error_json`] encodes a failure; [`QueryError::status_code`] gives its HTTP status.
//!
//! # Layout
//! - `limits`: the size and nesting bounds checked on the tokens before parsing.
//! - `sql`: phase 1: statement and function checks, table references, CTE scoping, the
//!   rewrite, time bounds.
//! - `engine`: phase 2: the locked-down DuckDB, CTE bodies, fresh-row unification, error
//!   classes.
//! - `encode`: Arc's JSON document and the Arrow IPC stream.
//! - `result`: [`QueryResult`].
//! - `error`: [`QueryError`] and its status codes.
//! - `metrics`: `arc_query_total{outcome}`, `arc_query_seconds`, `arc_query_rows_total`.
//!
//! The design note is `docs/0003-query.md`.

mod encode;
mod engine;
mod error;
mod limits;
mod metrics;
mod result;
#[cfg(test)]
mod scoping_tests;
mod sql;

pub use encode::{ArrowIpcEncoder, JsonEncoder, error_json, to_arrow_ipc, to_json, to_json_bytes};
pub use engine::{QueryEngine, QueryInterrupt, QuerySettings, ResolvedTable};
pub use error::QueryError;
pub use limits::{MAX_EXPRESSION_DEPTH, MAX_SQL_BYTES, check_bounds};
pub use metrics::describe_metrics;
pub use result::{QueryResult, ResultSink};
pub use sql::{Analysis, SelectPlan, analyze};
