//! Who wrote a WAL directory: a small marker (`wal.owner`, node id and epoch) that a writer
//! records when it takes an epoch, so that a later start can tell that the directory's entries
//! were acknowledged by someone else (a changed host name, the default node id, or a directory
//! copied from another machine) and say so loudly instead of silently treating them as its own
//! or ignoring them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The marker's file name inside the WAL directory.
pub const OWNER_FILE: &str = "wal.owner";

/// The writer that last took an epoch with this WAL directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalOwner {
    /// Its node id.
    pub node_id: String,
    /// The epoch it took.
    pub epoch: u64,
}

/// An owner marker that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The file cannot be read, written or synced.
    #[error("wal owner file {path}: {source}")]
    Io {
        /// The marker file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a marker.
    #[error("wal owner file {path} is not valid: {reason}")]
    Invalid {
        /// The marker file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads the marker of `dir`; `None` when there is none (a new directory, or one written
/// before markers existed).
///
/// # Errors
/// When the file exists but cannot be read or parsed.
pub fn read(dir: &Path) -> Result<Option<WalOwner>, OwnerError> {
    let path = dir.join(OWNER_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(OwnerError::Io { path, source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| OwnerError::Invalid {
            path,
            reason: error.to_string(),
        })
}

/// Records `owner` in `dir`, durably and atomically (a temporary file renamed over the old
/// marker, then the directory synced), so a crash leaves either marker, never half of one.
///
/// # Errors
/// When the file cannot be written, synced or renamed.
pub fn write(dir: &Path, owner: &WalOwner) -> Result<(), OwnerError> {
    let path = dir.join(OWNER_FILE);
    let temporary = dir.join(format!("{OWNER_FILE}.tmp"));
    let io = |source| OwnerError::Io {
        path: path.clone(),
        source,
    };
    let body = serde_json::to_vec(owner).expect("a marker always serializes");
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(&body).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io)
}

/// What a start should say about a WAL directory and its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Nothing to report: no marker, or this node's.
    Ours,
    /// Another node id wrote the directory last.
    OtherNode(WalOwner),
}

/// Compares the marker with this node (pure).
pub fn judge(marker: Option<&WalOwner>, node_id: &str) -> Finding {
    match marker {
        Some(owner) if owner.node_id != node_id => Finding::OtherNode(owner.clone()),
        _ => Finding::Ours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_write_read_and_judge_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let owner = WalOwner {
            node_id: "writer-1".into(),
            epoch: 4,
        };
        write(dir.path(), &owner).unwrap();
        write(dir.path(), &owner).unwrap();
        let read_back = read(dir.path()).unwrap();
        assert_eq!(read_back.as_ref(), Some(&owner));
        assert_eq!(judge(read_back.as_ref(), "writer-1"), Finding::Ours);
        assert_eq!(
            judge(read_back.as_ref(), "writer-2"),
            Finding::OtherNode(owner)
        );
        assert_eq!(judge(None, "writer-2"), Finding::Ours);
        std::fs::write(dir.path().join(OWNER_FILE), b"{").unwrap();
        let error = read(dir.path()).unwrap_err().to_string();
        assert!(error.contains(OWNER_FILE), "{error}");
    }
}
