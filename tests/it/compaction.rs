//! Compaction through the real binary (issue 12): a standalone node compacts in-process; the
//! same answers before and after hourly and daily merges, the last write wins among duplicate
//! points, queries during a commit see every row once, the trigger API's 409 and 400, kill -9
//! at each crash point of a job, and forwarding from a node that does not compact.
//!
//! Data lies in a closed day (2025-03-01), written in several batches with a flush after
//! each, so every hour holds several raw objects; `hourly_min_files` and `daily_min_files`
//! are lowered and runs are started through the trigger API (the schedule's first run is one
//! `compaction.interval`, a minute, after start).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{TestNode, peak_rss, wait_for, wait_paused};

/// The database of every test here.
const DB: &str = "compact";
/// 2025-03-01T00:00:00Z in nanoseconds: a day long closed.
const DAY_NS: i64 = 1_740_787_200_000_000_000;
const HOUR_NS: i64 = 3_600_000_000_000;
/// The hours of the day that get rows.
const HOURS: [i64; 3] = [10, 11, 12];
const HOSTS: [&str; 3] = ["a", "b", "c"];
/// Write batches, each flushed: raw objects per hour.
const BATCHES: i64 = 6;
/// How long a compaction run may take here.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// The environment of a compacting test node: small thresholds, no background flush (each
/// batch is flushed by the test, so the objects per hour are known).
fn compaction_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ARC_COMPACTION_HOURLY_MIN_FILES", "2"),
        ("ARC_COMPACTION_DAILY_MIN_FILES", "2"),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "600000"),
    ]
}

/// The line protocol of batch `batch`: per hour and host five rows, the first batch's first
/// row at the hour's start and the last batch's last row one nanosecond before its end (the
/// edges the time filters test). Values are multiples of 0.25, so float sums are exact in any
/// order.
fn batch_lines(batch: i64) -> String {
    let mut lines = String::new();
    for hour in HOURS {
        let hour_start = DAY_NS + hour * HOUR_NS;
        for (host_index, host) in HOSTS.iter().enumerate() {
            for k in 0..5 {
                let time = hour_start + (batch * 5 + k) * 100 * 1_000_000_000;
                let usage = ((batch * 7 + k * 3 + host_index as i64) % 40) as f64 * 0.25;
                let count = batch * 100 + k;
                lines.push_str(&format!(
                    "cpu,host={host} usage={usage},count={count}i {time}\n"
                ));
            }
            if batch == BATCHES - 1 {
                let time = hour_start + HOUR_NS - 1;
                lines.push_str(&format!("cpu,host={host} usage=0.5,count=7i {time}\n"));
            }
        }
    }
    lines
}

/// Rows the data set holds.
fn expected_rows() -> i64 {
    (HOURS.len() * HOSTS.len()) as i64 * (BATCHES * 5 + 1)
}

/// Writes every batch, flushing after each: `BATCHES` raw objects per hour.
async fn write_data(node: &TestNode) {
    for batch in 0..BATCHES {
        node.write_lp(DB, &batch_lines(batch)).await;
        node.flush().await;
    }
}

/// The fixed queries whose answers compaction must not change.
const QUERIES: &[&str] = &[
    "SELECT count(*) FROM compact.cpu",
    "SELECT sum(usage), sum(count) FROM compact.cpu",
    "SELECT min(usage), max(usage), min(count), max(count), min(time), max(time) FROM compact.cpu",
    "SELECT host, count(*), sum(usage), min(count), max(count) FROM compact.cpu GROUP BY host ORDER BY host",
    "SELECT time, host, usage, count FROM compact.cpu ORDER BY time, host LIMIT 25",
    "SELECT time, host, usage FROM compact.cpu ORDER BY time DESC, host LIMIT 7",
    "SELECT count(*), sum(count) FROM compact.cpu WHERE time >= '2025-03-01T11:00:00Z' AND time < '2025-03-01T12:00:00Z'",
    "SELECT count(*), sum(usage) FROM compact.cpu WHERE time > '2025-03-01T11:00:00Z' AND time <= '2025-03-01T12:00:00Z'",
    "SELECT host, count(*) FROM compact.cpu WHERE time < '2025-03-01T11:00:00Z' GROUP BY host ORDER BY host",
    "SELECT count(*) FROM compact.cpu WHERE time >= '2025-03-01T12:00:00Z'",
];

async fn answers(node: &TestNode) -> Vec<Vec<Vec<Value>>> {
    let mut all = Vec::new();
    for sql in QUERIES {
        all.push(node.query(sql).await);
    }
    all
}

/// GETs the compaction status; returns the HTTP status and the body.
async fn status_raw(node: &TestNode) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = node
        .client
        .get(node.url("/api/v1/compaction/status"))
        .send()
        .await
        .expect("sending status request");
    let code = response.status().as_u16();
    let headers = response.headers().clone();
    (code, response.json().await.unwrap_or(Value::Null), headers)
}

async fn status(node: &TestNode) -> Value {
    let (code, body, _) = status_raw(node).await;
    assert_eq!(code, 200, "compaction status: {body}");
    assert_eq!(body["success"], true, "{body}");
    body["data"].clone()
}

/// POSTs a trigger with `query` (e.g. `tier=hourly`); returns status and body.
async fn trigger(node: &TestNode, query: &str) -> (u16, Value) {
    let (code, text) = node
        .post(
            &format!("/api/v1/compaction/trigger?{query}"),
            &[],
            Vec::new(),
        )
        .await;
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Triggers a run and waits until it has finished; returns the status after it.
async fn run_compaction(node: &TestNode, query: &str) -> Value {
    let before = status(node).await["runs_completed"].as_u64().unwrap_or(0);
    let (code, body) = trigger(node, query).await;
    assert_eq!(code, 202, "trigger {query}: {body}");
    wait_for("the compaction run to finish", RUN_DEADLINE, || async {
        let now = status(node).await;
        (now["runs_completed"].as_u64().unwrap_or(0) > before).then_some(now)
    })
    .await
}

/// The jobs of the last run, from the status (the last `count` entries of `recent_jobs`).
fn last_jobs(status: &Value, count: usize) -> Vec<Value> {
    let jobs = status["recent_jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    jobs[jobs.len().saturating_sub(count)..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_answer_the_same_before_and_after_hourly_and_daily_compaction() {
    let node = TestNode::start(&compaction_env()).await;
    write_data(&node).await;
    let before = answers(&node).await;
    assert_eq!(before[0][0][0], expected_rows(), "{:?}", before[0]);

    // Queries run throughout the hourly run: each sees every row exactly once.
    let expected_sum = before[1][0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let watcher = {
        let client = node.client.clone();
        let url = node.url("/api/v1/query");
        let stop = stop.clone();
        let checked = checked.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let body: Value = client
                    .post(&url)
                    .json(&serde_json::json!({
                        "sql": "SELECT count(*), sum(usage), sum(count) FROM compact.cpu"
                    }))
                    .send()
                    .await
                    .expect("query during compaction")
                    .json()
                    .await
                    .expect("query answer");
                let row = &body["data"][0];
                assert_eq!(row[0], expected_rows(), "a query during compaction: {body}");
                assert_eq!(row[1], expected_sum[0], "{body}");
                assert_eq!(row[2], expected_sum[1], "{body}");
                checked.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    wait_for("queries running", RUN_DEADLINE, || async {
        (checked.load(Ordering::Relaxed) >= 3).then_some(())
    })
    .await;
    let after_hourly = run_compaction(&node, &format!("database={DB}&tier=hourly")).await;
    let checked_before_stop = checked.load(Ordering::Relaxed);
    stop.store(true, Ordering::Release);
    watcher
        .await
        .expect("no query during compaction saw a wrong answer");
    assert!(checked_before_stop >= 3, "{checked_before_stop} queries");

    let run = &after_hourly["last_run"];
    assert_eq!(run["trigger"], "manual", "{after_hourly}");
    assert_eq!(run["tier"], "hourly");
    assert_eq!(run["jobs"], HOURS.len(), "{after_hourly}");
    assert_eq!(run["committed"], HOURS.len(), "{after_hourly}");
    for job in last_jobs(&after_hourly, HOURS.len()) {
        assert_eq!(job["outcome"], "committed", "{job}");
        assert_eq!(job["tier"], "hourly");
        assert_eq!(job["files_in"], BATCHES, "{job}");
        assert_eq!(job["rows_in"], job["rows_out"], "no duplicates here: {job}");
        assert_eq!(
            job["deduplicated"], true,
            "flush footers name the tags: {job}"
        );
    }
    assert_eq!(
        after_hourly["totals"]["files_before"],
        HOURS.len() as i64 * BATCHES
    );
    assert_eq!(after_hourly["totals"]["files_after"], HOURS.len());
    assert_eq!(after_hourly["pending_jobs"], 0);
    assert!(after_hourly["run"].is_null(), "{after_hourly}");
    assert_eq!(
        answers(&node).await,
        before,
        "answers changed by hourly compaction"
    );

    // Nothing more to do hourly: a second run plans nothing.
    let again = run_compaction(&node, "tier=hourly").await;
    assert_eq!(again["last_run"]["jobs"], 0, "{again}");

    let after_daily = run_compaction(&node, "tier=daily").await;
    let daily = last_jobs(&after_daily, 1);
    assert_eq!(after_daily["last_run"]["committed"], 1, "{after_daily}");
    assert_eq!(daily[0]["tier"], "daily");
    assert_eq!(daily[0]["files_in"], HOURS.len(), "{daily:?}");
    assert_eq!(daily[0]["rows_out"], expected_rows());
    assert_eq!(
        answers(&node).await,
        before,
        "answers changed by daily compaction"
    );

    // The job metrics are served.
    let metrics = reqwest::get(node.url("/metrics"))
        .await
        .expect("scraping")
        .text()
        .await
        .expect("metrics text");
    let committed_hourly = metrics.lines().find(|line| {
        line.starts_with("arc_compact_jobs_total{")
            && line.contains(r#"tier="hourly""#)
            && line.contains(r#"outcome="committed""#)
    });
    assert_eq!(
        committed_hourly.and_then(|line| line.rsplit(' ').next()),
        Some("3"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE arc_compaction_runs_total counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_keep_the_last_write_of_duplicate_points() {
    let node = TestNode::start(&compaction_env()).await;
    let t1 = DAY_NS + 10 * HOUR_NS + 5_000_000_000;
    let t2 = t1 + 1_000_000_000;
    // Host a: the same point in two flushes; host b: twice in one request (one flush); host
    // c: a point written once.
    node.write_lp(DB, &format!("dup,host=a v=1 {t1}\ndup,host=c v=9 {t1}\n"))
        .await;
    node.flush().await;
    node.write_lp(DB, &format!("dup,host=a v=2 {t1}\n")).await;
    node.flush().await;
    node.write_lp(DB, &format!("dup,host=b v=3 {t2}\ndup,host=b v=4 {t2}\n"))
        .await;
    node.flush().await;
    // Before compaction every write is a row.
    let before = node
        .query("SELECT host, v FROM compact.dup ORDER BY host, v")
        .await;
    assert_eq!(before.len(), 5, "{before:?}");

    let after = run_compaction(&node, "tier=hourly").await;
    let job = &last_jobs(&after, 1)[0];
    assert_eq!(job["outcome"], "committed", "{after}");
    assert_eq!(job["rows_in"], 5, "{job}");
    assert_eq!(job["rows_out"], 3, "{job}");
    let rows = node
        .query("SELECT host, v, time FROM compact.dup ORDER BY host")
        .await;
    let host_values: Vec<(Value, Value)> = rows
        .iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect();
    assert_eq!(
        host_values,
        vec![
            (Value::from("a"), Value::from(2.0)),
            (Value::from("b"), Value::from(4.0)),
            (Value::from("c"), Value::from(9.0)),
        ],
        "the later write wins: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_refuse_a_second_trigger_while_a_run_is_going() {
    let pause_dir = tempfile::tempdir().unwrap();
    let release = pause_dir.path().join("release");
    let failpoint = format!("compaction-before-run=pause:{}", release.display());
    let mut env: Vec<(&str, &str)> = compaction_env();
    env.push(("ARC_FAILPOINTS", failpoint.as_str()));
    let node = TestNode::start(&env).await;
    write_data(&node).await;

    let (code, body) = trigger(&node, "tier=weekly").await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("weekly"),
        "{body}"
    );

    let (code, body) = trigger(&node, "tier=hourly").await;
    assert_eq!(code, 202, "{body}");
    wait_paused(&release, 1).await;
    let (code, body) = trigger(&node, "tier=daily").await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("in progress"),
        "{body}"
    );
    let going = status(&node).await;
    assert_eq!(going["run"]["trigger"], "manual", "{going}");
    assert_eq!(going["run"]["tier"], "hourly", "{going}");

    std::fs::write(&release, b"").unwrap();
    let done = wait_for("the held run to finish", RUN_DEADLINE, || async {
        let now = status(&node).await;
        (now["runs_completed"] == 1).then_some(now)
    })
    .await;
    assert_eq!(done["last_run"]["committed"], HOURS.len(), "{done}");
    // Free again.
    let after = run_compaction(&node, "tier=daily").await;
    assert_eq!(after["last_run"]["committed"], 1, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_lose_and_duplicate_nothing_when_killed_mid_job() {
    for failpoint in [
        "compact-before-upload",
        "compact-after-upload-before-commit",
        "compact-after-commit",
    ] {
        let mut env: Vec<(&str, &str)> = compaction_env();
        // A short grace, so the leftovers of the crash are collected within the test.
        env.extend([
            ("ARC_COMPACTION_GC_GRACE", "1s"),
            ("ARC_COMPACTION_GC_INTERVAL", "500ms"),
        ]);
        let spec = format!("{failpoint}=abort");
        let mut armed: Vec<(&str, &str)> = env.clone();
        armed.push(("ARC_FAILPOINTS", spec.as_str()));
        let mut node = TestNode::start(&armed).await;
        write_data(&node).await;
        let before = answers(&node).await;

        let (code, body) = trigger(&node, "tier=hourly").await;
        assert_eq!(code, 202, "{failpoint}: {body}");
        let exit = node.wait_exit(RUN_DEADLINE).await;
        assert!(
            !exit.success(),
            "{failpoint}: the failpoint aborted the node ({exit})"
        );

        node.set_env(&env);
        node.spawn().await;
        assert_eq!(
            answers(&node).await,
            before,
            "{failpoint}: answers after the crash"
        );
        let after = run_compaction(&node, "tier=hourly").await;
        let committed = after["last_run"]["committed"].as_u64().unwrap_or(0);
        let expected_jobs = if failpoint == "compact-after-commit" {
            // The first hour's swap landed before the abort.
            HOURS.len() - 1
        } else {
            HOURS.len()
        };
        assert_eq!(committed, expected_jobs as u64, "{failpoint}: {after}");
        assert_eq!(
            answers(&node).await,
            before,
            "{failpoint}: answers after compaction"
        );

        // The inputs and any orphaned output are collected: one object per hour is left.
        wait_for(
            &format!("{failpoint}: leftovers collected"),
            RUN_DEADLINE,
            || async { (node.parquet_files() == HOURS.len()).then_some(()) },
        )
        .await;
        assert_eq!(
            answers(&node).await,
            before,
            "{failpoint}: answers after collection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_forward_compaction_requests_to_a_compactor() {
    let storage = tempfile::tempdir().unwrap();
    let ports = crate::cluster::free_udp_ports(2);
    let mut writer = TestNode::prepare_owned(member(
        storage.path(),
        "writer-1",
        "writer",
        ports[0],
        ports[0],
    ));
    writer.spawn().await;

    // No compactor yet: 503 with Retry-After, and a bad tier is still a 400.
    let (code, body, headers) = status_raw(&writer).await;
    assert_eq!(code, 503, "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(body.to_string().contains("no healthy compactor"), "{body}");
    assert_eq!(trigger(&writer, "tier=monthly").await.0, 400);

    let mut compactor = TestNode::prepare_owned(member(
        storage.path(),
        "compactor-1",
        "compactor",
        ports[1],
        ports[0],
    ));
    compactor.spawn().await;
    write_data(&writer).await;
    let before = answers(&writer).await;

    // Once gossip shows the compactor healthy, the writer forwards to it.
    let forwarded = wait_for(
        "the writer forwarding to the compactor",
        RUN_DEADLINE,
        || async {
            let (code, body, headers) = status_raw(&writer).await;
            (code == 200).then_some((body, headers))
        },
    )
    .await;
    assert_eq!(
        forwarded.0["data"]["node_id"], "compactor-1",
        "{}",
        forwarded.0
    );
    assert_eq!(forwarded.1["x-arc-served-by"], "compactor-1");

    let (code, body) = trigger(&writer, "tier=hourly").await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["data"]["node_id"], "compactor-1", "{body}");
    let done = wait_for("the compactor's run", RUN_DEADLINE, || async {
        let now = status(&compactor).await;
        (now["runs_completed"] == 1).then_some(now)
    })
    .await;
    assert_eq!(done["last_run"]["committed"], HOURS.len(), "{done}");
    assert_eq!(done["compactors"], serde_json::json!(["compactor-1"]));
    // The writer's own answers are unchanged (its snapshot may still name the inputs, which
    // stay in the store for the grace period).
    assert_eq!(answers(&writer).await, before);
    drop(compactor);
    drop(writer);
}

/// The variables of cluster member `id` (gossip on `port`, seeding `seed`) sharing `storage`,
/// with hours worth compacting from two objects on.
fn member(
    storage: &std::path::Path,
    id: &str,
    role: &'static str,
    port: u16,
    seed: u16,
) -> Vec<(String, String)> {
    let planned = crate::cluster::Member {
        id: id.to_string(),
        role,
        gossip_port: port,
    };
    let mut env = crate::cluster::member_env("compaction", &planned, &[seed], storage);
    env.push(("ARC_COMPACTION_HOURLY_MIN_FILES".into(), "2".into()));
    env
}

/// The healthy compactors in `node`'s gossip view, sorted: whom its scheduler splits with.
async fn healthy_compactors(node: &TestNode) -> Vec<String> {
    let response = node
        .client
        .get(node.url("/api/v1/cluster/nodes?role=compactor&state=healthy"))
        .send()
        .await
        .expect("cluster nodes");
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let mut ids: Vec<String> = body["data"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|node| node["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Two compactors share the partitions (table, UTC day) by a deterministic split: each hour is
/// compacted exactly once, by its owner. When one dies, the survivor takes its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_split_partitions_between_compactors_and_hand_them_over() {
    const DAYS: i64 = 6;
    const DAY: i64 = 86_400_000_000_000;
    let storage = tempfile::tempdir().unwrap();
    let ports = crate::cluster::free_udp_ports(3);
    let mut writer = TestNode::prepare_owned(member(
        storage.path(),
        "writer-1",
        "writer",
        ports[0],
        ports[0],
    ));
    writer.spawn().await;
    let mut first = TestNode::prepare_owned(member(
        storage.path(),
        "compactor-1",
        "compactor",
        ports[1],
        ports[0],
    ));
    first.spawn().await;
    let mut second = TestNode::prepare_owned(member(
        storage.path(),
        "compactor-2",
        "compactor",
        ports[2],
        ports[0],
    ));
    second.spawn().await;
    for compactor in [&first, &second] {
        wait_for("both compactors in each view", RUN_DEADLINE, || async {
            (healthy_compactors(compactor).await == ["compactor-1", "compactor-2"]).then_some(())
        })
        .await;
    }

    // Hours 10 and 11 of `days` closed days, three flushed objects each.
    let write_days = |days: std::ops::Range<i64>| {
        let writer = &writer;
        async move {
            for batch in 0..3 {
                let lines: String = days
                    .clone()
                    .flat_map(|day| {
                        [10, 11].map(|hour| {
                            let time = DAY_NS + day * DAY + hour * HOUR_NS + batch;
                            format!("split,host=h v={batch}i {time}\n")
                        })
                    })
                    .collect();
                writer.write_lp(DB, &lines).await;
                writer.flush().await;
            }
        }
    };
    let totals = "SELECT count(*), sum(v) FROM compact.split";
    write_days(0..DAYS).await;
    let before = writer.query(totals).await;

    let mut committed = Vec::new();
    for compactor in [&first, &second] {
        let done = run_compaction(compactor, "tier=hourly").await;
        committed.push(done["last_run"]["committed"].as_u64().unwrap_or(0));
    }
    // Every hour once, and both did some: the split is by partition, not all to one.
    assert_eq!(
        committed.iter().sum::<u64>(),
        2 * DAYS as u64,
        "{committed:?}"
    );
    assert!(committed.iter().all(|jobs| *jobs > 0), "{committed:?}");
    assert_eq!(writer.query(totals).await, before);

    // The second compactor dies: once the first sees it gone, it owns every partition.
    second.kill9();
    wait_for("the survivor alone in its view", RUN_DEADLINE, || async {
        (healthy_compactors(&first).await == ["compactor-1"]).then_some(())
    })
    .await;
    write_days(DAYS..2 * DAYS).await;
    let before = writer.query(totals).await;
    let done = run_compaction(&first, "tier=hourly").await;
    assert_eq!(done["last_run"]["committed"], 2 * DAYS, "{done}");
    assert_eq!(writer.query(totals).await, before);
}

/// The catalog as every reader reads it from the shared `storage` directory (local backend).
async fn open_catalog(storage: &std::path::Path) -> arc_storage::CatalogState {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(storage).expect("local store"),
    );
    let catalog = arc_storage::Catalog::open(store, arc_storage::CatalogSettings::default())
        .await
        .expect("opening the catalog");
    (*catalog.snapshot()).clone()
}

/// Checks that the catalog is whole: every live object of `compact.<table>` exists in
/// `storage`, and the live objects' rows add up to what a query counts (an output and its
/// inputs both live, or neither, would not). Returns the live keys.
async fn assert_catalog_whole(
    storage: &std::path::Path,
    node: &TestNode,
    table: &str,
) -> Vec<String> {
    let state = open_catalog(storage).await;
    let objects = &state
        .table(&arc_storage::TableId::new(DB, table))
        .expect("the table is in the catalog")
        .objects;
    for object in objects {
        assert!(
            storage.join(&object.path).is_file(),
            "live object {} is in the store",
            object.path
        );
    }
    let live_rows: u64 = objects.iter().map(|object| object.rows).sum();
    let counted = node
        .query(&format!("SELECT count(*) FROM {DB}.{table}"))
        .await;
    assert_eq!(
        Value::from(live_rows),
        counted[0][0],
        "live rows in the catalog: {objects:?}"
    );
    objects.iter().map(|object| object.path.clone()).collect()
}

/// The epoch the primary claimed, as `node` reports it.
async fn cluster_epoch(node: &TestNode) -> Option<u64> {
    let response = node
        .client
        .get(node.url("/api/v1/cluster"))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body["data"]["epoch"].as_u64()
}

/// A failover during a job: the compactor holds a merged, uploaded output just before its
/// commit while the writer restarts and promotes a new epoch (and flushes new rows into the
/// same hour under it). Released, the swap under the old epoch is refused without writing
/// anything, checked again against the state after the promote and committed under the new
/// epoch: never half-applied, every row once, the new epoch's object left for a later run
/// (the day's), which merges it from a fresh snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_void_and_redo_a_swap_when_a_new_epoch_is_promoted_mid_job() {
    let storage = tempfile::tempdir().unwrap();
    let pause_dir = tempfile::tempdir().unwrap();
    let release = pause_dir.path().join("release");
    let ports = crate::cluster::free_udp_ports(2);
    let mut writer = TestNode::prepare_owned(member(
        storage.path(),
        "writer-1",
        "writer",
        ports[0],
        ports[0],
    ));
    writer.spawn().await;
    let mut compactor_env = member(
        storage.path(),
        "compactor-1",
        "compactor",
        ports[1],
        ports[0],
    );
    compactor_env.push(("ARC_COMPACTION_DAILY_MIN_FILES".into(), "2".into()));
    compactor_env.push((
        "ARC_FAILPOINTS".into(),
        format!(
            "compact-after-upload-before-commit=pause:{}",
            release.display()
        ),
    ));
    let mut compactor = TestNode::prepare_owned(compactor_env);
    compactor.spawn().await;
    write_data(&writer).await;
    assert_eq!(cluster_epoch(&writer).await, Some(1));

    let (code, body) = trigger(&compactor, "tier=hourly").await;
    assert_eq!(code, 202, "{body}");
    wait_paused(&release, 1).await;
    let held = status(&compactor).await;
    let running = held["running_jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(running.len(), 1, "{held}");
    let held_job = running[0]["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        count_compacted(storage.path()),
        1,
        "the held job's output is uploaded, not committed"
    );

    let held_hour: i64 = held_job
        .split('/')
        .nth(2)
        .and_then(|start| start.parse().ok())
        .unwrap_or_else(|| panic!("a period start in the job id {held_job}"));

    // The failover: the writer dies and comes back as primary of epoch 2, then flushes new
    // rows into the held job's hour under it.
    writer.kill9();
    writer.spawn().await;
    wait_for("the writer primary at epoch 2", RUN_DEADLINE, || async {
        (cluster_epoch(&writer).await == Some(2)).then_some(())
    })
    .await;
    let late: String = HOSTS
        .iter()
        .map(|host| format!("cpu,host={host} usage=1.25,count=999i {}\n", held_hour + 7))
        .collect();
    writer.write_lp(DB, &late).await;
    writer.flush().await;
    let before = answers(&writer).await;
    assert_eq!(
        before[0][0][0],
        expected_rows() + HOSTS.len() as i64,
        "{:?}",
        before[0]
    );

    std::fs::write(&release, b"").unwrap();
    let done = wait_for("the held run to finish", RUN_DEADLINE, || async {
        let now = status(&compactor).await;
        (now["runs_completed"] == 1).then_some(now)
    })
    .await;
    assert_eq!(done["last_run"]["committed"], HOURS.len(), "{done}");
    assert_eq!(done["last_run"]["errors"], 0, "{done}");
    for job in last_jobs(&done, HOURS.len()) {
        assert_eq!(job["outcome"], "committed", "{job}");
        assert_eq!(
            job["epoch"], 2,
            "every swap lands under the new epoch: {job}"
        );
        let fenced = if job["job_id"] == held_job.as_str() {
            1
        } else {
            0
        };
        assert_eq!(job["fenced_commits"], fenced, "{job}");
    }
    assert_eq!(
        crate::cluster::metric_sum(&compactor, "arc_compact_swaps_fenced_total", "hourly").await,
        1.0
    );
    assert_eq!(answers(&writer).await, before, "answers after the swaps");

    // Nothing was written under the old epoch, and each swap is applied whole.
    let state = open_catalog(storage.path()).await;
    assert_eq!(state.epoch, 2);
    let log = storage.path().join("_catalog").join("log");
    let compacts: Vec<Value> = std::fs::read_dir(&log)
        .expect("the catalog log")
        .filter_map(Result::ok)
        .filter_map(|entry| serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok())
        .filter(|record: &Value| record["record"]["type"] == "compact")
        .collect();
    assert_eq!(compacts.len(), HOURS.len(), "{compacts:?}");
    assert!(
        compacts.iter().all(|record| record["epoch"] == 2),
        "{compacts:?}"
    );
    let live = assert_catalog_whole(storage.path(), &writer, "cpu").await;
    // The held hour: its output and the object the new epoch flushed; the others: one each.
    assert_eq!(live.len(), HOURS.len() + 1, "{live:?}");

    // A later run merges the new epoch's object too, from a fresh snapshot: the held hour has
    // one raw object (below hourly_min_files), so the day's merge takes it.
    let again = run_compaction(&compactor, "tier=daily").await;
    assert_eq!(again["last_run"]["committed"], 1, "{again}");
    let redo = &last_jobs(&again, 1)[0];
    assert_eq!(redo["files_in"], HOURS.len() + 1, "{redo}");
    assert_eq!(redo["epoch"], 2, "{redo}");
    assert_eq!(redo["fenced_commits"], 0, "{redo}");
    assert_eq!(answers(&writer).await, before, "answers after the redo");
    assert_eq!(
        assert_catalog_whole(storage.path(), &writer, "cpu")
            .await
            .len(),
        1
    );
}

/// Compacted objects (`compacted-*.parquet`) under `dir`, live or not.
fn count_compacted(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                count_compacted(&path)
            } else {
                usize::from(
                    path.file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with("compacted-")),
                )
            }
        })
        .sum()
}

/// Compaction end to end on an S3 API (the in-process s3s-fs server): a standalone node with a
/// user's default paths (WAL, query cache and `compaction.scratch_dir` under `./data` of its
/// working directory; nothing chosen by the test), hourly then daily, the same answers after each; the
/// replaced objects are deleted from the bucket by the garbage collector, leaving one object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_compact_on_s3_with_the_default_paths() {
    let s3_root = tempfile::tempdir().unwrap();
    let server = crate::s3::S3Server::start(s3_root.path()).await;
    let mut env = server.node_env();
    for (key, value) in compaction_env() {
        env.push((key.to_string(), value.to_string()));
    }
    env.extend(
        [
            // Defaults: an empty value is unset.
            ("ARC_WAL_DIRECTORY", ""),
            ("ARC_QUERY_CACHE_DIR", ""),
            ("ARC_COMPACTION_GC_GRACE", "1s"),
            ("ARC_COMPACTION_GC_INTERVAL", "500ms"),
        ]
        .map(|(key, value)| (key.to_string(), value.to_string())),
    );
    let mut node = TestNode::prepare_owned(env);
    node.spawn().await;
    write_data(&node).await;
    let bucket = s3_root.path().join(crate::s3::BUCKET);
    let table_dir = bucket.join(DB).join("cpu");
    assert_eq!(
        crate::harness::count_files(&table_dir, "parquet"),
        HOURS.len() * BATCHES as usize,
        "one object per hour and flush in the bucket"
    );
    let before = answers(&node).await;
    assert_eq!(before[0][0][0], expected_rows(), "{:?}", before[0]);

    let hourly = run_compaction(&node, "tier=hourly").await;
    assert_eq!(hourly["last_run"]["committed"], HOURS.len(), "{hourly}");
    assert_eq!(answers(&node).await, before, "answers after hourly on s3");
    let daily = run_compaction(&node, "tier=daily").await;
    assert_eq!(daily["last_run"]["committed"], 1, "{daily}");
    let job = &last_jobs(&daily, 1)[0];
    assert_eq!(job["rows_out"], expected_rows(), "{job}");
    let output = job["output"].as_str().expect("a daily output").to_string();
    assert!(
        bucket.join(&output).is_file(),
        "the daily object {output} is in the bucket"
    );
    assert_eq!(answers(&node).await, before, "answers after daily on s3");

    // The collector deletes the replaced objects through the S3 API.
    wait_for(
        "the bucket down to the daily object",
        RUN_DEADLINE,
        || async { (crate::harness::count_files(&table_dir, "parquet") == 1).then_some(()) },
    )
    .await;
    // Every raw object and every hourly one (the count is updated when the collector's round
    // ends, after its deletes).
    wait_for(
        "the collector to count its deletes",
        RUN_DEADLINE,
        || async {
            (status(&node).await["gc"]["objects_deleted"] == HOURS.len() as i64 * (BATCHES + 1))
                .then_some(())
        },
    )
    .await;
    // A restart reads the compacted catalog back from S3.
    let stopped = node.stop().await;
    assert!(stopped.success(), "{}", node.log());
    node.spawn().await;
    assert_eq!(answers(&node).await, before, "answers after a restart");
    let scratch = node.dir.join("data").join("compaction");
    assert!(scratch.is_dir(), "the default scratch directory was used");
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "no job left scratch files"
    );
    server.stop().await;
}

/// Bounded memory, measured: one hour several times larger than `compaction.memory_limit`
/// (16 MiB) is compacted by a compactor process whose peak RSS grows by less than
/// [`MERGE_RSS_BOUND`] over its peak before the job. The inputs' fixed-width columns alone
/// decode to nine times the limit (their Parquet is over three times it: the delta-encoded
/// `time` column takes a few bits a row), and the inputs overlap in
/// time (a true k-way merge). Measured: +44 MiB; the same job with the inputs read whole before
/// merging (a merge that is not streaming) raised it by 703 MiB (BENCHMARKS.md "Compaction").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_compact_a_partition_larger_than_the_memory_limit_within_it() {
    /// `compaction.memory_limit`.
    const LIMIT: u64 = 16 << 20;
    /// Flushed objects (inputs) and rows in each.
    const INPUTS: usize = 4;
    const ROWS_PER_INPUT: usize = 1_000_000;
    /// Rows per write request.
    const REQUEST_ROWS: usize = 100_000;
    let storage = tempfile::tempdir().unwrap();
    let ports = crate::cluster::free_udp_ports(2);
    let mut writer_env = member(storage.path(), "writer-1", "writer", ports[0], ports[0]);
    // One object per flush.
    writer_env.push(("ARC_INGEST_MAX_BUFFER_SIZE".into(), "2000000".into()));
    let mut writer = TestNode::prepare_owned(writer_env);
    writer.spawn().await;
    let mut compactor_env = member(
        storage.path(),
        "compactor-1",
        "compactor",
        ports[1],
        ports[0],
    );
    compactor_env.push(("ARC_COMPACTION_MEMORY_LIMIT".into(), "16MB".into()));
    let mut compactor = TestNode::prepare_owned(compactor_env);
    compactor.spawn().await;

    // Input `b` holds rows b, b + INPUTS, b + 2 INPUTS, ... of one hour: every input spans the
    // hour. Four random-looking floats per row (incompressible) and a host tag.
    let hour = DAY_NS + 10 * HOUR_NS;
    let step = HOUR_NS / (INPUTS * ROWS_PER_INPUT) as i64;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for input in 0..INPUTS {
        for chunk in 0..ROWS_PER_INPUT / REQUEST_ROWS {
            let mut lines = String::with_capacity(REQUEST_ROWS * 80);
            for k in 0..REQUEST_ROWS {
                let row = (chunk * REQUEST_ROWS + k) * INPUTS + input;
                let r = next();
                lines.push_str(&format!(
                    "big,host=h{} a={}.{},b={}.{},c={}.{},d={}.{} {}\n",
                    r % 100,
                    r % 1000,
                    (r >> 10) % 1000,
                    (r >> 20) % 1000,
                    (r >> 30) % 1000,
                    (r >> 40) % 1000,
                    (r >> 50) % 1000,
                    r >> 60,
                    (r >> 14) % 1000,
                    hour + row as i64 * step
                ));
            }
            writer.write_lp(DB, &lines).await;
        }
        writer.flush().await;
    }
    let rows = (INPUTS * ROWS_PER_INPUT) as i64;
    // Exact sums (decimals), whatever order the rows are added in.
    let totals = "SELECT count(*), sum(CAST(a AS DECIMAL(18, 3))), sum(CAST(d AS DECIMAL(18, 3))), \
                  min(time), max(time) FROM compact.big";
    let before = writer.query(totals).await;
    assert_eq!(before[0][0], rows);

    let pid = compactor.pid().expect("the compactor runs");
    let baseline = peak_rss(pid);
    let done = run_compaction(&compactor, "tier=hourly").await;
    let peak = peak_rss(pid);
    let job = &last_jobs(&done, 1)[0];
    assert_eq!(job["outcome"], "committed", "{done}");
    assert_eq!(job["files_in"], INPUTS, "{job}");
    assert_eq!(job["rows_out"], rows, "{job}");
    let bytes_in = job["bytes_in"].as_u64().unwrap_or(0);
    // Time and four floats: 40 bytes a row decoded, before the tag.
    let decoded_fixed = rows as u64 * 40;
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "memory: limit {} MiB, inputs {} MiB Parquet / {} MiB decoded (fixed-width columns), compactor VmHWM {} MiB before, {} MiB after (+{} MiB), job {} ms",
        LIMIT >> 20,
        bytes_in >> 20,
        decoded_fixed >> 20,
        baseline >> 20,
        peak >> 20,
        grown >> 20,
        job["elapsed_ms"]
    );
    assert!(
        bytes_in >= 3 * LIMIT && decoded_fixed >= 8 * LIMIT,
        "the partition is several times the limit: {bytes_in} bytes of Parquet, {decoded_fixed} decoded"
    );
    assert!(
        grown <= MERGE_RSS_BOUND,
        "the compactor's peak RSS grew by {} MiB merging {} MiB of Parquet with a {} MiB limit (bound {} MiB)",
        grown >> 20,
        bytes_in >> 20,
        LIMIT >> 20,
        MERGE_RSS_BOUND >> 20
    );
    assert_eq!(writer.query(totals).await, before);
}

/// How much a job may raise the compactor's peak RSS with a 16 MiB `compaction.memory_limit`:
/// the limit (decoders, batches, the output row group), the writer's ZSTD contexts, the upload
/// (16 MiB parts, two in flight: up to 48 MiB) and the allocator's slack.
const MERGE_RSS_BOUND: u64 = 64 << 20;
