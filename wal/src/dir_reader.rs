//! [`WalReader`]: reads the entries of a WAL directory that another handle (usually in another
//! thread of this process) owns and is appending to, for replication catch-up.
//!
//! It never takes the directory lock and never writes. It lists the segments, and reads each
//! one only up to the length the file had when it was opened, so bytes being appended
//! concurrently are never half-read. What it may meet, and how it treats it:
//! - the end of the newest segment, including a frame or a header the writer has not finished
//!   writing: the iteration ends cleanly there (the caller reads again later);
//! - a segment deleted by retention after it was listed: skipped; the caller sees the LSNs jump
//!   and knows the catalog's flushes cover them;
//! - damage anywhere else (a sealed segment the owner verified at open no longer verifies):
//!   [`WalError::Corrupt`], and the iteration ends.
//!
//! The owner's durable end is not visible on disk (written bytes may not be synced yet), so the
//! caller bounds the read with `through`: the primary passes its durable LSN, so that nothing
//! is streamed that a crash could still take back.
//!
//! [`WalReader::segments`] and [`WalReader::scan_segment`] serve inspection tools (`arc-node wal
//! dump`): a scan reads one segment to its end and says how it ends (cleanly, or at a torn or
//! damaged frame, with its offset) instead of treating the defect as the end of the log.

use std::io::{self, BufReader};
use std::iter::FusedIterator;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptionKind, WalError};
use crate::format::{Entry, FLAG_LSN_JUMP, Opened, SegmentReader, Step};
use crate::fs::{StdFs, WalFile, WalFs};
use crate::lsn::Lsn;
use crate::segment::{ListedSegment, list_segments};

/// Read buffer per open segment.
const READ_BUFFER_BYTES: usize = 128 * 1024;

/// A read-only view of a WAL directory owned by someone else. Cheap to clone.
#[derive(Clone)]
pub struct WalReader {
    dir: PathBuf,
    fs: Arc<dyn WalFs>,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl WalReader {
    /// Returns a reader of the WAL in `dir` on the real filesystem.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_fs(dir, Arc::new(StdFs))
    }

    /// Returns a reader of the WAL in `dir` on `fs` (for tests on a simulated filesystem).
    pub fn with_fs(dir: impl Into<PathBuf>, fs: Arc<dyn WalFs>) -> Self {
        Self {
            dir: dir.into(),
            fs,
        }
    }

    /// Returns the WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the first LSN of the oldest segment: no entry below it is kept. `None` if the
    /// directory holds no segment.
    ///
    /// # Errors
    /// `Io` if the directory cannot be listed.
    pub fn oldest_lsn(&self) -> Result<Option<Lsn>, WalError> {
        Ok(list_segments(&*self.fs, &self.dir)?
            .first()
            .map(|segment| segment.first_lsn))
    }

    /// Returns an iterator over the verified entries with `from <= lsn <= through`, in LSN
    /// order, as far as the segment files hold them now. If `from` is older than the oldest
    /// kept entry, iteration starts at the oldest kept entry.
    ///
    /// # Errors
    /// `Io` if the directory cannot be listed; the iterator yields `Io`, `Corrupt` and
    /// `UnsupportedFormat` errors for segments it cannot read (and then ends).
    pub fn read(&self, from: Lsn, through: Lsn) -> Result<DirEntries, WalError> {
        let listed = list_segments(&*self.fs, &self.dir)?;
        let start = listed
            .partition_point(|segment| segment.first_lsn <= from)
            .saturating_sub(1);
        let mut remaining: Vec<ListedSegment> = listed[start..].to_vec();
        remaining.reverse();
        Ok(DirEntries {
            fs: Arc::clone(&self.fs),
            remaining,
            current: None,
            from,
            through,
            finished: from > through,
        })
    }
}

impl WalReader {
    /// Lists the segment files of the directory, oldest first, with their current lengths.
    ///
    /// # Errors
    /// `Io` if the directory cannot be listed or a segment's metadata read (a segment deleted
    /// by retention after listing is left out, not an error).
    pub fn segments(&self) -> Result<Vec<SegmentFile>, WalError> {
        let mut segments = Vec::new();
        for listed in list_segments(&*self.fs, &self.dir)? {
            let size_bytes = match self.fs.open_read(&listed.path) {
                Ok(file) => file.size_bytes().map_err(WalError::io_at(&listed.path))?,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(WalError::Io {
                        path: listed.path,
                        source,
                    });
                }
            };
            segments.push(SegmentFile {
                path: listed.path,
                first_lsn: listed.first_lsn,
                size_bytes,
            });
        }
        Ok(segments)
    }

    /// Scans one segment: its verified entries in file order, then (see
    /// [`SegmentScan::end`]) how it ends. Reads the file up to the length it has when opened
    /// and changes nothing. Unlike [`WalReader::read`], a defect is reported, not taken for
    /// the end of the log: the caller decides what it means (a torn tail of the newest segment
    /// is what a crash, or a write in progress, leaves).
    ///
    /// # Errors
    /// `Io` if the file cannot be opened or its length read.
    pub fn scan_segment(&self, segment: &SegmentFile) -> Result<SegmentScan, WalError> {
        let path = segment.path.clone();
        let file = match self.fs.open_read(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(SegmentScan::ended(path, 0, SegmentEnd::Vanished));
            }
            Err(source) => return Err(WalError::Io { path, source }),
        };
        let len = file.size_bytes().map_err(WalError::io_at(&path))?;
        let source = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        Ok(
            match SegmentReader::open(source, len, segment.first_lsn)
                .map_err(WalError::io_at(&path))?
            {
                Opened::Ready(reader) => SegmentScan {
                    lsn_jump: reader.header().flags & FLAG_LSN_JUMP != 0,
                    path,
                    size_bytes: len,
                    reader: Some(reader),
                    end: None,
                },
                Opened::Defect(kind) => {
                    SegmentScan::ended(path, len, SegmentEnd::Defect { offset: 0, kind })
                }
                Opened::Unsupported { version, flags } => {
                    SegmentScan::ended(path, len, SegmentEnd::Unsupported { version, flags })
                }
            },
        )
    }
}

/// A segment file of a WAL directory, as listed by [`WalReader::segments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// The file.
    pub path: PathBuf,
    /// The LSN of its first entry, from its name.
    pub first_lsn: Lsn,
    /// Its length when listed (the owner may be appending to the newest one).
    pub size_bytes: u64,
}

/// How a [`SegmentScan`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The verified entries fill the file up to the length it had when opened.
    Clean,
    /// The bytes from `offset` (`0`: the header) to the end of the file are not a verified
    /// entry. [`CorruptionKind::is_torn`] tells a write cut short (a crash, or a write still in
    /// progress in the newest segment) from bytes that are present but wrong.
    Defect {
        /// Byte offset of the damaged header or entry frame.
        offset: u64,
        /// What is wrong there.
        kind: CorruptionKind,
    },
    /// The header is intact but from a newer format; nothing was read.
    Unsupported {
        /// The format version in the header.
        version: u32,
        /// The header's flags.
        flags: u32,
    },
    /// The file was deleted (by retention) between listing and opening.
    Vanished,
}

/// Iterator over one segment's verified entries, created by [`WalReader::scan_segment`].
/// Yields each entry with the byte offset of its frame; an I/O error is yielded once and ends
/// the scan without an [`SegmentScan::end`].
pub struct SegmentScan {
    path: PathBuf,
    size_bytes: u64,
    lsn_jump: bool,
    reader: Option<SegmentReader<BufReader<Box<dyn WalFile>>>>,
    end: Option<SegmentEnd>,
}

impl std::fmt::Debug for SegmentScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentScan")
            .field("path", &self.path)
            .field("size_bytes", &self.size_bytes)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl SegmentScan {
    fn ended(path: PathBuf, size_bytes: u64, end: SegmentEnd) -> Self {
        Self {
            path,
            size_bytes,
            lsn_jump: false,
            reader: None,
            end: Some(end),
        }
    }

    /// Returns the segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the length the scan reads up to (the file's length when it was opened).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Returns whether the header says the segment starts after a deliberate gap in the LSNs
    /// (the log was reopened past entries the catalog had flushed).
    pub fn starts_after_gap(&self) -> bool {
        self.lsn_jump
    }

    /// Returns how the segment ended: `None` while entries remain, or after an I/O error.
    pub fn end(&self) -> Option<SegmentEnd> {
        self.end
    }
}

impl Iterator for SegmentScan {
    type Item = Result<(u64, Entry), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let reader = self.reader.as_mut()?;
        let outcome = loop {
            let offset = reader.offset();
            // `keep_from` is the lowest LSN, so every payload is kept (no `Verified` steps).
            match reader.next_entry(Some(Lsn(0))) {
                Ok(Step::Entry(entry)) => return Some(Ok((offset, entry))),
                Ok(Step::Verified { .. }) => {}
                Ok(Step::End) => break Ok(SegmentEnd::Clean),
                Ok(Step::Defect(kind)) => break Ok(SegmentEnd::Defect { offset, kind }),
                Err(source) => {
                    break Err(WalError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        };
        self.reader = None;
        match outcome {
            Ok(end) => {
                self.end = Some(end);
                None
            }
            Err(error) => Some(Err(error)),
        }
    }
}

impl FusedIterator for SegmentScan {}

/// A segment being read: its path (for errors) and its verifying reader.
type OpenSegment = (PathBuf, SegmentReader<BufReader<Box<dyn WalFile>>>);

/// Iterator over a directory's entries, created by [`WalReader::read`].
pub struct DirEntries {
    fs: Arc<dyn WalFs>,
    /// Segments not opened yet, newest first (popped from the back).
    remaining: Vec<ListedSegment>,
    current: Option<OpenSegment>,
    from: Lsn,
    through: Lsn,
    finished: bool,
}

impl DirEntries {
    fn fail(&mut self, error: WalError) -> Option<Result<Entry, WalError>> {
        self.finished = true;
        self.current = None;
        Some(Err(error))
    }

    /// Opens the next listed segment; `Ok(None)` if it vanished (retention deleted it) or is
    /// the newest and its header is not complete yet.
    fn open_next(&mut self) -> Result<Option<()>, WalError> {
        let Some(listed) = self.remaining.pop() else {
            self.finished = true;
            return Ok(None);
        };
        let path = listed.path;
        let file = match self.fs.open_read(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(WalError::Io { path, source }),
        };
        let len = file.size_bytes().map_err(WalError::io_at(&path))?;
        let source = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        match SegmentReader::open(source, len, listed.first_lsn).map_err(WalError::io_at(&path))? {
            Opened::Ready(reader) => {
                self.current = Some((path, reader));
                Ok(Some(()))
            }
            Opened::Defect(_) if self.remaining.is_empty() => {
                // The writer is creating this segment right now.
                self.finished = true;
                Ok(None)
            }
            Opened::Defect(kind) => Err(WalError::Corrupt {
                path,
                offset: 0,
                kind,
            }),
            Opened::Unsupported { version, flags } => Err(WalError::UnsupportedFormat {
                path,
                version,
                flags,
            }),
        }
    }
}

impl Iterator for DirEntries {
    type Item = Result<Entry, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            let Some((path, reader)) = self.current.as_mut() else {
                if let Err(error) = self.open_next() {
                    return self.fail(error);
                }
                continue;
            };
            match reader.next_entry(Some(self.from)) {
                Ok(Step::Entry(entry)) if entry.lsn > self.through => {
                    self.finished = true;
                    self.current = None;
                }
                Ok(Step::Entry(entry)) => return Some(Ok(entry)),
                Ok(Step::Verified { .. }) => {}
                Ok(Step::End) => self.current = None,
                Ok(Step::Defect(_)) if self.remaining.is_empty() => {
                    // The newest segment ends in a frame the writer has not finished writing
                    // (or one a crash tore, which the owner's recovery will cut): the end.
                    self.finished = true;
                    self.current = None;
                }
                Ok(Step::Defect(kind)) => {
                    let error = WalError::Corrupt {
                        path: path.clone(),
                        offset: reader.offset(),
                        kind,
                    };
                    return self.fail(error);
                }
                Err(source) => {
                    let error = WalError::Io {
                        path: path.clone(),
                        source,
                    };
                    return self.fail(error);
                }
            }
        }
        None
    }
}

impl FusedIterator for DirEntries {}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;

    use super::*;
    use crate::format::segment_file_name;
    use crate::test_support::*;
    use crate::wal::Wal;

    fn lsns(reader: &WalReader, from: u64, through: u64) -> Vec<u64> {
        reader
            .read(Lsn(from), Lsn(through))
            .expect("read")
            .map(|entry| entry.expect("entry").lsn.0)
            .collect()
    }

    #[test]
    fn test_should_read_a_locked_wal_across_segments_up_to_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 100);
        append_entries(&mut wal, 20, 3);
        let reader = WalReader::new(dir.path());
        // The owner holds the lock; the reader neither needs nor takes it.
        assert!(matches!(
            Wal::open(settings(dir.path(), 100), Lsn(1)),
            Err(crate::WalError::Locked { .. })
        ));
        let all: Vec<Entry> = reader
            .read(Lsn(1), Lsn(20))
            .expect("read")
            .collect::<Result<_, _>>()
            .expect("entries");
        assert_eq!(all, expected(1..=20));
        assert_eq!(lsns(&reader, 7, 9), [7, 8, 9]);
        assert_eq!(lsns(&reader, 19, 100), [19, 20]);
        assert!(lsns(&reader, 9, 8).is_empty());
        assert_eq!(reader.oldest_lsn().expect("oldest"), Some(Lsn(1)));

        // Retention: reading from below the oldest kept entry starts at it.
        let segments = segment_paths(dir.path());
        let keep_from = first_lsn_of(&segments[2]);
        wal.remove_segments_below(Lsn(keep_from)).expect("remove");
        assert_eq!(lsns(&reader, 1, 20), (keep_from..=20).collect::<Vec<_>>());
    }

    #[test]
    fn test_should_stop_cleanly_at_an_unfinished_tail_and_fail_on_damage_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 100);
        append_entries(&mut wal, 12, 4);
        let reader = WalReader::new(dir.path());
        let segments = segment_paths(dir.path());
        assert!(segments.len() >= 3, "{segments:?}");
        // A segment being created (its header not complete yet) after the others.
        let creating = dir.path().join(segment_file_name(Lsn(99)));
        fs::write(&creating, [b'A']).expect("write");
        assert_eq!(lsns(&reader, 1, 100), (1..=12).collect::<Vec<_>>());
        fs::remove_file(&creating).expect("remove");

        // Half a frame at the end of the newest segment: a write in progress.
        let newest = segments.last().expect("a segment");
        let mut bytes = fs::read(newest).expect("read");
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        fs::write(newest, &bytes).expect("write");
        assert_eq!(lsns(&reader, 1, 100), (1..=12).collect::<Vec<_>>());

        // The same kind of damage in a sealed segment is corruption.
        let sealed = &segments[0];
        let mut bytes = fs::read(sealed).expect("read");
        let keep = bytes.len() - 3;
        bytes.truncate(keep);
        fs::write(sealed, &bytes).expect("write");
        let results: Vec<_> = reader.read(Lsn(1), Lsn(100)).expect("read").collect();
        let error = results
            .last()
            .expect("results")
            .as_ref()
            .expect_err("the last item is the error");
        assert!(
            matches!(error, crate::WalError::Corrupt { path, .. } if path == sealed),
            "{error:?}"
        );
    }

    /// One scanned segment: its entries as (offset, lsn), and how it ended.
    type Scanned = (Vec<(u64, u64)>, Option<SegmentEnd>);

    /// Scans every segment.
    fn scan_all(reader: &WalReader) -> Vec<Scanned> {
        reader
            .segments()
            .expect("segments")
            .iter()
            .map(|segment| {
                let mut scan = reader.scan_segment(segment).expect("scan");
                let entries = scan
                    .by_ref()
                    .map(|item| item.map(|(offset, entry)| (offset, entry.lsn.0)))
                    .collect::<Result<Vec<_>, _>>()
                    .expect("no i/o error");
                (entries, scan.end())
            })
            .collect()
    }

    #[test]
    fn test_should_scan_each_segment_to_its_end_and_report_torn_and_damaged_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 100);
        append_entries(&mut wal, 12, 4);
        let reader = WalReader::new(dir.path());
        let segments = reader.segments().expect("segments");
        let paths = segment_paths(dir.path());
        assert_eq!(
            segments.iter().map(|s| s.path.clone()).collect::<Vec<_>>(),
            paths
        );
        assert!(paths.len() >= 3, "{paths:?}");
        for segment in &segments {
            assert_eq!(segment.first_lsn.0, first_lsn_of(&segment.path));
            assert_eq!(
                segment.size_bytes,
                fs::metadata(&segment.path).expect("metadata").len()
            );
        }
        let before = dir_snapshot(dir.path());
        let scanned = scan_all(&reader);
        let lsns: Vec<u64> = scanned
            .iter()
            .flat_map(|(entries, _)| entries.iter().map(|(_, lsn)| *lsn))
            .collect();
        assert_eq!(lsns, (1..=12).collect::<Vec<_>>());
        for ((entries, end), path) in scanned.iter().zip(&paths) {
            assert_eq!(*end, Some(SegmentEnd::Clean));
            let offsets: Vec<u64> = entries.iter().map(|(offset, _)| *offset).collect();
            assert_eq!(offsets, entry_offsets(path));
        }

        // A torn frame at the end of the newest segment, and a flipped byte in the first
        // entry of the oldest: both reported with their offsets, neither hides the rest.
        let newest = paths.last().expect("a segment");
        let torn_at = fs::metadata(newest).expect("metadata").len();
        let mut bytes = fs::read(newest).expect("read");
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        fs::write(newest, &bytes).expect("write");
        let damaged_at = entry_offsets(&paths[0])[0];
        flip_byte(&paths[0], damaged_at + 30);
        let before_damage = dir_snapshot(dir.path());
        let scanned = scan_all(&reader);
        assert_eq!(
            scanned[0].1,
            Some(SegmentEnd::Defect {
                offset: damaged_at,
                kind: CorruptionKind::ChecksumMismatch
            })
        );
        assert!(scanned[0].0.is_empty());
        let last = scanned.last().expect("scanned");
        assert_eq!(
            last.1,
            Some(SegmentEnd::Defect {
                offset: torn_at,
                kind: CorruptionKind::TornEntry
            })
        );
        let last_lsn = scanned.iter().flat_map(|(entries, _)| entries).last();
        assert_eq!(last_lsn.map(|(_, lsn)| *lsn), Some(12));
        // Scanning is read-only: the first pass changed no byte, nor did the second.
        assert_ne!(before, before_damage);
        assert_eq!(before_damage, dir_snapshot(dir.path()));

        // A header from a newer format, and a file deleted after listing.
        let listed = reader.segments().expect("segments");
        flip_byte(&paths[1], 0);
        let scan = reader.scan_segment(&listed[1]).expect("scan");
        assert!(
            matches!(
                scan.end(),
                Some(SegmentEnd::Defect {
                    offset: 0,
                    kind: CorruptionKind::BadHeader
                })
            ),
            "{scan:?}"
        );
        fs::remove_file(&paths[2]).expect("remove");
        let mut scan = reader.scan_segment(&listed[2]).expect("scan");
        assert!(scan.next().is_none());
        assert_eq!(scan.end(), Some(SegmentEnd::Vanished));
        drop(wal);
    }

    #[test]
    fn test_should_read_while_the_owner_appends_concurrently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 400);
        let reader = WalReader::new(dir.path());
        let done = Arc::new(AtomicBool::new(false));
        const TOTAL: u64 = 2_000;
        let writer = {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                for lsn in 1..=TOTAL {
                    wal.append(EPOCH, &payload_for(lsn)).expect("append");
                    if lsn % 7 == 0 || lsn == TOTAL {
                        wal.sync().expect("sync");
                    }
                    if lsn % 500 == 0 {
                        // Retention races the reader too.
                        let below = Lsn(lsn.saturating_sub(300));
                        wal.remove_segments_below(below).expect("remove");
                    }
                }
                done.store(true, Ordering::SeqCst);
                wal
            })
        };
        // A tailing reader: read from the next LSN it needs until the writer is done and it
        // has everything. It may see jumps (retention) but never a reordering, a duplicate, a
        // damaged entry or an error.
        let mut next = 1u64;
        let mut seen = 0u64;
        loop {
            // Loaded before the pass: if the writer was done, this pass sees everything.
            let finished = done.load(Ordering::SeqCst);
            for entry in reader.read(Lsn(next), Lsn(TOTAL)).expect("read") {
                let entry = entry.expect("no error while the owner appends");
                assert!(entry.lsn.0 >= next, "{} < {next}", entry.lsn);
                assert_eq!(entry, expected([entry.lsn.0])[0]);
                next = entry.lsn.0 + 1;
                seen += 1;
            }
            if next > TOTAL {
                break;
            }
            assert!(
                !finished,
                "the writer is done but the reader stopped at {next}"
            );
        }
        let wal = writer.join().expect("writer");
        assert!(seen > 0);
        assert_eq!(wal.durable_lsn(), Some(Lsn(TOTAL)));
    }
}
