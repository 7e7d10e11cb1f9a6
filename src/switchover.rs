//! Planned switchover (`POST /api/v1/cluster/failover`, issue 11): the primary hands its epoch
//! to an in-sync standby without losing or doubling a write.
//!
//! The primary closes its write gate (new writes get 503 with `Retry-After`; clients retry and
//! land on the new primary), waits for the writes already admitted to be answered, then for the
//! target to have fsynced everything its WAL holds. Only then does it write the target's
//! `promote` record itself, fenced at that LSN, and nudge its followers to read the catalog:
//! the target sees itself named primary of the new epoch and takes over exactly as after a
//! failover. The old primary answers once the target serves and steps down to standby.
//!
//! Nothing acknowledged is lost: every acknowledged write is at or below the fence, and the
//! target holds the fence. Nothing is doubled: no write is admitted after the gate closed, so
//! nothing the old primary wrote lies above the fence.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_storage::{CatalogError, FailoverRecord};
use arc_wal::Lsn;
use arc_wal::replication::FlushNotice;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::node::NodeInner;

/// How long each step of a switchover may take before it is abandoned (the gate reopens and
/// the primary stays).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Admission of writes on a primary: open normally, closed while a switchover moves the epoch.
#[derive(Debug, Default)]
pub struct WriteGate {
    closed: AtomicBool,
    admitted: AtomicUsize,
    drained: Notify,
    /// A switchover holds the gate. Only one may: another one's abandon reopened the gate under
    /// it (writes admitted after its fence, acknowledged and then cut by the target), and a
    /// loser of the promote race stepped the node down under the winner (which then waited out
    /// its whole step timeout for the target to show as serving).
    switching: AtomicBool,
}

/// The one switchover running on this node; dropping it lets the next one start.
struct Switching<'a>(&'a WriteGate);

impl Drop for Switching<'_> {
    fn drop(&mut self) {
        self.0.switching.store(false, Ordering::Release);
    }
}

/// A write admitted through the [`WriteGate`]; dropping it (the write answered) lets a closing
/// gate finish draining.
pub struct Admitted<'a>(&'a WriteGate);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.0.admitted.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

impl WriteGate {
    /// Admits a write unless the gate is closed.
    pub fn enter(&self) -> Option<Admitted<'_>> {
        self.admitted.fetch_add(1, Ordering::AcqRel);
        // Counted before the check: a close that follows waits for this write.
        let admitted = Admitted(self);
        (!self.closed.load(Ordering::Acquire)).then_some(admitted)
    }

    /// Closes the gate and waits until every admitted write is answered; false (and the gate
    /// open again) if that takes longer than `bound`.
    async fn close(&self, bound: Duration) -> bool {
        self.closed.store(true, Ordering::Release);
        let drained = async {
            loop {
                let notified = self.drained.notified();
                if self.admitted.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(bound, drained).await.is_err() {
            self.open();
            return false;
        }
        true
    }

    fn open(&self) {
        self.closed.store(false, Ordering::Release);
    }

    /// Whether the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Takes the gate for a switchover, unless one already has it.
    fn begin_switchover(&self) -> Option<Switching<'_>> {
        // No guard on refusal: built and dropped, it would release the running one's hold.
        if self.switching.swap(true, Ordering::AcqRel) {
            None
        } else {
            Some(Switching(self))
        }
    }
}

/// Why a switchover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    /// No eligible target, or the target named is not one: 409.
    #[error("{0}")]
    NoTarget(String),
    /// A step did not finish in time or failed; the primary stays: 409.
    #[error("{0}")]
    Abandoned(String),
    /// Another switchover is running on this node: 409.
    #[error("a switchover is already in progress on {0}; this one was not started")]
    InProgress(String),
}

/// What a finished switchover reports.
#[derive(Debug, Clone)]
pub struct Switched {
    /// The node that was primary (this one).
    pub previous_primary: String,
    /// The new primary.
    pub new_primary: String,
    /// Its epoch.
    pub epoch: u64,
    /// The fence: the last LSN of the previous epoch.
    pub fence_lsn: u64,
    /// From the gate closing to the new primary serving (as gossip shows it).
    pub unavailable: Duration,
}

/// Hands this primary's epoch to `target` (or the best-ranked in-sync standby). On success
/// this node steps down to standby once the answer is sent.
///
/// # Errors
/// [`SwitchoverError`] naming why; the primary then keeps serving (the gate reopens).
pub async fn run(inner: &NodeInner, target: Option<String>) -> Result<Switched, SwitchoverError> {
    let (epoch, writer, replication) = inner.primary_parts().ok_or_else(|| {
        SwitchoverError::NoTarget(format!(
            "{} is not a clustered primary with replication: nothing to switch over",
            inner.node_id
        ))
    })?;
    let switching = inner
        .write_gate
        .begin_switchover()
        .ok_or_else(|| SwitchoverError::InProgress(inner.node_id.clone()))?;
    let catalog = inner.catalog().snapshot();
    let view = inner.cluster.view();
    let ranked: Vec<String> = arc_gossip::rank_standbys(&view, &catalog.in_sync)
        .into_iter()
        .map(|candidate| candidate.id)
        .filter(|id| *id != inner.node_id)
        .collect();
    let target = match target {
        Some(target) if ranked.contains(&target) => target,
        Some(target) => {
            return Err(SwitchoverError::NoTarget(format!(
                "{target} is not a healthy standby writer in the in-sync set {:?} (eligible: {ranked:?})",
                catalog.in_sync
            )));
        }
        None => ranked.first().cloned().ok_or_else(|| {
            SwitchoverError::NoTarget(format!(
                "no healthy standby writer is in the in-sync set {:?}",
                catalog.in_sync
            ))
        })?,
    };
    let started = Instant::now();
    let detected_at_ms = inner.clock.unix_ms();
    let abandon = |message: String| {
        inner.write_gate.open();
        if inner.step_down_noted() {
            // Fenced meanwhile: the step-down held back for this switchover happens now.
            inner.step_down_now(format!("switchover abandoned: {message}"));
        } else {
            warn!(%message, "switchover abandoned; this node stays primary");
        }
        SwitchoverError::Abandoned(message)
    };
    info!(%target, epoch, "switchover: closing writes");
    if !inner.write_gate.close(STEP_TIMEOUT).await {
        return Err(abandon(format!(
            "writes in flight were not answered within {STEP_TIMEOUT:?}; the switchover to {target} was abandoned"
        )));
    }
    // Everything this primary will ever acknowledge is in its WAL by now.
    let fence = writer.next_lsn().saturating_sub(1);
    let mut status = replication.status_changes();
    let caught_up = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            let holds = status.borrow_and_update().followers.iter().any(|follower| {
                follower.node_id == target
                    && follower.confirmed.is_some_and(|lsn| lsn >= Lsn(fence))
            });
            if holds || fence == 0 {
                return true;
            }
            if status.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    if !matches!(caught_up, Ok(true)) {
        return Err(abandon(format!(
            "{target} did not confirm lsn {fence} within {STEP_TIMEOUT:?}"
        )));
    }
    let record = FailoverRecord {
        reason: arc_gossip::FailoverReason::Switchover.as_str().to_string(),
        detected_at_ms,
        promoted_at_ms: inner.clock.unix_ms(),
    };
    // The other in-sync standbys stay in sync: they confirmed every acknowledged write.
    let mut in_sync = vec![target.clone()];
    in_sync.extend(ranked.iter().filter(|id| **id != target).cloned());
    let promoted = crate::failpoints::lose_promote_answer(
        inner
            .catalog()
            .promote_for_failover(epoch, &target, fence, in_sync, record)
            .await,
    );
    let promoted = match promoted {
        Err(error) if error.is_retryable() => {
            // Its put may have reached the store, and the answer not us: writes reopened now
            // would be acknowledged above the fence, and the target, once it reads itself
            // named, cuts them from its WAL. Writes stay closed until the catalog settles it.
            warn!(%target, %error, "switchover: the promote's outcome is unknown; writes stay closed until the catalog settles it");
            settle_promote(inner, epoch, &target, error).await
        }
        promoted => promoted,
    };
    let new_epoch = match promoted {
        Ok(new_epoch) => new_epoch,
        Err(CatalogError::Fenced { current_epoch, .. }) => {
            inner.step_down_now(format!(
                "a newer epoch {current_epoch} was promoted during the switchover"
            ));
            return Err(SwitchoverError::Abandoned(format!(
                "epoch {current_epoch} was promoted meanwhile; this node steps down"
            )));
        }
        Err(error) if error.is_retryable() => {
            // Unsettled because the node stops: it acknowledges nothing more either way.
            return Err(SwitchoverError::Abandoned(format!(
                "writing the promote record for {target}: {error}; this node is stopping"
            )));
        }
        Err(error) => {
            return Err(abandon(format!(
                "writing the promote record for {target}: {error}"
            )));
        }
    };
    info!(%target, epoch = new_epoch, fence_lsn = fence, "switchover: promote committed");
    // The followers read the catalog at once (the target learns it is primary).
    replication.flush_committed(FlushNotice {
        seq: inner.catalog().snapshot().seq,
        tables: Vec::new(),
    });
    let serving = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            let view = inner.cluster.view();
            if view
                .primary()
                .is_some_and(|node| node.id == target && node.info.epoch == new_epoch)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if serving.is_err() {
        warn!(%target, epoch = new_epoch, "switchover: the new primary is not serving yet; stepping down anyway (the epoch is its)");
    }
    let unavailable = started.elapsed();
    crate::metrics::record_switchover(unavailable);
    // Done: the gate stays closed and taken until the node steps down (which starts it again
    // with a new gate), so no other switchover runs in between.
    std::mem::forget(switching);
    Ok(Switched {
        previous_primary: inner.node_id.clone(),
        new_primary: target,
        epoch: new_epoch,
        fence_lsn: fence,
        unavailable,
    })
}

/// Steps `inner` down after a switchover's answer went out.
pub fn finish(inner: &NodeInner, switched: &Switched) {
    inner.step_down_now(format!(
        "switched over to {} (epoch {})",
        switched.new_primary, switched.epoch
    ));
}

/// Settles a promote of `epoch + 1` naming `node` that failed with `error` (an unknown
/// outcome) by committing a record of `epoch` after it, and returns the promote's result as
/// it turned out: the new epoch if it landed, `Fenced` if another promote did, `Rejected` if
/// it never will (the record of `epoch` landed first). Until then the caller must acknowledge
/// nothing: the promote's fence may be below it. Retries while the store cannot answer, and
/// returns `error`, still of unknown outcome, once the node begins to stop.
pub(crate) async fn settle_promote(
    inner: &NodeInner,
    epoch: u64,
    node: &str,
    error: CatalogError,
) -> Result<u64, CatalogError> {
    match confirm_epoch_settled(inner, epoch).await {
        Some(Ok(_)) => Err(CatalogError::Rejected {
            reason: format!(
                "the promote did not land ({error}); a record of epoch {epoch} landed after it"
            ),
        }),
        Some(Err(CatalogError::Fenced { current_epoch, .. })) => {
            let snapshot = inner.catalog().snapshot();
            if current_epoch == epoch + 1 && snapshot.primary.as_deref() == Some(node) {
                info!(
                    epoch = current_epoch,
                    node, "the promote of unknown outcome had landed"
                );
                return Ok(current_epoch);
            }
            Err(CatalogError::Fenced {
                our_epoch: epoch,
                current_epoch,
            })
        }
        // A corrupt log shows no later record to anyone: the promote cannot take effect.
        Some(Err(settle_error)) => Err(settle_error),
        None => Err(error),
    }
}

/// Commits a record of `epoch` that changes nothing ([`arc_storage::Catalog::confirm_epoch`]),
/// retrying while the store cannot answer. Once it has landed, every record this node sent
/// before it has landed or never will, and the catalog's snapshot shows which. Returns the
/// commit's definite result (`Fenced` if a newer epoch was promoted first), or `None` once the
/// node begins to stop.
pub(crate) async fn confirm_epoch_settled(
    inner: &NodeInner,
    epoch: u64,
) -> Option<Result<u64, CatalogError>> {
    let stop = inner.stop_token();
    let mut pause = Duration::from_millis(100);
    loop {
        match inner.catalog().confirm_epoch(epoch, &inner.node_id).await {
            Err(error) if error.is_retryable() => {
                warn!(%error, epoch, "the catalog cannot settle a record of unknown outcome yet; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            result => return Some(result),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// One switchover holds the gate at a time; a refused one leaves the hold alone.
    #[test]
    fn test_should_let_one_switchover_hold_the_gate() {
        let gate = WriteGate::default();
        let first = gate.begin_switchover().expect("a free gate");
        assert!(gate.begin_switchover().is_none());
        assert!(
            gate.begin_switchover().is_none(),
            "the refusal released the hold"
        );
        drop(first);
        assert!(gate.begin_switchover().is_some());
    }

    /// A closing gate waits for every admitted write, refuses new ones, and reopens when it
    /// cannot drain in time.
    #[tokio::test]
    async fn test_should_drain_admitted_writes_and_refuse_new_ones() {
        let gate = Arc::new(WriteGate::default());
        let admitted = gate.enter().expect("open gate");
        let closing = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.close(Duration::from_secs(10)).await })
        };
        while !gate.is_closed() {
            tokio::task::yield_now().await;
        }
        assert!(gate.enter().is_none(), "closed to new writes");
        assert!(!closing.is_finished());
        drop(admitted);
        assert!(closing.await.unwrap(), "drained");

        gate.open();
        let stuck = gate.enter().expect("open again");
        assert!(!gate.close(Duration::from_millis(20)).await, "cannot drain");
        assert!(!gate.is_closed(), "reopened after the timeout");
        drop(stuck);
    }
}
