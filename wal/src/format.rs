//! The bytes on disk: segment file names, the segment header, entry frames, and
//! [`SegmentReader`], which streams and verifies the entries of one segment.
//!
//! Pure byte logic over `Read` (and `Seek`, for the search for intact frames behind a defect):
//! this module owns no files and never writes to disk. The format is
//! specified in `docs/0001-wal-format.md`; a change to any constant or layout here is a format
//! change that needs a new [`FORMAT_VERSION`] (the snapshot tests at the bottom pin the bytes).
//!
//! Hazard: every byte read here may be torn or garbage. Nothing is trusted before it is checked,
//! a length is bounded by [`MAX_PAYLOAD_BYTES`] and by the bytes left in the file before anything
//! is allocated for it, and no input can make this module panic.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::RangeInclusive;

use crate::error::CorruptionKind;
use crate::lsn::{Epoch, Lsn};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"ARCWAL01";
/// Version written into new segment headers; the only one this build reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Header flag: this segment may start above the previous segment's last LSN + 1 (rule 6.3).
pub(crate) const FLAG_LSN_JUMP: u32 = 0b1;
/// Every flag this build understands; a valid header with any other bit set is from the future.
const KNOWN_FLAGS: u32 = FLAG_LSN_JUMP;
/// Length of the segment header.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 28;
/// Length of an entry frame before its payload.
pub(crate) const ENTRY_HEADER_LEN: u64 = 24;
/// Largest payload one entry may carry (1 GiB). Larger length fields are treated as corruption.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 30;

pub(crate) const SEGMENT_EXTENSION: &str = ".wal";
const SEGMENT_NAME_DIGITS: usize = 20;
/// Chunk size for checksumming payloads that are verified but not returned.
const SKIP_CHUNK_BYTES: usize = 16 * 1024;

/// One entry of the log, as returned by [`crate::Wal::read_from`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Writer epoch the entry was appended under.
    pub epoch: Epoch,
    /// The entry's position in the log.
    pub lsn: Lsn,
    /// The opaque bytes given to [`crate::Wal::append`].
    pub payload: Vec<u8>,
}

/// Returns the file name of the segment whose first entry is `first_lsn`.
pub(crate) fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{:020}{SEGMENT_EXTENSION}", first_lsn.0)
}

/// Parses a segment file name back into its first LSN; `None` for any other file.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_EXTENSION)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // 20 digits can exceed u64::MAX; such a name is not ours.
    digits.parse::<u64>().ok().map(Lsn)
}

/// Returns the on-disk size of an entry frame carrying `payload_len` bytes.
pub(crate) fn encoded_entry_len(payload_len: usize) -> u64 {
    ENTRY_HEADER_LEN + payload_len as u64
}

/// Appends the frame of one entry to `out`.
///
/// The caller has checked `payload.len() <= MAX_PAYLOAD_BYTES`.
pub(crate) fn encode_entry(out: &mut Vec<u8>, epoch: Epoch, lsn: Lsn, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_BYTES);
    let len = u32::try_from(payload.len())
        .expect("payload length is bounded by MAX_PAYLOAD_BYTES, checked by the caller");
    let epoch_bytes = epoch.0.to_le_bytes();
    let lsn_bytes = lsn.0.to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&epoch_bytes);
    hasher.update(&lsn_bytes);
    hasher.update(payload);
    out.reserve(ENTRY_HEADER_LEN as usize + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&epoch_bytes);
    out.extend_from_slice(&lsn_bytes);
    out.extend_from_slice(payload);
}

/// The decoded header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// LSN of the segment's first entry; equals the number in its file name.
    pub(crate) first_lsn: Lsn,
    /// Header flags ([`FLAG_LSN_JUMP`]).
    pub(crate) flags: u32,
}

/// Outcome of decoding a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// The header is intact and of this format version.
    Valid(SegmentHeader),
    /// Wrong magic or checksum.
    Corrupt,
    /// Intact, but written by a newer format.
    Unsupported { version: u32, flags: u32 },
}

impl SegmentHeader {
    /// Returns the 28 header bytes.
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut bytes = [0u8; SEGMENT_HEADER_LEN as usize];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.flags.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..24]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes and verifies 28 header bytes.
    pub(crate) fn decode(bytes: &[u8; SEGMENT_HEADER_LEN as usize]) -> HeaderCheck {
        if bytes[0..8] != SEGMENT_MAGIC {
            return HeaderCheck::Corrupt;
        }
        if crc32fast::hash(&bytes[..24]) != le_u32(bytes, 24) {
            return HeaderCheck::Corrupt;
        }
        let version = le_u32(bytes, 8);
        let flags = le_u32(bytes, 12);
        if version != FORMAT_VERSION || flags & !KNOWN_FLAGS != 0 {
            return HeaderCheck::Unsupported { version, flags };
        }
        HeaderCheck::Valid(SegmentHeader {
            first_lsn: Lsn(le_u64(bytes, 16)),
            flags,
        })
    }
}

/// Result of opening a segment for reading.
pub(crate) enum Opened<R> {
    /// The header verified; entries can be read.
    Ready(SegmentReader<R>),
    /// The header is torn, corrupt, or names another LSN than the file.
    Defect(CorruptionKind),
    /// The header is intact but from a newer format.
    Unsupported { version: u32, flags: u32 },
}

/// One step of [`SegmentReader::next_entry`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A verified entry whose payload was kept.
    Entry(Entry),
    /// A verified entry whose payload was checksummed and dropped.
    Verified { lsn: Lsn, epoch: Epoch },
    /// The segment ends cleanly after the previous entry.
    End,
    /// The entry at [`SegmentReader::offset`] is damaged; nothing after it can be trusted.
    Defect(CorruptionKind),
}

/// Streams the entries of one segment, verifying length bounds, checksums and LSN sequence.
///
/// Reads at most `len` bytes (the segment length when it was opened, or the writer's written
/// length), so bytes appended concurrently are never half-read. After a `Defect` the reader must
/// not be used again.
pub(crate) struct SegmentReader<R> {
    source: R,
    /// Bytes of the segment this reader may consume, header included.
    len: u64,
    /// Offset of the next (or the defective) entry frame.
    offset: u64,
    /// LSN the next entry must have.
    expected_lsn: Lsn,
    header: SegmentHeader,
}

impl<R: Read> SegmentReader<R> {
    /// Reads and verifies the header of the segment named after `name_lsn`, whose readable
    /// length is `len`.
    ///
    /// # Errors
    /// Only I/O errors other than a short read; damage is reported as [`Opened::Defect`].
    pub(crate) fn open(mut source: R, len: u64, name_lsn: Lsn) -> io::Result<Opened<R>> {
        let mut bytes = [0u8; SEGMENT_HEADER_LEN as usize];
        if len < SEGMENT_HEADER_LEN || !read_full(&mut source, &mut bytes)? {
            return Ok(Opened::Defect(CorruptionKind::TornHeader));
        }
        let header = match SegmentHeader::decode(&bytes) {
            HeaderCheck::Valid(header) => header,
            HeaderCheck::Corrupt => return Ok(Opened::Defect(CorruptionKind::BadHeader)),
            HeaderCheck::Unsupported { version, flags } => {
                return Ok(Opened::Unsupported { version, flags });
            }
        };
        // A renamed or copied file must not splice its entries into the wrong place in the log.
        if header.first_lsn != name_lsn {
            return Ok(Opened::Defect(CorruptionKind::BadHeader));
        }
        Ok(Opened::Ready(SegmentReader {
            source,
            len,
            offset: SEGMENT_HEADER_LEN,
            expected_lsn: header.first_lsn,
            header,
        }))
    }

    /// Returns the verified segment header.
    pub(crate) fn header(&self) -> SegmentHeader {
        self.header
    }

    /// Returns the offset just past the last verified entry, which is also where a reported
    /// defect starts.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Returns the LSN the next entry must have (the LSN of a reported defect's entry).
    pub(crate) fn expected_lsn(&self) -> Lsn {
        self.expected_lsn
    }

    /// Reads and verifies the next entry. Its payload is returned only if its LSN is at least
    /// `keep_from`; otherwise it is checksummed in chunks and dropped, so skipping costs no
    /// allocation.
    ///
    /// # Errors
    /// Only I/O errors other than a short read; damage is reported as [`Step::Defect`].
    pub(crate) fn next_entry(&mut self, keep_from: Option<Lsn>) -> io::Result<Step> {
        // `offset <= len` holds: it starts at the header length (checked in `open`) and only
        // advances by frames that were checked to fit.
        let remaining = self.len - self.offset;
        if remaining == 0 {
            return Ok(Step::End);
        }
        let mut frame_header = [0u8; ENTRY_HEADER_LEN as usize];
        if remaining < ENTRY_HEADER_LEN || !read_full(&mut self.source, &mut frame_header)? {
            return Ok(Step::Defect(CorruptionKind::TornEntry));
        }
        let payload_len = le_u32(&frame_header, 0);
        let stored_crc = le_u32(&frame_header, 4);
        let epoch = Epoch(le_u64(&frame_header, 8));
        let lsn = Lsn(le_u64(&frame_header, 16));
        if payload_len as usize > MAX_PAYLOAD_BYTES {
            return Ok(Step::Defect(CorruptionKind::OversizedEntry {
                len: payload_len,
            }));
        }
        let frame_len = ENTRY_HEADER_LEN + u64::from(payload_len);
        if frame_len > remaining {
            return Ok(Step::Defect(CorruptionKind::TornEntry));
        }

        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&frame_header[8..]);
        // The LSN is not verified yet, but it only decides whether to allocate, and the
        // allocation is bounded by bytes that exist in the file.
        let keep = keep_from.is_some_and(|from| lsn >= from);
        let payload = if keep {
            let mut payload = vec![0u8; payload_len as usize];
            if !read_full(&mut self.source, &mut payload)? {
                return Ok(Step::Defect(CorruptionKind::TornEntry));
            }
            hasher.update(&payload);
            Some(payload)
        } else {
            let mut chunk = [0u8; SKIP_CHUNK_BYTES];
            let mut left = payload_len as usize;
            while left > 0 {
                let take = left.min(SKIP_CHUNK_BYTES);
                if !read_full(&mut self.source, &mut chunk[..take])? {
                    return Ok(Step::Defect(CorruptionKind::TornEntry));
                }
                hasher.update(&chunk[..take]);
                left -= take;
            }
            None
        };
        if hasher.finalize() != stored_crc {
            return Ok(Step::Defect(CorruptionKind::ChecksumMismatch));
        }
        if lsn != self.expected_lsn || lsn == Lsn::RESERVED {
            return Ok(Step::Defect(CorruptionKind::LsnMismatch {
                expected: self.expected_lsn,
                found: lsn,
            }));
        }

        self.offset += frame_len;
        // Cannot overflow: `lsn` is below the reserved LSN.
        self.expected_lsn = lsn.saturating_next();
        Ok(match payload {
            Some(payload) => Step::Entry(Entry {
                epoch,
                lsn,
                payload,
            }),
            None => Step::Verified { lsn, epoch },
        })
    }
}

/// Bytes of a segment [`find_intact_frames`] examines per read.
const FRAME_SCAN_CHUNK_BYTES: usize = 1 << 20;

/// What [`find_intact_frames`] found in a byte range.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameScan {
    /// Intact, non-overlapping entry frames found.
    pub(crate) frames: u64,
    /// Offset and LSN of the first of them.
    pub(crate) first: Option<(u64, Lsn)>,
    /// Set when the checksumming budget ran out before the end of the range, so `frames` is a
    /// lower bound and the absence of frames proves nothing.
    pub(crate) incomplete: bool,
}

/// Looks for intact entry frames at every byte offset in `from..end` of a segment: a frame whose
/// length fits in the range, whose LSN lies in `lsns`, and whose checksum verifies. After a
/// frame is found the search continues behind it.
///
/// Recovery uses it to tell a torn tail (nothing intact after the defect) from corruption with
/// acknowledged entries behind it, including when the damage hit a length field, so that the
/// frame boundaries after it are unknown. The LSN window is the cheap filter that keeps this
/// linear: random bytes almost never hold a plausible LSN, and only candidates that pass it are
/// checksummed. `budget` bounds the payload bytes checksummed for candidates (payloads full of
/// small integers could otherwise make the scan quadratic); when it runs out the scan stops and
/// says so.
///
/// # Errors
/// Only I/O errors other than a short read (a file that shrank ends the scan).
pub(crate) fn find_intact_frames<R: Read + Seek>(
    source: &mut R,
    from: u64,
    end: u64,
    lsns: RangeInclusive<u64>,
    budget: &mut u64,
) -> io::Result<FrameScan> {
    let mut scan = FrameScan::default();
    // `window` holds the bytes `window_start..window_start + window.len()` of the file.
    let mut window: Vec<u8> = Vec::new();
    let mut window_start = from;
    let mut candidate = from;
    while end.saturating_sub(candidate) >= ENTRY_HEADER_LEN {
        let window_end = window_start + window.len() as u64;
        if candidate < window_start || candidate + ENTRY_HEADER_LEN > window_end {
            let take = (end - candidate).min(FRAME_SCAN_CHUNK_BYTES as u64);
            window.resize(take as usize, 0);
            source.seek(SeekFrom::Start(candidate))?;
            if !read_full(source, &mut window)? {
                break;
            }
            window_start = candidate;
        }
        let at = (candidate - window_start) as usize;
        let frame_header: &[u8; ENTRY_HEADER_LEN as usize] = window
            [at..at + ENTRY_HEADER_LEN as usize]
            .try_into()
            .expect("the window holds a whole frame header at the candidate");
        let payload_len = u64::from(le_u32(frame_header, 0));
        let lsn = le_u64(frame_header, 16);
        let plausible = payload_len <= MAX_PAYLOAD_BYTES as u64
            && lsns.contains(&lsn)
            && lsn != Lsn::RESERVED.0
            && ENTRY_HEADER_LEN + payload_len <= end - candidate;
        if plausible {
            if payload_len > *budget {
                scan.incomplete = true;
                return Ok(scan);
            }
            *budget -= payload_len;
            let payload_start = candidate + ENTRY_HEADER_LEN;
            let in_window = (payload_start + payload_len) <= window_start + window.len() as u64;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&frame_header[8..]);
            let complete = if in_window {
                let payload_at = (payload_start - window_start) as usize;
                hasher.update(&window[payload_at..payload_at + payload_len as usize]);
                true
            } else {
                hash_range(source, payload_start, payload_len, &mut hasher)?
            };
            if complete && hasher.finalize() == le_u32(frame_header, 4) {
                scan.frames += 1;
                scan.first.get_or_insert((candidate, Lsn(lsn)));
                candidate = payload_start + payload_len;
                continue;
            }
        }
        candidate += 1;
    }
    Ok(scan)
}

/// Feeds `len` bytes at `offset` of `source` to `hasher`; `Ok(false)` if the file ends first.
fn hash_range<R: Read + Seek>(
    source: &mut R,
    offset: u64,
    len: u64,
    hasher: &mut crc32fast::Hasher,
) -> io::Result<bool> {
    source.seek(SeekFrom::Start(offset))?;
    let mut chunk = [0u8; SKIP_CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        let take = left.min(SKIP_CHUNK_BYTES as u64) as usize;
        if !read_full(source, &mut chunk[..take])? {
            return Ok(false);
        }
        hasher.update(&chunk[..take]);
        left -= take as u64;
    }
    Ok(true)
}

/// Fills `buf`, returning `Ok(false)` if the source ends first (the file is shorter than its
/// length said, e.g. truncated since).
fn read_full<R: Read>(source: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    match source.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(
        bytes[at..at + 4]
            .try_into()
            .expect("callers pass offsets inside fixed-size headers"),
    )
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(
        bytes[at..at + 8]
            .try_into()
            .expect("callers pass offsets inside fixed-size headers"),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A segment image: header for `first_lsn`, then one frame per `(lsn, payload)`.
    fn segment_bytes(first_lsn: u64, entries: &[(u64, &[u8])]) -> Vec<u8> {
        let header = SegmentHeader {
            first_lsn: Lsn(first_lsn),
            flags: 0,
        };
        let mut bytes = header.encode().to_vec();
        for (lsn, payload) in entries {
            encode_entry(&mut bytes, Epoch(1), Lsn(*lsn), payload);
        }
        bytes
    }

    fn read_steps(bytes: &[u8], name_lsn: u64) -> Vec<Step> {
        let Opened::Ready(mut reader) =
            SegmentReader::open(Cursor::new(bytes), bytes.len() as u64, Lsn(name_lsn))
                .expect("in-memory read")
        else {
            panic!("header should verify");
        };
        let mut steps = Vec::new();
        loop {
            let step = reader.next_entry(Some(Lsn(0))).expect("in-memory read");
            let stop = !matches!(step, Step::Entry(_));
            steps.push(step);
            if stop {
                return steps;
            }
        }
    }

    #[test]
    fn test_should_pin_the_bytes_of_an_encoded_entry() {
        let mut bytes = Vec::new();
        encode_entry(&mut bytes, Epoch(7), Lsn(42), b"arc");
        #[rustfmt::skip]
        let expected: [u8; 27] = [
            0x03, 0x00, 0x00, 0x00,                         // len = 3
            0xf6, 0x1f, 0xa2, 0x74,                         // crc32(epoch ‖ lsn ‖ payload)
            0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // epoch = 7
            0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // lsn = 42
            b'a', b'r', b'c',                               // payload
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn test_should_pin_the_bytes_of_a_segment_header() {
        let header = SegmentHeader {
            first_lsn: Lsn(1),
            flags: FLAG_LSN_JUMP,
        };
        #[rustfmt::skip]
        let expected: [u8; 28] = [
            b'A', b'R', b'C', b'W', b'A', b'L', b'0', b'1', // magic
            0x01, 0x00, 0x00, 0x00,                         // version = 1
            0x01, 0x00, 0x00, 0x00,                         // flags = LSN_JUMP
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first_lsn = 1
            0x76, 0x70, 0x4a, 0x01,                         // crc32(bytes 0..24)
        ];
        assert_eq!(header.encode(), expected);
        assert_eq!(SegmentHeader::decode(&expected), HeaderCheck::Valid(header));
    }

    #[test]
    fn test_should_name_segments_with_twenty_digits_and_parse_only_those() {
        assert_eq!(segment_file_name(Lsn(42)), "00000000000000000042.wal");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal"),
            Some(Lsn(42))
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(Lsn(u64::MAX))),
            Some(Lsn(u64::MAX))
        );
        for other in [
            "42.wal",
            "00000000000000000042.wal.corrupt",
            "0000000000000000004a.wal",
            "99999999999999999999.wal",
            "+0000000000000000042.wal",
            "wal.lock",
            "",
        ] {
            assert_eq!(parse_segment_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn test_should_read_back_encoded_entries() {
        let bytes = segment_bytes(5, &[(5, b"a"), (6, b""), (7, b"ccc")]);
        let steps = read_steps(&bytes, 5);
        let lsns: Vec<u64> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Entry(entry) => Some(entry.lsn.0),
                _ => None,
            })
            .collect();
        assert_eq!(lsns, [5, 6, 7]);
        assert_eq!(steps.last(), Some(&Step::End));
    }

    #[test]
    fn test_should_reject_absurd_lengths_without_allocating() {
        for len in [MAX_PAYLOAD_BYTES as u32 + 1, u32::MAX] {
            let mut bytes = segment_bytes(1, &[(1, b"ok")]);
            let mut frame = Vec::new();
            encode_entry(&mut frame, Epoch(1), Lsn(2), b"xy");
            frame[0..4].copy_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&frame);
            let steps = read_steps(&bytes, 1);
            assert_eq!(
                steps.last(),
                Some(&Step::Defect(CorruptionKind::OversizedEntry { len }))
            );
        }
        // Within the limit but beyond the end of the file: torn, also without allocating.
        let mut bytes = segment_bytes(1, &[]);
        let mut frame = Vec::new();
        encode_entry(&mut frame, Epoch(1), Lsn(1), b"xy");
        frame[0..4].copy_from_slice(&(MAX_PAYLOAD_BYTES as u32).to_le_bytes());
        bytes.extend_from_slice(&frame);
        assert_eq!(
            read_steps(&bytes, 1),
            [Step::Defect(CorruptionKind::TornEntry)]
        );
    }

    #[test]
    fn test_should_report_checksum_and_sequence_defects_at_the_entry_offset() {
        let mut bytes = segment_bytes(1, &[(1, b"a"), (2, b"b")]);
        let second_entry = SEGMENT_HEADER_LEN + encoded_entry_len(1);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let Opened::Ready(mut reader) =
            SegmentReader::open(Cursor::new(&bytes), bytes.len() as u64, Lsn(1)).expect("read")
        else {
            panic!("header should verify");
        };
        assert!(matches!(
            reader.next_entry(None),
            Ok(Step::Verified { lsn: Lsn(1), .. })
        ));
        assert_eq!(
            reader.next_entry(None).expect("read"),
            Step::Defect(CorruptionKind::ChecksumMismatch)
        );
        assert_eq!(reader.offset(), second_entry);

        let skipping = segment_bytes(1, &[(1, b"a"), (3, b"b")]);
        assert_eq!(
            read_steps(&skipping, 1).last(),
            Some(&Step::Defect(CorruptionKind::LsnMismatch {
                expected: Lsn(2),
                found: Lsn(3)
            }))
        );
    }

    #[test]
    fn test_should_classify_headers() {
        let good = segment_bytes(9, &[]);
        fn open(bytes: &[u8], name: u64) -> Opened<Cursor<&[u8]>> {
            SegmentReader::open(Cursor::new(bytes), bytes.len() as u64, Lsn(name)).expect("read")
        }
        assert!(matches!(open(&good, 9), Opened::Ready(_)));
        assert!(matches!(
            open(&good, 10),
            Opened::Defect(CorruptionKind::BadHeader)
        ));
        assert!(matches!(
            open(&good[..27], 9),
            Opened::Defect(CorruptionKind::TornHeader)
        ));
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            open(&bad_magic, 9),
            Opened::Defect(CorruptionKind::BadHeader)
        ));
        let mut bad_crc = good.clone();
        bad_crc[20] ^= 1;
        assert!(matches!(
            open(&bad_crc, 9),
            Opened::Defect(CorruptionKind::BadHeader)
        ));

        let mut future = good.clone();
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&future[..24]);
        future[24..28].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            open(&future, 9),
            Opened::Unsupported {
                version: 2,
                flags: 0
            }
        ));
    }
}
