//! Object storage, object layout, the catalog log and Parquet writing for arc-node.
//!
//! Parquet objects in an object store are the durable data; the catalog log in the same store
//! says which objects are live and who the primary writer is (DESIGN.md sections 2 and 3).
//!
//! # Layout
//! - [`model`]: table ids, column kinds, time ranges shared by every crate.
//! - [`settings`]: the `[storage]` settings and their validation.
//! - [`store`]: building the object store from settings; the local cache of remote objects.
//! - [`paths`]: every object key (data objects, catalog records, checkpoints).
//! - [`parquet`]: encoding a table's batches into one Parquet object per UTC hour.
//! - [`catalog`]: the catalog log: records, state, put-if-absent commits, fencing.
//! - [`writer`]: upload a flush's objects, then commit the `flush` record.
//! - [`metrics`]: metric names and [`metrics::describe`].
//! - [`error`]: [`StorageError`] and [`CatalogError`].
//! - `testing` (tests and the `testsuite` feature): `FailingObjectStore` for fault injection.

pub mod catalog;
pub mod error;
pub mod metrics;
pub mod model;
pub mod parquet;
pub mod paths;
pub mod settings;
pub mod store;
#[cfg(any(test, feature = "testsuite"))]
pub mod testing;
pub mod writer;

pub use catalog::{
    Catalog, CatalogSettings, CatalogState, Compact, DataObject, FailoverEntry, FailoverRecord,
    Fence, Flush, Flushes, Isr, Promote, RecordBody, TableState,
};
pub use error::{CatalogError, StorageError};
pub use model::{ColumnKind, ColumnSpec, FieldType, TableId, TimeRange};
pub use parquet::{EncodedObject, FlushMeta, encode_table_objects};
pub use settings::{Backend, StorageSettings};
pub use store::{ObjectCache, ObjectStorage};
pub use writer::{FlushOutcome, upload_and_commit};
