//! The data model every crate shares: table identities, column kinds and the Arrow fields that
//! carry them.
//!
//! A table is `(database, measurement)`. Its columns are `time` (nanoseconds since the Unix
//! epoch, UTC, stored as Arrow `Timestamp(Nanosecond, None)` so DuckDB reads it as
//! `TIMESTAMP_NS` and no precision is lost), tag columns (strings) and field columns (f64, i64,
//! u64, bool, string). Whether a column is a tag or a field travels in the Arrow field's
//! metadata under [`KIND_METADATA_KEY`], so a `RecordBatch` is self-describing all the way from
//! the decoder through the WAL to the Parquet footer.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

/// Name of the timestamp column of every table.
pub const TIME_COLUMN: &str = "time";

/// Arrow field metadata key whose value is `"tag"`, `"field"` or `"time"`.
pub const KIND_METADATA_KEY: &str = "arc.kind";

/// Identifies a table: a measurement inside a database.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableId {
    /// Database name (`^[A-Za-z][A-Za-z0-9_-]{0,63}$`).
    pub database: String,
    /// Measurement name (`^[A-Za-z][A-Za-z0-9_-]*$`, at most 128 characters).
    pub measurement: String,
}

impl TableId {
    /// Builds a table id from its two parts.
    pub fn new(database: impl Into<String>, measurement: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            measurement: measurement.into(),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.database, self.measurement)
    }
}

/// The value type of a field column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// 64-bit float (line protocol `1.5`).
    Float,
    /// Signed 64-bit integer (line protocol `1i`).
    Integer,
    /// Unsigned 64-bit integer (line protocol `1u`).
    UInteger,
    /// Boolean (line protocol `t`, `false`, ...).
    Boolean,
    /// UTF-8 string (line protocol `"x"`).
    String,
}

impl FieldType {
    /// Returns the Arrow type this field type is stored as.
    pub fn data_type(self) -> DataType {
        match self {
            FieldType::Float => DataType::Float64,
            FieldType::Integer => DataType::Int64,
            FieldType::UInteger => DataType::UInt64,
            FieldType::Boolean => DataType::Boolean,
            FieldType::String => DataType::Utf8,
        }
    }

    /// Maps an Arrow type back to a field type, if it is one of ours.
    pub fn from_data_type(data_type: &DataType) -> Option<Self> {
        match data_type {
            DataType::Float64 => Some(FieldType::Float),
            DataType::Int64 => Some(FieldType::Integer),
            DataType::UInt64 => Some(FieldType::UInteger),
            DataType::Boolean => Some(FieldType::Boolean),
            DataType::Utf8 => Some(FieldType::String),
            _ => None,
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::UInteger => "unsigned",
            FieldType::Boolean => "boolean",
            FieldType::String => "string",
        };
        f.write_str(name)
    }
}

/// What a column is, with its type for fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "type")]
pub enum ColumnKind {
    /// The `time` column.
    Time,
    /// A tag column (always a string).
    Tag,
    /// A field column of the given type.
    Field(FieldType),
}

impl ColumnKind {
    /// Returns the Arrow type of a column of this kind.
    pub fn data_type(self) -> DataType {
        match self {
            ColumnKind::Time => time_data_type(),
            ColumnKind::Tag => DataType::Utf8,
            ColumnKind::Field(field_type) => field_type.data_type(),
        }
    }

    /// Returns the Arrow field for a column of this kind, with the kind in its metadata.
    pub fn arrow_field(self, name: &str) -> Field {
        let (nullable, kind) = match self {
            ColumnKind::Time => (false, "time"),
            ColumnKind::Tag => (true, "tag"),
            ColumnKind::Field(_) => (true, "field"),
        };
        Field::new(name, self.data_type(), nullable)
            .with_metadata([(KIND_METADATA_KEY.to_string(), kind.to_string())])
    }

    /// Reads the kind of an Arrow field: its metadata first, else its name and type.
    pub fn of_field(field: &Field) -> Option<Self> {
        match field.metadata().get(KIND_METADATA_KEY).map(String::as_str) {
            Some("time") => Some(ColumnKind::Time),
            Some("tag") => Some(ColumnKind::Tag),
            Some("field") => FieldType::from_data_type(field.data_type()).map(ColumnKind::Field),
            _ if field.name() == TIME_COLUMN => Some(ColumnKind::Time),
            _ => FieldType::from_data_type(field.data_type()).map(ColumnKind::Field),
        }
    }
}

/// A column's name and kind, as recorded in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Column kind (and field type).
    #[serde(flatten)]
    pub kind: ColumnKind,
}

/// Returns the Arrow type of the `time` column.
pub fn time_data_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, None)
}

/// Builds an Arrow schema from column specs, in the given order.
pub fn schema_of(columns: &[ColumnSpec]) -> Arc<Schema> {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|column| column.kind.arrow_field(&column.name))
            .collect::<Vec<_>>(),
    ))
}

/// Lists the column specs of an Arrow schema; columns that are not ours are skipped.
pub fn columns_of(schema: &Schema) -> Vec<ColumnSpec> {
    schema
        .fields()
        .iter()
        .filter_map(|field| {
            ColumnKind::of_field(field).map(|kind| ColumnSpec {
                name: field.name().clone(),
                kind,
            })
        })
        .collect()
}

/// A closed time interval in nanoseconds since the Unix epoch (UTC); `i64::MIN`/`i64::MAX`
/// stand for an open end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// First nanosecond included.
    pub start_ns: i64,
    /// Last nanosecond included.
    pub end_ns: i64,
}

impl TimeRange {
    /// The range that includes every instant.
    pub const ALL: TimeRange = TimeRange {
        start_ns: i64::MIN,
        end_ns: i64::MAX,
    };

    /// Returns whether two closed ranges share at least one instant.
    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.start_ns <= other.end_ns && other.start_ns <= self.end_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_round_trip_columns_through_schema() {
        let columns = vec![
            ColumnSpec {
                name: "time".into(),
                kind: ColumnKind::Time,
            },
            ColumnSpec {
                name: "host".into(),
                kind: ColumnKind::Tag,
            },
            ColumnSpec {
                name: "usage".into(),
                kind: ColumnKind::Field(FieldType::Float),
            },
            ColumnSpec {
                name: "note".into(),
                kind: ColumnKind::Field(FieldType::String),
            },
        ];
        assert_eq!(columns_of(&schema_of(&columns)), columns);
    }

    #[test]
    fn test_should_serialize_column_spec_compactly() {
        let spec = ColumnSpec {
            name: "usage".into(),
            kind: ColumnKind::Field(FieldType::UInteger),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"name":"usage","kind":"field","type":"uinteger"}"#);
        assert_eq!(serde_json::from_str::<ColumnSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn test_should_detect_overlap_of_closed_ranges() {
        let a = TimeRange {
            start_ns: 0,
            end_ns: 10,
        };
        assert!(a.overlaps(&TimeRange {
            start_ns: 10,
            end_ns: 20
        }));
        assert!(!a.overlaps(&TimeRange {
            start_ns: 11,
            end_ns: 20
        }));
        assert!(a.overlaps(&TimeRange::ALL));
    }
}
