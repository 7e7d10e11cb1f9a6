//! The compaction routes (admin token; envelope `{"success": true, "data": ...}` as the
//! cluster routes):
//! - `GET /api/v1/compaction/status`: the scheduler's status (`compaction::Status`);
//! - `POST /api/v1/compaction/trigger?database=&tier=hourly|daily`: starts a run now and
//!   answers 202; 409 while a run is going (as Arc answers), 400 for a bad parameter.
//!
//! A node that does not compact (a cluster writer or reader, or a compactor with
//! `compaction.enabled = false`) forwards both to a live, healthy compactor of its view,
//! adding itself to `X-Arc-Forwarded-By`; with none it answers 503 with `Retry-After`, and a
//! request already forwarded once answers 508 rather than travel on (the same rules as
//! forwarded writes, see `cluster.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use arc_gossip::{NodeState, Role};
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::cluster::{self, FORWARDED_BY_HEADER};
use crate::compaction::{self, TriggerError, TriggerRequest};
use crate::http;
use crate::ingest;
use crate::node::NodeInner;

/// The metric label of forwarded compaction requests.
const FORWARD_LABEL: &str = "compaction";

fn ok(status: StatusCode, data: Value) -> Response {
    (status, axum::Json(json!({ "success": true, "data": data }))).into_response()
}

fn fail(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(json!({ "success": false, "error": message })),
    )
        .into_response()
}

/// `GET /api/v1/compaction/status`.
pub async fn status(State(node): State<Arc<NodeInner>>, request: Request) -> Response {
    let Some(handle) = compaction::handle_of(&node) else {
        return to_compactor(&node, request).await;
    };
    match serde_json::to_value(handle.status()) {
        Ok(data) => ok(StatusCode::OK, data),
        Err(error) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the compaction status: {error}"),
        ),
    }
}

/// `POST /api/v1/compaction/trigger?database=&tier=hourly|daily`.
pub async fn trigger(
    State(node): State<Arc<NodeInner>>,
    Query(params): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    // Parameters are checked where the request arrives, so a bad one is a 400 from any node.
    let trigger = match parse_trigger(&params) {
        Ok(trigger) => trigger,
        Err(message) => return fail(StatusCode::BAD_REQUEST, message),
    };
    let Some(handle) = compaction::handle_of(&node) else {
        return to_compactor(&node, request).await;
    };
    match handle.trigger(trigger.clone(), node.clock.now()) {
        Ok(()) => ok(
            StatusCode::ACCEPTED,
            json!({
                "message": "compaction run started",
                "node_id": node.node_id,
                "database": trigger.database,
                "tier": trigger.tier.map(arc_compact::Tier::as_str),
            }),
        ),
        Err(busy @ TriggerError::Busy { .. }) => fail(StatusCode::CONFLICT, busy.to_string()),
        Err(closed @ TriggerError::Closed) => {
            let mut response = fail(StatusCode::SERVICE_UNAVAILABLE, closed.to_string());
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            response
        }
    }
}

fn parse_trigger(params: &HashMap<String, String>) -> Result<TriggerRequest, String> {
    let database = match params.get("database").map(|name| name.trim()) {
        None | Some("") => None,
        Some(name) => {
            ingest::validate_database_name(name).map_err(|error| error.to_string())?;
            Some(name.to_string())
        }
    };
    let tier = match params.get("tier").map(|tier| tier.trim()) {
        None | Some("") => None,
        Some(text) => Some(compaction::parse_tier(text)?),
    };
    Ok(TriggerRequest { database, tier })
}

/// Sends a compaction request to a live compactor (module docs).
async fn to_compactor(node: &Arc<NodeInner>, request: Request) -> Response {
    let forwarded_by = cluster::parse_forwarded_by(
        request
            .headers()
            .get(FORWARDED_BY_HEADER)
            .and_then(|value| value.to_str().ok()),
    );
    if !forwarded_by.is_empty() {
        crate::metrics::record_forward(FORWARD_LABEL, "loop");
        return http::error_response(
            StatusCode::LOOP_DETECTED,
            format!(
                "forwarding loop: compaction request was forwarded by {} to {}, which does not compact; its view of the cluster may be stale",
                forwarded_by.join(", "),
                node.node_id
            ),
        );
    }
    let view = node.cluster.view();
    // The first by id: any compactor answers for its own scheduler, and a fixed choice makes
    // repeated status calls show the same one.
    let target = view
        .nodes
        .iter()
        .filter(|member| {
            member.info.role == Role::Compactor
                && member.state == NodeState::Healthy
                && member.id != node.node_id
        })
        .min_by(|left, right| left.id.cmp(&right.id));
    let Some(target) = target else {
        crate::metrics::record_forward(FORWARD_LABEL, "unavailable");
        let why = if node.cluster.is_clustered() {
            format!(
                "no healthy compactor in cluster {}; node {} does not compact",
                node.cluster.cluster_name(),
                node.node_id
            )
        } else {
            format!(
                "node {} does not compact (compaction.enabled = false)",
                node.node_id
            )
        };
        return http::unavailable(why);
    };
    http::proxy(
        node,
        request,
        FORWARD_LABEL,
        None,
        &target.id,
        &target.info.api_addr,
        forwarded_by,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn test_should_parse_trigger_parameters() {
        assert_eq!(
            parse_trigger(&params(&[])).unwrap(),
            TriggerRequest {
                database: None,
                tier: None
            }
        );
        assert_eq!(
            parse_trigger(&params(&[("database", "metrics"), ("tier", "daily")])).unwrap(),
            TriggerRequest {
                database: Some("metrics".into()),
                tier: Some(arc_compact::Tier::Daily)
            }
        );
        assert!(
            parse_trigger(&params(&[("tier", "weekly")]))
                .unwrap_err()
                .contains("weekly")
        );
        assert!(parse_trigger(&params(&[("database", "../etc")])).is_err());
    }
}
