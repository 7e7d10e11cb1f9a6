//! The catalog state: what the log says after applying records `1..=seq`, and the apply rule.
//!
//! Apply is a pure function of the state and the record, so every reader that applies the same
//! log reaches the same state, and a record is void (applied as a no-op) for all of them alike:
//! - a `promote` is valid only if its epoch is greater than the current epoch;
//! - any other record is valid only if its epoch equals the current epoch: an older epoch means
//!   a newer promote precedes it (its writer was fenced), a newer one was never promoted;
//! - a `compact` is valid only if every object it removes is live;
//! - a `flush` whose LSN range the table's flushed LSN already covers is void: it can only be
//!   a re-submission of a flush whose first commit landed although its writer never learned so
//!   (an ambiguous reply), and applying both would count its rows twice. A flush that reaches
//!   into the flushed range without being covered by it is void too (rejected): flushes of one
//!   table are committed strictly in LSN order from fixed chunks, so that is a writer bug, and
//!   applying it would count the overlap twice.
//!
//! Tables are behind `Arc` so publishing a new state copies only the tables a record touched.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::record::{
    Compact, DataObject, FailoverEntry, Fence, Flush, LogRecord, RecordBody,
};
use crate::model::{ColumnSpec, TableId, TimeRange};

/// The catalog after applying records `1..=seq`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogState {
    /// The last applied record (0: none).
    pub seq: u64,
    /// The epoch of the newest valid promote (0: never promoted).
    pub epoch: u64,
    /// The node of the newest valid promote: the primary.
    pub primary: Option<String>,
    /// The in-sync replica set (from the newest promote or isr record).
    pub in_sync: Vec<String>,
    /// The fence of the newest valid promote.
    pub fence: Option<Fence>,
    /// Live tables.
    pub tables: BTreeMap<TableId, Arc<TableState>>,
    /// The newest failovers (valid promotes with a failover record), oldest first, at most
    /// [`FAILOVER_HISTORY`]: the cluster API's history and the health trigger's cooldown.
    pub failovers: Vec<FailoverEntry>,
}

/// How many failovers [`CatalogState::failovers`] keeps.
pub const FAILOVER_HISTORY: usize = 20;

/// The live state of one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableState {
    /// Live data objects, in the order they were added.
    pub objects: Vec<DataObject>,
    /// Highest `lsn_last` of a valid flush of this table.
    pub flushed_lsn: u64,
    /// Union of the columns of every flush, in first-seen order.
    pub columns: Vec<ColumnSpec>,
}

/// The outcome of checking a record against the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The record applies.
    Valid,
    /// A newer epoch precedes the record (or, for a promote, an equal or newer one).
    Fenced { current_epoch: u64 },
    /// The record's epoch was never promoted.
    UnknownEpoch { current_epoch: u64 },
    /// The record's precondition fails (compaction inputs not live).
    Rejected(String),
    /// A flush whose LSN range the table's watermark already covers (a re-submission).
    Covered {
        /// The table's flushed LSN.
        flushed_lsn: u64,
    },
}

impl CatalogState {
    /// Returns the live state of `table`, if it has ever been flushed.
    pub fn table(&self, table: &TableId) -> Option<&TableState> {
        self.tables.get(table).map(Arc::as_ref)
    }

    /// Returns the live objects of `table` whose time range overlaps `range`.
    pub fn objects_overlapping(&self, table: &TableId, range: TimeRange) -> Vec<&DataObject> {
        self.table(table)
            .map(|table_state| {
                table_state
                    .objects
                    .iter()
                    .filter(|object| object.time_range.overlaps(&range))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Returns the databases that have at least one table, sorted.
    pub fn databases(&self) -> Vec<&str> {
        let mut databases: Vec<&str> = self
            .tables
            .keys()
            .map(|table| table.database.as_str())
            .collect();
        // Keys are sorted by (database, measurement), so duplicates are adjacent.
        databases.dedup();
        databases
    }

    /// Returns the measurement names of `database`, sorted.
    pub fn tables_of(&self, database: &str) -> Vec<&str> {
        self.tables
            .keys()
            .filter(|table| table.database == database)
            .map(|table| table.measurement.as_str())
            .collect()
    }

    /// Returns the highest LSN any valid flush covers (0: none).
    pub fn max_flushed_lsn(&self) -> u64 {
        self.tables
            .values()
            .map(|table_state| table_state.flushed_lsn)
            .max()
            .unwrap_or(0)
    }

    /// Checks whether a record of `epoch` with `body` would be valid as the next record.
    pub(crate) fn check(&self, epoch: u64, body: &RecordBody) -> Verdict {
        if let RecordBody::Promote(promote) = body {
            if promote.epoch <= self.epoch {
                return Verdict::Fenced {
                    current_epoch: self.epoch,
                };
            }
            // A failover promote is valid only from a member of the in-sync set as the log
            // has it when the promote lands: one removed meanwhile by an `isr` record may lack
            // writes acknowledged after its removal.
            if promote.failover.is_some() && !self.in_sync.contains(&promote.node_id) {
                return Verdict::Rejected(format!(
                    "{} is not in the in-sync set {:?} of epoch {}",
                    promote.node_id, self.in_sync, self.epoch
                ));
            }
            return Verdict::Valid;
        }
        if epoch < self.epoch {
            return Verdict::Fenced {
                current_epoch: self.epoch,
            };
        }
        if epoch > self.epoch {
            return Verdict::UnknownEpoch {
                current_epoch: self.epoch,
            };
        }
        match body {
            RecordBody::Compact(compact) => self.check_compact(compact),
            RecordBody::Flush(flush) => self.check_flush(flush),
            RecordBody::Flushes(flushes) => self.check_flushes(&flushes.flushes),
            RecordBody::Promote(_) | RecordBody::Isr(_) => Verdict::Valid,
        }
    }

    fn check_flushes(&self, flushes: &[Flush]) -> Verdict {
        for (index, flush) in flushes.iter().enumerate() {
            if flushes[..index]
                .iter()
                .any(|other| other.table == flush.table)
            {
                return Verdict::Rejected(format!(
                    "a flushes record names table {} twice",
                    flush.table
                ));
            }
            let verdict = self.check_flush(flush);
            if verdict != Verdict::Valid {
                return verdict;
            }
        }
        Verdict::Valid
    }

    fn check_flush(&self, flush: &Flush) -> Verdict {
        let flushed_lsn = self
            .table(&flush.table)
            .map_or(0, |table_state| table_state.flushed_lsn);
        if flushed_lsn == 0 || flush.lsn_first > flushed_lsn {
            Verdict::Valid
        } else if flush.lsn_last <= flushed_lsn {
            Verdict::Covered { flushed_lsn }
        } else {
            Verdict::Rejected(format!(
                "flush of {} lsn {}..={} overlaps the table's flushed lsn {flushed_lsn}",
                flush.table, flush.lsn_first, flush.lsn_last
            ))
        }
    }

    fn check_compact(&self, compact: &Compact) -> Verdict {
        let live = self.table(&compact.table);
        for path in &compact.removed {
            let is_live = live.is_some_and(|table_state| {
                table_state
                    .objects
                    .iter()
                    .any(|object| &object.path == path)
            });
            if !is_live {
                return Verdict::Rejected(format!(
                    "compaction input {path} of table {} is not live",
                    compact.table
                ));
            }
        }
        Verdict::Valid
    }

    /// Whether this state shows the effect of a record of `epoch` by `node_id` with `body`. A
    /// committer whose record may sit in a truncated slot, which no reader reads, asks this of
    /// the state after a newer checkpoint to learn whether its record counts.
    pub(crate) fn shows(&self, epoch: u64, node_id: &str, body: &RecordBody) -> bool {
        let live = |table: &TableId, path: &str| {
            self.table(table)
                .is_some_and(|table_state| table_state.objects.iter().any(|o| o.path == path))
        };
        match body {
            RecordBody::Promote(promote) => {
                self.epoch == promote.epoch && self.primary.as_deref() == Some(node_id)
            }
            RecordBody::Flush(flush) => self.shows_flush(flush),
            RecordBody::Flushes(flushes) => {
                flushes.flushes.iter().all(|flush| self.shows_flush(flush))
            }
            RecordBody::Compact(compact) if compact.added.is_empty() => compact
                .removed
                .iter()
                .all(|path| !live(&compact.table, path)),
            RecordBody::Compact(compact) => compact
                .added
                .iter()
                .all(|object| live(&compact.table, &object.path)),
            RecordBody::Isr(isr) => self.epoch == epoch && self.in_sync == isr.in_sync,
        }
    }

    fn shows_flush(&self, flush: &Flush) -> bool {
        self.table(&flush.table)
            .is_some_and(|table_state| table_state.flushed_lsn >= flush.lsn_last)
    }

    /// Applies record `record` (which must be record `self.seq + 1`) and returns its verdict;
    /// a record that is not valid changes nothing but the sequence number.
    pub(crate) fn apply(&mut self, record: &LogRecord) -> Verdict {
        debug_assert_eq!(record.seq, self.seq + 1, "records apply in slot order");
        self.seq = record.seq;
        let verdict = self.check(record.epoch, &record.record);
        if verdict != Verdict::Valid {
            return verdict;
        }
        match &record.record {
            RecordBody::Promote(promote) => {
                if let Some(failover) = &promote.failover {
                    if self.failovers.len() == FAILOVER_HISTORY {
                        self.failovers.remove(0);
                    }
                    self.failovers.push(FailoverEntry {
                        epoch: promote.epoch,
                        node_id: promote.node_id.clone(),
                        previous_primary: self.primary.clone(),
                        fence_lsn: promote.fence.last_lsn,
                        record: failover.clone(),
                    });
                }
                self.epoch = promote.epoch;
                self.primary = Some(promote.node_id.clone());
                self.in_sync = promote.in_sync.clone();
                self.fence = Some(promote.fence.clone());
            }
            RecordBody::Flush(flush) => self.apply_flush(flush),
            RecordBody::Flushes(flushes) => {
                for flush in &flushes.flushes {
                    self.apply_flush(flush);
                }
            }
            RecordBody::Compact(compact) => self.apply_compact(compact),
            RecordBody::Isr(isr) => self.in_sync = isr.in_sync.clone(),
        }
        Verdict::Valid
    }

    fn apply_flush(&mut self, flush: &Flush) {
        let table_state = Arc::make_mut(self.tables.entry(flush.table.clone()).or_default());
        for object in &flush.objects {
            // A flush re-committed after an ambiguous failure names the same objects: adding
            // them twice would duplicate rows.
            if !table_state
                .objects
                .iter()
                .any(|live| live.path == object.path)
            {
                table_state.objects.push(object.clone());
            }
        }
        table_state.flushed_lsn = table_state.flushed_lsn.max(flush.lsn_last);
        for column in &flush.columns {
            if !table_state
                .columns
                .iter()
                .any(|known| known.name == column.name)
            {
                table_state.columns.push(column.clone());
            }
        }
    }

    fn apply_compact(&mut self, compact: &Compact) {
        let table_state = Arc::make_mut(self.tables.entry(compact.table.clone()).or_default());
        table_state
            .objects
            .retain(|object| !compact.removed.contains(&object.path));
        for object in &compact.added {
            if !table_state
                .objects
                .iter()
                .any(|live| live.path == object.path)
            {
                table_state.objects.push(object.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::record::{FORMAT_VERSION, Isr, Promote};
    use crate::model::{ColumnKind, FieldType};

    fn record(seq: u64, epoch: u64, body: RecordBody) -> LogRecord {
        LogRecord {
            version: FORMAT_VERSION,
            seq,
            epoch,
            nonce: format!("n{seq}"),
            node: "a".into(),
            record: body,
        }
    }

    fn promote(epoch: u64, node: &str) -> RecordBody {
        RecordBody::Promote(Promote {
            epoch,
            node_id: node.into(),
            fence: Fence {
                previous_epoch: epoch - 1,
                last_lsn: 0,
            },
            in_sync: vec![node.into()],
            failover: None,
        })
    }

    /// A failover promote from a standby that an `isr` record removed before it landed is
    /// void: the primary may have acknowledged writes without it since.
    #[test]
    fn test_should_void_a_failover_promote_from_outside_the_in_sync_set() {
        let mut state = CatalogState::default();
        state.apply(&record(1, 1, promote(1, "a")));
        state.apply(&record(
            2,
            1,
            RecordBody::Isr(crate::catalog::record::Isr {
                in_sync: vec!["a".into(), "b".into()],
            }),
        ));
        let failover = |node: &str| {
            let RecordBody::Promote(mut body) = promote(2, node) else {
                unreachable!()
            };
            body.failover = Some(crate::catalog::record::FailoverRecord {
                reason: "dead".into(),
                detected_at_ms: 1,
                promoted_at_ms: 2,
            });
            RecordBody::Promote(body)
        };
        assert_eq!(state.check(2, &failover("b")), Verdict::Valid);
        state.apply(&record(
            3,
            1,
            RecordBody::Isr(crate::catalog::record::Isr {
                in_sync: vec!["a".into()],
            }),
        ));
        assert!(matches!(
            state.check(2, &failover("b")),
            Verdict::Rejected(_)
        ));
        state.apply(&record(4, 2, failover("b")));
        assert_eq!(state.epoch, 1, "the void promote changed nothing");
        // A start-up claim (no failover part) is not bound by the in-sync set.
        assert_eq!(state.check(2, &promote(2, "b")), Verdict::Valid);
    }

    /// Valid failover promotes form the history (bounded, newest last, naming whom each one
    /// replaced); start-up claims and void promotes do not; a checkpoint keeps it.
    #[test]
    fn test_should_keep_a_bounded_failover_history_across_checkpoints() {
        let failover = |epoch: u64, node: &str| {
            let RecordBody::Promote(mut body) = promote(epoch, node) else {
                unreachable!()
            };
            body.in_sync = vec!["a".into(), "b".into()];
            body.failover = Some(crate::catalog::record::FailoverRecord {
                reason: "silent".into(),
                detected_at_ms: epoch * 10,
                promoted_at_ms: epoch * 10 + 1,
            });
            RecordBody::Promote(body)
        };
        let mut state = CatalogState::default();
        state.apply(&record(1, 1, promote(1, "a")));
        state.apply(&record(
            2,
            1,
            RecordBody::Isr(crate::catalog::record::Isr {
                in_sync: vec!["a".into(), "b".into()],
            }),
        ));
        let total = FAILOVER_HISTORY as u64 + 3;
        for epoch in 2..2 + total {
            let node = if epoch % 2 == 0 { "b" } else { "a" };
            state.apply(&record(epoch + 1, epoch - 1, failover(epoch, node)));
        }
        // A stale promote (epoch not newer) is void and leaves no trace.
        state.apply(&record(total + 3, 1, failover(2, "b")));
        assert_eq!(state.failovers.len(), FAILOVER_HISTORY);
        let newest = state.failovers.last().unwrap();
        assert_eq!(newest.epoch, 1 + total);
        assert_eq!(newest.record.detected_at_ms, (1 + total) * 10);
        let previous = &state.failovers[FAILOVER_HISTORY - 2];
        assert_eq!(
            newest.previous_primary.as_deref(),
            Some(previous.node_id.as_str())
        );
        assert_eq!(
            state.failovers[0].epoch,
            1 + total - FAILOVER_HISTORY as u64 + 1
        );

        let bytes = crate::catalog::record::Checkpoint::encode(&state);
        let decoded = crate::catalog::record::Checkpoint::decode("k", state.seq, &bytes).unwrap();
        assert_eq!(decoded.failovers, state.failovers);
    }

    fn live_paths<'a>(state: &'a CatalogState, table: &TableId) -> Vec<&'a str> {
        state
            .table(table)
            .unwrap()
            .objects
            .iter()
            .map(|o| o.path.as_str())
            .collect()
    }

    fn object(path: &str, start_ns: i64, end_ns: i64) -> DataObject {
        DataObject {
            path: path.into(),
            time_range: TimeRange { start_ns, end_ns },
            rows: 1,
            bytes: 1,
        }
    }

    fn flush(table: &TableId, lsn_last: u64, objects: Vec<DataObject>, column: &str) -> RecordBody {
        RecordBody::Flush(Flush {
            table: table.clone(),
            lsn_first: lsn_last,
            lsn_last,
            objects,
            columns: vec![ColumnSpec {
                name: column.into(),
                kind: ColumnKind::Field(FieldType::Float),
            }],
        })
    }

    #[test]
    fn test_should_void_records_of_fenced_epochs() {
        let table = TableId::new("db", "cpu");
        let mut state = CatalogState::default();
        assert_eq!(state.apply(&record(1, 1, promote(1, "a"))), Verdict::Valid);
        assert_eq!(
            state.apply(&record(
                2,
                1,
                flush(&table, 10, vec![object("x", 0, 5)], "u")
            )),
            Verdict::Valid
        );
        assert_eq!(state.apply(&record(3, 2, promote(2, "b"))), Verdict::Valid);
        // A's flush landed after B's promote: void.
        assert_eq!(
            state.apply(&record(
                4,
                1,
                flush(&table, 20, vec![object("y", 0, 5)], "v")
            )),
            Verdict::Fenced { current_epoch: 2 }
        );
        // A stale promote and a record from an epoch never promoted: void.
        assert_eq!(
            state.apply(&record(5, 2, promote(2, "c"))),
            Verdict::Fenced { current_epoch: 2 }
        );
        assert_eq!(
            state.apply(&record(6, 3, RecordBody::Isr(Isr { in_sync: vec![] }))),
            Verdict::UnknownEpoch { current_epoch: 2 }
        );
        assert_eq!(state.seq, 6);
        assert_eq!(state.primary.as_deref(), Some("b"));
        assert_eq!(state.in_sync, vec!["b".to_string()]);
        let table_state = state.table(&table).unwrap();
        assert_eq!(table_state.objects, vec![object("x", 0, 5)]);
        assert_eq!(table_state.flushed_lsn, 10);
        assert_eq!(state.max_flushed_lsn(), 10);
    }

    #[test]
    fn test_should_swap_objects_on_compaction() {
        let table = TableId::new("db", "cpu");
        let mut state = CatalogState::default();
        state.apply(&record(1, 1, promote(1, "a")));
        state.apply(&record(
            2,
            1,
            flush(&table, 3, vec![object("x", 0, 5), object("y", 6, 9)], "u"),
        ));
        state.apply(&record(
            3,
            1,
            flush(&table, 4, vec![object("z", 20, 30)], "v"),
        ));
        let compact = Compact {
            table: table.clone(),
            removed: vec!["x".into(), "y".into()],
            added: vec![object("xy", 0, 9)],
        };
        assert_eq!(
            state.apply(&record(4, 1, RecordBody::Compact(compact.clone()))),
            Verdict::Valid
        );
        assert_eq!(live_paths(&state, &table), ["z", "xy"]);
        // The same swap a second time: its inputs are gone, so it is void.
        assert!(matches!(
            state.apply(&record(5, 1, RecordBody::Compact(compact))),
            Verdict::Rejected(_)
        ));
        let overlapping = state.objects_overlapping(
            &table,
            TimeRange {
                start_ns: 8,
                end_ns: 19,
            },
        );
        assert_eq!(overlapping, vec![&object("xy", 0, 9)]);
        let columns: Vec<&str> = state
            .table(&table)
            .unwrap()
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["u", "v"]);
    }

    #[test]
    fn test_should_list_databases_and_tables() {
        let mut state = CatalogState::default();
        state.apply(&record(
            1,
            0,
            flush(&TableId::new("b", "m2"), 1, vec![], "u"),
        ));
        state.apply(&record(
            2,
            0,
            flush(&TableId::new("a", "m1"), 2, vec![], "u"),
        ));
        state.apply(&record(
            3,
            0,
            flush(&TableId::new("b", "m1"), 3, vec![], "u"),
        ));
        assert_eq!(state.databases(), ["a", "b"]);
        assert_eq!(state.tables_of("b"), ["m1", "m2"]);
        assert!(state.tables_of("c").is_empty());
        assert_eq!(state.max_flushed_lsn(), 3);
    }

    #[test]
    fn test_should_not_duplicate_objects_of_a_recommitted_flush() {
        let table = TableId::new("db", "cpu");
        let mut state = CatalogState::default();
        let body = flush(&table, 3, vec![object("x", 0, 5)], "u");
        state.apply(&record(1, 0, body.clone()));
        state.apply(&record(2, 0, body));
        assert_eq!(state.table(&table).unwrap().objects.len(), 1);
    }

    #[test]
    fn test_should_void_a_flush_whose_lsns_are_already_covered() {
        let table = TableId::new("db", "cpu");
        let range = |table: &TableId, first: u64, last: u64, path: &str| {
            RecordBody::Flush(Flush {
                table: table.clone(),
                lsn_first: first,
                lsn_last: last,
                objects: vec![object(path, 0, 5)],
                columns: vec![],
            })
        };
        let mut state = CatalogState::default();
        let mut apply = |body: RecordBody| {
            let seq = state.seq + 1;
            state.apply(&record(seq, 0, body))
        };
        assert_eq!(apply(range(&table, 3, 7, "a")), Verdict::Valid);
        // The same rows re-encoded under new paths (the retry of an ambiguous commit), or any
        // range inside the flushed one: void, for every reader alike.
        for (first, last, path) in [(3, 7, "b"), (4, 6, "c"), (1, 2, "d")] {
            assert_eq!(
                apply(range(&table, first, last, path)),
                Verdict::Covered { flushed_lsn: 7 }
            );
        }
        // Reaching into the flushed range from below the watermark: void as well, and said.
        assert!(matches!(
            apply(range(&table, 5, 9, "overlap")),
            Verdict::Rejected(_)
        ));
        assert_eq!(apply(range(&table, 8, 9, "e")), Verdict::Valid);
        assert_eq!(
            apply(range(&table, 8, 9, "f")),
            Verdict::Covered { flushed_lsn: 9 }
        );
        // Watermarks are per table: another table's flush of the same LSNs is valid.
        let other = TableId::new("db", "mem");
        assert_eq!(apply(range(&other, 3, 7, "m")), Verdict::Valid);
        assert_eq!(live_paths(&state, &table), ["a", "e"]);
        assert_eq!(state.table(&table).unwrap().flushed_lsn, 9);
    }
}
