//! The HTTP API of COMPAT.md: ingest, query, health, readiness and metrics.
//!
//! Handlers stay thin: they read the body under the size limit, decode it (on the blocking
//! pool when it is large, so the runtime is never held for long), hand the decoded writes to
//! the WAL writer and answer. Every error body names what failed. The router is built by
//! [`router`] so tests can enumerate its routes.

// Helpers return a ready `Response` as their error so handlers can `?` straight to the
// client; boxing it would only add an allocation on the error path.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_auth::Permission;
use arc_gossip::NodeState;
use arc_storage::TableId;
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::cluster::{self, FORWARDED_BY_HEADER, Need, Routing};
use crate::cluster_api;
use crate::compaction_api;
use crate::ingest::{self, IngestError, Precision, TableWrite};
use crate::metrics as m;
use crate::node::NodeInner;
use crate::writer::WriteError;

/// Bodies at least this large are decoded on the blocking pool.
const INLINE_DECODE_LIMIT: usize = 64 * 1024;

/// The header naming the database of a write or the default database of a query.
pub(crate) const DATABASE_HEADER: &str = "x-arc-database";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (`/health`, `/ready`, `/metrics`: probes and scrapers).
    Public,
    /// A token holding this permission (admin holds them all).
    Requires(Permission),
}

/// One route of the node's own API: method, path, access, handler, and what it needs from the
/// cluster when this node cannot serve it itself.
struct Route {
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
    forward: Option<Need>,
}

impl Route {
    /// Marks the route as served by the node that can (see `cluster::Cluster::route`).
    fn forwarded(mut self, need: Need) -> Route {
        self.forward = Some(need);
        self
    }
}

/// The node's own routes. [`router`] is built from this table and nothing else, and the
/// token check is applied from each entry's [`Access`], so a route cannot be added without
/// saying who may call it; [`routes`] exposes the same table to the route-table tests.
fn table() -> Vec<Route> {
    use Access::{Public, Requires};
    let route = |method, path, access, handler| Route {
        method,
        path,
        access,
        handler,
        forward: None,
    };
    vec![
        route("GET", "/health", Public, get(health)),
        route("GET", "/ready", Public, get(ready)),
        route("GET", "/metrics", Public, get(metrics_text)),
        route("GET", "/ping", Public, get(ping)),
        route(
            "POST",
            "/api/v1/write/msgpack",
            Requires(Permission::Write),
            post(write_msgpack),
        )
        .forwarded(Need::Write),
        route(
            "POST",
            "/write",
            Requires(Permission::Write),
            post(write_v1),
        )
        .forwarded(Need::Write),
        route(
            "POST",
            "/api/v2/write",
            Requires(Permission::Write),
            post(write_v2),
        )
        .forwarded(Need::Write),
        route(
            "POST",
            "/api/v1/write/line-protocol",
            Requires(Permission::Write),
            post(write_line_protocol),
        )
        .forwarded(Need::Write),
        route(
            "POST",
            "/api/v1/write/line-protocol/flush",
            Requires(Permission::Admin),
            post(flush),
        )
        .forwarded(Need::Write),
        route(
            "POST",
            "/api/v1/query",
            Requires(Permission::Read),
            post(crate::query_api::query_json),
        )
        .forwarded(Need::Query),
        route(
            "POST",
            "/api/v1/query/arrow",
            Requires(Permission::Read),
            post(crate::query_api::query_arrow),
        )
        .forwarded(Need::Query),
        route(
            "GET",
            "/api/v1/cluster",
            Requires(Permission::Admin),
            get(cluster_api::summary),
        ),
        route(
            "GET",
            "/api/v1/cluster/nodes",
            Requires(Permission::Admin),
            get(cluster_api::nodes),
        ),
        route(
            "GET",
            "/api/v1/cluster/nodes/{id}",
            Requires(Permission::Admin),
            get(cluster_api::node),
        ),
        route(
            "GET",
            "/api/v1/cluster/local",
            Requires(Permission::Admin),
            get(cluster_api::local),
        ),
        route(
            "GET",
            "/api/v1/cluster/health",
            Requires(Permission::Admin),
            get(cluster_api::health),
        ),
        // Sent to the primary wherever it arrives: only the primary can hand its epoch over.
        route(
            "POST",
            SWITCHOVER_PATH,
            Requires(Permission::Admin),
            post(cluster_api::failover),
        )
        .forwarded(Need::Write),
        // Forwarded to a compactor by the handlers themselves (see compaction_api.rs): the
        // target is a compactor, which `Need` does not route to.
        route(
            "GET",
            "/api/v1/compaction/status",
            Requires(Permission::Admin),
            get(compaction_api::status),
        ),
        route(
            "POST",
            "/api/v1/compaction/trigger",
            Requires(Permission::Admin),
            post(compaction_api::trigger),
        ),
    ]
}

/// Every route of the node's own API as (method, path, access), exactly as [`router`] serves
/// them. The token API's routes are listed by [`arc_auth::route_table`].
pub fn routes() -> Vec<(&'static str, &'static str, Access)> {
    table()
        .into_iter()
        .map(|route| (route.method, route.path, route.access))
        .collect()
}

type AppState = Arc<NodeInner>;

/// Builds the router over a node: its own routes, each behind the token check its table entry
/// asks for, and the token API.
pub fn router(node: Arc<NodeInner>) -> Router {
    let auth = node.auth.clone();
    let mut router = Router::new();
    for route in table() {
        let handler = match route.forward {
            None => route.handler,
            Some(need) => route.handler.route_layer(middleware::from_fn_with_state(
                (node.clone(), need),
                forward,
            )),
        };
        // Layered last, so the token is checked before anything is forwarded.
        let handler = match route.access {
            Access::Public => handler,
            Access::Requires(permission) => handler.route_layer(middleware::from_fn_with_state(
                (auth.clone(), permission),
                arc_auth::require,
            )),
        };
        router = router.route(route.path, handler);
    }
    router
        .with_state(node)
        .merge(arc_auth::router(auth))
        .layer(middleware::from_fn(observe))
}

async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    m::record_http(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Serves a request here or sends it to the node that can (see `cluster::Cluster::route`).
async fn forward(
    State((node, need)): State<(AppState, Need)>,
    request: Request,
    next: Next,
) -> Response {
    let forwarded_by = cluster::parse_forwarded_by(
        request
            .headers()
            .get(FORWARDED_BY_HEADER)
            .and_then(|value| value.to_str().ok()),
    );
    let label = match need {
        Need::Write => "write",
        Need::Query => "query",
    };
    match node.cluster.route(need, node.serves(need), &forwarded_by) {
        Routing::Local => next.run(request).await,
        Routing::Unavailable(message) => {
            m::record_forward(label, "unavailable");
            unavailable(message)
        }
        Routing::Loop(message) => {
            m::record_forward(label, "loop");
            error_response(StatusCode::LOOP_DETECTED, message)
        }
        Routing::Forward { node_id, address } => {
            proxy(
                &node,
                request,
                label,
                Some(need),
                &node_id,
                &address,
                forwarded_by,
            )
            .await
        }
    }
}

/// The planned switchover's route.
const SWITCHOVER_PATH: &str = "/api/v1/cluster/failover";

/// Headers that describe one hop, not the request, and are never passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "host",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

/// Sends the request to `node_id` and relays its answer. A request that never reached the
/// target answers 503 (retry is safe); one whose outcome is unknown (timeout mid-way)
/// answers 504, so a client does not take a possibly applied write for a failed one. With
/// `need`, the request ends early once the target can no longer answer it (see
/// [`target_lost`]); a query is then sent once more, to another healthy reader if there is one.
pub(crate) async fn proxy(
    node: &AppState,
    request: Request,
    label: &'static str,
    need: Option<Need>,
    node_id: &str,
    address: &str,
    forwarded_by: Vec<String>,
) -> Response {
    let (parts, body) = request.into_parts();
    // A write's body is held here until the target has it: it counts against this node's
    // budget of write bytes in flight, as if it were ingested here.
    let mut reservation = (need == Some(Need::Write)).then(|| node.ingest_budget.reservation());
    let body = match read_body(
        &parts.headers,
        body,
        node.max_payload_size(),
        node.body_read_timeout(),
        reservation.as_mut(),
    )
    .await
    {
        Ok(body) => body,
        Err(response) => return response,
    };
    let scheme = if node.tls { "https" } else { "http" };
    let target = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |path| path.as_str());
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name.as_str() != FORWARDED_BY_HEADER {
            headers.append(name.clone(), value.clone());
        }
    }
    let chain = [forwarded_by.as_slice(), std::slice::from_ref(&node.node_id)].concat();
    if let Ok(value) = HeaderValue::from_str(&chain.join(",")) {
        headers.insert(FORWARDED_BY_HEADER, value);
    }
    let send = |address: &str| {
        node.forward_client
            .request(
                parts.method.clone(),
                format!("{scheme}://{address}{target}"),
            )
            .headers(headers.clone())
            .body(body.clone())
            .send()
    };
    // A request held by a node that stopped answering (frozen, cut off) would wait for the
    // forward timeout. A write's outcome is then unknown (504) once another node is primary: the
    // old one can never acknowledge it, so the client retries on the new one. A query has no
    // outcome to lose: once the reader is shown dead or gone it goes to another healthy reader,
    // or the client is told to retry (503). (Not a switchover request: replacing the primary is
    // what it does.)
    let watch = need.filter(|_| parts.uri.path() != SWITCHOVER_PATH);
    let (mut node_id, mut address) = (node_id.to_string(), address.to_string());
    let mut resent = false;
    loop {
        let exchange = relay(send(&address), label, &node_id, &address, parts.uri.path());
        let Some(need) = watch else {
            return exchange.await;
        };
        let lost = tokio::select! {
            response = exchange => return cut_when_lost(response, node.clone(), need, node_id),
            lost = target_lost(node, need, &node_id) => lost,
        };
        warn!(target = %node_id, %address, reason = %lost, "a forwarded {label}'s target was lost while it was in flight");
        if need == Need::Write {
            m::record_forward(label, "unknown");
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "forwarded {label} to {node_id} at {address}, but {lost} before it answered; the outcome is unknown"
                ),
            );
        }
        // The lost reader is no longer healthy in the view, so routing skips it.
        if !resent
            && let Routing::Forward {
                node_id: next,
                address: next_address,
            } = node.cluster.route(need, false, &forwarded_by)
        {
            info!(from = %node_id, to = %next, "sending the query to another reader");
            m::record_forward(label, "resent");
            (node_id, address, resent) = (next, next_address, true);
            continue;
        }
        m::record_forward(label, "unavailable");
        return unavailable(format!(
            "forwarded {label} to {node_id} at {address}, but {lost} before it answered, and no other healthy reader is known; retry"
        ));
    }
}

static FORWARD_WARNINGS: crate::throttle::Throttle = crate::throttle::Throttle::new();

/// Waits for the head of the answer to a forwarded request and relays it, body streamed.
async fn relay(
    sending: impl Future<Output = reqwest::Result<reqwest::Response>>,
    label: &'static str,
    node_id: &str,
    address: &str,
    path: &str,
) -> Response {
    let answer = match sending.await {
        Ok(answer) => answer,
        Err(error) => {
            // The URL's query may hold a token (`?p=`): neither the log nor the answer shows it.
            let error = error.without_url();
            let reached = !error.is_connect();
            m::record_forward(label, if reached { "unknown" } else { "unreachable" });
            // One line a second at most: while a primary is replaced every client's retry
            // fails alike (the metric counts each).
            if let Some(left_out) = FORWARD_WARNINGS.due(Duration::from_secs(1)) {
                warn!(error = %with_causes(&error), target = node_id, %address, path, left_out, "forwarding failed");
            }
            return if reached {
                error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "forwarded {label} to {node_id} at {address}, but its answer did not arrive: {}; the outcome is unknown",
                        with_causes(&error)
                    ),
                )
            } else {
                unavailable(format!(
                    "forwarding {label} to {node_id} at {address} failed: {}",
                    with_causes(&error)
                ))
            };
        }
    };
    let status = answer.status();
    let mut relayed = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            relayed.append(name.clone(), value.clone());
        }
    }
    m::record_forward(label, if status.is_success() { "ok" } else { "error" });
    if let Ok(value) = HeaderValue::from_str(node_id) {
        relayed.insert("x-arc-served-by", value);
    }
    // Streamed as it arrives, never collected: a query's answer may be as large as
    // `query.max_result_bytes`, and several may pass through at once. An error mid-way ends the
    // body early, which the client sees as a broken answer, not a short one.
    let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = relayed;
    response
}

/// Ends the body of `response`, relayed from `target`, with an error once `target` is lost
/// (see [`target_lost`]): a reader that froze mid-answer would otherwise hold the client until
/// the forward timeout.
fn cut_when_lost(response: Response, node: AppState, need: Need, target: String) -> Response {
    let (parts, body) = response.into_parts();
    let lost = Box::pin(async move {
        let reason = target_lost(&node, need, &target).await;
        warn!(target = %target, %reason, "a forwarded answer's sender was lost mid-way; the answer is cut");
        std::io::Error::other(format!("{reason} while its answer was relayed"))
    });
    let chunks = body.into_data_stream();
    let guarded = futures::stream::unfold(Some((chunks, lost)), |state| async move {
        let (mut chunks, mut lost) = state?;
        tokio::select! {
            chunk = chunks.next() => {
                let chunk = chunk?.map_err(std::io::Error::other);
                Some((chunk, Some((chunks, lost))))
            }
            error = &mut lost => Some((Err(error), None)),
        }
    });
    Response::from_parts(parts, Body::from_stream(guarded))
}

/// How long a forwarded write may wait for a primary this node no longer hears on its
/// replication stream. A live primary sends every follower a keep-alive each second; ten
/// seconds without one, twice the stream's own silence timeout, means the link to it is cut or
/// it hangs, and a write sent over that link would otherwise wait for the forward timeout
/// (300 s) or until the link heals.
const UNHEARD_PRIMARY_BOUND: Duration = Duration::from_secs(10);

/// How long a forwarded write waits for the answer of a primary that was replaced meanwhile.
const REPLACED_PRIMARY_GRACE: Duration = Duration::from_secs(1);

/// Resolves once this node's view shows that `target` will not answer a forwarded request:
/// for a write, another node has been the primary for [`REPLACED_PRIMARY_GRACE`] (a newer
/// epoch, or `target` dead), or this node (a follower) has not heard `target` for
/// [`UNHEARD_PRIMARY_BOUND`] while the write was in flight; for a query, `target` is dead, has
/// left, or is gone from the view. Returns why, for the client.
async fn target_lost(node: &AppState, need: Need, target: &str) -> String {
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let sent = Instant::now();
    let mut replaced_since = None;
    loop {
        ticks.tick().await;
        let view = node.cluster.view();
        match need {
            Need::Write => {
                // An old primary that still runs (a switchover, a stop) answers what it holds
                // within moments, 204 or 503: a 504 for those left clients in doubt. One that
                // cannot answer (dead, frozen, cut off) is given up on a moment later.
                if let Some(primary) = view.primary()
                    && primary.id != target
                    && replaced_since.get_or_insert_with(Instant::now).elapsed()
                        >= REPLACED_PRIMARY_GRACE
                {
                    return format!("{} became primary", primary.id);
                }
                if let Some((primary, heard)) = node.primary_heard()
                    && primary == target
                    && heard.min(sent.elapsed()) >= UNHEARD_PRIMARY_BOUND
                {
                    return format!(
                        "this node has not heard {target} on its replication stream for {} s",
                        heard.as_secs()
                    );
                }
            }
            Need::Query => match view.get(target).map(|peer| peer.state) {
                None => return format!("{target} left this node's view of the cluster"),
                Some(state @ (NodeState::Dead | NodeState::Left)) => {
                    return format!("this node's view shows {target} {state}");
                }
                Some(_) => {}
            },
        }
    }
}

/// An error and its causes, `outer: inner: ...` (reqwest's own text hides why a request
/// failed, e.g. an untrusted certificate).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

pub(crate) fn unavailable(message: impl Into<String>) -> Response {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `{"status": "ok"}`. A follower adds which primary it streams from and how long ago it last
/// heard it, in headers: a standby that finds the primary silent asks the others before it
/// takes over (see `replication::ask_witnesses`).
async fn health(State(node): State<AppState>) -> Response {
    let mut response = axum::Json(json!({ "status": "ok" })).into_response();
    if let Some((primary, heard)) = node.primary_heard()
        && let Ok(primary) = HeaderValue::from_str(&primary)
    {
        let headers = response.headers_mut();
        headers.insert(crate::replication::PRIMARY_HEADER, primary);
        let heard_ms = u64::try_from(heard.as_millis()).unwrap_or(u64::MAX);
        headers.insert(
            crate::replication::PRIMARY_HEARD_MS_HEADER,
            HeaderValue::from(heard_ms),
        );
    }
    response
}

/// InfluxDB's liveness check, which its client libraries call (`ping()`, `version()`) before
/// or instead of a write: 204 and the version header they read. Public, as InfluxDB's is.
async fn ping() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        "x-influxdb-version",
        HeaderValue::from_static(concat!("arc-node-", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert("x-influxdb-build", HeaderValue::from_static("arc-node"));
    response
}

async fn ready(State(node): State<AppState>) -> Response {
    if node.is_ready() {
        if let Some(reason) = node.replication_lag_reason() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": "not ready", "reason": reason })),
            )
                .into_response();
        }
        axum::Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not ready", "reason": node.not_ready_reason() })),
        )
            .into_response()
    }
}

async fn metrics_text(State(node): State<AppState>) -> Response {
    m::set_buffer_rows(node.buffers.total_rows());
    m::set_buffer_bytes(node.buffers.total_bytes());
    let text = node
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// How much of an oversize body is read and thrown away before the 413 is sent. A client
/// still writing its body when the server answers and closes gets a broken pipe instead of
/// the 413; draining a bounded amount lets ordinary clients read the answer, while a body far
/// beyond this is cut off.
const OVERSIZE_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// How long draining an oversize body may take.
const OVERSIZE_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the whole body, refusing more than `limit` bytes (413) without buffering them, and a
/// body not complete within `timeout` of the handler's start (408: a client sending a byte
/// now and then must not hold the request, its memory and its connection for good). With a
/// `reservation` (a write), the buffer is paid for from `ingest.max_inflight_bytes` before it
/// grows, and the rest of the body is discarded once the budget is spent (503, or 413 for a
/// body larger than the whole budget): concurrent bodies are bounded while they are read, not
/// only once they are in memory.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
    mut reservation: Option<&mut ingest::Reservation>,
) -> Result<Bytes, Response> {
    let deadline = tokio::time::Instant::now() + timeout;
    let too_large = || {
        let mut response = error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds server.max_payload_size ({limit} bytes)"),
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if let Some(length) = declared
        && length > limit as u64
    {
        if length <= OVERSIZE_DRAIN_BYTES as u64 {
            drain(&mut stream).await;
        }
        return Err(too_large());
    }
    let refused = |error: IngestError| {
        let mut response = match error {
            IngestError::Busy(message) => unavailable(message),
            other => error_response(StatusCode::PAYLOAD_TOO_LARGE, other.to_string()),
        };
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    // A declared length is allocated (and paid for) once, exactly, instead of by doubling.
    let mut buffer = match (declared, reservation.as_deref_mut()) {
        (Some(length), Some(reservation)) => {
            let length = length as usize;
            if let Err(error) = reservation.grow_to(length) {
                drain(&mut stream).await;
                return Err(refused(error));
            }
            BytesMut::with_capacity(length)
        }
        _ => BytesMut::new(),
    };
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
            let mut response = error_response(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not complete within server.body_read_timeout ({} s; {} bytes received)",
                    timeout.as_secs_f64(),
                    buffer.len()
                ),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(response);
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|error| {
            error_response(
                StatusCode::BAD_REQUEST,
                format!("reading request body: {error}"),
            )
        })?;
        let wanted = buffer.len() + chunk.len();
        if wanted > limit {
            drain(&mut stream).await;
            return Err(too_large());
        }
        if let Some(reservation) = reservation.as_deref_mut()
            && wanted > buffer.capacity()
        {
            // Growing may double the allocation: paid for before it happens.
            if let Err(error) = reservation.grow_to(wanted.max(buffer.capacity() * 2)) {
                drop(buffer);
                drain(&mut stream).await;
                return Err(refused(error));
            }
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Reads and discards the rest of a body, up to [`OVERSIZE_DRAIN_BYTES`] and
/// [`OVERSIZE_DRAIN_TIME`].
async fn drain(stream: &mut axum::body::BodyDataStream) {
    let mut drained = 0usize;
    let _ = tokio::time::timeout(OVERSIZE_DRAIN_TIME, async {
        while drained <= OVERSIZE_DRAIN_BYTES {
            match stream.next().await {
                Some(Ok(chunk)) => drained += chunk.len(),
                _ => break,
            }
        }
    })
    .await;
}

fn ingest_error(error: IngestError) -> Response {
    match error {
        IngestError::TooLarge { .. } | IngestError::DecodedTooLarge { .. } => {
            m::record_rejected("too_large");
            error_response(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
        }
        IngestError::Busy(message) => {
            m::record_rejected("busy");
            unavailable(message)
        }
        other => {
            m::record_rejected("invalid");
            error_response(StatusCode::BAD_REQUEST, other.to_string())
        }
    }
}

pub(crate) fn header_database(headers: &HeaderMap) -> Result<Option<String>, Response> {
    match headers.get(DATABASE_HEADER) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim().to_string()))
            .map_err(|_| {
                error_response(
                    StatusCode::BAD_REQUEST,
                    format!("header {DATABASE_HEADER} is not valid ASCII"),
                )
            }),
    }
}

fn choose_database(headers: &HeaderMap, query_value: Option<&String>) -> Result<String, Response> {
    let database = header_database(headers)?
        .or_else(|| query_value.cloned())
        .unwrap_or_else(|| "default".to_string());
    ingest::validate_database_name(&database).map_err(ingest_error)?;
    Ok(database)
}

fn parse_precision(params: &HashMap<String, String>) -> Result<Precision, Response> {
    match params.get("precision") {
        None => Ok(Precision::Ns),
        Some(text) => text.parse::<Precision>().map_err(ingest_error),
    }
}

enum Format {
    LineProtocol(Precision),
    MessagePack,
}

impl Format {
    fn label(&self) -> &'static str {
        match self {
            Format::LineProtocol(_) => "line_protocol",
            Format::MessagePack => "msgpack",
        }
    }
}

/// A decoded write body, and the share of the inflight budget it holds until its rows are in
/// the WAL.
struct Decoded {
    writes: Vec<TableWrite>,
    skipped: ingest::Skipped,
    _reservation: ingest::Reservation,
}

async fn ingest(
    node: AppState,
    headers: HeaderMap,
    body: Body,
    database: String,
    format: Format,
) -> Response {
    if !node.is_ready() {
        return unavailable(node.not_ready_reason());
    }
    let limit = node.max_payload_size();
    // Held until the rows are in the WAL (see ingest/admission.rs); it grows as the body is
    // read and as it is inflated.
    let mut reservation = node.ingest_budget.reservation();
    let raw = match read_body(
        &headers,
        body,
        limit,
        node.body_read_timeout(),
        Some(&mut reservation),
    )
    .await
    {
        Ok(raw) => raw,
        Err(response) => {
            // read_body serves the query and forwarding routes too: the write is counted here.
            m::record_rejected(match response.status() {
                StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                StatusCode::REQUEST_TIMEOUT => "body_timeout",
                StatusCode::SERVICE_UNAVAILABLE => "busy",
                _ => "unreadable_body",
            });
            return response;
        }
    };
    // Checked once the body is read, so the client surely sees the answer.
    if let Some(reason) = node.backpressure() {
        m::record_rejected("backpressure");
        return unavailable(reason);
    }
    let received = raw.len() as u64;
    let inline = raw.len() < INLINE_DECODE_LIMIT && !ingest::is_compressed(&raw);
    let now_ns = node.now_ns();
    let label = format.label();
    // Lenient decoding leaves out the lines that conflict with the stored columns too.
    let lenient = node.lenient_line_protocol().then(|| node.known_schemas());
    let decode = move || -> Result<Decoded, IngestError> {
        let body = ingest::decompress(raw, limit, &mut reservation)?;
        let metered = Some(&mut reservation);
        let (writes, skipped) = match (format, lenient) {
            (Format::LineProtocol(precision), Some(known)) => {
                let stored = |measurement: &str| known.table(&TableId::new(&database, measurement));
                ingest::decode_line_protocol_lenient(
                    &body, &database, precision, now_ns, metered, &stored,
                )?
            }
            (Format::LineProtocol(precision), None) => (
                ingest::decode_line_protocol(&body, &database, precision, now_ns, metered)?,
                ingest::Skipped::default(),
            ),
            (Format::MessagePack, _) => (
                ingest::decode_msgpack(&body, &database, now_ns, metered)?,
                ingest::Skipped::default(),
            ),
        };
        Ok(Decoded {
            writes,
            skipped,
            _reservation: reservation,
        })
    };
    let decoded = if !inline {
        match tokio::task::spawn_blocking(decode).await {
            Ok(result) => result,
            Err(error) => {
                warn!(%error, "decode task failed");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("decoding the {label} request body failed: {error}"),
                );
            }
        }
    } else {
        decode()
    };
    let Decoded {
        writes,
        skipped,
        _reservation,
    } = match decoded {
        Ok(decoded) => decoded,
        Err(error) => return ingest_error(error),
    };
    if skipped.lines > 0 {
        m::record_skipped_lines(skipped.lines);
        debug!(
            lines = skipped.lines,
            first = skipped.first.as_deref().unwrap_or_default(),
            "left out the bad lines of a lenient line protocol write"
        );
    }
    let rows: u64 = writes
        .iter()
        .map(|write| write.batch.num_rows() as u64)
        .sum();
    if rows == 0 {
        m::record_rejected("empty");
        return error_response(StatusCode::BAD_REQUEST, "request contains no rows");
    }
    match node.write(writes).await {
        Ok(written) => {
            m::record_ingest(label, rows, received);
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert("x-arc-lsn", HeaderValue::from(written.lsn));
            if let Some(epoch) = node.write_epoch() {
                headers.insert("x-arc-epoch", HeaderValue::from(epoch));
            }
            // Where the write is durable: this node's WAL, and every in-sync standby's.
            let durability = match written.replicas {
                Some(replicas) if replicas > 0 => {
                    HeaderValue::try_from(format!("replicated:{replicas}"))
                        .unwrap_or_else(|_| HeaderValue::from_static("local"))
                }
                _ => HeaderValue::from_static("local"),
            };
            headers.insert("x-arc-durability", durability);
            if skipped.lines > 0 {
                headers.insert("x-arc-skipped-lines", HeaderValue::from(skipped.lines));
            }
            response
        }
        Err(WriteError::Conflict(message)) => {
            m::record_rejected("schema_conflict");
            error_response(StatusCode::BAD_REQUEST, message)
        }
        Err(WriteError::Unavailable(message)) => unavailable(message),
        Err(WriteError::Internal(message)) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
        Err(WriteError::TooLarge(message)) => {
            m::record_rejected("too_large");
            error_response(StatusCode::PAYLOAD_TOO_LARGE, message)
        }
    }
}

async fn write_msgpack(State(node): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let database = match choose_database(&headers, None) {
        Ok(database) => database,
        Err(response) => return response,
    };
    ingest(node, headers, body, database, Format::MessagePack).await
}

/// A line protocol write: the database from the `x-arc-database` header, else the query
/// parameter `database_param` names (InfluxDB's `db` / `bucket`), else `default`.
async fn write_lp(
    node: AppState,
    params: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
    database_param: Option<&str>,
) -> Response {
    let database = match choose_database(&headers, database_param.and_then(|key| params.get(key))) {
        Ok(database) => database,
        Err(response) => return response,
    };
    let precision = match parse_precision(&params) {
        Ok(precision) => precision,
        Err(response) => return response,
    };
    ingest(
        node,
        headers,
        body,
        database,
        Format::LineProtocol(precision),
    )
    .await
}

async fn write_v1(
    State(node): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    write_lp(node, params, headers, body, Some("db")).await
}

async fn write_v2(
    State(node): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    write_lp(node, params, headers, body, Some("bucket")).await
}

async fn write_line_protocol(
    State(node): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    write_lp(node, params, headers, body, None).await
}

async fn flush(State(node): State<AppState>) -> Response {
    if !node.is_ready() {
        return unavailable(node.not_ready_reason());
    }
    match node.flush_all().await {
        Ok(tables) => axum::Json(json!({
            "success": true,
            "message": format!("flushed {tables} table(s)"),
            "tables": tables,
        }))
        .into_response(),
        Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}
