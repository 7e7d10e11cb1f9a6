//! The rows a query returns, as Arrow batches with their schema.
//!
//! The schema is kept apart from the batches so that a query returning no rows still reports
//! its columns.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

/// The result of a query: its schema and its rows.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Column names and types, also when there are no rows.
    pub schema: SchemaRef,
    /// The rows, in order; every batch has `schema`'s columns.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Builds a one-column string result, the answer to `SHOW DATABASES` and `SHOW TABLES`.
    pub fn from_names(column: &str, names: Vec<String>) -> Self {
        let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]));
        let values: ArrayRef = Arc::new(StringArray::from(names));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![values])
            .expect("one non-null string column matches its schema");
        Self {
            schema,
            batches: vec![batch],
        }
    }

    /// Returns the number of rows over all batches.
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Receives a query's rows as DuckDB produces them (see
/// [`crate::QueryEngine::execute_into`]), so they can be encoded and sent without the whole
/// result ever being held in memory.
pub trait ResultSink {
    /// The result's schema, given once before any batch.
    ///
    /// # Errors
    /// Any error stops the query and is returned by `execute_into`.
    fn schema(&mut self, schema: &SchemaRef) -> Result<(), crate::QueryError>;

    /// One batch of rows, in order.
    ///
    /// # Errors
    /// Any error (the client went away, a size limit) stops the query and is returned by
    /// `execute_into`.
    fn batch(&mut self, batch: RecordBatch) -> Result<(), crate::QueryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_build_a_names_result() {
        let result = QueryResult::from_names("name", vec!["a".into(), "b".into()]);
        assert_eq!(result.row_count(), 2);
        assert_eq!(result.schema.field(0).name(), "name");
        let empty = QueryResult::from_names("name", Vec::new());
        assert_eq!(empty.row_count(), 0);
        assert_eq!(empty.schema.fields().len(), 1);
    }
}
