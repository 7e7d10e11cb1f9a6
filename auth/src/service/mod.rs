//! [`AuthService`]: token lifecycle over the shared object store, and request checks against
//! an in-memory cache of it.
//!
//! # Lifecycle
//!
//! [`AuthService::open`] loads every token (one LIST of the prefix, one GET per token), then
//! bootstraps the first admin token if the store holds none. After that the cache is reloaded
//! lazily by requests: when it is older than `cache_ttl`, and when a presented token is unknown
//! (at most once per second, so garbage tokens cannot make every request list the bucket). A
//! reload runs on a task of its own, and a request waits for it (or for its turn to start one)
//! at most `RELOAD_WAIT`: with the store unreachable, requests are not held for the object store
//! client's retries.
//! Only records newer than the cached version are fetched, since records never change.
//!
//! # Consistency
//!
//! Writes go to the store first (put-if-absent of the next version slot) and into this node's
//! cache right after, so a change made here holds here immediately. Another node sees it on its
//! next reload: at most `cache_ttl` later for a revocation, rotation or deletion, and at once
//! for a new token (its first use is a cache miss, which reloads). If the store is unreachable,
//! request checks keep using the last view; mutations fail with `Unavailable`.
//!
//! # Hazards
//!
//! - A plaintext exists only in [`TokenSecret`]; it is hashed before anything else happens.
//! - An id whose latest record is corrupt fails closed (its token does not authenticate) and is
//!   warned about once, naming the key; nothing read from storage can panic the service.
//! - The cache lock is a `std` lock held only for in-memory work, never across an await.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use object_store::ObjectStore;
use serde::Serialize;
use tracing::{info, warn};
use uuid::Uuid;

use crate::cache::{Cache, Entry};
use crate::clock::{Clock, SystemClock};
use crate::error::{AuthError, Result};
use crate::expiry::MAX_EXPIRES_IN;
use crate::extract::extract_token;
use crate::keys::{BOOTSTRAP_TOKEN_ID, is_valid_token_id};
use crate::metrics::{self as m, TokenOperation};
use crate::permission::{Permission, grants};
use crate::record::{RECORD_FORMAT, TokenInfo, TokenRecord, TokenStatus};
use crate::rejection::AuthRejection;
use crate::secret::{TokenHash, TokenSecret, generate_token, random_nonce};
use crate::settings::{AuthSettings, MIN_BOOTSTRAP_TOKEN_CHARS};
use crate::store::{PutOutcome, TokenStore};

/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Longest token description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// Id reported for every request while `auth.enabled` is false.
pub const ANONYMOUS_TOKEN_ID: &str = "anonymous";

/// Name given to the bootstrap admin token.
pub const BOOTSTRAP_TOKEN_NAME: &str = "admin";

/// Minimum time between two reloads triggered by unknown tokens (or retried after a failure).
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Version slots a single change may lose to concurrent writers before giving up.
const MAX_WRITE_ATTEMPTS: u32 = 8;

/// How long a request waits for a reload (its cache was stale, or its token unknown), or for
/// its turn to start one. Past it the request is checked against the current view and the
/// reload goes on by itself: with the store unreachable, the object store client retries for a
/// minute or more, and requests would otherwise wait that long.
const RELOAD_WAIT: Duration = Duration::from_secs(1);
/// Concurrent GETs during a reload.
const RELOAD_CONCURRENCY: usize = 8;

/// What [`AuthService::open`] did about the first admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// `auth.enabled` is false: no token was created.
    Disabled,
    /// Tokens already existed (or another node won the race to create the first one).
    AlreadyInitialized,
    /// This node created the admin token from `auth.bootstrap_token`.
    CreatedFromPreset,
    /// This node created the admin token with this generated plaintext. Print it once, to
    /// stderr; it cannot be recovered later.
    Generated(TokenSecret),
}

impl Bootstrap {
    /// Returns whether this node created the bootstrap token.
    pub fn created(&self) -> bool {
        matches!(self, Bootstrap::CreatedFromPreset | Bootstrap::Generated(_))
    }

    /// Returns the generated plaintext, if this node generated one.
    pub fn generated_token(&self) -> Option<&TokenSecret> {
        match self {
            Bootstrap::Generated(secret) => Some(secret),
            _ => None,
        }
    }
}

/// A token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// 1 to 128 characters, no control characters (surrounding whitespace is trimmed).
    pub name: String,
    /// At most 1024 characters.
    pub description: String,
    /// At least one; duplicates are dropped.
    pub permissions: Vec<Permission>,
    /// Lifetime from now; `None` means never expires.
    pub expires_in: Option<Duration>,
}

/// Changes to a token's metadata; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New permissions (replacing the old ones).
    pub permissions: Option<Vec<Permission>>,
    /// New lifetime counted from now: `Some(None)` removes the expiry.
    pub expires_in: Option<Option<Duration>>,
}

/// A snapshot of the cache, for `GET /api/v1/auth/cache/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheStats {
    /// Tokens (not deleted) this node can check requests against.
    pub tokens: usize,
    /// Tokens whose latest record is unreadable (they fail closed).
    pub corrupt: usize,
    /// When the last complete reload started.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// The configured TTL, in seconds.
    pub cache_ttl_seconds: f64,
}

/// The token service of one node. Share it as `Arc<AuthService>`.
pub struct AuthService {
    settings: AuthSettings,
    clock: Arc<dyn Clock>,
    store: TokenStore,
    cache: RwLock<Cache>,
    /// Held for the whole of a reload, so reloads never overlap.
    reload_lock: Arc<tokio::sync::Mutex<()>>,
    /// This service, for the task a stale reload runs on.
    me: Weak<AuthService>,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AuthService {
    /// Opens the service over `store` with the system clock: loads every token and bootstraps
    /// the first admin token if there is none. See [`AuthService::open_with_clock`].
    ///
    /// # Errors
    ///
    /// As [`AuthService::open_with_clock`].
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        settings: AuthSettings,
    ) -> Result<(Arc<Self>, Bootstrap)> {
        Self::open_with_clock(store, settings, Arc::new(SystemClock)).await
    }

    /// Opens the service with an explicit clock (tests drive expiry and cache age with it).
    ///
    /// If no token record exists under the prefix, an `admin` token is created with
    /// put-if-absent under the fixed id `bootstrap`, from `settings.bootstrap_token` or a fresh
    /// random plaintext. When nodes race, exactly one creates it; the others load it.
    ///
    /// # Errors
    ///
    /// [`AuthError::BootstrapTokenTooShort`] if `auth.bootstrap_token` is set and shorter than
    /// 32 characters (checked even when unused, so a bad setting fails fast);
    /// [`AuthError::Unavailable`] if the store cannot be listed or written.
    pub async fn open_with_clock(
        store: Arc<dyn ObjectStore>,
        settings: AuthSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Self>, Bootstrap)> {
        if let Some(preset) = settings.preset_bootstrap_token() {
            let length = preset.chars().count();
            if length < MIN_BOOTSTRAP_TOKEN_CHARS {
                return Err(AuthError::BootstrapTokenTooShort {
                    length,
                    minimum: MIN_BOOTSTRAP_TOKEN_CHARS,
                });
            }
        }
        let service = Arc::new_cyclic(|me| Self {
            store: TokenStore::new(store, &settings.prefix),
            settings,
            clock,
            cache: RwLock::new(Cache::default()),
            reload_lock: Arc::new(tokio::sync::Mutex::new(())),
            me: me.clone(),
        });
        service.reload().await?;
        let bootstrap = service.bootstrap().await?;
        Ok((service, bootstrap))
    }

    /// Returns the settings the service was opened with.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Returns whether requests need a token (`auth.enabled`).
    pub fn is_enabled(&self) -> bool {
        self.settings.enabled
    }

    // ---------------------------------------------------------------- request checks

    /// Checks that the request carries a valid token (any permission) and returns it.
    ///
    /// # Errors
    ///
    /// [`AuthRejection::Missing`], `Invalid`, `Expired` or `Revoked` (all answered 401).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<TokenInfo, AuthRejection> {
        if !self.settings.enabled {
            return Ok(self.anonymous());
        }
        let outcome = self.identify(headers, query).await;
        record_outcome(&outcome);
        outcome
    }

    /// Checks that the request carries a valid token granting `needed` (admin grants all) and
    /// returns it. Always succeeds while `auth.enabled` is false.
    ///
    /// # Errors
    ///
    /// As [`AuthService::authenticate`], plus [`AuthRejection::Forbidden`] (403).
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        needed: Permission,
    ) -> Result<TokenInfo, AuthRejection> {
        if !self.settings.enabled {
            return Ok(self.anonymous());
        }
        let outcome = self.identify(headers, query).await.and_then(|token| {
            if grants(&token.permissions, needed) {
                Ok(token)
            } else {
                Err(AuthRejection::Forbidden(needed))
            }
        });
        record_outcome(&outcome);
        outcome
    }

    async fn identify(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<TokenInfo, AuthRejection> {
        let secret = extract_token(headers, query).ok_or(AuthRejection::Missing)?;
        self.check_secret(&secret).await
    }

    /// Returns the token whose plaintext is `secret`, if it is valid now.
    async fn check_secret(&self, secret: &TokenSecret) -> Result<TokenInfo, AuthRejection> {
        let hash = secret.hash();
        self.reload_if_stale().await;
        if let Some(outcome) = self.lookup(&hash) {
            return outcome;
        }
        if self.reload_after_miss().await
            && let Some(outcome) = self.lookup(&hash)
        {
            return outcome;
        }
        Err(AuthRejection::Invalid)
    }

    fn lookup(&self, hash: &TokenHash) -> Option<Result<TokenInfo, AuthRejection>> {
        let now = self.clock.now();
        let cache = self.read_cache();
        let record = cache.find(hash)?;
        Some(match record.status(now) {
            TokenStatus::Active => Ok(record.info(now)),
            TokenStatus::Expired => Err(AuthRejection::Expired),
            TokenStatus::Revoked => Err(AuthRejection::Revoked),
        })
    }

    fn anonymous(&self) -> TokenInfo {
        let now = self.clock.now();
        TokenInfo {
            id: ANONYMOUS_TOKEN_ID.to_string(),
            name: "auth disabled".to_string(),
            description: "auth.enabled is false: every request is allowed".to_string(),
            permissions: vec![Permission::Admin],
            is_admin: true,
            status: TokenStatus::Active,
            created_at: now,
            updated_at: now,
            expires_at: None,
            revoked: false,
            version: 0,
        }
    }

    // ---------------------------------------------------------------- cache reloads

    /// Reloads the cache from the store now (waiting for a reload in progress first).
    ///
    /// # Errors
    ///
    /// [`AuthError::Unavailable`] if the store cannot be listed or read; whatever was read is
    /// still applied.
    pub async fn reload(&self) -> Result<()> {
        let _reloading = self.reload_lock.lock().await;
        self.reload_locked().await
    }

    /// Returns counters describing the cache.
    pub fn cache_stats(&self) -> CacheStats {
        let cache = self.read_cache();
        CacheStats {
            tokens: cache.indexed_count(),
            corrupt: cache.corrupt_count(),
            refreshed_at: cache.refreshed_at,
            cache_ttl_seconds: self.settings.cache_ttl.as_secs_f64(),
        }
    }

    async fn reload_if_stale(&self) {
        if !self.is_stale() {
            return;
        }
        // One request reloads; the others carry on with the current view instead of queueing
        // behind a LIST.
        let Ok(reloading) = Arc::clone(&self.reload_lock).try_lock_owned() else {
            return;
        };
        if !self.is_stale() {
            return;
        }
        self.reload_within(reloading).await;
    }

    /// Reloads on a task of its own, which holds `reloading` and ends with the reload (the
    /// object store client's timeouts bound it); waits for it at most [`RELOAD_WAIT`]. Returns
    /// whether it finished in time and succeeded.
    async fn reload_within(&self, reloading: tokio::sync::OwnedMutexGuard<()>) -> bool {
        let Some(service) = self.me.upgrade() else {
            // Not opened through `open` (a test's service): inline.
            let reloaded = self.reload_locked().await;
            drop(reloading);
            return reloaded.is_ok();
        };
        let reload = tokio::spawn(async move {
            let _reloading = reloading;
            let reloaded = service.reload_locked().await;
            if let Err(error) = &reloaded {
                warn!(error = %error, "token cache reload failed, using the previous view");
            }
            reloaded.is_ok()
        });
        match tokio::time::timeout(RELOAD_WAIT, reload).await {
            Ok(reloaded) => reloaded.unwrap_or(false),
            Err(_) => {
                warn!(
                    waited = ?RELOAD_WAIT,
                    "token cache reload still running (the object store is slow or unreachable): checking requests against the current view meanwhile"
                );
                false
            }
        }
    }

    /// Reloads after a cache miss, at most once per [`MISS_RELOAD_INTERVAL`]. Returns whether
    /// the cache may have changed (a reload ran, here or in a request we waited for).
    async fn reload_after_miss(&self) -> bool {
        if !self.may_retry_reload() {
            return false;
        }
        let lock = Arc::clone(&self.reload_lock).lock_owned();
        let Ok(reloading) = tokio::time::timeout(RELOAD_WAIT, lock).await else {
            // A reload is stuck on the store: nothing newer to look at.
            return false;
        };
        if !self.may_retry_reload() {
            // Another request reloaded while this one waited.
            return true;
        }
        self.reload_within(reloading).await
    }

    fn is_stale(&self) -> bool {
        let now = self.clock.now();
        let cache = self.read_cache();
        let expired = cache
            .refreshed_at
            .is_none_or(|at| age(now, at) >= self.settings.cache_ttl);
        expired && retry_allowed(cache.attempted_at, now)
    }

    fn may_retry_reload(&self) -> bool {
        let now = self.clock.now();
        retry_allowed(self.read_cache().attempted_at, now)
    }

    /// Reloads; the caller holds `reload_lock`.
    async fn reload_locked(&self) -> Result<()> {
        let started = self.clock.now();
        self.write_cache().attempted_at = Some(started);
        let outcome = self.reload_from_store(started).await;
        m::record_refresh(outcome.is_ok());
        outcome
    }

    async fn reload_from_store(&self, started: DateTime<Utc>) -> Result<()> {
        let listed = self.store.list_latest_versions().await?;
        let known = self.read_cache().versions();
        let wanted: Vec<(String, u64)> = listed
            .iter()
            .filter(|(id, version)| known.get(*id).is_none_or(|cached| *version > cached))
            .map(|(id, version)| (id.clone(), *version))
            .collect();
        let fetched: Vec<Result<(String, Option<Entry>)>> = futures::stream::iter(wanted)
            .map(|(id, version)| async move {
                let entry = self.fetch_entry(&id, version).await?;
                Ok((id, entry))
            })
            .buffer_unordered(RELOAD_CONCURRENCY)
            .collect()
            .await;

        let mut cache = self.write_cache();
        let mut first_error = None;
        for outcome in fetched {
            match outcome {
                Ok((id, Some(entry))) => cache.apply(&id, entry),
                Ok((_, None)) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        // Ids that vanished from the store (objects removed by hand) are forgotten, unless this
        // node wrote a newer version after the LIST was taken.
        for id in cache.ids() {
            if !listed.contains_key(&id)
                && let Some(version) = known.get(&id)
            {
                cache.forget_if_unchanged(&id, *version);
            }
        }
        cache.rebuild_index();
        m::set_tokens(cache.indexed_count());
        if let Some(error) = first_error {
            return Err(error);
        }
        cache.refreshed_at = Some(started);
        Ok(())
    }

    /// Reads one record for the cache. A corrupt record becomes [`Entry::Corrupt`] (warned
    /// once, since that version is never fetched again); a vanished one becomes `None`.
    async fn fetch_entry(&self, id: &str, version: u64) -> Result<Option<Entry>> {
        match self.store.read(id, version).await {
            Ok(Some((record, hash))) => Ok(Some(Entry::Valid { record, hash })),
            Ok(None) => Ok(None),
            Err(AuthError::Corrupt { key, reason }) => {
                warn!(key = %key, reason = %reason, "skipping corrupt token record");
                m::record_corrupt_record();
                Ok(Some(Entry::Corrupt { version }))
            }
            Err(error) => Err(error),
        }
    }

    fn remember(&self, record: &TokenRecord, hash: TokenHash) {
        let mut cache = self.write_cache();
        cache.apply(
            &record.id,
            Entry::Valid {
                record: record.clone(),
                hash,
            },
        );
        cache.rebuild_index();
        m::set_tokens(cache.indexed_count());
    }

    fn read_cache(&self) -> RwLockReadGuard<'_, Cache> {
        // The cache is consistent between statements (no code panics while holding the lock),
        // so a poisoned lock is still safe to use.
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_cache(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    // ---------------------------------------------------------------- bootstrap

    async fn bootstrap(&self) -> Result<Bootstrap> {
        if !self.settings.enabled {
            return Ok(Bootstrap::Disabled);
        }
        let preset = self.settings.preset_bootstrap_token();
        if !self.read_cache().is_empty() {
            if preset.is_some() {
                info!("auth.bootstrap_token ignored: tokens already exist");
            }
            return Ok(Bootstrap::AlreadyInitialized);
        }
        let (secret, generated) = match preset {
            Some(preset) => (TokenSecret::new(preset), false),
            None => (generate_token(), true),
        };
        let now = self.clock.now();
        let record = first_version(
            BOOTSTRAP_TOKEN_ID.to_string(),
            BOOTSTRAP_TOKEN_NAME.to_string(),
            "first admin token, created at first start".to_string(),
            vec![Permission::Admin],
            &secret,
            now,
            None,
        );
        match self.store.put_if_absent(&record).await? {
            PutOutcome::Created => {
                self.remember(&record, secret.hash());
                m::record_change(TokenOperation::Bootstrap);
                info!(token_id = %record.id, from_preset = !generated, "created bootstrap admin token");
                Ok(if generated {
                    Bootstrap::Generated(secret)
                } else {
                    Bootstrap::CreatedFromPreset
                })
            }
            PutOutcome::SlotTaken => {
                info!(token_id = %record.id, "another node created the bootstrap admin token");
                self.reload().await?;
                Ok(Bootstrap::AlreadyInitialized)
            }
        }
    }

    // ---------------------------------------------------------------- token API

    /// Creates a token and returns it with its plaintext (shown once, never stored).
    ///
    /// # Errors
    ///
    /// [`AuthError::Invalid`] naming the field for a bad name, description, permission set or
    /// lifetime; [`AuthError::Unavailable`] if the store fails.
    pub async fn create(&self, request: NewToken) -> Result<(TokenInfo, TokenSecret)> {
        let name = validate_name(&request.name)?;
        let description = validate_description(&request.description)?;
        let permissions = validate_permissions(&request.permissions)?;
        let now = self.clock.now();
        let expires_at = expiry_from(now, request.expires_in)?;
        let secret = generate_token();
        let record = first_version(
            Uuid::now_v7().to_string(),
            name,
            description,
            permissions,
            &secret,
            now,
            expires_at,
        );
        match self.store.put_if_absent(&record).await? {
            PutOutcome::Created => {
                self.remember(&record, secret.hash());
                m::record_change(TokenOperation::Create);
                info!(token_id = %record.id, name = %record.name, "created token");
                Ok((record.info(now), secret))
            }
            // A fresh UUID v7 slot taken: a clock or generator fault, not a race to retry.
            PutOutcome::SlotTaken => Err(AuthError::Contended {
                id: record.id,
                attempts: 1,
            }),
        }
    }

    /// Returns every token that is not deleted (revoked and expired ones included), oldest
    /// first, after reloading from the store so tokens made on other nodes are listed.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unavailable`] if the store cannot be listed.
    pub async fn list(&self) -> Result<Vec<TokenInfo>> {
        self.reload().await?;
        let now = self.clock.now();
        let cache = self.read_cache();
        let mut tokens: Vec<TokenInfo> = cache.live_records().map(|r| r.info(now)).collect();
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tokens)
    }

    /// Returns token `id`, read from the store.
    ///
    /// # Errors
    ///
    /// [`AuthError::NotFound`] if it does not exist or was deleted; `Corrupt`, `Unavailable`.
    pub async fn get(&self, id: &str) -> Result<TokenInfo> {
        let record = self.read_live(id).await?;
        Ok(record.info(self.clock.now()))
    }

    /// Changes a token's name, description, permissions or expiry.
    ///
    /// # Errors
    ///
    /// [`AuthError::Invalid`] naming the field; `NotFound`; `Contended`; `Corrupt`;
    /// `Unavailable`.
    pub async fn update(&self, id: &str, update: TokenUpdate) -> Result<TokenInfo> {
        let name = update.name.as_deref().map(validate_name).transpose()?;
        let description = update
            .description
            .as_deref()
            .map(validate_description)
            .transpose()?;
        let permissions = update
            .permissions
            .as_deref()
            .map(validate_permissions)
            .transpose()?;
        let record = self
            .modify(id, TokenOperation::Update, |current, now| {
                let mut next = current.clone();
                if let Some(name) = &name {
                    next.name.clone_from(name);
                }
                if let Some(description) = &description {
                    next.description.clone_from(description);
                }
                if let Some(permissions) = &permissions {
                    next.permissions.clone_from(permissions);
                }
                if let Some(expires_in) = update.expires_in {
                    next.expires_at = expiry_from(now, expires_in)?;
                }
                Ok((next != *current).then_some(next))
            })
            .await?;
        Ok(record.info(self.clock.now()))
    }

    /// Deletes a token: it stops working at once on this node, and on others within their
    /// cache TTL. The id stays taken (a tombstone version is written).
    ///
    /// # Errors
    ///
    /// `NotFound` (also when already deleted); `Contended`; `Corrupt`; `Unavailable`.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.modify(id, TokenOperation::Delete, |current, _| {
            Ok(Some(TokenRecord {
                deleted: true,
                ..current.clone()
            }))
        })
        .await?;
        Ok(())
    }

    /// Gives a token a new plaintext, keeping its id and metadata; the old plaintext stops
    /// working (here at once, elsewhere within the cache TTL).
    ///
    /// # Errors
    ///
    /// [`AuthError::Revoked`] for a revoked token; `NotFound`; `Contended`; `Corrupt`;
    /// `Unavailable`.
    pub async fn rotate(&self, id: &str) -> Result<(TokenInfo, TokenSecret)> {
        let secret = generate_token();
        let new_hash = secret.hash().to_hex();
        let record = self
            .modify(id, TokenOperation::Rotate, |current, _| {
                if current.revoked {
                    return Err(AuthError::Revoked {
                        id: current.id.clone(),
                    });
                }
                Ok(Some(TokenRecord {
                    hash: new_hash.clone(),
                    ..current.clone()
                }))
            })
            .await?;
        Ok((record.info(self.clock.now()), secret))
    }

    /// Revokes a token for good. Revoking a revoked token changes nothing.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Contended`; `Corrupt`; `Unavailable`.
    pub async fn revoke(&self, id: &str) -> Result<TokenInfo> {
        let record = self
            .modify(id, TokenOperation::Revoke, |current, _| {
                Ok((!current.revoked).then(|| TokenRecord {
                    revoked: true,
                    ..current.clone()
                }))
            })
            .await?;
        Ok(record.info(self.clock.now()))
    }

    /// Reads the current record of `id` from the store, or `NotFound` if it is absent or
    /// deleted. The cache learns what was read.
    async fn read_live(&self, id: &str) -> Result<TokenRecord> {
        let not_found = || AuthError::NotFound { id: id.to_string() };
        if !is_valid_token_id(id) {
            return Err(not_found());
        }
        let (record, hash) = self.store.read_latest(id).await?.ok_or_else(not_found)?;
        self.remember(&record, hash);
        if record.deleted {
            return Err(not_found());
        }
        Ok(record)
    }

    /// Applies `change` to the latest version of `id` and writes the result into the next
    /// version slot, re-reading and retrying when another writer takes the slot first.
    /// `change` returns `None` when there is nothing to write; the current record is returned.
    async fn modify<F>(&self, id: &str, operation: TokenOperation, change: F) -> Result<TokenRecord>
    where
        F: Fn(&TokenRecord, DateTime<Utc>) -> Result<Option<TokenRecord>>,
    {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let current = self.read_live(id).await?;
            let now = self.clock.now();
            let Some(mut next) = change(&current, now)? else {
                return Ok(current);
            };
            next.version = current.version + 1;
            next.updated_at = now;
            next.nonce = random_nonce();
            match self.store.put_if_absent(&next).await? {
                PutOutcome::Created => {
                    let hash = TokenHash::from_hex(&next.hash)
                        .expect("a record built from a decoded record has a valid hash");
                    self.remember(&next, hash);
                    m::record_change(operation);
                    info!(
                        token_id = %next.id,
                        version = next.version,
                        operation = operation.as_str(),
                        "changed token"
                    );
                    return Ok(next);
                }
                PutOutcome::SlotTaken => continue,
            }
        }
        Err(AuthError::Contended {
            id: id.to_string(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }
}

fn record_outcome(outcome: &Result<TokenInfo, AuthRejection>) {
    match outcome {
        Ok(_) => m::record_allowed(),
        Err(rejection) => m::record_failure(rejection.reason()),
    }
}

/// Returns how long ago `then` was; a time in the future (the clock stepped back) counts as
/// infinitely old, so the cache reloads rather than trusting a view from "the future".
fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or(Duration::MAX)
}

fn retry_allowed(attempted_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    attempted_at.is_none_or(|at| age(now, at) >= MISS_RELOAD_INTERVAL)
}

fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AuthError::invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AuthError::invalid(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

fn validate_description(description: &str) -> Result<String> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(AuthError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(description.to_string())
}

fn validate_permissions(permissions: &[Permission]) -> Result<Vec<Permission>> {
    if permissions.is_empty() {
        return Err(AuthError::invalid(
            "permissions",
            "must name at least one of read, write, delete, admin",
        ));
    }
    let mut unique = permissions.to_vec();
    unique.sort();
    unique.dedup();
    Ok(unique)
}

fn expiry_from(now: DateTime<Utc>, expires_in: Option<Duration>) -> Result<Option<DateTime<Utc>>> {
    let Some(lifetime) = expires_in else {
        return Ok(None);
    };
    if lifetime.is_zero() || lifetime > MAX_EXPIRES_IN {
        return Err(AuthError::invalid(
            "expires_in",
            "must be positive and at most 100 years",
        ));
    }
    let delta = TimeDelta::from_std(lifetime)
        .map_err(|_| AuthError::invalid("expires_in", "is too large"))?;
    now.checked_add_signed(delta)
        .map(Some)
        .ok_or_else(|| AuthError::invalid("expires_in", "is too large"))
}

/// Version 1 of a new token: live, created and updated `now`, holding only `secret`'s hash.
fn first_version(
    id: String,
    name: String,
    description: String,
    permissions: Vec<Permission>,
    secret: &TokenSecret,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> TokenRecord {
    TokenRecord {
        format: RECORD_FORMAT,
        id,
        version: 1,
        name,
        description,
        permissions,
        hash: secret.hash().to_hex(),
        created_at: now,
        updated_at: now,
        expires_at,
        revoked: false,
        deleted: false,
        nonce: random_nonce(),
    }
}

#[cfg(test)]
mod tests;
