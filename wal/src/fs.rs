//! The WAL's file I/O seam: [`WalFs`] (directory operations) and [`WalFile`] (one open file),
//! with [`StdFs`], the `std::fs` implementation every production `Wal` uses.
//!
//! Everything the WAL does to the disk goes through these two traits, so a test can replace the
//! disk (see `testing::SimFs`, which forgets unsynced bytes on a simulated power cut). The
//! traits are deliberately thin: each method maps to exactly one `std::fs` call (one syscall in
//! the common case), and the WAL keeps the policy (which sync, in which order) on its side.
//!
//! Cost: the `Wal` holds its active segment as a `Box<dyn WalFile>`, so a group commit pays one
//! virtual call for its `write_all` and one for its `sync_data`; appends never touch the seam.
//! Readers wrap the file in a `BufReader`, so reads pay one virtual call per buffer refill.

use std::any::Any;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::segment::LOCK_FILE_NAME;

/// One open file of the WAL directory: a segment being appended to, read, truncated or copied.
///
/// Reads and writes share one cursor, like a `std::fs::File` (a freshly created file starts at
/// offset 0; `set_len` does not move it).
pub trait WalFile: Read + Seek + Send + fmt::Debug {
    /// Writes all of `bytes` at the cursor (the end of the file, in every use the WAL makes).
    ///
    /// # Errors
    /// Any I/O error; part of `bytes` may have been written.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Makes the written bytes and the file size durable (`fdatasync`).
    ///
    /// # Errors
    /// Any I/O error; the written bytes may or may not be durable.
    fn sync_data(&self) -> io::Result<()>;

    /// Makes the written bytes and all metadata durable (`fsync`).
    ///
    /// # Errors
    /// Any I/O error; the written bytes may or may not be durable.
    fn sync_all(&self) -> io::Result<()>;

    /// Truncates or extends the file to `len` bytes. Not durable until synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Returns the current length of the file in bytes.
    ///
    /// # Errors
    /// Any I/O error.
    fn size_bytes(&self) -> io::Result<u64>;
}

/// A name in a WAL directory, as returned by [`WalFs::list_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalDirEntry {
    /// The name inside the directory (not a path).
    pub file_name: OsString,
    /// True for a regular file; false for directories and anything else.
    pub is_file: bool,
}

/// The exclusive lock on a WAL directory, held until this value is dropped.
///
/// Opaque: it only keeps alive whatever the [`WalFs`] implementation needs to hold the lock
/// (for [`StdFs`], the locked `wal.lock` file).
pub struct WalDirLock {
    _guard: Box<dyn Any + Send>,
}

impl WalDirLock {
    /// Wraps the value that holds a lock; dropping the `WalDirLock` drops it.
    pub fn new(guard: impl Any + Send) -> Self {
        Self {
            _guard: Box::new(guard),
        }
    }
}

impl fmt::Debug for WalDirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalDirLock").finish_non_exhaustive()
    }
}

/// The filesystem a WAL lives on. Shared as `Arc<dyn WalFs>`; see
/// [`crate::Wal::open_with_fs`].
///
/// Durability contract (what the WAL relies on, and what a simulation must honor): bytes
/// written to a file are durable once [`WalFile::sync_data`] or [`WalFile::sync_all`] returned
/// `Ok`; a created, renamed or removed name is durable once [`WalFs::sync_dir`] of its directory
/// returned `Ok` afterwards. Anything else may be lost by a power cut.
pub trait WalFs: Send + Sync + fmt::Debug {
    /// Creates `dir` and any missing parents. Returns true if `dir` did not exist before (so
    /// that the caller makes the new name durable by syncing the parent).
    ///
    /// # Errors
    /// Any I/O error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<bool>;

    /// Takes the exclusive lock on the WAL directory `dir` without blocking. Returns `None` if
    /// another owner holds it.
    ///
    /// # Errors
    /// Any I/O error other than "held by someone else".
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<WalDirLock>>;

    /// Lists the names in `dir`, in no particular order.
    ///
    /// # Errors
    /// Any I/O error.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<WalDirEntry>>;

    /// Creates a new, empty file for writing; fails with `AlreadyExists` if the name is taken.
    ///
    /// # Errors
    /// Any I/O error.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;

    /// Opens an existing file for reading.
    ///
    /// # Errors
    /// Any I/O error (`NotFound` if it does not exist).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;

    /// Opens an existing file for writing (to truncate it), without truncating it.
    ///
    /// # Errors
    /// Any I/O error (`NotFound` if it does not exist).
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;

    /// Returns whether `path` names anything.
    ///
    /// # Errors
    /// Any I/O error other than "not found".
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Renames `from` to `to`, replacing `to` if it exists. Not durable until the directory is
    /// synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file. Not durable until the directory is synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the names created, renamed or removed in `dir` durable (`fsync` of the directory).
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real filesystem, through `std::fs`. The default of [`crate::Wal::open`].
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

/// A `std::fs::File` as a [`WalFile`]: every method is the `File` method of the same name.
#[derive(Debug)]
struct StdFile(File);

impl Read for StdFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for StdFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl WalFile for StdFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl WalFs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<bool> {
        let created = !dir.is_dir();
        fs::create_dir_all(dir)?;
        Ok(created)
    }

    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<WalDirLock>> {
        // An advisory `flock` on a file inside the directory: released by the kernel when the
        // process dies, so a crashed owner never leaves a stale lock behind.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE_NAME))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(WalDirLock::new(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(source),
        }
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<WalDirEntry>> {
        let mut entries = Vec::new();
        for dir_entry in fs::read_dir(dir)? {
            let dir_entry = dir_entry?;
            entries.push(WalDirEntry {
                is_file: dir_entry.file_type()?.is_file(),
                file_name: dir_entry.file_name(),
            });
        }
        Ok(entries)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(StdFile(File::open(path)?)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
