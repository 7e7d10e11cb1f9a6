//! Token plaintexts and their hashes: generation, hashing, and constant-time matching.
//!
//! Hazards owned here: a plaintext must never be stored, logged or put in an error, so it lives
//! only in [`TokenSecret`] (whose `Debug` is redacted and which has no `Display`), and a
//! presented token is compared with stored hashes in constant time.
//!
//! SHA-256 rather than a slow password hash: generated tokens carry 258 random bits, so there
//! is nothing to brute-force and a per-request bcrypt would cost milliseconds. A preset
//! bootstrap token is operator-chosen; COMPAT.md's 32-character minimum is what protects it.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Prefix of every generated token, so leaked tokens are recognizable by secret scanners.
pub const TOKEN_PREFIX: &str = "arc_";

/// Random characters after [`TOKEN_PREFIX`]: 43 of 64 symbols is 258 bits.
const TOKEN_RANDOM_CHARS: usize = 43;

/// URL-safe alphabet, so a token survives `?p=` without escaping.
const URL_SAFE_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A token's plaintext. Shown to its creator once; never stored, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// Wraps a plaintext (a preset bootstrap token, or one read from a request).
    pub fn new(plaintext: impl Into<String>) -> Self {
        Self(plaintext.into())
    }

    /// Returns the plaintext. Call sites are the few places allowed to reveal it: the one
    /// response that hands it to its creator and the bootstrap banner.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Returns the SHA-256 of the plaintext, as stored.
    pub(crate) fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("TokenSecret(<redacted>)")
    }
}

/// Returns a new random token: `arc_` and 43 URL-safe characters from the thread-local CSPRNG
/// (ChaCha, seeded from the operating system).
pub fn generate_token() -> TokenSecret {
    let mut rng = rand::rng();
    let mut plaintext = String::with_capacity(TOKEN_PREFIX.len() + TOKEN_RANDOM_CHARS);
    plaintext.push_str(TOKEN_PREFIX);
    for _ in 0..TOKEN_RANDOM_CHARS {
        let index = rng.random_range(0..URL_SAFE_ALPHABET.len());
        plaintext.push(char::from(URL_SAFE_ALPHABET[index]));
    }
    TokenSecret(plaintext)
}

/// Returns 128 random bits as 32 hex digits: the per-record nonce.
pub(crate) fn random_nonce() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    to_hex(&bytes)
}

/// SHA-256 of a token plaintext.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes a plaintext.
    pub(crate) fn of(plaintext: &str) -> Self {
        let digest = Sha256::digest(plaintext.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_slice());
        Self(bytes)
    }

    /// Returns the 64 lowercase hex digits stored in a record.
    pub(crate) fn to_hex(self) -> String {
        to_hex(&self.0)
    }

    /// Parses 64 hex digits (either case); `None` for anything else.
    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Debug for TokenHash {
    // A hash is not a secret, but printing it helps nobody and invites grepping logs for it.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("TokenHash(..)")
    }
}

/// Returns the index of the entry of `candidates` equal to `presented`, comparing against every
/// candidate in constant time (no early exit), so response timing reveals neither whether nor
/// where a hash matched. Cost is linear in the number of tokens, which is in the hundreds; a
/// 32-byte comparison is a few nanoseconds.
pub(crate) fn find_constant_time<'a, I>(candidates: I, presented: &TokenHash) -> Option<usize>
where
    I: IntoIterator<Item = &'a TokenHash>,
{
    let mut found = 0u64;
    let mut matched_index = 0u64;
    for (index, candidate) in candidates.into_iter().enumerate() {
        let equal = candidate.0.ct_eq(&presented.0);
        matched_index = u64::conditional_select(&matched_index, &(index as u64), equal);
        found |= u64::from(equal.unwrap_u8());
    }
    // Hashes are distinct (a duplicate needs a SHA-256 collision), so at most one matched.
    (found == 1).then_some(matched_index as usize)
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_generate_distinct_url_safe_tokens() {
        let first = generate_token();
        let second = generate_token();
        assert_ne!(first, second);
        let text = first.expose_secret();
        assert!(text.starts_with(TOKEN_PREFIX));
        assert_eq!(text.len(), TOKEN_PREFIX.len() + TOKEN_RANDOM_CHARS);
        assert!(
            text[TOKEN_PREFIX.len()..]
                .bytes()
                .all(|b| URL_SAFE_ALPHABET.contains(&b))
        );
    }

    #[test]
    fn test_should_redact_secret_in_debug() {
        let secret = TokenSecret::new("arc_plaintext-value");
        assert_eq!(format!("{secret:?}"), "TokenSecret(<redacted>)");
    }

    #[test]
    fn test_should_hash_to_known_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            TokenHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn test_should_round_trip_hex_and_reject_malformed_hex() {
        let hash = TokenHash::of("x");
        assert_eq!(TokenHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(
            TokenHash::from_hex(&hash.to_hex().to_uppercase()),
            Some(hash)
        );
        assert_eq!(TokenHash::from_hex("abc"), None);
        assert_eq!(TokenHash::from_hex(&"g".repeat(64)), None);
        assert_eq!(TokenHash::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn test_should_find_hash_in_constant_time_scan() {
        let hashes: Vec<TokenHash> = ["a", "b", "c"].iter().map(|t| TokenHash::of(t)).collect();
        assert_eq!(find_constant_time(&hashes, &TokenHash::of("a")), Some(0));
        assert_eq!(find_constant_time(&hashes, &TokenHash::of("c")), Some(2));
        assert_eq!(find_constant_time(&hashes, &TokenHash::of("d")), None);
        assert_eq!(find_constant_time(&[], &TokenHash::of("a")), None);
    }
}
