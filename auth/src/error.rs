//! The crate's error type. Messages are lowercase, name what failed (the token id, the object
//! key, the request field) and never contain a token's plaintext.

/// Errors of the token service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `auth.bootstrap_token` is set but too short to be a credential.
    #[error(
        "invalid setting auth.bootstrap_token: must be at least {minimum} characters, got {length}"
    )]
    BootstrapTokenTooShort {
        /// Characters in the configured value.
        length: usize,
        /// The required minimum.
        minimum: usize,
    },
    /// A request field (or setting) has an unacceptable value; the caller must fix it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as the client spells it (`name`, `permissions`, `expires_in`, ...).
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// No live token has this id (never created, or deleted).
    #[error("token not found. id={id}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The operation makes no sense on a revoked token (rotation would mint a dead secret).
    #[error("token is revoked. id={id}")]
    Revoked {
        /// The revoked token's id.
        id: String,
    },
    /// Other writers kept winning the next version slot of this token; retry later.
    #[error("token changed concurrently {attempts} times, giving up. id={id}")]
    Contended {
        /// The contended token's id.
        id: String,
        /// Slots lost in a row.
        attempts: u32,
    },
    /// A stored record cannot be decoded or contradicts its key.
    #[error("corrupt token record. key={key}: {reason}")]
    Corrupt {
        /// Object key of the record.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store failed or gave no definite answer; retryable.
    #[error("object store unavailable. key={key}: {source}")]
    Unavailable {
        /// Object key (or prefix) of the failed operation.
        key: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;

impl AuthError {
    /// Returns an [`AuthError::Invalid`] for `field`.
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        AuthError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
