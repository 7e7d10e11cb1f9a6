//! The flush commit: upload a table's encoded objects, then name them in one `flush` record.
//!
//! Objects become visible only through the record. An object uploaded but never committed
//! (crash, fenced, store down) is an orphan: no reader sees it, and garbage collection removes
//! it after a grace period; it is deliberately not deleted here, because after an ambiguous
//! commit failure the record naming it may still land.

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, PutPayload};
use tracing::debug;

use crate::catalog::{Catalog, DataObject, Flush, RecordBody, Verdict};
use crate::error::{CatalogError, StorageError};
use crate::metrics;
use crate::model::{ColumnSpec, TableId};
use crate::parquet::{EncodedObject, FlushMeta};
use crate::paths;

/// How many objects of one flush are uploaded at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// How a flush ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// The `flush` record landed in slot `seq`.
    Committed {
        /// The record's slot.
        seq: u64,
    },
    /// The table's flushed LSN already covers the flush's LSNs: an earlier attempt with the
    /// same rows committed (its reply was lost). The rows are live; nothing more was recorded.
    Covered {
        /// The table's flushed LSN in the catalog.
        flushed_lsn: u64,
    },
}

/// Uploads `objects` of `table` (new, unique keys) and commits one `flush` record naming them
/// under `meta.epoch` by `meta.node_id`. Nothing is uploaded if the catalog already knows a
/// newer epoch, or already covers the flush's LSNs.
///
/// A flush with no objects is still committed: it advances the table's flushed LSN.
///
/// Re-submitting the same rows after any error is safe, re-encoded or not: if the first
/// attempt landed, the retry finds its LSNs covered and reports [`FlushOutcome::Covered`]
/// (every reader voids a second flush of the same LSNs alike), so rows never count twice.
///
/// # Errors
///
/// [`StorageError::ObjectStore`] if an upload fails (nothing is committed), or
/// [`StorageError::Catalog`] with the commit's error: `Fenced` means step down; after
/// `Unavailable`, retry with the same rows.
pub async fn upload_and_commit(
    store: &dyn ObjectStore,
    catalog: &Catalog,
    table: &TableId,
    objects: Vec<EncodedObject>,
    meta: &FlushMeta,
) -> Result<FlushOutcome, StorageError> {
    // The catalog's own rule, on its current snapshot: spend no upload on a flush that would
    // be fenced or is covered already.
    let probe = RecordBody::Flush(Flush {
        table: table.clone(),
        lsn_first: meta.lsn_first,
        lsn_last: meta.lsn_last,
        objects: Vec::new(),
        columns: Vec::new(),
    });
    match catalog.snapshot().check(meta.epoch, &probe) {
        Verdict::Fenced { current_epoch } => {
            return Err(StorageError::Catalog(CatalogError::Fenced {
                our_epoch: meta.epoch,
                current_epoch,
            }));
        }
        Verdict::Covered { flushed_lsn } => return Ok(FlushOutcome::Covered { flushed_lsn }),
        // Anything else is for the commit to decide, after tailing the log.
        Verdict::Valid | Verdict::UnknownEpoch { .. } | Verdict::Rejected(_) => {}
    }
    let mut columns: Vec<ColumnSpec> = Vec::new();
    for object in &objects {
        for column in &object.columns {
            if !columns.iter().any(|known| known.name == column.name) {
                columns.push(column.clone());
            }
        }
    }
    let data_objects: Vec<DataObject> = futures::stream::iter(objects)
        .map(|object| upload(store, table, object, meta))
        .buffered(UPLOAD_CONCURRENCY)
        .try_collect()
        .await?;
    let object_count = data_objects.len();
    let flush = Flush {
        table: table.clone(),
        lsn_first: meta.lsn_first,
        lsn_last: meta.lsn_last,
        objects: data_objects,
        columns,
    };
    // Group-committed with the flushes of other tables waiting at the same time.
    let seq = match catalog.commit_flush(meta.epoch, &meta.node_id, flush).await {
        Ok(seq) => seq,
        Err(CatalogError::Covered { flushed_lsn, .. }) => {
            // The objects just uploaded are orphans; garbage collection removes them.
            debug!(table = %table, flushed_lsn, lsn_first = meta.lsn_first, "flush already covered");
            return Ok(FlushOutcome::Covered { flushed_lsn });
        }
        Err(error) => return Err(error.into()),
    };
    debug!(
        table = %table,
        seq,
        objects = object_count,
        lsn_first = meta.lsn_first,
        lsn_last = meta.lsn_last,
        "flush committed"
    );
    Ok(FlushOutcome::Committed { seq })
}

async fn upload(
    store: &dyn ObjectStore,
    table: &TableId,
    object: EncodedObject,
    meta: &FlushMeta,
) -> Result<DataObject, StorageError> {
    let path = paths::data_object_path(
        table,
        object.hour_start_ns,
        meta.epoch,
        meta.lsn_first,
        meta.lsn_last,
    );
    let size = object.bytes.len() as u64;
    // A plain (overwrite) put: the key is unique, and an idempotent request lets the store
    // client retry it on its own.
    store
        .put_opts(&path, PutPayload::from(object.bytes), Default::default())
        .await
        .map_err(|source| StorageError::object_store(&path, source))?;
    metrics::record_upload(size);
    Ok(DataObject {
        path: path.to_string(),
        time_range: object.time_range,
        rows: object.rows,
        bytes: size,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, RecordBatch, TimestampNanosecondArray};
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::catalog::CatalogSettings;
    use crate::model::{ColumnKind, FieldType, schema_of};
    use crate::parquet::{FOOTER_LSN_LAST, encode_table_objects, read_footer_metadata};

    const HOUR: i64 = 3_600_000_000_000;

    fn batch() -> RecordBatch {
        let columns = [
            ColumnSpec {
                name: "time".into(),
                kind: ColumnKind::Time,
            },
            ColumnSpec {
                name: "v".into(),
                kind: ColumnKind::Field(FieldType::Float),
            },
        ];
        RecordBatch::try_new(
            schema_of(&columns),
            vec![
                Arc::new(TimestampNanosecondArray::from(vec![
                    HOUR * 10,
                    HOUR * 11 + 1,
                ])),
                Arc::new(Float64Array::from(vec![1.0, 2.0])),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn test_should_upload_objects_and_commit_one_flush() {
        let memory = Arc::new(InMemory::new());
        let catalog = Catalog::open(memory.clone(), CatalogSettings::for_test())
            .await
            .unwrap();
        let epoch = catalog.promote("node-a", 0).await.unwrap();
        let table = TableId::new("db", "cpu");
        let meta = FlushMeta {
            epoch,
            lsn_first: 1,
            lsn_last: 9,
            node_id: "node-a".into(),
        };
        let objects = encode_table_objects(&table, &[batch()], &meta).unwrap();
        assert_eq!(objects.len(), 2);
        let outcome = upload_and_commit(memory.as_ref(), &catalog, &table, objects, &meta)
            .await
            .unwrap();
        assert_eq!(outcome, FlushOutcome::Committed { seq: 2 });

        let state = catalog.snapshot();
        let table_state = state.table(&table).unwrap();
        assert_eq!(table_state.flushed_lsn, 9);
        assert_eq!(table_state.objects.len(), 2);
        assert_eq!(table_state.columns.len(), 2);
        for object in &table_state.objects {
            let bytes = memory
                .get(&Path::from(object.path.as_str()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(bytes.len() as u64, object.bytes);
            assert_eq!(read_footer_metadata(bytes).unwrap()[FOOTER_LSN_LAST], "9");
            assert!(paths::parse_data_object_path(&Path::from(object.path.as_str())).is_some());
        }
    }

    #[tokio::test]
    async fn test_should_not_upload_when_fenced() {
        let memory = Arc::new(InMemory::new());
        let settings = CatalogSettings::for_test();
        let old = Catalog::open(memory.clone(), settings.clone())
            .await
            .unwrap();
        let old_epoch = old.promote("a", 0).await.unwrap();
        let new = Catalog::open(memory.clone(), settings).await.unwrap();
        new.promote("b", 0).await.unwrap();

        let table = TableId::new("db", "cpu");
        let meta = FlushMeta {
            epoch: old_epoch,
            lsn_first: 1,
            lsn_last: 2,
            node_id: "a".into(),
        };
        let objects = encode_table_objects(&table, &[batch()], &meta).unwrap();
        // The old writer has not seen the promote yet: it uploads, then the commit fails.
        let error = upload_and_commit(memory.as_ref(), &old, &table, objects.clone(), &meta)
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            StorageError::Catalog(CatalogError::Fenced {
                our_epoch: 1,
                current_epoch: 2
            })
        ));
        // Now it knows: nothing more is uploaded.
        let before = memory.list(None).count().await;
        let error = upload_and_commit(memory.as_ref(), &old, &table, objects, &meta)
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            StorageError::Catalog(CatalogError::Fenced { .. })
        ));
        assert_eq!(memory.list(None).count().await, before);
        assert!(new.snapshot().table(&table).is_none());
    }

    /// A commit whose PUT landed but whose reply and read-backs all failed ends `Unavailable`;
    /// the flusher then re-encodes the same rows (new object keys, new nonce) and commits
    /// again. The table must hold each row once: the retry is covered, and a catalog opened
    /// afresh (any reader) agrees.
    #[tokio::test]
    async fn test_should_count_rows_once_when_an_ambiguous_commit_is_retried() {
        use crate::testing::{FailingObjectStore, FaultOp, FaultTiming};

        let failing = Arc::new(FailingObjectStore::new(Arc::new(InMemory::new())));
        let catalog = Catalog::open(failing.clone(), CatalogSettings::for_test())
            .await
            .unwrap();
        let epoch = catalog.promote("a", 0).await.unwrap();
        let table = TableId::new("db", "cpu");
        let meta = FlushMeta {
            epoch,
            lsn_first: 1,
            lsn_last: 9,
            node_id: "a".into(),
        };
        // The PUT lands but its reply is lost; every read-back of the slot fails too.
        failing.inject(FaultOp::Put, FaultTiming::After, "_catalog/log/", 1);
        failing.inject(FaultOp::Get, FaultTiming::Before, "_catalog/log/", 64);
        failing.inject(FaultOp::Put, FaultTiming::Before, "_catalog/log/", 64);
        let objects = encode_table_objects(&table, &[batch()], &meta).unwrap();
        let error = upload_and_commit(failing.as_ref(), &catalog, &table, objects, &meta)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Catalog(CatalogError::Unavailable { .. })
            ),
            "{error:?}"
        );
        failing.clear();

        // The store is back; the same rows, re-encoded, are submitted again.
        let objects = encode_table_objects(&table, &[batch()], &meta).unwrap();
        let outcome = upload_and_commit(failing.as_ref(), &catalog, &table, objects, &meta)
            .await
            .unwrap();
        assert_eq!(outcome, FlushOutcome::Covered { flushed_lsn: 9 });

        for state in [
            catalog.snapshot(),
            Catalog::open(failing.clone(), CatalogSettings::for_test())
                .await
                .unwrap()
                .snapshot(),
        ] {
            let rows: u64 = state
                .table(&table)
                .unwrap()
                .objects
                .iter()
                .map(|o| o.rows)
                .sum();
            assert_eq!(rows, 2, "each row once");
            assert_eq!(state.table(&table).unwrap().flushed_lsn, 9);
        }
    }
}
