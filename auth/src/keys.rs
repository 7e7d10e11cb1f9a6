//! Object keys of token records: the only place in this crate that formats or parses them.
//!
//! Layout under the configured prefix (default `_auth/`):
//! `{prefix}/tokens/{id}/{version:020}.json`. Versions start at 1 and are zero-padded to 20
//! digits (all of `u64`) so listing order is numeric order. A version slot is written once, with
//! put-if-absent, and never overwritten or deleted: the highest version is the token's state.
//!
//! Token ids are UUID v7 strings or the fixed [`BOOTSTRAP_TOKEN_ID`]; ids coming from a request
//! path are checked by [`is_valid_token_id`] before they become part of a key, so a client can
//! never steer a key outside its token's folder.

use object_store::path::Path;

/// Id of the admin token created on first start. Fixed, so that nodes racing the bootstrap
/// compete for the same slot and exactly one wins.
pub const BOOTSTRAP_TOKEN_ID: &str = "bootstrap";

const TOKENS_DIR: &str = "tokens";
const RECORD_SUFFIX: &str = ".json";
const VERSION_DIGITS: usize = 20;
const MAX_ID_CHARS: usize = 64;

/// Formats and parses the keys of one store prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    tokens_dir: Path,
}

impl Keys {
    /// Returns the key layout under `prefix` (leading and trailing `/` are ignored; an empty
    /// prefix puts `tokens/` at the store root).
    pub(crate) fn new(prefix: &str) -> Self {
        let base = Path::from(prefix);
        Self {
            tokens_dir: base.join(TOKENS_DIR),
        }
    }

    /// Returns the folder holding every token record.
    pub(crate) fn tokens_dir(&self) -> &Path {
        &self.tokens_dir
    }

    /// Returns the folder holding the versions of token `id`.
    pub(crate) fn token_dir(&self, id: &str) -> Path {
        debug_assert!(is_valid_token_id(id), "unchecked token id reached a key");
        self.tokens_dir.clone().join(id)
    }

    /// Returns the key of version `version` of token `id`.
    pub(crate) fn record(&self, id: &str, version: u64) -> Path {
        self.token_dir(id)
            .join(format!("{version:0VERSION_DIGITS$}{RECORD_SUFFIX}"))
    }

    /// Parses a key listed under [`Keys::tokens_dir`] into `(id, version)`, or `None` if it is
    /// not a record key (a stray object, a temp file, a hand-made name).
    pub(crate) fn parse_record(&self, key: &Path) -> Option<(String, u64)> {
        let mut parts = key.prefix_match(&self.tokens_dir)?;
        let id = parts.next()?;
        let file = parts.next()?;
        if parts.next().is_some() || !is_valid_token_id(id.as_ref()) {
            return None;
        }
        let digits = file.as_ref().strip_suffix(RECORD_SUFFIX)?;
        if digits.len() != VERSION_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let version: u64 = digits.parse().ok()?;
        (version >= 1).then(|| (id.as_ref().to_string(), version))
    }
}

/// Returns whether `id` may name a token: 1 to 64 ASCII letters, digits, `-` or `_`.
pub fn is_valid_token_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_round_trip_record_keys() {
        let keys = Keys::new("_auth/");
        let key = keys.record("0190d3c2-7a2b-7c3d-8e4f-0123456789ab", 42);
        assert_eq!(
            key.as_ref(),
            "_auth/tokens/0190d3c2-7a2b-7c3d-8e4f-0123456789ab/00000000000000000042.json"
        );
        assert_eq!(
            keys.parse_record(&key),
            Some(("0190d3c2-7a2b-7c3d-8e4f-0123456789ab".to_string(), 42))
        );
    }

    #[test]
    fn test_should_sort_versions_numerically_by_key() {
        let keys = Keys::new("_auth");
        let nine = keys.record("a", 9).to_string();
        let ten = keys.record("a", 10).to_string();
        assert!(nine < ten);
    }

    #[test]
    fn test_should_reject_foreign_keys() {
        let keys = Keys::new("/p/q/");
        assert_eq!(keys.tokens_dir().as_ref(), "p/q/tokens");
        for raw in [
            "p/q/tokens/a/1.json",
            "p/q/tokens/a/00000000000000000000.json",
            "p/q/tokens/a/0000000000000000000x.json",
            "p/q/tokens/a/00000000000000000001.txt",
            "p/q/tokens/a/b/00000000000000000001.json",
            "p/q/tokens/00000000000000000001.json",
            "p/q/tokens/a b/00000000000000000001.json",
            "other/tokens/a/00000000000000000001.json",
        ] {
            assert_eq!(keys.parse_record(&Path::from(raw)), None, "{raw}");
        }
    }

    #[test]
    fn test_should_validate_token_ids() {
        assert!(is_valid_token_id(BOOTSTRAP_TOKEN_ID));
        assert!(is_valid_token_id(&uuid::Uuid::now_v7().to_string()));
        assert!(!is_valid_token_id(""));
        assert!(!is_valid_token_id(".."));
        assert!(!is_valid_token_id("a/b"));
        assert!(!is_valid_token_id(&"a".repeat(65)));
    }
}
