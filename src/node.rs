//! A running node: start-up (catalog, promote, WAL recovery and replay), the flusher, the
//! HTTP server, and the graceful stop.
//!
//! Start-up order matters for durability. The catalog is loaded first, because the highest
//! flushed LSN of each table decides which WAL entries still need replay and where LSNs
//! continue. The node then appends a `promote` record (a new epoch fences any previous
//! incarnation still running against the same storage), opens the WAL (recovery truncates a
//! torn or corrupt tail) and replays into the buffers. Only then is it ready: `/ready` answers
//! 503 until replay is done, and writes and queries get 503 with `Retry-After`.
//!
//! Tasks: the HTTP server, the flusher and the WAL writer thread. A stop (the cancellation
//! token) first stops the HTTP server accepting, then flushes every buffer, then stops the
//! writer; a flush that cannot finish within `server.shutdown_timeout` leaves its rows in the
//! WAL, where the next start replays them.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_auth::AuthService;
use arc_clock::{Clock, SystemClock};
use arc_query::{QueryEngine, QueryError, QuerySettings, ResolvedTable};
use arc_storage::model::{ColumnKind, ColumnSpec, columns_of, schema_of};
use arc_storage::{
    Catalog, CatalogError, CatalogSettings, CatalogState, FlushMeta, FlushOutcome, ObjectCache,
    ObjectStorage, StorageError, TableId, TimeRange,
};
use arc_wal::replication::{FlushNotice, ReplicationHandle};
use arc_wal::{Lsn, Wal, WalSettings};
use futures::StreamExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::buffers::{Buffers, ChunkLimits, FrozenBatches};
use crate::cluster::{Cluster, Need};
use crate::config::{Config, Role};
use crate::failpoints;
use crate::ingest::TableWrite;
use crate::metrics as m;
use crate::payload;
use crate::sdnotify::Notifier;
use crate::wal_owner;
use crate::writer::{self, SchemaRegistry, WriteError, WriterHandle, WriterParts, Written};

/// State shared by the HTTP handlers, the flusher and the stop sequence.
pub struct NodeInner {
    /// The effective configuration.
    pub config: Config,
    /// This node's id.
    pub node_id: String,
    /// Acknowledged rows not yet in Parquet.
    pub buffers: Arc<Buffers>,
    /// The DuckDB engine.
    pub engine: Arc<QueryEngine>,
    /// Renders `/metrics`; `None` when another node in this process owns the recorder.
    pub metrics: Option<PrometheusHandle>,
    /// API tokens: request checks and the token API.
    pub auth: Arc<AuthService>,
    /// Membership, what this node advertises, and request routing.
    pub cluster: Cluster,
    /// The wall clock every part of the node reads time from.
    pub clock: Arc<dyn Clock>,
    /// Sends requests this node cannot serve to the node that can.
    pub forward_client: reqwest::Client,
    /// Whether the API is served over HTTPS (forwarded requests use the same scheme).
    pub tls: bool,
    /// `ingest.max_inflight_bytes`: what write bodies being read and decoded may hold at once.
    pub ingest_budget: crate::ingest::InflightBudget,
    /// The compaction scheduler's status and triggers, once it runs on this node.
    pub(crate) compaction: OnceLock<crate::compaction::CompactionHandle>,
    /// Permits of `query.max_concurrent`: a query runs only while it holds one.
    pub query_permits: Arc<tokio::sync::Semaphore>,
    /// What this node does; set once the role's start-up (WAL replay for a primary) is done,
    /// and changed by a promotion.
    duty: std::sync::RwLock<Option<Duty>>,
    /// What the stop sequence must stop: the writer and replication server of a primary (from
    /// its start, or from a promotion).
    running: Mutex<Started>,
    /// When the node started.
    started: Instant,
    /// When the last catalog refresh for a query began (see `sync_catalog`).
    catalog_synced_from: AsyncMutex<Option<Instant>>,
    storage: ObjectStorage,
    catalog: Catalog,
    cache: ObjectCache,
    /// Set once WAL replay is done.
    writer: OnceLock<WriterHandle>,
    /// The primary's replication server (a clustered primary with replication enabled).
    replication: OnceLock<ReplicationHandle>,
    /// A standby's or reader's stream from the primary.
    follower: OnceLock<crate::replication::Follower>,
    epoch: OnceLock<u64>,
    draining: AtomicBool,
    /// Serializes flush rounds (the background flusher, the flush endpoint, the final flush).
    flush_round: AsyncMutex<()>,
    /// Flush chunks encoded at once, all tables together ([`ENCODES_AT_ONCE`]).
    encode_slots: Arc<tokio::sync::Semaphore>,
    /// Set when the node must stop with an error (fenced by a newer epoch, WAL failure).
    fatal: Mutex<Option<String>>,
    /// Why this primary steps down (a newer epoch owns the catalog), once it must: the node
    /// then stops its services and starts again as a standby in the same process.
    stepping_down: Mutex<Option<String>>,
    /// Admission of writes; a planned switchover closes it.
    pub(crate) write_gate: crate::switchover::WriteGate,
    stop: CancellationToken,
}

impl NodeInner {
    /// What this node does now (`None` until its start-up is done).
    fn duty(&self) -> Option<Duty> {
        *self
            .duty
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn set_duty(&self, duty: Duty) {
        *self
            .duty
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(duty);
    }

    /// The epoch this node writes under, once it has promoted itself (or was elected).
    pub fn write_epoch(&self) -> Option<u64> {
        self.epoch.get().copied()
    }

    /// The catalog.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The primary this node follows and how long ago it last had a frame from it; `None` on
    /// the primary (a promoted standby's old stream means nothing) and before any frame.
    pub fn primary_heard(&self) -> Option<(String, Duration)> {
        if duty_is(self, Duty::Primary) {
            return None;
        }
        let (primary, at) = self.follower.get()?.progress().heard?;
        Some((primary, at.elapsed()))
    }

    /// Why `/ready` must say no although the node serves requests: a follower that has not
    /// caught up with the primary once since it started (its fresh rows would be missing).
    /// Only while the primary is alive (or gossip has not had the time to show it): a follower
    /// whose primary is dead or gone serves the flushed rows it can.
    pub fn replication_lag_reason(&self) -> Option<String> {
        let follower = self.follower.get()?;
        let progress = follower.progress();
        if progress.caught_up {
            return None;
        }
        let primary = self.catalog.snapshot().primary.clone()?;
        // A primary not heard of yet, or still shown dead by a failure detector that has just
        // started (it shows everyone dead until their heartbeats arrive), may well be alive:
        // gossip gets the bound in which it would have declared it dead.
        let alive = self.cluster.view().get(&primary).is_some_and(|node| {
            !matches!(
                node.state,
                arc_gossip::NodeState::Dead | arc_gossip::NodeState::Left
            )
        }) || self.started.elapsed()
            < arc_gossip::detection_bound(self.config.cluster.heartbeat_interval.0);
        alive.then(|| {
            format!(
                "catching up with the primary ({primary})'s write-ahead log: visible lsn {}, the primary's commit lsn {}",
                progress.visible, progress.commit
            )
        })
    }

    /// What a query here sees of the primary's acknowledged writes: the highest LSN whose
    /// rows are visible, and how stale that is in milliseconds. `None` on a node that sees
    /// only flushed rows (a compactor; a follower with replication disabled).
    pub fn freshness(&self) -> Option<(u64, u64)> {
        if let Some(writer) = self.writer.get() {
            return Some((writer.unapplied_from().saturating_sub(1), 0));
        }
        let progress = self.follower.get()?.progress();
        Some((progress.visible, progress.freshness_ms()))
    }

    /// Replication lag in milliseconds by node id, as far as this node knows it: on the
    /// primary every follower's, on a follower its own.
    pub fn replication_lags(&self) -> HashMap<String, u64> {
        if let Some(replication) = self.replication.get() {
            return replication
                .status()
                .followers
                .into_iter()
                .map(|follower| (follower.node_id, follower.lag_ms))
                .collect();
        }
        match self.follower.get() {
            Some(follower) => {
                HashMap::from([(self.node_id.clone(), follower.progress().freshness_ms())])
            }
            None => HashMap::new(),
        }
    }

    /// Waits until rows up to `lsn` are visible here (read-your-writes), at most `bound`.
    /// Returns the visible LSN and staleness as of the end of the wait.
    pub async fn wait_visible(&self, lsn: u64, bound: Duration) -> Option<(u64, u64)> {
        if let Some(follower) = self.follower.get() {
            let progress = follower.wait_visible(lsn, bound).await;
            return Some((progress.visible, progress.freshness_ms()));
        }
        self.freshness()
    }

    /// Whether start-up (WAL replay, for a writer) is done and the node is not draining.
    pub fn is_ready(&self) -> bool {
        self.duty().is_some()
            && !self.draining.load(Ordering::Acquire)
            && !self.writer.get().is_some_and(WriterHandle::is_poisoned)
    }

    /// Whether this node serves `need` itself (otherwise it is forwarded).
    pub fn serves(&self, need: Need) -> bool {
        match (need, self.duty()) {
            // Until start-up decides, requests wait here for the readiness 503.
            (_, None) => true,
            (Need::Write, Some(duty)) => matches!(duty, Duty::Standalone | Duty::Primary),
            (Need::Query, Some(duty)) => !matches!(duty, Duty::Compactor),
        }
    }

    /// Catches up with the catalog log before a query, on every clustered node, so queries
    /// see every record committed before they arrived: other nodes' flushes on readers and
    /// standbys, and on the primary too the compactors' swaps (whose inputs are deleted after
    /// a grace period, so a primary that never caught up would end up reading deleted files).
    /// A standalone node writes every record itself. Concurrent queries share a refresh: one
    /// that began after a query arrived already covers it, so a burst of queries costs one
    /// read, not one each. A query waits for it at most [`CATALOG_SYNC_BOUND`], then gets
    /// [`QueryError::Interrupted`] (503).
    pub async fn sync_catalog(&self) -> Result<(), QueryError> {
        if matches!(self.duty(), Some(Duty::Standalone)) {
            return Ok(());
        }
        // A follower's stream carries flush notices, and a tailer reads the log after each
        // (and every few seconds): no read per query while the stream is up.
        if self
            .follower
            .get()
            .is_some_and(|follower| follower.progress().streaming)
        {
            return Ok(());
        }
        let arrived = Instant::now();
        let deadline = tokio::time::Instant::from_std(arrived + CATALOG_SYNC_BOUND);
        let unavailable = || {
            QueryError::Interrupted(format!(
                "the catalog log could not be read within {CATALOG_SYNC_BOUND:?} (is the object \
                 store reachable?)"
            ))
        };
        let Ok(mut synced_from) =
            tokio::time::timeout_at(deadline, self.catalog_synced_from.lock()).await
        else {
            return Err(unavailable());
        };
        if synced_from.is_some_and(|began| began >= arrived) {
            return Ok(());
        }
        *synced_from = Some(Instant::now());
        let refreshed = tokio::time::timeout_at(deadline, self.catalog.refresh()).await;
        if !matches!(refreshed, Ok(Ok(_))) {
            // A failed or abandoned refresh covers nobody.
            *synced_from = None;
        }
        match refreshed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(QueryError::Execution(format!(
                "reading the catalog log: {error}"
            ))),
            Err(_) => Err(unavailable()),
        }
    }

    /// A token cancelled when the node begins to stop, for work on blocking threads.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Why the node is not ready (for 503 bodies).
    pub fn not_ready_reason(&self) -> &'static str {
        if self.draining.load(Ordering::Acquire) {
            "node is shutting down"
        } else {
            "node is starting (replaying the write-ahead log)"
        }
    }

    /// `server.body_read_timeout`.
    pub fn body_read_timeout(&self) -> Duration {
        self.config.server.body_read_timeout.0
    }

    /// `ingest.lenient_line_protocol`: leave out bad lines instead of refusing the request.
    pub fn lenient_line_protocol(&self) -> bool {
        self.config.ingest.lenient_line_protocol
    }

    /// The schemas this node's WAL writer knows (none when it has no writer).
    pub fn known_schemas(&self) -> writer::KnownSchemas {
        self.writer
            .get()
            .map(|writer| writer.known_schemas().clone())
            .unwrap_or_default()
    }

    /// `server.max_payload_size` in bytes.
    pub fn max_payload_size(&self) -> usize {
        usize::try_from(self.config.server.max_payload_size.0).unwrap_or(usize::MAX)
    }

    /// Nanoseconds since the Unix epoch, for rows without a timestamp and `now()` in queries.
    pub fn now_ns(&self) -> i64 {
        self.clock.now().timestamp_nanos_opt().unwrap_or(i64::MAX)
    }

    /// Why writes are refused for now, if they are: acknowledged rows waiting for flushes
    /// past `ingest.max_buffered_bytes`, WAL segments past `wal.max_total_size`, or the WAL's
    /// filesystem below `wal.min_free_space`. Each clears by itself once flushes catch up (or
    /// space is freed), so the answer is 503 with `Retry-After`.
    pub fn backpressure(&self) -> Option<String> {
        let buffered = self.buffers.total_bytes();
        let max_buffered = self.config.ingest.max_buffered_bytes;
        if buffered >= max_buffered.0 {
            return Some(format!(
                "{buffered} bytes of acknowledged rows are waiting for a flush, the most \
                 ingest.max_buffered_bytes ({max_buffered}) allows; flushes to the object store \
                 are slow or failing"
            ));
        }
        if let Some(replication) = self.replication.get()
            && !replication.writes_available()
        {
            let status = replication.status();
            return Some(format!(
                "cluster.replication_ack is {} but {} standby writer(s) are in sync ({:?}); \
                    writes resume once a standby has caught up",
                self.config.cluster.replication_ack,
                status.committed_isr.len(),
                status.committed_isr
            ));
        }
        let writer = self.writer.get()?;
        let wal_bytes = writer.wal_bytes();
        let max_wal = self.config.wal.max_total_size;
        if wal_bytes >= max_wal.0 {
            return Some(format!(
                "the write-ahead log holds {wal_bytes} bytes, the most wal.max_total_size \
                 ({max_wal}) allows; flushes to the object store are slow or failing"
            ));
        }
        let dir = &self.config.wal.directory;
        let min_free = self.config.wal.min_free_space;
        match crate::health::disk_space(dir) {
            Ok((free, _)) if free < min_free.0 => Some(format!(
                "the write-ahead log's filesystem ({}) has {free} bytes free, less than \
                 wal.min_free_space ({min_free})",
                dir.display()
            )),
            _ => None,
        }
    }

    /// Makes writes durable and visible; returns the LSN.
    ///
    /// # Errors
    /// See [`WriteError`].
    pub async fn write(&self, writes: Vec<TableWrite>) -> Result<Written, WriteError> {
        let Some(writer) = self.writer.get() else {
            return Err(WriteError::Unavailable(self.not_ready_reason().into()));
        };
        let Some(_admitted) = self.write_gate.enter() else {
            return Err(WriteError::Unavailable(
                "a planned switchover is moving the primary to another writer; retry in a moment"
                    .into(),
            ));
        };
        writer.write(writes).await
    }

    /// The epoch, writer and replication server of a clustered primary (`None` otherwise).
    pub(crate) fn primary_parts(&self) -> Option<(u64, WriterHandle, ReplicationHandle)> {
        if !duty_is(self, Duty::Primary) {
            return None;
        }
        Some((
            *self.epoch.get()?,
            self.writer.get()?.clone(),
            self.replication.get()?.clone(),
        ))
    }

    /// Flushes every buffered table now; returns how many tables were flushed.
    ///
    /// # Errors
    /// The first flush that failed (its rows stay buffered and in the WAL).
    pub async fn flush_all(&self) -> Result<usize, FlushError> {
        if self.epoch.get().is_none() {
            // A follower: the primary flushes the rows it shows.
            return Ok(0);
        }
        let _round = self.flush_round.lock().await;
        let tables = self.buffers.tables_with_rows();
        let count = tables.len();
        let mut first_error = None;
        let mut flushes = futures::stream::iter(tables)
            .map(|table| async move { self.flush_table(&table).await })
            .buffer_unordered(FLUSH_TABLES_AT_ONCE);
        while let Some(result) = flushes.next().await {
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(count),
        }
    }

    async fn flush_due(&self) {
        let _round = self.flush_round.lock().await;
        let max_age = Duration::from_millis(self.config.ingest.max_buffer_age_ms);
        let due = self
            .buffers
            .due(self.config.ingest.max_buffer_size, max_age);
        futures::stream::iter(due)
            .for_each_concurrent(FLUSH_TABLES_AT_ONCE, |table| async move {
                if let Err(error) = self.flush_table(&table).await {
                    warn!(%table, %error, "flush failed; rows stay buffered and will be retried");
                }
            })
            .await;
    }

    /// Flushes the frozen and active rows of one table, oldest first.
    async fn flush_table(&self, table: &TableId) -> Result<(), FlushError> {
        // A follower's buffers hold the primary's rows; the primary's flushes cover them. A
        // writer flushes once it holds the epoch (replay may flush before the writer runs).
        if self.epoch.get().is_none() || !self.buffers.begin_flush(table) {
            return Ok(());
        }
        let result = self.flush_table_claimed(table).await;
        self.buffers.end_flush(table);
        if let Err(FlushError::Fenced(message)) = &result {
            self.step_down(format!("fenced while flushing {table}: {message}"));
        }
        result
    }

    /// Flushes what `table` has buffered when the round begins, in bounded chunks, oldest
    /// first (see [`Buffers::freeze`]).
    ///
    /// Encoding is the slow step, and on a busy node it waits for a CPU: the next chunks are
    /// encoded while the oldest uploads and commits ([`FLUSH_PIPELINE`] at once), so a backlog
    /// drains several chunks at a time. Commits stay strictly in LSN order, one chunk after the
    /// other; after a failed one, the chunks encoded ahead stay buffered for the next round.
    async fn flush_table_claimed(&self, table: &TableId) -> Result<(), FlushError> {
        let epoch = *self.epoch.get().expect("flushes run after promote");
        let limits = ChunkLimits::rows(self.config.ingest.max_buffer_size);
        let Some(newest) = self.buffers.freeze(table, limits) else {
            return Ok(());
        };
        let mut pipeline: std::collections::VecDeque<EncodeJob> = std::collections::VecDeque::new();
        let mut last = None;
        loop {
            while pipeline.len() < FLUSH_PIPELINE {
                let Some(frozen) = self.buffers.frozen_after(table, last, newest) else {
                    break;
                };
                last = Some(frozen.id);
                pipeline.push_back(self.start_encode(table, epoch, frozen));
            }
            let Some(current) = pipeline.pop_front() else {
                return Ok(());
            };
            if let Err(error) = self.finish_flush(table, current).await {
                for pending in pipeline {
                    // Bounded work; waited for so that nothing of this flush outlives it.
                    let _ = pending.encoded.await;
                }
                return Err(error);
            }
        }
    }

    /// Starts encoding one frozen chunk on a blocking thread.
    fn start_encode(&self, table: &TableId, epoch: u64, frozen: FrozenBatches) -> EncodeJob {
        let meta = FlushMeta {
            epoch,
            lsn_first: frozen.lsn_first,
            lsn_last: frozen.lsn_last,
            node_id: self.node_id.clone(),
        };
        let encode_table = table.clone();
        let encode_meta = meta.clone();
        let batches = frozen.batches;
        EncodeJob {
            id: frozen.id,
            rows: frozen.rows,
            meta,
            started: Instant::now(),
            encoded: {
                let slots = self.encode_slots.clone();
                tokio::task::spawn_blocking(move || {
                    // Waits here, on a blocking thread, while others encode: the CPU and the
                    // memory of encoding stay bounded however many tables flush at once.
                    let _slot = futures::executor::block_on(slots.acquire_owned());
                    arc_storage::parquet::encode_table_objects(
                        &encode_table,
                        &batches,
                        &encode_meta,
                    )
                })
            },
        }
    }

    /// Uploads and commits one encoded chunk, then releases its rows and the WAL under them.
    async fn finish_flush(&self, table: &TableId, job: EncodeJob) -> Result<(), FlushError> {
        let EncodeJob {
            id,
            rows,
            meta,
            started,
            encoded,
        } = job;
        let objects = encoded
            .await
            .map_err(|error| FlushError::Other(format!("encode task for {table}: {error}")))?
            .map_err(|error| FlushError::Other(format!("encoding {table}: {error}")))?;
        let bytes: u64 = objects.iter().map(|object| object.bytes.len() as u64).sum();
        failpoints::hit("flush-before-commit");
        if failpoints::fails("flush-commit") {
            m::record_flush("error", rows, bytes, started.elapsed());
            return Err(FlushError::Other(format!(
                "flushing {table} lsn {}..={}: failpoint flush-commit",
                meta.lsn_first, meta.lsn_last
            )));
        }
        let committed = arc_storage::upload_and_commit(
            self.storage.store().as_ref(),
            &self.catalog,
            table,
            objects,
            &meta,
        )
        .await;
        let notice = |seq| FlushNotice {
            seq,
            tables: vec![(table.to_string(), Lsn(meta.lsn_last))],
        };
        let (lsn_first, lsn_last) = (meta.lsn_first, meta.lsn_last);
        match committed {
            Ok(FlushOutcome::Committed { seq }) => {
                if let Some(replication) = self.replication.get() {
                    replication.flush_committed(notice(seq));
                }
                m::record_flush("ok", rows, bytes, started.elapsed());
                info!(%table, rows, bytes, lsn_first, lsn_last, "table flushed");
            }
            Ok(FlushOutcome::Covered { flushed_lsn }) => {
                if let Some(replication) = self.replication.get() {
                    replication.flush_committed(notice(self.catalog.snapshot().seq));
                }
                // An earlier attempt whose reply was lost did commit these rows.
                m::record_flush("covered", rows, 0, started.elapsed());
                info!(%table, rows, lsn_first, lsn_last, flushed_lsn, "rows already flushed by an earlier attempt");
            }
            Err(error) => {
                m::record_flush("error", rows, bytes, started.elapsed());
                return Err(FlushError::from_storage(table, error));
            }
        }
        failpoints::hit("flush-after-commit");
        let released = self.buffers.complete(table, id);
        // Bounded work (freeing one chunk); nothing waits for it.
        drop(tokio::task::spawn_blocking(move || drop(released)));
        if let Some(writer) = self.writer.get() {
            // Entries waiting for their acknowledgement are in no buffer yet.
            let unapplied = writer.unapplied_from();
            let low = self
                .buffers
                .low_watermark()
                .map_or(unapplied, |low| low.min(unapplied));
            writer.truncate_below(low).await;
        }
        Ok(())
    }

    /// Ends this node's term as primary: a newer epoch owns the catalog (a fenced commit, or
    /// a newer primary seen). Its services stop without a final flush (any flush of it is
    /// void now) and the node starts again in the same process, as a standby that cuts its
    /// WAL back to the new primary's fence and follows it.
    pub(crate) fn step_down(&self, reason: String) {
        self.note_step_down(reason);
        // A switchover in progress (its gate closed: nothing is written) answers its client
        // first, and then steps down itself.
        if !self.write_gate.is_closed() {
            self.stop.cancel();
        }
    }

    /// Steps down whatever is in progress: the end of a switchover, or one abandoned after a
    /// step-down was noted meanwhile.
    pub(crate) fn step_down_now(&self, reason: String) {
        self.note_step_down(reason);
        self.stop.cancel();
    }

    /// Whether a step-down has been noted (and waits for a switchover to end).
    pub(crate) fn step_down_noted(&self) -> bool {
        lock(&self.stepping_down).is_some()
    }

    fn note_step_down(&self, reason: String) {
        let mut stepping_down = lock(&self.stepping_down);
        if stepping_down.is_none() && lock(&self.fatal).is_none() {
            warn!(%reason, epoch = ?self.epoch.get(), "a newer epoch owns the catalog: stepping down to standby");
            m::record_step_down();
            *stepping_down = Some(reason);
        }
    }

    /// Stops the node with an error (fenced, WAL failure).
    pub(crate) fn fail(&self, message: String) {
        error!(reason = %message, "node stopping on a fatal error");
        let mut fatal = self
            .fatal
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        fatal.get_or_insert(message);
        self.stop.cancel();
    }

    /// Databases with committed files or buffered rows.
    pub fn databases(&self) -> Vec<String> {
        let snapshot = self.catalog.snapshot();
        let mut names: BTreeSet<String> = snapshot
            .databases()
            .into_iter()
            .map(str::to_string)
            .collect();
        names.extend(
            self.buffers
                .tables_with_rows()
                .into_iter()
                .map(|table| table.database),
        );
        names.into_iter().collect()
    }

    /// Tables (measurements) of a database, committed or buffered.
    pub fn tables_of(&self, database: &str) -> Vec<String> {
        let snapshot = self.catalog.snapshot();
        let mut names: BTreeSet<String> = snapshot
            .tables_of(database)
            .into_iter()
            .map(str::to_string)
            .collect();
        names.extend(
            self.buffers
                .tables_with_rows()
                .into_iter()
                .filter(|table| table.database == database)
                .map(|table| table.measurement),
        );
        names.into_iter().collect()
    }

    /// Finds the files and fresh rows of every table a query needs.
    ///
    /// # Errors
    /// [`QueryError::UnknownTable`] for a table with neither files nor rows; an execution
    /// error when a remote object cannot be fetched.
    pub async fn resolve_tables(
        &self,
        needs: &[(TableId, TimeRange)],
    ) -> Result<HashMap<TableId, ResolvedTable>, QueryError> {
        // The catalog snapshot and the fresh rows are taken together (see buffers.rs).
        let (snapshot, mut fresh) = self.buffers.with_lock(|fresh_above| {
            let snapshot = self.catalog.snapshot();
            let fresh: HashMap<TableId, Vec<_>> = needs
                .iter()
                .map(|(table, _)| {
                    let flushed = snapshot
                        .tables
                        .get(table)
                        .map_or(0, |state| state.flushed_lsn);
                    (table.clone(), fresh_above(table, flushed))
                })
                .collect();
            (snapshot, fresh)
        });
        let mut resolved = HashMap::new();
        for (table, range) in needs {
            let fresh_rows = fresh.remove(table).unwrap_or_default();
            let state = snapshot.tables.get(table);
            if state.is_none() && fresh_rows.is_empty() {
                return Err(QueryError::UnknownTable(format!(
                    "table {table} does not exist"
                )));
            }
            let mut columns: Vec<ColumnSpec> =
                state.map(|state| state.columns.clone()).unwrap_or_default();
            for batch in &fresh_rows {
                columns.extend(columns_of(&batch.schema()));
            }
            let schema = schema_of(&order_columns(columns));
            let mut files = Vec::new();
            if let Some(state) = state {
                for object in state
                    .objects
                    .iter()
                    .filter(|object| object.time_range.overlaps(range))
                {
                    let path = object_store::path::Path::from(object.path.as_str());
                    let local = self.cache.local_file(&path).await.map_err(|error| {
                        QueryError::Execution(format!("fetching {}: {error}", object.path))
                    })?;
                    files.push(local);
                }
            }
            resolved.insert(
                table.clone(),
                ResolvedTable {
                    schema,
                    files,
                    fresh: fresh_rows,
                },
            );
        }
        Ok(resolved)
    }
}

/// Orders columns time, tags (sorted), fields (sorted), keeping the first kind seen per name.
fn order_columns(columns: Vec<ColumnSpec>) -> Vec<ColumnSpec> {
    let mut seen = HashMap::new();
    for column in columns {
        seen.entry(column.name.clone()).or_insert(column);
    }
    let mut ordered: Vec<ColumnSpec> = seen.into_values().collect();
    ordered.sort_by(|left, right| {
        let rank = |kind: &ColumnKind| match kind {
            ColumnKind::Time => 0,
            ColumnKind::Tag => 1,
            ColumnKind::Field(_) => 2,
        };
        rank(&left.kind)
            .cmp(&rank(&right.kind))
            .then_with(|| left.name.cmp(&right.name))
    });
    ordered
}

/// What a node does, decided at start-up from its role and the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duty {
    /// Not clustered: ingest, flush and query.
    Standalone,
    /// The writer that won (or holds) the current epoch: ingest, flush and query.
    Primary,
    /// A writer that is not primary: forwards writes, answers queries from the catalog.
    Standby,
    /// Queries from the catalog; forwards writes.
    Reader,
    /// Forwards writes and queries (compaction comes later).
    Compactor,
}

/// A flush that did not commit.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// A newer epoch owns the catalog: this node must stop writing.
    #[error("{0}")]
    Fenced(String),
    /// Anything else; the rows stay buffered and the flush is retried.
    #[error("{0}")]
    Other(String),
}

impl FlushError {
    fn from_storage(table: &TableId, error: StorageError) -> Self {
        match error {
            StorageError::Catalog(fenced @ CatalogError::Fenced { .. }) => {
                FlushError::Fenced(fenced.to_string())
            }
            other => FlushError::Other(format!("flushing {table}: {other}")),
        }
    }
}

/// Runs a node until `shutdown` is cancelled or a fatal error occurs. A primary that learns
/// of a newer epoch steps down: its services stop and start again as a standby, in this
/// process and on the same HTTP listener (connections wait in its backlog meanwhile).
///
/// # Errors
/// Start-up failures (storage, catalog, WAL, listener) and fatal errors while running.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listen = config.listen_addr()?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("binding the HTTP API to {listen}"))?;
    listener
        .set_nonblocking(true)
        .context("setting the HTTP listener non-blocking")?;
    if let Some(path) = &config.server.port_file {
        let bound = listener.local_addr().context("reading the bound address")?;
        std::fs::write(path, bound.to_string())
            .with_context(|| format!("writing server.port_file {}", path.display()))?;
    }
    loop {
        let serving = listener
            .try_clone()
            .context("sharing the HTTP listener")
            .and_then(|listener| {
                TcpListener::from_std(listener).context("registering the HTTP listener")
            })?;
        match run_term(config.clone(), shutdown.clone(), serving).await? {
            Ended::Stopped => return Ok(()),
            Ended::SteppedDown if shutdown.is_cancelled() => return Ok(()),
            Ended::SteppedDown => info!("stepped down; starting again as a standby"),
        }
    }
}

/// How one term of the node's services ended.
enum Ended {
    /// Shutdown was asked for.
    Stopped,
    /// A newer epoch owns the catalog; the node starts again as a standby.
    SteppedDown,
}

/// Runs the node's services on `listener` until shutdown, a fatal error, or a step-down.
async fn run_term(
    config: Config,
    shutdown: CancellationToken,
    listener: TcpListener,
) -> anyhow::Result<Ended> {
    let node_id = config.cluster.node_id.clone();
    // First, so every crate's metric handles (some are looked up once, at open) are real.
    let metrics = m::install();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let storage = ObjectStorage::open(&config.storage).context("opening object storage")?;
    info!(storage = %storage.describe(), node_id = %node_id, "storage opened");
    // A reader never commits to the catalog log, and may have read-only credentials.
    if config.cluster.role != Role::Reader {
        storage
            .check_conditional_writes()
            .await
            .context("checking that the object store honours put-if-absent")?;
    }
    let auth = open_auth(&storage, &config, clock.clone()).await?;
    let cache = ObjectCache::new(&storage, config.query.cache_dir.clone())
        .context("preparing the query cache directory")?;
    let catalog = Catalog::open(storage.store().clone(), CatalogSettings::default())
        .await
        .context("loading the catalog")?;
    let mut allowed_directories = vec![config.query.cache_dir.clone()];
    if let Some(root) = storage.local_root() {
        allowed_directories.push(root.to_path_buf());
    }
    let engine = QueryEngine::new(QuerySettings {
        threads: config.query.threads,
        memory_limit: config.query.memory_limit.clone(),
        allowed_directories,
        max_result_bytes: Some(config.query.max_result_bytes.0),
    })
    .context("starting the query engine")?;
    let tls = match (&config.server.tls_cert_file, &config.server.tls_key_file) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    let bound: SocketAddr = listener.local_addr().context("reading the bound address")?;
    info!(address = %bound, tls = tls.is_some(), "http api listening");
    let cluster = Cluster::start(&config, bound, clock.clone()).await?;
    let forward_client = forward_client(&config)?;
    let stop = shutdown.child_token();
    let inner = Arc::new(NodeInner {
        node_id: node_id.clone(),
        buffers: Arc::new(Buffers::default()),
        engine: Arc::new(engine),
        metrics,
        auth,
        cluster,
        clock,
        forward_client,
        tls: tls.is_some(),
        duty: std::sync::RwLock::new(None),
        running: Mutex::new(Started::default()),
        started: Instant::now(),
        catalog_synced_from: AsyncMutex::new(None),
        query_permits: Arc::new(tokio::sync::Semaphore::new(config.query.max_concurrent)),
        compaction: OnceLock::new(),
        ingest_budget: crate::ingest::InflightBudget::new(config.ingest.max_inflight_bytes.0),
        storage,
        catalog,
        cache,
        writer: OnceLock::new(),
        replication: OnceLock::new(),
        follower: OnceLock::new(),
        epoch: OnceLock::new(),
        draining: AtomicBool::new(false),
        flush_round: AsyncMutex::new(()),
        encode_slots: Arc::new(tokio::sync::Semaphore::new(ENCODES_AT_ONCE)),
        fatal: Mutex::new(None),
        stepping_down: Mutex::new(None),
        write_gate: crate::switchover::WriteGate::default(),
        stop: stop.clone(),
        config,
    });
    let http_stop = CancellationToken::new();
    let http_task = {
        let app = crate::http::router(inner.clone());
        let http_stop = http_stop.clone();
        let limits = crate::server::Limits::from_settings(&inner.config.server);
        tokio::spawn(crate::server::serve(listener, tls, app, limits, http_stop))
    };

    match start_role(&inner).await {
        Ok(started) => *lock(&inner.running) = started,
        Err(error) => {
            http_stop.cancel();
            let _ = http_task.await;
            inner.cluster.leave(Duration::ZERO).await;
            return Err(error);
        }
    };
    // A writer gossips the epoch it writes, a follower the one it follows.
    let epoch = inner
        .epoch
        .get()
        .copied()
        .unwrap_or_else(|| inner.catalog.snapshot().epoch);
    let duty = inner.duty();
    inner.cluster.update(|info| {
        info.phase = arc_gossip::Phase::Ready;
        info.primary = matches!(duty, Some(Duty::Primary | Duty::Standalone));
        info.epoch = epoch;
    });
    info!(node_id = %inner.node_id, epoch, ?duty, "node ready");
    let notifier = Notifier::from_env().map(Arc::new);
    if let Some(notifier) = &notifier
        && let Err(error) = notifier.ready(&format!("serving on {bound}"))
    {
        warn!(%error, "systemd notify (READY=1) failed");
    }
    let watchdog = notifier.clone().and_then(|notifier| {
        let interval = Notifier::watchdog_interval()?;
        let inner = inner.clone();
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            watchdog_loop(inner, notifier, interval, stop).await
        }))
    });

    let flusher = {
        let inner = inner.clone();
        let stop = stop.clone();
        tokio::spawn(async move { flusher_loop(inner, stop).await })
    };
    let advertiser = {
        let inner = inner.clone();
        let stop = stop.clone();
        tokio::spawn(async move { advertise_loop(inner, stop).await })
    };
    // After readiness, so no job plans from a catalog the start-up has not settled.
    let compaction = crate::compaction::start(
        &inner,
        inner.storage.store().clone(),
        inner.catalog.clone(),
        &stop,
    );

    stop.cancelled().await;
    let handed_over = hand_over_before_stopping(&inner).await;
    let stepping_down = lock(&inner.stepping_down).is_some();
    inner.draining.store(true, Ordering::Release);
    if stepping_down || handed_over {
        info!("stepping down: stopping the writer, draining requests");
        // Writes waiting for acknowledgements that can no longer come get 503 now.
        stop_writer(&inner).await;
    } else {
        info!("stopping: draining requests and flushing buffers");
        if let Some(notifier) = &notifier
            && let Err(error) = notifier.stopping()
        {
            warn!(%error, "systemd notify (STOPPING=1) failed");
        }
    }
    http_stop.cancel();
    let shutdown_timeout = inner.config.server.shutdown_timeout.0;
    let _ = flusher.await;
    let _ = advertiser.await;
    if let Some(compaction) = compaction {
        compaction.stop().await;
    }
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
    let fatal = inner
        .fatal
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    // Peers learn at once that this node is leaving (they stop sending it writes) while the
    // last flush runs; gossip lingers a few heartbeats so the news spreads.
    let linger =
        arc_gossip::leave_linger(inner.config.cluster.heartbeat_interval.0).min(MAX_LEAVE_LINGER);
    let final_flush = async {
        // A deposed primary's flushes are void: its rows are the new primary's to flush.
        if fatal.is_none() && !stepping_down && !handed_over {
            match tokio::time::timeout(shutdown_timeout, inner.flush_all()).await {
                Ok(Ok(tables)) => info!(tables, "final flush done"),
                Ok(Err(error)) => {
                    warn!(%error, "final flush failed; rows stay in the WAL for replay");
                }
                Err(_) => warn!("final flush timed out; rows stay in the WAL for replay"),
            }
        }
    };
    tokio::join!(inner.cluster.leave(linger), final_flush);
    match tokio::time::timeout(shutdown_timeout, http_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => warn!(%error, "http server ended with an error"),
        Ok(Err(error)) => warn!(%error, "http server task failed"),
        Err(_) => warn!("http server did not drain in time"),
    }
    stop_writer(&inner).await;
    info!("node stopped");
    match fatal {
        Some(message) => Err(anyhow::anyhow!(message)),
        None if stepping_down => Ok(Ended::SteppedDown),
        None => Ok(Ended::Stopped),
    }
}

/// A clustered primary asked to stop (SIGTERM) first hands its epoch to an in-sync standby by
/// a planned switchover: the writes it admitted are answered, later ones get 503 and land on
/// the new primary, and no client is left with a write of unknown outcome. Stopping without it,
/// the standbys took over from a node that had left the gossip cluster while it still took
/// writes, and a reader answered those it had forwarded with 504. Returns whether it handed
/// over; without an eligible standby (or if a step fails) the node stops as before. Not with
/// `cluster.failover_enabled = false`: the epoch then moves only when asked for, and the node
/// comes back as primary.
async fn hand_over_before_stopping(inner: &NodeInner) -> bool {
    if !inner.cluster.is_clustered()
        || !inner.config.cluster.failover_enabled
        || inner.primary_parts().is_none()
        || lock(&inner.stepping_down).is_some()
        || lock(&inner.fatal).is_some()
    {
        return false;
    }
    // A third of the stop's budget: the drain and the final flush need the rest. Cut short, the
    // gate stays closed (nothing more is acknowledged) and the node stops as below.
    let bound = inner.config.server.shutdown_timeout.0 / 3;
    match tokio::time::timeout(bound, crate::switchover::run(inner, None)).await {
        Err(_) => {
            warn!(?bound, "stopping: the switchover did not finish in time");
            false
        }
        Ok(Ok(switched)) => {
            info!(
                new_primary = %switched.new_primary,
                epoch = switched.epoch,
                unavailable_ms = switched.unavailable.as_millis() as u64,
                "stopping: handed the epoch over"
            );
            true
        }
        Ok(Err(error)) => {
            info!(%error, "stopping without a switchover");
            false
        }
    }
}

/// Stops the WAL writer, the replication server and the acknowledger (writes still waiting
/// get 503), after the follower, whose promotion may be registering a writer.
async fn stop_writer(inner: &NodeInner) {
    if let Some(writer) = inner.writer.get() {
        writer.stop().await;
    }
    if let Some(follower) = inner.follower.get() {
        follower.wait_stopped().await;
    }
    let Started { writer, primary } = std::mem::take(&mut *lock(&inner.running));
    if let Some(writer) = writer {
        let thread = writer.thread;
        if tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_or(true, |joined| joined.is_err())
        {
            error!("wal writer thread panicked");
        }
        // Writes still waiting for their acknowledgement get 503 once the server is down.
        if let Some(primary) = primary {
            primary.shutdown().await;
        }
        if let Some(acker) = writer.acker
            && acker.await.is_err()
        {
            error!("the write acknowledger panicked");
        }
    }
}

/// Opens the token store; on the very first start of a cluster, creates the admin token and
/// prints it once to stderr (never to the log, which may be shipped elsewhere).
async fn open_auth(
    storage: &ObjectStorage,
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<AuthService>> {
    let settings = arc_auth::AuthSettings {
        enabled: config.auth.enabled,
        bootstrap_token: config.auth.bootstrap_token.clone(),
        cache_ttl: config.auth.cache_ttl.0,
        ..arc_auth::AuthSettings::default()
    };
    let (auth, bootstrap) = AuthService::open_with_clock(storage.store().clone(), settings, clock)
        .await
        .context("opening the API token store")?;
    if !config.auth.enabled {
        warn!(
            "AUTHENTICATION IS DISABLED (auth.enabled = false): every request is accepted without a token; keep the API on a trusted network"
        );
    }
    if let Some(token) = bootstrap.generated_token() {
        eprintln!(
            "arc-node: created the initial admin API token; it is shown only this once:\n\n    {}\n",
            token.expose_secret()
        );
        info!("initial admin API token created and printed to stderr");
    } else if bootstrap.created() {
        info!("initial admin API token created from auth.bootstrap_token");
    }
    Ok(auth)
}

/// How long a forwarded request may take end to end.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest a query waits to catch up with the catalog log before it runs. The log is a few
/// small reads; a store that does not answer them in this time is unreachable or nearly so, and
/// the object store client would retry for a minute or more. The query gets 503 instead.
const CATALOG_SYNC_BOUND: Duration = Duration::from_secs(5);
/// Upper bound of how long a leaving node keeps gossiping, whatever the heartbeat: once a few
/// peers know it left, they spread the news without it.
const MAX_LEAVE_LINGER: Duration = Duration::from_secs(10);

/// The client that forwards requests to other nodes; trusts `cluster.tls_ca_file` too.
fn forward_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(FORWARD_TIMEOUT);
    if let Some(path) = &config.cluster.tls_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading cluster.tls_ca_file {}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!(
                "parsing cluster.tls_ca_file {} as PEM certificates",
                path.display()
            )
        })?;
        anyhow::ensure!(
            !certificates.is_empty(),
            "cluster.tls_ca_file {} holds no certificate",
            path.display()
        );
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .context("building the http client for forwarded requests")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// What a role's start-up leaves running, for the stop sequence.
#[derive(Default)]
struct Started {
    /// The WAL writer thread (and acknowledger), when this node takes writes.
    writer: Option<writer::WriterTasks>,
    /// The replication server, on a clustered primary.
    primary: Option<crate::replication::Primary>,
}

/// What a writer's start-up decided.
enum WriterStart {
    /// This node is primary: the writer runs.
    Primary(Started),
    /// Another writer is primary; the WAL (opened and recovered, when this node follows the
    /// primary's stream) is the standby's own copy.
    Standby(Option<Wal>),
}

/// Does what the role needs before the node is ready.
async fn start_role(inner: &Arc<NodeInner>) -> anyhow::Result<Started> {
    let clustered = inner.cluster.is_clustered();
    let replicated = clustered && inner.config.cluster.replication_enabled;
    let duty = match inner.config.cluster.role {
        Role::Standalone => Duty::Standalone,
        Role::Writer => Duty::Primary,
        Role::Reader => Duty::Reader,
        Role::Compactor => Duty::Compactor,
    };
    let (duty, started) = match duty {
        Duty::Standalone | Duty::Primary => match start_writer(inner, clustered).await? {
            WriterStart::Primary(started) => (duty, started),
            WriterStart::Standby(wal) => {
                if let Some(wal) = wal.filter(|_| replicated) {
                    let follower =
                        crate::replication::Follower::start(inner, Some(wal), &inner.stop);
                    let _ = inner.follower.set(follower);
                }
                (Duty::Standby, Started::default())
            }
        },
        _ => {
            inner
                .catalog
                .refresh()
                .await
                .context("reading the catalog log")?;
            if duty == Duty::Reader && replicated {
                let follower = crate::replication::Follower::start(inner, None, &inner.stop);
                let _ = inner.follower.set(follower);
            }
            (duty, Started::default())
        }
    };
    inner.set_duty(duty);
    Ok(started)
}

/// The WAL settings of `[wal]`.
pub(crate) fn wal_settings(config: &Config) -> WalSettings {
    WalSettings {
        dir: config.wal.directory.clone(),
        sync_mode: config.wal.sync_mode,
        segment_size_bytes: config.wal.max_size_mb.saturating_mul(1024 * 1024),
        truncate_corrupt: config.wal.truncate_corrupt,
    }
}

/// Opens (and recovers) a standby's WAL, which continues the primary's log at the primary's
/// LSNs; `None` when replication is off (the WAL is then left untouched).
async fn open_standby_wal(inner: &NodeInner) -> anyhow::Result<Option<Wal>> {
    if !inner.config.cluster.replication_enabled {
        return Ok(None);
    }
    let settings = wal_settings(&inner.config);
    let (wal, report) = tokio::task::spawn_blocking(move || Wal::open(settings, Lsn(1)))
        .await
        .context("wal recovery task")?
        .context("opening the standby's write-ahead log")?;
    if let Some(truncation) = &report.truncated {
        warn!(?truncation, "wal recovery truncated a torn or corrupt tail");
    }
    Ok(Some(wal))
}

/// Takes the epoch `claim` asks for; returns `None` when this writer ends up standby (losing a
/// put-if-absent race means someone else's promote landed first).
async fn claim_epoch(
    inner: &NodeInner,
    claim: &Claim,
    last_lsn: u64,
) -> anyhow::Result<Option<u64>> {
    let expected = match claim {
        Claim::Standby { .. } => return Ok(None),
        Claim::Always => None,
        Claim::Bootstrap => Some(0),
        Claim::Reclaim { current } => Some(*current),
    };
    let in_sync = vec![inner.node_id.clone()];
    let promoted = match expected {
        None => inner.catalog.promote(&inner.node_id, last_lsn).await,
        Some(expected) => {
            inner
                .catalog
                .promote_if(expected, &inner.node_id, last_lsn, in_sync)
                .await
        }
    };
    let bootstrap = *claim == Claim::Bootstrap;
    match promoted {
        Ok(epoch) => {
            if bootstrap {
                info!(epoch, "won the bootstrap race: primary writer");
                m::record_bootstrap("won");
            }
            Ok(Some(epoch))
        }
        Err(CatalogError::Fenced { current_epoch, .. }) if *claim != Claim::Always => {
            let primary = inner.catalog.snapshot().primary.clone().unwrap_or_default();
            info!(epoch = current_epoch, %primary, "another writer promoted first: standby writer");
            if bootstrap {
                m::record_bootstrap("lost");
            }
            Ok(None)
        }
        Err(error) => Err(error).context("appending the promote record to the catalog"),
    }
}

/// How a writer claims the epoch at start.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// Standalone: always the next epoch, fencing any previous incarnation.
    Always,
    /// No `promote` in the catalog yet: race the other writers for epoch 1 (put-if-absent;
    /// exactly one wins).
    Bootstrap,
    /// The catalog names this node primary at `current`: take the next epoch, fencing the
    /// previous incarnation.
    Reclaim {
        /// The catalog's epoch.
        current: u64,
    },
    /// Another node is primary: stay standby (failover is decided elsewhere).
    Standby {
        /// The primary the catalog names.
        primary: String,
        /// Its epoch.
        epoch: u64,
    },
}

/// Decides how a writer starts from the catalog alone (`epoch` 0: never promoted).
fn claim_for(clustered: bool, epoch: u64, primary: Option<&str>, me: &str) -> Claim {
    match (clustered, epoch, primary) {
        (false, _, _) => Claim::Always,
        (true, 0, _) => Claim::Bootstrap,
        (true, current, Some(node)) if node == me => Claim::Reclaim { current },
        (true, epoch, primary) => Claim::Standby {
            primary: primary.unwrap_or_default().to_string(),
            epoch,
        },
    }
}

/// Recovers the WAL, claims the epoch, replays, and starts the writer thread (and, clustered,
/// the replication server); or, when another writer is primary, returns the standby's WAL to
/// follow the primary's stream with.
async fn start_writer(inner: &Arc<NodeInner>, clustered: bool) -> anyhow::Result<WriterStart> {
    if clustered {
        inner
            .catalog
            .refresh()
            .await
            .context("reading the catalog log")?;
    }
    let snapshot = inner.catalog.snapshot();
    let claim = claim_for(
        clustered,
        snapshot.epoch,
        snapshot.primary.as_deref(),
        &inner.node_id,
    );
    let wal_dir = inner.config.wal.directory.clone();
    let marker = wal_owner::read(&wal_dir).unwrap_or_else(|error| {
        warn!(%error, "cannot read the wal owner marker");
        None
    });
    if let wal_owner::Finding::OtherNode(owner) = wal_owner::judge(marker.as_ref(), &inner.node_id)
    {
        error!(
            wal_dir = %wal_dir.display(),
            written_by = %owner.node_id,
            written_epoch = owner.epoch,
            node_id = %inner.node_id,
            "THE WRITE-AHEAD LOG WAS WRITTEN BY ANOTHER NODE ID: its unflushed entries were acknowledged by {} at epoch {}; check cluster.node_id (it defaults to the host name)",
            owner.node_id,
            owner.epoch
        );
    }
    if let Claim::Standby { primary, epoch } = &claim {
        info!(epoch, %primary, "the catalog names another primary: standby writer");
        report_standby_wal(
            &wal_dir,
            marker.as_ref(),
            &inner.node_id,
            inner.config.cluster.replication_enabled,
        );
        return Ok(WriterStart::Standby(open_standby_wal(inner).await?));
    }
    let max_flushed = snapshot.max_flushed_lsn();
    let wal_settings = wal_settings(&inner.config);
    let (wal, report) =
        tokio::task::spawn_blocking(move || Wal::open(wal_settings, Lsn(max_flushed + 1)))
            .await
            .context("wal recovery task")?
            .context("opening the write-ahead log")?;
    if let Some(truncation) = &report.truncated {
        warn!(?truncation, "wal recovery truncated a torn or corrupt tail");
    }
    let last_lsn = wal.next_lsn().0.saturating_sub(1);
    failpoints::hit("writer-before-promote");
    let Some(epoch) = claim_epoch(inner, &claim, last_lsn).await? else {
        let wal = inner.config.cluster.replication_enabled.then_some(wal);
        return Ok(WriterStart::Standby(wal));
    };
    let _ = inner.epoch.set(epoch);
    let owner = wal_owner::WalOwner {
        node_id: inner.node_id.clone(),
        epoch,
    };
    wal_owner::write(&wal_dir, &owner).context("recording the wal owner")?;
    // Replay is filtered by the catalog as of the promote, not as of start: a flush of the
    // previous incarnation can land between the two (a late PUT), and rows it covers must not
    // be flushed again. Flushes of older epochs landing after the promote are void.
    let snapshot = inner.catalog.snapshot();
    let max_flushed = snapshot.max_flushed_lsn();
    anyhow::ensure!(
        max_flushed < wal.next_lsn().0,
        "the catalog has flushed up to lsn {max_flushed} but the write-ahead log in {} ends \
         before lsn {}: new writes would reuse flushed LSNs; restart to recover from the \
         current catalog",
        inner.config.wal.directory.display(),
        wal.next_lsn().0
    );
    info!(
        epoch,
        segments = report.segments,
        entries = report.entries,
        "promoted; replaying wal"
    );

    let (wal, schemas, replayed) = replay_above_catalog(inner, wal, snapshot).await?;
    info!(replayed, "wal replay done");

    Ok(WriterStart::Primary(start_primary(
        inner, wal, epoch, schemas, clustered,
    )?))
}

/// Starts what a primary runs once its WAL is replayed: the replication server (clustered,
/// with replication enabled) and the WAL writer.
fn start_primary(
    inner: &Arc<NodeInner>,
    wal: Wal,
    epoch: u64,
    schemas: SchemaRegistry,
    clustered: bool,
) -> anyhow::Result<Started> {
    let primary = if clustered && inner.config.cluster.replication_enabled {
        Some(crate::replication::Primary::start(
            inner,
            epoch,
            wal.next_lsn().0,
        )?)
    } else {
        None
    };
    let replication = primary.as_ref().map(|primary| {
        let handle = primary.handle();
        let _ = inner.replication.set(handle.clone());
        let lag_limit = inner.config.cluster.replication_lag_limit.0;
        writer::Replication {
            handle,
            // Long enough for a stalled standby to be removed from the in-sync set (one lag
            // limit, then a catalog commit) and the write acknowledged without it.
            ack_timeout: (lag_limit * 2).max(Duration::from_secs(10)),
        }
    });
    let (handle, tasks) = writer::start(WriterParts {
        wal,
        epoch,
        schemas,
        buffers: inner.buffers.clone(),
        max_buffer_rows: inner.config.ingest.max_buffer_size,
        replication,
    })
    .context("starting the wal writer thread")?;
    let _ = inner.writer.set(handle);
    Ok(Started {
        writer: Some(tasks),
        primary,
    })
}

/// Makes this standby the primary of `epoch`, whose promote record (fencing the previous
/// epoch at this node's durable LSN) has just been committed. The WAL continues the same log
/// above everything flushed (read after the promote landed, so no older epoch's flush can
/// hide rows); the rows shown as a standby are replayed from it instead, because it also holds
/// the entries above the old primary's commit LSN, which this epoch now owns.
///
/// # Errors
/// When the WAL cannot be reopened or replayed, or the writer cannot start: the node then
/// stops (it holds the epoch and cannot serve it).
pub(crate) async fn take_over(inner: &Arc<NodeInner>, wal: Wal, epoch: u64) -> anyhow::Result<()> {
    inner
        .catalog
        .refresh()
        .await
        .context("reading the catalog log after the promote")?;
    let snapshot = inner.catalog.snapshot();
    let max_flushed = snapshot.max_flushed_lsn();
    let wal = if wal.next_lsn().0 <= max_flushed {
        drop(wal);
        let settings = wal_settings(&inner.config);
        tokio::task::spawn_blocking(move || Wal::open(settings, Lsn(max_flushed + 1)))
            .await
            .context("wal reopen task")?
            .context("reopening the write-ahead log above the flushed LSNs")?
            .0
    } else {
        wal
    };
    anyhow::ensure!(
        inner.epoch.set(epoch).is_ok(),
        "this node already wrote under epoch {:?}",
        inner.epoch.get()
    );
    wal_owner::write(
        &inner.config.wal.directory,
        &wal_owner::WalOwner {
            node_id: inner.node_id.clone(),
            epoch,
        },
    )
    .context("recording the wal owner")?;
    let shown = inner.buffers.discard_flushed(|_| u64::MAX);
    drop(tokio::task::spawn_blocking(move || drop(shown)));
    let (wal, schemas, replayed) = replay_above_catalog(inner, wal, snapshot).await?;
    let started = start_primary(inner, wal, epoch, schemas, true)?;
    *lock(&inner.running) = started;
    inner.set_duty(Duty::Primary);
    inner.cluster.update(|info| {
        info.primary = true;
        info.epoch = epoch;
    });
    info!(epoch, replayed, "promoted: primary writer");
    Ok(())
}

/// Reports the entries a standby writer finds in its own WAL at start. Following the
/// primary's stream reconciles a WAL this node wrote itself (as primary, or as a standby):
/// entries above the new epoch's fence are set aside, and every one below it the new primary
/// holds too, as it was in sync. Without the stream, or in a WAL another node id wrote, the
/// entries may be acknowledged rows that nothing else holds and no flush covers: say so
/// loudly, and leave every byte in place.
fn report_standby_wal(
    wal_dir: &std::path::Path,
    marker: Option<&wal_owner::WalOwner>,
    node_id: &str,
    replicated: bool,
) {
    let summary = match arc_wal::inspect(wal_dir) {
        Ok(summary) => summary,
        Err(error) => {
            warn!(wal_dir = %wal_dir.display(), %error, "cannot inspect the standby's wal");
            return;
        }
    };
    if summary.entry_bytes == 0 {
        return;
    }
    m::record_standby_wal_bytes(summary.entry_bytes);
    let (written_by, written_epoch) = marker.map_or(("unknown", 0), |owner| {
        (owner.node_id.as_str(), owner.epoch)
    });
    if replicated && marker.is_none_or(|owner| owner.node_id == node_id) {
        info!(
            wal_dir = %wal_dir.display(),
            segments = summary.segments,
            entry_bytes = summary.entry_bytes,
            last_primary_epoch = written_epoch,
            "the standby's write-ahead log holds entries of its own; following the primary's stream reconciles them"
        );
        return;
    }
    error!(
        wal_dir = %wal_dir.display(),
        segments = summary.segments,
        entry_bytes = summary.entry_bytes,
        written_by,
        written_epoch,
        "THIS STANDBY WRITER'S WRITE-AHEAD LOG HOLDS ENTRIES (written by {written_by} at epoch {written_epoch}) that may be acknowledged, unflushed rows; they are kept untouched: do not delete {}",
        wal_dir.display()
    );
}

/// Replays `wal` into the buffers above each table's flushed LSN in `snapshot`, with the
/// catalog's schemas as the known ones; on a blocking thread.
async fn replay_above_catalog(
    inner: &Arc<NodeInner>,
    wal: Wal,
    snapshot: Arc<CatalogState>,
) -> anyhow::Result<(Wal, SchemaRegistry, u64)> {
    let mut schemas: SchemaRegistry = HashMap::new();
    for (table, state) in &snapshot.tables {
        let known = schemas.entry(table.clone()).or_default();
        for column in &state.columns {
            known.insert(column.name.clone(), column.kind);
        }
    }
    let replay_inner = inner.clone();
    tokio::task::spawn_blocking(move || replay(&replay_inner, wal, schemas, &snapshot))
        .await
        .context("wal replay task")?
}

fn replay(
    inner: &NodeInner,
    wal: Wal,
    mut schemas: SchemaRegistry,
    snapshot: &CatalogState,
) -> anyhow::Result<(Wal, SchemaRegistry, u64)> {
    let mut replayed = 0u64;
    for entry in wal
        .read_from(Lsn(0))
        .context("reading the wal for replay")?
    {
        let entry = entry.context("reading a wal entry during replay")?;
        let lsn = entry.lsn.0;
        let writes = payload::decode(&entry.payload)
            .with_context(|| format!("decoding wal entry lsn {lsn}"))?;
        let pending: Vec<TableWrite> = writes
            .into_iter()
            .filter(|write| {
                let flushed = snapshot
                    .tables
                    .get(&write.table)
                    .map_or(0, |state| state.flushed_lsn);
                lsn > flushed
            })
            .collect();
        if pending.is_empty() {
            continue;
        }
        // Replayed writes were accepted once; a conflict here can only come from a changed
        // catalog and is logged, not fatal, so acknowledged rows are never dropped.
        match writer::check_schema(&schemas, &pending) {
            Ok(()) => {
                writer::learn_schema(&mut schemas, &pending);
            }
            Err(message) => warn!(lsn, %message, "schema conflict during replay"),
        }
        replayed += pending
            .iter()
            .map(|w| w.batch.num_rows() as u64)
            .sum::<u64>();
        inner
            .buffers
            .apply(lsn, pending, inner.config.ingest.max_buffer_size);
        // A WAL larger than the buffer bound (left by a long store outage) drains in bounded
        // chunks: flush what replay holds before reading on, so the start never needs memory
        // for the whole log. Half the bound leaves room for the writes that follow the start.
        if inner.buffers.total_bytes() >= inner.config.ingest.max_buffered_bytes.0 / 2 {
            let buffered = inner.buffers.total_bytes();
            info!(
                lsn,
                buffered,
                "replay holds half of ingest.max_buffered_bytes; flushing before reading on"
            );
            tokio::runtime::Handle::current()
                .block_on(inner.flush_all())
                .with_context(|| {
                    format!("flushing replayed rows up to lsn {lsn} (the write-ahead log holds more than ingest.max_buffered_bytes)")
                })?;
        }
    }
    Ok((wal, schemas, replayed))
}

/// Pings the systemd watchdog while the WAL writer is healthy, so systemd restarts a node
/// whose write path is wedged rather than one that is merely busy.
async fn watchdog_loop(
    inner: Arc<NodeInner>,
    notifier: Arc<Notifier>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let healthy = inner
            .writer
            .get()
            .is_some_and(|writer| !writer.is_poisoned());
        if healthy && let Err(error) = notifier.watchdog() {
            warn!(%error, "systemd notify (WATCHDOG=1) failed");
        }
    }
}

/// Keeps what this node advertises current: its durable LSN every heartbeat, its health
/// every `cluster.health_check_interval`.
async fn advertise_loop(inner: Arc<NodeInner>, stop: CancellationToken) {
    let mut heartbeat = tokio::time::interval(inner.config.cluster.heartbeat_interval.0);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = tokio::time::interval(inner.config.cluster.health_check_interval.0);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Peers reachable from the seeds show up (with their role) within a few gossip rounds.
    let settled = inner.config.cluster.heartbeat_interval.0 * 5;
    let mut warned_alone = !inner.cluster.is_clustered();
    let thresholds = crate::health::Thresholds {
        replication_lag: inner.config.cluster.replication_lag_limit.0,
        ..crate::health::Thresholds::default()
    };
    // A probe may take up to one check interval, within sane bounds.
    let probe_timeout = inner
        .config
        .cluster
        .health_check_interval
        .0
        .clamp(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = health.tick() => {
                let wal_dir = &inner.config.wal.directory;
                let mut measured = crate::health::measure(&inner.storage, wal_dir, probe_timeout).await;
                // A follower's lag; a promoted standby keeps its follower's last progress,
                // which no longer means anything.
                measured.replication_lag = inner
                    .follower
                    .get()
                    .filter(|_| !duty_is(&inner, Duty::Primary))
                    .map(|follower| Duration::from_millis(follower.progress().freshness_ms()));
                let mut report = crate::health::assess(&measured, &thresholds);
                crate::health::count_unhealthy(&mut report, &inner.cluster.local_info().health);
                m::record_health(&report);
                if report.status != arc_gossip::HealthStatus::Healthy {
                    warn!(status = %report.status, score = report.score, reasons = ?report.reasons, "health check");
                }
                inner.cluster.update(|info| info.health = report);
            }
            _ = heartbeat.tick() => {
                if duty_is(&inner, Duty::Primary) {
                    check_deposed(&inner).await;
                    if !warned_alone && inner.started.elapsed() >= settled {
                        warned_alone = true;
                        let view = inner.cluster.view();
                        let alone = !view.nodes.iter().any(|node| {
                            !node.is_self && node.info.role == arc_gossip::Role::Writer
                        });
                        if alone {
                            warn!("this primary is the only writer in the cluster: if it fails, writes stop until it returns (start a standby writer to fail over)");
                        }
                    }
                }
                // A standby gossips what its WAL holds, a reader what it shows.
                let durable = match (inner.writer.get(), inner.follower.get()) {
                    (Some(writer), _) => Some(writer.next_lsn().saturating_sub(1)),
                    (None, Some(follower)) => {
                        let progress = follower.progress();
                        Some(if duty_is(&inner, Duty::Standby) { progress.durable } else { progress.visible })
                    }
                    (None, None) => None,
                };
                if let Some(durable) = durable
                    && inner.cluster.local_info().durable_lsn != durable
                {
                    inner.cluster.update(|info| info.durable_lsn = durable);
                }
            }
        }
    }
}

/// A primary reads the catalog, and steps down if a newer epoch holds it, when gossip shows a
/// primary of a newer epoch, or when an in-sync standby has not confirmed anything for the
/// failover timeout (it may be following a new primary the partition hides from gossip).
/// Sooner than its next flush or ISR commit would be fenced, so writes held on it get their
/// 503 (and clients retry on the new primary) at once.
async fn check_deposed(inner: &NodeInner) {
    let Some(own) = inner.epoch.get().copied() else {
        return;
    };
    let newer = inner
        .cluster
        .view()
        .primary()
        .filter(|node| !node.is_self && node.info.epoch > own)
        .map(|node| {
            format!(
                "gossip shows {} primary at epoch {}",
                node.id, node.info.epoch
            )
        });
    let silent_ms =
        u64::try_from(inner.config.cluster.failover_timeout.0.as_millis()).unwrap_or(u64::MAX);
    let silent = || {
        let status = inner.replication.get()?.status();
        status
            .committed_isr
            .iter()
            .find(|node| {
                !status
                    .followers
                    .iter()
                    .any(|follower| &follower.node_id == *node && follower.lag_ms < silent_ms)
            })
            .map(|node| format!("in-sync standby {node} confirmed nothing for {silent_ms} ms"))
    };
    let Some(why) = newer.or_else(silent) else {
        return;
    };
    if let Err(error) = inner.catalog.refresh().await {
        warn!(%error, %why, "reading the catalog to see whether a newer epoch exists");
        return;
    }
    let snapshot = inner.catalog.snapshot();
    if snapshot.epoch > own {
        inner.step_down(format!(
            "the catalog's epoch is {} (primary {}), this node's {own} ({why})",
            snapshot.epoch,
            snapshot.primary.as_deref().unwrap_or("unknown")
        ));
    }
}

fn duty_is(inner: &NodeInner, duty: Duty) -> bool {
    inner.duty() == Some(duty)
}

/// Chunks of one table encoded at once while the oldest uploads and commits. One chunk at a
/// time flushed 1.23M rows/s on 2 cores under 2.1M rows/s of line protocol, and the buffers
/// hit `ingest.max_buffered_bytes` within 30 s; two flushed 1.75M, three 1.87M (BENCHMARKS.md).
const FLUSH_PIPELINE: usize = 3;

/// Tables flushed at once. Their catalog commits are group-committed (one record for every
/// flush waiting, `Catalog::commit_flush`), so many small tables no longer flush one commit
/// (a put and a list in the store) after the other; and their uploads overlap. Waiting on the
/// store costs little, so this is well above the cores; encoding is bounded apart.
const FLUSH_TABLES_AT_ONCE: usize = 16;

/// Flush chunks encoded at once, all tables together: enough for one table's pipeline
/// ([`FLUSH_PIPELINE`]) and another table, on two cores.
const ENCODES_AT_ONCE: usize = 4;

/// One chunk of a flush round, being encoded.
struct EncodeJob {
    /// The frozen chunk's id, for [`Buffers::complete`].
    id: u64,
    rows: u64,
    meta: FlushMeta,
    started: Instant,
    encoded: tokio::task::JoinHandle<Result<Vec<arc_storage::EncodedObject>, StorageError>>,
}

async fn flusher_loop(inner: Arc<NodeInner>, stop: CancellationToken) {
    let max_age = Duration::from_millis(inner.config.ingest.max_buffer_age_ms);
    let tick = (max_age / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Read each turn: a standby gets its writer when it is promoted.
        let writer = inner.writer.get().cloned();
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = interval.tick() => {}
            _ = async {
                match &writer {
                    Some(writer) => writer.flush_wanted().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        if let Some(writer) = &writer
            && writer.is_poisoned()
        {
            let what = if writer.has_died() {
                "the write-ahead log writer thread died"
            } else {
                "the write-ahead log failed"
            };
            inner.fail(format!("{what}; restart to recover"));
            break;
        }
        inner.flush_due().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_claim_the_epoch_by_role_and_catalog() {
        assert_eq!(claim_for(false, 0, None, "a"), Claim::Always);
        assert_eq!(claim_for(false, 7, Some("b"), "a"), Claim::Always);
        assert_eq!(claim_for(true, 0, None, "a"), Claim::Bootstrap);
        assert_eq!(
            claim_for(true, 3, Some("a"), "a"),
            Claim::Reclaim { current: 3 }
        );
        assert_eq!(
            claim_for(true, 3, Some("b"), "a"),
            Claim::Standby {
                primary: "b".into(),
                epoch: 3
            }
        );
    }
}
