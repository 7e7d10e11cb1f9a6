//! The replication wire format: length-prefixed, versioned frames (`docs/0006-replication.md`,
//! section 2).
//!
//! Pure byte logic: [`Frame::encode`] appends a frame to a buffer, [`Frame::decode`] parses one
//! from the front of a buffer, and [`FrameHeader::decode`] lets a stream reader learn a frame's
//! kind and length (and reject it) before it reads, or allocates for, the body.
//!
//! Hazard: every byte decoded here comes from the network, possibly from a peer that has not
//! authenticated yet. Nothing is trusted before it is checked: a body length is bounded per kind
//! before anything is allocated for it, strings are bounded and must be UTF-8, and no input can
//! make this module panic (a property test feeds it arbitrary bytes).

use std::fmt;

use crate::format::{Entry, MAX_PAYLOAD_BYTES};
use crate::lsn::{Epoch, Lsn};

/// Version byte of every frame this build writes; the only one it reads.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before a frame's body: `len: u32`, `version: u8`, `kind: u8`.
pub const FRAME_HEADER_LEN: usize = 6;
/// Length of an authentication proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;
/// Longest node id a `Subscribe` may carry, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 255;
/// Longest reason a `Refuse` may carry, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest table name a `FlushNotice` may carry, in bytes.
pub const MAX_TABLE_NAME_BYTES: usize = 1024;
/// Most tables one `FlushNotice` may name.
pub const MAX_FLUSH_TABLES: usize = 4096;
/// Bytes of an entry body before its payload: `epoch: u64`, `lsn: u64`.
const ENTRY_BODY_HEADER_LEN: usize = 16;

/// What a frame is; the `kind` byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// First frame each way: the sender's authentication proof.
    Hello = 1,
    /// Follower → primary: start streaming to me.
    Subscribe = 2,
    /// Primary → follower: the subscription is accepted; where the stream starts.
    Subscribed = 3,
    /// Primary → follower: one WAL entry.
    Entry = 4,
    /// Primary → follower: the highest acknowledged LSN.
    Commit = 5,
    /// Primary → follower: a flush was committed to the catalog.
    FlushNotice = 6,
    /// Standby → primary: durable (fsynced) up to an LSN.
    Ack = 7,
    /// Reader → primary: applied up to an LSN.
    Applied = 8,
    /// Either way: I am alive (sent when the stream is otherwise idle).
    KeepAlive = 9,
    /// Either way: the peer is refused, with a reason; the stream ends after it.
    Refuse = 10,
}

impl FrameKind {
    /// Returns the kind for a `kind` byte, if it is one this build knows.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Hello,
            2 => FrameKind::Subscribe,
            3 => FrameKind::Subscribed,
            4 => FrameKind::Entry,
            5 => FrameKind::Commit,
            6 => FrameKind::FlushNotice,
            7 => FrameKind::Ack,
            8 => FrameKind::Applied,
            9 => FrameKind::KeepAlive,
            10 => FrameKind::Refuse,
            _ => return None,
        })
    }

    /// Returns the largest body a frame of this kind may have; longer length fields are refused
    /// before anything is read or allocated.
    pub fn max_body_len(self) -> usize {
        match self {
            FrameKind::Hello => 1 + PROOF_LEN,
            FrameKind::Subscribe => 2 + MAX_NODE_ID_BYTES + 1 + 8 + 8,
            FrameKind::Subscribed => 24,
            FrameKind::Entry => ENTRY_BODY_HEADER_LEN + MAX_PAYLOAD_BYTES,
            FrameKind::Commit | FrameKind::Ack | FrameKind::Applied => 8,
            FrameKind::FlushNotice => 8 + 4 + MAX_FLUSH_TABLES * (2 + MAX_TABLE_NAME_BYTES + 8),
            FrameKind::KeepAlive => 0,
            FrameKind::Refuse => 2 + MAX_REASON_BYTES,
        }
    }

    /// Returns the lowercase name used in errors, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Hello => "hello",
            FrameKind::Subscribe => "subscribe",
            FrameKind::Subscribed => "subscribed",
            FrameKind::Entry => "entry",
            FrameKind::Commit => "commit",
            FrameKind::FlushNotice => "flush_notice",
            FrameKind::Ack => "ack",
            FrameKind::Applied => "applied",
            FrameKind::KeepAlive => "keep_alive",
            FrameKind::Refuse => "refuse",
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a follower does with the stream: a standby keeps a durable copy (and counts towards
/// acknowledgements while in sync), a reader only applies entries to serve fresh rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FollowerRole {
    /// A standby writer: appends each entry to its own WAL, fsyncs, and acks.
    Standby,
    /// A reader: applies entries in memory and reports what it applied.
    Reader,
}

impl FollowerRole {
    fn to_byte(self) -> u8 {
        match self {
            FollowerRole::Standby => 1,
            FollowerRole::Reader => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<FollowerRole> {
        match byte {
            1 => Some(FollowerRole::Standby),
            2 => Some(FollowerRole::Reader),
            _ => None,
        }
    }

    /// Returns `standby` or `reader`, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FollowerRole::Standby => "standby",
            FollowerRole::Reader => "reader",
        }
    }
}

impl fmt::Display for FollowerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A follower's request to be streamed the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The follower's node id (as the catalog and the ISR name it).
    pub node_id: String,
    /// Standby or reader.
    pub role: FollowerRole,
    /// The newest promote epoch the follower knows; a primary of an older epoch refuses it.
    pub known_epoch: Epoch,
    /// The next LSN the follower needs (it holds everything below).
    pub from_lsn: Lsn,
}

/// A committed flush, so followers can drop the rows it covers without listing the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushNotice {
    /// Catalog sequence number of the committed record.
    pub seq: u64,
    /// Each table the record covers and the highest LSN now flushed for it.
    pub tables: Vec<(String, Lsn)>,
}

/// One frame of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The sender's authentication proof (`None` where mTLS alone authenticates).
    Hello {
        /// HMAC-SHA256 of the connection's exported keying material, keyed by the secret.
        proof: Option<[u8; PROOF_LEN]>,
    },
    /// A follower's subscription.
    Subscribe(Subscribe),
    /// The primary accepted a subscription.
    Subscribed {
        /// The primary's writer epoch.
        epoch: Epoch,
        /// The first LSN the stream carries; above the subscription's `from_lsn` when the
        /// entries in between are no longer kept (the catalog's flushes cover them), and at
        /// most `fence_lsn + 1` for a follower that knew only older epochs.
        start_lsn: Lsn,
        /// The primary's fence: the last LSN of older epochs its promote kept. Entries of
        /// older epochs a follower holds above it were never acknowledged and are void. `None`
        /// from a primary of frame layout before the field (a 16-byte body).
        fence_lsn: Option<Lsn>,
    },
    /// One WAL entry.
    Entry(Entry),
    /// The primary's highest acknowledged LSN.
    Commit {
        /// Rows up to it were acknowledged to clients and may be shown.
        commit_lsn: Lsn,
    },
    /// A committed flush.
    FlushNotice(FlushNotice),
    /// A standby holds everything up to `durable_lsn` on disk (fsynced).
    Ack {
        /// The standby's durable LSN.
        durable_lsn: Lsn,
    },
    /// A reader applied everything up to `applied_lsn`.
    Applied {
        /// The reader's applied LSN.
        applied_lsn: Lsn,
    },
    /// Liveness on an idle stream.
    KeepAlive,
    /// The peer is refused; the sender closes the stream after it.
    Refuse {
        /// Why, for the refused side's logs.
        reason: String,
    },
}

/// Why bytes are not a valid frame. Every variant names the frame kind when it is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer ends before the frame does (not an error on a stream: read more).
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete {
        /// Bytes missing to the end of the frame (or of its header).
        needed: usize,
    },
    /// The frame's version byte is not [`FRAME_VERSION`].
    #[error("unsupported replication frame version {version}")]
    UnsupportedVersion {
        /// The version byte as read.
        version: u8,
    },
    /// The kind byte is unknown.
    #[error("unknown replication frame kind {kind}")]
    UnknownKind {
        /// The kind byte as read.
        kind: u8,
    },
    /// The length field is above the bound for the kind (or below its header).
    #[error("{kind} frame body of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// The frame kind.
        kind: FrameKind,
        /// The body length as read.
        len: u64,
        /// The limit for the kind.
        max: usize,
    },
    /// The length field cannot even hold the version and kind bytes.
    #[error("replication frame length {len} is shorter than its header")]
    TooShort {
        /// The length field as read.
        len: u32,
    },
    /// The body is not what the kind requires.
    #[error("malformed {kind} frame: {what}")]
    Malformed {
        /// The frame kind.
        kind: FrameKind,
        /// What was wrong.
        what: &'static str,
    },
}

/// A frame's kind and body length, known from its first [`FRAME_HEADER_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame kind.
    pub kind: FrameKind,
    /// Bytes of body that follow the header.
    pub body_len: usize,
}

impl FrameHeader {
    /// Decodes and checks a frame header: version, kind, and the body length against the
    /// kind's bound, so a reader allocates nothing for a frame it will refuse.
    ///
    /// # Errors
    /// `UnsupportedVersion`, `UnknownKind`, `TooShort` or `TooLong`.
    pub fn decode(bytes: &[u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let version = bytes[4];
        if version != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion { version });
        }
        let kind =
            FrameKind::from_byte(bytes[5]).ok_or(FrameError::UnknownKind { kind: bytes[5] })?;
        // `len` counts the version and kind bytes too.
        let body_len = len.checked_sub(2).ok_or(FrameError::TooShort { len })? as usize;
        if body_len > kind.max_body_len() {
            return Err(FrameError::TooLong {
                kind,
                len: body_len as u64,
                max: kind.max_body_len(),
            });
        }
        Ok(FrameHeader { kind, body_len })
    }
}

impl Frame {
    /// Returns the frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello { .. } => FrameKind::Hello,
            Frame::Subscribe(_) => FrameKind::Subscribe,
            Frame::Subscribed { .. } => FrameKind::Subscribed,
            Frame::Entry(_) => FrameKind::Entry,
            Frame::Commit { .. } => FrameKind::Commit,
            Frame::FlushNotice(_) => FrameKind::FlushNotice,
            Frame::Ack { .. } => FrameKind::Ack,
            Frame::Applied { .. } => FrameKind::Applied,
            Frame::KeepAlive => FrameKind::KeepAlive,
            Frame::Refuse { .. } => FrameKind::Refuse,
        }
    }

    /// Appends the encoded frame to `out`.
    ///
    /// Values beyond the wire bounds (a node id, reason or table name that is too long, more
    /// tables than [`MAX_FLUSH_TABLES`]) are cut to the bound, so that an encoded frame always
    /// decodes; an entry payload above [`MAX_PAYLOAD_BYTES`] cannot exist (the WAL refuses it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, FRAME_VERSION, self.kind() as u8]);
        match self {
            Frame::Hello { proof } => match proof {
                Some(proof) => {
                    out.push(1);
                    out.extend_from_slice(proof);
                }
                None => out.push(0),
            },
            Frame::Subscribe(subscribe) => {
                put_str(out, &subscribe.node_id, MAX_NODE_ID_BYTES);
                out.push(subscribe.role.to_byte());
                out.extend_from_slice(&subscribe.known_epoch.0.to_le_bytes());
                out.extend_from_slice(&subscribe.from_lsn.0.to_le_bytes());
            }
            Frame::Subscribed {
                epoch,
                start_lsn,
                fence_lsn,
            } => {
                out.extend_from_slice(&epoch.0.to_le_bytes());
                out.extend_from_slice(&start_lsn.0.to_le_bytes());
                if let Some(fence) = fence_lsn {
                    out.extend_from_slice(&fence.0.to_le_bytes());
                }
            }
            Frame::Entry(entry) => {
                debug_assert!(entry.payload.len() <= MAX_PAYLOAD_BYTES);
                out.extend_from_slice(&entry.epoch.0.to_le_bytes());
                out.extend_from_slice(&entry.lsn.0.to_le_bytes());
                out.extend_from_slice(&entry.payload);
            }
            Frame::Commit { commit_lsn: lsn }
            | Frame::Ack { durable_lsn: lsn }
            | Frame::Applied { applied_lsn: lsn } => out.extend_from_slice(&lsn.0.to_le_bytes()),
            Frame::FlushNotice(notice) => {
                out.extend_from_slice(&notice.seq.to_le_bytes());
                let tables = &notice.tables[..notice.tables.len().min(MAX_FLUSH_TABLES)];
                let count = u32::try_from(tables.len()).expect("bounded by MAX_FLUSH_TABLES");
                out.extend_from_slice(&count.to_le_bytes());
                for (table, lsn) in tables {
                    put_str(out, table, MAX_TABLE_NAME_BYTES);
                    out.extend_from_slice(&lsn.0.to_le_bytes());
                }
            }
            Frame::KeepAlive => {}
            Frame::Refuse { reason } => put_str(out, reason, MAX_REASON_BYTES),
        }
        let len = u32::try_from(out.len() - start - 4)
            .expect("every frame body is bounded well below 4 GiB");
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Returns the encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes the frame at the front of `bytes` and returns it with the number of bytes it
    /// took.
    ///
    /// # Errors
    /// `Incomplete` if `bytes` ends before the frame does (read more and retry); any other
    /// variant if the bytes are not a valid frame (the stream cannot be trusted after it).
    pub fn decode(bytes: &[u8]) -> Result<(Frame, usize), FrameError> {
        let Some(header_bytes) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
            return Err(FrameError::Incomplete {
                needed: FRAME_HEADER_LEN - bytes.len(),
            });
        };
        let header = FrameHeader::decode(header_bytes)?;
        let body = &bytes[FRAME_HEADER_LEN..];
        if body.len() < header.body_len {
            return Err(FrameError::Incomplete {
                needed: header.body_len - body.len(),
            });
        }
        let frame = Frame::decode_body(header.kind, body[..header.body_len].to_vec())?;
        Ok((frame, FRAME_HEADER_LEN + header.body_len))
    }

    /// Decodes a body of `kind` whose header was checked by [`FrameHeader::decode`]. Takes the
    /// body by value so an entry's payload is reused rather than copied.
    ///
    /// # Errors
    /// `Malformed` if the body does not have exactly the fields the kind requires, `TooLong`
    /// if it exceeds the kind's bound.
    pub fn decode_body(kind: FrameKind, body: Vec<u8>) -> Result<Frame, FrameError> {
        if body.len() > kind.max_body_len() {
            return Err(FrameError::TooLong {
                kind,
                len: body.len() as u64,
                max: kind.max_body_len(),
            });
        }
        if kind == FrameKind::Entry {
            return decode_entry(body);
        }
        let mut cursor = Cursor { kind, bytes: &body };
        let frame = match kind {
            FrameKind::Hello => match cursor.u8("proof flag")? {
                0 => Frame::Hello { proof: None },
                1 => Frame::Hello {
                    proof: Some(cursor.array::<PROOF_LEN>("proof")?),
                },
                _ => return Err(cursor.malformed("proof flag is neither 0 nor 1")),
            },
            FrameKind::Subscribe => {
                let node_id = cursor.string("node id", MAX_NODE_ID_BYTES)?;
                if node_id.is_empty() {
                    return Err(cursor.malformed("empty node id"));
                }
                let role = FollowerRole::from_byte(cursor.u8("role")?)
                    .ok_or_else(|| cursor.malformed("unknown role"))?;
                Frame::Subscribe(Subscribe {
                    node_id,
                    role,
                    known_epoch: Epoch(cursor.u64("known epoch")?),
                    from_lsn: Lsn(cursor.u64("from lsn")?),
                })
            }
            FrameKind::Subscribed => Frame::Subscribed {
                epoch: Epoch(cursor.u64("epoch")?),
                start_lsn: Lsn(cursor.u64("start lsn")?),
                // Absent from an older primary's frame.
                fence_lsn: if cursor.bytes.is_empty() {
                    None
                } else {
                    Some(Lsn(cursor.u64("fence lsn")?))
                },
            },
            FrameKind::Commit => Frame::Commit {
                commit_lsn: Lsn(cursor.u64("commit lsn")?),
            },
            FrameKind::Ack => Frame::Ack {
                durable_lsn: Lsn(cursor.u64("durable lsn")?),
            },
            FrameKind::Applied => Frame::Applied {
                applied_lsn: Lsn(cursor.u64("applied lsn")?),
            },
            FrameKind::FlushNotice => {
                let seq = cursor.u64("seq")?;
                let count = cursor.u32("table count")? as usize;
                if count > MAX_FLUSH_TABLES {
                    return Err(cursor.malformed("too many tables"));
                }
                // `count` is bounded, and each table takes at least 10 body bytes, so this
                // allocation is bounded by the (already bounded) body.
                let mut tables = Vec::with_capacity(count.min(cursor.bytes.len() / 10));
                for _ in 0..count {
                    let table = cursor.string("table name", MAX_TABLE_NAME_BYTES)?;
                    let lsn = Lsn(cursor.u64("table lsn")?);
                    tables.push((table, lsn));
                }
                Frame::FlushNotice(FlushNotice { seq, tables })
            }
            FrameKind::KeepAlive => Frame::KeepAlive,
            FrameKind::Refuse => Frame::Refuse {
                reason: cursor.string("reason", MAX_REASON_BYTES)?,
            },
            FrameKind::Entry => unreachable!("entries are decoded above"),
        };
        if !cursor.bytes.is_empty() {
            return Err(cursor.malformed("trailing bytes after the last field"));
        }
        Ok(frame)
    }
}

/// Returns the header of an entry frame carrying `payload_len` bytes, so a sender can write the
/// payload from where it already is instead of copying it into a frame buffer.
pub fn encode_entry_header(epoch: Epoch, lsn: Lsn, payload_len: usize) -> [u8; 22] {
    debug_assert!(payload_len <= MAX_PAYLOAD_BYTES);
    let len = u32::try_from(2 + ENTRY_BODY_HEADER_LEN + payload_len)
        .expect("payload length is bounded by MAX_PAYLOAD_BYTES");
    let mut header = [0u8; 22];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4] = FRAME_VERSION;
    header[5] = FrameKind::Entry as u8;
    header[6..14].copy_from_slice(&epoch.0.to_le_bytes());
    header[14..22].copy_from_slice(&lsn.0.to_le_bytes());
    header
}

fn decode_entry(mut body: Vec<u8>) -> Result<Frame, FrameError> {
    let Some(fixed) = body.first_chunk::<ENTRY_BODY_HEADER_LEN>() else {
        return Err(FrameError::Malformed {
            kind: FrameKind::Entry,
            what: "body shorter than epoch and lsn",
        });
    };
    let epoch = Epoch(u64::from_le_bytes(fixed[0..8].try_into().expect("8 bytes")));
    let lsn = Lsn(u64::from_le_bytes(
        fixed[8..16].try_into().expect("8 bytes"),
    ));
    if lsn == Lsn::RESERVED {
        return Err(FrameError::Malformed {
            kind: FrameKind::Entry,
            what: "reserved lsn",
        });
    }
    body.drain(..ENTRY_BODY_HEADER_LEN);
    Ok(Frame::Entry(Entry {
        epoch,
        lsn,
        payload: body,
    }))
}

/// Appends a `u16`-length-prefixed string, cut (at a character boundary) to `max` bytes.
fn put_str(out: &mut Vec<u8>, value: &str, max: usize) {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let len = u16::try_from(end).expect("string bounds are below 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&value.as_bytes()[..end]);
}

/// Reads fields off the front of a body; every read is bounds-checked.
struct Cursor<'a> {
    kind: FrameKind,
    bytes: &'a [u8],
}

impl Cursor<'_> {
    fn malformed(&self, what: &'static str) -> FrameError {
        FrameError::Malformed {
            kind: self.kind,
            what,
        }
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&[u8], FrameError> {
        if self.bytes.len() < len {
            return Err(self.malformed(what));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FrameError> {
        let bytes = self.take(N, what)?;
        Ok(bytes.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &'static str, max: usize) -> Result<String, FrameError> {
        let len = u16::from_le_bytes(self.array(what)?) as usize;
        if len > max {
            return Err(self.malformed(what));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed(what))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::Hello {
                proof: Some([7; PROOF_LEN]),
            },
            Frame::Hello { proof: None },
            Frame::Subscribe(Subscribe {
                node_id: "standby-1".into(),
                role: FollowerRole::Standby,
                known_epoch: Epoch(3),
                from_lsn: Lsn(42),
            }),
            Frame::Subscribed {
                epoch: Epoch(3),
                start_lsn: Lsn(40),
                fence_lsn: Some(Lsn(39)),
            },
            Frame::Subscribed {
                epoch: Epoch(3),
                start_lsn: Lsn(40),
                fence_lsn: None,
            },
            Frame::Entry(Entry {
                epoch: Epoch(3),
                lsn: Lsn(42),
                payload: b"rows".to_vec(),
            }),
            Frame::Commit {
                commit_lsn: Lsn(41),
            },
            Frame::FlushNotice(FlushNotice {
                seq: 9,
                tables: vec![("db/cpu".into(), Lsn(30)), ("db/mem".into(), Lsn(31))],
            }),
            Frame::Ack {
                durable_lsn: Lsn(42),
            },
            Frame::Applied {
                applied_lsn: Lsn(42),
            },
            Frame::KeepAlive,
            Frame::Refuse {
                reason: "older epoch".into(),
            },
        ]
    }

    #[test]
    fn test_should_pin_the_bytes_of_a_commit_frame() {
        // A change here is a wire format change: bump FRAME_VERSION.
        let bytes = Frame::Commit {
            commit_lsn: Lsn(0x0102),
        }
        .to_bytes();
        assert_eq!(bytes, [10, 0, 0, 0, 1, 5, 0x02, 0x01, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn test_should_read_a_subscribed_frame_with_or_without_the_fence() {
        // The fence came later: a primary of the earlier layout sends 16 bytes, and its
        // followers must still understand it (they are upgraded first).
        let older = [
            18, 0, 0, 0, 1, 3, 2, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0,
        ];
        let (frame, used) = Frame::decode(&older).expect("decode");
        assert_eq!(used, older.len());
        assert_eq!(
            frame,
            Frame::Subscribed {
                epoch: Epoch(2),
                start_lsn: Lsn(9),
                fence_lsn: None,
            }
        );
        let newer = Frame::Subscribed {
            epoch: Epoch(2),
            start_lsn: Lsn(9),
            fence_lsn: Some(Lsn(7)),
        }
        .to_bytes();
        assert_eq!(newer[..4], [26, 0, 0, 0]);
        assert_eq!(newer[6..22], older[6..]);
        assert_eq!(newer[22..], [7, 0, 0, 0, 0, 0, 0, 0]);
        // Anything but 16 or 24 bytes is malformed.
        let mut odd = older.to_vec();
        odd[0] = 22;
        odd.extend([1, 2, 3, 4]);
        assert!(matches!(
            Frame::decode(&odd),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn test_should_round_trip_every_kind_and_report_partial_frames() {
        let mut stream = Vec::new();
        for frame in sample_frames() {
            frame.encode(&mut stream);
        }
        let mut rest = &stream[..];
        for expected in sample_frames() {
            let (frame, used) = Frame::decode(rest).expect("decode");
            assert_eq!(frame, expected);
            assert!(matches!(
                Frame::decode(&rest[..used - 1]),
                Err(FrameError::Incomplete { needed: 1 })
            ));
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn test_should_match_the_entry_header_helper() {
        let entry = Entry {
            epoch: Epoch(5),
            lsn: Lsn(77),
            payload: vec![1, 2, 3],
        };
        let bytes = Frame::Entry(entry.clone()).to_bytes();
        assert_eq!(bytes[..22], encode_entry_header(entry.epoch, entry.lsn, 3));
        assert_eq!(bytes[22..], entry.payload);
    }

    #[test]
    fn test_should_refuse_oversized_and_unknown_frames_before_reading_the_body() {
        let mut header = [0u8; FRAME_HEADER_LEN];
        header[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        header[4] = FRAME_VERSION;
        header[5] = FrameKind::Entry as u8;
        assert!(matches!(
            FrameHeader::decode(&header),
            Err(FrameError::TooLong {
                kind: FrameKind::Entry,
                ..
            })
        ));
        header[0..4].copy_from_slice(&100u32.to_le_bytes());
        header[5] = FrameKind::Commit as u8;
        let error = FrameHeader::decode(&header).expect_err("a commit is 8 bytes");
        assert_eq!(
            error.to_string(),
            "commit frame body of 98 bytes exceeds the limit of 8 bytes"
        );
        header[5] = 200;
        assert_eq!(
            FrameHeader::decode(&header),
            Err(FrameError::UnknownKind { kind: 200 })
        );
        header[4] = 2;
        assert_eq!(
            FrameHeader::decode(&header),
            Err(FrameError::UnsupportedVersion { version: 2 })
        );
        header[4] = FRAME_VERSION;
        header[5] = FrameKind::Commit as u8;
        header[0..4].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            FrameHeader::decode(&header),
            Err(FrameError::TooShort { len: 1 })
        );
    }

    #[test]
    fn test_should_refuse_malformed_bodies_naming_the_kind() {
        let mut bytes = Frame::Subscribe(Subscribe {
            node_id: "n".into(),
            role: FollowerRole::Reader,
            known_epoch: Epoch(1),
            from_lsn: Lsn(1),
        })
        .to_bytes();
        // The role byte follows the 2-byte length and the 1-byte id.
        bytes[FRAME_HEADER_LEN + 3] = 9;
        let error = Frame::decode(&bytes).expect_err("bad role");
        assert_eq!(error.to_string(), "malformed subscribe frame: unknown role");

        let mut bytes = Frame::KeepAlive.to_bytes();
        bytes.push(0);
        bytes[0] += 1;
        assert!(matches!(
            Frame::decode(&bytes),
            Err(FrameError::TooLong {
                kind: FrameKind::KeepAlive,
                ..
            })
        ));
        let mut bytes = Frame::Refuse {
            reason: "é".into()
        }
        .to_bytes();
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        assert_eq!(
            Frame::decode(&bytes),
            Err(FrameError::Malformed {
                kind: FrameKind::Refuse,
                what: "reason"
            })
        );
    }

    #[test]
    fn test_should_cut_overlong_strings_at_a_character_boundary() {
        let reason = "é".repeat(MAX_REASON_BYTES);
        let (frame, _) = Frame::decode(&Frame::Refuse { reason }.to_bytes()).expect("decode");
        let Frame::Refuse { reason } = frame else {
            panic!("{frame:?}")
        };
        assert_eq!(reason.len(), MAX_REASON_BYTES);
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let lsn = any::<u64>().prop_map(|lsn| Lsn(lsn.min(u64::MAX - 1)));
        prop_oneof![
            proptest::option::of(any::<[u8; PROOF_LEN]>()).prop_map(|proof| Frame::Hello { proof }),
            ("[a-z0-9-]{1,40}", any::<bool>(), any::<u64>(), lsn.clone()).prop_map(
                |(node_id, standby, epoch, from_lsn)| Frame::Subscribe(Subscribe {
                    node_id,
                    role: if standby {
                        FollowerRole::Standby
                    } else {
                        FollowerRole::Reader
                    },
                    known_epoch: Epoch(epoch),
                    from_lsn,
                })
            ),
            (any::<u64>(), lsn.clone(), proptest::option::of(lsn.clone())).prop_map(
                |(epoch, start_lsn, fence_lsn)| Frame::Subscribed {
                    epoch: Epoch(epoch),
                    start_lsn,
                    fence_lsn,
                }
            ),
            (
                any::<u64>(),
                lsn.clone(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(epoch, lsn, payload)| Frame::Entry(Entry {
                    epoch: Epoch(epoch),
                    lsn,
                    payload
                })),
            lsn.clone()
                .prop_map(|commit_lsn| Frame::Commit { commit_lsn }),
            (
                any::<u64>(),
                proptest::collection::vec(("\\PC{0,20}", lsn.clone()), 0..5)
            )
                .prop_map(|(seq, tables)| Frame::FlushNotice(FlushNotice { seq, tables })),
            lsn.clone()
                .prop_map(|durable_lsn| Frame::Ack { durable_lsn }),
            lsn.prop_map(|applied_lsn| Frame::Applied { applied_lsn }),
            Just(Frame::KeepAlive),
            "\\PC{0,60}".prop_map(|reason| Frame::Refuse { reason }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Every frame decodes to itself, and takes exactly the bytes it was encoded to.
        #[test]
        fn test_should_round_trip_any_frame(frames in proptest::collection::vec(arb_frame(), 1..6)) {
            let mut stream = Vec::new();
            for frame in &frames {
                frame.encode(&mut stream);
            }
            let mut rest = &stream[..];
            for frame in &frames {
                let (decoded, used) = Frame::decode(rest).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&decoded, frame);
                rest = &rest[used..];
            }
            prop_assert!(rest.is_empty());
        }

        /// Arbitrary bytes never panic the decoder, and what it accepts re-encodes to the same
        /// bytes.
        #[test]
        fn test_should_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200), kind in 0u8..12) {
            let mut framed = bytes.clone();
            if framed.len() >= FRAME_HEADER_LEN {
                // Steer half of the inputs past the header checks, into the body decoders.
                framed[4] = FRAME_VERSION;
                framed[5] = kind;
                let len = (framed.len() - 4) as u32;
                framed[0..4].copy_from_slice(&len.to_le_bytes());
            }
            for input in [&bytes, &framed] {
                if let Ok((frame, used)) = Frame::decode(input) {
                    prop_assert_eq!(frame.to_bytes(), input[..used].to_vec());
                }
            }
        }
    }
}
