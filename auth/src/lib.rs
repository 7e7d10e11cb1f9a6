//! API tokens for arc-node: permissions, token storage in the shared object store, request
//! checks, and the token API of COMPAT.md ("Auth").
//!
//! A token is a random plaintext (`arc_` + 43 URL-safe characters) shown once to its creator.
//! The object store keeps only its SHA-256, in versioned put-if-absent records under a prefix
//! of their own (default `_auth/`), so a token created, rotated or revoked on one node holds on
//! every node that shares the store. Each node checks requests against an in-memory cache of
//! those records, reloaded after a short TTL. docs/0004-auth.md is the design note.
//!
//! # Layout
//!
//! - `permission`: [`Permission`] and [`grants`] (admin implies all, nothing else implies
//!   anything).
//! - `settings`: [`AuthSettings`], filled in by the binary.
//! - `service`: [`AuthService`]: open and bootstrap, token lifecycle, request checks.
//! - `http`: [`router`], [`route_table`], and the [`require`] / [`require_token`] middleware.
//! - `rejection`: [`AuthRejection`], the exact 401/403 responses.
//! - `extract`: [`extract_token`], the header and query lookup order.
//! - `expiry`: [`parse_expires_in`] (`3600`, `"15m"`, `"7d"`, ...).
//! - `clock`: [`Clock`] (from `arc-clock`), injected so tests move time by hand.
//! - private: `keys` (object keys), `record` (stored format), `store` (object store I/O),
//!   `cache` (the in-memory index), `secret` (generation, hashing, constant-time matching).
//! - [`metrics`]: metric names (`arc_auth_*`).
//!
//! # Using it in the binary
//!
//! ```no_run
//! # async fn start(store: std::sync::Arc<dyn object_store::ObjectStore>) -> Result<(), arc_auth::AuthError> {
//! use arc_auth::{AuthService, AuthSettings};
//!
//! let (auth, bootstrap) = AuthService::open(store, AuthSettings::default()).await?;
//! if let Some(token) = bootstrap.generated_token() {
//!     eprintln!("Admin API token (shown once): {}", token.expose_secret());
//! }
//! let api = axum::Router::new().merge(arc_auth::router(auth.clone()));
//! # let _ = api;
//! # Ok(())
//! # }
//! ```

mod cache;
mod clock;
mod error;
mod expiry;
mod extract;
mod http;
mod keys;
pub mod metrics;
mod permission;
mod record;
mod rejection;
mod secret;
mod service;
mod settings;
mod store;
#[cfg(test)]
mod test_support;

#[cfg(any(test, feature = "testsuite"))]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use error::{AuthError, Result};
pub use expiry::{MAX_EXPIRES_IN, parse_expires_in, parse_expires_in_text};
pub use extract::{API_KEY_HEADER, QUERY_TOKEN_PARAMETER, extract_token};
pub use http::{require, require_token, route_table, router};
pub use keys::{BOOTSTRAP_TOKEN_ID, is_valid_token_id};
pub use permission::{Permission, UnknownPermission, grants};
pub use record::{TokenInfo, TokenStatus};
pub use rejection::{AUTHENTICATION_REQUIRED, AuthRejection};
pub use secret::{TOKEN_PREFIX, TokenSecret, generate_token};
pub use service::{
    ANONYMOUS_TOKEN_ID, AuthService, BOOTSTRAP_TOKEN_NAME, Bootstrap, CacheStats,
    MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, NewToken, TokenUpdate,
};
pub use settings::{AuthSettings, DEFAULT_CACHE_TTL, DEFAULT_PREFIX, MIN_BOOTSTRAP_TOKEN_CHARS};
