//! Segmented, CRC-checked write-ahead log with group commit for arc-node.
//!
//! The WAL is synchronous (blocking file I/O) and has exactly one owner, the node's WAL writer thread.
//! That thread does group commit: it [`Wal::append`]s the entries of many requests, calls
//! [`Wal::sync`] once, and acknowledges every request whose LSN is at most
//! [`Wal::durable_lsn`]. Once the catalog records a flush up to some LSN, the writer calls
//! [`Wal::remove_segments_below`] to free the segments it covers.
//!
//! On start, [`Wal::open`] recovers the directory: it verifies every entry, cuts a torn tail
//! (renaming later segments aside, never deleting them), refuses to open a log with damage that
//! has intact entries behind it ([`WalError::CorruptLog`], unless the operator sets
//! [`WalSettings::truncate_corrupt`]), and reports what it kept; the caller then replays
//! [`Wal::read_from`] the catalog's flushed LSN + 1. The on-disk format and the recovery rules
//! are specified in `docs/0001-wal-format.md`.
//!
//! All file I/O goes through [`WalFs`] ([`StdFs`] by default); [`Wal::open_with_fs`] takes
//! another, such as the power-cut simulation `testing::SimFs`.
//!
//! # Layout
//! - `lsn.rs`: [`Lsn`] and [`Epoch`], the position and writer-epoch newtypes.
//! - `settings.rs`: [`WalSettings`] and [`SyncMode`], what an operator tunes.
//! - `error.rs`: [`WalError`] and [`CorruptionKind`].
//! - `format.rs`: the bytes on disk (segment names, header, entry frames) and the verifying
//!   segment reader; [`Entry`] and [`MAX_PAYLOAD_BYTES`].
//! - `fs.rs`: [`WalFs`] and [`WalFile`], the file I/O seam, and [`StdFs`], the real filesystem.
//! - `segment.rs`: segment files as filesystem objects: listing, creating, syncing, moving and
//!   copying aside, the directory lock.
//! - `recovery.rs`: the scan and repair done by `open`; [`RecoveryReport`], [`TruncationInfo`].
//! - `wal.rs`: [`Wal`], the writer's handle (append, sync, rotation, retention).
//! - `reader.rs`: [`Entries`], the iterator behind `read_from`.
//! - `dir_reader.rs`: [`WalReader`], a lock-free, read-only reader of a WAL directory another
//!   handle is appending to (replication catch-up), and its per-segment [`SegmentScan`] for
//!   inspection tools (`arc-node wal dump`).
//! - `replication/`: [`replication`], streaming the WAL to standbys and readers over QUIC: the
//!   frame codec, the pure primary and follower state machines, and the quinn shell
//!   (`docs/0006-replication.md`).
//! - `metrics.rs`: metric names and [`describe_metrics`].
//! - `testing.rs` (tests and the `testsuite` feature): `SimFs`, an in-memory [`WalFs`] that
//!   loses everything not synced on a simulated power cut.
//!
//! # Error semantics
//! Recovery cuts a torn tail silently (it says so in the [`RecoveryReport`]). Damage followed by
//! intact entries fails the open with [`WalError::CorruptLog`], naming the segment and offset,
//! and changes nothing; with [`WalSettings::truncate_corrupt`] it is cut like a torn tail, after
//! the damaged bytes are copied aside. A failed write or fsync poisons the handle
//! ([`WalError::Poisoned`]): drop it and reopen.

mod dir_reader;
mod error;
mod format;
mod fs;
mod lsn;
mod metrics;
mod reader;
mod recovery;
pub mod replication;
mod segment;
mod settings;
#[cfg(test)]
mod test_support;
#[cfg(any(test, feature = "testsuite"))]
pub mod testing;
mod wal;

pub use crate::dir_reader::{DirEntries, SegmentEnd, SegmentFile, SegmentScan, WalReader};
pub use crate::error::{CorruptionKind, WalError};
pub use crate::format::{Entry, MAX_PAYLOAD_BYTES};
pub use crate::fs::{StdFs, WalDirEntry, WalDirLock, WalFile, WalFs};
pub use crate::lsn::{Epoch, Lsn};
pub use crate::metrics::{
    APPEND_BYTES_TOTAL, APPENDS_TOTAL, FSYNC_SECONDS, RECOVERY_TRUNCATIONS_TOTAL, SEGMENTS,
    describe_metrics,
};
pub use crate::reader::Entries;
pub use crate::recovery::{RecoveryReport, TruncationInfo};
pub use crate::segment::{WalSummary, inspect};
pub use crate::settings::{DEFAULT_SEGMENT_SIZE_BYTES, ParseSyncModeError, SyncMode, WalSettings};
pub use crate::wal::{DetachedSegments, Wal};
