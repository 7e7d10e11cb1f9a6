//! Tests of [`PrimaryState`]: examples of each transition, and a property test that drives it
//! with a model of its followers and the catalog through random interleavings, checking the
//! ISR invariant after every step and progress once everyone is healthy.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::lsn::Lsn;
use crate::replication::frame::FollowerRole;
use crate::replication::primary::*;

const LAG_LIMIT_MS: u64 = 1_000;

fn config(min_in_sync: usize) -> PrimaryConfig {
    PrimaryConfig {
        lag_limit_ms: LAG_LIMIT_MS,
        min_in_sync,
        max_reader_backlog: 50,
    }
}

fn drain(state: &mut PrimaryState) -> Vec<PrimaryAction> {
    std::iter::from_fn(|| state.poll_action()).collect()
}

fn set(nodes: &[&str]) -> BTreeSet<String> {
    nodes.iter().map(|node| node.to_string()).collect()
}

fn acks(actions: &[PrimaryAction]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|action| match action {
            PrimaryAction::Acknowledge { through } => Some(through.0),
            _ => None,
        })
        .collect()
}

#[test]
fn test_should_acknowledge_only_what_every_isr_member_holds() {
    let mut state = PrimaryState::new(config(1), None, ["s1".to_string()], 0);
    state.subscribed("s1", FollowerRole::Standby, Lsn(1), 0);
    state.local_durable_advanced(Lsn(3), 10);
    let actions = drain(&mut state);
    assert_eq!(
        actions,
        [PrimaryAction::SendEntries {
            node: "s1".into(),
            from: Lsn(1),
            through: Lsn(3)
        }]
    );
    assert_eq!(state.acknowledged(), None);
    state.confirmed("s1", Lsn(2), 20);
    assert_eq!(acks(&drain(&mut state)), [2]);
    state.confirmed("s1", Lsn(3), 20);
    assert_eq!(acks(&drain(&mut state)), [3]);
}

#[test]
fn test_should_wait_for_a_lagging_member_until_its_removal_commits() {
    let mut state = PrimaryState::new(config(0), None, ["s1".to_string()], 0);
    state.subscribed("s1", FollowerRole::Standby, Lsn(1), 0);
    state.local_durable_advanced(Lsn(5), 100);
    drain(&mut state);
    state.tick(100 + LAG_LIMIT_MS);
    assert!(drain(&mut state).is_empty(), "at the limit, not past it");
    state.tick(101 + LAG_LIMIT_MS);
    let actions = drain(&mut state);
    assert_eq!(
        actions,
        [PrimaryAction::ProposeIsr {
            in_sync: set(&[]),
            change: IsrChange::Remove {
                node: "s1".into(),
                reason: RemovalReason::Lagging {
                    lag_ms: LAG_LIMIT_MS + 1
                }
            }
        }]
    );
    // Proposed is not committed: still nothing acknowledged.
    state.local_durable_advanced(Lsn(6), 1_200);
    state.tick(1_300);
    assert!(acks(&drain(&mut state)).is_empty());
    state.isr_committed([], 1_400);
    assert_eq!(acks(&drain(&mut state)), [6]);
}

#[test]
fn test_should_propose_removing_a_disconnected_member_at_once() {
    let mut state = PrimaryState::new(config(0), Some(Lsn(4)), ["s1".to_string()], 0);
    state.subscribed("s1", FollowerRole::Standby, Lsn(5), 0);
    assert_eq!(acks(&drain(&mut state)), [4]);
    state.disconnected("s1", 1);
    assert!(matches!(
        &drain(&mut state)[..],
        [PrimaryAction::ProposeIsr {
            change: IsrChange::Remove {
                reason: RemovalReason::Disconnected,
                ..
            },
            ..
        }]
    ));
    // A failed commit proposes again.
    state.isr_proposal_failed(2);
    assert!(matches!(
        &drain(&mut state)[..],
        [PrimaryAction::ProposeIsr { .. }]
    ));
}

/// A standby that closed its stream because it stopped hearing the primary may be about to
/// take over, which only a member may: it stays in the ISR (acknowledgements wait for it) until
/// it lags past the limit.
#[test]
fn test_should_keep_a_member_that_stopped_hearing_us_until_it_lags() {
    let removal = |actions: &[PrimaryAction]| {
        matches!(
            actions,
            [PrimaryAction::ProposeIsr {
                change: IsrChange::Remove {
                    reason: RemovalReason::Disconnected,
                    ..
                },
                ..
            }]
        )
    };
    let mut state = PrimaryState::new(config(0), Some(Lsn(4)), ["s1".to_string()], 0);
    state.subscribed("s1", FollowerRole::Standby, Lsn(5), 0);
    assert_eq!(acks(&drain(&mut state)), [4]);
    state.unheard("s1", 1);
    state.tick(10 * LAG_LIMIT_MS);
    assert!(drain(&mut state).is_empty(), "it lacks nothing yet");
    state.local_durable_advanced(Lsn(6), 20 * LAG_LIMIT_MS);
    state.tick(21 * LAG_LIMIT_MS);
    assert!(drain(&mut state).is_empty(), "at the limit, not past it");
    state.tick(21 * LAG_LIMIT_MS + 1);
    assert!(removal(&drain(&mut state)));

    // Once it is back, a drop without a word removes it at once again.
    let mut state = PrimaryState::new(config(0), Some(Lsn(4)), ["s1".to_string()], 0);
    state.subscribed("s1", FollowerRole::Standby, Lsn(5), 0);
    state.unheard("s1", 1);
    state.subscribed("s1", FollowerRole::Standby, Lsn(5), 2);
    drain(&mut state);
    state.disconnected("s1", 3);
    assert!(removal(&drain(&mut state)));
}

/// A member that falls silent while another keeps up is removed at a fifth of the lag limit:
/// this primary's packets evidently get through. When every member falls silent (this primary
/// may be the one cut off), each keeps the whole lag limit, so that one may replace it.
#[test]
fn test_should_remove_a_silent_member_sooner_while_another_keeps_up() {
    let quick = LAG_LIMIT_MS / 5;
    let outpaced = |actions: &[PrimaryAction], who: &str| {
        actions.iter().any(|action| {
            matches!(
                action,
                PrimaryAction::ProposeIsr {
                    change: IsrChange::Remove {
                        node,
                        reason: RemovalReason::Outpaced { .. },
                    },
                    in_sync,
                } if node == who && in_sync.len() == 1
            )
        })
    };
    let start = |now: u64| {
        let mut state = PrimaryState::new(config(0), Some(Lsn(4)), ["s1".into(), "s2".into()], now);
        state.subscribed("s1", FollowerRole::Standby, Lsn(5), now);
        state.subscribed("s2", FollowerRole::Standby, Lsn(5), now);
        drain(&mut state);
        state
    };

    // s2 goes silent; s1 confirms every batch.
    let mut state = start(0);
    let mut now = 0;
    let mut lsn = 5;
    let mut removed_at = None;
    while now < LAG_LIMIT_MS && removed_at.is_none() {
        now += 10;
        lsn += 1;
        state.local_durable_advanced(Lsn(lsn), now);
        state.confirmed("s1", Lsn(lsn), now + 1);
        if outpaced(&drain(&mut state), "s2") {
            removed_at = Some(now);
        }
    }
    let removed_at = removed_at.expect("s2 outpaced before the lag limit");
    assert!(
        removed_at > quick && removed_at <= quick + 20,
        "removed at {removed_at} ms"
    );
    // Removed, and still connected (until its idle timeout), it holds every acknowledgement
    // (they waited for it): it is not admitted again while it stays silent.
    state.isr_committed(["s1".to_string()], now);
    for _ in 0..50 {
        now += 10;
        lsn += 1;
        state.local_durable_advanced(Lsn(lsn), now);
        state.confirmed("s1", Lsn(lsn), now + 1);
        let actions = drain(&mut state);
        assert!(
            !actions
                .iter()
                .any(|action| matches!(action, PrimaryAction::ProposeIsr { .. })),
            "{actions:?} at {now} ms"
        );
    }
    // Heard again and caught up, it is.
    state.confirmed("s2", Lsn(lsn), now + 2);
    assert!(drain(&mut state).iter().any(|action| matches!(
        action,
        PrimaryAction::ProposeIsr {
            change: IsrChange::Add { node },
            ..
        } if node == "s2"
    )));

    // Both go silent: nobody is removed before the lag limit.
    let mut state = start(0);
    state.local_durable_advanced(Lsn(5), 10);
    drain(&mut state);
    for now in (20..=10 + LAG_LIMIT_MS).step_by(10) {
        state.tick(now);
        assert!(drain(&mut state).is_empty(), "removal at {now} ms");
    }
    state.tick(11 + LAG_LIMIT_MS);
    assert!(matches!(
        &drain(&mut state)[..],
        [PrimaryAction::ProposeIsr {
            change: IsrChange::Remove {
                reason: RemovalReason::Lagging { .. },
                ..
            },
            ..
        }]
    ));

    // Nor is one that reports (catching up, slow to sync) while lagging past a fifth.
    let mut state = start(0);
    state.local_durable_advanced(Lsn(5), 10);
    state.local_durable_advanced(Lsn(6), 11);
    state.confirmed("s1", Lsn(6), 12);
    for now in (20..LAG_LIMIT_MS).step_by(10) {
        state.local_durable_advanced(Lsn(now), now);
        state.confirmed("s1", Lsn(now), now);
        state.confirmed("s2", Lsn(5), now);
        assert!(
            drain(&mut state)
                .iter()
                .all(|action| !matches!(action, PrimaryAction::ProposeIsr { .. })),
            "removal at {now} ms"
        );
    }

    // A member that stopped hearing us is outpaced the same way once another keeps up.
    let mut state = start(0);
    state.unheard("s2", 1);
    state.local_durable_advanced(Lsn(5), 10);
    state.confirmed("s1", Lsn(5), 11);
    drain(&mut state);
    state.tick(10 + quick);
    assert!(drain(&mut state).is_empty(), "at a fifth, not past it");
    state.tick(11 + quick);
    assert!(outpaced(&drain(&mut state), "s2"));
}

#[test]
fn test_should_admit_a_caught_up_standby_holding_acks_meanwhile() {
    let mut state = PrimaryState::new(config(0), None, Vec::<String>::new(), 0);
    state.local_durable_advanced(Lsn(10), 0);
    assert_eq!(acks(&drain(&mut state)), [10]);
    state.subscribed("s1", FollowerRole::Standby, Lsn(8), 0);
    drain(&mut state);
    // It lacks 8..=10, which are acknowledged: it is admitted (counted) but not proposed.
    assert_eq!(state.pending_proposal(), None);
    state.local_durable_advanced(Lsn(12), 10);
    assert!(
        acks(&drain(&mut state)).is_empty(),
        "acks wait for the standby being admitted"
    );
    state.confirmed("s1", Lsn(10), 20);
    let actions = drain(&mut state);
    assert_eq!(
        actions[0],
        PrimaryAction::ProposeIsr {
            in_sync: set(&["s1"]),
            change: IsrChange::Add { node: "s1".into() }
        }
    );
    assert!(acks(&actions).is_empty(), "10 was acknowledged already");
    state.confirmed("s1", Lsn(12), 30);
    assert_eq!(acks(&drain(&mut state)), [12]);
    state.isr_committed(["s1".to_string()], 40);
    assert_eq!(state.committed_isr(), &set(&["s1"]));
}

#[test]
fn test_should_refuse_writes_below_the_required_isr_size() {
    let mut state = PrimaryState::new(config(1), None, Vec::<String>::new(), 0);
    assert!(!state.writes_available());
    state.local_durable_advanced(Lsn(3), 0);
    assert!(acks(&drain(&mut state)).is_empty());
    state.subscribed("s1", FollowerRole::Standby, Lsn(1), 0);
    state.confirmed("s1", Lsn(3), 1);
    let actions = drain(&mut state);
    assert!(acks(&actions).is_empty());
    assert!(actions.iter().any(|action| matches!(
        action,
        PrimaryAction::ProposeIsr {
            change: IsrChange::Add { .. },
            ..
        }
    )));
    state.isr_committed(["s1".to_string()], 2);
    assert!(state.writes_available());
    assert_eq!(acks(&drain(&mut state)), [3]);
}

/// A new cluster whose writes need an in-sync standby: nothing is durable yet, so a standby
/// that holds nothing holds everything, and is admitted (else no write could ever be taken).
#[test]
fn test_should_admit_an_empty_standby_to_an_empty_primary() {
    let mut state = PrimaryState::new(config(1), None, Vec::<String>::new(), 0);
    state.subscribed("s1", FollowerRole::Standby, Lsn(1), 0);
    let actions = drain(&mut state);
    assert!(
        actions.iter().any(|action| matches!(
            action,
            PrimaryAction::ProposeIsr {
                change: IsrChange::Add { .. },
                ..
            }
        )),
        "{actions:?}"
    );
    state.isr_committed(["s1".to_string()], 1);
    assert!(state.writes_available());
    state.local_durable_advanced(Lsn(1), 2);
    assert!(acks(&drain(&mut state)).is_empty(), "waits for the member");
    state.confirmed("s1", Lsn(1), 3);
    assert_eq!(acks(&drain(&mut state)), [1]);
    // Once the primary has something durable, an empty newcomer must confirm first.
    state.subscribed("s2", FollowerRole::Standby, Lsn(1), 4);
    let actions = drain(&mut state);
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, PrimaryAction::ProposeIsr { .. })),
        "{actions:?}"
    );
}

#[test]
fn test_should_cut_a_stalled_reader_whose_backlog_passes_the_bound() {
    let mut state = PrimaryState::new(config(0), None, Vec::<String>::new(), 0);
    state.subscribed("r1", FollowerRole::Reader, Lsn(1), 0);
    state.local_durable_advanced(Lsn(52), 1);
    state.confirmed("r1", Lsn(1), 500);
    state.tick(500 + LAG_LIMIT_MS);
    assert!(
        !drain(&mut state)
            .iter()
            .any(|action| matches!(action, PrimaryAction::Cut { .. })),
        "applying, even if far behind"
    );
    state.tick(501 + LAG_LIMIT_MS);
    let actions = drain(&mut state);
    assert!(actions.contains(&PrimaryAction::Cut {
        node: "r1".into(),
        reason: CutReason::ReaderBacklog { backlog: 51 }
    }));
    // Cut: nothing more is sent until it resubscribes.
    state.local_durable_advanced(Lsn(53), 2_000);
    assert!(
        !drain(&mut state)
            .iter()
            .any(|action| matches!(action, PrimaryAction::SendEntries { .. }))
    );
    state.subscribed("r1", FollowerRole::Reader, Lsn(40), 2_001);
    assert!(drain(&mut state).contains(&PrimaryAction::SendEntries {
        node: "r1".into(),
        from: Lsn(40),
        through: Lsn(53)
    }));
}

#[test]
fn test_should_refuse_a_follower_ahead_of_the_primary_and_supersede_a_duplicate() {
    let mut state = PrimaryState::new(config(0), Some(Lsn(5)), Vec::<String>::new(), 0);
    assert_eq!(acks(&drain(&mut state)), [5]);
    state.subscribed("s1", FollowerRole::Standby, Lsn(9), 0);
    assert!(matches!(
        &drain(&mut state)[..],
        [PrimaryAction::Refuse { node, .. }] if node == "s1"
    ));
    state.subscribed("s1", FollowerRole::Standby, Lsn(6), 0);
    drain(&mut state);
    state.subscribed("s1", FollowerRole::Standby, Lsn(6), 0);
    assert_eq!(
        drain(&mut state)[0],
        PrimaryAction::Cut {
            node: "s1".into(),
            reason: CutReason::Superseded
        }
    );
}

/// One event in the life of a primary and its followers.
#[derive(Debug, Clone)]
enum Event {
    /// The primary's group commit made this many more entries durable.
    Append(u64),
    /// A follower fsyncs (standby) or applies (reader) what it received, and reports it.
    Confirm(usize),
    /// A follower's connection drops.
    Disconnect(usize),
    /// A follower closes its connection because it stopped hearing the primary.
    Unheard(usize),
    /// A follower subscribes again from what it holds.
    Reconnect(usize),
    /// Time passes.
    Tick(u64),
    /// The catalog commits the pending proposal.
    Commit,
    /// Committing the pending proposal fails.
    FailCommit,
}

fn event(followers: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (1u64..5).prop_map(Event::Append),
        4 => (0..followers).prop_map(Event::Confirm),
        1 => (0..followers).prop_map(Event::Disconnect),
        1 => (0..followers).prop_map(Event::Unheard),
        2 => (0..followers).prop_map(Event::Reconnect),
        3 => (1u64..600).prop_map(Event::Tick),
        2 => Just(Event::Commit),
        1 => Just(Event::FailCommit),
    ]
}

/// A follower as the model knows it: what it really holds.
#[derive(Debug)]
struct ModelFollower {
    name: String,
    role: FollowerRole,
    connected: bool,
    /// The last LSN received on the current stream (what it holds once confirmed).
    received: u64,
    /// What it really holds durably (standby) or applied (reader).
    confirmed: u64,
}

struct Model {
    state: PrimaryState,
    now: u64,
    local_durable: u64,
    followers: Vec<ModelFollower>,
    /// The ISR the catalog holds.
    catalog_isr: BTreeSet<String>,
    /// The set proposed and not yet committed or failed.
    pending: Option<BTreeSet<String>>,
    acknowledged: u64,
    min_in_sync: usize,
}

impl Model {
    fn new(standbys: usize, readers: usize, initial_isr: usize, min_in_sync: usize) -> Self {
        let mut followers = Vec::new();
        for index in 0..standbys {
            followers.push(ModelFollower {
                name: format!("s{index}"),
                role: FollowerRole::Standby,
                connected: false,
                received: 0,
                confirmed: 0,
            });
        }
        for index in 0..readers {
            followers.push(ModelFollower {
                name: format!("r{index}"),
                role: FollowerRole::Reader,
                connected: false,
                received: 0,
                confirmed: 0,
            });
        }
        let catalog_isr: BTreeSet<String> = followers[..initial_isr]
            .iter()
            .map(|f| f.name.clone())
            .collect();
        let state = PrimaryState::new(
            PrimaryConfig {
                lag_limit_ms: LAG_LIMIT_MS,
                min_in_sync,
                max_reader_backlog: 20,
            },
            None,
            catalog_isr.clone(),
            0,
        );
        Self {
            state,
            now: 0,
            local_durable: 0,
            followers,
            catalog_isr,
            pending: None,
            acknowledged: 0,
            min_in_sync,
        }
    }

    fn apply(&mut self, event: Event) -> Result<(), TestCaseError> {
        match event {
            Event::Append(count) => {
                self.local_durable += count;
                self.state
                    .local_durable_advanced(Lsn(self.local_durable), self.now);
            }
            Event::Confirm(index) => {
                let follower = &mut self.followers[index];
                if follower.connected {
                    follower.confirmed = follower.received;
                    let (name, lsn) = (follower.name.clone(), follower.confirmed);
                    self.state.confirmed(&name, Lsn(lsn), self.now);
                }
            }
            Event::Disconnect(index) | Event::Unheard(index) => {
                let follower = &mut self.followers[index];
                if follower.connected {
                    follower.connected = false;
                    let name = follower.name.clone();
                    if matches!(event, Event::Unheard(_)) {
                        self.state.unheard(&name, self.now);
                    } else {
                        self.state.disconnected(&name, self.now);
                    }
                }
            }
            Event::Reconnect(index) => {
                let follower = &mut self.followers[index];
                if !follower.connected {
                    follower.connected = true;
                    follower.received = follower.confirmed;
                    let (name, role, from) =
                        (follower.name.clone(), follower.role, follower.confirmed + 1);
                    self.state.subscribed(&name, role, Lsn(from), self.now);
                }
            }
            Event::Tick(elapsed) => {
                self.now += elapsed;
                self.state.tick(self.now);
            }
            Event::Commit => {
                if let Some(in_sync) = self.pending.take() {
                    self.catalog_isr = in_sync.clone();
                    self.state.isr_committed(in_sync, self.now);
                }
            }
            Event::FailCommit => {
                if self.pending.take().is_some() {
                    self.state.isr_proposal_failed(self.now);
                }
            }
        }
        self.carry_out_actions()?;
        self.check_invariant()
    }

    fn follower_mut(&mut self, name: &str) -> &mut ModelFollower {
        self.followers
            .iter_mut()
            .find(|follower| follower.name == name)
            .expect("actions name known followers")
    }

    fn carry_out_actions(&mut self) -> Result<(), TestCaseError> {
        while let Some(action) = self.state.poll_action() {
            match action {
                PrimaryAction::SendEntries {
                    node,
                    from,
                    through,
                } => {
                    let local_durable = self.local_durable;
                    let follower = self.follower_mut(&node);
                    prop_assert!(follower.connected, "sent to disconnected {}", node);
                    prop_assert_eq!(
                        from.0,
                        follower.received + 1,
                        "gap in what {} is sent",
                        node
                    );
                    prop_assert!(through.0 <= local_durable, "sent what is not durable");
                    follower.received = through.0;
                }
                PrimaryAction::Acknowledge { through } => {
                    prop_assert!(through.0 > self.acknowledged, "acks go forward");
                    self.acknowledged = through.0;
                }
                PrimaryAction::ProposeIsr { in_sync, change } => {
                    prop_assert!(self.pending.is_none(), "one proposal at a time");
                    let expected = match &change {
                        IsrChange::Add { node } => {
                            let mut set = self.catalog_isr.clone();
                            set.insert(node.clone());
                            set
                        }
                        IsrChange::Remove { node, .. } => {
                            let mut set = self.catalog_isr.clone();
                            set.remove(node);
                            set
                        }
                    };
                    prop_assert_eq!(&in_sync, &expected);
                    self.pending = Some(in_sync);
                }
                PrimaryAction::Cut { node, .. } => {
                    let follower = self.follower_mut(&node);
                    prop_assert!(follower.connected);
                    follower.connected = false;
                    let now = self.now;
                    self.state.disconnected(&node, now);
                }
                PrimaryAction::Refuse { node, reason } => {
                    return Err(TestCaseError::fail(format!("{node} refused: {reason}")));
                }
            }
        }
        Ok(())
    }

    /// Nothing acknowledged that a committed ISR member (or the primary) lacks.
    fn check_invariant(&self) -> Result<(), TestCaseError> {
        prop_assert!(self.acknowledged <= self.local_durable);
        prop_assert_eq!(self.state.committed_isr(), &self.catalog_isr);
        for member in &self.catalog_isr {
            let follower = self
                .followers
                .iter()
                .find(|follower| &follower.name == member)
                .expect("members are followers");
            prop_assert!(
                self.acknowledged <= follower.confirmed,
                "acknowledged {} but isr member {} holds only {}",
                self.acknowledged,
                member,
                follower.confirmed
            );
        }
        prop_assert_eq!(
            self.state.writes_available(),
            self.catalog_isr.len() >= self.min_in_sync
        );
        Ok(())
    }

    /// Everyone healthy: every follower connected and confirming everything, the catalog
    /// committing every proposal, time passing.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for index in 0..self.followers.len() {
            self.apply(Event::Reconnect(index))?;
        }
        for _ in 0..20 {
            for index in 0..self.followers.len() {
                self.apply(Event::Reconnect(index))?;
                self.apply(Event::Confirm(index))?;
            }
            self.apply(Event::Commit)?;
            self.apply(Event::Tick(LAG_LIMIT_MS / 4))?;
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random interleavings of appends, confirmations, disconnects, reconnects, ticks and
    /// catalog commits never acknowledge anything a committed ISR member lacks; once everyone
    /// is healthy, every standby is in sync and everything durable is acknowledged (unless the
    /// required ISR size cannot be met at all).
    #[test]
    fn test_should_keep_the_isr_invariant_and_make_progress_when_healthy(
        (standbys, readers, initial_isr, min_in_sync, events) in (0usize..4, 0usize..3)
            .prop_flat_map(|(standbys, readers)| {
                let followers = (standbys + readers).max(1);
                (
                    Just(standbys),
                    Just(readers),
                    0..=standbys,
                    0usize..3,
                    proptest::collection::vec(event(followers), 0..120),
                )
            })
    ) {
        let mut model = Model::new(standbys, readers, initial_isr, min_in_sync);
        let followers = model.followers.len();
        for event in events {
            let event = match event {
                // No followers: confirmations and connections are no-ops.
                Event::Confirm(_) | Event::Disconnect(_) | Event::Unheard(_) | Event::Reconnect(_) if followers == 0 => Event::Tick(1),
                other => other,
            };
            model.apply(event)?;
        }
        model.apply(Event::Append(1))?;
        model.settle()?;

        let all_standbys: BTreeSet<String> = model
            .followers
            .iter()
            .filter(|follower| follower.role == FollowerRole::Standby)
            .map(|follower| follower.name.clone())
            .collect();
        prop_assert_eq!(&model.catalog_isr, &all_standbys);
        prop_assert!(model.pending.is_none());
        if standbys >= min_in_sync {
            prop_assert!(model.state.writes_available());
            prop_assert_eq!(model.acknowledged, model.local_durable);
        } else {
            prop_assert!(!model.state.writes_available());
            prop_assert_eq!(model.acknowledged, 0);
        }
        let lagging: BTreeMap<&str, u64> = model
            .followers
            .iter()
            .map(|follower| (follower.name.as_str(), model.state.lag_ms(&follower.name, model.now)))
            .filter(|(_, lag)| *lag > 0)
            .collect();
        prop_assert!(lagging.is_empty(), "{:?}", lagging);
    }
}
