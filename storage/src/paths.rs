//! Object keys: the only place that formats (and parses) them.
//!
//! Layout (DESIGN.md section 2 and 3):
//! - data: `{database}/{measurement}/{YYYY}/{MM}/{DD}/{HH}/{epoch:06}-{lsn_first}-{lsn_last}-{uuid}.parquet`,
//!   in the folder of the data's own UTC hour;
//! - compacted: `{database}/{measurement}/{YYYY}/{MM}/{DD}/{HH}/compacted-{uuid}.parquet` for an
//!   hour, `{database}/{measurement}/{YYYY}/{MM}/{DD}/compacted-{uuid}.parquet` for a day;
//! - catalog: `_catalog/log/{seq:020}.json` and `_catalog/checkpoint/{seq:020}.json`, and
//!   `_catalog/probe/{uuid}` for the start-up check of conditional writes (deleted at once).
//!
//! Names are unique (a UUID v7 in every data and compacted name) and never reused, so an object, once
//! written, never changes: caches never go stale. Sequence numbers are zero-padded to 20 digits
//! (all of `u64`) so lexicographic listing order is numeric order. Database and measurement
//! names are validated upstream (`^[A-Za-z][A-Za-z0-9_-]*$`), so they never contain `/` and
//! never start with `_`, which keeps data keys and `_catalog/` apart.

use chrono::{DateTime, Datelike, Timelike};
use object_store::path::Path;
use uuid::Uuid;

use crate::model::TableId;

/// Prefix of every catalog object.
pub const CATALOG_PREFIX: &str = "_catalog";
const CATALOG_PROBE_DIR: &str = "_catalog/probe";
const CATALOG_LOG_DIR: &str = "_catalog/log";
const CATALOG_CHECKPOINT_DIR: &str = "_catalog/checkpoint";
const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;

/// Returns the start of the UTC hour containing `time_ns` (nanoseconds since the Unix epoch).
pub fn hour_start_ns(time_ns: i64) -> i64 {
    time_ns.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR
}

/// Returns the start of the UTC day containing `time_ns`.
pub fn day_start_ns(time_ns: i64) -> i64 {
    time_ns.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY
}

/// Formats `YYYY/MM/DD` and `HH` for the UTC instant `time_ns`.
fn date_parts(time_ns: i64) -> (String, String) {
    let instant = DateTime::from_timestamp_nanos(time_ns);
    let day = format!(
        "{:04}/{:02}/{:02}",
        instant.year(),
        instant.month(),
        instant.day()
    );
    (day, format!("{:02}", instant.hour()))
}

/// Returns the key of a new data object of `table` for the hour starting at `hour_start_ns`,
/// written under `epoch` from WAL entries `lsn_first..=lsn_last`. Every call returns a new,
/// unique key (UUID v7).
pub fn data_object_path(
    table: &TableId,
    hour_start_ns: i64,
    epoch: u64,
    lsn_first: u64,
    lsn_last: u64,
) -> Path {
    let (day, hour) = date_parts(hour_start_ns);
    Path::from(format!(
        "{}/{}/{day}/{hour}/{epoch:06}-{lsn_first}-{lsn_last}-{}.parquet",
        table.database,
        table.measurement,
        Uuid::now_v7().simple()
    ))
}

/// The period a compacted object covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionPeriod {
    /// One UTC hour; the object lives in the hour folder.
    Hour,
    /// One UTC day; the object lives in the day folder.
    Day,
}

/// Returns the key of a new compacted object of `table` covering the period that contains
/// `period_start_ns`. Every call returns a new, unique key.
pub fn compacted_object_path(
    table: &TableId,
    period: CompactionPeriod,
    period_start_ns: i64,
) -> Path {
    let (day, hour) = date_parts(period_start_ns);
    let name = format!("compacted-{}.parquet", Uuid::now_v7().simple());
    let key = match period {
        CompactionPeriod::Hour => format!(
            "{}/{}/{day}/{hour}/{name}",
            table.database, table.measurement
        ),
        CompactionPeriod::Day => {
            format!("{}/{}/{day}/{name}", table.database, table.measurement)
        }
    };
    Path::from(key)
}

/// What a compacted object key says (the period's start is its UTC hour or day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactedObjectKey {
    /// The table the object belongs to.
    pub table: TableId,
    /// The period it covers.
    pub period: CompactionPeriod,
    /// Start of that period, nanoseconds since the Unix epoch.
    pub period_start_ns: i64,
}

/// Parses a key made by [`compacted_object_path`]; returns `None` for any other key (a flush's
/// object, a catalog key, a name without the UUID).
pub fn parse_compacted_object_path(path: &Path) -> Option<CompactedObjectKey> {
    let parts: Vec<_> = path.parts().collect();
    let (database, measurement, date, hour, name) = match parts.as_slice() {
        [database, measurement, year, month, day, name] => {
            (database, measurement, [year, month, day], None, name)
        }
        [database, measurement, year, month, day, hour, name] => {
            (database, measurement, [year, month, day], Some(hour), name)
        }
        _ => return None,
    };
    let number = |part: &str, len: usize| -> Option<u32> {
        (part.len() == len && part.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let year = i32::try_from(number(date[0].as_ref(), 4)?).ok()?;
    let month = number(date[1].as_ref(), 2)?;
    let day = number(date[2].as_ref(), 2)?;
    let hour = match hour {
        Some(hour) => Some(number(hour.as_ref(), 2)?),
        None => None,
    };
    let uuid = name
        .as_ref()
        .strip_prefix("compacted-")?
        .strip_suffix(".parquet")?;
    Uuid::try_parse(uuid).ok()?;
    let start = chrono::NaiveDate::from_ymd_opt(year, month, day)?
        .and_hms_opt(hour.unwrap_or(0), 0, 0)?
        .and_utc()
        .timestamp_nanos_opt()?;
    Some(CompactedObjectKey {
        table: TableId::new(database.as_ref(), measurement.as_ref()),
        period: if hour.is_some() {
            CompactionPeriod::Hour
        } else {
            CompactionPeriod::Day
        },
        period_start_ns: start,
    })
}

/// Returns the prefix under which all objects of `table` live (for orphan collection).
pub fn table_prefix(table: &TableId) -> Path {
    Path::from(format!("{}/{}", table.database, table.measurement))
}

/// What a data object key says about its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataObjectKey {
    /// The table the object belongs to.
    pub table: TableId,
    /// The writer epoch.
    pub epoch: u64,
    /// First WAL LSN covered.
    pub lsn_first: u64,
    /// Last WAL LSN covered.
    pub lsn_last: u64,
}

/// Parses a key made by [`data_object_path`]; returns `None` for any other key.
pub fn parse_data_object_path(path: &Path) -> Option<DataObjectKey> {
    let parts: Vec<_> = path.parts().collect();
    let [database, measurement, year, month, day, hour, name] = parts.as_slice() else {
        return None;
    };
    let all_digits = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|byte| byte.is_ascii_digit())
    };
    if !all_digits(year.as_ref(), 4)
        || !all_digits(month.as_ref(), 2)
        || !all_digits(day.as_ref(), 2)
        || !all_digits(hour.as_ref(), 2)
    {
        return None;
    }
    let stem = name.as_ref().strip_suffix(".parquet")?;
    let mut fields = stem.splitn(4, '-');
    let epoch = fields.next()?.parse().ok()?;
    let lsn_first = fields.next()?.parse().ok()?;
    let lsn_last = fields.next()?.parse().ok()?;
    Uuid::try_parse(fields.next()?).ok()?;
    Some(DataObjectKey {
        table: TableId::new(database.as_ref(), measurement.as_ref()),
        epoch,
        lsn_first,
        lsn_last,
    })
}

/// Returns a new key for the start-up check that the store honours put-if-absent (never listed;
/// deleted once checked).
pub fn conditional_write_probe_path() -> Path {
    Path::from(format!("{CATALOG_PROBE_DIR}/{}", uuid::Uuid::now_v7()))
}

/// Returns the prefix of the catalog log.
pub fn catalog_log_prefix() -> Path {
    Path::from(CATALOG_LOG_DIR)
}

/// Returns the prefix of catalog checkpoints.
pub fn catalog_checkpoint_prefix() -> Path {
    Path::from(CATALOG_CHECKPOINT_DIR)
}

/// Returns the key of catalog log record `seq` (the slot).
pub fn catalog_log_path(seq: u64) -> Path {
    Path::from(format!("{CATALOG_LOG_DIR}/{seq:020}.json"))
}

/// Returns the key of the catalog checkpoint taken after applying record `seq`.
pub fn catalog_checkpoint_path(seq: u64) -> Path {
    Path::from(format!("{CATALOG_CHECKPOINT_DIR}/{seq:020}.json"))
}

/// Parses a key made by [`catalog_log_path`] back to its sequence number.
pub fn parse_catalog_log_path(path: &Path) -> Option<u64> {
    parse_seq_key(path, CATALOG_LOG_DIR)
}

/// Parses a key made by [`catalog_checkpoint_path`] back to its sequence number.
pub fn parse_catalog_checkpoint_path(path: &Path) -> Option<u64> {
    parse_seq_key(path, CATALOG_CHECKPOINT_DIR)
}

fn parse_seq_key(path: &Path, dir: &str) -> Option<u64> {
    let name = path.as_ref().strip_prefix(dir)?.strip_prefix('/')?;
    let digits = name.strip_suffix(".json")?;
    // Exactly the padded form: other spellings of the same number are not our keys.
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-03-05T07:00:00Z
    const HOUR: i64 = 1_709_622_000_000_000_000;

    #[test]
    fn test_should_format_data_object_path_in_hour_folder() {
        let table = TableId::new("db1", "cpu");
        let path = data_object_path(&table, HOUR, 3, 10, 42);
        let key = path.as_ref();
        assert!(
            key.starts_with("db1/cpu/2024/03/05/07/000003-10-42-"),
            "{key}"
        );
        assert!(key.ends_with(".parquet"));
        assert_ne!(path, data_object_path(&table, HOUR, 3, 10, 42));
    }

    #[test]
    fn test_should_parse_data_object_path_back() {
        let table = TableId::new("db1", "cpu_load-x");
        let path = data_object_path(&table, HOUR, 1234567, 1, u64::MAX);
        assert_eq!(
            parse_data_object_path(&path),
            Some(DataObjectKey {
                table,
                epoch: 1234567,
                lsn_first: 1,
                lsn_last: u64::MAX
            })
        );
        assert_eq!(parse_data_object_path(&catalog_log_path(1)), None);
        assert_eq!(
            parse_data_object_path(&Path::from("a/b/2024/03/05/07/x.parquet")),
            None
        );
    }

    #[test]
    fn test_should_format_dates_before_the_epoch() {
        let table = TableId::new("db", "m");
        // 1969-12-31T23:00:00Z
        let path = data_object_path(&table, hour_start_ns(-1), 1, 1, 1);
        assert!(path.as_ref().starts_with("db/m/1969/12/31/23/"), "{path}");
    }

    #[test]
    fn test_should_compute_hour_and_day_starts() {
        assert_eq!(hour_start_ns(HOUR), HOUR);
        assert_eq!(hour_start_ns(HOUR + NANOS_PER_HOUR - 1), HOUR);
        assert_eq!(hour_start_ns(-1), -NANOS_PER_HOUR);
        assert_eq!(day_start_ns(HOUR), HOUR - 7 * NANOS_PER_HOUR);
    }

    #[test]
    fn test_should_format_compacted_paths() {
        let table = TableId::new("db", "m");
        let hourly = compacted_object_path(&table, CompactionPeriod::Hour, HOUR);
        assert!(hourly.as_ref().starts_with("db/m/2024/03/05/07/compacted-"));
        let daily = compacted_object_path(&table, CompactionPeriod::Day, HOUR);
        assert!(daily.as_ref().starts_with("db/m/2024/03/05/compacted-"));
        assert!(daily.prefix_matches(&table_prefix(&table)));
    }

    #[test]
    fn test_should_parse_compacted_paths_back() {
        let table = TableId::new("db", "cpu_load-x");
        let hourly = compacted_object_path(&table, CompactionPeriod::Hour, HOUR + 5);
        assert_eq!(
            parse_compacted_object_path(&hourly),
            Some(CompactedObjectKey {
                table: table.clone(),
                period: CompactionPeriod::Hour,
                period_start_ns: HOUR,
            })
        );
        let daily = compacted_object_path(&table, CompactionPeriod::Day, HOUR);
        assert_eq!(
            parse_compacted_object_path(&daily),
            Some(CompactedObjectKey {
                table: table.clone(),
                period: CompactionPeriod::Day,
                period_start_ns: day_start_ns(HOUR),
            })
        );
        // Before the Unix epoch too.
        let old = compacted_object_path(&table, CompactionPeriod::Hour, hour_start_ns(-1));
        assert_eq!(
            parse_compacted_object_path(&old).map(|key| key.period_start_ns),
            Some(-NANOS_PER_HOUR)
        );
        for other in [
            data_object_path(&table, HOUR, 1, 1, 1),
            catalog_log_path(1),
            Path::from("db/m/2024/03/05/07/compacted-x.parquet"),
            Path::from("db/m/2024/3/05/compacted-0190b0a0c0d07e008000000000000000.parquet"),
            Path::from("db/m/2024/02/30/compacted-0190b0a0c0d07e008000000000000000.parquet"),
            Path::from("db/m/2024/03/05/24/compacted-0190b0a0c0d07e008000000000000000.parquet"),
        ] {
            assert_eq!(parse_compacted_object_path(&other), None, "{other}");
        }
    }

    #[test]
    fn test_should_round_trip_catalog_keys() {
        assert_eq!(
            catalog_log_path(7).as_ref(),
            "_catalog/log/00000000000000000007.json"
        );
        assert_eq!(
            catalog_checkpoint_path(100).as_ref(),
            "_catalog/checkpoint/00000000000000000100.json"
        );
        for seq in [0, 1, 99, 100, u64::MAX] {
            assert_eq!(parse_catalog_log_path(&catalog_log_path(seq)), Some(seq));
            assert_eq!(
                parse_catalog_checkpoint_path(&catalog_checkpoint_path(seq)),
                Some(seq)
            );
            assert_eq!(parse_catalog_log_path(&catalog_checkpoint_path(seq)), None);
        }
        assert_eq!(
            parse_catalog_log_path(&Path::from("_catalog/log/7.json")),
            None
        );
        assert_eq!(
            parse_catalog_log_path(&Path::from("_catalog/log/0000000000000000000x.json")),
            None
        );
    }

    #[test]
    fn test_should_order_catalog_keys_numerically() {
        let mut keys: Vec<String> = [10, 9, 100, 1]
            .iter()
            .map(|seq| catalog_log_path(*seq).to_string())
            .collect();
        keys.sort();
        let seqs: Vec<u64> = keys
            .iter()
            .map(|key| parse_catalog_log_path(&Path::from(key.as_str())).unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 9, 10, 100]);
    }
}
