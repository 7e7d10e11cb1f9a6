//! The catalog's on-store formats: log records (`_catalog/log/{seq}.json`) and checkpoints
//! (`_catalog/checkpoint/{seq}.json`). See docs/0002-catalog-log.md.
//!
//! Both are versioned JSON. Decoding never panics: anything malformed, of an unknown version,
//! or contradicting its own key is [`CatalogError::Corrupt`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::state::{CatalogState, TableState};
use crate::error::CatalogError;
use crate::model::{ColumnSpec, TableId, TimeRange};

/// Version of the record and checkpoint formats written by this code.
pub const FORMAT_VERSION: u32 = 1;

/// One catalog log record: the envelope every record type shares.
///
/// `{"version":1,"seq":N,"epoch":E,"nonce":"...","node":"...","record":{"type":"flush",...}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The slot this record was written to; must match its key.
    pub seq: u64,
    /// The writer epoch the record was written under (for `promote`, the new epoch).
    pub epoch: u64,
    /// A fresh random value per commit: bodies of different commits always differ (an S3
    /// ETag is content-derived), and an ambiguous put is resolved by reading the slot back
    /// and comparing nonces.
    pub nonce: String,
    /// The id of the node that wrote the record.
    pub node: String,
    /// What the record says.
    pub record: RecordBody,
}

/// The typed payload of a log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RecordBody {
    /// A new writer epoch.
    Promote(Promote),
    /// Data objects added by a flush.
    Flush(Flush),
    /// Several tables' flushes committed together (a group commit).
    Flushes(Flushes),
    /// Objects swapped by a compaction.
    Compact(Compact),
    /// A change of the in-sync replica set.
    Isr(Isr),
}

impl RecordBody {
    /// Returns the record type as written in JSON.
    pub fn type_name(&self) -> &'static str {
        match self {
            RecordBody::Promote(_) => "promote",
            RecordBody::Flush(_) => "flush",
            RecordBody::Flushes(_) => "flushes",
            RecordBody::Compact(_) => "compact",
            RecordBody::Isr(_) => "isr",
        }
    }
}

/// `promote`: `node_id` becomes primary at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promote {
    /// The new epoch; must be greater than every earlier valid promote's.
    pub epoch: u64,
    /// The new primary.
    pub node_id: String,
    /// What the new primary takes over from.
    pub fence: Fence,
    /// The in-sync replica set at promotion.
    pub in_sync: Vec<String>,
    /// Why and when, for a failover (absent for a start-up claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverRecord>,
}

/// What a failover's `promote` record says of it: the history the cluster API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    /// Why: `dead`, `silent`, `unhealthy` or `switchover`.
    pub reason: String,
    /// When the trigger first held, ms since the Unix epoch (the promoter's clock).
    pub detected_at_ms: u64,
    /// When the promote was written, ms since the Unix epoch (the promoter's clock).
    pub promoted_at_ms: u64,
}

/// One failover as the catalog state keeps it (see `CatalogState::failovers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverEntry {
    /// The epoch the failover started.
    pub epoch: u64,
    /// The node that took over.
    pub node_id: String,
    /// The primary it replaced, if the log named one.
    pub previous_primary: Option<String>,
    /// The last LSN of the previous epoch the new primary held (its fence).
    pub fence_lsn: u64,
    /// Why and when.
    pub record: FailoverRecord,
}

/// The fence of a promote: the epoch it ends and the last LSN it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The epoch the promote supersedes (the catalog's epoch when it was written).
    pub previous_epoch: u64,
    /// The last WAL LSN the new primary holds durably; entries of older epochs above it
    /// were never acknowledged and are discarded.
    pub last_lsn: u64,
}

/// `flush`: data objects of one table written from WAL entries `lsn_first..=lsn_last`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flush {
    /// The table.
    pub table: TableId,
    /// First WAL LSN covered.
    pub lsn_first: u64,
    /// Last WAL LSN covered.
    pub lsn_last: u64,
    /// The objects added.
    pub objects: Vec<DataObject>,
    /// The columns of the objects.
    pub columns: Vec<ColumnSpec>,
}

/// `flushes`: the flushes of several tables in one record, so that one commit (a put and a
/// list in the store) serves every table whose flush was waiting for it. Each is applied as
/// its own `flush` record would be, in order; the record is void unless every one is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flushes {
    /// The flushes, at most one per table.
    pub flushes: Vec<Flush>,
}

/// `compact`: `removed` objects are replaced by `added` ones, atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compact {
    /// The table.
    pub table: TableId,
    /// Keys of the objects taken out; all must be live or the record is void.
    pub removed: Vec<String>,
    /// The objects put in.
    pub added: Vec<DataObject>,
}

/// `isr`: the in-sync replica set changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isr {
    /// The new in-sync set (node ids).
    pub in_sync: Vec<String>,
}

/// A data object as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataObject {
    /// The object key.
    pub path: String,
    /// Smallest and largest `time` in the object.
    pub time_range: TimeRange,
    /// Number of rows.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

impl LogRecord {
    /// Encodes the record as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a log record always serializes")
    }

    /// Decodes the record stored at `key` for slot `seq`.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Corrupt`] if the bytes are not a record of a known version, or the
    /// record contradicts its key or itself.
    pub fn decode(key: &str, seq: u64, bytes: &[u8]) -> Result<LogRecord, CatalogError> {
        let record: LogRecord =
            serde_json::from_slice(bytes).map_err(|error| CatalogError::corrupt(key, error))?;
        if record.version != FORMAT_VERSION {
            return Err(CatalogError::corrupt(
                key,
                format!("unsupported record version {}", record.version),
            ));
        }
        if record.seq != seq {
            return Err(CatalogError::corrupt(
                key,
                format!("record says seq {} but sits in slot {seq}", record.seq),
            ));
        }
        if let RecordBody::Promote(promote) = &record.record
            && promote.epoch != record.epoch
        {
            return Err(CatalogError::corrupt(
                key,
                format!(
                    "promote to epoch {} carries envelope epoch {}",
                    promote.epoch, record.epoch
                ),
            ));
        }
        Ok(record)
    }
}

/// A checkpoint: the full catalog state after applying record `seq`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    version: u32,
    seq: u64,
    epoch: u64,
    primary: Option<String>,
    in_sync: Vec<String>,
    fence: Option<Fence>,
    tables: Vec<CheckpointTable>,
    #[serde(default)]
    failovers: Vec<FailoverEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointTable {
    table: TableId,
    flushed_lsn: u64,
    columns: Vec<ColumnSpec>,
    objects: Vec<DataObject>,
}

impl Checkpoint {
    /// Encodes `state` as a checkpoint.
    pub(crate) fn encode(state: &CatalogState) -> Vec<u8> {
        let checkpoint = Checkpoint {
            version: FORMAT_VERSION,
            seq: state.seq,
            epoch: state.epoch,
            primary: state.primary.clone(),
            in_sync: state.in_sync.clone(),
            fence: state.fence.clone(),
            tables: state
                .tables
                .iter()
                .map(|(table, table_state)| CheckpointTable {
                    table: table.clone(),
                    flushed_lsn: table_state.flushed_lsn,
                    columns: table_state.columns.clone(),
                    objects: table_state.objects.clone(),
                })
                .collect(),
            failovers: state.failovers.clone(),
        };
        serde_json::to_vec(&checkpoint).expect("a checkpoint always serializes")
    }

    /// Decodes the checkpoint stored at `key` for `seq` into a state.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Corrupt`] if it is not a checkpoint of a known version for `seq`.
    pub(crate) fn decode(key: &str, seq: u64, bytes: &[u8]) -> Result<CatalogState, CatalogError> {
        let checkpoint: Checkpoint =
            serde_json::from_slice(bytes).map_err(|error| CatalogError::corrupt(key, error))?;
        if checkpoint.version != FORMAT_VERSION {
            return Err(CatalogError::corrupt(
                key,
                format!("unsupported checkpoint version {}", checkpoint.version),
            ));
        }
        if checkpoint.seq != seq {
            return Err(CatalogError::corrupt(
                key,
                format!(
                    "checkpoint says seq {} but its key says {seq}",
                    checkpoint.seq
                ),
            ));
        }
        let mut tables = BTreeMap::new();
        for entry in checkpoint.tables {
            let table_state = TableState {
                objects: entry.objects,
                flushed_lsn: entry.flushed_lsn,
                columns: entry.columns,
            };
            if tables
                .insert(entry.table.clone(), Arc::new(table_state))
                .is_some()
            {
                return Err(CatalogError::corrupt(
                    key,
                    format!("table {} appears twice", entry.table),
                ));
            }
        }
        Ok(CatalogState {
            seq: checkpoint.seq,
            epoch: checkpoint.epoch,
            primary: checkpoint.primary,
            in_sync: checkpoint.in_sync,
            fence: checkpoint.fence,
            tables,
            failovers: checkpoint.failovers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ColumnKind, FieldType};

    fn flush_record() -> LogRecord {
        LogRecord {
            version: FORMAT_VERSION,
            seq: 12,
            epoch: 3,
            nonce: "00ff".into(),
            node: "node-a".into(),
            record: RecordBody::Flush(Flush {
                table: TableId::new("db", "cpu"),
                lsn_first: 5,
                lsn_last: 9,
                objects: vec![DataObject {
                    path: "db/cpu/2024/01/01/00/x.parquet".into(),
                    time_range: TimeRange {
                        start_ns: 1,
                        end_ns: 2,
                    },
                    rows: 2,
                    bytes: 100,
                }],
                columns: vec![
                    ColumnSpec {
                        name: "time".into(),
                        kind: ColumnKind::Time,
                    },
                    ColumnSpec {
                        name: "usage".into(),
                        kind: ColumnKind::Field(FieldType::Float),
                    },
                ],
            }),
        }
    }

    #[test]
    fn test_should_encode_record_in_documented_shape() {
        let json = String::from_utf8(flush_record().encode()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"version":1,"seq":12,"epoch":3,"nonce":"00ff","node":"node-a","record":"#,
                r#"{"type":"flush","table":{"database":"db","measurement":"cpu"},"#,
                r#""lsn_first":5,"lsn_last":9,"objects":[{"path":"db/cpu/2024/01/01/00/x.parquet","#,
                r#""time_range":{"start_ns":1,"end_ns":2},"rows":2,"bytes":100}],"#,
                r#""columns":[{"name":"time","kind":"time"},"#,
                r#"{"name":"usage","kind":"field","type":"float"}]}}"#
            )
        );
    }

    #[test]
    fn test_should_round_trip_every_record_type() {
        let bodies = [
            RecordBody::Promote(Promote {
                epoch: 3,
                node_id: "b".into(),
                fence: Fence {
                    previous_epoch: 2,
                    last_lsn: 77,
                },
                in_sync: vec!["b".into(), "c".into()],
                failover: Some(FailoverRecord {
                    reason: "dead".into(),
                    detected_at_ms: 1,
                    promoted_at_ms: 2,
                }),
            }),
            flush_record().record,
            RecordBody::Compact(Compact {
                table: TableId::new("db", "cpu"),
                removed: vec!["a".into(), "b".into()],
                added: vec![],
            }),
            RecordBody::Isr(Isr {
                in_sync: vec!["b".into()],
            }),
        ];
        for body in bodies {
            let record = LogRecord {
                record: body,
                ..flush_record()
            };
            let decoded = LogRecord::decode("k", 12, &record.encode()).unwrap();
            assert_eq!(decoded, record);
        }
    }

    #[test]
    fn test_should_reject_malformed_records() {
        let key = "_catalog/log/00000000000000000012.json";
        for bytes in [
            &b"{not json"[..],
            br#"{"version":1}"#,
            br#"{"version":1,"seq":12,"epoch":1,"nonce":"n","node":"a","record":{"type":"nope"}}"#,
        ] {
            assert!(matches!(
                LogRecord::decode(key, 12, bytes),
                Err(CatalogError::Corrupt { .. })
            ));
        }
        let record = flush_record().encode();
        let error = LogRecord::decode(key, 13, &record).unwrap_err();
        assert!(error.to_string().contains("slot 13"), "{error}");
        let future = LogRecord {
            version: 2,
            ..flush_record()
        };
        assert!(matches!(
            LogRecord::decode(key, 12, &future.encode()),
            Err(CatalogError::Corrupt { .. })
        ));
    }
}
