//! [`ReplicationError`]: what can go wrong on a replication connection, named for what callers
//! branch on: `Invalid` (fix the settings), `Refused` (the peer said no: back off and retry, or
//! step down), `Unauthenticated` (a peer failed authentication), `Protocol` (the peer broke the
//! protocol), and the transport failures (`Connect`, `Connection`, `Silent`, `Closed`).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::WalError;
use crate::replication::frame::{FrameError, FrameKind};

/// Errors of the replication transport. Every message names the peer, file or frame it is
/// about.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The settings cannot work.
    #[error("invalid replication settings: {0}")]
    Invalid(String),
    /// Building the TLS configuration failed.
    #[error("replication tls setup failed ({what}): {message}")]
    Tls {
        /// The step that failed.
        what: &'static str,
        /// The underlying error.
        message: String,
    },
    /// A certificate, key or CA file cannot be read or parsed.
    #[error("replication tls file {} unusable: {message}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Binding the listening endpoint failed.
    #[error("replication cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the primary failed (including a TLS handshake it rejected).
    #[error("replication connection to {peer} failed: {message}")]
    Connect {
        /// The primary's address.
        peer: SocketAddr,
        /// The underlying error.
        message: String,
    },
    /// An established connection failed.
    #[error("replication connection with {peer} lost")]
    Connection {
        /// The peer's address.
        peer: SocketAddr,
        /// The underlying error.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The peer failed authentication (no or a wrong proof).
    #[error("replication peer {peer} failed authentication: {reason}")]
    Unauthenticated {
        /// The peer's address.
        peer: SocketAddr,
        /// What was wrong.
        reason: &'static str,
    },
    /// The peer sent bytes that are not a valid frame.
    #[error("replication peer {peer} sent an invalid frame")]
    Frame {
        /// The peer's address.
        peer: SocketAddr,
        /// What was wrong.
        #[source]
        source: FrameError,
    },
    /// The peer sent a valid frame out of place.
    #[error("replication peer {peer} sent an unexpected {kind} frame: {expected}")]
    Protocol {
        /// The peer's address.
        peer: SocketAddr,
        /// The frame's kind.
        kind: FrameKind,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The primary refused the subscription.
    #[error("replication primary {peer} refused: {reason}")]
    Refused {
        /// The primary's address.
        peer: SocketAddr,
        /// Its reason.
        reason: String,
    },
    /// Nothing was heard from the peer within the silence timeout.
    #[error("replication peer {peer} silent for {silent_ms} ms")]
    Silent {
        /// The peer's address.
        peer: SocketAddr,
        /// How long.
        silent_ms: u64,
    },
    /// The stream ended (the peer closed it, or this side shut down).
    #[error("replication stream with {peer} closed")]
    Closed {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// Entries a follower needs are no longer kept (retention deleted them after it
    /// subscribed); it must resubscribe to learn where the stream starts now.
    #[error("replication catch-up for {peer} expected lsn {expected} but the wal has {found:?}")]
    CatchUpGap {
        /// The follower's address.
        peer: SocketAddr,
        /// The LSN needed.
        expected: crate::lsn::Lsn,
        /// The first LSN the WAL had from there, if any.
        found: Option<crate::lsn::Lsn>,
    },
    /// Reading the WAL to serve a follower failed.
    #[error("replication could not read the wal for {peer}")]
    Wal {
        /// The follower's address.
        peer: SocketAddr,
        /// The underlying error.
        #[source]
        source: WalError,
    },
}
