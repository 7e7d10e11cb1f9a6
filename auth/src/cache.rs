//! The in-memory view of every token: id → latest known record, and the hash index that
//! request checks scan.
//!
//! Invariants:
//! - per id, the cached version only grows: a reload that listed the store before a local
//!   write landed never rolls that write back;
//! - the index holds exactly the tokens whose latest known record decoded and is not deleted
//!   (revoked and expired ones stay, so a rejection can say why);
//! - an id whose latest record is corrupt is known (so bootstrap does not run again) but not
//!   indexed: a token whose state cannot be read fails closed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::record::TokenRecord;
use crate::secret::{TokenHash, find_constant_time};

/// The latest known version of one token.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "corrupt entries are rare; boxing every valid one would cost more"
)]
pub(crate) enum Entry {
    /// A record that decoded.
    Valid {
        record: TokenRecord,
        hash: TokenHash,
    },
    /// A record that did not decode; remembered so it is read and warned about once.
    Corrupt { version: u64 },
}

impl Entry {
    pub(crate) fn version(&self) -> u64 {
        match self {
            Entry::Valid { record, .. } => record.version,
            Entry::Corrupt { version } => *version,
        }
    }
}

/// Token state known to this node.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    entries: HashMap<String, Entry>,
    /// Hashes of indexed tokens, parallel to `index_ids`.
    index_hashes: Vec<TokenHash>,
    index_ids: Vec<String>,
    /// When the last complete reload finished.
    pub(crate) refreshed_at: Option<DateTime<Utc>>,
    /// When the last reload started, successful or not.
    pub(crate) attempted_at: Option<DateTime<Utc>>,
}

impl Cache {
    /// Returns the version known for every id.
    pub(crate) fn versions(&self) -> HashMap<String, u64> {
        self.entries
            .iter()
            .map(|(id, entry)| (id.clone(), entry.version()))
            .collect()
    }

    /// Returns whether any record (of any state, even corrupt) is known.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Returns the version known for `id`.
    pub(crate) fn version_of(&self, id: &str) -> Option<u64> {
        self.entries.get(id).map(Entry::version)
    }

    /// Records `entry` as the state of `id` if it is newer than what is known. Call
    /// [`Cache::rebuild_index`] afterwards.
    pub(crate) fn apply(&mut self, id: &str, entry: Entry) {
        let newer = self
            .entries
            .get(id)
            .is_none_or(|known| entry.version() > known.version());
        if newer {
            self.entries.insert(id.to_string(), entry);
        }
    }

    /// Forgets `id` if its known version is still `version` (it vanished from the store and
    /// nothing newer was written through this node meanwhile).
    pub(crate) fn forget_if_unchanged(&mut self, id: &str, version: u64) {
        if self.version_of(id) == Some(version) {
            self.entries.remove(id);
        }
    }

    /// Returns the ids known, for the reload's "vanished" check.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Rebuilds the hash index from the entries.
    pub(crate) fn rebuild_index(&mut self) {
        self.index_hashes.clear();
        self.index_ids.clear();
        for (id, entry) in &self.entries {
            if let Entry::Valid { record, hash } = entry
                && !record.deleted
            {
                self.index_hashes.push(*hash);
                self.index_ids.push(id.clone());
            }
        }
    }

    /// Returns the record whose hash is `hash`, scanning in constant time.
    pub(crate) fn find(&self, hash: &TokenHash) -> Option<&TokenRecord> {
        let position = find_constant_time(&self.index_hashes, hash)?;
        let id = self.index_ids.get(position)?;
        match self.entries.get(id)? {
            Entry::Valid { record, .. } => Some(record),
            Entry::Corrupt { .. } => None,
        }
    }

    /// Returns every live (decoded, not deleted) record.
    pub(crate) fn live_records(&self) -> impl Iterator<Item = &TokenRecord> {
        self.entries.values().filter_map(|entry| match entry {
            Entry::Valid { record, .. } if !record.deleted => Some(record),
            _ => None,
        })
    }

    /// Returns how many ids have a corrupt latest record.
    pub(crate) fn corrupt_count(&self) -> usize {
        self.entries
            .values()
            .filter(|entry| matches!(entry, Entry::Corrupt { .. }))
            .count()
    }

    /// Returns how many tokens are indexed.
    pub(crate) fn indexed_count(&self) -> usize {
        self.index_ids.len()
    }
}
