//! Metric names and the helpers that record them. Label values are bounded: `reason` only takes
//! the values of [`crate::frame::RejectReason::as_label`].

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
