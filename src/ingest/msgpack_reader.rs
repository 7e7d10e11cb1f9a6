//! A zero-copy MessagePack token reader over a request body.
//!
//! Why not `rmpv::decode::read_value_ref`: it builds a tree of 40-odd-byte values, so a body of
//! one-byte integers costs some 40 times its size in memory before we look at it, and the
//! tree is recursive. This reader yields one token at a time (array and map headers carry
//! only their declared length), borrows strings and binaries from the body, never allocates,
//! and skips nested values with a counter instead of recursion. A declared length is never
//! trusted for anything but iteration: every element costs at least one byte, so hostile
//! headers run out of input quickly. Strings are returned as raw bytes; callers check UTF-8
//! only for the strings they keep.

use std::fmt;

/// One MessagePack token. Integers that fit `i64` are `Int` whatever their encoding; only
/// unsigned values above `i64::MAX` are `UInt`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Token<'a> {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A float (32-bit floats are widened).
    Float(f64),
    /// A string's raw bytes (UTF-8 not yet checked).
    Str(&'a [u8]),
    /// A binary.
    Bin(&'a [u8]),
    /// An extension value: type and data.
    Ext(i8, &'a [u8]),
    /// An array header with its element count; the elements follow.
    Array(u32),
    /// A map header with its entry count; keys and values follow, alternating.
    Map(u32),
}

impl Token<'_> {
    /// Names the token's type for messages.
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Token::Nil => "nil",
            Token::Bool(_) => "boolean",
            Token::Int(_) | Token::UInt(_) => "integer",
            Token::Float(_) => "float",
            Token::Str(_) => "string",
            Token::Bin(_) => "binary",
            Token::Ext(..) => "extension",
            Token::Array(_) => "array",
            Token::Map(_) => "map",
        }
    }
}

/// Why the body is not MessagePack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadError {
    /// The value starting at `offset` runs past the end of its input.
    Truncated {
        /// Byte offset in the body where the value starts.
        offset: usize,
    },
    /// Byte 0xc1, which MessagePack never uses.
    ReservedMarker {
        /// Byte offset in the body.
        offset: usize,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Truncated { offset } => write!(
                f,
                "truncated msgpack: value at byte offset {offset} runs past the end"
            ),
            ReadError::ReservedMarker { offset } => {
                write!(f, "invalid msgpack marker 0xc1 at byte offset {offset}")
            }
        }
    }
}

/// Reads tokens from `buf[pos..end]`. Offsets in errors are offsets in `buf` (the body).
#[derive(Debug, Clone, Copy)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// Reads the whole of `buf`.
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// Returns whether all input has been read.
    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    /// Returns the offset of the next token in the body.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// Returns a reader over the next value (with everything nested in it) and moves past it.
    pub(super) fn value_span(&mut self) -> Result<Reader<'a>, ReadError> {
        let start = self.pos;
        self.skip()?;
        Ok(Reader {
            buf: self.buf,
            pos: start,
            end: self.pos,
        })
    }

    /// Returns a reader over the next `count` values and moves past them.
    pub(super) fn values_span(&mut self, count: u32) -> Result<Reader<'a>, ReadError> {
        let start = self.pos;
        for _ in 0..count {
            self.skip()?;
        }
        Ok(Reader {
            buf: self.buf,
            pos: start,
            end: self.pos,
        })
    }

    /// Moves past the next value and everything nested in it, without recursion.
    pub(super) fn skip(&mut self) -> Result<(), ReadError> {
        // Values still to read at any depth. Each costs at least one byte of input, so the
        // loop ends within `end - pos` iterations whatever the headers claim.
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            match self.next()? {
                Token::Array(len) => pending = pending.saturating_add(u64::from(len)),
                Token::Map(len) => pending = pending.saturating_add(2 * u64::from(len)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads the next token.
    #[inline]
    pub(super) fn next(&mut self) -> Result<Token<'a>, ReadError> {
        let start = self.pos;
        let truncated = ReadError::Truncated { offset: start };
        let marker = self.bytes::<1>().ok_or(truncated)?[0];
        let token = match marker {
            0x00..=0x7f => Token::Int(i64::from(marker)),
            0x80..=0x8f => Token::Map(u32::from(marker & 0x0f)),
            0x90..=0x9f => Token::Array(u32::from(marker & 0x0f)),
            0xa0..=0xbf => Token::Str(self.take(usize::from(marker & 0x1f), start)?),
            0xc0 => Token::Nil,
            0xc1 => return Err(ReadError::ReservedMarker { offset: start }),
            0xc2 => Token::Bool(false),
            0xc3 => Token::Bool(true),
            0xc4 => {
                let len = self.len8(start)?;
                Token::Bin(self.take(len, start)?)
            }
            0xc5 => {
                let len = self.len16(start)?;
                Token::Bin(self.take(len, start)?)
            }
            0xc6 => {
                let len = self.len32(start)?;
                Token::Bin(self.take(len, start)?)
            }
            0xc7 => {
                let len = self.len8(start)?;
                self.ext(len, start)?
            }
            0xc8 => {
                let len = self.len16(start)?;
                self.ext(len, start)?
            }
            0xc9 => {
                let len = self.len32(start)?;
                self.ext(len, start)?
            }
            0xca => {
                let bits = u32::from_be_bytes(self.bytes().ok_or(truncated)?);
                Token::Float(f64::from(f32::from_bits(bits)))
            }
            0xcb => Token::Float(f64::from_bits(u64::from_be_bytes(
                self.bytes().ok_or(truncated)?,
            ))),
            0xcc => Token::Int(i64::from(self.bytes::<1>().ok_or(truncated)?[0])),
            0xcd => Token::Int(i64::from(u16::from_be_bytes(
                self.bytes().ok_or(truncated)?,
            ))),
            0xce => Token::Int(i64::from(u32::from_be_bytes(
                self.bytes().ok_or(truncated)?,
            ))),
            0xcf => {
                let value = u64::from_be_bytes(self.bytes().ok_or(truncated)?);
                i64::try_from(value).map_or(Token::UInt(value), Token::Int)
            }
            0xd0 => Token::Int(i64::from(i8::from_be_bytes(self.bytes().ok_or(truncated)?))),
            0xd1 => Token::Int(i64::from(i16::from_be_bytes(
                self.bytes().ok_or(truncated)?,
            ))),
            0xd2 => Token::Int(i64::from(i32::from_be_bytes(
                self.bytes().ok_or(truncated)?,
            ))),
            0xd3 => Token::Int(i64::from_be_bytes(self.bytes().ok_or(truncated)?)),
            0xd4 => self.ext(1, start)?,
            0xd5 => self.ext(2, start)?,
            0xd6 => self.ext(4, start)?,
            0xd7 => self.ext(8, start)?,
            0xd8 => self.ext(16, start)?,
            0xd9 => {
                let len = self.len8(start)?;
                Token::Str(self.take(len, start)?)
            }
            0xda => {
                let len = self.len16(start)?;
                Token::Str(self.take(len, start)?)
            }
            0xdb => {
                let len = self.len32(start)?;
                Token::Str(self.take(len, start)?)
            }
            0xdc => Token::Array(u32::from(u16::from_be_bytes(
                self.bytes().ok_or(truncated)?,
            ))),
            0xdd => Token::Array(u32::from_be_bytes(self.bytes().ok_or(truncated)?)),
            0xde => Token::Map(u32::from(u16::from_be_bytes(
                self.bytes().ok_or(truncated)?,
            ))),
            0xdf => Token::Map(u32::from_be_bytes(self.bytes().ok_or(truncated)?)),
            0xe0..=0xff => Token::Int(i64::from(marker as i8)),
        };
        Ok(token)
    }

    /// Reads exactly `N` bytes, or `None` (position unchanged) if fewer remain.
    #[inline]
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.end - self.pos < N {
            return None;
        }
        let bytes: [u8; N] = self.buf[self.pos..self.pos + N].try_into().ok()?;
        self.pos += N;
        Some(bytes)
    }

    /// Borrows the next `len` bytes; the value that needs them started at `start`.
    #[inline]
    fn take(&mut self, len: usize, start: usize) -> Result<&'a [u8], ReadError> {
        if self.end - self.pos < len {
            return Err(ReadError::Truncated { offset: start });
        }
        let taken = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(taken)
    }

    fn len8(&mut self, start: usize) -> Result<usize, ReadError> {
        let [len] = self.bytes().ok_or(ReadError::Truncated { offset: start })?;
        Ok(usize::from(len))
    }

    fn len16(&mut self, start: usize) -> Result<usize, ReadError> {
        let bytes = self.bytes().ok_or(ReadError::Truncated { offset: start })?;
        Ok(usize::from(u16::from_be_bytes(bytes)))
    }

    fn len32(&mut self, start: usize) -> Result<usize, ReadError> {
        let bytes = self.bytes().ok_or(ReadError::Truncated { offset: start })?;
        // u32 always fits usize on the 32- and 64-bit targets we build for.
        Ok(u32::from_be_bytes(bytes) as usize)
    }

    fn ext(&mut self, len: usize, start: usize) -> Result<Token<'a>, ReadError> {
        let [ext_type] = self.bytes().ok_or(ReadError::Truncated { offset: start })?;
        let data = self.take(len, start)?;
        Ok(Token::Ext(ext_type as i8, data))
    }
}

#[cfg(test)]
mod tests {
    use rmpv::Value;

    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    fn tokens(buf: &[u8]) -> Result<Vec<Token<'_>>, ReadError> {
        let mut reader = Reader::new(buf);
        let mut out = Vec::new();
        while !reader.at_end() {
            out.push(reader.next()?);
        }
        Ok(out)
    }

    #[test]
    fn test_should_read_every_integer_encoding_as_int_or_uint() {
        for value in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as i64,
            i64::MAX,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            i32::MIN as i64,
            i64::MIN,
        ] {
            let bytes = encode(&Value::from(value));
            assert_eq!(tokens(&bytes).unwrap(), vec![Token::Int(value)], "{value}");
        }
        let bytes = encode(&Value::from(u64::MAX));
        assert_eq!(tokens(&bytes).unwrap(), vec![Token::UInt(u64::MAX)]);
        let bytes = encode(&Value::from(i64::MAX as u64 + 1));
        assert_eq!(
            tokens(&bytes).unwrap(),
            vec![Token::UInt(i64::MAX as u64 + 1)]
        );
    }

    #[test]
    fn test_should_read_scalars_strings_and_headers() {
        let value = Value::Array(vec![
            Value::Nil,
            Value::Boolean(true),
            Value::Boolean(false),
            Value::F32(1.5),
            Value::F64(-2.25),
            Value::from("héllo"),
            Value::from("x".repeat(40)),
            Value::from("y".repeat(300)),
            Value::from("z".repeat(70_000)),
            Value::Binary(vec![1, 2, 3]),
            Value::Ext(-1, vec![0; 4]),
            Value::Ext(5, vec![9; 3]),
            Value::Map(vec![(Value::from("k"), Value::from(1))]),
            Value::Array(vec![Value::Nil; 20]),
        ]);
        let bytes = encode(&value);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.next(), Ok(Token::Array(14)));
        assert_eq!(reader.next(), Ok(Token::Nil));
        assert_eq!(reader.next(), Ok(Token::Bool(true)));
        assert_eq!(reader.next(), Ok(Token::Bool(false)));
        assert_eq!(reader.next(), Ok(Token::Float(1.5)));
        assert_eq!(reader.next(), Ok(Token::Float(-2.25)));
        assert_eq!(reader.next(), Ok(Token::Str("héllo".as_bytes())));
        assert_eq!(reader.next(), Ok(Token::Str("x".repeat(40).as_bytes())));
        assert_eq!(reader.next(), Ok(Token::Str("y".repeat(300).as_bytes())));
        assert_eq!(reader.next(), Ok(Token::Str("z".repeat(70_000).as_bytes())));
        assert_eq!(reader.next(), Ok(Token::Bin(&[1, 2, 3])));
        assert_eq!(reader.next(), Ok(Token::Ext(-1, &[0; 4])));
        assert_eq!(reader.next(), Ok(Token::Ext(5, &[9; 3])));
        assert_eq!(reader.next(), Ok(Token::Map(1)));
        reader.skip().unwrap();
        reader.skip().unwrap();
        assert_eq!(reader.next(), Ok(Token::Array(20)));
        let span = reader.values_span(20).unwrap();
        assert_eq!(span.end - span.pos, 20);
        assert!(reader.at_end());
    }

    #[test]
    fn test_should_report_truncation_at_the_value_start() {
        let bytes = encode(&Value::Array(vec![Value::from(1), Value::from("hello")]));
        for cut in 0..bytes.len() {
            let mut reader = Reader::new(&bytes[..cut]);
            let error = reader.skip().unwrap_err();
            assert!(matches!(error, ReadError::Truncated { .. }), "cut {cut}");
        }
        let mut reader = Reader::new(&[0xa5, b'a']);
        assert_eq!(reader.next(), Err(ReadError::Truncated { offset: 0 }));
        assert_eq!(
            Reader::new(&[0xc1]).next(),
            Err(ReadError::ReservedMarker { offset: 0 })
        );
    }

    #[test]
    fn test_should_skip_deep_nesting_without_recursion() {
        // A million nested one-element arrays: recursion would overflow the stack.
        let mut bytes = vec![0x91; 1_000_000];
        bytes.push(0xc0);
        let mut reader = Reader::new(&bytes);
        reader.skip().unwrap();
        assert!(reader.at_end());
        // The same, truncated.
        let mut reader = Reader::new(&bytes[..bytes.len() - 1]);
        assert!(reader.skip().is_err());
    }

    #[test]
    fn test_should_refuse_huge_declared_lengths_quickly() {
        // Array32 and Map32 claiming 4 billion entries, with nothing after them.
        for bytes in [
            vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0],
            vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0],
            vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            vec![0xc6, 0xff, 0xff, 0xff, 0xff],
            vec![0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
        ] {
            let mut reader = Reader::new(&bytes);
            assert!(reader.skip().is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn test_should_not_read_past_a_span() {
        let bytes = encode(&Value::Array(vec![Value::from(1), Value::from(2)]));
        let mut outer = Reader::new(&bytes);
        assert_eq!(outer.next(), Ok(Token::Array(2)));
        let mut first = outer.value_span().unwrap();
        assert_eq!(first.next(), Ok(Token::Int(1)));
        assert!(first.at_end());
        assert_eq!(first.next(), Err(ReadError::Truncated { offset: 2 }));
        assert_eq!(outer.next(), Ok(Token::Int(2)));
    }

    proptest::proptest! {
        #[test]
        fn test_should_never_panic_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)
        ) {
            let mut reader = Reader::new(&bytes);
            while !reader.at_end() {
                if reader.skip().is_err() {
                    break;
                }
            }
        }
    }
}
