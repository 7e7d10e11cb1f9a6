//! The node's side of WAL replication (docs/0006-replication.md): the primary's server, the
//! committer of its `isr` records, and the follower loop of standby writers and readers.
//!
//! The protocol itself (frames, the two state machines, QUIC, authentication) lives in
//! `arc_wal::replication`; this module wires it to the node's WAL, buffers and catalog.
//!
//! Followers (standbys and readers alike) keep the primary's acknowledged rows in their own
//! buffers, applied only once the primary's commit LSN covers them (a row that was never
//! acknowledged is never shown), and drop them once the catalog holds the flush that covers
//! them. A standby also appends every entry to its own WAL at the primary's LSN and fsyncs it
//! before it acknowledges: that is what lets the primary count it in the in-sync set.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_gossip::{CatalogView, Failover, FailoverAction, FailoverInput, FailoverSettings};
use arc_storage::{CatalogError, CatalogState, FailoverRecord, Isr, RecordBody, TableId};
use arc_wal::replication::{
    FollowerAction, FollowerPhase, FollowerRole, FollowerState, IsrChange, IsrProposal,
    PrimaryConfig, PrimaryStart, ReplicationClient, ReplicationHandle, ReplicationServer,
    ReplicationSettings, ResubscribeReason, SharedSecret,
};
use arc_wal::{Entry, Epoch, Lsn, Wal, WalReader, WalSettings};
use futures::FutureExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::buffers::Buffers;
use crate::config::Config;
use crate::ingest::TableWrite;
use crate::metrics as m;
use crate::node::NodeInner;
use crate::payload;
use crate::throttle::Throttle;

/// How often a follower reads the catalog log even without flush notices: the backstop for a
/// lost notice, and how compactions (which the primary does not announce) become visible.
const CATALOG_BACKSTOP: Duration = Duration::from_secs(5);
/// The longest a follower's loop waits for the catalog log where it can go on without it (the
/// tailer keeps reading): cut off from the store alone, with an object store client that
/// retries for minutes, it would otherwise not follow a new primary for as long.
const CATALOG_READ_BOUND: Duration = Duration::from_secs(2);
/// The longest a follower waits between two attempts to reach the primary.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Frames taken off the stream before the follower acts on them (one fsync for all).
const MAX_FRAMES_PER_TURN: usize = 1024;
/// A reader whose applied entries trail the primary by more than this many LSNs, and that
/// reports no progress for a lag limit, is cut by the primary.
const MAX_READER_BACKLOG: u64 = 1_000_000;

/// The least time between two lines of the same repeating warning.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a standby about to take over waits for another node's `/health` to answer.
const WITNESS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How much longer the other witnesses get once one has answered.
const WITNESS_STRAGGLER_GRACE: Duration = Duration::from_millis(250);

/// What the witnesses of a failover said.
#[derive(Debug, Default)]
struct WitnessAnswers {
    /// Whether any answered at all: proof that this node still reaches part of the cluster.
    answered: bool,
    /// The freshest report of the primary in question: the witness and how many milliseconds
    /// ago it last had a frame from it.
    heard: Option<(String, u64)>,
}

/// Asks `peers` for `GET /health`, each within [`WITNESS_PROBE_TIMEOUT`], in parallel; notes
/// who answered (with any status) and who says it hears `primary` on its stream.
async fn ask_witnesses(
    inner: &NodeInner,
    peers: &[&arc_gossip::NodeView],
    primary: &str,
) -> WitnessAnswers {
    let scheme = if inner.tls { "https" } else { "http" };
    let mut probes = JoinSet::new();
    for peer in peers {
        let probe = inner
            .forward_client
            .get(format!("{scheme}://{}/health", peer.info.api_addr))
            .timeout(WITNESS_PROBE_TIMEOUT)
            .send();
        let (id, primary) = (peer.id.clone(), primary.to_string());
        probes.spawn(async move {
            let response = probe.await.ok()?;
            let header = |name| {
                let value = response.headers().get(name)?;
                value.to_str().ok().map(str::to_string)
            };
            let heard_ms = header(PRIMARY_HEARD_MS_HEADER)
                .filter(|_| header(PRIMARY_HEADER).as_deref() == Some(primary.as_str()))
                .and_then(|ms| ms.parse::<u64>().ok());
            Some((id, heard_ms))
        });
    }
    let mut answers = WitnessAnswers::default();
    // A witness that answers at all answers within a round trip: once one has, the others get
    // a little longer, not the whole timeout (a witness cut off with the primary would delay
    // every failover of that partition by it).
    let mut until = tokio::time::Instant::now() + WITNESS_PROBE_TIMEOUT;
    while let Ok(Some(answer)) = tokio::time::timeout_at(until, probes.join_next()).await {
        let Ok(Some((id, heard_ms))) = answer else {
            continue;
        };
        if !answers.answered {
            until = until.min(tokio::time::Instant::now() + WITNESS_STRAGGLER_GRACE);
        }
        answers.answered = true;
        if let Some(heard_ms) = heard_ms
            && answers.heard.as_ref().is_none_or(|(_, ms)| heard_ms < *ms)
        {
            answers.heard = Some((id, heard_ms));
        }
    }
    answers
}

/// The transport settings of this node, from `[cluster]`.
pub fn settings(config: &Config) -> ReplicationSettings {
    let cluster = &config.cluster;
    let mut settings = ReplicationSettings::new(
        cluster.node_id.clone(),
        cluster.shared_secret.as_deref().map(SharedSecret::new),
    );
    settings.tls_cert_file = cluster.tls_cert_file.clone();
    settings.tls_key_file = cluster.tls_key_file.clone();
    settings.tls_ca_file = cluster.tls_ca_file.clone();
    settings
}

/// The primary's replication: the server, and the tasks that commit its ISR changes and keep
/// its metrics current.
pub struct Primary {
    server: ReplicationServer,
    tasks: JoinSet<()>,
    cancel: CancellationToken,
}

impl Primary {
    /// Binds `cluster.replication_addr` and starts serving followers from `wal_dir`.
    ///
    /// # Errors
    /// When the address cannot be bound or the TLS settings are unusable.
    /// It runs until [`Primary::shutdown`], not until the node's stop begins: the final flush
    /// and the writes still in flight need it.
    pub fn start(inner: &Arc<NodeInner>, epoch: u64, next_lsn: u64) -> anyhow::Result<Primary> {
        let config = &inner.config;
        let addr = crate::config::parse_listen_addr(
            "cluster.replication_addr",
            &config.cluster.replication_addr,
        )?;
        let snapshot = inner.catalog().snapshot();
        let committed_isr = standbys_in_sync(&snapshot, &inner.node_id);
        // The promote's fence. A primary starts right after its promote, before it writes, and
        // the promote recorded its WAL's end: the same LSN, should the catalog not show it.
        let fence_lsn = match &snapshot.fence {
            Some(fence) if snapshot.epoch == epoch => fence.last_lsn,
            _ => next_lsn.saturating_sub(1),
        };
        let start = PrimaryStart {
            epoch: Epoch(epoch),
            fence_lsn: Lsn(fence_lsn),
            durable_lsn: (next_lsn > 1).then(|| Lsn(next_lsn - 1)),
            committed_isr: committed_isr.clone(),
            config: PrimaryConfig {
                lag_limit_ms: config.cluster.replication_lag_limit.0.as_millis() as u64,
                min_in_sync: config.cluster.replication_ack as usize,
                max_reader_backlog: MAX_READER_BACKLOG,
            },
        };
        let cancel = CancellationToken::new();
        let source = Arc::new(WalReader::new(config.wal.directory.clone()));
        let (server, proposals) =
            ReplicationServer::bind(settings(config), addr, start, source, cancel.clone())
                .with_context(|| {
                    format!("starting the replication server on cluster.replication_addr {addr}")
                })?;
        crate::cluster::advertise_replication_port(&inner.cluster, server.local_addr().port());
        m::set_isr_size(committed_isr.len());
        let mut tasks = JoinSet::new();
        tasks.spawn(commit_isr_changes(
            inner.clone(),
            epoch,
            server.handle(),
            proposals,
            cancel.clone(),
        ));
        tasks.spawn(publish_follower_metrics(server.handle(), cancel.clone()));
        if config.cluster.replication_ack > 0 {
            info!(
                replication_ack = config.cluster.replication_ack,
                "writes need in-sync standbys; until one has caught up, writes get 503"
            );
        }
        Ok(Primary {
            server,
            tasks,
            cancel,
        })
    }

    /// The server's handle.
    pub fn handle(&self) -> ReplicationHandle {
        self.server.handle()
    }

    /// Stops the server and its tasks (call after the WAL writer stopped: writes still waiting
    /// for their acknowledgement then get 503).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.server.shutdown().await;
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Commits each ISR change the primary proposes to the catalog (an `isr` record naming the
/// primary and its in-sync standbys), one at a time, and reports the outcome. A write is never
/// acknowledged without a member until its removal is committed here.
async fn commit_isr_changes(
    inner: Arc<NodeInner>,
    epoch: u64,
    handle: ReplicationHandle,
    mut proposals: tokio::sync::mpsc::UnboundedReceiver<IsrProposal>,
    cancel: CancellationToken,
) {
    loop {
        let proposal = tokio::select! {
            _ = cancel.cancelled() => return,
            proposal = proposals.recv() => match proposal {
                Some(proposal) => proposal,
                None => return,
            },
        };
        let mut in_sync = vec![inner.node_id.clone()];
        in_sync.extend(proposal.in_sync.iter().cloned());
        let body = RecordBody::Isr(Isr { in_sync });
        let label = match &proposal.change {
            IsrChange::Add { .. } => "add",
            IsrChange::Remove { .. } => "remove",
        };
        match inner.catalog().commit(epoch, &inner.node_id, body).await {
            Ok(seq) => {
                info!(seq, change = ?proposal.change, in_sync = ?proposal.in_sync, "isr record committed");
                m::record_isr_change(label, proposal.in_sync.len());
                handle.isr_committed(proposal.in_sync);
            }
            Err(fenced @ CatalogError::Fenced { .. }) => {
                inner.step_down(format!("fenced while committing an isr record: {fenced}"));
                return;
            }
            Err(error) if error.is_retryable() => {
                // The record may land yet. Were it an addition given up on, the log would name
                // in sync a standby this primary acknowledges without (and one that may never
                // be removed, should it lag: only committed members are): a record of this
                // epoch after it settles the set, which the primary then takes as committed.
                warn!(%error, change = ?proposal.change, "an isr record's outcome is unknown; settling it");
                match crate::switchover::confirm_epoch_settled(&inner, epoch).await {
                    Some(Ok(_)) => {
                        let in_sync = standbys_in_sync(&inner.catalog().snapshot(), &inner.node_id);
                        info!(change = ?proposal.change, ?in_sync, "isr settled");
                        m::record_isr_change(label, in_sync.len());
                        handle.isr_committed(in_sync);
                    }
                    Some(Err(fenced @ CatalogError::Fenced { .. })) => {
                        inner.step_down(format!("fenced while settling an isr record: {fenced}"));
                        return;
                    }
                    Some(Err(error)) => {
                        warn!(%error, "settling an isr record failed");
                        handle.isr_proposal_failed();
                    }
                    None => return,
                }
            }
            Err(error) => {
                warn!(%error, change = ?proposal.change, "committing an isr record failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                handle.isr_proposal_failed();
            }
        }
    }
}

/// The in-sync set the catalog names, without the primary `node_id` itself.
fn standbys_in_sync(snapshot: &CatalogState, node_id: &str) -> Vec<String> {
    snapshot
        .in_sync
        .iter()
        .filter(|node| *node != node_id)
        .cloned()
        .collect()
}

/// Keeps the per-follower gauges current. A follower that left the status, and every one
/// once the server stops (a step-down), is shown disconnected with no lag, and the ISR size
/// zero: a standby's scrape must not show the followers it had as primary.
async fn publish_follower_metrics(handle: ReplicationHandle, cancel: CancellationToken) {
    let mut changes = handle.status_changes();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: BTreeSet<(String, &'static str)> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticks.tick() => {}
            changed = changes.changed() => if changed.is_err() { break },
        }
        let status = changes.borrow_and_update().clone();
        let durable = status.local_durable.map_or(0, |lsn| lsn.0);
        let mut current = BTreeSet::new();
        for follower in &status.followers {
            let confirmed = follower.confirmed.map_or(0, |lsn| lsn.0);
            let role = role_label(follower.role);
            m::set_follower(
                &follower.node_id,
                role,
                durable.saturating_sub(confirmed),
                follower.lag_ms,
                follower.connected,
            );
            current.insert((follower.node_id.clone(), role));
        }
        for (node, role) in published.difference(&current) {
            m::set_follower(node, role, 0, 0, false);
        }
        published = current;
    }
    for (node, role) in &published {
        m::set_follower(node, role, 0, 0, false);
    }
    m::set_isr_size(0);
}

fn role_label(role: FollowerRole) -> &'static str {
    match role {
        FollowerRole::Standby => "standby",
        FollowerRole::Reader => "reader",
    }
}

/// What a follower has, for `/ready`, queries (`x-arc-min-lsn`, freshness headers), gossip
/// and the cluster API.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Whether a stream from the primary is up.
    pub streaming: bool,
    /// Highest LSN whose rows are visible here (applied and acknowledged by the primary).
    pub visible: u64,
    /// Standby: highest LSN fsynced in its own WAL.
    pub durable: u64,
    /// The primary's acknowledged LSN as last heard.
    pub commit: u64,
    /// Whether this node has caught up with the primary at least once since it started.
    pub caught_up: bool,
    /// Since when visible rows trail the primary's commit LSN (or the stream is down).
    pub behind_since: Option<Instant>,
    /// The primary this follower last had a frame from, and when. A standby that finds that
    /// primary silent asks the others for it (`/health`'s [`PRIMARY_HEARD_MS_HEADER`]) to
    /// tell a cut link from a dead primary.
    pub heard: Option<(String, Instant)>,
}

/// `/health`'s answer header naming the primary a follower streams from.
pub const PRIMARY_HEADER: &str = "x-arc-primary";
/// `/health`'s answer header: milliseconds since the follower last had a frame (an entry or
/// a keep-alive) from the primary named by [`PRIMARY_HEADER`].
pub const PRIMARY_HEARD_MS_HEADER: &str = "x-arc-primary-heard-ms";

impl Progress {
    /// How stale this node's rows may be, in milliseconds: 0 when everything the primary
    /// acknowledged is visible here.
    pub fn freshness_ms(&self) -> u64 {
        self.behind_since
            .map_or(0, |since| since.elapsed().as_millis() as u64)
    }
}

/// A running follower: its progress and the task that streams.
pub struct Follower {
    progress: watch::Receiver<Progress>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Follower {
    /// Starts following the primary the catalog names. `wal` is a standby's own WAL (opened
    /// and recovered); `None` makes this a reader.
    pub fn start(inner: &Arc<NodeInner>, wal: Option<Wal>, stop: &CancellationToken) -> Follower {
        let (progress_tx, progress) = watch::channel(Progress::default());
        let task = tokio::spawn(follow(inner.clone(), wal, progress_tx, stop.child_token()));
        Follower {
            progress,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// What this follower has now.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until rows up to `lsn` are visible here, at most `bound`. Returns the progress
    /// at the end either way.
    pub async fn wait_visible(&self, lsn: u64, bound: Duration) -> Progress {
        let mut progress = self.progress.clone();
        let _ = tokio::time::timeout(bound, progress.wait_for(|progress| progress.visible >= lsn))
            .await;
        progress.borrow().clone()
    }

    /// Waits for the follower's task (after the node's stop token was cancelled).
    pub async fn wait_stopped(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// A standby's own copy of the primary's WAL, and what it needs to delete segments once the
/// primary's flushes cover them.
struct StandbyWal {
    wal: Option<Wal>,
    settings: WalSettings,
    /// Appended entries not yet covered by a flush of every table they hold, oldest first.
    unflushed: VecDeque<(u64, Vec<String>)>,
    /// Flushed LSN per table (`database.measurement`), from the catalog and flush notices.
    flushed: HashMap<String, u64>,
}

impl StandbyWal {
    fn open(wal: Wal, settings: WalSettings, snapshot: &CatalogState) -> anyhow::Result<Self> {
        let mut unflushed = VecDeque::new();
        for entry in wal.read_from(Lsn(0)).context("reading the standby's wal")? {
            let entry = entry.context("reading an entry of the standby's wal")?;
            let tables = payload::tables(&entry.payload)
                .with_context(|| format!("decoding standby wal entry lsn {}", entry.lsn))?;
            unflushed.push_back((entry.lsn.0, table_names(&tables)));
        }
        let mut standby = StandbyWal {
            wal: Some(wal),
            settings,
            unflushed,
            flushed: HashMap::new(),
        };
        standby.catalog_flushed(snapshot);
        Ok(standby)
    }

    fn next_lsn(&self) -> Lsn {
        self.wal.as_ref().map_or(Lsn(1), Wal::next_lsn)
    }

    fn catalog_flushed(&mut self, snapshot: &CatalogState) {
        for (table, state) in &snapshot.tables {
            let known = self.flushed.entry(table.to_string()).or_default();
            *known = (*known).max(state.flushed_lsn);
        }
    }

    /// Appends `entries`, syncs, notes `notices`, and deletes the segments every flush covers;
    /// on a blocking thread. Returns the durable LSN.
    async fn append(
        &mut self,
        entries: Vec<Entry>,
        notices: Vec<(String, u64)>,
    ) -> anyhow::Result<Option<Lsn>> {
        let mut wal = self.wal.take().context("the standby's wal is closed")?;
        let mut unflushed = std::mem::take(&mut self.unflushed);
        let mut flushed = std::mem::take(&mut self.flushed);
        let (wal, unflushed, flushed, result) = tokio::task::spawn_blocking(move || {
            let result = (|| -> anyhow::Result<Option<Lsn>> {
                let mut last = None;
                for entry in &entries {
                    wal.append_at(entry.epoch, entry.lsn, &entry.payload)
                        .with_context(|| {
                            format!("appending lsn {} to the standby's wal", entry.lsn)
                        })?;
                    let tables = payload::tables(&entry.payload).unwrap_or_default();
                    unflushed.push_back((entry.lsn.0, table_names(&tables)));
                    last = Some(entry.lsn);
                }
                wal.sync().context("syncing the standby's wal")?;
                for (table, lsn) in notices {
                    let known = flushed.entry(table).or_default();
                    *known = (*known).max(lsn);
                }
                while unflushed.front().is_some_and(|(lsn, tables)| {
                    tables
                        .iter()
                        .all(|table| flushed.get(table).is_some_and(|done| done >= lsn))
                }) {
                    unflushed.pop_front();
                }
                let keep_from = unflushed
                    .front()
                    .map_or(wal.next_lsn(), |(lsn, _)| Lsn(*lsn));
                let detached = wal.detach_segments_below(keep_from);
                if !detached.is_empty() {
                    let removed = detached
                        .remove()
                        .context("removing flushed segments of the standby's wal")?;
                    debug!(removed, below = %keep_from, "standby wal segments removed");
                }
                Ok(last)
            })();
            (wal, unflushed, flushed, result)
        })
        .await
        .context("the standby's wal task")?;
        self.wal = Some(wal);
        self.unflushed = unflushed;
        self.flushed = flushed;
        result
    }

    /// The epoch of its last entry, if it holds any.
    fn last_epoch(&self) -> Option<u64> {
        Some(self.wal.as_ref()?.last_epoch()?.0)
    }

    /// Cuts a diverged WAL back to `fence` (the fence of `epoch`'s promote, or lower): the
    /// directory is set aside (renamed, every byte
    /// kept for inspection) and a new WAL is written with its entries up to the fence, which
    /// the new primary holds as well; the stream brings the rest. Entries up to the fence are
    /// kept, not dropped: they may be acknowledged writes that no flush covers yet.
    async fn cut_above(&mut self, epoch: u64, fence: u64) -> anyhow::Result<()> {
        let last = self.next_lsn().0.saturating_sub(1);
        drop(self.wal.take());
        let dir = self.settings.dir.clone();
        let aside = dir.with_file_name(format!(
            "{}.diverged-epoch-{}",
            dir.file_name()
                .map_or("wal".into(), |name| name.to_string_lossy()),
            epoch
        ));
        tracing::error!(
            wal_dir = %dir.display(),
            moved_to = %aside.display(),
            fence_lsn = fence,
            last_lsn = last,
            epoch,
            "this writer's WAL holds entries above the fence of epoch {epoch}'s promote, written by a deposed primary and never acknowledged: the WAL is set aside and rebuilt with its entries up to the fence"
        );
        let settings = self.settings.clone();
        let (wal, unflushed) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            if aside.exists() {
                std::fs::remove_dir_all(&aside)
                    .with_context(|| format!("removing an older {}", aside.display()))?;
            }
            std::fs::rename(&settings.dir, &aside).with_context(|| {
                format!("moving {} to {}", settings.dir.display(), aside.display())
            })?;
            // At once: the health probe writes into it, and a missing directory would make
            // this node unhealthy (and not a failover candidate) for a check.
            std::fs::create_dir_all(&settings.dir)
                .with_context(|| format!("creating {}", settings.dir.display()))?;
            remove_old_diverged(&settings.dir);
            let old_settings = WalSettings {
                dir: aside.clone(),
                ..settings.clone()
            };
            let (old, _) = Wal::open(old_settings, Lsn(1))
                .with_context(|| format!("opening the set-aside wal {}", aside.display()))?;
            let first = old
                .first_lsn()
                .map_or(Lsn(fence.saturating_add(1)), |first| {
                    first.min(Lsn(fence.saturating_add(1)))
                });
            let (mut wal, _) = Wal::open(settings, first).context("opening a new wal")?;
            let mut unflushed = VecDeque::new();
            for entry in old.read_from(first).context("reading the set-aside wal")? {
                let entry = entry.context("reading an entry of the set-aside wal")?;
                if entry.lsn.0 > fence {
                    break;
                }
                wal.append_at(entry.epoch, entry.lsn, &entry.payload)
                    .with_context(|| format!("copying lsn {} below the fence", entry.lsn))?;
                let tables = payload::tables(&entry.payload).unwrap_or_default();
                unflushed.push_back((entry.lsn.0, table_names(&tables)));
            }
            wal.sync().context("syncing the rebuilt wal")?;
            Ok((wal, unflushed))
        })
        .await
        .context("the standby's wal task")??;
        self.wal = Some(wal);
        self.unflushed = unflushed;
        Ok(())
    }

    /// Restarts the WAL at `lsn`: the primary no longer keeps the entries in between, and the
    /// catalog's flushes cover them.
    async fn skip_to(&mut self, lsn: Lsn) -> anyhow::Result<()> {
        drop(self.wal.take());
        let settings = self.settings.clone();
        let (wal, _) = tokio::task::spawn_blocking(move || Wal::open(settings, lsn))
            .await
            .context("the standby's wal task")?
            .with_context(|| format!("reopening the standby's wal at lsn {lsn}"))?;
        anyhow::ensure!(
            wal.next_lsn() == lsn,
            "the standby's wal continues at lsn {} after skipping to lsn {lsn}: it holds \
             entries the primary does not",
            wal.next_lsn()
        );
        self.wal = Some(wal);
        Ok(())
    }
}

fn table_names(tables: &[TableId]) -> Vec<String> {
    tables.iter().map(TableId::to_string).collect()
}

/// Where the primary is, from the catalog (who) and gossip (the address).
async fn find_primary(inner: &NodeInner) -> Option<(String, SocketAddr, String)> {
    let primary = inner.catalog().snapshot().primary.clone()?;
    if primary == inner.node_id {
        return None;
    }
    let view = inner.cluster.view();
    let advertised = view.get(&primary)?.info.replication_addr.clone();
    if advertised.is_empty() {
        return None;
    }
    let host = advertised
        .rsplit_once(':')
        .map_or(advertised.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = tokio::net::lookup_host(&advertised).await.ok()?.next()?;
    Some((primary, addr, host))
}

/// Everything the follower loop works with.
struct Stream {
    inner: Arc<NodeInner>,
    state: FollowerState,
    standby: Option<StandbyWal>,
    /// Decoded entries waiting for the primary's commit LSN to reach them.
    pending: VecDeque<(u64, Vec<TableWrite>)>,
    progress: watch::Sender<Progress>,
    /// Wakes the catalog tailer (a flush notice, a skip).
    tail: Arc<Notify>,
    /// A standby's failover decision (`None`: a reader, or failover disabled).
    failover: Option<Failover>,
    /// When the primary was last heard from (a frame, or a stream opened).
    last_heard: Instant,
    /// Whether a reconnect failed since the stream went silent.
    reconnect_failed: bool,
    /// Rate-limits the failover warnings (ineligible, held back, cut off).
    failover_warned: Throttle,
    /// When this follower started (gossip's liveness is not believed before a detection
    /// bound has passed).
    started: Instant,
    /// The primary whose silence `last_heard` and `reconnect_failed` measure.
    silence_of: Option<String>,
}

/// What a failover check concluded.
enum Takeover {
    /// Keep following.
    No,
    /// This node is the primary now: the follower ends.
    Done,
}

async fn follow(
    inner: Arc<NodeInner>,
    wal: Option<Wal>,
    progress: watch::Sender<Progress>,
    stop: CancellationToken,
) {
    let role = if wal.is_some() {
        FollowerRole::Standby
    } else {
        FollowerRole::Reader
    };
    let settings = settings(&inner.config);
    let snapshot = inner.catalog().snapshot();
    let standby = match wal {
        Some(wal) => {
            let wal_settings = crate::node::wal_settings(&inner.config);
            match StandbyWal::open(wal, wal_settings, &snapshot) {
                Ok(standby) => Some(standby),
                Err(error) => {
                    inner.fail(format!("opening the standby's wal: {error:#}"));
                    return;
                }
            }
        }
        None => None,
    };
    let next = standby.as_ref().map_or(Lsn(1), StandbyWal::next_lsn);
    let fence = snapshot.fence.as_ref().map_or(0, |fence| fence.last_lsn);
    // A standby's WAL is a prefix of the log of its last entry's epoch (or of a later one):
    // it starts from that epoch and learns the catalog's newer promotes as any follower does
    // (`catalog_news` below), so a deposed primary restarting drops its unacknowledged tail.
    // The fence given with it is replaced there.
    let known_epoch = standby
        .as_ref()
        .and_then(StandbyWal::last_epoch)
        .filter(|epoch| *epoch < snapshot.epoch)
        .unwrap_or(snapshot.epoch);
    let state = FollowerState::new(
        inner.node_id.clone(),
        role,
        (Epoch(known_epoch), Lsn(fence)),
        next,
        settings.silence_timeout.as_millis() as u64,
    );
    if let Some(standby) = &standby {
        progress.send_modify(|progress| {
            progress.durable = standby.next_lsn().0.saturating_sub(1);
        });
    }
    let cluster = &inner.config.cluster;
    let failover = (standby.is_some() && cluster.failover_enabled).then(|| {
        Failover::new(
            inner.node_id.clone(),
            FailoverSettings {
                enabled: true,
                failover_timeout: cluster.failover_timeout.0,
                unhealthy_threshold: cluster.unhealthy_threshold,
                cooldown: cluster.failover_cooldown.0,
                ..FailoverSettings::default()
            },
        )
    });
    let tail = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    tasks.spawn(tail_catalog(inner.clone(), tail.clone(), stop.clone()));
    let mut stream = Stream {
        inner,
        state,
        standby,
        pending: VecDeque::new(),
        progress,
        tail,
        failover,
        last_heard: Instant::now(),
        reconnect_failed: false,
        failover_warned: Throttle::new(),
        started: Instant::now(),
        silence_of: None,
    };
    if let Err(error) = stream.catalog_news().await {
        stream.inner.fail(format!(
            "cutting the standby's wal back to the fence: {error:#}"
        ));
        return;
    }
    if let Err(error) = stream.queue_own_wal() {
        stream
            .inner
            .fail(format!("reading the standby's wal: {error:#}"));
        return;
    }
    stream.run(&settings, &stop).await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

impl Stream {
    async fn run(&mut self, settings: &ReplicationSettings, stop: &CancellationToken) {
        let origin = Instant::now();
        let now_ms = move || origin.elapsed().as_millis() as u64;
        let mut backoff = Duration::from_millis(50);
        let mut ended = "start";
        let unreachable_warned = Throttle::new();
        while !stop.is_cancelled() {
            self.set_streaming(false);
            match self.decide_takeover().await {
                Ok(Takeover::No) => {}
                Ok(Takeover::Done) => return,
                Err(error) => {
                    self.inner
                        .fail(format!("taking over as primary: {error:#}"));
                    return;
                }
            }
            let Some((primary, addr, host)) = find_primary(&self.inner).await else {
                if pause(stop, &mut backoff).await {
                    return;
                }
                continue;
            };
            if let Err(error) = self.catalog_news().await {
                self.inner.fail(format!("standby replication: {error:#}"));
                return;
            }
            self.state.subscribe(now_ms());
            let Some(FollowerAction::Subscribe(subscribe)) = self.state.poll_action() else {
                continue;
            };
            // A standby must learn soon whether the primary is gone (a dead peer's handshake
            // only times out after the handshake timeout).
            let bound = match &self.failover {
                // Within the rest of the failover timeout (a reconnect failing within it is
                // the trigger), in short attempts, so that gossip declaring the primary dead is
                // seen between them; never so short that a live primary cannot answer.
                Some(_) => self
                    .inner
                    .config
                    .cluster
                    .failover_timeout
                    .0
                    .saturating_sub(self.last_heard.elapsed())
                    .min(Duration::from_millis(500))
                    .max(Duration::from_millis(200)),
                None => settings.handshake_timeout,
            };
            let connected = tokio::time::timeout(
                bound,
                ReplicationClient::connect(settings, addr, &host, subscribe, stop.clone()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(arc_wal::replication::ReplicationError::Connect {
                    peer: addr,
                    message: format!("no answer within {bound:?}"),
                })
            });
            let mut client = match connected {
                Ok(client) => {
                    self.last_heard = Instant::now();
                    self.reconnect_failed = false;
                    client
                }
                Err(error) => {
                    self.state.stream_ended();
                    self.reconnect_failed = true;
                    // The catalog may name a new primary by now.
                    if let Err(error) = refresh_catalog(&self.inner).await {
                        debug!(%error, "reading the catalog log");
                    }
                    if let Some(left_out) = unreachable_warned.due(WARNING_INTERVAL) {
                        warn!(%primary, %addr, %error, left_out, "cannot reach the primary's replication stream; retrying");
                    }
                    if pause(stop, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            m::record_reconnect(ended);
            let role = if self.standby.is_some() {
                "standby"
            } else {
                "reader"
            };
            info!(%primary, %addr, role, from_lsn = %self.state.next_lsn(), "following the primary");
            // A standby checks the stream's silence often enough to notice it in time.
            let tick = match &self.failover {
                Some(_) => settings
                    .keepalive_interval
                    .min(self.inner.config.cluster.failover_timeout.0 / 6),
                None => settings.keepalive_interval,
            };
            let mut ticks = tokio::time::interval(tick);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ended = loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => break "stop",
                    frame = client.next_frame() => frame,
                    _ = ticks.tick() => {
                        // Half the failover timeout without a word: reconnect within the other
                        // half, so that a dead primary is known to be dead at the timeout.
                        if self.failover.is_some()
                            && self.last_heard.elapsed() >= self.inner.config.cluster.failover_timeout.0 / 2
                        {
                            break "silent";
                        }
                        self.state.tick(now_ms());
                        // A live primary can still need replacing (gossip shows it dead or
                        // unhealthy). Promoting here is safe: no frame is acknowledged meanwhile,
                        // and after a promote nothing more of the old epoch is.
                        match self.decide_takeover().await {
                            Ok(Takeover::No) => {}
                            Ok(Takeover::Done) => break "promoted",
                            Err(error) => {
                                self.inner.fail(format!("taking over as primary: {error:#}"));
                                break "error";
                            }
                        }
                        if let Err(error) = self.catalog_news().await {
                            self.inner.fail(format!("standby replication: {error:#}"));
                            break "error";
                        }
                        match self.act(&client).await {
                            Ok(None) => continue,
                            Ok(Some(reason)) => break reason,
                            Err(error) => {
                                self.inner.fail(format!("standby replication: {error:#}"));
                                break "error";
                            }
                        }
                    }
                };
                let mut frames = vec![first];
                while frames.len() < MAX_FRAMES_PER_TURN {
                    match client.next_frame().now_or_never() {
                        Some(frame) => frames.push(frame),
                        None => break,
                    }
                }
                let now = now_ms();
                self.last_heard = Instant::now();
                let mut closed = None;
                if matches!(frames.first(), Some(Some(Ok(_)))) {
                    // Not an error or a close: the stream may have ended by timing out.
                    self.note_heard(&primary);
                }
                for frame in frames {
                    match frame {
                        Some(Ok(frame)) => self.state.frame_received(frame, now),
                        Some(Err(error)) => {
                            debug!(%error, "replication stream ended");
                            closed = Some("stream_error");
                            break;
                        }
                        None => {
                            closed = Some("closed");
                            break;
                        }
                    }
                }
                match self.act(&client).await {
                    Ok(None) => {}
                    Ok(Some(reason)) => break reason,
                    Err(error) => {
                        self.inner.fail(format!("standby replication: {error:#}"));
                        break "error";
                    }
                }
                if let Some(reason) = closed {
                    self.state.stream_ended();
                    break reason;
                }
                backoff = Duration::from_millis(50);
            };
            if ended == "silent" {
                client.close_unheard().await;
            } else {
                client.close().await;
            }
            if matches!(ended, "stop" | "error" | "promoted") {
                return;
            }
            if self.state.phase() != FollowerPhase::Idle {
                self.state.stream_ended();
            }
            if ended == "named" {
                // Named primary by a switchover: take over at once (top of the loop).
                continue;
            }
            info!(%primary, reason = ended, "replication stream ended; subscribing again");
            if pause(stop, &mut backoff).await {
                return;
            }
        }
    }

    /// Takes over if the catalog names this standby primary (a switchover), else if the
    /// failover decision says so.
    async fn decide_takeover(&mut self) -> anyhow::Result<Takeover> {
        match self.named_primary().await {
            Ok(Takeover::No) => self.consider_failover().await,
            done => done,
        }
    }

    /// Asks the failover decision whether this standby takes over now, and does it. Called
    /// whenever the stream is down (silent, closed, or the primary unreachable), and on each
    /// tick while it streams (gossip may show the primary dead or unhealthy).
    async fn consider_failover(&mut self) -> anyhow::Result<Takeover> {
        if self.failover.is_none() {
            return Ok(Takeover::No);
        }
        let failover_timeout = self.inner.config.cluster.failover_timeout.0;
        self.measure_silence_of(&self.inner.catalog().snapshot());
        if self.last_heard.elapsed() >= failover_timeout {
            // Decide on the newest in-sync set and epoch.
            if let Err(error) = self.inner.catalog().refresh().await {
                debug!(%error, "reading the catalog log");
            }
        }
        let snapshot = self.inner.catalog().snapshot();
        // The read may name a new primary: the silence measured was the old one's.
        self.measure_silence_of(&snapshot);
        let silent = self.last_heard.elapsed();
        let catalog = CatalogView {
            epoch: snapshot.epoch,
            primary: snapshot.primary.clone(),
            in_sync: snapshot.in_sync.clone(),
            last_failover_at_ms: snapshot
                .failovers
                .last()
                .map(|failover| failover.record.promoted_at_ms),
        };
        let view = self.inner.cluster.view();
        let primary_unhealthy_checks = catalog
            .primary
            .as_deref()
            .and_then(|primary| view.get(primary))
            .map_or(0, |node| node.info.health.unhealthy_checks);
        let now_ms = self.inner.clock.unix_ms();
        let Some(failover) = self.failover.as_mut() else {
            return Ok(Takeover::No);
        };
        let action = failover.tick(&FailoverInput {
            now_ms,
            view: &view,
            catalog: &catalog,
            stream_silent_ms: Some(silent.as_millis() as u64),
            reconnect_failed: self.reconnect_failed,
            primary_unhealthy_checks,
            own_unhealthy: self.inner.cluster.local_info().health.unhealthy_checks > 0,
            gossip_settled: self.started.elapsed()
                >= arc_gossip::detection_bound(self.inner.config.cluster.heartbeat_interval.0),
        });
        if !matches!(action, FailoverAction::Follow) {
            let state = catalog
                .primary
                .as_deref()
                .and_then(|primary| view.get(primary))
                .map(|node| (node.state.to_string(), node.generation));
            debug!(
                ?action,
                ?state,
                silent_ms = silent.as_millis() as u64,
                reconnect_failed = self.reconnect_failed,
                "failover check"
            );
        }
        let (expected_epoch, reason, triggered_at_ms) = match action {
            FailoverAction::Follow | FailoverAction::Wait { .. } => return Ok(Takeover::No),
            FailoverAction::HeldBack { until_ms } => {
                m::record_failover_held_back("cooldown");
                if self.warning_due() {
                    warn!(
                        primary = ?catalog.primary,
                        unhealthy_checks = primary_unhealthy_checks,
                        cooldown_left_ms = until_ms.saturating_sub(now_ms),
                        "the primary is unhealthy, but the last failover was within cluster.failover_cooldown: holding back"
                    );
                }
                return Ok(Takeover::No);
            }
            FailoverAction::Ineligible { reason } => {
                m::record_failover_held_back("ineligible");
                if self.warning_due() {
                    warn!(%reason, in_sync = ?catalog.in_sync, "the primary needs replacing, but this standby may not take over (not in sync, or not healthy)");
                }
                return Ok(Takeover::No);
            }
            FailoverAction::Promote {
                expected_epoch,
                reason,
                triggered_at_ms,
            } => (expected_epoch, reason, triggered_at_ms),
        };
        // A standby cut off from everyone sees the same silence and death as a failed primary:
        // it takes over only if another node heard before the trigger answers now.
        let cluster = &self.inner.config.cluster;
        // The trigger holds a failover timeout or more after the silence began (a dead primary
        // in gossip takes longer still): look back that far again, and a few heartbeats more
        // for gossip's own delay.
        let window = cluster.failover_timeout.0 * 2 + cluster.heartbeat_interval.0 * 5;
        let heard_since =
            std::time::UNIX_EPOCH + Duration::from_millis(triggered_at_ms).saturating_sub(window);
        let primary = catalog.primary.as_deref().unwrap_or("");
        let witnesses = arc_gossip::witnesses(&view, primary, heard_since);
        let answers = if witnesses.is_empty() {
            WitnessAnswers::default()
        } else {
            ask_witnesses(&self.inner, &witnesses, primary).await
        };
        let heard_ms = answers.heard.as_ref().map(|(_, heard_ms)| *heard_ms);
        let hold_back = if !witnesses.is_empty() && !answers.answered {
            m::record_failover_held_back("cut_off");
            if self.warning_due() {
                warn!(
                    %reason,
                    witnesses = ?witnesses.iter().map(|node| &node.id).collect::<Vec<_>>(),
                    "the primary needs replacing, but no other node answers this standby either: it is more likely cut off itself, and does not take over while none answers"
                );
            }
            true
        } else if arc_gossip::heard_by_others(&view, primary, reason, heard_ms, failover_timeout) {
            m::record_failover_held_back("link_cut");
            if self.warning_due() {
                warn!(
                    %reason,
                    %primary,
                    heard_by = ?answers.heard,
                    "the primary is silent or dead to this standby, but another node hears it: only this standby's links are at fault (the one between them is cut), and it does not take over"
                );
            }
            true
        } else {
            false
        };
        if hold_back {
            if let Some(failover) = self.failover.as_mut() {
                failover.promote_failed(now_ms);
            }
            return Ok(Takeover::No);
        }
        let Some(failover) = self.failover.as_mut() else {
            return Ok(Takeover::No);
        };
        let Some(standby) = self.standby.as_mut() else {
            return Ok(Takeover::No);
        };
        let durable = standby.next_lsn().0.saturating_sub(1);
        let attempt = Instant::now();
        let record = FailoverRecord {
            reason: reason.as_str().to_string(),
            detected_at_ms: triggered_at_ms,
            promoted_at_ms: now_ms,
        };
        // The other live, healthy members of the in-sync set stay in it: they hold every
        // acknowledged write, and if this node dies before it serves, one of them can take
        // over in turn (the new epoch then waits for their acknowledgements). Every live,
        // healthy standby writer is offered: this node's copy of the log may be older than
        // the set, and the catalog keeps those that are members where the promote lands.
        let mut in_sync = vec![self.inner.node_id.clone()];
        in_sync.extend(
            arc_gossip::rank_healthy_standbys(&view)
                .into_iter()
                .map(|candidate| candidate.id)
                .filter(|id| *id != self.inner.node_id),
        );
        info!(%reason, expected_epoch, durable_lsn = durable, ?in_sync, "taking over as primary");
        let promoted = self
            .inner
            .catalog()
            .promote_for_failover(
                expected_epoch,
                &self.inner.node_id,
                durable,
                in_sync,
                record,
            )
            .await;
        let promoted = match crate::failpoints::lose_promote_answer(promoted) {
            Err(error) if error.is_retryable() => {
                // Its put may have reached the store: following again now would acknowledge
                // the old primary's writes above this promote's fence, which this node cuts
                // from its WAL should it find itself named later.
                warn!(%error, "the promote's outcome is unknown; acknowledging nothing until the catalog settles it");
                crate::switchover::settle_promote(
                    &self.inner,
                    expected_epoch,
                    &self.inner.node_id,
                    error,
                )
                .await
            }
            promoted => promoted,
        };
        match promoted {
            Ok(epoch) => {
                crate::failpoints::hit("failover-after-promote");
                failover.promoted(expected_epoch);
                let wal = standby.wal.take().context("the standby's wal is closed")?;
                let detection = Duration::from_millis(now_ms.saturating_sub(triggered_at_ms));
                self.serve(wal, epoch, reason, detection, attempt).await
            }
            Err(CatalogError::Fenced { current_epoch, .. }) => {
                info!(
                    current_epoch,
                    "another standby took over first; following it"
                );
                failover.promote_lost(expected_epoch);
                Ok(Takeover::No)
            }
            Err(CatalogError::Rejected { reason }) => {
                // The log says this node left the in-sync set: it may lack acknowledged writes.
                info!(%reason, "the catalog refused the promote; following");
                failover.promote_failed(self.inner.clock.unix_ms());
                Ok(Takeover::No)
            }
            Err(error) => {
                warn!(%error, "the promote failed; trying again");
                failover.promote_failed(self.inner.clock.unix_ms());
                Ok(Takeover::No)
            }
        }
    }

    /// Takes over when the catalog names this standby the primary of an epoch it does not
    /// serve yet: a planned switchover, whose old primary wrote the promote after this node
    /// confirmed everything up to its fence.
    async fn named_primary(&mut self) -> anyhow::Result<Takeover> {
        let snapshot = self.inner.catalog().snapshot();
        if snapshot.primary.as_deref() != Some(self.inner.node_id.as_str())
            || self.inner.write_epoch().is_some()
        {
            return Ok(Takeover::No);
        }
        let (Some(standby), Some(fence)) = (self.standby.as_mut(), snapshot.fence.clone()) else {
            return Ok(Takeover::No);
        };
        let durable = standby.next_lsn().0.saturating_sub(1);
        anyhow::ensure!(
            durable >= fence.last_lsn,
            "the catalog names this node primary of epoch {} with a fence at lsn {}, but its wal holds only up to lsn {durable}",
            snapshot.epoch,
            fence.last_lsn
        );
        if durable > fence.last_lsn {
            // Entries the old primary wrote but never acknowledged (they are above its fence).
            standby.cut_above(snapshot.epoch, fence.last_lsn).await?;
        }
        let started = Instant::now();
        let wal = standby.wal.take().context("the standby's wal is closed")?;
        if let Some(failover) = self.failover.as_mut() {
            failover.promoted(snapshot.epoch.saturating_sub(1));
        }
        let detection = snapshot
            .failovers
            .last()
            .map_or(Duration::ZERO, |failover| {
                Duration::from_millis(
                    failover
                        .record
                        .promoted_at_ms
                        .saturating_sub(failover.record.detected_at_ms),
                )
            });
        self.serve(
            wal,
            snapshot.epoch,
            arc_gossip::FailoverReason::Switchover,
            detection,
            started,
        )
        .await
    }

    /// Takes over as the primary of `epoch` (its promote committed) with the standby's `wal`;
    /// records the failover (`detection`, and the promotion since `attempt`).
    async fn serve(
        &mut self,
        wal: Wal,
        epoch: u64,
        reason: arc_gossip::FailoverReason,
        detection: Duration,
        attempt: Instant,
    ) -> anyhow::Result<Takeover> {
        crate::node::take_over(&self.inner, wal, epoch).await?;
        // This node follows no one any more: its follower gauges would stay frozen.
        m::set_follower_lsns(0, 0, 0);
        m::record_failover(
            reason.as_str(),
            detection,
            attempt.elapsed(),
            self.inner.clock.unix_ms(),
        );
        info!(epoch, %reason, detection_ms = detection.as_millis() as u64, promotion_ms = attempt.elapsed().as_millis() as u64, "took over as primary");
        Ok(Takeover::Done)
    }

    /// Starts measuring the silence of the primary `snapshot` names, if it is another one than
    /// the one measured: a new primary starts with a clean slate.
    fn measure_silence_of(&mut self, snapshot: &CatalogState) {
        if snapshot.primary != self.silence_of {
            self.silence_of = snapshot.primary.clone();
            self.last_heard = Instant::now();
            self.reconnect_failed = false;
        }
    }

    /// Whether a rate-limited failover warning may be logged now (one per 10 s); notes it.
    fn warning_due(&self) -> bool {
        self.failover_warned.due(WARNING_INTERVAL).is_some()
    }

    /// Tells the state machine about the catalog's newest promote. Entries this node holds
    /// above a newer promote's fence were never acknowledged (the new primary, in sync, would
    /// hold them otherwise) and differ from the new primary's log: they are dropped (see
    /// [`Stream::drop_above`]) and the stream starts over from what remains.
    async fn catalog_news(&mut self) -> anyhow::Result<()> {
        let snapshot = self.inner.catalog().snapshot();
        let Some(fence) = snapshot.fence.clone() else {
            return Ok(());
        };
        // Compared with the fenced epoch, not the promised one: a primary may have announced
        // its epoch before the catalog showed its promote.
        if Epoch(snapshot.epoch) <= self.state.fenced_epoch() {
            return Ok(());
        }
        let keep = self
            .state
            .promote_seen(Epoch(snapshot.epoch), Lsn(fence.last_lsn));
        self.inner
            .cluster
            .update(|info| info.epoch = snapshot.epoch);
        if let Some(keep) = keep {
            self.drop_above(snapshot.epoch, keep).await?;
        }
        info!(epoch = snapshot.epoch, fence_lsn = fence.last_lsn, next_lsn = %self.state.next_lsn(), "a new primary: following it from its fence");
        Ok(())
    }

    /// Drops what this node holds above `keep`: entries of older epochs than `epoch`'s promote
    /// that it may not keep (written by a deposed primary, never acknowledged). A reader drops
    /// its queued entries (none above was exposed); a standby sets its WAL aside and rebuilds
    /// it up to `keep`.
    async fn drop_above(&mut self, epoch: u64, keep: Lsn) -> anyhow::Result<()> {
        warn!(epoch, keep_lsn = %keep, "a newer promote's fence is below what this node holds: dropping the entries above it (a deposed primary's, never acknowledged)");
        self.pending.retain(|(lsn, _)| *lsn <= keep.0);
        if let Some(standby) = &mut self.standby {
            standby.cut_above(epoch, keep.0).await?;
            let durable = standby.next_lsn().0.saturating_sub(1);
            self.progress
                .send_modify(|progress| progress.durable = durable);
        }
        Ok(())
    }

    /// Notes a frame from `primary` now, for the other standbys that ask (see
    /// [`Progress::heard`]). Nobody waits on it: no receiver is woken.
    fn note_heard(&self, primary: &str) {
        let at = Instant::now();
        self.progress.send_if_modified(|progress| {
            match &mut progress.heard {
                Some((id, when)) if id == primary => *when = at,
                heard => *heard = Some((primary.to_string(), at)),
            }
            false
        });
    }

    fn set_streaming(&self, streaming: bool) {
        self.progress.send_if_modified(|progress| {
            let changed = progress.streaming != streaming;
            progress.streaming = streaming;
            if !streaming && progress.behind_since.is_none() {
                progress.behind_since = Some(Instant::now());
            }
            changed
        });
    }

    /// Carries out the state machine's actions; returns why the stream must end, if it must.
    async fn act(&mut self, client: &ReplicationClient) -> anyhow::Result<Option<&'static str>> {
        let mut end = None;
        let mut nudged = false;
        loop {
            let mut appends = Vec::new();
            let mut notices = Vec::new();
            while let Some(action) = self.state.poll_action() {
                match action {
                    FollowerAction::Subscribe(_) => {}
                    FollowerAction::SkipTo { lsn } => {
                        info!(lsn = %lsn, "the primary no longer keeps older entries; its flushes cover them");
                        if let Err(error) = refresh_catalog(&self.inner).await {
                            warn!(%error, "reading the catalog log after a skip");
                        }
                        if let Some(standby) = &mut self.standby {
                            standby.catalog_flushed(&self.inner.catalog().snapshot());
                            standby.skip_to(lsn).await?;
                        }
                        self.tail.notify_one();
                    }
                    FollowerAction::DropAbove { epoch, lsn } => {
                        // It comes first on a stream: nothing of it is waiting to be appended,
                        // and nothing of an older stream may be.
                        anyhow::ensure!(
                            appends.is_empty(),
                            "entries queued for the standby's wal before the fence of epoch {epoch} at lsn {lsn}"
                        );
                        self.drop_above(epoch.0, lsn).await?;
                    }
                    FollowerAction::Append(entry) => {
                        self.receive(&entry);
                        appends.push(entry);
                    }
                    FollowerAction::Apply(entry) => {
                        self.receive(&entry);
                        self.state.applied(entry.lsn);
                    }
                    FollowerAction::SendAck { durable_lsn } => client.send_ack(durable_lsn),
                    FollowerAction::SendApplied { applied_lsn } => {
                        client.send_applied(applied_lsn);
                    }
                    FollowerAction::CommitAdvanced { .. } => {}
                    FollowerAction::Flushed(notice) => {
                        // A notice naming no table is a switchover's nudge: a promote landed.
                        nudged |= notice.tables.is_empty();
                        notices
                            .extend(notice.tables.into_iter().map(|(table, lsn)| (table, lsn.0)));
                        self.tail.notify_one();
                    }
                    FollowerAction::Resubscribe { reason } => {
                        warn!(?reason, "dropping the replication stream");
                        end = Some(resubscribe_label(&reason));
                    }
                }
            }
            let Some(standby) = self.standby.as_mut() else {
                break;
            };
            if appends.is_empty() && notices.is_empty() {
                break;
            }
            if let Some(durable) = standby.append(appends, notices).await? {
                self.progress
                    .send_modify(|progress| progress.durable = durable.0);
                self.state.durable(durable);
            }
        }
        self.expose();
        if nudged && end.is_none() && self.standby.is_some() {
            // A standby the promote names takes over now, not at its next tick.
            if let Err(error) = refresh_catalog(&self.inner).await {
                debug!(%error, "reading the catalog after a switchover's nudge");
            }
            let snapshot = self.inner.catalog().snapshot();
            if snapshot.primary.as_deref() == Some(self.inner.node_id.as_str()) {
                end = Some("named");
            }
        }
        if end.is_none() {
            self.set_streaming(matches!(
                self.state.phase(),
                FollowerPhase::Streaming { .. }
            ));
        }
        Ok(end)
    }

    /// A standby's own WAL holds entries no flush covers yet: queued like streamed ones, they
    /// are shown once the primary's commit LSN covers them (the stream starts after them).
    fn queue_own_wal(&mut self) -> anyhow::Result<()> {
        // Taken out while read, one entry at a time (`receive` needs `self`): collecting them
        // first held every entry twice, raw and decoded, at the peak.
        let Some(wal) = self.standby.as_mut().and_then(|standby| standby.wal.take()) else {
            return Ok(());
        };
        let queued = (|| -> anyhow::Result<()> {
            for entry in wal.read_from(Lsn(0)).context("reading the standby's wal")? {
                self.receive(&entry.context("reading an entry of the standby's wal")?);
            }
            Ok(())
        })();
        if let Some(standby) = self.standby.as_mut() {
            standby.wal = Some(wal);
        }
        queued
    }

    /// Decodes an entry's rows (those of tables whose flushes do not cover it yet) and queues
    /// them until the primary's commit LSN reaches them.
    fn receive(&mut self, entry: &Entry) {
        let lsn = entry.lsn.0;
        let writes = match payload::decode(&entry.payload) {
            Ok(writes) => writes,
            Err(error) => {
                // Nothing to show from it; a standby still keeps the bytes in its WAL.
                warn!(lsn, %error, "undecodable wal entry from the primary; its rows are not shown here");
                Vec::new()
            }
        };
        let snapshot = self.inner.catalog().snapshot();
        let writes: Vec<TableWrite> = writes
            .into_iter()
            .filter(|write| {
                snapshot
                    .tables
                    .get(&write.table)
                    .is_none_or(|state| state.flushed_lsn < lsn)
            })
            .collect();
        self.pending.push_back((lsn, writes));
    }

    /// Applies queued rows up to the primary's commit LSN to the buffers.
    fn expose(&mut self) {
        let commit = self.state.commit_lsn().map_or(0, |lsn| lsn.0);
        let mut visible = None;
        while self.pending.front().is_some_and(|(lsn, _)| *lsn <= commit) {
            let Some((lsn, writes)) = self.pending.pop_front() else {
                break;
            };
            if !writes.is_empty() {
                self.inner.buffers.apply_followed(lsn, writes);
            }
            visible = Some(lsn);
        }
        let received = self.state.next_lsn().0.saturating_sub(1);
        // Caught up means against the commit LSN this stream told: right after `Subscribed`
        // nothing is known yet, and 0 >= 0 made a restarted reader ready (and answer) before
        // it had the rows written while it was down.
        let streaming = matches!(self.state.phase(), FollowerPhase::Streaming { .. })
            && self.state.commit_heard();
        self.progress.send_if_modified(|progress| {
            let before = (progress.visible, progress.commit, progress.caught_up);
            if let Some(lsn) = visible {
                progress.visible = progress.visible.max(lsn);
            }
            // Everything received is acknowledged and applied: visible up to the commit LSN
            // even when the entries up to it held no rows for this node.
            if self.pending.is_empty() && received >= commit {
                progress.visible = progress.visible.max(commit);
            }
            progress.commit = progress.commit.max(commit);
            let current = progress.visible >= progress.commit;
            if streaming && current {
                progress.caught_up = true;
                progress.behind_since = None;
            } else if progress.behind_since.is_none() {
                progress.behind_since = Some(Instant::now());
            }
            m::set_follower_lsns(received, progress.visible, progress.commit);
            before != (progress.visible, progress.commit, progress.caught_up)
        });
    }
}

/// Waits `backoff` (then doubles it, up to [`MAX_BACKOFF`]); returns whether the node stops.
async fn pause(stop: &CancellationToken, backoff: &mut Duration) -> bool {
    let stopped = tokio::time::timeout(*backoff, stop.cancelled())
        .await
        .is_ok();
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    stopped
}

fn resubscribe_label(reason: &ResubscribeReason) -> &'static str {
    match reason {
        ResubscribeReason::Gap { .. } => "gap",
        ResubscribeReason::StaleEpoch { .. } => "stale_epoch",
        ResubscribeReason::EpochRegressed { .. } => "epoch_regressed",
        ResubscribeReason::NewPrimary { .. } => "new_primary",
        ResubscribeReason::Silent { .. } => "silent",
        ResubscribeReason::Refused { .. } => "refused",
        ResubscribeReason::Unexpected { .. } => "unexpected",
    }
}

/// Reads the catalog log within [`CATALOG_READ_BOUND`], for a follower's loop.
async fn refresh_catalog(inner: &NodeInner) -> anyhow::Result<()> {
    tokio::time::timeout(CATALOG_READ_BOUND, inner.catalog().refresh())
        .await
        .map_err(|_| {
            anyhow::anyhow!("the object store did not answer within {CATALOG_READ_BOUND:?}")
        })??;
    Ok(())
}

/// Keeps a follower's catalog current: at once after a flush notice or a skip, and every
/// [`CATALOG_BACKSTOP`]; then drops buffered rows the flushes cover.
async fn tail_catalog(inner: Arc<NodeInner>, wanted: Arc<Notify>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(CATALOG_BACKSTOP);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            () = wanted.notified() => {}
            _ = ticks.tick() => {}
        }
        if let Err(error) = inner.catalog().refresh().await {
            warn!(%error, "reading the catalog log");
            continue;
        }
        discard_flushed(&inner.buffers, &inner.catalog().snapshot());
    }
}

/// Drops buffered rows that the catalog's flushes cover (freed off the runtime).
fn discard_flushed(buffers: &Buffers, snapshot: &CatalogState) {
    let released = buffers.discard_flushed(|table| {
        snapshot
            .tables
            .get(table)
            .map_or(0, |state| state.flushed_lsn)
    });
    if !released.is_empty() {
        drop(tokio::task::spawn_blocking(move || drop(released)));
    }
}

/// How many set-aside WALs (`<wal>.diverged-epoch-<N>`) are kept, the newest, for inspection.
/// Nothing needs them (their entries above the fence were never acknowledged, and the rebuilt
/// WAL holds those below it), but each is as large as the WAL was: without a bound every
/// failover of a busy primary would leave one more on the WAL's disk.
const DIVERGED_KEPT: usize = 3;

/// Deletes the set-aside copies of the WAL directory `wal_dir` beyond the newest
/// [`DIVERGED_KEPT`]. A failure is a warning: they only take space.
fn remove_old_diverged(wal_dir: &std::path::Path) {
    let (Some(parent), Some(wal_name)) = (wal_dir.parent(), wal_dir.file_name()) else {
        return;
    };
    let names: Vec<String> = match std::fs::read_dir(parent) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect(),
        Err(error) => {
            warn!(dir = %parent.display(), %error, "cannot list the set-aside wals");
            return;
        }
    };
    for name in diverged_beyond(&names, &wal_name.to_string_lossy(), DIVERGED_KEPT) {
        let path = parent.join(&name);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                info!(removed = %path.display(), kept = DIVERGED_KEPT, "removed an old set-aside wal")
            }
            Err(error) => {
                warn!(path = %path.display(), %error, "cannot remove an old set-aside wal")
            }
        }
    }
}

/// Of the directory entries `names`, the set-aside copies of `wal_name` beyond the newest
/// `keep`, by epoch.
fn diverged_beyond(names: &[String], wal_name: &str, keep: usize) -> Vec<String> {
    let prefix = format!("{wal_name}.diverged-epoch-");
    let mut found: Vec<(u64, &String)> = names
        .iter()
        .filter_map(|name| Some((name.strip_prefix(&prefix)?.parse().ok()?, name)))
        .collect();
    found.sort_unstable_by_key(|(epoch, _)| std::cmp::Reverse(*epoch));
    found
        .into_iter()
        .skip(keep)
        .map(|(_, name)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_keep_the_newest_set_aside_wals_by_epoch() {
        let names: Vec<String> = [
            "wal",
            "wal.diverged-epoch-9",
            "wal.diverged-epoch-10",
            "wal.diverged-epoch-2",
            "wal.diverged-epoch-11",
            "wal.diverged-epoch-x",
            "other.diverged-epoch-1",
            "cache",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            diverged_beyond(&names, "wal", 2),
            ["wal.diverged-epoch-9", "wal.diverged-epoch-2"]
        );
        assert!(diverged_beyond(&names, "wal", 5).is_empty());
    }
}
