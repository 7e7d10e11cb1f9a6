//! `arc-node wal dump`: what a WAL directory holds, read without starting a node.
//!
//! For operators (what is in this log, where is it damaged) and for tests (does a standby's
//! log hold every acknowledged LSN). It reads through [`arc_wal::WalReader`], which never takes
//! the directory's lock and never writes, so it works on the log of a running node as well as a
//! crashed one, and changes no byte of it (unlike `Wal::open`, whose recovery may cut a torn
//! tail). Each segment is scanned to its end: a torn or damaged frame is reported with the
//! segment and offset, and the scan goes on with the next segment.
//!
//! [`read_dump`] does the reading; [`render_text`] and [`render_json`] are pure.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arc_wal::{SegmentEnd, SegmentFile, WalError, WalReader};
use serde::Serialize;

use crate::payload;

/// Why a WAL directory could not be dumped at all. Damage inside segments is not an error: it
/// is part of the dump ([`WalDump::is_intact`]).
#[derive(Debug, thiserror::Error)]
pub enum WalDumpError {
    /// The path does not name a directory.
    #[error("wal directory {} does not exist or is not a directory", dir.display())]
    NotADirectory {
        /// The path given.
        dir: PathBuf,
    },
    /// The directory could not be listed.
    #[error("cannot list wal directory {}", dir.display())]
    List {
        /// The WAL directory.
        dir: PathBuf,
        /// What the WAL reader reported.
        #[source]
        source: WalError,
    },
}

/// What a WAL directory holds. Serialized as the JSON of `wal dump --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalDump {
    /// The directory read.
    pub dir: PathBuf,
    /// Its segment files, oldest first.
    pub segments: Vec<SegmentDump>,
    /// The lowest verified LSN, if any entry verified.
    pub first_lsn: Option<u64>,
    /// The highest verified LSN, if any entry verified.
    pub last_lsn: Option<u64>,
    /// Verified entries in all segments.
    pub entry_count: u64,
    /// Payload bytes of the verified entries.
    pub payload_bytes: u64,
    /// Places where consecutive segments do not continue each other's LSNs.
    pub gaps: Vec<LsnGap>,
    /// Every verified entry, when asked for (`--entries`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<EntryDump>>,
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentDump {
    /// The file name.
    pub file: String,
    /// The LSN its name says it starts at.
    pub first_lsn: u64,
    /// Its last verified LSN; `None` if no entry verified.
    pub last_lsn: Option<u64>,
    /// Verified entries.
    pub entries: u64,
    /// The length read (the file's length when opened).
    pub size_bytes: u64,
    /// Whether its header declares a deliberate LSN jump before it.
    pub starts_after_gap: bool,
    /// How the scan of the segment ended.
    pub end: SegmentStatus,
}

/// How the scan of a segment ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SegmentStatus {
    /// Every byte verified.
    Clean,
    /// The log ends in a frame cut short, with no entry in a later segment: what a crash
    /// leaves (recovery cuts it when the node starts), or a write in progress on a running
    /// node. Not damage.
    Torn {
        /// Byte offset of the incomplete header or frame.
        offset: u64,
        /// What is incomplete.
        detail: String,
    },
    /// Bytes that are present but wrong, or a segment cut short with more log behind it.
    Damaged {
        /// Byte offset of the damaged header (`0`) or frame.
        offset: u64,
        /// What is wrong there.
        detail: String,
    },
    /// Written by a newer arc-node; not read.
    Unsupported {
        /// The format version in its header.
        version: u32,
        /// Its header flags.
        flags: u32,
    },
    /// Deleted by retention between listing and reading (a running node flushed).
    Vanished,
    /// Reading failed.
    Unreadable {
        /// The I/O error, with its causes.
        detail: String,
    },
}

impl SegmentStatus {
    /// Whether this status means the log is damaged or could not be read.
    pub fn is_problem(&self) -> bool {
        matches!(
            self,
            SegmentStatus::Damaged { .. }
                | SegmentStatus::Unsupported { .. }
                | SegmentStatus::Unreadable { .. }
        )
    }
}

/// LSNs missing between two segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LsnGap {
    /// The last LSN before the gap.
    pub after: u64,
    /// The first LSN after it.
    pub next: u64,
    /// Whether the later segment's header declares the jump (the log was reopened past
    /// flushed entries): normal. An undeclared gap means a segment is missing.
    pub declared: bool,
}

/// One verified entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryDump {
    /// The writer epoch it was written under.
    pub epoch: u64,
    /// Its LSN.
    pub lsn: u64,
    /// The segment file holding it.
    pub segment: String,
    /// Byte offset of its frame in that segment.
    pub offset: u64,
    /// Payload length.
    pub bytes: u64,
    /// Its table writes, in payload order.
    pub tables: Vec<TableRows>,
    /// Rows over all tables.
    pub rows: u64,
    /// Why the payload did not decode, if it did not (the entry verified, so this is a bug or
    /// a format change, never a crash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The rows one entry writes to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRows {
    /// `database.measurement`.
    pub table: String,
    /// Rows written.
    pub rows: u64,
}

impl WalDump {
    /// Whether the log is readable and undamaged: no damaged, unsupported or unreadable
    /// segment, no undeclared gap, and every listed payload decoded. A torn tail of the newest
    /// segment and segments deleted by retention while reading are normal.
    pub fn is_intact(&self) -> bool {
        self.segments
            .iter()
            .all(|segment| !segment.end.is_problem())
            && self.gaps.iter().all(|gap| gap.declared)
            && self
                .entries
                .iter()
                .flatten()
                .all(|entry| entry.error.is_none())
    }
}

/// Reads the WAL in `dir`: every segment, and every entry's epoch, LSN, tables and row counts
/// when `with_entries` is set. Takes no lock and writes nothing.
///
/// # Errors
/// When `dir` is not a directory or cannot be listed. Damage and I/O errors inside a segment
/// are reported in its [`SegmentDump::end`] instead, and the dump goes on.
pub fn read_dump(dir: &Path, with_entries: bool) -> Result<WalDump, WalDumpError> {
    if !dir.is_dir() {
        return Err(WalDumpError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    let reader = WalReader::new(dir);
    let listed = reader.segments().map_err(|source| WalDumpError::List {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut entries = with_entries.then(Vec::new);
    let segments = listed
        .iter()
        .map(|file| scan_segment(&reader, file, &mut entries))
        .collect();
    Ok(assemble(dir.to_path_buf(), segments, entries))
}

/// What scanning one segment found, before the dump-wide figures are computed.
struct Scanned {
    dump: SegmentDump,
    payload_bytes: u64,
}

/// Scans one segment. A frame cut short is reported as `Torn` here; [`assemble`] makes it
/// `Damaged` if a later segment holds entries.
fn scan_segment(
    reader: &WalReader,
    file: &SegmentFile,
    entries: &mut Option<Vec<EntryDump>>,
) -> Scanned {
    let name = file
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut dump = SegmentDump {
        file: name.clone(),
        first_lsn: file.first_lsn.0,
        last_lsn: None,
        entries: 0,
        size_bytes: file.size_bytes,
        starts_after_gap: false,
        end: SegmentStatus::Clean,
    };
    let mut payload_bytes = 0u64;
    let unreadable = |error: &dyn std::error::Error| SegmentStatus::Unreadable {
        detail: error_chain(error),
    };
    dump.end = 'scan: {
        let mut scan = match reader.scan_segment(file) {
            Ok(scan) => scan,
            Err(error) => break 'scan unreadable(&error),
        };
        dump.size_bytes = scan.size_bytes();
        dump.starts_after_gap = scan.starts_after_gap();
        for item in scan.by_ref() {
            match item {
                Ok((offset, entry)) => {
                    dump.entries += 1;
                    dump.last_lsn = Some(entry.lsn.0);
                    payload_bytes += entry.payload.len() as u64;
                    if let Some(entries) = entries.as_mut() {
                        entries.push(describe_entry(&name, offset, &entry));
                    }
                }
                Err(error) => break 'scan unreadable(&error),
            }
        }
        segment_status(scan.end())
    };
    Scanned {
        dump,
        payload_bytes,
    }
}

/// How a scan that read to its end says the segment ends.
fn segment_status(end: Option<SegmentEnd>) -> SegmentStatus {
    match end {
        None | Some(SegmentEnd::Clean) => SegmentStatus::Clean,
        Some(SegmentEnd::Defect { offset, kind }) if kind.is_torn() => SegmentStatus::Torn {
            offset,
            detail: kind.to_string(),
        },
        Some(SegmentEnd::Defect { offset, kind }) => SegmentStatus::Damaged {
            offset,
            detail: kind.to_string(),
        },
        Some(SegmentEnd::Unsupported { version, flags }) => {
            SegmentStatus::Unsupported { version, flags }
        }
        Some(SegmentEnd::Vanished) => SegmentStatus::Vanished,
    }
}

fn describe_entry(segment: &str, offset: u64, entry: &arc_wal::Entry) -> EntryDump {
    let mut dump = EntryDump {
        epoch: entry.epoch.0,
        lsn: entry.lsn.0,
        segment: segment.to_string(),
        offset,
        bytes: entry.payload.len() as u64,
        tables: Vec::new(),
        rows: 0,
        error: None,
    };
    match payload::decode(&entry.payload) {
        Ok(writes) => {
            for write in writes {
                let rows = write.batch.num_rows() as u64;
                dump.rows += rows;
                dump.tables.push(TableRows {
                    table: write.table.to_string(),
                    rows,
                });
            }
        }
        Err(error) => dump.error = Some(error.to_string()),
    }
    dump
}

/// Computes the dump-wide figures from the scanned segments, and tells a torn tail from a
/// segment cut short with entries after it: only the end of the log can be mid-write (or torn
/// by a crash); acknowledged entries behind a cut are damage, which recovery refuses to drop.
fn assemble(dir: PathBuf, mut scanned: Vec<Scanned>, entries: Option<Vec<EntryDump>>) -> WalDump {
    let mut entries_after = false;
    for Scanned { dump: segment, .. } in scanned.iter_mut().rev() {
        if entries_after && let SegmentStatus::Torn { offset, detail } = &segment.end {
            segment.end = SegmentStatus::Damaged {
                offset: *offset,
                detail: format!("{detail}, with entries in later segments"),
            };
        }
        entries_after |= segment.entries > 0;
    }
    let mut dump = WalDump {
        dir,
        segments: Vec::with_capacity(scanned.len()),
        first_lsn: None,
        last_lsn: None,
        entry_count: 0,
        payload_bytes: 0,
        gaps: Vec::new(),
        entries,
    };
    for Scanned {
        dump: segment,
        payload_bytes,
    } in scanned
    {
        if segment.entries > 0 {
            if let Some(after) = dump.last_lsn
                && segment.first_lsn != after + 1
            {
                dump.gaps.push(LsnGap {
                    after,
                    next: segment.first_lsn,
                    declared: segment.starts_after_gap,
                });
            }
            dump.first_lsn.get_or_insert(segment.first_lsn);
            dump.last_lsn = segment.last_lsn;
        }
        dump.entry_count += segment.entries;
        dump.payload_bytes += payload_bytes;
        dump.segments.push(segment);
    }
    dump
}

/// An error with its causes, `: `-separated, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// Renders the dump as JSON: one object, as [`WalDump`] serializes.
pub fn render_json(dump: &WalDump) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    let mut text = serde_json::to_string_pretty(dump).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// Renders the dump as plain text for a terminal: a summary line, one line per segment, any
/// gaps, and one line per entry when they were read.
pub fn render_text(dump: &WalDump) -> String {
    let mut out = String::new();
    let range = match (dump.first_lsn, dump.last_lsn) {
        (Some(first), Some(last)) => format!("lsn {first}..={last}"),
        _ => "no entries".to_string(),
    };
    let _ = writeln!(out, "wal directory {}", dump.dir.display());
    let _ = writeln!(
        out,
        "{} segments, {} entries, {} payload bytes, {range}",
        dump.segments.len(),
        dump.entry_count,
        dump.payload_bytes,
    );
    if !dump.segments.is_empty() {
        let _ = writeln!(
            out,
            "{:<26} {:>10} {:>10} {:>8} {:>12}  status",
            "segment", "first lsn", "last lsn", "entries", "bytes"
        );
    }
    for segment in &dump.segments {
        let last = segment
            .last_lsn
            .map_or_else(|| "-".to_string(), |lsn| lsn.to_string());
        let _ = writeln!(
            out,
            "{:<26} {:>10} {:>10} {:>8} {:>12}  {}",
            segment.file,
            segment.first_lsn,
            last,
            segment.entries,
            segment.size_bytes,
            describe_status(&segment.end),
        );
    }
    for gap in &dump.gaps {
        let kind = if gap.declared {
            "declared by the segment header"
        } else {
            "NOT declared: a segment is missing"
        };
        let _ = writeln!(
            out,
            "gap: lsn {}..={} missing ({kind})",
            gap.after + 1,
            gap.next.saturating_sub(1)
        );
    }
    if let Some(entries) = &dump.entries {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:>6} {:>10} {:<26} {:>10} {:>10} {:>8}  tables",
            "epoch", "lsn", "segment", "offset", "bytes", "rows"
        );
        for entry in entries {
            let tables = match &entry.error {
                Some(error) => format!("PAYLOAD ERROR: {error}"),
                None => entry
                    .tables
                    .iter()
                    .map(|table| format!("{}={}", table.table, table.rows))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let _ = writeln!(
                out,
                "{:>6} {:>10} {:<26} {:>10} {:>10} {:>8}  {tables}",
                entry.epoch, entry.lsn, entry.segment, entry.offset, entry.bytes, entry.rows,
            );
        }
    }
    if !dump.is_intact() {
        let _ = writeln!(out, "the wal is DAMAGED or could not be read completely");
    }
    out
}

fn describe_status(status: &SegmentStatus) -> String {
    match status {
        SegmentStatus::Clean => "clean".into(),
        SegmentStatus::Torn { offset, detail } => format!(
            "torn tail at offset {offset} ({detail}: a crash or a write in progress; \
             recovery cuts it)"
        ),
        SegmentStatus::Damaged { offset, detail } => {
            format!("DAMAGED at offset {offset}: {detail}")
        }
        SegmentStatus::Unsupported { version, flags } => {
            format!("UNSUPPORTED format version {version} (flags {flags:#x})")
        }
        SegmentStatus::Vanished => "deleted while reading (retention)".into(),
        SegmentStatus::Unreadable { detail } => format!("UNREADABLE: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use arc_wal::{Epoch, Lsn, SyncMode, Wal, WalSettings};

    use super::*;
    use crate::ingest::{Precision, decode_line_protocol};

    fn sample() -> WalDump {
        WalDump {
            dir: PathBuf::from("/var/lib/arc/wal"),
            segments: vec![
                SegmentDump {
                    file: "00000000000000000001.wal".into(),
                    first_lsn: 1,
                    last_lsn: Some(2),
                    entries: 2,
                    size_bytes: 900,
                    starts_after_gap: false,
                    end: SegmentStatus::Clean,
                },
                SegmentDump {
                    file: "00000000000000000003.wal".into(),
                    first_lsn: 3,
                    last_lsn: Some(3),
                    entries: 1,
                    size_bytes: 500,
                    starts_after_gap: false,
                    end: SegmentStatus::Torn {
                        offset: 480,
                        detail: "torn entry".into(),
                    },
                },
            ],
            first_lsn: Some(1),
            last_lsn: Some(3),
            entry_count: 3,
            payload_bytes: 1200,
            gaps: Vec::new(),
            entries: Some(vec![EntryDump {
                epoch: 4,
                lsn: 1,
                segment: "00000000000000000001.wal".into(),
                offset: 28,
                bytes: 400,
                tables: vec![
                    TableRows {
                        table: "default.cpu".into(),
                        rows: 3,
                    },
                    TableRows {
                        table: "default.mem".into(),
                        rows: 1,
                    },
                ],
                rows: 4,
                error: None,
            }]),
        }
    }

    #[test]
    fn test_should_render_segments_range_and_entries_as_text() {
        let text = render_text(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "wal directory /var/lib/arc/wal");
        assert_eq!(
            lines[1],
            "2 segments, 3 entries, 1200 payload bytes, lsn 1..=3"
        );
        assert!(lines[2].starts_with("segment"), "{text}");
        assert!(
            lines[3].starts_with("00000000000000000001.wal") && lines[3].ends_with("  clean"),
            "{text}"
        );
        assert!(
            lines[4].contains("torn tail at offset 480 (torn entry"),
            "{text}"
        );
        let entry = lines.last().expect("an entry line");
        let columns: Vec<&str> = entry.split_whitespace().collect();
        assert_eq!(
            columns,
            [
                "4",
                "1",
                "00000000000000000001.wal",
                "28",
                "400",
                "4",
                "default.cpu=3",
                "default.mem=1"
            ],
            "{text}"
        );
        assert!(
            !text.contains("DAMAGED"),
            "a torn tail is not damage: {text}"
        );
    }

    #[test]
    fn test_should_flag_damage_gaps_and_payload_errors_in_text() {
        let mut dump = sample();
        assert!(dump.is_intact());
        dump.segments[0].end = SegmentStatus::Damaged {
            offset: 28,
            detail: "entry checksum mismatch".into(),
        };
        dump.gaps.push(LsnGap {
            after: 2,
            next: 5,
            declared: false,
        });
        if let Some(entries) = dump.entries.as_mut() {
            entries[0].error = Some("wal payload truncated".into());
        }
        assert!(!dump.is_intact());
        let text = render_text(&dump);
        assert!(
            text.contains("DAMAGED at offset 28: entry checksum mismatch"),
            "{text}"
        );
        assert!(
            text.contains("gap: lsn 3..=4 missing (NOT declared"),
            "{text}"
        );
        assert!(
            text.contains("PAYLOAD ERROR: wal payload truncated"),
            "{text}"
        );
        assert!(text.ends_with("the wal is DAMAGED or could not be read completely\n"));

        let empty = WalDump {
            segments: Vec::new(),
            first_lsn: None,
            last_lsn: None,
            entry_count: 0,
            payload_bytes: 0,
            entries: None,
            ..sample()
        };
        assert_eq!(
            render_text(&empty),
            "wal directory /var/lib/arc/wal\n0 segments, 0 entries, 0 payload bytes, no entries\n"
        );
    }

    #[test]
    fn test_should_render_json_that_parses_back_with_entries_only_when_asked() {
        let json: serde_json::Value = serde_json::from_str(&render_json(&sample())).expect("json");
        assert_eq!(json["first_lsn"], 1);
        assert_eq!(json["last_lsn"], 3);
        assert_eq!(json["segments"][1]["end"]["status"], "torn");
        assert_eq!(json["segments"][1]["end"]["offset"], 480);
        assert_eq!(json["entries"][0]["tables"][1]["table"], "default.mem");
        assert_eq!(json["entries"][0]["rows"], 4);
        assert!(json["entries"][0].get("error").is_none());
        let without = WalDump {
            entries: None,
            ..sample()
        };
        let json: serde_json::Value = serde_json::from_str(&render_json(&without)).expect("json");
        assert!(json.get("entries").is_none(), "{json}");
    }

    /// Entries [`write_wal`] writes: enough for several segments of several entries each.
    const ENTRIES: u64 = 30;

    /// A real WAL of node payloads: LSN `n` writes `n` rows to `default.cpu` (and, for even
    /// `n`, one row to `default.mem`), in segments small enough to rotate.
    fn write_wal(dir: &Path, count: u64) {
        let settings = WalSettings {
            sync_mode: SyncMode::Async,
            segment_size_bytes: 16 * 1024,
            ..WalSettings::new(dir)
        };
        let (mut wal, _) = Wal::open(settings, Lsn(1)).expect("open wal");
        for n in 1..=count {
            let mut body = String::new();
            for row in 0..n {
                body.push_str(&format!("cpu,host=h{row} usage={n} {}\n", 1_000 + row));
            }
            if n % 2 == 0 {
                body.push_str("mem free=1i 5\n");
            }
            let writes = decode_line_protocol(body.as_bytes(), "default", Precision::Ns, 0, None)
                .expect("lp");
            let payload = payload::encode(&writes).expect("encode");
            assert_eq!(wal.append(Epoch(7), &payload).expect("append"), Lsn(n));
            // Segments rotate at a sync, so one per entry lets them fill and rotate.
            wal.sync().expect("sync");
        }
    }

    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .expect("read dir")
            .map(|entry| {
                let path = entry.expect("entry").path();
                let bytes = fs::read(&path).expect("read");
                (path, bytes)
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn test_should_dump_a_real_wal_with_entries_tables_and_rows_without_changing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_wal(dir.path(), ENTRIES);
        let before = snapshot(dir.path());
        let dump = read_dump(dir.path(), true).expect("dump");
        assert_eq!(
            before,
            snapshot(dir.path()),
            "the dump changed the directory"
        );
        assert!(dump.segments.len() >= 3, "{dump:?}");
        assert_eq!((dump.first_lsn, dump.last_lsn), (Some(1), Some(ENTRIES)));
        assert_eq!(dump.entry_count, ENTRIES);
        assert!(dump.is_intact(), "{dump:?}");
        let entries = dump.entries.as_ref().expect("entries");
        assert_eq!(entries.len() as u64, ENTRIES);
        for (n, entry) in (1..=ENTRIES).zip(entries) {
            assert_eq!((entry.epoch, entry.lsn), (7, n));
            let mut expected = vec![TableRows {
                table: "default.cpu".into(),
                rows: n,
            }];
            if n % 2 == 0 {
                expected.push(TableRows {
                    table: "default.mem".into(),
                    rows: 1,
                });
            }
            assert_eq!(entry.tables, expected, "lsn {n}");
            assert_eq!(entry.rows, n + u64::from(n % 2 == 0));
        }
        let without = read_dump(dir.path(), false).expect("dump");
        assert_eq!(without.entries, None);
        assert_eq!(without.segments, dump.segments);
    }

    #[test]
    fn test_should_call_a_segment_cut_short_damage_when_later_segments_hold_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_wal(dir.path(), ENTRIES);
        let dump = read_dump(dir.path(), true).expect("dump");
        let oldest = &dump.segments[0];
        let in_oldest: Vec<&EntryDump> = dump
            .entries
            .iter()
            .flatten()
            .filter(|entry| entry.segment == oldest.file)
            .collect();
        let [.., before_last, last_in_oldest] = in_oldest[..] else {
            panic!("the oldest segment holds two entries: {dump:?}");
        };
        let path = dir.path().join(&oldest.file);
        let bytes = fs::read(&path).expect("read");
        fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        let cut = read_dump(dir.path(), false).expect("dump");
        assert_eq!(
            cut.segments[0].end,
            SegmentStatus::Damaged {
                offset: last_in_oldest.offset,
                detail: "torn entry, with entries in later segments".into()
            }
        );
        assert_eq!(cut.segments[0].last_lsn, Some(before_last.lsn));
        assert!(!cut.is_intact());
        // The same cut at the end of the log is a torn tail.
        for segment in &cut.segments[1..] {
            fs::remove_file(dir.path().join(&segment.file)).expect("remove");
        }
        let tail = read_dump(dir.path(), false).expect("dump");
        assert!(
            matches!(
                tail.segments[..],
                [SegmentDump {
                    end: SegmentStatus::Torn { .. },
                    ..
                }]
            ),
            "{tail:?}"
        );
        assert!(tail.is_intact());
    }

    #[test]
    fn test_should_report_a_torn_tail_and_damage_with_segment_and_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_wal(dir.path(), ENTRIES);
        let dump = read_dump(dir.path(), true).expect("dump");
        let newest = dir
            .path()
            .join(&dump.segments.last().expect("segments").file);
        let torn_at = fs::metadata(&newest).expect("metadata").len();
        let mut bytes = fs::read(&newest).expect("read");
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
        fs::write(&newest, bytes).expect("write");
        let torn = read_dump(dir.path(), true).expect("dump");
        assert_eq!(
            torn.segments.last().expect("segments").end,
            SegmentStatus::Torn {
                offset: torn_at,
                detail: "torn entry".into()
            }
        );
        assert!(torn.is_intact(), "a torn tail is what a crash leaves");
        assert_eq!(torn.last_lsn, Some(ENTRIES));

        // A flipped payload byte in the second entry of the oldest segment.
        let entries = dump.entries.as_ref().expect("entries");
        let second = &entries[1];
        assert_eq!(second.segment, dump.segments[0].file);
        let oldest = dir.path().join(&second.segment);
        let mut bytes = fs::read(&oldest).expect("read");
        bytes[second.offset as usize + 40] ^= 0x5a;
        fs::write(&oldest, bytes).expect("write");
        let damaged = read_dump(dir.path(), true).expect("dump");
        assert_eq!(
            damaged.segments[0].end,
            SegmentStatus::Damaged {
                offset: second.offset,
                detail: "entry checksum mismatch".into()
            }
        );
        assert_eq!(damaged.segments[0].last_lsn, Some(1));
        assert!(!damaged.is_intact());
        // The later segments are still read, and the entries they hold listed.
        assert_eq!(damaged.last_lsn, Some(ENTRIES));
        let text = render_text(&damaged);
        assert!(
            text.contains(&format!(
                "DAMAGED at offset {}: entry checksum mismatch",
                second.offset
            )),
            "{text}"
        );

        // A missing directory is an error naming it.
        let missing = dir.path().join("nope");
        let error = read_dump(&missing, false).expect_err("missing dir");
        assert!(error.to_string().contains("nope"), "{error}");
    }
}
