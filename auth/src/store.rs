//! Token records in the shared object store: listing, reading and put-if-absent writing.
//!
//! The only write primitive is `PutMode::Create`, which every backend provides atomically (S3
//! `If-None-Match: *`, GCS, Azure, and object_store's `LocalFileSystem`, which does *not*
//! implement `PutMode::Update`). Whoever creates a version slot owns it; a slot is never
//! overwritten or deleted, so a record once read never changes and readers may cache it.
//!
//! An ambiguous put (a timeout or 5xx: it may have landed) is resolved by reading the slot back
//! and comparing nonces. If the slot is still empty the operation fails as `Unavailable`; the
//! put may still land later, which is harmless: it is the change the caller asked for, in the
//! one slot it was aimed at.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tracing::warn;

use crate::error::{AuthError, Result};
use crate::keys::Keys;
use crate::metrics as m;
use crate::record::TokenRecord;
use crate::secret::TokenHash;

/// Outcome of a put-if-absent of one version slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutOutcome {
    /// The slot is ours.
    Created,
    /// Another writer's record is in the slot.
    SlotTaken,
}

/// A decoded record and its parsed hash.
pub(crate) type Decoded = (TokenRecord, TokenHash);

/// Reads and writes token records under one prefix of one object store.
#[derive(Debug, Clone)]
pub(crate) struct TokenStore {
    store: Arc<dyn ObjectStore>,
    keys: Keys,
}

impl TokenStore {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            keys: Keys::new(prefix),
        }
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Returns the highest version of every token under the prefix. Objects that are not
    /// record keys are skipped with a warning naming them.
    pub(crate) async fn list_latest_versions(&self) -> Result<HashMap<String, u64>> {
        let prefix = self.keys.tokens_dir();
        self.latest_versions_under(prefix).await
    }

    /// Returns the highest version of token `id`, or `None` if it has no record.
    pub(crate) async fn latest_version(&self, id: &str) -> Result<Option<u64>> {
        let folder = self.keys.token_dir(id);
        let versions = self.latest_versions_under(&folder).await?;
        Ok(versions.get(id).copied())
    }

    async fn latest_versions_under(&self, prefix: &Path) -> Result<HashMap<String, u64>> {
        let objects: Vec<_> =
            self.store
                .list(Some(prefix))
                .try_collect()
                .await
                .map_err(|source| AuthError::Unavailable {
                    key: prefix.to_string(),
                    source,
                })?;
        let mut latest: HashMap<String, u64> = HashMap::new();
        for object in objects {
            match self.keys.parse_record(&object.location) {
                Some((id, version)) => {
                    let highest = latest.entry(id).or_insert(version);
                    *highest = (*highest).max(version);
                }
                None => warn!(key = %object.location, "skipping object that is not a token record"),
            }
        }
        Ok(latest)
    }

    /// Reads version `version` of token `id`. `Ok(None)` if the slot is empty.
    ///
    /// # Errors
    ///
    /// [`AuthError::Corrupt`] if the body cannot be decoded or disagrees with its key,
    /// [`AuthError::Unavailable`] if the store fails.
    pub(crate) async fn read(&self, id: &str, version: u64) -> Result<Option<Decoded>> {
        let key = self.keys.record(id, version);
        let unavailable = |source| AuthError::Unavailable {
            key: key.to_string(),
            source,
        };
        let bytes = match self.store.get(&key).await {
            Ok(result) => result.bytes().await.map_err(unavailable)?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(unavailable(source)),
        };
        TokenRecord::decode(key.as_ref(), id, version, &bytes).map(Some)
    }

    /// Reads the current state of token `id`: its highest version. `Ok(None)` if it has none.
    pub(crate) async fn read_latest(&self, id: &str) -> Result<Option<Decoded>> {
        let Some(version) = self.latest_version(id).await? else {
            return Ok(None);
        };
        self.read(id, version).await
    }

    /// Writes `record` into its version slot if the slot is empty.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unavailable`] if the store fails and a read-back cannot tell whether the
    /// put landed.
    pub(crate) async fn put_if_absent(&self, record: &TokenRecord) -> Result<PutOutcome> {
        let key = self.keys.record(&record.id, record.version);
        let payload = PutPayload::from(record.encode());
        let options = PutOptions::from(PutMode::Create);
        match self.store.put_opts(&key, payload, options).await {
            Ok(_) => Ok(PutOutcome::Created),
            // Some S3-compatible stores answer a lost If-None-Match race with 412.
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(PutOutcome::SlotTaken),
            Err(source) => {
                warn!(key = %key, error = %source, "ambiguous token record put, reading it back");
                self.resolve_ambiguous_put(record, source).await
            }
        }
    }

    async fn resolve_ambiguous_put(
        &self,
        record: &TokenRecord,
        put_error: object_store::Error,
    ) -> Result<PutOutcome> {
        let key = self.keys.record(&record.id, record.version);
        match self.read(&record.id, record.version).await {
            Ok(Some((stored, _))) if stored.nonce == record.nonce => Ok(PutOutcome::Created),
            Ok(Some(_)) => Ok(PutOutcome::SlotTaken),
            // A corrupt body is not ours (ours decodes), so the slot is someone else's.
            Err(AuthError::Corrupt { .. }) => {
                m::record_corrupt_record();
                Ok(PutOutcome::SlotTaken)
            }
            Ok(None) | Err(_) => Err(AuthError::Unavailable {
                key: key.to_string(),
                source: put_error,
            }),
        }
    }
}
