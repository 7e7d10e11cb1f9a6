//! InfluxDB line protocol decoding, with a hand-written parser (`parser`) that accepts exactly
//! what InfluxData's `influxdb-line-protocol` parser accepts, several times faster (issue 2:
//! ingest must reach 1M rows/s on two cores, and the reference parser alone decoded about
//! 0.4M/s on one). The reference stays as a test-only decoder (`reference`) and the
//! differential tests there run both on the same bodies.
//!
//! One pass: each data line is parsed into a reusable [`Line`] and appended to the request's
//! builders, so a good body is read once and its text is copied only into Arrow. Lines are
//! split as the reference splits them (a newline inside a quoted string field does not end
//! its line). Blank lines and `#` comments are skipped but still counted, and a trailing `\r`
//! is dropped (Windows clients). The first bad line fails the request, named by the 1-based
//! number of the physical line it starts on, with the reference's message.
//!
//! Semantics beyond the parser's: timestamps are scaled from the request's precision to
//! nanoseconds with overflow checked; a missing timestamp is the request's `now`; a field with
//! the name of one of its line's tags is renamed `<field>_value` (Arc); `time` may not be a tag
//! or field; a field or tag repeated in a line, a column with two types in one request, or a
//! float literal out of `f64` range (the parser makes it infinite) is an error.

mod parser;
#[cfg(test)]
mod reference;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Arc;

use arc_storage::model::{ColumnKind, TIME_COLUMN};

use self::parser::{Line, LineError, Lines, Value};
use super::builder::{
    BuildError, FieldValue, MAX_COLUMNS_PER_TABLE, RequestBuilder, TableBuilder, check_column,
    kind_name,
};
use super::{IngestError, Precision, Reservation, TableWrite, shorten};

/// Decodes a line protocol body into one [`TableWrite`] per measurement.
///
/// `precision` is the unit of the timestamps in the body; `now_ns` is the time given to lines
/// without one. With a `reservation` (holding the body), the decoded rows are paid for from it
/// as they are built.
///
/// # Errors
///
/// [`IngestError::Invalid`] naming the first bad line (`line 3: ...`), or the database;
/// [`IngestError::Busy`] or [`IngestError::DecodedTooLarge`] when `reservation` cannot pay
/// for the rows.
pub fn decode_line_protocol(
    body: &[u8],
    database: &str,
    precision: Precision,
    now_ns: i64,
    reservation: Option<&mut Reservation>,
) -> Result<Vec<TableWrite>, IngestError> {
    decode(body, database, precision, now_ns, reservation, None).map(|(writes, _)| writes)
}

/// The columns a measurement of the request's database already stores, by name, if it has
/// any. A lenient decode leaves out the lines that conflict with them.
pub type StoredColumns<'s> = &'s dyn Fn(&str) -> Option<Arc<HashMap<String, ColumnKind>>>;

/// The lines a lenient decode left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    /// How many lines were left out.
    pub lines: u64,
    /// Why the first was (`line 3: ...`).
    pub first: Option<String>,
}

/// Decodes a line protocol body as [`decode_line_protocol`] does, but leaves out each line
/// that is malformed or does not fit the lines before it or the `stored` columns (a column of
/// another type, a reserved or repeated name, names that differ only in case, a timestamp out
/// of range) instead of refusing the request: Arc's behaviour, for clients that count on it
/// (`ingest.lenient_line_protocol`). A line is checked whole before any of it is written, so
/// a line left out leaves nothing behind.
///
/// # Errors
///
/// As [`decode_line_protocol`] for what concerns the whole request (invalid UTF-8 anywhere,
/// the database name, the budgets); [`IngestError::Invalid`] naming the first bad line when
/// every data line is bad.
pub fn decode_line_protocol_lenient(
    body: &[u8],
    database: &str,
    precision: Precision,
    now_ns: i64,
    reservation: Option<&mut Reservation>,
    stored: StoredColumns<'_>,
) -> Result<(Vec<TableWrite>, Skipped), IngestError> {
    let (writes, skipped) = decode(body, database, precision, now_ns, reservation, Some(stored))?;
    match skipped.first {
        Some(first) if writes.is_empty() => Err(IngestError::Invalid(first)),
        _ => Ok((writes, skipped)),
    }
}

/// Both decoders' loop; `lenient` (the stored columns) leaves bad lines out (see
/// [`decode_line_protocol_lenient`]).
fn decode(
    body: &[u8],
    database: &str,
    precision: Precision,
    now_ns: i64,
    reservation: Option<&mut Reservation>,
    lenient: Option<StoredColumns<'_>>,
) -> Result<(Vec<TableWrite>, Skipped), IngestError> {
    let text = std::str::from_utf8(body).map_err(|error| {
        let offset = error.valid_up_to();
        IngestError::Invalid(format!(
            "line {}: invalid utf-8 at byte offset {offset}",
            line_number(body, offset)
        ))
    })?;
    let nanos_per_unit = precision.nanos_per_unit();
    let mut request = RequestBuilder::new(database, body.len(), reservation)?;
    let located = |line_start: usize, message: &dyn Display| {
        format!("line {}: {message}", line_number(body, line_start))
    };
    let mut skipped = Skipped::default();
    let mut skip = |line_start: usize, message: &dyn Display| {
        skipped.lines += 1;
        if skipped.first.is_none() {
            skipped.first = Some(located(line_start, message));
        }
    };
    let mut lines = Lines::new(text);
    let mut line = Line::default();
    while let Some(step) = lines.next_line(&mut line) {
        match step {
            Ok(line_start) => {
                if let Some(stored) = lenient
                    && let Err(error) = check_line(&request, &line, nanos_per_unit, stored)
                {
                    skip(line_start, &error);
                    continue;
                }
                if let Err(error) = add_line(&mut request, &line, nanos_per_unit, now_ns) {
                    return Err(request
                        .refusal()
                        .unwrap_or_else(|| IngestError::Invalid(located(line_start, &error))));
                }
            }
            Err((line_start, error)) if lenient.is_some() => {
                skip(line_start, &describe(&error));
            }
            Err((line_start, error)) => {
                return Err(IngestError::Invalid(located(line_start, &describe(&error))));
            }
        }
    }
    Ok((request.finish()?, skipped))
}

/// Words a parse error. The messages are the reference decoder's, which reworded the parser's
/// (capitalized, one a bare nom error kind, some echoing the rest of the line, which may be
/// megabytes).
fn describe(error: &LineError<'_>) -> String {
    match error {
        LineError::Fields => format!("missing or malformed fields, expected {LINE_SHAPE}"),
        LineError::Measurement => {
            format!("missing or malformed measurement, expected {LINE_SHAPE}")
        }
        LineError::TagSet => "malformed tag set (tags need a key and a value)".into(),
        LineError::Integer(value) => format!("invalid integer value \"{}\"", shorten(value)),
        LineError::UInteger(value) => {
            format!("invalid unsigned integer value \"{}\"", shorten(value))
        }
        LineError::Float(value) => format!("invalid float value \"{}\"", shorten(value)),
        LineError::Timestamp(value) => format!("invalid timestamp \"{}\"", shorten(value)),
        LineError::EndsWithBackslash => {
            "measurement, tag keys, tag values and field keys may not end with a backslash".into()
        }
        LineError::Trailing(rest) => format!(
            "malformed value or unexpected content at \"{}\"",
            shorten(rest)
        ),
    }
}

/// The shape of a line, for messages.
const LINE_SHAPE: &str = "measurement[,tag=value...] field=value[,field=value...] [timestamp]";

/// Returns the 1-based number of the line holding byte `offset`. Only used for errors.
fn line_number(body: &[u8], offset: usize) -> usize {
    body[..offset.min(body.len())]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

/// Appends one parsed line to its table. The error is the message without the line number.
#[inline]
fn add_line(
    request: &mut RequestBuilder<'_, '_>,
    line: &Line<'_>,
    nanos_per_unit: i64,
    now_ns: i64,
) -> Result<(), String> {
    let table = request
        .table(&line.measurement)
        .map_err(|error| error.to_string())?;
    let time_ns = time_ns(line, nanos_per_unit, now_ns)?;
    let row = table.push_row(time_ns).map_err(|error| error.to_string())?;
    for (slot, (key, value)) in line.tags.iter().enumerate() {
        let column = table
            .column(Some(slot), key, ColumnKind::Tag)
            .map_err(|error| error.to_string())?;
        table
            .append_tag(column, row, value)
            .map_err(|error| error.to_string())?;
    }
    for (position, (key, value)) in line.fields.iter().enumerate() {
        check_finite(key, value)?;
        let value = field_value(value);
        let name = field_column(line, key);
        let column = table
            .column(
                Some(line.tags.len() + position),
                &name,
                ColumnKind::Field(value.field_type()),
            )
            .map_err(|error| error.to_string())?;
        table
            .append_field(column, row, value, false)
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// Returns the line's time in nanoseconds (`now_ns` if it has none).
#[inline]
fn time_ns(line: &Line<'_>, nanos_per_unit: i64, now_ns: i64) -> Result<i64, String> {
    match line.timestamp {
        None => Ok(now_ns),
        Some(timestamp) => timestamp.checked_mul(nanos_per_unit).ok_or_else(|| {
            format!("timestamp {timestamp} overflows the nanosecond range at this precision")
        }),
    }
}

/// Refuses a float out of `f64`'s range (the parser makes it infinite).
#[inline]
fn check_finite(key: &str, value: &Value<'_>) -> Result<(), String> {
    match value {
        Value::Float(v) if !v.is_finite() => Err(format!(
            "field \"{}\": float value out of range",
            shorten(key)
        )),
        _ => Ok(()),
    }
}

/// Returns the builders' value of a parsed field value.
#[inline]
fn field_value<'v>(value: &'v Value<'_>) -> FieldValue<'v> {
    match value {
        Value::Float(v) => FieldValue::Float(*v),
        Value::Integer(v) => FieldValue::Integer(*v),
        Value::UInteger(v) => FieldValue::UInteger(*v),
        Value::Boolean(v) => FieldValue::Boolean(*v),
        Value::String(v) => FieldValue::String(v),
    }
}

/// Returns the column of field `key` of `line`. Arc's rule: a field may share its name with a
/// tag of its line; it is stored as `<name>_value` so that both survive.
#[inline]
fn field_column<'k>(line: &Line<'_>, key: &'k str) -> Cow<'k, str> {
    if line.tags.iter().any(|(tag, _)| same_text(tag, key)) {
        Cow::Owned(format!("{key}_value"))
    } else {
        Cow::Borrowed(key)
    }
}

/// Checks, without writing anything, every way [`add_line`] could refuse `line` for what the
/// line itself holds (not for the request's budgets), with the same messages.
fn check_line(
    request: &RequestBuilder<'_, '_>,
    line: &Line<'_>,
    nanos_per_unit: i64,
    stored: StoredColumns<'_>,
) -> Result<(), String> {
    let table = request
        .peek_table(&line.measurement)
        .map_err(|error| error.to_string())?;
    time_ns(line, nanos_per_unit, 0)?;
    let mut names: Vec<Cow<'_, str>> = Vec::with_capacity(line.tags.len() + line.fields.len());
    // Columns new to the request's table: most lines have none.
    let mut new_columns: Vec<(Cow<'_, str>, ColumnKind)> = Vec::new();
    for (key, _) in &line.tags {
        let name = Cow::Borrowed(key.as_ref());
        if check_column(table, &name, ColumnKind::Tag).map_err(|error| error.to_string())? {
            new_columns.push((name.clone(), ColumnKind::Tag));
        }
        names.push(name);
    }
    for (key, value) in &line.fields {
        check_finite(key, value)?;
        let name = field_column(line, key);
        let kind = ColumnKind::Field(field_value(value).field_type());
        if check_column(table, &name, kind).map_err(|error| error.to_string())? {
            new_columns.push((name.clone(), kind));
        }
        names.push(name);
    }
    if let Some(name) = repeated(&mut names) {
        return Err(BuildError::Repeated { column: name }.to_string());
    }
    if !new_columns.is_empty() {
        check_new_columns(table, stored(&line.measurement).as_deref(), &new_columns)?;
    }
    if table.map_or(0, TableBuilder::columns) + new_columns.len() > MAX_COLUMNS_PER_TABLE {
        return Err(BuildError::TooManyColumns.to_string());
    }
    Ok(())
}

/// Checks the columns a line would add to its table against the columns the table stores and,
/// ignoring case, against those and the request's other columns. DuckDB compares names
/// case-insensitively, so the WAL writer refuses a whole request whose names collide so.
fn check_new_columns(
    table: Option<&TableBuilder<'_>>,
    stored: Option<&HashMap<String, ColumnKind>>,
    new: &[(Cow<'_, str>, ColumnKind)],
) -> Result<(), String> {
    let mut lowered_names: Vec<(String, &str)> = Vec::with_capacity(new.len());
    for (name, kind) in new {
        let (name, kind) = (name.as_ref(), *kind);
        let lowered = name.to_lowercase();
        if let Some(&existing) = stored.and_then(|stored| stored.get(name)) {
            if existing != kind {
                return Err(format!(
                    "column \"{}\" is {} here but {} in the stored table",
                    shorten(name),
                    kind_name(kind),
                    kind_name(existing)
                ));
            }
        } else {
            let clash = (lowered == TIME_COLUMN)
                .then_some(TIME_COLUMN)
                .or_else(|| table.and_then(|table| table.column_like(&lowered)))
                .or_else(|| {
                    stored.and_then(|stored| {
                        stored
                            .keys()
                            .find(|other| other.to_lowercase() == lowered)
                            .map(String::as_str)
                    })
                })
                .or_else(|| {
                    lowered_names
                        .iter()
                        .find(|(other, _)| *other == lowered)
                        .map(|&(_, other)| other)
                });
            if let Some(other) = clash {
                return Err(format!(
                    "column \"{}\" collides with column \"{}\": names may not differ only in case",
                    shorten(name),
                    shorten(other)
                ));
            }
        }
        lowered_names.push((lowered, name));
    }
    Ok(())
}

/// Returns a name that occurs twice in `names` (which it sorts), if one does.
fn repeated(names: &mut [Cow<'_, str>]) -> Option<String> {
    names.sort_unstable();
    names
        .windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0].to_string())
}

/// Returns whether two keys are equal. Tag and field keys of a line mostly differ in length
/// or first byte, so checking those first skips most calls to `memcmp`, which showed in the
/// profile of lines with many fields.
#[inline]
fn same_text(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

#[cfg(test)]
mod tests {
    use arc_storage::model::FieldType;
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
    use proptest::prelude::*;

    use super::*;
    use crate::ingest::test_support::{
        Table, Value, assert_decoded, column_names, consistent, kind, strings, table_strategy,
        times,
    };

    const NOW: i64 = 1_700_000_000_123_456_789;

    fn decode(body: &str) -> Result<Vec<TableWrite>, IngestError> {
        decode_line_protocol(body.as_bytes(), "db", Precision::Ns, NOW, None)
    }

    fn decode_one(body: &str) -> RecordBatch {
        let writes = decode(body).unwrap();
        assert_eq!(writes.len(), 1, "{writes:?}");
        writes.into_iter().next().unwrap().batch
    }

    fn error_of(body: &str) -> String {
        match decode(body) {
            Err(IngestError::Invalid(message)) => message,
            other => panic!("expected an error for {body:?}, got {other:?}"),
        }
    }

    #[test]
    fn test_should_decode_every_field_type() {
        let batch = decode_one(
            "cpu,host=a f=1.5,neg=-2,exp=1e3,i=-42i,u=42u,s=\"hi there\",b=t,b2=FALSE 100",
        );
        assert_eq!(times(&batch), vec![100]);
        assert_eq!(
            column_names(&batch),
            ["time", "host", "b", "b2", "exp", "f", "i", "neg", "s", "u"]
        );
        assert_eq!(kind(&batch, "host"), ColumnKind::Tag);
        assert_eq!(kind(&batch, "f"), ColumnKind::Field(FieldType::Float));
        assert_eq!(kind(&batch, "i"), ColumnKind::Field(FieldType::Integer));
        assert_eq!(kind(&batch, "u"), ColumnKind::Field(FieldType::UInteger));
        assert_eq!(kind(&batch, "s"), ColumnKind::Field(FieldType::String));
        assert_eq!(kind(&batch, "b"), ColumnKind::Field(FieldType::Boolean));
        let float = |name| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .value(0)
        };
        assert_eq!(float("f"), 1.5);
        assert_eq!(float("neg"), -2.0);
        assert_eq!(float("exp"), 1000.0);
        let int = batch
            .column_by_name("i")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(int.value(0), -42);
        let uint = batch
            .column_by_name("u")
            .unwrap()
            .as_primitive::<UInt64Type>();
        assert_eq!(uint.value(0), 42);
        assert_eq!(strings(&batch, "s"), vec![Some("hi there".to_string())]);
        assert!(batch.column_by_name("b").unwrap().as_boolean().value(0));
        assert!(!batch.column_by_name("b2").unwrap().as_boolean().value(0));
        assert_eq!(strings(&batch, "host"), vec![Some("a".to_string())]);
    }

    #[test]
    fn test_should_accept_every_boolean_spelling() {
        for (text, expected) in [
            ("t", true),
            ("T", true),
            ("true", true),
            ("True", true),
            ("TRUE", true),
            ("f", false),
            ("F", false),
            ("false", false),
            ("False", false),
            ("FALSE", false),
        ] {
            let batch = decode_one(&format!("m v={text}"));
            assert_eq!(batch.column(1).as_boolean().value(0), expected, "{text}");
        }
    }

    #[test]
    fn test_should_decode_extreme_integers() {
        let batch = decode_one(&format!(
            "m a={}i,b={}i,c={}u",
            i64::MIN,
            i64::MAX,
            u64::MAX
        ));
        assert_eq!(
            batch.column(1).as_primitive::<Int64Type>().value(0),
            i64::MIN
        );
        assert_eq!(
            batch.column(2).as_primitive::<Int64Type>().value(0),
            i64::MAX
        );
        assert_eq!(
            batch.column(3).as_primitive::<UInt64Type>().value(0),
            u64::MAX
        );
    }

    #[test]
    fn test_should_unescape_tag_keys_and_values() {
        let batch = decode_one(r"m,a\,b=c\,d,e\ f=g\ h,i\=j=k\=l v=1");
        assert_eq!(strings(&batch, "a,b"), vec![Some("c,d".to_string())]);
        assert_eq!(strings(&batch, "e f"), vec![Some("g h".to_string())]);
        assert_eq!(strings(&batch, "i=j"), vec![Some("k=l".to_string())]);
    }

    #[test]
    fn test_should_unescape_field_keys() {
        let batch = decode_one(r"m a\,b=1i,c\ d=2i,e\=f=3i");
        assert_eq!(column_names(&batch), ["time", "a,b", "c d", "e=f"]);
    }

    #[test]
    fn test_should_unescape_quotes_and_backslashes_in_string_fields() {
        let batch =
            decode_one(r#"m s="say \"hi\", a\\b, c=d, e f",t="\\",u="","#.trim_end_matches(','));
        assert_eq!(
            strings(&batch, "s"),
            vec![Some(r#"say "hi", a\b, c=d, e f"#.to_string())]
        );
        assert_eq!(strings(&batch, "t"), vec![Some(r"\".to_string())]);
        assert_eq!(strings(&batch, "u"), vec![Some(String::new())]);
    }

    #[test]
    fn test_should_keep_newlines_inside_string_fields() {
        let writes = decode("m s=\"a\nb\" 1\nm s=\"c\" 2").unwrap();
        assert_eq!(
            strings(&writes[0].batch, "s"),
            vec![Some("a\nb".to_string()), Some("c".to_string())]
        );
        // The line after a multi-line string is numbered by its physical line.
        let error = error_of("m s=\"a\nb\" 1\nm s=\"c\" 2\nm s=");
        assert!(error.starts_with("line 4: "), "{error}");
    }

    #[test]
    fn test_should_unescape_measurement_then_check_its_name() {
        // The parser unescapes commas and spaces; the result is not a valid measurement name,
        // and the message shows the unescaped name.
        let error = error_of("m v=1\nc\\,pu v=1");
        assert!(
            error.starts_with("line 2: invalid measurement name \"c,pu\""),
            "{error}"
        );
        let error = error_of("c\\ pu v=1");
        assert!(
            error.starts_with("line 1: invalid measurement name \"c pu\""),
            "{error}"
        );
        let error = error_of("c=pu v=1");
        assert!(
            error.starts_with("line 1: invalid measurement name \"c=pu\""),
            "{error}"
        );
    }

    #[test]
    fn test_should_scale_each_precision_to_nanoseconds() {
        for (precision, expected) in [
            (Precision::Ns, 1_700_000_000),
            (Precision::Us, 1_700_000_000_000),
            (Precision::Ms, 1_700_000_000_000_000),
            (Precision::S, 1_700_000_000_000_000_000),
        ] {
            let writes =
                decode_line_protocol(b"m v=1 1700000000", "db", precision, NOW, None).unwrap();
            assert_eq!(times(&writes[0].batch), vec![expected], "{precision}");
        }
        let writes = decode_line_protocol(b"m v=1 -5", "db", Precision::S, NOW, None).unwrap();
        assert_eq!(times(&writes[0].batch), vec![-5_000_000_000]);
    }

    #[test]
    fn test_should_use_now_for_missing_timestamps() {
        let batch = decode_one("m v=1\nm v=2 5\nm v=3");
        assert_eq!(times(&batch), vec![NOW, 5, NOW]);
    }

    #[test]
    fn test_should_split_measurements_into_tables_in_order() {
        let writes = decode("mem free=1i 1\ncpu usage=2 2\nmem free=3i 3\n").unwrap();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].table.measurement, "mem");
        assert_eq!(writes[0].table.database, "db");
        assert_eq!(times(&writes[0].batch), vec![1, 3]);
        assert_eq!(writes[1].table.measurement, "cpu");
        assert_eq!(times(&writes[1].batch), vec![2]);
    }

    #[test]
    fn test_should_fill_missing_columns_with_nulls() {
        let batch = decode_one("m,h=a x=1 1\nm y=2i 2\nm,h=b,r=z x=3,y=4i 3");
        assert_eq!(column_names(&batch), ["time", "h", "r", "x", "y"]);
        assert_eq!(
            strings(&batch, "h"),
            vec![Some("a".to_string()), None, Some("b".to_string())]
        );
        assert_eq!(
            strings(&batch, "r"),
            vec![None, None, Some("z".to_string())]
        );
        let x = batch.column_by_name("x").unwrap();
        assert_eq!(x.null_count(), 1);
        assert!(x.is_null(1));
        let y = batch.column_by_name("y").unwrap();
        assert!(y.is_null(0));
        assert_eq!(y.as_primitive::<Int64Type>().value(2), 4);
    }

    #[test]
    fn test_should_handle_keys_in_changing_order() {
        let batch = decode_one("m,a=1,b=2 x=1,y=2 1\nm,b=3 y=3,x=4 2\nm,a=5 z=1 3");
        assert_eq!(
            strings(&batch, "a"),
            vec![Some("1".into()), None, Some("5".into())]
        );
        assert_eq!(
            strings(&batch, "b"),
            vec![Some("2".into()), Some("3".into()), None]
        );
        let x = batch
            .column_by_name("x")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!((x.value(0), x.value(1)), (1.0, 4.0));
        let y = batch
            .column_by_name("y")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!((y.value(0), y.value(1)), (2.0, 3.0));
    }

    #[test]
    fn test_should_rename_a_field_named_like_a_tag() {
        let batch = decode_one("m,host=a host=1i,other=2i 1");
        assert_eq!(
            column_names(&batch),
            ["time", "host", "host_value", "other"]
        );
        assert_eq!(kind(&batch, "host"), ColumnKind::Tag);
        assert_eq!(
            kind(&batch, "host_value"),
            ColumnKind::Field(FieldType::Integer)
        );
    }

    #[test]
    fn test_should_skip_blank_lines_and_comments_but_count_them() {
        let body = "# header\n\nm v=1 1\n   \n# comment v=2\n\tm v=2 2\n";
        let batch = decode_one(body);
        assert_eq!(times(&batch), vec![1, 2]);
        let error = error_of("# header\n\nm v=1 1\n\nm v=");
        assert!(error.starts_with("line 5: "), "{error}");
        assert!(decode("").unwrap().is_empty());
        assert!(decode("\n\n# only comments\n").unwrap().is_empty());
    }

    #[test]
    fn test_should_accept_crlf_line_endings() {
        let batch = decode_one("m,h=a v=1 1\r\nm,h=b v=2\r\n");
        assert_eq!(times(&batch), vec![1, NOW]);
        assert_eq!(
            strings(&batch, "h"),
            vec![Some("a".into()), Some("b".into())]
        );
    }

    #[test]
    fn test_should_report_type_conflicts_with_line_column_and_types() {
        let error = error_of("m v=1i 1\nm v=1i 2\nm v=1.5 3");
        assert_eq!(
            error,
            "line 3: column \"v\" is float field here but integer field earlier in the request"
        );
        let error = error_of("m,h=a v=1 1\nm h=\"x\" 2");
        assert_eq!(
            error,
            "line 2: column \"h\" is string field here but tag earlier in the request"
        );
        // Different measurements are different tables: no conflict.
        assert_eq!(decode("a v=1i\nb v=1.5").unwrap().len(), 2);
    }

    /// Each case: a body whose line 3 is bad, and a piece the message must contain.
    const BAD_LINES: &[(&str, &str)] = &[
        ("cpu", "missing or malformed fields"),            // no fields
        ("cpu,host=a", "missing or malformed fields"),     // tags but no fields
        ("cpu v=1.5i", ""),                                // float with integer suffix
        ("cpu v=9223372036854775808i", "invalid integer"), // integer overflow
        ("cpu v=18446744073709551616u", "invalid unsigned"), // unsigned overflow
        ("cpu v=-1u", ""),                                 // negative unsigned
        ("cpu v=\"abc", ""),                               // unterminated string
        ("cpu v=1 abc", "unexpected content at \" abc\""), // timestamp not a number
        ("cpu v=1 123 456", ""),                           // trailing content
        ("cpu v=1 99999999999999999999", "invalid timestamp"), // timestamp beyond i64
        ("cpu,host v=1", "malformed tag set"),             // tag without value
        ("cpu,host= v=1", ""),                             // tag with empty value
        ("cpu, v=1", ""),                                  // comma without tags
        ("cpu v=", ""),                                    // field without value
        ("cpu v=tru", ""),                                 // bad boolean
        ("cpu =1", ""),                                    // field without key
        ("cpu v=1e400", "out of range"),                   // float overflow
        ("cpu,time=x v=1", "reserved"),                    // tag named time
        ("cpu time=1", "reserved"),                        // field named time
        ("cpu v=1,v=2", "appears twice"),                  // repeated field
        ("cpu,a=1,a=2 v=1", "appears twice"),              // repeated tag
        ("cpu,h=1 h=1,h_value=2", "appears twice"),        // rename collides
        ("1cpu v=1", "invalid measurement name"),          // measurement starts with a digit
        ("cpu.x v=1", "invalid measurement name"),         // measurement with a dot
        ("ok v=1i", "integer field here"),                 // type conflict with line 1
        ("cpu v=1 1\\", ""),                               // stray backslash
        (" v=1", ""),                                      // no measurement
    ];

    #[test]
    fn test_should_name_the_first_bad_line() {
        for (bad, expected) in BAD_LINES {
            let body = format!("ok v=1 1\n# comment\n{bad}\nok v=2 2\n");
            let message = error_of(&body);
            assert!(message.starts_with("line 3: "), "{bad:?} gave {message:?}");
            assert!(
                message.contains(expected),
                "{bad:?} gave {message:?}, expected {expected:?}"
            );
            assert!(message.len() < 400, "{message}");
        }
    }

    fn lenient(body: &str) -> Result<(Vec<TableWrite>, Skipped), IngestError> {
        decode_line_protocol_lenient(body.as_bytes(), "db", Precision::Ns, NOW, None, &|_| None)
    }

    /// A lenient decode against a table `cpu` that stores `host` (tag) and `usage` (float).
    fn lenient_over_stored(body: &str) -> (Vec<TableWrite>, Skipped) {
        let stored: HashMap<String, ColumnKind> = [
            ("time", ColumnKind::Time),
            ("host", ColumnKind::Tag),
            ("usage", ColumnKind::Field(FieldType::Float)),
        ]
        .into_iter()
        .map(|(name, kind)| (name.to_string(), kind))
        .collect();
        let stored = Arc::new(stored);
        let lookup = |measurement: &str| (measurement == "cpu").then(|| stored.clone());
        decode_line_protocol_lenient(body.as_bytes(), "db", Precision::Ns, NOW, None, &lookup)
            .unwrap()
    }

    #[test]
    fn test_should_leave_out_lines_that_conflict_with_stored_columns_or_differ_in_case() {
        let bad = [
            (
                "cpu usage=1i 2",
                "column \"usage\" is integer field here but float field in the stored table",
            ),
            (
                "cpu,usage=a v=1 2",
                "column \"usage\" is tag here but float field in the stored table",
            ),
            (
                "cpu host=\"a\" 2",
                "column \"host\" is string field here but tag in the stored table",
            ),
            (
                "cpu Usage=1 2",
                "column \"Usage\" collides with column \"usage\"",
            ),
            (
                "cpu,HOST=a v=1 2",
                "column \"HOST\" collides with column \"host\"",
            ),
            (
                "cpu Time=1 2",
                "column \"Time\" collides with column \"time\"",
            ),
            (
                "mem TIME=1 2",
                "column \"TIME\" collides with column \"time\"",
            ),
            ("mem a=1,A=2 2", "column \"A\" collides with column \"a\""),
            ("mem,k=1 K=2 2", "column \"K\" collides with column \"k\""),
            // Against a column an earlier line of the request added.
            (
                "mem Seen=1 2",
                "column \"Seen\" collides with column \"seen\"",
            ),
        ];
        for (line, expected) in bad {
            // The first line has none of cpu's stored columns: the conflicts are with the store.
            let body = format!("cpu idle=0.5 1\nmem seen=1 1\n{line}\ncpu usage=1.5 3");
            let (writes, skipped) = lenient_over_stored(&body);
            assert_eq!(skipped.lines, 1, "{line}");
            let first = skipped.first.unwrap();
            assert!(
                first.starts_with("line 3: ") && first.contains(expected),
                "{line}: {first}"
            );
            let cpu = writes
                .iter()
                .find(|w| w.table.measurement == "cpu")
                .unwrap();
            assert_eq!(times(&cpu.batch), [1, 3], "{line}");
            assert_eq!(
                column_names(&cpu.batch),
                ["time", "idle", "usage"],
                "{line}"
            );
        }
        // What fits is kept: a stored column with its own kind, a new one, another table.
        let (writes, skipped) = lenient_over_stored("cpu,host=b usage=2,idle=3i 1\nmem usage=1i 1");
        assert_eq!(skipped.lines, 0);
        assert_eq!(writes.len(), 2);
        // The same request, strict, leaves the conflicts to the writer: it decodes.
        let body = b"cpu usage=1i 1\ncpu Usage=1 2";
        assert!(decode_line_protocol(body, "db", Precision::Ns, NOW, None).is_ok());
    }

    #[test]
    fn test_should_leave_out_each_bad_line_whole_when_lenient() {
        for (bad, _) in BAD_LINES {
            let body = format!("ok v=1 1\n# comment\n{bad}\nok v=2 2\n");
            let (writes, skipped) = lenient(&body).unwrap();
            // Skipped with the message strict decoding refuses the request with.
            assert_eq!(skipped.lines, 1, "{bad:?}");
            assert_eq!(skipped.first, Some(error_of(&body)), "{bad:?}");
            let ok = writes
                .iter()
                .find(|write| write.table.measurement == "ok")
                .expect("the good lines are kept");
            // A trailing backslash or an open quote joins the next line to the bad one.
            let joins = bad.ends_with('\\') || bad.matches('"').count() % 2 == 1;
            let expected: &[i64] = if joins { &[1] } else { &[1, 2] };
            assert_eq!(times(&ok.batch), expected, "{bad:?}");
            // Nothing of the bad line is left behind: no rows, no columns.
            assert_eq!(column_names(&ok.batch), ["time", "v"], "{bad:?}");
            assert_eq!(writes.len(), 1, "{bad:?}: {writes:?}");
        }
        // A line refused halfway (its second field conflicts) leaves nothing of its first.
        let (writes, skipped) = lenient("m a=1i,b=2i 1\nm a=3i,b=2.5 2\nm c=1i 3").unwrap();
        assert_eq!(skipped.lines, 1);
        assert_eq!(times(&writes[0].batch), [1, 3]);
        let a = writes[0].batch.column_by_name("a").unwrap();
        assert_eq!(
            a.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(),
            [Some(1), None]
        );
        // Only bad lines: the request is refused, naming the first.
        assert_eq!(
            lenient("m v=\nm time=1\n").unwrap_err(),
            IngestError::Invalid(
                "line 1: missing or malformed fields, expected \
                 measurement[,tag=value...] field=value[,field=value...] [timestamp]"
                    .into()
            )
        );
        // What concerns the whole request is still refused whole.
        assert!(matches!(
            decode_line_protocol_lenient(
                b"m v=1\nm s=\"\xff\"",
                "db",
                Precision::Ns,
                NOW,
                None,
                &|_| None
            ),
            Err(IngestError::Invalid(message)) if message.contains("utf-8")
        ));
        assert_eq!(lenient("# only a comment\n").unwrap().0.len(), 0);
    }

    #[test]
    fn test_should_refuse_timestamp_overflow_at_coarse_precision() {
        let error =
            decode_line_protocol(b"m v=1 1\nm v=1 10000000000", "db", Precision::S, NOW, None)
                .unwrap_err();
        assert_eq!(
            error,
            IngestError::Invalid(
                "line 2: timestamp 10000000000 overflows the nanosecond range at this precision"
                    .into()
            )
        );
    }

    #[test]
    fn test_should_name_the_line_of_invalid_utf8() {
        let body = b"m v=1\nm v=2\nm s=\"\xff\"\n";
        let error = decode_line_protocol(body, "db", Precision::Ns, NOW, None).unwrap_err();
        assert_eq!(
            error,
            IngestError::Invalid("line 3: invalid utf-8 at byte offset 17".into())
        );
    }

    #[test]
    fn test_should_refuse_an_invalid_database() {
        let error = decode_line_protocol(b"m v=1", "no db", Precision::Ns, NOW, None).unwrap_err();
        assert!(error.to_string().starts_with("invalid database name"));
    }

    #[test]
    fn test_should_refuse_bodies_that_would_pad_into_gigabytes() {
        // Each line adds a column: 5000 lines, 5000 columns, 25 million cells of padding
        // from 50 KB of body.
        let body: String = (0..5_000).map(|i| format!("m c{i}=1i {i}\n")).collect();
        let error = error_of(&body);
        assert!(error.contains("too sparse"), "{error}");
        // Sparse but reasonable data passes: 100 columns over 10 000 lines.
        let body: String = (0..10_000)
            .map(|i| format!("m c{}=1i {i}\n", i % 100))
            .collect();
        assert_eq!(decode(&body).unwrap()[0].batch.num_columns(), 101);
    }

    #[test]
    fn test_should_pay_for_decoded_rows_from_the_reservation() {
        use crate::ingest::InflightBudget;
        // A row of `m v=1` is 6 bytes of body and two cells (time and value): 16 bytes.
        let body = "m v=1\n".repeat(1_000_000);
        let decode_within = |budget: &InflightBudget, held: usize| {
            let mut reservation = budget.reservation();
            reservation.grow_to(held).unwrap();
            let decoded = decode_line_protocol(
                body.as_bytes(),
                "db",
                Precision::Ns,
                NOW,
                Some(&mut reservation),
            );
            (decoded, reservation.bytes())
        };
        let budget = InflightBudget::new(64 << 20);
        let (decoded, held) = decode_within(&budget, body.len());
        assert_eq!(decoded.unwrap()[0].batch.num_rows(), 1_000_000);
        let rows_bytes = 16_000_000;
        assert!(
            held >= body.len() + rows_bytes && held <= body.len() + rows_bytes + (5 << 20),
            "held {held} bytes for a {} byte body and {rows_bytes} bytes of rows",
            body.len()
        );
        // A one-line write holds little more than its body, so thousands fit at once.
        let mut reservation = budget.reservation();
        reservation.grow_to(6).unwrap();
        decode_line_protocol(b"m v=1\n", "db", Precision::Ns, NOW, Some(&mut reservation)).unwrap();
        assert!(reservation.bytes() <= 128 << 10, "{}", reservation.bytes());
        drop(reservation);
        // Body and rows need more than the whole budget: 413, whatever else is running.
        let (decoded, _) = decode_within(&InflightBudget::new(16 << 20), body.len());
        assert!(
            matches!(decoded, Err(IngestError::DecodedTooLarge { limit }) if limit == 16 << 20),
            "{decoded:?}"
        );
        // Other requests hold the budget: 503, not a complaint about a line.
        let _other = budget.reserve(50 << 20).unwrap();
        let (decoded, _) = decode_within(&budget, body.len());
        assert!(matches!(decoded, Err(IngestError::Busy(_))), "{decoded:?}");
    }

    #[test]
    fn test_should_keep_long_errors_short() {
        let body = format!("m v=\"{}", "x".repeat(1 << 20));
        let message = error_of(&body);
        assert!(message.starts_with("line 1: "), "{message}");
        assert!(message.len() < 400);
    }

    // ---- Round trip against an independent encoder -------------------------------------

    /// Escapes a tag key, tag value or field key per the line protocol spec.
    fn escape_key(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if matches!(c, ',' | '=' | ' ' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    /// Escapes a string field value per the spec: only `"` and `\`.
    fn escape_string(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if matches!(c, '"' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    fn encode_line_protocol(tables: &[Table]) -> String {
        let mut out = String::new();
        for table in tables {
            for (time, tag_values, field_values) in &table.rows {
                out.push_str(&table.measurement);
                for (tag, value) in table.tags.iter().zip(tag_values) {
                    if let Some(value) = value {
                        out.push_str(&format!(",{}={}", escape_key(tag), escape_key(value)));
                    }
                }
                let mut first = true;
                for ((field, _), value) in table.fields.iter().zip(field_values) {
                    let Some(value) = value else { continue };
                    out.push(if first { ' ' } else { ',' });
                    first = false;
                    let value = match value {
                        Value::Float(v) => format!("{v}"),
                        Value::Integer(v) => format!("{v}i"),
                        Value::UInteger(v) => format!("{v}u"),
                        Value::Boolean(v) => format!("{v}"),
                        Value::String(v) => format!("\"{}\"", escape_string(v)),
                    };
                    out.push_str(&format!("{}={value}", escape_key(field)));
                }
                out.push_str(&format!(" {time}\n"));
            }
        }
        out
    }

    /// Lines for the lenient property: good ones, bad ones, and ones that are bad only after
    /// others (a type or tag-field conflict).
    const LENIENT_LINES: &[&str] = &[
        "m v=1",
        "m v=2i",
        "m v=\"s\"",
        "m,t=a v=3",
        "m,v=x v=4",
        "m v_value=5i",
        "m t=6i",
        "n x=t",
        "n,x=y z=1",
        "m time=1",
        "m v=1,v=2",
        "1m v=1",
        "m v=1e400",
        "garbage",
        "m v=1 notatime",
        "m,t=b w=7u 9",
    ];

    proptest! {
        /// A lenient decode keeps exactly the lines that strict decoding of the lines kept
        /// before them would accept, and builds what strict decoding of those lines builds.
        #[test]
        fn prop_lenient_decoding_is_strict_decoding_of_the_good_lines(
            picks in proptest::collection::vec(0..LENIENT_LINES.len(), 1..24),
        ) {
            let lines: Vec<&str> = picks.iter().map(|&pick| LENIENT_LINES[pick]).collect();
            let mut kept: Vec<&str> = Vec::new();
            for line in &lines {
                let mut candidate = kept.clone();
                candidate.push(line);
                if decode(&candidate.join("\n")).is_ok() {
                    kept = candidate;
                }
            }
            let result = lenient(&lines.join("\n"));
            if kept.is_empty() {
                prop_assert!(matches!(result, Err(IngestError::Invalid(_))), "{result:?}");
            } else {
                let (writes, skipped) = result.unwrap();
                let expected = decode(&kept.join("\n")).unwrap();
                prop_assert_eq!(skipped.lines as usize, lines.len() - kept.len());
                prop_assert_eq!(writes.len(), expected.len());
                for (write, expected) in writes.iter().zip(&expected) {
                    prop_assert_eq!(&write.table, &expected.table);
                    prop_assert_eq!(&write.batch, &expected.batch);
                }
            }
        }

        #[test]
        fn test_should_round_trip_generated_tables(
            tables in proptest::collection::vec(table_strategy(i64::MIN..i64::MAX), 1..4)
        ) {
            let tables = consistent(tables);
            let body = encode_line_protocol(&tables);
            let writes = decode_line_protocol(body.as_bytes(), "db", Precision::Ns, NOW, None)
                .unwrap_or_else(|error| panic!("{error} in {body:?}"));
            assert_decoded(&tables, &writes);
        }

        #[test]
        fn test_should_never_panic_on_arbitrary_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let _ = decode_line_protocol(&body, "db", Precision::S, NOW, None);
        }

        #[test]
        fn test_should_never_panic_on_line_protocol_like_text(
            body in "[a-z0-9 ,=\"\\\\\n\r#.tfiu-]{0,80}"
        ) {
            let _ = decode_line_protocol(body.as_bytes(), "db", Precision::Ms, NOW, None);
        }
    }
}
