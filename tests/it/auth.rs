//! API tokens through the real binary: every route's token check, each header form, and a
//! token's lifecycle (create, use, revoke) as a client sees it.

use arc_auth::Permission;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, TestNode, client_with_token};

/// Creates a token with `permissions` through the token API; returns its id and plaintext.
async fn create_token(node: &TestNode, name: &str, permissions: &[&str]) -> (String, String) {
    let response = node
        .client
        .post(node.url("/api/v1/auth/tokens"))
        .json(&json!({ "name": name, "description": "test", "permissions": permissions }))
        .send()
        .await
        .expect("creating a token");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json body");
    assert_eq!(body["success"], true, "{body}");
    (
        body["id"].as_str().expect("id").to_string(),
        body["token"].as_str().expect("token").to_string(),
    )
}

/// The permissions a token needs to lack to be refused `needed`.
fn lacking(needed: Permission) -> &'static [&'static str] {
    match needed {
        Permission::Read => &["write", "delete"],
        Permission::Write => &["read", "delete"],
        Permission::Delete => &["read", "write"],
        Permission::Admin => &["read", "write", "delete"],
    }
}

fn request(
    client: &reqwest::Client,
    node: &TestNode,
    method: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    let path = path.replace("{id}", "0190f5b2-0000-7000-8000-000000000000");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    client.request(method, node.url(&path)).body("{}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_require_a_token_with_the_right_permission_on_every_route() {
    let node = TestNode::start(&[]).await;
    // The node's router is built from `routes()` alone, so this walks every route it serves.
    let mut routes: Vec<(String, String, Option<Permission>)> = arc_node::routes()
        .into_iter()
        .map(|(method, path, access)| {
            let permission = match access {
                arc_node::Access::Public => None,
                arc_node::Access::Requires(permission) => Some(permission),
            };
            (method.to_string(), path.to_string(), permission)
        })
        .collect();
    routes.extend(
        arc_auth::route_table()
            .iter()
            .map(|(method, path, permission)| (method.to_string(), path.to_string(), *permission)),
    );
    assert!(routes.len() >= 20, "the route table lists every route");
    let public: Vec<&str> = routes
        .iter()
        .filter(|(_, path, permission)| permission.is_none() && !path.starts_with("/api/v1/auth"))
        .map(|(_, path, _)| path.as_str())
        .collect();
    assert_eq!(
        public,
        ["/health", "/ready", "/metrics", "/ping"],
        "only the probes, InfluxDB's ping and the scrape endpoint are public (COMPAT.md)"
    );
    let anonymous = reqwest::Client::new();
    let mut weak_clients = std::collections::HashMap::new();
    for (method, path, permission) in &routes {
        let response = request(&anonymous, &node, method, path)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        match permission {
            None if path.starts_with("/api/v1/auth") => {
                // Token-only routes (verify): any valid token, none is 401.
                assert_eq!(status, 401, "{method} {path} without a token: {body}");
            }
            None => assert!(
                status != 401 && status != 403,
                "public route {method} {path} answered {status}"
            ),
            Some(needed) => {
                assert_eq!(status, 401, "{method} {path} without a token: {body}");
                assert_eq!(
                    body, r#"{"success":false,"error":"Authentication required"}"#,
                    "{method} {path}"
                );
                if !weak_clients.contains_key(needed) {
                    let (_, token) =
                        create_token(&node, &format!("lacks-{needed}"), lacking(*needed)).await;
                    weak_clients.insert(*needed, client_with_token(&token));
                }
                let weak = &weak_clients[needed];
                let response = request(weak, &node, method, path)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), 403, "{method} {path} with a weak token");
                assert_eq!(
                    response.text().await.unwrap_or_default(),
                    format!(
                        r#"{{"success":false,"error":"Permission denied: {needed} required"}}"#
                    ),
                    "{method} {path}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_accept_every_token_form_and_stop_accepting_a_revoked_token() {
    let node = TestNode::start(&[]).await;
    let (id, token) = create_token(&node, "writer", &["write", "read"]).await;
    let plain = reqwest::Client::new();
    let line = |i: u32| {
        format!(
            "forms,via=x value={i}i {}",
            1_785_542_400_000_000_000i64 + i64::from(i)
        )
    };
    let forms: Vec<reqwest::RequestBuilder> = vec![
        plain
            .post(node.url("/write?db=default"))
            .header("Authorization", format!("Bearer {token}"))
            .body(line(1)),
        plain
            .post(node.url("/write?db=default"))
            .header("Authorization", format!("Token {token}"))
            .body(line(2)),
        plain
            .post(node.url("/write?db=default"))
            .header("x-api-key", token.clone())
            .body(line(3)),
        plain
            .post(node.url(&format!("/write?db=default&p={token}")))
            .body(line(4)),
        // Arc's reading of an Authorization value without a scheme.
        plain
            .post(node.url("/write?db=default"))
            .header("Authorization", token.clone())
            .body(line(5)),
        // InfluxDB 1.x clients: the token as the Basic password, the user name ignored.
        plain
            .post(node.url("/write?db=default"))
            .basic_auth("telegraf", Some(&token))
            .body(line(6)),
    ];
    for (index, form) in forms.into_iter().enumerate() {
        let response = form.send().await.expect("write");
        assert_eq!(response.status(), 204, "token form {index}");
    }
    let rows = node.query("SELECT count(*) FROM forms").await;
    assert_eq!(rows[0][0], 6);

    let response = node
        .client
        .post(node.url(&format!("/api/v1/auth/tokens/{id}/revoke")))
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), 200);
    let response = plain
        .post(node.url("/write?db=default"))
        .bearer_auth(&token)
        .body(line(7))
        .send()
        .await
        .expect("write");
    assert_eq!(response.status(), 401, "a revoked token is refused at once");
    let rows = node.query("SELECT count(*) FROM forms").await;
    assert_eq!(rows[0][0], 6, "nothing of the refused write is stored");
    let response = plain
        .post(node.url("/write?db=default"))
        .basic_auth("telegraf", Some(&token))
        .body(line(8))
        .send()
        .await
        .expect("write");
    assert_eq!(
        response.status(),
        401,
        "a revoked token is refused as a password too"
    );

    // The admin token still verifies, and is never echoed back.
    let response = node
        .client
        .get(node.url("/api/v1/auth/verify"))
        .send()
        .await
        .expect("verify");
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap_or_default();
    assert!(
        !text.contains(ADMIN_TOKEN),
        "verify must not echo the token"
    );
    assert!(
        !node.log().contains(ADMIN_TOKEN) && !node.log().contains(&token),
        "tokens never appear in the log"
    );
}
