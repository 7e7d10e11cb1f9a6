//! Recovery at open: verify every segment, keep the longest valid prefix of the log, and repair
//! the directory so that appends can continue after it, but only when what is cut off is a torn
//! tail. Damage with intact entries behind it is refused unless the operator overrides.
//!
//! Runs once per [`crate::Wal::open`], before the writer exists. The rules are those of
//! `docs/0001-wal-format.md`, section 7. Recovery reads everything before it changes anything:
//! `scan` finds the first defect, `assess` looks for intact entries after it, and only then does
//! `repair` touch the directory (or `recover` refuses with [`WalError::CorruptLog`], having
//! modified nothing).
//!
//! Hazards: this is the only code besides segment retention that deletes files, and it only
//! deletes segments that hold no entries; anything with bytes we cannot vouch for is renamed
//! aside, and a segment it truncates on the operator's override is first copied aside, so
//! damaged bytes are never destroyed. Renames and copies are made durable before the cut segment
//! is truncated (see `repair`).

use std::io::BufReader;
use std::path::{Path, PathBuf};

use tracing::{debug, error, warn};

use crate::error::{CorruptionKind, WalError};
use crate::format::{
    ENTRY_HEADER_LEN, FLAG_LSN_JUMP, FrameScan, Opened, SegmentReader, Step, find_intact_frames,
};
use crate::fs::WalFs;
use crate::lsn::Lsn;
use crate::metrics;
use crate::segment::{
    ListedSegment, SegmentMeta, copy_aside, list_segments, move_aside, sync_dir, sync_file,
};
use crate::settings::SyncMode;

/// Read buffer for scanning segments; large enough that checksumming is the bottleneck.
const SCAN_BUFFER_BYTES: usize = 256 * 1024;
/// Payload bytes `assess` may checksum per scanned byte (plus [`ASSESS_BUDGET_BASE_BYTES`] per
/// segment) while looking for intact frames. Real frames cost one byte per byte; the slack is for
/// plausible-looking candidates inside payloads.
const ASSESS_BUDGET_FACTOR: u64 = 8;
/// Fixed part of the per-segment checksumming budget of `assess`.
const ASSESS_BUDGET_BASE_BYTES: u64 = 16 * 1024 * 1024;

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
    /// Where the log was cut: at a torn tail, or at corruption the operator chose to drop
    /// ([`crate::WalSettings::truncate_corrupt`]).
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
    /// Byte-for-byte copies of the truncated segment, made (and synced) before it was truncated.
    /// Only made when corruption was overridden; a torn tail is truncated without a copy.
    pub copied_aside: Vec<PathBuf>,
    /// True when the damage was not a torn tail (intact entries followed it) and the log was cut
    /// only because [`crate::WalSettings::truncate_corrupt`] was set: acknowledged entries may
    /// have been dropped.
    pub corruption_overridden: bool,
    /// Intact entries found after the defect, all dropped by the cut (`0` for a torn tail).
    pub dropped_entries: u64,
    /// Bytes the cut removed from the log: the truncated segment past `offset` plus every
    /// segment moved aside (they still exist in the `*.corrupt` files).
    pub dropped_bytes: u64,
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
    /// The LSN the log had to continue with at the defect.
    expected_lsn: Lsn,
}

/// What lies behind a defect, found by `assess` without modifying anything.
struct Damage {
    /// Intact entry frames after the defect (a lower bound if `incomplete`).
    intact_after: u64,
    /// Set when the search for intact frames ran out of budget, so it proved nothing.
    incomplete: bool,
    /// Bytes a cut at the defect removes from the log.
    dropped_bytes: u64,
}

impl Damage {
    /// Returns true if nothing acknowledged can be behind the defect: no intact entry follows it
    /// anywhere in the log. Group commit writes a batch and then syncs it, and acknowledges
    /// nothing before the sync returns, so a crash can only tear the end of the last write: what
    /// follows a torn entry is never an intact entry.
    fn is_torn_tail(&self) -> bool {
        self.intact_after == 0 && !self.incomplete
    }
}

/// Recovers the WAL in `dir` (see the module docs). Kept segments are synced per `sync_mode`,
/// since a previous process may have crashed before its last fsync.
///
/// # Errors
/// `CorruptLog` if the first defect is not a torn tail and `truncate_corrupt` is false; `Io` on
/// any filesystem failure; `UnsupportedFormat` if a segment is from a newer format. In each case
/// nothing was modified, unless the `Io` failure happened during repair.
pub(crate) fn recover(
    fs: &dyn WalFs,
    dir: &Path,
    sync_mode: SyncMode,
    truncate_corrupt: bool,
) -> Result<Recovered, WalError> {
    let listed = list_segments(fs, dir)?;
    let (mut kept, cut) = scan(fs, &listed)?;
    let truncated = match cut {
        Some(cut) => {
            let damage = assess(fs, &listed, &cut)?;
            if !damage.is_torn_tail() && !truncate_corrupt {
                return Err(WalError::CorruptLog {
                    path: listed[cut.index].path.clone(),
                    offset: cut.offset,
                    kind: cut.kind,
                    intact_after: damage.intact_after,
                });
            }
            Some(repair(fs, dir, &listed, &cut, &damage)?)
        }
        None => None,
    };
    remove_empty_tail(fs, dir, &mut kept)?;

    if sync_mode != SyncMode::Async {
        for segment in &kept {
            fs.open_read(&segment.path)
                .and_then(|file| sync_file(&*file, sync_mode))
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
fn scan(
    fs: &dyn WalFs,
    listed: &[ListedSegment],
) -> Result<(Vec<SegmentMeta>, Option<Cut>), WalError> {
    let mut kept = Vec::with_capacity(listed.len());
    // The LSN the next segment must start at; `None` before the first segment, which may start
    // anywhere (older segments are deleted once the catalog covers them).
    let mut expected_first: Option<Lsn> = None;
    for (index, listed_segment) in listed.iter().enumerate() {
        let path = &listed_segment.path;
        let file = fs.open_read(path).map_err(WalError::io_at(path))?;
        let len = file.size_bytes().map_err(WalError::io_at(path))?;
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
                    expected_lsn: expected_first.unwrap_or(listed_segment.first_lsn),
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
                    expected_lsn: expected,
                };
                return Ok((kept, Some(cut)));
            }
        }

        let mut last_lsn = None;
        let mut last_epoch = None;
        let defect = loop {
            match reader.next_entry(None).map_err(WalError::io_at(path))? {
                Step::Entry(entry) => {
                    last_lsn = Some(entry.lsn);
                    last_epoch = Some(entry.epoch);
                }
                Step::Verified { lsn, epoch } => {
                    last_lsn = Some(lsn);
                    last_epoch = Some(epoch);
                }
                Step::End => break None,
                Step::Defect(kind) => break Some(kind),
            }
        };
        kept.push(SegmentMeta {
            first_lsn,
            last_lsn,
            last_epoch,
            path: path.clone(),
            size_bytes: reader.offset(),
        });
        if let Some(kind) = defect {
            let cut = Cut {
                index,
                offset: reader.offset(),
                kind,
                expected_lsn: reader.expected_lsn(),
            };
            return Ok((kept, Some(cut)));
        }
        expected_first = Some(last_lsn.map_or(first_lsn, Lsn::saturating_next));
    }
    Ok((kept, None))
}

/// Looks for intact entries behind a defect: in the rest of the defective segment and in every
/// later segment, at every byte offset (a damaged length field hides where the next frame
/// starts, and a damaged header hides a whole segment's entries). Reads only.
///
/// A frame counts if its checksum verifies and its LSN could belong there: from the LSN the log
/// had to continue with, up to what the bytes could hold (for a later segment, also from its
/// name's LSN, since it may start after a declared jump).
fn assess(fs: &dyn WalFs, listed: &[ListedSegment], cut: &Cut) -> Result<Damage, WalError> {
    let mut damage = Damage {
        intact_after: 0,
        incomplete: false,
        dropped_bytes: 0,
    };
    let expected = cut.expected_lsn.0;
    for (index, segment) in listed.iter().enumerate().skip(cut.index) {
        let path = &segment.path;
        let mut file = fs.open_read(path).map_err(WalError::io_at(path))?;
        let len = file.size_bytes().map_err(WalError::io_at(path))?;
        let (from, lsns) = if index == cut.index && cut.offset > 0 {
            // The frame at the defect is bad (or, for an LSN mismatch, intact but out of
            // sequence), so the search starts one byte in.
            let from = cut.offset.saturating_add(1).min(len);
            let most_frames = (len - from) / ENTRY_HEADER_LEN + 1;
            (from, expected..=expected.saturating_add(most_frames))
        } else {
            let name = segment.first_lsn.0;
            let most_frames = len / ENTRY_HEADER_LEN + 1;
            let lsns = expected.min(name)..=expected.max(name).saturating_add(most_frames);
            (0, lsns)
        };
        damage.dropped_bytes += len.saturating_sub(if index == cut.index { cut.offset } else { 0 });
        let mut budget = (len - from)
            .saturating_mul(ASSESS_BUDGET_FACTOR)
            .saturating_add(ASSESS_BUDGET_BASE_BYTES);
        let FrameScan {
            frames, incomplete, ..
        } = find_intact_frames(&mut file, from, len, lsns, &mut budget)
            .map_err(WalError::io_at(path))?;
        damage.intact_after += frames;
        damage.incomplete |= incomplete;
    }
    if matches!(cut.kind, CorruptionKind::LsnMismatch { .. }) {
        // The defective frame itself verified: an intact entry in the wrong place is never what
        // a torn write leaves behind.
        damage.intact_after += 1;
    }
    Ok(damage)
}

/// Applies a cut: copies the cut segment aside if the cut destroys acknowledged entries the
/// operator chose to drop, moves every later segment aside (and the cut segment itself if it is
/// unusable as a whole), syncs the directory, then truncates the cut segment at the bad entry.
///
/// Copies and renames are durable before the truncation. A copy must exist before the bytes it
/// preserves are cut off, and a later segment with `LSN_JUMP` left directly behind a shortened
/// one would make the next recovery skip the entries lost in the cut.
fn repair(
    fs: &dyn WalFs,
    dir: &Path,
    listed: &[ListedSegment],
    cut: &Cut,
    damage: &Damage,
) -> Result<TruncationInfo, WalError> {
    let cut_path = &listed[cut.index].path;
    let whole_segment = cut.offset == 0;
    let overridden = !damage.is_torn_tail();
    let mut copied_aside = Vec::new();
    if overridden && !whole_segment {
        copied_aside.push(copy_aside(fs, cut_path)?);
    }
    let first_moved = if whole_segment {
        cut.index
    } else {
        cut.index + 1
    };
    let mut moved_aside = Vec::with_capacity(listed.len() - first_moved);
    for segment in &listed[first_moved..] {
        moved_aside.push(move_aside(fs, &segment.path)?);
    }
    if !moved_aside.is_empty() || !copied_aside.is_empty() {
        sync_dir(fs, dir)?;
    }
    if !whole_segment {
        fs.open_write(cut_path)
            .and_then(|file| {
                file.set_len(cut.offset)?;
                file.sync_all()
            })
            .map_err(WalError::io_at(cut_path))?;
    }

    metrics::record_recovery_truncation();
    if overridden {
        // The operator asked for this, but acknowledged entries are gone: a human must look.
        error!(
            file = %cut_path.display(),
            offset = cut.offset,
            reason = %cut.kind,
            dropped_entries = damage.intact_after,
            dropped_bytes = damage.dropped_bytes,
            moved_aside = moved_aside.len(),
            copied_aside = copied_aside.len(),
            "wal recovery dropped intact entries after corruption because truncate_corrupt is set"
        );
    } else {
        // What a crash mid-write leaves behind: expected, but worth a line.
        warn!(
            file = %cut_path.display(),
            offset = cut.offset,
            reason = %cut.kind,
            moved_aside = moved_aside.len(),
            "wal recovery truncated a torn tail"
        );
    }
    Ok(TruncationInfo {
        file: cut_path.clone(),
        offset: cut.offset,
        reason: cut.kind,
        moved_aside,
        copied_aside,
        corruption_overridden: overridden,
        dropped_entries: damage.intact_after,
        dropped_bytes: damage.dropped_bytes,
    })
}

/// Deletes kept segments at the tail that hold no entries (a crash right after a segment was
/// created, or a cut at a segment's first entry). They contain nothing, and the fresh segment
/// opened for appends may need their name.
fn remove_empty_tail(
    fs: &dyn WalFs,
    dir: &Path,
    kept: &mut Vec<SegmentMeta>,
) -> Result<(), WalError> {
    let mut removed = 0usize;
    while let Some(segment) = kept.last() {
        if segment.last_lsn.is_some() {
            break;
        }
        fs.remove_file(&segment.path)
            .map_err(WalError::io_at(&segment.path))?;
        debug!(file = %segment.path.display(), "removed empty wal segment");
        kept.pop();
        removed += 1;
    }
    if removed > 0 {
        sync_dir(fs, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::format::{Entry, segment_file_name};
    use crate::lsn::Epoch;
    use crate::segment::CORRUPT_SUFFIX;
    use crate::test_support::*;
    use crate::wal::Wal;

    /// Opens `dir` without the override, expecting `CorruptLog`, and returns its fields.
    fn expect_refusal(dir: &Path, segment_size: u64) -> (PathBuf, u64, CorruptionKind, u64) {
        match Wal::open(settings(dir, segment_size), Lsn(1)) {
            Err(WalError::CorruptLog {
                path,
                offset,
                kind,
                intact_after,
            }) => (path, offset, kind, intact_after),
            Err(other) => panic!("expected CorruptLog, got {other}"),
            Ok((_, report)) => panic!("expected CorruptLog, opened with {report:?}"),
        }
    }

    /// Writes a segment image at `path` by hand.
    fn overwrite(path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).expect("write");
    }

    #[test]
    fn test_should_truncate_a_torn_tail_at_every_offset_of_the_last_entry() {
        let pristine = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(pristine.path(), BIG_SEGMENT);
        append_entries(&mut wal, 3, 3);
        drop(wal);
        let [segment] = segment_paths(pristine.path())
            .try_into()
            .expect("one segment");
        let segment_name = segment.file_name().expect("name").to_owned();
        let bytes = fs::read(&segment).expect("read");
        let last_entry = entry_offsets(&segment)[2];

        for cut in last_entry..bytes.len() as u64 {
            let dir = tempfile::tempdir().expect("tempdir");
            let torn = dir.path().join(&segment_name);
            overwrite(&torn, &bytes[..cut as usize]);

            let (mut wal, report) = open(dir.path(), BIG_SEGMENT);
            assert_eq!(read_all(&wal, Lsn(0)), expected(1..=2), "cut at {cut}");
            if cut == last_entry {
                assert_eq!(report.truncated, None, "a clean end is not a tear");
            } else {
                let truncated = report.truncated.expect("torn tail reported");
                assert_eq!(truncated.file, torn);
                assert_eq!(truncated.offset, last_entry);
                assert_eq!(truncated.reason, CorruptionKind::TornEntry);
                assert!(truncated.moved_aside.is_empty());
                assert!(truncated.copied_aside.is_empty());
                assert!(!truncated.corruption_overridden);
                assert_eq!(truncated.dropped_entries, 0);
                assert_eq!(truncated.dropped_bytes, cut - last_entry);
                assert_eq!(fs::metadata(&torn).expect("metadata").len(), last_entry);
            }
            assert_eq!(wal.next_lsn(), Lsn(3));
            assert_eq!(wal.append(EPOCH, &payload_for(3)).expect("append"), Lsn(3));
            wal.sync().expect("sync");
            drop(wal);

            let (wal, report) = open(dir.path(), BIG_SEGMENT);
            assert_eq!(report.truncated, None, "cut at {cut}");
            assert_eq!(read_all(&wal, Lsn(0)), expected(1..=3), "cut at {cut}");
            assert!(corrupt_paths(dir.path()).is_empty());
        }
    }

    #[test]
    fn test_should_treat_a_bad_last_entry_of_the_newest_segment_as_torn() {
        // A crash can persist a whole write's length but not all of its pages: the last entry
        // is then complete in size and wrong in content, and nothing follows it.
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), BIG_SEGMENT);
        append_entries(&mut wal, 6, 3);
        drop(wal);
        let [segment] = segment_paths(dir.path()).try_into().expect("one segment");
        let last_entry = entry_offsets(&segment)[5];
        flip_byte(&segment, last_entry + ENTRY_HEADER_LEN + 2);

        let (wal, report) = open(dir.path(), BIG_SEGMENT);
        let truncated = report.truncated.expect("torn tail reported");
        assert_eq!(truncated.reason, CorruptionKind::ChecksumMismatch);
        assert!(!truncated.corruption_overridden);
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..=5));
    }

    #[test]
    fn test_should_refuse_a_bad_checksum_followed_by_intact_entries_in_the_newest_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), BIG_SEGMENT);
        append_entries(&mut wal, 10, 2);
        drop(wal);
        let [segment] = segment_paths(dir.path()).try_into().expect("one segment");
        let bad_entry = entry_offsets(&segment)[4];
        flip_byte(&segment, bad_entry + 4);
        let before = dir_snapshot(dir.path());

        let (path, offset, kind, intact_after) = expect_refusal(dir.path(), BIG_SEGMENT);
        assert_eq!(path, segment);
        assert_eq!(offset, bad_entry);
        assert_eq!(kind, CorruptionKind::ChecksumMismatch);
        assert_eq!(intact_after, 5);
        assert_eq!(dir_snapshot(dir.path()), before, "nothing may be modified");

        // The message is what an operator sees: it names the file and offset and the way out.
        let message = Wal::open(settings(dir.path(), BIG_SEGMENT), Lsn(1))
            .expect_err("still refused")
            .to_string();
        assert!(
            message.contains(&segment.display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("offset {bad_entry}")),
            "{message}"
        );
        assert!(message.contains("wal.truncate_corrupt = true"), "{message}");
        assert_eq!(dir_snapshot(dir.path()), before);
    }

    #[test]
    fn test_should_refuse_a_damaged_length_field_that_hides_later_entries() {
        let pristine = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(pristine.path(), BIG_SEGMENT);
        append_entries(&mut wal, 10, 10);
        drop(wal);
        let [segment] = segment_paths(pristine.path())
            .try_into()
            .expect("one segment");
        let bytes = fs::read(&segment).expect("read");
        let bad_entry = entry_offsets(&segment)[4] as usize;
        let real_len = u32::from_le_bytes(bytes[bad_entry..bad_entry + 4].try_into().expect("4"));

        // Past the end of the file (looks torn), over the limit, slightly off either way.
        for (len, kind) in [
            (1 << 20, CorruptionKind::TornEntry),
            (u32::MAX, CorruptionKind::OversizedEntry { len: u32::MAX }),
            (real_len + 3, CorruptionKind::ChecksumMismatch),
            (real_len - 3, CorruptionKind::ChecksumMismatch),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut damaged = bytes.clone();
            damaged[bad_entry..bad_entry + 4].copy_from_slice(&len.to_le_bytes());
            let path = dir.path().join(segment.file_name().expect("name"));
            overwrite(&path, &damaged);
            let before = dir_snapshot(dir.path());

            let refusal = expect_refusal(dir.path(), BIG_SEGMENT);
            assert_eq!(refusal, (path, bad_entry as u64, kind, 5), "len {len}");
            assert_eq!(dir_snapshot(dir.path()), before, "len {len}");
        }
    }

    #[test]
    fn test_should_refuse_damage_anywhere_in_a_sealed_segment() {
        let pristine = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(pristine.path(), 200);
        append_entries(&mut wal, 40, 2);
        drop(wal);
        let segments = segment_paths(pristine.path());
        assert!(segments.len() >= 4, "{segments:?}");
        let sealed = &segments[1];
        let offsets = entry_offsets(sealed);
        let last_entry = *offsets.last().expect("entries");

        // The header; the last entry's payload (intact entries follow only in later
        // segments); its length field, made to reach past the end of the file so that the
        // entry looks torn; and the file cut short in the middle of that entry.
        let damages: [(&str, u64, CorruptionKind); 4] = [
            ("header", 0, CorruptionKind::BadHeader),
            ("last payload", last_entry, CorruptionKind::ChecksumMismatch),
            ("last length", last_entry, CorruptionKind::TornEntry),
            ("cut short", last_entry, CorruptionKind::TornEntry),
        ];
        for (what, expected_offset, expected_kind) in damages {
            let dir = tempfile::tempdir().expect("tempdir");
            for path in &segments {
                fs::copy(path, dir.path().join(path.file_name().expect("name"))).expect("copy");
            }
            let target = dir.path().join(sealed.file_name().expect("name"));
            let mut bytes = fs::read(&target).expect("read");
            match what {
                "header" => bytes[3] ^= 0x01,
                "last payload" => bytes[last_entry as usize + 26] ^= 0x01,
                "last length" => bytes[last_entry as usize] += 8,
                _ => bytes.truncate(last_entry as usize + 10),
            }
            overwrite(&target, &bytes);
            let before = dir_snapshot(dir.path());

            let (path, offset, kind, intact_after) = expect_refusal(dir.path(), 200);
            assert_eq!(path, target, "{what}");
            assert_eq!(offset, expected_offset, "{what}");
            assert_eq!(kind, expected_kind, "{what}");
            assert!(intact_after > 0, "{what}");
            assert_eq!(dir_snapshot(dir.path()), before, "{what}");
        }
    }

    #[test]
    fn test_should_refuse_a_missing_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 200);
        append_entries(&mut wal, 30, 2);
        drop(wal);
        let segments = segment_paths(dir.path());
        fs::remove_file(&segments[1]).expect("remove");
        let before = dir_snapshot(dir.path());

        let (path, offset, kind, _) = expect_refusal(dir.path(), 200);
        assert_eq!(path, segments[2]);
        assert_eq!(offset, 0);
        assert_eq!(
            kind,
            CorruptionKind::LsnGap {
                expected: Lsn(first_lsn_of(&segments[1])),
                found: Lsn(first_lsn_of(&segments[2])),
            }
        );
        assert_eq!(dir_snapshot(dir.path()), before);

        // The override cuts at the gap, moving the rest aside.
        let (wal, report) = open_overriding(dir.path(), 200);
        let truncated = report.truncated.expect("gap reported");
        assert!(truncated.corruption_overridden);
        assert_eq!(truncated.moved_aside.len(), segments.len() - 2);
        let expected_next = first_lsn_of(&segments[1]);
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..expected_next));
    }

    #[test]
    fn test_should_start_from_the_intact_prefix_and_keep_the_damaged_bytes_when_overridden() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 200);
        append_entries(&mut wal, 40, 2);
        drop(wal);
        let segments = segment_paths(dir.path());
        let target = &segments[1];
        let offsets = entry_offsets(target);
        let bad_index = offsets.len() / 2;
        flip_byte(target, offsets[bad_index] + 5);
        let damaged_bytes = fs::read(target).expect("read");
        let later_bytes: Vec<Vec<u8>> = segments[2..]
            .iter()
            .map(|path| fs::read(path).expect("read"))
            .collect();
        let total_entries = 40;

        let (mut wal, report) = open_overriding(dir.path(), 200);
        let kept_last = first_lsn_of(target) + bad_index as u64 - 1;
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..=kept_last));
        let truncated = report.truncated.expect("corruption reported");
        assert_eq!(&truncated.file, target);
        assert_eq!(truncated.offset, offsets[bad_index]);
        assert_eq!(truncated.reason, CorruptionKind::ChecksumMismatch);
        assert!(truncated.corruption_overridden);
        // Everything after the bad entry was intact, and is dropped.
        assert_eq!(truncated.dropped_entries, total_entries - kept_last - 1);
        let later_len: usize = later_bytes.iter().map(Vec::len).sum();
        assert_eq!(
            truncated.dropped_bytes,
            (damaged_bytes.len() as u64 - offsets[bad_index]) + later_len as u64
        );
        // Copied (the truncated segment, whole and damaged) and moved aside, never deleted.
        let [copy] = truncated.copied_aside.clone().try_into().expect("one copy");
        assert_eq!(fs::read(&copy).expect("read copy"), damaged_bytes);
        assert_eq!(
            fs::metadata(target).expect("metadata").len(),
            offsets[bad_index]
        );
        let moved: Vec<Vec<u8>> = truncated
            .moved_aside
            .iter()
            .map(|path| fs::read(path).expect("read moved-aside segment"))
            .collect();
        assert_eq!(moved, later_bytes);
        let mut aside = truncated.moved_aside.clone();
        aside.push(copy);
        aside.sort();
        assert_eq!(corrupt_paths(dir.path()), aside);

        // Appends continue, and the next open (without the override) finds a clean log.
        assert_eq!(wal.next_lsn(), Lsn(kept_last + 1));
        append_entries(&mut wal, 5, 1);
        drop(wal);
        let (wal, report) = open(dir.path(), 200);
        assert_eq!(report.truncated, None);
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..=kept_last + 5));
    }

    #[test]
    fn test_should_move_aside_an_empty_or_garbage_segment_after_valid_ones() {
        for (contents, reason) in [
            (Vec::new(), CorruptionKind::TornHeader),
            (b"ARCWAL".to_vec(), CorruptionKind::TornHeader),
            (vec![0xa5; 300], CorruptionKind::BadHeader),
            (vec![0; 300], CorruptionKind::BadHeader),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut wal, _) = open(dir.path(), BIG_SEGMENT);
            append_entries(&mut wal, 5, 5);
            drop(wal);
            let bogus = dir.path().join(segment_file_name(Lsn(6)));
            overwrite(&bogus, &contents);

            let (mut wal, report) = open(dir.path(), BIG_SEGMENT);
            let truncated = report.truncated.expect("reported");
            assert_eq!(truncated.file, bogus);
            assert_eq!(truncated.offset, 0);
            assert_eq!(truncated.reason, reason);
            assert!(!truncated.corruption_overridden);
            assert_eq!(truncated.moved_aside.len(), 1);
            assert_eq!(fs::read(&truncated.moved_aside[0]).expect("read"), contents);
            assert_eq!(read_all(&wal, Lsn(0)), expected(1..=5));
            assert_eq!(wal.append(EPOCH, &payload_for(6)).expect("append"), Lsn(6));
            wal.sync().expect("sync");
            drop(wal);
            let (wal, report) = open(dir.path(), BIG_SEGMENT);
            assert_eq!(report.truncated, None);
            assert_eq!(read_all(&wal, Lsn(0)), expected(1..=6));
        }
    }

    #[test]
    fn test_should_treat_a_torn_segment_followed_only_by_empty_segments_as_torn() {
        // In async mode a crash can tear a segment's last write after the next segment was
        // created; that segment holds no entry, so nothing acknowledged is behind the tear.
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), BIG_SEGMENT);
        append_entries(&mut wal, 5, 5);
        drop(wal);
        let [segment] = segment_paths(dir.path()).try_into().expect("one segment");
        let bytes = fs::read(&segment).expect("read");
        overwrite(&segment, &bytes[..bytes.len() - 3]);
        let empty = dir.path().join(segment_file_name(Lsn(6)));
        let header = crate::format::SegmentHeader {
            first_lsn: Lsn(6),
            flags: 0,
        };
        overwrite(&empty, &header.encode());

        let (wal, report) = open(dir.path(), BIG_SEGMENT);
        let truncated = report.truncated.expect("torn tail reported");
        assert_eq!(truncated.file, segment);
        assert_eq!(truncated.reason, CorruptionKind::TornEntry);
        assert!(!truncated.corruption_overridden);
        assert_eq!(truncated.moved_aside.len(), 1);
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..=4));
    }

    #[test]
    fn test_should_refuse_a_bad_first_header_and_move_everything_aside_when_overridden() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 200);
        append_entries(&mut wal, 20, 2);
        drop(wal);
        let segments = segment_paths(dir.path());
        flip_byte(&segments[0], 0);
        let before = dir_snapshot(dir.path());

        let (path, offset, kind, intact_after) = expect_refusal(dir.path(), 200);
        assert_eq!(
            (path, offset, kind),
            (segments[0].clone(), 0, CorruptionKind::BadHeader)
        );
        assert_eq!(intact_after, 20);
        assert_eq!(dir_snapshot(dir.path()), before);

        let (wal, report) = open_overriding(dir.path(), 200);
        let truncated = report.truncated.expect("reported");
        assert_eq!(truncated.reason, CorruptionKind::BadHeader);
        assert!(truncated.corruption_overridden);
        assert_eq!(truncated.dropped_entries, 20);
        // Nothing is truncated, so nothing needs a copy: every segment is renamed whole.
        assert!(truncated.copied_aside.is_empty());
        assert_eq!(truncated.moved_aside.len(), segments.len());
        assert_eq!(report.entries, 0);
        assert!(read_all(&wal, Lsn(0)).is_empty());
        assert_eq!(wal.next_lsn(), Lsn(1));
    }

    /// Where one written entry's frame lies, and its bytes.
    struct WrittenFrame {
        /// Index of its segment in `segment_paths`.
        file: usize,
        offset: u64,
        bytes: Vec<u8>,
    }

    /// Writes `payload_lens` entries (syncing every other one) into `dir` and returns them with
    /// where each frame lies.
    fn write_log(
        dir: &Path,
        payload_lens: &[usize],
        segment_size: u64,
    ) -> (Vec<Entry>, Vec<WrittenFrame>) {
        let mut written = Vec::new();
        let (mut wal, _) = open(dir, segment_size);
        for (index, len) in payload_lens.iter().enumerate() {
            let epoch = Epoch(index as u64 / 5);
            let payload = vec![index as u8; *len];
            let lsn = wal.append(epoch, &payload).expect("append");
            written.push(Entry {
                epoch,
                lsn,
                payload,
            });
            if index % 2 == 1 {
                wal.sync().expect("sync");
            }
        }
        wal.sync().expect("sync");
        drop(wal);
        let mut frames = Vec::new();
        for (file_index, path) in segment_paths(dir).iter().enumerate() {
            let bytes = fs::read(path).expect("read");
            for offset in entry_offsets_in(&bytes) {
                let len = u32::from_le_bytes(
                    bytes[offset as usize..offset as usize + 4]
                        .try_into()
                        .expect("4"),
                );
                let end = offset as usize + ENTRY_HEADER_LEN as usize + len as usize;
                frames.push(WrittenFrame {
                    file: file_index,
                    offset,
                    bytes: bytes[offset as usize..end].to_vec(),
                });
            }
        }
        assert_eq!(frames.len(), written.len());
        (written, frames)
    }

    /// Applies one damage to one segment file and returns the first damaged offset.
    fn damage(path: &Path, position: prop::sample::Index, mask: u8, action: u8) -> Option<u64> {
        let mut bytes = fs::read(path).expect("read");
        if bytes.is_empty() {
            return None;
        }
        let at = position.index(bytes.len());
        match action {
            0 => bytes[at] ^= mask,
            1 => bytes.truncate(at),
            _ => {
                let end = (at + 16).min(bytes.len());
                bytes[at..end].fill(0);
            }
        }
        fs::write(path, bytes).expect("write");
        Some(at as u64)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 96,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// One flip, truncation or zeroed range anywhere in a WAL directory: `open` either
        /// refuses with `CorruptLog` and changes nothing (and then an intact entry really lies
        /// behind the damage), or it drops only a torn tail: never an entry that is intact on
        /// disk. With the override it always opens, keeps a prefix, and keeps the damaged
        /// bytes in `*.corrupt` files.
        #[test]
        fn test_should_refuse_or_drop_only_a_torn_tail_after_a_single_damage(
            payload_lens in prop::collection::vec(0usize..48, 1..24),
            segment_size in 64u64..320,
            file_index in any::<prop::sample::Index>(),
            position in any::<prop::sample::Index>(),
            mask in 1u8..=255,
            action in 0u8..3,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (written, frames) = write_log(dir.path(), &payload_lens, segment_size);
            let files = segment_paths(dir.path());
            let damaged_file = file_index.index(files.len());
            let Some(damaged_at) = damage(&files[damaged_file], position, mask, action) else {
                return Ok(());
            };
            let is_intact = |frame: &WrittenFrame| {
                let bytes = fs::read(&files[frame.file]).expect("read");
                let start = frame.offset as usize;
                bytes.get(start..start + frame.bytes.len()) == Some(&frame.bytes[..])
            };
            let before = dir_snapshot(dir.path());

            match Wal::open(settings(dir.path(), segment_size), Lsn(1)) {
                Err(WalError::CorruptLog { .. }) => {
                    prop_assert_eq!(dir_snapshot(dir.path()), before.clone());
                    let behind_damage = frames.iter().any(|frame| {
                        let after = frame.file > damaged_file
                            || (frame.file == damaged_file && frame.offset > damaged_at);
                        after && is_intact(frame)
                    });
                    prop_assert!(behind_damage, "refused without an intact entry behind the damage");
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
                Ok((wal, report)) => {
                    let recovered = read_all(&wal, Lsn(0));
                    prop_assert_eq!(&recovered[..], &written[..recovered.len()]);
                    prop_assert_eq!(report.entries, recovered.len() as u64);
                    for frame in &frames[recovered.len()..] {
                        prop_assert!(!is_intact(frame), "dropped an intact entry at {:?}", (frame.file, frame.offset));
                    }
                    if let Some(truncated) = &report.truncated {
                        prop_assert!(!truncated.corruption_overridden);
                        prop_assert_eq!(truncated.dropped_entries, 0);
                    }
                    return Ok(());
                }
            }

            let (mut wal, report) = open_overriding(dir.path(), segment_size);
            let recovered = read_all(&wal, Lsn(0));
            prop_assert!(recovered.len() < written.len());
            prop_assert_eq!(&recovered[..], &written[..recovered.len()]);
            let truncated = report.truncated.expect("a cut is reported");
            prop_assert!(truncated.corruption_overridden);
            prop_assert!(truncated.dropped_entries > 0);
            // Every damaged or dropped file's bytes still exist, whole, in some *.corrupt file.
            let after = dir_snapshot(dir.path());
            for (name, bytes) in &before {
                let unchanged = after.get(name) == Some(bytes);
                let kept_aside = after
                    .iter()
                    .any(|(other, other_bytes)| other.ends_with(CORRUPT_SUFFIX) && other_bytes == bytes);
                prop_assert!(unchanged || kept_aside, "the bytes of {} are gone", name);
            }
            let next = Lsn(recovered.len() as u64 + 1);
            prop_assert_eq!(wal.append(Epoch(9), b"after").expect("append"), next);
            wal.sync().expect("sync");
            drop(wal);
            let (wal, report) = open(dir.path(), segment_size);
            prop_assert_eq!(report.truncated, None);
            prop_assert_eq!(read_all(&wal, Lsn(0)).len(), recovered.len() + 1);
        }

        /// Several flips, truncations and zeroed ranges anywhere: `open` never panics and never
        /// fails with anything but `CorruptLog` (leaving the files alone), and with the override
        /// it recovers a prefix of what was written, after which appends continue cleanly.
        #[test]
        fn test_should_recover_a_prefix_after_any_damage_when_overridden(
            payload_lens in prop::collection::vec(0usize..48, 1..24),
            segment_size in 64u64..320,
            damages in prop::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u8..=255, 0u8..3),
                1..4,
            ),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (written, _) = write_log(dir.path(), &payload_lens, segment_size);
            let files = segment_paths(dir.path());
            for (file_index, position, mask, action) in damages {
                damage(&files[file_index.index(files.len())], position, mask, action);
            }
            let before = dir_snapshot(dir.path());
            match Wal::open(settings(dir.path(), segment_size), Lsn(1)) {
                Ok(_) => {}
                Err(WalError::CorruptLog { .. }) => {
                    prop_assert_eq!(dir_snapshot(dir.path()), before);
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }

            let (mut wal, report) = open_overriding(dir.path(), segment_size);
            let recovered = read_all(&wal, Lsn(0));
            prop_assert!(recovered.len() <= written.len());
            prop_assert_eq!(&recovered[..], &written[..recovered.len()]);
            prop_assert_eq!(report.entries, recovered.len() as u64);
            let next = Lsn(recovered.len() as u64 + 1);
            prop_assert_eq!(wal.next_lsn(), next);

            prop_assert_eq!(wal.append(Epoch(9), b"after").expect("append"), next);
            wal.sync().expect("sync");
            drop(wal);
            let (wal, report) = open(dir.path(), segment_size);
            prop_assert_eq!(report.truncated, None);
            let after = read_all(&wal, Lsn(0));
            prop_assert_eq!(after.len(), recovered.len() + 1);
            prop_assert_eq!(&after[..recovered.len()], &recovered[..]);
            prop_assert_eq!(&after[recovered.len()].payload[..], b"after");
        }
    }
}
