//! The catalog log (DESIGN.md section 3; docs/0002-catalog-log.md): the append-only record of
//! cluster truth in the object store, and the arbiter of who is primary.
//!
//! Record `seq` lives at `_catalog/log/{seq:020}.json` and is written with put-if-absent
//! (`PutMode::Create`): whoever creates slot N owns it, and slots are never overwritten. Every
//! reader applies the same records in slot order with the same pure rule
//! ([`CatalogState`]), so every reader reaches the same state, voided records included.
//!
//! # Lifecycle
//!
//! [`Catalog::open`] loads the newest checkpoint and tails the log from there;
//! [`Catalog::refresh`] tails again; [`Catalog::commit`] appends a record. One async mutex per
//! `Catalog` serializes tailing and committing within the process; readers use
//! [`Catalog::snapshot`] (an `Arc` of an immutable state) and never wait for either.
//!
//! # Truncation
//!
//! The writer of a checkpoint deletes the records at or below the oldest checkpoint it keeps,
//! so the log holds a few checkpoint intervals of records, not every record ever written. A
//! deleted slot is empty again, and a committer whose state is older than the deleted prefix
//! could create its record there. Nobody would ever read it: every reader starts from a
//! checkpoint after it. So every commit that lands asks whether a checkpoint at or after its
//! slot exists (one LIST); if one does, the slot may be such a hole, and the committer reloads
//! from the checkpoint and only reports success if the state shows its record's effect.
//! Followers whose next slot is empty look for a newer checkpoint the same way.
//!
//! # Error semantics
//!
//! - [`CatalogError::Fenced`]: a newer epoch exists; the caller must stop writing.
//! - [`CatalogError::Rejected`]: the record's precondition no longer holds.
//! - [`CatalogError::Covered`]: a flush whose LSNs the table's watermark already covers; the
//!   rows are committed already (an earlier attempt landed), so the caller is done.
//! - [`CatalogError::Unavailable`]: no definite answer after the allowed attempts. The record
//!   was not seen in its slot, but a put still in flight may land there later; a caller that
//!   re-submits the same change must make it idempotent (a re-committed flush naming the same
//!   objects is: live objects are never added twice).
//! - [`CatalogError::Corrupt`]: a record cannot be decoded; tailing stops there (nothing after
//!   a corrupt slot can be applied in order), and a human must look.

mod record;
mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::{Mutex, oneshot, watch};
use tracing::{debug, info, warn};

pub use record::{
    Compact, DataObject, FORMAT_VERSION, FailoverEntry, FailoverRecord, Fence, Flush, Flushes, Isr,
    LogRecord, Promote, RecordBody,
};
pub use state::{CatalogState, TableState};

use crate::error::CatalogError;
use crate::metrics::{self, CommitOutcome};
use crate::paths;
use record::Checkpoint;
pub(crate) use state::Verdict;

/// How many log records a tail fetches concurrently once it finds more than one new record.
const TAIL_WINDOW: u64 = 16;

/// Tuning of the catalog client.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Write a checkpoint after every record whose seq is a multiple of this (default 100).
    /// Lower: faster `open` (at most this many records to tail); higher: fewer checkpoint
    /// objects (each holds the full live file set).
    pub checkpoint_interval: u64,
    /// Attempts a commit makes against store errors (timeouts, 5xx) before giving up with
    /// `Unavailable` (default 8). Losing a slot to another writer does not count: that means
    /// the log moved forward.
    pub max_commit_attempts: u32,
    /// First backoff after a store error (default 100 ms); doubles per attempt, with jitter.
    pub retry_backoff: Duration,
    /// Cap of the backoff (default 5 s).
    pub max_retry_backoff: Duration,
    /// How often at most a refresh that finds nothing new asks whether the log was truncated
    /// past this process's state (one LIST of the checkpoints; default 5 s). Only a follower
    /// that fell more than two checkpoint intervals behind needs the answer.
    pub truncation_check_interval: Duration,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            checkpoint_interval: 100,
            max_commit_attempts: 8,
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(5),
            truncation_check_interval: Duration::from_secs(5),
        }
    }
}

impl CatalogSettings {
    /// Settings for tests: short backoffs, a small checkpoint interval.
    pub fn for_test() -> Self {
        Self {
            checkpoint_interval: 10,
            max_commit_attempts: 5,
            retry_backoff: Duration::from_millis(1),
            max_retry_backoff: Duration::from_millis(5),
            truncation_check_interval: Duration::ZERO,
        }
    }
}

/// A handle on the catalog log. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct Catalog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    settings: CatalogSettings,
    /// The published state. Replaced (never mutated) under `writer`; readers clone the `Arc`.
    state: watch::Sender<Arc<CatalogState>>,
    /// Serializes tailing and committing in this process.
    writer: Mutex<WriterState>,
    /// Flushes waiting for a group commit (see [`Catalog::commit_flush`]).
    flush_queue: std::sync::Mutex<Vec<QueuedFlush>>,
}

/// A flush waiting for a group commit, and where its answer goes.
#[derive(Debug)]
struct QueuedFlush {
    epoch: u64,
    node_id: String,
    flush: Flush,
    reply: oneshot::Sender<Result<u64, CatalogError>>,
}

#[derive(Debug)]
struct WriterState {
    /// The newest checkpoint known to exist; a commit at or below it would sit in a slot that
    /// readers starting from that checkpoint never read.
    checkpoint_seq: u64,
    /// Log slots at or below this are deleted (by this process). `None` until this process
    /// first truncates, which lists the log once to find every older record.
    log_floor: Option<u64>,
    /// When a refresh last looked for checkpoints past its state.
    last_truncation_check: Option<Instant>,
}

/// How a commit attempt's slot turned out.
enum SlotOutcome {
    /// Our record is in the slot.
    Ours,
    /// Another record is in the slot (already decoded).
    Theirs(LogRecord),
    /// The slot is empty.
    Empty,
}

impl Catalog {
    /// Opens the catalog in `store`: loads the newest readable checkpoint, then tails the log.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Invalid`] for unusable settings, [`CatalogError::ObjectStore`] if the
    /// store cannot be read, [`CatalogError::Corrupt`] if a log record cannot be decoded.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        settings: CatalogSettings,
    ) -> Result<Catalog, CatalogError> {
        Self::open_with(store, settings, true).await
    }

    async fn open_with(
        store: Arc<dyn ObjectStore>,
        settings: CatalogSettings,
        use_checkpoints: bool,
    ) -> Result<Catalog, CatalogError> {
        if settings.checkpoint_interval == 0 || settings.max_commit_attempts == 0 {
            return Err(CatalogError::Invalid(
                "checkpoint_interval and max_commit_attempts must be at least 1".into(),
            ));
        }
        let mut state = if use_checkpoints {
            load_newest_checkpoint(store.as_ref()).await?
        } else {
            CatalogState::default()
        };
        let mut writer = WriterState {
            checkpoint_seq: state.seq,
            log_floor: None,
            last_truncation_check: None,
        };
        let mut tailed = Self::tail_in(store.as_ref(), &mut state).await;
        if tailed.is_ok() && use_checkpoints {
            // The checkpoint we loaded may have been pruned, and the records after it
            // truncated, while we read it.
            tailed = catch_up(store.as_ref(), &mut writer, &mut state).await;
        }
        let checkpoint_seq = writer.checkpoint_seq;
        let catalog = Catalog {
            inner: Arc::new(Inner {
                store,
                settings,
                state: watch::Sender::new(Arc::new(CatalogState::default())),
                writer: Mutex::new(writer),
                flush_queue: std::sync::Mutex::new(Vec::new()),
            }),
        };
        catalog.publish(state);
        tailed?;
        let snapshot = catalog.snapshot();
        info!(
            seq = snapshot.seq,
            epoch = snapshot.epoch,
            checkpoint_seq,
            tables = snapshot.tables.len(),
            "catalog opened"
        );
        Ok(catalog)
    }

    /// Returns the current state. Cheap; never waits for a commit or a refresh.
    pub fn snapshot(&self) -> Arc<CatalogState> {
        self.inner.state.borrow().clone()
    }

    /// Returns a receiver that sees every newly published state (for waiting on a seq).
    pub fn subscribe(&self) -> watch::Receiver<Arc<CatalogState>> {
        self.inner.state.subscribe()
    }

    /// Returns the object store the catalog lives in.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// Applies records other nodes appended since the last tail; returns the new seq.
    ///
    /// # Errors
    ///
    /// [`CatalogError::ObjectStore`] if the store cannot be read, [`CatalogError::Corrupt`] if
    /// a record cannot be decoded. Records before the failing one are applied and published.
    pub async fn refresh(&self) -> Result<u64, CatalogError> {
        let mut writer = self.inner.writer.lock().await;
        let mut state = (*self.snapshot()).clone();
        let before = state.seq;
        let mut tailed = self.tail(&mut state).await;
        let due = writer.last_truncation_check.is_none_or(|checked| {
            checked.elapsed() >= self.inner.settings.truncation_check_interval
        });
        if tailed.is_ok() && state.seq == before && due {
            // Our next slot is empty: the end of the log, or a slot truncated while we were
            // more than two checkpoints behind. Only a newer checkpoint tells them apart.
            writer.last_truncation_check = Some(Instant::now());
            tailed = catch_up(self.inner.store.as_ref(), &mut writer, &mut state).await;
        }
        let seq = state.seq;
        self.publish(state);
        tailed.map(|()| seq)
    }

    /// Makes `node_id` primary at the next epoch (current + 1), fencing every older writer,
    /// with itself as the only in-sync replica. A standalone node calls this at each start to
    /// fence its previous incarnation. Returns the new epoch.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Fenced`] if another promote took the epoch first; otherwise as
    /// [`Catalog::commit`].
    pub async fn promote(&self, node_id: &str, last_lsn: u64) -> Result<u64, CatalogError> {
        let current_epoch = self.refresh_epoch().await?;
        self.promote_if(current_epoch, node_id, last_lsn, vec![node_id.to_string()])
            .await
    }

    /// Makes `node_id` primary at `expected_epoch + 1`, but only if no promote after
    /// `expected_epoch` lands first: the failover candidate's call, where losing the race means
    /// someone else won. Returns the new epoch.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Fenced`] if the catalog's epoch is no longer `expected_epoch`;
    /// otherwise as [`Catalog::commit`].
    pub async fn promote_if(
        &self,
        expected_epoch: u64,
        node_id: &str,
        last_lsn: u64,
        in_sync: Vec<String>,
    ) -> Result<u64, CatalogError> {
        self.promote_record(expected_epoch, node_id, last_lsn, in_sync, None)
            .await
    }

    /// As [`Catalog::promote_if`], for a failover: the record says why and when. Of the
    /// standbys in `in_sync`, the record names only those in the in-sync set as the log has it
    /// at the slot where the record lands: the caller decided on its own copy of the log,
    /// which may be older (a standby reads the log only now and then), and a standby removed
    /// from the set meanwhile may lack writes acknowledged after its removal.
    ///
    /// # Errors
    ///
    /// As [`Catalog::promote_if`].
    pub async fn promote_for_failover(
        &self,
        expected_epoch: u64,
        node_id: &str,
        last_lsn: u64,
        in_sync: Vec<String>,
        failover: FailoverRecord,
    ) -> Result<u64, CatalogError> {
        self.promote_record(expected_epoch, node_id, last_lsn, in_sync, Some(failover))
            .await
    }

    /// Commits a record of `epoch` that changes nothing (the in-sync set as this node's log
    /// has it). A promote whose outcome was unknown ([`CatalogError::Unavailable`]: its put may
    /// still land) is settled by it: once a later record of the old epoch has landed, the
    /// promote never takes effect; if the promote landed first, this fails with
    /// [`CatalogError::Fenced`].
    ///
    /// # Errors
    ///
    /// As [`Catalog::commit`].
    pub async fn confirm_epoch(&self, epoch: u64, node_id: &str) -> Result<u64, CatalogError> {
        // The set is taken again from the log before each put (`mirror_in_sync`): a standby's
        // copy may be behind the primary's own changes.
        let body = RecordBody::Isr(Isr {
            in_sync: self.snapshot().in_sync.clone(),
        });
        self.commit_measured(epoch, node_id, body, true).await
    }

    async fn promote_record(
        &self,
        expected_epoch: u64,
        node_id: &str,
        last_lsn: u64,
        in_sync: Vec<String>,
        failover: Option<FailoverRecord>,
    ) -> Result<u64, CatalogError> {
        let epoch = expected_epoch + 1;
        let body = RecordBody::Promote(Promote {
            epoch,
            node_id: node_id.to_string(),
            fence: Fence {
                previous_epoch: expected_epoch,
                last_lsn,
            },
            in_sync,
            failover,
        });
        let seq = self.commit(epoch, node_id, body).await?;
        info!(epoch, seq, node_id, last_lsn, "promoted");
        Ok(epoch)
    }

    async fn refresh_epoch(&self) -> Result<u64, CatalogError> {
        self.refresh().await?;
        Ok(self.snapshot().epoch)
    }

    /// Appends a record written under `epoch` by `node_id` at the next free slot; returns the
    /// slot (seq) it landed in, once it is applied locally.
    ///
    /// Losing a slot to another writer applies the winner's record and retries at the next
    /// slot; a store error is resolved by reading the slot back (our nonce there means we
    /// landed). See the module docs for the outcomes.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Fenced`] if a newer epoch precedes the record (nothing is written if
    /// that is known in advance), [`CatalogError::Rejected`] if its precondition fails,
    /// [`CatalogError::Unavailable`] after `max_commit_attempts` store errors,
    /// [`CatalogError::Invalid`] for a malformed request or an epoch never promoted,
    /// [`CatalogError::Corrupt`] if a record in the way cannot be decoded.
    pub async fn commit(
        &self,
        epoch: u64,
        node_id: &str,
        record: RecordBody,
    ) -> Result<u64, CatalogError> {
        self.commit_measured(epoch, node_id, record, false).await
    }

    /// [`Catalog::commit`], with `mirror_in_sync` as in `commit_locked`; counted and timed.
    async fn commit_measured(
        &self,
        epoch: u64,
        node_id: &str,
        record: RecordBody,
        mirror_in_sync: bool,
    ) -> Result<u64, CatalogError> {
        let started = Instant::now();
        let result = self
            .commit_inner(epoch, node_id, record, mirror_in_sync)
            .await;
        metrics::record_commit(commit_outcome(&result), started.elapsed());
        result
    }

    /// Commits one table's flush together with the flushes of other tables waiting at the
    /// same time, in one record (`flushes`): the commits of many tables flushing at once then
    /// cost one put and one list in the store, not one each. The first caller to get the
    /// commit lock commits everything queued; the others find their answer when the lock
    /// comes to them.
    ///
    /// # Errors
    ///
    /// As [`Catalog::commit`] for a `flush` record. A batch that turns out partly covered or
    /// rejected is committed again flush by flush, so each gets its own answer.
    /// [`CatalogError::Unavailable`] if the caller that took this flush into its batch was
    /// cancelled: whether the flush landed is then unknown (a retry finds it covered if so).
    pub async fn commit_flush(
        &self,
        epoch: u64,
        node_id: &str,
        flush: Flush,
    ) -> Result<u64, CatalogError> {
        if node_id.is_empty() {
            return Err(CatalogError::Invalid("node id must not be empty".into()));
        }
        validate_flush(&flush)?;
        let table = flush.table.to_string();
        let (reply, mut answer) = oneshot::channel();
        self.queued_flushes().push(QueuedFlush {
            epoch,
            node_id: node_id.to_string(),
            flush,
            reply,
        });
        let mut writer = self.inner.writer.lock().await;
        if let Ok(result) = answer.try_recv() {
            return result;
        }
        let mut queued = std::mem::take(&mut *self.queued_flushes());
        while !queued.is_empty() {
            // Normally one group: this node's epoch.
            let (epoch, node_id) = (queued[0].epoch, queued[0].node_id.clone());
            let (group, rest): (Vec<_>, Vec<_>) = queued
                .into_iter()
                .partition(|entry| entry.epoch == epoch && entry.node_id == node_id);
            queued = rest;
            let mut state = (*self.snapshot()).clone();
            self.commit_flush_group(&mut writer, &mut state, epoch, &node_id, group)
                .await;
            self.publish(state);
        }
        drop(writer);
        answer.try_recv().unwrap_or_else(|_| {
            Err(CatalogError::Unavailable {
                key: paths::catalog_log_prefix().to_string(),
                attempts: 0,
                reason: format!(
                    "the commit that took the flush of {table} was cancelled; whether it landed \
                     is unknown"
                ),
            })
        })
    }

    fn queued_flushes(&self) -> std::sync::MutexGuard<'_, Vec<QueuedFlush>> {
        self.inner
            .flush_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Commits `group` (flushes of one epoch and node) as one record and answers each.
    async fn commit_flush_group(
        &self,
        writer: &mut WriterState,
        state: &mut CatalogState,
        epoch: u64,
        node_id: &str,
        group: Vec<QueuedFlush>,
    ) {
        let (flushes, replies): (Vec<Flush>, Vec<_>) = group
            .into_iter()
            .map(|entry| (entry.flush, entry.reply))
            .unzip();
        let body = match flushes.as_slice() {
            [flush] => RecordBody::Flush(flush.clone()),
            _ => RecordBody::Flushes(Flushes {
                flushes: flushes.clone(),
            }),
        };
        let count = flushes.len();
        let result = self
            .commit_flushes_counted(writer, state, epoch, node_id, body, count)
            .await;
        match result {
            Err(CatalogError::Covered { .. } | CatalogError::Rejected { .. }) if count > 1 => {
                // Some flush of the batch is covered or no longer valid: each on its own.
                for (flush, reply) in flushes.into_iter().zip(replies) {
                    let body = RecordBody::Flush(flush);
                    let result = self
                        .commit_flushes_counted(writer, state, epoch, node_id, body, 1)
                        .await;
                    let _ = reply.send(result);
                }
            }
            result => {
                for reply in replies {
                    let _ = reply.send(result.as_ref().map(|seq| *seq).map_err(share));
                }
            }
        }
    }

    /// Commits `body`, a record of `count` flushes, under the lock, and records the commit's
    /// outcome, duration and (when it lands) size in the metrics.
    async fn commit_flushes_counted(
        &self,
        writer: &mut WriterState,
        state: &mut CatalogState,
        epoch: u64,
        node_id: &str,
        body: RecordBody,
        count: usize,
    ) -> Result<u64, CatalogError> {
        let started = Instant::now();
        let result = self
            .commit_locked(writer, state, epoch, node_id, body, false)
            .await;
        metrics::record_commit(commit_outcome(&result), started.elapsed());
        if result.is_ok() {
            metrics::record_flushes_per_commit(count);
        }
        result
    }

    async fn commit_inner(
        &self,
        epoch: u64,
        node_id: &str,
        body: RecordBody,
        mirror_in_sync: bool,
    ) -> Result<u64, CatalogError> {
        validate_request(epoch, node_id, &body)?;
        let mut writer = self.inner.writer.lock().await;
        let mut state = (*self.snapshot()).clone();
        let result = self
            .commit_locked(
                &mut writer,
                &mut state,
                epoch,
                node_id,
                body,
                mirror_in_sync,
            )
            .await;
        // Whatever happened, the records we read on the way are part of the log.
        self.publish(state);
        result
    }

    /// Commits `body` at the next free slot (see [`Catalog::commit`]). With `mirror_in_sync`
    /// an `isr` body takes the set the log has right before each put: a record that changes
    /// nothing however far behind the caller's copy was.
    async fn commit_locked(
        &self,
        writer: &mut WriterState,
        state: &mut CatalogState,
        epoch: u64,
        node_id: &str,
        mut body: RecordBody,
        mirror_in_sync: bool,
    ) -> Result<u64, CatalogError> {
        let nonce = format!("{:032x}", rand::random::<u128>());
        let mut failures: u32 = 0;
        let mut refreshed_for_check = false;
        let requested_in_sync = match &body {
            RecordBody::Promote(promote) if promote.failover.is_some() => {
                Some(promote.in_sync.clone())
            }
            _ => None,
        };
        loop {
            if let Some(requested) = &requested_in_sync {
                keep_current_in_sync(&mut body, requested, state);
            }
            if mirror_in_sync && let RecordBody::Isr(isr) = &mut body {
                isr.in_sync = state.in_sync.clone();
            }
            // Spend no put on a record that would be void.
            match state.check(epoch, &body) {
                Verdict::Valid => {}
                Verdict::Fenced { current_epoch } => {
                    return Err(fenced(epoch, current_epoch));
                }
                verdict if !refreshed_for_check => {
                    // Our view may be stale (the promote or the objects may be in records we
                    // have not read yet): tail once and check again.
                    debug!(?verdict, "catalog precheck failed; tailing before deciding");
                    refreshed_for_check = true;
                    self.tail(state).await?;
                    continue;
                }
                Verdict::UnknownEpoch { current_epoch } => {
                    return Err(CatalogError::Invalid(format!(
                        "epoch {epoch} was never promoted (current epoch {current_epoch})"
                    )));
                }
                Verdict::Rejected(reason) => return Err(CatalogError::Rejected { reason }),
                Verdict::Covered { flushed_lsn } => return Err(covered(&body, flushed_lsn)),
            }

            let slot = state.seq + 1;
            if slot <= writer.checkpoint_seq {
                return Err(CatalogError::Rejected {
                    reason: format!(
                        "slot {slot} is at or below checkpoint {}",
                        writer.checkpoint_seq
                    ),
                });
            }
            let key = paths::catalog_log_path(slot);
            let record = LogRecord {
                version: FORMAT_VERSION,
                seq: slot,
                epoch,
                nonce: nonce.clone(),
                node: node_id.to_string(),
                record: body.clone(),
            };
            let put = self
                .inner
                .store
                .put_opts(
                    &key,
                    PutPayload::from(record.encode()),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            let outcome = match put {
                Ok(_) => SlotOutcome::Ours,
                Err(object_store::Error::AlreadyExists { .. }) => {
                    // Taken, possibly by an earlier attempt of ours whose reply was lost.
                    match self.read_slot_for(slot, &nonce).await {
                        Ok(outcome) => outcome,
                        Err(error @ CatalogError::Corrupt { .. }) => return Err(error),
                        Err(error) => {
                            failures += 1;
                            self.backoff_or_give_up(&key, failures, &error.to_string())
                                .await?;
                            continue;
                        }
                    }
                }
                Err(put_error) => {
                    // Ambiguous: the write may or may not have landed. Read the slot back.
                    metrics::record_ambiguous_put();
                    warn!(slot, error = %put_error, "catalog put failed; reading slot back");
                    failures += 1;
                    match self.read_slot_for(slot, &nonce).await {
                        Ok(SlotOutcome::Empty) => {
                            self.backoff_or_give_up(&key, failures, &put_error.to_string())
                                .await?;
                            continue;
                        }
                        Ok(outcome) => outcome,
                        Err(error @ CatalogError::Corrupt { .. }) => return Err(error),
                        Err(error) => {
                            self.backoff_or_give_up(&key, failures, &error.to_string())
                                .await?;
                            continue;
                        }
                    }
                }
            };
            match outcome {
                SlotOutcome::Ours => {
                    if !self.may_be_truncated(slot).await? {
                        return self.landed(writer, state, &record).await;
                    }
                    // A checkpoint at or after our slot exists: either others committed a
                    // checkpoint interval past us since our put (our record is in the log), or
                    // the slot had been truncated and our record sits in a hole no reader
                    // reads. The state after that checkpoint tells which.
                    catch_up(self.inner.store.as_ref(), writer, state).await?;
                    if state.shows(epoch, node_id, &body) {
                        info!(
                            slot,
                            seq = state.seq,
                            "catalog record found applied after a checkpoint"
                        );
                        return Ok(slot);
                    }
                    warn!(
                        slot,
                        seq = state.seq,
                        "catalog record landed in a truncated slot; committing it again"
                    );
                    refreshed_for_check = true;
                }
                SlotOutcome::Theirs(theirs) => {
                    // Lost the slot: take the winner's record (and any after it), then
                    // re-check ours against the new state at the next slot.
                    debug!(slot, winner = %theirs.node, "catalog slot taken");
                    apply(state, &theirs);
                    self.tail(state).await?;
                }
                SlotOutcome::Empty => {
                    // Create said the slot exists but a read finds nothing: only possible if
                    // someone deleted a record. Treat as a store fault.
                    failures += 1;
                    self.backoff_or_give_up(&key, failures, "slot vanished after AlreadyExists")
                        .await?;
                }
            }
        }
    }

    /// Applies our record that landed in its slot, writes a checkpoint if due, and reports
    /// whether the record counts.
    async fn landed(
        &self,
        writer: &mut WriterState,
        state: &mut CatalogState,
        record: &LogRecord,
    ) -> Result<u64, CatalogError> {
        let slot = record.seq;
        let verdict = apply(state, record);
        if slot.is_multiple_of(self.inner.settings.checkpoint_interval) {
            self.write_checkpoint(writer, state).await;
        }
        match verdict {
            Verdict::Valid => {
                debug!(
                    seq = slot,
                    epoch = record.epoch,
                    kind = record.record.type_name(),
                    "catalog record committed"
                );
                Ok(slot)
            }
            // We checked before writing and the slot followed exactly what we had applied, so
            // these mean the check and apply disagree; report them as what they are anyway.
            Verdict::Fenced { current_epoch } => Err(fenced(record.epoch, current_epoch)),
            Verdict::UnknownEpoch { current_epoch } => Err(CatalogError::Invalid(format!(
                "epoch {} was never promoted (current epoch {current_epoch})",
                record.epoch
            ))),
            Verdict::Rejected(reason) => Err(CatalogError::Rejected { reason }),
            Verdict::Covered { flushed_lsn } => Err(covered(&record.record, flushed_lsn)),
        }
    }

    async fn write_checkpoint(&self, writer: &mut WriterState, state: &CatalogState) {
        let key = paths::catalog_checkpoint_path(state.seq);
        let put = self
            .inner
            .store
            .put_opts(
                &key,
                PutPayload::from(Checkpoint::encode(state)),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            // AlreadyExists: a checkpoint of the same seq holds the same state (it is a pure
            // function of the log).
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {
                writer.checkpoint_seq = writer.checkpoint_seq.max(state.seq);
                debug!(seq = state.seq, "catalog checkpoint written");
                if let Some(floor) = self.prune_checkpoints().await {
                    self.truncate_log(writer, floor).await;
                }
            }
            // The commit stands; the next interval writes the next checkpoint.
            Err(error) => warn!(seq = state.seq, %error, "cannot write catalog checkpoint"),
        }
    }

    /// Deletes every checkpoint but the newest [`CHECKPOINTS_KEPT`] and returns the oldest one
    /// kept, once there are that many: the log below it can go. A checkpoint holds the whole
    /// state, so keeping them all grew the store by the state's size every
    /// `checkpoint_interval` records (292 MB after 17,600 flushes of one busy table). Only
    /// `open` reads checkpoints, newest first, and one gone between its list and its read is
    /// skipped like an unreadable one; the log keeps every record after the oldest kept one,
    /// so nothing is lost. Failures are logged: the next checkpoint tries again.
    async fn prune_checkpoints(&self) -> Option<u64> {
        let seqs = match checkpoints_after(self.inner.store.as_ref(), 0).await {
            Ok(seqs) => seqs,
            Err(error) => {
                warn!(%error, "cannot list catalog checkpoints to prune them");
                return None;
            }
        };
        let floor = seqs.get(CHECKPOINTS_KEPT - 1).copied();
        for seq in seqs.into_iter().skip(CHECKPOINTS_KEPT) {
            let key = paths::catalog_checkpoint_path(seq);
            match self.inner.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    debug!(key = %key, "old catalog checkpoint deleted");
                }
                Err(error) => warn!(key = %key, %error, "cannot delete old catalog checkpoint"),
            }
        }
        floor
    }

    /// Deletes the log records at or below `floor`, the oldest checkpoint kept: every `open`
    /// starts from a checkpoint at or after it, so nobody reads them again. Without this the
    /// log grew by one object per flush forever (17,590 objects, 72 MB, in a 20-minute soak).
    /// Failures are logged; the next checkpoint deletes what this one left.
    async fn truncate_log(&self, writer: &mut WriterState, floor: u64) {
        let store = self.inner.store.as_ref();
        let slots: Vec<u64> = match writer.log_floor {
            Some(known) if known >= floor => return,
            Some(known) => (known + 1..=floor).collect(),
            None => {
                // First truncation by this process: older records may be anywhere below.
                let prefix = paths::catalog_log_prefix();
                let listed: Result<Vec<_>, _> = store.list(Some(&prefix)).try_collect().await;
                match listed {
                    Ok(listed) => listed
                        .iter()
                        .filter_map(|meta| paths::parse_catalog_log_path(&meta.location))
                        .filter(|slot| *slot <= floor)
                        .collect(),
                    Err(error) => {
                        warn!(prefix = %prefix, %error, "cannot list the catalog log to truncate it");
                        return;
                    }
                }
            }
        };
        let keys = slots.iter().map(|slot| Ok(paths::catalog_log_path(*slot)));
        let mut deleted =
            store.delete_stream(futures::stream::iter(keys.collect::<Vec<_>>()).boxed());
        let mut failed = false;
        let mut count = 0u64;
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) => count += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => {
                    failed = true;
                    warn!(floor, %error, "cannot delete a truncated catalog record");
                }
            }
        }
        metrics::record_log_records_deleted(count);
        if !failed {
            writer.log_floor = Some(floor);
        }
        debug!(floor, deleted = count, "catalog log truncated");
    }

    /// Whether a checkpoint at or after `slot` exists, i.e. whether `slot` may have been
    /// truncated before our record landed in it.
    async fn may_be_truncated(&self, slot: u64) -> Result<bool, CatalogError> {
        let after = checkpoints_after(self.inner.store.as_ref(), slot - 1).await?;
        Ok(!after.is_empty())
    }

    async fn backoff_or_give_up(
        &self,
        key: &Path,
        failures: u32,
        reason: &str,
    ) -> Result<(), CatalogError> {
        let settings = &self.inner.settings;
        if failures >= settings.max_commit_attempts {
            warn!(key = %key, attempts = failures, reason, "catalog commit gave up");
            return Err(CatalogError::Unavailable {
                key: key.to_string(),
                attempts: failures,
                reason: reason.to_string(),
            });
        }
        let exponent = failures.saturating_sub(1).min(16);
        let backoff = settings
            .retry_backoff
            .saturating_mul(1u32 << exponent)
            .min(settings.max_retry_backoff);
        // Full jitter: racing writers that failed together do not retry together.
        let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        tokio::time::sleep(jittered).await;
        Ok(())
    }

    /// Reads slot `slot` and tells whether it holds our record (by nonce).
    async fn read_slot_for(&self, slot: u64, nonce: &str) -> Result<SlotOutcome, CatalogError> {
        Ok(match read_record(self.inner.store.as_ref(), slot).await? {
            None => SlotOutcome::Empty,
            Some(record) if record.nonce == nonce => SlotOutcome::Ours,
            Some(record) => SlotOutcome::Theirs(record),
        })
    }

    /// Applies every record after `state.seq`, in slot order, up to the first empty slot.
    async fn tail(&self, state: &mut CatalogState) -> Result<(), CatalogError> {
        Self::tail_in(self.inner.store.as_ref(), state).await
    }

    async fn tail_in(
        store: &dyn ObjectStore,
        state: &mut CatalogState,
    ) -> Result<(), CatalogError> {
        // Polling usually finds nothing new: probe one slot before fetching a window.
        let mut window = 1;
        loop {
            let first = state.seq + 1;
            let records: Vec<Result<Option<LogRecord>, CatalogError>> =
                futures::stream::iter(first..first + window)
                    .map(|slot| read_record(store, slot))
                    .buffered(window as usize)
                    .collect()
                    .await;
            // In slot order: an error or a gap ends the tail; what lies beyond is not ours
            // to look at yet.
            for record in records {
                let Some(record) = record? else {
                    return Ok(());
                };
                apply(state, &record);
            }
            window = TAIL_WINDOW;
        }
    }

    fn publish(&self, state: CatalogState) {
        let seq = state.seq;
        self.inner.state.send_if_modified(|current| {
            // Every applied record advances seq, so an equal seq means an equal state.
            if current.seq == seq {
                return false;
            }
            *current = Arc::new(state);
            true
        });
        metrics::set_catalog_seq(seq);
    }
}

/// Sets a failover promote's in-sync set to the standbys of `requested` that are members of
/// `state`'s, the state its slot follows (see [`Catalog::promote_for_failover`]). The
/// promoting node itself stays: the state rule refuses the promote if it is not a member.
fn keep_current_in_sync(body: &mut RecordBody, requested: &[String], state: &CatalogState) {
    if let RecordBody::Promote(promote) = body {
        promote.in_sync = requested
            .iter()
            .filter(|id| **id == promote.node_id || state.in_sync.contains(id))
            .cloned()
            .collect();
    }
}

/// Applies one record to a working state.
fn apply(state: &mut CatalogState, record: &LogRecord) -> Verdict {
    let verdict = state.apply(record);
    if verdict != Verdict::Valid {
        // Every reader voids it alike; worth a note, not an alarm.
        info!(seq = record.seq, epoch = record.epoch, node = %record.node, kind = record.record.type_name(), ?verdict, "catalog record void");
    }
    verdict
}

fn fenced(our_epoch: u64, current_epoch: u64) -> CatalogError {
    CatalogError::Fenced {
        our_epoch,
        current_epoch,
    }
}

fn commit_outcome(result: &Result<u64, CatalogError>) -> CommitOutcome {
    match result {
        Ok(_) => CommitOutcome::Ok,
        Err(CatalogError::Fenced { .. }) => CommitOutcome::Fenced,
        Err(CatalogError::Rejected { .. } | CatalogError::Covered { .. }) => {
            CommitOutcome::Rejected
        }
        Err(CatalogError::Unavailable { .. }) => CommitOutcome::Unavailable,
        Err(_) => CommitOutcome::Error,
    }
}

/// A copy of `error` for another flush of the same batch (a store error's source becomes its
/// text).
fn share(error: &CatalogError) -> CatalogError {
    match error {
        CatalogError::Fenced {
            our_epoch,
            current_epoch,
        } => fenced(*our_epoch, *current_epoch),
        CatalogError::Unavailable {
            key,
            attempts,
            reason,
        } => CatalogError::Unavailable {
            key: key.clone(),
            attempts: *attempts,
            reason: reason.clone(),
        },
        CatalogError::Corrupt { key, reason } => CatalogError::corrupt(key, reason),
        CatalogError::Rejected { reason } => CatalogError::Rejected {
            reason: reason.clone(),
        },
        CatalogError::Covered {
            table,
            lsn_first,
            lsn_last,
            flushed_lsn,
        } => CatalogError::Covered {
            table: table.clone(),
            lsn_first: *lsn_first,
            lsn_last: *lsn_last,
            flushed_lsn: *flushed_lsn,
        },
        CatalogError::Invalid(message) => CatalogError::Invalid(message.clone()),
        CatalogError::ObjectStore { key, source } => CatalogError::Unavailable {
            key: key.clone(),
            attempts: 1,
            reason: source.to_string(),
        },
    }
}

fn covered(body: &RecordBody, flushed_lsn: u64) -> CatalogError {
    let (table, lsn_first, lsn_last) = match body {
        RecordBody::Flush(flush) => (flush.table.to_string(), flush.lsn_first, flush.lsn_last),
        other => (other.type_name().to_string(), 0, 0),
    };
    CatalogError::Covered {
        table,
        lsn_first,
        lsn_last,
        flushed_lsn,
    }
}

fn validate_request(epoch: u64, node_id: &str, body: &RecordBody) -> Result<(), CatalogError> {
    if node_id.is_empty() {
        return Err(CatalogError::Invalid("node id must not be empty".into()));
    }
    match body {
        RecordBody::Promote(promote) if promote.epoch != epoch => {
            Err(CatalogError::Invalid(format!(
                "promote to epoch {} committed under epoch {epoch}",
                promote.epoch
            )))
        }
        RecordBody::Flush(flush) => validate_flush(flush),
        // A table named twice is the state rule's to refuse (every reader voids such a record).
        RecordBody::Flushes(flushes) => flushes.flushes.iter().try_for_each(validate_flush),
        _ => Ok(()),
    }
}

fn validate_flush(flush: &Flush) -> Result<(), CatalogError> {
    if flush.lsn_first > flush.lsn_last {
        return Err(CatalogError::Invalid(format!(
            "flush of {} has lsn_first {} above lsn_last {}",
            flush.table, flush.lsn_first, flush.lsn_last
        )));
    }
    Ok(())
}

/// Reads log record `slot`; `None` if the slot is empty.
async fn read_record(
    store: &dyn ObjectStore,
    slot: u64,
) -> Result<Option<LogRecord>, CatalogError> {
    let key = paths::catalog_log_path(slot);
    let Some(bytes) = read_object(store, &key).await? else {
        return Ok(None);
    };
    LogRecord::decode(key.as_ref(), slot, &bytes).map(Some)
}

async fn read_object(
    store: &dyn ObjectStore,
    key: &Path,
) -> Result<Option<bytes::Bytes>, CatalogError> {
    let result = match store.get_opts(key, GetOptions::default()).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(CatalogError::object_store(key, error)),
    };
    result
        .bytes()
        .await
        .map(Some)
        .map_err(|error| CatalogError::object_store(key, error))
}

/// Checkpoints kept in the store: the newest, and two to fall back on should it be unreadable.
const CHECKPOINTS_KEPT: usize = 3;

/// Loads the newest checkpoint that decodes; an undecodable one is skipped for the one before
/// it (the log holds every record after the oldest kept checkpoint, so an older start only
/// costs tailing time).
async fn load_newest_checkpoint(store: &dyn ObjectStore) -> Result<CatalogState, CatalogError> {
    let seqs = checkpoints_after(store, 0).await?;
    Ok(load_first_readable(store, &seqs).await?.unwrap_or_default())
}

/// The checkpoints after record `seq`, newest first.
async fn checkpoints_after(store: &dyn ObjectStore, seq: u64) -> Result<Vec<u64>, CatalogError> {
    let prefix = paths::catalog_checkpoint_prefix();
    let listed: Vec<_> = store
        .list_with_offset(Some(&prefix), &paths::catalog_checkpoint_path(seq))
        .try_collect()
        .await
        .map_err(|error| CatalogError::object_store(&prefix, error))?;
    let mut seqs: Vec<u64> = listed
        .iter()
        .filter_map(|meta| paths::parse_catalog_checkpoint_path(&meta.location))
        .filter(|checkpoint| *checkpoint > seq)
        .collect();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    Ok(seqs)
}

/// Loads the first of `seqs` (newest first) that is still there and decodes.
async fn load_first_readable(
    store: &dyn ObjectStore,
    seqs: &[u64],
) -> Result<Option<CatalogState>, CatalogError> {
    for &seq in seqs {
        let key = paths::catalog_checkpoint_path(seq);
        let Some(bytes) = read_object(store, &key).await? else {
            continue;
        };
        match Checkpoint::decode(key.as_ref(), seq, &bytes) {
            Ok(state) => return Ok(Some(state)),
            Err(error) => warn!(key = %key, %error, "skipping unreadable catalog checkpoint"),
        }
    }
    Ok(None)
}

/// Rounds of [`catch_up`] before it gives up: each round only repeats when checkpoints vanish
/// or appear while it reads them.
const CATCH_UP_ROUNDS: usize = 4;

/// Moves `state`, whose next slot was found empty, to the newest checkpoint after it, if there
/// is one, and tails from there. A checkpoint after `state.seq` proves the slot after it was
/// filled once: it is empty because the log was truncated, or because it is new since our
/// read. Either way the checkpoint is a later state of the same log.
async fn catch_up(
    store: &dyn ObjectStore,
    writer: &mut WriterState,
    state: &mut CatalogState,
) -> Result<(), CatalogError> {
    for _ in 0..CATCH_UP_ROUNDS {
        let seqs = checkpoints_after(store, state.seq).await?;
        if seqs.is_empty() {
            return Ok(());
        }
        if let Some(loaded) = load_first_readable(store, &seqs).await? {
            info!(
                from = state.seq,
                to = loaded.seq,
                "catalog caught up from a checkpoint past a truncated log"
            );
            writer.checkpoint_seq = writer.checkpoint_seq.max(loaded.seq);
            metrics::record_catch_up();
            *state = loaded;
            Catalog::tail_in(store, state).await?;
        }
    }
    let newest = checkpoints_after(store, state.seq).await?;
    match newest.first() {
        None => Ok(()),
        Some(&seq) => Err(CatalogError::Corrupt {
            key: paths::catalog_checkpoint_path(seq).to_string(),
            reason: format!(
                "the log after record {} is truncated and no checkpoint after it is readable",
                state.seq
            ),
        }),
    }
}

#[cfg(test)]
mod tests;
