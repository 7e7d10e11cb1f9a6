//! Operator-tunable WAL settings: where the segments live, how `sync()` makes them durable and
//! when a segment is sealed.
//!
//! Plain serde data, read once at startup; the binary maps its `[wal]` config section onto it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Default for [`WalSettings::segment_size_bytes`]: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 * 1024 * 1024;

/// Settings of one WAL directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSettings {
    /// Directory holding the segment files; created if missing. Exactly one process may own it
    /// (enforced with a lock file). Put it on a local disk: the fsync latency of this device is
    /// the write latency of the node.
    pub dir: PathBuf,
    /// How [`crate::Wal::sync`] makes written entries durable. Default `fdatasync`.
    #[serde(default)]
    pub sync_mode: SyncMode,
    /// Size in bytes at which the active segment is sealed and a new one started (checked after
    /// each `sync()`, so a segment may overshoot by one group commit). Default 64 MiB. Smaller
    /// segments free disk sooner after a flush and make catch-up reads finer-grained; larger ones
    /// mean fewer files and fewer directory fsyncs.
    #[serde(default = "default_segment_size_bytes")]
    pub segment_size_bytes: u64,
    /// Operator override for a damaged log; default `false`. When [`crate::Wal::open`] finds
    /// damage that is not a torn tail (intact entries follow it, so acknowledged writes sit
    /// behind it), it refuses with [`crate::WalError::CorruptLog`] and modifies nothing. Set this
    /// to `true` to start anyway from the entries before the damage: the damaged segment is
    /// copied aside and later segments are renamed aside (`*.corrupt`, never deleted), and the
    /// log is cut there, dropping every entry after it. Turn it off again once the node has
    /// started, so that the next damage is reported rather than silently cut.
    #[serde(default)]
    pub truncate_corrupt: bool,
}

impl WalSettings {
    /// Returns settings for `dir` with the default sync mode and segment size, and without the
    /// corruption override.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sync_mode: SyncMode::default(),
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            truncate_corrupt: false,
        }
    }
}

fn default_segment_size_bytes() -> u64 {
    DEFAULT_SEGMENT_SIZE_BYTES
}

/// How written entries are made durable by [`crate::Wal::sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// `fsync` (`File::sync_all`): data and all metadata. The most conservative choice.
    Fsync,
    /// `fdatasync` (`File::sync_data`): data plus the metadata needed to read it back (the file
    /// size), which is all an append-only log needs; usually cheaper than `fsync`. The default.
    #[default]
    Fdatasync,
    /// Write to the OS page cache only. Survives a process crash, not a power loss or kernel
    /// panic; acknowledged writes can be lost. For benchmarks and disposable nodes.
    Async,
}

impl SyncMode {
    /// Returns the config spelling of this mode (`"fsync"`, `"fdatasync"` or `"async"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            SyncMode::Fsync => "fsync",
            SyncMode::Fdatasync => "fdatasync",
            SyncMode::Async => "async",
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SyncMode {
    type Err = ParseSyncModeError;

    /// Parses the config spelling; like the serde form it is lowercase only.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "fsync" => Ok(SyncMode::Fsync),
            "fdatasync" => Ok(SyncMode::Fdatasync),
            "async" => Ok(SyncMode::Async),
            _ => Err(ParseSyncModeError {
                value: value.to_owned(),
            }),
        }
    }
}

/// A string that is not a [`SyncMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid wal sync mode {value:?}: expected one of fsync, fdatasync, async")]
pub struct ParseSyncModeError {
    /// The rejected input.
    pub value: String,
}

#[cfg(test)]
mod tests {
    use serde::de::IntoDeserializer;
    use serde::de::value::Error as ValueError;

    use super::*;

    fn deserialize_mode(value: &str) -> Result<SyncMode, ValueError> {
        SyncMode::deserialize(IntoDeserializer::<ValueError>::into_deserializer(value))
    }

    #[test]
    fn test_should_parse_display_and_deserialize_every_sync_mode() {
        for mode in [SyncMode::Fsync, SyncMode::Fdatasync, SyncMode::Async] {
            assert_eq!(mode.to_string().parse::<SyncMode>(), Ok(mode));
            assert_eq!(deserialize_mode(mode.as_str()), Ok(mode));
        }
        assert_eq!(SyncMode::default(), SyncMode::Fdatasync);
    }

    #[test]
    fn test_should_name_the_bad_value_when_parsing_fails() {
        let error = "FSYNC"
            .parse::<SyncMode>()
            .expect_err("uppercase is rejected");
        assert_eq!(error.value, "FSYNC");
        assert!(error.to_string().contains("\"FSYNC\""), "{error}");
        let serde_error = deserialize_mode("sometimes").expect_err("unknown variant");
        assert!(
            serde_error.to_string().contains("sometimes"),
            "{serde_error}"
        );
    }

    #[test]
    fn test_should_default_new_settings() {
        let settings = WalSettings::new("/var/lib/arc/wal");
        assert_eq!(settings.dir, PathBuf::from("/var/lib/arc/wal"));
        assert_eq!(settings.sync_mode, SyncMode::Fdatasync);
        assert_eq!(settings.segment_size_bytes, DEFAULT_SEGMENT_SIZE_BYTES);
        assert!(!settings.truncate_corrupt);
    }
}
