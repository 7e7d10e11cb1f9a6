//! Encodes query results for the HTTP API: Arc's JSON shape and the Arrow IPC stream.
//!
//! JSON rows are arrays in column order. Cell encoding follows Arc (a Go service), so that
//! clients see the same text: timestamps of any unit and zone as RFC3339Nano in UTC with the
//! fraction's trailing zeros trimmed (`2026-08-01T00:00:00Z`, `2026-08-01T00:00:00.5Z`),
//! 64-bit integers as exact JSON integers, floats as numbers with NaN and infinities as
//! `null`, and every other type (dates, decimals, lists, ...) as Arrow's display text.
//!
//! # Performance
//! This is a hot path. Columns are prepared once per batch (integers widened to 64 bits,
//! timestamps viewed as raw `i64`) so the per-cell work is a match and a write, with no
//! per-cell formatting machinery except for the rare display-text types.
//! [`to_json_bytes`] writes straight into a byte buffer and is the one the HTTP layer should
//! serve; [`to_json`] builds the same document as a [`serde_json::Value`].

use std::fmt::Write as _;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, TimeUnit, UInt64Type};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};

use crate::error::QueryError;
use crate::result::QueryResult;

/// Builds Arc's success document for `result`:
/// `{"success":true,"columns":[...],"data":[[...]],"row_count":N,"execution_time_ms":ms,
/// "timestamp":"<RFC3339>"}`.
pub fn to_json(result: &QueryResult, execution_time_ms: u64, now: DateTime<Utc>) -> Value {
    let mut rows = Vec::with_capacity(result.row_count());
    let mut scratch = String::new();
    for batch in &result.batches {
        let columns = prepare_columns(batch);
        for row in 0..batch.num_rows() {
            let mut cells = Vec::with_capacity(columns.len());
            for column in &columns {
                cells.push(column.value(row, &mut scratch));
            }
            rows.push(Value::Array(cells));
        }
    }
    let mut document = Map::new();
    document.insert("success".into(), Value::Bool(true));
    document.insert("columns".into(), Value::Array(column_names(result)));
    document.insert("row_count".into(), Value::from(rows.len()));
    document.insert("data".into(), Value::Array(rows));
    document.insert("execution_time_ms".into(), Value::from(execution_time_ms));
    document.insert("timestamp".into(), Value::String(rfc3339_of(now)));
    Value::Object(document)
}

/// Writes the same document as [`to_json`] as JSON text, keys in Arc's order. Faster than
/// serializing [`to_json`]'s value: no per-cell allocation.
pub fn to_json_bytes(result: &QueryResult, execution_time_ms: u64, now: DateTime<Utc>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + result.row_count() * 16 * result.schema.fields().len());
    let mut encoder = JsonEncoder::begin(&result.schema, &mut out);
    for batch in &result.batches {
        encoder.batch(batch, &mut out);
    }
    encoder.finish(execution_time_ms, now, &mut out);
    out
}

/// Writes Arc's JSON document piece by piece, so a result can be sent while it is produced:
/// the columns first, then the rows of each batch, then the row count and timings (which
/// Arc's document puts after the rows).
#[derive(Debug)]
pub struct JsonEncoder {
    rows: u64,
    scratch: String,
}

impl JsonEncoder {
    /// Writes the document's start and the column names of `schema` to `out`.
    pub fn begin(schema: &Schema, out: &mut Vec<u8>) -> Self {
        out.extend_from_slice(b"{\"success\":true,\"columns\":[");
        for (index, field) in schema.fields().iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_json_string(out, field.name());
        }
        out.extend_from_slice(b"],\"data\":[");
        Self {
            rows: 0,
            scratch: String::new(),
        }
    }

    /// Writes the rows of `batch` to `out`.
    pub fn batch(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) {
        let columns = prepare_columns(batch);
        for row in 0..batch.num_rows() {
            if self.rows > 0 {
                out.push(b',');
            }
            self.rows += 1;
            out.push(b'[');
            for (index, column) in columns.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                column.write(row, out, &mut self.scratch);
            }
            out.push(b']');
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the document's end: the row count, the execution time and the timestamp.
    pub fn finish(self, execution_time_ms: u64, now: DateTime<Utc>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"],\"row_count\":");
        write_u64(out, self.rows);
        out.extend_from_slice(b",\"execution_time_ms\":");
        write_u64(out, execution_time_ms);
        out.extend_from_slice(b",\"timestamp\":");
        write_json_string(out, &rfc3339_of(now));
        out.push(b'}');
    }
}

/// Builds Arc's error document:
/// `{"success":false,"columns":null,"data":null,"row_count":0,"error":"..."}`.
pub fn error_json(message: &str) -> Value {
    let mut document = Map::new();
    document.insert("success".into(), Value::Bool(false));
    document.insert("columns".into(), Value::Null);
    document.insert("data".into(), Value::Null);
    document.insert("row_count".into(), Value::from(0));
    document.insert("error".into(), Value::String(message.to_string()));
    Value::Object(document)
}

/// Encodes `result` as an Arrow IPC stream (`application/vnd.apache.arrow.stream`).
///
/// # Errors
/// [`QueryError::Execution`] when Arrow cannot encode a batch.
pub fn to_arrow_ipc(result: &QueryResult) -> Result<Vec<u8>, QueryError> {
    let mut out = Vec::new();
    let mut encoder = ArrowIpcEncoder::begin(&result.schema, &mut out)?;
    for batch in &result.batches {
        encoder.batch(batch, &mut out)?;
    }
    encoder.finish(&mut out)?;
    Ok(out)
}

/// Writes an Arrow IPC stream piece by piece, so a result can be sent while it is produced.
pub struct ArrowIpcEncoder {
    writer: StreamWriter<Vec<u8>>,
}

impl std::fmt::Debug for ArrowIpcEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrowIpcEncoder").finish_non_exhaustive()
    }
}

fn ipc_error(error: arrow::error::ArrowError) -> QueryError {
    QueryError::Execution(format!("encoding arrow ipc stream: {error}"))
}

impl ArrowIpcEncoder {
    /// Writes the stream's schema message to `out`.
    ///
    /// # Errors
    /// [`QueryError::Execution`] when Arrow cannot encode the schema.
    pub fn begin(schema: &Schema, out: &mut Vec<u8>) -> Result<Self, QueryError> {
        let mut writer = StreamWriter::try_new(Vec::new(), schema).map_err(ipc_error)?;
        out.append(writer.get_mut());
        Ok(Self { writer })
    }

    /// Writes one batch message to `out`.
    ///
    /// # Errors
    /// [`QueryError::Execution`] when Arrow cannot encode the batch.
    pub fn batch(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), QueryError> {
        self.writer.write(batch).map_err(ipc_error)?;
        out.append(self.writer.get_mut());
        Ok(())
    }

    /// Writes the end-of-stream marker to `out`.
    ///
    /// # Errors
    /// [`QueryError::Execution`] when Arrow cannot finish the stream.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), QueryError> {
        self.writer.finish().map_err(ipc_error)?;
        out.append(self.writer.get_mut());
        Ok(())
    }
}

fn column_names(result: &QueryResult) -> Vec<Value> {
    result
        .schema
        .fields()
        .iter()
        .map(|field| Value::String(field.name().clone()))
        .collect()
}

/// One column of a batch, prepared for cell-by-cell encoding.
enum Column<'a> {
    Null,
    Boolean(&'a BooleanArray),
    Int(Int64Array),
    UInt(UInt64Array),
    Float(Float64Array),
    Utf8(&'a StringArray),
    Other(&'a dyn Array),
    /// Raw epoch values and their unit.
    Timestamp(Int64Array, TimeUnit),
    /// Arrow's display text; `None` when Arrow cannot format the type.
    Display(&'a dyn Array, Option<ArrayFormatter<'a>>),
    /// Decimals (DuckDB's `HUGEINT` sums and `DECIMAL`s): Arrow's display text is a valid
    /// JSON number, written as one so clients get a number like any other aggregate.
    Decimal(&'a dyn Array, Option<ArrayFormatter<'a>>),
}

fn prepare_columns(batch: &RecordBatch) -> Vec<Column<'_>> {
    batch.columns().iter().map(prepare_column).collect()
}

fn prepare_column(array: &ArrayRef) -> Column<'_> {
    match array.data_type() {
        DataType::Null => Column::Null,
        DataType::Boolean => Column::Boolean(array.as_boolean()),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            widened(array, &DataType::Int64)
                .map(|wide| Column::Int(wide.as_primitive::<Int64Type>().clone()))
                .unwrap_or_else(|| display_column(array))
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            widened(array, &DataType::UInt64)
                .map(|wide| Column::UInt(wide.as_primitive::<UInt64Type>().clone()))
                .unwrap_or_else(|| display_column(array))
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            widened(array, &DataType::Float64)
                .map(|wide| Column::Float(wide.as_primitive::<Float64Type>().clone()))
                .unwrap_or_else(|| display_column(array))
        }
        DataType::Utf8 => Column::Utf8(array.as_string::<i32>()),
        DataType::LargeUtf8 | DataType::Utf8View => Column::Other(array.as_ref()),
        DataType::Timestamp(unit, _) => widened(array, &DataType::Int64)
            .map(|raw| Column::Timestamp(raw.as_primitive::<Int64Type>().clone(), *unit))
            .unwrap_or_else(|| display_column(array)),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => match display_column(array) {
            Column::Display(array, formatter) => Column::Decimal(array, formatter),
            other => other,
        },
        _ => display_column(array),
    }
}

/// Casts to a wider type of the same kind (a no-op clone when already there).
fn widened(array: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
    cast(array.as_ref(), to).ok()
}

fn display_column(array: &ArrayRef) -> Column<'_> {
    const OPTIONS: FormatOptions<'static> = FormatOptions::new();
    Column::Display(
        array.as_ref(),
        ArrayFormatter::try_new(array.as_ref(), &OPTIONS).ok(),
    )
}

impl Column<'_> {
    fn is_null(&self, row: usize) -> bool {
        match self {
            Column::Null => true,
            Column::Boolean(array) => array.is_null(row),
            Column::Int(array) => array.is_null(row),
            Column::UInt(array) => array.is_null(row),
            Column::Float(array) => array.is_null(row),
            Column::Utf8(array) => array.is_null(row),
            Column::Other(array) => array.is_null(row),
            Column::Timestamp(array, _) => array.is_null(row),
            Column::Display(array, _) | Column::Decimal(array, _) => array.is_null(row),
        }
    }

    /// Returns the cell as a JSON value; `scratch` is reused for text formatting.
    fn value(&self, row: usize, scratch: &mut String) -> Value {
        if self.is_null(row) {
            return Value::Null;
        }
        match self {
            Column::Null => Value::Null,
            Column::Boolean(array) => Value::Bool(array.value(row)),
            Column::Int(array) => Value::Number(Number::from(array.value(row))),
            Column::UInt(array) => Value::Number(Number::from(array.value(row))),
            Column::Float(array) => {
                Number::from_f64(array.value(row)).map_or(Value::Null, Value::Number)
            }
            Column::Utf8(array) => Value::String(array.value(row).to_string()),
            Column::Other(array) => match other_string(*array, row) {
                Some(text) => Value::String(text.to_string()),
                None => Value::Null,
            },
            Column::Timestamp(array, unit) => {
                let mut bytes = Vec::with_capacity(36);
                write_rfc3339(&mut bytes, array.value(row), *unit);
                // Only ASCII digits and punctuation were written.
                Value::String(String::from_utf8(bytes).expect("rfc3339 text is ascii"))
            }
            Column::Display(_, formatter) => {
                if display_text(formatter.as_ref(), row, scratch) {
                    Value::String(scratch.clone())
                } else {
                    Value::Null
                }
            }
            Column::Decimal(_, formatter) => {
                if display_text(formatter.as_ref(), row, scratch) {
                    serde_json::from_str::<Number>(scratch)
                        .map_or_else(|_| Value::String(scratch.clone()), Value::Number)
                } else {
                    Value::Null
                }
            }
        }
    }

    /// Writes the cell as JSON text into `out`; `scratch` is reused for text formatting.
    fn write(&self, row: usize, out: &mut Vec<u8>, scratch: &mut String) {
        if self.is_null(row) {
            out.extend_from_slice(b"null");
            return;
        }
        match self {
            Column::Null => out.extend_from_slice(b"null"),
            Column::Boolean(array) => {
                out.extend_from_slice(if array.value(row) { b"true" } else { b"false" })
            }
            Column::Int(array) => write_i64(out, array.value(row)),
            Column::UInt(array) => write_u64(out, array.value(row)),
            Column::Float(array) => write_f64(out, array.value(row)),
            Column::Utf8(array) => write_json_string(out, array.value(row)),
            Column::Other(array) => match other_string(*array, row) {
                Some(text) => write_json_string(out, text),
                None => out.extend_from_slice(b"null"),
            },
            Column::Timestamp(array, unit) => {
                out.push(b'"');
                write_rfc3339(out, array.value(row), *unit);
                out.push(b'"');
            }
            Column::Display(_, formatter) => {
                if display_text(formatter.as_ref(), row, scratch) {
                    write_json_string(out, scratch);
                } else {
                    out.extend_from_slice(b"null");
                }
            }
            Column::Decimal(_, formatter) => {
                // Display text of a decimal is digits, one optional `-` and one optional `.`;
                // anything else (never expected) is written as a string so the JSON stays valid.
                let numeric = display_text(formatter.as_ref(), row, scratch)
                    && serde_json::from_str::<Number>(scratch).is_ok();
                if numeric {
                    out.extend_from_slice(scratch.as_bytes());
                } else if scratch.is_empty() {
                    out.extend_from_slice(b"null");
                } else {
                    write_json_string(out, scratch);
                }
            }
        }
    }
}

/// Reads a large or view string cell.
fn other_string(array: &dyn Array, row: usize) -> Option<&str> {
    match array.data_type() {
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(array.as_string_view().value(row)),
        _ => None,
    }
}

/// Formats a cell with Arrow's display into `scratch`; false when it cannot be formatted.
fn display_text(formatter: Option<&ArrayFormatter<'_>>, row: usize, scratch: &mut String) -> bool {
    scratch.clear();
    match formatter {
        Some(formatter) => write!(scratch, "{}", formatter.value(row)).is_ok(),
        None => false,
    }
}

fn write_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    write_u64(out, value.unsigned_abs());
}

fn write_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut position = digits.len();
    loop {
        position -= 1;
        digits[position] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[position..]);
}

fn write_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        // serde_json formats floats exactly as the Value path serializes them.
        serde_json::to_writer(&mut *out, &value).expect("writing a float to a Vec cannot fail");
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Writes `text` as a JSON string literal.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn rfc3339_of(now: DateTime<Utc>) -> String {
    let mut bytes = Vec::with_capacity(36);
    let nanos = now.timestamp_subsec_nanos().min(999_999_999);
    write_rfc3339_parts(&mut bytes, now.timestamp(), nanos);
    String::from_utf8(bytes).expect("rfc3339 text is ascii")
}

/// Writes an epoch value of `unit` as RFC3339Nano in UTC, without quotes.
fn write_rfc3339(out: &mut Vec<u8>, value: i64, unit: TimeUnit) {
    let (per_second, nanos_per_tick) = match unit {
        TimeUnit::Second => (1, 1_000_000_000),
        TimeUnit::Millisecond => (1_000, 1_000_000),
        TimeUnit::Microsecond => (1_000_000, 1_000),
        TimeUnit::Nanosecond => (1_000_000_000, 1),
    };
    let seconds = value.div_euclid(per_second);
    // The remainder is below `per_second`, so the product is below 1e9.
    let nanos = (value.rem_euclid(per_second) * nanos_per_tick) as u32;
    write_rfc3339_parts(out, seconds, nanos);
}

/// Writes `YYYY-MM-DDTHH:MM:SS[.fraction]Z` like Go's `time.RFC3339Nano` in UTC: the fraction
/// has its trailing zeros trimmed and is left out when zero.
fn write_rfc3339_parts(out: &mut Vec<u8>, seconds: i64, nanos: u32) {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if (0..=9999).contains(&year) {
        write_padded(out, year as u64, 4);
    } else {
        write_i64(out, year);
    }
    out.push(b'-');
    write_padded(out, month, 2);
    out.push(b'-');
    write_padded(out, day, 2);
    out.push(b'T');
    write_padded(out, (second_of_day / 3600) as u64, 2);
    out.push(b':');
    write_padded(out, (second_of_day / 60 % 60) as u64, 2);
    out.push(b':');
    write_padded(out, (second_of_day % 60) as u64, 2);
    if nanos > 0 {
        let mut digits = [0u8; 9];
        let mut rest = nanos;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let significant = 9 - digits
            .iter()
            .rev()
            .take_while(|digit| **digit == b'0')
            .count();
        out.push(b'.');
        out.extend_from_slice(&digits[..significant]);
    }
    out.push(b'Z');
}

fn write_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut rest = value;
    let mut position = digits.len();
    while rest > 0 {
        position -= 1;
        digits[position] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let start = position.min(digits.len() - width);
    out.extend_from_slice(&digits[start..]);
}

/// Converts days since 1970-01-01 to a proleptic Gregorian `(year, month, day)` (Howard
/// Hinnant's `civil_from_days`), valid over the whole `i64` epoch-second range.
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u64;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u64;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Date32Array, Decimal128Array, Float32Array, Int8Array, Int32Array, LargeStringArray,
        ListArray, NullArray, StringViewArray, TimestampMicrosecondArray,
        TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt8Array,
    };
    use arrow::datatypes::{Field, Int32Type, Schema};
    use arrow::ipc::reader::StreamReader;
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 8, 1, 12, 0, 0)
            .single()
            .expect("valid")
    }

    fn result_of(columns: Vec<(&str, ArrayRef)>) -> QueryResult {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            columns.into_iter().map(|(_, array)| array).collect(),
        )
        .expect("valid batch");
        QueryResult {
            schema,
            batches: vec![batch],
        }
    }

    /// Encodes one column both ways, checks they agree, and returns the JSON text of its cells.
    fn cells(array: ArrayRef) -> String {
        let result = result_of(vec![("c", array)]);
        let bytes = to_json_bytes(&result, 0, now());
        let parsed: Value = serde_json::from_slice(&bytes).expect("valid json");
        assert_eq!(parsed, to_json(&result, 0, now()), "both encoders agree");
        let data = parsed["data"].as_array().expect("data array");
        let values: Vec<String> = data.iter().map(|row| row[0].to_string()).collect();
        values.join(",")
    }

    #[test]
    fn test_should_write_arcs_document_shape_exactly() {
        let result = result_of(vec![
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(vec![
                    1_785_542_400_000_000_000,
                ])),
            ),
            ("host", Arc::new(StringArray::from(vec!["h1"]))),
            ("usage", Arc::new(Float64Array::from(vec![1.5]))),
        ]);
        let text = String::from_utf8(to_json_bytes(&result, 3, now())).expect("utf8");
        assert_eq!(
            text,
            r#"{"success":true,"columns":["time","host","usage"],"data":[["2026-08-01T00:00:00Z","h1",1.5]],"row_count":1,"execution_time_ms":3,"timestamp":"2026-08-01T12:00:00Z"}"#
        );
        let value = to_json(&result, 3, now());
        assert_eq!(value["success"], Value::Bool(true));
        assert_eq!(value["row_count"], Value::from(1));
        assert_eq!(value["execution_time_ms"], Value::from(3));
        assert_eq!(
            value["columns"],
            serde_json::json!(["time", "host", "usage"])
        );
        assert_eq!(
            value["data"],
            serde_json::json!([["2026-08-01T00:00:00Z", "h1", 1.5]])
        );
    }

    #[test]
    fn test_should_keep_columns_of_an_empty_result() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let result = QueryResult {
            schema,
            batches: Vec::new(),
        };
        let text = String::from_utf8(to_json_bytes(&result, 0, now())).expect("utf8");
        assert!(
            text.starts_with(r#"{"success":true,"columns":["a"],"data":[],"row_count":0,"#),
            "{text}"
        );
        assert_eq!(to_json(&result, 0, now())["data"], serde_json::json!([]));
    }

    #[test]
    fn test_should_join_rows_of_several_batches() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let batch = |values: Vec<i64>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(values))],
            )
            .expect("valid")
        };
        let result = QueryResult {
            schema: Arc::clone(&schema),
            batches: vec![batch(vec![1, 2]), batch(vec![]), batch(vec![3])],
        };
        let text = String::from_utf8(to_json_bytes(&result, 0, now())).expect("utf8");
        assert!(
            text.contains(r#""data":[[1],[2],[3]],"row_count":3"#),
            "{text}"
        );
    }

    #[test]
    fn test_should_encode_timestamps_of_every_unit_as_rfc3339_nano_utc() {
        let base = 1_785_542_400i64;
        assert_eq!(
            cells(Arc::new(TimestampNanosecondArray::from(vec![
                base * 1_000_000_000,
                base * 1_000_000_000 + 500_000_000,
                base * 1_000_000_000 + 1,
                base * 1_000_000_000 + 120_000,
            ]))),
            r#""2026-08-01T00:00:00Z","2026-08-01T00:00:00.5Z","2026-08-01T00:00:00.000000001Z","2026-08-01T00:00:00.00012Z""#
        );
        assert_eq!(
            cells(Arc::new(TimestampMicrosecondArray::from(vec![
                base * 1_000_000 + 1
            ]))),
            r#""2026-08-01T00:00:00.000001Z""#
        );
        assert_eq!(
            cells(Arc::new(TimestampMillisecondArray::from(vec![
                base * 1_000 + 250
            ]))),
            r#""2026-08-01T00:00:00.25Z""#
        );
        assert_eq!(
            cells(Arc::new(TimestampSecondArray::from(vec![base]))),
            r#""2026-08-01T00:00:00Z""#
        );
        // A zone does not change the instant; output is always UTC.
        assert_eq!(
            cells(Arc::new(
                TimestampMicrosecondArray::from(vec![base * 1_000_000]).with_timezone("+02:00")
            )),
            r#""2026-08-01T00:00:00Z""#
        );
        // Before the epoch and at the extremes.
        assert_eq!(
            cells(Arc::new(TimestampNanosecondArray::from(vec![-1, 0]))),
            r#""1969-12-31T23:59:59.999999999Z","1970-01-01T00:00:00Z""#
        );
        assert_eq!(
            cells(Arc::new(TimestampNanosecondArray::from(vec![
                i64::MIN,
                i64::MAX
            ]))),
            r#""1677-09-21T00:12:43.145224192Z","2262-04-11T23:47:16.854775807Z""#
        );
        assert_eq!(
            cells(Arc::new(TimestampNanosecondArray::from(vec![
                None,
                Some(0)
            ]))),
            r#"null,"1970-01-01T00:00:00Z""#
        );
    }

    #[test]
    fn test_should_agree_with_chrono_on_calendar_dates() {
        for days in [
            -719_468i64,
            -1,
            0,
            59,
            60,
            365,
            10_956,
            11_016,
            20_000,
            2_932_896,
        ] {
            let (year, month, day) = civil_from_days(days);
            let expected = DateTime::from_timestamp(days * 86_400, 0).expect("in range");
            assert_eq!(
                format!("{year:04}-{month:02}-{day:02}"),
                expected.format("%Y-%m-%d").to_string(),
                "days {days}"
            );
        }
    }

    #[test]
    fn test_should_encode_integers_exactly() {
        assert_eq!(
            cells(Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                Some(i64::MAX),
                None,
                Some(0)
            ]))),
            "-9223372036854775808,9223372036854775807,null,0"
        );
        assert_eq!(
            cells(Arc::new(UInt64Array::from(vec![u64::MAX, 7]))),
            "18446744073709551615,7"
        );
        assert_eq!(cells(Arc::new(Int8Array::from(vec![-5]))), "-5");
        assert_eq!(cells(Arc::new(Int32Array::from(vec![123_456]))), "123456");
        assert_eq!(cells(Arc::new(UInt8Array::from(vec![255]))), "255");
    }

    #[test]
    fn test_should_encode_floats_with_non_finite_as_null() {
        assert_eq!(
            cells(Arc::new(Float64Array::from(vec![
                1.5,
                -0.25,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1e300,
                2.0,
            ]))),
            "1.5,-0.25,null,null,null,1e+300,2.0"
        );
        assert_eq!(cells(Arc::new(Float32Array::from(vec![0.5]))), "0.5");
    }

    #[test]
    fn test_should_encode_booleans_strings_and_nulls() {
        assert_eq!(
            cells(Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None
            ]))),
            "true,false,null"
        );
        assert_eq!(
            cells(Arc::new(StringArray::from(vec![
                Some("plain"),
                Some("quote\" backslash\\ newline\n tab\t bell\u{7} é 🦀"),
                None,
            ]))),
            r#""plain","quote\" backslash\\ newline\n tab\t bell\u0007 é 🦀",null"#
        );
        assert_eq!(
            cells(Arc::new(LargeStringArray::from(vec!["large"]))),
            r#""large""#
        );
        assert_eq!(
            cells(Arc::new(StringViewArray::from(vec!["view"]))),
            r#""view""#
        );
        assert_eq!(cells(Arc::new(NullArray::new(2))), "null,null");
    }

    #[test]
    fn test_should_encode_decimals_as_json_numbers() {
        let decimal = Decimal128Array::from(vec![Some(12_345), Some(-50), None])
            .with_precision_and_scale(10, 2)
            .expect("valid decimal");
        assert_eq!(cells(Arc::new(decimal)), "123.45,-0.5,null");
        let huge = Decimal128Array::from(vec![124_750])
            .with_precision_and_scale(38, 0)
            .expect("valid decimal");
        assert_eq!(cells(Arc::new(huge)), "124750");
    }

    #[test]
    fn test_should_encode_other_types_as_display_text() {
        assert_eq!(
            cells(Arc::new(Date32Array::from(vec![20_666]))),
            r#""2026-08-01""#
        );
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]);
        assert_eq!(cells(Arc::new(list)), r#""[1, 2]",null"#);
    }

    #[test]
    fn test_should_build_the_error_document() {
        assert_eq!(
            serde_json::to_string(&error_json("bad \"sql\"")).expect("serializes"),
            r#"{"columns":null,"data":null,"error":"bad \"sql\"","row_count":0,"success":false}"#
        );
    }

    #[test]
    fn test_should_round_trip_through_arrow_ipc() {
        let result = result_of(vec![
            ("time", Arc::new(TimestampNanosecondArray::from(vec![1, 2]))),
            ("host", Arc::new(StringArray::from(vec!["a", "b"]))),
        ]);
        let bytes = to_arrow_ipc(&result).expect("encodes");
        let reader = StreamReader::try_new(bytes.as_slice(), None).expect("valid stream");
        assert_eq!(reader.schema(), result.schema);
        let batches: Vec<RecordBatch> = reader.map(|batch| batch.expect("batch")).collect();
        assert_eq!(batches, result.batches);

        let empty = QueryResult {
            schema: Arc::clone(&result.schema),
            batches: Vec::new(),
        };
        let bytes = to_arrow_ipc(&empty).expect("encodes");
        let reader = StreamReader::try_new(bytes.as_slice(), None).expect("valid stream");
        assert_eq!(reader.schema(), result.schema);
        assert_eq!(reader.count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn test_should_write_valid_json_for_any_string(text in "\\PC*|[\\x00-\\x1f\"\\\\]*") {
            let result = result_of(vec![("s", Arc::new(StringArray::from(vec![text.clone()])))]);
            let parsed: Value = serde_json::from_slice(&to_json_bytes(&result, 0, now()))
                .expect("valid json");
            proptest::prop_assert_eq!(parsed["data"][0][0].as_str(), Some(text.as_str()));
        }

        #[test]
        fn test_should_match_chrono_for_any_nanosecond_timestamp(value in proptest::num::i64::ANY) {
            let mut bytes = Vec::new();
            write_rfc3339(&mut bytes, value, TimeUnit::Nanosecond);
            let text = String::from_utf8(bytes).expect("ascii");
            let parsed = DateTime::parse_from_rfc3339(&text).expect("valid rfc3339");
            proptest::prop_assert_eq!(parsed.timestamp_nanos_opt(), Some(value));
        }
    }
}
