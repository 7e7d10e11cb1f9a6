//! A hand-written, zero-copy line protocol parser that accepts and rejects exactly what
//! InfluxData's `influxdb-line-protocol` 2.0 parser does, at several times its speed.
//!
//! It owns the grammar and line splitting only: [`Lines`] walks a body and fills a reusable
//! [`Line`] per data line, with measurement, keys and string values borrowed from the body
//! unless escapes force a copy. What a line means (tables, columns, types) is the decoder's.
//!
//! # Matching the reference
//!
//! The reference is a `nom` parser whose backtracking decides some edge cases, so the functions
//! here mirror its combinators one for one, and each place where nom recovers from a
//! recoverable error (`Fault::Soft`) is marked. The quirks this reproduces on purpose, pinned by
//! the differential tests in `reference.rs`:
//!
//! - Tag and field keys may hold unescaped commas (`m,a,b=1 c,d=2` has tag `a,b`, field `c,d`);
//!   tag values and measurements may hold unescaped `=`; only measurements refuse a NUL byte.
//! - A backslash before a character that needs no escape is kept with it (`a\b` stays
//!   `a\b`, `a\<newline>b` keeps both); a token whose *unescaped* text ends in a backslash
//!   (`a\` or `a\\`) is an error.
//! - One trailing comma after a single field is accepted (`m v=1,` and `m v=1, 5`), after two
//!   or more it is not. A space after the last field without a timestamp is an error; spaces
//!   after a timestamp are not.
//! - Booleans match by prefix and the rest is then trailing content, which is an error.
//! - Comments are split like data lines, so a quote in one can carry it past its newline; the
//!   reference then parses what follows that newline as the rest of the comment's line, which
//!   usually refuses the request (`# a="b` followed by data lines).
//!
//! # Splitting lines
//!
//! The reference splits a body into lines before parsing (a port of Go's `scanLine`): a newline
//! ends a line unless it is escaped or inside what the splitter believes is a quoted string,
//! which it decides by counting `=` and `,` after the first space. Running that splitter over
//! every byte would cost as much as parsing, so [`Lines`] parses straight through the body
//! ("greedy") and only runs the splitter ("exact") when the line could split differently:
//! when it had leading spaces (they turn the splitter's field counting on early), a field key
//! with an unescaped comma (it unbalances the counts), a comment with a quote or backslash, or
//! when the greedy parse fails or does not end at a line end. Otherwise the splitter's quote
//! state follows the parser's string fields (argued at `Lines::greedy`), so both end the line
//! at the same newline; the differential tests check that claim on generated bodies full of
//! quotes, commas, escapes and newlines. Errors always come from the exact path, so their
//! messages are the reference's.
//!
//! Hazards: input is untrusted. Nothing here recurses, indexes without a check, or allocates
//! more than the escaped tokens of one line; slices are cut only next to ASCII bytes, so they
//! always fall on character boundaries of the (already validated) UTF-8 text.

use std::borrow::Cow;

/// A field value as written in the line; strings are unescaped.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value<'a> {
    /// A float (no suffix).
    Float(f64),
    /// A signed integer (`i` suffix).
    Integer(i64),
    /// An unsigned integer (`u` suffix).
    UInteger(u64),
    /// A boolean.
    Boolean(bool),
    /// A quoted string.
    String(Cow<'a, str>),
}

/// One parsed data line. Reused across lines so that its vectors keep their capacity.
#[derive(Debug, Default)]
pub(super) struct Line<'a> {
    /// The measurement, unescaped.
    pub(super) measurement: Cow<'a, str>,
    /// Tag keys and values in line order, unescaped.
    pub(super) tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Field keys (unescaped) and values in line order.
    pub(super) fields: Vec<(Cow<'a, str>, Value<'a>)>,
    /// The timestamp as written, in the request's precision.
    pub(super) timestamp: Option<i64>,
}

/// Why a line is not line protocol. One variant per message of the reference's errors (its
/// generic nom error and `FieldSetMissing` read the same, so they are one here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LineError<'a> {
    /// No measurement at the start of the line.
    Measurement,
    /// A comma after the measurement without a `key=value` tag.
    TagSet,
    /// No field set where one must start, or its first field is malformed.
    Fields,
    /// An `i` integer out of `i64` range (the digits as written).
    Integer(&'a str),
    /// A `u` integer out of `u64` range.
    UInteger(&'a str),
    /// A float the standard library refuses (the grammar makes this unreachable; kept so that
    /// a refusal is an error, not a panic).
    Float(&'a str),
    /// A timestamp out of `i64` range.
    Timestamp(&'a str),
    /// A measurement, tag key, tag value or field key whose unescaped text ends in `\`.
    EndsWithBackslash,
    /// The line goes on after a complete line (the rest of the line).
    Trailing(&'a str),
}

/// How a grammar rule failed, as nom distinguishes it: a `Soft` failure lets an enclosing
/// rule try something else (nom's `Err::Error`); a `Hard` one fails the line (`Err::Failure`).
#[derive(Debug)]
enum Fault<'a> {
    Soft,
    Hard(LineError<'a>),
}

// Byte classes: which bytes a token takes without an escape. Bit set = ordinary byte.
/// Measurement: all but space, tab, newline, NUL, comma and backslash.
const MEASUREMENT: u8 = 1;
/// Tag key: all but space, tab, newline, `=` and backslash (commas included).
const KEY: u8 = 2;
/// Field key: as a tag key, but a comma, though ordinary, must be noticed (see the module
/// doc), so the fast scan stops at it.
const FIELD_KEY: u8 = 4;
/// Tag value: all but space, tab, newline, comma and backslash (`=` included).
const TAG_VALUE: u8 = 8;

/// The byte classes, indexed by byte. Bytes from 0x80 (UTF-8 sequences) are ordinary
/// everywhere, which is what lets the parser work on bytes.
const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut index = 0;
    while index < 256 {
        let byte = index as u8;
        let boundary = matches!(byte, b' ' | b'\t' | b'\n' | b'\\');
        let mut class = 0;
        if !boundary && byte != 0 && byte != b',' {
            class |= MEASUREMENT;
        }
        if !boundary && byte != b'=' {
            class |= KEY;
            if byte != b',' {
                class |= FIELD_KEY;
            }
        }
        if !boundary && byte != b',' {
            class |= TAG_VALUE;
        }
        table[index] = class;
        index += 1;
    }
    table
};

/// Returns whether `\` followed by `byte` is an escape (the backslash is dropped) in a token of
/// `class`. Measurements do not escape `=`.
#[inline]
fn is_escapable(class: u8, byte: u8) -> bool {
    match byte {
        b',' | b' ' | b'\\' => true,
        b'=' => class != MEASUREMENT,
        _ => false,
    }
}

/// Largest integer every `f64` up to which is exact: the Clinger fast path's mantissa bound.
const MAX_EXACT_MANTISSA: u64 = 1 << 53;

/// Powers of ten that are exact in an `f64`.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The result of parsing one line from its first byte.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    /// Where the parse stopped: the end of the line if the line is good.
    stop: usize,
    /// Whether a field key held an unescaped comma (see the module doc).
    comma_in_field_key: bool,
}

/// A parse of one line, over `bytes[..limit]` of the body.
struct Scanner<'a> {
    /// The whole body.
    text: &'a str,
    /// The body's bytes up to the parse limit (the end of the body, or of an exact line).
    bytes: &'a [u8],
    /// Set by a field key that holds an unescaped comma.
    comma_in_field_key: bool,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn byte(&self, pos: usize) -> Option<u8> {
        self.bytes.get(pos).copied()
    }

    /// Returns `text[start..end]`. Callers cut only next to ASCII bytes or at the body's end.
    #[inline]
    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.text
            .get(start..end)
            .expect("tokens are cut next to ASCII bytes, which are character boundaries")
    }

    /// Returns the position after the spaces from `pos` (tabs are not separators).
    #[inline]
    fn spaces(&self, mut pos: usize) -> usize {
        while self.byte(pos) == Some(b' ') {
            pos += 1;
        }
        pos
    }

    /// Parses a line from `start` into `out` (the reference's `parse_line`).
    fn line(&mut self, start: usize, out: &mut Line<'a>) -> Result<Parsed, LineError<'a>> {
        out.tags.clear();
        out.fields.clear();
        out.timestamp = None;
        let (measurement, mut pos) = match self.escaped::<MEASUREMENT>(start) {
            Ok(token) => token,
            Err(Fault::Soft) => return Err(LineError::Measurement),
            Err(Fault::Hard(error)) => return Err(error),
        };
        out.measurement = measurement;
        if self.byte(pos) == Some(b',') {
            pos = self.tag_set(pos + 1, out)?;
        }
        let fields_start = self.spaces(pos);
        if fields_start == pos {
            return Err(LineError::Fields);
        }
        pos = self.field_set(fields_start, out)?;
        // The timestamp is optional: a soft failure leaves `pos` before its spaces, so that
        // spaces without a timestamp remain as trailing content.
        let timestamp_start = self.spaces(pos);
        if timestamp_start > pos
            && let Some(integer) = self.integer(timestamp_start)
        {
            let text = self.slice(timestamp_start, integer.end);
            let timestamp = integer.to_i64(text).ok_or(LineError::Timestamp(text))?;
            out.timestamp = Some(timestamp);
            pos = self.spaces(integer.end);
        }
        Ok(Parsed {
            stop: pos,
            comma_in_field_key: self.comma_in_field_key,
        })
    }

    /// Parses the tags after the measurement's comma; returns where they end.
    fn tag_set(&mut self, start: usize, out: &mut Line<'a>) -> Result<usize, LineError<'a>> {
        let mut pos = match self.tag(start, out) {
            Ok(end) => end,
            Err(Fault::Soft) => return Err(LineError::TagSet),
            Err(Fault::Hard(error)) => return Err(error),
        };
        while self.byte(pos) == Some(b',') {
            match self.tag(pos + 1, out) {
                Ok(end) => pos = end,
                // nom's separated list stops before the comma; what follows then fails.
                Err(Fault::Soft) => break,
                Err(Fault::Hard(error)) => return Err(error),
            }
        }
        Ok(pos)
    }

    /// Parses one `key=value` tag.
    #[inline]
    fn tag(&mut self, start: usize, out: &mut Line<'a>) -> Result<usize, Fault<'a>> {
        let (key, pos) = self.escaped::<KEY>(start)?;
        if self.byte(pos) != Some(b'=') {
            return Err(Fault::Soft);
        }
        let (value, end) = self.escaped::<TAG_VALUE>(pos + 1)?;
        out.tags.push((key, value));
        Ok(end)
    }

    /// Parses the fields; returns where they end.
    fn field_set(&mut self, start: usize, out: &mut Line<'a>) -> Result<usize, LineError<'a>> {
        let mut pos = match self.field(start, out) {
            Ok(end) => end,
            Err(Fault::Soft) => return Err(LineError::Fields),
            Err(Fault::Hard(error)) => return Err(error),
        };
        if self.byte(pos) != Some(b',') {
            return Ok(pos);
        }
        // nom's `separated_list1` consumes the first comma and hands over to a
        // `separated_list` that may match nothing: one trailing comma after the first field
        // is accepted. Later failed fields leave their comma unconsumed.
        match self.field(pos + 1, out) {
            Ok(end) => pos = end,
            Err(Fault::Soft) => return Ok(pos + 1),
            Err(Fault::Hard(error)) => return Err(error),
        }
        while self.byte(pos) == Some(b',') {
            match self.field(pos + 1, out) {
                Ok(end) => pos = end,
                Err(Fault::Soft) => break,
                Err(Fault::Hard(error)) => return Err(error),
            }
        }
        Ok(pos)
    }

    /// Parses one `key=value` field.
    #[inline]
    fn field(&mut self, start: usize, out: &mut Line<'a>) -> Result<usize, Fault<'a>> {
        let (key, pos) = self.escaped::<FIELD_KEY>(start)?;
        if self.byte(pos) != Some(b'=') {
            return Err(Fault::Soft);
        }
        let (value, end) = self.field_value(pos + 1)?;
        out.fields.push((key, value));
        Ok(end)
    }

    /// Parses a measurement, tag key, tag value or field key (byte class `CLASS`) from
    /// `start`, unescaping it (the reference's `escape_or_fallback`). Soft failure if it is
    /// empty.
    #[inline]
    fn escaped<const CLASS: u8>(
        &mut self,
        start: usize,
    ) -> Result<(Cow<'a, str>, usize), Fault<'a>> {
        let end = self.run::<CLASS>(start);
        match self.byte(end) {
            Some(b'\\') => self.escaped_slow::<CLASS>(start, end),
            Some(b',') if CLASS == FIELD_KEY => self.escaped_slow::<CLASS>(start, end),
            _ if end == start => Err(Fault::Soft),
            // A token without a backslash cannot end in one.
            _ => Ok((Cow::Borrowed(self.slice(start, end)), end)),
        }
    }

    /// Returns the end of the run of ordinary bytes of class `CLASS` from `pos`.
    #[inline]
    fn run<const CLASS: u8>(&self, pos: usize) -> usize {
        let rest = self.bytes.get(pos..).unwrap_or_default();
        pos + rest
            .iter()
            .position(|&byte| CLASSES[usize::from(byte)] & CLASS == 0)
            .unwrap_or(rest.len())
    }

    /// Goes on with a token from `pos`, where a backslash or a field key's comma stopped the
    /// plain scan of [`Self::escaped`].
    #[inline(never)]
    fn escaped_slow<const CLASS: u8>(
        &mut self,
        start: usize,
        mut pos: usize,
    ) -> Result<(Cow<'a, str>, usize), Fault<'a>> {
        // The unescaped text so far, once an escape forced a copy; `run_start` is where the
        // bytes not yet copied begin.
        let mut owned: Option<String> = None;
        let mut run_start = start;
        loop {
            match self.byte(pos) {
                Some(b',') if CLASS == FIELD_KEY => {
                    self.comma_in_field_key = true;
                    pos += 1;
                }
                Some(b'\\') => match self.byte(pos + 1) {
                    Some(next) if is_escapable(CLASS, next) => {
                        // Drop the backslash: copy up to it, resume at the escaped byte.
                        owned
                            .get_or_insert_with(String::new)
                            .push_str(self.slice(run_start, pos));
                        run_start = pos + 1;
                        pos += 2;
                    }
                    // Any other character after a backslash is taken literally with it, even
                    // a separator; only its first byte is skipped here, since the rest of a
                    // multi-byte character is ordinary in every class.
                    Some(_) => pos += 2,
                    // A backslash at the end of the line: kept, and refused below.
                    None => pos += 1,
                },
                _ => break,
            }
            pos = self.run::<CLASS>(pos);
        }
        let text = match owned {
            None => Cow::Borrowed(self.slice(start, pos)),
            Some(mut text) => {
                text.push_str(self.slice(run_start, pos));
                Cow::Owned(text)
            }
        };
        if text.ends_with('\\') {
            return Err(Fault::Hard(LineError::EndsWithBackslash));
        }
        Ok((text, pos))
    }

    /// Reads `-?[0-9]+` at `start` (the reference's `integral_value_signed`); `None` if there
    /// are no digits.
    #[inline]
    fn integer(&self, start: usize) -> Option<Digits> {
        let negative = self.byte(start) == Some(b'-');
        let digits_start = start + usize::from(negative);
        let (magnitude, end) = self.accumulate(digits_start, 0);
        let digits = end - digits_start;
        (digits > 0).then_some(Digits {
            negative,
            magnitude,
            digits,
            end,
        })
    }

    /// Appends the decimal digits from `pos` to `value` (wrapping: callers check the digit
    /// count) and returns it with the position after them.
    #[inline]
    fn accumulate(&self, mut pos: usize, mut value: u64) -> (u64, usize) {
        while let Some(&byte) = self.bytes.get(pos) {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
            pos += 1;
        }
        (value, pos)
    }

    /// Parses a field value (the reference's `alt((int, uint, float, string, bool))`).
    #[inline]
    fn field_value(&self, start: usize) -> Result<(Value<'a>, usize), Fault<'a>> {
        let Some(integer) = self.integer(start) else {
            return self.string_or_boolean(start);
        };
        match self.byte(integer.end) {
            Some(b'i') => {
                let text = self.slice(start, integer.end);
                return match integer.to_i64(text) {
                    Some(value) => Ok((Value::Integer(value), integer.end + 1)),
                    None => Err(Fault::Hard(LineError::Integer(text))),
                };
            }
            Some(b'u') if !integer.negative => {
                let text = self.slice(start, integer.end);
                return match integer.to_u64(text) {
                    Some(value) => Ok((Value::UInteger(value), integer.end + 1)),
                    None => Err(Fault::Hard(LineError::UInteger(text))),
                };
            }
            _ => {}
        }
        // Floats, in the reference's order: `1.5e3`, `1e3`, `1.5`, `1`. A form that does not
        // match falls back to a shorter one and leaves the rest as trailing content, so `1.`
        // is `1` then `.`, and `1.e5` and `1.5e` have no exponent.
        let mut mantissa = integer.magnitude;
        let mut end = integer.end;
        let mut fraction_digits = 0;
        let bare_dot = self.byte(end) == Some(b'.');
        if bare_dot {
            let (with_fraction, fraction_end) = self.accumulate(end + 1, mantissa);
            if fraction_end > end + 1 {
                fraction_digits = fraction_end - end - 1;
                mantissa = with_fraction;
                end = fraction_end;
            }
        }
        let mut exponent = 0i64;
        if (fraction_digits > 0 || !bare_dot) && matches!(self.byte(end), Some(b'e' | b'E')) {
            let (negative, digits_start) = match self.byte(end + 1) {
                Some(b'-') => (true, end + 2),
                Some(b'+') => (false, end + 2),
                _ => (false, end + 1),
            };
            let mut pos = digits_start;
            while let Some(digit) = self.byte(pos).filter(u8::is_ascii_digit) {
                // Saturates: a huge exponent only needs to leave the fast path.
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(i64::from(digit - b'0'));
                pos += 1;
            }
            // Without digits there is no exponent (and `exponent` stayed 0).
            if pos > digits_start {
                end = pos;
                if negative {
                    exponent = -exponent;
                }
            }
        }
        let text = self.slice(start, end);
        // Past 19 digits the mantissa wrapped: only the slow path is right.
        let fast = if integer.digits + fraction_digits <= 19 {
            i64::try_from(fraction_digits)
                .ok()
                .and_then(|digits| exact_float(mantissa, exponent.saturating_sub(digits)))
        } else {
            None
        };
        let value = match fast {
            Some(magnitude) if integer.negative => -magnitude,
            Some(magnitude) => magnitude,
            None => text
                .parse()
                .map_err(|_| Fault::Hard(LineError::Float(text)))?,
        };
        Ok((Value::Float(value), end))
    }

    /// Parses a quoted string or a boolean (the last two alternatives of a field value).
    #[inline]
    fn string_or_boolean(&self, start: usize) -> Result<(Value<'a>, usize), Fault<'a>> {
        let rest = self.bytes.get(start..).unwrap_or_default();
        let (value, length) = match rest.first() {
            Some(b'"') => return self.string(start),
            // Prefixes in the reference's order: the long spellings first.
            Some(b't') if rest.starts_with(b"true") => (true, 4),
            Some(b't') => (true, 1),
            Some(b'T') if rest.starts_with(b"True") || rest.starts_with(b"TRUE") => (true, 4),
            Some(b'T') => (true, 1),
            Some(b'f') if rest.starts_with(b"false") => (false, 5),
            Some(b'f') => (false, 1),
            Some(b'F') if rest.starts_with(b"False") || rest.starts_with(b"FALSE") => (false, 5),
            Some(b'F') => (false, 1),
            _ => return Err(Fault::Soft),
        };
        Ok((Value::Boolean(value), start + length))
    }

    /// Parses a quoted string at `start` (on its opening quote). Only `\"` and `\\` are
    /// escapes; any other backslash is literal. Soft failure if it is not closed.
    fn string(&self, start: usize) -> Result<(Value<'a>, usize), Fault<'a>> {
        let content_start = start + 1;
        let mut pos = content_start;
        let mut owned: Option<String> = None;
        let mut run_start = content_start;
        loop {
            while let Some(&byte) = self.bytes.get(pos) {
                if byte == b'"' || byte == b'\\' {
                    break;
                }
                pos += 1;
            }
            match self.byte(pos) {
                Some(b'"') => break,
                Some(_) => match self.byte(pos + 1) {
                    // `\"` or `\\`: drop the backslash, keep the escaped byte.
                    Some(b'"' | b'\\') => {
                        owned
                            .get_or_insert_with(String::new)
                            .push_str(self.slice(run_start, pos));
                        run_start = pos + 1;
                        pos += 2;
                    }
                    _ => pos += 1,
                },
                None => return Err(Fault::Soft),
            }
        }
        let value = match owned {
            None => Cow::Borrowed(self.slice(content_start, pos)),
            Some(mut text) => {
                text.push_str(self.slice(run_start, pos));
                Cow::Owned(text)
            }
        };
        Ok((Value::String(value), pos + 1))
    }
}

/// The digits of `-?[0-9]+`, read once.
#[derive(Debug, Clone, Copy)]
struct Digits {
    negative: bool,
    /// The digits as a number, wrapped if there are more than 19 of them.
    magnitude: u64,
    /// How many digits (leading zeros included).
    digits: usize,
    /// The position after the last digit.
    end: usize,
}

impl Digits {
    /// Returns the value as an `i64`, refusing overflow exactly as `str::parse` does; `text`
    /// is the number as written, for the slow path.
    #[inline]
    fn to_i64(self, text: &str) -> Option<i64> {
        // Up to 19 digits the magnitude is exact in a `u64`; beyond (leading zeros, or
        // overflow) let the standard library decide.
        if self.digits > 19 {
            return text.parse().ok();
        }
        if self.negative {
            0i64.checked_sub_unsigned(self.magnitude)
        } else {
            i64::try_from(self.magnitude).ok()
        }
    }

    /// Returns the value as a `u64` (never negative here), refusing overflow.
    #[inline]
    fn to_u64(self, text: &str) -> Option<u64> {
        if self.digits > 19 {
            return text.parse().ok();
        }
        Some(self.magnitude)
    }
}

/// Returns `mantissa * 10^power` when Clinger's fast path applies: the mantissa and the power
/// of ten are both exact `f64`s, so one correctly rounded multiplication or division gives the
/// correctly rounded result, bit-identical to `str::parse::<f64>` (the reference's
/// conversion). `None` sends the literal to `str::parse`.
#[inline]
fn exact_float(mantissa: u64, power: i64) -> Option<f64> {
    if mantissa > MAX_EXACT_MANTISSA {
        return None;
    }
    let scale = *EXACT_POWERS_OF_TEN.get(usize::try_from(power.unsigned_abs()).ok()?)?;
    // Exact: the mantissa is at most 2^53.
    let magnitude = mantissa as f64;
    Some(if power < 0 {
        magnitude / scale
    } else {
        magnitude * scale
    })
}

/// Walks a body line by line, as the reference's `split_lines` then `parse_lines` would, one
/// data line at a time.
pub(super) struct Lines<'a> {
    text: &'a str,
    /// Where the next line (the reference's split piece) starts.
    pos: usize,
}

/// One step of [`Lines`]: the data line was parsed into the caller's [`Line`], or is bad. Both
/// carry the byte offset where the line starts, for its number.
pub(super) type Step<'a> = Result<usize, (usize, LineError<'a>)>;

impl<'a> Lines<'a> {
    /// Starts at the beginning of `text`.
    pub(super) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    /// Parses the next data line into `out`, skipping blank and comment lines. `None` at the
    /// end of the body. After an error the next call goes on with the next line, where the
    /// reference's splitter ends the bad one.
    pub(super) fn next_line(&mut self, out: &mut Line<'a>) -> Option<Step<'a>> {
        let bytes = self.text.as_bytes();
        loop {
            let line_start = self.pos;
            if line_start >= bytes.len() {
                return None;
            }
            // Leading blanks. Spaces matter to the splitter (see the module doc); tabs do not.
            let mut pos = line_start;
            let mut spaced = false;
            loop {
                match bytes.get(pos) {
                    Some(b' ') => spaced = true,
                    Some(b'\t') => {}
                    _ => break,
                }
                pos += 1;
            }
            match bytes.get(pos) {
                None => {
                    self.pos = bytes.len();
                    return None;
                }
                Some(b'\n') => {
                    self.pos = pos + 1;
                    continue;
                }
                // The reference drops one `\r` at the end of a line: `  \r\n` is blank.
                Some(b'\r') if matches!(bytes.get(pos + 1), None | Some(b'\n')) => {
                    self.pos = (pos + 2).min(bytes.len());
                    continue;
                }
                Some(b'#') => {
                    // A comment ends at its newline unless a quote or backslash in it could
                    // make the splitter run on; such a comment takes the exact path.
                    let rest = bytes.get(pos..).unwrap_or_default();
                    let stop = rest
                        .iter()
                        .position(|&byte| matches!(byte, b'\n' | b'"' | b'\\'));
                    match stop {
                        None => {
                            self.pos = bytes.len();
                            return None;
                        }
                        Some(offset) if rest.get(offset) == Some(&b'\n') => {
                            self.pos = pos + offset + 1;
                            continue;
                        }
                        Some(_) => match self.exact(line_start, out) {
                            Some(step) => return Some(step),
                            None => continue,
                        },
                    }
                }
                Some(_) => {}
            }
            if !spaced && let Some(end) = self.greedy(pos, out) {
                self.pos = end;
                return Some(Ok(line_start));
            }
            match self.exact(line_start, out) {
                Some(step) => return Some(step),
                None => continue,
            }
        }
    }

    /// Parses the line at `start` through to wherever it ends, and returns where the next
    /// line starts if the parse is good, ends at a line end, and is one the splitter would
    /// end at the same place. `None` sends the line to the exact path.
    ///
    /// Why the splitter agrees on such a line: it starts counting at the first unescaped
    /// space, which, without leading spaces, is where the parser's fields start (measurement
    /// and tags stop at spaces, and both skip the byte after a backslash). From there each
    /// field adds one `=` (keys cannot hold an unescaped one) and each separator one `,`,
    /// unless a key holds an unescaped comma, which is checked. So at every field value `=`
    /// outnumber `,` by one and the splitter's quote toggles exactly at a string value's
    /// opening and closing quotes (both skip escaped quotes; other values hold no `=`, `,` or
    /// `"`), while quotes inside keys come when the counts are equal and toggle nothing. Every
    /// newline the parse crossed was therefore quoted or escaped for the splitter too, and the
    /// newline after the line ends it for both.
    #[inline]
    fn greedy(&self, start: usize, out: &mut Line<'a>) -> Option<usize> {
        let bytes = self.text.as_bytes();
        let mut scanner = Scanner {
            text: self.text,
            bytes,
            comma_in_field_key: false,
        };
        let parsed = scanner.line(start, out).ok()?;
        if parsed.comma_in_field_key {
            return None;
        }
        match bytes.get(parsed.stop) {
            None => Some(bytes.len()),
            Some(b'\n') => Some(parsed.stop + 1),
            Some(b'\r') => match bytes.get(parsed.stop + 1) {
                None => Some(bytes.len()),
                Some(b'\n') => Some(parsed.stop + 2),
                Some(_) => None,
            },
            Some(_) => None,
        }
    }

    /// Handles the line that starts at `line_start` exactly as the reference does: split it
    /// off with the reference's splitter, drop one trailing `\r`, skip leading blanks and
    /// comments, and parse what is left, which must be the whole line. `None` if nothing is
    /// left.
    fn exact(&mut self, line_start: usize, out: &mut Line<'a>) -> Option<Step<'a>> {
        let bytes = self.text.as_bytes();
        let split = split_line(bytes, line_start);
        self.pos = (split + 1).min(bytes.len());
        let end = if split > line_start && bytes.get(split - 1) == Some(&b'\r') {
            split - 1
        } else {
            split
        };
        let content = trim_leading(bytes, line_start, end);
        if content == end {
            return None;
        }
        let mut scanner = Scanner {
            text: self.text,
            bytes: bytes.get(..end).unwrap_or_default(),
            comma_in_field_key: false,
        };
        Some(match scanner.line(content, out) {
            Ok(parsed) if parsed.stop == end => Ok(line_start),
            Ok(parsed) => Err((
                line_start,
                LineError::Trailing(scanner.slice(parsed.stop, end)),
            )),
            Err(error) => Err((line_start, error)),
        })
    }
}

/// Returns where the line that starts at `start` ends (its newline, or the end of the body):
/// a port of the reference's `split_lines` (Go's `scanLine`). A newline does not end a line
/// when escaped, or inside a quote that the splitter counts as a string field's: after the
/// first space, when more `=` than `,` were seen outside quotes.
fn split_line(bytes: &[u8], start: usize) -> usize {
    let mut quoted = false;
    let mut in_fields = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    let mut escaped = false;
    let mut pos = start;
    while let Some(&byte) = bytes.get(pos) {
        if escaped {
            // Skips one byte, not one character: the rest of a multi-byte character cannot be
            // any of the bytes that matter here.
            escaped = false;
        } else {
            match byte {
                b'\\' => escaped = true,
                b' ' => in_fields = true,
                b'=' if in_fields && !quoted => equals += 1,
                b',' if in_fields && !quoted => commas += 1,
                b'"' if in_fields && equals > commas => quoted = !quoted,
                b'\n' if !quoted => return pos,
                _ => {}
            }
        }
        pos += 1;
    }
    pos
}

/// Returns the first position in `start..end` that is not a blank (space, tab, newline) or in
/// a `#` comment, which runs to the next newline (the reference's `trim_leading`).
fn trim_leading(bytes: &[u8], start: usize, end: usize) -> usize {
    let mut pos = start;
    loop {
        while pos < end && matches!(bytes.get(pos), Some(b' ' | b'\t' | b'\n')) {
            pos += 1;
        }
        if pos >= end || bytes.get(pos) != Some(&b'#') {
            return pos;
        }
        pos = bytes
            .get(pos..end)
            .and_then(|comment| comment.iter().position(|&byte| byte == b'\n'))
            .map_or(end, |offset| pos + offset);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Parses `text` as a field value on its own.
    fn value_of(text: &str) -> Result<(Value<'_>, usize), Fault<'_>> {
        let scanner = Scanner {
            text,
            bytes: text.as_bytes(),
            comma_in_field_key: false,
        };
        scanner.field_value(0)
    }

    /// Parses `text` as a float field value that must take all of it.
    fn float_of(text: &str) -> f64 {
        match value_of(text) {
            Ok((Value::Float(value), end)) if end == text.len() => value,
            other => panic!("{text:?} is not a whole float: {other:?}"),
        }
    }

    /// Returns the lines `split_line` cuts `text` into, as `str::split` would list them.
    fn split_all(text: &str) -> Vec<&str> {
        let mut lines = Vec::new();
        let mut start = 0;
        loop {
            let end = split_line(text.as_bytes(), start);
            lines.push(&text[start..end]);
            if end >= text.len() {
                return lines;
            }
            start = end + 1;
        }
    }

    #[test]
    fn test_should_take_the_fast_path_only_where_it_is_exact() {
        // Exactly representable mantissas and powers: the fast path.
        assert_eq!(exact_float(1234, -2), Some(12.34));
        assert_eq!(exact_float(1 << 53, 22), Some(9007199254740992e22));
        // Beyond them: `None`, so that `str::parse` decides.
        assert_eq!(exact_float((1 << 53) + 1, 0), None);
        assert_eq!(exact_float(1, 23), None);
        assert_eq!(exact_float(1, -23), None);
        assert_eq!(float_of("-0").to_bits(), (-0.0f64).to_bits());
        assert_eq!(float_of("9007199254740993"), 9007199254740993f64);
        assert_eq!(float_of("1e-400"), 0.0);
        assert!(float_of("1e400").is_infinite());
    }

    #[test]
    fn test_should_stop_number_forms_where_the_reference_does() {
        // (text, where the value ends)
        for (text, end) in [
            ("1.", 1),
            ("1.e5", 1),
            ("1.5e", 3),
            ("1.5e+", 3),
            ("1e5x", 3),
            ("-1.5E-3,", 7),
            ("12i3", 3),
            ("-1u", 2),
            ("tru", 1),
            ("TRUE1", 4),
            ("Fals", 1),
        ] {
            let (_, stop) = value_of(text).unwrap_or_else(|_| panic!("{text:?} should parse"));
            assert_eq!(stop, end, "{text:?}");
        }
        for text in ["", "-", ".5", "+1", "nan", "x", "\"open"] {
            assert!(matches!(value_of(text), Err(Fault::Soft)), "{text:?}");
        }
        assert!(matches!(
            value_of("9223372036854775808i"),
            Err(Fault::Hard(LineError::Integer("9223372036854775808")))
        ));
    }

    #[test]
    fn test_should_split_quoted_and_escaped_newlines_like_the_reference() {
        assert_eq!(split_all("a\nb"), ["a", "b"]);
        assert_eq!(split_all("m s=\"x\ny\"\nz"), ["m s=\"x\ny\"", "z"]);
        // Quotes count only after a space, and when `=` outnumber `,`.
        assert_eq!(split_all("m,a=\"x\ny"), ["m,a=\"x", "y"]);
        assert_eq!(split_all("m a,b=\"x\ny\""), ["m a,b=\"x", "y\""]);
        assert_eq!(split_all("m a=\\\nb"), ["m a=\\\nb"]);
        assert_eq!(split_all(""), [""]);
        assert_eq!(split_all("a\n"), ["a", ""]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn test_should_parse_floats_bit_for_bit_like_the_standard_library(
            text in "-?[0-9]{1,24}(\\.[0-9]{1,24})?([eE][-+]?[0-9]{1,4})?"
        ) {
            let expected: f64 = text.parse().expect("the grammar's floats are Rust floats");
            prop_assert_eq!(float_of(&text).to_bits(), expected.to_bits(), "{}", text);
        }

        #[test]
        fn test_should_read_printed_floats_back_exactly(
            value in any::<f64>().prop_filter("finite", |v| v.is_finite())
        ) {
            for text in [value.to_string(), format!("{value:e}"), format!("{value:E}")] {
                prop_assert_eq!(float_of(&text).to_bits(), value.to_bits(), "{}", text);
            }
        }

        #[test]
        fn test_should_parse_integers_like_the_standard_library(text in "-?[0-9]{1,22}") {
            let signed = format!("{text}i");
            match (value_of(&signed), text.parse::<i64>()) {
                (Ok((Value::Integer(value), _)), Ok(expected)) => prop_assert_eq!(value, expected),
                (Err(Fault::Hard(LineError::Integer(_))), Err(_)) => {}
                (ours, expected) => panic!("{signed:?}: {ours:?}, expected {expected:?}"),
            }
            let unsigned = format!("{text}u");
            match (value_of(&unsigned), text.parse::<u64>()) {
                (Ok((Value::UInteger(value), _)), Ok(expected)) => prop_assert_eq!(value, expected),
                (Err(Fault::Hard(LineError::UInteger(_))), Err(_)) => {}
                // A negative number is no unsigned: a float, then the `u` left over.
                (Ok((Value::Float(_), end)), Err(_)) if text.starts_with('-') => {
                    prop_assert_eq!(end, text.len());
                }
                (ours, expected) => panic!("{unsigned:?}: {ours:?}, expected {expected:?}"),
            }
        }

        #[test]
        fn test_should_split_lines_like_the_reference(text in "[a-z ,=\"\\\\\n\r#é]{0,60}") {
            let reference: Vec<&str> = influxdb_line_protocol::split_lines(&text).collect();
            prop_assert_eq!(split_all(&text), reference);
        }
    }
}
