//! Metric names and recording helpers of this crate, in one place.
//!
//! The binary installs the recorder (Prometheus) and may call [`describe`]; until then every
//! call is a no-op. Label values are bounded: `outcome` takes `allowed`/`rejected` or
//! `ok`/`error`, `reason` the values of [`FailureReason`], `operation` those of
//! [`TokenOperation`].

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

/// Authorization decisions by `outcome` (`allowed`, `rejected`).
pub const AUTH_REQUESTS_TOTAL: &str = "arc_auth_requests_total";
/// Rejected requests by `reason` (`missing`, `invalid`, `expired`, `revoked`, `forbidden`).
pub const AUTH_FAILURES_TOTAL: &str = "arc_auth_failures_total";
/// Reloads of the token cache from the object store by `outcome` (`ok`, `error`).
pub const AUTH_CACHE_REFRESHES_TOTAL: &str = "arc_auth_cache_refreshes_total";
/// Stored token records that could not be decoded (each counted once per process).
pub const AUTH_CORRUPT_RECORDS_TOTAL: &str = "arc_auth_corrupt_records_total";
/// Token changes made through this node by `operation`.
pub const AUTH_TOKEN_CHANGES_TOTAL: &str = "arc_auth_token_changes_total";
/// Tokens (not deleted) in this node's cache after its last reload or change.
pub const AUTH_TOKENS: &str = "arc_auth_tokens";

/// Why a request was refused, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// No token in the request.
    Missing,
    /// A token no live record has.
    Invalid,
    /// A token past its `expires_at`.
    Expired,
    /// A revoked token.
    Revoked,
    /// A valid token without the needed permission.
    Forbidden,
}

impl FailureReason {
    /// Returns the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Missing => "missing",
            FailureReason::Invalid => "invalid",
            FailureReason::Expired => "expired",
            FailureReason::Revoked => "revoked",
            FailureReason::Forbidden => "forbidden",
        }
    }
}

/// A change to a token, as the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOperation {
    /// The first admin token.
    Bootstrap,
    /// A new token.
    Create,
    /// Name, description, permissions or expiry changed.
    Update,
    /// New plaintext.
    Rotate,
    /// Revoked.
    Revoke,
    /// Tombstoned.
    Delete,
}

impl TokenOperation {
    /// Returns the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenOperation::Bootstrap => "bootstrap",
            TokenOperation::Create => "create",
            TokenOperation::Update => "update",
            TokenOperation::Rotate => "rotate",
            TokenOperation::Revoke => "revoke",
            TokenOperation::Delete => "delete",
        }
    }
}

/// Registers descriptions of every metric of this crate with the installed recorder.
pub fn describe() {
    describe_counter!(
        AUTH_REQUESTS_TOTAL,
        Unit::Count,
        "Authorization decisions by outcome."
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        Unit::Count,
        "Rejected requests by reason."
    );
    describe_counter!(
        AUTH_CACHE_REFRESHES_TOTAL,
        Unit::Count,
        "Reloads of the token cache from the object store by outcome."
    );
    describe_counter!(
        AUTH_CORRUPT_RECORDS_TOTAL,
        Unit::Count,
        "Stored token records that could not be decoded."
    );
    describe_counter!(
        AUTH_TOKEN_CHANGES_TOTAL,
        Unit::Count,
        "Token changes made through this node by operation."
    );
    describe_gauge!(
        AUTH_TOKENS,
        Unit::Count,
        "Tokens known to this node's cache."
    );
}

pub(crate) fn record_allowed() {
    counter!(AUTH_REQUESTS_TOTAL, "outcome" => "allowed").increment(1);
}

pub(crate) fn record_failure(reason: FailureReason) {
    counter!(AUTH_REQUESTS_TOTAL, "outcome" => "rejected").increment(1);
    counter!(AUTH_FAILURES_TOTAL, "reason" => reason.as_str()).increment(1);
}

pub(crate) fn record_refresh(ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    counter!(AUTH_CACHE_REFRESHES_TOTAL, "outcome" => outcome).increment(1);
}

pub(crate) fn record_corrupt_record() {
    counter!(AUTH_CORRUPT_RECORDS_TOTAL).increment(1);
}

pub(crate) fn record_change(operation: TokenOperation) {
    counter!(AUTH_TOKEN_CHANGES_TOTAL, "operation" => operation.as_str()).increment(1);
}

pub(crate) fn set_tokens(count: usize) {
    gauge!(AUTH_TOKENS).set(count as f64);
}
