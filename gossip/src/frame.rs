//! The authenticated datagram format, as pure functions over bytes and a caller-supplied `now`.
//!
//! ```text
//! magic(4) | version(1) | timestamp_ms(8, BE) | nonce(8, BE) | payload | mac(32)
//! ```
//!
//! `mac` is HMAC-SHA256 over every byte before it, keyed by a [`FrameKey`] derived from the
//! cluster's shared secret and its name (so two clusters sharing a secret by mistake still don't
//! mix). The payload is chitchat's own encoding, opaque here.
//!
//! Receiving checks, in order: length, magic, version, MAC (constant time), freshness
//! (`|now - timestamp| <= window`), and finally the [`ReplayCache`]. Only a datagram that passed
//! the MAC can touch the replay cache, so an attacker without the key cannot fill it.
//!
//! Hazard: there is no binding to the sender or receiver address. A captured datagram can be
//! re-sent once to *another* node of the same cluster within the window (each node keeps its own
//! replay cache); its content is genuine, so this can't forge state, only echo it.

use std::collections::BTreeSet;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Identifies an arc-gossip datagram.
pub const MAGIC: [u8; 4] = *b"ARCg";
/// Version of the frame layout (not chitchat's protocol version).
pub const FRAME_VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 4 + 1 + 8 + 8;
/// Bytes of the trailing MAC.
pub const MAC_LEN: usize = 32;
/// Bytes a sealed frame adds to the payload.
pub const OVERHEAD: usize = HEADER_LEN + MAC_LEN;
/// Largest UDP payload over IPv4 (65,535 - 8 byte UDP header - 20 byte IP header).
pub const MAX_DATAGRAM_LEN: usize = 65_507;
/// Largest chitchat payload that still fits in one datagram once sealed.
pub const MAX_PAYLOAD_LEN: usize = MAX_DATAGRAM_LEN - OVERHEAD;

/// Domain separation label of the key derivation; change it only with [`FRAME_VERSION`].
const KEY_DERIVATION_LABEL: &[u8] = b"arc-gossip/v1/datagram-key\0";

/// The MAC key of one cluster. `Debug` does not print the key.
#[derive(Clone)]
pub struct FrameKey {
    key: [u8; 32],
}

impl std::fmt::Debug for FrameKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("FrameKey(..)")
    }
}

impl FrameKey {
    /// Derives the datagram key as `HMAC-SHA256(shared_secret, label || cluster_name)`.
    pub fn derive(shared_secret: &[u8], cluster_name: &str) -> FrameKey {
        let mut mac =
            HmacSha256::new_from_slice(shared_secret).expect("HMAC accepts keys of any length");
        mac.update(KEY_DERIVATION_LABEL);
        mac.update(cluster_name.as_bytes());
        FrameKey {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length")
    }
}

/// Why a received datagram was dropped. Cheap: this is the hot path under attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// Shorter than the frame overhead or longer than a datagram.
    #[error("datagram too short or too long")]
    Length,
    /// Not an arc-gossip frame.
    #[error("bad magic")]
    Magic,
    /// A frame layout this build does not know.
    #[error("unsupported frame version")]
    Version,
    /// Not sealed with this cluster's key (or tampered with).
    #[error("bad mac")]
    Mac,
    /// Timestamp outside the freshness window.
    #[error("timestamp outside the freshness window")]
    Stale,
    /// A replay of a datagram already accepted.
    #[error("datagram already seen")]
    Replay,
    /// The replay cache is full, so freshness can't be checked (fail closed).
    #[error("replay cache full")]
    ReplayCacheFull,
    /// Authenticated, but chitchat could not decode the payload.
    #[error("authenticated payload chitchat could not decode")]
    Undecodable,
}

impl RejectReason {
    /// Returns the bounded `reason` label of `arc_gossip_rejected_packets_total`.
    pub fn as_label(self) -> &'static str {
        match self {
            RejectReason::Length => "length",
            RejectReason::Magic => "magic",
            RejectReason::Version => "version",
            RejectReason::Mac => "mac",
            RejectReason::Stale => "stale",
            RejectReason::Replay => "replay",
            RejectReason::ReplayCacheFull => "replay_cache_full",
            RejectReason::Undecodable => "undecodable",
        }
    }
}

/// Appends the sealed frame of `payload` to `out` (which is cleared first).
///
/// The caller checks `payload.len() <= MAX_PAYLOAD_LEN`; longer payloads are sealed anyway
/// (`debug_assert!`), and the OS will refuse to send them.
pub fn seal(key: &FrameKey, timestamp_ms: u64, nonce: u64, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_LEN);
    out.clear();
    out.reserve(payload.len() + OVERHEAD);
    out.extend_from_slice(&MAGIC);
    out.push(FRAME_VERSION);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&nonce.to_be_bytes());
    out.extend_from_slice(payload);
    let mut mac = key.mac();
    mac.update(out);
    let tag = mac.finalize().into_bytes();
    out.extend_from_slice(&tag);
}

/// The authenticated fields of a frame that passed [`open`].
#[derive(Debug, PartialEq, Eq)]
pub struct OpenedFrame<'a> {
    /// Sender's wall clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Random per-datagram value; with the timestamp, the replay cache key.
    pub nonce: u64,
    /// chitchat's encoded message.
    pub payload: &'a [u8],
}

/// Checks length, magic, version and MAC of `datagram` and returns its fields.
///
/// Freshness and replay are checked separately, by [`ReplayCache::check_and_insert`].
///
/// # Errors
///
/// Returns the first check that failed.
pub fn open<'a>(key: &FrameKey, datagram: &'a [u8]) -> Result<OpenedFrame<'a>, RejectReason> {
    if datagram.len() < OVERHEAD || datagram.len() > MAX_DATAGRAM_LEN {
        return Err(RejectReason::Length);
    }
    if datagram[..4] != MAGIC {
        return Err(RejectReason::Magic);
    }
    if datagram[4] != FRAME_VERSION {
        return Err(RejectReason::Version);
    }
    let (authenticated, tag) = datagram.split_at(datagram.len() - MAC_LEN);
    let mut mac = key.mac();
    mac.update(authenticated);
    // `verify_slice` compares in constant time.
    mac.verify_slice(tag).map_err(|_| RejectReason::Mac)?;
    let timestamp_ms = u64::from_be_bytes(
        authenticated[5..13]
            .try_into()
            .expect("length checked above"),
    );
    let nonce = u64::from_be_bytes(
        authenticated[13..21]
            .try_into()
            .expect("length checked above"),
    );
    Ok(OpenedFrame {
        timestamp_ms,
        nonce,
        payload: &authenticated[HEADER_LEN..],
    })
}

/// The `(timestamp_ms, nonce)` pairs accepted within the freshness window.
///
/// Entries older than `now - window` are pruned on every insert: such datagrams are rejected as
/// stale anyway. Memory is bounded by `capacity`; when full, new datagrams are rejected (fail
/// closed) rather than evicting entries, which would reopen replay. Only MAC-verified datagrams
/// are inserted, so only key holders can fill it.
#[derive(Debug)]
pub struct ReplayCache {
    window_ms: u64,
    capacity: usize,
    seen: BTreeSet<(u64, u64)>,
}

impl ReplayCache {
    /// Creates an empty cache for a freshness `window` holding at most `capacity` entries.
    pub fn new(window: Duration, capacity: usize) -> ReplayCache {
        ReplayCache {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            capacity,
            seen: BTreeSet::new(),
        }
    }

    /// Returns `Ok` and remembers the frame if it is fresh and unseen at `now_ms`.
    ///
    /// # Errors
    ///
    /// `Stale` outside `|now - timestamp| <= window`, `Replay` if seen before,
    /// `ReplayCacheFull` if the cache is at capacity.
    pub fn check_and_insert(
        &mut self,
        now_ms: u64,
        timestamp_ms: u64,
        nonce: u64,
    ) -> Result<(), RejectReason> {
        if now_ms.abs_diff(timestamp_ms) > self.window_ms {
            return Err(RejectReason::Stale);
        }
        let oldest_fresh_ms = now_ms.saturating_sub(self.window_ms);
        if self
            .seen
            .first()
            .is_some_and(|&(ts, _)| ts < oldest_fresh_ms)
        {
            self.seen = self.seen.split_off(&(oldest_fresh_ms, 0));
        }
        if self.seen.contains(&(timestamp_ms, nonce)) {
            return Err(RejectReason::Replay);
        }
        if self.seen.len() >= self.capacity {
            return Err(RejectReason::ReplayCacheFull);
        }
        self.seen.insert((timestamp_ms, nonce));
        Ok(())
    }

    /// Returns the number of remembered frames.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Returns true if no frame is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key() -> FrameKey {
        FrameKey::derive(b"secret", "cluster-a")
    }

    fn sealed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal(&key(), 1_000, 7, payload, &mut out);
        out
    }

    #[test]
    fn test_should_open_what_was_sealed() {
        let datagram = sealed(b"hello");
        assert_eq!(datagram.len(), 5 + OVERHEAD);
        let opened = open(&key(), &datagram).unwrap();
        assert_eq!(
            opened,
            OpenedFrame {
                timestamp_ms: 1_000,
                nonce: 7,
                payload: b"hello"
            }
        );
    }

    #[test]
    fn test_should_reject_other_secret_or_cluster() {
        let datagram = sealed(b"hello");
        let other_secret = FrameKey::derive(b"Secret", "cluster-a");
        let other_cluster = FrameKey::derive(b"secret", "cluster-b");
        assert_eq!(open(&other_secret, &datagram), Err(RejectReason::Mac));
        assert_eq!(open(&other_cluster, &datagram), Err(RejectReason::Mac));
    }

    #[test]
    fn test_should_reject_every_single_bit_flip() {
        let datagram = sealed(b"some chitchat bytes");
        for index in 0..datagram.len() {
            for bit in 0..8 {
                let mut tampered = datagram.clone();
                tampered[index] ^= 1 << bit;
                assert!(open(&key(), &tampered).is_err(), "byte {index} bit {bit}");
            }
        }
    }

    #[test]
    fn test_should_reject_truncated_and_extended() {
        let datagram = sealed(b"payload");
        for len in 0..datagram.len() {
            assert!(open(&key(), &datagram[..len]).is_err());
        }
        let mut extended = datagram.clone();
        extended.push(0);
        assert_eq!(open(&key(), &extended), Err(RejectReason::Mac));
        assert_eq!(
            open(&key(), &vec![0u8; MAX_DATAGRAM_LEN + 1]),
            Err(RejectReason::Length)
        );
    }

    #[test]
    fn test_should_accept_max_payload() {
        let payload = vec![0xAB; MAX_PAYLOAD_LEN];
        let datagram = sealed(&payload);
        assert_eq!(datagram.len(), MAX_DATAGRAM_LEN);
        assert_eq!(open(&key(), &datagram).unwrap().payload, &payload[..]);
    }

    #[test]
    fn test_should_reject_replay_and_stale() {
        let mut cache = ReplayCache::new(Duration::from_secs(30), 1_000);
        let now_ms = 100_000;
        assert_eq!(cache.check_and_insert(now_ms, now_ms, 1), Ok(()));
        assert_eq!(
            cache.check_and_insert(now_ms, now_ms, 1),
            Err(RejectReason::Replay)
        );
        assert_eq!(cache.check_and_insert(now_ms, now_ms, 2), Ok(()));
        assert_eq!(cache.check_and_insert(now_ms, now_ms - 30_000, 3), Ok(()));
        assert_eq!(cache.check_and_insert(now_ms, now_ms + 30_000, 3), Ok(()));
        assert_eq!(
            cache.check_and_insert(now_ms, now_ms - 30_001, 4),
            Err(RejectReason::Stale)
        );
        assert_eq!(
            cache.check_and_insert(now_ms, now_ms + 30_001, 4),
            Err(RejectReason::Stale)
        );
    }

    #[test]
    fn test_should_prune_entries_older_than_window() {
        let mut cache = ReplayCache::new(Duration::from_secs(30), 2);
        assert_eq!(cache.check_and_insert(0, 0, 1), Ok(()));
        assert_eq!(cache.check_and_insert(0, 0, 2), Ok(()));
        assert_eq!(
            cache.check_and_insert(0, 0, 3),
            Err(RejectReason::ReplayCacheFull)
        );
        // Once the first two fall out of the window they are forgotten, and the cache has room.
        assert_eq!(cache.check_and_insert(30_001, 30_001, 3), Ok(()));
        assert_eq!(cache.len(), 1);
        // An old frame cannot come back: it is stale.
        assert_eq!(
            cache.check_and_insert(30_001, 0, 1),
            Err(RejectReason::Stale)
        );
    }

    proptest! {
        #[test]
        fn test_should_reject_random_bytes_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2_048),
        ) {
            prop_assert!(open(&key(), &bytes).is_err());
        }

        #[test]
        fn test_should_reject_random_bytes_behind_valid_magic(
            tail in proptest::collection::vec(any::<u8>(), 0..2_048),
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.push(FRAME_VERSION);
            bytes.extend_from_slice(&tail);
            prop_assert!(open(&key(), &bytes).is_err());
        }
    }
}
