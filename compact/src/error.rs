//! [`CompactError`]: what can go wrong planning, merging, swapping and collecting.
//!
//! Expected outcomes are not errors: a swap the catalog voids (an input already gone, a newer
//! epoch) is a [`crate::JobOutcome`], not an `Err`. Every variant names the object, file or
//! table it is about, so a log line alone says where to look.

use std::path::PathBuf;

use arc_storage::CatalogError;
use thiserror::Error;

/// Errors of compaction.
#[derive(Debug, Error)]
pub enum CompactError {
    /// Settings that cannot work (a zero limit); the message names the setting.
    #[error("invalid compaction settings: {0}")]
    Invalid(String),

    /// An input object cannot be decoded as Parquet.
    #[error("cannot read compaction input {object}: {source}")]
    ReadInput {
        /// The input's object key.
        object: String,
        /// The Parquet reader's error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// An input object decodes but breaks an invariant of data objects (no `time` column,
    /// null times, rows not sorted by time).
    #[error("bad compaction input {object}: {reason}")]
    BadInput {
        /// The input's object key.
        object: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A column has different kinds or types in two inputs of one job.
    #[error("column {column} of table {table} conflicts in input {object}: {reason}")]
    ColumnConflict {
        /// The table (`database.measurement`).
        table: String,
        /// The column name.
        column: String,
        /// The input object where the conflict was found.
        object: String,
        /// The two kinds or types.
        reason: String,
    },

    /// Arrow failed while aligning, concatenating or reordering batches.
    #[error("arrow error merging table {table}: {source}")]
    Arrow {
        /// The table (`database.measurement`).
        table: String,
        /// The underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },

    /// The Parquet writer failed on the merged output.
    #[error("cannot write the compacted output of table {table}: {source}")]
    WriteOutput {
        /// The table (`database.measurement`).
        table: String,
        /// The Parquet writer's error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// A local file operation failed (scratch directory, downloaded input, merged output).
    #[error("io error on {path}: {source}")]
    Io {
        /// The local file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An object store operation failed.
    #[error("object store error on {key}: {source}")]
    ObjectStore {
        /// The object key (or prefix).
        key: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },

    /// Uploading the merged output failed; nothing was committed.
    #[error("cannot upload compacted object {key}: {source}")]
    Upload {
        /// The output's object key.
        key: String,
        /// The upload's error (the object store's, wrapped by its buffered writer).
        #[source]
        source: std::io::Error,
    },

    /// The catalog could not be read or gave no definite answer to the swap
    /// ([`CatalogError::Unavailable`]: the record may still land; never delete its output).
    #[error("catalog error compacting table {table}: {source}")]
    Catalog {
        /// The table (`database.measurement`).
        table: String,
        /// The catalog's error.
        #[source]
        source: CatalogError,
    },

    /// The blocking merge task panicked or was cancelled.
    #[error("merge task of table {table} failed: {reason}")]
    TaskFailed {
        /// The table (`database.measurement`).
        table: String,
        /// The panic or cancellation.
        reason: String,
    },
}

impl CompactError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CompactError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn object_store(key: impl ToString, source: object_store::Error) -> Self {
        CompactError::ObjectStore {
            key: key.to_string(),
            source,
        }
    }

    pub(crate) fn bad_input(object: &str, reason: impl Into<String>) -> Self {
        CompactError::BadInput {
            object: object.to_string(),
            reason: reason.into(),
        }
    }
}
