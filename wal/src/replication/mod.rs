//! Replication: the primary streams its WAL to standbys (which keep a durable copy and count
//! towards acknowledgements while in sync) and to readers (which serve fresh rows), over QUIC.
//!
//! The protocol logic is pure and separate from I/O, as quinn-proto is from quinn: the state
//! machines take inputs (frames, acks, the time) and return actions, and the transport is a
//! thin shell that carries them out. The design is `docs/0006-replication.md`.
//!
//! # Layout
//! - `frame.rs`: the wire format ([`Frame`], [`FrameHeader`], [`FrameError`]).
//! - `primary.rs`: [`PrimaryState`]: what to send, what to acknowledge, when the ISR changes.
//! - `follower.rs`: [`FollowerState`]: what to accept, append, apply and ack.
//! - `auth.rs`: TLS configurations (mTLS, or a generated certificate plus a proof of the
//!   shared secret bound to the session) and [`SharedSecret`].
//! - `settings.rs`: [`ReplicationSettings`]. `error.rs`: [`ReplicationError`].
//! - `transport.rs`: quinn endpoints, the proof exchange, refused-peer counting, metric names.
//! - `io.rs`: frames over quinn streams.
//! - `server.rs`: [`ReplicationServer`] (the primary's shell) and [`ReplicationHandle`].
//! - `client.rs`: [`ReplicationClient`] (a follower's shell).
//! - `testkit.rs` (`testsuite` feature): raw connections for attack tests.
//!
//! # The ISR invariant
//! Nothing is acknowledged that a member of the committed in-sync set lacks; a member leaves
//! the set only through a committed catalog record, and acknowledgements wait while its removal
//! is proposed. [`PrimaryState`] enforces it; its property tests check it under random
//! interleavings.

mod auth;
mod client;
mod error;
mod follower;
mod frame;
mod io;
mod primary;
#[cfg(test)]
mod primary_tests;
mod server;
mod settings;
#[cfg(any(test, feature = "testsuite"))]
pub mod testkit;
mod transport;

pub use self::auth::{ProofDirection, SharedSecret};
pub use self::client::ReplicationClient;
pub use self::error::ReplicationError;
pub use self::follower::{FollowerAction, FollowerPhase, FollowerState, ResubscribeReason};
pub use self::frame::{
    FRAME_HEADER_LEN, FRAME_VERSION, FlushNotice, FollowerRole, Frame, FrameError, FrameHeader,
    FrameKind, MAX_FLUSH_TABLES, MAX_NODE_ID_BYTES, MAX_REASON_BYTES, MAX_TABLE_NAME_BYTES,
    PROOF_LEN, Subscribe, encode_entry_header,
};
pub use self::primary::{
    CutReason, FollowerView, IsrChange, PrimaryAction, PrimaryConfig, PrimaryState, RemovalReason,
};
pub use self::server::{
    EntrySource, FollowerStatus, IsrProposal, PrimaryStart, ReplicationHandle, ReplicationServer,
    ReplicationStatus,
};
pub use self::settings::ReplicationSettings;
pub use self::transport::{
    CUT_TOTAL, REJECTED_TOTAL, RejectReason, SENT_BYTES_TOTAL, SENT_ENTRIES_TOTAL, describe_metrics,
};
