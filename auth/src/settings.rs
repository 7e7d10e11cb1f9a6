//! [`AuthSettings`]: what an operator tunes. The binary fills it from its own serde config
//! (`[auth]`, `ARC_AUTH_*`); components (the object store, the clock) are passed separately.

use std::fmt;
use std::time::Duration;

/// Default key prefix of every token record in the object store.
pub const DEFAULT_PREFIX: &str = "_auth/";

/// Default age after which the token cache is reloaded from the object store.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);

/// Minimum length, in characters, of a preset bootstrap token (COMPAT.md).
pub const MIN_BOOTSTRAP_TOKEN_CHARS: usize = 32;

/// Settings of the token service.
#[derive(Clone)]
pub struct AuthSettings {
    /// Whether requests need a token at all. Default true. When false,
    /// [`crate::AuthService::authorize`] lets every request through; the binary must log that
    /// loudly at start.
    pub enabled: bool,
    /// Preset plaintext of the first admin token (`ARC_AUTH_BOOTSTRAP_TOKEN`), at least 32
    /// characters; used only when the store holds no token yet. `None` (or an empty string)
    /// means a random one is generated and returned once by [`crate::AuthService::open`].
    pub bootstrap_token: Option<String>,
    /// How old the token cache may grow before a request reloads it from the store. Default
    /// 5 s. This bounds how long a token created, rotated or revoked on another node takes to
    /// hold here; a shorter TTL costs one more LIST of the prefix per TTL. Reloads happen at
    /// most once per second whatever the TTL.
    pub cache_ttl: Duration,
    /// Key prefix of the token records in the shared object store. Default `_auth/`. Every
    /// node of a cluster must use the same prefix.
    pub prefix: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bootstrap_token: None,
            cache_ttl: DEFAULT_CACHE_TTL,
            prefix: DEFAULT_PREFIX.to_string(),
        }
    }
}

impl AuthSettings {
    /// Returns the defaults with a preset bootstrap token, as tests want.
    pub fn with_bootstrap_token(token: impl Into<String>) -> Self {
        Self {
            bootstrap_token: Some(token.into()),
            ..Self::default()
        }
    }

    /// Returns the preset bootstrap token, treating an empty value (`bootstrap_token = ""`,
    /// Arc's documented default) as absent.
    pub(crate) fn preset_bootstrap_token(&self) -> Option<&str> {
        self.bootstrap_token
            .as_deref()
            .filter(|token| !token.trim().is_empty())
    }
}

impl fmt::Debug for AuthSettings {
    // Hand-written so the preset token never reaches a log through `{:?}`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AuthSettings")
            .field("enabled", &self.enabled)
            .field(
                "bootstrap_token",
                &self.bootstrap_token.as_ref().map(|_| "<redacted>"),
            )
            .field("cache_ttl", &self.cache_ttl)
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_redact_bootstrap_token_in_debug() {
        let settings =
            AuthSettings::with_bootstrap_token("super-secret-bootstrap-token-0123456789");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("super-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn test_should_treat_empty_bootstrap_token_as_absent() {
        let settings = AuthSettings::with_bootstrap_token("  ");
        assert_eq!(settings.preset_bootstrap_token(), None);
        assert!(AuthSettings::default().enabled);
        assert_eq!(AuthSettings::default().cache_ttl, Duration::from_secs(5));
    }
}
