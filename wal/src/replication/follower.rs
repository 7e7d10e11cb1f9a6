//! [`FollowerState`]: a follower's side of replication as a pure state machine: which frames
//! from the primary to accept, what to do with each entry, and when to drop the stream and
//! subscribe again.
//!
//! Like [`crate::replication::PrimaryState`], it has no I/O and no clock: the shell feeds it
//! frames, catalog news and the time, and drains [`FollowerAction`]s.
//!
//! Phases: `Idle` (no stream) → [`FollowerState::subscribe`] → `Subscribing` (waiting for the
//! primary's `Subscribed`) → `Streaming` (entries flow). Any defect — a gap, an entry of an
//! epoch older than the newest promote this node knows, a silent primary, a newer promote in
//! the catalog, a refusal — emits [`FollowerAction::Resubscribe`] and returns to `Idle`; frames
//! still arriving on the dropped stream are ignored.

use std::collections::VecDeque;

use crate::format::Entry;
use crate::lsn::{Epoch, Lsn};
use crate::replication::frame::{FlushNotice, FollowerRole, Frame, FrameKind, Subscribe};

/// Why a follower drops its stream and subscribes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResubscribeReason {
    /// An entry's LSN is not the next one expected.
    Gap {
        /// The LSN expected.
        expected: Lsn,
        /// The LSN received.
        found: Lsn,
    },
    /// An entry (or the primary itself) is of an epoch older than the newest promote this node
    /// knows, and (for an entry) above that promote's fence: it comes from a deposed primary
    /// and was never acknowledged, and is refused.
    StaleEpoch {
        /// The epoch of the entry or stream.
        epoch: Epoch,
        /// The newest promote epoch known.
        promised: Epoch,
        /// The refused entry's LSN (`None` for the stream's own epoch).
        lsn: Option<Lsn>,
    },
    /// An entry's epoch is older than the previous entry's on the same stream.
    EpochRegressed {
        /// The previous entry's epoch.
        previous: Epoch,
        /// The entry's epoch.
        found: Epoch,
        /// The entry's LSN.
        lsn: Lsn,
    },
    /// The catalog names a newer primary than the one streaming.
    NewPrimary {
        /// The new promote's epoch.
        epoch: Epoch,
    },
    /// Nothing was heard from the primary for longer than the silence timeout.
    Silent {
        /// How long it has been silent, in milliseconds.
        silent_ms: u64,
    },
    /// The primary refused the subscription.
    Refused {
        /// Its reason.
        reason: String,
    },
    /// A frame that has no place in the current phase.
    Unexpected {
        /// Its kind.
        kind: FrameKind,
    },
}

/// What the follower's shell must do, drained in order with [`FollowerState::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerAction {
    /// Open a stream to the primary and send this subscription.
    Subscribe(Subscribe),
    /// The stream starts at `lsn`, above what this node holds: the entries in between are no
    /// longer kept by the primary, and the catalog's flushes cover them. A standby restarts its
    /// WAL at `lsn` (open with `min_next_lsn = lsn`); a reader reloads from the catalog.
    SkipTo {
        /// The first LSN the stream will carry.
        lsn: Lsn,
    },
    /// The primary's `Subscribed` told a fence this node did not know, below what it holds:
    /// its entries above `lsn` may be of older epochs, written by a deposed primary and never
    /// acknowledged (the new primary may hold others at those LSNs). A standby cuts its WAL
    /// back to `lsn`, a reader drops its queued entries above it, as when the catalog shows the
    /// promote ([`FollowerState::promote_seen`]). Comes before any entry of the stream.
    DropAbove {
        /// The new primary's epoch.
        epoch: Epoch,
        /// The last LSN kept: the fence, or across a skipped epoch the newest commit LSN heard.
        lsn: Lsn,
    },
    /// Standby: append the entry at its LSN ([`crate::Wal::append_at`]), fsync, then report
    /// [`FollowerState::durable`]. Several appends may share one fsync.
    Append(Entry),
    /// Reader: apply the entry to the in-memory buffers (not visible past the commit LSN),
    /// then report [`FollowerState::applied`].
    Apply(Entry),
    /// Send an `Ack` frame.
    SendAck {
        /// The durable LSN.
        durable_lsn: Lsn,
    },
    /// Send an `Applied` frame.
    SendApplied {
        /// The applied LSN.
        applied_lsn: Lsn,
    },
    /// The primary's commit LSN advanced: rows up to it were acknowledged and may be exposed.
    CommitAdvanced {
        /// The new commit LSN.
        commit_lsn: Lsn,
    },
    /// A flush was committed: rows it covers will be read from the catalog's objects.
    Flushed(FlushNotice),
    /// Drop the stream, then call [`FollowerState::subscribe`] (after a back-off).
    Resubscribe {
        /// Why.
        reason: ResubscribeReason,
    },
}

/// Where the follower is in its stream's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerPhase {
    /// No stream.
    Idle,
    /// Subscription sent; waiting for `Subscribed`.
    Subscribing,
    /// Entries flow.
    Streaming {
        /// The primary's epoch.
        epoch: Epoch,
    },
}

/// A follower's replication state. See the module docs.
#[derive(Debug)]
pub struct FollowerState {
    node_id: String,
    role: FollowerRole,
    /// The newest promote epoch known, from the catalog or from a primary's `Subscribed`.
    promised_epoch: Epoch,
    /// The epoch whose fence `fence_lsn` is: the newest promote read from the catalog. Behind
    /// `promised_epoch` when a primary announced its epoch before the catalog showed it (the
    /// store unreachable), until the catalog does.
    fenced_epoch: Epoch,
    /// That promote's fence: the last LSN it keeps from older epochs. Entries of older epochs
    /// at or below it are the new primary's inheritance; above it they are void.
    fence_lsn: Lsn,
    /// The next LSN this node needs.
    next_lsn: Lsn,
    /// Epoch of the last accepted entry (on any stream): epochs never go backwards in a log.
    last_epoch: Option<Epoch>,
    /// Standby: durable LSN; reader: applied LSN.
    confirmed: Option<Lsn>,
    commit_lsn: Option<Lsn>,
    /// Whether the current stream has told its commit LSN (see [`FollowerState::commit_heard`]).
    commit_heard: bool,
    phase: FollowerPhase,
    silence_timeout_ms: u64,
    last_heard_ms: u64,
    actions: VecDeque<FollowerAction>,
}

impl FollowerState {
    /// Creates the state of follower `node_id` that holds everything below `next_lsn` (a
    /// standby: its WAL's next LSN, after a sync; a reader: the catalog's flushed LSN + 1) and
    /// knows promotes up to `promised_epoch`, whose fence keeps older epochs' entries up to
    /// `fence_lsn`. A primary silent for `silence_timeout_ms` is dropped.
    pub fn new(
        node_id: impl Into<String>,
        role: FollowerRole,
        (promised_epoch, fence_lsn): (Epoch, Lsn),
        next_lsn: Lsn,
        silence_timeout_ms: u64,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            role,
            promised_epoch,
            fenced_epoch: promised_epoch,
            fence_lsn,
            next_lsn,
            last_epoch: None,
            // LSN 0 is never assigned: starting from 1 (or 0) holds nothing.
            confirmed: (next_lsn.0 > 1).then(|| Lsn(next_lsn.0 - 1)),
            commit_lsn: None,
            commit_heard: false,
            phase: FollowerPhase::Idle,
            silence_timeout_ms,
            last_heard_ms: 0,
            actions: VecDeque::new(),
        }
    }

    /// Returns the next action for the shell, if any.
    pub fn poll_action(&mut self) -> Option<FollowerAction> {
        self.actions.pop_front()
    }

    /// Returns the phase.
    pub fn phase(&self) -> FollowerPhase {
        self.phase
    }

    /// Returns the next LSN this node needs.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Returns the primary's commit LSN as last heard.
    pub fn commit_lsn(&self) -> Option<Lsn> {
        self.commit_lsn
    }

    /// Whether the current stream has told the primary's commit LSN as of its start. A stream
    /// sends the commit LSN, if there is one, before its first keep-alive, so either frame
    /// means [`FollowerState::commit_lsn`] is not older than the stream. Until then a
    /// follower that has received nothing cannot tell that it is behind.
    pub fn commit_heard(&self) -> bool {
        self.commit_heard
    }

    /// Returns the durable (standby) or applied (reader) LSN.
    pub fn confirmed(&self) -> Option<Lsn> {
        self.confirmed
    }

    /// Returns the highest LSN a reader may expose: applied and acknowledged by the primary.
    /// Rows above it were never acknowledged (yet) and must not be seen.
    pub fn visible_lsn(&self) -> Option<Lsn> {
        self.confirmed.min(self.commit_lsn)
    }

    /// Returns the newest promote epoch known.
    pub fn promised_epoch(&self) -> Epoch {
        self.promised_epoch
    }

    /// Returns the epoch of the newest promote whose fence this follower knows (see
    /// [`FollowerState::promote_seen`]).
    pub fn fenced_epoch(&self) -> Epoch {
        self.fenced_epoch
    }

    /// Input: start a stream now. Emits [`FollowerAction::Subscribe`].
    pub fn subscribe(&mut self, now_ms: u64) {
        self.phase = FollowerPhase::Subscribing;
        self.last_heard_ms = now_ms;
        self.actions.push_back(FollowerAction::Subscribe(Subscribe {
            node_id: self.node_id.clone(),
            role: self.role,
            known_epoch: self.promised_epoch,
            from_lsn: self.next_lsn,
        }));
    }

    /// Input: the stream ended (closed by either side or by the network). Subscribe again
    /// after a back-off.
    pub fn stream_ended(&mut self) {
        self.phase = FollowerPhase::Idle;
    }

    /// Input: the catalog holds a promote of `epoch` whose fence keeps older epochs' entries up
    /// to `fence_lsn`. Returns the last LSN this node keeps if it must drop what it holds above
    /// (see [`FollowerAction::DropAbove`]; the caller does it at once, and no action is queued
    /// for it). A stream from an older primary, or one asked from above that LSN, is dropped.
    pub fn promote_seen(&mut self, epoch: Epoch, fence_lsn: Lsn) -> Option<Lsn> {
        if epoch <= self.fenced_epoch {
            return None;
        }
        // Also for the epoch a primary already announced without its fence (a primary of the
        // earlier frame layout): until now the older fence refused entries it inherited.
        let keep = self.learn_fence(epoch, fence_lsn);
        let newer = epoch > self.promised_epoch;
        self.promised_epoch = self.promised_epoch.max(epoch);
        let stale = match self.phase {
            FollowerPhase::Streaming { epoch: streaming } => streaming < epoch || keep.is_some(),
            FollowerPhase::Subscribing => newer || keep.is_some(),
            FollowerPhase::Idle => false,
        };
        if stale {
            self.resubscribe(ResubscribeReason::NewPrimary { epoch });
        }
        keep
    }

    /// Input: a standby made its WAL durable up to `lsn` (after the fsync). Emits the ack.
    pub fn durable(&mut self, lsn: Lsn) {
        if self.confirm(lsn) {
            self.actions
                .push_back(FollowerAction::SendAck { durable_lsn: lsn });
        }
    }

    /// Input: a reader applied everything up to `lsn`. Emits the report.
    pub fn applied(&mut self, lsn: Lsn) {
        if self.confirm(lsn) {
            self.actions
                .push_back(FollowerAction::SendApplied { applied_lsn: lsn });
        }
    }

    /// Input: time passed; drops a stream whose primary has been silent too long.
    pub fn tick(&mut self, now_ms: u64) {
        if self.phase == FollowerPhase::Idle {
            return;
        }
        let silent_ms = now_ms.saturating_sub(self.last_heard_ms);
        if silent_ms > self.silence_timeout_ms {
            self.resubscribe(ResubscribeReason::Silent { silent_ms });
        }
    }

    /// Input: a frame arrived from the primary on the current stream.
    pub fn frame_received(&mut self, frame: Frame, now_ms: u64) {
        if self.phase == FollowerPhase::Idle {
            return;
        }
        self.last_heard_ms = now_ms;
        match (self.phase, frame) {
            (
                FollowerPhase::Subscribing,
                Frame::Subscribed {
                    epoch,
                    start_lsn,
                    fence_lsn,
                },
            ) => {
                if epoch < self.promised_epoch {
                    self.resubscribe(ResubscribeReason::StaleEpoch {
                        epoch,
                        promised: self.promised_epoch,
                        lsn: None,
                    });
                    return;
                }
                if let Some(fence) = fence_lsn
                    && epoch > self.fenced_epoch
                    && let Some(keep) = self.learn_fence(epoch, fence)
                {
                    self.actions
                        .push_back(FollowerAction::DropAbove { epoch, lsn: keep });
                }
                self.promised_epoch = epoch;
                self.phase = FollowerPhase::Streaming { epoch };
                self.commit_heard = false;
                if start_lsn > self.next_lsn {
                    self.next_lsn = start_lsn;
                    self.actions
                        .push_back(FollowerAction::SkipTo { lsn: start_lsn });
                } else if start_lsn < self.next_lsn {
                    // A primary streams from below what a follower asked only to one that knew
                    // an older epoch, which dropped what it held above the same LSN just now,
                    // or (across a skipped epoch) above a lower one: asked again, knowing this
                    // epoch, it gets the stream from where it is.
                    self.resubscribe(ResubscribeReason::Gap {
                        expected: self.next_lsn,
                        found: start_lsn,
                    });
                }
            }
            (FollowerPhase::Streaming { .. }, Frame::Entry(entry)) => self.entry_received(entry),
            (FollowerPhase::Streaming { .. }, Frame::Commit { commit_lsn }) => {
                self.commit_heard = true;
                if self.commit_lsn.is_none_or(|known| commit_lsn > known) {
                    self.commit_lsn = Some(commit_lsn);
                    self.actions
                        .push_back(FollowerAction::CommitAdvanced { commit_lsn });
                }
            }
            (FollowerPhase::Streaming { .. }, Frame::FlushNotice(notice)) => {
                self.actions.push_back(FollowerAction::Flushed(notice));
            }
            (FollowerPhase::Streaming { .. }, Frame::KeepAlive) => self.commit_heard = true,
            (_, Frame::KeepAlive) => {}
            (_, Frame::Refuse { reason }) => {
                self.resubscribe(ResubscribeReason::Refused { reason });
            }
            (_, frame) => self.resubscribe(ResubscribeReason::Unexpected { kind: frame.kind() }),
        }
    }

    /// Takes the fence of the promote of `epoch`; returns the last LSN kept if this node held
    /// more (`next_lsn` then follows it).
    ///
    /// This node's log is a prefix of the log of the newest epoch whose fence it knows (it
    /// refuses anything else), and the next epoch's primary kept that log up to its fence
    /// exactly. Across a skipped epoch the fences in between are unknown and may be lower; only
    /// what a primary acknowledged is in every later log, so everything above the newest
    /// commit LSN heard goes. Nothing above either was acknowledged, so a reader exposed none
    /// of it.
    fn learn_fence(&mut self, epoch: Epoch, fence_lsn: Lsn) -> Option<Lsn> {
        let keep = if epoch.0 == self.fenced_epoch.0.saturating_add(1) {
            fence_lsn
        } else {
            fence_lsn.min(self.commit_lsn.unwrap_or(Lsn(0)))
        };
        self.fenced_epoch = epoch;
        self.fence_lsn = fence_lsn;
        if self.next_lsn <= keep.saturating_next() {
            return None;
        }
        self.next_lsn = keep.saturating_next();
        // The entry kept last may be of an older epoch than the ones dropped, and so may the
        // next one the new primary sends (its log holds what was acknowledged, not what this
        // node dropped): comparing it with a dropped entry's epoch refused that log forever.
        self.last_epoch = None;
        self.confirmed = self
            .confirmed
            .map(|confirmed| confirmed.min(keep))
            .filter(|confirmed| confirmed.0 > 0);
        Some(keep)
    }

    fn entry_received(&mut self, entry: Entry) {
        if entry.epoch < self.promised_epoch && entry.lsn > self.fence_lsn {
            self.resubscribe(ResubscribeReason::StaleEpoch {
                epoch: entry.epoch,
                promised: self.promised_epoch,
                lsn: Some(entry.lsn),
            });
            return;
        }
        if let Some(previous) = self.last_epoch
            && entry.epoch < previous
        {
            self.resubscribe(ResubscribeReason::EpochRegressed {
                previous,
                found: entry.epoch,
                lsn: entry.lsn,
            });
            return;
        }
        if entry.lsn != self.next_lsn {
            self.resubscribe(ResubscribeReason::Gap {
                expected: self.next_lsn,
                found: entry.lsn,
            });
            return;
        }
        self.next_lsn = entry.lsn.saturating_next();
        self.last_epoch = Some(entry.epoch);
        self.actions.push_back(match self.role {
            FollowerRole::Standby => FollowerAction::Append(entry),
            FollowerRole::Reader => FollowerAction::Apply(entry),
        });
    }

    /// Records a confirmation; returns whether it moved forward. Never past what was accepted.
    fn confirm(&mut self, lsn: Lsn) -> bool {
        let accepted = self.next_lsn.0.checked_sub(1).map(Lsn);
        let bounded = accepted.map_or(lsn, |accepted| lsn.min(accepted));
        if self.confirmed.is_some_and(|confirmed| bounded <= confirmed) {
            return false;
        }
        self.confirmed = Some(bounded);
        self.phase != FollowerPhase::Idle
    }

    fn resubscribe(&mut self, reason: ResubscribeReason) {
        self.phase = FollowerPhase::Idle;
        self.commit_heard = false;
        self.actions
            .push_back(FollowerAction::Resubscribe { reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: u64, lsn: u64) -> Frame {
        Frame::Entry(Entry {
            epoch: Epoch(epoch),
            lsn: Lsn(lsn),
            payload: vec![lsn as u8],
        })
    }

    fn drain(state: &mut FollowerState) -> Vec<FollowerAction> {
        std::iter::from_fn(|| state.poll_action()).collect()
    }

    #[test]
    fn test_should_know_the_commit_lsn_only_once_the_stream_told_it() {
        let mut state =
            FollowerState::new("r", FollowerRole::Reader, (Epoch(1), Lsn(0)), Lsn(1), 1000);
        state.subscribe(0);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(1),
                start_lsn: Lsn(1),
                fence_lsn: None,
            },
            0,
        );
        assert!(!state.commit_heard(), "nothing told yet");
        state.frame_received(Frame::KeepAlive, 0);
        assert!(state.commit_heard(), "a keep-alive follows the commit lsn");
        state.tick(5000);
        assert!(!state.commit_heard(), "a new stream tells it again");
        state.subscribe(5000);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(1),
                start_lsn: Lsn(1),
                fence_lsn: None,
            },
            5000,
        );
        state.frame_received(Frame::Commit { commit_lsn: Lsn(7) }, 5000);
        assert!(state.commit_heard());
        assert_eq!(state.commit_lsn(), Some(Lsn(7)));
    }

    fn streaming(role: FollowerRole, epoch: u64, next: u64) -> FollowerState {
        let mut state = FollowerState::new("f", role, (Epoch(epoch), Lsn(0)), Lsn(next), 1_000);
        state.subscribe(0);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(epoch),
                start_lsn: Lsn(next),
                fence_lsn: None,
            },
            0,
        );
        drain(&mut state);
        state
    }

    #[test]
    fn test_should_append_in_order_and_ack_after_durable() {
        let mut state = FollowerState::new(
            "s1",
            FollowerRole::Standby,
            (Epoch(2), Lsn(0)),
            Lsn(5),
            1_000,
        );
        state.subscribe(0);
        assert_eq!(
            drain(&mut state),
            [FollowerAction::Subscribe(Subscribe {
                node_id: "s1".into(),
                role: FollowerRole::Standby,
                known_epoch: Epoch(2),
                from_lsn: Lsn(5),
            })]
        );
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(2),
                start_lsn: Lsn(5),
                fence_lsn: None,
            },
            1,
        );
        state.frame_received(entry(2, 5), 2);
        state.frame_received(entry(2, 6), 2);
        let actions = drain(&mut state);
        assert!(
            matches!(&actions[..], [FollowerAction::Append(a), FollowerAction::Append(b)] if a.lsn == Lsn(5) && b.lsn == Lsn(6)),
            "{actions:?}"
        );
        state.durable(Lsn(6));
        assert_eq!(
            drain(&mut state),
            [FollowerAction::SendAck {
                durable_lsn: Lsn(6)
            }]
        );
        // Never ack what was not accepted.
        state.durable(Lsn(9));
        assert!(drain(&mut state).is_empty());
    }

    #[test]
    fn test_should_refuse_entries_of_an_epoch_older_than_the_newest_promote() {
        let mut state = streaming(FollowerRole::Standby, 3, 1);
        state.frame_received(entry(2, 1), 1);
        assert_eq!(
            drain(&mut state),
            [FollowerAction::Resubscribe {
                reason: ResubscribeReason::StaleEpoch {
                    epoch: Epoch(2),
                    promised: Epoch(3),
                    lsn: Some(Lsn(1)),
                }
            }]
        );
        assert_eq!(state.phase(), FollowerPhase::Idle);
        assert_eq!(state.next_lsn(), Lsn(1), "nothing was accepted");
        // Leftovers of the dropped stream are ignored.
        state.frame_received(entry(3, 1), 1);
        assert!(drain(&mut state).is_empty());
    }

    #[test]
    fn test_should_keep_older_epochs_entries_up_to_the_fence() {
        let mut state = FollowerState::new(
            "s",
            FollowerRole::Standby,
            (Epoch(3), Lsn(2)),
            Lsn(1),
            1_000,
        );
        state.subscribe(0);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(3),
                start_lsn: Lsn(1),
                fence_lsn: None,
            },
            0,
        );
        for lsn in 1..=3 {
            state.frame_received(entry(2, lsn), 1);
        }
        let actions = drain(&mut state);
        assert_eq!(actions.len(), 4, "{actions:?}");
        assert!(matches!(&actions[2], FollowerAction::Append(e) if e.lsn == Lsn(2)));
        assert_eq!(
            actions[3],
            FollowerAction::Resubscribe {
                reason: ResubscribeReason::StaleEpoch {
                    epoch: Epoch(2),
                    promised: Epoch(3),
                    lsn: Some(Lsn(3)),
                }
            }
        );
    }

    /// The store unreachable, a reader follows the new primary of epoch 3 before the catalog
    /// shows its promote: the older fence (2) still refuses entries above it, but once the
    /// catalog shows the promote its fence (5) counts, although epoch 3 is already promised.
    #[test]
    fn test_should_learn_the_fence_of_an_epoch_a_primary_announced_first() {
        let mut state =
            FollowerState::new("r", FollowerRole::Reader, (Epoch(2), Lsn(2)), Lsn(3), 1_000);
        state.subscribe(0);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(3),
                start_lsn: Lsn(3),
                fence_lsn: None,
            },
            0,
        );
        assert_eq!(state.promised_epoch(), Epoch(3));
        assert_eq!(state.fenced_epoch(), Epoch(2));
        drain(&mut state);
        state.frame_received(entry(2, 3), 1);
        assert!(matches!(
            drain(&mut state).as_slice(),
            [FollowerAction::Resubscribe {
                reason: ResubscribeReason::StaleEpoch { .. }
            }]
        ));
        state.promote_seen(Epoch(3), Lsn(5));
        assert_eq!(state.fenced_epoch(), Epoch(3));
        assert!(
            drain(&mut state).is_empty(),
            "no resubscribe: not a newer epoch"
        );
        state.subscribe(2);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(3),
                start_lsn: Lsn(3),
                fence_lsn: None,
            },
            2,
        );
        drain(&mut state);
        for lsn in 3..=5 {
            state.frame_received(entry(2, lsn), 2);
        }
        state.frame_received(entry(3, 6), 2);
        assert_eq!(state.next_lsn(), Lsn(7), "{:?}", drain(&mut state));
    }

    /// A reader streaming from the primary of epoch 1 that holds its entries 1..=7,
    /// acknowledged up to 4.
    fn reader_holding_seven() -> FollowerState {
        let mut state = streaming(FollowerRole::Reader, 1, 1);
        for lsn in 1..=7 {
            state.frame_received(entry(1, lsn), 1);
            state.applied(Lsn(lsn));
        }
        state.frame_received(Frame::Commit { commit_lsn: Lsn(4) }, 1);
        drain(&mut state);
        state
    }

    /// [`reader_holding_seven`], subscribed again, to the primary of `epoch`.
    fn resubscribed_to(epoch: u64, start_lsn: u64, fence_lsn: Option<u64>) -> FollowerState {
        let mut state = reader_holding_seven();
        state.stream_ended();
        state.subscribe(2);
        drain(&mut state);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(epoch),
                start_lsn: Lsn(start_lsn),
                fence_lsn: fence_lsn.map(Lsn),
            },
            2,
        );
        state
    }

    /// [`resubscribed_to`] epoch 2, which kept epoch 1 up to `fence_lsn`.
    fn resubscribed_past_a_fence(start_lsn: u64, fence_lsn: Option<u64>) -> FollowerState {
        resubscribed_to(2, start_lsn, fence_lsn)
    }

    #[test]
    fn test_should_drop_what_it_holds_above_a_fence_the_primary_tells() {
        let mut state = resubscribed_past_a_fence(6, Some(5));
        assert_eq!(
            drain(&mut state),
            [FollowerAction::DropAbove {
                epoch: Epoch(2),
                lsn: Lsn(5)
            }]
        );
        assert_eq!(state.next_lsn(), Lsn(6));
        assert_eq!(state.confirmed(), Some(Lsn(5)));
        assert_eq!(state.fenced_epoch(), Epoch(2));
        assert_eq!(state.visible_lsn(), Some(Lsn(4)));
        // The new primary's own entries follow the fence.
        state.frame_received(entry(2, 6), 3);
        assert!(matches!(
            drain(&mut state).as_slice(),
            [FollowerAction::Apply(Entry { lsn: Lsn(6), .. })]
        ));
        // The catalog showing the same promote later changes nothing.
        state.promote_seen(Epoch(2), Lsn(5));
        assert!(drain(&mut state).is_empty());
        assert_eq!(state.phase(), FollowerPhase::Streaming { epoch: Epoch(2) });
    }

    #[test]
    fn test_should_drop_above_the_fence_before_skipping_what_the_primary_no_longer_keeps() {
        let mut state = resubscribed_past_a_fence(9, Some(5));
        assert_eq!(
            drain(&mut state),
            [
                FollowerAction::DropAbove {
                    epoch: Epoch(2),
                    lsn: Lsn(5)
                },
                FollowerAction::SkipTo { lsn: Lsn(9) }
            ]
        );
    }

    #[test]
    fn test_should_keep_what_it_holds_up_to_the_fence() {
        // The new primary kept everything this reader holds.
        let mut state = resubscribed_past_a_fence(8, Some(9));
        assert!(drain(&mut state).is_empty());
        assert_eq!(state.next_lsn(), Lsn(8));
        // A primary of the earlier frame layout tells no fence: as before, nothing is dropped
        // until the catalog shows the promote.
        let mut state = resubscribed_past_a_fence(8, None);
        assert!(drain(&mut state).is_empty());
        assert_eq!(state.fenced_epoch(), Epoch(1));
    }

    #[test]
    fn test_should_keep_only_what_was_acknowledged_across_a_skipped_epoch() {
        // Epoch 3's primary tells its fence, 6; epoch 2's is unknown and may have been lower
        // (its primary may have written other entries from 5 on). Only what was acknowledged,
        // up to 4, is in every later log. The primary, for its part, claims nothing for such a
        // follower (see `stream_from`) and streams from its oldest entry.
        let mut state = resubscribed_to(3, 1, Some(6));
        assert_eq!(
            drain(&mut state),
            [
                FollowerAction::DropAbove {
                    epoch: Epoch(3),
                    lsn: Lsn(4)
                },
                FollowerAction::Resubscribe {
                    reason: ResubscribeReason::Gap {
                        expected: Lsn(5),
                        found: Lsn(1)
                    }
                }
            ]
        );
        // Asked again, knowing epoch 3, it gets the stream from 5.
        state.subscribe(3);
        assert!(matches!(
            drain(&mut state).as_slice(),
            [FollowerAction::Subscribe(Subscribe {
                known_epoch: Epoch(3),
                from_lsn: Lsn(5),
                ..
            })]
        ));
    }

    #[test]
    fn test_should_take_entries_of_older_epochs_after_dropping_newer_ones() {
        // A reader of epoch 3 holding epoch 1's entries 1..=4 (acknowledged) and epoch 3's own
        // 5..=7 (never acknowledged: its primary died before a standby had them).
        let mut state =
            FollowerState::new("r", FollowerRole::Reader, (Epoch(3), Lsn(4)), Lsn(1), 1_000);
        state.subscribe(0);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(3),
                start_lsn: Lsn(1),
                fence_lsn: Some(Lsn(4)),
            },
            0,
        );
        for (epoch, lsn) in [(1, 1), (1, 2), (1, 3), (1, 4), (3, 5), (3, 6), (3, 7)] {
            state.frame_received(entry(epoch, lsn), 0);
        }
        state.frame_received(Frame::Commit { commit_lsn: Lsn(4) }, 0);
        drain(&mut state);
        // Epoch 5's primary (epoch 4 unknown here) kept up to 9: across the skipped epoch only
        // what was acknowledged stays, and its log goes on with an entry of epoch 2 that epoch
        // 4's promote kept.
        state.stream_ended();
        state.subscribe(1);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(5),
                start_lsn: Lsn(5),
                fence_lsn: Some(Lsn(9)),
            },
            1,
        );
        assert_eq!(
            drain(&mut state)[1..],
            [FollowerAction::DropAbove {
                epoch: Epoch(5),
                lsn: Lsn(4)
            }]
        );
        state.frame_received(entry(2, 5), 1);
        state.frame_received(entry(5, 6), 1);
        let actions = drain(&mut state);
        assert!(
            matches!(
                actions.as_slice(),
                [
                    FollowerAction::Apply(Entry { lsn: Lsn(5), .. }),
                    FollowerAction::Apply(Entry { lsn: Lsn(6), .. }),
                ]
            ),
            "{actions:?}"
        );
        // Within the stream, epochs still never go backwards.
        state.frame_received(entry(2, 7), 1);
        assert!(matches!(
            drain(&mut state).as_slice(),
            [FollowerAction::Resubscribe {
                reason: ResubscribeReason::EpochRegressed { .. }
            }]
        ));
    }

    #[test]
    fn test_should_keep_a_log_of_the_previous_epoch_up_to_the_fence_only() {
        // A standby starting with a WAL whose last entry is of epoch `last` (its state starts
        // from that epoch, having heard no commit LSN); the catalog shows epoch 3's promote,
        // which kept up to 10.
        let keep = |last: u64, next: u64| {
            let mut state = FollowerState::new(
                "s",
                FollowerRole::Standby,
                (Epoch(last), Lsn(10)),
                Lsn(next),
                1_000,
            );
            state.promote_seen(Epoch(3), Lsn(10))
        };
        assert_eq!(keep(2, 15), Some(Lsn(10)));
        assert_eq!(keep(2, 11), None);
        // Its own epoch's entries (or none): nothing to cut.
        assert_eq!(keep(3, 15), None);
        // Epoch 2's fence, unknown, may have been lower: nothing is kept.
        assert_eq!(keep(1, 15), Some(Lsn(0)));
        assert_eq!(keep(1, 5), Some(Lsn(0)));
        assert_eq!(keep(1, 1), None);
    }

    #[test]
    fn test_should_drop_above_a_fence_the_catalog_shows() {
        // The catalog shows epoch 2's promote (fence 5) while this reader streams epoch 1's
        // entries up to 7: the caller drops 6 and 7, and the stream is asked again.
        let mut state = reader_holding_seven();
        assert_eq!(state.promote_seen(Epoch(2), Lsn(5)), Some(Lsn(5)));
        assert_eq!(state.next_lsn(), Lsn(6));
        assert!(matches!(
            drain(&mut state).as_slice(),
            [FollowerAction::Resubscribe {
                reason: ResubscribeReason::NewPrimary { epoch: Epoch(2) }
            }]
        ));
        // Across a skipped epoch only the acknowledged part is kept.
        assert_eq!(state.promote_seen(Epoch(4), Lsn(5)), Some(Lsn(4)));
        assert_eq!(state.next_lsn(), Lsn(5));
        assert_eq!(state.confirmed(), Some(Lsn(4)));
        // A promote it already knows changes nothing.
        assert_eq!(state.promote_seen(Epoch(4), Lsn(5)), None);
    }

    #[test]
    fn test_should_resubscribe_when_a_stream_starts_below_what_it_holds() {
        // The fence of epoch 2 known already: a stream from below the next LSN is not the
        // stream asked for.
        let mut state = resubscribed_past_a_fence(6, Some(5));
        drain(&mut state);
        state.stream_ended();
        state.subscribe(3);
        drain(&mut state);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(2),
                start_lsn: Lsn(4),
                fence_lsn: Some(Lsn(5)),
            },
            3,
        );
        assert_eq!(
            drain(&mut state),
            [FollowerAction::Resubscribe {
                reason: ResubscribeReason::Gap {
                    expected: Lsn(6),
                    found: Lsn(4)
                }
            }]
        );
    }

    #[test]
    fn test_should_refuse_a_primary_older_than_the_newest_promote() {
        let mut state =
            FollowerState::new("r", FollowerRole::Reader, (Epoch(4), Lsn(0)), Lsn(1), 1_000);
        state.subscribe(0);
        drain(&mut state);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(3),
                start_lsn: Lsn(1),
                fence_lsn: None,
            },
            1,
        );
        assert!(matches!(
            &drain(&mut state)[..],
            [FollowerAction::Resubscribe {
                reason: ResubscribeReason::StaleEpoch { lsn: None, .. }
            }]
        ));
    }

    #[test]
    fn test_should_resubscribe_on_a_gap_from_the_expected_lsn() {
        let mut state = streaming(FollowerRole::Reader, 1, 10);
        state.frame_received(entry(1, 10), 1);
        state.frame_received(entry(1, 12), 1);
        let actions = drain(&mut state);
        assert!(matches!(&actions[0], FollowerAction::Apply(e) if e.lsn == Lsn(10)));
        assert_eq!(
            actions[1],
            FollowerAction::Resubscribe {
                reason: ResubscribeReason::Gap {
                    expected: Lsn(11),
                    found: Lsn(12)
                }
            }
        );
        state.subscribe(5);
        assert!(matches!(
            &drain(&mut state)[..],
            [FollowerAction::Subscribe(Subscribe {
                from_lsn: Lsn(11),
                ..
            })]
        ));
    }

    #[test]
    fn test_should_expose_only_rows_up_to_the_commit_lsn() {
        let mut state = streaming(FollowerRole::Reader, 1, 1);
        for lsn in 1..=3 {
            state.frame_received(entry(1, lsn), 1);
        }
        state.applied(Lsn(3));
        assert_eq!(state.visible_lsn(), None, "nothing acknowledged yet");
        state.frame_received(Frame::Commit { commit_lsn: Lsn(2) }, 1);
        assert_eq!(state.visible_lsn(), Some(Lsn(2)));
        state.frame_received(Frame::Commit { commit_lsn: Lsn(9) }, 1);
        assert_eq!(state.visible_lsn(), Some(Lsn(3)));
        let actions = drain(&mut state);
        assert!(actions.contains(&FollowerAction::SendApplied {
            applied_lsn: Lsn(3)
        }));
        assert!(actions.contains(&FollowerAction::CommitAdvanced { commit_lsn: Lsn(9) }));
    }

    #[test]
    fn test_should_skip_to_the_stream_start_and_pass_flush_notices() {
        let mut state =
            FollowerState::new("r", FollowerRole::Reader, (Epoch(1), Lsn(0)), Lsn(1), 1_000);
        state.subscribe(0);
        state.frame_received(
            Frame::Subscribed {
                epoch: Epoch(1),
                start_lsn: Lsn(50),
                fence_lsn: None,
            },
            0,
        );
        let notice = FlushNotice {
            seq: 3,
            tables: vec![("db/cpu".into(), Lsn(49))],
        };
        state.frame_received(Frame::FlushNotice(notice.clone()), 0);
        state.frame_received(entry(1, 50), 0);
        let actions = drain(&mut state);
        assert_eq!(actions[1], FollowerAction::SkipTo { lsn: Lsn(50) });
        assert_eq!(actions[2], FollowerAction::Flushed(notice));
        assert!(matches!(&actions[3], FollowerAction::Apply(e) if e.lsn == Lsn(50)));
    }

    #[test]
    fn test_should_drop_a_silent_primary_and_a_deposed_one() {
        let mut state = streaming(FollowerRole::Standby, 1, 1);
        state.tick(900);
        state.frame_received(Frame::KeepAlive, 900);
        state.tick(1_800);
        assert!(drain(&mut state).is_empty(), "keep-alives count as heard");
        state.tick(1_901);
        assert_eq!(
            drain(&mut state),
            [FollowerAction::Resubscribe {
                reason: ResubscribeReason::Silent { silent_ms: 1_001 }
            }]
        );

        let mut state = streaming(FollowerRole::Standby, 1, 1);
        state.promote_seen(Epoch(1), Lsn(0));
        assert!(drain(&mut state).is_empty());
        state.promote_seen(Epoch(2), Lsn(0));
        assert_eq!(
            drain(&mut state),
            [FollowerAction::Resubscribe {
                reason: ResubscribeReason::NewPrimary { epoch: Epoch(2) }
            }]
        );
    }

    #[test]
    fn test_should_resubscribe_on_frames_out_of_place() {
        let mut state =
            FollowerState::new("r", FollowerRole::Reader, (Epoch(1), Lsn(0)), Lsn(1), 1_000);
        state.subscribe(0);
        drain(&mut state);
        state.frame_received(entry(1, 1), 0);
        assert_eq!(
            drain(&mut state),
            [FollowerAction::Resubscribe {
                reason: ResubscribeReason::Unexpected {
                    kind: FrameKind::Entry
                }
            }]
        );
    }
}
