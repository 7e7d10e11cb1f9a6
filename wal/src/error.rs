//! The WAL's error type and the kinds of on-disk damage recovery can meet.
//!
//! [`WalError`] variants are what callers branch on: `Io` (the disk failed; the operation may be
//! retried or the node stopped), `Poisoned` (reopen to recover), `Locked` (another process owns
//! the directory), `UnsupportedFormat` (written by a newer version: do not touch), `CorruptLog`
//! (open found damage with intact entries behind it: an operator must decide), `Corrupt` (found
//! while reading after recovery), and the two caller mistakes `PayloadTooLarge` and
//! `LsnExhausted`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::lsn::{Epoch, Lsn};

/// Errors of the WAL. Every message names the file, offset or LSN it is about.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A filesystem operation failed.
    #[error("wal i/o failed on {}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A segment that recovery accepted no longer verifies while being read (changed on disk
    /// behind our back, or a bug). Recovery itself never returns this (see `CorruptLog`).
    #[error("wal segment {} is corrupt at offset {offset}: {kind}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged header or entry.
        offset: u64,
        /// What is wrong there.
        kind: CorruptionKind,
    },
    /// [`crate::Wal::open`] found damage that is not a torn tail: intact entries follow it (in
    /// the same segment or a later one), so they were written, synced and possibly acknowledged
    /// before the damage happened, and cutting the log there would drop them. Nothing was
    /// modified. Setting [`crate::WalSettings::truncate_corrupt`] opens the log anyway, from the
    /// entries before the damage, after copying every damaged segment aside.
    #[error(
        "wal segment {} is corrupt at offset {offset} ({kind}) and {intact_after} intact entries \
         follow it, so it is not a torn tail; refusing to open the wal, nothing was modified. \
         Copy the wal directory somewhere safe, then set wal.truncate_corrupt = true to start \
         from the entries before the damage (damaged segments are kept as *.corrupt files)",
        path.display()
    )]
    CorruptLog {
        /// The segment holding the first damaged byte range.
        path: PathBuf,
        /// Byte offset of the damaged header (`0`) or entry.
        offset: u64,
        /// What is wrong there.
        kind: CorruptionKind,
        /// Intact entries found after the damage (a lower bound: the search is bounded).
        intact_after: u64,
    },
    /// A segment header with a valid checksum carries a format version or flags this build does
    /// not know: it was written by a newer arc-node. Nothing was modified.
    #[error(
        "wal segment {} has unsupported format version {version} (flags {flags:#x})",
        path.display()
    )]
    UnsupportedFormat {
        /// The segment file.
        path: PathBuf,
        /// The version in its header.
        version: u32,
        /// The flags in its header.
        flags: u32,
    },
    /// Another process (or another `Wal` in this process) holds the directory's lock file.
    #[error("wal directory {} is locked by another owner", dir.display())]
    Locked {
        /// The WAL directory.
        dir: PathBuf,
    },
    /// An earlier write or fsync failed, so the state of the active segment's tail is unknown.
    /// Drop the `Wal` and reopen it; recovery truncates whatever the failure left behind.
    #[error(
        "wal is unusable after a failed write or sync on {}; reopen it to recover",
        path.display()
    )]
    Poisoned {
        /// The segment the failure happened on.
        path: PathBuf,
    },
    /// The payload exceeds [`crate::MAX_PAYLOAD_BYTES`].
    #[error("wal payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Length of the rejected payload.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// [`crate::Wal::append_at`] was given an LSN other than the next one: a gap in (or a
    /// replay of) the stream it copies.
    #[error("wal append at lsn {found} out of order: the next lsn is {expected}")]
    AppendOutOfOrder {
        /// The LSN the log continues with.
        expected: Lsn,
        /// The LSN given.
        found: Lsn,
    },
    /// [`crate::Wal::append_at`] was given an entry of an epoch older than the log's last
    /// entry: it comes from a deposed primary.
    #[error("wal append at lsn {lsn} has epoch {found}, older than the last entry's epoch {last}")]
    EpochRegressed {
        /// The last entry's epoch.
        last: Epoch,
        /// The entry's epoch.
        found: Epoch,
        /// The entry's LSN.
        lsn: Lsn,
    },
    /// The next LSN would be the reserved `u64::MAX`.
    #[error("wal lsn space exhausted at lsn {lsn}")]
    LsnExhausted {
        /// The LSN that cannot be assigned.
        lsn: Lsn,
    },
}

impl WalError {
    /// Returns a closure that wraps an `io::Error` with the path it happened on.
    pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
        move |source| WalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What recovery or a reader found wrong at a position in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptionKind {
    /// The file ends inside the segment header: a crash while the segment was being created.
    TornHeader,
    /// The segment header has a wrong magic or checksum, or a first LSN other than its name's.
    BadHeader,
    /// The segment does not continue the previous one (a segment in between is missing).
    LsnGap {
        /// The LSN the segment had to start at.
        expected: Lsn,
        /// The LSN it starts at.
        found: Lsn,
    },
    /// The file ends inside an entry: a crash in the middle of a write.
    TornEntry,
    /// An entry's length field exceeds [`crate::MAX_PAYLOAD_BYTES`].
    OversizedEntry {
        /// The length field as read.
        len: u32,
    },
    /// An entry's checksum does not match its bytes.
    ChecksumMismatch,
    /// An intact entry is out of sequence.
    LsnMismatch {
        /// The LSN the entry had to have.
        expected: Lsn,
        /// The LSN it has.
        found: Lsn,
    },
}

impl CorruptionKind {
    /// Returns true for the damage a crash mid-write leaves behind (the file simply ends early),
    /// as opposed to bytes that are present but wrong.
    pub fn is_torn(self) -> bool {
        matches!(self, CorruptionKind::TornHeader | CorruptionKind::TornEntry)
    }
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::TornHeader => f.write_str("torn segment header"),
            CorruptionKind::BadHeader => f.write_str("bad segment header"),
            CorruptionKind::LsnGap { expected, found } => {
                write!(f, "segment starts at lsn {found}, expected {expected}")
            }
            CorruptionKind::TornEntry => f.write_str("torn entry"),
            CorruptionKind::OversizedEntry { len } => {
                write!(f, "entry length {len} exceeds the limit")
            }
            CorruptionKind::ChecksumMismatch => f.write_str("entry checksum mismatch"),
            CorruptionKind::LsnMismatch { expected, found } => {
                write!(f, "entry has lsn {found}, expected {expected}")
            }
        }
    }
}
