//! The garbage collector: deletes objects under a table's prefix that the live catalog does not
//! name, once they are safely unreachable.
//!
//! Garbage is the inputs of committed compactions, the outputs of swaps whose commit had no
//! definite answer and never landed, and the objects of flushes whose commit was lost. An
//! object is deleted only when all of these hold:
//! - it lies under the prefix of a table the catalog knows, and not under `_catalog/` (nor
//!   any key starting with `_`);
//! - the catalog, tailed *after* the listing, does not name it;
//! - its `last_modified` is older than the grace period: an object just uploaded by a flush
//!   or a compaction whose record is about to be committed is never touched;
//! - this collector has seen it unreferenced for at least the grace period: a compaction's
//!   inputs are old objects, and queries that planned over them before the swap must be able
//!   to finish reading them. The first sighting is kept in memory, so a restarted collector
//!   waits one more grace period, which errs on the safe side.
//!
//! The grace period must exceed the longest query and the longest time a flush can spend
//! between uploading an object and committing it (its catalog retries).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use arc_storage::paths::{CATALOG_PREFIX, table_prefix};
use arc_storage::{Catalog, CatalogState, TableId};
use chrono::{DateTime, TimeDelta, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tracing::{debug, info, warn};

use crate::error::CompactError;
use crate::metrics;

/// Deletions in flight at once.
const DELETE_CONCURRENCY: usize = 8;

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Objects listed under the tables' prefixes.
    pub listed: usize,
    /// Of those, objects the catalog does not name.
    pub unreferenced: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// Bytes deleted.
    pub deleted_bytes: u64,
}

/// Collects unreferenced objects; keeps, between runs, when it first saw each one. One per
/// process (the compaction scheduler's), run every few minutes.
#[derive(Debug)]
pub struct GarbageCollector {
    grace: TimeDelta,
    /// When each unreferenced key was first seen unreferenced; keys that turn up live or
    /// vanish are dropped at the next run.
    first_seen: HashMap<String, DateTime<Utc>>,
}

impl GarbageCollector {
    /// Builds a collector with a grace period (`compaction.gc_grace`, default 1 hour).
    pub fn new(grace: Duration) -> GarbageCollector {
        GarbageCollector {
            grace: TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX),
            first_seen: HashMap::new(),
        }
    }

    /// Lists every known table's prefix, tails the catalog, and deletes what is garbage at
    /// `now` (module docs).
    ///
    /// # Errors
    ///
    /// [`CompactError::Catalog`] if the catalog cannot be tailed, [`CompactError::ObjectStore`]
    /// if a listing or a deletion fails (deletions before it stand; the next run retries).
    pub async fn collect(
        &mut self,
        store: &dyn ObjectStore,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Result<GcReport, CompactError> {
        let catalog_error = |source| CompactError::Catalog {
            table: "*".to_string(),
            source,
        };
        catalog.refresh().await.map_err(catalog_error)?;
        let tables: Vec<TableId> = catalog.snapshot().tables.keys().cloned().collect();
        let mut listed = Vec::new();
        for table in &tables {
            let prefix = table_prefix(table);
            let objects: Vec<ObjectMeta> = store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|source| CompactError::object_store(&prefix, source))?;
            listed.extend(objects);
        }
        // Tail again after listing: an object committed before the listing ended is named in
        // this snapshot, so only objects older than the grace period that are still not
        // committed can be taken.
        catalog.refresh().await.map_err(catalog_error)?;
        let state = catalog.snapshot();
        let garbage = self.select(&listed, &state, now);
        let mut report = GcReport {
            listed: listed.len(),
            unreferenced: self.first_seen.len(),
            ..GcReport::default()
        };
        let deleted: Vec<ObjectMeta> = futures::stream::iter(garbage)
            .map(|meta| async move {
                match store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(meta),
                    Err(source) => Err(CompactError::object_store(&meta.location, source)),
                }
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .filter_map(|result| match result {
                Ok(meta) => Some(meta),
                Err(error) => {
                    warn!(%error, "cannot delete an unreferenced object; next run retries");
                    None
                }
            })
            .collect();
        for meta in &deleted {
            self.first_seen.remove(meta.location.as_ref());
            debug!(key = %meta.location, bytes = meta.size, "unreferenced object deleted");
        }
        report.deleted = deleted.len();
        report.deleted_bytes = deleted.iter().map(|meta| meta.size).sum();
        metrics::record_gc(report.deleted as u64, report.deleted_bytes);
        if report.deleted > 0 {
            info!(
                listed = report.listed,
                unreferenced = report.unreferenced,
                deleted = report.deleted,
                deleted_bytes = report.deleted_bytes,
                "garbage collected"
            );
        }
        Ok(report)
    }

    /// Returns the objects of `listed` that are garbage at `now` against `state`, and
    /// remembers the first sighting of every unreferenced one. Pure apart from that memory.
    pub fn select(
        &mut self,
        listed: &[ObjectMeta],
        state: &CatalogState,
        now: DateTime<Utc>,
    ) -> Vec<ObjectMeta> {
        let live: HashSet<&str> = state
            .tables
            .values()
            .flat_map(|table| table.objects.iter().map(|object| object.path.as_str()))
            .collect();
        let old_enough = |since: DateTime<Utc>| {
            since
                .checked_add_signed(self.grace)
                .is_some_and(|deadline| deadline <= now)
        };
        let mut first_seen = HashMap::new();
        let mut garbage = Vec::new();
        for meta in listed {
            let key = meta.location.as_ref();
            if key.starts_with('_') || key.starts_with(CATALOG_PREFIX) || live.contains(key) {
                continue;
            }
            let seen = self.first_seen.get(key).copied().unwrap_or(now);
            if old_enough(meta.last_modified) && old_enough(seen) {
                garbage.push(meta.clone());
            }
            first_seen.insert(key.to_string(), seen);
        }
        self.first_seen = first_seen;
        garbage
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arc_storage::{DataObject, TableState, TimeRange};
    use object_store::path::Path;

    use super::*;

    fn meta(key: &str, modified: DateTime<Utc>) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(key),
            last_modified: modified,
            size: 10,
            e_tag: None,
            version: None,
        }
    }

    fn state_naming(keys: &[&str]) -> CatalogState {
        let mut state = CatalogState::default();
        let objects = keys
            .iter()
            .map(|key| DataObject {
                path: key.to_string(),
                time_range: TimeRange {
                    start_ns: 0,
                    end_ns: 0,
                },
                rows: 1,
                bytes: 10,
            })
            .collect();
        state.tables.insert(
            TableId::new("db", "cpu"),
            Arc::new(TableState {
                objects,
                ..TableState::default()
            }),
        );
        state
    }

    fn keys(objects: &[ObjectMeta]) -> Vec<&str> {
        objects.iter().map(|meta| meta.location.as_ref()).collect()
    }

    #[test]
    fn test_should_wait_a_grace_period_after_first_sighting() {
        let start = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let hour = TimeDelta::hours(1);
        let old = start - hour * 24;
        let listed = vec![meta("db/cpu/live", old), meta("db/cpu/replaced", old)];
        let mut collector = GarbageCollector::new(Duration::from_secs(3600));

        // While named, nothing happens; once the swap removed it, the clock starts.
        assert!(
            collector
                .select(
                    &listed,
                    &state_naming(&["db/cpu/live", "db/cpu/replaced"]),
                    start
                )
                .is_empty()
        );
        let swapped = state_naming(&["db/cpu/live"]);
        assert!(collector.select(&listed, &swapped, start).is_empty());
        assert!(
            collector
                .select(&listed, &swapped, start + hour - TimeDelta::seconds(1))
                .is_empty()
        );
        assert_eq!(
            keys(&collector.select(&listed, &swapped, start + hour)),
            ["db/cpu/replaced"]
        );
    }

    #[test]
    fn test_should_spare_young_objects_and_catalog_keys() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let catalog_record = meta(
            "_catalog/log/00000000000000000001.json",
            now - TimeDelta::days(9),
        );
        let orphan = meta("db/cpu/orphan", now - TimeDelta::days(9));
        let state = state_naming(&[]);
        let mut collector = GarbageCollector::new(Duration::from_secs(60));
        assert!(
            collector
                .select(&[catalog_record.clone(), orphan.clone()], &state, now)
                .is_empty()
        );
        // A minute later the orphan goes; an object uploaded meanwhile and the catalog stay.
        let later = now + TimeDelta::seconds(60);
        let uploaded = meta("db/cpu/just-uploaded", later - TimeDelta::seconds(20));
        let listed = [catalog_record, orphan, uploaded];
        assert_eq!(
            keys(&collector.select(&listed, &state, later)),
            ["db/cpu/orphan"]
        );
        let mut eager = GarbageCollector::new(Duration::ZERO);
        assert_eq!(
            keys(&eager.select(&listed, &state, later)),
            ["db/cpu/orphan", "db/cpu/just-uploaded"]
        );
    }

    #[test]
    fn test_should_forget_objects_that_become_live_again() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let listed = vec![meta("db/cpu/x", now - TimeDelta::days(1))];
        let mut collector = GarbageCollector::new(Duration::from_secs(60));
        assert!(
            collector
                .select(&listed, &state_naming(&[]), now)
                .is_empty()
        );
        // A late flush commit names it: the sighting is dropped, and the clock restarts later.
        assert!(
            collector
                .select(&listed, &state_naming(&["db/cpu/x"]), now)
                .is_empty()
        );
        let later = now + TimeDelta::seconds(120);
        assert!(
            collector
                .select(&listed, &state_naming(&[]), later)
                .is_empty()
        );
        assert_eq!(
            collector
                .select(&listed, &state_naming(&[]), later + TimeDelta::seconds(60))
                .len(),
            1
        );
    }
}
