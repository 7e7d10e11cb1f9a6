//! The decoder as it was before the hand-written parser, on InfluxData's
//! `influxdb-line-protocol` parser: the reference the new parser must match, and the
//! differential tests and benchmark that compare the two. Test-only.
//!
//! The rule (issue 2): use InfluxData's parser, or a faster one only if a benchmark shows it
//! faster and it passes the same cases. This file is where both are shown.

use std::fmt::Display;

use arc_storage::model::ColumnKind;
use influxdb_line_protocol::{
    Error as ParseError, FieldValue as LineValue, ParsedLine, parse_lines, split_lines,
};

use super::super::builder::{FieldValue, RequestBuilder};
use super::super::{IngestError, Precision, TableWrite, shorten};
use super::{LINE_SHAPE, line_number};

/// Decodes a line protocol body into one [`TableWrite`] per measurement, with InfluxData's
/// parser: the decoder as it was before the hand-written parser.
///
/// `precision` is the unit of the timestamps in the body; `now_ns` is the time given to lines
/// without one.
///
/// # Errors
///
/// [`IngestError::Invalid`] naming the first bad line (`line 3: ...`), or the database.
pub(super) fn decode_line_protocol_reference(
    body: &[u8],
    database: &str,
    precision: Precision,
    now_ns: i64,
) -> Result<Vec<TableWrite>, IngestError> {
    let text = std::str::from_utf8(body).map_err(|error| {
        let offset = error.valid_up_to();
        IngestError::Invalid(format!(
            "line {}: invalid utf-8 at byte offset {offset}",
            line_number(body, offset)
        ))
    })?;
    let nanos_per_unit = precision.nanos_per_unit();
    // Fast path: the parser splits the body itself and we keep no line bookkeeping. Any
    // failure, including the `\r` of CRLF bodies that only the slow path strips, falls back
    // to the slow path, which decodes again line by line and names the bad line. Bad bodies
    // are rare; parsing them twice is the price of not splitting every good body twice.
    let mut request = RequestBuilder::new(database, body.len(), None)?;
    let fast = parse_lines(text).try_for_each(|parsed| match parsed {
        Ok(line) => add_parsed_line(&mut request, &line, nanos_per_unit, now_ns).map_err(drop),
        Err(_) => Err(()),
    });
    if fast.is_ok() {
        return request.finish();
    }
    decode_line_by_line(text, database, nanos_per_unit, now_ns)
}

/// Decodes `text` one line at a time, so that an error names its line.
fn decode_line_by_line(
    text: &str,
    database: &str,
    nanos_per_unit: i64,
    now_ns: i64,
) -> Result<Vec<TableWrite>, IngestError> {
    let mut request = RequestBuilder::new(database, text.len(), None)?;
    for raw_line in split_lines(text) {
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        // `None` for blank and comment lines.
        let Some(parsed) = parse_lines(line).next() else {
            continue;
        };
        let located = |message: &dyn Display| {
            // `split_lines` yields slices of `text`, so the pointer difference is the offset.
            let offset = raw_line.as_ptr() as usize - text.as_ptr() as usize;
            IngestError::Invalid(format!(
                "line {}: {message}",
                line_number(text.as_bytes(), offset)
            ))
        };
        let parsed = parsed.map_err(|error| located(&describe_parse_error(&error)))?;
        add_parsed_line(&mut request, &parsed, nanos_per_unit, now_ns)
            .map_err(|error| located(&error))?;
    }
    request.finish()
}

/// Rewords the parser's errors: its messages are capitalized, one is a bare nom error kind,
/// and some echo the rest of the line, which may be megabytes.
fn describe_parse_error(error: &ParseError) -> String {
    match error {
        ParseError::GenericParsingError { .. } | ParseError::FieldSetMissing => {
            format!("missing or malformed fields, expected {LINE_SHAPE}")
        }
        ParseError::MeasurementValueInvalid => {
            format!("missing or malformed measurement, expected {LINE_SHAPE}")
        }
        ParseError::TagSetMalformed => "malformed tag set (tags need a key and a value)".into(),
        ParseError::IntegerValueInvalid { value, .. } => {
            format!("invalid integer value \"{}\"", shorten(value))
        }
        ParseError::UIntegerValueInvalid { value, .. } => {
            format!("invalid unsigned integer value \"{}\"", shorten(value))
        }
        ParseError::FloatValueInvalid { value, .. } => {
            format!("invalid float value \"{}\"", shorten(value))
        }
        ParseError::TimestampValueInvalid { value, .. } => {
            format!("invalid timestamp \"{}\"", shorten(value))
        }
        ParseError::EndsWithBackslash => {
            "measurement, tag keys, tag values and field keys may not end with a backslash".into()
        }
        ParseError::CannotParseEntireLine { trailing_content } => format!(
            "malformed value or unexpected content at \"{}\"",
            shorten(trailing_content)
        ),
        other => shorten(&other.to_string()).into_owned(),
    }
}

/// Appends one parsed line to its table. The error is the message without the line number.
fn add_parsed_line(
    request: &mut RequestBuilder<'_, '_>,
    line: &ParsedLine<'_>,
    nanos_per_unit: i64,
    now_ns: i64,
) -> Result<(), String> {
    let table = request
        .table(line.series.measurement.as_str())
        .map_err(|error| error.to_string())?;
    let time_ns = match line.timestamp {
        None => now_ns,
        Some(timestamp) => timestamp.checked_mul(nanos_per_unit).ok_or_else(|| {
            format!("timestamp {timestamp} overflows the nanosecond range at this precision")
        })?,
    };
    let row = table.push_row(time_ns).map_err(|error| error.to_string())?;
    let tags = line.series.tag_set.as_deref().unwrap_or_default();
    for (slot, (key, value)) in tags.iter().enumerate() {
        let column = table
            .column(Some(slot), key, ColumnKind::Tag)
            .map_err(|error| error.to_string())?;
        table
            .append_tag(column, row, value)
            .map_err(|error| error.to_string())?;
    }
    for (position, (key, value)) in line.field_set.iter().enumerate() {
        let value = match value {
            LineValue::F64(v) if !v.is_finite() => {
                return Err(format!(
                    "field \"{}\": float value out of range",
                    shorten(key)
                ));
            }
            LineValue::F64(v) => FieldValue::Float(*v),
            LineValue::I64(v) => FieldValue::Integer(*v),
            LineValue::U64(v) => FieldValue::UInteger(*v),
            LineValue::Boolean(v) => FieldValue::Boolean(*v),
            LineValue::String(v) => FieldValue::String(v),
        };
        // Arc's rule: a field may share its name with a tag of its line; it is stored as
        // `<name>_value` so that both survive.
        let renamed;
        let name: &str = if tags.iter().any(|(tag, _)| tag.as_str() == key.as_str()) {
            renamed = format!("{}_value", key.as_str());
            &renamed
        } else {
            key
        };
        let column = table
            .column(
                Some(tags.len() + position),
                name,
                ColumnKind::Field(value.field_type()),
            )
            .map_err(|error| error.to_string())?;
        table
            .append_field(column, row, value, false)
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::super::decode_line_protocol;
    use super::super::parser::{Line, Lines};
    use super::*;

    const NOW: i64 = 1_700_000_000_123_456_789;

    const PRECISIONS: [Precision; 4] = [Precision::Ns, Precision::Us, Precision::Ms, Precision::S];

    /// Decodes `body` with both decoders and asserts the same outcome: the same tables and
    /// batches (Arrow's equality compares values bit for bit, so `-0.0` is not `0.0`), or the
    /// same error message, line number included. Returns whether the body was accepted.
    fn assert_same(body: &[u8], precision: Precision) -> bool {
        let ours = decode_line_protocol(body, "db", precision, NOW, None);
        let reference = decode_line_protocol_reference(body, "db", precision, NOW);
        let shown = String::from_utf8_lossy(body);
        match (&ours, &reference) {
            (Ok(ours), Ok(reference)) => {
                assert_eq!(ours.len(), reference.len(), "tables of {shown:?}");
                for (ours, reference) in ours.iter().zip(reference) {
                    assert_eq!(ours.table, reference.table, "{shown:?}");
                    assert_eq!(ours.batch, reference.batch, "batch of {shown:?}");
                }
                true
            }
            (Err(ours), Err(reference)) => {
                assert_eq!(ours, reference, "errors for {shown:?}");
                false
            }
            _ => panic!(
                "decoders disagree on {shown:?} at {precision}:\n  ours:      {ours:?}\n  \
                 reference: {reference:?}"
            ),
        }
    }

    // ---- Generated line protocol ----------------------------------------------------------

    /// Escapes a measurement (`,`, space and backslash) or, with `equals`, a tag key, tag
    /// value or field key (also `=`).
    fn escape(text: &str, equals: bool) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if matches!(c, ',' | ' ' | '\\') || (equals && c == '=') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    /// Characters that need escaping or could confuse the splitter, plus multi-byte ones.
    const TRICKY: &str = "[a-z ,=\"\\\\\t\n\r#é😀]";

    /// A measurement: mostly valid names, sometimes escaped or raw text the name check or the
    /// parser refuses.
    fn measurement() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => "(cpu|mem|disk)",
            2 => "[a-zA-Z][a-zA-Z0-9_-]{0,6}",
            1 => proptest::string::string_regex(&format!("{TRICKY}{{1,4}}"))
                .expect("valid regex")
                .prop_map(|text| escape(&text, false)),
            1 => proptest::string::string_regex(&format!("[a-z]{TRICKY}{{0,3}}"))
                .expect("valid regex"),
        ]
    }

    /// A tag key, tag value or field key: mostly plain names (some shared with the other
    /// kind, and `time`), sometimes escaped tricky text, sometimes raw tricky text.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => "(host|region|dc|usage|a|b|c|v|x y|time|host_value)"
                .prop_map(|text| escape(&text, true)),
            3 => proptest::string::string_regex(&format!("{TRICKY}{{1,5}}"))
                .expect("valid regex")
                .prop_map(|text| escape(&text, true)),
            1 => proptest::string::string_regex(&format!("[a-z]{TRICKY}{{0,3}}"))
                .expect("valid regex"),
        ]
    }

    /// Escapes a string field value: `"` and `\`.
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

    /// A field value as text: every type in the spellings the reference accepts, and near
    /// misses it refuses.
    fn field_value() -> impl Strategy<Value = String> {
        prop_oneof![
            // Floats as Rust prints them, in exponent forms, and as arbitrary digit strings.
            3 => any::<f64>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(|v| v.to_string()),
            1 => any::<f64>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(|v| format!("{v:e}")),
            1 => any::<f64>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(|v| format!("{v:E}")),
            3 => "-?[0-9]{1,4}(\\.[0-9]{1,4})?",
            2 => "-?[0-9]{1,22}(\\.[0-9]{0,22})?([eE][-+]?[0-9]{0,5})?",
            1 => "(1e400|-1e400|1e-400|0e999999|-0|-0.0|1.|\\.5|\\+1|1\\.e5|1e|1e\\+|--1|nan|inf)",
            // Integers, with their range edges and beyond.
            3 => any::<i64>().prop_map(|v| format!("{v}i")),
            1 => "-?[0-9]{17,21}i",
            2 => any::<u64>().prop_map(|v| format!("{v}u")),
            1 => "-?[0-9]{18,21}u",
            // Booleans, and prefixes of them.
            2 => "(t|T|true|True|TRUE|f|F|false|False|FALSE|tru|TRue|fals|truex|T1)",
            // Strings, escaped, and raw with stray quotes and backslashes.
            3 => proptest::string::string_regex(&format!("{TRICKY}{{0,8}}"))
                .expect("valid regex")
                .prop_map(|text| format!("\"{}\"", escape_string(&text))),
            1 => proptest::string::string_regex("\"[a-z ,=\"\\\\\n]{0,6}\"?")
                .expect("valid regex"),
        ]
    }

    /// A timestamp with the spaces before it, or nothing.
    fn timestamp() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => Just(String::new()),
            3 => any::<i64>().prop_map(|v| format!(" {v}")),
            3 => (0i64..10_000_000_000).prop_map(|v| format!(" {v}")),
            1 => "( |  )-?[0-9]{1,21}( |  )?",
            1 => "( |\t)[a-z0-9+-]{0,3}",
        ]
    }

    /// One data line, mostly well formed.
    fn data_line() -> impl Strategy<Value = String> {
        (
            measurement(),
            proptest::collection::vec((key(), key()), 0..4),
            prop_oneof![8 => Just(" "), 1 => Just("  "), 1 => Just("\t")],
            proptest::collection::vec((key(), field_value()), 1..5),
            prop_oneof![12 => Just(""), 1 => Just(","), 1 => Just(",,")],
            timestamp(),
            prop_oneof![10 => Just(""), 1 => Just(" "), 1 => Just("\\")],
        )
            .prop_map(
                |(measurement, tags, separator, fields, trailing_comma, timestamp, end)| {
                    let mut line = measurement;
                    for (key, value) in tags {
                        line.push_str(&format!(",{key}={value}"));
                    }
                    line.push_str(separator);
                    let fields: Vec<String> = fields
                        .into_iter()
                        .map(|(key, value)| format!("{key}={value}"))
                        .collect();
                    line.push_str(&fields.join(","));
                    line.push_str(trailing_comma);
                    line.push_str(&timestamp);
                    line.push_str(end);
                    line
                },
            )
    }

    /// A line of any kind: data (possibly indented), blank, or comment.
    fn any_line() -> impl Strategy<Value = String> {
        prop_oneof![
            12 => data_line(),
            1 => ("( |\t|  )", data_line()).prop_map(|(indent, line)| format!("{indent}{line}")),
            1 => "( |\t)*",
            1 => proptest::string::string_regex("( |\t)*#[a-z =,]{0,10}")
                .expect("valid regex"),
            1 => proptest::string::string_regex(&format!("#{TRICKY}{{0,8}}"))
                .expect("valid regex"),
        ]
    }

    /// Text for a clean key or tag value: escaped tricky characters, never a raw tab or
    /// newline (they cannot be escaped), never empty or ending in a backslash once unescaped.
    fn clean_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-z ,=\"\\\\\r#é😀]{0,5}[a-z ,=\"é]")
            .expect("valid regex")
            .prop_map(|text| escape(&text, true))
    }

    /// A clean field value of type `kind` (0 float, 1 integer, 2 unsigned, 3 boolean,
    /// 4 string): every accepted spelling, nothing refused.
    fn clean_value(kind: u8) -> BoxedStrategy<String> {
        match kind {
            0 => prop_oneof![
                any::<f64>()
                    .prop_filter("finite", |v| v.is_finite())
                    .prop_map(|v| v.to_string()),
                any::<f64>()
                    .prop_filter("finite", |v| v.is_finite())
                    .prop_map(|v| format!("{v:e}")),
                "-?[0-9]{1,20}(\\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?",
            ]
            .boxed(),
            1 => any::<i64>().prop_map(|v| format!("{v}i")).boxed(),
            2 => any::<u64>().prop_map(|v| format!("{v}u")).boxed(),
            3 => "(t|T|true|True|TRUE|f|F|false|False|FALSE)".boxed(),
            _ => proptest::string::string_regex("[a-z ,=\"\\\\\n\r\t#é😀]{0,8}")
                .expect("valid regex")
                .prop_map(|text| format!("\"{}\"", escape_string(&text)))
                .boxed(),
        }
    }

    /// One valid data line: unique tag keys, and field keys whose suffix fixes their type, so
    /// that lines of one measurement never conflict. Sometimes indented.
    fn clean_line() -> impl Strategy<Value = String> {
        let field = (clean_text(), 0..5u8)
            .prop_flat_map(|(key, kind)| (Just(format!("{key}_{kind}")), clean_value(kind)));
        (
            prop_oneof![3 => Just(""), 1 => Just("  "), 1 => Just("\t")],
            "(cpu|mem|disk|[a-zA-Z][a-zA-Z0-9_-]{0,6})",
            proptest::collection::btree_map(clean_text(), clean_text(), 0..4),
            proptest::collection::vec(field, 1..5),
            prop_oneof![
                Just(String::new()),
                (-9_000_000_000i64..9_000_000_000).prop_map(|v| format!(" {v}")),
            ],
        )
            .prop_map(|(indent, measurement, tags, fields, timestamp)| {
                let mut line = format!("{indent}{measurement}");
                for (key, value) in tags {
                    line.push_str(&format!(",{key}_tag={value}"));
                }
                let mut seen = std::collections::BTreeSet::new();
                let mut separator = ' ';
                for (key, value) in fields {
                    if seen.insert(key.clone()) {
                        line.push_str(&format!("{separator}{key}={value}"));
                        separator = ',';
                    }
                }
                line.push_str(&timestamp);
                line
            })
    }

    /// A valid body: data lines, blank lines and comments.
    fn clean_body() -> impl Strategy<Value = String> {
        let line = prop_oneof![
            8 => clean_line(),
            1 => "( |\t)*",
            1 => "( |\t)*#[a-z =,]{0,10}",
        ];
        lines_to_body(proptest::collection::vec(line, 1..8))
    }

    /// A body of any lines, mostly slightly off.
    fn tricky_body() -> impl Strategy<Value = String> {
        lines_to_body(proptest::collection::vec(any_line(), 1..8))
    }

    /// A body of either kind.
    fn body() -> impl Strategy<Value = String> {
        prop_oneof![clean_body(), tricky_body()]
    }

    /// Joins lines by LF or CRLF, with or without a final line end.
    fn lines_to_body(lines: impl Strategy<Value = Vec<String>>) -> impl Strategy<Value = String> {
        lines
            .prop_flat_map(|lines| {
                let count = lines.len();
                (
                    Just(lines),
                    proptest::collection::vec(
                        prop_oneof![4 => Just("\n"), 1 => Just("\r\n")],
                        count,
                    ),
                )
            })
            .prop_map(|(lines, ends)| lines.into_iter().zip(ends).collect::<Vec<_>>())
            .prop_flat_map(|lines| {
                let mut body = String::new();
                for (line, end) in &lines {
                    body.push_str(line);
                    body.push_str(end);
                }
                let unterminated = body.trim_end_matches(['\r', '\n']).to_string();
                prop_oneof![Just(body), Just(unterminated)]
            })
    }

    fn precision() -> impl Strategy<Value = Precision> {
        proptest::sample::select(PRECISIONS.to_vec())
    }

    /// Bytes that matter to the grammar, for random and mutated bodies.
    const GRAMMAR_BYTES: &[u8] = b"m,=v \"\\\n\r\t#-.019eEiutfTF\0";

    fn interesting_byte() -> impl Strategy<Value = u8> {
        prop_oneof![4 => proptest::sample::select(GRAMMAR_BYTES.to_vec()), 1 => any::<u8>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn test_should_decode_generated_bodies_exactly_as_the_reference(
            body in body(),
            precision in precision(),
        ) {
            assert_same(body.as_bytes(), precision);
        }

        #[test]
        fn test_should_agree_with_the_reference_on_arbitrary_bytes(
            body in proptest::collection::vec(interesting_byte(), 0..120),
            precision in precision(),
        ) {
            assert_same(&body, precision);
        }

        #[test]
        fn test_should_agree_with_the_reference_on_mutated_bodies(
            body in clean_body(),
            mutations in proptest::collection::vec(
                (any::<proptest::sample::Index>(), 0..3u8, interesting_byte()),
                1..4,
            ),
            precision in precision(),
        ) {
            let mut body = body.into_bytes();
            for (index, operation, byte) in mutations {
                let at = index.index(body.len() + 1);
                match operation {
                    0 => body.insert(at, byte),
                    1 if at < body.len() => body[at] = byte,
                    _ if at < body.len() => {
                        body.remove(at);
                    }
                    _ => body.push(byte),
                }
            }
            assert_same(&body, precision);
        }
    }

    /// The generated bodies must exercise both outcomes, or the differential test proves
    /// little: sample a fixed set and count.
    #[test]
    fn test_should_generate_both_good_and_bad_bodies() {
        let mut runner = TestRunner::deterministic();
        let strategy = (body(), precision());
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3_000 {
            let (body, precision) = strategy
                .new_tree(&mut runner)
                .expect("the strategy generates")
                .current();
            if assert_same(body.as_bytes(), precision) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        println!("{accepted} accepted, {refused} refused");
        assert!(
            accepted > 900 && refused > 900,
            "{accepted} accepted, {refused} refused"
        );
    }

    /// What a tricky case must do in both decoders.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Outcome {
        Accept,
        Reject,
    }

    use Outcome::{Accept, Reject};

    /// Edge cases, named one by one, with the outcome both decoders give. Several are quirks
    /// of the reference that the parser reproduces on purpose (see `parser`'s module doc).
    const TRICKY_CASES: &[(&str, &str, Outcome)] = &[
        (
            "every field type",
            "m,h=a f=1.5,i=-2i,u=3u,b=t,s=\"x\" 1",
            Accept,
        ),
        ("no timestamp", "m v=1", Accept),
        ("crlf line ends", "m v=1 1\r\nm v=2 2\r\n", Accept),
        (
            "crlf without a final line end",
            "m v=1 1\r\nm v=2\r",
            Accept,
        ),
        ("a blank crlf line", "m v=1\n\r\nm v=2", Accept),
        ("two carriage returns", "m v=1\r\r\n", Reject),
        ("blank and whitespace lines", "\n  \n\t\nm v=1\n\n", Accept),
        (
            "comment lines",
            "# c\n  # indented\nm v=1 # not a comment",
            Reject,
        ),
        ("comment then data", "# c v=1\nm v=1", Accept),
        (
            "comment with an open quote swallows the next line",
            "# a=\"x\nm v=1\nm v=2",
            Reject,
        ),
        ("comment with an escaped newline", "# a\\\nm v=1", Accept),
        ("leading spaces", "   m,h=a v=1 1", Accept),
        (
            "leading spaces and a quote in a tag value",
            "  m,a=\"x v=1",
            Accept,
        ),
        ("two spaces before the fields", "m  v=1", Accept),
        ("a tab before the fields", "m\tv=1", Reject),
        (
            "a space after the last field without timestamp",
            "m v=1 ",
            Reject,
        ),
        ("spaces after the timestamp", "m v=1 5  ", Accept),
        ("two spaces before the timestamp", "m v=1  5", Accept),
        ("a tab before the timestamp", "m v=1\t5", Reject),
        ("timestamp with leading zeros", "m v=1 007", Accept),
        ("timestamp with a plus", "m v=1 +5", Reject),
        ("negative timestamp", "m v=1 -5", Accept),
        ("timestamp beyond i64", "m v=1 9223372036854775808", Reject),
        ("lowest timestamp", "m v=1 -9223372036854775808", Accept),
        ("timestamp then junk", "m v=1 5x", Reject),
        ("one trailing comma after one field", "m v=1,", Accept),
        ("one trailing comma then a timestamp", "m v=1, 5", Accept),
        ("a trailing comma after two fields", "m v=1,w=2,", Reject),
        ("two trailing commas", "m v=1,,", Reject),
        (
            "an empty field between commas is a key with a comma",
            "m v=1,,w=2",
            Accept,
        ),
        ("unescaped comma in a tag key", "m,a,b=1 v=1", Accept),
        ("unescaped comma in a field key", "m a,b=1", Accept),
        ("unescaped equals in a tag value", "m,a=b=c v=1", Accept),
        ("comma without tags", "m, v=1", Reject),
        ("a trailing comma after tags", "m,a=1, v=1", Reject),
        ("tag without value", "m,a= v=1", Reject),
        ("tag without equals", "m,a v=1", Reject),
        (
            "escaped comma space and equals",
            "m,a\\,b\\ c\\=d=e\\,f\\ g\\=h k\\,l\\ m\\=n=1",
            Accept,
        ),
        (
            "escaped backslash inside a tag value",
            "m,a=x\\\\y v=1",
            Accept,
        ),
        (
            "escaped backslash ending a tag value",
            "m,a=x\\\\ v=1",
            Reject,
        ),
        ("backslash ending the line", "m v=1 1\\", Reject),
        ("backslash ending a field key", "m a\\", Reject),
        ("unknown escape is kept", "m,a=x\\y v=1", Accept),
        ("escaped multi-byte character", "m,a=\\é\\😀 v=1", Accept),
        ("escaped newline in a tag value", "m,a=x\\\ny v=1", Accept),
        ("escaped tab in a field key", "m a\\\tb=1", Accept),
        (
            "escaped equals is not an escape in a measurement",
            "m\\=x v=1",
            Reject,
        ),
        ("escaped space in a measurement", "c\\ pu v=1", Reject),
        ("NUL in a measurement", "m\0 v=1", Reject),
        ("NUL in a tag value", "m,a=\0 v=1", Accept),
        ("quote in a field key", "m a\"b=1", Accept),
        (
            "quote in a tag value then a string field",
            "m,a=\"x s=\"y\"",
            Accept,
        ),
        (
            "newline inside a string field",
            "m s=\"a\nb\" 1\nm v=2",
            Accept,
        ),
        ("crlf inside a string field", "m s=\"a\r\nb\"\r\n", Accept),
        (
            "newline inside a string after a comma key",
            "m a,b=\"x\ny\"",
            Reject,
        ),
        (
            "comma key then a string without newline",
            "m a,b=\"x y\" 5",
            Accept,
        ),
        (
            "escaped quote and backslash in a string",
            "m s=\"a\\\"b\\\\c\"",
            Accept,
        ),
        (
            "other backslashes in a string are literal",
            "m s=\"a\\nb\\\"",
            Reject,
        ),
        (
            "backslash before the closing quote",
            "m s=\"a\\\\\"",
            Accept,
        ),
        ("empty string", "m s=\"\"", Accept),
        ("unterminated string", "m s=\"abc", Reject),
        ("string then junk", "m s=\"a\"b", Reject),
        (
            "every boolean spelling",
            "m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE",
            Accept,
        ),
        ("boolean prefix", "m v=tru", Reject),
        ("boolean in mixed case", "m v=TRue", Reject),
        (
            "float forms",
            "m a=1e5,b=1.5E-3,c=-0,d=1E+2,e=-1.5e-0,f=007.50",
            Accept,
        ),
        ("float with a dot and no digits", "m v=1.", Reject),
        ("float without integer digits", "m v=.5", Reject),
        ("float with a plus", "m v=+1", Reject),
        ("exponent after a bare dot", "m v=1.e5", Reject),
        ("exponent without digits", "m v=1e", Reject),
        (
            "float with many digits",
            "m v=123456789012345678901234567890.123456789012345678901",
            Accept,
        ),
        ("float too large", "m v=1e400", Reject),
        ("float too small is zero", "m v=1e-400", Accept),
        ("nan and inf are not numbers", "m v=nan", Reject),
        (
            "integer edges",
            "m a=-9223372036854775808i,b=9223372036854775807i,c=18446744073709551615u",
            Accept,
        ),
        ("integer overflow", "m v=9223372036854775808i", Reject),
        ("unsigned overflow", "m v=18446744073709551616u", Reject),
        ("negative unsigned", "m v=-1u", Reject),
        ("float with an integer suffix", "m v=1.5i", Reject),
        ("field named like a tag", "m,host=a host=1i", Accept),
        ("renamed field collides", "m,h=1 h=1,h_value=2", Reject),
        ("tag named time", "m,time=1 v=1", Reject),
        ("repeated field", "m v=1,v=2", Reject),
        ("repeated tag", "m,a=1,a=2 v=1", Reject),
        ("type conflict across lines", "m v=1\nm v=1i", Reject),
        ("measurement only", "m", Reject),
        ("no measurement", " v=1", Reject),
        ("starts with a comma", ",a=1 v=1", Reject),
        ("invalid measurement name", "1m v=1", Reject),
    ];

    #[test]
    fn test_should_decode_tricky_cases_as_the_reference() {
        for (name, body, expected) in TRICKY_CASES {
            let accepted = assert_same(body.as_bytes(), Precision::Ns);
            let outcome = if accepted { Accept } else { Reject };
            assert_eq!(outcome, *expected, "{name}: {body:?}");
            for precision in [Precision::Us, Precision::Ms, Precision::S] {
                assert_same(body.as_bytes(), precision);
            }
        }
    }

    #[test]
    fn test_should_read_quirky_keys_and_values_as_the_reference() {
        // Beyond accept/reject: the values of a few quirks, spelled out.
        let writes = decode_line_protocol(
            b"m,a,b=x\\y,c=d=e f,g=1,s=\"p\\nq\" 5",
            "db",
            Precision::Ns,
            NOW,
            None,
        )
        .unwrap();
        let batch = &writes[0].batch;
        assert_eq!(
            crate::ingest::test_support::column_names(batch),
            ["time", "a,b", "c", "f,g", "s"]
        );
        let column = |name: &str| {
            arrow::array::AsArray::as_string::<i32>(batch.column_by_name(name).unwrap())
                .value(0)
                .to_string()
        };
        assert_eq!(column("a,b"), "x\\y");
        assert_eq!(column("c"), "d=e");
        assert_eq!(column("s"), "p\\nq");
        let zero = decode_line_protocol(b"m v=-0", "db", Precision::Ns, NOW, None).unwrap();
        let value = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(
            zero[0].batch.column(1),
        )
        .value(0);
        assert!(value == 0.0 && value.is_sign_negative());
    }

    // ---- Benchmark ------------------------------------------------------------------------

    /// A deterministic pseudo-random sequence (an LCG), so bodies are the same on every run.
    struct Sequence(u64);

    impl Sequence {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % below
        }

        /// A percentage with two decimals, as monitoring agents write them.
        fn percent(&mut self) -> String {
            format!("{}.{:02}", self.next(100), self.next(100))
        }
    }

    /// `lines` lines of a telegraf-like `cpu` measurement: 3 tags, 3 floats, an integer and a
    /// string, increasing timestamps.
    fn mixed_body(lines: usize) -> String {
        let mut sequence = Sequence(42);
        let mut body = String::new();
        for line in 0..lines {
            body.push_str(&format!(
                "cpu,host=server-{:03},region=eu-west-{},dc=fra{} usage_user={},usage_system={},\
                 usage_idle={},count={}i,status=\"{}\" {}\n",
                sequence.next(100),
                sequence.next(3),
                sequence.next(4),
                sequence.percent(),
                sequence.percent(),
                sequence.percent(),
                sequence.next(1_000),
                ["ok", "degraded", "down"][sequence.next(3) as usize],
                1_785_542_400_000_000_000i64 + line as i64 * 10_000_000,
            ));
        }
        body
    }

    /// `lines` lines of 3 tags and 10 float fields.
    fn float_body(lines: usize) -> String {
        let mut sequence = Sequence(7);
        let mut body = String::new();
        for line in 0..lines {
            body.push_str(&format!(
                "sensors,host=server-{:03},region=eu-west-{},dc=fra{}",
                sequence.next(100),
                sequence.next(3),
                sequence.next(4)
            ));
            for field in 0..10 {
                let separator = if field == 0 { ' ' } else { ',' };
                body.push_str(&format!("{separator}f{field}={}", sequence.percent()));
            }
            body.push_str(&format!(
                " {}\n",
                1_785_542_400_000_000_000i64 + line as i64 * 10_000_000
            ));
        }
        body
    }

    /// Runs `decode` on `body` repeatedly for about `budget` and returns rows per second.
    fn rows_per_second(
        body: &str,
        rows: usize,
        budget: Duration,
        decode: &dyn Fn(&[u8]) -> usize,
    ) -> f64 {
        // Warm up (allocator, caches) and check the row count.
        assert_eq!(decode(body.as_bytes()), rows);
        let started = Instant::now();
        let mut runs = 0u32;
        while started.elapsed() < budget {
            std::hint::black_box(decode(std::hint::black_box(body.as_bytes())));
            runs += 1;
        }
        f64::from(runs) * rows as f64 / started.elapsed().as_secs_f64()
    }

    #[test]
    #[ignore = "benchmark: cargo test --release -- --ignored --nocapture bench_line_protocol"]
    fn bench_line_protocol_against_the_reference() {
        const LINES: usize = 5_000;
        let budget = Duration::from_secs(3);
        let rows_of = |writes: Result<Vec<TableWrite>, IngestError>| {
            writes
                .expect("the benchmark body is valid")
                .iter()
                .map(|write| write.batch.num_rows())
                .sum::<usize>()
        };
        for (name, body) in [
            ("3 tags, 3 floats, int, string", mixed_body(LINES)),
            ("3 tags, 10 floats", float_body(LINES)),
        ] {
            let reference = rows_per_second(&body, LINES, budget, &|body| {
                rows_of(decode_line_protocol_reference(
                    body,
                    "db",
                    Precision::Ns,
                    NOW,
                ))
            });
            let ours = rows_per_second(&body, LINES, budget, &|body| {
                rows_of(decode_line_protocol(body, "db", Precision::Ns, NOW, None))
            });
            // Lenient decoding checks each line before writing it.
            let lenient = rows_per_second(&body, LINES, budget, &|body| {
                rows_of(
                    super::super::decode_line_protocol_lenient(
                        body,
                        "db",
                        Precision::Ns,
                        NOW,
                        None,
                        &|_| None,
                    )
                    .map(|(writes, _)| writes),
                )
            });
            // The parser alone, without building Arrow columns.
            let parse_only = rows_per_second(&body, LINES, budget, &|body| {
                let text = std::str::from_utf8(body).expect("utf-8");
                let mut lines = Lines::new(text);
                let mut line = Line::default();
                let mut count = 0;
                while let Some(step) = lines.next_line(&mut line) {
                    step.expect("valid line");
                    count += 1;
                }
                count
            });
            println!(
                "{name}: {} bytes/line; reference {:.2} M rows/s, hand-written {:.2} M rows/s \
                 ({:.1}x, {:.0} MB/s), lenient {:.2} M rows/s, parse only {:.2} M rows/s",
                body.len() / LINES,
                reference / 1e6,
                ours / 1e6,
                ours / reference,
                ours * (body.len() / LINES) as f64 / 1e6,
                lenient / 1e6,
                parse_only / 1e6,
            );
        }
    }
}
