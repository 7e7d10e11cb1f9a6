//! Authenticated gossip transport for chitchat 0.13 (issue 4, item 2; DESIGN.md section 6).
//!
//! chitchat has no authentication, and scuttlebutt lets any peer relay or forge any node's
//! state. Every gossip datagram therefore carries an HMAC-SHA256 keyed by the cluster's shared
//! secret and name, a timestamp and a nonce, and is dropped before chitchat parses a byte unless
//! it verifies, is fresh, and was not seen before.
//!
//! # Layout
//!
//! - `frame`: the datagram format, key derivation and replay cache; pure, no I/O.
//! - `transport`: [`AuthenticatedUdpTransport`], the chitchat `Transport` doing the I/O.
//! - `metrics`: metric names (`arc_gossip_*`).

pub mod frame;
mod metrics;
mod transport;

pub use frame::{FrameKey, RejectReason};
pub use transport::{AuthenticatedUdpSocket, AuthenticatedUdpTransport, Error, GossipAuthSettings};
