//! [`ReplicationServer`]: the primary's QUIC shell around [`PrimaryState`].
//!
//! Tasks, all in the server's [`JoinSet`] and stopped by its [`CancellationToken`]:
//! - the **hub** owns the `PrimaryState`, the in-memory tail of recent entries (shared,
//!   read-only, with the connections), and one bounded queue per follower; it takes the node's
//!   inputs ([`ReplicationHandle`]) and the connections' reports, and carries out the state
//!   machine's actions. It never awaits a follower: it queues LSN ranges (one per group commit,
//!   never the entries themselves), and a full queue cuts that follower, so a slow one never
//!   slows the primary and costs it no memory beyond its queue.
//! - the **accept loop** owns the endpoint's incoming connections and a `JoinSet` of one task
//!   per connection; it stops (and joins) them when cancelled.
//! - each **connection** task authenticates its peer (nothing of the WAL is sent before), reads
//!   its subscription, registers it with the hub, then writes what its queue and the commit LSN
//!   say and reads acks, until either side ends it.
//!
//! A panic in a connection task ends that connection only (the hub sees it disconnect). A
//! panic in the hub ends replication: acknowledgements stop, which the node sees as a closed
//! acknowledged-LSN channel.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use quinn::{Endpoint, RecvStream, SendStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::dir_reader::WalReader;
use crate::error::WalError;
use crate::format::Entry;
use crate::lsn::{Epoch, Lsn};
use crate::replication::auth::{AuthMode, ProofDirection};
use crate::replication::error::ReplicationError;
use crate::replication::frame::{FlushNotice, FollowerRole, Frame, Subscribe};
use crate::replication::io::{read_frame, read_hello, write_entry, write_frame};
use crate::replication::primary::{
    CutReason, IsrChange, PrimaryAction, PrimaryConfig, PrimaryState,
};
use crate::replication::settings::ReplicationSettings;
use crate::replication::transport::{
    CLOSE_NORMAL, CLOSE_REFUSED, CLOSE_UNHEARD, CUT_TOTAL, RejectReason, Rejections,
    SENT_BYTES_TOTAL, SENT_ENTRIES_TOTAL, check_proof, own_proof, server_endpoint,
};

/// Where the primary reads entries that are no longer in its in-memory tail: its own WAL
/// segments ([`WalReader`] implements it). Called on blocking threads.
pub trait EntrySource: Send + Sync + 'static {
    /// Returns the oldest LSN still kept, if any.
    ///
    /// # Errors
    /// Any WAL error; the subscription is then refused for now.
    fn oldest_lsn(&self) -> Result<Option<Lsn>, WalError>;

    /// Returns the kept entries from `from` on, at most through `through`, stopping after
    /// about `max_bytes` of payload (at least one entry if there is one).
    ///
    /// # Errors
    /// Any WAL error; the follower's stream is then cut.
    fn read(&self, from: Lsn, through: Lsn, max_bytes: usize) -> Result<Vec<Entry>, WalError>;
}

impl EntrySource for WalReader {
    fn oldest_lsn(&self) -> Result<Option<Lsn>, WalError> {
        WalReader::oldest_lsn(self)
    }

    fn read(&self, from: Lsn, through: Lsn, max_bytes: usize) -> Result<Vec<Entry>, WalError> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for entry in WalReader::read(self, from, through)? {
            let entry = entry?;
            bytes += entry.payload.len();
            entries.push(entry);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(entries)
    }
}

/// What the primary starts from.
#[derive(Debug, Clone)]
pub struct PrimaryStart {
    /// This primary's writer epoch (its promote record's).
    pub epoch: Epoch,
    /// Its promote's fence: the last LSN of older epochs it kept. A follower that knows only
    /// older epochs may hold entries above it that were never acknowledged; its stream starts
    /// right after the fence, and the `Subscribed` frame tells it to drop them.
    pub fence_lsn: Lsn,
    /// Its WAL's durable end: the last durable LSN, or the WAL's next LSN minus one when the
    /// log is empty (everything below is flushed). `None` on a brand-new cluster.
    pub durable_lsn: Option<Lsn>,
    /// The in-sync set as the catalog holds it now.
    pub committed_isr: Vec<String>,
    /// The state machine's limits.
    pub config: PrimaryConfig,
}

/// A change of the in-sync set to commit to the catalog (an `isr` record); report the outcome
/// with [`ReplicationHandle::isr_committed`] or [`ReplicationHandle::isr_proposal_failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// The complete proposed set.
    pub in_sync: Vec<String>,
    /// The one change it makes.
    pub change: IsrChange,
}

/// One follower as the primary sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    /// Its node id.
    pub node_id: String,
    /// Standby or reader.
    pub role: FollowerRole,
    /// Whether its stream is up.
    pub connected: bool,
    /// Durable (standby) or applied (reader) LSN.
    pub confirmed: Option<Lsn>,
    /// Age of its oldest unconfirmed entry, in milliseconds.
    pub lag_ms: u64,
}

/// A snapshot of the primary's replication state, for `/status`, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// The primary's epoch.
    pub epoch: Epoch,
    /// Locally durable LSN.
    pub local_durable: Option<Lsn>,
    /// Highest acknowledged LSN.
    pub acknowledged: Option<Lsn>,
    /// Whether writes can be acknowledged at all (else: 503).
    pub writes_available: bool,
    /// The committed in-sync set.
    pub committed_isr: Vec<String>,
    /// The ISR change being committed, if any.
    pub pending_change: Option<IsrChange>,
    /// Every follower seen since start.
    pub followers: Vec<FollowerStatus>,
    /// Peers refused, by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Follower streams cut (backlog, full queue, superseded).
    pub cuts: u64,
}

/// The node's side of a running [`ReplicationServer`]. Cheap to clone; every method returns
/// at once (nothing here waits for a follower).
#[derive(Clone)]
pub struct ReplicationHandle {
    commands: mpsc::UnboundedSender<HubCommand>,
    acknowledged: watch::Receiver<Option<Lsn>>,
    status: watch::Receiver<ReplicationStatus>,
}

impl ReplicationHandle {
    /// Input: these entries are durable in the local WAL (call after each group commit's sync,
    /// in LSN order). They are streamed to the followers; followers behind the in-memory tail
    /// read from the WAL segments instead.
    pub fn publish(&self, entries: Vec<Entry>) {
        let _ = self.commands.send(HubCommand::Publish(entries));
    }

    /// Input: a flush record was committed; followers are told.
    pub fn flush_committed(&self, notice: FlushNotice) {
        let _ = self.commands.send(HubCommand::Flush(Arc::new(notice)));
    }

    /// Input: the catalog committed this in-sync set (the proposed one, or whatever is current
    /// after a lost race).
    pub fn isr_committed(&self, in_sync: Vec<String>) {
        let _ = self.commands.send(HubCommand::IsrCommitted(in_sync));
    }

    /// Input: committing the last proposal failed; it is proposed again if still due.
    pub fn isr_proposal_failed(&self) {
        let _ = self.commands.send(HubCommand::IsrFailed);
    }

    /// Returns a receiver of the acknowledged (commit) LSN: a write at LSN `l` may be answered
    /// once it is `Some(x)` with `x >= l`. Closed when the server stops.
    pub fn acknowledged(&self) -> watch::Receiver<Option<Lsn>> {
        self.acknowledged.clone()
    }

    /// Waits until `lsn` is acknowledged.
    ///
    /// # Errors
    /// `Closed` if the server stopped first (the write's fate is then unknown: do not
    /// acknowledge it).
    pub async fn wait_acknowledged(&self, lsn: Lsn) -> Result<(), ReplicationError> {
        let mut acknowledged = self.acknowledged.clone();
        acknowledged
            .wait_for(|acked| acked.is_some_and(|acked| acked >= lsn))
            .await
            .map(|_| ())
            .map_err(|_| ReplicationError::Closed {
                peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            })
    }

    /// Returns whether writes can be acknowledged at all (`replication_ack` met by the
    /// committed ISR); when false, refuse writes with 503.
    pub fn writes_available(&self) -> bool {
        self.status.borrow().writes_available
    }

    /// Returns the current status.
    pub fn status(&self) -> ReplicationStatus {
        self.status.borrow().clone()
    }

    /// Returns a receiver of status changes.
    pub fn status_changes(&self) -> watch::Receiver<ReplicationStatus> {
        self.status.clone()
    }
}

/// The primary's replication endpoint. See the module docs.
pub struct ReplicationServer {
    handle: ReplicationHandle,
    endpoint: Endpoint,
    local_addr: SocketAddr,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl ReplicationServer {
    /// Binds `addr` and starts serving followers. Must be called inside a tokio runtime.
    /// Returns the server and the receiver of ISR proposals, which the node commits to the
    /// catalog. Cancelling `cancel` (or [`ReplicationServer::shutdown`]) stops everything.
    ///
    /// # Errors
    /// `Invalid`, `Tls` or `TlsFile` if authentication cannot be set up, `Bind` if `addr` is
    /// taken.
    pub fn bind(
        settings: ReplicationSettings,
        addr: SocketAddr,
        start: PrimaryStart,
        source: Arc<dyn EntrySource>,
        cancel: CancellationToken,
    ) -> Result<(ReplicationServer, mpsc::UnboundedReceiver<IsrProposal>), ReplicationError> {
        let auth = AuthMode::resolve(&settings)?;
        let endpoint = server_endpoint(&settings, &auth, addr)?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| ReplicationError::Bind { addr, source })?;
        let cancel = cancel.child_token();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (proposals_tx, proposals_rx) = mpsc::unbounded_channel();
        let (acknowledged_tx, acknowledged_rx) = watch::channel(None);
        let (status_tx, status_rx) = watch::channel(ReplicationStatus::default());
        let rejections = Arc::new(Rejections::default());
        let tail: SharedTail = Arc::default();
        // Often enough to see a silent member outpaced at a fifth of the lag limit.
        let tick_interval =
            Duration::from_millis((start.config.lag_limit_ms / 20).clamp(10, 1_000));
        let hub = Hub {
            state: PrimaryState::new(
                start.config.clone(),
                start.durable_lsn,
                start.committed_isr.clone(),
                0,
            ),
            epoch: start.epoch,
            fence_lsn: start.fence_lsn,
            origin: Instant::now(),
            tail: Arc::clone(&tail),
            tail_bytes: 0,
            tail_limit: settings.tail_cache_bytes,
            links: HashMap::new(),
            next_conn_id: 0,
            queue_frames: settings.follower_queue_frames.max(1),
            acknowledged_tx,
            status_tx,
            proposals_tx,
            rejections: Arc::clone(&rejections),
            cuts: 0,
        };
        let context = Arc::new(ConnectionContext {
            settings,
            auth,
            epoch: start.epoch,
            fence_lsn: start.fence_lsn,
            source,
            tail,
            commands: commands_tx.clone(),
            acknowledged: acknowledged_rx.clone(),
            rejections,
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(
            hub.run(commands_rx, tick_interval, cancel.clone())
                .instrument(info_span!("replication_hub", addr = %local_addr)),
        );
        tasks.spawn(
            accept_loop(endpoint.clone(), context, cancel.clone())
                .instrument(info_span!("replication_accept", addr = %local_addr)),
        );
        info!(addr = %local_addr, epoch = start.epoch.0, "replication server listening");
        let handle = ReplicationHandle {
            commands: commands_tx,
            acknowledged: acknowledged_rx,
            status: status_rx,
        };
        Ok((
            ReplicationServer {
                handle,
                endpoint,
                local_addr,
                cancel,
                tasks,
            },
            proposals_rx,
        ))
    }

    /// Returns the address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the node's handle.
    pub fn handle(&self) -> ReplicationHandle {
        self.handle.clone()
    }

    /// Stops the server: closes every connection, waits for every task, then for the endpoint
    /// to be idle (bounded, so a peer that vanished cannot hold the shutdown).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.endpoint.close(CLOSE_NORMAL, b"shutdown");
        while let Some(result) = self.tasks.join_next().await {
            if let Err(error) = result
                && error.is_panic()
            {
                warn!(error = %error, "replication task panicked");
            }
        }
        let _ = timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        info!(addr = %self.local_addr, "replication server stopped");
    }
}

/// What a connection task needs.
struct ConnectionContext {
    settings: ReplicationSettings,
    auth: AuthMode,
    epoch: Epoch,
    fence_lsn: Lsn,
    source: Arc<dyn EntrySource>,
    tail: SharedTail,
    commands: mpsc::UnboundedSender<HubCommand>,
    acknowledged: watch::Receiver<Option<Lsn>>,
    rejections: Arc<Rejections>,
}

/// What the hub queues for a follower's connection.
enum Outbound {
    /// Entries to send, all durable: from the in-memory tail where it still has them, else
    /// from the WAL segments.
    Range {
        from: Lsn,
        through: Lsn,
    },
    Flush(Arc<FlushNotice>),
}

/// Recent durable entries, consecutive, oldest first; written by the hub, read by the
/// connections. Held only for short copies of `Arc`s.
type SharedTail = Arc<std::sync::Mutex<VecDeque<Arc<Entry>>>>;

fn lock_tail(tail: &SharedTail) -> std::sync::MutexGuard<'_, VecDeque<Arc<Entry>>> {
    tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A subscription the hub accepted.
struct Accepted {
    conn_id: u64,
    start_lsn: Lsn,
    queue: mpsc::Receiver<Outbound>,
    /// Cancelled by the hub to cut this stream.
    cut: CancellationToken,
}

enum HubCommand {
    Publish(Vec<Entry>),
    Flush(Arc<FlushNotice>),
    IsrCommitted(Vec<String>),
    IsrFailed,
    Subscribe {
        subscribe: Subscribe,
        oldest_kept: Option<Lsn>,
        reply: oneshot::Sender<Result<Accepted, String>>,
    },
    Confirm {
        node: String,
        conn_id: u64,
        lsn: Lsn,
    },
    Disconnected {
        node: String,
        conn_id: u64,
        /// The follower closed because it stopped hearing this primary.
        unheard: bool,
    },
}

/// The hub's view of one connected follower.
struct Link {
    conn_id: u64,
    queue: mpsc::Sender<Outbound>,
    cut: CancellationToken,
}

struct Hub {
    state: PrimaryState,
    epoch: Epoch,
    fence_lsn: Lsn,
    origin: Instant,
    tail: SharedTail,
    tail_bytes: usize,
    tail_limit: usize,
    links: HashMap<String, Link>,
    next_conn_id: u64,
    queue_frames: usize,
    acknowledged_tx: watch::Sender<Option<Lsn>>,
    status_tx: watch::Sender<ReplicationStatus>,
    proposals_tx: mpsc::UnboundedSender<IsrProposal>,
    rejections: Arc<Rejections>,
    cuts: u64,
}

impl Hub {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<HubCommand>,
        tick_interval: Duration,
        cancel: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(tick_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.carry_out();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                _ = ticker.tick() => {
                    let now = self.now_ms();
                    self.state.tick(now);
                }
            }
            self.carry_out();
        }
        for (_, link) in self.links.drain() {
            link.cut.cancel();
        }
        debug!("replication hub stopped");
    }

    fn handle(&mut self, command: HubCommand) {
        let now = self.now_ms();
        match command {
            HubCommand::Publish(entries) => {
                let Some(last) = entries.last().map(|entry| entry.lsn) else {
                    return;
                };
                for entry in entries {
                    self.push_tail(entry);
                }
                self.state.local_durable_advanced(last, now);
            }
            HubCommand::Flush(notice) => {
                let nodes: Vec<String> = self.links.keys().cloned().collect();
                for node in nodes {
                    self.enqueue(&node, Outbound::Flush(Arc::clone(&notice)));
                }
            }
            HubCommand::IsrCommitted(in_sync) => self.state.isr_committed(in_sync, now),
            HubCommand::IsrFailed => self.state.isr_proposal_failed(now),
            HubCommand::Subscribe {
                subscribe,
                oldest_kept,
                reply,
            } => self.subscribe(subscribe, oldest_kept, reply, now),
            HubCommand::Confirm { node, conn_id, lsn } => {
                if self.is_current(&node, conn_id) {
                    self.state.confirmed(&node, lsn, now);
                }
            }
            HubCommand::Disconnected {
                node,
                conn_id,
                unheard,
            } => {
                if self.is_current(&node, conn_id) {
                    self.links.remove(&node);
                    if unheard {
                        self.state.unheard(&node, now);
                    } else {
                        self.state.disconnected(&node, now);
                    }
                }
            }
        }
    }

    fn is_current(&self, node: &str, conn_id: u64) -> bool {
        self.links
            .get(node)
            .is_some_and(|link| link.conn_id == conn_id)
    }

    fn push_tail(&mut self, entry: Entry) {
        let mut tail = lock_tail(&self.tail);
        let continues = tail
            .back()
            .is_none_or(|last| last.lsn.saturating_next() == entry.lsn);
        if !continues {
            // Something was not published: serve it from the WAL instead.
            tail.clear();
            self.tail_bytes = 0;
        }
        self.tail_bytes += entry.payload.len();
        tail.push_back(Arc::new(entry));
        while self.tail_bytes > self.tail_limit && tail.len() > 1 {
            if let Some(evicted) = tail.pop_front() {
                self.tail_bytes -= evicted.payload.len();
            }
        }
    }

    fn subscribe(
        &mut self,
        subscribe: Subscribe,
        oldest_kept: Option<Lsn>,
        reply: oneshot::Sender<Result<Accepted, String>>,
        now: u64,
    ) {
        if subscribe.known_epoch > self.epoch {
            let _ = reply.send(Err(format!(
                "this primary's epoch {} is older than the newest promote the follower knows \
                 ({}); it was deposed",
                self.epoch, subscribe.known_epoch
            )));
            return;
        }
        let from_lsn = stream_from(&subscribe, self.epoch, self.fence_lsn);
        if from_lsn < subscribe.from_lsn {
            info!(
                node = %subscribe.node_id,
                known_epoch = subscribe.known_epoch.0,
                epoch = self.epoch.0,
                fence_lsn = self.fence_lsn.0,
                asked_from = subscribe.from_lsn.0,
                "a follower that knew only older epochs may hold entries this primary does not (a deposed primary's, never acknowledged): streaming from where their logs agree"
            );
        }
        // Entries below the oldest kept one are covered by the catalog's flushes.
        let tail_front = lock_tail(&self.tail).front().map(|entry| entry.lsn);
        let oldest_available = oldest_kept.or(tail_front).unwrap_or_else(|| {
            self.state
                .local_durable()
                .map_or(Lsn(1), Lsn::saturating_next)
        });
        let start_lsn = from_lsn.max(oldest_available);
        let node = subscribe.node_id.clone();
        self.next_conn_id += 1;
        let conn_id = self.next_conn_id;
        let (queue_tx, queue_rx) = mpsc::channel(self.queue_frames);
        let cut = CancellationToken::new();
        if let Some(previous) = self.links.insert(
            node.clone(),
            Link {
                conn_id,
                queue: queue_tx,
                cut: cut.clone(),
            },
        ) {
            previous.cut.cancel();
        }
        self.state.subscribed(&node, subscribe.role, start_lsn, now);
        // A refusal concerns this subscription; everything else is carried out as usual.
        let mut refusal = None;
        let mut others = Vec::new();
        while let Some(action) = self.state.poll_action() {
            match action {
                PrimaryAction::Refuse {
                    node: refused,
                    reason,
                } if refused == node => {
                    refusal = Some(reason);
                }
                PrimaryAction::Cut {
                    node: cut_node,
                    reason: CutReason::Superseded,
                } if cut_node == node => {}
                other => others.push(other),
            }
        }
        if let Some(reason) = refusal {
            self.links.remove(&node);
            let _ = reply.send(Err(reason));
        } else {
            info!(node = %node, role = %subscribe.role, from_lsn = subscribe.from_lsn.0, start_lsn = start_lsn.0, "follower subscribed");
            let _ = reply.send(Ok(Accepted {
                conn_id,
                start_lsn,
                queue: queue_rx,
                cut,
            }));
        }
        for action in others {
            self.carry_out_one(action);
        }
    }

    fn carry_out(&mut self) {
        while let Some(action) = self.state.poll_action() {
            self.carry_out_one(action);
        }
        self.publish_status();
    }

    fn carry_out_one(&mut self, action: PrimaryAction) {
        match action {
            PrimaryAction::SendEntries {
                node,
                from,
                through,
            } => self.send_entries(&node, from, through),
            PrimaryAction::Acknowledge { through } => {
                self.acknowledged_tx.send_replace(Some(through));
            }
            PrimaryAction::ProposeIsr { in_sync, change } => {
                info!(change = ?change, "isr change proposed");
                let _ = self.proposals_tx.send(IsrProposal {
                    in_sync: in_sync.into_iter().collect(),
                    change,
                });
            }
            PrimaryAction::Cut { node, reason } => {
                let label = match reason {
                    CutReason::ReaderBacklog { .. } => "reader_backlog",
                    CutReason::Superseded => "superseded",
                };
                self.cut(&node, label);
            }
            PrimaryAction::Refuse { node, reason } => {
                // Only subscriptions are refused, and those are handled where they arrive.
                warn!(node = %node, reason = %reason, "unexpected refusal outside a subscription");
            }
        }
    }

    fn send_entries(&mut self, node: &str, from: Lsn, through: Lsn) {
        self.enqueue(node, Outbound::Range { from, through });
    }

    /// Queues `item` for `node` without waiting; a full or closed queue cuts the follower.
    fn enqueue(&mut self, node: &str, item: Outbound) -> bool {
        let Some(link) = self.links.get(node) else {
            return false;
        };
        match link.queue.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                self.cut(node, "queue_full");
                let now = self.now_ms();
                self.state.disconnected(node, now);
                false
            }
        }
    }

    fn cut(&mut self, node: &str, reason: &'static str) {
        if let Some(link) = self.links.remove(node) {
            link.cut.cancel();
            self.cuts += 1;
            counter!(CUT_TOTAL, "reason" => reason).increment(1);
            info!(node = %node, reason, "follower stream cut");
        }
    }

    fn publish_status(&self) {
        let now = self.now_ms();
        let followers = self
            .state
            .followers()
            .iter()
            .map(|(node, view)| FollowerStatus {
                node_id: node.clone(),
                role: view.role,
                connected: view.connected,
                confirmed: view.confirmed,
                lag_ms: self.state.lag_ms(node, now),
            })
            .collect();
        let status = ReplicationStatus {
            epoch: self.epoch,
            local_durable: self.state.local_durable(),
            acknowledged: self.state.acknowledged(),
            writes_available: self.state.writes_available(),
            committed_isr: self.state.committed_isr().iter().cloned().collect(),
            pending_change: self.state.pending_proposal().cloned(),
            followers,
            rejected: self.rejections.snapshot(),
            cuts: self.cuts,
        };
        self.status_tx.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    context: Arc<ConnectionContext>,
    cancel: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(result) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = result
                    && error.is_panic()
                {
                    warn!(error = %error, "replication connection task panicked");
                }
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let peer = incoming.remote_address();
                let context = Arc::clone(&context);
                let cancel = cancel.clone();
                connections.spawn(
                    serve_connection(incoming, context, cancel)
                        .instrument(info_span!("replication", peer = %peer)),
                );
            }
        }
    }
    // Connection tasks watch the same token; wait for each to close its connection.
    while connections.join_next().await.is_some() {}
}

/// An authenticated, subscribed follower connection.
struct Streaming {
    connection: quinn::Connection,
    send: SendStream,
    recv: RecvStream,
    subscribe: Subscribe,
    accepted: Accepted,
}

async fn serve_connection(
    incoming: quinn::Incoming,
    context: Arc<ConnectionContext>,
    cancel: CancellationToken,
) {
    let peer = incoming.remote_address();
    let handshake = timeout(
        context.settings.handshake_timeout,
        accept_follower(incoming, &context, peer),
    );
    let streaming = tokio::select! {
        _ = cancel.cancelled() => return,
        result = handshake => match result {
            Ok(Ok(Some(streaming))) => streaming,
            Ok(Ok(None)) => return,
            Ok(Err(())) => return,
            Err(_elapsed) => {
                context.rejections.record(RejectReason::NoHello, peer, &"handshake timed out");
                return;
            }
        },
    };
    let Streaming {
        connection,
        mut send,
        mut recv,
        subscribe,
        accepted,
    } = streaming;
    let node = subscribe.node_id.clone();
    let outcome = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        _ = accepted.cut.cancelled() => Ok(()),
        result = read_confirmations(&mut recv, &context, &subscribe, accepted.conn_id, peer) => result,
        result = write_stream(&mut send, &context, accepted.queue, peer) => result,
    };
    let unheard = matches!(
        connection.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(close)) if close.error_code == CLOSE_UNHEARD
    );
    match &outcome {
        _ if unheard => {
            info!(node = %node, "follower closed the stream: it stopped hearing this primary")
        }
        Ok(()) => info!(node = %node, "follower stream ended"),
        Err(ReplicationError::Closed { .. }) => info!(node = %node, "follower closed the stream"),
        Err(error) => info!(node = %node, error = %error, "follower stream failed"),
    }
    let _ = context.commands.send(HubCommand::Disconnected {
        node,
        conn_id: accepted.conn_id,
        unheard,
    });
    connection.close(CLOSE_NORMAL, b"stream ended");
}

/// Returns the first LSN a subscription needs from a primary of `epoch` with fence
/// `fence_lsn`. A follower that knows only older epochs may hold entries of them that a deposed
/// primary wrote and never got acknowledged, different from this primary's at those LSNs, and
/// its claim to hold them counts for nothing (an acknowledgement counted on a standby that
/// holds other entries could lose a write). One that knows the previous epoch holds that
/// epoch's log, which this primary kept up to its fence: it needs everything after the fence.
/// One that missed an epoch may differ further down, where only the follower can tell (what
/// was acknowledged): it is taken to hold nothing, and asks again once it has dropped the rest
/// (see `FollowerState`).
fn stream_from(subscribe: &Subscribe, epoch: Epoch, fence_lsn: Lsn) -> Lsn {
    if subscribe.known_epoch >= epoch {
        subscribe.from_lsn
    } else if subscribe.known_epoch.0.saturating_add(1) == epoch.0 {
        subscribe.from_lsn.min(fence_lsn.saturating_next())
    } else {
        Lsn(1)
    }
}

/// Runs TLS, the proof exchange and the subscription. `Err(())` and `Ok(None)` mean the peer
/// was turned away (and counted or logged here); nothing of the WAL was sent.
async fn accept_follower(
    incoming: quinn::Incoming,
    context: &ConnectionContext,
    peer: SocketAddr,
) -> Result<Option<Streaming>, ()> {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            context.rejections.record(RejectReason::Tls, peer, &error);
            return Err(());
        }
    };
    let refuse = |reason: RejectReason, error: &dyn std::fmt::Display| {
        context.rejections.record(reason, peer, error);
        connection.close(CLOSE_REFUSED, b"unauthenticated");
    };
    let (mut send, mut recv) = match connection.accept_bi().await {
        Ok(streams) => streams,
        Err(error) => {
            refuse(RejectReason::NoHello, &error);
            return Err(());
        }
    };
    let proof = match read_hello(&mut recv, peer).await {
        Ok(proof) => proof,
        Err(error) => {
            refuse(RejectReason::NoHello, &error);
            return Err(());
        }
    };
    if let Err(reason) = check_proof(&context.auth, &connection, ProofDirection::Client, proof) {
        refuse(reason, &"the proof of the shared secret does not verify");
        return Err(());
    }
    // Authenticated. From here on, failures are the peer's protocol errors, not refusals.
    let outcome = async {
        let own = own_proof(&context.auth, &connection, ProofDirection::Server)?;
        write_frame(&mut send, &Frame::Hello { proof: own }, peer).await?;
        let subscribe = match read_frame(&mut recv, peer).await? {
            Frame::Subscribe(subscribe) => subscribe,
            other => {
                return Err(ReplicationError::Protocol {
                    peer,
                    kind: other.kind(),
                    expected: "a subscribe after the hello",
                });
            }
        };
        let source = Arc::clone(&context.source);
        let oldest_kept = tokio::task::spawn_blocking(move || source.oldest_lsn())
            .await
            .map_err(|_| ReplicationError::Closed { peer })?
            .map_err(|source| ReplicationError::Wal { peer, source })?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let _ = context.commands.send(HubCommand::Subscribe {
            subscribe: subscribe.clone(),
            oldest_kept,
            reply: reply_tx,
        });
        let accepted = match reply_rx.await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(reason)) => {
                info!(node = %subscribe.node_id, reason = %reason, "subscription refused");
                write_frame(&mut send, &Frame::Refuse { reason }, peer).await?;
                let _ = send.finish();
                // Let the refusal reach the peer before the connection closes.
                let _ = timeout(Duration::from_secs(1), send.stopped()).await;
                return Ok(None);
            }
            Err(_) => return Err(ReplicationError::Closed { peer }),
        };
        let subscribed = Frame::Subscribed {
            epoch: context.epoch,
            start_lsn: accepted.start_lsn,
            fence_lsn: Some(context.fence_lsn),
        };
        write_frame(&mut send, &subscribed, peer).await?;
        Ok(Some((subscribe, accepted)))
    }
    .await;
    match outcome {
        Ok(Some((subscribe, accepted))) => Ok(Some(Streaming {
            connection,
            send,
            recv,
            subscribe,
            accepted,
        })),
        Ok(None) => {
            connection.close(CLOSE_NORMAL, b"refused");
            Ok(None)
        }
        Err(error) => {
            warn!(error = %error, "replication handshake failed after authentication");
            connection.close(CLOSE_REFUSED, b"protocol error");
            Err(())
        }
    }
}

/// Reads the follower's acks (standby) or applied reports (reader) and keep-alives until the
/// stream ends or the follower goes silent.
async fn read_confirmations(
    recv: &mut RecvStream,
    context: &ConnectionContext,
    subscribe: &Subscribe,
    conn_id: u64,
    peer: SocketAddr,
) -> Result<(), ReplicationError> {
    let silence = context.settings.silence_timeout;
    loop {
        let frame = match timeout(silence, read_frame(recv, peer)).await {
            Ok(frame) => frame?,
            Err(_) => {
                return Err(ReplicationError::Silent {
                    peer,
                    silent_ms: silence.as_millis() as u64,
                });
            }
        };
        let lsn = match (subscribe.role, frame) {
            (FollowerRole::Standby, Frame::Ack { durable_lsn }) => durable_lsn,
            (FollowerRole::Reader, Frame::Applied { applied_lsn }) => applied_lsn,
            (_, Frame::KeepAlive) => continue,
            (_, other) => {
                return Err(ReplicationError::Protocol {
                    peer,
                    kind: other.kind(),
                    expected: "acks matching the subscribed role, or keep-alives",
                });
            }
        };
        let _ = context.commands.send(HubCommand::Confirm {
            node: subscribe.node_id.clone(),
            conn_id,
            lsn,
        });
    }
}

/// Writes what the hub queues, the commit LSN whenever it moves, and keep-alives when idle.
async fn write_stream(
    send: &mut SendStream,
    context: &ConnectionContext,
    mut queue: mpsc::Receiver<Outbound>,
    peer: SocketAddr,
) -> Result<(), ReplicationError> {
    let mut acknowledged = context.acknowledged.clone();
    // The current commit LSN goes out before the first keep-alive (the select is biased):
    // followers take either frame to mean they know where the stream's commit stood.
    acknowledged.mark_changed();
    let mut keepalive = tokio::time::interval(context.settings.keepalive_interval);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            item = queue.recv() => match item {
                // The hub dropped the link: this stream was cut or superseded.
                None => return Ok(()),
                Some(Outbound::Range { from, through }) => {
                    send_range(send, context, from, through, peer).await?;
                }
                Some(Outbound::Flush(notice)) => {
                    write_frame(send, &Frame::FlushNotice((*notice).clone()), peer).await?;
                }
            },
            changed = acknowledged.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let commit = *acknowledged.borrow_and_update();
                if let Some(commit_lsn) = commit {
                    write_frame(send, &Frame::Commit { commit_lsn }, peer).await?;
                }
            }
            _ = keepalive.tick() => write_frame(send, &Frame::KeepAlive, peer).await?,
        }
    }
}

/// Entries the writer takes from the tail per lock.
const TAIL_BATCH_ENTRIES: usize = 256;

/// Streams `from..=through`: from the in-memory tail where it still holds them, else from the
/// WAL segments. A gap (entries deleted by retention since the subscription) ends the stream:
/// the follower resubscribes and learns the new start.
async fn send_range(
    send: &mut SendStream,
    context: &ConnectionContext,
    from: Lsn,
    through: Lsn,
    peer: SocketAddr,
) -> Result<(), ReplicationError> {
    let sent_entries = counter!(SENT_ENTRIES_TOTAL);
    let sent_bytes = counter!(SENT_BYTES_TOTAL);
    let mut next = from;
    while next <= through {
        let from_tail: Vec<Arc<Entry>> = {
            let tail = lock_tail(&context.tail);
            match tail.front() {
                Some(front) if front.lsn <= next => tail
                    .iter()
                    .skip((next.0 - front.lsn.0) as usize)
                    .take_while(|entry| entry.lsn <= through)
                    .take(TAIL_BATCH_ENTRIES)
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            }
        };
        let batch: Vec<Arc<Entry>> = if from_tail.is_empty() {
            let source = Arc::clone(&context.source);
            let batch_bytes = context.settings.catch_up_batch_bytes;
            tokio::task::spawn_blocking(move || source.read(next, through, batch_bytes))
                .await
                .map_err(|_| ReplicationError::Closed { peer })?
                .map_err(|source| ReplicationError::Wal { peer, source })?
                .into_iter()
                .map(Arc::new)
                .collect()
        } else {
            from_tail
        };
        match batch.first() {
            Some(first) if first.lsn == next => {}
            _ => {
                return Err(ReplicationError::CatchUpGap {
                    peer,
                    expected: next,
                    found: batch.first().map(|entry| entry.lsn),
                });
            }
        }
        for entry in &batch {
            let bytes = write_entry(send, entry, peer).await?;
            sent_entries.increment(1);
            sent_bytes.increment(bytes);
            next = entry.lsn.saturating_next();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribe(known_epoch: u64, from_lsn: u64) -> Subscribe {
        Subscribe {
            node_id: "r1".into(),
            role: FollowerRole::Reader,
            known_epoch: Epoch(known_epoch),
            from_lsn: Lsn(from_lsn),
        }
    }

    #[test]
    fn test_should_stream_from_the_fence_to_a_follower_that_knew_an_older_epoch() {
        // Epoch 3 kept older epochs up to LSN 10.
        let fence = Lsn(10);
        assert_eq!(stream_from(&subscribe(2, 15), Epoch(3), fence), Lsn(11));
        assert_eq!(stream_from(&subscribe(2, 11), Epoch(3), fence), Lsn(11));
        assert_eq!(stream_from(&subscribe(2, 7), Epoch(3), fence), Lsn(7));
        // One that knows this epoch holds only what this primary sent it or kept.
        assert_eq!(stream_from(&subscribe(3, 15), Epoch(3), fence), Lsn(15));
        // One that missed epoch 2 is taken to hold nothing.
        assert_eq!(stream_from(&subscribe(1, 7), Epoch(3), fence), Lsn(1));
    }
}
