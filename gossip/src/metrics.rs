//! Metric names and the helpers that record them. Label values are bounded: `reason` only takes
//! the values of [`crate::frame::RejectReason::as_label`]; `role` and `state` the lowercase
//! names of [`crate::Role`] and [`crate::NodeState`]; `peer` the node ids of the cluster.
//!
//! Hazard: the `peer` series of a node that left the view keeps its last value until the
//! exporter drops idle series.

use metrics::Unit;

/// Datagrams dropped before chitchat saw them, by `reason`.
pub(crate) const REJECTED_PACKETS_TOTAL: &str = "arc_gossip_rejected_packets_total";
/// Authenticated datagrams received and handed to chitchat.
pub(crate) const RECEIVED_PACKETS_TOTAL: &str = "arc_gossip_received_packets_total";
/// Bytes on the wire of the datagrams counted by `arc_gossip_received_packets_total`.
pub(crate) const RECEIVED_BYTES_TOTAL: &str = "arc_gossip_received_bytes_total";
/// Authenticated datagrams sent.
pub(crate) const SENT_PACKETS_TOTAL: &str = "arc_gossip_sent_packets_total";
/// Bytes on the wire of the datagrams counted by `arc_gossip_sent_packets_total`.
pub(crate) const SENT_BYTES_TOTAL: &str = "arc_gossip_sent_bytes_total";
/// Outgoing messages refused because they would not fit in one datagram once sealed.
pub(crate) const SEND_OVERSIZE_TOTAL: &str = "arc_gossip_send_oversize_total";

/// Nodes in the local view, by `role` and `state` (every combination, zeros included).
pub(crate) const CLUSTER_NODES: &str = "arc_cluster_nodes";
/// Seconds since the heartbeat of `peer` last advanced, as seen by this node.
pub(crate) const CLUSTER_PEER_HEARTBEAT_AGE_SECONDS: &str =
    "arc_cluster_peer_heartbeat_age_seconds";
/// This node's gossip generation.
pub(crate) const CLUSTER_GENERATION: &str = "arc_cluster_generation";

/// Describes every `arc_gossip_*` and `arc_cluster_*` metric this crate records. Call once,
/// after installing the recorder.
pub fn describe_metrics() {
    let counters = [
        (
            REJECTED_PACKETS_TOTAL,
            Unit::Count,
            "Gossip datagrams dropped before chitchat saw them, by reason.",
        ),
        (
            RECEIVED_PACKETS_TOTAL,
            Unit::Count,
            "Authenticated gossip datagrams received.",
        ),
        (
            RECEIVED_BYTES_TOTAL,
            Unit::Bytes,
            "Bytes of the authenticated gossip datagrams received.",
        ),
        (
            SENT_PACKETS_TOTAL,
            Unit::Count,
            "Authenticated gossip datagrams sent.",
        ),
        (
            SENT_BYTES_TOTAL,
            Unit::Bytes,
            "Bytes of the authenticated gossip datagrams sent.",
        ),
        (
            SEND_OVERSIZE_TOTAL,
            Unit::Count,
            "Gossip messages not sent because they would not fit in one datagram once sealed.",
        ),
    ];
    for (name, unit, description) in counters {
        metrics::describe_counter!(name, unit, description);
    }
    metrics::describe_gauge!(
        CLUSTER_NODES,
        Unit::Count,
        "Nodes in this node's cluster view, by role and state."
    );
    metrics::describe_gauge!(
        CLUSTER_PEER_HEARTBEAT_AGE_SECONDS,
        Unit::Seconds,
        "Seconds since the gossip heartbeat of a peer last advanced, as seen by this node."
    );
    metrics::describe_gauge!(
        CLUSTER_GENERATION,
        "This node's gossip generation (strictly increasing per start)."
    );
}

pub(crate) fn count_rejected(reason: &'static str) {
    metrics::counter!(REJECTED_PACKETS_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn count_received(num_bytes: usize) {
    metrics::counter!(RECEIVED_PACKETS_TOTAL).increment(1);
    metrics::counter!(RECEIVED_BYTES_TOTAL).increment(num_bytes as u64);
}

pub(crate) fn count_sent(num_bytes: usize) {
    metrics::counter!(SENT_PACKETS_TOTAL).increment(1);
    metrics::counter!(SENT_BYTES_TOTAL).increment(num_bytes as u64);
}

pub(crate) fn count_send_oversize() {
    metrics::counter!(SEND_OVERSIZE_TOTAL).increment(1);
}
