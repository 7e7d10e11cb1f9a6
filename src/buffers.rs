//! In-memory table buffers: acknowledged rows between the WAL and Parquet.
//!
//! Every batch is kept with the LSN of the WAL entry it came from. A table's buffer is
//! *active* (taking new rows) until a flush *freezes* it; frozen buffers stay visible to queries
//! until their `flush` record is committed, and are flushed strictly in LSN order, one flush per
//! table at a time: the catalog's per-table watermark (highest flushed LSN) is only correct if
//! no older rows of that table are still waiting. Queries take the catalog snapshot and the
//! fresh rows under one lock and drop rows at or below the snapshot's watermark, so a flush that
//! commits concurrently is seen either as files or as fresh rows, never both, never neither.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_storage::TableId;
use arrow::record_batch::RecordBatch;

use crate::ingest::TableWrite;

/// Rows of one table that a flush took out of the active buffer.
#[derive(Debug, Clone)]
pub struct FrozenBatches {
    /// Identifies this frozen buffer for [`Buffers::complete`].
    pub id: u64,
    /// The batches, in LSN order.
    pub batches: Vec<RecordBatch>,
    /// LSN of the first batch.
    pub lsn_first: u64,
    /// LSN of the last batch.
    pub lsn_last: u64,
    /// Total rows.
    pub rows: u64,
}

/// Batches of at most this many rows are merged with their neighbours in the active buffer.
const SMALL_BATCH_ROWS: usize = 256;

/// How many consecutive small batches of one schema are merged into one.
///
/// A flood of 1-line writes otherwise leaves tens of thousands of one-row batches per flush:
/// cloning, encoding and freeing them one by one cost more than their rows, and stalled
/// acknowledgements (BENCHMARKS.md, issue 9). Merging 64 at a time copies each row once more,
/// on the WAL writer's thread, for a few microseconds per merge.
const MERGE_RUN: usize = 64;

/// One buffered batch and the WAL entries its rows came from (several once merged).
struct Stored {
    first_lsn: u64,
    last_lsn: u64,
    batch: RecordBatch,
}

#[derive(Default)]
struct Segment {
    batches: Vec<Stored>,
    /// Where the run of small batches of one schema that the next small batch may join
    /// starts (active buffer only).
    run_start: usize,
    rows: u64,
    /// Arrow memory of the batches: what a frozen chunk is bounded by besides rows, so that
    /// no chunk outgrows what one Parquet encoding (32-bit string offsets) can take.
    bytes: u64,
}

impl Segment {
    fn lsn_first(&self) -> Option<u64> {
        self.batches.first().map(|stored| stored.first_lsn)
    }

    /// Appends `batch` of WAL entry `lsn`, merging it with the small batches before it once
    /// they make a run of [`MERGE_RUN`] (if `merge`). Returns by how much the segment's bytes
    /// changed.
    fn push(&mut self, lsn: u64, batch: RecordBatch, merge: bool) -> i64 {
        let before = self.bytes;
        let small = merge && batch.num_rows() <= SMALL_BATCH_ROWS;
        let joins_run = small
            && self.batches.get(self.run_start).is_some_and(|head| {
                let (a, b) = (head.batch.schema(), batch.schema());
                Arc::ptr_eq(&a, &b) || a == b
            });
        if !joins_run {
            self.run_start = self.batches.len() + usize::from(!small);
        }
        self.rows += batch.num_rows() as u64;
        self.bytes += batch.get_array_memory_size() as u64;
        self.batches.push(Stored {
            first_lsn: lsn,
            last_lsn: lsn,
            batch,
        });
        if self.batches.len() - self.run_start >= MERGE_RUN {
            self.merge_run();
        }
        self.bytes as i64 - before as i64
    }

    fn merge_run(&mut self) {
        let run = &self.batches[self.run_start..];
        let schema = run[0].batch.schema();
        // Same schema throughout, so this cannot fail; if it did, the run stays as it is.
        let Ok(merged) =
            arrow::compute::concat_batches(&schema, run.iter().map(|stored| &stored.batch))
        else {
            self.run_start = self.batches.len();
            return;
        };
        let old_bytes: u64 = run
            .iter()
            .map(|stored| stored.batch.get_array_memory_size() as u64)
            .sum();
        let first_lsn = run[0].first_lsn;
        let last_lsn = run[run.len() - 1].last_lsn;
        self.batches.truncate(self.run_start);
        self.bytes = self.bytes - old_bytes + merged.get_array_memory_size() as u64;
        self.batches.push(Stored {
            first_lsn,
            last_lsn,
            batch: merged,
        });
        self.run_start = self.batches.len();
    }
}

#[derive(Default)]
struct TableBuffer {
    active: Segment,
    /// When the oldest row of `active` arrived.
    active_since: Option<Instant>,
    /// Frozen segments in LSN order, with their ids.
    frozen: Vec<(u64, Arc<Segment>)>,
    /// A flush task owns this table's frozen segments.
    flushing: bool,
}

#[derive(Default)]
struct State {
    tables: HashMap<TableId, TableBuffer>,
    next_id: u64,
    total_rows: u64,
}

/// Rows a committed flush released from the buffers (see [`Buffers::complete`]); dropping it
/// frees them.
pub struct Released {
    _segment: Option<Arc<Segment>>,
    _buffer: Option<TableBuffer>,
}

/// Bounds of one frozen chunk (the rows one flush encodes into Parquet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Rows (`ingest.max_buffer_size`).
    pub rows: u64,
    /// Arrow bytes.
    pub bytes: u64,
}

impl ChunkLimits {
    /// At most this many Arrow bytes per chunk: well below the 2 GiB that 32-bit offsets of one
    /// string column allow, and small enough that encoding one chunk needs modest memory.
    pub const MAX_BYTES: u64 = 256 * 1024 * 1024;

    /// Chunks of `rows` rows and at most [`ChunkLimits::MAX_BYTES`].
    pub fn rows(rows: u64) -> Self {
        Self {
            rows,
            bytes: Self::MAX_BYTES,
        }
    }
}

/// The buffers of every table; shared by the WAL writer (which appends), the flusher and
/// queries.
#[derive(Default)]
pub struct Buffers {
    state: Mutex<State>,
    /// Arrow bytes buffered (active and frozen), readable without the lock: every write checks
    /// it for backpressure.
    bytes: AtomicU64,
}

impl Buffers {
    /// Drops the rows of every table at or below its flushed LSN (`flushed`, from a catalog
    /// snapshot that includes the flushes): a reader's rows once Parquet objects hold them.
    /// Returns what was dropped; free it off the async runtime.
    #[must_use = "drop the released rows on a blocking thread"]
    pub fn discard_flushed(&self, flushed: impl Fn(&TableId) -> u64) -> Vec<RecordBatch> {
        let mut state = self.lock();
        let mut released = Vec::new();
        let mut released_rows = 0;
        let mut released_bytes = 0;
        state.tables.retain(|table, buffer| {
            let watermark = flushed(table);
            if buffer
                .active
                .lsn_first()
                .is_some_and(|first| first <= watermark)
            {
                let keep_from = buffer
                    .active
                    .batches
                    .partition_point(|stored| stored.last_lsn <= watermark);
                let kept = buffer.active.batches.split_off(keep_from);
                for stored in std::mem::replace(&mut buffer.active.batches, kept) {
                    let rows = stored.batch.num_rows() as u64;
                    let bytes = stored.batch.get_array_memory_size() as u64;
                    buffer.active.rows -= rows;
                    buffer.active.bytes -= bytes;
                    released_rows += rows;
                    released_bytes += bytes;
                    released.push(stored.batch);
                }
                buffer.active.run_start = buffer.active.batches.len();
                if buffer.active.batches.is_empty() {
                    buffer.active_since = None;
                }
            }
            buffer.active.rows > 0 || !buffer.frozen.is_empty() || buffer.flushing
        });
        state.total_rows -= released_rows;
        self.bytes.fetch_sub(released_bytes, Ordering::Relaxed);
        released
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // loses rows (every mutation is a push or a move), so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends the writes of one WAL entry; returns the tables whose active buffer now holds
    /// at least `max_rows` rows.
    pub fn apply(&self, lsn: u64, writes: Vec<TableWrite>, max_rows: u64) -> Vec<TableId> {
        self.apply_inner(lsn, writes, max_rows, true)
    }

    /// Appends the writes of one entry of the primary's WAL on a follower, never merging it
    /// with other entries' batches: a follower drops rows by LSN as the primary's flushes
    /// commit ([`Buffers::discard_flushed`]), at the primary's chunk ends, which a merged
    /// batch could straddle.
    pub fn apply_followed(&self, lsn: u64, writes: Vec<TableWrite>) {
        self.apply_inner(lsn, writes, u64::MAX, false);
    }

    fn apply_inner(
        &self,
        lsn: u64,
        writes: Vec<TableWrite>,
        max_rows: u64,
        merge: bool,
    ) -> Vec<TableId> {
        let mut state = self.lock();
        let mut full = Vec::new();
        let now = Instant::now();
        for write in writes {
            let rows = write.batch.num_rows() as u64;
            if rows == 0 {
                continue;
            }
            state.total_rows += rows;
            let buffer = state.tables.entry(write.table.clone()).or_default();
            let delta = buffer.active.push(lsn, write.batch, merge);
            if delta >= 0 {
                self.bytes.fetch_add(delta as u64, Ordering::Relaxed);
            } else {
                self.bytes
                    .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
            }
            buffer.active_since.get_or_insert(now);
            if buffer.active.rows >= max_rows {
                full.push(write.table);
            }
        }
        full
    }

    /// Lists the tables that need a flush: active buffer at `max_rows` or older than
    /// `max_age`, or frozen segments left over from a failed flush. Tables already being
    /// flushed are skipped.
    pub fn due(&self, max_rows: u64, max_age: Duration) -> Vec<TableId> {
        let state = self.lock();
        let now = Instant::now();
        state
            .tables
            .iter()
            .filter(|(_, buffer)| !buffer.flushing)
            .filter(|(_, buffer)| {
                !buffer.frozen.is_empty()
                    || buffer.active.rows >= max_rows
                    || buffer
                        .active_since
                        .is_some_and(|since| now.duration_since(since) >= max_age)
            })
            .map(|(table, _)| table.clone())
            .collect()
    }

    /// Lists every table with buffered rows.
    pub fn tables_with_rows(&self) -> Vec<TableId> {
        let state = self.lock();
        state
            .tables
            .iter()
            .filter(|(_, buffer)| buffer.active.rows > 0 || !buffer.frozen.is_empty())
            .map(|(table, _)| table.clone())
            .collect()
    }

    /// Claims the right to flush `table`. Returns false if another flush holds it.
    pub fn begin_flush(&self, table: &TableId) -> bool {
        let mut state = self.lock();
        match state.tables.get_mut(table) {
            Some(buffer) if !buffer.flushing => {
                buffer.flushing = true;
                true
            }
            _ => false,
        }
    }

    /// Releases the claim taken by [`Buffers::begin_flush`].
    pub fn end_flush(&self, table: &TableId) {
        let mut state = self.lock();
        if let Some(buffer) = state.tables.get_mut(table) {
            buffer.flushing = false;
            if buffer.frozen.is_empty() && buffer.active.rows == 0 {
                state.tables.remove(table);
            }
        }
    }

    /// Freezes the active buffer of `table` into chunks of at most `limits` (a chunk holds at
    /// least one entry, and an entry's rows are never split across chunks, so every chunk's
    /// LSN range is disjoint from the others'). Returns the id of the newest frozen chunk, the
    /// last one a flush round that called this should take; `None` when nothing is buffered.
    ///
    /// A round takes what was frozen when it began and no more: rows arriving meanwhile wait
    /// for the next round, so a busy table cannot keep one round going (writing an object per
    /// turn) while other tables wait.
    pub fn freeze(&self, table: &TableId, limits: ChunkLimits) -> Option<u64> {
        let mut state = self.lock();
        let mut next_id = state.next_id;
        let buffer = state.tables.get_mut(table)?;
        let fits_one_chunk =
            buffer.active.rows <= limits.rows && buffer.active.bytes <= limits.bytes;
        if buffer.active.rows > 0 && fits_one_chunk {
            // The usual case, and the one that matters under a flood of small writes: the
            // writer thread waits on this lock, so no walk over tens of thousands of batches.
            buffer
                .frozen
                .push((next_id, Arc::new(std::mem::take(&mut buffer.active))));
            buffer.active_since = None;
            next_id += 1;
        } else if buffer.active.rows > 0 {
            let active = std::mem::take(&mut buffer.active);
            buffer.active_since = None;
            let mut chunk = Segment::default();
            for stored in active.batches {
                let same_entry = chunk
                    .batches
                    .last()
                    .is_some_and(|last| last.last_lsn == stored.first_lsn);
                if !chunk.batches.is_empty()
                    && !same_entry
                    && (chunk.rows >= limits.rows || chunk.bytes >= limits.bytes)
                {
                    buffer
                        .frozen
                        .push((next_id, Arc::new(std::mem::take(&mut chunk))));
                    next_id += 1;
                }
                chunk.rows += stored.batch.num_rows() as u64;
                chunk.bytes += stored.batch.get_array_memory_size() as u64;
                chunk.batches.push(stored);
            }
            buffer.frozen.push((next_id, Arc::new(chunk)));
            next_id += 1;
        }
        let newest = buffer.frozen.last().map(|(id, _)| *id);
        state.next_id = next_id;
        newest
    }

    /// Returns the oldest frozen chunk of `table` whose id is above `after` (any, if `None`)
    /// and at most `up_to` (see [`Buffers::freeze`]); `None` when there is none. A flush asks
    /// for the chunk after one whose flush is still under way.
    pub fn frozen_after(
        &self,
        table: &TableId,
        after: Option<u64>,
        up_to: u64,
    ) -> Option<FrozenBatches> {
        let (id, segment) = {
            let state = self.lock();
            let buffer = state.tables.get(table)?;
            let (id, segment) = buffer
                .frozen
                .iter()
                .find(|(id, _)| after.is_none_or(|after| *id > after))
                .filter(|(id, _)| *id <= up_to)?;
            (*id, Arc::clone(segment))
        };
        // Copied outside the lock: a chunk of small writes has tens of thousands of batches.
        Some(FrozenBatches {
            id,
            batches: segment
                .batches
                .iter()
                .map(|stored| stored.batch.clone())
                .collect(),
            lsn_first: segment.lsn_first().unwrap_or(0),
            lsn_last: segment.batches.last().map_or(0, |stored| stored.last_lsn),
            rows: segment.rows,
        })
    }

    /// Drops a frozen segment whose `flush` record is committed.
    ///
    /// Returns the rows it released: drop them off the async runtime. A chunk of small writes
    /// is tens of thousands of batches, and freeing them takes long enough (100 ms and more
    /// with glibc's malloc) to stall whichever thread does it; under the lock that was the WAL
    /// writer, on a runtime worker it is every request queued there.
    #[must_use = "drop the released rows on a blocking thread"]
    pub fn complete(&self, table: &TableId, id: u64) -> Released {
        let mut state = self.lock();
        let mut removed = None;
        let mut empty = None;
        if let Some(buffer) = state.tables.get_mut(table) {
            if let Some(position) = buffer
                .frozen
                .iter()
                .position(|(frozen_id, _)| *frozen_id == id)
            {
                let segment = buffer.frozen.remove(position).1;
                self.bytes.fetch_sub(segment.bytes, Ordering::Relaxed);
                removed = Some(segment);
            }
            if buffer.frozen.is_empty() && buffer.active.rows == 0 && !buffer.flushing {
                empty = state.tables.remove(table);
            }
        }
        state.total_rows -= removed.as_ref().map_or(0, |segment| segment.rows);
        Released {
            _segment: removed,
            _buffer: empty,
        }
    }

    /// Returns the rows of `table` with an LSN above `flushed_lsn`, oldest first. Call it with
    /// the catalog snapshot taken inside [`Buffers::with_lock`] for a consistent view.
    fn fresh_locked(state: &State, table: &TableId, flushed_lsn: u64) -> Vec<RecordBatch> {
        let Some(buffer) = state.tables.get(table) else {
            return Vec::new();
        };
        buffer
            .frozen
            .iter()
            .map(|(_, segment)| &**segment)
            .chain(std::iter::once(&buffer.active))
            .flat_map(|segment| segment.batches.iter())
            // A merged batch never straddles a flushed chunk's end (merging happens before a
            // freeze, and chunks close between stored batches), so its last LSN decides.
            .filter(|stored| stored.last_lsn > flushed_lsn)
            .map(|stored| stored.batch.clone())
            .collect()
    }

    /// Runs `read` with the buffers locked, handing it a function that returns the fresh rows
    /// of a table above a watermark. Taking the catalog snapshot inside `read` makes the pair
    /// consistent with concurrent flushes.
    pub fn with_lock<T>(
        &self,
        read: impl FnOnce(&dyn Fn(&TableId, u64) -> Vec<RecordBatch>) -> T,
    ) -> T {
        let state = self.lock();
        let fresh =
            |table: &TableId, flushed_lsn: u64| Self::fresh_locked(&state, table, flushed_lsn);
        read(&fresh)
    }

    /// Returns the lowest LSN still buffered anywhere: WAL segments entirely below it can go.
    pub fn low_watermark(&self) -> Option<u64> {
        let state = self.lock();
        state
            .tables
            .values()
            .flat_map(|buffer| {
                buffer
                    .frozen
                    .iter()
                    .map(|(_, segment)| &**segment)
                    .chain(std::iter::once(&buffer.active))
                    .filter_map(Segment::lsn_first)
            })
            .min()
    }

    /// Total rows buffered (active and frozen).
    pub fn total_rows(&self) -> u64 {
        self.lock().total_rows
    }

    /// Arrow bytes buffered (active and frozen).
    pub fn total_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Precision, decode_line_protocol};

    fn writes(lines: &str) -> Vec<TableWrite> {
        decode_line_protocol(lines.as_bytes(), "db", Precision::Ns, 0, None).unwrap()
    }

    #[test]
    fn test_should_freeze_flush_in_lsn_order_and_hide_flushed_rows() {
        let buffers = Buffers::default();
        let cpu = TableId::new("db", "cpu");
        buffers.apply(1, writes("cpu v=1 1\ncpu v=2 2"), 100);
        buffers.apply(2, writes("cpu v=3 3"), 100);
        assert_eq!(buffers.low_watermark(), Some(1));
        assert!(buffers.begin_flush(&cpu));
        assert!(!buffers.begin_flush(&cpu), "one flush per table");
        let newest = buffers.freeze(&cpu, ChunkLimits::rows(100)).unwrap();
        let frozen = buffers.frozen_after(&cpu, None, newest).unwrap();
        assert_eq!((frozen.lsn_first, frozen.lsn_last, frozen.rows), (1, 2, 3));
        buffers.apply(3, writes("cpu v=4 4"), 100);
        // Before the commit, everything is fresh; after, only LSN 3.
        let rows = |watermark| {
            buffers.with_lock(|fresh| {
                fresh(&cpu, watermark)
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>()
            })
        };
        assert_eq!(rows(0), 4);
        assert_eq!(rows(2), 1);
        let _ = buffers.complete(&cpu, frozen.id);
        buffers.end_flush(&cpu);
        assert_eq!(buffers.low_watermark(), Some(3));
        assert_eq!(buffers.total_rows(), 1);
    }

    #[test]
    fn test_should_count_buffered_bytes_until_their_flush_commits() {
        let buffers = Buffers::default();
        let cpu = TableId::new("db", "cpu");
        assert_eq!(buffers.total_bytes(), 0);
        buffers.apply(1, writes("cpu v=1 1\ncpu v=2 2"), 100);
        let one = buffers.total_bytes();
        assert!(one > 0);
        buffers.apply(2, writes("cpu v=3 3"), 100);
        let two = buffers.total_bytes();
        assert!(two > one);
        assert!(buffers.begin_flush(&cpu));
        // Frozen rows still take memory until their flush commits.
        let newest = buffers.freeze(&cpu, ChunkLimits::rows(1)).unwrap();
        assert_eq!(buffers.total_bytes(), two);
        while let Some(frozen) = buffers.frozen_after(&cpu, None, newest) {
            let _ = buffers.complete(&cpu, frozen.id);
        }
        buffers.end_flush(&cpu);
        assert_eq!(buffers.total_bytes(), 0);
    }

    #[test]
    fn test_should_report_full_and_aged_tables() {
        let buffers = Buffers::default();
        let full = buffers.apply(1, writes("cpu v=1 1\ncpu v=2 2\nmem v=1 1"), 2);
        assert_eq!(full, vec![TableId::new("db", "cpu")]);
        let mut due = buffers.due(100, Duration::ZERO);
        due.sort();
        assert_eq!(due.len(), 2);
        assert!(buffers.due(100, Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn test_should_freeze_bounded_chunks_without_splitting_an_entry() {
        let buffers = Buffers::default();
        let cpu = TableId::new("db", "cpu");
        // A backlog (say, after a store outage): 10 entries of 3 rows, one of them with two
        // batches of the same entry.
        for lsn in 1..=10 {
            buffers.apply(lsn, writes("cpu v=1 1\ncpu v=2 2\ncpu v=3 3"), u64::MAX);
        }
        buffers.apply(10, writes("cpu v=4 4"), u64::MAX);
        let newest = buffers.freeze(&cpu, ChunkLimits::rows(7)).unwrap();
        let mut chunks = Vec::new();
        while let Some(frozen) = buffers.frozen_after(&cpu, None, newest) {
            let _ = buffers.complete(&cpu, frozen.id);
            chunks.push((frozen.lsn_first, frozen.lsn_last, frozen.rows));
        }
        // Each chunk closes at the first entry that reaches the bound; LSN 10's two batches
        // stay together.
        assert_eq!(chunks, [(1, 3, 9), (4, 6, 9), (7, 9, 9), (10, 10, 4)]);

        // The byte bound holds as well: one entry per chunk when a batch alone exceeds it.
        for lsn in 11..=13 {
            buffers.apply(lsn, writes("cpu v=1 1"), u64::MAX);
        }
        let limits = ChunkLimits {
            rows: u64::MAX,
            bytes: 1,
        };
        let newest = buffers.freeze(&cpu, limits).unwrap();
        let mut count = 0;
        while let Some(frozen) = buffers.frozen_after(&cpu, None, newest) {
            assert_eq!(frozen.lsn_first, frozen.lsn_last);
            let _ = buffers.complete(&cpu, frozen.id);
            count += 1;
        }
        assert_eq!(count, 3);
    }

    #[test]
    fn test_should_merge_small_writes_and_keep_their_lsns_rows_and_bytes() {
        let buffers = Buffers::default();
        let cpu = TableId::new("db", "cpu");
        for lsn in 1..=1000 {
            buffers.apply(lsn, writes(&format!("cpu v={lsn} {lsn}")), u64::MAX);
            // Another schema in between ends a run without losing anything.
            if lsn == 500 {
                buffers.apply(lsn, writes("cpu w=1i 1"), u64::MAX);
            }
        }
        let batches = buffers.with_lock(|fresh| fresh(&cpu, 0));
        // Two runs (the other schema splits them) of 7 merged batches and 52 left unmerged,
        // and the other schema's batch: 119 instead of 1001.
        assert_eq!(batches.len(), 119);
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1001);
        let bytes: u64 = batches
            .iter()
            .map(|batch| batch.get_array_memory_size() as u64)
            .sum();
        assert_eq!(buffers.total_bytes(), bytes);
        // A watermark inside the buffer drops exactly the merged batches at or below it.
        let above = buffers.with_lock(|fresh| fresh(&cpu, 64));
        assert_eq!(above.iter().map(|b| b.num_rows()).sum::<usize>(), 1001 - 64);

        let newest = buffers.freeze(&cpu, ChunkLimits::rows(300)).unwrap();
        let mut chunks = Vec::new();
        while let Some(frozen) = buffers.frozen_after(&cpu, None, newest) {
            chunks.push((frozen.lsn_first, frozen.lsn_last, frozen.rows));
            let _ = buffers.complete(&cpu, frozen.id);
        }
        assert_eq!(chunks.first().map(|c| c.0), Some(1));
        assert_eq!(chunks.last().map(|c| c.1), Some(1000));
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].1 + 1, pair[1].0, "chunks {chunks:?} leave no gap");
        }
        assert_eq!(chunks.iter().map(|c| c.2).sum::<u64>(), 1001);
        assert_eq!(buffers.total_bytes(), 0);
        assert_eq!(buffers.total_rows(), 0);
    }

    #[test]
    fn test_should_leave_rows_that_arrive_during_a_round_to_the_next_round() {
        let buffers = Buffers::default();
        let cpu = TableId::new("db", "cpu");
        buffers.apply(1, writes("cpu v=1 1"), 100);
        let newest = buffers.freeze(&cpu, ChunkLimits::rows(100)).unwrap();
        let first = buffers.frozen_after(&cpu, None, newest).unwrap();
        buffers.apply(2, writes("cpu v=2 2"), 100);
        let _ = buffers.complete(&cpu, first.id);
        assert!(
            buffers.frozen_after(&cpu, None, newest).is_none(),
            "round ends"
        );
        assert_eq!(buffers.total_rows(), 1);
        let next = buffers.freeze(&cpu, ChunkLimits::rows(100)).unwrap();
        assert!(next > newest);
        assert_eq!(buffers.frozen_after(&cpu, None, next).unwrap().lsn_first, 2);
    }
}
