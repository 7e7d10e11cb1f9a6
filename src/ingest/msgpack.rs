//! Arc's MessagePack write format (`POST /api/v1/write/msgpack`).
//!
//! Shapes (COMPAT.md):
//! - columnar: `{"m": "cpu", "columns": {"time": [...], "host": [...], "usage": [...]},
//!   "tag_keys": ["host"]}`. All arrays have one length. With `tag_keys`, exactly those
//!   columns are tags; without it, columns whose values are all strings are tags. The unit of
//!   `time` is inferred once, from its first value; without `time` every row gets `now`.
//! - row: `{"m": "cpu", "t": 1700000000000, "h": "server1", "tags": {...}, "fields": {...}}`.
//!   `h` is the `host` tag; the unit of `t` is inferred per row; without `t` the row gets `now`.
//! - batch: `{"batch": [item, ...]}` or a top-level array of items, each columnar or row.
//!
//! Time units are inferred from magnitude as Arc does: below 1e10 seconds, below 1e13
//! milliseconds, below 1e16 microseconds, else nanoseconds. Floats are accepted (scaled, not
//! truncated) and so is the MessagePack timestamp extension (type -1), which is exact.
//!
//! Values: integers that fit `i64` are integers, larger ones unsigned; floats; booleans;
//! UTF-8 strings; nil is null. A column that mixes integers and floats is a float column; any
//! other mix is an error. Where Arc drops a bad item and keeps the rest, we refuse the request
//! naming the first bad path (`batch[2].fields.usage: ...`). Unknown keys are ignored; keys
//! that belong to the other shape (`tags` in a columnar item, `tag_keys` in a row) are errors,
//! since ignoring them would silently lose data.
//!
//! Hazard: the body is hostile until proven otherwise. Decoding goes through
//! [`super::msgpack_reader`], which neither recurses nor allocates; this module walks a fixed
//! depth (batch, item, map, array, scalar) and refuses anything nested deeper.

use std::fmt::{Display, Write as _};

use arc_storage::model::{ColumnKind, FieldType, TIME_COLUMN};

use super::builder::{BuildError, FieldValue, MAX_COLUMNS_PER_TABLE, RequestBuilder, TableBuilder};
use super::msgpack_reader::{Reader, Token};
use super::{IngestError, Reservation, TableWrite, shorten};

/// Decodes a MessagePack body into one [`TableWrite`] per measurement.
///
/// `now_ns` is the time given to rows without one. With a `reservation` (holding the body),
/// the decoded rows are paid for from it as they are built.
///
/// # Errors
///
/// [`IngestError::Invalid`] naming the first bad item path (`batch[2].fields.usage: ...`), or
/// the database; [`IngestError::Busy`] or [`IngestError::DecodedTooLarge`] when `reservation`
/// cannot pay for the rows.
pub fn decode_msgpack(
    body: &[u8],
    database: &str,
    now_ns: i64,
    reservation: Option<&mut Reservation>,
) -> Result<Vec<TableWrite>, IngestError> {
    let mut decoder = Decoder {
        request: RequestBuilder::new(database, body.len(), reservation)?,
        now_ns,
        tag_names: Vec::new(),
        text: String::new(),
    };
    if let Err(error) = decode_items(&mut decoder, body) {
        return Err(decoder.request.refusal().unwrap_or(error));
    }
    decoder.request.finish()
}

/// Decodes the items of `body` into `decoder`'s request.
fn decode_items<'a>(decoder: &mut Decoder<'a, '_, '_>, body: &'a [u8]) -> Result<(), IngestError> {
    let mut reader = Reader::new(body);
    match reader.next().map_err(|error| fail(Item::Body, "", error))? {
        Token::Map(len) => {
            let keys = Keys::scan(&mut reader, len, Item::Body)?;
            match keys.batch {
                Some(batch) => {
                    if keys.m.is_some() || keys.columns.is_some() || keys.fields.is_some() {
                        return Err(fail(
                            Item::Body,
                            "batch",
                            "a batch map must not also carry m, columns or fields",
                        ));
                    }
                    decoder.batch(batch)?;
                }
                None => decoder.item(&keys, Item::Body)?,
            }
        }
        Token::Array(len) => {
            for index in 0..len {
                decoder.map_item(&mut reader, Item::Array(index))?;
            }
        }
        other => {
            return Err(fail(
                Item::Body,
                "",
                format!("expected a map or an array, found {}", other.type_name()),
            ));
        }
    }
    if !reader.at_end() {
        return Err(fail(
            Item::Body,
            "",
            format!(
                "unexpected bytes after the msgpack value at byte offset {}",
                reader.position()
            ),
        ));
    }
    Ok(())
}

/// Which item of the body a path is in, for messages.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// The body is a single item.
    Body,
    /// Item `n` of `{"batch": [...]}`.
    Batch(u32),
    /// Item `n` of a top-level array.
    Array(u32),
}

/// Builds the 400 error for `path` (relative to `item`; empty for the item itself).
fn fail(item: Item, path: &str, message: impl Display) -> IngestError {
    let location = match (item, path.is_empty()) {
        (Item::Body, true) => "body".to_string(),
        (Item::Body, false) => path.to_string(),
        (Item::Batch(index), true) => format!("batch[{index}]"),
        (Item::Batch(index), false) => format!("batch[{index}].{path}"),
        (Item::Array(index), true) => format!("[{index}]"),
        (Item::Array(index), false) => format!("[{index}].{path}"),
    };
    IngestError::Invalid(format!("{location}: {message}"))
}

/// Checks a string's UTF-8.
fn utf8(bytes: &[u8]) -> Result<&str, &'static str> {
    std::str::from_utf8(bytes).map_err(|_| "invalid utf-8 in string")
}

/// The values of the keys we know in one item map; each covers the key's whole value.
#[derive(Default)]
struct Keys<'a> {
    m: Option<Reader<'a>>,
    t: Option<Reader<'a>>,
    h: Option<Reader<'a>>,
    fields: Option<Reader<'a>>,
    tags: Option<Reader<'a>>,
    columns: Option<Reader<'a>>,
    tag_keys: Option<Reader<'a>>,
    batch: Option<Reader<'a>>,
}

impl<'a> Keys<'a> {
    /// Reads the `len` entries of a map, keeping the values of known keys (in any order).
    fn scan(reader: &mut Reader<'a>, len: u32, item: Item) -> Result<Self, IngestError> {
        let mut keys = Keys::default();
        for _ in 0..len {
            let key = match reader.next().map_err(|error| fail(item, "", error))? {
                Token::Str(key) => key,
                other => {
                    return Err(fail(
                        item,
                        "",
                        format!("map keys must be strings, found {}", other.type_name()),
                    ));
                }
            };
            let key_name = || shorten(&String::from_utf8_lossy(key)).into_owned();
            let value = reader
                .value_span()
                .map_err(|error| fail(item, &key_name(), error))?;
            let slot = match key {
                b"m" => &mut keys.m,
                b"t" => &mut keys.t,
                b"h" => &mut keys.h,
                b"fields" => &mut keys.fields,
                b"tags" => &mut keys.tags,
                b"columns" => &mut keys.columns,
                b"tag_keys" => &mut keys.tag_keys,
                b"batch" => &mut keys.batch,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(fail(item, &key_name(), "duplicate key"));
            }
        }
        Ok(keys)
    }
}

/// The state of one decode call.
struct Decoder<'a, 'd, 'r> {
    request: RequestBuilder<'d, 'r>,
    now_ns: i64,
    /// The tag names of the row being decoded (reused across rows).
    tag_names: Vec<&'a str>,
    /// Scratch text for tags sent as numbers or booleans (reused).
    text: String,
}

impl<'a> Decoder<'a, '_, '_> {
    /// Decodes the array under `"batch"`.
    fn batch(&mut self, mut batch: Reader<'a>) -> Result<(), IngestError> {
        let len = match batch
            .next()
            .map_err(|error| fail(Item::Body, "batch", error))?
        {
            Token::Array(len) => len,
            other => {
                return Err(fail(
                    Item::Body,
                    "batch",
                    format!("expected an array of items, found {}", other.type_name()),
                ));
            }
        };
        for index in 0..len {
            self.map_item(&mut batch, Item::Batch(index))?;
        }
        Ok(())
    }

    /// Decodes the next value of `reader`, which must be an item map.
    fn map_item(&mut self, reader: &mut Reader<'a>, item: Item) -> Result<(), IngestError> {
        let len = match reader.next().map_err(|error| fail(item, "", error))? {
            Token::Map(len) => len,
            other => {
                return Err(fail(
                    item,
                    "",
                    format!("expected a map, found {}", other.type_name()),
                ));
            }
        };
        let keys = Keys::scan(reader, len, item)?;
        if keys.batch.is_some() {
            return Err(fail(item, "batch", "nested batches are not supported"));
        }
        self.item(&keys, item)
    }

    /// Decodes one columnar or row item.
    fn item(&mut self, keys: &Keys<'a>, item: Item) -> Result<(), IngestError> {
        let measurement = measurement(keys, item)?;
        match (keys.columns, keys.fields) {
            (Some(columns), None) => {
                for (present, key) in [
                    (keys.t.is_some(), "t"),
                    (keys.h.is_some(), "h"),
                    (keys.tags.is_some(), "tags"),
                ] {
                    if present {
                        return Err(fail(
                            item,
                            key,
                            "not allowed in a columnar item (send it as a column)",
                        ));
                    }
                }
                self.columnar(measurement, columns, keys.tag_keys, item)
            }
            (None, Some(fields)) => {
                if keys.tag_keys.is_some() {
                    return Err(fail(
                        item,
                        "tag_keys",
                        "only allowed in a columnar item (use \"tags\" in a row)",
                    ));
                }
                self.row(measurement, keys, fields, item)
            }
            (Some(_), Some(_)) => Err(fail(
                item,
                "",
                "an item carries either \"columns\" or \"fields\", not both",
            )),
            (None, None) => Err(fail(
                item,
                "",
                "missing \"columns\" (columnar item) or \"fields\" (row item)",
            )),
        }
    }

    /// Decodes a columnar item.
    fn columnar(
        &mut self,
        measurement: &'a str,
        mut columns: Reader<'a>,
        tag_keys: Option<Reader<'a>>,
        item: Item,
    ) -> Result<(), IngestError> {
        let tag_keys = match tag_keys {
            Some(reader) => Some(read_tag_keys(reader, item)?),
            None => None,
        };
        let count = match columns
            .next()
            .map_err(|error| fail(item, "columns", error))?
        {
            Token::Map(count) => count,
            other => {
                return Err(fail(
                    item,
                    "columns",
                    format!("expected a map of arrays, found {}", other.type_name()),
                ));
            }
        };
        if count == 0 {
            return Err(fail(item, "columns", "no columns"));
        }
        // First pass: names, lengths and the span of each array, so `time` and the row count
        // are known whatever the key order.
        let mut time: Option<Reader<'a>> = None;
        let mut others: Vec<(&'a str, Reader<'a>)> = Vec::new();
        let mut first: Option<(&'a str, u32)> = None;
        for _ in 0..count {
            let name = match columns
                .next()
                .map_err(|error| fail(item, "columns", error))?
            {
                Token::Str(bytes) => utf8(bytes).map_err(|error| fail(item, "columns", error))?,
                other => {
                    return Err(fail(
                        item,
                        "columns",
                        format!("column names must be strings, found {}", other.type_name()),
                    ));
                }
            };
            let path = || format!("columns.{}", shorten(name));
            let len = match columns.next().map_err(|error| fail(item, &path(), error))? {
                Token::Array(len) => len,
                other => {
                    return Err(fail(
                        item,
                        &path(),
                        format!("expected an array, found {}", other.type_name()),
                    ));
                }
            };
            match first {
                None => first = Some((name, len)),
                Some((first_name, first_len)) if first_len != len => {
                    return Err(fail(
                        item,
                        &path(),
                        format!(
                            "has {len} values but column \"{}\" has {first_len}",
                            shorten(first_name)
                        ),
                    ));
                }
                Some(_) => {}
            }
            let values = columns
                .values_span(len)
                .map_err(|error| fail(item, &path(), error))?;
            if name == TIME_COLUMN {
                if time.replace(values).is_some() {
                    return Err(fail(item, &path(), "duplicate column"));
                }
            } else {
                if others.len() >= MAX_COLUMNS_PER_TABLE {
                    return Err(fail(item, "columns", BuildError::TooManyColumns));
                }
                others.push((name, values));
            }
        }
        let rows = first.map_or(0, |(_, len)| len as usize);
        let table = self
            .request
            .table(measurement)
            .map_err(|error| fail(item, "m", error))?;
        if rows == 0 {
            return Ok(());
        }
        let base = table.rows();
        match time {
            Some(mut values) => {
                // The first value decides the unit of the whole column (Arc's rule).
                let mut peek = values;
                let unit = infer_unit(peek.next().unwrap_or(Token::Nil));
                for index in 0..rows {
                    let time_ns = values
                        .next()
                        .map_err(|error| error.to_string())
                        .and_then(|token| time_ns(token, unit))
                        .map_err(|error| fail(item, &format!("columns.time[{index}]"), error))?;
                    table
                        .push_row(time_ns)
                        .map_err(|error| fail(item, &format!("columns.time[{index}]"), error))?;
                }
            }
            None => {
                for _ in 0..rows {
                    table
                        .push_row(self.now_ns)
                        .map_err(|error| fail(item, "columns", error))?;
                }
            }
        }
        for (name, values) in others {
            let declared_tag = tag_keys.as_ref().map(|keys| keys.contains(&name));
            decode_column(
                table,
                &mut self.text,
                name,
                values,
                rows,
                base,
                declared_tag,
            )
            .map_err(|(index, error)| {
                let path = match index {
                    Some(index) => format!("columns.{}[{index}]", shorten(name)),
                    None => format!("columns.{}", shorten(name)),
                };
                fail(item, &path, error)
            })?;
        }
        Ok(())
    }

    /// Decodes a row item.
    fn row(
        &mut self,
        measurement: &'a str,
        keys: &Keys<'a>,
        mut fields: Reader<'a>,
        item: Item,
    ) -> Result<(), IngestError> {
        let Decoder {
            request,
            now_ns,
            tag_names,
            text,
        } = self;
        let table = request
            .table(measurement)
            .map_err(|error| fail(item, "m", error))?;
        let time_ns = match keys.t {
            None => *now_ns,
            Some(mut t) => match t.next().map_err(|error| fail(item, "t", error))? {
                Token::Nil => *now_ns,
                token => {
                    time_ns(token, infer_unit(token)).map_err(|error| fail(item, "t", error))?
                }
            },
        };
        let field_count = match fields.next().map_err(|error| fail(item, "fields", error))? {
            Token::Map(count) => count,
            other => {
                return Err(fail(
                    item,
                    "fields",
                    format!("expected a map, found {}", other.type_name()),
                ));
            }
        };
        if field_count == 0 {
            return Err(fail(item, "fields", "no fields"));
        }
        let row = table
            .push_row(time_ns)
            .map_err(|error| fail(item, "t", error))?;
        let mut slot = 0;
        tag_names.clear();
        if let Some(mut tags) = keys.tags {
            let tag_count = match tags.next().map_err(|error| fail(item, "tags", error))? {
                Token::Map(count) => count,
                Token::Nil => 0,
                other => {
                    return Err(fail(
                        item,
                        "tags",
                        format!("expected a map, found {}", other.type_name()),
                    ));
                }
            };
            for _ in 0..tag_count {
                let key = map_key(&mut tags).map_err(|error| fail(item, "tags", error))?;
                let path = || format!("tags.{}", shorten(key));
                let token = tags.next().map_err(|error| fail(item, &path(), error))?;
                if token == Token::Nil {
                    continue;
                }
                let value = tag_text(token, text).map_err(|error| fail(item, &path(), error))?;
                let column = table
                    .column(Some(slot), key, ColumnKind::Tag)
                    .map_err(|error| fail(item, &path(), error))?;
                table
                    .append_tag(column, row, value)
                    .map_err(|error| fail(item, &path(), error))?;
                tag_names.push(key);
                slot += 1;
            }
        }
        if let Some(mut host) = keys.h {
            match host.next().map_err(|error| fail(item, "h", error))? {
                Token::Nil => {}
                Token::Str(bytes) => {
                    let value = utf8(bytes).map_err(|error| fail(item, "h", error))?;
                    let column = table
                        .column(Some(slot), "host", ColumnKind::Tag)
                        .map_err(|error| fail(item, "h", error))?;
                    table
                        .append_tag(column, row, value)
                        .map_err(|error| fail(item, "h", error))?;
                    tag_names.push("host");
                    slot += 1;
                }
                other => {
                    return Err(fail(
                        item,
                        "h",
                        format!("expected a string, found {}", other.type_name()),
                    ));
                }
            }
        }
        for _ in 0..field_count {
            let key = map_key(&mut fields).map_err(|error| fail(item, "fields", error))?;
            let path = || format!("fields.{}", shorten(key));
            let token = fields.next().map_err(|error| fail(item, &path(), error))?;
            let Some(value) = field_value(token).map_err(|error| fail(item, &path(), error))?
            else {
                continue;
            };
            // As in line protocol, a field named like one of its row's tags gets `_value`.
            let renamed;
            let name: &str = if tag_names.contains(&key) {
                renamed = format!("{key}_value");
                &renamed
            } else {
                key
            };
            let column = table
                .column(Some(slot), name, ColumnKind::Field(value.field_type()))
                .map_err(|error| fail(item, &path(), error))?;
            table
                .append_field(column, row, value, true)
                .map_err(|error| fail(item, &path(), error))?;
            slot += 1;
        }
        Ok(())
    }
}

/// Reads the item's measurement name (`m`, required, a string).
fn measurement<'a>(keys: &Keys<'a>, item: Item) -> Result<&'a str, IngestError> {
    let Some(mut reader) = keys.m else {
        return Err(fail(item, "", "missing \"m\" (measurement)"));
    };
    match reader.next().map_err(|error| fail(item, "m", error))? {
        Token::Str(bytes) => utf8(bytes).map_err(|error| fail(item, "m", error)),
        other => Err(fail(
            item,
            "m",
            format!("expected a string, found {}", other.type_name()),
        )),
    }
}

/// Reads `tag_keys`: an array of strings, at most one per possible column.
fn read_tag_keys<'a>(mut reader: Reader<'a>, item: Item) -> Result<Vec<&'a str>, IngestError> {
    let len = match reader
        .next()
        .map_err(|error| fail(item, "tag_keys", error))?
    {
        Token::Array(len) => len as usize,
        other => {
            return Err(fail(
                item,
                "tag_keys",
                format!("expected an array of strings, found {}", other.type_name()),
            ));
        }
    };
    if len > MAX_COLUMNS_PER_TABLE {
        return Err(fail(item, "tag_keys", BuildError::TooManyColumns));
    }
    let mut names = Vec::with_capacity(len);
    for index in 0..len {
        let path = || format!("tag_keys[{index}]");
        match reader.next().map_err(|error| fail(item, &path(), error))? {
            Token::Str(bytes) => {
                names.push(utf8(bytes).map_err(|error| fail(item, &path(), error))?);
            }
            other => {
                return Err(fail(
                    item,
                    &path(),
                    format!("expected a string, found {}", other.type_name()),
                ));
            }
        }
    }
    Ok(names)
}

/// Reads a map key, which must be a UTF-8 string.
fn map_key<'a>(reader: &mut Reader<'a>) -> Result<&'a str, String> {
    match reader.next().map_err(|error| error.to_string())? {
        Token::Str(bytes) => utf8(bytes).map_err(str::to_string),
        other => Err(format!("keys must be strings, found {}", other.type_name())),
    }
}

/// Converts a scalar to a field value; `None` for nil.
fn field_value(token: Token<'_>) -> Result<Option<FieldValue<'_>>, String> {
    Ok(Some(match token {
        Token::Nil => return Ok(None),
        Token::Bool(v) => FieldValue::Boolean(v),
        Token::Int(v) => FieldValue::Integer(v),
        Token::UInt(v) => FieldValue::UInteger(v),
        Token::Float(v) => FieldValue::Float(v),
        Token::Str(bytes) => FieldValue::String(utf8(bytes)?),
        other => return Err(format!("unsupported value type {}", other.type_name())),
    }))
}

/// Returns a tag's text: strings as they are, numbers and booleans spelled out (as Arc does).
fn tag_text<'s>(token: Token<'s>, text: &'s mut String) -> Result<&'s str, String> {
    text.clear();
    // Writing to a String cannot fail.
    let _ = match token {
        Token::Str(bytes) => return utf8(bytes).map_err(str::to_string),
        Token::Int(v) => write!(text, "{v}"),
        Token::UInt(v) => write!(text, "{v}"),
        Token::Float(v) => write!(text, "{v}"),
        Token::Bool(v) => write!(text, "{v}"),
        other => return Err(format!("unsupported tag value type {}", other.type_name())),
    };
    Ok(text.as_str())
}

/// Which value types a column holds (first pass over a columnar array).
#[derive(Debug, Default)]
struct Seen {
    strings: bool,
    booleans: bool,
    integers: bool,
    unsigned: bool,
    floats: bool,
}

impl Seen {
    /// Scans `rows` values; the error carries the index of the first unsupported one.
    fn scan(mut values: Reader<'_>, rows: usize) -> Result<Self, (Option<usize>, String)> {
        let mut seen = Seen::default();
        for index in 0..rows {
            match values
                .next()
                .map_err(|error| (Some(index), error.to_string()))?
            {
                Token::Nil => {}
                Token::Bool(_) => seen.booleans = true,
                Token::Int(_) => seen.integers = true,
                Token::UInt(_) => seen.unsigned = true,
                Token::Float(_) => seen.floats = true,
                Token::Str(_) => seen.strings = true,
                other => {
                    return Err((
                        Some(index),
                        format!("unsupported value type {}", other.type_name()),
                    ));
                }
            }
        }
        Ok(seen)
    }

    fn is_all_nil(&self) -> bool {
        !(self.strings || self.booleans || self.integers || self.unsigned || self.floats)
    }

    fn only_strings(&self) -> bool {
        self.strings && !(self.booleans || self.integers || self.unsigned || self.floats)
    }

    /// Returns the field type of the column; `None` if all values are nil.
    fn field_type(&self) -> Result<Option<FieldType>, String> {
        let numbers = self.integers || self.unsigned || self.floats;
        let groups: Vec<&str> = [
            (self.strings, "string"),
            (self.booleans, "boolean"),
            (numbers, "numeric"),
        ]
        .into_iter()
        .filter_map(|(present, name)| present.then_some(name))
        .collect();
        if groups.len() > 1 {
            return Err(format!("mixes {} values", groups.join(" and ")));
        }
        Ok(if self.strings {
            Some(FieldType::String)
        } else if self.booleans {
            Some(FieldType::Boolean)
        } else if self.floats {
            Some(FieldType::Float)
        } else if self.integers && self.unsigned {
            return Err("mixes integers above i64::MAX with integers that fit i64".to_string());
        } else if self.integers {
            Some(FieldType::Integer)
        } else if self.unsigned {
            Some(FieldType::UInteger)
        } else {
            None
        })
    }
}

/// Decodes one non-time column of a columnar item into rows `base..base + rows` of `table`.
/// `declared_tag` is whether `tag_keys` names the column (`None`: no `tag_keys`). The error
/// carries the index of the offending value, if one.
fn decode_column(
    table: &mut TableBuilder<'_>,
    text: &mut String,
    name: &str,
    values: Reader<'_>,
    rows: usize,
    base: usize,
    declared_tag: Option<bool>,
) -> Result<(), (Option<usize>, String)> {
    let seen = Seen::scan(values, rows)?;
    if seen.is_all_nil() {
        // An all-null column carries nothing, and has no type to give it.
        return Ok(());
    }
    let kind = match declared_tag {
        Some(true) => ColumnKind::Tag,
        None if seen.only_strings() => ColumnKind::Tag,
        _ => match seen.field_type().map_err(|error| (None, error))? {
            Some(field_type) => ColumnKind::Field(field_type),
            None => return Ok(()),
        },
    };
    let column = table
        .column(None, name, kind)
        .map_err(|error| (None, error.to_string()))?;
    let mut values = values;
    for index in 0..rows {
        let at = |error: String| (Some(index), error);
        let token = values.next().map_err(|error| at(error.to_string()))?;
        if token == Token::Nil {
            continue;
        }
        let row = base + index;
        if kind == ColumnKind::Tag {
            let value = tag_text(token, text).map_err(at)?;
            table
                .append_tag(column, row, value)
                .map_err(|error| at(error.to_string()))?;
        } else if let Some(value) = field_value(token).map_err(at)? {
            table
                .append_field(column, row, value, true)
                .map_err(|error| at(error.to_string()))?;
        }
    }
    Ok(())
}

/// The unit of integer timestamps, inferred from magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl TimeUnit {
    fn nanos(self) -> i64 {
        match self {
            TimeUnit::Seconds => 1_000_000_000,
            TimeUnit::Millis => 1_000_000,
            TimeUnit::Micros => 1_000,
            TimeUnit::Nanos => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TimeUnit::Seconds => "s",
            TimeUnit::Millis => "ms",
            TimeUnit::Micros => "us",
            TimeUnit::Nanos => "ns",
        }
    }
}

/// Infers the unit of a timestamp as Arc does: below 1e10 seconds, below 1e13 milliseconds,
/// below 1e16 microseconds, else nanoseconds (negative values count as seconds, like Arc).
fn infer_unit(token: Token<'_>) -> TimeUnit {
    match token {
        Token::Int(v) if v < 10_000_000_000 => TimeUnit::Seconds,
        Token::Int(v) if v < 10_000_000_000_000 => TimeUnit::Millis,
        Token::Int(v) if v < 10_000_000_000_000_000 => TimeUnit::Micros,
        Token::Float(v) if v < 1e10 => TimeUnit::Seconds,
        Token::Float(v) if v < 1e13 => TimeUnit::Millis,
        Token::Float(v) if v < 1e16 => TimeUnit::Micros,
        _ => TimeUnit::Nanos,
    }
}

/// Converts a timestamp token in `unit` to nanoseconds.
fn time_ns(token: Token<'_>, unit: TimeUnit) -> Result<i64, String> {
    let overflow = |value: &dyn Display| {
        format!(
            "timestamp {value} ({}) overflows the nanosecond range",
            unit.name()
        )
    };
    match token {
        Token::Int(v) => v.checked_mul(unit.nanos()).ok_or_else(|| overflow(&v)),
        Token::UInt(v) => Err(overflow(&v)),
        Token::Float(v) => {
            // Scaled, not truncated: 1700000000.5 s keeps its half second. The whole part is
            // scaled in integers, since f64 cannot hold nanoseconds since 1970 exactly.
            let whole = v.trunc();
            // The bounds are -2^63 and 2^63, exact in f64; NaN and infinities fail them.
            if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&whole) {
                return Err(overflow(&v));
            }
            // |fraction| < 1, so this is below one unit in nanoseconds: it fits.
            let fraction_ns = ((v - whole) * unit.nanos() as f64).round() as i64;
            (whole as i64)
                .checked_mul(unit.nanos())
                .and_then(|ns| ns.checked_add(fraction_ns))
                .ok_or_else(|| overflow(&v))
        }
        Token::Ext(-1, data) => ext_timestamp(data),
        Token::Nil => Err("timestamp is null".to_string()),
        other => Err(format!(
            "expected a numeric timestamp, found {}",
            other.type_name()
        )),
    }
}

/// Decodes the MessagePack timestamp extension (type -1: 32, 64 or 96 bits).
fn ext_timestamp(data: &[u8]) -> Result<i64, String> {
    let (seconds, nanos): (i64, u32) = match data.len() {
        4 => {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(data);
            (i64::from(u32::from_be_bytes(bytes)), 0)
        }
        8 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(data);
            let packed = u64::from_be_bytes(bytes);
            // Upper 30 bits nanoseconds, lower 34 bits seconds: both fit their targets.
            ((packed & 0x3_ffff_ffff) as i64, (packed >> 34) as u32)
        }
        12 => {
            let mut nanos = [0u8; 4];
            nanos.copy_from_slice(&data[..4]);
            let mut seconds = [0u8; 8];
            seconds.copy_from_slice(&data[4..]);
            (i64::from_be_bytes(seconds), u32::from_be_bytes(nanos))
        }
        len => return Err(format!("timestamp extension of {len} bytes")),
    };
    if nanos >= 1_000_000_000 {
        return Err(format!("timestamp extension with {nanos} nanoseconds"));
    }
    seconds
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(i64::from(nanos)))
        .ok_or_else(|| format!("timestamp {seconds} s overflows the nanosecond range"))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
    use proptest::prelude::*;
    use rmpv::Value;

    use super::*;
    use crate::ingest::test_support::{
        self, Table, assert_decoded, column_names, consistent, kind, strings, table_strategy, times,
    };

    const NOW: i64 = 1_700_000_000_123_456_789;

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(key, value)| (Value::from(key), value))
                .collect(),
        )
    }

    fn array(values: Vec<Value>) -> Value {
        Value::Array(values)
    }

    fn decode(value: &Value) -> Result<Vec<TableWrite>, IngestError> {
        decode_msgpack(&encode(value), "db", NOW, None)
    }

    fn decode_one(value: &Value) -> RecordBatch {
        let writes = decode(value).unwrap();
        assert_eq!(writes.len(), 1, "{writes:?}");
        writes.into_iter().next().unwrap().batch
    }

    fn error_of(value: &Value) -> String {
        match decode(value) {
            Err(IngestError::Invalid(message)) => message,
            other => panic!("expected an error for {value}, got {other:?}"),
        }
    }

    fn floats(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Float64Type>()
            .iter()
            .collect()
    }

    fn integers(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .iter()
            .collect()
    }

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some(v.to_string())).collect()
    }

    #[test]
    fn test_should_decode_columnar_with_inferred_tags_and_every_type() {
        let batch = decode_one(&map(vec![
            ("m", Value::from("cpu")),
            (
                "columns",
                map(vec![
                    ("host", array(vec!["a".into(), "b".into(), Value::Nil])),
                    ("usage", array(vec![1.5.into(), 2.into(), Value::Nil])),
                    ("count", array(vec![1.into(), (-2).into(), 3.into()])),
                    ("big", array(vec![u64::MAX.into(), Value::Nil, Value::Nil])),
                    ("ok", array(vec![true.into(), false.into(), Value::Nil])),
                    ("empty", array(vec![Value::Nil, Value::Nil, Value::Nil])),
                    ("time", array(vec![1.into(), 2.into(), 3.into()])),
                ]),
            ),
        ]));
        assert_eq!(
            column_names(&batch),
            ["time", "host", "big", "count", "ok", "usage"]
        );
        assert_eq!(
            times(&batch),
            vec![1_000_000_000, 2_000_000_000, 3_000_000_000]
        );
        assert_eq!(kind(&batch, "host"), ColumnKind::Tag);
        assert_eq!(
            strings(&batch, "host"),
            vec![Some("a".into()), Some("b".into()), None]
        );
        assert_eq!(kind(&batch, "usage"), ColumnKind::Field(FieldType::Float));
        assert_eq!(floats(&batch, "usage"), vec![Some(1.5), Some(2.0), None]);
        assert_eq!(kind(&batch, "count"), ColumnKind::Field(FieldType::Integer));
        assert_eq!(integers(&batch, "count"), vec![Some(1), Some(-2), Some(3)]);
        assert_eq!(kind(&batch, "big"), ColumnKind::Field(FieldType::UInteger));
        let big = batch
            .column_by_name("big")
            .unwrap()
            .as_primitive::<UInt64Type>();
        assert_eq!(big.value(0), u64::MAX);
        assert_eq!(big.null_count(), 2);
        assert_eq!(kind(&batch, "ok"), ColumnKind::Field(FieldType::Boolean));
        let ok = batch.column_by_name("ok").unwrap().as_boolean();
        assert!(ok.value(0) && !ok.value(1) && ok.is_null(2));
    }

    #[test]
    fn test_should_use_tag_keys_when_given() {
        let batch = decode_one(&map(vec![
            ("m", Value::from("cpu")),
            (
                "tag_keys",
                array(vec!["host".into(), "core".into(), "absent".into()]),
            ),
            (
                "columns",
                map(vec![
                    (
                        "time",
                        array(vec![
                            1_700_000_000_000i64.into(),
                            1_700_000_000_001i64.into(),
                        ]),
                    ),
                    ("host", array(vec!["a".into(), "b".into()])),
                    ("core", array(vec![0.into(), 1.into()])),
                    ("note", array(vec!["x".into(), "y".into()])),
                ]),
            ),
        ]));
        assert_eq!(column_names(&batch), ["time", "core", "host", "note"]);
        assert_eq!(kind(&batch, "host"), ColumnKind::Tag);
        assert_eq!(kind(&batch, "core"), ColumnKind::Tag);
        assert_eq!(strings(&batch, "core"), some(&["0", "1"]));
        assert_eq!(kind(&batch, "note"), ColumnKind::Field(FieldType::String));
        assert_eq!(
            times(&batch),
            vec![1_700_000_000_000_000_000, 1_700_000_000_001_000_000]
        );
    }

    #[test]
    fn test_should_give_columnar_rows_without_time_now() {
        let batch = decode_one(&map(vec![
            ("m", Value::from("cpu")),
            ("columns", map(vec![("v", array(vec![1.into(), 2.into()]))])),
        ]));
        assert_eq!(times(&batch), vec![NOW, NOW]);
        // Zero-length columns write nothing.
        let writes = decode(&map(vec![
            ("m", Value::from("cpu")),
            ("columns", map(vec![("v", array(vec![]))])),
        ]))
        .unwrap();
        assert!(writes.is_empty());
    }

    #[test]
    fn test_should_decode_a_row_with_every_type() {
        let batch = decode_one(&map(vec![
            ("m", Value::from("cpu")),
            ("t", Value::from(1_700_000_000_000i64)),
            ("h", Value::from("server1")),
            (
                "tags",
                map(vec![
                    ("dc", "eu".into()),
                    ("rack", 7.into()),
                    ("gone", Value::Nil),
                ]),
            ),
            (
                "fields",
                map(vec![
                    ("usage", 1.5.into()),
                    ("n", (-3).into()),
                    ("u", u64::MAX.into()),
                    ("ok", true.into()),
                    ("s", "hello, world".into()),
                    ("nothing", Value::Nil),
                    ("f32", Value::F32(0.5)),
                ]),
            ),
            ("unknown_key", Value::from("ignored")),
        ]));
        assert_eq!(
            column_names(&batch),
            [
                "time", "dc", "host", "rack", "f32", "n", "ok", "s", "u", "usage"
            ]
        );
        assert_eq!(times(&batch), vec![1_700_000_000_000_000_000]);
        assert_eq!(strings(&batch, "host"), some(&["server1"]));
        assert_eq!(strings(&batch, "rack"), some(&["7"]));
        assert_eq!(floats(&batch, "usage"), vec![Some(1.5)]);
        assert_eq!(floats(&batch, "f32"), vec![Some(0.5)]);
        assert_eq!(integers(&batch, "n"), vec![Some(-3)]);
        assert_eq!(kind(&batch, "u"), ColumnKind::Field(FieldType::UInteger));
        assert_eq!(kind(&batch, "ok"), ColumnKind::Field(FieldType::Boolean));
        assert_eq!(strings(&batch, "s"), some(&["hello, world"]));
        assert_eq!(kind(&batch, "s"), ColumnKind::Field(FieldType::String));
    }

    #[test]
    fn test_should_give_rows_without_t_now() {
        let value = array(vec![
            map(vec![
                ("m", "cpu".into()),
                ("fields", map(vec![("v", 1.into())])),
            ]),
            map(vec![
                ("m", "cpu".into()),
                ("t", Value::Nil),
                ("fields", map(vec![("v", 2.into())])),
            ]),
        ]);
        assert_eq!(times(&decode_one(&value)), vec![NOW, NOW]);
    }

    #[test]
    fn test_should_rename_a_row_field_named_like_a_tag() {
        let batch = decode_one(&map(vec![
            ("m", "cpu".into()),
            ("h", "a".into()),
            ("fields", map(vec![("host", 1.into())])),
        ]));
        assert_eq!(column_names(&batch), ["time", "host", "host_value"]);
    }

    #[test]
    fn test_should_merge_batch_items_of_one_measurement() {
        let value = map(vec![(
            "batch",
            array(vec![
                map(vec![
                    ("m", "cpu".into()),
                    ("t", 1.into()),
                    ("tags", map(vec![("host", "a".into())])),
                    ("fields", map(vec![("usage", 1.into())])),
                ]),
                map(vec![
                    ("m", "mem".into()),
                    ("t", 2.into()),
                    ("fields", map(vec![("free", 10.into())])),
                ]),
                map(vec![
                    ("m", "cpu".into()),
                    ("t", 3.into()),
                    (
                        "fields",
                        map(vec![("usage", 2.5.into()), ("extra", true.into())]),
                    ),
                ]),
                map(vec![
                    ("m", "cpu".into()),
                    (
                        "columns",
                        map(vec![
                            ("time", array(vec![4.into(), 5.into()])),
                            ("host", array(vec!["b".into(), "c".into()])),
                            ("usage", array(vec![3.into(), Value::Nil])),
                        ]),
                    ),
                ]),
            ]),
        )]);
        let writes = decode(&value).unwrap();
        assert_eq!(writes.len(), 2);
        let cpu = &writes[0].batch;
        assert_eq!(writes[0].table.measurement, "cpu");
        assert_eq!(
            times(cpu),
            [1, 3, 4, 5].map(|s: i64| s * 1_000_000_000).to_vec()
        );
        assert_eq!(column_names(cpu), ["time", "host", "extra", "usage"]);
        // 1 (integer) then 2.5 (float): the column becomes float, the 1 converted.
        assert_eq!(
            floats(cpu, "usage"),
            vec![Some(1.0), Some(2.5), Some(3.0), None]
        );
        assert_eq!(
            strings(cpu, "host"),
            vec![Some("a".into()), None, Some("b".into()), Some("c".into())]
        );
        assert_eq!(writes[1].table.measurement, "mem");
        assert_eq!(integers(&writes[1].batch, "free"), vec![Some(10)]);
    }

    #[test]
    fn test_should_accept_a_top_level_array_of_items() {
        let value = array(vec![
            map(vec![
                ("m", "a".into()),
                ("fields", map(vec![("v", 1.into())])),
            ]),
            map(vec![
                ("m", "b".into()),
                ("columns", map(vec![("v", array(vec![1.into()]))])),
            ]),
        ]);
        let writes = decode(&value).unwrap();
        assert_eq!(writes.len(), 2);
        assert!(decode(&array(vec![])).unwrap().is_empty());
    }

    #[test]
    fn test_should_infer_time_units_from_magnitude() {
        let second = 1_700_000_000i64;
        for (t, expected) in [
            (Value::from(second), second * 1_000_000_000),
            (Value::from(second * 1_000), second * 1_000_000_000),
            (Value::from(second * 1_000_000), second * 1_000_000_000),
            (Value::from(second * 1_000_000_000), second * 1_000_000_000),
            (Value::from(9_000_000_000i64), 9_000_000_000_000_000_000),
            (Value::from(10_000_000_000i64), 10_000_000_000_000_000),
            (Value::from(0), 0),
            (Value::from(-5), -5_000_000_000),
            (Value::F64(1_700_000_000.5), 1_700_000_000_500_000_000),
            (Value::F64(1_700_000_000_123.0), 1_700_000_000_123_000_000),
            (
                Value::Ext(-1, 1_700_000_000u32.to_be_bytes().to_vec()),
                second * 1_000_000_000,
            ),
            (
                Value::Ext(-1, ((7u64 << 34) | second as u64).to_be_bytes().to_vec()),
                second * 1_000_000_000 + 7,
            ),
            (
                Value::Ext(
                    -1,
                    [9u32.to_be_bytes().to_vec(), (-1i64).to_be_bytes().to_vec()].concat(),
                ),
                -1_000_000_000 + 9,
            ),
        ] {
            let row = map(vec![
                ("m", "cpu".into()),
                ("t", t.clone()),
                ("fields", map(vec![("v", 1.into())])),
            ]);
            assert_eq!(times(&decode_one(&row)), vec![expected], "row t={t}");
            let columnar = map(vec![
                ("m", "cpu".into()),
                (
                    "columns",
                    map(vec![
                        ("time", array(vec![t.clone()])),
                        ("v", array(vec![1.into()])),
                    ]),
                ),
            ]);
            assert_eq!(
                times(&decode_one(&columnar)),
                vec![expected],
                "columnar t={t}"
            );
        }
    }

    #[test]
    fn test_should_apply_the_first_value_unit_to_the_whole_time_column() {
        let batch = decode_one(&map(vec![
            ("m", "cpu".into()),
            (
                "columns",
                map(vec![
                    ("time", array(vec![1_700_000_000_000i64.into(), 5.into()])),
                    ("v", array(vec![1.into(), 2.into()])),
                ]),
            ),
        ]));
        assert_eq!(times(&batch), vec![1_700_000_000_000_000_000, 5_000_000]);
    }

    #[test]
    fn test_should_name_both_lengths_on_mismatch() {
        let error = error_of(&map(vec![
            ("m", "cpu".into()),
            (
                "columns",
                map(vec![
                    ("time", array(vec![1.into(), 2.into(), 3.into()])),
                    ("usage", array(vec![1.into(), 2.into()])),
                ]),
            ),
        ]));
        assert_eq!(
            error,
            "columns.usage: has 2 values but column \"time\" has 3"
        );
    }

    fn row_with(key: &str, value: Value) -> Value {
        let mut entries = vec![
            ("m", Value::from("cpu")),
            ("fields", map(vec![("v", 1.into())])),
        ];
        entries.retain(|(k, _)| *k != key);
        entries.push((key, value));
        map(entries)
    }

    fn columnar_with(column: &str, values: Vec<Value>) -> Value {
        map(vec![
            ("m", "cpu".into()),
            ("columns", map(vec![(column, array(values))])),
        ])
    }

    #[test]
    fn test_should_name_the_path_of_bad_items() {
        let cases: Vec<(Value, &str)> = vec![
            (
                Value::from(5),
                "body: expected a map or an array, found integer",
            ),
            (
                map(vec![("fields", map(vec![("v", 1.into())]))]),
                "body: missing \"m\"",
            ),
            (
                row_with("m", 5.into()),
                "m: expected a string, found integer",
            ),
            (
                row_with("m", "9cpu".into()),
                "m: invalid measurement name \"9cpu\"",
            ),
            (
                row_with("fields", 5.into()),
                "fields: expected a map, found integer",
            ),
            (row_with("fields", map(vec![])), "fields: no fields"),
            (
                row_with("fields", map(vec![("x", Value::Binary(vec![1]))])),
                "fields.x: unsupported value type binary",
            ),
            (
                row_with("fields", map(vec![("x", array(vec![]))])),
                "fields.x: unsupported value type array",
            ),
            (
                row_with("fields", map(vec![("time", 1.into())])),
                "fields.time: column name \"time\" is reserved",
            ),
            (
                row_with("tags", map(vec![("time", "x".into())])),
                "tags.time: column name \"time\" is reserved",
            ),
            (
                row_with("tags", map(vec![("a", map(vec![]))])),
                "tags.a: unsupported tag value type map",
            ),
            (
                row_with("tags", 5.into()),
                "tags: expected a map, found integer",
            ),
            (
                row_with("t", "now".into()),
                "t: expected a numeric timestamp, found string",
            ),
            (
                row_with("t", u64::MAX.into()),
                "t: timestamp 18446744073709551615 (ns) overflows",
            ),
            (
                row_with("t", Value::F64(f64::NAN)),
                "t: timestamp NaN (ns) overflows",
            ),
            (
                row_with("t", Value::Ext(-1, vec![0; 5])),
                "t: timestamp extension of 5 bytes",
            ),
            (
                row_with("t", Value::Ext(3, vec![0; 4])),
                "t: expected a numeric timestamp, found extension",
            ),
            (
                row_with("h", 5.into()),
                "h: expected a string, found integer",
            ),
            (
                row_with("tag_keys", array(vec![])),
                "tag_keys: only allowed in a columnar item",
            ),
            (
                row_with("columns", map(vec![])),
                "body: an item carries either \"columns\" or \"fields\"",
            ),
            (map(vec![("m", "cpu".into())]), "body: missing \"columns\""),
            (
                row_with("tags", map(vec![("host", "x".into())]))
                    .as_map()
                    .map(|entries| {
                        let mut entries = entries.clone();
                        entries.push((Value::from("h"), Value::from("y")));
                        Value::Map(entries)
                    })
                    .unwrap(),
                "h: column \"host\" appears twice in one row",
            ),
            (
                map(vec![("m", "cpu".into()), ("columns", 5.into())]),
                "columns: expected a map of arrays, found integer",
            ),
            (
                map(vec![("m", "cpu".into()), ("columns", map(vec![]))]),
                "columns: no columns",
            ),
            (
                map(vec![
                    ("m", "cpu".into()),
                    ("columns", map(vec![("usage", 5.into())])),
                ]),
                "columns.usage: expected an array, found integer",
            ),
            (
                columnar_with("usage", vec![1.into(), array(vec![])]),
                "columns.usage[1]: unsupported value type array",
            ),
            (
                columnar_with("usage", vec![1.into(), "x".into()]),
                "columns.usage: mixes string and numeric values",
            ),
            (
                columnar_with("usage", vec![true.into(), 1.5.into()]),
                "columns.usage: mixes boolean and numeric values",
            ),
            (
                columnar_with("usage", vec![1.into(), u64::MAX.into()]),
                "columns.usage: mixes integers above i64::MAX",
            ),
            (
                columnar_with("time", vec![1.into(), Value::Nil]),
                "columns.time[1]: timestamp is null",
            ),
            (
                columnar_with("time", vec![1.into(), i64::MAX.into()]),
                "columns.time[1]: timestamp 9223372036854775807 (s) overflows",
            ),
            (
                map(vec![
                    ("m", "cpu".into()),
                    ("tag_keys", 5.into()),
                    ("columns", map(vec![("v", array(vec![1.into()]))])),
                ]),
                "tag_keys: expected an array of strings, found integer",
            ),
            (
                map(vec![
                    ("m", "cpu".into()),
                    ("tag_keys", array(vec![1.into()])),
                    ("columns", map(vec![("v", array(vec![1.into()]))])),
                ]),
                "tag_keys[0]: expected a string, found integer",
            ),
            (
                map(vec![
                    ("m", "cpu".into()),
                    ("t", 1.into()),
                    ("columns", map(vec![("v", array(vec![1.into()]))])),
                ]),
                "t: not allowed in a columnar item",
            ),
            (
                map(vec![("m", "cpu".into()), ("m", "mem".into())]),
                "m: duplicate key",
            ),
            (
                map(vec![(
                    "batch",
                    array(vec![row_with("m", "a".into()), 5.into()]),
                )]),
                "batch[1]: expected a map, found integer",
            ),
            (
                map(vec![(
                    "batch",
                    array(vec![map(vec![("batch", array(vec![]))])]),
                )]),
                "batch[0].batch: nested batches are not supported",
            ),
            (
                map(vec![("batch", 5.into())]),
                "batch: expected an array of items, found integer",
            ),
            (
                map(vec![("batch", array(vec![])), ("m", "cpu".into())]),
                "batch: a batch map must not also carry m, columns or fields",
            ),
            (
                array(vec![
                    row_with("fields", map(vec![("usage", 1.into())])),
                    row_with("fields", map(vec![("usage", "high".into())])),
                ]),
                "[1].fields.usage: column \"usage\" is string field here but integer field earlier",
            ),
            (
                map(vec![(
                    "batch",
                    array(vec![
                        row_with("tags", map(vec![("host", "a".into())])),
                        row_with("fields", map(vec![("host", true.into())])),
                    ]),
                )]),
                "batch[1].fields.host: column \"host\" is boolean field here but tag earlier",
            ),
            (
                Value::Map(vec![(Value::from(1), Value::from(2))]),
                "body: map keys must be strings, found integer",
            ),
        ];
        for (value, expected) in cases {
            let message = error_of(&value);
            assert!(
                message.starts_with(expected),
                "expected {expected:?}, got {message:?}"
            );
            assert!(message.len() < 400, "{message}");
        }
    }

    #[test]
    fn test_should_refuse_invalid_utf8_strings() {
        let mut bytes = encode(&map(vec![
            ("m", "cpu".into()),
            ("fields", map(vec![("s", "é".into())])),
        ]));
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        let error = decode_msgpack(&bytes, "db", NOW, None).unwrap_err();
        assert_eq!(
            error,
            IngestError::Invalid("fields.s: invalid utf-8 in string".into())
        );
        let mut bytes = encode(&columnar_with("tag", vec!["é".into()]));
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        let error = decode_msgpack(&bytes, "db", NOW, None).unwrap_err();
        assert_eq!(
            error,
            IngestError::Invalid("columns.tag[0]: invalid utf-8 in string".into())
        );
    }

    #[test]
    fn test_should_refuse_truncated_and_trailing_bytes() {
        let bytes = encode(&columnar_with("v", vec![1.into(), 2.5.into(), "x".into()]));
        for cut in 0..bytes.len() {
            let error = decode_msgpack(&bytes[..cut], "db", NOW, None).unwrap_err();
            assert!(error.to_string().contains("truncated msgpack"), "{error}");
        }
        let mut bytes = encode(&row_with("m", "cpu".into()));
        bytes.push(0xc0);
        let error = decode_msgpack(&bytes, "db", NOW, None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("body: unexpected bytes after the msgpack value"),
            "{error}"
        );
    }

    #[test]
    fn test_should_pay_for_decoded_rows_from_the_reservation() {
        use crate::ingest::InflightBudget;
        // 500 000 rows of time and one value, from about 1 MB of columnar body: 8 MB of rows.
        let values: Vec<Value> = (0..500_000).map(|i| Value::from(i % 100)).collect();
        let body = encode(&map(vec![
            ("m", "cpu".into()),
            (
                "columns",
                map(vec![("time", array(values.clone())), ("v", array(values))]),
            ),
        ]));
        let budget = InflightBudget::new(8 << 20);
        let mut reservation = budget.reservation();
        reservation.grow_to(body.len()).unwrap();
        let error = decode_msgpack(&body, "db", NOW, Some(&mut reservation)).unwrap_err();
        assert!(
            matches!(error, IngestError::DecodedTooLarge { limit } if limit == 8 << 20),
            "{error}"
        );
        let budget = InflightBudget::new(64 << 20);
        let mut reservation = budget.reservation();
        reservation.grow_to(body.len()).unwrap();
        let writes = decode_msgpack(&body, "db", NOW, Some(&mut reservation)).unwrap();
        assert_eq!(writes[0].batch.num_rows(), 500_000);
        assert!(reservation.bytes() >= body.len() + 8_000_000);
    }

    #[test]
    fn test_should_survive_hostile_nesting_and_lengths() {
        // A million nested arrays as a field value, and as an ignored key's value.
        let mut nested = vec![0x91u8; 1_000_000];
        nested.push(0xc0);
        let mut body = vec![0x83, 0xa1, b'm', 0xa3, b'c', b'p', b'u'];
        body.extend([0xa1, b'x']);
        body.extend(&nested);
        body.extend([0xa6]);
        body.extend(b"fields");
        body.extend([0x81, 0xa1, b'v', 0x01]);
        let writes = decode_msgpack(&body, "db", NOW, None).unwrap();
        assert_eq!(writes[0].batch.num_rows(), 1);
        // The same nesting as a field value: refused at its first level.
        let mut body = vec![0x82, 0xa1, b'm', 0xa3, b'c', b'p', b'u', 0xa6];
        body.extend(b"fields");
        body.extend([0x81, 0xa1, b'v']);
        body.extend(&nested);
        let error = decode_msgpack(&body, "db", NOW, None).unwrap_err();
        assert_eq!(
            error,
            IngestError::Invalid("fields.v: unsupported value type array".into())
        );
        // Four billion rows claimed, four bytes sent.
        let body = [0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0];
        assert!(decode_msgpack(&body, "db", NOW, None).is_err());
        let body = [0x82, 0xa1, b'm', 0xa1, b'c', 0xa7];
        assert!(decode_msgpack(&body, "db", NOW, None).is_err());
    }

    #[test]
    fn test_should_refuse_bodies_that_would_pad_into_gigabytes() {
        // Each row brings a new field: rows times columns grows quadratically.
        let rows = (0..3_000)
            .map(|i| {
                map(vec![
                    ("m", "cpu".into()),
                    ("fields", map(vec![(format!("f{i}").as_str(), 1.into())])),
                ])
            })
            .collect();
        let error = error_of(&array(rows));
        assert!(error.contains("too sparse"), "{error}");
    }

    #[test]
    fn test_should_refuse_an_invalid_database() {
        let error =
            decode_msgpack(&encode(&row_with("m", "cpu".into())), "", NOW, None).unwrap_err();
        assert!(error.to_string().starts_with("invalid database name"));
    }

    // ---- Round trip against rmpv's encoder -------------------------------------------------

    fn value_of(value: &test_support::Value) -> Value {
        match value {
            test_support::Value::Float(v) => Value::F64(*v),
            test_support::Value::Integer(v) => Value::from(*v),
            test_support::Value::UInteger(v) => Value::from(*v),
            test_support::Value::Boolean(v) => Value::from(*v),
            test_support::Value::String(v) => Value::from(v.as_str()),
        }
    }

    /// MessagePack has no unsigned type: only values above `i64::MAX` decode as unsigned.
    fn msgpack_representable(mut table: Table) -> Table {
        for row in &mut table.rows {
            for value in row.2.iter_mut().flatten() {
                if let test_support::Value::UInteger(v) = value {
                    *v |= 1 << 63;
                }
            }
        }
        table
    }

    fn encode_columnar(table: &Table) -> Value {
        let mut columns = vec![(
            Value::from("time"),
            array(table.rows.iter().map(|row| Value::from(row.0)).collect()),
        )];
        for (i, tag) in table.tags.iter().enumerate() {
            let values = table
                .rows
                .iter()
                .map(|row| row.1[i].as_deref().map_or(Value::Nil, Value::from))
                .collect();
            columns.push((Value::from(tag.as_str()), array(values)));
        }
        for (i, (field, _)) in table.fields.iter().enumerate() {
            let values = table
                .rows
                .iter()
                .map(|row| row.2[i].as_ref().map_or(Value::Nil, value_of))
                .collect();
            columns.push((Value::from(field.as_str()), array(values)));
        }
        map(vec![
            ("m", Value::from(table.measurement.as_str())),
            (
                "tag_keys",
                array(table.tags.iter().map(|t| Value::from(t.as_str())).collect()),
            ),
            ("columns", Value::Map(columns)),
        ])
    }

    fn encode_rows(table: &Table) -> Vec<Value> {
        table
            .rows
            .iter()
            .map(|(time, tag_values, field_values)| {
                let tags = table
                    .tags
                    .iter()
                    .zip(tag_values)
                    .filter_map(|(tag, value)| {
                        value
                            .as_deref()
                            .map(|value| (Value::from(tag.as_str()), Value::from(value)))
                    })
                    .collect();
                let fields = table
                    .fields
                    .iter()
                    .zip(field_values)
                    .map(|((field, _), value)| {
                        (
                            Value::from(field.as_str()),
                            value.as_ref().map_or(Value::Nil, value_of),
                        )
                    })
                    .collect();
                map(vec![
                    ("m", Value::from(table.measurement.as_str())),
                    ("t", Value::from(*time)),
                    ("tags", Value::Map(tags)),
                    ("fields", Value::Map(fields)),
                ])
            })
            .collect()
    }

    /// Nanosecond timestamps: at or above 1e16 they are inferred as nanoseconds.
    const NS_TIMES: std::ops::Range<i64> = 10_000_000_000_000_000..i64::MAX;

    proptest! {
        #[test]
        fn test_should_round_trip_columnar_tables(
            tables in proptest::collection::vec(table_strategy(NS_TIMES), 1..4)
        ) {
            let tables: Vec<Table> =
                consistent(tables).into_iter().map(msgpack_representable).collect();
            let body = array(tables.iter().map(encode_columnar).collect());
            let writes = decode(&body).unwrap_or_else(|error| panic!("{error} in {body}"));
            assert_decoded(&tables, &writes);
        }

        #[test]
        fn test_should_round_trip_row_tables(
            tables in proptest::collection::vec(table_strategy(NS_TIMES), 1..4)
        ) {
            let tables: Vec<Table> =
                consistent(tables).into_iter().map(msgpack_representable).collect();
            let body = map(vec![(
                "batch",
                array(tables.iter().flat_map(encode_rows).collect()),
            )]);
            let writes = decode(&body).unwrap_or_else(|error| panic!("{error} in {body}"));
            assert_decoded(&tables, &writes);
        }

        #[test]
        fn test_should_never_panic_on_arbitrary_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let _ = decode_msgpack(&body, "db", NOW, None);
        }

        #[test]
        fn test_should_never_panic_on_arbitrary_structures(value in arbitrary_value()) {
            let _ = decode(&value);
        }
    }

    /// Random MessagePack trees biased towards our keys, to reach deep into the decoder.
    fn arbitrary_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("m"),
            Just("t"),
            Just("h"),
            Just("fields"),
            Just("tags"),
            Just("columns"),
            Just("tag_keys"),
            Just("batch"),
            Just("time"),
            Just("v"),
        ];
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::F64),
            "[a-z]{0,3}".prop_map(Value::from),
            Just(Value::from("cpu")),
            proptest::collection::vec(any::<u8>(), 0..13).prop_map(|data| Value::Ext(-1, data)),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|entries| {
                    Value::Map(
                        entries
                            .into_iter()
                            .map(|(key, value)| (Value::from(key), value))
                            .collect(),
                    )
                }),
            ]
        })
    }

    #[test]
    #[ignore = "benchmark: run with --release -- --ignored --nocapture"]
    fn bench_msgpack_columnar_rows_per_second() {
        let rows = 1_000_000usize;
        let body = encode(&map(vec![
            ("m", "cpu".into()),
            ("tag_keys", array(vec!["host".into(), "region".into()])),
            (
                "columns",
                map(vec![
                    (
                        "time",
                        array(
                            (0..rows)
                                .map(|i| Value::from(1_700_000_000_000_000_000i64 + i as i64))
                                .collect(),
                        ),
                    ),
                    (
                        "host",
                        array(
                            (0..rows)
                                .map(|i| Value::from(format!("server{:02}", i % 50)))
                                .collect(),
                        ),
                    ),
                    (
                        "region",
                        array(
                            (0..rows)
                                .map(|i| Value::from(format!("us-east-{}", i % 4)))
                                .collect(),
                        ),
                    ),
                    (
                        "usage_user",
                        array((0..rows).map(|i| Value::F64(i as f64 * 0.5)).collect()),
                    ),
                    (
                        "usage_system",
                        array((0..rows).map(|i| Value::from((i % 1000) as i64)).collect()),
                    ),
                    (
                        "idle",
                        array((0..rows).map(|i| Value::from(i % 2 == 0)).collect()),
                    ),
                ]),
            ),
        ]));
        let started = std::time::Instant::now();
        let writes = decode_msgpack(&body, "db", NOW, None).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(writes[0].batch.num_rows(), rows);
        println!(
            "msgpack columnar: {rows} rows, {} MB in {:?}: {:.2} M rows/s",
            body.len() / 1_000_000,
            elapsed,
            rows as f64 / elapsed.as_secs_f64() / 1e6
        );

        let rows = 200_000usize;
        let body = encode(&map(vec![(
            "batch",
            array(
                (0..rows)
                    .map(|i| {
                        map(vec![
                            ("m", "cpu".into()),
                            ("t", Value::from(1_700_000_000_000i64 + i as i64)),
                            ("h", Value::from(format!("server{:02}", i % 50))),
                            (
                                "tags",
                                map(vec![("region", format!("us-east-{}", i % 4).into())]),
                            ),
                            (
                                "fields",
                                map(vec![
                                    ("usage_user", Value::F64(i as f64 * 0.5)),
                                    ("usage_system", Value::from((i % 1000) as i64)),
                                    ("idle", Value::from(i % 2 == 0)),
                                ]),
                            ),
                        ])
                    })
                    .collect(),
            ),
        )]));
        let started = std::time::Instant::now();
        let writes = decode_msgpack(&body, "db", NOW, None).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(writes[0].batch.num_rows(), rows);
        println!(
            "msgpack rows: {rows} rows, {} MB in {:?}: {:.2} M rows/s",
            body.len() / 1_000_000,
            elapsed,
            rows as f64 / elapsed.as_secs_f64() / 1e6
        );
    }
}
