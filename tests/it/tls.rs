//! HTTPS for the API: a node with `server.tls_cert_file` and `server.tls_key_file` serves the
//! same API over TLS, and a node with an unusable certificate refuses to start, naming it. And
//! replication by mTLS (`cluster.tls_cert_file`, `tls_key_file`, `tls_ca_file`): the reader
//! follows the primary's stream, a peer without a certificate is refused and counted.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{ADMIN_TOKEN, TestNode, wait_for};

/// Runs openssl with `args` in `dir`; false when openssl is not installed.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    match Command::new("openssl").current_dir(dir).args(args).output() {
        Ok(output) if output.status.success() => true,
        Ok(output) => panic!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => false,
    }
}

/// Writes a test CA (`ca.pem`) and a server certificate for `127.0.0.1` signed by it
/// (`cert.pem`, `key.pem`); false when openssl is not installed. rustls refuses a CA
/// certificate used as the server's own, so a bare `req -x509` certificate would not do.
fn test_pki(dir: &Path) -> bool {
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("writing the extension file");
    let rsa = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &rsa,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=arc-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    ) && openssl(
        dir,
        &[
            &["req"][..],
            &rsa,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
    )
}

/// A client that trusts the test CA in `dir`.
fn https_client(dir: &Path) -> reqwest::Client {
    let pem = std::fs::read(dir.join("ca.pem")).expect("reading the test ca");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem certificate"))
        .build()
        .expect("https client")
}

/// Waits for the node's port file and a 200 from `/ready` over HTTPS; returns the base URL.
async fn wait_https_ready(node: &TestNode, client: &reqwest::Client) -> String {
    let port_file = node.dir.join("port");
    let addr: SocketAddr = wait_for("the port file", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&port_file).ok();
        async move { text.and_then(|text| text.trim().parse().ok()) }
    })
    .await;
    let base = format!("https://{addr}");
    wait_for("/ready over https", Duration::from_secs(60), || {
        let request = client.get(format!("{base}/ready")).send();
        async move {
            match request.await {
                Ok(response) => (response.status() == 200).then_some(()),
                Err(error) => {
                    eprintln!("https /ready: {error:?}");
                    None
                }
            }
        }
    })
    .await;
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_forward_writes_over_https_trusting_the_cluster_ca() {
    let certs = tempfile::tempdir().expect("temp dir");
    if !test_pki(certs.path()) {
        crate::harness::skip(
            "test_should_forward_writes_over_https_trusting_the_cluster_ca",
            "openssl not installed (Debian package openssl)",
        );
        return;
    }
    let file = |name: &str| certs.path().join(name).display().to_string();
    let storage = tempfile::tempdir().expect("temp dir");
    let ports = crate::cluster::free_udp_ports(2);
    let seeds = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let mut nodes = Vec::new();
    for (id, role, port) in [("tls-w", "writer", ports[0]), ("tls-r", "reader", ports[1])] {
        let gossip = format!("127.0.0.1:{port}");
        let env = [
            ("ARC_SERVER_TLS_CERT_FILE", file("cert.pem")),
            ("ARC_SERVER_TLS_KEY_FILE", file("key.pem")),
            ("ARC_CLUSTER_TLS_CA_FILE", file("ca.pem")),
            // Replication by mTLS: the same leaf (its name is the advertised 127.0.0.1).
            ("ARC_CLUSTER_TLS_CERT_FILE", file("cert.pem")),
            ("ARC_CLUSTER_TLS_KEY_FILE", file("key.pem")),
            ("ARC_CLUSTER_ENABLED", "true".to_string()),
            ("ARC_CLUSTER_NODE_ID", id.to_string()),
            ("ARC_CLUSTER_ROLE", role.to_string()),
            (
                "ARC_CLUSTER_SHARED_SECRET",
                "tls-cluster-secret-0123456789".to_string(),
            ),
            ("ARC_CLUSTER_COORDINATOR_ADDR", gossip),
            ("ARC_CLUSTER_SEEDS", seeds.clone()),
            ("ARC_CLUSTER_HEARTBEAT_INTERVAL", "200ms".to_string()),
            (
                "ARC_STORAGE_LOCAL_PATH",
                storage.path().display().to_string(),
            ),
        ];
        let mut node =
            TestNode::prepare_owned(env.map(|(key, value)| (key.to_string(), value)).to_vec());
        node.spawn_only();
        nodes.push(node);
    }
    let client = https_client(certs.path());
    let writer = wait_https_ready(&nodes[0], &client).await;
    let reader = wait_https_ready(&nodes[1], &client).await;
    wait_for(
        "the reader knows the primary",
        Duration::from_secs(30),
        || {
            let request = client
                .get(format!("{reader}/api/v1/cluster"))
                .bearer_auth(ADMIN_TOKEN)
                .send();
            async move {
                let body: serde_json::Value = request.await.ok()?.json().await.ok()?;
                (body["data"]["primary"] == "tls-w").then_some(())
            }
        },
    )
    .await;
    let response = client
        .post(format!("{reader}/api/v1/write/line-protocol"))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-arc-database", "tls")
        .body("forwarded,host=a value=1i 1785542400000000000")
        .send()
        .await
        .expect("write over https");
    assert_eq!(response.status(), 204, "{:?}", response.text().await);
    let lsn = response
        .headers()
        .get("x-arc-lsn")
        .expect("x-arc-lsn relayed")
        .to_str()
        .expect("ascii")
        .to_string();
    let value = |base: &str, min_lsn: Option<&str>| {
        let mut request = client
            .post(format!("{base}/api/v1/query"))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-arc-database", "tls")
            .json(&serde_json::json!({ "sql": "SELECT value FROM forwarded" }));
        if let Some(lsn) = min_lsn {
            request = request.header("x-arc-min-lsn", lsn);
        }
        async move {
            let response = request.send().await.expect("query over https");
            let body: serde_json::Value = response.json().await.expect("json");
            body["data"][0][0].clone()
        }
    };
    assert_eq!(value(&writer, None).await, 1);
    // The reader has the unflushed row through the mTLS replication stream.
    assert_eq!(value(&reader, Some(&lsn)).await, 1);

    // A replication peer without a certificate is refused in the TLS handshake and counted.
    let (_, local) = {
        let response = client
            .get(format!("{writer}/api/v1/cluster/local"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("cluster api");
        (0, response.json::<serde_json::Value>().await.expect("json"))
    };
    let addr: SocketAddr = local["data"]["replication_address"]
        .as_str()
        .expect("replication address")
        .parse()
        .expect("socket address");
    let no_certificate = arc_wal::replication::ReplicationSettings::new(
        "intruder",
        Some(arc_wal::replication::SharedSecret::new(
            "tls-cluster-secret-0123456789",
        )),
    );
    match arc_wal::replication::testkit::RawConnection::connect(&no_certificate, addr, "127.0.0.1")
        .await
    {
        Err(_) => {}
        Ok(mut raw) => {
            let proof = raw.own_proof().expect("proof");
            let _ = raw
                .send(&arc_wal::replication::Frame::Hello { proof })
                .await;
            let received = raw.read_all(Duration::from_secs(5)).await;
            assert!(
                received.is_empty(),
                "a peer without a certificate got {} bytes",
                received.len()
            );
            raw.close().await;
        }
    }
    wait_for("the refusal counted", Duration::from_secs(30), || {
        let request = client.get(format!("{writer}/metrics")).send();
        async move {
            let text = request.await.ok()?.text().await.ok()?;
            text.lines()
                .any(|line| {
                    line.starts_with("arc_replication_rejected_total")
                        && line.contains("tls")
                        && !line.ends_with(" 0")
                })
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_serve_the_api_over_tls() {
    let certs = tempfile::tempdir().expect("temp dir");
    if !test_pki(certs.path()) {
        crate::harness::skip(
            "test_should_serve_the_api_over_tls",
            "openssl not installed (Debian package openssl)",
        );
        return;
    }
    let cert = certs.path().join("cert.pem").display().to_string();
    let key = certs.path().join("key.pem").display().to_string();
    let mut node = TestNode::prepare(&[
        ("ARC_SERVER_TLS_CERT_FILE", cert.as_str()),
        ("ARC_SERVER_TLS_KEY_FILE", key.as_str()),
    ]);
    node.spawn_only();
    let client = https_client(certs.path());
    let base = wait_https_ready(&node, &client).await;
    let addr = base.trim_start_matches("https://").to_string();
    let response = client
        .post(format!("{base}/api/v1/write/line-protocol"))
        .bearer_auth(ADMIN_TOKEN)
        .body("secure,host=a value=7i 1785542400000000000")
        .send()
        .await
        .expect("write over https");
    assert_eq!(response.status(), 204);
    let response = client
        .post(format!("{base}/api/v1/query"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "sql": "SELECT value FROM secure" }))
        .send()
        .await
        .expect("query over https");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["data"][0][0], 7, "{body}");
    // Plain HTTP on the TLS port gets no API.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/health"))
        .send()
        .await;
    assert!(
        plain.map_or(true, |response| response.status() != 200),
        "plain http must not be served on the tls port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_refuse_to_start_with_an_unusable_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("missing-cert.pem").display().to_string();
    let key = dir.path().join("missing-key.pem").display().to_string();
    let mut node = TestNode::prepare(&[
        ("ARC_SERVER_TLS_CERT_FILE", cert.as_str()),
        ("ARC_SERVER_TLS_KEY_FILE", key.as_str()),
    ]);
    node.spawn_only();
    let status = node.wait_exit(Duration::from_secs(60)).await;
    assert!(!status.success());
    let log = node.log();
    assert!(
        log.contains("server.tls_cert_file") && log.contains("missing-cert.pem"),
        "the error names the setting and the file:\n{log}"
    );
}
