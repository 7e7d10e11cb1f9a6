//! This node's place in the cluster: its gossip membership (or, standalone, a view of one),
//! what it advertises, and where a request it cannot serve itself should go.
//!
//! Routing rules (DESIGN.md section 4, COMPAT.md):
//! - writes are served by the primary writer (or a standalone node); any other node forwards
//!   them to the primary named by gossip, adding its id to `X-Arc-Forwarded-By`;
//! - queries are served by readers and writers; a compactor forwards them to a healthy reader;
//! - a request that was forwarded once is never forwarded again: a node that cannot serve it
//!   answers 508, so stale or disagreeing views can never bounce a request around;
//! - with no primary (or reader) known the answer is 503 with `Retry-After`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_clock::Clock;

use anyhow::Context;
use arc_gossip::{
    ClusterView, Health, Membership, MembershipSettings, NodeInfo, NodeState, NodeView, Phase, Role,
};
use tracing::{info, warn};

use crate::config::{Config, parse_listen_addr};

/// The header listing the nodes that forwarded a request, comma-separated.
pub const FORWARDED_BY_HEADER: &str = "x-arc-forwarded-by";

/// The name of the file, in the WAL directory, holding the last gossip generation.
const GENERATION_FILE: &str = "node.generation";

/// What a request needs from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Ingest: only the primary writer (or a standalone node) takes writes.
    Write,
    /// A query: readers and writers answer them.
    Query,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// This node serves it.
    Local,
    /// Forward it to `node_id` at `address` (host:port of its API).
    Forward {
        /// The target's node id.
        node_id: String,
        /// The target's API address.
        address: String,
    },
    /// Nobody can serve it now (503 with `Retry-After`).
    Unavailable(String),
    /// It was forwarded already and this node cannot serve it (508).
    Loop(String),
}

/// This node's membership and advertised state.
pub struct Cluster {
    node_id: String,
    cluster_name: String,
    role: Role,
    /// Gossip membership; `None` when standalone or after leaving.
    membership: Mutex<Option<Membership>>,
    /// What this node advertises when there is no membership (standalone, or after leaving).
    local: Mutex<NodeInfo>,
    /// Round-robin position for queries forwarded to readers.
    next_reader: AtomicUsize,
    clock: Arc<dyn Clock>,
}

impl Cluster {
    /// Joins the cluster when `cluster.enabled` (state joining until [`Cluster::update`] says
    /// ready), or makes a view of one for a standalone node.
    ///
    /// # Errors
    /// The generation file cannot be read or written, or the gossip socket cannot be bound.
    pub async fn start(
        config: &Config,
        api_addr: SocketAddr,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Cluster> {
        let settings = &config.cluster;
        let host = advertise_host(config, api_addr.ip());
        let replication =
            parse_listen_addr("cluster.replication_addr", &settings.replication_addr)?;
        let now_ms = clock.unix_ms();
        let initial = NodeInfo {
            role: settings.role,
            phase: Phase::Joining,
            health: Health::default(),
            api_addr: join_host_port(&host, api_addr.port()),
            replication_addr: join_host_port(&host, replication.port()),
            durable_lsn: 0,
            epoch: 0,
            primary: false,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms: now_ms,
        };
        let membership = if settings.enabled {
            let listen = parse_listen_addr("cluster.coordinator_addr", &settings.coordinator_addr)?;
            let advertise_ip = resolve_ip(&host)
                .with_context(|| format!("resolving cluster.advertise_host {host}"))?;
            std::fs::create_dir_all(&config.wal.directory).with_context(|| {
                format!("creating wal.directory {}", config.wal.directory.display())
            })?;
            let generation_file = config.wal.directory.join(GENERATION_FILE);
            let generation = arc_gossip::next_generation(&generation_file, now_ms)?;
            let secret = settings
                .shared_secret
                .clone()
                .context("cluster.shared_secret is required when clustering")?;
            let membership = Membership::start_with_clock(
                MembershipSettings {
                    node_id: settings.node_id.clone(),
                    cluster_name: settings.cluster_name.clone(),
                    shared_secret: secret.into_bytes(),
                    listen_addr: listen,
                    advertise_addr: SocketAddr::new(advertise_ip, listen.port()),
                    seeds: settings.seeds.clone(),
                    heartbeat_interval: settings.heartbeat_interval.0,
                    generation,
                    dead_node_grace_period: Duration::from_secs(3600),
                    auth: arc_gossip::GossipAuthSettings::default(),
                },
                initial.clone(),
                clock.clone(),
            )
            .await
            .with_context(|| {
                format!(
                    "joining cluster {} by gossip on {listen}",
                    settings.cluster_name
                )
            })?;
            info!(
                cluster = %settings.cluster_name,
                role = %settings.role,
                generation,
                gossip = %membership.gossip_addr(),
                seeds = ?settings.seeds,
                "joined the gossip cluster"
            );
            Some(membership)
        } else {
            None
        };
        Ok(Cluster {
            node_id: settings.node_id.clone(),
            cluster_name: settings.cluster_name.clone(),
            role: settings.role,
            membership: Mutex::new(membership),
            local: Mutex::new(initial),
            next_reader: AtomicUsize::new(0),
            clock,
        })
    }

    /// The cluster's name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// Whether this node gossips with a cluster (false: standalone).
    pub fn is_clustered(&self) -> bool {
        lock(&self.membership).is_some()
    }

    /// Changes what this node advertises.
    pub fn update(&self, change: impl FnOnce(&mut NodeInfo)) {
        let mut local = lock(&self.local);
        change(&mut local);
        if let Some(membership) = lock(&self.membership).as_ref() {
            let next = local.clone();
            membership.update(move |info| *info = next);
        }
    }

    /// What this node advertises now.
    pub fn local_info(&self) -> NodeInfo {
        lock(&self.local).clone()
    }

    /// The cluster as this node sees it, itself included.
    pub fn view(&self) -> Arc<ClusterView> {
        if let Some(membership) = lock(&self.membership).as_ref() {
            return membership.view();
        }
        let info = self.local_info();
        let state = arc_gossip::derive_state(true, &info);
        Arc::new(ClusterView {
            cluster_name: self.cluster_name.clone(),
            local_id: self.node_id.clone(),
            nodes: vec![NodeView {
                id: self.node_id.clone(),
                generation: info.started_at_ms,
                state,
                info,
                last_heartbeat: Some(self.clock.system_time()),
                is_self: true,
            }],
        })
    }

    /// Leaves gracefully: peers see this node `left`, then gossip stops. `linger` is how long
    /// it keeps gossiping so the news spreads.
    pub async fn leave(&self, linger: Duration) {
        lock(&self.local).phase = Phase::Leaving;
        let membership = lock(&self.membership).take();
        if let Some(membership) = membership {
            membership.leave(linger).await;
            info!("left the gossip cluster");
        }
    }

    /// Decides who serves a request needing `need`. `serves_locally` says whether this node
    /// can (the caller knows its duty); `forwarded_by` lists the nodes that already forwarded
    /// it.
    pub fn route(&self, need: Need, serves_locally: bool, forwarded_by: &[String]) -> Routing {
        if serves_locally {
            return Routing::Local;
        }
        let what = match need {
            Need::Write => "writes",
            Need::Query => "queries",
        };
        if !forwarded_by.is_empty() {
            let chain = forwarded_by.join(", ");
            let looped = forwarded_by.iter().any(|id| id == &self.node_id);
            return Routing::Loop(if looped {
                format!(
                    "forwarding loop: request already passed through {} (forwarded by {chain})",
                    self.node_id
                )
            } else {
                format!(
                    "forwarding loop: request was forwarded by {chain} to {} ({}), which does not serve {what}; its view of the cluster may be stale",
                    self.node_id, self.role
                )
            });
        }
        let view = self.view();
        match need {
            Need::Write => match view.primary() {
                Some(primary) if primary.id != self.node_id => Routing::Forward {
                    node_id: primary.id.clone(),
                    address: primary.info.api_addr.clone(),
                },
                _ => Routing::Unavailable(format!(
                    "no primary writer is known in cluster {} (bootstrapping or failing over); node {} ({}) does not take writes itself",
                    self.cluster_name, self.node_id, self.role
                )),
            },
            Need::Query => {
                let readers: Vec<&NodeView> = view
                    .nodes
                    .iter()
                    .filter(|node| {
                        node.info.role == Role::Reader
                            && node.state == NodeState::Healthy
                            && node.id != self.node_id
                    })
                    .collect();
                if readers.is_empty() {
                    return Routing::Unavailable(format!(
                        "no healthy reader in cluster {} to answer the query; node {} ({}) does not serve queries",
                        self.cluster_name, self.node_id, self.role
                    ));
                }
                let pick = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
                Routing::Forward {
                    node_id: readers[pick].id.clone(),
                    address: readers[pick].info.api_addr.clone(),
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The host other nodes reach this one at: `cluster.advertise_host`, else the API's listen
/// IP, else (wildcard listen) the local address that routes to the first seed, else the one
/// that carries the default route, else loopback (with a warning: other machines cannot use
/// it).
fn advertise_host(config: &Config, listen_ip: IpAddr) -> String {
    if let Some(host) = &config.cluster.advertise_host {
        return host.trim().to_string();
    }
    if !listen_ip.is_unspecified() {
        return listen_ip.to_string();
    }
    let routed = config
        .cluster
        .seeds
        .iter()
        .map(String::as_str)
        // A documentation address (RFC 5737): only the routing table is consulted.
        .chain(["192.0.2.1:9"])
        .find_map(route_source)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    if routed.is_loopback() && config.cluster.enabled {
        warn!(
            "advertising a loopback address: other machines cannot reach this node; set cluster.advertise_host"
        );
    }
    routed.to_string()
}

/// The local address the kernel would send from to reach `seed` (no packet is sent).
fn route_source(seed: &str) -> Option<IpAddr> {
    let target = seed.to_socket_addrs().ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn resolve_ip(host: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()?
        .next()
        .map(|addr| addr.ip())
        .context("no address found")
}

/// Advertises the port the replication server really bound (`cluster.replication_addr` may
/// name port 0: any free port).
pub(crate) fn advertise_replication_port(cluster: &Cluster, port: u16) {
    cluster.update(|info| {
        let host = info
            .replication_addr
            .rsplit_once(':')
            .map_or("127.0.0.1", |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        info.replication_addr = join_host_port(&host, port);
    });
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses `X-Arc-Forwarded-By` (comma-separated node ids).
pub fn parse_forwarded_by(value: Option<&str>) -> Vec<String> {
    value
        .map(|text| {
            text.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_parse_forwarded_by_lists() {
        assert!(parse_forwarded_by(None).is_empty());
        assert!(parse_forwarded_by(Some(" , ")).is_empty());
        assert_eq!(
            parse_forwarded_by(Some("reader-1, compactor-1")),
            vec!["reader-1", "compactor-1"]
        );
    }

    #[test]
    fn test_should_format_ipv6_advertised_addresses() {
        assert_eq!(join_host_port("::1", 8000), "[::1]:8000");
        assert_eq!(join_host_port("10.0.0.1", 8000), "10.0.0.1:8000");
        assert_eq!(join_host_port("db-1.example", 8000), "db-1.example:8000");
    }

    #[tokio::test]
    async fn test_should_route_standalone_requests_locally_and_refuse_forwarded_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.wal.directory = dir.path().join("wal");
        let clock = Arc::new(arc_clock::SystemClock);
        let cluster = Cluster::start(&config, "127.0.0.1:8000".parse().unwrap(), clock)
            .await
            .unwrap();
        assert!(!cluster.is_clustered());
        assert_eq!(cluster.route(Need::Write, true, &[]), Routing::Local);
        let forwarded = vec!["reader-9".to_string()];
        assert!(matches!(
            cluster.route(Need::Write, false, &forwarded),
            Routing::Loop(message) if message.contains("reader-9")
        ));
        let own = vec![config.cluster.node_id.clone()];
        assert!(matches!(
            cluster.route(Need::Query, false, &own),
            Routing::Loop(message) if message.contains("already passed through")
        ));
        // Alone, nobody else can take a write or a query.
        assert!(matches!(
            cluster.route(Need::Write, false, &[]),
            Routing::Unavailable(message) if message.contains("no primary")
        ));
        assert!(matches!(
            cluster.route(Need::Query, false, &[]),
            Routing::Unavailable(message) if message.contains("no healthy reader")
        ));
        let view = cluster.view();
        assert_eq!(view.nodes.len(), 1);
        assert_eq!(view.nodes[0].state, NodeState::Joining);
        cluster.update(|info| info.phase = Phase::Ready);
        assert_eq!(cluster.view().nodes[0].state, NodeState::Healthy);
    }
}
