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
//!
//! # The ISR invariant
//! Nothing is acknowledged that a member of the committed in-sync set lacks; a member leaves
//! the set only through a committed catalog record, and acknowledgements wait while its removal
//! is proposed. [`PrimaryState`] enforces it; its property tests check it under random
//! interleavings.

mod follower;
mod frame;
mod primary;
#[cfg(test)]
mod primary_tests;

pub use self::follower::{FollowerAction, FollowerPhase, FollowerState, ResubscribeReason};
pub use self::frame::{
    FRAME_HEADER_LEN, FRAME_VERSION, FlushNotice, FollowerRole, Frame, FrameError, FrameHeader,
    FrameKind, MAX_FLUSH_TABLES, MAX_NODE_ID_BYTES, MAX_REASON_BYTES, MAX_TABLE_NAME_BYTES,
    PROOF_LEN, Subscribe, encode_entry_header,
};
pub use self::primary::{
    CutReason, FollowerView, IsrChange, PrimaryAction, PrimaryConfig, PrimaryState, RemovalReason,
};
