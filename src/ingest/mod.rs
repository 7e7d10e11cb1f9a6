//! Ingest decoders: turn a request body (InfluxDB line protocol or Arc's MessagePack) into one
//! Arrow `RecordBatch` per table, or reject the whole request.
//!
//! This module owns the wire formats of the write path and nothing else: it stores nothing, it
//! knows no configuration, and it depends only on `arc_storage::model` and external crates.
//! The caller decompresses with [`decompress`], decodes with [`decode_line_protocol`] or
//! [`decode_msgpack`], and appends the resulting [`TableWrite`]s to the WAL as one unit.
//!
//! # Contract (see COMPAT.md, "Ingest")
//!
//! - A request is all or nothing: the first malformed line or item fails the whole request
//!   with [`IngestError::Invalid`], whose message names the line (`line 3: ...`) or the
//!   MessagePack path (`batch[2].fields.usage: ...`). Arc silently drops bad lines; we don't.
//! - All rows of one `(database, measurement)` in a request are merged into one batch. Its
//!   schema is `time` first (`Timestamp(ns)`, non-null), then the tags sorted by name, then the
//!   fields sorted by name; the kind of each column rides in the Arrow field metadata
//!   ([`arc_storage::model::ColumnKind::arrow_field`]). Rows missing a column get null.
//! - A column has one kind per request; a second kind is an error naming both.
//!
//! # Hazards
//!
//! Bodies come from the network: no input may panic, recurse without bound, or make us
//! allocate far beyond the size of the body. Decompression is capped (a "zip bomb" is refused
//! with [`IngestError::TooLarge`] after at most the cap has been produced), the MessagePack
//! reader is iterative and never trusts a declared length for allocation, and the builders
//! bound tables per request, columns per table, and the cells (values plus null padding) a
//! request may build in proportion to its size, so sparse bodies cannot pad their way to
//! gigabytes (see `builder`).
//!
//! # Layout
//!
//! - `names`: database and measurement name rules.
//! - `decompress`: gzip/zstd detection and capped decompression.
//! - `builder`: the per-request, per-table Arrow column builders both decoders fill.
//! - `lineproto`: the line protocol decoder, on a hand-written parser that matches InfluxData's
//!   `influxdb-line-protocol` (kept as the test-only reference it is checked against).
//! - `msgpack_reader`: a zero-copy, non-recursive MessagePack token reader.
//! - `msgpack`: the MessagePack decoder (columnar, row and batch shapes).

mod admission;
mod builder;
mod decompress;
mod lineproto;
mod msgpack;
mod msgpack_reader;
mod names;
#[cfg(test)]
mod test_support;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use arc_storage::model::TableId;
use arrow::record_batch::RecordBatch;

pub use admission::{InflightBudget, Reservation};
pub use decompress::{decompress, is_compressed};
pub use lineproto::{Skipped, decode_line_protocol, decode_line_protocol_lenient};
pub use msgpack::decode_msgpack;
pub use names::{validate_database_name, validate_measurement_name};

/// The rows a request writes to one table, as one Arrow batch.
#[derive(Debug, Clone)]
pub struct TableWrite {
    /// The table the rows belong to.
    pub table: TableId,
    /// The rows: `time` first, then tags sorted by name, then fields sorted by name, with each
    /// column's kind in its Arrow field metadata.
    pub batch: RecordBatch,
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The body or a name in it is malformed (HTTP 400). The message names the first bad line
    /// or MessagePack path.
    #[error("{0}")]
    Invalid(String),
    /// The body, once decompressed, is larger than the limit (HTTP 413).
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The rows of the body need more memory than the node's whole inflight budget, body
    /// included (HTTP 413).
    #[error(
        "the request's rows need more than ingest.max_inflight_bytes ({limit} bytes) to decode, \
         with its body; send them in smaller requests"
    )]
    DecodedTooLarge {
        /// The inflight budget, in bytes.
        limit: usize,
    },
    /// Other writes hold the node's decoding budget now (HTTP 503 with `Retry-After`).
    #[error("{0}")]
    Busy(String),
}

/// The unit of line protocol timestamps (`?precision=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Nanoseconds (the default).
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// Returns how many nanoseconds one unit of this precision is.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }

    /// Returns the query-string spelling (`ns`, `us`, `ms`, `s`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = IngestError;

    /// Parses exactly `ns`, `us`, `ms` or `s` (COMPAT.md); anything else is refused rather than
    /// guessed, since a wrong unit silently moves every point in time.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "ns" => Ok(Precision::Ns),
            "us" => Ok(Precision::Us),
            "ms" => Ok(Precision::Ms),
            "s" => Ok(Precision::S),
            other => Err(IngestError::Invalid(format!(
                "invalid precision \"{}\": expected ns, us, ms or s",
                shorten(other)
            ))),
        }
    }
}

/// Longest piece of client input echoed back in an error message, in characters. Error bodies
/// must stay small even when the offending value is megabytes long.
const MAX_ECHO_CHARS: usize = 100;

/// Returns `text` cut to [`MAX_ECHO_CHARS`] characters (with `...` when cut), for messages.
pub(crate) fn shorten(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}...", &text[..cut])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_parse_exactly_the_four_precisions() {
        assert_eq!("ns".parse::<Precision>(), Ok(Precision::Ns));
        assert_eq!("us".parse::<Precision>(), Ok(Precision::Us));
        assert_eq!("ms".parse::<Precision>(), Ok(Precision::Ms));
        assert_eq!("s".parse::<Precision>(), Ok(Precision::S));
        for bad in ["", "n", "u", "h", "m", "NS", "µs", "sec"] {
            let error = bad.parse::<Precision>().unwrap_err();
            assert!(
                error.to_string().contains(&format!("\"{bad}\"")),
                "{error} should name {bad:?}"
            );
        }
        assert_eq!(Precision::default(), Precision::Ns);
        assert_eq!(Precision::S.nanos_per_unit(), 1_000_000_000);
    }

    #[test]
    fn test_should_shorten_long_echoes_on_a_char_boundary() {
        assert_eq!(shorten("abc"), "abc");
        let long = "é".repeat(150);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), MAX_ECHO_CHARS + 3);
        assert!(short.ends_with("..."));
    }
}
