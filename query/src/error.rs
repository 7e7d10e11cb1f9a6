//! The error type of the query crate and its HTTP status mapping.
//!
//! Variants are split by who must act: the first four are the client's to fix (400), the last
//! one is the node's (500). Messages keep the parser's or DuckDB's own text, because that is
//! what a user needs to repair a query.

/// What went wrong while checking, planning or running a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The SQL text does not parse.
    #[error("sql parse error: {0}")]
    Parse(String),
    /// The SQL parses but does something read-only queries may not do (a statement other
    /// than a query, a file or network function, a placeholder).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The SQL is not a valid query for this node (bad table name, unsupported construct, or
    /// DuckDB's binder rejected it).
    #[error("invalid query: {0}")]
    Invalid(String),
    /// The query names a table that does not exist.
    #[error("unknown table: {0}")]
    UnknownTable(String),
    /// The query was valid but failed while running.
    #[error("query execution failed: {0}")]
    Execution(String),
    /// The query needed more than a configured bound allows (the result's size).
    #[error("query too large: {0}")]
    Limit(String),
    /// The query was stopped before it finished (its timeout, its client went away, the node
    /// is stopping); the reason says which.
    #[error("query stopped: {0}")]
    Interrupted(String),
}

impl QueryError {
    /// Returns the HTTP status that reports this error: 400 for the client's mistakes, 500
    /// for failures while running.
    pub fn status_code(&self) -> u16 {
        match self {
            QueryError::Parse(_)
            | QueryError::Forbidden(_)
            | QueryError::Invalid(_)
            | QueryError::UnknownTable(_)
            | QueryError::Limit(_) => 400,
            QueryError::Execution(_) => 500,
            QueryError::Interrupted(_) => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_map_client_errors_to_400_and_execution_to_500() {
        assert_eq!(QueryError::Parse("x".into()).status_code(), 400);
        assert_eq!(QueryError::Forbidden("x".into()).status_code(), 400);
        assert_eq!(QueryError::Invalid("x".into()).status_code(), 400);
        assert_eq!(QueryError::UnknownTable("x".into()).status_code(), 400);
        assert_eq!(QueryError::Execution("x".into()).status_code(), 500);
    }

    #[test]
    fn test_should_keep_the_detail_in_the_message() {
        let error = QueryError::UnknownTable("default.cpu".into());
        assert_eq!(error.to_string(), "unknown table: default.cpu");
    }
}
