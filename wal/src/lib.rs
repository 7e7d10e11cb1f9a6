//! Segmented, CRC-checked write-ahead log with group commit for arc-node.
//!
//! The WAL is synchronous (`std::fs`) and has exactly one owner, the node's WAL writer thread.
//! That thread does group commit: it [`Wal::append`]s the entries of many requests, calls
//! [`Wal::sync`] once, and acknowledges every request whose LSN is at most
//! [`Wal::durable_lsn`]. Once the catalog records a flush up to some LSN, the writer calls
//! [`Wal::remove_segments_below`] to free the segments it covers.
//!
//! On start, [`Wal::open`] recovers the directory: it verifies every entry, cuts the log at the
//! first torn or corrupt one (renaming later segments aside, never deleting them), and reports
//! what it kept; the caller then replays [`Wal::read_from`] the catalog's flushed LSN + 1. The
//! on-disk format and the recovery rules are specified in `docs/0001-wal-format.md`.
//!
//! # Layout
//! - `lsn.rs`: [`Lsn`] and [`Epoch`], the position and writer-epoch newtypes.
//! - `settings.rs`: [`WalSettings`] and [`SyncMode`], what an operator tunes.
//! - `error.rs`: [`WalError`] and [`CorruptionKind`].
//! - `format.rs`: the bytes on disk (segment names, header, entry frames) and the verifying
//!   segment reader; [`Entry`] and [`MAX_PAYLOAD_BYTES`].
//! - `segment.rs`: segment files as filesystem objects: listing, creating, syncing, moving aside,
//!   the directory lock.
//! - `recovery.rs`: the scan and repair done by `open`; [`RecoveryReport`], [`TruncationInfo`].
//! - `wal.rs`: [`Wal`], the writer's handle (append, sync, rotation, retention).
//! - `reader.rs`: [`Entries`], the iterator behind `read_from`.
//! - `metrics.rs`: metric names and [`describe_metrics`].
//!
//! # Error semantics
//! Recovery never fails on damaged bytes; it cuts the log and says so in the [`RecoveryReport`].
//! A failed write or fsync poisons the handle ([`WalError::Poisoned`]): drop it and reopen.

mod error;
mod format;
mod lsn;
mod metrics;
mod reader;
mod recovery;
mod segment;
mod settings;
mod wal;

pub use crate::error::{CorruptionKind, WalError};
pub use crate::format::{Entry, MAX_PAYLOAD_BYTES};
pub use crate::lsn::{Epoch, Lsn};
pub use crate::metrics::{
    APPEND_BYTES_TOTAL, APPENDS_TOTAL, FSYNC_SECONDS, RECOVERY_TRUNCATIONS_TOTAL, SEGMENTS,
    describe_metrics,
};
pub use crate::reader::Entries;
pub use crate::recovery::{RecoveryReport, TruncationInfo};
pub use crate::settings::{DEFAULT_SEGMENT_SIZE_BYTES, ParseSyncModeError, SyncMode, WalSettings};
pub use crate::wal::Wal;
