//! Recovery at open: verify every segment, keep the longest valid prefix of the log, and repair
//! the directory so that appends can continue after it.
//!
//! Runs once per [`crate::Wal::open`], before the writer exists. The rules are those of
//! `docs/0001-wal-format.md`, section 7. Hazards: this is the only code besides segment retention
//! that deletes files, and it only deletes segments that hold no entries; anything with bytes we
//! cannot vouch for is renamed aside, never removed. Renames are made durable before the cut
//! segment is truncated (see `repair`).

use std::fs::{self, File, OpenOptions};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use tracing::{debug, error, warn};

use crate::error::{CorruptionKind, WalError};
use crate::format::{FLAG_LSN_JUMP, Opened, SegmentReader, Step};
use crate::lsn::Lsn;
use crate::metrics;
use crate::segment::{ListedSegment, SegmentMeta, list_segments, move_aside, sync_dir, sync_file};
use crate::settings::SyncMode;

/// Read buffer for scanning segments; large enough that checksumming is the bottleneck.
const SCAN_BUFFER_BYTES: usize = 256 * 1024;

/// What [`crate::Wal::open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments kept (the fresh segment opened for appends is not counted).
    pub segments: usize,
    /// Entries kept.
    pub entries: u64,
    /// LSN of the oldest kept entry.
    pub first_lsn: Option<Lsn>,
    /// LSN of the newest kept entry.
    pub last_lsn: Option<Lsn>,
    /// Where the log was cut, if a torn or corrupt entry was found.
    pub truncated: Option<TruncationInfo>,
}

/// Where recovery cut the log and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncationInfo {
    /// The segment where the valid log ends.
    pub file: PathBuf,
    /// Byte offset the segment was truncated at; `0` when the whole segment was moved aside
    /// (its header was torn or bad, or it did not continue the previous segment).
    pub offset: u64,
    /// What was wrong at that offset.
    pub reason: CorruptionKind,
    /// Segments renamed to `*.corrupt`, with their new paths.
    pub moved_aside: Vec<PathBuf>,
}

/// The log as recovery left it.
pub(crate) struct Recovered {
    /// Kept segments, oldest first; all sealed, and the newest holds at least one entry.
    pub(crate) segments: Vec<SegmentMeta>,
    pub(crate) report: RecoveryReport,
}

/// The first defect found by `scan`.
struct Cut {
    /// Index into the listed segments.
    index: usize,
    /// Offset of the bad entry, or 0 when the whole segment is unusable.
    offset: u64,
    kind: CorruptionKind,
}

/// Recovers the WAL in `dir` (see the module docs). Kept segments are synced per `sync_mode`,
/// since a previous process may have crashed before its last fsync.
///
/// # Errors
/// `Io` on any filesystem failure, `UnsupportedFormat` if a segment is from a newer format. In
/// both cases nothing was modified unless the failure happened during repair.
pub(crate) fn recover(dir: &Path, sync_mode: SyncMode) -> Result<Recovered, WalError> {
    let listed = list_segments(dir)?;
    let (mut kept, cut) = scan(&listed)?;
    let truncated = match cut {
        Some(cut) => Some(repair(dir, &listed, cut)?),
        None => None,
    };
    remove_empty_tail(dir, &mut kept)?;

    if sync_mode != SyncMode::Async {
        for segment in &kept {
            File::open(&segment.path)
                .and_then(|file| sync_file(&file, sync_mode))
                .map_err(WalError::io_at(&segment.path))?;
        }
    }

    let entries = kept
        .iter()
        .filter_map(|segment| {
            let last = segment.last_lsn?;
            // The reader enforces `first_lsn <= last < u64::MAX`.
            Some(last.0.saturating_sub(segment.first_lsn.0) + 1)
        })
        .sum();
    let report = RecoveryReport {
        segments: kept.len(),
        entries,
        first_lsn: kept
            .iter()
            .find(|segment| segment.last_lsn.is_some())
            .map(|segment| segment.first_lsn),
        last_lsn: kept.last().and_then(|segment| segment.last_lsn),
        truncated,
    };
    Ok(Recovered {
        segments: kept,
        report,
    })
}

/// Verifies segments in order and returns the valid ones, up to and including the segment with
/// the first entry-level defect (with its size cut at the defect), plus that defect. Reads only.
fn scan(listed: &[ListedSegment]) -> Result<(Vec<SegmentMeta>, Option<Cut>), WalError> {
    let mut kept = Vec::with_capacity(listed.len());
    // The LSN the next segment must start at; `None` before the first segment, which may start
    // anywhere (older segments are deleted once the catalog covers them).
    let mut expected_first: Option<Lsn> = None;
    for (index, listed_segment) in listed.iter().enumerate() {
        let path = &listed_segment.path;
        let file = File::open(path).map_err(WalError::io_at(path))?;
        let len = file.metadata().map_err(WalError::io_at(path))?.len();
        let source = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
        let opened = SegmentReader::open(source, len, listed_segment.first_lsn)
            .map_err(WalError::io_at(path))?;
        let mut reader = match opened {
            Opened::Ready(reader) => reader,
            Opened::Defect(kind) => {
                let cut = Cut {
                    index,
                    offset: 0,
                    kind,
                };
                return Ok((kept, Some(cut)));
            }
            Opened::Unsupported { version, flags } => {
                return Err(WalError::UnsupportedFormat {
                    path: path.clone(),
                    version,
                    flags,
                });
            }
        };

        let first_lsn = reader.header().first_lsn;
        if let Some(expected) = expected_first {
            let declared_jump = reader.header().flags & FLAG_LSN_JUMP != 0 && first_lsn > expected;
            if first_lsn != expected && !declared_jump {
                let kind = CorruptionKind::LsnGap {
                    expected,
                    found: first_lsn,
                };
                let cut = Cut {
                    index,
                    offset: 0,
                    kind,
                };
                return Ok((kept, Some(cut)));
            }
        }

        let mut last_lsn = None;
        let defect = loop {
            match reader.next_entry(None).map_err(WalError::io_at(path))? {
                Step::Entry(entry) => last_lsn = Some(entry.lsn),
                Step::Verified { lsn } => last_lsn = Some(lsn),
                Step::End => break None,
                Step::Defect(kind) => break Some(kind),
            }
        };
        kept.push(SegmentMeta {
            first_lsn,
            last_lsn,
            path: path.clone(),
            size_bytes: reader.offset(),
        });
        if let Some(kind) = defect {
            let cut = Cut {
                index,
                offset: reader.offset(),
                kind,
            };
            return Ok((kept, Some(cut)));
        }
        expected_first = Some(last_lsn.map_or(first_lsn, Lsn::saturating_next));
    }
    Ok((kept, None))
}

/// Applies a cut: moves every later segment aside (and the cut segment itself if it is unusable
/// as a whole), syncs the directory, then truncates the cut segment at the bad entry.
///
/// The renames are durable before the truncation: otherwise a crash in between could leave a
/// later segment with `LSN_JUMP` directly behind the shortened one, and the next recovery would
/// accept it and skip the entries lost in the cut.
fn repair(dir: &Path, listed: &[ListedSegment], cut: Cut) -> Result<TruncationInfo, WalError> {
    let cut_path = &listed[cut.index].path;
    let whole_segment = cut.offset == 0;
    let first_moved = if whole_segment {
        cut.index
    } else {
        cut.index + 1
    };
    let mut moved_aside = Vec::with_capacity(listed.len() - first_moved);
    for segment in &listed[first_moved..] {
        moved_aside.push(move_aside(&segment.path)?);
    }
    if !moved_aside.is_empty() {
        sync_dir(dir)?;
    }
    if !whole_segment {
        OpenOptions::new()
            .write(true)
            .open(cut_path)
            .and_then(|file| {
                file.set_len(cut.offset)?;
                file.sync_all()
            })
            .map_err(WalError::io_at(cut_path))?;
    }

    metrics::record_recovery_truncation();
    let is_last_segment = cut.index + 1 == listed.len();
    if cut.kind.is_torn() && is_last_segment {
        // What a crash mid-write leaves behind: expected, but worth a line.
        warn!(
            file = %cut_path.display(),
            offset = cut.offset,
            reason = %cut.kind,
            "wal recovery truncated a torn tail"
        );
    } else {
        error!(
            file = %cut_path.display(),
            offset = cut.offset,
            reason = %cut.kind,
            moved_aside = moved_aside.len(),
            "wal recovery cut the log at a corrupt entry"
        );
    }
    Ok(TruncationInfo {
        file: cut_path.clone(),
        offset: cut.offset,
        reason: cut.kind,
        moved_aside,
    })
}

/// Deletes kept segments at the tail that hold no entries (a crash right after a segment was
/// created, or a cut at a segment's first entry). They contain nothing, and the fresh segment
/// opened for appends may need their name.
fn remove_empty_tail(dir: &Path, kept: &mut Vec<SegmentMeta>) -> Result<(), WalError> {
    let mut removed = 0usize;
    while let Some(segment) = kept.last() {
        if segment.last_lsn.is_some() {
            break;
        }
        fs::remove_file(&segment.path).map_err(WalError::io_at(&segment.path))?;
        debug!(file = %segment.path.display(), "removed empty wal segment");
        kept.pop();
        removed += 1;
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(())
}
