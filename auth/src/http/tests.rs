//! Every token operation through the router (`tower::ServiceExt::oneshot`), the exact 401/403
//! bodies, each way of presenting a token, and the route table against the router.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request as HttpRequest, StatusCode};
use axum::middleware;
use axum::routing::post;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::clock::ManualClock;
use crate::keys::BOOTSTRAP_TOKEN_ID;
use crate::settings::AuthSettings;
use crate::test_support::*;

const UNAUTHORIZED_BODY: &str = r#"{"success":false,"error":"Authentication required"}"#;

struct Api {
    router: Router,
    service: Arc<AuthService>,
    clock: Arc<ManualClock>,
}

impl Api {
    async fn new() -> Self {
        let clock = manual_clock();
        let service = open_service(&memory_store(), &clock).await;
        Self {
            router: router(service.clone()),
            service,
            clock,
        }
    }

    /// Sends a request with an optional bearer token; returns status and raw body.
    async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut builder = HttpRequest::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let request = builder.body(body).expect("request");
        send_request(&self.router, request).await
    }

    /// Like [`Api::send`] with the admin token, parsing the body as JSON.
    async fn admin(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, text) = self.send(method, uri, Some(ADMIN_TOKEN), body).await;
        (status, parse(&text))
    }

    /// Creates a token through the API; returns (id, plaintext).
    async fn create(&self, permissions: &[&str]) -> (String, String) {
        let (status, body) = self
            .admin(
                Method::POST,
                TOKENS_PATH,
                Some(json!({"name": "t", "permissions": permissions})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (string(&body["id"]), string(&body["token"]))
    }
}

async fn send_request(router: &Router, request: HttpRequest<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    )
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

fn string(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_string()
}

fn token_path(id: &str) -> String {
    TOKEN_PATH.replace("{id}", id)
}

#[tokio::test]
async fn test_should_create_token_and_return_plaintext_once() {
    let api = Api::new().await;
    let (status, text) = api
        .send(
            Method::POST,
            TOKENS_PATH,
            Some(ADMIN_TOKEN),
            Some(json!({
                "name": "grafana",
                "description": "dashboards",
                "permissions": ["read"],
                "expires_in": "7d"
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert!(
        text.starts_with(r#"{"success":true,"token":"arc_"#),
        "COMPAT order: {text}"
    );
    let body = parse(&text);
    assert!(body["message"].is_string());
    assert_eq!(body["name"], "grafana");
    assert_eq!(body["description"], "dashboards");
    assert_eq!(body["permissions"], json!(["read"]));
    assert_eq!(body["is_admin"], false);
    assert_eq!(body["status"], "active");
    assert_eq!(body["expires_at"], "2026-08-08T00:00:00Z");
    assert!(body.get("hash").is_none());
    let plaintext = string(&body["token"]);
    let id = string(&body["id"]);

    // Usable at once; never shown again.
    let (status, verify) = api
        .send(Method::GET, VERIFY_PATH, Some(&plaintext), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{verify}");
    let (_, fetched) = api.admin(Method::GET, &token_path(&id), None).await;
    assert!(fetched.get("token").is_none(), "{fetched}");
    assert!(!fetched.to_string().contains(&plaintext));
}

#[tokio::test]
async fn test_should_accept_integer_seconds_and_is_admin_on_create() {
    let api = Api::new().await;
    let (status, body) = api
        .admin(
            Method::POST,
            TOKENS_PATH,
            Some(json!({"name": "ops", "is_admin": true, "expires_in": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["permissions"], json!(["admin"]));
    assert_eq!(body["is_admin"], true);
    assert_eq!(body["expires_at"], "2026-08-01T00:01:00Z");
    let (status, body) = api
        .admin(
            Method::POST,
            TOKENS_PATH,
            Some(json!({"name": "forever", "permissions": ["write"], "expires_in": null})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["expires_at"], Value::Null);
}

#[tokio::test]
async fn test_should_refuse_bad_create_bodies_naming_the_field() {
    let api = Api::new().await;
    let cases = [
        (json!({"permissions": ["read"]}), "name"),
        (json!({"name": "", "permissions": ["read"]}), "name"),
        (
            json!({"name": "x".repeat(129), "permissions": ["read"]}),
            "name",
        ),
        (json!({"name": 5, "permissions": ["read"]}), "name"),
        (json!({"name": "x"}), "permissions"),
        (json!({"name": "x", "permissions": []}), "permissions"),
        (
            json!({"name": "x", "permissions": ["superuser"]}),
            "permissions",
        ),
        (json!({"name": "x", "permissions": "read"}), "permissions"),
        (json!({"name": "x", "permissions": [1]}), "permissions"),
        (
            json!({"name": "x", "permissions": ["read"], "expires_in": "soon"}),
            "expires_in",
        ),
        (
            json!({"name": "x", "permissions": ["read"], "expires_in": 0}),
            "expires_in",
        ),
        (
            json!({"name": "x", "permissions": ["read"], "expires_in": -1}),
            "expires_in",
        ),
        (
            json!({"name": "x", "permissions": ["read"], "description": 1}),
            "description",
        ),
        (
            json!({"name": "x", "permissions": ["read"], "is_admin": "yes"}),
            "is_admin",
        ),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (request, field) in cases {
        let (status, text) = api
            .send(
                Method::POST,
                TOKENS_PATH,
                Some(ADMIN_TOKEN),
                Some(request.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request} -> {text}");
        assert!(text.starts_with(r#"{"success":false,"error":"#), "{text}");
        let error = string(&parse(&text)["error"]);
        assert!(
            error.contains(field),
            "{request}: {error} does not name {field}"
        );
    }
    let request = HttpRequest::post(TOKENS_PATH)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::from("{not json"))
        .expect("request");
    let (status, text) = send_request(&api.router, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(string(&parse(&text)["error"]).contains("body"), "{text}");
}

#[tokio::test]
async fn test_should_list_tokens_without_hashes_or_plaintexts() {
    let api = Api::new().await;
    // Listing is oldest first.
    api.clock.advance(Duration::from_secs(1));
    let (id, plaintext) = api.create(&["read", "write"]).await;
    let (status, text) = api
        .send(Method::GET, TOKENS_PATH, Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = parse(&text);
    assert_eq!(body["success"], true);
    assert_eq!(body["count"], 2);
    let ids: Vec<String> = body["tokens"]
        .as_array()
        .expect("array")
        .iter()
        .map(|token| string(&token["id"]))
        .collect();
    assert_eq!(ids, vec![BOOTSTRAP_TOKEN_ID.to_string(), id]);
    assert!(!text.contains("hash"), "{text}");
    assert!(!text.contains(&plaintext));
    assert!(!text.contains(ADMIN_TOKEN));
    assert!(!text.contains(&crate::secret::TokenHash::of(&plaintext).to_hex()));
}

#[tokio::test]
async fn test_should_get_token_or_404() {
    let api = Api::new().await;
    let (id, _) = api.create(&["delete"]).await;
    let (status, body) = api.admin(Method::GET, &token_path(&id), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["permissions"], json!(["delete"]));
    assert_eq!(body["version"], 1);

    for unknown in ["0190d3c2-7a2b-7c3d-8e4f-0123456789ab", "has.dot", "%2E%2E"] {
        let (status, text) = api
            .send(Method::GET, &token_path(unknown), Some(ADMIN_TOKEN), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}: {text}");
        assert_eq!(parse(&text)["success"], false);
    }
}

#[tokio::test]
async fn test_should_patch_token_metadata() {
    let api = Api::new().await;
    let (id, plaintext) = api.create(&["read"]).await;
    let (status, body) = api
        .admin(
            Method::PATCH,
            &token_path(&id),
            Some(json!({
                "name": "renamed",
                "description": "now writes too",
                "permissions": ["read", "write"],
                "expires_in": "1h"
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "renamed");
    assert_eq!(body["description"], "now writes too");
    assert_eq!(body["permissions"], json!(["read", "write"]));
    assert_eq!(body["expires_at"], "2026-08-01T01:00:00Z");
    assert_eq!(body["version"], 2);
    // The new permission holds at once for the same plaintext.
    let info = api
        .service
        .authorize(&bearer(&plaintext), None, Permission::Write)
        .await
        .expect("write now granted");
    assert_eq!(info.name, "renamed");

    let (status, body) = api
        .admin(
            Method::PATCH,
            &token_path(&id),
            Some(json!({"expires_in": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(body["name"], "renamed", "absent fields stay");

    // An empty patch writes nothing.
    let (status, body) = api
        .admin(Method::PATCH, &token_path(&id), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], 3);

    let (status, body) = api
        .admin(Method::PATCH, &token_path(&id), Some(json!({"name": ""})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(string(&body["error"]).contains("name"));
    let (status, _) = api
        .admin(
            Method::PATCH,
            &token_path("nope"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_should_delete_token() {
    let api = Api::new().await;
    let (id, plaintext) = api.create(&["read"]).await;
    let (status, body) = api.admin(Method::DELETE, &token_path(&id), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["id"], id.as_str());
    let (status, text) = api
        .send(Method::GET, VERIFY_PATH, Some(&plaintext), None)
        .await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY)
    );
    let (status, _) = api.admin(Method::GET, &token_path(&id), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.admin(Method::DELETE, &token_path(&id), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_should_rotate_token() {
    let api = Api::new().await;
    let (id, old) = api.create(&["read"]).await;
    let (status, text) = api
        .send(
            Method::POST,
            &ROTATE_PATH.replace("{id}", &id),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        text.starts_with(r#"{"success":true,"token":"arc_"#),
        "{text}"
    );
    let body = parse(&text);
    let new = string(&body["token"]);
    assert_ne!(new, old);
    assert_eq!(body["id"], id.as_str());
    let (status, text) = api.send(Method::GET, VERIFY_PATH, Some(&old), None).await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY)
    );
    let (status, _) = api.send(Method::GET, VERIFY_PATH, Some(&new), None).await;
    assert_eq!(status, StatusCode::OK);

    // A revoked token cannot be rotated back to life.
    api.admin(Method::POST, &REVOKE_PATH.replace("{id}", &id), None)
        .await;
    let (status, body) = api
        .admin(Method::POST, &ROTATE_PATH.replace("{id}", &id), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = api
        .admin(Method::POST, &ROTATE_PATH.replace("{id}", "missing"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_should_revoke_token() {
    let api = Api::new().await;
    let (id, plaintext) = api.create(&["write"]).await;
    let (status, body) = api
        .admin(Method::POST, &REVOKE_PATH.replace("{id}", &id), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], true);
    assert_eq!(body["status"], "revoked");
    let (status, text) = api
        .send(Method::GET, VERIFY_PATH, Some(&plaintext), None)
        .await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY)
    );
    // Still listed, as revoked.
    let (_, list) = api.admin(Method::GET, TOKENS_PATH, None).await;
    assert!(
        list["tokens"]
            .as_array()
            .expect("array")
            .iter()
            .any(|token| token["id"] == id.as_str() && token["status"] == "revoked")
    );
    let (status, _) = api
        .admin(Method::POST, &REVOKE_PATH.replace("{id}", &id), None)
        .await;
    assert_eq!(status, StatusCode::OK, "revoking twice is fine");
}

#[tokio::test]
async fn test_should_verify_any_valid_token() {
    let api = Api::new().await;
    let (id, plaintext) = api.create(&["read"]).await;
    let (status, text) = api
        .send(Method::GET, VERIFY_PATH, Some(&plaintext), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body = parse(&text);
    assert_eq!(body["success"], true);
    assert_eq!(body["valid"], true);
    assert_eq!(body["token_info"]["id"], id.as_str());
    assert_eq!(body["token_info"]["name"], "t");
    assert_eq!(body["permissions"], json!(["read"]));
    assert!(!text.contains(&plaintext));

    let (status, text) = api.send(Method::GET, VERIFY_PATH, None, None).await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY)
    );
    let (status, text) = api
        .send(Method::GET, VERIFY_PATH, Some("arc_unknown"), None)
        .await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY)
    );
}

#[tokio::test]
async fn test_should_reject_expired_token_through_the_router() {
    let api = Api::new().await;
    let (status, body) = api
        .admin(
            Method::POST,
            TOKENS_PATH,
            Some(json!({"name": "brief", "permissions": ["read"], "expires_in": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let plaintext = string(&body["token"]);
    let (status, _) = api
        .send(Method::GET, VERIFY_PATH, Some(&plaintext), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    api.clock.advance(Duration::from_secs(1));
    let (status, text) = api
        .send(Method::GET, VERIFY_PATH, Some(&plaintext), None)
        .await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY)
    );
}

#[tokio::test]
async fn test_should_accept_every_token_form() {
    let api = Api::new().await;
    let (_, plaintext) = api.create(&["read"]).await;
    let encoded: String = form_urlencoded::byte_serialize(plaintext.as_bytes()).collect();
    let requests = [
        HttpRequest::get(VERIFY_PATH).header("authorization", format!("Bearer {plaintext}")),
        HttpRequest::get(VERIFY_PATH).header("authorization", format!("Token {plaintext}")),
        HttpRequest::get(VERIFY_PATH).header("x-api-key", plaintext.as_str()),
        HttpRequest::get(format!("{VERIFY_PATH}?db=x&p={encoded}")),
    ];
    for builder in requests {
        let request = builder.body(Body::empty()).expect("request");
        let described = format!("{:?} {:?}", request.uri(), request.headers().keys());
        let (status, text) = send_request(&api.router, request).await;
        assert_eq!(status, StatusCode::OK, "{described}: {text}");
    }
    // The first source wins, even when a later one holds a better token.
    let request = HttpRequest::get(format!("{VERIFY_PATH}?p={ADMIN_TOKEN}"))
        .header("authorization", "Bearer arc_wrong")
        .body(Body::empty())
        .expect("request");
    let (status, _) = send_request(&api.router, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn test_should_answer_exact_401_and_403_bodies() {
    let api = Api::new().await;
    let (_, reader) = api.create(&["read"]).await;
    let (status, text) = api.send(Method::GET, TOKENS_PATH, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(text, UNAUTHORIZED_BODY);
    let (status, text) = api
        .send(Method::GET, TOKENS_PATH, Some(&reader), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        text,
        r#"{"success":false,"error":"Permission denied: admin required"}"#
    );

    // The same through `require` on a route of the binary's kind.
    let ingest = Router::new().route(
        "/write",
        post(|| async { StatusCode::NO_CONTENT }).route_layer(middleware::from_fn_with_state(
            (api.service.clone(), Permission::Write),
            require,
        )),
    );
    let request = HttpRequest::post("/write")
        .header("x-api-key", reader.as_str())
        .body(Body::empty())
        .expect("request");
    let (status, text) = send_request(&ingest, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        text,
        r#"{"success":false,"error":"Permission denied: write required"}"#
    );
    let request = HttpRequest::post(format!("/write?db=x&p={ADMIN_TOKEN}"))
        .body(Body::empty())
        .expect("request");
    let (status, _) = send_request(&ingest, request).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "admin satisfies write");
}

#[tokio::test]
async fn test_should_guard_every_route_of_the_table() {
    let api = Api::new().await;
    let (_, reader) = api.create(&["read"]).await;
    let (victim, _) = api.create(&["read"]).await;
    let mut seen = std::collections::HashSet::new();
    for (method, path, needed) in route_table() {
        assert!(
            seen.insert((*method, *path)),
            "duplicate route {method} {path}"
        );
        let uri = path.replace("{id}", &victim);
        let method = Method::from_bytes(method.as_bytes()).expect("method");

        let (status, text) = api.send(method.clone(), &uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(text, UNAUTHORIZED_BODY, "{method} {uri}");

        let (status, text) = api.send(method.clone(), &uri, Some(&reader), None).await;
        match needed {
            Some(permission) => {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
                assert_eq!(
                    text,
                    format!(
                        r#"{{"success":false,"error":"Permission denied: {permission} required"}}"#
                    )
                );
            }
            None => assert_eq!(status, StatusCode::OK, "{method} {uri}: {text}"),
        }

        // With the admin token the route is matched: a JSON answer, never axum's empty 404/405.
        let body = (method == Method::POST || method == Method::PATCH).then(|| json!({}));
        let (status, text) = api
            .send(method.clone(), &uri, Some(ADMIN_TOKEN), body)
            .await;
        assert!(
            status != StatusCode::UNAUTHORIZED
                && status != StatusCode::FORBIDDEN
                && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {status}"
        );
        assert!(
            text.starts_with(r#"{"success":"#),
            "{method} {uri}: {status} {text}"
        );
    }
    assert_eq!(seen.len(), 10);
}

#[tokio::test]
async fn test_should_report_and_reload_the_cache() {
    let api = Api::new().await;
    let (status, body) = api.admin(Method::GET, CACHE_STATS_PATH, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokens"], 1);
    assert_eq!(body["corrupt"], 0);
    assert_eq!(body["cache_ttl_seconds"], 5.0);
    api.clock.advance(Duration::from_secs(2));
    let (status, body) = api.admin(Method::POST, CACHE_INVALIDATE_PATH, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["refreshed_at"], "2026-08-01T00:00:02Z");
}

#[tokio::test]
async fn test_should_let_everything_through_when_disabled() {
    let settings = AuthSettings {
        enabled: false,
        ..AuthSettings::default()
    };
    let (service, _) = open_with(&memory_store(), &manual_clock(), settings).await;
    let router = router(service);
    let request = HttpRequest::post(TOKENS_PATH)
        .body(Body::from(r#"{"name":"x","permissions":["read"]}"#))
        .expect("request");
    let (status, text) = send_request(&router, request).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
}
