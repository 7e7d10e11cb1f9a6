//! Test helpers for the WAL and the crates built on it (cargo feature `testsuite`; always
//! compiled in this crate's own tests): [`SimFs`], an in-memory [`WalFs`] that forgets whatever
//! was not made durable when the power is cut.
//!
//! Why it exists: `kill -9` keeps the page cache, so a crash test cannot tell a writer that
//! acknowledges after `fdatasync` from one that acknowledges before it (or runs with
//! `sync_mode = async`). On a [`SimFs`], [`SimFs::power_cut`] drops every byte written since the
//! file's last `sync_data`/`sync_all` and undoes every create, rename and remove not followed by a
//! sync of its directory; a `Wal` reopened on the same `SimFs` then sees what a real disk could
//! hold after a power loss, and a test can assert that every acknowledged entry is there.
//!
//! The model (stricter than ext4 or XFS usually are, which is the point):
//! - a file's contents are durable up to its last successful sync; a power cut reverts them to
//!   that state, or with [`SimFs::power_cut_keeping`] keeps a chosen prefix of bytes appended
//!   since (a torn write);
//! - a name is durable once its directory was synced after it was created, renamed or removed;
//!   a power cut restores the directory as of its last sync (a file whose name was never durable
//!   is gone, a removed one comes back with its durable contents);
//! - a power cut ends the "process": file handles and directory locks from before it fail or do
//!   nothing, so the old `Wal` cannot write behind the new one's back.
//!
//! Paths are plain keys: use absolute paths (such as `/wal`); `/` always exists.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::fs::{WalDirEntry, WalDirLock, WalFile, WalFs};

/// An in-memory filesystem that keeps unsynced writes aside and loses them on a simulated power
/// cut (see the module docs). Cheap to clone: clones share one state, so a test keeps one to
/// cut the power and hands another to [`crate::Wal::open_with_fs`] as `Arc::new(fs.clone())`.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

/// What a name in the simulated namespace points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

/// The contents of one file, as the running process sees them and as a power cut would leave
/// them.
#[derive(Debug, Default)]
struct Inode {
    /// What reads return now.
    data: Vec<u8>,
    /// What survives a power cut: `data` as of the last successful sync.
    durable: Vec<u8>,
    /// True while `data` starts with `durable` (only bytes past the durable length changed), so
    /// that a sync appends instead of copying and a torn power cut can keep part of the tail.
    durable_is_prefix: bool,
}

#[derive(Debug, Default)]
struct SimState {
    /// The namespace the running process sees.
    names: BTreeMap<PathBuf, Node>,
    /// The namespace a power cut restores: each directory as of its last sync.
    durable_names: BTreeMap<PathBuf, Node>,
    /// File contents by inode number; kept while a name or an open handle may refer to them.
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Directories whose WAL lock is held.
    locked: HashSet<PathBuf>,
    /// Bumped by each power cut; handles and locks from an older generation are dead.
    generation: u64,
    /// While set, every file sync fails (an `EIO` from the disk).
    fail_syncs: bool,
}

impl SimFs {
    /// Returns an empty filesystem holding only `/`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cuts the power: every file loses the bytes written since its last sync, every directory
    /// loses the changes made since its last sync, and handles and locks taken before the cut
    /// stop working.
    pub fn power_cut(&self) {
        self.power_cut_keeping(|_, _| 0);
    }

    /// Cuts the power like [`SimFs::power_cut`], except that a file whose only unsynced change
    /// is bytes appended past its durable length keeps the first `keep(path, appended)` of those
    /// bytes (capped at `appended`): a write torn part of the way through, as a disk that
    /// persisted some of the pages of a write leaves it.
    pub fn power_cut_keeping(&self, mut keep: impl FnMut(&Path, u64) -> u64) {
        let mut state = self.lock();
        let mut names = BTreeMap::new();
        // Sorted order visits a directory before anything inside it, so an entry whose parent
        // did not survive is dropped with it.
        for (path, node) in &state.durable_names {
            if parent_exists(&names, path) {
                names.insert(path.clone(), *node);
            }
        }
        let mut inodes = HashMap::new();
        for (path, node) in &names {
            let Node::File(number) = node else {
                continue;
            };
            if inodes.contains_key(number) {
                continue;
            }
            let Some(inode) = state.inodes.remove(number) else {
                continue;
            };
            let mut data = inode.durable.clone();
            if inode.durable_is_prefix {
                let appended = &inode.data[inode.durable.len()..];
                let kept = keep(path, appended.len() as u64).min(appended.len() as u64);
                data.extend_from_slice(&appended[..kept as usize]);
            }
            inodes.insert(
                *number,
                Inode {
                    durable: data.clone(),
                    data,
                    durable_is_prefix: true,
                },
            );
        }
        state.durable_names = names.clone();
        state.names = names;
        state.inodes = inodes;
        state.locked.clear();
        state.generation += 1;
    }

    /// Makes every file sync fail with an I/O error while `fail` is true (nothing becomes
    /// durable), as a failing disk does.
    pub fn set_fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    /// Returns the current contents of the file at `path` (durable or not), or `None` if there
    /// is no such file.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        match state.names.get(path) {
            Some(Node::File(number)) => state.inodes.get(number).map(|inode| inode.data.clone()),
            _ => None,
        }
    }

    /// Replaces the contents of the file at `path`, creating it if needed, and makes contents
    /// and name durable at once: the way a test plants damaged bytes.
    ///
    /// # Errors
    /// `NotFound` if the parent directory does not exist, or `path` is a directory.
    pub fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let number = match state.names.get(path) {
            Some(Node::File(number)) => *number,
            Some(Node::Dir) => return Err(is_a_directory(path)),
            None => state.create_file(path)?,
        };
        let inode = state
            .inodes
            .get_mut(&number)
            .expect("a name points at a live inode");
        inode.data = contents.to_vec();
        inode.durable = contents.to_vec();
        inode.durable_is_prefix = true;
        state
            .durable_names
            .insert(path.to_path_buf(), Node::File(number));
        Ok(())
    }

    /// Returns the paths of the files directly in `dir` (the current namespace), sorted.
    pub fn list_files(&self, dir: &Path) -> Vec<PathBuf> {
        let state = self.lock();
        state
            .names
            .iter()
            .filter(|(path, node)| path.parent() == Some(dir) && matches!(node, Node::File(_)))
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Returns how many bytes written to files would be lost by a power cut now (bytes past
    /// each file's durable prefix; a file rewritten in place counts whole).
    pub fn unsynced_bytes(&self) -> u64 {
        let state = self.lock();
        state
            .inodes
            .values()
            .map(|inode| {
                if inode.durable_is_prefix {
                    (inode.data.len() - inode.durable.len()) as u64
                } else {
                    inode.data.len() as u64
                }
            })
            .sum()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test thread must not hide the state from the assertions after it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SimFs")
            .field("names", &state.names.len())
            .field("generation", &state.generation)
            .finish_non_exhaustive()
    }
}

/// Returns true for the paths that always exist: `/` and the empty path.
fn is_root(path: &Path) -> bool {
    path.as_os_str().is_empty() || path.parent().is_none()
}

fn parent_exists(names: &BTreeMap<PathBuf, Node>, path: &Path) -> bool {
    match path.parent() {
        None => true,
        Some(parent) => is_root(parent) || names.get(parent) == Some(&Node::Dir),
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("simulated: no such file or directory: {}", path.display()),
    )
}

fn is_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::IsADirectory,
        format!("simulated: is a directory: {}", path.display()),
    )
}

impl SimState {
    fn is_dir(&self, path: &Path) -> bool {
        is_root(path) || self.names.get(path) == Some(&Node::Dir)
    }

    /// Creates an empty file named `path` (not durable) and returns its inode number.
    fn create_file(&mut self, path: &Path) -> io::Result<u64> {
        if !parent_exists(&self.names, path) {
            return Err(not_found(path));
        }
        let number = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(
            number,
            Inode {
                durable_is_prefix: true,
                ..Inode::default()
            },
        );
        self.names.insert(path.to_path_buf(), Node::File(number));
        Ok(number)
    }

    fn file(&self, path: &Path) -> io::Result<u64> {
        match self.names.get(path) {
            Some(Node::File(number)) => Ok(*number),
            Some(Node::Dir) => Err(is_a_directory(path)),
            None => Err(not_found(path)),
        }
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    /// The power-cut generation the handle was opened in.
    generation: u64,
    /// Shared read/write cursor, as in a `std::fs::File`.
    position: u64,
    writable: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("inode", &self.inode)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl SimFile {
    /// Runs `operation` on the file's inode, failing if the handle did not survive a power cut.
    fn with_inode<T>(
        &self,
        operation: impl FnOnce(&mut Inode, bool) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.generation != self.generation {
            return Err(io::Error::other(
                "simulated: file handle opened before a power cut",
            ));
        }
        let fail_syncs = state.fail_syncs;
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .expect("inodes outlive the handles of their generation");
        operation(inode, fail_syncs)
    }

    fn sync(&self) -> io::Result<()> {
        self.with_inode(|inode, fail_syncs| {
            if fail_syncs {
                return Err(io::Error::other("simulated: fsync failed"));
            }
            if inode.durable_is_prefix {
                let durable_len = inode.durable.len();
                inode.durable.extend_from_slice(&inode.data[durable_len..]);
            } else {
                inode.durable = inode.data.clone();
                inode.durable_is_prefix = true;
            }
            Ok(())
        })
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "simulated: file opened read-only",
            ))
        }
    }
}

impl Read for SimFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let position = self.position;
        let read = self.with_inode(|inode, _| {
            let start = usize::try_from(position)
                .unwrap_or(usize::MAX)
                .min(inode.data.len());
            let read = buf.len().min(inode.data.len() - start);
            buf[..read].copy_from_slice(&inode.data[start..start + read]);
            Ok(read)
        })?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Seek for SimFile {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let len = self.with_inode(|inode, _| Ok(inode.data.len() as u64))?;
        let position = match target {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let Some(position) = position else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "simulated: seek before the start of the file",
            ));
        };
        self.position = position;
        Ok(position)
    }
}

impl WalFile for SimFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        let position = usize::try_from(self.position).map_err(io::Error::other)?;
        self.with_inode(|inode, _| {
            if position < inode.durable.len() {
                inode.durable_is_prefix = false;
            }
            let end = position + bytes.len();
            if inode.data.len() < end {
                inode.data.resize(end, 0);
            }
            inode.data[position..end].copy_from_slice(bytes);
            Ok(())
        })?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.with_inode(|inode, _| {
            if len < inode.durable.len() {
                inode.durable_is_prefix = false;
            }
            inode.data.resize(len, 0);
            Ok(())
        })
    }

    fn size_bytes(&self) -> io::Result<u64> {
        self.with_inode(|inode, _| Ok(inode.data.len() as u64))
    }
}

/// Releases a [`SimFs`] directory lock on drop, unless a power cut already did.
struct SimLock {
    state: Arc<Mutex<SimState>>,
    dir: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.generation == self.generation {
            state.locked.remove(&self.dir);
        }
    }
}

impl SimFs {
    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn WalFile>> {
        let state = self.lock();
        let inode = state.file(path)?;
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            inode,
            generation: state.generation,
            position: 0,
            writable,
        }))
    }
}

impl WalFs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<bool> {
        let mut state = self.lock();
        if state.is_dir(dir) {
            return Ok(false);
        }
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|ancestor| !state.is_dir(ancestor))
            .map(Path::to_path_buf)
            .collect();
        for ancestor in missing.into_iter().rev() {
            if state.names.contains_key(&ancestor) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("simulated: not a directory: {}", ancestor.display()),
                ));
            }
            state.names.insert(ancestor, Node::Dir);
        }
        Ok(true)
    }

    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<WalDirLock>> {
        let mut state = self.lock();
        if !state.is_dir(dir) {
            return Err(not_found(dir));
        }
        if !state.locked.insert(dir.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(WalDirLock::new(SimLock {
            state: Arc::clone(&self.state),
            dir: dir.to_path_buf(),
            generation: state.generation,
        })))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<WalDirEntry>> {
        let state = self.lock();
        if !state.is_dir(dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .names
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(path, node)| WalDirEntry {
                file_name: path.file_name().map(OsString::from).unwrap_or_default(),
                is_file: matches!(node, Node::File(_)),
            })
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let mut state = self.lock();
        if state.names.contains_key(path) || is_root(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("simulated: file exists: {}", path.display()),
            ));
        }
        let inode = state.create_file(path)?;
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            inode,
            generation: state.generation,
            position: 0,
            writable: true,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        self.open(path, false)
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        self.open(path, true)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.lock();
        Ok(state.is_dir(path) || state.names.contains_key(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state.file(from)?;
        if !parent_exists(&state.names, to) {
            return Err(not_found(to));
        }
        if state.names.get(to) == Some(&Node::Dir) {
            return Err(is_a_directory(to));
        }
        state.names.remove(from);
        state.names.insert(to.to_path_buf(), Node::File(inode));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.file(path)?;
        // The inode stays while handles may still read it (as an unlinked file does); the next
        // power cut collects it.
        state.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if !state.is_dir(dir) {
            return Err(not_found(dir));
        }
        let state = &mut *state;
        state
            .durable_names
            .retain(|path, _| path.parent() != Some(dir) || state.names.contains_key(path));
        for (path, node) in &state.names {
            if path.parent() == Some(dir) {
                state.durable_names.insert(path.clone(), *node);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &SimFs, path: &Path, bytes: &[u8]) -> Box<dyn WalFile> {
        let mut file = fs.create_new(path).expect("create");
        file.write_all(bytes).expect("write");
        file
    }

    #[test]
    fn test_should_drop_bytes_written_after_the_last_sync() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).expect("mkdir");
        fs.sync_dir(Path::new("/")).expect("sync root");
        let path = Path::new("/d/f");
        let mut file = write(&fs, path, b"synced");
        file.sync_data().expect("sync");
        fs.sync_dir(Path::new("/d")).expect("sync dir");
        file.write_all(b"-lost").expect("write");
        assert_eq!(fs.read_file(path).expect("file"), b"synced-lost");
        assert_eq!(fs.unsynced_bytes(), 5);

        fs.power_cut();
        assert_eq!(fs.read_file(path).expect("file"), b"synced");
        assert_eq!(fs.unsynced_bytes(), 0);
        let stale = file.write_all(b"x");
        assert!(stale.is_err(), "a handle from before the cut must be dead");
        assert_eq!(fs.read_file(path).expect("file"), b"synced");
    }

    #[test]
    fn test_should_undo_names_not_made_durable_by_a_directory_sync() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).expect("mkdir");
        fs.sync_dir(Path::new("/")).expect("sync root");
        let kept = dir.join("kept");
        write(&fs, &kept, b"k").sync_all().expect("sync");
        fs.sync_dir(dir).expect("sync dir");

        // Synced contents, but the name was never made durable.
        write(&fs, &dir.join("new"), b"n").sync_all().expect("sync");
        fs.rename(&kept, &dir.join("renamed")).expect("rename");
        fs.power_cut();
        assert_eq!(fs.list_files(dir), std::slice::from_ref(&kept));
        assert_eq!(fs.read_file(&kept).expect("file"), b"k");

        fs.remove_file(&kept).expect("remove");
        assert!(!fs.exists(&kept).expect("exists"));
        fs.power_cut();
        assert_eq!(fs.read_file(&kept).expect("file"), b"k", "removal undone");

        fs.rename(&kept, &dir.join("renamed")).expect("rename");
        fs.sync_dir(dir).expect("sync dir");
        fs.power_cut();
        assert_eq!(fs.list_files(dir), [dir.join("renamed")]);
    }

    #[test]
    fn test_should_lose_a_directory_whose_name_was_never_synced() {
        let fs = SimFs::new();
        let dir = Path::new("/a/b");
        assert!(fs.create_dir_all(dir).expect("mkdir"));
        assert!(!fs.create_dir_all(dir).expect("mkdir again"));
        write(&fs, &dir.join("f"), b"x").sync_all().expect("sync");
        fs.sync_dir(dir).expect("sync dir");
        fs.power_cut();
        assert!(!fs.exists(dir).expect("exists"));
        assert_eq!(fs.read_file(&dir.join("f")), None);
    }

    #[test]
    fn test_should_keep_a_chosen_prefix_of_appended_bytes_on_a_torn_cut() {
        let fs = SimFs::new();
        let path = Path::new("/f");
        let mut file = write(&fs, path, b"abc");
        file.sync_data().expect("sync");
        fs.sync_dir(Path::new("/")).expect("sync root");
        file.write_all(b"defgh").expect("write");
        fs.power_cut_keeping(|seen, unsynced| {
            assert_eq!((seen, unsynced), (path, 5));
            2
        });
        assert_eq!(fs.read_file(path).expect("file"), b"abcde");

        // A rewrite below the durable length is all or nothing.
        let mut file = fs.open_write(path).expect("open");
        file.set_len(1).expect("truncate");
        file.write_all(b"ZZZZ").expect("write");
        fs.power_cut_keeping(|_, unsynced| unsynced);
        assert_eq!(fs.read_file(path).expect("file"), b"abcde");
    }

    #[test]
    fn test_should_read_seek_and_truncate_like_a_file() {
        let fs = SimFs::new();
        let path = Path::new("/f");
        drop(write(&fs, path, b"0123456789"));
        let mut reader = fs.open_read(path).expect("open");
        let mut buf = [0u8; 4];
        reader.seek(SeekFrom::Start(3)).expect("seek");
        reader.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"3456");
        assert!(reader.write_all(b"x").is_err(), "opened read-only");
        assert_eq!(reader.size_bytes().expect("size"), 10);
        fs.open_write(path)
            .expect("open")
            .set_len(5)
            .expect("truncate");
        assert_eq!(reader.read(&mut buf).expect("read"), 0);
        assert!(matches!(
            fs.create_new(path).map(drop),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists
        ));
        assert!(matches!(
            fs.open_read(Path::new("/missing")).map(drop),
            Err(error) if error.kind() == io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn test_should_fail_syncs_while_told_to() {
        let fs = SimFs::new();
        let file = write(&fs, Path::new("/f"), b"x");
        fs.set_fail_syncs(true);
        assert!(file.sync_data().is_err());
        assert_eq!(fs.unsynced_bytes(), 1);
        fs.set_fail_syncs(false);
        file.sync_data().expect("sync");
        assert_eq!(fs.unsynced_bytes(), 0);
    }
}
