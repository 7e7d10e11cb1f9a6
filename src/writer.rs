//! The WAL writer: one dedicated thread that owns the WAL and turns concurrent write requests
//! into group commits.
//!
//! Each turn of its loop takes every request waiting in the channel, checks each request's
//! columns against the known table schemas (serially, so two concurrent requests can never
//! give one column two types), appends the accepted ones, makes them durable with one
//! `sync()`, applies them to the table buffers in LSN order, and only then answers. An answer
//! of `Ok(lsn)` therefore means durable under `wal.sync_mode` and visible to the next query.
//! A failed sync poisons the writer: the state of the file is unknown, so every later request
//! is refused (503) until the node restarts and recovery truncates what is not intact.
//!
//! The thread ends when every [`WriterHandle`] is dropped or on [`WriterHandle::shutdown`]; it
//! answers what it has taken before it stops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use arc_storage::{ColumnKind, TableId};
use arc_wal::replication::ReplicationHandle;
use arc_wal::{Epoch, Wal};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{error, info};

use crate::buffers::Buffers;
use crate::ingest::TableWrite;
use crate::metrics as m;
use crate::payload;

/// A write appended to the WAL and waiting for the group's sync: its LSN, its rows, its WAL
/// payload (streamed to followers) and where to send the outcome.
struct Accepted {
    lsn: u64,
    writes: Vec<TableWrite>,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<Written, WriteError>>,
}

/// Most requests one group commit takes.
const MAX_GROUP: usize = 4096;

/// An acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The LSN of its WAL entry.
    pub lsn: u64,
    /// How many in-sync standbys had fsynced it when it was acknowledged; `None` when this
    /// node does not replicate (durable in the local WAL only).
    pub replicas: Option<usize>,
}

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The write conflicts with the table's schema (a column with another type): 400.
    #[error("{0}")]
    Conflict(String),
    /// The WAL cannot take writes (failed sync, shutting down): 503.
    #[error("write-ahead log unavailable: {0}")]
    Unavailable(String),
    /// The payload could not be encoded: 500.
    #[error("{0}")]
    Internal(String),
    /// The request's rows do not fit in one WAL entry: 413. An input error, never a WAL failure.
    #[error("{0}")]
    TooLarge(String),
}

enum Command {
    Write {
        writes: Vec<TableWrite>,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Written, WriteError>>,
    },
    Truncate(u64),
    Stop,
}

/// The column kinds of every known table, kept by the writer thread.
pub type SchemaRegistry = HashMap<TableId, TableColumns>;

/// Sends writes to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    poisoned: AtomicBool,
    /// The thread ended without being asked to (a panic): nothing will answer writes again.
    died: AtomicBool,
    next_lsn: AtomicU64,
    /// Bytes the WAL's segments take on disk, as of the last group commit or truncation.
    wal_bytes: AtomicU64,
    /// The first LSN not yet applied to the buffers: with replication, durable entries wait
    /// there for their acknowledgement, and the WAL must keep them.
    unapplied_from: AtomicU64,
    /// Wakes the flusher when a table's buffer is full.
    flush_wanted: Notify,
    /// The schemas as the writer thread knows them.
    known: KnownSchemas,
}

/// Everything the writer thread needs.
pub struct WriterParts {
    /// The opened, recovered WAL.
    pub wal: Wal,
    /// Epoch stamped on every entry.
    pub epoch: u64,
    /// Known schemas (from the catalog and replay).
    pub schemas: SchemaRegistry,
    /// Where acknowledged rows go.
    pub buffers: Arc<Buffers>,
    /// `ingest.max_buffer_size`.
    pub max_buffer_rows: u64,
    /// The primary's replication: entries are published to followers after each sync, and
    /// writes are acknowledged (and applied) once the in-sync standbys have them. `None`:
    /// acknowledged after the local sync.
    pub replication: Option<Replication>,
}

/// What the writer needs of the replication server.
pub struct Replication {
    /// The server's handle.
    pub handle: ReplicationHandle,
    /// A write not acknowledged within this gets 503 (it stays in the WAL and is applied
    /// once acknowledged, so a retry may store its rows twice, as with any lost answer).
    pub ack_timeout: std::time::Duration,
}

/// The writer thread and, with replication, the task that acknowledges writes.
pub struct WriterTasks {
    /// The WAL writer thread.
    pub thread: JoinHandle<()>,
    /// Applies and answers writes once acknowledged (replication only); ends after the
    /// thread, once the replication server has stopped or everything was answered.
    pub acker: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the writer thread.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn start(mut parts: WriterParts) -> std::io::Result<(WriterHandle, WriterTasks)> {
    let (tx, rx) = mpsc::channel(8192);
    let shared = Arc::new(Shared {
        poisoned: AtomicBool::new(false),
        died: AtomicBool::new(false),
        next_lsn: AtomicU64::new(parts.wal.next_lsn().0),
        wal_bytes: AtomicU64::new(parts.wal.disk_usage_bytes()),
        unapplied_from: AtomicU64::new(parts.wal.next_lsn().0),
        flush_wanted: Notify::new(),
        known: KnownSchemas::default(),
    });
    let acker = parts.replication.take().map(|replication| {
        let publisher = replication.handle.clone();
        let (groups_tx, groups_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(acknowledge(
            groups_rx,
            replication,
            parts.buffers.clone(),
            parts.max_buffer_rows,
            shared.clone(),
        ));
        ((publisher, groups_tx), task)
    });
    let (groups, acker) = match acker {
        Some((groups, task)) => (Some(groups), Some(task)),
        None => (None, None),
    };
    let thread_shared = shared.clone();
    let join = std::thread::Builder::new()
        .name("arc-wal-writer".into())
        .spawn(move || {
            let mut exit = ExitGuard {
                shared: thread_shared.clone(),
                asked: false,
            };
            run(parts, rx, groups, thread_shared);
            exit.asked = true;
        })?;
    Ok((
        WriterHandle { tx, shared },
        WriterTasks {
            thread: join,
            acker,
        },
    ))
}

/// With replication: waits until each group commit is acknowledged (every in-sync standby
/// fsynced it), then applies its rows to the buffers in LSN order and answers its writes. A
/// write is thus visible only once acknowledged, and never before its standbys have it.
async fn acknowledge(
    mut groups: mpsc::UnboundedReceiver<Vec<Accepted>>,
    replication: Replication,
    buffers: Arc<Buffers>,
    max_buffer_rows: u64,
    shared: Arc<Shared>,
) {
    let handle = replication.handle;
    let mut closed = false;
    while let Some(group) = groups.recv().await {
        let Some(last) = group.last().map(|accepted| accepted.lsn) else {
            continue;
        };
        let started = Instant::now();
        let mut replies = Vec::with_capacity(group.len());
        let mut rows = Vec::with_capacity(group.len());
        for accepted in group {
            replies.push((accepted.lsn, accepted.reply));
            rows.push((accepted.lsn, accepted.writes));
        }
        if !closed {
            let wait = handle.wait_acknowledged(arc_wal::Lsn(last));
            tokio::pin!(wait);
            match tokio::time::timeout(replication.ack_timeout, &mut wait).await {
                Ok(result) => closed = result.is_err(),
                Err(_) => {
                    m::record_ack_wait("timeout", started.elapsed());
                    let message = format!(
                        "the write is durable on this node but the in-sync standbys did not \
                    acknowledge it within {:?}; it is kept and may become visible, so a \
                    retry may store its rows twice",
                        replication.ack_timeout
                    );
                    for (_, reply) in replies.drain(..) {
                        let _ = reply.send(Err(WriteError::Unavailable(message.clone())));
                    }
                    // The rows must still be applied in LSN order once acknowledged.
                    closed = wait.await.is_err();
                }
            }
        }
        if closed {
            // The replication server stopped (the node is stopping): whether these writes
            // reached the standbys is unknown, so they are not acknowledged. They stay in the
            // WAL and the next start replays them.
            for (_, reply) in replies {
                let _ = reply.send(Err(WriteError::Unavailable(
                    "the node is stopping; the write was not acknowledged".into(),
                )));
            }
            continue;
        }
        if !replies.is_empty() {
            m::record_ack_wait("ok", started.elapsed());
        }
        let replicas = handle.status().committed_isr.len();
        let mut wake_flusher = false;
        for (lsn, writes) in rows {
            wake_flusher |= !buffers.apply(lsn, writes, max_buffer_rows).is_empty();
        }
        shared
            .unapplied_from
            .store(last.saturating_add(1), Ordering::Release);
        for (lsn, reply) in replies {
            let _ = reply.send(Ok(Written {
                lsn,
                replicas: Some(replicas),
            }));
        }
        if wake_flusher {
            shared.flush_wanted.notify_one();
        }
    }
}

impl WriterHandle {
    /// The schemas the writer thread knows, as it last published them.
    pub fn known_schemas(&self) -> &KnownSchemas {
        &self.shared.known
    }

    /// Makes the writes of one request durable and visible; returns the LSN of its WAL entry.
    ///
    /// # Errors
    /// [`WriteError::Conflict`] for a schema conflict, [`WriteError::Unavailable`] when the WAL
    /// cannot take writes.
    pub async fn write(&self, writes: Vec<TableWrite>) -> Result<Written, WriteError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(WriteError::Unavailable("a previous sync failed".into()));
        }
        // Encoding happens here, on the request's task, so the single writer thread only
        // checks schemas and copies bytes.
        let payload =
            payload::encode(&writes).map_err(|error| WriteError::Internal(error.to_string()))?;
        if payload.len() > arc_wal::MAX_PAYLOAD_BYTES {
            return Err(too_large(payload.len()));
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Write {
                writes,
                payload,
                reply,
            })
            .await
            .map_err(|_| WriteError::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteError::Unavailable("the writer stopped before answering".into()))?
    }

    /// Asks the writer to delete WAL segments entirely below `lsn` (already flushed).
    pub async fn truncate_below(&self, lsn: u64) {
        // A closed channel means the node is stopping; segments are then cleaned at next start.
        let _ = self.tx.send(Command::Truncate(lsn)).await;
    }

    /// Asks the writer thread to stop once it has answered what it already took; later writes
    /// get [`WriteError::Unavailable`].
    pub async fn stop(&self) {
        let _ = self.tx.send(Command::Stop).await;
    }

    /// Bytes the WAL's segments take on disk (as of the last group commit or truncation).
    pub fn wal_bytes(&self) -> u64 {
        self.shared.wal_bytes.load(Ordering::Relaxed)
    }

    /// Returns the LSN the next write will get.
    pub fn next_lsn(&self) -> u64 {
        self.shared.next_lsn.load(Ordering::Acquire)
    }

    /// Returns the first LSN not yet applied to the buffers (durable entries waiting for their
    /// acknowledgement are not): WAL segments below it and below the buffers' low watermark
    /// can go.
    pub fn unapplied_from(&self) -> u64 {
        self.shared.unapplied_from.load(Ordering::Acquire)
    }

    /// Resolves when some table's buffer reached `ingest.max_buffer_size`.
    pub async fn flush_wanted(&self) {
        self.shared.flush_wanted.notified().await;
    }

    /// Whether a failed sync stopped the writer, or its thread died: either way no write will
    /// be acknowledged again until the node restarts.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire) || self.has_died()
    }

    /// Whether the writer thread ended without being asked to (it panicked).
    pub fn has_died(&self) -> bool {
        self.shared.died.load(Ordering::Acquire)
    }
}

/// Marks the writer dead if its thread ends any other way than through `run` returning (a
/// panic unwinds through here), and wakes the flusher, which turns that into a fatal error.
struct ExitGuard {
    shared: Arc<Shared>,
    asked: bool,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if !self.asked {
            error!("the wal writer thread died; no write can be acknowledged until restart");
            self.shared.died.store(true, Ordering::Release);
            self.shared.flush_wanted.notify_one();
        }
    }
}

fn too_large(len: usize) -> WriteError {
    WriteError::TooLarge(format!(
        "the request's rows encode to {len} bytes, more than one write-ahead log entry takes ({} bytes); split it into smaller requests",
        arc_wal::MAX_PAYLOAD_BYTES
    ))
}

/// Checks `writes` against the registry: returns an error naming the table, the column and
/// both kinds on a conflict. The registry learns the writes' columns only from
/// [`learn_schema`], once they are stored.
pub fn check_schema(registry: &SchemaRegistry, writes: &[TableWrite]) -> Result<(), String> {
    for write in writes {
        check_name_collisions(registry.get(&write.table), write)?;
        if let Some(known) = registry.get(&write.table) {
            for field in write.batch.schema().fields() {
                let Some(kind) = ColumnKind::of_field(field) else {
                    continue;
                };
                if let Some(existing) = known.get(field.name())
                    && *existing != kind
                {
                    return Err(format!(
                        "column {:?} of {} is {}, this write has {}",
                        field.name(),
                        write.table,
                        describe(*existing),
                        describe(kind)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Records the columns of `writes` (checked by [`check_schema`]) that the registry does not
/// know yet; returns whether there were any.
pub fn learn_schema(registry: &mut SchemaRegistry, writes: &[TableWrite]) -> bool {
    let mut learned = false;
    for write in writes {
        let known = registry.entry(write.table.clone()).or_default();
        for field in write.batch.schema().fields() {
            if let Some(kind) = ColumnKind::of_field(field)
                && !known.contains_key(field.name())
            {
                known.insert(field.name().clone(), kind);
                learned = true;
            }
        }
    }
    learned
}

/// The writer's schemas as request handlers may read them: a copy of each table's columns,
/// published by the writer thread when the table learns one (rarely). Lenient decoding leaves
/// out the lines that conflict with it; the writer thread's own check still decides.
#[derive(Clone, Default)]
pub struct KnownSchemas(Arc<RwLock<HashMap<TableId, Arc<TableColumns>>>>);

/// A table's columns by name.
pub type TableColumns = HashMap<String, ColumnKind>;

impl KnownSchemas {
    /// The known columns of `table`, by name, if it has any.
    pub fn table(&self, table: &TableId) -> Option<Arc<TableColumns>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(table)
            .cloned()
    }

    /// Publishes the registry's columns of `tables`.
    fn publish<'t>(
        &self,
        registry: &SchemaRegistry,
        tables: impl IntoIterator<Item = &'t TableId>,
    ) {
        let mut published = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for table in tables {
            if let Some(columns) = registry.get(table) {
                published.insert(table.clone(), Arc::new(columns.clone()));
            }
        }
    }
}

/// Refuses column names that differ only in case, within the write or from a known column:
/// DuckDB compares names case-insensitively, so such a table could never be queried again.
fn check_name_collisions(
    known: Option<&HashMap<String, ColumnKind>>,
    write: &TableWrite,
) -> Result<(), String> {
    let schema = write.batch.schema();
    let mut seen: HashMap<String, &str> = HashMap::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name();
        let lowered = name.to_lowercase();
        // A known column by exactly this name is the common case: no scan of the others.
        let known_clash = || {
            known
                .filter(|known| !known.contains_key(name))
                .and_then(|known| known.keys().find(|other| other.to_lowercase() == lowered))
                .map(String::as_str)
        };
        let clash = seen.get(&lowered).copied().or_else(known_clash);
        if let Some(other) = clash {
            return Err(format!(
                "column {name:?} of {} collides with column {other:?}: column names may not differ only in case",
                write.table
            ));
        }
        seen.insert(lowered, name);
    }
    Ok(())
}

fn describe(kind: ColumnKind) -> String {
    match kind {
        ColumnKind::Time => "the time column".into(),
        ColumnKind::Tag => "a tag".into(),
        ColumnKind::Field(field_type) => format!("a {field_type} field"),
    }
}

fn run(
    parts: WriterParts,
    mut rx: mpsc::Receiver<Command>,
    replicate: Option<(ReplicationHandle, mpsc::UnboundedSender<Vec<Accepted>>)>,
    shared: Arc<Shared>,
) {
    let WriterParts {
        mut wal,
        epoch,
        mut schemas,
        buffers,
        max_buffer_rows,
        replication: _,
    } = parts;
    shared.known.publish(&schemas, schemas.keys());
    info!(epoch, next_lsn = %wal.next_lsn(), "wal writer started");
    let (deleter, to_delete) = std::sync::mpsc::channel();
    let deleter_thread = match std::thread::Builder::new()
        .name("arc-wal-deleter".into())
        .spawn(move || delete_segments(to_delete))
    {
        Ok(thread) => thread,
        Err(error) => {
            error!(%error, "cannot start the wal segment deleter; refusing writes");
            shared.poisoned.store(true, Ordering::Release);
            return;
        }
    };
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut accepted: Vec<Accepted> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        crate::failpoints::hit("wal-writer");
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let mut truncate_below = None;
        let mut stop = false;
        for command in group.drain(..) {
            match command {
                Command::Stop => stop = true,
                Command::Truncate(lsn) => {
                    truncate_below = Some(truncate_below.map_or(lsn, |known: u64| known.max(lsn)));
                }
                Command::Write {
                    writes,
                    payload,
                    reply,
                } => {
                    if shared.poisoned.load(Ordering::Acquire) {
                        let _ = reply.send(Err(WriteError::Unavailable(
                            "a previous sync failed".into(),
                        )));
                        continue;
                    }
                    if let Err(message) = check_schema(&schemas, &writes) {
                        let _ = reply.send(Err(WriteError::Conflict(message)));
                        continue;
                    }
                    match wal.append(Epoch(epoch), &payload) {
                        Ok(lsn) => {
                            // Learned only once appended: a refused write must not fix the
                            // type of a column nothing stores.
                            if learn_schema(&mut schemas, &writes) {
                                let tables = writes.iter().map(|write| &write.table);
                                shared.known.publish(&schemas, tables);
                            }
                            accepted.push(Accepted {
                                lsn: lsn.0,
                                writes,
                                payload,
                                reply,
                            });
                        }
                        // Refused before anything was written: the WAL is as it was.
                        Err(arc_wal::WalError::PayloadTooLarge { len, .. }) => {
                            let _ = reply.send(Err(too_large(len)));
                        }
                        Err(error) => {
                            error!(%error, "wal append failed");
                            shared.poisoned.store(true, Ordering::Release);
                            let _ = reply.send(Err(WriteError::Unavailable(error.to_string())));
                        }
                    }
                }
            }
        }
        if !accepted.is_empty() {
            let started = Instant::now();
            let synced = wal.sync();
            m::record_wal_group(accepted.len(), started.elapsed());
            match synced {
                Ok(()) => {
                    let mut wake_flusher = false;
                    shared.next_lsn.store(wal.next_lsn().0, Ordering::Release);
                    match &replicate {
                        Some((publisher, groups)) => {
                            let mut group = std::mem::take(&mut accepted);
                            let entries = group
                                .iter_mut()
                                .map(|accepted| arc_wal::Entry {
                                    epoch: Epoch(epoch),
                                    lsn: arc_wal::Lsn(accepted.lsn),
                                    payload: std::mem::take(&mut accepted.payload),
                                })
                                .collect();
                            crate::failpoints::hit("replicate-before-publish");
                            publisher.publish(entries);
                            // The acknowledger ends only after this thread: it cannot be gone.
                            let _ = groups.send(group);
                        }
                        None => {
                            for accepted in accepted.drain(..) {
                                let full =
                                    buffers.apply(accepted.lsn, accepted.writes, max_buffer_rows);
                                wake_flusher |= !full.is_empty();
                                let _ = accepted.reply.send(Ok(Written {
                                    lsn: accepted.lsn,
                                    replicas: None,
                                }));
                            }
                            shared
                                .unapplied_from
                                .store(wal.next_lsn().0, Ordering::Release);
                        }
                    }
                    shared
                        .wal_bytes
                        .store(wal.disk_usage_bytes(), Ordering::Relaxed);
                    if wake_flusher {
                        shared.flush_wanted.notify_one();
                    }
                }
                Err(error) => {
                    error!(%error, "wal sync failed; refusing writes until restart");
                    shared.poisoned.store(true, Ordering::Release);
                    for accepted in accepted.drain(..) {
                        let _ = accepted
                            .reply
                            .send(Err(WriteError::Unavailable(error.to_string())));
                    }
                }
            }
        }
        if let Some(lsn) = truncate_below {
            let detached = wal.detach_segments_below(arc_wal::Lsn(lsn));
            if !detached.is_empty() {
                // A closed channel means the deleter stopped after a failure: the segments stay
                // on disk (a restart lists them again) rather than leave a hole in the log.
                let _ = deleter.send((lsn, detached));
            }
            shared
                .wal_bytes
                .store(wal.disk_usage_bytes(), Ordering::Relaxed);
        }
        if stop {
            break;
        }
    }
    drop(deleter);
    if deleter_thread.join().is_err() {
        error!("the wal segment deleter panicked");
    }
    info!("wal writer stopped");
}

/// Deletes the WAL segments the writer detached, in order, off the writer's thread: deleting
/// a 64 MiB segment and syncing the directory took 30-70 ms, and every write waited for it.
/// After a failed deletion it deletes nothing more, so the log never gets a hole.
fn delete_segments(segments: std::sync::mpsc::Receiver<(u64, arc_wal::DetachedSegments)>) {
    for (below_lsn, detached) in segments {
        match detached.remove() {
            Ok(removed) => info!(removed, below_lsn, "wal segments removed"),
            Err(error) => {
                error!(%error, below_lsn, "wal segment removal failed; no more segments are removed until restart");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use arc_wal::testing::SimFs;
    use arc_wal::{Lsn, SyncMode, WalSettings};

    use super::*;
    use crate::ingest::{Precision, decode_line_protocol};

    /// Runs the writer's group commit on a filesystem that loses every unsynced byte on a
    /// power cut: 8 clients write concurrently, the power is cut while writes are in flight,
    /// and the log is reopened from what the disk kept. Returns the acknowledged writes (LSN to
    /// body) and the payloads that survived.
    async fn acknowledged_and_surviving(
        sync_mode: SyncMode,
    ) -> (BTreeMap<u64, Vec<u8>>, BTreeMap<u64, Vec<u8>>) {
        let fs = SimFs::new();
        let dir = Path::new("/wal");
        let settings = WalSettings {
            sync_mode,
            // Small segments: rotations (and their directory syncs) happen under the load.
            segment_size_bytes: 16 * 1024,
            ..WalSettings::new(dir)
        };
        let (wal, _) =
            Wal::open_with_fs(settings.clone(), Lsn(1), Arc::new(fs.clone())).expect("open");
        let (handle, thread) = start(WriterParts {
            wal,
            epoch: 1,
            schemas: SchemaRegistry::new(),
            buffers: Arc::new(Buffers::default()),
            max_buffer_rows: u64::MAX,
            replication: None,
        })
        .expect("writer thread");
        let acked = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..8u64 {
            let (handle, acked) = (handle.clone(), acked.clone());
            clients.spawn(async move {
                for seq in 0..400u64 {
                    let line = format!("power,c={client} seq={seq}i {}", seq + 1);
                    let writes =
                        decode_line_protocol(line.as_bytes(), "db", Precision::Ns, 0, None)
                            .unwrap();
                    let payload = payload::encode(&writes).unwrap();
                    match handle.write(writes).await {
                        Ok(written) => {
                            acked.lock().unwrap().insert(written.lsn, payload);
                        }
                        // The power is gone: the writer refuses everything after.
                        Err(WriteError::Unavailable(_)) => return,
                        Err(error) => panic!("client {client}: {error}"),
                    }
                }
            });
        }
        let started = Instant::now();
        while acked.lock().unwrap().len() < 300 {
            assert!(started.elapsed() < std::time::Duration::from_secs(60));
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        fs.power_cut();
        while let Some(joined) = clients.join_next().await {
            joined.expect("client task");
        }
        handle.stop().await;
        drop(handle);
        tokio::task::spawn_blocking(move || thread.thread.join())
            .await
            .unwrap()
            .expect("writer thread ended cleanly");

        let (reopened, _) =
            Wal::open_with_fs(settings, Lsn(1), Arc::new(fs.clone())).expect("reopen after cut");
        let surviving = reopened
            .read_from(Lsn(0))
            .expect("read")
            .map(|entry| {
                let entry = entry.expect("entry");
                (entry.lsn.0, entry.payload.to_vec())
            })
            .collect();
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        (acked, surviving)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_should_keep_every_acknowledged_write_through_a_power_cut() {
        for sync_mode in [SyncMode::Fdatasync, SyncMode::Fsync] {
            let (acked, surviving) = acknowledged_and_surviving(sync_mode).await;
            assert!(acked.len() >= 300, "{sync_mode}: {} acked", acked.len());
            for (lsn, payload) in &acked {
                assert_eq!(
                    surviving.get(lsn),
                    Some(payload),
                    "{sync_mode}: acknowledged lsn {lsn} lost or changed by the power cut"
                );
            }
        }
    }

    /// The harness can fail: `async` acknowledges before the disk has the entry, and the cut
    /// loses acknowledged writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_should_show_that_async_mode_loses_acknowledged_writes() {
        let (acked, surviving) = acknowledged_and_surviving(SyncMode::Async).await;
        let lost = acked
            .keys()
            .filter(|lsn| !surviving.contains_key(lsn))
            .count();
        assert!(lost > 0, "{} acked, all survived", acked.len());
    }

    /// What the writer thread does with a write: check it, then learn its columns.
    fn accept(registry: &mut SchemaRegistry, writes: &[TableWrite]) -> Result<(), String> {
        check_schema(registry, writes)?;
        learn_schema(registry, writes);
        Ok(())
    }

    #[test]
    fn test_should_reject_type_conflicts_atomically() {
        let mut registry = SchemaRegistry::new();
        let first =
            decode_line_protocol(b"cpu,host=a v=1i 1", "db", Precision::Ns, 0, None).unwrap();
        accept(&mut registry, &first).unwrap();
        let conflicting =
            decode_line_protocol(b"mem x=1 1\ncpu v=1.5 2", "db", Precision::Ns, 0, None).unwrap();
        let error = accept(&mut registry, &conflicting).unwrap_err();
        assert!(
            error.contains("\"v\"") && error.contains("db.cpu"),
            "{error}"
        );
        assert!(
            !registry.contains_key(&TableId::new("db", "mem")),
            "nothing recorded"
        );
        let tag_as_field =
            decode_line_protocol(b"cpu host=\"x\" 3", "db", Precision::Ns, 0, None).unwrap();
        assert!(accept(&mut registry, &tag_as_field).is_err());
    }

    #[test]
    fn test_should_refuse_column_names_that_differ_only_in_case() {
        let mut registry = SchemaRegistry::new();
        for lines in [
            &b"t1,host=a Time=1 1"[..],
            b"t2 usage=1,USAGE=2 1",
            b"t3,Host=a,host=b v=1 1",
        ] {
            let writes = decode_line_protocol(lines, "db", Precision::Ns, 0, None).unwrap();
            let error = accept(&mut registry, &writes).unwrap_err();
            assert!(error.contains("differ only in case"), "{error}");
        }
        let first = decode_line_protocol(b"cpu usage=1 1", "db", Precision::Ns, 0, None).unwrap();
        accept(&mut registry, &first).unwrap();
        let later = decode_line_protocol(b"cpu Usage=1 2", "db", Precision::Ns, 0, None).unwrap();
        let error = accept(&mut registry, &later).unwrap_err();
        assert!(
            error.contains("\"Usage\"") && error.contains("\"usage\""),
            "{error}"
        );
        // The same name again is fine.
        accept(&mut registry, &first).unwrap();
    }
}
