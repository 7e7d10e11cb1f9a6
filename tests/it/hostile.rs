//! Issue 9, the connection rows: idle connections, headers sent slowly and bodies sent slowly
//! must not hold the node's file descriptors or requests; probes and clients get through a
//! flood.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::{metric_sum, try_metric_sum};
use crate::harness::{TestNode, files_with, wait_for};

/// Connections the tests' nodes serve in full (`server.max_connections`).
const MAX_CONNECTIONS: usize = 100;

/// Above `server.max_connections` and the reserve of 64 probe-only connections.
const FLOOD: usize = 400;

async fn node_with_short_timeouts() -> TestNode {
    TestNode::start(&[
        ("ARC_SERVER_MAX_CONNECTIONS", &MAX_CONNECTIONS.to_string()),
        ("ARC_SERVER_HEADER_READ_TIMEOUT", "1s"),
        ("ARC_SERVER_IDLE_TIMEOUT", "3s"),
        ("ARC_SERVER_BODY_READ_TIMEOUT", "2s"),
    ])
    .await
}

/// Waits until the server closes `stream` (a read returns end-of-file or an error); returns how
/// long that took.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + deadline),
            stream.read(&mut buffer),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            // An answer (e.g. 408) before the close.
            Ok(Ok(_)) => {}
        }
    }
}

async fn serves_everyone(node: &TestNode) {
    let fresh = reqwest::Client::new();
    for path in ["/health", "/ready"] {
        let status = fresh
            .get(node.url(path))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{path} during the flood: {error}"))
            .status();
        assert_eq!(status, 200, "{path} during the flood");
    }
    node.write_lp("hostile", "alive v=1 1").await;
    node.query("SELECT count(*) FROM hostile.alive").await;
}

/// Four hundred idle connections (more than `max_connections` plus the probe reserve): each new
/// client takes the place of an idle one, so `/health`, `/ready`, a write and a query all get
/// through; every idle connection is closed after `server.idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_serve_probes_and_clients_through_a_flood_of_idle_connections() {
    let node = node_with_short_timeouts().await;
    let addr = node.addr.expect("node listens");
    let mut idle = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // The whole flood has been accepted once every connection past the limit has evicted one
    // (the kernel completes the connects before the server accepts them): from then on the
    // limit is full of idle connections and each client below has to take one's place.
    wait_for("the flood accepted", Duration::from_secs(10), || async {
        let open = try_metric_sum(&node, "arc_http_connections ", "").await?;
        let evicted = try_metric_sum(
            &node,
            "arc_http_connections_timed_out_total",
            "reason=\"evicted\"",
        )
        .await?;
        (open >= MAX_CONNECTIONS as f64 && evicted >= (FLOOD - MAX_CONNECTIONS) as f64)
            .then_some(())
    })
    .await;
    serves_everyone(&node).await;
    // All of them are closed: evicted to make room, or timed out idle.
    let mut set = tokio::task::JoinSet::new();
    for mut stream in idle {
        set.spawn(async move { closed_within(&mut stream, Duration::from_secs(10)).await });
    }
    while let Some(closed) = set.join_next().await {
        assert!(
            closed.unwrap().is_some(),
            "an idle connection was still open 10 s after server.idle_timeout (3 s)"
        );
    }
}

/// A client that sends its headers a byte at a time is cut off after `header_read_timeout`,
/// however steadily it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_close_a_connection_sending_headers_slowly() {
    let node = node_with_short_timeouts().await;
    let addr = node.addr.expect("node listens");
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let head = b"POST /api/v1/write/line-protocol HTTP/1.1\r\nHost: x\r\nX-Padding: ";
    slow.write_all(head).await.expect("start of head");
    let mut closed = None;
    for _ in 0..100 {
        if slow.write_all(b"a").await.is_err() {
            closed = Some(started.elapsed());
            break;
        }
        if closed_within(&mut slow, Duration::from_millis(200))
            .await
            .is_some()
        {
            closed = Some(started.elapsed());
            break;
        }
    }
    let closed = closed.expect("a slow header was still being read after 20 s");
    assert!(
        closed < Duration::from_secs(5),
        "closed after {closed:?}; server.header_read_timeout is 1 s"
    );
    serves_everyone(&node).await;
}

/// A body announced as 500 MB and sent a byte every 100 ms gets 408 after
/// `server.body_read_timeout` on the write route; the query route takes far less SQL, so it
/// answers 413 at once, and 408 to a slow body within its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_answer_408_to_a_body_sent_slowly() {
    let node = node_with_short_timeouts().await;
    let addr = node.addr.expect("node listens");
    for (path, length, expected) in [
        ("/api/v1/write/line-protocol", 500_000_000, "HTTP/1.1 408"),
        ("/api/v1/query", 500_000_000, "HTTP/1.1 413"),
        ("/api/v1/query", 1_000_000, "HTTP/1.1 408"),
    ] {
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             x-arc-database: hostile\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n",
            crate::harness::ADMIN_TOKEN
        );
        slow.write_all(head.as_bytes()).await.expect("head");
        let started = Instant::now();
        let mut answer = Vec::new();
        while started.elapsed() < Duration::from_secs(20) {
            if slow.write_all(b"x").await.is_err() {
                break;
            }
            let mut buffer = [0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
                Err(_) => {}
            }
            if !answer.is_empty() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(expected),
            "{path}: expected {expected:?} within 20 s, got {text:?} after {:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{path}: answered after {:?}; server.body_read_timeout is 2 s",
            started.elapsed()
        );
    }
    // Only the write counts as a rejected write, and as a timeout, not as too large.
    let rejected = |reason: &'static str| {
        let label = format!("reason=\"{reason}\"");
        let node = &node;
        async move { metric_sum(node, "arc_ingest_rejected_total", &label).await }
    };
    assert_eq!(rejected("body_timeout").await, 1.0);
    assert_eq!(rejected("too_large").await, 0.0);
    serves_everyone(&node).await;
}

/// The read-only analyzer's CTE scoping matches DuckDB's: a name defined by a later CTE is a
/// table inside an earlier one, so it cannot smuggle a file path or a catalog view past the
/// analyzer; catalog views are refused by name too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_not_read_files_or_catalog_views_through_cte_scoping() {
    let node = TestNode::start(&[]).await;
    node.write_lp("hostile", "secret,host=a v=42 1").await;
    node.flush().await;
    let parquet = files_with(&node.dir.join("storage"), "parquet")
        .into_iter()
        .next()
        .expect("a flushed object");
    let path = parquet.display().to_string();
    for target in [
        path.as_str(),
        "pg_settings",
        "duckdb_tables",
        "information_schema.tables",
    ] {
        let sql = format!(
            "WITH RECURSIVE a AS (SELECT * FROM \"{target}\"), \"{target}\" AS (SELECT 1) SELECT * FROM a"
        );
        let (status, body) = node.query_raw(&sql).await;
        assert!(
            (400..500).contains(&status),
            "{target}: expected a 4xx, got {status}: {body}"
        );
    }
    for view in [
        "pg_settings",
        "duckdb_tables",
        "information_schema.tables",
        "pg_catalog.pg_class",
    ] {
        let (status, body) = node.query_raw(&format!("SELECT * FROM {view}")).await;
        assert_eq!(status, 400, "{view}: {body}");
        assert!(
            body.to_string().contains("DuckDB's catalog"),
            "{view}: {body}"
        );
    }
    assert_eq!(
        node.query("SELECT v FROM hostile.secret").await[0][0],
        serde_json::json!(42.0)
    );
}

/// `query.max_result_rows`: a result past it gets a 400 naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_refuse_a_result_past_max_result_rows() {
    let node = TestNode::start(&[("ARC_QUERY_MAX_RESULT_ROWS", "1000")]).await;
    let (status, body) = node.query_raw("SELECT * FROM range(5000)").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("query.max_result_rows"), "{body}");
    assert_eq!(node.query("SELECT * FROM range(1000)").await.len(), 1000);
}
