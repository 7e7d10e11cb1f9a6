//! [`PrimaryState`]: the primary's side of replication as a pure state machine: which entries
//! to send to whom, which writes may be acknowledged, and when the in-sync set (ISR) must change.
//!
//! No sockets, no clock, no tasks: every input is a method call that takes the current time in
//! milliseconds (from any monotonic origin), and the decisions queue up as [`PrimaryAction`]s
//! that the shell drains with [`PrimaryState::poll_action`] (the quinn-proto pattern). The shell
//! (`transport.rs` in production, a model in the property tests) carries them out.
//!
//! # The ISR invariant
//! Nothing is acknowledged that some member of the committed ISR lacks. The acknowledged LSN is
//! the minimum of the local durable LSN and the durable LSN of every standby in the *ack set*:
//! the committed ISR, plus a standby being admitted. A member leaves the committed ISR only when
//! the shell reports a committed catalog record ([`PrimaryState::isr_committed`]); while its
//! removal is only proposed, it is still in the ack set, so acknowledgements wait for it. A
//! standby is proposed for admission only once it holds everything already acknowledged, and it
//! is in the ack set from the moment admission starts, so the acknowledged LSN cannot run past it
//! while the record is being committed. `docs/0006-replication.md`, section 4, has the full
//! argument and the state diagram.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::lsn::Lsn;
use crate::replication::frame::FollowerRole;

/// What the primary's state machine is tuned with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryConfig {
    /// A standby whose oldest unacknowledged entry became durable locally longer ago than this
    /// (milliseconds) is proposed for removal from the ISR (`cluster.replication_lag_limit`). A
    /// standby is admitted when its lag is at most half of it, so one hovering near the limit
    /// does not flap in and out. A member gone silent while another keeps up is removed sooner,
    /// at a fifth of it ([`RemovalReason::Outpaced`]).
    pub lag_limit_ms: u64,
    /// The least number of in-sync standbys a write needs (`cluster.replication_ack`). With
    /// fewer committed ISR members nothing is acknowledged, and writes should be refused (503).
    pub min_in_sync: usize,
    /// A reader whose sent-but-unapplied entries exceed this many LSNs, and which has reported
    /// no progress for [`PrimaryConfig::lag_limit_ms`], is cut; it resubscribes from what it
    /// has. A reader that is merely far behind but applying (catching up) is left alone; one
    /// that falls behind faster than its queue drains is cut by the shell's bounded queue.
    pub max_reader_backlog: u64,
}

impl PrimaryConfig {
    /// Returns short limits for tests: 1 s lag limit, no required standby, 1000 LSNs of
    /// reader backlog.
    pub fn for_test() -> Self {
        Self {
            lag_limit_ms: 1_000,
            min_in_sync: 0,
            max_reader_backlog: 1_000,
        }
    }
}

/// Why a standby is proposed for removal from the ISR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// Its connection ended (or was cut).
    Disconnected,
    /// Its oldest unacknowledged entry is older than the lag limit.
    Lagging {
        /// How far behind it was, in milliseconds.
        lag_ms: u64,
    },
    /// It has said nothing for a fifth of the lag limit and lacks entries that old, while
    /// another member kept up: this primary's packets get through, so the standby is what is
    /// cut off (killed, frozen, partitioned away), and waiting longer only stalls writes.
    Outpaced {
        /// How far behind it was, in milliseconds.
        lag_ms: u64,
    },
}

/// A proposed change of the ISR, one member at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrChange {
    /// Remove a standby.
    Remove {
        /// The standby.
        node: String,
        /// Why.
        reason: RemovalReason,
    },
    /// Add a standby that caught up.
    Add {
        /// The standby.
        node: String,
    },
}

/// Why a follower's stream is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// A reader's unapplied backlog passed [`PrimaryConfig::max_reader_backlog`] and it made
    /// no progress for the lag limit.
    ReaderBacklog {
        /// Its backlog in LSNs.
        backlog: u64,
    },
    /// The follower subscribed again; the older stream is dropped.
    Superseded,
}

/// What the shell must do. Drained with [`PrimaryState::poll_action`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryAction {
    /// Send the entries `from..=through` (all locally durable) to `node`, after everything sent
    /// to it before.
    SendEntries {
        /// The follower.
        node: String,
        /// First LSN to send (the one after the last sent).
        from: Lsn,
        /// Last LSN to send.
        through: Lsn,
    },
    /// Every write up to `through` is durable where it must be: answer its clients, make it
    /// visible, and tell the followers (the commit LSN).
    Acknowledge {
        /// The new acknowledged (commit) LSN.
        through: Lsn,
    },
    /// Commit an `isr` record with `in_sync` to the catalog, then report the outcome with
    /// [`PrimaryState::isr_committed`] or [`PrimaryState::isr_proposal_failed`]. No other
    /// change is proposed meanwhile.
    ProposeIsr {
        /// The complete proposed set.
        in_sync: BTreeSet<String>,
        /// The one change it makes.
        change: IsrChange,
    },
    /// Close the follower's stream.
    Cut {
        /// The follower.
        node: String,
        /// Why.
        reason: CutReason,
    },
    /// Refuse a subscription.
    Refuse {
        /// The follower.
        node: String,
        /// Why, for its logs.
        reason: String,
    },
}

/// What the primary knows about one follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerView {
    /// Standby or reader.
    pub role: FollowerRole,
    /// Whether its stream is up.
    pub connected: bool,
    /// Standby: durable (fsynced) LSN; reader: applied LSN. `None` before it said anything.
    /// Survives a disconnect: what a standby fsynced stays on its disk.
    pub confirmed: Option<Lsn>,
    /// The last LSN handed to the shell for it.
    pub sent_through: Option<Lsn>,
    /// When it last reported progress (milliseconds, the callers' clock).
    pub last_report_ms: u64,
    /// Its last stream ended because it stopped hearing this primary ([`PrimaryState::unheard`]).
    pub unheard: bool,
}

/// The primary's replication state. See the module docs.
#[derive(Debug)]
pub struct PrimaryState {
    config: PrimaryConfig,
    /// Locally durable LSN (fsynced on the primary).
    local_durable: Option<Lsn>,
    /// When each batch became locally durable, ascending: `(last lsn of the batch, ms)`. A
    /// standby's lag is the age of the first batch it has not confirmed. Trimmed below what
    /// every tracked standby confirmed.
    durable_points: VecDeque<(Lsn, u64)>,
    /// The highest acknowledged LSN; never decreases.
    acknowledged: Option<Lsn>,
    /// The ISR as committed in the catalog.
    committed_isr: BTreeSet<String>,
    /// The change proposed to the catalog and not yet reported committed or failed.
    proposal: Option<(BTreeSet<String>, IsrChange)>,
    /// A standby counted in the ack set while it closes the last gap before its addition is
    /// proposed (and until that addition commits or fails).
    admitting: Option<String>,
    followers: BTreeMap<String, FollowerView>,
    actions: VecDeque<PrimaryAction>,
}

impl PrimaryState {
    /// Creates the state of a primary whose WAL is durable up to `local_durable` and whose
    /// catalog names `committed_isr` as in sync (the promote record's set, or the latest `isr`
    /// record's). Members start unconfirmed: nothing above what is acknowledged already is
    /// acknowledged until each has reported, or has been removed by a committed record.
    pub fn new(
        config: PrimaryConfig,
        local_durable: Option<Lsn>,
        committed_isr: impl IntoIterator<Item = String>,
        now_ms: u64,
    ) -> Self {
        let mut state = Self {
            config,
            local_durable,
            durable_points: VecDeque::new(),
            acknowledged: None,
            committed_isr: committed_isr.into_iter().collect(),
            proposal: None,
            admitting: None,
            followers: BTreeMap::new(),
            actions: VecDeque::new(),
        };
        if let Some(lsn) = local_durable {
            state.durable_points.push_back((lsn, now_ms));
        }
        state.evaluate(now_ms);
        state
    }

    /// Returns the next action for the shell, if any.
    pub fn poll_action(&mut self) -> Option<PrimaryAction> {
        self.actions.pop_front()
    }

    /// Returns the highest acknowledged LSN (the commit LSN followers are told).
    pub fn acknowledged(&self) -> Option<Lsn> {
        self.acknowledged
    }

    /// Returns the locally durable LSN.
    pub fn local_durable(&self) -> Option<Lsn> {
        self.local_durable
    }

    /// Returns whether writes can be acknowledged at all: the committed ISR has at least
    /// [`PrimaryConfig::min_in_sync`] members. When false, refuse new writes (503).
    pub fn writes_available(&self) -> bool {
        self.committed_isr.len() >= self.config.min_in_sync
    }

    /// Returns the ISR as committed in the catalog.
    pub fn committed_isr(&self) -> &BTreeSet<String> {
        &self.committed_isr
    }

    /// Returns the pending proposal, if any.
    pub fn pending_proposal(&self) -> Option<&IsrChange> {
        self.proposal.as_ref().map(|(_, change)| change)
    }

    /// Returns what is known about each follower.
    pub fn followers(&self) -> &BTreeMap<String, FollowerView> {
        &self.followers
    }

    /// Returns how far `node` is behind, in milliseconds: the age of the oldest locally durable
    /// batch it has not confirmed (0 when it has confirmed everything).
    pub fn lag_ms(&self, node: &str, now_ms: u64) -> u64 {
        let confirmed = self.followers.get(node).and_then(|view| view.confirmed);
        self.lag_of(confirmed, now_ms)
    }

    /// Input: entries up to `lsn` are durable locally (the WAL writer's group commit returned).
    /// Streams them to every connected follower and re-evaluates acknowledgements.
    pub fn local_durable_advanced(&mut self, lsn: Lsn, now_ms: u64) {
        if self.local_durable.is_some_and(|durable| durable >= lsn) {
            return;
        }
        self.local_durable = Some(lsn);
        self.durable_points.push_back((lsn, now_ms));
        let nodes: Vec<String> = self
            .followers
            .iter()
            .filter(|(_, view)| view.connected)
            .map(|(node, _)| node.clone())
            .collect();
        for node in nodes {
            self.send_pending(&node);
        }
        self.evaluate(now_ms);
    }

    /// Input: `node` subscribed as `role` and needs everything from `from_lsn` on (it holds
    /// everything below: a standby on disk, a reader in memory or in flushed objects). The shell
    /// passes the LSN the stream really starts at, if entries below it are no longer kept.
    /// A follower that claims entries the primary does not have durably is refused: its log
    /// diverged (it holds unacknowledged entries of an older epoch).
    pub fn subscribed(&mut self, node: &str, role: FollowerRole, from_lsn: Lsn, now_ms: u64) {
        let next_local = self
            .local_durable
            .map_or(Lsn(0), |lsn| lsn.saturating_next());
        if from_lsn > next_local && from_lsn > Lsn(1) {
            self.actions.push_back(PrimaryAction::Refuse {
                node: node.to_owned(),
                reason: format!(
                    "subscription from lsn {from_lsn} is past this primary's durable end \
                     (next lsn {next_local})"
                ),
            });
            return;
        }
        if self.followers.get(node).is_some_and(|view| view.connected) {
            self.actions.push_back(PrimaryAction::Cut {
                node: node.to_owned(),
                reason: CutReason::Superseded,
            });
        }
        // LSN 0 is never assigned: subscribing from 1 (or 0) holds nothing.
        let holds = (from_lsn.0 > 1).then(|| Lsn(from_lsn.0 - 1));
        let view = self
            .followers
            .entry(node.to_owned())
            .or_insert_with(|| FollowerView {
                role,
                connected: true,
                confirmed: None,
                sent_through: None,
                last_report_ms: now_ms,
                unheard: false,
            });
        view.role = role;
        view.connected = true;
        view.unheard = false;
        // What it holds now, even if lower than before (a reader restarted empty).
        view.confirmed = holds;
        view.sent_through = holds;
        view.last_report_ms = now_ms;
        self.send_pending(node);
        self.evaluate(now_ms);
    }

    /// Input: `node` confirmed `lsn` (a standby's fsynced ack, a reader's applied report).
    /// Confirmations never move backwards, and never past what was sent.
    pub fn confirmed(&mut self, node: &str, lsn: Lsn, now_ms: u64) {
        let Some(view) = self.followers.get_mut(node) else {
            return;
        };
        // LSN 0 is never assigned: confirming it confirms nothing.
        if !view.connected || lsn == Lsn(0) {
            return;
        }
        let bounded = view.sent_through.map_or(lsn, |sent| lsn.min(sent));
        if view.confirmed.is_none_or(|confirmed| bounded > confirmed) {
            view.confirmed = Some(bounded);
        }
        view.last_report_ms = now_ms;
        self.evaluate(now_ms);
    }

    /// Input: `node`'s stream ended (closed, timed out, or cut by the shell). A member of the
    /// ISR is removed at once.
    pub fn disconnected(&mut self, node: &str, now_ms: u64) {
        self.ended(node, false, now_ms);
    }

    /// Input: `node` closed its stream because it stopped hearing this primary. Its close got
    /// through, so this primary's own packets are what is lost, and the follower, if a standby,
    /// may be about to replace it: a member of the ISR stays in it until its lag passes the lag
    /// limit, as if connected. Removing it at once would leave no standby allowed to take over
    /// from a primary nobody can hear.
    pub fn unheard(&mut self, node: &str, now_ms: u64) {
        self.ended(node, true, now_ms);
    }

    fn ended(&mut self, node: &str, unheard: bool, now_ms: u64) {
        if let Some(view) = self.followers.get_mut(node) {
            view.connected = false;
            view.unheard = unheard;
        }
        self.evaluate(now_ms);
    }

    /// Input: time passed. Call it periodically (a fraction of the lag limit), so that lag is
    /// noticed without any other input.
    pub fn tick(&mut self, now_ms: u64) {
        self.evaluate(now_ms);
    }

    /// Input: the catalog committed an ISR of `in_sync` (the proposed one, or any other that
    /// became current). Takes effect now; the pending proposal, if any, is settled.
    pub fn isr_committed(&mut self, in_sync: impl IntoIterator<Item = String>, now_ms: u64) {
        self.committed_isr = in_sync.into_iter().collect();
        self.proposal = None;
        if self
            .admitting
            .as_ref()
            .is_some_and(|node| self.committed_isr.contains(node))
        {
            self.admitting = None;
        }
        self.evaluate(now_ms);
    }

    /// Input: committing the pending proposal failed (or its outcome is unknown and the shell
    /// gave up). The committed ISR is unchanged; the change is proposed again if still due.
    pub fn isr_proposal_failed(&mut self, now_ms: u64) {
        self.proposal = None;
        self.evaluate(now_ms);
    }

    /// Queues the entries `node` has not been sent yet.
    fn send_pending(&mut self, node: &str) {
        let Some(durable) = self.local_durable else {
            return;
        };
        let Some(view) = self.followers.get_mut(node) else {
            return;
        };
        let from = view
            .sent_through
            .map_or(Lsn(1), |sent| sent.saturating_next());
        if from > durable {
            return;
        }
        view.sent_through = Some(durable);
        self.actions.push_back(PrimaryAction::SendEntries {
            node: node.to_owned(),
            from,
            through: durable,
        });
    }

    /// Returns the lag of a follower that confirmed `confirmed`.
    fn lag_of(&self, confirmed: Option<Lsn>, now_ms: u64) -> u64 {
        self.durable_points
            .iter()
            .find(|(lsn, _)| confirmed.is_none_or(|confirmed| *lsn > confirmed))
            .map_or(0, |(_, at)| now_ms.saturating_sub(*at))
    }

    /// Returns the standbys whose confirmation bounds acknowledgements.
    fn ack_set(&self) -> impl Iterator<Item = &String> {
        let adding = match &self.proposal {
            Some((_, IsrChange::Add { node })) => Some(node),
            _ => None,
        };
        self.committed_isr
            .iter()
            .chain(self.admitting.iter())
            .chain(adding)
    }

    /// Re-derives everything that depends on the inputs: acknowledgements, reader cuts, ISR
    /// proposals, and the trimming of the lag bookkeeping.
    fn evaluate(&mut self, now_ms: u64) {
        self.cut_stalled_readers(now_ms);
        self.propose_isr_change(now_ms);
        self.advance_acknowledged();
        self.trim_durable_points();
    }

    fn advance_acknowledged(&mut self) {
        if !self.writes_available() {
            return;
        }
        let Some(mut through) = self.local_durable else {
            return;
        };
        for node in self.ack_set() {
            match self.followers.get(node).and_then(|view| view.confirmed) {
                Some(confirmed) => through = through.min(confirmed),
                None => return,
            }
        }
        if self
            .acknowledged
            .is_none_or(|acknowledged| through > acknowledged)
        {
            self.acknowledged = Some(through);
            self.actions
                .push_back(PrimaryAction::Acknowledge { through });
        }
    }

    fn cut_stalled_readers(&mut self, now_ms: u64) {
        let limit = self.config.max_reader_backlog;
        let patience_ms = self.config.lag_limit_ms;
        let mut cut = Vec::new();
        for (node, view) in &mut self.followers {
            if !view.connected || view.role != FollowerRole::Reader {
                continue;
            }
            let sent = view.sent_through.map_or(0, |lsn| lsn.0);
            let applied = view.confirmed.map_or(0, |lsn| lsn.0);
            let backlog = sent.saturating_sub(applied);
            if backlog > limit && now_ms.saturating_sub(view.last_report_ms) > patience_ms {
                view.connected = false;
                cut.push(PrimaryAction::Cut {
                    node: node.clone(),
                    reason: CutReason::ReaderBacklog { backlog },
                });
            }
        }
        self.actions.extend(cut);
    }

    /// Proposes at most one ISR change: removals first (they unblock acknowledgements), then
    /// the admission of one caught-up standby.
    fn propose_isr_change(&mut self, now_ms: u64) {
        if self.proposal.is_some() {
            return;
        }
        let removal = self.committed_isr.iter().find_map(|node| {
            let view = self.followers.get(node);
            let lag_ms = self.lag_of(view.and_then(|view| view.confirmed), now_ms);
            if !view.is_some_and(|view| view.connected) {
                // Never connected since this primary started, or gone because it stopped
                // hearing us: a grace of one lag limit from the first durable batch it lacks,
                // as for any other lag.
                let patient = view.is_none_or(|view| view.unheard);
                if !patient || lag_ms > self.config.lag_limit_ms {
                    return Some((node.clone(), RemovalReason::Disconnected));
                }
            } else if lag_ms > self.config.lag_limit_ms {
                return Some((node.clone(), RemovalReason::Lagging { lag_ms }));
            }
            self.outpaced(node, view?, lag_ms, now_ms)
                .then(|| (node.clone(), RemovalReason::Outpaced { lag_ms }))
        });
        if let Some((node, reason)) = removal {
            let mut in_sync = self.committed_isr.clone();
            in_sync.remove(&node);
            self.propose(in_sync, IsrChange::Remove { node, reason });
            return;
        }

        if let Some(node) = self.admitting.clone() {
            let view = self.followers.get(&node);
            let confirmed = view.and_then(|view| view.confirmed);
            let lag_ms = self.lag_of(confirmed, now_ms);
            // Dropping an admission needs no record (it only holds acknowledgements back): one
            // that falls silent is dropped as soon as a member would be outpaced.
            let healthy = view.is_some_and(|view| {
                view.connected
                    && lag_ms <= self.config.lag_limit_ms
                    && !self.silent(view, lag_ms, now_ms, 1)
            });
            if !healthy {
                self.admitting = None;
            } else if holds_everything_acknowledged(
                confirmed,
                self.acknowledged,
                self.local_durable,
            ) {
                // It holds every acknowledged write, and being in the ack set keeps it so
                // until the record commits.
                let mut in_sync = self.committed_isr.clone();
                in_sync.insert(node.clone());
                self.propose(in_sync, IsrChange::Add { node });
                return;
            } else {
                return;
            }
        }

        let candidate = self.followers.iter().find(|(node, view)| {
            let lag_ms = self.lag_of(view.confirmed, now_ms);
            // Half the removal thresholds, so that a standby near one does not flap: one just
            // outpaced is still connected (until the idle timeout) and, having held every
            // acknowledgement back, holds everything acknowledged. A candidate must pass the
            // admission's health check above, or the call below recurses without end.
            view.connected
                && view.role == FollowerRole::Standby
                && (view.confirmed.is_some() || self.local_durable.is_none())
                && !self.committed_isr.contains(*node)
                && lag_ms * 2 <= self.config.lag_limit_ms
                && !self.silent(view, lag_ms, now_ms, 2)
        });
        if let Some((node, _)) = candidate {
            self.admitting = Some(node.clone());
            // Admission may be proposable at once (nothing acknowledged beyond what it holds).
            self.propose_isr_change(now_ms);
        }
    }

    /// Whether member `node` (`view`, `lag_ms` behind) fell silent while another member keeps
    /// up. The full lag limit is a wait for this primary's own packets to be lost: a primary
    /// nobody hears must keep its members until one of them may replace it, and then every
    /// member lags alike. A member that confirmed everything older than a twentieth of the lag
    /// limit shows that its packets arrive; so no removal here leaves the set without a member
    /// that kept up. A member that never connected to this primary, or subscribed or reported
    /// within the last fifth of the lag limit (catching up, or slow), is left to the lag limit.
    fn outpaced(&self, node: &str, view: &FollowerView, lag_ms: u64, now_ms: u64) -> bool {
        let quick_ms = self.config.lag_limit_ms / 5;
        self.silent(view, lag_ms, now_ms, 1)
            && self.committed_isr.iter().any(|peer| {
                peer != node
                    && self.followers.get(peer).is_some_and(|peer| {
                        peer.connected && self.lag_of(peer.confirmed, now_ms) * 4 <= quick_ms
                    })
            })
    }

    /// Whether a follower `lag_ms` behind has reported nothing for a fifth of the lag limit
    /// (divided by `margin` as well) and lacks entries that old.
    fn silent(&self, view: &FollowerView, lag_ms: u64, now_ms: u64, margin: u64) -> bool {
        let quick_ms = self.config.lag_limit_ms / 5 / margin;
        lag_ms > quick_ms && now_ms.saturating_sub(view.last_report_ms) > quick_ms
    }

    fn propose(&mut self, in_sync: BTreeSet<String>, change: IsrChange) {
        self.proposal = Some((in_sync.clone(), change.clone()));
        self.actions
            .push_back(PrimaryAction::ProposeIsr { in_sync, change });
    }

    /// Drops the durable points no tracked standby needs for its lag any more.
    fn trim_durable_points(&mut self) {
        let needed_from = self
            .followers
            .iter()
            .filter(|(node, view)| {
                view.role == FollowerRole::Standby
                    && (view.connected || self.committed_isr.contains(*node))
            })
            .map(|(_, view)| view.confirmed)
            .chain(
                // Members that never connected need the points from the start.
                self.committed_isr
                    .iter()
                    .filter(|node| !self.followers.contains_key(*node))
                    .map(|_| None),
            )
            .min();
        let keep_above = match needed_from {
            None => self.local_durable,
            Some(confirmed) => confirmed,
        };
        // Always keep the newest point: it is the lag origin of whoever subscribes next.
        while self.durable_points.len() > 1
            && self
                .durable_points
                .front()
                .is_some_and(|(lsn, _)| keep_above.is_some_and(|keep| *lsn <= keep))
        {
            self.durable_points.pop_front();
        }
    }
}

/// Whether a standby that confirmed `confirmed` holds every acknowledged write. A standby that
/// confirmed nothing holds everything only while the primary has nothing durable (a new
/// cluster): otherwise a primary whose writes need an in-sync standby could never admit one.
fn holds_everything_acknowledged(
    confirmed: Option<Lsn>,
    acknowledged: Option<Lsn>,
    local_durable: Option<Lsn>,
) -> bool {
    match confirmed {
        Some(confirmed) => acknowledged.is_none_or(|acknowledged| confirmed >= acknowledged),
        None => local_durable.is_none(),
    }
}
