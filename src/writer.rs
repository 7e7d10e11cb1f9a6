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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use arc_storage::{ColumnKind, TableId};
use arc_wal::{Epoch, Wal};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{error, info, warn};

use crate::buffers::Buffers;
use crate::ingest::TableWrite;
use crate::metrics as m;
use crate::payload;

/// Most requests one group commit takes.
/// A write appended to the WAL and waiting for the group's sync: its LSN, its rows, and
/// where to send the outcome.
type Accepted = (
    u64,
    Vec<TableWrite>,
    oneshot::Sender<Result<u64, WriteError>>,
);

const MAX_GROUP: usize = 4096;

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
}

enum Command {
    Write {
        writes: Vec<TableWrite>,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<u64, WriteError>>,
    },
    Truncate(u64),
    Stop,
}

/// The column kinds of every known table, kept by the writer thread.
pub type SchemaRegistry = HashMap<TableId, HashMap<String, ColumnKind>>;

/// Sends writes to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    poisoned: AtomicBool,
    next_lsn: AtomicU64,
    /// Wakes the flusher when a table's buffer is full.
    flush_wanted: Notify,
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
}

/// Starts the writer thread.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn start(parts: WriterParts) -> std::io::Result<(WriterHandle, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(8192);
    let shared = Arc::new(Shared {
        poisoned: AtomicBool::new(false),
        next_lsn: AtomicU64::new(parts.wal.next_lsn().0),
        flush_wanted: Notify::new(),
    });
    let thread_shared = shared.clone();
    let join = std::thread::Builder::new()
        .name("arc-wal-writer".into())
        .spawn(move || run(parts, rx, thread_shared))?;
    Ok((WriterHandle { tx, shared }, join))
}

impl WriterHandle {
    /// Makes the writes of one request durable and visible; returns the LSN of its WAL entry.
    ///
    /// # Errors
    /// [`WriteError::Conflict`] for a schema conflict, [`WriteError::Unavailable`] when the WAL
    /// cannot take writes.
    pub async fn write(&self, writes: Vec<TableWrite>) -> Result<u64, WriteError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(WriteError::Unavailable("a previous sync failed".into()));
        }
        // Encoding happens here, on the request's task, so the single writer thread only
        // checks schemas and copies bytes.
        let payload =
            payload::encode(&writes).map_err(|error| WriteError::Internal(error.to_string()))?;
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

    /// Returns the LSN the next write will get.
    pub fn next_lsn(&self) -> u64 {
        self.shared.next_lsn.load(Ordering::Acquire)
    }

    /// Resolves when some table's buffer reached `ingest.max_buffer_size`.
    pub async fn flush_wanted(&self) {
        self.shared.flush_wanted.notified().await;
    }

    /// Whether a failed sync stopped the writer.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }
}

/// Checks `writes` against the registry and records new columns. Returns an error naming the
/// table, the column and both kinds on a conflict; the registry is unchanged then.
pub fn check_schema(registry: &mut SchemaRegistry, writes: &[TableWrite]) -> Result<(), String> {
    for write in writes {
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
    for write in writes {
        let known = registry.entry(write.table.clone()).or_default();
        for field in write.batch.schema().fields() {
            if let Some(kind) = ColumnKind::of_field(field) {
                known.entry(field.name().clone()).or_insert(kind);
            }
        }
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

fn run(parts: WriterParts, mut rx: mpsc::Receiver<Command>, shared: Arc<Shared>) {
    let WriterParts {
        mut wal,
        epoch,
        mut schemas,
        buffers,
        max_buffer_rows,
    } = parts;
    info!(epoch, next_lsn = %wal.next_lsn(), "wal writer started");
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut accepted: Vec<Accepted> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
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
                    if let Err(message) = check_schema(&mut schemas, &writes) {
                        let _ = reply.send(Err(WriteError::Conflict(message)));
                        continue;
                    }
                    match wal.append(Epoch(epoch), &payload) {
                        Ok(lsn) => accepted.push((lsn.0, writes, reply)),
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
                    for (lsn, writes, reply) in accepted.drain(..) {
                        let full = buffers.apply(lsn, writes, max_buffer_rows);
                        wake_flusher |= !full.is_empty();
                        let _ = reply.send(Ok(lsn));
                    }
                    shared.next_lsn.store(wal.next_lsn().0, Ordering::Release);
                    if wake_flusher {
                        shared.flush_wanted.notify_one();
                    }
                }
                Err(error) => {
                    error!(%error, "wal sync failed; refusing writes until restart");
                    shared.poisoned.store(true, Ordering::Release);
                    for (_, _, reply) in accepted.drain(..) {
                        let _ = reply.send(Err(WriteError::Unavailable(error.to_string())));
                    }
                }
            }
        }
        if let Some(lsn) = truncate_below {
            match wal.remove_segments_below(arc_wal::Lsn(lsn)) {
                Ok(removed) if removed > 0 => {
                    info!(removed, below_lsn = lsn, "wal segments removed")
                }
                Ok(_) => {}
                Err(error) => warn!(%error, below_lsn = lsn, "wal segment removal failed"),
            }
        }
        if stop {
            break;
        }
    }
    info!("wal writer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Precision, decode_line_protocol};

    #[test]
    fn test_should_reject_type_conflicts_atomically() {
        let mut registry = SchemaRegistry::new();
        let first = decode_line_protocol(b"cpu,host=a v=1i 1", "db", Precision::Ns, 0).unwrap();
        check_schema(&mut registry, &first).unwrap();
        let conflicting =
            decode_line_protocol(b"mem x=1 1\ncpu v=1.5 2", "db", Precision::Ns, 0).unwrap();
        let error = check_schema(&mut registry, &conflicting).unwrap_err();
        assert!(
            error.contains("\"v\"") && error.contains("db.cpu"),
            "{error}"
        );
        assert!(
            !registry.contains_key(&TableId::new("db", "mem")),
            "nothing recorded"
        );
        let tag_as_field =
            decode_line_protocol(b"cpu host=\"x\" 3", "db", Precision::Ns, 0).unwrap();
        assert!(check_schema(&mut registry, &tag_as_field).is_err());
    }
}
