//! Request body decompression: gzip or zstd, detected from the first bytes (COMPAT.md), with a
//! hard cap on the decompressed size.
//!
//! Hazard: a few kilobytes of gzip or zstd can expand to gigabytes. Decoding is streamed in
//! fixed chunks into a buffer that never grows past the cap, so a bomb costs at most `max`
//! bytes of memory and the time to produce them before it is refused with
//! [`IngestError::TooLarge`]. zstd's window is also bounded, since a frame header may ask the
//! decoder for a window of up to 128 MiB whatever the content.

use std::io::{self, Read};

use bytes::Bytes;
use flate2::read::MultiGzDecoder;

use super::IngestError;
use super::admission::Reservation;

/// gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// zstd's frame magic bytes (little-endian 0xFD2FB528).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Bytes asked of the decoder per read: bounds how far past the cap one read can go.
const CHUNK: usize = 64 * 1024;

/// Smallest zstd window we always allow (8 MiB, what level 19 uses when streaming), so that
/// ordinary clients are never refused for their window however small the cap.
const ZSTD_MIN_WINDOW_LOG: u32 = 23;

/// Largest zstd window we allow (128 MiB, zstd's own default limit).
const ZSTD_MAX_WINDOW_LOG: u32 = 27;

/// Returns the body decompressed if it starts with the gzip or zstd magic, else unchanged.
///
/// Concatenated gzip members and concatenated zstd frames are decoded as one stream, as Go's
/// and zstd's own readers do.
///
/// # Errors
///
/// - [`IngestError::TooLarge`] when the (decompressed) body is longer than `max_decompressed`.
/// - [`IngestError::Invalid`] naming `gzip` or `zstd` when the stream is corrupt or truncated.
/// - [`IngestError::Busy`] (or `TooLarge`) when `reservation` cannot grow to cover the
///   inflated bytes.
pub fn decompress(
    body: Bytes,
    max_decompressed: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, IngestError> {
    if body.starts_with(&GZIP_MAGIC) {
        let decoder = MultiGzDecoder::new(&body[..]);
        return read_capped(decoder, body.len(), max_decompressed, "gzip", reservation);
    }
    if body.starts_with(&ZSTD_MAGIC) {
        let mut decoder = zstd::stream::read::Decoder::with_buffer(&body[..])
            .map_err(|error| codec_error("zstd", &error))?;
        decoder
            .window_log_max(zstd_window_log(max_decompressed))
            .map_err(|error| codec_error("zstd", &error))?;
        return read_capped(decoder, body.len(), max_decompressed, "zstd", reservation);
    }
    if body.len() > max_decompressed {
        return Err(IngestError::TooLarge {
            limit: max_decompressed,
        });
    }
    Ok(body)
}

/// Whether `body` is gzip or zstd: its inflated size is unknown until it is decoded, so it is
/// decoded off the async threads whatever its compressed size.
pub fn is_compressed(body: &[u8]) -> bool {
    body.starts_with(&GZIP_MAGIC) || body.starts_with(&ZSTD_MAGIC)
}

/// Returns the zstd window log to allow: enough for `max` bytes, within the fixed bounds.
fn zstd_window_log(max: usize) -> u32 {
    let needed = usize::BITS - max.saturating_sub(1).leading_zeros();
    needed.clamp(ZSTD_MIN_WINDOW_LOG, ZSTD_MAX_WINDOW_LOG)
}

/// Reads `reader` to the end into a buffer of at most `max` bytes.
fn read_capped(
    mut reader: impl Read,
    compressed_len: usize,
    max: usize,
    codec: &str,
    reservation: &mut Reservation,
) -> Result<Bytes, IngestError> {
    // A guess at the final size saves most regrowth for ordinary bodies without trusting the
    // (attacker-chosen) ratio.
    let guess = compressed_len.saturating_mul(4).clamp(0, max);
    reservation.grow_to(compressed_len.saturating_add(guess))?;
    let mut out: Vec<u8> = Vec::with_capacity(guess);
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(codec_error(codec, &error)),
        };
        let needed = out.len() + read;
        if needed > max {
            return Err(IngestError::TooLarge { limit: max });
        }
        if needed > out.capacity() {
            // Grow geometrically but never past the cap, so memory stays within `max`.
            let target = out.capacity().saturating_mul(2).clamp(needed, max);
            // Paid for before it is allocated: the compressed body and the new buffer.
            reservation.grow_to(compressed_len.saturating_add(target))?;
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..read]);
    }
    Ok(Bytes::from(out))
}

/// Builds the 400 error for a corrupt or truncated stream.
fn codec_error(codec: &str, error: &io::Error) -> IngestError {
    IngestError::Invalid(format!("invalid {codec} body: {error}"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;
    use crate::ingest::InflightBudget;

    /// Decompresses with a budget that is never the limit (the budget has its own tests).
    fn decompress(body: Bytes, max: usize) -> Result<Bytes, IngestError> {
        let mut reservation = InflightBudget::new(1 << 40).reserve(0).unwrap();
        super::decompress(body, max, &mut reservation)
    }

    #[test]
    fn test_should_pay_for_inflated_bytes_from_the_budget() {
        let budget = InflightBudget::new(1 << 20);
        let bomb = zstd(&vec![0u8; 8 << 20]);
        let mut reservation = budget.reserve(bomb.len()).unwrap();
        let error = super::decompress(Bytes::from(bomb), 64 << 20, &mut reservation).unwrap_err();
        assert!(
            matches!(error, IngestError::TooLarge { limit } if limit == 1 << 20),
            "{error}"
        );
        drop(reservation);
        // Held by another request: the same body is refused for now, not for good.
        let _other = budget.reserve(900 * 1024).unwrap();
        let small = zstd(&sample()[..400 * 1024]);
        let mut reservation = budget.reserve(small.len()).unwrap();
        let error = super::decompress(Bytes::from(small), 64 << 20, &mut reservation).unwrap_err();
        assert!(matches!(error, IngestError::Busy(_)), "{error}");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| format!("cpu,host=h{} usage={}\n", i % 7, i).into_bytes())
            .collect()
    }

    #[test]
    fn test_should_round_trip_gzip() {
        let data = sample();
        let out = decompress(Bytes::from(gzip(&data)), 10 << 20).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn test_should_round_trip_zstd() {
        let data = sample();
        let out = decompress(Bytes::from(zstd(&data)), 10 << 20).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn test_should_decode_concatenated_gzip_members_and_zstd_frames() {
        let mut gz = gzip(b"a=1\n");
        gz.extend(gzip(b"b=2\n"));
        assert_eq!(
            decompress(Bytes::from(gz), 1024).unwrap(),
            &b"a=1\nb=2\n"[..]
        );
        let mut zs = zstd(b"a=1\n");
        zs.extend(zstd(b"b=2\n"));
        assert_eq!(
            decompress(Bytes::from(zs), 1024).unwrap(),
            &b"a=1\nb=2\n"[..]
        );
    }

    #[test]
    fn test_should_pass_plain_bodies_through_unchanged() {
        let body = Bytes::from_static(b"cpu usage=1");
        let out = decompress(body.clone(), 1024).unwrap();
        assert_eq!(out, body);
        assert_eq!(decompress(Bytes::new(), 0).unwrap(), Bytes::new());
        // One magic byte alone is not gzip.
        assert_eq!(
            decompress(Bytes::from_static(&[0x1f]), 10).unwrap(),
            &[0x1f][..]
        );
    }

    #[test]
    fn test_should_refuse_plain_bodies_over_the_limit() {
        let error = decompress(Bytes::from(vec![b'a'; 11]), 10).unwrap_err();
        assert_eq!(error, IngestError::TooLarge { limit: 10 });
    }

    #[test]
    fn test_should_accept_exactly_the_limit() {
        let data = vec![7u8; 5000];
        assert_eq!(decompress(Bytes::from(gzip(&data)), 5000).unwrap(), data);
        assert_eq!(
            decompress(Bytes::from(zstd(&data)), 4999).unwrap_err(),
            IngestError::TooLarge { limit: 4999 }
        );
    }

    #[test]
    fn test_should_reject_truncated_gzip() {
        let compressed = gzip(&sample());
        for cut in [3, 10, compressed.len() / 2, compressed.len() - 1] {
            let error =
                decompress(Bytes::copy_from_slice(&compressed[..cut]), 10 << 20).unwrap_err();
            assert!(
                matches!(&error, IngestError::Invalid(message) if message.contains("gzip")),
                "cut at {cut}: {error}"
            );
        }
    }

    #[test]
    fn test_should_reject_truncated_zstd() {
        let compressed = zstd(&sample());
        for cut in [4, 10, compressed.len() / 2, compressed.len() - 1] {
            let error =
                decompress(Bytes::copy_from_slice(&compressed[..cut]), 10 << 20).unwrap_err();
            assert!(
                matches!(&error, IngestError::Invalid(message) if message.contains("zstd")),
                "cut at {cut}: {error}"
            );
        }
    }

    #[test]
    fn test_should_reject_corrupt_streams() {
        let mut gz = gzip(&sample());
        let middle = gz.len() / 2;
        gz[middle] ^= 0xff;
        gz[middle + 1] ^= 0xff;
        assert!(matches!(
            decompress(Bytes::from(gz), 10 << 20),
            Err(IngestError::Invalid(message)) if message.contains("gzip")
        ));
        // Without a content checksum zstd cannot notice every flipped bit; the zstd CLI
        // writes one by default, so test with one.
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.write_all(&sample()).unwrap();
        let mut zs = encoder.finish().unwrap();
        let middle = zs.len() / 2;
        zs[middle] ^= 0xff;
        zs[middle + 1] ^= 0xff;
        assert!(matches!(
            decompress(Bytes::from(zs), 10 << 20),
            Err(IngestError::Invalid(message)) if message.contains("zstd")
        ));
        // A frame header that is garbage.
        let mut garbage = ZSTD_MAGIC.to_vec();
        garbage.extend_from_slice(&[0xff; 16]);
        assert!(matches!(
            decompress(Bytes::from(garbage), 1024),
            Err(IngestError::Invalid(message)) if message.contains("zstd")
        ));
        // Garbage after a complete gzip member is refused, not ignored.
        let mut trailing = gzip(b"x");
        trailing.extend_from_slice(b"garbage");
        assert!(decompress(Bytes::from(trailing), 1024).is_err());
    }

    #[test]
    fn test_should_refuse_gzip_bomb_fast() {
        // 100 concatenated members of 1 MiB of zeros: 100 MiB once decoded.
        let bomb = gzip(&vec![0u8; 1 << 20]).repeat(100);
        assert!(bomb.len() < 1 << 20);
        let started = Instant::now();
        let error = decompress(Bytes::from(bomb), 1 << 20).unwrap_err();
        assert_eq!(error, IngestError::TooLarge { limit: 1 << 20 });
        // Generous: the point is that it stops at the cap, not that it is quick in debug.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn test_should_refuse_zstd_bomb_fast() {
        // 100 concatenated frames of 1 MiB of zeros: 100 MiB once decoded.
        let bomb = zstd(&vec![0u8; 1 << 20]).repeat(100);
        assert!(bomb.len() < 1 << 20);
        let started = Instant::now();
        let error = decompress(Bytes::from(bomb), 1 << 20).unwrap_err();
        assert_eq!(error, IngestError::TooLarge { limit: 1 << 20 });
        // Generous: the point is that it stops at the cap, not that it is quick in debug.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn test_should_bound_the_zstd_window() {
        assert_eq!(zstd_window_log(0), ZSTD_MIN_WINDOW_LOG);
        assert_eq!(zstd_window_log(1 << 20), ZSTD_MIN_WINDOW_LOG);
        assert_eq!(zstd_window_log((1 << 25) + 1), 26);
        assert_eq!(zstd_window_log(usize::MAX), ZSTD_MAX_WINDOW_LOG);
    }

    proptest::proptest! {
        #[test]
        fn test_should_never_panic_on_arbitrary_bytes(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            magic in 0u8..3,
        ) {
            let mut input = match magic {
                0 => GZIP_MAGIC.to_vec(),
                1 => ZSTD_MAGIC.to_vec(),
                _ => Vec::new(),
            };
            input.extend(body);
            let _ = decompress(Bytes::from(input), 1 << 16);
        }
    }
}
