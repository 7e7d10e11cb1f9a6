//! Test-only generators and checks shared by the decoders' round-trip property tests: random
//! tables of every column type, and a value-for-value comparison of decoded batches.

use arc_storage::model::{ColumnKind, FieldType};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType, UInt64Type};
use proptest::prelude::*;

use super::TableWrite;

/// Returns the `time` column as nanoseconds.
pub(super) fn times(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column(0)
        .as_primitive::<TimestampNanosecondType>()
        .values()
        .to_vec()
}

/// Returns a string column (tag or string field) by name.
pub(super) fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_string::<i32>()
        .iter()
        .map(|value| value.map(str::to_string))
        .collect()
}

/// Returns the kind of a column, from its metadata.
pub(super) fn kind(batch: &RecordBatch, name: &str) -> ColumnKind {
    let schema = batch.schema();
    ColumnKind::of_field(schema.field_with_name(name).unwrap()).unwrap()
}

/// Returns the column names in schema order.
pub(super) fn column_names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// A generated field value.
#[derive(Debug, Clone)]
pub(super) enum Value {
    /// A finite float.
    Float(f64),
    /// A signed integer.
    Integer(i64),
    /// An unsigned integer.
    UInteger(u64),
    /// A boolean.
    Boolean(bool),
    /// A string.
    String(String),
}

impl Value {
    /// Returns the column type of the value.
    pub(super) fn field_type(&self) -> FieldType {
        match self {
            Value::Float(_) => FieldType::Float,
            Value::Integer(_) => FieldType::Integer,
            Value::UInteger(_) => FieldType::UInteger,
            Value::Boolean(_) => FieldType::Boolean,
            Value::String(_) => FieldType::String,
        }
    }
}

/// A generated row: time, tag values (by tag), field values (by field); `None` is absent.
pub(super) type Row = (i64, Vec<Option<String>>, Vec<Option<Value>>);

/// A generated table: tag and field columns, rows of optional values.
#[derive(Debug, Clone)]
pub(super) struct Table {
    /// Measurement name.
    pub(super) measurement: String,
    /// Tag names.
    pub(super) tags: Vec<String>,
    /// Field names and types.
    pub(super) fields: Vec<(String, FieldType)>,
    /// Per row: time, tag values, field values.
    pub(super) rows: Vec<Row>,
}

/// Keys and tag values: escapable characters and unicode, never empty, never ending in a
/// backslash (the parser, like Go's, refuses that), no tabs or newlines (unescapable).
/// Common names are favoured so that generated tables of one measurement share columns.
pub(super) fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => "(host|region|usage|x y|a,b|k=v)",
        2 => "[a-zA-Z0-9 ,=\"\\\\é😀_.-]{0,8}[a-zA-Z0-9 ,=\"é😀_.-]",
    ]
}

/// String field values: anything printable plus newlines, quotes and backslashes.
pub(super) fn string_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,=\"\\\\\n'é😀{}#-]{0,12}"
}

fn value_strategy(field_type: FieldType) -> BoxedStrategy<Value> {
    match field_type {
        FieldType::Float => any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Value::Float)
            .boxed(),
        FieldType::Integer => any::<i64>().prop_map(Value::Integer).boxed(),
        FieldType::UInteger => any::<u64>().prop_map(Value::UInteger).boxed(),
        FieldType::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
        FieldType::String => string_strategy().prop_map(Value::String).boxed(),
    }
}

fn field_type_strategy() -> impl Strategy<Value = FieldType> {
    prop_oneof![
        Just(FieldType::Float),
        Just(FieldType::Integer),
        Just(FieldType::UInteger),
        Just(FieldType::Boolean),
        Just(FieldType::String),
    ]
}

/// Generates a table whose rows all have at least one field (line protocol needs one).
pub(super) fn table_strategy(time_range: std::ops::Range<i64>) -> impl Strategy<Value = Table> {
    let names = (
        // Mostly a few shared names, so that tables merge.
        prop_oneof![2 => "(cpu|mem)", 1 => "[a-zA-Z][a-zA-Z0-9_-]{0,10}"],
        proptest::collection::btree_set(key_strategy(), 0..4),
        proptest::collection::btree_map(key_strategy(), field_type_strategy(), 1..5),
    );
    names
        .prop_filter(
            "names must be distinct and not reserved",
            |(_, tags, fields)| {
                tags.iter().chain(fields.keys()).all(|name| name != "time")
                    && tags.iter().all(|tag| !fields.contains_key(tag))
            },
        )
        .prop_flat_map(move |(measurement, tags, fields)| {
            let tags: Vec<String> = tags.into_iter().collect();
            let fields: Vec<(String, FieldType)> = fields.into_iter().collect();
            let tag_values =
                proptest::collection::vec(proptest::option::of(key_strategy()), tags.len());
            let field_values: Vec<_> = fields
                .iter()
                .map(|(_, field_type)| proptest::option::of(value_strategy(*field_type)))
                .collect();
            let row = (time_range.clone(), tag_values, field_values)
                .prop_filter("a row needs a field", |(_, _, values)| {
                    values.iter().any(Option::is_some)
                });
            proptest::collection::vec(row, 1..6).prop_map(move |rows| Table {
                measurement: measurement.clone(),
                tags: tags.clone(),
                fields: fields.clone(),
                rows,
            })
        })
}

/// Merges generated tables by measurement, as the decoder does, and checks every value.
pub(super) fn assert_decoded(tables: &[Table], writes: &[TableWrite]) {
    let mut expected: Vec<Table> = Vec::new();
    for table in tables {
        match expected
            .iter_mut()
            .find(|t| t.measurement == table.measurement)
        {
            Some(merged) => {
                // Re-key rows onto the merged column list.
                for (tag, _) in table.tags.iter().zip(0..) {
                    if !merged.tags.contains(tag) {
                        merged.tags.push(tag.clone());
                        merged.rows.iter_mut().for_each(|row| row.1.push(None));
                    }
                }
                for field in &table.fields {
                    if !merged.fields.iter().any(|f| f.0 == field.0) {
                        merged.fields.push(field.clone());
                        merged.rows.iter_mut().for_each(|row| row.2.push(None));
                    }
                }
                for (time, tag_values, field_values) in &table.rows {
                    let tags = merged
                        .tags
                        .iter()
                        .map(|tag| {
                            table
                                .tags
                                .iter()
                                .position(|t| t == tag)
                                .and_then(|i| tag_values[i].clone())
                        })
                        .collect();
                    let fields = merged
                        .fields
                        .iter()
                        .map(|(field, _)| {
                            table
                                .fields
                                .iter()
                                .position(|f| &f.0 == field)
                                .and_then(|i| field_values[i].clone())
                        })
                        .collect();
                    merged.rows.push((*time, tags, fields));
                }
            }
            None => expected.push(table.clone()),
        }
    }
    assert_eq!(writes.len(), expected.len());
    for (table, write) in expected.iter().zip(writes) {
        assert_eq!(write.table.measurement, table.measurement);
        let batch = &write.batch;
        assert_eq!(batch.num_rows(), table.rows.len());
        let expected_times: Vec<i64> = table.rows.iter().map(|row| row.0).collect();
        assert_eq!(times(batch), expected_times);
        for (i, tag) in table.tags.iter().enumerate() {
            let values: Vec<Option<String>> =
                table.rows.iter().map(|row| row.1[i].clone()).collect();
            if values.iter().all(Option::is_none) {
                assert!(batch.column_by_name(tag).is_none(), "{tag}");
                continue;
            }
            assert_eq!(kind(batch, tag), ColumnKind::Tag);
            assert_eq!(strings(batch, tag), values, "tag {tag:?}");
        }
        for (i, (field, field_type)) in table.fields.iter().enumerate() {
            let values: Vec<Option<Value>> =
                table.rows.iter().map(|row| row.2[i].clone()).collect();
            if values.iter().all(Option::is_none) {
                assert!(batch.column_by_name(field).is_none(), "{field}");
                continue;
            }
            assert_eq!(
                kind(batch, field),
                ColumnKind::Field(*field_type),
                "{field}"
            );
            let column = batch.column_by_name(field).unwrap();
            for (row, value) in values.iter().enumerate() {
                let Some(value) = value else {
                    assert!(column.is_null(row), "{field}[{row}] should be null");
                    continue;
                };
                assert_eq!(value.field_type(), *field_type);
                match value {
                    Value::Float(v) => {
                        assert_eq!(column.as_primitive::<Float64Type>().value(row), *v)
                    }
                    Value::Integer(v) => {
                        assert_eq!(column.as_primitive::<Int64Type>().value(row), *v)
                    }
                    Value::UInteger(v) => {
                        assert_eq!(column.as_primitive::<UInt64Type>().value(row), *v)
                    }
                    Value::Boolean(v) => assert_eq!(column.as_boolean().value(row), *v),
                    Value::String(v) => {
                        assert_eq!(column.as_string::<i32>().value(row), v)
                    }
                }
            }
        }
    }
}

/// Drops tables that would clash with an earlier one of the same measurement (a column
/// with another kind), which the decoder rightly refuses.
pub(super) fn consistent(tables: Vec<Table>) -> Vec<Table> {
    let mut kept: Vec<Table> = Vec::new();
    for table in tables {
        let clashes = kept
            .iter()
            .filter(|t| t.measurement == table.measurement)
            .any(|t| {
                table
                    .tags
                    .iter()
                    .any(|tag| t.fields.iter().any(|f| &f.0 == tag))
                    || table.fields.iter().any(|field| {
                        t.tags.contains(&field.0)
                            || t.fields.iter().any(|f| f.0 == field.0 && f.1 != field.1)
                    })
            });
        if !clashes {
            kept.push(table);
        }
    }
    kept
}
