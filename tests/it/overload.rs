//! Issue 9, the query rows: a result too large for memory, a query past its timeout, a query
//! whose client went away, and a stop while a query runs. Each gets a clear answer (or none,
//! for a client that left) and the node keeps serving, or stops on time.

use std::time::{Duration, Instant};

use crate::harness::{TestNode, wait_for};

/// A query that would run for hours on two cores.
const ENDLESS: &str = "SELECT count(*) FROM range(1000000000000)";

/// CPU seconds (user + system) the process has used, from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The command name (field 2) may hold spaces; fields after it are space-separated.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // Linux reports clock ticks of 1/100 s (USER_HZ) in /proc.
    ticks / 100.0
}

/// Waits until the process uses less than a tenth of a core over a half-second window.
async fn wait_idle(node: &TestNode, what: &str) {
    let pid = node.pid().expect("node runs");
    wait_for(what, Duration::from_secs(30), || async move {
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        (cpu_seconds(pid) - before < 0.05).then_some(())
    })
    .await;
}

async fn still_serves(node: &TestNode) {
    node.write_lp("overload", "alive v=1 1").await;
    assert_eq!(
        node.query("SELECT count(*) FROM overload.alive").await[0][0],
        serde_json::json!(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_refuse_a_result_past_max_result_bytes_and_keep_serving() {
    let node = TestNode::start(&[("ARC_QUERY_MAX_RESULT_BYTES", "64MB")]).await;
    let (status, body) = node.query_raw("SELECT * FROM range(400000000)").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("max_result_bytes"),
        "{body}"
    );
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_stop_a_query_at_its_timeout() {
    let node = TestNode::start(&[("ARC_QUERY_TIMEOUT", "1s")]).await;
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), node.query_raw(ENDLESS))
        .await
        .expect("an answer within 30 s");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("query.timeout"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    wait_idle(&node, "the timed-out query to stop using the cores").await;
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_stop_a_query_whose_client_went_away() {
    let node = TestNode::start(&[]).await;
    let gone = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&serde_json::json!({ "sql": ENDLESS }))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up: {gone:?}");
    // Before: both cores stayed busy for as long as the query would have run.
    wait_idle(&node, "the abandoned query to stop using the cores").await;
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_stop_within_the_shutdown_timeout_while_a_query_runs() {
    let mut node = TestNode::start(&[("ARC_SERVER_SHUTDOWN_TIMEOUT", "10s")]).await;
    let (client, url) = (node.client.clone(), node.url("/api/v1/query"));
    let running = tokio::spawn(async move {
        client
            .post(url)
            .json(&serde_json::json!({ "sql": ENDLESS }))
            .send()
            .await
            .map(|response| response.status().as_u16())
    });
    let pid = node.pid().expect("node runs");
    wait_for("the query to run", Duration::from_secs(30), || async move {
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_millis(300)).await;
        (cpu_seconds(pid) - before > 0.2).then_some(())
    })
    .await;
    let started = Instant::now();
    let status = node.stop().await;
    assert!(status.success(), "{status}; log:\n{}", node.log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped after {:?}",
        started.elapsed()
    );
    // The query's client got an answer (503: the node is stopping) or a closed connection.
    if let Ok(Ok(answer)) = running.await {
        assert_eq!(answer, 503);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_refuse_queries_past_max_concurrent_and_keep_taking_writes() {
    let node = TestNode::start(&[
        ("ARC_QUERY_MAX_CONCURRENT", "2"),
        ("ARC_QUERY_TIMEOUT", "20s"),
    ])
    .await;
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (client, url) = (node.client.clone(), node.url("/api/v1/query"));
        slow.spawn(async move {
            client
                .post(url)
                .json(&serde_json::json!({ "sql": ENDLESS }))
                .send()
                .await
        });
    }
    // Once both run, a third is refused at once, with Retry-After. (Probing earlier could take
    // a permit from one of them.)
    wait_for(
        "both slow queries running",
        Duration::from_secs(30),
        || async {
            let running = crate::cluster::metric_sum(&node, "arc_queries_running", "").await;
            (running >= 2.0).then_some(())
        },
    )
    .await;
    let refused = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&serde_json::json!({ "sql": "SELECT 1" }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body = refused.text().await.unwrap();
    assert!(body.contains("max_concurrent"), "{body}");
    // Writes do not wait for the queries.
    let started = Instant::now();
    node.write_lp("overload", "alive v=1 1").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The slow queries' clients leave; their queries stop and free the permits.
    slow.abort_all();
    wait_for(
        "a query admitted again",
        Duration::from_secs(30),
        || async {
            let (status, _) = node.query_raw("SELECT 1").await;
            (status == 200).then_some(())
        },
    )
    .await;
}

/// Peak resident memory of the process so far, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

/// Sixteen concurrent zstd bodies of a few kilobytes, each inflating to 120 MB: each is within
/// the body limit, together they were not bounded at all. The node's inflight budget (128 MB
/// here) admits what fits and answers the rest 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_bound_the_bytes_inflated_by_concurrent_writes() {
    let node = TestNode::start(&[
        ("ARC_SERVER_MAX_PAYLOAD_SIZE", "120MB"),
        ("ARC_INGEST_MAX_INFLIGHT_BYTES", "128MB"),
    ])
    .await;
    let pid = node.pid().expect("node runs");
    let baseline = peak_rss(pid);
    let bomb = zstd::stream::encode_all(&vec![0u8; 119 << 20][..], 3).unwrap();
    assert!(bomb.len() < 64 * 1024, "a small body: {} bytes", bomb.len());
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, bomb) = (
            node.client.clone(),
            node.url("/api/v1/write/line-protocol"),
            bomb.clone(),
        );
        requests.spawn(async move {
            let response = client
                .post(url)
                .header("x-arc-database", "overload")
                .body(bomb)
                .send()
                .await
                .expect("an answer");
            let retry_after = response.headers().contains_key("retry-after");
            (response.status().as_u16(), retry_after)
        });
    }
    let mut busy = 0;
    while let Some(answer) = requests.join_next().await {
        let (status, retry_after) = answer.expect("request task");
        match status {
            503 => {
                assert!(retry_after, "503 without Retry-After");
                busy += 1;
            }
            // Zeros are not line protocol: admitted bodies are inflated, then refused.
            400 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(busy > 0, "the budget turned some away");
    let grown = peak_rss(pid).saturating_sub(baseline);
    assert!(
        grown < 400 << 20,
        "peak memory grew by {} MiB for 128 MB of budget",
        grown >> 20
    );
    still_serves(&node).await;
}
