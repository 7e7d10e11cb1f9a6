//! Segment files as filesystem objects: listing, creating, syncing, moving aside, and the
//! directory lock.
//!
//! Every change to the WAL directory goes through here. Hazard: a created, renamed or deleted
//! name is durable only once the directory itself is fsynced; each function says whether it does
//! that or leaves it to the caller (who may batch several changes under one directory fsync).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::WalError;
use crate::format::{SegmentHeader, parse_segment_file_name, segment_file_name};
use crate::lsn::Lsn;
use crate::settings::SyncMode;

/// Name of the lock file inside the WAL directory.
pub(crate) const LOCK_FILE_NAME: &str = "wal.lock";
/// Suffix given to segments recovery moved aside.
pub(crate) const CORRUPT_SUFFIX: &str = ".corrupt";

/// What the writer knows about one live segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    /// LSN of its first entry (from its name and header).
    pub(crate) first_lsn: Lsn,
    /// LSN of its last written entry; `None` while it holds none.
    pub(crate) last_lsn: Option<Lsn>,
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
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<ListedSegment>, WalError> {
    let mut segments = Vec::new();
    for dir_entry in fs::read_dir(dir).map_err(WalError::io_at(dir))? {
        let dir_entry = dir_entry.map_err(WalError::io_at(dir))?;
        let path = dir_entry.path();
        let file_name = dir_entry.file_name();
        let name = file_name.to_string_lossy();
        let is_file = dir_entry
            .file_type()
            .map_err(WalError::io_at(&path))?
            .is_file();
        match parse_segment_file_name(&name) {
            Some(first_lsn) if is_file => segments.push(ListedSegment { first_lsn, path }),
            _ if name == LOCK_FILE_NAME || name.ends_with(CORRUPT_SUFFIX) => {}
            _ => warn!(file = %path.display(), "ignoring unexpected file in wal directory"),
        }
    }
    segments.sort_by_key(|segment| segment.first_lsn);
    Ok(segments)
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
    dir: &Path,
    first_lsn: Lsn,
    flags: u32,
    sync_mode: SyncMode,
) -> Result<(File, SegmentMeta), WalError> {
    let path = dir.join(segment_file_name(first_lsn));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(WalError::io_at(&path))?;
    let header = SegmentHeader { first_lsn, flags }.encode();
    let written = file
        .write_all(&header)
        .and_then(|()| sync_file(&file, sync_mode))
        .map_err(WalError::io_at(&path))
        .and_then(|()| match sync_mode {
            SyncMode::Async => Ok(()),
            SyncMode::Fsync | SyncMode::Fdatasync => sync_dir(dir),
        });
    if let Err(error) = written {
        if let Err(remove_error) = fs::remove_file(&path) {
            warn!(file = %path.display(), error = %remove_error, "could not remove half-created wal segment");
        }
        return Err(error);
    }
    let meta = SegmentMeta {
        first_lsn,
        last_lsn: None,
        path,
        size_bytes: header.len() as u64,
    };
    Ok((file, meta))
}

/// Makes `file`'s written bytes durable per `sync_mode`.
pub(crate) fn sync_file(file: &File, sync_mode: SyncMode) -> io::Result<()> {
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
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(WalError::io_at(dir))
}

/// Renames a segment to `<name>.corrupt` (or `<name>.<n>.corrupt` if that exists, so an earlier
/// moved-aside file is never overwritten) and returns the new path. Does not sync the directory.
///
/// # Errors
/// `Io` if the rename fails.
pub(crate) fn move_aside(path: &Path) -> Result<PathBuf, WalError> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut target = path.with_file_name(format!("{name}{CORRUPT_SUFFIX}"));
    let mut attempt = 1u32;
    while target.exists() {
        target = path.with_file_name(format!("{name}.{attempt}{CORRUPT_SUFFIX}"));
        attempt += 1;
    }
    fs::rename(path, &target).map_err(WalError::io_at(path))?;
    Ok(target)
}

/// Takes the exclusive lock on the WAL directory; it is held until the returned file is dropped.
///
/// # Errors
/// `Locked` if another owner holds it, `Io` if the lock file cannot be opened.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(WalError::io_at(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(WalError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(WalError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_never_overwrite_an_earlier_moved_aside_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment = dir.path().join(segment_file_name(Lsn(7)));
        let mut moved = Vec::new();
        for round in 0..3u8 {
            fs::write(&segment, [round]).expect("write");
            moved.push(move_aside(&segment).expect("move aside"));
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
        let listed: Vec<Lsn> = list_segments(dir.path())
            .expect("list")
            .into_iter()
            .map(|segment| segment.first_lsn)
            .collect();
        assert_eq!(listed, [Lsn(9), Lsn(100)]);
    }
}
