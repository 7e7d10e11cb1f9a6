//! The HTTP side: the token API router, its route table, and the per-route middleware the
//! binary puts in front of its own routes.
//!
//! Every route of [`router`] checks its own permission through [`require`] (admin) or
//! [`require_token`] (any valid token) as a route layer, so a handler never runs for a request
//! that failed the check, and [`route_table`] lists the same routes with the same permissions
//! for the binary's route-table test.
//!
//! Bodies: success is `{"success":true,...}`; errors are `{"success":false,"error":"..."}` with
//! 400 (bad field, named), 404 (unknown id), 409 (revoked or contended token), 500 (corrupt
//! record) or 503 (object store unavailable, with `Retry-After`). A plaintext token appears in
//! exactly two responses: creation and rotation.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::{error, warn};

use crate::error::AuthError;
use crate::expiry::parse_expires_in;
use crate::permission::Permission;
use crate::record::TokenInfo;
use crate::rejection::{AuthRejection, ErrorBody};
use crate::service::{AuthService, NewToken, TokenUpdate};

/// Path of the token collection.
pub const TOKENS_PATH: &str = "/api/v1/auth/tokens";
/// Path of one token.
pub const TOKEN_PATH: &str = "/api/v1/auth/tokens/{id}";
/// Path of the rotate action.
pub const ROTATE_PATH: &str = "/api/v1/auth/tokens/{id}/rotate";
/// Path of the revoke action.
pub const REVOKE_PATH: &str = "/api/v1/auth/tokens/{id}/revoke";
/// Path of the token check.
pub const VERIFY_PATH: &str = "/api/v1/auth/verify";
/// Path of the cache counters.
pub const CACHE_STATS_PATH: &str = "/api/v1/auth/cache/stats";
/// Path of the forced cache reload.
pub const CACHE_INVALIDATE_PATH: &str = "/api/v1/auth/cache/invalidate";

/// Every route of [`router`]: method, path (axum syntax, `{id}` for a token id) and the
/// permission it needs. `None` means any valid token will do; no route here is public.
const ROUTES: &[(&str, &str, Option<Permission>)] = &[
    ("POST", TOKENS_PATH, Some(Permission::Admin)),
    ("GET", TOKENS_PATH, Some(Permission::Admin)),
    ("GET", TOKEN_PATH, Some(Permission::Admin)),
    ("PATCH", TOKEN_PATH, Some(Permission::Admin)),
    ("DELETE", TOKEN_PATH, Some(Permission::Admin)),
    ("POST", ROTATE_PATH, Some(Permission::Admin)),
    ("POST", REVOKE_PATH, Some(Permission::Admin)),
    ("GET", VERIFY_PATH, None),
    ("GET", CACHE_STATS_PATH, Some(Permission::Admin)),
    ("POST", CACHE_INVALIDATE_PATH, Some(Permission::Admin)),
];

/// Returns every route of [`router`] with its method and needed permission (`None`: any valid
/// token). The binary's route-table test walks this list.
pub fn route_table() -> &'static [(&'static str, &'static str, Option<Permission>)] {
    ROUTES
}

/// Returns the token API router. Each route checks its own permission; merge it into the
/// binary's router as is (it has no state left to provide).
pub fn router(service: Arc<AuthService>) -> Router {
    let admin = Router::new()
        .route(TOKENS_PATH, post(create_token).get(list_tokens))
        .route(
            TOKEN_PATH,
            get(get_token).patch(update_token).delete(delete_token),
        )
        .route(ROTATE_PATH, post(rotate_token))
        .route(REVOKE_PATH, post(revoke_token))
        .route(CACHE_STATS_PATH, get(cache_stats))
        .route(CACHE_INVALIDATE_PATH, post(invalidate_cache))
        .route_layer(middleware::from_fn_with_state(
            (service.clone(), Permission::Admin),
            require,
        ));
    let any_token =
        Router::new()
            .route(VERIFY_PATH, get(verify))
            .route_layer(middleware::from_fn_with_state(
                service.clone(),
                require_token,
            ));
    admin.merge(any_token).with_state(service)
}

/// Middleware: lets a request through only with a valid token granting the permission in its
/// state (admin grants everything), and stores the [`TokenInfo`] in the request's extensions
/// for the handler. Otherwise answers 401 or 403 with COMPAT.md's exact bodies.
///
/// Use it as a route layer, so it runs only for matched routes:
///
/// ```
/// use std::sync::Arc;
///
/// use arc_auth::{AuthService, Permission, require};
/// use axum::{Router, middleware, routing::post};
///
/// async fn query() -> &'static str {
///     "rows"
/// }
///
/// fn routes(auth: Arc<AuthService>) -> Router {
///     Router::new().route(
///         "/api/v1/query",
///         post(query).route_layer(middleware::from_fn_with_state(
///             (auth, Permission::Read),
///             require,
///         )),
///     )
/// }
/// ```
pub async fn require(
    State((service, needed)): State<(Arc<AuthService>, Permission)>,
    request: Request,
    next: Next,
) -> Response {
    let outcome = service
        .authorize(request.headers(), request.uri().query(), needed)
        .await;
    admit(outcome, request, next).await
}

/// Middleware like [`require`], for routes any valid token may use.
pub async fn require_token(
    State(service): State<Arc<AuthService>>,
    request: Request,
    next: Next,
) -> Response {
    let outcome = service
        .authenticate(request.headers(), request.uri().query())
        .await;
    admit(outcome, request, next).await
}

/// Passes an authenticated request on with its [`TokenInfo`], or answers the rejection.
async fn admit(
    outcome: Result<TokenInfo, AuthRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    match outcome {
        Ok(token) => {
            request.extensions_mut().insert(token);
            next.run(request).await
        }
        Err(rejection) => rejection.into_response(),
    }
}

// -------------------------------------------------------------------- responses

/// A token with an optional plaintext and message, flattened the way Arc's clients read it.
#[derive(Serialize)]
struct TokenResponse<'a> {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(flatten)]
    info: &'a TokenInfo,
}

#[derive(Serialize)]
struct ListResponse<'a> {
    success: bool,
    count: usize,
    tokens: &'a [TokenInfo],
}

#[derive(Serialize)]
struct DeleteResponse<'a> {
    success: bool,
    message: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
struct VerifyResponse<'a> {
    success: bool,
    valid: bool,
    token_info: &'a TokenInfo,
    permissions: &'a [Permission],
}

#[derive(Serialize)]
struct CacheResponse<'a, T: Serialize> {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(flatten)]
    stats: T,
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Err(error) => {
            error!(error = %error, "failed to encode a token API response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn token_response(
    status: StatusCode,
    info: &TokenInfo,
    plaintext: Option<&str>,
    message: Option<&str>,
) -> Response {
    let body = TokenResponse {
        success: true,
        token: plaintext,
        message,
        info,
    };
    json_response(status, &body)
}

/// An error of the token API, rendered as `{"success":false,"error":"..."}`.
struct ApiError(AuthError);

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            AuthError::Invalid { .. } => StatusCode::BAD_REQUEST,
            AuthError::NotFound { .. } => StatusCode::NOT_FOUND,
            AuthError::Revoked { .. } | AuthError::Contended { .. } => StatusCode::CONFLICT,
            AuthError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Corrupt { .. } | AuthError::BootstrapTokenTooShort { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = self.0.to_string();
        if status.is_server_error() {
            warn!(error = %message, status = status.as_u16(), "token API request failed");
        }
        let body = ErrorBody {
            success: false,
            error: &message,
        };
        let mut response = json_response(status, &body);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

// -------------------------------------------------------------------- request bodies

fn parse_object(body: &Bytes) -> Result<Map<String, Value>, AuthError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| AuthError::invalid("body", format!("is not valid JSON: {error}")))?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(AuthError::invalid("body", "must be a JSON object")),
    }
}

/// Returns an optional string field; `null` counts as absent.
fn optional_string(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, AuthError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(AuthError::invalid(field, "must be a string")),
    }
}

/// Returns the `permissions` array (or `None` when absent), folding in Arc's older
/// `"is_admin": true`.
fn permissions_field(object: &Map<String, Value>) -> Result<Option<Vec<Permission>>, AuthError> {
    let mut permissions = match object.get("permissions") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| match item {
                    Value::String(name) => name
                        .parse::<Permission>()
                        .map_err(|error| AuthError::invalid("permissions", error.to_string())),
                    _ => Err(AuthError::invalid(
                        "permissions",
                        "must be an array of strings",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(AuthError::invalid(
                "permissions",
                "must be an array of strings",
            ));
        }
    };
    match object.get("is_admin") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => permissions
            .get_or_insert_with(Vec::new)
            .push(Permission::Admin),
        Some(_) => return Err(AuthError::invalid("is_admin", "must be a boolean")),
    }
    Ok(permissions)
}

fn expires_in_field(value: &Value) -> Result<Option<Duration>, AuthError> {
    parse_expires_in(value).map_err(|reason| AuthError::invalid("expires_in", reason))
}

fn new_token_from(body: &Bytes) -> Result<NewToken, AuthError> {
    let object = parse_object(body)?;
    let name = optional_string(&object, "name")?
        .ok_or_else(|| AuthError::invalid("name", "is required"))?;
    let description = optional_string(&object, "description")?.unwrap_or_default();
    let permissions = permissions_field(&object)?
        .ok_or_else(|| AuthError::invalid("permissions", "is required"))?;
    let expires_in = match object.get("expires_in") {
        None => None,
        Some(value) => expires_in_field(value)?,
    };
    Ok(NewToken {
        name,
        description,
        permissions,
        expires_in,
    })
}

fn token_update_from(body: &Bytes) -> Result<TokenUpdate, AuthError> {
    let object = parse_object(body)?;
    // Absent means "unchanged"; for expires_in, null means "never expires".
    let expires_in = match object.get("expires_in") {
        None => None,
        Some(value) => Some(expires_in_field(value)?),
    };
    Ok(TokenUpdate {
        name: optional_string(&object, "name")?,
        description: optional_string(&object, "description")?,
        permissions: permissions_field(&object)?,
        expires_in,
    })
}

// -------------------------------------------------------------------- handlers

async fn create_token(State(service): State<Arc<AuthService>>, body: Bytes) -> ApiResult {
    let request = new_token_from(&body)?;
    let (info, secret) = service.create(request).await?;
    Ok(token_response(
        StatusCode::CREATED,
        &info,
        Some(secret.expose_secret()),
        Some("Token created. Store it now: it is shown only once."),
    ))
}

async fn list_tokens(State(service): State<Arc<AuthService>>) -> ApiResult {
    let tokens = service.list().await?;
    let body = ListResponse {
        success: true,
        count: tokens.len(),
        tokens: &tokens,
    };
    Ok(json_response(StatusCode::OK, &body))
}

async fn get_token(State(service): State<Arc<AuthService>>, Path(id): Path<String>) -> ApiResult {
    let info = service.get(&id).await?;
    Ok(token_response(StatusCode::OK, &info, None, None))
}

async fn update_token(
    State(service): State<Arc<AuthService>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let update = token_update_from(&body)?;
    let info = service.update(&id, update).await?;
    Ok(token_response(
        StatusCode::OK,
        &info,
        None,
        Some("Token updated."),
    ))
}

async fn delete_token(
    State(service): State<Arc<AuthService>>,
    Path(id): Path<String>,
) -> ApiResult {
    service.delete(&id).await?;
    let body = DeleteResponse {
        success: true,
        message: "Token deleted.",
        id: &id,
    };
    Ok(json_response(StatusCode::OK, &body))
}

async fn rotate_token(
    State(service): State<Arc<AuthService>>,
    Path(id): Path<String>,
) -> ApiResult {
    let (info, secret) = service.rotate(&id).await?;
    Ok(token_response(
        StatusCode::OK,
        &info,
        Some(secret.expose_secret()),
        Some("Token rotated. The old value no longer works; store the new one now."),
    ))
}

async fn revoke_token(
    State(service): State<Arc<AuthService>>,
    Path(id): Path<String>,
) -> ApiResult {
    let info = service.revoke(&id).await?;
    Ok(token_response(
        StatusCode::OK,
        &info,
        None,
        Some("Token revoked."),
    ))
}

async fn verify(axum::Extension(token): axum::Extension<TokenInfo>) -> Response {
    let body = VerifyResponse {
        success: true,
        valid: true,
        token_info: &token,
        permissions: &token.permissions,
    };
    json_response(StatusCode::OK, &body)
}

async fn cache_stats(State(service): State<Arc<AuthService>>) -> Response {
    let body = CacheResponse {
        success: true,
        message: None,
        stats: service.cache_stats(),
    };
    json_response(StatusCode::OK, &body)
}

async fn invalidate_cache(State(service): State<Arc<AuthService>>) -> ApiResult {
    service.reload().await?;
    let body = CacheResponse {
        success: true,
        message: Some("Token cache reloaded."),
        stats: service.cache_stats(),
    };
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests;
