//! The cluster view: what one node advertises ([`NodeInfo`]), how it travels as chitchat keys,
//! and how raw per-`(id, generation)` observations become one [`NodeView`] per node.
//!
//! Pure: no I/O and no clock reads. Liveness and heartbeat times arrive as data in [`Observed`],
//! so every rule here is unit- and property-tested. [`crate::Membership`] does the I/O.
//!
//! # Wire keys
//!
//! One ASCII key per [`NodeInfo`] field (see [`keys`]); values are decimal numbers, lowercase
//! words, or short strings. Health travels as one compact JSON object. Unknown keys are ignored,
//! so a later version can add keys without breaking older peers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The chitchat keys a node publishes, one per [`NodeInfo`] field. All ASCII.
pub mod keys {
    /// [`super::Role`], lowercase.
    pub const ROLE: &str = "role";
    /// [`super::Phase`], lowercase.
    pub const PHASE: &str = "phase";
    /// [`super::Health`] as compact JSON.
    pub const HEALTH: &str = "health";
    /// HTTP API address (`host:port`).
    pub const API_ADDR: &str = "api_addr";
    /// Replication address (`host:port`).
    pub const REPLICATION_ADDR: &str = "replication_addr";
    /// Durable LSN, decimal.
    pub const DURABLE_LSN: &str = "durable_lsn";
    /// Epoch of the primary this node follows or is, decimal.
    pub const EPOCH: &str = "epoch";
    /// `true` if this node is the primary writer.
    pub const PRIMARY: &str = "primary";
    /// Software version.
    pub const VERSION: &str = "version";
    /// Process start time, milliseconds since the Unix epoch, decimal.
    pub const STARTED_AT_MS: &str = "started_at_ms";

    /// Every key [`super::NodeInfo::to_keys`] publishes, in that order.
    pub const ALL: [&str; 10] = [
        ROLE,
        PHASE,
        HEALTH,
        API_ADDR,
        REPLICATION_ADDR,
        DURABLE_LSN,
        EPOCH,
        PRIMARY,
        VERSION,
        STARTED_AT_MS,
    ];
}

/// A value that names none of the variants of a lowercase enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{value}': expected one of {expected}")]
pub struct ParseEnumError {
    /// What was parsed, e.g. `role`.
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// The accepted values, comma-separated.
    pub expected: &'static str,
}

/// Implements `ALL`, `as_str`, `Display` and `FromStr` for an enum whose text form is its
/// lowercase variant name (the same form serde uses with `rename_all = "lowercase"`).
macro_rules! lowercase_enum {
    ($name:ident, $what:literal, $expected:literal, [$($variant:ident => $text:literal),+ $(,)?]) => {
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Returns the lowercase text form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        what: $what,
                        value: text.to_string(),
                        expected: $expected,
                    }),
                }
            }
        }
    };
}

/// What a node does in the cluster (issue 4, item 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ingests writes; one writer is the primary, the others are standbys.
    Writer,
    /// Answers queries.
    Reader,
    /// Compacts files.
    Compactor,
    /// Does everything.
    Standalone,
}

lowercase_enum!(Role, "role", "writer, reader, compactor, standalone", [
    Writer => "writer",
    Reader => "reader",
    Compactor => "compactor",
    Standalone => "standalone",
]);

/// A node's state as the cluster API shows it; see [`derive_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Alive but not ready yet, or its keys have not all arrived.
    Joining,
    /// Alive, ready, and healthy or degraded.
    Healthy,
    /// Alive and ready, but its own health check says unhealthy.
    Unhealthy,
    /// The failure detector stopped hearing from it.
    Dead,
    /// It announced a graceful leave.
    Left,
}

lowercase_enum!(NodeState, "state", "joining, healthy, unhealthy, dead, left", [
    Joining => "joining",
    Healthy => "healthy",
    Unhealthy => "unhealthy",
    Dead => "dead",
    Left => "left",
]);

/// The outcome of a node's own health check (issue 4, item 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything checked is fine.
    Healthy,
    /// Working, with a warning (e.g. WAL disk filling up).
    Degraded,
    /// Not fit to serve (e.g. storage unreachable).
    Unhealthy,
}

lowercase_enum!(HealthStatus, "health status", "healthy, degraded, unhealthy", [
    Healthy => "healthy",
    Degraded => "degraded",
    Unhealthy => "unhealthy",
]);

/// A node's own lifecycle, which it publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Starting: not serving yet.
    Joining,
    /// Serving.
    Ready,
    /// Shutting down gracefully; peers show it as [`NodeState::Left`].
    Leaving,
}

lowercase_enum!(Phase, "phase", "joining, ready, leaving", [
    Joining => "joining",
    Ready => "ready",
    Leaving => "leaving",
]);

/// A node's self-assessed health, published under [`keys::HEALTH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The overall verdict.
    pub status: HealthStatus,
    /// 0 (worst) to 100 (best); ranks standbys after the durable LSN.
    pub score: u8,
    /// Human-readable reasons for a status other than healthy.
    pub reasons: Vec<String>,
    /// Measured inputs by name (e.g. `wal_disk_free_ratio`), for operators.
    pub parts: BTreeMap<String, f64>,
    /// Consecutive checks, this one included, that found the node unhealthy (0 when this one
    /// did not): standbys replace a primary at `cluster.unhealthy_threshold`.
    #[serde(default)]
    pub unhealthy_checks: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            status: HealthStatus::Healthy,
            score: 100,
            reasons: Vec::new(),
            parts: BTreeMap::new(),
            unhealthy_checks: 0,
        }
    }
}

/// Highest valid [`Health::score`].
pub const MAX_HEALTH_SCORE: u8 = 100;

/// Why gossip keys could not be turned into a [`NodeInfo`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// A key [`NodeInfo::to_keys`] always publishes is absent (often: not gossiped yet).
    #[error("gossip key '{key}' is missing")]
    MissingKey {
        /// The missing key.
        key: &'static str,
    },
    /// A key is present but its value does not parse.
    #[error("gossip key '{key}' has an invalid value '{value}': {reason}")]
    InvalidKey {
        /// The offending key.
        key: &'static str,
        /// Its value as received.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// What one node advertises about itself through gossip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeInfo {
    /// Its role.
    pub role: Role,
    /// Its lifecycle phase.
    pub phase: Phase,
    /// Its last health check.
    pub health: Health,
    /// HTTP API address other nodes and clients use (`host:port`).
    pub api_addr: String,
    /// Replication address (`host:port`).
    pub replication_addr: String,
    /// Highest LSN it has made durable.
    pub durable_lsn: u64,
    /// Epoch of the primary it is or follows.
    pub epoch: u64,
    /// True if it is the primary writer of `epoch`.
    pub primary: bool,
    /// Software version.
    pub version: String,
    /// Process start time, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

impl NodeInfo {
    /// Returns the stand-in for a node whose keys have not (all) arrived: phase joining, role
    /// standalone, everything else empty or zero.
    pub fn placeholder() -> NodeInfo {
        NodeInfo {
            role: Role::Standalone,
            phase: Phase::Joining,
            health: Health::default(),
            api_addr: String::new(),
            replication_addr: String::new(),
            durable_lsn: 0,
            epoch: 0,
            primary: false,
            version: String::new(),
            started_at_ms: 0,
        }
    }

    /// Returns one `(key, value)` pair per field, keys from [`keys::ALL`].
    ///
    /// Health is compact JSON. So that peers can always parse it, a score above 100 is sent as
    /// 100 and non-finite parts (NaN, infinities, which JSON can't carry) are left out.
    pub fn to_keys(&self) -> Vec<(String, String)> {
        let health = Health {
            status: self.health.status,
            score: self.health.score.min(MAX_HEALTH_SCORE),
            reasons: self.health.reasons.clone(),
            parts: self
                .health
                .parts
                .iter()
                .filter(|(_, value)| value.is_finite())
                .map(|(name, value)| (name.clone(), *value))
                .collect(),
            unhealthy_checks: self.health.unhealthy_checks,
        };
        let health_json =
            serde_json::to_string(&health).expect("a health record with finite parts serializes");
        [
            (keys::ROLE, self.role.as_str().to_string()),
            (keys::PHASE, self.phase.as_str().to_string()),
            (keys::HEALTH, health_json),
            (keys::API_ADDR, self.api_addr.clone()),
            (keys::REPLICATION_ADDR, self.replication_addr.clone()),
            (keys::DURABLE_LSN, self.durable_lsn.to_string()),
            (keys::EPOCH, self.epoch.to_string()),
            (keys::PRIMARY, self.primary.to_string()),
            (keys::VERSION, self.version.clone()),
            (keys::STARTED_AT_MS, self.started_at_ms.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }

    /// Parses the keys written by [`NodeInfo::to_keys`]. Unknown keys are ignored; if a key
    /// appears twice the last value counts.
    ///
    /// # Errors
    ///
    /// `MissingKey` or `InvalidKey`, naming the first key (in [`keys::ALL`] order) at fault.
    pub fn from_keys<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<NodeInfo, ViewError> {
        let mut values: BTreeMap<&'a str, &'a str> = BTreeMap::new();
        for (key, value) in pairs {
            values.insert(key, value);
        }
        let get = |key: &'static str| {
            values
                .get(key)
                .copied()
                .ok_or(ViewError::MissingKey { key })
        };
        Ok(NodeInfo {
            role: parse_key(keys::ROLE, get(keys::ROLE)?)?,
            phase: parse_key(keys::PHASE, get(keys::PHASE)?)?,
            health: parse_health(get(keys::HEALTH)?)?,
            api_addr: get(keys::API_ADDR)?.to_string(),
            replication_addr: get(keys::REPLICATION_ADDR)?.to_string(),
            durable_lsn: parse_key(keys::DURABLE_LSN, get(keys::DURABLE_LSN)?)?,
            epoch: parse_key(keys::EPOCH, get(keys::EPOCH)?)?,
            primary: parse_key(keys::PRIMARY, get(keys::PRIMARY)?)?,
            version: get(keys::VERSION)?.to_string(),
            started_at_ms: parse_key(keys::STARTED_AT_MS, get(keys::STARTED_AT_MS)?)?,
        })
    }
}

fn parse_key<T>(key: &'static str, value: &str) -> Result<T, ViewError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value
        .parse()
        .map_err(|error: T::Err| ViewError::InvalidKey {
            key,
            value: value.to_string(),
            reason: error.to_string(),
        })
}

fn parse_health(value: &str) -> Result<Health, ViewError> {
    let invalid = |reason: String| ViewError::InvalidKey {
        key: keys::HEALTH,
        value: value.to_string(),
        reason,
    };
    let health: Health = serde_json::from_str(value).map_err(|error| invalid(error.to_string()))?;
    if health.score > MAX_HEALTH_SCORE {
        return Err(invalid(format!(
            "score {} is above {MAX_HEALTH_SCORE}",
            health.score
        )));
    }
    Ok(health)
}

/// Returns the state the cluster API shows for a node, from the first rule that applies:
///
/// 1. phase leaving: [`NodeState::Left`], even once dead, so a graceful stop stays
///    distinguishable from a crash;
/// 2. not alive: [`NodeState::Dead`];
/// 3. phase joining: [`NodeState::Joining`];
/// 4. health unhealthy: [`NodeState::Unhealthy`];
/// 5. otherwise [`NodeState::Healthy`]. A degraded node counts as healthy (it still serves);
///    `info.health.status` keeps showing degraded.
pub fn derive_state(alive: bool, info: &NodeInfo) -> NodeState {
    if info.phase == Phase::Leaving {
        return NodeState::Left;
    }
    if !alive {
        return NodeState::Dead;
    }
    if info.phase == Phase::Joining {
        return NodeState::Joining;
    }
    if info.health.status == HealthStatus::Unhealthy {
        return NodeState::Unhealthy;
    }
    NodeState::Healthy
}

/// One node as the cluster view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Node id (from config).
    pub id: String,
    /// Generation of the incarnation shown: the newest one seen.
    pub generation: u64,
    /// Derived state; see [`derive_state`].
    pub state: NodeState,
    /// What it advertises ([`NodeInfo::placeholder`] until its keys arrive).
    pub info: NodeInfo,
    /// Wall-clock time its heartbeat last advanced, as seen by this node; `None` until seen once.
    pub last_heartbeat: Option<SystemTime>,
    /// True for the node holding this view.
    pub is_self: bool,
}

/// The raw observation of one `(id, generation)` incarnation, before merging.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Node id.
    pub id: String,
    /// Generation of this incarnation.
    pub generation: u64,
    /// Whether the failure detector considers it alive.
    pub alive: bool,
    /// Its parsed keys, `None` while incomplete.
    pub info: Option<NodeInfo>,
    /// Wall-clock time its heartbeat last advanced.
    pub last_heartbeat: Option<SystemTime>,
    /// True for the observing node itself.
    pub is_self: bool,
}

/// Merges observations into one [`NodeView`] per id, sorted by id.
///
/// The highest generation wins, even when it is dead and an older one still looks alive:
/// generations strictly increase per start, so a newer one proves the older process has exited.
/// The older entry only still looks alive because the failure detector has not timed it out
/// yet; showing it would resurrect a stale role, primary flag and LSN, and would make the entry
/// flap between two incarnations. Within one generation (two processes misconfigured with the
/// same id and generation) the choice is deterministic: self first, then alive, then with info,
/// then the later heartbeat.
///
/// An observation without info becomes a [`NodeInfo::placeholder`], so it shows as joining
/// while alive and dead once the failure detector gives up on it.
pub fn merge_generations(observed: Vec<Observed>) -> Vec<NodeView> {
    let mut newest: BTreeMap<String, Observed> = BTreeMap::new();
    for candidate in observed {
        match newest.get(&candidate.id) {
            Some(current) if !supersedes(&candidate, current) => {}
            _ => {
                newest.insert(candidate.id.clone(), candidate);
            }
        }
    }
    newest
        .into_values()
        .map(|chosen| {
            let info = chosen.info.unwrap_or_else(NodeInfo::placeholder);
            NodeView {
                state: derive_state(chosen.alive, &info),
                id: chosen.id,
                generation: chosen.generation,
                info,
                last_heartbeat: chosen.last_heartbeat,
                is_self: chosen.is_self,
            }
        })
        .collect()
}

/// Returns true if `candidate` should replace `current` (same id).
fn supersedes(candidate: &Observed, current: &Observed) -> bool {
    let rank = |observed: &Observed| {
        (
            observed.generation,
            observed.is_self,
            observed.alive,
            observed.info.is_some(),
            observed.last_heartbeat,
        )
    };
    match rank(candidate).cmp(&rank(current)) {
        std::cmp::Ordering::Equal => {
            // Only two processes sharing an id and a generation get here; any fixed order will
            // do as long as it does not depend on which observation came first.
            let wire = |observed: &Observed| observed.info.as_ref().map(NodeInfo::to_keys);
            wire(candidate) > wire(current)
        }
        ordering => ordering == std::cmp::Ordering::Greater,
    }
}

/// The merged view of the cluster as one node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// Cluster name (chitchat cluster id).
    pub cluster_name: String,
    /// Id of the node holding this view.
    pub local_id: String,
    /// One entry per node id, sorted by id.
    pub nodes: Vec<NodeView>,
}

/// Counts of nodes per role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoleCounts {
    /// Writers.
    pub writer: usize,
    /// Readers.
    pub reader: usize,
    /// Compactors.
    pub compactor: usize,
    /// Standalone nodes.
    pub standalone: usize,
}

/// Cluster totals for `GET /api/v1/cluster`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Every node in the view, in any state.
    pub node_count: usize,
    /// Nodes in state healthy.
    pub healthy_nodes: usize,
    /// Every node in the view by advertised role (placeholders count as standalone).
    pub roles: RoleCounts,
}

/// A node filter from the `role` and `state` query parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// Keep only this role.
    pub role: Option<Role>,
    /// Keep only this state.
    pub state: Option<NodeState>,
}

/// A query parameter that names no role or state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Bad `role`.
    #[error("invalid role filter '{value}': expected one of writer, reader, compactor, standalone")]
    Role {
        /// The rejected value.
        value: String,
    },
    /// Bad `state`.
    #[error(
        "invalid state filter '{value}': expected one of joining, healthy, unhealthy, dead, left"
    )]
    State {
        /// The rejected value.
        value: String,
    },
}

impl Filter {
    /// Parses the `role` and `state` query parameters (lowercase, as the API prints them).
    ///
    /// # Errors
    ///
    /// `FilterError` naming the parameter, the bad value and the accepted values.
    pub fn parse(role: Option<&str>, state: Option<&str>) -> Result<Filter, FilterError> {
        let role = role
            .map(|value| {
                value.parse().map_err(|_| FilterError::Role {
                    value: value.to_string(),
                })
            })
            .transpose()?;
        let state = state
            .map(|value| {
                value.parse().map_err(|_| FilterError::State {
                    value: value.to_string(),
                })
            })
            .transpose()?;
        Ok(Filter { role, state })
    }

    /// Returns true if `node` passes the filter.
    pub fn matches(&self, node: &NodeView) -> bool {
        self.role.is_none_or(|role| node.info.role == role)
            && self.state.is_none_or(|state| node.state == state)
    }
}

impl ClusterView {
    /// Returns the node with this id.
    pub fn get(&self, id: &str) -> Option<&NodeView> {
        self.nodes
            .binary_search_by(|node| node.id.as_str().cmp(id))
            .ok()
            .map(|index| &self.nodes[index])
            // `nodes` is sorted when built by `merge_generations`; stay correct if a caller
            // built the view by hand.
            .or_else(|| self.nodes.iter().find(|node| node.id == id))
    }

    /// Returns the node holding this view.
    pub fn local(&self) -> Option<&NodeView> {
        self.get(&self.local_id)
    }

    /// Returns the nodes passing `filter`, in id order.
    pub fn filter(&self, filter: &Filter) -> Vec<&NodeView> {
        self.nodes
            .iter()
            .filter(|node| filter.matches(node))
            .collect()
    }

    /// Returns the totals of the cluster API.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary {
            node_count: self.nodes.len(),
            ..Summary::default()
        };
        for node in &self.nodes {
            if node.state == NodeState::Healthy {
                summary.healthy_nodes += 1;
            }
            let count = match node.info.role {
                Role::Writer => &mut summary.roles.writer,
                Role::Reader => &mut summary.roles.reader,
                Role::Compactor => &mut summary.roles.compactor,
                Role::Standalone => &mut summary.roles.standalone,
            };
            *count += 1;
        }
        summary
    }

    /// Returns the primary writer: among alive, ready nodes (state healthy or unhealthy) that
    /// claim `primary`, the one with the highest epoch, ties broken by the smallest id.
    ///
    /// Two claimants can coexist briefly after a failover (the old primary has not yet seen
    /// the new epoch); the catalog decides who really is primary, the epoch says who is newer.
    pub fn primary(&self) -> Option<&NodeView> {
        self.nodes
            .iter()
            .filter(|node| matches!(node.state, NodeState::Healthy | NodeState::Unhealthy))
            .filter(|node| node.info.primary)
            .min_by(|a, b| {
                b.info
                    .epoch
                    .cmp(&a.info.epoch)
                    .then_with(|| a.id.cmp(&b.id))
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    pub(crate) fn info(role: Role) -> NodeInfo {
        NodeInfo {
            role,
            phase: Phase::Ready,
            health: Health::default(),
            api_addr: "127.0.0.1:8000".into(),
            replication_addr: "127.0.0.1:9100".into(),
            durable_lsn: 7,
            epoch: 1,
            primary: false,
            version: "0.1.0".into(),
            started_at_ms: 1_700_000_000_000,
        }
    }

    fn observed(id: &str, generation: u64, alive: bool, info: Option<NodeInfo>) -> Observed {
        Observed {
            id: id.into(),
            generation,
            alive,
            info,
            last_heartbeat: None,
            is_self: false,
        }
    }

    pub(crate) fn node(id: &str, state: NodeState, info: NodeInfo) -> NodeView {
        NodeView {
            id: id.into(),
            generation: 1,
            state,
            info,
            last_heartbeat: None,
            is_self: false,
        }
    }

    fn view(nodes: Vec<NodeView>) -> ClusterView {
        ClusterView {
            cluster_name: "c".into(),
            local_id: "a".into(),
            nodes,
        }
    }

    #[test]
    fn test_should_print_and_parse_enums_lowercase() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>().unwrap(), *role);
            assert_eq!(serde_json::to_string(role).unwrap(), format!("\"{role}\""));
        }
        for state in NodeState::ALL {
            assert_eq!(state.to_string().parse::<NodeState>().unwrap(), *state);
            assert_eq!(
                serde_json::to_string(state).unwrap(),
                format!("\"{state}\"")
            );
        }
        for status in HealthStatus::ALL {
            assert_eq!(status.to_string().parse::<HealthStatus>().unwrap(), *status);
        }
        for phase in Phase::ALL {
            assert_eq!(phase.to_string().parse::<Phase>().unwrap(), *phase);
            assert_eq!(
                serde_json::from_str::<Phase>(&format!("\"{phase}\"")).unwrap(),
                *phase
            );
        }
        assert_eq!(Role::Writer.to_string(), "writer");
        assert_eq!(NodeState::Left.to_string(), "left");
        assert_eq!(
            "Writer".parse::<Role>().unwrap_err().to_string(),
            "invalid role 'Writer': expected one of writer, reader, compactor, standalone"
        );
    }

    #[test]
    fn test_should_derive_state_from_table() {
        use HealthStatus as H;
        use NodeState as S;
        use Phase as P;
        let cases = [
            (true, P::Leaving, H::Healthy, S::Left),
            (false, P::Leaving, H::Healthy, S::Left),
            (false, P::Leaving, H::Unhealthy, S::Left),
            (false, P::Ready, H::Healthy, S::Dead),
            (false, P::Joining, H::Healthy, S::Dead),
            (false, P::Ready, H::Unhealthy, S::Dead),
            (true, P::Joining, H::Healthy, S::Joining),
            (true, P::Joining, H::Unhealthy, S::Joining),
            (true, P::Ready, H::Unhealthy, S::Unhealthy),
            (true, P::Ready, H::Degraded, S::Healthy),
            (true, P::Ready, H::Healthy, S::Healthy),
        ];
        for (alive, phase, status, expected) in cases {
            let mut node_info = info(Role::Writer);
            node_info.phase = phase;
            node_info.health.status = status;
            assert_eq!(
                derive_state(alive, &node_info),
                expected,
                "alive={alive} phase={phase} health={status}"
            );
        }
    }

    #[test]
    fn test_should_keep_newest_generation_even_if_dead() {
        let mut old_info = info(Role::Writer);
        old_info.primary = true;
        let merged = merge_generations(vec![
            observed("a", 5, true, Some(old_info)),
            observed("a", 6, false, Some(info(Role::Writer))),
            observed("b", 1, true, Some(info(Role::Reader))),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].id, "a");
        assert_eq!(merged[0].generation, 6);
        assert_eq!(merged[0].state, NodeState::Dead);
        assert!(!merged[0].info.primary);
        assert_eq!(merged[1].id, "b");
        assert_eq!(merged[1].state, NodeState::Healthy);
    }

    #[test]
    fn test_should_show_placeholder_as_joining_then_dead() {
        let merged = merge_generations(vec![
            observed("a", 1, true, None),
            observed("b", 1, false, None),
        ]);
        assert_eq!(merged[0].state, NodeState::Joining);
        assert_eq!(merged[0].info, NodeInfo::placeholder());
        assert_eq!(merged[1].state, NodeState::Dead);
    }

    #[test]
    fn test_should_break_generation_ties_deterministically() {
        let mut self_entry = observed("a", 3, false, None);
        self_entry.is_self = true;
        let other = observed("a", 3, true, Some(info(Role::Reader)));
        let forward = merge_generations(vec![self_entry.clone(), other.clone()]);
        let backward = merge_generations(vec![other, self_entry]);
        assert_eq!(forward, backward);
        assert!(forward[0].is_self);
    }

    #[test]
    fn test_should_round_trip_keys() {
        let mut node_info = info(Role::Compactor);
        node_info.health = Health {
            status: HealthStatus::Degraded,
            score: 61,
            reasons: vec!["wal disk 91% full".into()],
            parts: BTreeMap::from([("wal_disk_free_ratio".into(), 0.09)]),
            unhealthy_checks: 2,
        };
        let pairs = node_info.to_keys();
        let names: Vec<&str> = pairs.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(names, keys::ALL);
        assert!(pairs.iter().all(|(key, _)| key.is_ascii()));
        let parsed =
            NodeInfo::from_keys(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(parsed, node_info);
    }

    #[test]
    fn test_should_sanitize_health_that_json_cannot_carry() {
        let mut node_info = info(Role::Writer);
        node_info.health.score = 250;
        node_info.health.parts.insert("nan".into(), f64::NAN);
        node_info.health.parts.insert("inf".into(), f64::INFINITY);
        node_info.health.parts.insert("ok".into(), 1.5);
        let pairs = node_info.to_keys();
        let parsed =
            NodeInfo::from_keys(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(parsed.health.score, 100);
        assert_eq!(
            parsed.health.parts,
            BTreeMap::from([("ok".to_string(), 1.5)])
        );
    }

    #[test]
    fn test_should_name_missing_and_invalid_keys() {
        let pairs = info(Role::Writer).to_keys();
        let without_epoch = pairs
            .iter()
            .filter(|(key, _)| key != keys::EPOCH)
            .map(|(k, v)| (k.as_str(), v.as_str()));
        assert_eq!(
            NodeInfo::from_keys(without_epoch).unwrap_err(),
            ViewError::MissingKey { key: keys::EPOCH }
        );

        for (key, bad_value) in [
            (keys::ROLE, "leader"),
            (keys::PHASE, "gone"),
            (keys::HEALTH, "{"),
            (
                keys::HEALTH,
                r#"{"status":"healthy","score":101,"reasons":[],"parts":{}}"#,
            ),
            (keys::DURABLE_LSN, "-1"),
            (keys::PRIMARY, "yes"),
            (keys::STARTED_AT_MS, ""),
        ] {
            let tampered = pairs.iter().map(|(k, v)| {
                if k == key {
                    (k.as_str(), bad_value)
                } else {
                    (k.as_str(), v.as_str())
                }
            });
            let error = NodeInfo::from_keys(tampered).unwrap_err();
            assert!(
                matches!(&error, ViewError::InvalidKey { key: named, value, .. } if *named == key && value == bad_value),
                "{key}={bad_value}: {error:?}"
            );
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn test_should_ignore_unknown_keys() {
        let mut pairs = info(Role::Reader).to_keys();
        pairs.push(("future_key".into(), "whatever".into()));
        let parsed = NodeInfo::from_keys(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(parsed.unwrap(), info(Role::Reader));
    }

    #[test]
    fn test_should_parse_filters_or_explain() {
        assert_eq!(Filter::parse(None, None).unwrap(), Filter::default());
        assert_eq!(
            Filter::parse(Some("reader"), Some("healthy")).unwrap(),
            Filter {
                role: Some(Role::Reader),
                state: Some(NodeState::Healthy)
            }
        );
        assert_eq!(
            Filter::parse(Some("leader"), None).unwrap_err().to_string(),
            "invalid role filter 'leader': expected one of writer, reader, compactor, standalone"
        );
        assert_eq!(
            Filter::parse(Some("writer"), Some("zombie"))
                .unwrap_err()
                .to_string(),
            "invalid state filter 'zombie': expected one of joining, healthy, unhealthy, dead, left"
        );
        assert!(matches!(
            Filter::parse(Some(""), None),
            Err(FilterError::Role { value }) if value.is_empty()
        ));
    }

    fn sample_view() -> ClusterView {
        let mut unhealthy = info(Role::Reader);
        unhealthy.health.status = HealthStatus::Unhealthy;
        view(vec![
            node("a", NodeState::Healthy, info(Role::Writer)),
            node("b", NodeState::Healthy, info(Role::Writer)),
            node("c", NodeState::Unhealthy, unhealthy),
            node("d", NodeState::Dead, info(Role::Reader)),
            node("e", NodeState::Left, info(Role::Compactor)),
            node("f", NodeState::Joining, NodeInfo::placeholder()),
        ])
    }

    #[test]
    fn test_should_filter_by_role_and_state() {
        let cluster = sample_view();
        let ids = |filter: Filter| -> Vec<String> {
            cluster
                .filter(&filter)
                .into_iter()
                .map(|node| node.id.clone())
                .collect()
        };
        assert_eq!(ids(Filter::default()).len(), 6);
        assert_eq!(
            ids(Filter::parse(Some("writer"), None).unwrap()),
            ["a", "b"]
        );
        assert_eq!(
            ids(Filter::parse(Some("reader"), None).unwrap()),
            ["c", "d"]
        );
        assert_eq!(
            ids(Filter::parse(Some("reader"), Some("dead")).unwrap()),
            ["d"]
        );
        assert_eq!(ids(Filter::parse(None, Some("left")).unwrap()), ["e"]);
        assert!(ids(Filter::parse(Some("compactor"), Some("healthy")).unwrap()).is_empty());
    }

    #[test]
    fn test_should_count_summary() {
        let summary = sample_view().summary();
        assert_eq!(
            summary,
            Summary {
                node_count: 6,
                healthy_nodes: 2,
                roles: RoleCounts {
                    writer: 2,
                    reader: 2,
                    compactor: 1,
                    standalone: 1
                }
            }
        );
    }

    #[test]
    fn test_should_get_nodes_and_local() {
        let cluster = sample_view();
        assert_eq!(cluster.get("c").unwrap().id, "c");
        assert!(cluster.get("zz").is_none());
        assert_eq!(cluster.local().unwrap().id, "a");
    }

    #[test]
    fn test_should_pick_primary_with_highest_epoch_among_alive() {
        let primary = |epoch: u64| {
            let mut node_info = info(Role::Writer);
            node_info.primary = true;
            node_info.epoch = epoch;
            node_info
        };
        let cluster = view(vec![
            node("a", NodeState::Healthy, info(Role::Writer)),
            node("b", NodeState::Healthy, primary(3)),
            node("c", NodeState::Unhealthy, primary(4)),
            node("d", NodeState::Dead, primary(9)),
            node("e", NodeState::Left, primary(9)),
            node("f", NodeState::Joining, primary(9)),
        ]);
        assert_eq!(cluster.primary().unwrap().id, "c");

        let tie = view(vec![
            node("z", NodeState::Healthy, primary(4)),
            node("y", NodeState::Healthy, primary(4)),
        ]);
        assert_eq!(tie.primary().unwrap().id, "y");

        let none = view(vec![node("d", NodeState::Dead, primary(9))]);
        assert!(none.primary().is_none());
    }

    fn arb_role() -> impl Strategy<Value = Role> {
        prop::sample::select(Role::ALL)
    }

    fn arb_health() -> impl Strategy<Value = Health> {
        (
            prop::sample::select(HealthStatus::ALL),
            0..=MAX_HEALTH_SCORE,
            prop::collection::vec(".{0,20}", 0..3),
            prop::collection::btree_map("[a-z_]{1,12}", -1e12f64..1e12, 0..4),
            any::<u32>(),
        )
            .prop_map(|(status, score, reasons, parts, unhealthy_checks)| Health {
                status,
                score,
                reasons,
                parts,
                unhealthy_checks,
            })
    }

    fn arb_info() -> impl Strategy<Value = NodeInfo> {
        (
            (arb_role(), prop::sample::select(Phase::ALL), arb_health()),
            (".{0,30}", "[ -~]{0,30}", ".{0,10}"),
            (any::<u64>(), any::<u64>(), any::<bool>(), any::<u64>()),
        )
            .prop_map(
                |(
                    (role, phase, health),
                    (api_addr, replication_addr, version),
                    (durable_lsn, epoch, primary, started_at_ms),
                )| NodeInfo {
                    role,
                    phase,
                    health,
                    api_addr,
                    replication_addr,
                    durable_lsn,
                    epoch,
                    primary,
                    version,
                    started_at_ms,
                },
            )
    }

    fn arb_observed() -> impl Strategy<Value = Observed> {
        (
            prop::sample::select(vec!["a", "b", "c", "d"]),
            0u64..4,
            any::<bool>(),
            prop::option::of(arb_info()),
            prop::option::of(0u64..1_000),
        )
            .prop_map(|(id, generation, alive, info, heartbeat_ms)| Observed {
                id: id.to_string(),
                generation,
                alive,
                info,
                last_heartbeat: heartbeat_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                is_self: false,
            })
    }

    proptest! {
        #[test]
        fn test_should_round_trip_any_node_info(node_info in arb_info()) {
            let pairs = node_info.to_keys();
            prop_assert!(pairs.iter().all(|(key, _)| key.is_ascii()));
            let parsed = NodeInfo::from_keys(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            prop_assert_eq!(parsed, Ok(node_info));
        }

        #[test]
        fn test_should_merge_to_newest_generation_per_id(
            observations in prop::collection::vec(arb_observed(), 0..12),
            seed in any::<u64>(),
        ) {
            let merged = merge_generations(observations.clone());
            // One entry per id, sorted.
            let ids: Vec<&str> = merged.iter().map(|node| node.id.as_str()).collect();
            let mut expected_ids: Vec<&str> = observations.iter().map(|o| o.id.as_str()).collect();
            expected_ids.sort_unstable();
            expected_ids.dedup();
            prop_assert_eq!(&ids, &expected_ids);
            // Each entry carries the highest generation observed for its id.
            for node in &merged {
                let newest = observations
                    .iter()
                    .filter(|o| o.id == node.id)
                    .map(|o| o.generation)
                    .max();
                prop_assert_eq!(Some(node.generation), newest);
            }
            // The input order doesn't matter.
            let mut shuffled = observations;
            let len = shuffled.len();
            if len > 1 {
                for index in 0..len {
                    let other = (seed as usize).wrapping_mul(index + 7) % len;
                    shuffled.swap(index, other);
                }
            }
            prop_assert_eq!(merge_generations(shuffled), merged);
        }

        #[test]
        fn test_should_count_every_node_once(
            observations in prop::collection::vec(arb_observed(), 0..12),
        ) {
            let cluster = ClusterView {
                cluster_name: "c".into(),
                local_id: "a".into(),
                nodes: merge_generations(observations),
            };
            let summary = cluster.summary();
            let roles = summary.roles;
            prop_assert_eq!(
                roles.writer + roles.reader + roles.compactor + roles.standalone,
                summary.node_count
            );
            let healthy = Filter { role: None, state: Some(NodeState::Healthy) };
            prop_assert_eq!(cluster.filter(&healthy).len(), summary.healthy_nodes);
            let by_role: usize = Role::ALL
                .iter()
                .map(|role| cluster.filter(&Filter { role: Some(*role), state: None }).len())
                .sum();
            prop_assert_eq!(by_role, summary.node_count);
        }
    }
}
