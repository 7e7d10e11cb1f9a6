//! Cluster membership for arc-node (issue 4; DESIGN.md section 6): chitchat 0.13 gossip over
//! authenticated datagrams, the merged cluster view, and the deterministic standby ranking.
//!
//! chitchat has no authentication, and scuttlebutt lets any peer relay or forge any node's
//! state. Every gossip datagram therefore carries an HMAC-SHA256 keyed by the cluster's shared
//! secret and name, a timestamp and a nonce, and is dropped before chitchat parses a byte unless
//! it verifies, is fresh, and was not seen before. Only key holders can put a node in the view.
//!
//! # Layout
//!
//! - `view`: [`NodeInfo`] and its gossip keys, [`merge_generations`], [`ClusterView`] and its
//!   filters; pure.
//! - `ranking`: [`rank_standbys`], the failover order; pure.
//! - `membership`: [`Membership`], the I/O: chitchat, the owner task, [`next_generation`].
//! - `frame`: the datagram format, key derivation and replay cache; pure, no I/O.
//! - `transport`: [`AuthenticatedUdpTransport`], the chitchat `Transport` doing the I/O.
//! - `metrics`: metric names (`arc_gossip_*`, `arc_cluster_*`) and [`describe_metrics`].

#![warn(missing_docs)]

mod failover;
pub mod frame;
pub mod membership;
mod metrics;
pub mod ranking;
mod transport;
pub mod view;

pub use failover::{
    CatalogView, Failover, FailoverAction, FailoverInput, FailoverReason, FailoverSettings,
    heard_by_others, witnesses,
};
pub use frame::{FrameKey, RejectReason};
pub use membership::{
    Membership, MembershipError, MembershipSettings, detection_bound, failure_detector_config,
    leave_linger, next_generation, poll_interval,
};
pub use metrics::describe_metrics;
pub use ranking::{Candidate, compare, rank_healthy_standbys, rank_of, rank_standbys};
pub use transport::{AuthenticatedUdpSocket, AuthenticatedUdpTransport, Error, GossipAuthSettings};
pub use view::{
    ClusterView, Filter, FilterError, Health, HealthStatus, MAX_HEALTH_SCORE, NodeInfo, NodeState,
    NodeView, Observed, ParseEnumError, Phase, Role, RoleCounts, Summary, ViewError, derive_state,
    keys, merge_generations,
};
