//! Issue 9, the query rows: a result too large for memory, a query past its timeout, a query
//! whose client went away, and a stop while a query runs. Each gets a clear answer (or none,
//! for a client that left) and the node keeps serving, or stops on time.

use std::time::{Duration, Instant};

use crate::harness::{TestNode, peak_rss, wait_for};

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

/// A result past `query.max_result_bytes` ends the answer: it is streamed, so the error comes
/// after the answer started and cuts the body short (the client cannot mistake it for a whole
/// result), the node says why in its log, and the node never held the result in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_cut_a_result_past_max_result_bytes_and_keep_serving() {
    let node = TestNode::start(&[("ARC_QUERY_MAX_RESULT_BYTES", "64MB")]).await;
    let pid = node.pid().expect("node runs");
    let response = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&serde_json::json!({ "sql": "SELECT * FROM range(400000000)" }))
        .send()
        .await
        .expect("an answer starts");
    let status = response.status().as_u16();
    let body = response.bytes().await;
    match status {
        400 => {}
        200 => assert!(body.is_err(), "a result past the limit arrived whole"),
        other => panic!("unexpected status {other}"),
    }
    wait_for("the reason in the log", Duration::from_secs(10), || async {
        node.log().contains("query.max_result_bytes").then_some(())
    })
    .await;
    assert!(
        peak_rss(pid) < 1 << 30,
        "peak RSS {} bytes: the result was held in memory",
        peak_rss(pid)
    );
    still_serves(&node).await;
}

/// A large result is streamed as DuckDB produces it: the node's memory stays far below the
/// result's size, and the document arrives whole and correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_stream_a_large_result_in_bounded_memory() {
    const ROWS: u64 = 20_000_000;
    let node = TestNode::start(&[]).await;
    let pid = node.pid().expect("node runs");
    let baseline = peak_rss(pid);
    let bytes = crate::harness::read_range_answer(&node, ROWS).await;
    let grown = peak_rss(pid).saturating_sub(baseline);
    assert!(
        grown < bytes / 2,
        "the node grew by {grown} bytes for a {bytes}-byte answer: it was not streamed"
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

/// Sixteen concurrent zstd bodies of a few kilobytes, each inflating to 120 MB: each is within
/// the body limit, together they were not bounded at all. The node's inflight budget (128 MB
/// here) admits what fits and answers the rest 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_bound_the_bytes_inflated_by_concurrent_writes() {
    let bomb = zstd::stream::encode_all(&vec![0u8; 119 << 20][..], 3).unwrap();
    assert!(bomb.len() < 64 * 1024, "a small body: {} bytes", bomb.len());
    sixteen_concurrent_writes_stay_within_the_budget(bomb.into()).await;
}

/// Sixteen concurrent plain bodies of 60 MB each: the budget (128 MB here) pays for a body as
/// it is read, not once it is whole, so the bodies it cannot take are discarded as they arrive
/// (503 with Retry-After) instead of all sitting in memory at once (about 1 GB before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_bound_the_bytes_read_by_concurrent_writes() {
    // Below the size a refused body is drained to, so every answer arrives.
    sixteen_concurrent_writes_stay_within_the_budget(vec![0u8; 60 << 20].into()).await;
}

/// Sixteen concurrent bodies of 8 MB of sparse lines (one of twelve columns each, so each line
/// costs a time, a value and eleven nulls: 104 bytes of rows for 9 bytes of body), each
/// decoding to about 90 MB of rows before its last line is found bad: the budget (128 MB here)
/// pays for the rows as they are built, not only for the bodies, so what it cannot pay for is
/// refused with 503 instead of being decoded by every admitted body at once (a gigabyte and
/// more before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_bound_the_rows_decoded_by_concurrent_writes() {
    let mut body: String = (0..900_000)
        .map(|line| format!("lp c{}=1i\n", line % 12))
        .collect();
    body.push_str("lp\n");
    sixteen_concurrent_writes_stay_within_the_budget(body.into()).await;
}

/// Sends `body` 16 times at once to a node with a 128 MB inflight budget: some get 503 with
/// Retry-After, the admitted ones 400 (none is valid line protocol), and the node's peak memory
/// grows by less than 400 MiB; it still serves afterwards.
async fn sixteen_concurrent_writes_stay_within_the_budget(body: bytes::Bytes) {
    let node = TestNode::start(&[
        ("ARC_SERVER_MAX_PAYLOAD_SIZE", "120MB"),
        ("ARC_INGEST_MAX_INFLIGHT_BYTES", "128MB"),
    ])
    .await;
    let pid = node.pid().expect("node runs");
    let baseline = peak_rss(pid);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, body) = (
            node.client.clone(),
            node.url("/api/v1/write/line-protocol"),
            body.clone(),
        );
        requests.spawn(async move {
            let response = client
                .post(url)
                .header("x-arc-database", "overload")
                .body(body)
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

/// Bytes of the files directly in `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

/// What the load writers saw: ids acknowledged, and 503s with `Retry-After`.
#[derive(Default)]
struct LoadOutcome {
    acknowledged: std::collections::BTreeSet<u64>,
    refused: u64,
}

/// Four writers sending 2,000 rows per request, each row with a unique id, until `stop`.
fn start_load(
    node: &TestNode,
    outcome: std::sync::Arc<std::sync::Mutex<LoadOutcome>>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..4u64 {
        let (client, url) = (node.client.clone(), node.url("/api/v1/write/line-protocol"));
        let (outcome, stop) = (outcome.clone(), stop.clone());
        writers.spawn(async move {
            let mut next = writer << 40;
            while !stop.is_cancelled() {
                let ids: Vec<u64> = (next..next + 2000).collect();
                next += 2000;
                let body: String = ids
                    .iter()
                    .map(|id| format!("load,writer={writer} id={id}i,pad=\"{:0>64}\" {id}\n", id))
                    .collect();
                let Ok(response) = client
                    .post(&url)
                    .header("x-arc-database", "pressure")
                    .body(body)
                    .send()
                    .await
                else {
                    continue;
                };
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                match status {
                    204 => outcome.lock().unwrap().acknowledged.extend(ids),
                    503 => {
                        assert!(retry_after, "a 503 without Retry-After");
                        outcome.lock().unwrap().refused += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("unexpected status {other} under load"),
                }
            }
        });
    }
    writers
}

/// The object store goes away under load: buffered bytes and WAL bytes stay within their
/// bounds, writes past them get 503 with Retry-After (never an acknowledgement for what could
/// not be kept), and once the store is back ingest resumes by itself and every acknowledged
/// row is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_push_back_while_the_store_is_down_and_resume_when_it_returns() {
    use crate::s3::S3Server;
    const BUFFER_BOUND: u64 = 24 << 20;
    const WAL_BOUND: u64 = 48 << 20;
    let s3_root = tempfile::tempdir().unwrap();
    let server = S3Server::start(s3_root.path()).await;
    let addr = server.addr;
    let mut env = server.node_env();
    env.extend(
        [
            ("ARC_INGEST_MAX_BUFFERED_BYTES", "24MB"),
            ("ARC_INGEST_MAX_BUFFER_AGE_MS", "200"),
            ("ARC_WAL_MAX_SIZE_MB", "4"),
            ("ARC_WAL_MAX_TOTAL_SIZE", "48MB"),
        ]
        .map(|(key, value)| (key.to_string(), value.to_string())),
    );
    let mut node = TestNode::prepare_owned(env);
    node.spawn().await;
    let outcome = std::sync::Arc::new(std::sync::Mutex::new(LoadOutcome::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut writers = start_load(&node, outcome.clone(), stop.clone());
    wait_for("writes acknowledged", Duration::from_secs(30), || async {
        (outcome.lock().unwrap().acknowledged.len() > 50_000).then_some(())
    })
    .await;

    server.stop().await;
    let wal_dir = node.dir.join("wal");
    let mut peak_buffered = 0f64;
    let mut peak_wal = 0u64;
    let refusing_by = Instant::now() + Duration::from_secs(60);
    while outcome.lock().unwrap().refused < 20 {
        assert!(
            Instant::now() < refusing_by,
            "writes were not refused within 60 s of the store going down"
        );
        peak_buffered =
            peak_buffered.max(crate::cluster::metric_sum(&node, "arc_buffer_bytes ", "").await);
        peak_wal = peak_wal.max(dir_bytes(&wal_dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refusals go on while the store stays down; the bounds hold throughout.
    let refused_at = outcome.lock().unwrap().refused;
    let acknowledged_at = outcome.lock().unwrap().acknowledged.len();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        peak_buffered =
            peak_buffered.max(crate::cluster::metric_sum(&node, "arc_buffer_bytes ", "").await);
        peak_wal = peak_wal.max(dir_bytes(&wal_dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        outcome.lock().unwrap().refused > refused_at,
        "refusals stopped while the store was down"
    );
    // A request admitted just under the bound may carry it over by one request's rows.
    let slack = 4u64 << 20;
    assert!(
        peak_buffered <= (BUFFER_BOUND + slack) as f64,
        "buffered bytes reached {peak_buffered}, past ingest.max_buffered_bytes ({BUFFER_BOUND})"
    );
    assert!(
        peak_wal <= WAL_BOUND + slack,
        "the WAL reached {peak_wal} bytes, past wal.max_total_size ({WAL_BOUND})"
    );
    assert!(
        outcome.lock().unwrap().acknowledged.len() - acknowledged_at < 20_000,
        "writes went on being acknowledged while nothing could be flushed"
    );

    let _server = S3Server::start_on(s3_root.path(), addr).await;
    let resumed_from = outcome.lock().unwrap().acknowledged.len();
    wait_for(
        "ingest resumed by itself",
        Duration::from_secs(90),
        || async {
            (outcome.lock().unwrap().acknowledged.len() > resumed_from + 20_000).then_some(())
        },
    )
    .await;
    stop.cancel();
    while writers.join_next().await.is_some() {}
    node.flush().await;
    let acknowledged = outcome.lock().unwrap().acknowledged.len() as u64;
    let rows = node
        .query("SELECT count(*), count(DISTINCT id) FROM pressure.load")
        .await;
    // Rows refused with 503 may have been kept too (never acknowledged, never lost) only if
    // the node answered 503 after storing them, which it must not.
    assert_eq!(rows[0][0], serde_json::json!(acknowledged), "rows stored");
    assert_eq!(rows[0][1], serde_json::json!(acknowledged), "distinct ids");
    node.stop().await;
}

/// The WAL's filesystem fills up (a 64 MB tmpfs, mostly taken by another file): writes get 503
/// naming the directory instead of failing the log and stopping the node; once space is freed,
/// writes succeed again. Needs root for the mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_refuse_writes_on_a_full_wal_disk_and_recover() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        crate::harness::skip(
            "overload::test_should_refuse_writes_on_a_full_wal_disk_and_recover",
            "mounting a small tmpfs needs root",
        );
        return;
    }
    let mut node = TestNode::prepare(&[]);
    let wal_fs = node.dir.join("walfs");
    std::fs::create_dir_all(&wal_fs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&wal_fs)
        .status()
        .expect("running mount");
    assert!(mounted.success(), "mount tmpfs on {}", wal_fs.display());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(wal_fs.clone());
    let wal_dir = wal_fs.join("wal");
    node.set_env(&[
        ("ARC_WAL_DIRECTORY", wal_dir.to_str().unwrap()),
        ("ARC_WAL_MIN_FREE_SPACE", "16MB"),
        ("ARC_WAL_MAX_SIZE_MB", "1"),
    ]);
    node.spawn().await;
    // Leave 24 MB free: a few writes fit, then the 16 MB floor is reached.
    let ballast = wal_fs.join("ballast");
    std::fs::write(&ballast, vec![1u8; 40 << 20]).unwrap();
    let line = format!("disk,host=a pad=\"{}\"", "p".repeat(1000));
    let body: String = (0..1000).map(|i| format!("{line} {i}\n")).collect();
    let mut refusal = None;
    for _ in 0..40 {
        let (status, text) = node
            .post(
                "/api/v1/write/line-protocol",
                &[("x-arc-database", "full")],
                body.clone().into_bytes(),
            )
            .await;
        match status {
            204 => {}
            503 => {
                refusal = Some(text);
                break;
            }
            other => panic!("unexpected status {other}: {text}"),
        }
    }
    let refusal = refusal.expect("writes were still taken with the WAL's disk full");
    assert!(refusal.contains("wal.min_free_space"), "{refusal}");
    assert!(refusal.contains(wal_dir.to_str().unwrap()), "{refusal}");
    let health = reqwest::get(node.url("/health")).await.unwrap().status();
    assert_eq!(
        health, 200,
        "the node must keep running with a full WAL disk"
    );
    assert!(node.pid().is_some());
    std::fs::remove_file(&ballast).unwrap();
    node.write_lp("full", "disk,host=a v=1 1").await;
    node.stop().await;
}

/// A WAL far larger than `ingest.max_buffered_bytes` (left by a node that could not flush)
/// replays in bounded chunks: the start flushes as it goes, its memory stays bounded, and every
/// row is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_replay_a_wal_larger_than_the_buffer_bound_in_bounded_chunks() {
    const ROWS: u64 = 3_000_000;
    let mut node = TestNode::start(&[
        // Nothing is flushed while the WAL fills.
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
        ("ARC_INGEST_MAX_BUFFER_SIZE", "100000000"),
        ("ARC_INGEST_MAX_BUFFERED_BYTES", "4GB"),
    ])
    .await;
    let pad = "q".repeat(100);
    let mut requests = tokio::task::JoinSet::new();
    for chunk in 0..(ROWS / 100_000) {
        let (client, url) = (node.client.clone(), node.url("/api/v1/write/line-protocol"));
        let body: String = (chunk * 100_000..(chunk + 1) * 100_000)
            .map(|id| format!("big,host=h{} id={id}i,pad=\"{pad}\" {id}\n", id % 7))
            .collect();
        requests.spawn(async move {
            let response = client
                .post(url)
                .header("x-arc-database", "replay")
                .body(body)
                .send()
                .await
                .expect("write");
            assert_eq!(response.status().as_u16(), 204);
        });
        // Two at a time keeps the test's own memory small.
        if requests.len() >= 2 {
            requests.join_next().await;
        }
    }
    while requests.join_next().await.is_some() {}
    let wal_bytes = dir_bytes(&node.dir.join("wal"));
    assert!(
        wal_bytes > 300 << 20,
        "the WAL holds only {wal_bytes} bytes"
    );
    node.kill9();

    node.set_env(&[("ARC_INGEST_MAX_BUFFERED_BYTES", "16MB")]);
    node.spawn_only();
    let pid = node.pid().expect("node runs");
    node.wait_ready().await;
    // VmHWM is the process's peak since it started: replay included.
    let peak = peak_rss(pid);
    eprintln!("replay: WAL {wal_bytes} bytes, peak RSS {peak} bytes");
    assert!(
        node.log().contains("flushing before reading on"),
        "replay did not flush in chunks"
    );
    assert!(
        peak < wal_bytes,
        "peak RSS during replay {peak} bytes: not bounded below the WAL's {wal_bytes} bytes"
    );
    let rows = node
        .query("SELECT count(*), count(DISTINCT id) FROM replay.big")
        .await;
    assert_eq!(rows[0][0], serde_json::json!(ROWS));
    assert_eq!(rows[0][1], serde_json::json!(ROWS));
}
