//! Segment files as filesystem objects: listing, creating, syncing, moving and copying aside, and
//! the directory lock, all on the injected [`WalFs`].
//!
//! Every change to the WAL directory goes through here (or through `WalFs` calls in `wal.rs` and
//! `recovery.rs` that delete or truncate). Hazard: a created, renamed or deleted
//! name is durable only once the directory itself is fsynced; each function says whether it does
//! that or leaves it to the caller (who may batch several changes under one directory fsync).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::WalError;
use crate::format::{
    SEGMENT_EXTENSION, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_file_name,
    segment_file_name,
};
use crate::fs::{WalDirLock, WalFile, WalFs};
use crate::lsn::{Epoch, Lsn};
use crate::settings::SyncMode;

/// Name of the lock file inside the WAL directory.
pub(crate) const LOCK_FILE_NAME: &str = "wal.lock";
/// Suffix given to segments recovery moved aside and to copies of segments it cut.
pub(crate) const CORRUPT_SUFFIX: &str = ".corrupt";
/// Chunk size for copying a segment aside.
const COPY_CHUNK_BYTES: usize = 256 * 1024;

/// What the writer knows about one live segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    /// LSN of its first entry (from its name and header).
    pub(crate) first_lsn: Lsn,
    /// LSN of its last written entry; `None` while it holds none.
    pub(crate) last_lsn: Option<Lsn>,
    /// Epoch of its last written entry; `None` while it holds none.
    pub(crate) last_epoch: Option<Epoch>,
    pub(crate) path: PathBuf,
    /// Verified (sealed) or written (active) length; readers never go past it.
    pub(crate) size_bytes: u64,
}

/// A file in the WAL directory whose name is a segment name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedSegment {
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
}

/// Lists the segment files of `dir` in LSN order. Other files are skipped; unexpected ones are
/// logged.
///
/// # Errors
/// `Io` if the directory cannot be read.
pub(crate) fn list_segments(fs: &dyn WalFs, dir: &Path) -> Result<Vec<ListedSegment>, WalError> {
    let mut segments = Vec::new();
    for dir_entry in fs.list_dir(dir).map_err(WalError::io_at(dir))? {
        let path = dir.join(&dir_entry.file_name);
        let name = dir_entry.file_name.to_string_lossy();
        match parse_segment_file_name(&name) {
            Some(first_lsn) if dir_entry.is_file => {
                segments.push(ListedSegment { first_lsn, path });
            }
            _ if name == LOCK_FILE_NAME || name.ends_with(CORRUPT_SUFFIX) => {}
            // The node keeps small files of its own here (its gossip generation, the marker
            // of who wrote the log); only something that claims to be a segment is suspect.
            _ if !name.ends_with(SEGMENT_EXTENSION) => {}
            _ => warn!(file = %path.display(), "ignoring unexpected file in wal directory"),
        }
    }
    segments.sort_by_key(|segment| segment.first_lsn);
    Ok(segments)
}

/// What a WAL directory holds, as read without opening, locking or repairing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalSummary {
    /// Segment files.
    pub segments: usize,
    /// Bytes past the segment headers: entries, intact or not. Zero means the log holds none.
    pub entry_bytes: u64,
}

/// Summarizes the WAL in `dir` by listing it, and changes nothing: for a node that must not
/// open a log (recovery may cut it) but must know whether it holds entries. A missing
/// directory holds none.
///
/// # Errors
/// `Io` if the directory or a segment's metadata cannot be read.
pub fn inspect(dir: &Path) -> Result<WalSummary, WalError> {
    if !dir.is_dir() {
        return Ok(WalSummary::default());
    }
    let fs = crate::fs::StdFs;
    let mut summary = WalSummary::default();
    for segment in list_segments(&fs, dir)? {
        let len = std::fs::metadata(&segment.path)
            .map_err(WalError::io_at(&segment.path))?
            .len();
        summary.segments += 1;
        summary.entry_bytes += len.saturating_sub(SEGMENT_HEADER_LEN);
    }
    Ok(summary)
}

/// Creates the segment whose first entry will be `first_lsn`, writes its header, and makes file
/// and name durable per `sync_mode` (nothing is synced in `async` mode).
///
/// Refuses to overwrite an existing file. On failure the half-created file is removed (it holds
/// no entries).
///
/// # Errors
/// `Io` if the file cannot be created, written or synced, or the directory not synced.
pub(crate) fn create_segment(
    fs: &dyn WalFs,
    dir: &Path,
    first_lsn: Lsn,
    flags: u32,
    sync_mode: SyncMode,
) -> Result<(Box<dyn WalFile>, SegmentMeta), WalError> {
    let path = dir.join(segment_file_name(first_lsn));
    let mut file = fs.create_new(&path).map_err(WalError::io_at(&path))?;
    let header = SegmentHeader { first_lsn, flags }.encode();
    let written = file
        .write_all(&header)
        .and_then(|()| sync_file(&*file, sync_mode))
        .map_err(WalError::io_at(&path))
        .and_then(|()| match sync_mode {
            SyncMode::Async => Ok(()),
            SyncMode::Fsync | SyncMode::Fdatasync => sync_dir(fs, dir),
        });
    if let Err(error) = written {
        if let Err(remove_error) = fs.remove_file(&path) {
            warn!(file = %path.display(), error = %remove_error, "could not remove half-created wal segment");
        }
        return Err(error);
    }
    let meta = SegmentMeta {
        first_lsn,
        last_lsn: None,
        last_epoch: None,
        path,
        size_bytes: header.len() as u64,
    };
    Ok((file, meta))
}

/// Makes `file`'s written bytes durable per `sync_mode`.
pub(crate) fn sync_file(file: &dyn WalFile, sync_mode: SyncMode) -> io::Result<()> {
    match sync_mode {
        SyncMode::Fsync => file.sync_all(),
        SyncMode::Fdatasync => file.sync_data(),
        SyncMode::Async => Ok(()),
    }
}

/// Fsyncs the directory so that names created, renamed or deleted in it are durable.
///
/// # Errors
/// `Io` if the directory cannot be opened or synced.
pub(crate) fn sync_dir(fs: &dyn WalFs, dir: &Path) -> Result<(), WalError> {
    fs.sync_dir(dir).map_err(WalError::io_at(dir))
}

/// Returns `<name>.corrupt` next to `path`, or `<name>.<n>.corrupt` for the first free `n`, so
/// that an earlier moved-aside file or copy is never overwritten.
fn free_corrupt_name(fs: &dyn WalFs, path: &Path) -> Result<PathBuf, WalError> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut target = path.with_file_name(format!("{name}{CORRUPT_SUFFIX}"));
    let mut attempt = 1u32;
    while fs.exists(&target).map_err(WalError::io_at(&target))? {
        target = path.with_file_name(format!("{name}.{attempt}{CORRUPT_SUFFIX}"));
        attempt += 1;
    }
    Ok(target)
}

/// Renames a segment to `<name>.corrupt` (or `<name>.<n>.corrupt` if that exists, so an earlier
/// moved-aside file is never overwritten) and returns the new path. Does not sync the directory.
///
/// # Errors
/// `Io` if the rename fails.
pub(crate) fn move_aside(fs: &dyn WalFs, path: &Path) -> Result<PathBuf, WalError> {
    let target = free_corrupt_name(fs, path)?;
    fs.rename(path, &target).map_err(WalError::io_at(path))?;
    Ok(target)
}

/// Copies a segment, byte for byte, to a new `<name>.corrupt` (or `<name>.<n>.corrupt`) file,
/// syncs the copy, and returns its path. Used before recovery truncates a segment on the
/// operator's override, so that the bytes it cuts off still exist somewhere. Does not sync the
/// directory: the caller does, before it destroys anything.
///
/// # Errors
/// `Io` if the segment cannot be read or the copy written or synced; a partial copy is removed.
pub(crate) fn copy_aside(fs: &dyn WalFs, path: &Path) -> Result<PathBuf, WalError> {
    let target = free_corrupt_name(fs, path)?;
    let mut source = fs.open_read(path).map_err(WalError::io_at(path))?;
    let mut copy = fs.create_new(&target).map_err(WalError::io_at(&target))?;
    let mut chunk = vec![0u8; COPY_CHUNK_BYTES];
    let copied = loop {
        let read = match source.read(&mut chunk) {
            Ok(0) => break copy.sync_all().map_err(WalError::io_at(&target)),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                break Err(WalError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if let Err(source) = copy.write_all(&chunk[..read]) {
            break Err(WalError::Io {
                path: target.clone(),
                source,
            });
        }
    };
    if let Err(error) = copied {
        // A half copy would pose as the damaged bytes; the original is still intact.
        if let Err(remove_error) = fs.remove_file(&target) {
            warn!(file = %target.display(), error = %remove_error, "could not remove partial copy of a wal segment");
        }
        return Err(error);
    }
    Ok(target)
}

/// Takes the exclusive lock on the WAL directory; it is held until the returned value is
/// dropped.
///
/// # Errors
/// `Locked` if another owner holds it, `Io` if the lock cannot be taken.
pub(crate) fn lock_dir(fs: &dyn WalFs, dir: &Path) -> Result<WalDirLock, WalError> {
    match fs.try_lock_dir(dir) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(WalError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(source) => Err(WalError::Io {
            path: dir.join(LOCK_FILE_NAME),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::fs::StdFs;

    #[test]
    fn test_should_inspect_without_changing_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        assert_eq!(inspect(&missing).expect("inspect"), WalSummary::default());
        assert!(!missing.exists(), "inspect creates nothing");
        let header_only = vec![0u8; SEGMENT_HEADER_LEN as usize];
        fs::write(dir.path().join(segment_file_name(Lsn(1))), &header_only).expect("write");
        fs::write(dir.path().join("node.generation"), b"7").expect("write");
        assert_eq!(
            inspect(dir.path()).expect("inspect"),
            WalSummary {
                segments: 1,
                entry_bytes: 0
            }
        );
        let mut with_entries = header_only.clone();
        with_entries.extend_from_slice(&[1; 100]);
        fs::write(dir.path().join(segment_file_name(Lsn(9))), &with_entries).expect("write");
        let summary = inspect(dir.path()).expect("inspect");
        assert_eq!((summary.segments, summary.entry_bytes), (2, 100));
        assert!(!dir.path().join(LOCK_FILE_NAME).exists(), "no lock taken");
    }

    #[test]
    fn test_should_never_overwrite_an_earlier_moved_aside_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment = dir.path().join(segment_file_name(Lsn(7)));
        let mut moved = Vec::new();
        for round in 0..3u8 {
            fs::write(&segment, [round]).expect("write");
            moved.push(move_aside(&StdFs, &segment).expect("move aside"));
        }
        let names: Vec<String> = moved
            .iter()
            .map(|path| {
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "00000000000000000007.wal.corrupt",
                "00000000000000000007.wal.1.corrupt",
                "00000000000000000007.wal.2.corrupt",
            ]
        );
        for (round, path) in moved.iter().enumerate() {
            assert_eq!(fs::read(path).expect("read"), [round as u8]);
        }
        assert!(!segment.exists());
    }

    #[test]
    fn test_should_list_segments_in_lsn_order_and_skip_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            segment_file_name(Lsn(100)),
            segment_file_name(Lsn(9)),
            "notes.txt".to_owned(),
            "9.wal".to_owned(),
            format!("{}{CORRUPT_SUFFIX}", segment_file_name(Lsn(5))),
            LOCK_FILE_NAME.to_owned(),
        ] {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        fs::create_dir(dir.path().join(segment_file_name(Lsn(50)))).expect("mkdir");
        let listed: Vec<Lsn> = list_segments(&StdFs, dir.path())
            .expect("list")
            .into_iter()
            .map(|segment| segment.first_lsn)
            .collect();
        assert_eq!(listed, [Lsn(9), Lsn(100)]);
    }
}
