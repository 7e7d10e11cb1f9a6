//! [`Membership`]: this node's chitchat instance, the task that owns it, and the cluster view
//! it maintains.
//!
//! # Tasks
//!
//! - chitchat's own server task (spawned by `spawn_chitchat`): gossips every heartbeat over an
//!   [`AuthenticatedUdpTransport`] socket we open ourselves (so `listen_addr` may use port 0).
//!   It stops when its handle is shut down or dropped.
//! - the owner task: owns the chitchat handle; publishes local changes; every
//!   [`poll_interval`] reads chitchat's state, tracks heartbeats, rebuilds the [`ClusterView`]
//!   and records metrics; contacts re-resolved seeds. On cancellation it shuts chitchat down.
//! - the seed resolver task, only when a seed is a host name: re-resolves it periodically.
//!
//! Both of ours live in one `JoinSet` under one cancellation token: [`Membership::leave`] and
//! [`Membership::shutdown`] cancel and join them; dropping the `Membership` cancels and aborts
//! them, which drops the chitchat handle and stops chitchat's task too. Nothing outlives it.
//! A task is not respawned if it panics: [`Membership::stopped`] resolves and the view freezes.
//!
//! # Seeds
//!
//! chitchat 0.13 resolves host-name seeds in a detached task of its own (every 60 s), which
//! would outlive us. So we hand chitchat only IP addresses (the literal ones and the first
//! resolution of the names) and re-resolve names ourselves; an address that appears later and
//! is not yet a live peer gets a direct gossip round from us.
//!
//! # Time
//!
//! Wall-clock times (the view's last heartbeats, heartbeat-age metrics, datagram timestamps and
//! freshness) come from the [`Clock`] given to [`Membership::start_with_clock`];
//! [`Membership::start`] uses the [`SystemClock`]. Scheduling (polls, seed refreshes) and the
//! age of a heartbeat in the liveness rule use tokio's monotonic `Instant`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arc_clock::{Clock, SystemClock};
use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::metrics;
use crate::transport::{self, AuthenticatedUdpTransport, GossipAuthSettings};
use crate::view::{
    ClusterView, NodeInfo, NodeState, Observed, Phase, Role, derive_state, keys, merge_generations,
};

/// Phi threshold of chitchat's failure detector: a peer is dead once the time since its last
/// heartbeat exceeds `PHI_THRESHOLD` times the smoothed mean heartbeat interval.
const PHI_THRESHOLD: f64 = 8.0;
/// Heartbeat-interval samples chitchat keeps per peer. Small on purpose: chitchat smooths the
/// mean with a prior of weight [`CHITCHAT_PRIOR_WEIGHT`] (`initial_interval`, = the heartbeat),
/// so with few samples the prior keeps at least a third of the weight and the detection time
/// stays within a narrow, predictable band of the heartbeat, whatever the cluster size. (With
/// chitchat's default 1,000 samples, the mean sinks to the arrival gap of relayed heartbeats,
/// a fraction of the interval in big clusters, and a short stall makes peers flap.)
const SAMPLING_WINDOW: usize = 5;
/// The weight chitchat 0.13 gives `initial_interval` in its smoothed mean (a constant there).
const CHITCHAT_PRIOR_WEIGHT: f64 = 5.0;
/// Intervals longer than this many heartbeats are dropped from the samples.
const MAX_INTERVAL_HEARTBEATS: u32 = 2;
/// Gossip rounds we allow for a node's last heartbeat to reach every peer through relays.
const PROPAGATION_ROUNDS: u32 = 4;
/// Longest time between two polls of chitchat's state.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Errors of [`Membership::start`] and [`next_generation`].
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The authenticated transport refused its settings.
    #[error("invalid gossip transport settings")]
    Transport(#[from] transport::Error),
    /// `node_id` is empty.
    #[error("gossip node id is empty")]
    EmptyNodeId,
    /// `heartbeat_interval` is zero.
    #[error("gossip heartbeat interval must be greater than zero")]
    ZeroHeartbeat,
    /// A seed is not `host:port`.
    #[error("invalid gossip seed '{seed}': expected host:port")]
    InvalidSeed {
        /// The rejected seed.
        seed: String,
    },
    /// `advertise_addr` is a wildcard address peers can't send to.
    #[error("gossip advertise address {addr} is unspecified: peers cannot reach it")]
    UnspecifiedAdvertiseAddr {
        /// The rejected address.
        addr: SocketAddr,
    },
    /// The gossip socket could not be opened.
    #[error("failed to open the gossip socket on {listen_addr}")]
    Bind {
        /// Where we tried to bind.
        listen_addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: anyhow::Error,
    },
    /// chitchat did not start.
    #[error("failed to start chitchat on {listen_addr}")]
    Start {
        /// The bound gossip address.
        listen_addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: anyhow::Error,
    },
    /// The generation file could not be read or written.
    #[error("failed to {action} generation file {path}")]
    GenerationIo {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The generation file holds something other than one decimal generation.
    #[error("generation file {path} is corrupt: {reason}")]
    GenerationCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Settings of [`Membership::start`] and [`Membership::start_with_clock`].
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    /// This node's id; unique in the cluster.
    pub node_id: String,
    /// Cluster name: the chitchat cluster id, and part of the datagram key.
    pub cluster_name: String,
    /// Secret keying the datagram MAC; must not be empty.
    pub shared_secret: Vec<u8>,
    /// Where the gossip socket binds (UDP). Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The address peers send to. Port 0 means "the bound port"; the IP must not be a wildcard.
    pub advertise_addr: SocketAddr,
    /// Seeds as `host:port`; host names are re-resolved periodically.
    pub seeds: Vec<String>,
    /// Gossip round interval, also the failure detector's expected heartbeat. Shorter detects
    /// deaths sooner (see [`detection_bound`]) at the cost of more datagrams.
    pub heartbeat_interval: Duration,
    /// Generation of this start; strictly increasing per node (see [`next_generation`]).
    pub generation: u64,
    /// How long dead and left nodes stay in the view before chitchat forgets them. Default 1 h.
    pub dead_node_grace_period: Duration,
    /// Datagram authentication settings.
    pub auth: GossipAuthSettings,
}

impl MembershipSettings {
    /// Default of [`MembershipSettings::dead_node_grace_period`].
    pub const DEFAULT_DEAD_NODE_GRACE_PERIOD: Duration = Duration::from_secs(3_600);
}

/// Returns the failure detector settings used for `heartbeat_interval`; see [`detection_bound`].
pub fn failure_detector_config(
    heartbeat_interval: Duration,
    dead_node_grace_period: Duration,
) -> FailureDetectorConfig {
    FailureDetectorConfig {
        phi_threshold: PHI_THRESHOLD,
        sampling_window_size: SAMPLING_WINDOW,
        max_interval: heartbeat_interval * MAX_INTERVAL_HEARTBEATS,
        initial_interval: heartbeat_interval,
        dead_node_grace_period,
    }
}

/// Returns how often the owner task polls chitchat: half a heartbeat, at most 500 ms.
pub fn poll_interval(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval / 2).clamp(Duration::from_millis(1), MAX_POLL_INTERVAL)
}

/// Returns a conservative upper bound on how long after a node's last gossip every live peer's
/// view shows it dead: `17 h + poll_interval(h)` for heartbeat `h`.
///
/// chitchat 0.13's detector declares a peer dead when `elapsed / mean > phi`, where `elapsed`
/// runs from the last time the observer saw the peer's heartbeat counter advance, and `mean`
/// is `(sum of the last W samples + 5 × initial_interval) / (n + 5)` over `n <= W` samples of
/// the time between advances, each at most `max_interval` (longer ones are dropped). With our
/// settings (`W = 5`, `initial_interval = h`, `max_interval = 2h`, `phi = 8`) the mean is at most
/// `(5 × 2h + 5h) / 10 = 1.5h` (and at least `0.5h`), so a peer is dead at most `8 × 1.5h = 12h`
/// after its last observed advance. Then add:
///
/// - `4h`: relays may deliver the last heartbeat value to some observers up to a few rounds
///   after the node stopped (push-pull gossip to 3 peers per round reaches 50 nodes in about
///   3 rounds);
/// - `h`: chitchat evaluates liveness once per gossip round, at its end;
/// - `poll_interval(h)`: our poll then has to see it.
///
/// Typical detection is far shorter: 0.5h to 0.75h per mean, so 4h to 6h plus a round.
pub fn detection_bound(heartbeat_interval: Duration) -> Duration {
    max_silence_before_dead(heartbeat_interval)
        + heartbeat_interval * (PROPAGATION_ROUNDS + 1)
        + poll_interval(heartbeat_interval)
}

/// Returns the longest time without an observed heartbeat advance before chitchat declares a
/// peer dead: phi times the largest possible smoothed mean (`12h`, see [`detection_bound`]).
fn max_silence_before_dead(heartbeat_interval: Duration) -> Duration {
    let samples = SAMPLING_WINDOW as f64;
    let max_mean_heartbeats = (samples * f64::from(MAX_INTERVAL_HEARTBEATS)
        + CHITCHAT_PRIOR_WEIGHT)
        / (samples + CHITCHAT_PRIOR_WEIGHT);
    heartbeat_interval.mul_f64(PHI_THRESHOLD * max_mean_heartbeats)
}

/// Returns how long [`Membership::leave`] should keep gossiping so that every peer sees the
/// node leave rather than die: the four propagation rounds (`4h`) of [`detection_bound`].
pub fn leave_linger(heartbeat_interval: Duration) -> Duration {
    heartbeat_interval * PROPAGATION_ROUNDS
}

/// Returns how often host-name seeds are re-resolved: ten heartbeats, within 1 s to 30 s.
fn seed_refresh_interval(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval * 10).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Returns the generation for this start and persists it to `path`: `max(now_ms, last + 1)`,
/// so it strictly increases across starts even if the clock goes back.
///
/// The file holds one decimal number. It is replaced atomically: written to a temporary file
/// in the same directory, fsynced, renamed over `path`, then the directory is fsynced.
///
/// # Errors
///
/// `GenerationIo` if the file can't be read or written, `GenerationCorrupt` if it holds
/// anything but one generation below `u64::MAX`.
pub fn next_generation(path: &Path, now_ms: u64) -> Result<u64, MembershipError> {
    let io_error = |action: &'static str| {
        move |source: std::io::Error| MembershipError::GenerationIo {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let corrupt = |reason: String| MembershipError::GenerationCorrupt {
        path: path.to_path_buf(),
        reason,
    };
    let last = match std::fs::read_to_string(path) {
        Ok(content) => {
            let trimmed = content.trim();
            let last: u64 = trimmed
                .parse()
                .map_err(|error| corrupt(format!("'{trimmed}' is not a generation: {error}")))?;
            Some(last)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error("read")(error)),
    };
    let generation = match last {
        Some(last) => {
            let after_last = last
                .checked_add(1)
                .ok_or_else(|| corrupt(format!("generation {last} cannot be incremented")))?;
            now_ms.max(after_last)
        }
        None => now_ms,
    };
    write_atomically(path, format!("{generation}\n").as_bytes()).map_err(io_error("write"))?;
    Ok(generation)
}

fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(".tmp");
    let temp_path = directory.join(temp_name);
    {
        let mut file = std::fs::File::create(&temp_path)?;
        file.write_all(content)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp_path, path)?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(&directory)?.sync_all()
}

/// State shared by the [`Membership`] handle and its owner task.
struct Shared {
    /// The local node's info; the source of truth for what we publish.
    local: StdMutex<NodeInfo>,
    /// Latest view. Sent only while holding `local`, so the self entry is never older than the
    /// info it was built from.
    view_tx: watch::Sender<Arc<ClusterView>>,
    /// Wakes the owner task to publish a local change.
    publish: Notify,
    /// The wall clock of the view's times.
    clock: Arc<dyn Clock>,
}

impl Shared {
    fn local(&self) -> MutexGuard<'_, NodeInfo> {
        // A panic inside a caller's `update` closure must not take the membership down.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// This node's membership in the cluster: gossip, the failure detector and the view.
pub struct Membership {
    gossip_addr: SocketAddr,
    local_id: String,
    shared: Arc<Shared>,
    /// Shared with chitchat's server task; `leave` publishes through it directly.
    chitchat: Arc<Mutex<Chitchat>>,
    /// Cancels the owner and seed tasks.
    cancel: CancellationToken,
    /// Cancelled when the owner task ends, for whatever reason.
    stopped: CancellationToken,
    tasks: JoinSet<()>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        // The JoinSet aborts the tasks as it drops; cancelling first lets them see why.
        self.cancel.cancel();
    }
}

impl Membership {
    /// Binds the gossip socket, starts chitchat and the owner task, and returns once gossip is
    /// running. The view contains only this node until peers answer. Wall time comes from the
    /// [`SystemClock`]; see [`Membership::start_with_clock`].
    ///
    /// # Errors
    ///
    /// Invalid settings, or failing to bind or to start chitchat.
    pub async fn start(
        settings: MembershipSettings,
        initial: NodeInfo,
    ) -> Result<Membership, MembershipError> {
        Self::start_with_clock(settings, initial, Arc::new(SystemClock)).await
    }

    /// Like [`Membership::start`], reading wall time from `clock`: the view's last-heartbeat
    /// times, the heartbeat-age metrics, and the timestamps and freshness checks of gossip
    /// datagrams (so peers must agree with `clock` within the freshness window).
    ///
    /// # Errors
    ///
    /// Invalid settings, or failing to bind or to start chitchat.
    pub async fn start_with_clock(
        settings: MembershipSettings,
        initial: NodeInfo,
        clock: Arc<dyn Clock>,
    ) -> Result<Membership, MembershipError> {
        if settings.node_id.is_empty() {
            return Err(MembershipError::EmptyNodeId);
        }
        if settings.heartbeat_interval.is_zero() {
            return Err(MembershipError::ZeroHeartbeat);
        }
        let (literal_seeds, host_seeds) = parse_seeds(&settings.seeds)?;
        let transport = AuthenticatedUdpTransport::with_settings(
            &settings.shared_secret,
            &settings.cluster_name,
            settings.auth.clone(),
        )?
        .with_clock(clock.clone());
        let socket = transport
            .open_socket(settings.listen_addr)
            .await
            .map_err(|source| MembershipError::Bind {
                listen_addr: settings.listen_addr,
                source,
            })?;
        let gossip_addr = socket
            .local_addr()
            .map_err(|source| MembershipError::Bind {
                listen_addr: settings.listen_addr,
                source,
            })?;
        let mut advertise_addr = settings.advertise_addr;
        if advertise_addr.ip().is_unspecified() {
            return Err(MembershipError::UnspecifiedAdvertiseAddr {
                addr: advertise_addr,
            });
        }
        if advertise_addr.port() == 0 {
            advertise_addr.set_port(gossip_addr.port());
        }

        let resolved_host_seeds = resolve_hosts(&host_seeds, &[]).await;
        let seed_nodes: Vec<String> = literal_seeds
            .iter()
            .chain(&resolved_host_seeds)
            .map(ToString::to_string)
            .collect();
        let chitchat_id = ChitchatId::new(
            settings.node_id.as_str(),
            settings.generation,
            advertise_addr,
        );
        let config = ChitchatConfig {
            chitchat_id: chitchat_id.clone(),
            cluster_id: settings.cluster_name.clone(),
            gossip_interval: settings.heartbeat_interval,
            listen_addr: gossip_addr,
            seed_nodes,
            failure_detector_config: failure_detector_config(
                settings.heartbeat_interval,
                settings.dead_node_grace_period,
            ),
            // We never delete keys; keep tombstones as long as dead nodes, should we start.
            marked_for_deletion_grace_period: settings.dead_node_grace_period,
            catchup_callback: None,
            extra_liveness_predicate: None,
            // Every node runs this crate, so all decode V1 (compressed digests: bigger clusters
            // fit in a datagram). chitchat answers in the version it was addressed in anyway.
            protocol_version: ProtocolVersion::V1,
        };
        let handle = spawn_chitchat(
            config,
            initial.to_keys(),
            &PreopenedTransport::new(Box::new(socket)),
        )
        .await
        .map_err(|source| MembershipError::Start {
            listen_addr: gossip_addr,
            source,
        })?;
        let chitchat = handle.chitchat();

        let now = clock.system_time();
        let initial_view = Arc::new(ClusterView {
            cluster_name: settings.cluster_name.clone(),
            local_id: settings.node_id.clone(),
            nodes: merge_generations(vec![self_observation(&chitchat_id, &initial, now)]),
        });
        let shared = Arc::new(Shared {
            local: StdMutex::new(initial),
            view_tx: watch::Sender::new(initial_view),
            publish: Notify::new(),
            clock,
        });
        ::metrics::gauge!(metrics::CLUSTER_GENERATION).set(settings.generation as f64);

        let cancel = CancellationToken::new();
        let stopped = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let (seed_tx, seed_rx) = watch::channel(resolved_host_seeds);
        if !host_seeds.is_empty() {
            tasks.spawn(refresh_seeds(
                host_seeds,
                seed_refresh_interval(settings.heartbeat_interval),
                seed_tx,
                cancel.clone(),
            ));
        }
        let owner = Owner {
            handle,
            chitchat: chitchat.clone(),
            shared: shared.clone(),
            self_id: chitchat_id,
            cluster_name: settings.cluster_name,
            heartbeat_interval: settings.heartbeat_interval,
            tracker: HeartbeatTracker::default(),
            seed_addrs: seed_rx,
            warned_newer_self: false,
        };
        tasks.spawn(owner.run(cancel.clone(), stopped.clone()));
        info!(
            node_id = %settings.node_id,
            generation = settings.generation,
            gossip_addr = %gossip_addr,
            advertise_addr = %advertise_addr,
            heartbeat_ms = settings.heartbeat_interval.as_millis() as u64,
            "joined gossip"
        );
        Ok(Membership {
            gossip_addr,
            local_id: settings.node_id,
            shared,
            chitchat,
            cancel,
            stopped,
            tasks,
        })
    }

    /// Returns the bound gossip address.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// Changes the local [`NodeInfo`]. The local view reflects it at once; the owner task then
    /// publishes the keys whose values changed.
    pub fn update(&self, change: impl FnOnce(&mut NodeInfo)) {
        let mut local = self.shared.local();
        change(&mut local);
        let current = self.shared.view_tx.borrow().clone();
        let patched = with_local_info(&current, &local, self.shared.clock.system_time());
        self.shared.view_tx.send_replace(Arc::new(patched));
        drop(local);
        self.shared.publish.notify_one();
    }

    /// Returns the local [`NodeInfo`].
    pub fn local(&self) -> NodeInfo {
        self.shared.local().clone()
    }

    /// Returns the latest view, including this node (always alive, last heartbeat = now).
    pub fn view(&self) -> Arc<ClusterView> {
        self.shared.view_tx.borrow().clone()
    }

    /// Returns a receiver of every new view (at least one per poll interval).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.shared.view_tx.subscribe()
    }

    /// Resolves once the owner task has ended: after `leave`/`shutdown`, or if chitchat stopped
    /// on its own (a fatal socket error), after which the view no longer changes.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }

    /// Leaves gracefully: publishes phase leaving, keeps gossiping for `linger` so peers show
    /// the node as left rather than dead (see [`leave_linger`]), then stops like `shutdown`.
    pub async fn leave(mut self, linger: Duration) {
        self.update(|info| info.phase = Phase::Leaving);
        // Publish now rather than on the owner's next turn, so the linger counts in full.
        publish_local(&self.chitchat, &self.shared).await;
        info!(node_id = %self.local_id, linger_ms = linger.as_millis() as u64, "leaving the cluster");
        tokio::select! {
            () = tokio::time::sleep(linger) => {}
            () = self.stopped.cancelled() => {}
        }
        self.stop().await;
    }

    /// Stops at once, without announcing a leave: peers will see the node die.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        self.cancel.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = joined {
                error!(node_id = %self.local_id, error = %error, "gossip task panicked");
            }
        }
        debug!(node_id = %self.local_id, "gossip stopped");
    }
}

/// Splits seeds into literal socket addresses and `host:port` names to resolve.
fn parse_seeds(seeds: &[String]) -> Result<(Vec<SocketAddr>, Vec<String>), MembershipError> {
    let mut literal = Vec::new();
    let mut hosts = Vec::new();
    for seed in seeds {
        let seed = seed.trim();
        if let Ok(addr) = seed.parse::<SocketAddr>() {
            literal.push(addr);
            continue;
        }
        let valid_host_port = seed.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok()
        });
        if !valid_host_port {
            return Err(MembershipError::InvalidSeed {
                seed: seed.to_string(),
            });
        }
        hosts.push(seed.to_string());
    }
    Ok((literal, hosts))
}

/// Resolves every `host:port`; a host that fails keeps its addresses from `previous` when the
/// whole resolution found nothing (a DNS outage should not make us forget our seeds).
async fn resolve_hosts(hosts: &[String], previous: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut resolved = Vec::new();
    for host in hosts {
        match tokio::net::lookup_host(host.as_str()).await {
            Ok(addrs) => resolved.extend(addrs),
            Err(error) => warn!(seed = %host, error = %error, "failed to resolve gossip seed"),
        }
    }
    if resolved.is_empty() {
        return previous.to_vec();
    }
    resolved.sort_unstable();
    resolved.dedup();
    resolved
}

/// The seed resolver task: re-resolves host-name seeds every `every` until cancelled.
async fn refresh_seeds(
    hosts: Vec<String>,
    every: Duration,
    seed_tx: watch::Sender<Vec<SocketAddr>>,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let previous = seed_tx.borrow().clone();
        let Some(resolved) = cancel
            .run_until_cancelled(resolve_hosts(&hosts, &previous))
            .await
        else {
            return;
        };
        if resolved != previous {
            info!(seeds = ?resolved, "gossip seeds resolved to new addresses");
        }
        seed_tx.send_replace(resolved);
    }
}

/// Writes the local info's changed keys into chitchat's own node state.
async fn publish_local(chitchat: &Mutex<Chitchat>, shared: &Shared) {
    let mut chitchat = chitchat.lock().await;
    // Read the info while holding the chitchat lock: publications are serialized, and the last
    // one always carries the latest info.
    let info = shared.local().clone();
    let own_state = chitchat.self_node_state();
    for (key, value) in info.to_keys() {
        if own_state.get(&key) != Some(value.as_str()) {
            own_state.set(key, value);
        }
    }
}

/// Returns `view` with the self entry carrying `info` (unless a newer generation of our own
/// id has taken the entry, see `Owner::poll`).
fn with_local_info(view: &ClusterView, info: &NodeInfo, now: SystemTime) -> ClusterView {
    let mut patched = view.clone();
    if let Some(entry) = patched.nodes.iter_mut().find(|node| node.is_self) {
        entry.state = derive_state(true, info);
        entry.info = info.clone();
        entry.last_heartbeat = Some(now);
    }
    patched
}

fn self_observation(self_id: &ChitchatId, info: &NodeInfo, now: SystemTime) -> Observed {
    Observed {
        id: self_id.node_id.to_string(),
        generation: self_id.generation_id,
        alive: true,
        info: Some(info.clone()),
        last_heartbeat: Some(now),
        is_self: true,
    }
}

/// What the owner task remembers about one `(id, generation)` between polls.
#[derive(Debug, Clone)]
struct Tracked {
    heartbeat: u64,
    /// When its heartbeat counter last advanced (monotonic, wall clock).
    last_advance: Option<(Instant, SystemTime)>,
    /// Whether chitchat's failure detector ever declared it live.
    ever_live: bool,
    /// Whether we already warned that its keys don't parse.
    warned_invalid: bool,
}

/// Heartbeat bookkeeping: when each peer's chitchat heartbeat last advanced, and whether it is
/// alive. Time comes in as arguments so the rules are testable.
#[derive(Debug, Default)]
struct HeartbeatTracker {
    peers: HashMap<ChitchatId, Tracked>,
}

impl HeartbeatTracker {
    /// Records one poll's observation of `id` and returns `(alive, last_heartbeat)`.
    ///
    /// Alive means chitchat says live, or, for a node chitchat has never declared live, that
    /// its heartbeat advanced within `pending_grace`: chitchat needs three heartbeat sightings
    /// and the end of a gossip round before its first verdict, and until then lists a node that
    /// just started as dead. A node relayed to us after it died never advances, so stays dead.
    fn observe(
        &mut self,
        id: &ChitchatId,
        heartbeat: u64,
        chitchat_live: bool,
        pending_grace: Duration,
        now: (Instant, SystemTime),
    ) -> (bool, Option<SystemTime>) {
        let tracked = self.peers.entry(id.clone()).or_insert(Tracked {
            heartbeat,
            last_advance: None,
            ever_live: false,
            warned_invalid: false,
        });
        if heartbeat > tracked.heartbeat {
            tracked.heartbeat = heartbeat;
            tracked.last_advance = Some(now);
        }
        tracked.ever_live |= chitchat_live;
        let pending_alive = !tracked.ever_live
            && tracked
                .last_advance
                .is_some_and(|(at, _)| now.0.saturating_duration_since(at) < pending_grace);
        (
            chitchat_live || pending_alive,
            tracked.last_advance.map(|(_, wall)| wall),
        )
    }

    /// Returns true the first time it is called for `id` (to warn once per incarnation).
    fn first_invalid(&mut self, id: &ChitchatId) -> bool {
        self.peers
            .get_mut(id)
            .is_some_and(|tracked| !std::mem::replace(&mut tracked.warned_invalid, true))
    }

    /// Forgets peers chitchat no longer knows.
    fn retain(&mut self, known: &HashSet<ChitchatId>) {
        self.peers.retain(|id, _| known.contains(id));
    }
}

/// One node's keys as read under the chitchat lock.
struct Sighting {
    id: ChitchatId,
    heartbeat: u64,
    live: bool,
    info: Result<NodeInfo, crate::view::ViewError>,
    /// The role, when the keys are incomplete but it parses.
    role: Option<Role>,
}

/// The owner task: the only user of the chitchat handle.
struct Owner {
    handle: ChitchatHandle,
    chitchat: Arc<Mutex<Chitchat>>,
    shared: Arc<Shared>,
    self_id: ChitchatId,
    cluster_name: String,
    heartbeat_interval: Duration,
    tracker: HeartbeatTracker,
    /// Addresses of host-name seeds, kept fresh by the resolver task.
    seed_addrs: watch::Receiver<Vec<SocketAddr>>,
    warned_newer_self: bool,
}

impl Owner {
    async fn run(mut self, cancel: CancellationToken, stopped: CancellationToken) {
        let _stopped_on_exit = stopped.drop_guard();
        let mut polls = tokio::time::interval(poll_interval(self.heartbeat_interval));
        polls.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seed_rounds = tokio::time::interval(self.heartbeat_interval);
        seed_rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let chitchat_ended = self.handle.termination_watcher();
        tokio::pin!(chitchat_ended);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                result = &mut chitchat_ended => {
                    error!(node_id = %self.self_id.node_id, result = ?result, "chitchat stopped on its own; the cluster view is frozen");
                    return;
                }
                () = self.shared.publish.notified() => {
                    publish_local(&self.chitchat, &self.shared).await;
                }
                _ = polls.tick() => self.poll().await,
                _ = seed_rounds.tick() => self.contact_new_seed().await,
            }
        }
        if let Err(error) = self.handle.shutdown().await {
            warn!(node_id = %self.self_id.node_id, error = %error, "chitchat did not stop cleanly");
        }
    }

    /// Reads chitchat's state, rebuilds the view and records metrics.
    async fn poll(&mut self) {
        let sightings = self.read_chitchat().await;
        let now = (Instant::now(), self.shared.clock.system_time());
        // Bounded like chitchat's own verdict, so `detection_bound` holds for unconfirmed nodes.
        let pending_grace = max_silence_before_dead(self.heartbeat_interval);
        let known: HashSet<ChitchatId> = sightings.iter().map(|s| s.id.clone()).collect();
        self.tracker.retain(&known);

        let mut observed = Vec::with_capacity(sightings.len() + 1);
        for sighting in sightings {
            let (alive, last_heartbeat) = self.tracker.observe(
                &sighting.id,
                sighting.heartbeat,
                sighting.live,
                pending_grace,
                now,
            );
            let info = match sighting.info {
                Ok(info) => Some(info),
                Err(error) => {
                    let missing = matches!(error, crate::view::ViewError::MissingKey { .. });
                    if !missing && self.tracker.first_invalid(&sighting.id) {
                        warn!(peer = ?sighting.id, error = %error, "peer gossips keys we cannot parse; shown as joining");
                    }
                    sighting.role.map(|role| NodeInfo {
                        role,
                        ..NodeInfo::placeholder()
                    })
                }
            };
            if *sighting.id.node_id == *self.self_id.node_id
                && sighting.id.generation_id > self.self_id.generation_id
                && !std::mem::replace(&mut self.warned_newer_self, true)
            {
                error!(node_id = %self.self_id.node_id, ours = self.self_id.generation_id, theirs = sighting.id.generation_id, "another process gossips our node id with a newer generation: duplicate node id or lost generation file");
            }
            observed.push(Observed {
                id: sighting.id.node_id.to_string(),
                generation: sighting.id.generation_id,
                alive,
                info,
                last_heartbeat,
                is_self: false,
            });
        }

        let local = self.shared.local();
        observed.push(self_observation(&self.self_id, &local, now.1));
        let view = Arc::new(ClusterView {
            cluster_name: self.cluster_name.clone(),
            local_id: self.self_id.node_id.to_string(),
            nodes: merge_generations(observed),
        });
        self.shared.view_tx.send_replace(view.clone());
        drop(local);
        record_view_metrics(&view, now.1);
    }

    /// Copies what the view needs out of chitchat, holding its lock as briefly as possible.
    async fn read_chitchat(&self) -> Vec<Sighting> {
        let chitchat = self.chitchat.lock().await;
        let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        chitchat
            .node_states()
            .iter()
            .filter(|(id, _)| **id != self.self_id)
            .map(|(id, state)| Sighting {
                id: id.clone(),
                heartbeat: u64::from(state.heartbeat()),
                live: live.contains(id),
                info: NodeInfo::from_keys(state.key_values()),
                role: state.get(keys::ROLE).and_then(|role| role.parse().ok()),
            })
            .collect()
    }

    /// Sends one gossip round to a re-resolved seed address that is not a live peer yet, so a
    /// seed whose address changed (or did not resolve at start) is still found.
    async fn contact_new_seed(&self) {
        let candidates: Vec<SocketAddr> = {
            let seed_addrs = self.seed_addrs.borrow().clone();
            if seed_addrs.is_empty() {
                return;
            }
            let chitchat = self.chitchat.lock().await;
            let live_addrs: HashSet<SocketAddr> = chitchat
                .live_nodes()
                .map(|id| id.gossip_advertise_addr)
                .collect();
            seed_addrs
                .into_iter()
                .filter(|addr| !live_addrs.contains(addr))
                .filter(|addr| *addr != self.self_id.gossip_advertise_addr)
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        let seed_addr = candidates[rand::random_range(..candidates.len())];
        if let Err(error) = self.handle.gossip(seed_addr) {
            debug!(seed = %seed_addr, error = %error, "could not gossip with seed");
        }
    }
}

/// Sets the `arc_cluster_*` gauges from `view`.
fn record_view_metrics(view: &ClusterView, now: SystemTime) {
    let mut counts: HashMap<(Role, NodeState), usize> = HashMap::new();
    for node in &view.nodes {
        *counts.entry((node.info.role, node.state)).or_default() += 1;
        if node.is_self {
            continue;
        }
        if let Some(last_heartbeat) = node.last_heartbeat {
            let age = now.duration_since(last_heartbeat).unwrap_or(Duration::ZERO);
            ::metrics::gauge!(metrics::CLUSTER_PEER_HEARTBEAT_AGE_SECONDS, "peer" => node.id.clone())
                .set(age.as_secs_f64());
        }
    }
    // Every combination, zeros included, so a state that empties shows 0 rather than a stale count.
    for role in Role::ALL {
        for state in NodeState::ALL {
            let count = counts.get(&(*role, *state)).copied().unwrap_or(0);
            ::metrics::gauge!(metrics::CLUSTER_NODES, "role" => role.as_str(), "state" => state.as_str())
                .set(count as f64);
        }
    }
}

/// A chitchat [`Transport`] handing out one socket opened beforehand, so that we know the
/// bound port before building the chitchat id.
struct PreopenedTransport {
    socket: StdMutex<Option<Box<dyn Socket>>>,
}

impl PreopenedTransport {
    fn new(socket: Box<dyn Socket>) -> Self {
        PreopenedTransport {
            socket: StdMutex::new(Some(socket)),
        }
    }
}

#[async_trait]
impl Transport for PreopenedTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        self.socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| anyhow::anyhow!("the pre-opened gossip socket was already handed out"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    #[test]
    fn test_should_bound_detection_from_failure_detector_settings() {
        let heartbeat = Duration::from_millis(100);
        // 12 h (phi 8 x mean 1.5 h) + 4 h propagation + 1 h liveness pass + 50 ms poll.
        assert_eq!(detection_bound(heartbeat), Duration::from_millis(1_750));
        // The poll interval is capped at 500 ms.
        assert_eq!(
            detection_bound(Duration::from_secs(5)),
            Duration::from_millis(85_500)
        );
        let config = failure_detector_config(heartbeat, Duration::from_secs(3_600));
        assert_eq!(config.initial_interval, heartbeat);
        assert_eq!(config.max_interval, heartbeat * 2);
        assert_eq!(poll_interval(Duration::from_secs(5)), MAX_POLL_INTERVAL);
    }

    #[test]
    fn test_should_increase_generation_even_if_clock_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generation");
        assert_eq!(next_generation(&path, 1_000).unwrap(), 1_000);
        assert_eq!(next_generation(&path, 5_000).unwrap(), 5_000);
        // The clock went back: still strictly increasing.
        assert_eq!(next_generation(&path, 10).unwrap(), 5_001);
        assert_eq!(next_generation(&path, 5_001).unwrap(), 5_002);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "5002\n");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["generation"]);
    }

    #[test]
    fn test_should_refuse_corrupt_generation_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generation");
        for content in ["", "abc", "12 13", "-4", &u64::MAX.to_string()] {
            std::fs::write(&path, content).unwrap();
            let error = next_generation(&path, 1).unwrap_err();
            assert!(
                matches!(&error, MembershipError::GenerationCorrupt { path: named, .. } if *named == path),
                "{content:?}: {error:?}"
            );
            assert!(error.to_string().contains(&path.display().to_string()));
            // The corrupt file is left for an operator to look at.
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        }
        let missing_dir = dir.path().join("missing").join("generation");
        assert!(matches!(
            next_generation(&missing_dir, 1),
            Err(MembershipError::GenerationIo {
                action: "write",
                ..
            })
        ));
    }

    #[test]
    fn test_should_parse_seeds() {
        let seeds: Vec<String> = [
            "127.0.0.1:9000",
            "[::1]:9000",
            "arc-writer:9000",
            " node-2.local:1 ",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let (literal, hosts) = parse_seeds(&seeds).unwrap();
        assert_eq!(literal.len(), 2);
        assert_eq!(hosts, ["arc-writer:9000", "node-2.local:1"]);
        for bad in ["arc-writer", ":9000", "host:port", "host:70000", "::1:9000"] {
            assert!(
                matches!(parse_seeds(&[bad.to_string()]), Err(MembershipError::InvalidSeed { seed }) if seed == bad),
                "{bad}"
            );
        }
    }

    fn id(generation: u64) -> ChitchatId {
        ChitchatId::new(
            "peer",
            generation,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1),
        )
    }

    #[test]
    fn test_should_track_heartbeat_advances() {
        let grace = Duration::from_secs(1);
        let start = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let at = |secs: u64| {
            (
                start + Duration::from_secs(secs),
                wall + Duration::from_secs(secs),
            )
        };
        let mut tracker = HeartbeatTracker::default();

        // First sighting: no advance seen yet, chitchat says dead: dead, no heartbeat time.
        assert_eq!(
            tracker.observe(&id(1), 5, false, grace, at(0)),
            (false, None)
        );
        // It advanced while chitchat has not judged yet: alive (pending), time recorded.
        assert_eq!(
            tracker.observe(&id(1), 6, false, grace, at(1)),
            (true, Some(at(1).1))
        );
        // Still within the grace of its last advance.
        assert_eq!(
            tracker.observe(&id(1), 6, false, grace, (at(1).0 + grace / 2, at(1).1)),
            (true, Some(at(1).1))
        );
        // Never confirmed and silent past the grace: dead.
        assert!(!tracker.observe(&id(1), 6, false, grace, at(3)).0);
        // Once chitchat declared it live, chitchat's verdict rules.
        assert_eq!(
            tracker.observe(&id(1), 7, true, grace, at(4)),
            (true, Some(at(4).1))
        );
        assert_eq!(
            tracker.observe(&id(1), 8, false, grace, at(5)),
            (false, Some(at(5).1))
        );
        // A stale entry relayed after its death never advances: dead from the start.
        assert_eq!(
            tracker.observe(&id(0), 9, false, grace, at(5)),
            (false, None)
        );
        assert_eq!(
            tracker.observe(&id(0), 9, false, grace, at(6)),
            (false, None)
        );

        tracker.retain(&HashSet::from([id(1)]));
        assert_eq!(tracker.peers.len(), 1);
        assert!(tracker.first_invalid(&id(1)));
        assert!(!tracker.first_invalid(&id(1)));
    }

    #[tokio::test]
    async fn test_should_read_view_times_from_the_injected_clock() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let clock = Arc::new(arc_clock::ManualClock::new(start.into()));
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let settings = MembershipSettings {
            node_id: "self".into(),
            cluster_name: "cluster".into(),
            shared_secret: b"secret".to_vec(),
            listen_addr: loopback,
            advertise_addr: loopback,
            seeds: Vec::new(),
            heartbeat_interval: Duration::from_millis(20),
            generation: 1,
            dead_node_grace_period: MembershipSettings::DEFAULT_DEAD_NODE_GRACE_PERIOD,
            auth: GossipAuthSettings::default(),
        };
        let member = Membership::start_with_clock(settings, NodeInfo::placeholder(), clock.clone())
            .await
            .unwrap();
        let self_heartbeat = |view: &ClusterView| view.get("self").unwrap().last_heartbeat;
        assert_eq!(self_heartbeat(&member.view()), Some(start));

        // A local update stamps the self entry with the clock's time at once.
        clock.advance(Duration::from_secs(7));
        member.update(|info| info.phase = Phase::Ready);
        assert_eq!(
            self_heartbeat(&member.view()),
            Some(start + Duration::from_secs(7))
        );

        // So does the owner task's next poll.
        clock.advance(Duration::from_secs(5));
        let later = start + Duration::from_secs(12);
        let mut views = member.subscribe();
        tokio::time::timeout(
            Duration::from_secs(10),
            views.wait_for(|view| self_heartbeat(view) == Some(later)),
        )
        .await
        .expect("a poll within the timeout")
        .unwrap();
        drop(views);
        member.shutdown().await;
    }
}
