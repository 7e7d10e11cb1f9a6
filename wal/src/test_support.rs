//! Helpers shared by this crate's unit tests: settings, deterministic payloads, and reading and
//! damaging segment files on the real filesystem.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::format::{ENTRY_HEADER_LEN, Entry, SEGMENT_HEADER_LEN, parse_segment_file_name};
use crate::lsn::{Epoch, Lsn};
use crate::recovery::RecoveryReport;
use crate::segment::{CORRUPT_SUFFIX, LOCK_FILE_NAME};
use crate::settings::{SyncMode, WalSettings};
use crate::wal::Wal;

/// The epoch every helper appends under.
pub(crate) const EPOCH: Epoch = Epoch(3);
/// Large enough that tests which do not care about rotation stay in one segment.
pub(crate) const BIG_SEGMENT: u64 = 1 << 20;

/// Async settings (the tests that need real syncs say so), without the corruption override.
pub(crate) fn settings(dir: &Path, segment_size_bytes: u64) -> WalSettings {
    WalSettings {
        dir: dir.to_path_buf(),
        sync_mode: SyncMode::Async,
        segment_size_bytes,
        truncate_corrupt: false,
    }
}

/// Opens the WAL in `dir` on the real filesystem, expecting success.
pub(crate) fn open(dir: &Path, segment_size_bytes: u64) -> (Wal, RecoveryReport) {
    Wal::open(settings(dir, segment_size_bytes), Lsn(1)).expect("open wal")
}

/// Opens the WAL in `dir` with the operator override set, expecting success.
pub(crate) fn open_overriding(dir: &Path, segment_size_bytes: u64) -> (Wal, RecoveryReport) {
    let settings = WalSettings {
        truncate_corrupt: true,
        ..settings(dir, segment_size_bytes)
    };
    Wal::open(settings, Lsn(1)).expect("open wal with truncate_corrupt")
}

/// Payloads of varying length, derived from the LSN so any entry can be checked alone.
pub(crate) fn payload_for(lsn: u64) -> Vec<u8> {
    format!("payload-{lsn}-{}", "x".repeat((lsn % 7) as usize)).into_bytes()
}

/// The entries the helpers append for `lsns`.
pub(crate) fn expected(lsns: impl IntoIterator<Item = u64>) -> Vec<Entry> {
    lsns.into_iter()
        .map(|lsn| Entry {
            epoch: EPOCH,
            lsn: Lsn(lsn),
            payload: payload_for(lsn),
        })
        .collect()
}

/// Appends `count` entries (payload from `payload_for`), syncing after every `per_sync`.
pub(crate) fn append_entries(wal: &mut Wal, count: u64, per_sync: u64) {
    for appended in 1..=count {
        let lsn = wal.next_lsn();
        assert_eq!(wal.append(EPOCH, &payload_for(lsn.0)).expect("append"), lsn);
        if appended % per_sync == 0 {
            wal.sync().expect("sync");
        }
    }
    wal.sync().expect("sync");
}

/// Reads every entry from `from` on, expecting no error.
pub(crate) fn read_all(wal: &Wal, from: Lsn) -> Vec<Entry> {
    wal.read_from(from)
        .expect("open first segment")
        .collect::<Result<Vec<_>, _>>()
        .expect("read entries")
}

/// Returns the LSNs of `entries`.
pub(crate) fn lsns_of(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|entry| entry.lsn.0).collect()
}

fn files_ending_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|dir_entry| dir_entry.expect("dir entry").path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    paths.sort();
    paths
}

/// The segment files of `dir`, in LSN order.
pub(crate) fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    files_ending_with(dir, ".wal")
}

/// The files recovery moved or copied aside, sorted by name.
pub(crate) fn corrupt_paths(dir: &Path) -> Vec<PathBuf> {
    files_ending_with(dir, CORRUPT_SUFFIX)
}

/// Every file in `dir` with its bytes, except the lock file (taking the lock creates it):
/// compare two snapshots to prove that nothing was modified.
pub(crate) fn dir_snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|dir_entry| {
            let path = dir_entry.expect("dir entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, path)
        })
        .filter(|(name, _)| name != LOCK_FILE_NAME)
        .map(|(name, path)| (name, fs::read(&path).expect("read file")))
        .collect()
}

/// The LSN in a segment file's name.
pub(crate) fn first_lsn_of(path: &Path) -> u64 {
    let name = path.file_name().expect("file name").to_string_lossy();
    parse_segment_file_name(&name).expect("segment name").0
}

/// Offsets of the entry frames in an intact segment image.
pub(crate) fn entry_offsets_in(bytes: &[u8]) -> Vec<u64> {
    let mut offsets = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN as usize;
    while offset + ENTRY_HEADER_LEN as usize <= bytes.len() {
        offsets.push(offset as u64);
        let len_bytes: [u8; 4] = bytes[offset..offset + 4].try_into().expect("4 bytes");
        offset += ENTRY_HEADER_LEN as usize + u32::from_le_bytes(len_bytes) as usize;
    }
    offsets
}

/// Offsets of the entry frames in an intact segment file.
pub(crate) fn entry_offsets(path: &Path) -> Vec<u64> {
    entry_offsets_in(&fs::read(path).expect("read segment"))
}

/// XORs the byte at `offset` of the file with a fixed mask.
pub(crate) fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).expect("write");
}
