//! The stored token record (one JSON object per version slot) and the public view of a token.
//!
//! Format 1:
//! ```json
//! {"format":1,"id":"0190...","version":3,"name":"grafana","description":"",
//!  "permissions":["read"],"hash":"<64 hex: SHA-256 of the plaintext>",
//!  "created_at":"2026-08-01T00:00:00Z","updated_at":"2026-08-02T00:00:00Z",
//!  "expires_at":null,"revoked":false,"deleted":false,"nonce":"<32 hex>"}
//! ```
//! Every version repeats the whole state, so the highest version alone is the token. `nonce`
//! (128 random bits) makes every body unique: S3 derives ETags from content, and a writer whose
//! put returned an ambiguous error recognizes its own record by it.
//!
//! Decoding never panics: a body that does not parse, has an unknown format, or disagrees with
//! its key is reported as [`AuthError::Corrupt`] naming the key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::permission::Permission;
use crate::secret::TokenHash;

/// The record format this build writes and reads.
pub(crate) const RECORD_FORMAT: u32 = 1;

/// One version of a token, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub format: u32,
    pub id: String,
    pub version: u64,
    pub name: String,
    pub description: String,
    pub permissions: Vec<Permission>,
    /// SHA-256 of the plaintext, 64 lowercase hex digits. Never the plaintext.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    /// Tombstone: the token was deleted and is gone from every listing and lookup.
    pub deleted: bool,
    pub nonce: String,
}

impl TokenRecord {
    /// Serializes the record for storage.
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a token record always serializes to JSON")
    }

    /// Decodes and checks the record stored at `key`, which must be version `version` of token
    /// `id`. Returns the record with its parsed hash.
    pub(crate) fn decode(
        key: &str,
        id: &str,
        version: u64,
        bytes: &[u8],
    ) -> Result<(Self, TokenHash), AuthError> {
        let corrupt = |reason: String| AuthError::Corrupt {
            key: key.to_string(),
            reason,
        };
        let record: TokenRecord = serde_json::from_slice(bytes)
            .map_err(|error| corrupt(format!("not a token record: {error}")))?;
        if record.format != RECORD_FORMAT {
            return Err(corrupt(format!("unknown format {}", record.format)));
        }
        if record.id != id || record.version != version {
            return Err(corrupt(format!(
                "body says id={} version={}, key says id={id} version={version}",
                record.id, record.version
            )));
        }
        if record.permissions.is_empty() {
            return Err(corrupt("no permissions".to_string()));
        }
        let hash = TokenHash::from_hex(&record.hash)
            .ok_or_else(|| corrupt("hash is not 64 hex digits".to_string()))?;
        Ok((record, hash))
    }

    /// Returns the token's status at `now`.
    pub(crate) fn status(&self, now: DateTime<Utc>) -> TokenStatus {
        if self.revoked {
            TokenStatus::Revoked
        } else if self.expires_at.is_some_and(|expires_at| expires_at <= now) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }

    /// Returns the public view of this record at `now`.
    pub(crate) fn info(&self, now: DateTime<Utc>) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            permissions: self.permissions.clone(),
            is_admin: self.permissions.contains(&Permission::Admin),
            status: self.status(now),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            revoked: self.revoked,
            version: self.version,
        }
    }
}

/// Whether a token can be used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenStatus {
    /// Valid.
    Active,
    /// Past its `expires_at`.
    Expired,
    /// Revoked; permanent.
    Revoked,
}

/// What may be shown about a token: everything but its hash and plaintext. This is the JSON of
/// the token API and what [`crate::AuthService::authorize`] returns for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Stable id (UUID v7, or `bootstrap` for the first admin token).
    pub id: String,
    /// Human name, 1 to 128 characters.
    pub name: String,
    /// Free text, possibly empty.
    pub description: String,
    /// What the token may do.
    pub permissions: Vec<Permission>,
    /// Whether `permissions` contains `admin` (Arc's clients read this field).
    pub is_admin: bool,
    /// Status at the time this view was taken.
    pub status: TokenStatus,
    /// When the token was created.
    pub created_at: DateTime<Utc>,
    /// When the token last changed (metadata, rotation, revocation).
    pub updated_at: DateTime<Utc>,
    /// When the token stops working; `None` means never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the token was revoked.
    pub revoked: bool,
    /// Version of the stored record this view was taken from.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TokenRecord {
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("valid instant");
        TokenRecord {
            format: RECORD_FORMAT,
            id: "t1".to_string(),
            version: 2,
            name: "grafana".to_string(),
            description: String::new(),
            permissions: vec![Permission::Read],
            hash: TokenHash::of("arc_x").to_hex(),
            created_at: at,
            updated_at: at,
            expires_at: Some(at + chrono::TimeDelta::seconds(60)),
            revoked: false,
            deleted: false,
            nonce: "00".repeat(16),
        }
    }

    #[test]
    fn test_should_round_trip_a_record() {
        let original = record();
        let (decoded, hash) =
            TokenRecord::decode("k", "t1", 2, &original.encode()).expect("decodes");
        assert_eq!(decoded, original);
        assert_eq!(hash, TokenHash::of("arc_x"));
    }

    #[test]
    fn test_should_snapshot_the_record_format() {
        // A format change must show up here in review.
        let text = String::from_utf8(record().encode()).expect("utf-8");
        let hash = TokenHash::of("arc_x").to_hex();
        let expected = format!(
            "{{\"format\":1,\"id\":\"t1\",\"version\":2,\"name\":\"grafana\",\"description\":\"\",\
             \"permissions\":[\"read\"],\"hash\":\"{hash}\",\
             \"created_at\":\"2027-01-15T08:00:00Z\",\"updated_at\":\"2027-01-15T08:00:00Z\",\
             \"expires_at\":\"2027-01-15T08:01:00Z\",\"revoked\":false,\"deleted\":false,\
             \"nonce\":\"00000000000000000000000000000000\"}}"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn test_should_report_corrupt_bodies_naming_the_key() {
        let good = record();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not a token record"),
            (vec![0xff, 0xfe, 0x00], "not a token record"),
            (b"{}".to_vec(), "not a token record"),
            (
                TokenRecord {
                    format: 9,
                    ..good.clone()
                }
                .encode(),
                "unknown format",
            ),
            (
                TokenRecord {
                    version: 3,
                    ..good.clone()
                }
                .encode(),
                "key says",
            ),
            (
                TokenRecord {
                    id: "t2".into(),
                    ..good.clone()
                }
                .encode(),
                "key says",
            ),
            (
                TokenRecord {
                    permissions: vec![],
                    ..good.clone()
                }
                .encode(),
                "no permissions",
            ),
            (
                TokenRecord {
                    hash: "arc_plain".into(),
                    ..good.clone()
                }
                .encode(),
                "hash",
            ),
            (
                br#"{"format":1,"permissions":["superuser"]}"#.to_vec(),
                "not a token record",
            ),
        ];
        for (bytes, expected) in cases {
            let error = TokenRecord::decode("_auth/tokens/t1/x.json", "t1", 2, &bytes)
                .expect_err("must be corrupt");
            let message = error.to_string();
            assert!(matches!(error, AuthError::Corrupt { .. }), "{message}");
            assert!(message.contains("_auth/tokens/t1/x.json"), "{message}");
            assert!(message.contains(expected), "{message} lacks {expected}");
        }
    }

    #[test]
    fn test_should_derive_status_from_flags_and_time() {
        let token = record();
        let created = token.created_at;
        assert_eq!(token.status(created), TokenStatus::Active);
        assert_eq!(
            token.status(created + chrono::TimeDelta::seconds(60)),
            TokenStatus::Expired
        );
        let revoked = TokenRecord {
            revoked: true,
            ..token
        };
        assert_eq!(revoked.status(created), TokenStatus::Revoked);
    }
}
