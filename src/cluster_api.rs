//! The cluster routes of COMPAT.md (admin token; envelope `{"success": true, "data": ...}`).
//!
//! The listed fields keep their names and types; extra fields carry the primary flag, the
//! epoch, the durable LSN, the generation and the health parts. Errors answer
//! `{"success": false, "error": "..."}` naming what was wrong: 400 for a bad filter, 404 for
//! an unknown node id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_gossip::{ClusterView, Filter, NodeView, Role};
use arc_storage::{CatalogState, FailoverEntry};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::node::NodeInner;

fn ok(data: Value) -> Response {
    axum::Json(json!({ "success": true, "data": data })).into_response()
}

fn fail(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(json!({ "success": false, "error": message })),
    )
        .into_response()
}

/// RFC 3339 UTC with millisecond precision, e.g. `2026-11-30T22:18:55.123Z`.
fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

/// What the replication columns of the node list are computed from.
struct Replication {
    /// The catalog's in-sync set (the primary and its in-sync standbys).
    in_sync: Vec<String>,
    /// The primary's durable LSN, as gossiped.
    primary_lsn: Option<u64>,
    /// Lag in milliseconds by node, where this node knows it (the primary: of each
    /// follower; a follower: its own).
    lag_ms: HashMap<String, u64>,
}

impl Replication {
    fn of(node: &NodeInner, view: &ClusterView) -> Replication {
        Replication {
            in_sync: node.catalog().snapshot().in_sync.clone(),
            primary_lsn: view.primary().map(|primary| primary.info.durable_lsn),
            lag_ms: node.replication_lags(),
        }
    }
}

/// One node as the API shows it.
fn node_json(node: &NodeView, now: SystemTime, replication: &Replication) -> Value {
    // A node heard of only through others has no heartbeat of its own yet: its start time is
    // the best lower bound.
    let heartbeat = node
        .last_heartbeat
        .unwrap_or_else(|| from_unix_ms(node.info.started_at_ms));
    let age = now
        .duration_since(heartbeat)
        .map(|age| age.as_secs_f64())
        .unwrap_or(0.0);
    json!({
        "id": node.id,
        "role": node.info.role.to_string(),
        "state": node.state.to_string(),
        "address": node.info.api_addr,
        "last_heartbeat": rfc3339(heartbeat),
        "heartbeat_age_seconds": age,
        "is_self": node.is_self,
        "primary": node.info.primary,
        "epoch": node.info.epoch,
        "durable_lsn": node.info.durable_lsn,
        "in_sync": replication.in_sync.contains(&node.id),
        // A follower's distance from the primary's durable LSN (gossiped, so as of the last
        // heartbeats) and, where known, in time.
        "lag": (!node.info.primary && matches!(node.info.role, Role::Writer | Role::Reader)).then(|| json!({
            "lsns": replication.primary_lsn.map(|lsn| lsn.saturating_sub(node.info.durable_lsn)),
            "seconds": replication.lag_ms.get(&node.id).map(|ms| *ms as f64 / 1000.0),
        })),
        "generation": node.generation,
        "replication_address": node.info.replication_addr,
        "version": node.info.version,
        "started_at": rfc3339(from_unix_ms(node.info.started_at_ms)),
        "health": {
            "status": node.info.health.status.to_string(),
            "score": node.info.health.score,
            "reasons": node.info.health.reasons,
            "parts": node.info.health.parts,
            "unhealthy_checks": node.info.health.unhealthy_checks,
        },
    })
}

/// One failover of the catalog's history.
fn failover_json(failover: &FailoverEntry) -> Value {
    let record = &failover.record;
    json!({
        "epoch": failover.epoch,
        "node": failover.node_id,
        "previous_primary": failover.previous_primary,
        "reason": record.reason,
        "detected_at": rfc3339(from_unix_ms(record.detected_at_ms)),
        "promoted_at": rfc3339(from_unix_ms(record.promoted_at_ms)),
        "promoted_at_ms": record.promoted_at_ms,
        // From the trigger first holding to the promote record written.
        "seconds": record.promoted_at_ms.saturating_sub(record.detected_at_ms) as f64 / 1000.0,
        "fence_lsn": failover.fence_lsn,
    })
}

/// What is wrong with the cluster as a whole, as this node sees it: no primary, or a primary
/// without an in-sync standby (a failure of it stops writes until it returns).
fn cluster_warnings(catalog: &CatalogState, view: &ClusterView) -> Vec<String> {
    let mut warnings = Vec::new();
    match (&catalog.primary, view.primary()) {
        (None, _) => warnings.push("no primary: no writer has claimed an epoch".to_string()),
        (Some(primary), None) => warnings.push(format!(
            "no primary is known: the catalog names {primary} (epoch {}), which gossip does not show alive",
            catalog.epoch
        )),
        (Some(_), Some(_)) => {}
    }
    if let Some(primary) = &catalog.primary
        && !catalog.in_sync.iter().any(|node| node != primary)
    {
        warnings.push(format!(
            "no standby is in sync with {primary}: if it fails, writes stop until it returns"
        ));
    }
    warnings
}

fn summary_json(view: &ClusterView, catalog: &CatalogState, clustered: bool) -> Value {
    let summary = view.summary();
    let primary = view.primary();
    json!({
        "cluster_name": view.cluster_name,
        "node_count": summary.node_count,
        "healthy_nodes": summary.healthy_nodes,
        "roles": {
            "writer": summary.roles.writer,
            "reader": summary.roles.reader,
            "compactor": summary.roles.compactor,
        },
        "enabled": clustered,
        "local_node": view.local_id,
        "primary": primary.map(|node| node.id.clone()),
        "epoch": primary.map_or(0, |node| node.info.epoch),
        // The catalog log as this node last read it: who holds the newest epoch, and the
        // failovers that led there (oldest first).
        "catalog": {
            "epoch": catalog.epoch,
            "primary": catalog.primary,
            "in_sync": catalog.in_sync,
        },
        "failovers": catalog.failovers.iter().map(failover_json).collect::<Vec<_>>(),
        "warnings": if clustered { cluster_warnings(catalog, view) } else { Vec::new() },
    })
}

/// `GET /api/v1/cluster`.
pub async fn summary(State(node): State<Arc<NodeInner>>) -> Response {
    ok(summary_json(
        &node.cluster.view(),
        &node.catalog().snapshot(),
        node.cluster.is_clustered(),
    ))
}

/// `GET /api/v1/cluster/nodes[?role=...][&state=...]`.
pub async fn nodes(
    State(node): State<Arc<NodeInner>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let filter = match Filter::parse(
        params.get("role").map(String::as_str),
        params.get("state").map(String::as_str),
    ) {
        Ok(filter) => filter,
        Err(error) => return fail(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let view = node.cluster.view();
    let now = node.clock.system_time();
    let replication = Replication::of(&node, &view);
    let listed: Vec<Value> = view
        .filter(&filter)
        .into_iter()
        .map(|node| node_json(node, now, &replication))
        .collect();
    ok(Value::Array(listed))
}

/// `GET /api/v1/cluster/nodes/{id}`.
pub async fn node(State(node): State<Arc<NodeInner>>, Path(id): Path<String>) -> Response {
    let view = node.cluster.view();
    match view.get(&id) {
        Some(found) => ok(node_json(
            found,
            node.clock.system_time(),
            &Replication::of(&node, &view),
        )),
        None => fail(
            StatusCode::NOT_FOUND,
            format!("node {id:?} is not in cluster {:?}", view.cluster_name),
        ),
    }
}

/// `GET /api/v1/cluster/local`.
pub async fn local(State(node): State<Arc<NodeInner>>) -> Response {
    let view = node.cluster.view();
    match view.local() {
        Some(local) => ok(node_json(
            local,
            node.clock.system_time(),
            &Replication::of(&node, &view),
        )),
        None => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {} is not in its own view yet", node.node_id),
        ),
    }
}

/// `GET /api/v1/cluster/health`: this node's own health.
pub async fn health(State(node): State<Arc<NodeInner>>) -> Response {
    let info = node.cluster.local_info();
    let view = node.cluster.view();
    let state = view
        .local()
        .map_or_else(|| "joining".to_string(), |local| local.state.to_string());
    ok(json!({
        "status": info.health.status.to_string(),
        "node_id": node.node_id,
        "role": info.role.to_string(),
        "cluster_name": node.cluster.cluster_name(),
        "state": state,
        "score": info.health.score,
        "reasons": info.health.reasons,
        "parts": info.health.parts,
        "unhealthy_checks": info.health.unhealthy_checks,
        "uptime_ms": node.clock.unix_ms().saturating_sub(info.started_at_ms),
        "cluster_warnings": if node.cluster.is_clustered() {
            cluster_warnings(&node.catalog().snapshot(), &view)
        } else {
            Vec::new()
        },
    }))
}

/// `POST /api/v1/cluster/failover`, body optional `{"target": "<node id>"}`: a planned
/// switchover (see switchover.rs). 200 names the new primary, its epoch and how long writes
/// were refused; 409 says why there was none (no eligible target, or a step did not finish).
pub async fn failover(State(node): State<Arc<NodeInner>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        target: Option<String>,
    }
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        Request { target: None }
    } else {
        match serde_json::from_slice::<Request>(&body) {
            Ok(request) => request,
            Err(error) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("the body must be empty or {{\"target\": \"<node id>\"}}: {error}"),
                );
            }
        }
    };
    match crate::switchover::run(&node, request.target).await {
        Ok(switched) => {
            let answer = ok(json!({
                "previous_primary": switched.previous_primary,
                "primary": switched.new_primary,
                "epoch": switched.epoch,
                "fence_lsn": switched.fence_lsn,
                "unavailable_ms": switched.unavailable.as_millis() as u64,
            }));
            crate::switchover::finish(&node, &switched);
            answer
        }
        Err(error) => fail(StatusCode::CONFLICT, error.to_string()),
    }
}
