//! Issue 4: clusters of real `arc-node` processes on loopback, configured only through `ARC_*`
//! variables: convergence, deaths, leaves, restarts, write forwarding, bootstrap races, two
//! clusters on shared ports, and an attacker speaking chitchat without the secret.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, RngCore};
use serde_json::Value;

use crate::harness::{TestNode, wait_for};

pub const SECRET: &str = "cluster-test-secret-0123456789";
const HEARTBEAT: Duration = Duration::from_millis(200);

/// How long convergence and state changes may take: generous for a loaded 2-core machine,
/// still far below the ~30 s of chitchat's default failure detector.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

/// Distinct UDP ports on loopback that are free now, below the kernel's ephemeral range
/// (32768 and up) so no other test's `bind(0)` can take them before the node binds them.
pub fn free_udp_ports(count: usize) -> Vec<u16> {
    let mut rng = rand::rng();
    let mut ports = Vec::new();
    while ports.len() < count {
        let port: u16 = rng.random_range(10_000..20_000);
        if !ports.contains(&port) && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// One planned member of a test cluster.
pub struct Member {
    /// Its node id.
    pub id: String,
    /// Its role.
    pub role: &'static str,
    /// Its gossip (UDP) port on loopback.
    pub gossip_port: u16,
}

/// The members of `plan` (id, role), each gossiping on the port of the same index.
fn plan_members(plan: &[(&str, &'static str)], ports: &[u16]) -> Vec<Member> {
    plan.iter()
        .zip(ports)
        .map(|((id, role), port)| Member {
            id: id.to_string(),
            role,
            gossip_port: *port,
        })
        .collect()
}

/// The `ARC_*` variables an operator would set for `member`.
pub fn member_env(
    cluster: &str,
    member: &Member,
    seeds: &[u16],
    storage: &Path,
) -> Vec<(String, String)> {
    let seeds: Vec<String> = seeds
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    [
        ("ARC_CLUSTER_ENABLED", "true".to_string()),
        ("ARC_CLUSTER_NODE_ID", member.id.clone()),
        ("ARC_CLUSTER_ROLE", member.role.to_string()),
        ("ARC_CLUSTER_CLUSTER_NAME", cluster.to_string()),
        ("ARC_CLUSTER_SEEDS", seeds.join(",")),
        (
            "ARC_CLUSTER_COORDINATOR_ADDR",
            format!("127.0.0.1:{}", member.gossip_port),
        ),
        ("ARC_CLUSTER_SHARED_SECRET", SECRET.to_string()),
        (
            "ARC_CLUSTER_HEARTBEAT_INTERVAL",
            format!("{}ms", HEARTBEAT.as_millis()),
        ),
        ("ARC_CLUSTER_HEALTH_CHECK_INTERVAL", "1s".to_string()),
        ("ARC_STORAGE_LOCAL_PATH", storage.display().to_string()),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "600000".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

/// The variables of a lone clustered writer `id` gossiping on `gossip_port` (its own seed).
pub fn writer_env(id: &str, gossip_port: u16, storage: &Path) -> Vec<(String, String)> {
    let member = Member {
        id: id.to_string(),
        role: "writer",
        gossip_port,
    };
    member_env("lone", &member, &[gossip_port], storage)
}

/// Prepares and spawns every member at once (so writers race), then waits until each is ready.
async fn start_members(
    cluster: &str,
    members: &[Member],
    seeds: &[u16],
    storage: &Path,
    extra: &[(&str, &str)],
) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = members
        .iter()
        .map(|member| {
            let mut env = member_env(cluster, member, seeds, storage);
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            TestNode::prepare_owned(env)
        })
        .collect();
    for node in &mut nodes {
        node.spawn_only();
    }
    for node in &mut nodes {
        node.wait_ready().await;
    }
    nodes
}

/// GETs a JSON document; returns status and body.
async fn get_json(node: &TestNode, path: &str) -> (u16, Value) {
    let response = node
        .client
        .get(node.url(path))
        .send()
        .await
        .expect("sending request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `data` of a successful cluster API call, or `None` (for polling).
async fn cluster_data(node: &TestNode, path: &str) -> Option<Value> {
    let (status, body) = get_json(node, path).await;
    (status == 200 && body["success"] == true).then(|| body["data"].clone())
}

/// Waits until `node` reports itself healthy; returns its health document.
async fn wait_healthy(node: &TestNode) -> Value {
    wait_for("the node healthy", CONVERGE_DEADLINE, || async {
        let health = cluster_data(node, "/api/v1/cluster/health").await?;
        (health["status"] == "healthy").then_some(health)
    })
    .await
}

/// Node id to state, as `node` sees the cluster.
async fn states(node: &TestNode) -> Option<BTreeMap<String, String>> {
    let nodes = cluster_data(node, "/api/v1/cluster/nodes").await?;
    Some(
        nodes
            .as_array()?
            .iter()
            .map(|node| {
                (
                    node["id"].as_str().unwrap_or("").to_string(),
                    node["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

/// Waits until every node in `observers` sees exactly `expected` (id → state).
async fn wait_states(observers: &[&TestNode], expected: &BTreeMap<String, String>, what: &str) {
    for observer in observers {
        wait_for(what, CONVERGE_DEADLINE, || async {
            (states(observer).await.as_ref() == Some(expected)).then_some(())
        })
        .await;
    }
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(id, state)| (id.to_string(), state.to_string()))
        .collect()
}

/// The value of a counter (summed over label sets matching `label`) in `/metrics`.
pub async fn metric_sum(node: &TestNode, name: &str, label: &str) -> f64 {
    try_metric_sum(node, name, label)
        .await
        .unwrap_or_else(|| panic!("scraping /metrics of {} failed", node.url("")))
}

/// [`metric_sum`], or `None` when `/metrics` could not be scraped (for polling a node that may
/// refuse or close connections).
pub async fn try_metric_sum(node: &TestNode, name: &str, label: &str) -> Option<f64> {
    let text = node
        .client
        .get(node.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|line| line.starts_with(name) && line.contains(label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_five_nodes_converge_forward_writes_and_track_deaths_leaves_and_restarts() {
    let storage = tempfile::tempdir().unwrap();
    let ports = free_udp_ports(5);
    let plan = [
        ("writer-1", "writer"),
        ("writer-2", "writer"),
        ("reader-1", "reader"),
        ("reader-2", "reader"),
        ("compactor-1", "compactor"),
    ];
    let members = plan_members(&plan, &ports);
    let seeds = [ports[0], ports[2]];
    // Without failover: the primary killed here comes back as primary (tests/it/failover.rs
    // has the standby taking over).
    let mut nodes = start_members(
        "five",
        &members,
        &seeds,
        storage.path(),
        &[("ARC_CLUSTER_FAILOVER_ENABLED", "false")],
    )
    .await;

    // Every node agrees: 5 nodes, all healthy, roles 2/2/1, one primary.
    let all_healthy = expect(&plan.map(|(id, _)| (id, "healthy")));
    wait_states(
        &nodes.iter().collect::<Vec<_>>(),
        &all_healthy,
        "5 healthy nodes",
    )
    .await;
    let mut primaries = Vec::new();
    for node in &nodes {
        // Health is re-measured every second: one slow fsync on a busy disk may show a node
        // unhealthy for a moment, so health is waited for, never sampled once.
        let summary = wait_for(
            "a primary and 5 healthy nodes in every view",
            CONVERGE_DEADLINE,
            || async {
                let data = cluster_data(node, "/api/v1/cluster").await?;
                (data["primary"].is_string() && data["healthy_nodes"] == 5).then_some(data)
            },
        )
        .await;
        assert_eq!(summary["cluster_name"], "five");
        assert_eq!(summary["node_count"], 5, "{summary}");
        assert_eq!(summary["healthy_nodes"], 5, "{summary}");
        assert_eq!(
            summary["roles"],
            serde_json::json!({"writer": 2, "reader": 2, "compactor": 1})
        );
        primaries.push(summary["primary"].as_str().unwrap().to_string());
    }
    primaries.dedup();
    assert_eq!(
        primaries.len(),
        1,
        "views disagree on the primary: {primaries:?}"
    );
    let primary_id = primaries[0].clone();
    assert!(primary_id.starts_with("writer-"));
    let primary = &nodes[if primary_id == "writer-1" { 0 } else { 1 }];

    // The API: filters, one node, local, health, and the errors.
    wait_for(
        "both readers healthy in the filter",
        CONVERGE_DEADLINE,
        || async {
            let readers =
                cluster_data(&nodes[4], "/api/v1/cluster/nodes?role=reader&state=healthy").await?;
            let reader_ids: Vec<&str> = readers
                .as_array()?
                .iter()
                .filter_map(|node| node["id"].as_str())
                .collect();
            (reader_ids == ["reader-1", "reader-2"]).then_some(())
        },
    )
    .await;
    let one = cluster_data(&nodes[2], "/api/v1/cluster/nodes/writer-2")
        .await
        .unwrap();
    assert_eq!(one["role"], "writer");
    assert_eq!(one["address"], nodes[1].addr.unwrap().to_string());
    assert!(
        chrono::DateTime::parse_from_rfc3339(one["last_heartbeat"].as_str().unwrap()).is_ok(),
        "{one}"
    );
    let local = cluster_data(&nodes[3], "/api/v1/cluster/local")
        .await
        .unwrap();
    assert_eq!(local["id"], "reader-2");
    let health = wait_healthy(&nodes[3]).await;
    assert_eq!(health["node_id"], "reader-2");
    assert_eq!(health["role"], "reader");
    assert_eq!(health["cluster_name"], "five");
    for (path, status, needle) in [
        ("/api/v1/cluster/nodes?role=leader", 400, "leader"),
        ("/api/v1/cluster/nodes?state=zombie", 400, "zombie"),
        ("/api/v1/cluster/nodes/nobody", 404, "nobody"),
    ] {
        let (code, body) = get_json(&nodes[0], path).await;
        assert_eq!(code, status, "{path}: {body}");
        assert_eq!(body["success"], false);
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }
    let anonymous = reqwest::Client::new()
        .get(nodes[0].url("/api/v1/cluster"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // A write sent to a reader lands on the primary and is queryable everywhere.
    let (status, text) = nodes[2]
        .post(
            "/write?db=fwd",
            &[],
            b"cpu,host=a usage=1 1700000000000000000\ncpu,host=b usage=2 1700000000000000000"
                .to_vec(),
        )
        .await;
    assert_eq!(status, 204, "{text}");
    let rows = primary.query("SELECT count(*) FROM fwd.cpu").await;
    assert_eq!(rows[0][0], 2);
    // A flush asked of a reader is the primary's to do.
    nodes[2].flush().await;
    let rows = nodes[3].query("SELECT count(*) FROM fwd.cpu").await;
    assert_eq!(rows[0][0], 2, "reader-2 sees the flushed rows");
    let rows = nodes[4].query("SELECT sum(usage) FROM fwd.cpu").await;
    assert_eq!(
        rows[0][0], 3.0,
        "the compactor forwards queries to a reader"
    );
    // A forwarded request that reaches a node that cannot serve it is a loop: 508.
    for chain in ["reader-2", "reader-1"] {
        let (status, text) = nodes[2]
            .post(
                "/write?db=fwd",
                &[("x-arc-forwarded-by", chain)],
                b"cpu,host=c usage=3 1700000000000000000".to_vec(),
            )
            .await;
        assert_eq!(status, 508, "{chain}: {text}");
        assert!(text.contains("loop"), "{text}");
    }

    // SIGKILL a reader: every other node shows it dead within the detection bound.
    let bound = arc_gossip::detection_bound(HEARTBEAT) + Duration::from_secs(2);
    nodes[3].kill9();
    let started = std::time::Instant::now();
    let reader_dead = expect(&[
        ("writer-1", "healthy"),
        ("writer-2", "healthy"),
        ("reader-1", "healthy"),
        ("reader-2", "dead"),
        ("compactor-1", "healthy"),
    ]);
    for (index, node) in nodes.iter().enumerate() {
        if index == 3 {
            continue;
        }
        wait_for(
            "reader-2 dead",
            bound.saturating_sub(started.elapsed()),
            || async { (states(node).await.as_ref() == Some(&reader_dead)).then_some(()) },
        )
        .await;
    }

    // SIGTERM the compactor: it is shown left (not dead).
    let status = nodes[4].stop().await;
    assert!(status.success(), "compactor exit: {status}");
    let compactor_left = expect(&[
        ("writer-1", "healthy"),
        ("writer-2", "healthy"),
        ("reader-1", "healthy"),
        ("reader-2", "dead"),
        ("compactor-1", "left"),
    ]);
    wait_states(
        &nodes[..3].iter().collect::<Vec<_>>(),
        &compactor_left,
        "compactor left",
    )
    .await;

    // Restart the killed reader: it comes back as one node, with a newer generation.
    let before = cluster_data(&nodes[0], "/api/v1/cluster/nodes/reader-2")
        .await
        .unwrap();
    nodes[3].spawn().await;
    let back = expect(&[
        ("writer-1", "healthy"),
        ("writer-2", "healthy"),
        ("reader-1", "healthy"),
        ("reader-2", "healthy"),
        ("compactor-1", "left"),
    ]);
    wait_states(
        &[&nodes[0], &nodes[1], &nodes[2], &nodes[3]],
        &back,
        "reader-2 back",
    )
    .await;
    let after = cluster_data(&nodes[0], "/api/v1/cluster/nodes/reader-2")
        .await
        .unwrap();
    assert!(
        after["generation"].as_u64() > before["generation"].as_u64(),
        "{before} -> {after}"
    );
    let summary = cluster_data(&nodes[0], "/api/v1/cluster").await.unwrap();
    assert_eq!(summary["node_count"], 5, "{summary}");

    // The primary stops: with no primary known, a write to a reader gets 503 and Retry-After.
    let primary_index = if primary_id == "writer-1" { 0 } else { 1 };
    assert!(nodes[primary_index].stop().await.success());
    let refused = wait_for(
        "writes refused without a primary",
        CONVERGE_DEADLINE,
        || async {
            let response = nodes[2]
                .client
                .post(nodes[2].url("/write?db=fwd"))
                .body("cpu,host=d usage=4 1700000000000000000")
                .send()
                .await
                .ok()?;
            (response.status() == 503).then_some(response)
        },
    )
    .await;
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused.text().await.unwrap().contains("no primary"));
    // It comes back as primary at the next epoch; the standby stays standby.
    nodes[primary_index].spawn().await;
    for node in &nodes[..4] {
        wait_for("the primary back at epoch 2", CONVERGE_DEADLINE, || async {
            let data = cluster_data(node, "/api/v1/cluster").await?;
            (data["primary"] == primary_id.as_str() && data["epoch"] == 2).then_some(())
        })
        .await;
    }
    let (status, text) = nodes[2]
        .post(
            "/write?db=fwd",
            &[],
            b"cpu,host=d usage=4 1700000000000000000".to_vec(),
        )
        .await;
    assert_eq!(status, 204, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_concurrent_bootstrap_races_elect_exactly_one_primary() {
    for round in 0..5 {
        let storage = tempfile::tempdir().unwrap();
        let ports = free_udp_ports(3);
        let members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(index, port)| Member {
                id: format!("w{index}"),
                role: "writer",
                gossip_port: *port,
            })
            .collect();
        // Every writer reads the empty catalog, then waits at the failpoint before its
        // promote; all are released together, so they do race for the one slot.
        let release = storage.path().join("release");
        let mut nodes: Vec<TestNode> = members
            .iter()
            .map(|member| {
                let mut env = member_env("race", member, &ports, storage.path());
                env.push((
                    "ARC_FAILPOINTS".into(),
                    format!("writer-before-promote=pause:{}", release.display()),
                ));
                TestNode::prepare_owned(env)
            })
            .collect();
        for node in &mut nodes {
            node.spawn_only();
        }
        crate::harness::wait_paused(&release, members.len()).await;
        std::fs::write(&release, b"").unwrap();
        for node in &mut nodes {
            node.wait_ready().await;
        }
        // Exactly one promote record (epoch 1) in the catalog log.
        let log = storage.path().join("_catalog").join("log");
        let promotes: Vec<Value> = std::fs::read_dir(&log)
            .unwrap()
            .filter_map(|entry| {
                let text = std::fs::read_to_string(entry.ok()?.path()).ok()?;
                let record: Value = serde_json::from_str(&text).ok()?;
                text.contains("\"promote\"").then_some(record)
            })
            .collect();
        assert_eq!(promotes.len(), 1, "round {round}: {promotes:?}");
        // Every node agrees on that one primary, and only it says it is primary.
        let mut seen = Vec::new();
        for node in &nodes {
            let flags = wait_for(
                "all three writers with flags",
                CONVERGE_DEADLINE,
                || async {
                    let listed = cluster_data(node, "/api/v1/cluster/nodes").await?;
                    let listed = listed.as_array()?.clone();
                    let ready = listed.len() == 3
                        && listed.iter().all(|node| node["state"] == "healthy")
                        && listed.iter().any(|node| node["primary"] == true);
                    ready.then_some(listed)
                },
            )
            .await;
            let claiming: Vec<&str> = flags
                .iter()
                .filter(|node| node["primary"] == true)
                .map(|node| node["id"].as_str().unwrap())
                .collect();
            assert_eq!(claiming.len(), 1, "round {round}: {flags:?}");
            seen.push(claiming[0].to_string());
        }
        seen.dedup();
        assert_eq!(seen.len(), 1, "round {round}: views disagree: {seen:?}");
        let (mut won, mut lost) = (0.0, 0.0);
        for node in &nodes {
            won += metric_sum(node, "arc_cluster_bootstrap_total", "outcome=\"won\"").await;
            lost += metric_sum(node, "arc_cluster_bootstrap_total", "outcome=\"lost\"").await;
        }
        // The race happened: the two others tried and lost, none skipped it.
        assert_eq!((won, lost), (1.0, 2.0), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_two_clusters_on_shared_ports_never_mix() {
    let ports = free_udp_ports(4);
    let alpha_storage = tempfile::tempdir().unwrap();
    let beta_storage = tempfile::tempdir().unwrap();
    let member = |id: &str, role, port| Member {
        id: id.to_string(),
        role,
        gossip_port: port,
    };
    // Both clusters seed every port of both: the only thing keeping them apart is the name.
    let alpha = start_members(
        "alpha",
        &[
            member("a-w", "writer", ports[0]),
            member("a-r", "reader", ports[1]),
        ],
        &ports,
        alpha_storage.path(),
        &[],
    )
    .await;
    let beta = start_members(
        "beta",
        &[
            member("b-w", "writer", ports[2]),
            member("b-r", "reader", ports[3]),
        ],
        &ports,
        beta_storage.path(),
        &[],
    )
    .await;
    let alpha_view = expect(&[("a-r", "healthy"), ("a-w", "healthy")]);
    let beta_view = expect(&[("b-r", "healthy"), ("b-w", "healthy")]);
    wait_states(
        &alpha.iter().collect::<Vec<_>>(),
        &alpha_view,
        "alpha converged",
    )
    .await;
    wait_states(
        &beta.iter().collect::<Vec<_>>(),
        &beta_view,
        "beta converged",
    )
    .await;
    // Proof that they did talk to each other: each side dropped the other's datagrams.
    for node in alpha.iter().chain(&beta) {
        wait_for(
            "cross-cluster datagrams dropped",
            CONVERGE_DEADLINE,
            || async {
                (metric_sum(node, "arc_gossip_rejected_packets_total", "reason=").await >= 5.0)
                    .then_some(())
            },
        )
        .await;
    }
    for node in &alpha {
        assert_eq!(states(node).await.unwrap(), alpha_view);
    }
    for node in &beta {
        assert_eq!(states(node).await.unwrap(), beta_view);
    }
}

/// A UDP relay between a node and its only seed that records what the node sends.
struct Tap {
    addr: SocketAddr,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn start(target: SocketAddr) -> Tap {
        let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let captured = captured.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 70_000];
                let mut client: Option<SocketAddr> = None;
                loop {
                    let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                        return;
                    };
                    if from == target {
                        if let Some(client) = client {
                            let _ = socket.send_to(&buf[..len], client).await;
                        }
                    } else {
                        client = Some(from);
                        captured.lock().unwrap().push(buf[..len].to_vec());
                        let _ = socket.send_to(&buf[..len], target).await;
                    }
                }
            })
        };
        Tap {
            addr,
            captured,
            task,
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_gossip_without_the_secret_changes_nothing() {
    let storage = tempfile::tempdir().unwrap();
    let ports = free_udp_ports(2);
    let writer_gossip: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let tap = Tap::start(writer_gossip).await;
    // The reader's only seed is the tap, so its first datagrams pass through it.
    let writer = start_members(
        "guarded",
        &[Member {
            id: "w".into(),
            role: "writer",
            gossip_port: ports[0],
        }],
        &[],
        storage.path(),
        &[],
    )
    .await;
    let mut reader_env = member_env(
        "guarded",
        &Member {
            id: "r".into(),
            role: "reader",
            gossip_port: ports[1],
        },
        &[],
        storage.path(),
    );
    // Later variables win: the tap is the reader's only seed.
    reader_env.push(("ARC_CLUSTER_SEEDS".into(), tap.addr.to_string()));
    let mut reader = TestNode::prepare_owned(reader_env);
    reader.spawn().await;
    let nodes = [&writer[0], &reader];
    let genuine = expect(&[("r", "healthy"), ("w", "healthy")]);
    wait_states(&nodes, &genuine, "w and r converged").await;
    let view_of_w = || async {
        cluster_data(&reader, "/api/v1/cluster/nodes/w")
            .await
            .unwrap()
    };
    let before = view_of_w().await;
    assert_eq!(before["primary"], true);

    // An intruder speaking plain chitchat, and a forger impersonating w with huge versions.
    let transport = chitchat::transport::UdpTransport;
    let seeds: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    // chitchat names a node by (id, generation, gossip address): the address it advertises
    // is part of its identity, and may differ from the one it listens on.
    let chitchat_config =
        |node_id: &str, generation: u64, advertise: u16, listen: u16| chitchat::ChitchatConfig {
            chitchat_id: chitchat::ChitchatId::new(
                node_id.to_string(),
                generation,
                format!("127.0.0.1:{advertise}").parse().unwrap(),
            ),
            cluster_id: "guarded".to_string(),
            gossip_interval: Duration::from_millis(50),
            listen_addr: format!("127.0.0.1:{listen}").parse().unwrap(),
            seed_nodes: seeds.clone(),
            failure_detector_config: chitchat::FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
    let attacker_ports = free_udp_ports(2);
    let intruder = chitchat::spawn_chitchat(
        chitchat_config("intruder", 1, attacker_ports[0], attacker_ports[0]),
        vec![
            ("role".into(), "writer".into()),
            ("primary".into(), "true".into()),
        ],
        &transport,
    )
    .await
    .unwrap();
    // The forger claims w's full chitchat id: its id, its generation and its gossip address
    // (w's real one, not the port the forger listens on), so its state would be w's state.
    let w_generation = before["generation"].as_u64().unwrap();
    let forger = chitchat::spawn_chitchat(
        chitchat_config("w", w_generation, ports[0], attacker_ports[1]),
        Vec::new(),
        &transport,
    )
    .await
    .unwrap();
    // Forged values under w's own key names, at versions no genuine update could exceed.
    let forged = arc_gossip::NodeInfo {
        role: arc_gossip::Role::Reader,
        phase: arc_gossip::Phase::Leaving,
        health: arc_gossip::Health {
            status: arc_gossip::HealthStatus::Unhealthy,
            score: 0,
            reasons: vec!["forged".into()],
            parts: BTreeMap::new(),
            unhealthy_checks: 99,
        },
        api_addr: "127.0.0.1:1".into(),
        replication_addr: "127.0.0.1:1".into(),
        durable_lsn: 0,
        epoch: 999,
        primary: false,
        version: "forged".into(),
        started_at_ms: 1,
    };
    forger
        .with_chitchat(|chitchat| {
            let state = chitchat.self_node_state();
            state.set_max_version(u64::MAX / 4);
            for (key, value) in forged.to_keys() {
                state.set(key, value);
            }
        })
        .await;

    // Replays of the datagrams the tap captured (genuine, MAC-valid, already delivered once).
    // Re-sent while waiting: a datagram lost on loopback is not a replay seen.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let captured = tap.captured.lock().unwrap().clone();
    assert!(
        !captured.is_empty(),
        "the tap saw the reader's first datagrams"
    );
    wait_for("replays dropped", CONVERGE_DEADLINE, || async {
        for datagram in &captured {
            let _ = socket.send_to(datagram, writer_gossip).await;
        }
        let replays = metric_sum(
            &writer[0],
            "arc_gossip_rejected_packets_total",
            "reason=\"replay\"",
        )
        .await;
        (replays >= 1.0).then_some(())
    })
    .await;

    // Random bytes, a few at a time so the kernel's socket buffer does not drop most of them.
    let mut baseline = Vec::new();
    for node in nodes {
        baseline.push(metric_sum(node, "arc_gossip_rejected_packets_total", "reason=").await);
    }
    let mut rng = rand::rng();
    for batch in 0..20 {
        for _ in 0..25 {
            let len = rng.random_range(0..1024);
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            for port in &ports {
                let _ = socket.send_to(&junk, ("127.0.0.1", *port)).await;
            }
        }
        if batch == 0 {
            let _ = socket
                .send_to(&vec![0xAB; 65_507], ("127.0.0.1", ports[0]))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (node, before) in nodes.iter().zip(baseline) {
        wait_for("junk datagrams dropped", CONVERGE_DEADLINE, || async {
            let now = metric_sum(node, "arc_gossip_rejected_packets_total", "reason=").await;
            (now >= before + 100.0).then_some(())
        })
        .await;
    }

    // w's genuine updates keep arriving: a write moves its durable LSN in r's view.
    writer[0]
        .write_lp("guard", "m,t=x v=1 1700000000000000000")
        .await;
    let after = wait_for("w's new durable lsn at r", CONVERGE_DEADLINE, || async {
        let now = view_of_w().await;
        (now["durable_lsn"].as_u64() > before["durable_lsn"].as_u64() && now["state"] == "healthy")
            .then_some(now)
    })
    .await;
    assert_eq!(after["role"], "writer");
    assert_eq!(after["primary"], true);
    assert_eq!(after["generation"], before["generation"]);
    // The intruder never appears: once in a view, it would stay for the failure detector's
    // bound and this wait would time out.
    wait_states(&nodes, &genuine, "only the genuine nodes").await;
    // The nodes stayed alive and well through it.
    for node in nodes {
        wait_healthy(node).await;
    }
    intruder.shutdown().await.unwrap();
    forger.shutdown().await.unwrap();
}

/// A base port for `scripts/local-cluster.sh` whose API (TCP) and gossip (UDP) ports are free,
/// below the kernel's ephemeral range so other tests' sockets do not land there.
fn free_base_port(nodes: u16) -> u16 {
    let mut rng = rand::rng();
    for _ in 0..50 {
        let base: u16 = rng.random_range(20_000..28_000);
        let free = (1..=nodes).all(|offset| {
            std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok()
                && UdpSocket::bind(("127.0.0.1", base + 1000 + offset)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port range for the local cluster");
}

fn run_script(args: Vec<String>) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-cluster.sh");
    std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .env("ARC_NODE_BIN", env!("CARGO_BIN_EXE_arc-node"))
        .output()
        .expect("running scripts/local-cluster.sh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_local_cluster_script_starts_prints_token_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("lc");
    let base = free_base_port(3);
    let args = |command: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec![command.to_string()];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args.extend([
            "--dir".to_string(),
            cluster_dir.display().to_string(),
            "--base-port".to_string(),
            base.to_string(),
        ]);
        args
    };
    let start = args(
        "start",
        &["--writers", "1", "--readers", "1", "--compactors", "1"],
    );
    let output = tokio::task::spawn_blocking(move || run_script(start))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "start failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = stdout
        .lines()
        .find_map(|line| line.strip_prefix("admin token: "))
        .expect("the admin token is printed")
        .trim()
        .to_string();
    for (offset, id) in [(1, "writer-1"), (2, "reader-1"), (3, "compactor-1")] {
        let address = format!("http://127.0.0.1:{}", base + offset);
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(id) && line.contains(&address)),
            "{id} at {address}: {stdout}"
        );
    }
    let client = crate::harness::client_with_token(&token);
    let summary_url = format!("http://127.0.0.1:{}/api/v1/cluster", base + 2);
    wait_for("the local cluster converged", CONVERGE_DEADLINE, || async {
        let body: Value = client
            .get(&summary_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["data"]["healthy_nodes"] == 3 && body["data"]["primary"] == "writer-1").then_some(())
    })
    .await;
    let written = client
        .post(format!(
            "http://127.0.0.1:{}/api/v1/write/line-protocol",
            base + 2
        ))
        .header("x-arc-database", "local")
        .body("m v=1 1700000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 204, "a write sent to the reader lands");
    let pids: Vec<String> = ["writer-1", "reader-1", "compactor-1"]
        .iter()
        .map(|id| std::fs::read_to_string(cluster_dir.join(id).join("pid")).unwrap())
        .collect();

    let stop = args("stop", &[]);
    let output = tokio::task::spawn_blocking(move || run_script(stop))
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "stop failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for pid in pids {
        let alive = Path::new("/proc").join(pid.trim()).join("status");
        let state = std::fs::read_to_string(&alive).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains("zombie"),
            "pid {pid} still runs after stop"
        );
    }
    // The writer's final flush put the forwarded row in the shared storage.
    let parquet = crate::harness::count_files(&cluster_dir.join("storage"), "parquet");
    assert_eq!(parquet, 1, "one flushed file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_node_whose_object_store_fails_is_shown_unhealthy_with_the_reason() {
    let s3_root = tempfile::tempdir().unwrap();
    let server = crate::s3::S3Server::start(s3_root.path()).await;
    let s3_addr = server.addr;
    let ports = free_udp_ports(2);
    let members = [
        Member {
            id: "w".into(),
            role: "writer",
            gossip_port: ports[0],
        },
        Member {
            id: "r".into(),
            role: "reader",
            gossip_port: ports[1],
        },
    ];
    let unused = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for member in &members {
        let mut env = member_env("s3health", member, &ports, unused.path());
        env.extend(server.node_env());
        env.push(("ARC_CLUSTER_HEALTH_CHECK_INTERVAL".into(), "300ms".into()));
        nodes.push(TestNode::prepare_owned(env));
    }
    for node in &mut nodes {
        node.spawn().await;
    }
    let healthy = expect(&[("r", "healthy"), ("w", "healthy")]);
    wait_states(&[&nodes[0], &nodes[1]], &healthy, "both healthy on s3").await;

    // The object store goes away: both nodes' own checks fail, and each sees it in the other.
    server.stop().await;
    let unhealthy = expect(&[("r", "unhealthy"), ("w", "unhealthy")]);
    wait_states(&[&nodes[0], &nodes[1]], &unhealthy, "both unhealthy").await;
    let health = cluster_data(&nodes[1], "/api/v1/cluster/health")
        .await
        .unwrap();
    assert_eq!(health["status"], "unhealthy");
    let reasons = health["reasons"].to_string();
    assert!(reasons.contains("object store unreachable"), "{health}");
    let writer = cluster_data(&nodes[1], "/api/v1/cluster/nodes/w")
        .await
        .unwrap();
    assert_eq!(writer["health"]["status"], "unhealthy", "{writer}");
    assert!(writer["health"]["score"].as_u64().unwrap() < 100);
    let listed = cluster_data(&nodes[0], "/api/v1/cluster/nodes?state=unhealthy")
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // It comes back on the same address: so do the nodes.
    let server = crate::s3::S3Server::start_on(s3_root.path(), s3_addr).await;
    wait_states(&[&nodes[0], &nodes[1]], &healthy, "both healthy again").await;

    // A store that accepts connections and never answers is just as unhealthy.
    server.stop().await;
    let black_hole = tokio::net::TcpListener::bind(s3_addr).await.unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
        }
    });
    wait_states(
        &[&nodes[0], &nodes[1]],
        &unhealthy,
        "unhealthy on a hung store",
    )
    .await;
    let health = cluster_data(&nodes[0], "/api/v1/cluster/health")
        .await
        .unwrap();
    assert!(
        health["reasons"].to_string().contains("no answer"),
        "{health}"
    );
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_partition_shows_the_other_side_dead_and_heals_without_a_second_primary() {
    if !crate::netns::available_or_skip(
        "test_a_partition_shows_the_other_side_dead_and_heals_without_a_second_primary",
    ) {
        return;
    }
    let split = crate::netns::Split::create();
    let storage = tempfile::tempdir().unwrap();
    // writer-1 and reader-1 in A; writer-2, reader-2 and compactor-1 in B.
    let plan = [
        ("writer-1", "writer", true, 9001),
        ("reader-1", "reader", true, 9002),
        ("writer-2", "writer", false, 9003),
        ("reader-2", "reader", false, 9004),
        ("compactor-1", "compactor", false, 9005),
    ];
    let seeds = format!("{}:9001,{}:9003", split.a_link_ip, split.b_link_ip);
    let mut nodes: Vec<TestNode> = plan
        .iter()
        .map(|(id, role, in_a, port)| {
            let member = Member {
                id: id.to_string(),
                role,
                gossip_port: *port,
            };
            // What gossip shows across a partition, without failover (which would promote
            // writer-2 in B): B has no primary and says so.
            let extra = [("ARC_CLUSTER_FAILOVER_ENABLED", "false")];
            split.member("split", &member, *in_a, &seeds, storage.path(), &extra)
        })
        .collect();
    // writer-1 first, so it wins the bootstrap race.
    nodes[0].spawn().await;
    for node in &mut nodes[1..] {
        node.spawn_only();
    }
    for node in &mut nodes[1..] {
        node.wait_ready().await;
    }
    let everyone = |state_b: &str| {
        expect(&[
            ("writer-1", "healthy"),
            ("reader-1", "healthy"),
            ("writer-2", state_b),
            ("reader-2", state_b),
            ("compactor-1", state_b),
        ])
    };
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_states(&all, &everyone("healthy"), "5 healthy across the link").await;

    // Cut the link: each side sees the other dead within the detection bound.
    split.partition();
    let bound = arc_gossip::detection_bound(HEARTBEAT) + Duration::from_secs(5);
    let seen_from_b = expect(&[
        ("writer-1", "dead"),
        ("reader-1", "dead"),
        ("writer-2", "healthy"),
        ("reader-2", "healthy"),
        ("compactor-1", "healthy"),
    ]);
    for node in &nodes[..2] {
        wait_for("A sees B dead", bound, || async {
            (states(node).await.as_ref() == Some(&everyone("dead"))).then_some(())
        })
        .await;
    }
    for node in &nodes[2..] {
        wait_for("B sees A dead", bound, || async {
            (states(node).await.as_ref() == Some(&seen_from_b)).then_some(())
        })
        .await;
    }
    // A keeps taking writes through its reader; B knows no primary and says so.
    let (status, text) = nodes[1]
        .post(
            "/write?db=split",
            &[],
            b"m,side=a v=1 1700000000000000000".to_vec(),
        )
        .await;
    assert_eq!(status, 204, "{text}");
    let response = nodes[3]
        .client
        .post(nodes[3].url("/write?db=split"))
        .body("m,side=b v=1 1700000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    for node in &nodes[2..] {
        let summary = cluster_data(node, "/api/v1/cluster").await.unwrap();
        assert!(summary["primary"].is_null(), "no second primary: {summary}");
    }

    // Heal: everyone sees everyone healthy again, with the one primary.
    split.heal();
    wait_states(&all, &everyone("healthy"), "healed").await;
    for node in &nodes {
        wait_for("writer-1 primary everywhere", CONVERGE_DEADLINE, || async {
            let summary = cluster_data(node, "/api/v1/cluster").await?;
            (summary["primary"] == "writer-1" && summary["epoch"] == 1).then_some(())
        })
        .await;
    }
    let (status, text) = nodes[3]
        .post(
            "/write?db=split",
            &[],
            b"m,side=b v=2 1700000000000000001".to_vec(),
        )
        .await;
    assert_eq!(status, 204, "{text}");
    let rows = nodes[0].query("SELECT count(*) FROM split.m").await;
    assert_eq!(rows[0][0], 2);
}

/// A compactor relays a forwarded query's answer as it arrives (a large one passes in bounded
/// memory), and cuts an answer whose reader froze (SIGSTOP) mid-way once the reader is shown
/// dead. A query it forwarded to a reader that then froze does not wait for the 300 s forward
/// timeout either: once the compactor's view shows the reader dead, the query goes to
/// the other healthy reader and is answered; with no healthy reader left it gets 503 with
/// `Retry-After`. After the thaw, both readers answer forwarded queries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_compactor_streams_forwarded_answers_and_resends_a_query_whose_reader_froze() {
    let storage = tempfile::tempdir().unwrap();
    let ports = free_udp_ports(4);
    let plan = [
        ("writer-1", "writer"),
        ("reader-1", "reader"),
        ("reader-2", "reader"),
        ("compactor-1", "compactor"),
    ];
    let members = plan_members(&plan, &ports);
    let nodes = start_members("frozen-reader", &members, &ports[..1], storage.path(), &[]).await;
    let _logs = crate::harness::LogsOnPanic::new(plan.iter().map(|(id, _)| *id).zip(&nodes));
    let compactor = &nodes[3];
    let all_healthy = expect(&plan.map(|(id, _)| (id, "healthy")));
    wait_states(&[compactor], &all_healthy, "4 healthy nodes").await;
    // Far beyond the failure detector's bound, far below the forward timeout.
    let query = || async {
        let started = std::time::Instant::now();
        let answer = compactor
            .client
            .post(compactor.url("/api/v1/query"))
            .json(&serde_json::json!({ "sql": "SELECT 42 AS answer" }))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("the compactor answers a forwarded query within 60 s");
        let served_by = answer
            .headers()
            .get("x-arc-served-by")
            .map(|value| value.to_str().unwrap().to_string());
        let retry_after = answer.headers().get("retry-after").cloned();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (status, served_by, retry_after, text, started.elapsed())
    };
    let mut served = BTreeMap::new();
    for _ in 0..2 {
        let (status, served_by, ..) = query().await;
        assert_eq!(status, 200, "the compactor forwards queries to the readers");
        *served.entry(served_by.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        served.len(),
        2,
        "queries go to both readers in turn: {served:?}"
    );

    // A large answer passes through the compactor as it arrives, whole and never collected.
    const ROWS: u64 = 10_000_000;
    let pid = compactor.pid().unwrap();
    let baseline = crate::harness::peak_rss(pid);
    let bytes = crate::harness::read_range_answer(compactor, ROWS).await;
    let grown = crate::harness::peak_rss(pid).saturating_sub(baseline);
    assert!(
        grown < bytes / 4,
        "the compactor grew by {grown} bytes relaying a {bytes}-byte answer: it was collected"
    );

    // A reader that freezes mid-answer: the compactor cuts the answer once the reader is shown
    // dead, so the client sees a broken answer in seconds instead of waiting for the forward
    // timeout.
    let mut response = compactor
        .client
        .post(compactor.url("/api/v1/query"))
        .json(&serde_json::json!({ "sql": format!("SELECT * FROM range({ROWS})") }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("an answer starts");
    let sender = response.headers()["x-arc-served-by"]
        .to_str()
        .unwrap()
        .to_string();
    let sender_pid = nodes[plan.iter().position(|(id, _)| *id == sender).unwrap()]
        .pid()
        .unwrap();
    response.chunk().await.expect("a first chunk");
    crate::harness::signal(sender_pid, "STOP");
    let started = std::time::Instant::now();
    let ended = loop {
        match response.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    let waited = started.elapsed();
    crate::harness::signal(sender_pid, "CONT");
    assert!(
        ended.is_err(),
        "the answer of a frozen reader arrived whole"
    );
    assert!(waited < CONVERGE_DEADLINE, "cut after {waited:?}");
    wait_states(
        &[compactor],
        &all_healthy,
        "the thawed reader healthy again",
    )
    .await;

    // Two queries at once: one goes to the frozen reader-1 and, once it is shown dead, to
    // reader-2; the other to reader-2 at once.
    let (pid1, pid2) = (nodes[1].pid().unwrap(), nodes[2].pid().unwrap());
    crate::harness::signal(pid1, "STOP");
    let (first, second) = tokio::join!(query(), query());
    for (status, served_by, _, text, waited) in [&first, &second] {
        assert_eq!(*status, 200, "after {waited:?}: {text}");
        assert_eq!(served_by.as_deref(), Some("reader-2"), "{text}");
        assert!(*waited < CONVERGE_DEADLINE, "waited {waited:?}");
    }
    // No healthy reader left: the query sent to the frozen reader-2 gets 503 once it is shown
    // dead.
    crate::harness::signal(pid2, "STOP");
    let (status, _, retry_after, text, waited) = query().await;
    crate::harness::signal(pid1, "CONT");
    crate::harness::signal(pid2, "CONT");
    assert_eq!(status, 503, "after {waited:?}: {text}");
    assert_eq!(retry_after.unwrap(), "1");
    assert!(
        text.contains("reader-2") && text.contains("dead") && text.contains("retry"),
        "{text}"
    );
    assert!(waited < CONVERGE_DEADLINE, "waited {waited:?}");

    wait_states(
        &[compactor],
        &all_healthy,
        "the thawed readers healthy again",
    )
    .await;
    wait_for(
        "a forwarded query answered again",
        CONVERGE_DEADLINE,
        || async { (compactor.query_raw("SELECT 42 AS answer").await.0 == 200).then_some(()) },
    )
    .await;
}

/// The cluster warnings `node` shows under `key` of the cluster API document at `path`.
async fn warnings(node: &TestNode, path: &str, key: &str) -> Option<Vec<String>> {
    let data = cluster_data(node, path).await?;
    Some(
        data[key]
            .as_array()?
            .iter()
            .filter_map(|warning| warning.as_str().map(str::to_string))
            .collect(),
    )
}

/// The warnings an operator sees about the cluster as a whole, through the binaries: a lone
/// primary logs that it is the only writer, and `GET /api/v1/cluster` (and the health
/// document's `cluster_warnings`) names a primary without an in-sync standby until a standby
/// writer catches up, and again after a failover left the new primary alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_primary_without_an_in_sync_standby_is_warned_about() {
    let storage = tempfile::tempdir().unwrap();
    let ports = free_udp_ports(3);
    let plan = [("w1", "writer"), ("r1", "reader"), ("w2", "writer")];
    let members = plan_members(&plan, &ports);
    let mut nodes = start_members("warned", &members[..2], &ports[..1], storage.path(), &[]).await;
    let alone = "no standby is in sync with w1";
    for (path, key) in [
        ("/api/v1/cluster", "warnings"),
        ("/api/v1/cluster/health", "cluster_warnings"),
    ] {
        // Exactly that warning once the reader's view has settled (until gossip shows the
        // primary alive, it also warns that no primary is known).
        wait_for(
            "the lone primary warned about, and nothing else",
            CONVERGE_DEADLINE,
            || async {
                warnings(&nodes[1], path, key)
                    .await
                    .filter(|shown| shown.len() == 1 && shown[0].starts_with(alone))
            },
        )
        .await;
    }
    wait_for(
        "the lone writer's log warning",
        CONVERGE_DEADLINE,
        || async {
            nodes[0]
                .log()
                .contains("this primary is the only writer in the cluster")
                .then_some(())
        },
    )
    .await;

    // A standby writer catches up: no warning left, and the standby does not log the lone
    // writer's warning.
    let mut standby = TestNode::prepare_owned(member_env(
        "warned",
        &members[2],
        &ports[..1],
        storage.path(),
    ));
    standby.spawn().await;
    nodes.push(standby);
    let _logs = crate::harness::LogsOnPanic::new(plan.iter().map(|(id, _)| *id).zip(&nodes));
    for node in &nodes {
        wait_for("no cluster warning", CONVERGE_DEADLINE, || async {
            warnings(node, "/api/v1/cluster", "warnings")
                .await
                .filter(Vec::is_empty)
        })
        .await;
    }
    assert!(!nodes[2].log().contains("the only writer"));

    // The primary dies: the standby takes over, and is now the one without a standby.
    nodes[0].kill9();
    wait_for(
        "the new primary warned about",
        CONVERGE_DEADLINE,
        || async {
            warnings(&nodes[1], "/api/v1/cluster", "warnings")
                .await
                .filter(|shown| {
                    shown
                        .iter()
                        .any(|warning| warning.starts_with("no standby is in sync with w2"))
                })
        },
    )
    .await;
}
