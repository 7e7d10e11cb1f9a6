//! [`AuthRejection`]: why a request was refused, and its exact COMPAT.md response.
//!
//! The bodies are fixed strings: `{"success":false,"error":"Authentication required"}` (401)
//! and `{"success":false,"error":"Permission denied: <perm> required"}` (403). Missing,
//! unknown, expired and revoked tokens all get the same 401 body, so a client cannot probe which
//! tokens exist; the reason goes only to the `arc_auth_failures_total` metric.

use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::metrics::FailureReason;
use crate::permission::Permission;

/// Body of the 401 response.
pub const AUTHENTICATION_REQUIRED: &str = "Authentication required";

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRejection {
    /// The request carries no token.
    Missing,
    /// The token matches no live token.
    Invalid,
    /// The token expired.
    Expired,
    /// The token was revoked.
    Revoked,
    /// The token is valid but lacks this permission.
    Forbidden(Permission),
}

/// The JSON error envelope of COMPAT.md; field order is the wire order.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub success: bool,
    pub error: &'a str,
}

impl AuthRejection {
    /// Returns 401, or 403 for [`AuthRejection::Forbidden`].
    pub fn status(&self) -> StatusCode {
        match self {
            AuthRejection::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// Returns the metric label of this rejection.
    pub fn reason(&self) -> FailureReason {
        match self {
            AuthRejection::Missing => FailureReason::Missing,
            AuthRejection::Invalid => FailureReason::Invalid,
            AuthRejection::Expired => FailureReason::Expired,
            AuthRejection::Revoked => FailureReason::Revoked,
            AuthRejection::Forbidden(_) => FailureReason::Forbidden,
        }
    }

    /// Returns the exact response body.
    pub fn body(&self) -> String {
        let message = match self {
            AuthRejection::Forbidden(permission) => {
                format!("Permission denied: {permission} required")
            }
            _ => AUTHENTICATION_REQUIRED.to_string(),
        };
        let body = ErrorBody {
            success: false,
            error: &message,
        };
        serde_json::to_string(&body).expect("an error body always serializes")
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status() == StatusCode::UNAUTHORIZED {
            // RFC 9110 asks a 401 to name a scheme; clients ignore it otherwise.
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_render_exact_compat_bodies() {
        assert_eq!(
            AuthRejection::Missing.body(),
            r#"{"success":false,"error":"Authentication required"}"#
        );
        for rejection in [
            AuthRejection::Invalid,
            AuthRejection::Expired,
            AuthRejection::Revoked,
        ] {
            assert_eq!(rejection.body(), AuthRejection::Missing.body());
            assert_eq!(rejection.status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(
            AuthRejection::Forbidden(Permission::Write).body(),
            r#"{"success":false,"error":"Permission denied: write required"}"#
        );
        assert_eq!(
            AuthRejection::Forbidden(Permission::Admin).status(),
            StatusCode::FORBIDDEN
        );
    }
}
