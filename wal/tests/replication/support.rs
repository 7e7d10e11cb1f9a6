//! Helpers: a primary over a real WAL, a standby and a reader driven by the pure follower
//! state machine, certificates, and waiting with deadlines (never fixed sleeps).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_wal::replication::{
    EntrySource, FollowerAction, FollowerRole, FollowerState, IsrProposal, PrimaryConfig,
    PrimaryStart, ReplicationClient, ReplicationHandle, ReplicationServer, ReplicationSettings,
    ReplicationStatus,
};
use arc_wal::{Entry, Epoch, Lsn, SyncMode, Wal, WalReader, WalSettings};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// How long any single wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);
pub const SECRET: &str = "replication test secret, long enough";

pub fn payload(lsn: u64) -> Vec<u8> {
    format!("entry-{lsn}-{}", "p".repeat((lsn % 13) as usize)).into_bytes()
}

pub fn wal_settings(dir: &Path) -> WalSettings {
    WalSettings {
        sync_mode: SyncMode::Fdatasync,
        segment_size_bytes: 4 * 1024,
        ..WalSettings::new(dir)
    }
}

/// A primary: its WAL (owned by the test, as the node's writer thread owns it) and its server.
pub struct Primary {
    pub server: ReplicationServer,
    pub handle: ReplicationHandle,
    pub proposals: mpsc::UnboundedReceiver<IsrProposal>,
    pub wal: Wal,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Primary {
    pub fn start(
        settings: ReplicationSettings,
        epoch: Epoch,
        committed_isr: &[&str],
        config: PrimaryConfig,
    ) -> Primary {
        Self::start_fenced(settings, (epoch, Lsn(0)), committed_isr, config)
    }

    /// As [`Primary::start`], for the primary of a promote whose fence is `fence_lsn` (the
    /// test appends the older epochs' entries up to it, then its own).
    pub fn start_fenced(
        settings: ReplicationSettings,
        (epoch, fence_lsn): (Epoch, Lsn),
        committed_isr: &[&str],
        config: PrimaryConfig,
    ) -> Primary {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _) = Wal::open(wal_settings(dir.path()), Lsn(1)).expect("open wal");
        let source: Arc<dyn EntrySource> = Arc::new(WalReader::new(dir.path()));
        let start = PrimaryStart {
            epoch,
            fence_lsn,
            durable_lsn: wal.durable_lsn(),
            committed_isr: committed_isr.iter().map(|node| node.to_string()).collect(),
            config,
        };
        let (server, proposals) = ReplicationServer::bind(
            settings,
            "127.0.0.1:0".parse().expect("addr"),
            start,
            source,
            CancellationToken::new(),
        )
        .expect("bind");
        Primary {
            handle: server.handle(),
            addr: server.local_addr(),
            server,
            proposals,
            wal,
            _dir: dir,
        }
    }

    /// Appends entries for `lsns` at `epoch` (one group commit) and publishes them.
    pub fn append(&mut self, epoch: Epoch, lsns: impl IntoIterator<Item = u64>) -> Vec<Entry> {
        let mut entries = Vec::new();
        for lsn in lsns {
            let payload = payload(lsn);
            let assigned = self.wal.append(epoch, &payload).expect("append");
            assert_eq!(assigned, Lsn(lsn));
            entries.push(Entry {
                epoch,
                lsn: assigned,
                payload,
            });
        }
        self.wal.sync().expect("sync");
        self.handle.publish(entries.clone());
        entries
    }

    /// Waits until `predicate` holds for the server's status.
    pub async fn wait_status(&self, what: &str, predicate: impl Fn(&ReplicationStatus) -> bool) {
        let mut changes = self.handle.status_changes();
        let waited = timeout(DEADLINE, changes.wait_for(|status| predicate(status))).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "timed out waiting for {what}: {:?}",
            self.handle.status()
        );
    }

    /// Commits every proposal that arrives until `predicate` holds, as the node would.
    pub async fn commit_proposals_until(
        &mut self,
        what: &str,
        predicate: impl Fn(&ReplicationStatus) -> bool,
    ) {
        let deadline = Instant::now() + DEADLINE;
        let mut changes = self.handle.status_changes();
        loop {
            if predicate(&self.handle.status()) {
                return;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            assert!(
                !remaining.is_zero(),
                "timed out waiting for {what}: {:?}",
                self.handle.status()
            );
            tokio::select! {
                Some(proposal) = self.proposals.recv() => self.handle.isr_committed(proposal.in_sync),
                _ = changes.changed() => {}
                _ = tokio::time::sleep(remaining) => {}
            }
        }
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

pub fn standby_settings(node: &str) -> ReplicationSettings {
    ReplicationSettings::for_test(node, Some(SECRET))
}

/// A follower: its state machine, its connection, and (for a standby) its own WAL.
pub struct Follower {
    pub state: FollowerState,
    pub client: ReplicationClient,
    pub wal: Option<Wal>,
    /// Entries applied (reader) or appended (standby), in order.
    pub received: Vec<Entry>,
    /// Why the stream was dropped, if it was.
    pub resubscribe: Option<arc_wal::replication::ResubscribeReason>,
    /// The LSN a reader was told to drop entries above, if it was.
    pub dropped_above: Option<Lsn>,
    _dir: Option<TempDir>,
}

impl Follower {
    /// Connects a follower that holds nothing yet.
    pub async fn connect(
        settings: &ReplicationSettings,
        addr: SocketAddr,
        role: FollowerRole,
        promised: (Epoch, Lsn),
        next_lsn: Lsn,
    ) -> Result<Follower, arc_wal::replication::ReplicationError> {
        let (wal, dir) = match role {
            FollowerRole::Standby => {
                let dir = tempfile::tempdir().expect("tempdir");
                let (wal, _) = Wal::open(wal_settings(dir.path()), next_lsn).expect("open wal");
                (Some(wal), Some(dir))
            }
            FollowerRole::Reader => (None, None),
        };
        let mut state = FollowerState::new(
            settings.node_id.clone(),
            role,
            promised,
            next_lsn,
            settings.silence_timeout.as_millis() as u64,
        );
        state.subscribe(0);
        let Some(FollowerAction::Subscribe(subscribe)) = state.poll_action() else {
            panic!("a subscribe comes first");
        };
        let client = ReplicationClient::connect(
            settings,
            addr,
            "localhost",
            subscribe,
            CancellationToken::new(),
        )
        .await?;
        Ok(Follower {
            state,
            client,
            wal,
            received: Vec::new(),
            resubscribe: None,
            dropped_above: None,
            _dir: dir,
        })
    }

    /// Processes frames until `done` holds, the stream is dropped, or the deadline passes.
    pub async fn run_until(&mut self, what: &str, done: impl Fn(&Follower) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(self) {
            assert!(
                self.resubscribe.is_none(),
                "stream dropped while waiting for {what}: {:?}",
                self.resubscribe
            );
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frame = match timeout(remaining, self.client.next_frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(other) => panic!("stream ended while waiting for {what}: {other:?}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; follower at {:?}",
                    self.state.confirmed()
                ),
            };
            self.state.frame_received(frame, 1);
            self.carry_out();
        }
    }

    /// Processes frames until the follower drops the stream; returns why.
    pub async fn run_until_dropped(&mut self) -> arc_wal::replication::ResubscribeReason {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(reason) = self.resubscribe.take() {
                return reason;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frame = match timeout(remaining, self.client.next_frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(other) => panic!("stream ended before the follower dropped it: {other:?}"),
                Err(_) => panic!("timed out waiting for the follower to drop the stream"),
            };
            self.state.frame_received(frame, 1);
            self.carry_out();
        }
    }

    fn carry_out(&mut self) {
        let mut appended = false;
        while let Some(action) = self.state.poll_action() {
            match action {
                FollowerAction::Append(entry) => {
                    let wal = self.wal.as_mut().expect("standbys have a wal");
                    wal.append_at(entry.epoch, entry.lsn, &entry.payload)
                        .expect("append at");
                    self.received.push(entry);
                    appended = true;
                }
                FollowerAction::Apply(entry) => {
                    let lsn = entry.lsn;
                    self.received.push(entry);
                    self.state.applied(lsn);
                }
                FollowerAction::SendAck { durable_lsn } => self.client.send_ack(durable_lsn),
                FollowerAction::SendApplied { applied_lsn } => {
                    self.client.send_applied(applied_lsn)
                }
                FollowerAction::Resubscribe { reason } => self.resubscribe = Some(reason),
                FollowerAction::DropAbove { lsn, .. } => {
                    assert!(
                        self.wal.is_none(),
                        "only readers drop entries in these tests"
                    );
                    self.received.retain(|entry| entry.lsn <= lsn);
                    self.dropped_above = Some(lsn);
                }
                FollowerAction::Subscribe(_)
                | FollowerAction::SkipTo { .. }
                | FollowerAction::CommitAdvanced { .. }
                | FollowerAction::Flushed(_) => {}
            }
        }
        if appended {
            let wal = self.wal.as_mut().expect("standbys have a wal");
            wal.sync().expect("sync");
            if let Some(durable) = wal.durable_lsn() {
                self.state.durable(durable);
            }
            self.carry_out();
        }
    }

    pub async fn close(self) {
        self.client.close().await;
    }
}
