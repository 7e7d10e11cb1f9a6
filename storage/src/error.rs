//! The two error types of this crate: [`StorageError`] for configuration, object I/O and Parquet
//! encoding, and [`CatalogError`] for the catalog log.
//!
//! Callers branch on a few variants: [`CatalogError::Fenced`] (a newer epoch exists: step down),
//! [`CatalogError::Unavailable`] (the store did not answer: retry later),
//! [`CatalogError::Corrupt`] (a record cannot be read: a human must look) and
//! [`CatalogError::Rejected`] (the record's precondition no longer holds, e.g. a compaction's
//! inputs are gone). Every variant names the key, file or table it is about.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of object storage setup, object I/O and Parquet encoding.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The storage settings are incomplete or inconsistent; the message names the key.
    #[error("invalid storage config: {0}")]
    Invalid(String),

    /// An object store operation failed.
    #[error("object store error on {key}: {source}")]
    ObjectStore {
        /// The object key (or prefix) the operation was about.
        key: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },

    /// A local file operation failed (local backend directory, object cache).
    #[error("io error on {path}: {source}")]
    Io {
        /// The local file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Batches of one table cannot be unified into one schema, or a column has a type that is
    /// not ours.
    #[error("schema error in table {table}: {reason}")]
    Schema {
        /// The table (`database.measurement`).
        table: String,
        /// What is wrong, naming the column.
        reason: String,
    },

    /// Arrow failed while concatenating, sorting or slicing a table's batches.
    #[error("arrow error in table {table}: {source}")]
    Arrow {
        /// The table (`database.measurement`).
        table: String,
        /// The underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },

    /// The Parquet writer or reader failed.
    #[error("parquet error in {what}: {source}")]
    Parquet {
        /// The table or object the Parquet bytes belong to.
        what: String,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// The catalog refused or could not take a record.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl StorageError {
    pub(crate) fn object_store(key: impl ToString, source: object_store::Error) -> Self {
        StorageError::ObjectStore {
            key: key.to_string(),
            source,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Errors of the catalog log.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// A newer writer epoch exists: the caller's records would be void, so it must step down.
    #[error("fenced: our epoch {our_epoch} is older than the catalog's epoch {current_epoch}")]
    Fenced {
        /// The epoch the caller wrote (or tried to write) under.
        our_epoch: u64,
        /// The newest epoch in the catalog.
        current_epoch: u64,
    },

    /// The object store did not give a definite answer within the allowed attempts. The
    /// record was not seen in its slot, but a put still in flight may land there later (see
    /// the catalog module's error semantics). Retry later.
    #[error("catalog unavailable at {key} after {attempts} attempts: {reason}")]
    Unavailable {
        /// The slot (log key) the commit was trying to take.
        key: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last error seen.
        reason: String,
    },

    /// A catalog record or checkpoint cannot be decoded, or contradicts its own key.
    #[error("corrupt catalog object {key}: {reason}")]
    Corrupt {
        /// The object key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The record is not valid against the current catalog state (it was not written, or it
    /// landed but is void), e.g. a compaction whose inputs are no longer live.
    #[error("catalog record rejected: {reason}")]
    Rejected {
        /// Why the record does not apply.
        reason: String,
    },

    /// A flush whose LSN range the table's flushed LSN already covers: an earlier commit of
    /// the same rows landed (typically after an ambiguous reply). Nothing was written; the
    /// caller's rows are durable in the objects that commit named, so it treats this as done.
    #[error(
        "flush of {table} lsn {lsn_first}..={lsn_last} is already covered (table flushed to lsn {flushed_lsn})"
    )]
    Covered {
        /// The table (`database.measurement`).
        table: String,
        /// First LSN of the flush.
        lsn_first: u64,
        /// Last LSN of the flush.
        lsn_last: u64,
        /// The table's flushed LSN in the catalog.
        flushed_lsn: u64,
    },

    /// The call or the settings are inconsistent (a caller bug or a config error).
    #[error("invalid catalog request: {0}")]
    Invalid(String),

    /// Reading or listing the catalog failed.
    #[error("object store error on {key}: {source}")]
    ObjectStore {
        /// The object key (or prefix) the operation was about.
        key: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
}

impl CatalogError {
    /// Returns whether retrying the same call later may succeed (the store was unreachable).
    /// For a commit, whether its record landed is then unknown: it may land yet.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CatalogError::Unavailable { .. } | CatalogError::ObjectStore { .. }
        )
    }

    pub(crate) fn object_store(key: impl ToString, source: object_store::Error) -> Self {
        CatalogError::ObjectStore {
            key: key.to_string(),
            source,
        }
    }

    pub(crate) fn corrupt(key: impl ToString, reason: impl ToString) -> Self {
        CatalogError::Corrupt {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}
