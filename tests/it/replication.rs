//! WAL replication through the real binaries (issue 10): readers see acknowledged rows before
//! any flush and exactly once after it, every acknowledged write is on the in-sync standby's
//! disk, the in-sync set shrinks and grows through `isr` records, followers catch up, nothing
//! unacknowledged is ever shown, and read-your-writes holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Member, free_udp_ports, member_env, metric_sum, try_metric_sum};
use crate::harness::{LogsOnPanic, TestNode, signal, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);
const DB: &str = "repl";

/// The environment of a member, with extra variables.
fn env(
    cluster: &str,
    id: &str,
    role: &'static str,
    port: u16,
    seeds: &[u16],
    storage: &Path,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let member = Member {
        id: id.to_string(),
        role,
        gossip_port: port,
    };
    let mut env = member_env(cluster, &member, seeds, storage);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// A planned test cluster: shared storage and gossip ports; members are started one by one
/// (the first writer started wins the bootstrap).
struct Plan {
    name: String,
    storage: tempfile::TempDir,
    ports: Vec<u16>,
    next: usize,
    extra: Vec<(String, String)>,
}

impl Plan {
    fn new(name: &str, members: usize, extra: &[(&str, &str)]) -> Plan {
        Plan {
            name: format!("{name}-{}", rand::random::<u32>()),
            storage: tempfile::tempdir().unwrap(),
            ports: free_udp_ports(members),
            next: 0,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn prepare(&mut self, id: &str, role: &'static str, extra: &[(&str, &str)]) -> TestNode {
        let port = self.ports[self.next];
        self.next += 1;
        let mut all: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(extra);
        TestNode::prepare_owned(env(
            &self.name,
            id,
            role,
            port,
            &self.ports[..1],
            self.storage.path(),
            &all,
        ))
    }

    async fn start(&mut self, id: &str, role: &'static str, extra: &[(&str, &str)]) -> TestNode {
        let mut node = self.prepare(id, role, extra);
        node.spawn().await;
        node
    }

    /// Waits until the catalog's latest `isr` record names exactly `members` in sync.
    async fn wait_isr(&self, what: &str, members: &[&str]) {
        wait_for(what, DEADLINE, || async {
            let records = self.records("isr");
            (records.last()?["record"]["in_sync"] == serde_json::json!(members)).then_some(())
        })
        .await;
    }

    /// The catalog's log records of `kind` so far.
    fn records(&self, kind: &str) -> Vec<Value> {
        let dir = self.storage.path().join("_catalog").join("log");
        let mut records: Vec<(u64, Value)> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| {
                        let path = entry.ok()?.path();
                        let seq = path.file_stem()?.to_str()?.parse().ok()?;
                        let record: Value =
                            serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
                        (record["record"]["type"] == kind).then_some((seq, record))
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.sort_by_key(|(seq, _)| *seq);
        records.into_iter().map(|(_, record)| record).collect()
    }
}

/// What a 204 said.
#[derive(Debug, Clone)]
struct Ack {
    lsn: u64,
    durability: String,
}

/// Writes one row `id` to table `t`; returns the acknowledgement, or the status of a refusal.
async fn write_row(node: &TestNode, table: &str, id: u64) -> Result<Ack, (u16, String)> {
    let body = format!(
        "{table},src=t id={id}i {}\n",
        1_785_542_400_000_000_000u64 + id
    );
    let response = node
        .client
        .post(node.url("/api/v1/write/line-protocol"))
        .header("x-arc-database", DB)
        .body(body)
        .send()
        .await
        .map_err(|error| (0, error.to_string()))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    if status != 204 {
        let retry_after = header("retry-after");
        let text = response.text().await.unwrap_or_default();
        return Err((status, format!("{text} (retry-after: {retry_after:?})")));
    }
    Ok(Ack {
        lsn: header("x-arc-lsn")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        durability: header("x-arc-durability").unwrap_or_default(),
    })
}

/// The ids of table `t` a node returns (all of them, duplicates kept).
async fn ids(node: &TestNode, table: &str, min_lsn: Option<u64>) -> Result<Vec<u64>, String> {
    let mut request = node
        .client
        .post(node.url("/api/v1/query"))
        .header("x-arc-database", DB)
        .json(&serde_json::json!({ "sql": format!("SELECT id FROM {table} ORDER BY id") }));
    if let Some(lsn) = min_lsn {
        request = request.header("x-arc-min-lsn", lsn.to_string());
    }
    let response = request.send().await.map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == 404 || body.to_string().contains("does not exist") {
        return Ok(Vec::new());
    }
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    Ok(body["data"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|row| row[0].as_u64()).collect())
        .unwrap_or_default())
}

/// Waits until a write to `primary` is acknowledged as `replicated:1` (the standby joined the
/// in-sync set); returns its id counter after.
async fn wait_replicated(primary: &TestNode, table: &str, next_id: &mut u64) {
    wait_for("a write acknowledged as replicated:1", DEADLINE, || {
        *next_id += 1;
        let id = *next_id;
        async move {
            match write_row(primary, table, id).await {
                Ok(ack) if ack.durability == "replicated:1" => Some(()),
                _ => None,
            }
        }
    })
    .await;
}

/// Runs `clients` concurrent writers of fresh ids against `node` until `stop` is set; returns
/// every acknowledgement by id.
fn load(
    node: &TestNode,
    table: &'static str,
    clients: u64,
    first_id: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<u64, Ack>> {
    let client = node.client.clone();
    let url = node.url("/api/v1/write/line-protocol");
    tokio::spawn(async move {
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let (client, url, acked, stop) =
                (client.clone(), url.clone(), acked.clone(), stop.clone());
            tasks.spawn(async move {
                let mut id = first_id + c * 1_000_000;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    id += 1;
                    let body = format!(
                        "{table},src=t id={id}i {}\n",
                        1_785_542_400_000_000_000u64 + id
                    );
                    let Ok(response) = client
                        .post(&url)
                        .header("x-arc-database", DB)
                        .body(body)
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await
                    else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    if response.status() == 204 {
                        let get = |name: &str| {
                            response
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        let ack = Ack {
                            lsn: get("x-arc-lsn").parse().unwrap_or(0),
                            durability: get("x-arc-durability"),
                        };
                        acked.lock().unwrap().insert(id, ack);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        std::mem::take(&mut *acked.lock().unwrap())
    })
}

fn parquet_files(storage: &Path) -> usize {
    crate::harness::count_files(storage, "parquet")
}

/// Fresh reads: 1 primary, 1 standby, 2 readers. Under load every acknowledged row is
/// returned by each reader before any flush; after the flush each returns every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_readers_see_acknowledged_rows_before_the_flush_and_exactly_once_after() {
    let mut plan = Plan::new("fresh", 4, &[]);
    let primary = plan.start("w1", "writer", &[]).await;
    let standby = plan.start("w2", "writer", &[]).await;
    let readers = [
        plan.start("r1", "reader", &[]).await,
        plan.start("r2", "reader", &[]).await,
    ];
    let mut next = 0;
    wait_replicated(&primary, "fresh", &mut next).await;
    // Each follower's `/health` says which primary it hears and how long ago it last did (a
    // standby about to take over asks); the primary's says nothing of the kind.
    for follower in readers.iter().chain([&standby]) {
        wait_for("a follower to say it hears w1", DEADLINE, || async {
            let response = follower
                .client
                .get(follower.url("/health"))
                .send()
                .await
                .ok()?;
            let header = |name| {
                response
                    .headers()
                    .get(name)?
                    .to_str()
                    .ok()
                    .map(String::from)
            };
            let heard_ms: u64 = header("x-arc-primary-heard-ms")?.parse().ok()?;
            (header("x-arc-primary")? == "w1" && heard_ms < 2_000).then_some(())
        })
        .await;
    }
    let response = primary
        .client
        .get(primary.url("/health"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("x-arc-primary").is_none());
    assert!(response.headers().get("x-arc-primary-heard-ms").is_none());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = load(&primary, "fresh", 4, 10_000_000, stop.clone());
    // Queries on the readers while the load runs: each answer holds only acknowledged ids
    // (checked below against the final set) and never loses rows it showed before.
    let mut seen_max = [0usize; 2];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        for (i, reader) in readers.iter().enumerate() {
            let rows = ids(reader, "fresh", None).await.expect("reader query");
            assert!(rows.len() >= seen_max[i], "reader {i} lost rows");
            seen_max[i] = rows.len();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writers.await.unwrap();
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    assert!(
        acked.values().all(|ack| ack.durability == "replicated:1"),
        "every write waited for the in-sync standby: {:?}",
        acked.values().find(|ack| ack.durability != "replicated:1")
    );
    let max_lsn = acked.values().map(|ack| ack.lsn).max().unwrap();
    let mut expected: BTreeSet<u64> = acked.keys().copied().collect();
    expected.extend(1..=next);
    assert_eq!(parquet_files(plan.storage.path()), 0, "nothing flushed yet");
    for reader in &readers {
        let rows = ids(reader, "fresh", Some(max_lsn))
            .await
            .expect("reader query");
        let got: BTreeSet<u64> = rows.iter().copied().collect();
        assert_eq!(rows.len(), got.len(), "duplicates before the flush");
        let missing: Vec<_> = expected.difference(&got).take(5).collect();
        assert!(
            missing.is_empty(),
            "acknowledged rows missing before the flush: {missing:?}"
        );
        assert!(
            got.is_subset(&expected),
            "a reader returned an unacknowledged id"
        );
    }
    assert_eq!(
        parquet_files(plan.storage.path()),
        0,
        "still nothing flushed"
    );

    primary.flush().await;
    assert!(parquet_files(plan.storage.path()) > 0);
    for reader in &readers {
        // Every row exactly once, whether the reader has switched to the Parquet objects yet
        // or not; wait until it has dropped its buffered copy.
        wait_for("the reader to drop the flushed rows", DEADLINE, || async {
            let rows = ids(reader, "fresh", None).await.expect("reader query");
            let got: BTreeSet<u64> = rows.iter().copied().collect();
            assert_eq!(
                rows.len(),
                got.len(),
                "a row returned twice across the flush"
            );
            assert_eq!(got, expected, "rows missing across the flush");
            let buffered = metric_sum(reader, "arc_buffer_rows", "").await;
            (buffered == 0.0).then_some(())
        })
        .await;
    }
    drop(standby);
}

/// Zero loss at the standby: kill -9 the primary under load, then the standby, and its WAL
/// holds every LSN acknowledged as `replicated:1`. The standby is frozen (SIGSTOP) for the
/// last stretch before the kills, while the primary keeps appending: a primary that
/// acknowledged without the standby's fsync would answer `replicated:1` for entries the
/// standby never wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_every_write_acknowledged_as_replicated_is_in_the_standby_wal() {
    // The frozen standby stays in the in-sync set: writes wait for it.
    let mut plan = Plan::new(
        "zeroloss",
        2,
        &[("ARC_CLUSTER_REPLICATION_LAG_LIMIT", "10m")],
    );
    let mut primary = plan.start("w1", "writer", &[]).await;
    let mut standby = plan.start("w2", "writer", &[]).await;
    let mut next = 0;
    wait_replicated(&primary, "zl", &mut next).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = load(&primary, "zl", 8, 10_000_000, stop.clone());
    wait_for("load acknowledged", DEADLINE, || async {
        (metric_sum(&primary, "arc_ingest_rows_total", "").await > 300.0).then_some(())
    })
    .await;
    let appended = || try_metric_sum(&primary, "arc_wal_appends_total", "");
    signal(standby.pid().unwrap(), "STOP");
    let before = appended().await.unwrap();
    // Each client has one write in flight, which the primary appends and then holds.
    wait_for(
        "the primary to append past the frozen standby",
        DEADLINE,
        || async { (appended().await? >= before + 4.0).then_some(()) },
    )
    .await;
    primary.kill9();
    // The standby dies frozen: its WAL holds exactly what it had fsynced (and acknowledged)
    // before the freeze, not what was still on its way.
    standby.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writers.await.unwrap();
    let replicated: BTreeSet<u64> = acked
        .values()
        .filter(|ack| ack.durability == "replicated:1")
        .map(|ack| ack.lsn)
        .collect();
    assert!(
        replicated.len() > 300,
        "{} replicated acks",
        replicated.len()
    );

    let dump = std::process::Command::new(env!("CARGO_BIN_EXE_arc-node"))
        .args(["wal", "dump", "--json", "--entries", "--dir"])
        .arg(standby.dir.join("wal"))
        .output()
        .expect("running wal dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump: Value = serde_json::from_slice(&dump.stdout).expect("dump json");
    let held: BTreeSet<u64> = dump["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["lsn"].as_u64())
        .collect();
    let missing: Vec<_> = replicated.difference(&held).take(10).collect();
    assert!(
        missing.is_empty(),
        "acknowledged as replicated:1 but missing from the standby's wal: {missing:?} (it holds {} entries)",
        held.len()
    );
}

/// ISR: a standby stopped (SIGSTOP) is removed by an `isr` record within the lag limit plus a
/// bound and writes go on as `local`; resumed, it catches up and is added back. With
/// `replication_ack = 1` and no standby in sync, writes get 503 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_stalled_standby_leaves_the_isr_and_comes_back() {
    let lag_limit = Duration::from_secs(1);
    let mut plan = Plan::new("isr", 2, &[("ARC_CLUSTER_REPLICATION_LAG_LIMIT", "1s")]);
    let primary = plan.start("w1", "writer", &[]).await;
    let standby = plan.start("w2", "writer", &[]).await;
    let mut next = 0;
    wait_replicated(&primary, "isr", &mut next).await;
    assert_eq!(
        plan.records("isr").last().unwrap()["record"]["in_sync"],
        serde_json::json!(["w1", "w2"])
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = load(&primary, "isr", 2, 10_000_000, stop.clone());
    let pid = standby.pid().unwrap();
    let stopped_at = Instant::now();
    signal(pid, "STOP");
    plan.wait_isr("an isr record removing the stopped standby", &["w1"])
        .await;
    let removed_after = stopped_at.elapsed();
    assert!(
        removed_after < lag_limit + Duration::from_secs(5),
        "removed after {removed_after:?}"
    );
    // Writes go on without it, as `local`.
    wait_for("a write acknowledged as local", DEADLINE, || {
        next += 1;
        let id = next;
        let primary = &primary;
        async move {
            match write_row(primary, "isr", id).await {
                Ok(ack) if ack.durability == "local" => Some(()),
                _ => None,
            }
        }
    })
    .await;
    signal(pid, "CONT");
    plan.wait_isr("an isr record adding the standby back", &["w1", "w2"])
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writers.await.unwrap();
    assert!(acked.values().any(|ack| ack.durability == "local"));
    wait_replicated(&primary, "isr", &mut next).await;
    assert!(metric_sum(&primary, "arc_replication_isr_changes_total", "remove").await >= 1.0);
    assert!(metric_sum(&primary, "arc_replication_isr_changes_total", "add").await >= 2.0);
}

/// A standby frozen (SIGSTOP) while another keeps up is removed as outpaced, well before both
/// the lag limit and the connection's idle timeout (5 s each by default; the old path stalled
/// every write for those 5 s): the primary's packets evidently get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_frozen_standby_is_removed_sooner_while_another_keeps_up() {
    let mut plan = Plan::new("outpaced", 3, &[]);
    let primary = plan.start("w1", "writer", &[]).await;
    let _standby = plan.start("w2", "writer", &[]).await;
    let frozen = plan.start("w3", "writer", &[]).await;
    let _logs = LogsOnPanic::new([("w1", &primary), ("w3", &frozen)]);
    plan.wait_isr("both standbys in sync", &["w1", "w2", "w3"])
        .await;

    // w3 confirms writes before it freezes (one that confirmed nothing is no candidate).
    let ack = write_row(&primary, "outpaced", 1_000).await.unwrap();
    assert_eq!(ack.durability, "replicated:2");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = load(&primary, "outpaced", 2, 10_000_000, stop.clone());
    let pid = frozen.pid().unwrap();
    let frozen_at = Instant::now();
    signal(pid, "STOP");
    plan.wait_isr("an isr record removing the frozen standby", &["w1", "w2"])
        .await;
    eprintln!("removed {:?} after the freeze", frozen_at.elapsed());
    let removals = |log: String| -> Vec<String> {
        log.lines()
            .filter(|line| line.contains("isr record committed") && line.contains("Remove"))
            .map(str::to_owned)
            .collect()
    };
    // The log line follows the commit.
    let removal = wait_for("the removal logged", DEADLINE, || async {
        let removal = removals(primary.log());
        (!removal.is_empty()).then_some(removal)
    })
    .await;
    assert!(
        removal
            .first()
            .is_some_and(|line| line.contains("Outpaced")),
        "w3 was not removed as outpaced: {removal:?}"
    );
    // Still connected after its removal (until the idle timeout), and holding every
    // acknowledgement (they waited for it), it is not admitted again while frozen: writes go
    // on, replicated to w2 alone.
    for id in 1..=100 {
        let ack = write_row(&primary, "outpaced", id).await.unwrap();
        assert_eq!(ack.durability, "replicated:1", "write {id}");
    }
    let removal = removals(primary.log());
    assert_eq!(removal.len(), 1, "{removal:#?}");
    signal(pid, "CONT");
    plan.wait_isr("an isr record adding the standby back", &["w1", "w2", "w3"])
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writers.await.unwrap();
}

/// With `replication_ack = 1` and no standby in sync, writes get 503 with `Retry-After`; once
/// a standby has caught up they are taken, as `replicated:1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_writes_wait_for_the_required_in_sync_standby() {
    let mut plan = Plan::new("ack1", 2, &[("ARC_CLUSTER_REPLICATION_ACK", "1")]);
    let primary = plan.start("w1", "writer", &[]).await;
    let refused = write_row(&primary, "ack", 1).await.unwrap_err();
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(
        refused.1.contains("replication_ack") && refused.1.contains("retry-after: Some"),
        "{refused:?}"
    );
    let _standby = plan.start("w2", "writer", &[]).await;
    let mut next = 1;
    wait_replicated(&primary, "ack", &mut next).await;
}

/// Catch-up: a reader restarted after the primary deleted the WAL segments it would need
/// returns every row exactly once; a standby started empty catches up and joins the ISR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_followers_started_late_catch_up_from_the_catalog_and_the_kept_wal() {
    // Small segments, so flushes let the primary delete most of its WAL.
    let mut plan = Plan::new("catchup", 3, &[("ARC_WAL_MAX_SIZE_MB", "1")]);
    let primary = plan.start("w1", "writer", &[]).await;
    let mut reader = plan.start("r1", "reader", &[]).await;
    let mut expected = BTreeSet::new();
    let round_trip = |round: u64, expected: &mut BTreeSet<u64>| -> String {
        (0..2000u64)
            .map(|i| {
                let id = round * 100_000 + i;
                expected.insert(id);
                format!(
                    "cu,src=t id={id}i,pad=\"{}\" {}\n",
                    "x".repeat(200),
                    1_785_542_400_000_000_000u64 + id
                )
            })
            .collect()
    };
    primary.write_lp(DB, &round_trip(0, &mut expected)).await;
    let lsn = write_row(&primary, "cu_probe", 1).await.unwrap().lsn;
    assert_eq!(ids(&reader, "cu_probe", Some(lsn)).await.unwrap(), [1]);
    assert!(reader.stop().await.success());
    let oldest_segment = |node: &TestNode| {
        let mut names: Vec<String> = std::fs::read_dir(node.dir.join("wal"))
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".wal"))
            .collect();
        names.sort();
        names.first().cloned().unwrap_or_default()
    };
    let first_segment = oldest_segment(&primary);
    // While the reader is down, the primary flushes and deletes the WAL segments it would
    // have streamed from.
    for round in 1..6u64 {
        primary
            .write_lp(DB, &round_trip(round, &mut expected))
            .await;
        if round % 2 == 1 {
            primary.flush().await;
        }
    }
    wait_for(
        "the primary to delete its oldest wal segments",
        DEADLINE,
        || async { (oldest_segment(&primary) != first_segment).then_some(()) },
    )
    .await;
    // And rows that only the stream has.
    primary.write_lp(DB, &round_trip(6, &mut expected)).await;
    reader.spawn().await;
    let rows = ids(&reader, "cu", None).await.unwrap();
    let got: BTreeSet<u64> = rows.iter().copied().collect();
    assert_eq!(rows.len(), got.len(), "duplicates after catch-up");
    let missing: Vec<_> = expected.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} rows missing after catch-up, from {:?}; log:\n{}",
        missing.len(),
        missing.first(),
        reader.log()
    );
    assert_eq!(got, expected, "rows returned that were never written");
    assert!(
        reader.log().contains("no longer keeps older entries"),
        "the restarted reader skipped to the primary's oldest kept entry; log:\n{}",
        reader.log()
    );

    let standby = plan.start("w2", "writer", &[]).await;
    let mut next = 100_000_000;
    wait_replicated(&primary, "cu2", &mut next).await;
    let rows = ids(&standby, "cu", None).await.unwrap();
    assert_eq!(rows.len(), expected.len());
    // The standby deletes the segments of its WAL that the primary's flushes cover.
    let standby_first = oldest_segment(&standby);
    for round in 7..10u64 {
        primary
            .write_lp(DB, &round_trip(round, &mut expected))
            .await;
        primary.flush().await;
    }
    wait_for(
        "the standby to delete flushed wal segments",
        DEADLINE,
        || async { (oldest_segment(&standby) != standby_first).then_some(()) },
    )
    .await;
    // The cluster API shows it in sync, with its lag.
    let (status, nodes) = get_json(&primary, "/api/v1/cluster/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    let w2 = nodes["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["id"] == "w2")
        .cloned()
        .unwrap();
    assert_eq!(w2["in_sync"], true, "{w2}");
    assert!(w2["lag"]["lsns"].is_u64(), "{w2}");
    assert!(w2["lag"]["seconds"].is_number(), "{w2}");
}

async fn get_json(node: &TestNode, path: &str) -> (u16, Value) {
    let response = node.client.get(node.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Security through the binary: a peer with the wrong secret, or replaying a proof captured
/// from another connection, is refused before it sees a WAL byte, counted, and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_primary_refuses_peers_without_the_secret() {
    use arc_wal::replication::testkit::RawConnection;
    use arc_wal::replication::{FollowerRole, Frame, ReplicationSettings, Subscribe};
    let mut plan = Plan::new("security", 1, &[]);
    let primary = plan.start("w1", "writer", &[]).await;
    for id in 1..=5 {
        write_row(&primary, "sec", id).await.unwrap();
    }
    let (_, local) = get_json(&primary, "/api/v1/cluster/local").await;
    let addr: std::net::SocketAddr = local["data"]["replication_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let subscribe = Subscribe {
        node_id: "intruder".into(),
        role: FollowerRole::Reader,
        known_epoch: arc_wal::Epoch(0),
        from_lsn: arc_wal::Lsn(1),
    };
    // The right secret: the primary proves itself back (the proof to replay).
    let member = ReplicationSettings::new(
        "r9",
        Some(arc_wal::replication::SharedSecret::new(
            crate::cluster::SECRET,
        )),
    );
    let mut honest = RawConnection::connect(&member, addr, "localhost")
        .await
        .unwrap();
    let captured = honest.own_proof().unwrap();
    honest
        .send(&Frame::Hello { proof: captured })
        .await
        .unwrap();
    let reply = tokio::time::timeout(DEADLINE, honest.read_frame())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(reply, Frame::Hello { proof: Some(_) }),
        "{reply:?}"
    );
    honest.close().await;
    // The wrong secret, and the captured proof on a new connection.
    let intruder = ReplicationSettings::new(
        "intruder",
        Some(arc_wal::replication::SharedSecret::new(
            "not the cluster secret",
        )),
    );
    for proof in [None, Some(captured)] {
        let mut raw = RawConnection::connect(&intruder, addr, "localhost")
            .await
            .unwrap();
        let proof = match proof {
            None => raw.own_proof().unwrap(),
            Some(captured) => captured,
        };
        // The primary may close the connection as soon as the proof fails, so a send can
        // fail: what matters is that nothing of the WAL comes back.
        let _ = raw.send(&Frame::Hello { proof }).await;
        let _ = raw.send(&Frame::Subscribe(subscribe.clone())).await;
        let received = raw.read_all(Duration::from_secs(5)).await;
        assert!(
            received.is_empty(),
            "an intruder got {} bytes",
            received.len()
        );
        raw.close().await;
    }
    wait_for("both refusals counted", DEADLINE, || async {
        let refused =
            try_metric_sum(&primary, "arc_replication_rejected_total", "bad_proof").await?;
        (refused >= 2.0).then_some(())
    })
    .await;
    let log = primary.log();
    assert!(
        log.lines()
            .any(|line| line.contains("replication peer refused") && line.contains("bad_proof")),
        "the refusal is logged with its reason and peer address"
    );
}

/// A reader never shows a row the primary did not acknowledge: with the in-sync standby
/// stopped, a write is durable on the primary and streamed to the reader but not
/// acknowledged; the reader does not show it, also after the primary is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_reader_never_shows_an_unacknowledged_row() {
    // A lag limit far beyond the test: the stopped standby stays in the ISR, so nothing
    // written after it stopped is acknowledged.
    let mut plan = Plan::new(
        "unacked",
        3,
        &[("ARC_CLUSTER_REPLICATION_LAG_LIMIT", "10m")],
    );
    let mut primary = plan.start("w1", "writer", &[]).await;
    let standby = plan.start("w2", "writer", &[]).await;
    let reader = plan.start("r1", "reader", &[]).await;
    let mut next = 0;
    wait_replicated(&primary, "ua", &mut next).await;
    let acked_lsn = write_row(&primary, "ua", 500).await.unwrap().lsn;
    assert_eq!(
        ids(&reader, "ua", Some(acked_lsn)).await.unwrap().last(),
        Some(&500)
    );

    let pid = standby.pid().unwrap();
    signal(pid, "STOP");
    let client = primary.client.clone();
    let url = primary.url("/api/v1/write/line-protocol");
    let pending = tokio::spawn(async move {
        client
            .post(url)
            .header("x-arc-database", DB)
            .body(format!(
                "ua,src=t id=999i {}\n",
                1_785_542_400_000_000_999u64
            ))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map(|response| response.status().as_u16())
    });
    // The entry reaches the reader (it is past the primary's sync), but is never visible.
    wait_for(
        "the reader to receive the unacknowledged entry",
        DEADLINE,
        || async {
            let received = try_metric_sum(&reader, "arc_replication_received_lsn", "").await?;
            (received as u64 > acked_lsn).then_some(())
        },
    )
    .await;
    for _ in 0..20 {
        let rows = ids(&reader, "ua", None).await.unwrap();
        assert!(
            !rows.contains(&999),
            "the reader showed an unacknowledged row"
        );
    }
    primary.kill9();
    let _ = pending.await;
    signal(pid, "CONT");
    for _ in 0..20 {
        let rows = ids(&reader, "ua", None).await.unwrap();
        assert!(
            !rows.contains(&999),
            "the reader showed an unacknowledged row"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A follower answers `/ready` with 503 until it has caught up with the primary once: here
/// the primary is frozen (SIGSTOP) while a reader starts, so the reader cannot catch up; once
/// the primary runs again the reader catches up and becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_reader_is_not_ready_until_it_has_caught_up() {
    // A slow heartbeat: the reader's failure detector needs long to call the frozen primary
    // dead (after which a follower stops waiting for it), far longer than this test looks.
    let mut plan = Plan::new("ready", 2, &[("ARC_CLUSTER_HEARTBEAT_INTERVAL", "2s")]);
    let primary = plan.start("w1", "writer", &[]).await;
    let lsn = write_row(&primary, "rd", 1).await.unwrap().lsn;
    signal(primary.pid().unwrap(), "STOP");
    let mut reader = plan.prepare("r1", "reader", &[]);
    reader.spawn_only();
    let port_file = reader.dir.join("port");
    let addr = wait_for("the reader's port file", DEADLINE, || async {
        std::fs::read_to_string(&port_file)
            .ok()?
            .trim()
            .parse::<std::net::SocketAddr>()
            .ok()
    })
    .await;
    let ready = format!("http://{addr}/ready");
    let (status, body) = wait_for("the reader's /ready to answer", DEADLINE, || async {
        let response = reqwest::get(&ready).await.ok()?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        // Past its own start-up (which answers 503 too, for another reason).
        (status == 200 || body.contains("catching up")).then_some((status, body))
    })
    .await;
    signal(primary.pid().unwrap(), "CONT");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("catching up"), "{body}");
    reader.wait_ready().await;
    assert_eq!(ids(&reader, "rd", Some(lsn)).await.unwrap(), [1]);
}

/// Read-your-writes: a write's `x-arc-lsn` used as `x-arc-min-lsn` on a reader always finds
/// the row, under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_read_your_writes_with_min_lsn() {
    let mut plan = Plan::new("ryw", 3, &[]);
    // The only test on the default `cluster.replication_addr` (`:9100`, every interface; the
    // others take any free port so that clusters can run side by side): what a new user runs.
    let primary = plan
        .start("w1", "writer", &[("ARC_CLUSTER_REPLICATION_ADDR", "")])
        .await;
    let (_, local) = get_json(&primary, "/api/v1/cluster/local").await;
    assert!(
        local["data"]["replication_address"]
            .as_str()
            .is_some_and(|addr| addr.ends_with(":9100")),
        "{local}"
    );
    let reader = plan.start("r1", "reader", &[]).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = load(&primary, "ryw_bg", 2, 10_000_000, stop.clone());
    for id in 1..=200u64 {
        let ack = write_row(&primary, "ryw", id).await.unwrap();
        let rows = ids(&reader, "ryw", Some(ack.lsn)).await.unwrap();
        assert!(
            rows.contains(&id),
            "row {id} (lsn {}) not found with x-arc-min-lsn",
            ack.lsn
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    background.await.unwrap();
    // A bound that cannot be met: 504 naming the applied LSN.
    let response = reader
        .client
        .post(reader.url("/api/v1/query"))
        .header("x-arc-min-lsn", "999999999")
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert!(response.headers().contains_key("x-arc-applied-lsn"));
    let text = response.text().await.unwrap();
    assert!(text.contains("up to lsn"), "{text}");
}

/// A reader frozen (SIGSTOP) while the primary commits more than three checkpoint intervals of
/// flushes finds, once thawed, that the records after its catalog state were truncated: its
/// next slot is empty, which must not read as the end of the log. It catches up from a newer
/// checkpoint, and shows every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_reader_frozen_past_the_log_truncation_catches_up_from_a_checkpoint() {
    // Writes flushed as they come; the default checkpoint interval (100) truncates the log
    // behind the third checkpoint.
    let mut plan = Plan::new(
        "truncated",
        2,
        &[
            ("ARC_INGEST_MAX_BUFFER_SIZE", "1"),
            ("ARC_CLUSTER_HEARTBEAT_INTERVAL", "2s"),
        ],
    );
    let primary = plan.start("w1", "writer", &[]).await;
    let reader = plan.start("r1", "reader", &[]).await;
    let first = write_row(&primary, "tr", 0).await.unwrap();
    assert_eq!(ids(&reader, "tr", Some(first.lsn)).await.unwrap(), [0]);
    let frozen_at = metric_sum(&reader, "arc_catalog_seq", "").await as u64;

    signal(reader.pid().unwrap(), "STOP");
    let next_slot = plan
        .storage
        .path()
        .join(format!("_catalog/log/{:020}.json", frozen_at + 1));
    // Small writes are merged into fewer flushes than writes: write until it happens.
    let mut written = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    // The slot is filled first (the primary's seq passes it), then deleted.
    while next_slot.exists()
        || metric_sum(&primary, "arc_catalog_seq", "").await as u64 <= frozen_at + 1
    {
        assert!(
            Instant::now() < deadline,
            "the reader's next record still there after {written} writes"
        );
        written += 1;
        write_row(&primary, "tr", written).await.unwrap();
    }
    let head = metric_sum(&primary, "arc_catalog_seq", "").await as u64;
    signal(reader.pid().unwrap(), "CONT");

    wait_for("the reader's catalog caught up", DEADLINE, || async {
        let seq = try_metric_sum(&reader, "arc_catalog_seq", "").await? as u64;
        (seq >= head).then_some(())
    })
    .await;
    assert!(metric_sum(&reader, "arc_catalog_catch_ups_total", "").await >= 1.0);
    let expected: Vec<u64> = (0..=written).collect();
    assert_eq!(ids(&reader, "tr", None).await.unwrap(), expected);
}
