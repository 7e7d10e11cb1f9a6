//! [`Wal`]: the writer's handle. Appends into a buffer, makes it durable in one `sync()` per group
//! commit, rotates segments, and deletes the segments the catalog has covered.
//!
//! One owner: every mutating method takes `&mut self`, and the node runs it on a dedicated writer
//! thread (std I/O, no async runtime). Lifecycle: [`Wal::open`] recovers the directory and starts
//! a fresh active segment; the handle holds the directory lock until it is dropped. Dropping it
//! discards appended-but-unsynced entries, which were never acknowledged.
//!
//! Hazard: a failed `write` or `fsync` poisons the handle. After a failed fsync the kernel may
//! have dropped the dirty pages and report the next fsync as successful, and a failed write may
//! have left half an entry in the file, so retrying in place could acknowledge data that is not
//! on disk. The caller must drop the handle and reopen; recovery truncates the torn tail.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use crate::error::WalError;
use crate::format::{
    FLAG_LSN_JUMP, MAX_PAYLOAD_BYTES, encode_entry, encoded_entry_len, segment_file_name,
};
use crate::fs::{StdFs, WalDirLock, WalFile, WalFs};
use crate::lsn::{Epoch, Lsn};
use crate::metrics::WalMetrics;
use crate::reader::Entries;
use crate::recovery::{self, Recovered, RecoveryReport};
use crate::segment::{SegmentMeta, create_segment, lock_dir, sync_dir, sync_file};
use crate::settings::{SyncMode, WalSettings};

/// Capacity the append buffer keeps between group commits; a larger one (after a burst) is
/// released so one huge batch does not pin its memory forever.
const RETAINED_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A segmented write-ahead log, owned by one writer.
pub struct Wal {
    settings: WalSettings,
    /// Every file operation goes through it ([`StdFs`] unless a test injected another).
    fs: Arc<dyn WalFs>,
    /// Live segments, oldest first. Never empty: the last one is the active segment.
    segments: Vec<SegmentMeta>,
    /// The active segment, positioned at its end.
    active: Box<dyn WalFile>,
    /// Frames appended since the last `sync()`, not yet written to `active`.
    buffer: Vec<u8>,
    /// LSN of the last frame in `buffer`.
    buffered_lsn: Option<Lsn>,
    /// Epoch of the last entry appended (buffered or written); [`Wal::append_at`] refuses older.
    last_epoch: Option<Epoch>,
    /// LSN the next `append` assigns.
    next_lsn: Lsn,
    /// Last LSN handed to the OS (readable by `read_from`).
    written_lsn: Option<Lsn>,
    /// Last LSN made durable per the sync mode (equal to `written_lsn` unless a sync failed).
    durable_lsn: Option<Lsn>,
    /// Set by a failed write or sync; see the module docs.
    poisoned: bool,
    /// Holds the exclusive lock on the directory for as long as this handle lives.
    _lock: WalDirLock,
    metrics: WalMetrics,
}

impl Wal {
    /// Opens the WAL in `settings.dir` (creating the directory if needed), recovers it, and starts
    /// a fresh active segment for appends.
    ///
    /// Recovery scans every segment in LSN order and verifies every entry. A torn tail (damage
    /// with no intact entry anywhere after it, what a crash mid-write leaves) is truncated, and
    /// every later segment renamed to `*.corrupt`; entries before it are kept, and the report
    /// says what was cut. Damage with intact entries after it is corruption: `open` refuses with
    /// [`WalError::CorruptLog`] and modifies nothing, unless [`WalSettings::truncate_corrupt`]
    /// is set, in which case the damaged segments are copied or renamed aside and the log is cut
    /// the same way (`docs/0001-wal-format.md`, section 7).
    ///
    /// The next LSN is `max(last kept LSN + 1, min_next_lsn)`. Pass the highest LSN the catalog
    /// has flushed, plus one, so that LSNs are never reused even after every segment was deleted
    /// (pass `Lsn(1)` on a brand-new node). If that is above the log's end, the new segment is
    /// marked as an allowed jump (`docs/0001-wal-format.md`, rule 6.3).
    ///
    /// # Errors
    /// `Locked` if another owner holds the directory, `CorruptLog` for corruption without the
    /// override and `UnsupportedFormat` if a segment is from a newer format (in both cases
    /// nothing is modified), `Io` on filesystem failures.
    pub fn open(
        settings: WalSettings,
        min_next_lsn: Lsn,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        Self::open_with_fs(settings, min_next_lsn, Arc::new(StdFs))
    }

    /// Same as [`Wal::open`], on the filesystem `fs` instead of the real one: every file
    /// operation of the returned handle (and of its readers) goes through `fs`. For tests that
    /// simulate power loss or failing disks (the `testsuite` feature's `testing::SimFs`).
    ///
    /// # Errors
    /// As [`Wal::open`].
    pub fn open_with_fs(
        settings: WalSettings,
        min_next_lsn: Lsn,
        fs: Arc<dyn WalFs>,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let dir = settings.dir.clone();
        let created = fs.create_dir_all(&dir).map_err(WalError::io_at(&dir))?;
        if created && settings.sync_mode != SyncMode::Async {
            // A new directory's own name must be durable too, or a power loss can take it and
            // every entry in it.
            let parent = match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            sync_dir(&*fs, parent)?;
        }
        let lock = lock_dir(&*fs, &dir)?;
        let Recovered {
            mut segments,
            report,
        } = recovery::recover(&*fs, &dir, settings.sync_mode, settings.truncate_corrupt)?;

        let after_last = report.last_lsn.map(Lsn::saturating_next);
        let next_lsn = after_last.map_or(min_next_lsn, |after| after.max(min_next_lsn));
        let jumps = after_last.is_some_and(|after| next_lsn > after);
        let flags = if jumps { FLAG_LSN_JUMP } else { 0 };
        let (active, active_meta) =
            create_segment(&*fs, &dir, next_lsn, flags, settings.sync_mode)?;
        segments.push(active_meta);

        let last_epoch = segments.iter().rev().find_map(|segment| segment.last_epoch);
        let metrics = WalMetrics::new();
        metrics.segments.set(segments.len() as f64);
        info!(
            dir = %dir.display(),
            sync_mode = %settings.sync_mode,
            segments = report.segments,
            entries = report.entries,
            first_lsn = report.first_lsn.map(|lsn| lsn.0),
            last_lsn = report.last_lsn.map(|lsn| lsn.0),
            next_lsn = next_lsn.0,
            truncated = report.truncated.is_some(),
            corruption_overridden = report
                .truncated
                .as_ref()
                .is_some_and(|truncated| truncated.corruption_overridden),
            "wal recovered"
        );
        let wal = Wal {
            settings,
            fs,
            segments,
            active,
            buffer: Vec::new(),
            buffered_lsn: None,
            last_epoch,
            next_lsn,
            written_lsn: report.last_lsn,
            durable_lsn: report.last_lsn,
            poisoned: false,
            _lock: lock,
            metrics,
        };
        Ok((wal, report))
    }

    /// Returns an iterator over every entry with `lsn >= from_lsn`, in order, read from the
    /// segment files. Entries appended but not yet synced are not included. If `from_lsn` is
    /// older than the oldest kept entry, iteration starts at the oldest kept entry.
    ///
    /// # Errors
    /// `Io`, `Corrupt` or `UnsupportedFormat` if the first segment cannot be opened; the iterator
    /// yields the same errors for later segments (and then ends).
    pub fn read_from(&self, from_lsn: Lsn) -> Result<Entries<'_>, WalError> {
        Entries::new(&*self.fs, &self.segments, from_lsn)
    }

    /// Appends one entry to the write buffer of the active segment and returns its LSN. Not
    /// written, and not durable, until [`Wal::sync`].
    ///
    /// # Errors
    /// `PayloadTooLarge` above [`MAX_PAYLOAD_BYTES`], `LsnExhausted` at the reserved LSN,
    /// `Poisoned` after a failed write or sync.
    pub fn append(&mut self, epoch: Epoch, payload: &[u8]) -> Result<Lsn, WalError> {
        self.check_not_poisoned()?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(WalError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let lsn = self.next_lsn;
        if lsn == Lsn::RESERVED {
            return Err(WalError::LsnExhausted { lsn });
        }
        encode_entry(&mut self.buffer, epoch, lsn, payload);
        self.next_lsn = lsn.saturating_next();
        self.buffered_lsn = Some(lsn);
        self.last_epoch = Some(epoch);
        self.metrics.appends.increment(1);
        self.metrics
            .append_bytes
            .increment(encoded_entry_len(payload.len()));
        Ok(lsn)
    }

    /// Appends one entry at the LSN the primary gave it, for a standby that keeps a copy of the
    /// primary's log: the same LSNs and epochs, so that once promoted it continues the same
    /// log. Like [`Wal::append`], not durable until [`Wal::sync`].
    ///
    /// A standby whose stream starts above its log's end (the primary no longer keeps the
    /// entries in between, the catalog's flushes cover them) reopens its WAL with
    /// `min_next_lsn` at the stream's start instead, which declares the jump on disk.
    ///
    /// # Errors
    /// `AppendOutOfOrder` unless `lsn` is exactly [`Wal::next_lsn`] (a gap or a replay: the
    /// stream must be resubscribed), `EpochRegressed` if `epoch` is older than the last entry's
    /// (an entry from a deposed primary), and every error of [`Wal::append`]. Nothing is
    /// appended on error.
    pub fn append_at(&mut self, epoch: Epoch, lsn: Lsn, payload: &[u8]) -> Result<(), WalError> {
        self.check_not_poisoned()?;
        if lsn != self.next_lsn {
            return Err(WalError::AppendOutOfOrder {
                expected: self.next_lsn,
                found: lsn,
            });
        }
        if let Some(last) = self.last_epoch
            && epoch < last
        {
            return Err(WalError::EpochRegressed {
                last,
                found: epoch,
                lsn,
            });
        }
        let appended = self.append(epoch, payload)?;
        debug_assert_eq!(appended, lsn);
        Ok(())
    }

    /// Returns the epoch of the last entry appended (buffered or written), if any.
    pub fn last_epoch(&self) -> Option<Epoch> {
        self.last_epoch
    }

    /// Writes the buffered entries to the active segment and makes them durable per the sync
    /// mode (`fsync`: `sync_all`, `fdatasync`: `sync_data`, `async`: write only). Then, if the
    /// active segment has reached `segment_size_bytes`, seals it and starts a new one.
    ///
    /// Does nothing when no entry was appended since the last sync. A failed rotation is logged
    /// and retried at the next sync: the entries are already durable, so it is not an error
    /// (unless it left a partial segment file behind, which poisons the handle for the next call).
    ///
    /// # Errors
    /// `Io` if the write or the sync fails, after which the handle is poisoned; `Poisoned` if it
    /// already was.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_not_poisoned()?;
        if self.buffer.is_empty() {
            return Ok(());
        }
        let active = self
            .segments
            .last_mut()
            .expect("the active segment is always in the list");
        if let Err(source) = self.active.write_all(&self.buffer) {
            self.poisoned = true;
            return Err(WalError::Io {
                path: active.path.clone(),
                source,
            });
        }
        active.size_bytes += self.buffer.len() as u64;
        active.last_lsn = self.buffered_lsn;
        active.last_epoch = self.last_epoch;
        self.written_lsn = self.buffered_lsn;
        self.buffer.clear();
        self.buffer.shrink_to(RETAINED_BUFFER_BYTES);

        let started = Instant::now();
        if let Err(source) = sync_file(&*self.active, self.settings.sync_mode) {
            self.poisoned = true;
            return Err(WalError::Io {
                path: active.path.clone(),
                source,
            });
        }
        if self.settings.sync_mode != SyncMode::Async {
            self.metrics
                .fsync_seconds
                .record(started.elapsed().as_secs_f64());
        }
        self.durable_lsn = self.written_lsn;

        if active.size_bytes >= self.settings.segment_size_bytes
            && let Err(error) = self.rotate()
        {
            let attempted = self.settings.dir.join(segment_file_name(self.next_lsn));
            // If we cannot even tell, assume the worst.
            if self.fs.exists(&attempted).unwrap_or(true) {
                // A half-created segment we could not remove would sit inside the range the
                // active segment goes on to hold, and recovery would see a gap there.
                self.poisoned = true;
                error!(error = %error, file = %attempted.display(), "wal segment rotation failed and left a file behind");
            } else {
                warn!(error = %error, "wal segment rotation failed; retrying at the next sync");
            }
        }
        Ok(())
    }

    /// Seals the active segment (already synced by the caller) and starts the next one at
    /// `next_lsn`. Leaves the old segment active if the new one cannot be created.
    fn rotate(&mut self) -> Result<(), WalError> {
        debug_assert!(self.buffer.is_empty(), "rotation only follows a full sync");
        let (file, meta) = create_segment(
            &*self.fs,
            &self.settings.dir,
            self.next_lsn,
            0,
            self.settings.sync_mode,
        )?;
        debug!(file = %meta.path.display(), first_lsn = meta.first_lsn.0, "wal segment rotated");
        self.active = file;
        self.segments.push(meta);
        self.metrics.segments.set(self.segments.len() as f64);
        Ok(())
    }

    /// Returns the LSN the next [`Wal::append`] will assign.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Returns the last LSN written to the segment files (visible to [`Wal::read_from`]), not
    /// necessarily durable.
    pub fn written_lsn(&self) -> Option<Lsn> {
        self.written_lsn
    }

    /// Returns the last LSN made durable per the sync mode; entries up to it may be
    /// acknowledged. In `async` mode this equals [`Wal::written_lsn`].
    pub fn durable_lsn(&self) -> Option<Lsn> {
        self.durable_lsn
    }

    /// Returns the LSN of the oldest entry still kept, if any.
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.segments
            .iter()
            .find(|segment| segment.last_lsn.is_some())
            .map(|segment| segment.first_lsn)
    }

    /// Deletes the sealed segments whose every entry has an LSN below `lsn` (never the active
    /// segment), oldest first, and returns how many were deleted.
    ///
    /// The directory is fsynced after each deletion, so a crash leaves a suffix of the log and
    /// never a hole (which recovery would treat as corruption).
    ///
    /// # Errors
    /// `Io` if a deletion or directory sync fails; segments deleted before the failure stay
    /// deleted and are no longer listed, the others stay listed.
    pub fn remove_segments_below(&mut self, lsn: Lsn) -> Result<usize, WalError> {
        let detached = self.detach_segments_below(lsn);
        let (removed, failure) = detached.remove_counting();
        if failure.is_some() {
            // Put back what is still on disk, so it is listed (and retried) as before.
            self.segments
                .splice(0..0, detached.segments.into_iter().skip(removed));
            self.metrics.segments.set(self.segments.len() as f64);
        }
        if removed > 0 {
            debug!(removed, below_lsn = lsn.0, "wal segments removed");
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(removed),
        }
    }

    /// Takes the sealed segments whose every entry has an LSN below `lsn` out of the log
    /// (never the active segment) without touching the disk, so that a thread other than the
    /// writer's can delete them with [`DetachedSegments::remove`]: deleting a 64 MiB file and
    /// syncing the directory takes tens of milliseconds, which every write would wait for.
    /// Until they are deleted they stay on disk below the log; a restart lists them again.
    pub fn detach_segments_below(&mut self, lsn: Lsn) -> DetachedSegments {
        let sealed = self.segments.len() - 1;
        let count = self.segments[..sealed]
            .iter()
            // A sealed segment without entries covers nothing and is removable.
            .take_while(|segment| segment.last_lsn.is_none_or(|last| last < lsn))
            .count();
        let segments: Vec<SegmentMeta> = self.segments.drain(..count).collect();
        self.metrics.segments.set(self.segments.len() as f64);
        DetachedSegments {
            fs: self.fs.clone(),
            dir: self.settings.dir.clone(),
            segments,
        }
    }

    /// Returns the bytes the live segment files occupy (written bytes, not the unsynced buffer).
    pub fn disk_usage_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size_bytes).sum()
    }

    fn check_not_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned {
            let active = self
                .segments
                .last()
                .expect("the active segment is always in the list");
            return Err(WalError::Poisoned {
                path: active.path.clone(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.settings.dir)
            .field("sync_mode", &self.settings.sync_mode)
            .field("segments", &self.segments.len())
            .field("next_lsn", &self.next_lsn)
            .field("written_lsn", &self.written_lsn)
            .field("durable_lsn", &self.durable_lsn)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Sealed segments taken out of a [`Wal`] by [`Wal::detach_segments_below`], to delete.
pub struct DetachedSegments {
    fs: Arc<dyn WalFs>,
    dir: std::path::PathBuf,
    /// Oldest first.
    segments: Vec<SegmentMeta>,
}

impl DetachedSegments {
    /// Whether there is nothing to delete.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Deletes the segments oldest first, syncing the directory after each, so a crash leaves
    /// a suffix of the log and never a hole. Returns how many were deleted.
    ///
    /// # Errors
    /// `Io` for the first deletion or directory sync that failed; nothing after it is deleted.
    /// A caller that deletes later batches must stop after an error too, or the segments left
    /// here would become a hole in the log.
    pub fn remove(self) -> Result<usize, WalError> {
        let (removed, failure) = self.remove_counting();
        match failure {
            Some(error) => Err(error),
            None => Ok(removed),
        }
    }

    fn remove_counting(&self) -> (usize, Option<WalError>) {
        let mut removed = 0;
        for segment in &self.segments {
            if let Err(source) = self.fs.remove_file(&segment.path) {
                let error = WalError::Io {
                    path: segment.path.clone(),
                    source,
                };
                return (removed, Some(error));
            }
            removed += 1;
            if let Err(error) = sync_dir(&*self.fs, &self.dir) {
                return (removed, Some(error));
            }
        }
        (removed, None)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use proptest::prelude::*;

    use super::*;
    use crate::error::CorruptionKind;
    use crate::format::Entry;
    use crate::format::{ENTRY_HEADER_LEN, SegmentHeader, segment_file_name};
    use crate::test_support::*;
    use crate::testing::SimFs;

    #[test]
    fn test_should_be_movable_to_the_writer_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Wal>();
    }

    #[test]
    fn test_should_round_trip_entries_across_reopen() {
        for sync_mode in [SyncMode::Fsync, SyncMode::Fdatasync, SyncMode::Async] {
            let root = tempfile::tempdir().expect("tempdir");
            let dir = root.path().join("node").join("wal");
            let wal_settings = WalSettings {
                sync_mode,
                ..settings(&dir, BIG_SEGMENT)
            };
            let (mut wal, report) = Wal::open(wal_settings.clone(), Lsn(1)).expect("open");
            let empty = RecoveryReport {
                segments: 0,
                entries: 0,
                first_lsn: None,
                last_lsn: None,
                truncated: None,
            };
            assert_eq!(report, empty);
            append_entries(&mut wal, 10, 10);
            assert_eq!(wal.durable_lsn(), Some(Lsn(10)));
            assert_eq!(wal.next_lsn(), Lsn(11));
            drop(wal);

            let (wal, report) = Wal::open(wal_settings, Lsn(1)).expect("reopen");
            let recovered = RecoveryReport {
                segments: 1,
                entries: 10,
                first_lsn: Some(Lsn(1)),
                last_lsn: Some(Lsn(10)),
                truncated: None,
            };
            assert_eq!(report, recovered, "{sync_mode}");
            assert_eq!(read_all(&wal, Lsn(1)), expected(1..=10));
            assert_eq!(wal.next_lsn(), Lsn(11));
            assert_eq!(wal.durable_lsn(), Some(Lsn(10)));
            assert_eq!(wal.first_lsn(), Some(Lsn(1)));
        }
    }

    #[test]
    fn test_should_keep_written_and_durable_lsn_separate_from_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), BIG_SEGMENT);
        assert_eq!(wal.append(EPOCH, &payload_for(1)).expect("append"), Lsn(1));
        assert_eq!(wal.written_lsn(), None);
        assert_eq!(wal.durable_lsn(), None);
        assert!(
            read_all(&wal, Lsn(1)).is_empty(),
            "unsynced entries are not readable"
        );

        wal.sync().expect("sync");
        assert_eq!(wal.written_lsn(), Some(Lsn(1)));
        assert_eq!(wal.durable_lsn(), Some(Lsn(1)));
        assert_eq!(read_all(&wal, Lsn(1)), expected([1]));

        wal.append(EPOCH, &payload_for(2)).expect("append");
        assert_eq!(wal.durable_lsn(), Some(Lsn(1)));
        wal.sync().expect("sync");
        wal.sync().expect("a sync with nothing buffered is a no-op");
        assert_eq!(wal.durable_lsn(), Some(Lsn(2)));
    }

    #[test]
    fn test_should_rotate_segments_and_read_from_the_middle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 200);
        append_entries(&mut wal, 40, 2);
        let segments = segment_paths(dir.path());
        assert!(
            segments.len() >= 4,
            "expected several segments: {segments:?}"
        );
        let on_disk: u64 = segments
            .iter()
            .map(|path| fs::metadata(path).expect("metadata").len())
            .sum();
        assert_eq!(wal.disk_usage_bytes(), on_disk);

        for from in 0..=41 {
            let first_expected = from.max(1);
            assert_eq!(
                lsns_of(&read_all(&wal, Lsn(from))),
                (first_expected..=40).collect::<Vec<_>>(),
                "from {from}"
            );
        }
        assert_eq!(read_all(&wal, Lsn(23)), expected(23..=40));
        drop(wal);

        let (wal, report) = open(dir.path(), 200);
        assert_eq!(report.entries, 40);
        assert_eq!(report.truncated, None);
        assert_eq!(read_all(&wal, Lsn(17)), expected(17..=40));
        // Every segment is named after its first entry.
        for path in segment_paths(dir.path()) {
            if let Some(first) = entry_offsets(&path).first() {
                let bytes = fs::read(&path).expect("read");
                let lsn_at = *first as usize + 16;
                let lsn_bytes: [u8; 8] = bytes[lsn_at..lsn_at + 8].try_into().expect("8 bytes");
                assert_eq!(u64::from_le_bytes(lsn_bytes), first_lsn_of(&path));
            }
        }
    }

    #[test]
    fn test_should_ignore_garbage_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("notes.txt"), b"hello").expect("write");
        fs::write(dir.path().join("123.wal"), b"not a segment name").expect("write");
        fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let (mut wal, report) = open(dir.path(), BIG_SEGMENT);
        assert_eq!(report.entries, 0);
        assert_eq!(report.truncated, None);
        append_entries(&mut wal, 2, 1);
        drop(wal);
        let (wal, _) = open(dir.path(), BIG_SEGMENT);
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..=2));
        assert!(dir.path().join("notes.txt").exists());
        assert!(dir.path().join("123.wal").exists());
    }

    #[test]
    fn test_should_delete_a_header_only_tail_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), BIG_SEGMENT);
        append_entries(&mut wal, 3, 3);
        drop(wal);
        // A crash right after the fresh segment was created leaves it with a header only.
        let (wal, _) = open(dir.path(), BIG_SEGMENT);
        drop(wal);
        assert_eq!(segment_paths(dir.path()).len(), 2);

        let (wal, report) = open(dir.path(), BIG_SEGMENT);
        assert_eq!(report.truncated, None);
        assert_eq!(report.segments, 1);
        assert!(corrupt_paths(dir.path()).is_empty());
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..=3));
        assert_eq!(wal.next_lsn(), Lsn(4));
    }

    #[test]
    fn test_should_honor_min_next_lsn_after_every_segment_was_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 100);
        append_entries(&mut wal, 10, 1);
        drop(wal);
        // After a reopen the old segments are all sealed and can go.
        let (mut wal, _) = open(dir.path(), 100);
        let old_segments = segment_paths(dir.path()).len() - 1;
        assert_eq!(
            wal.remove_segments_below(Lsn(11)).expect("remove"),
            old_segments
        );
        assert_eq!(wal.first_lsn(), None);
        assert!(read_all(&wal, Lsn(0)).is_empty());
        drop(wal);

        let (mut wal, report) = Wal::open(settings(dir.path(), 100), Lsn(11)).expect("open");
        assert_eq!(report.entries, 0);
        assert_eq!(wal.next_lsn(), Lsn(11));
        assert_eq!(
            wal.append(EPOCH, &payload_for(11)).expect("append"),
            Lsn(11)
        );
        wal.sync().expect("sync");
        drop(wal);
        let (wal, _) = open(dir.path(), 100);
        assert_eq!(read_all(&wal, Lsn(0)), expected([11]));
        assert_eq!(wal.next_lsn(), Lsn(12));
    }

    #[test]
    fn test_should_accept_a_declared_lsn_jump_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), BIG_SEGMENT);
        append_entries(&mut wal, 5, 5);
        drop(wal);
        let (mut wal, _) = Wal::open(settings(dir.path(), BIG_SEGMENT), Lsn(100)).expect("open");
        assert_eq!(wal.next_lsn(), Lsn(100));
        append_entries(&mut wal, 2, 2);
        drop(wal);

        let (wal, report) = open(dir.path(), BIG_SEGMENT);
        assert_eq!(report.truncated, None);
        assert_eq!(report.entries, 7);
        assert_eq!(read_all(&wal, Lsn(0)), expected((1..=5).chain(100..=101)));
        assert_eq!(read_all(&wal, Lsn(50)), expected(100..=101));
        assert_eq!(wal.next_lsn(), Lsn(102));
    }

    #[test]
    fn test_should_detach_segments_that_another_thread_deletes_and_reopen_either_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 100);
        append_entries(&mut wal, 20, 1);
        let segments = segment_paths(dir.path());
        let keep_from = first_lsn_of(&segments[3]);
        let detached = wal.detach_segments_below(Lsn(keep_from));
        // Out of the log at once, still on disk until deleted.
        assert_eq!(wal.first_lsn(), Some(Lsn(keep_from)));
        assert_eq!(read_all(&wal, Lsn(0)), expected(keep_from..=20));
        assert_eq!(segment_paths(dir.path()), segments);
        // A crash now: the detached segments are an older suffix of the same log.
        drop(wal);
        let (wal, report) = open(dir.path(), 100);
        assert_eq!(report.truncated, None);
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..=20));
        drop(wal);

        let deleted = std::thread::spawn(move || detached.remove())
            .join()
            .expect("deleter")
            .expect("remove");
        assert_eq!(deleted, 3);
        assert_eq!(segment_paths(dir.path()), segments[3..]);
        let (mut wal, report) = open(dir.path(), 100);
        assert_eq!(report.truncated, None);
        assert_eq!(read_all(&wal, Lsn(0)), expected(keep_from..=20));
        assert!(wal.detach_segments_below(Lsn(0)).is_empty());
    }

    #[test]
    fn test_should_never_remove_the_active_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), BIG_SEGMENT);
        append_entries(&mut wal, 5, 5);
        assert_eq!(wal.remove_segments_below(Lsn(1000)).expect("remove"), 0);
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..=5));

        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 100);
        append_entries(&mut wal, 20, 1);
        let segments = segment_paths(dir.path());
        // Keep the segment that holds `keep_from`: only the two before it go.
        let keep_from = first_lsn_of(&segments[2]);
        let usage_before = wal.disk_usage_bytes();
        assert_eq!(
            wal.remove_segments_below(Lsn(keep_from)).expect("remove"),
            2
        );
        assert_eq!(segment_paths(dir.path()), segments[2..]);
        assert_eq!(wal.first_lsn(), Some(Lsn(keep_from)));
        assert!(wal.disk_usage_bytes() < usage_before);
        assert_eq!(read_all(&wal, Lsn(0)), expected(keep_from..=20));

        let removed = wal.remove_segments_below(Lsn(u64::MAX)).expect("remove");
        assert_eq!(removed, segments.len() - 3);
        assert_eq!(
            segment_paths(dir.path()),
            [segments[segments.len() - 1].clone()]
        );
        wal.append(EPOCH, &payload_for(21)).expect("append");
        wal.sync().expect("the active segment still takes appends");
    }

    #[test]
    fn test_should_append_at_the_given_lsn_and_refuse_gaps_and_older_epochs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(settings(dir.path(), 100), Lsn(10)).expect("open");
        assert_eq!(wal.last_epoch(), None);
        wal.append_at(Epoch(3), Lsn(10), b"a")
            .expect("append at the next lsn");
        let gap = wal.append_at(Epoch(3), Lsn(12), b"c");
        assert!(
            matches!(
                gap,
                Err(WalError::AppendOutOfOrder {
                    expected: Lsn(11),
                    found: Lsn(12)
                })
            ),
            "{gap:?}"
        );
        let replay = wal.append_at(Epoch(3), Lsn(10), b"a");
        assert!(
            matches!(replay, Err(WalError::AppendOutOfOrder { .. })),
            "{replay:?}"
        );
        let older = wal.append_at(Epoch(2), Lsn(11), b"b");
        assert!(
            matches!(
                older,
                Err(WalError::EpochRegressed {
                    last: Epoch(3),
                    found: Epoch(2),
                    lsn: Lsn(11)
                })
            ),
            "{older:?}"
        );
        assert_eq!(wal.next_lsn(), Lsn(11), "nothing appended on error");
        wal.append_at(Epoch(4), Lsn(11), b"b")
            .expect("a newer epoch");
        // Rotation: the epoch must be remembered by the sealed segment, not just the handle.
        for lsn in 12..=20 {
            wal.append_at(Epoch(4), Lsn(lsn), b"xxxxxxxxxxxxxxxx")
                .expect("append");
            wal.sync().expect("sync");
        }
        drop(wal);

        let (mut wal, _) = open(dir.path(), 100);
        assert_eq!(wal.last_epoch(), Some(Epoch(4)));
        let older = wal.append_at(Epoch(3), Lsn(21), b"x");
        assert!(
            matches!(older, Err(WalError::EpochRegressed { .. })),
            "{older:?}"
        );
        wal.append_at(Epoch(4), Lsn(21), b"x").expect("append");
        wal.sync().expect("sync");
        let read: Vec<(u64, u64)> = wal
            .read_from(Lsn(0))
            .expect("read")
            .map(|entry| entry.expect("entry"))
            .map(|entry| (entry.epoch.0, entry.lsn.0))
            .collect();
        let mut expected_read = vec![(3, 10)];
        expected_read.extend((11..=21).map(|lsn| (4, lsn)));
        assert_eq!(read, expected_read);
    }

    #[test]
    fn test_should_refuse_a_second_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _) = open(dir.path(), BIG_SEGMENT);
        let second = Wal::open(settings(dir.path(), BIG_SEGMENT), Lsn(1));
        assert!(matches!(second, Err(WalError::Locked { .. })), "{second:?}");
        drop(wal);
        let (_wal, _) = open(dir.path(), BIG_SEGMENT);
    }

    #[test]
    fn test_should_refuse_a_segment_from_a_newer_format_without_touching_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut future = SegmentHeader {
            first_lsn: Lsn(1),
            flags: 0,
        }
        .encode();
        future[8..12].copy_from_slice(&9u32.to_le_bytes());
        let crc = crc32fast::hash(&future[..24]);
        future[24..28].copy_from_slice(&crc.to_le_bytes());
        let path = dir.path().join(segment_file_name(Lsn(1)));
        fs::write(&path, future).expect("write");

        let result = Wal::open(settings(dir.path(), BIG_SEGMENT), Lsn(1));
        assert!(
            matches!(result, Err(WalError::UnsupportedFormat { version: 9, .. })),
            "{result:?}"
        );
        assert_eq!(fs::read(&path).expect("read"), future);
        assert_eq!(segment_paths(dir.path()), [path]);
        assert!(corrupt_paths(dir.path()).is_empty());
    }

    #[test]
    fn test_should_report_corruption_found_while_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 100);
        append_entries(&mut wal, 10, 1);
        let first = &segment_paths(dir.path())[0];
        let second_entry = entry_offsets(first)[1];
        flip_byte(first, second_entry + ENTRY_HEADER_LEN);

        let results: Vec<_> = wal.read_from(Lsn(1)).expect("open").collect();
        assert_eq!(results.len(), 2, "one entry, then the error, then the end");
        assert!(matches!(&results[0], Ok(entry) if entry.lsn == Lsn(1)));
        match &results[1] {
            Err(WalError::Corrupt { path, offset, kind }) => {
                assert_eq!(path, first);
                assert_eq!(*offset, second_entry);
                assert_eq!(*kind, CorruptionKind::ChecksumMismatch);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn test_should_refuse_the_reserved_lsn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let last = Lsn(u64::MAX - 1);
        let (mut wal, _) = Wal::open(settings(dir.path(), BIG_SEGMENT), last).expect("open");
        assert_eq!(wal.append(EPOCH, b"last").expect("append"), last);
        let exhausted = wal.append(EPOCH, b"one too many");
        assert!(
            matches!(
                exhausted,
                Err(WalError::LsnExhausted { lsn: Lsn::RESERVED })
            ),
            "{exhausted:?}"
        );
        wal.sync().expect("sync");
        drop(wal);
        let (mut wal, report) = open(dir.path(), BIG_SEGMENT);
        assert_eq!(report.last_lsn, Some(last));
        assert!(matches!(
            wal.append(EPOCH, b"x"),
            Err(WalError::LsnExhausted { .. })
        ));
    }

    /// Opens a WAL in `/wal` on the simulated filesystem `fs`.
    fn open_sim(
        fs: &SimFs,
        sync_mode: SyncMode,
        segment_size_bytes: u64,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let wal_settings = WalSettings {
            sync_mode,
            ..settings(Path::new("/wal"), segment_size_bytes)
        };
        Wal::open_with_fs(wal_settings, Lsn(1), Arc::new(fs.clone()))
    }

    #[test]
    fn test_should_keep_exactly_the_synced_entries_after_a_power_cut() {
        for sync_mode in [SyncMode::Fsync, SyncMode::Fdatasync] {
            let fs = SimFs::new();
            let (mut wal, _) = open_sim(&fs, sync_mode, 200).expect("open");
            // Small segments: the synced entries span rotated segments, whose names must be
            // durable too.
            append_entries(&mut wal, 30, 2);
            for lsn in 31..=33 {
                wal.append(EPOCH, &payload_for(lsn)).expect("append");
            }
            assert_eq!(wal.durable_lsn(), Some(Lsn(30)));
            assert!(fs.list_files(Path::new("/wal")).len() > 4, "{sync_mode}");

            fs.power_cut();
            drop(wal);
            let (wal, report) = open_sim(&fs, sync_mode, 200).expect("reopen");
            assert_eq!(report.truncated, None, "{sync_mode}");
            assert_eq!(read_all(&wal, Lsn(0)), expected(1..=30), "{sync_mode}");
            assert_eq!(wal.next_lsn(), Lsn(31), "{sync_mode}");
        }
    }

    #[test]
    fn test_should_lose_entries_reported_durable_in_async_mode_after_a_power_cut() {
        // The harness must be able to fail: `async` acknowledges before the disk has the
        // entries, and a power cut takes them, whether or not the segment's name is durable.
        for name_durable in [false, true] {
            let fs = SimFs::new();
            let (mut wal, _) = open_sim(&fs, SyncMode::Async, BIG_SEGMENT).expect("open");
            if name_durable {
                fs.sync_dir(Path::new("/")).expect("sync root");
                fs.sync_dir(Path::new("/wal")).expect("sync wal dir");
            }
            append_entries(&mut wal, 10, 2);
            assert_eq!(wal.durable_lsn(), Some(Lsn(10)));
            assert_eq!(read_all(&wal, Lsn(0)), expected(1..=10));

            fs.power_cut();
            drop(wal);
            let (wal, report) = open_sim(&fs, SyncMode::Async, BIG_SEGMENT).expect("reopen");
            let survived = read_all(&wal, Lsn(0));
            assert!(
                survived.is_empty(),
                "async entries survived (name durable: {name_durable}): {survived:?}"
            );
            assert_eq!(report.entries, 0);
        }
    }

    #[test]
    fn test_should_keep_what_was_synced_before_a_failed_sync() {
        let fs = SimFs::new();
        let (mut wal, _) = open_sim(&fs, SyncMode::Fdatasync, BIG_SEGMENT).expect("open");
        append_entries(&mut wal, 4, 2);
        fs.set_fail_syncs(true);
        wal.append(EPOCH, &payload_for(5)).expect("append");
        let failed = wal.sync();
        assert!(matches!(failed, Err(WalError::Io { .. })), "{failed:?}");
        assert_eq!(wal.durable_lsn(), Some(Lsn(4)));
        let poisoned = wal.append(EPOCH, &payload_for(6));
        assert!(
            matches!(poisoned, Err(WalError::Poisoned { .. })),
            "{poisoned:?}"
        );

        fs.power_cut();
        fs.set_fail_syncs(false);
        drop(wal);
        let (wal, _) = open_sim(&fs, SyncMode::Fdatasync, BIG_SEGMENT).expect("reopen");
        assert_eq!(read_all(&wal, Lsn(0)), expected(1..=4));
    }

    #[test]
    fn test_should_refuse_a_second_owner_on_the_simulated_filesystem_until_the_power_cut() {
        let fs = SimFs::new();
        let (_wal, _) = open_sim(&fs, SyncMode::Fdatasync, BIG_SEGMENT).expect("open");
        let second = open_sim(&fs, SyncMode::Fdatasync, BIG_SEGMENT);
        assert!(matches!(second, Err(WalError::Locked { .. })), "{second:?}");
        // A power cut ends the process that held the lock.
        fs.power_cut();
        open_sim(&fs, SyncMode::Fdatasync, BIG_SEGMENT).expect("open after the cut");
    }

    /// One step of a writer's life in the group-commit property test.
    #[derive(Debug, Clone)]
    enum Action {
        /// Append an entry with a payload of this length.
        Append(usize),
        /// One group commit.
        Sync,
        /// Drop the segments below this fraction (in percent) of the durable LSN, as after a
        /// flush.
        Trim(u64),
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            6 => (0usize..40).prop_map(Action::Append),
            3 => Just(Action::Sync),
            1 => (0u64..=100).prop_map(Action::Trim),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// A writer appends, group-commits and trims at random; the power is cut at a random
        /// point, and each file keeps a random part of what was written to it after its last
        /// sync (a torn write). Reopening never sees corruption, every acknowledged entry (up
        /// to `durable_lsn`) that was not trimmed is there, and what is there is exactly what
        /// was appended.
        #[test]
        fn test_should_keep_every_acknowledged_entry_across_a_power_cut(
            actions in prop::collection::vec(action(), 1..60),
            segment_size in 64u64..400,
            fsync in any::<bool>(),
            kept_fractions in prop::collection::vec(0u64..=100, 8),
        ) {
            let sync_mode = if fsync { SyncMode::Fsync } else { SyncMode::Fdatasync };
            let fs = SimFs::new();
            let (mut wal, _) = open_sim(&fs, sync_mode, segment_size).expect("open");
            let mut appended = Vec::new();
            let mut trimmed_below = Lsn(0);
            for action in actions {
                match action {
                    Action::Append(len) => {
                        let payload = vec![appended.len() as u8; len];
                        let lsn = wal.append(EPOCH, &payload).expect("append");
                        appended.push(Entry { epoch: EPOCH, lsn, payload });
                    }
                    Action::Sync => wal.sync().expect("sync"),
                    Action::Trim(percent) => {
                        let durable = wal.durable_lsn().map_or(0, |lsn| lsn.0);
                        let below = Lsn(durable * percent / 100);
                        wal.remove_segments_below(below).expect("trim");
                        trimmed_below = trimmed_below.max(below);
                    }
                }
            }
            let acknowledged = wal.durable_lsn();

            let mut fractions = kept_fractions.iter().cycle();
            fs.power_cut_keeping(|_, unsynced| {
                unsynced * fractions.next().copied().unwrap_or(0) / 100
            });
            drop(wal);
            let reopened = open_sim(&fs, sync_mode, segment_size);
            let (wal, report) = match reopened {
                Ok(opened) => opened,
                Err(error) => return Err(TestCaseError::fail(format!("reopen failed: {error}"))),
            };
            if let Some(truncated) = &report.truncated {
                prop_assert!(!truncated.corruption_overridden);
            }
            let survived = read_all(&wal, Lsn(0));
            for entry in &survived {
                let index = entry.lsn.0 as usize - 1;
                prop_assert_eq!(Some(entry), appended.get(index));
            }
            let lsns = lsns_of(&survived);
            prop_assert!(lsns.windows(2).all(|pair| pair[1] == pair[0] + 1), "{:?}", lsns);
            if let Some(acknowledged) = acknowledged {
                for lsn in trimmed_below.0.max(1)..=acknowledged.0 {
                    prop_assert!(lsns.contains(&lsn), "acknowledged lsn {} lost: {:?}", lsn, lsns);
                }
            }
        }
    }
}
