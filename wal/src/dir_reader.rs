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

use std::io::{self, BufReader};
use std::iter::FusedIterator;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::WalError;
use crate::format::{Entry, Opened, SegmentReader, Step};
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
