//! Writer failover through the real binaries (issue 11): the primary killed with kill -9 under
//! load is replaced by an in-sync standby in seconds; no acknowledged write is lost or stored
//! twice; each epoch has one node that acknowledged writes; the killed node restarts as a
//! standby (its unacknowledged tail set aside) and rejoins the in-sync set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Member, free_udp_ports, member_env, metric_sum};
use crate::harness::{LogsOnPanic, TestNode, signal, wait_for};

const DB: &str = "failover";
const DEADLINE: Duration = Duration::from_secs(60);

/// One acknowledged write: its epoch and the node that answered it.
#[derive(Debug, Clone)]
struct Ack {
    epoch: u64,
    /// The write's LSN (`x-arc-lsn`): the final check reads with it as `x-arc-min-lsn`.
    lsn: u64,
    /// When the client had the answer.
    at: Instant,
    served_by: String,
}

/// Writers of fresh ids through `entry` (a reader, which forwards to whoever is primary), each
/// id sent once (no retry: an ambiguous answer must not become a duplicate), until `stop`.
/// Client `c` of `clients` writes ids from `c * 10_000_000`. An answer without
/// `x-arc-served-by` (not forwarded) was served by `entry`, whose node id is `entry_id`.
fn load(
    (entry, entry_id): (&TestNode, &str),
    clients: std::ops::Range<u64>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u64, Ack>>>,
) -> tokio::task::JoinHandle<()> {
    let client = entry.client.clone();
    let entry_id = entry_id.to_string();
    let url = entry.url("/api/v1/write/line-protocol");
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for c in clients {
            let (client, url, stop, acked, entry_id) = (
                client.clone(),
                url.clone(),
                stop.clone(),
                acked.clone(),
                entry_id.clone(),
            );
            tasks.spawn(async move {
                let mut id = c * 10_000_000;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let body = format!("fo,c={c} id={id}i {}\n", 1_785_542_400_000_000_000u64 + id);
                    let sent = client
                        .post(&url)
                        .header("x-arc-database", DB)
                        .body(body)
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 204 => {
                            let header = |name: &str| {
                                response
                                    .headers()
                                    .get(name)
                                    .and_then(|value| value.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string()
                            };
                            let ack = Ack {
                                epoch: header("x-arc-epoch").parse().unwrap_or(0),
                                lsn: header("x-arc-lsn").parse().unwrap_or(0),
                                at: Instant::now(),
                                served_by: Some(header("x-arc-served-by"))
                                    .filter(|served_by| !served_by.is_empty())
                                    .unwrap_or_else(|| entry_id.clone()),
                            };
                            acked.lock().unwrap().insert(id, ack);
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// Clients writing fresh ids (see [`load`]) and every write they had acknowledged.
#[derive(Default)]
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u64, Ack>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Adds clients `clients` writing through `entry` (node and node id).
    fn through(&mut self, entry: (&TestNode, &str), clients: std::ops::Range<u64>) {
        let handle = load(entry, clients, self.stop.clone(), self.acked.clone());
        self.clients.push(handle);
    }

    /// Looks at the acknowledged writes so far.
    fn with<T>(&self, look: impl FnOnce(&BTreeMap<u64, Ack>) -> T) -> T {
        look(&self.acked.lock().unwrap())
    }

    /// The longest time since `since` without an acknowledged write (from `since` to the first
    /// one, or between two): how long writes stalled at worst.
    fn longest_stall(&self, since: Instant) -> Duration {
        self.with(|acked| {
            let mut times: Vec<Instant> = acked.values().map(|ack| ack.at).collect();
            times.retain(|at| *at >= since);
            times.sort();
            let first = times.first().map(|at| at.duration_since(since));
            let gaps = times.windows(2).map(|pair| pair[1].duration_since(pair[0]));
            gaps.chain(first).max().unwrap_or_default()
        })
    }

    /// How many writes were acknowledged in `epoch`.
    fn acked_in(&self, epoch: u64) -> usize {
        self.with(|acked| acked_in_epoch(acked, epoch))
    }

    /// Stops the clients; returns every acknowledged write.
    async fn finish(self) -> BTreeMap<u64, Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

async fn get_json(node: &TestNode, path: &str) -> Option<Value> {
    let response = node.client.get(node.url(path)).send().await.ok()?;
    response.json().await.ok()
}

/// The primary and epoch as `observer` sees them.
async fn primary_of(observer: &TestNode) -> Option<(String, u64)> {
    let summary = get_json(observer, "/api/v1/cluster").await?;
    let primary = summary["data"]["primary"].as_str()?.to_string();
    Some((primary, summary["data"]["epoch"].as_u64()?))
}

/// Three writers (`w1` primary at first, `w2` and `w3` standbys) and a reader `r1` on one
/// shared storage directory, with `extra` settings; returns the storage, the writers by id,
/// the reader, and the guard that prints their logs if the test fails (keep it last).
async fn start_cluster(
    name: &str,
    extra: &[(&str, &str)],
) -> (
    tempfile::TempDir,
    BTreeMap<&'static str, TestNode>,
    TestNode,
    LogsOnPanic,
) {
    start_cluster_of(name, extra, &["w1", "w2", "w3", "r1"]).await
}

/// As [`start_cluster`], with the nodes `ids` (`w*` writers, `c*` compactors, `r1` the
/// reader); every node but the reader is in the returned map.
async fn start_cluster_of(
    name: &str,
    extra: &[(&str, &str)],
    ids: &[&'static str],
) -> (
    tempfile::TempDir,
    BTreeMap<&'static str, TestNode>,
    TestNode,
    LogsOnPanic,
) {
    start_cluster_in(name, extra, ids, None).await
}

/// As [`start_cluster_of`]; with a `mesh`, node `ids[i]` runs in the mesh's namespace `i`.
async fn start_cluster_in(
    name: &str,
    extra: &[(&str, &str)],
    ids: &[&'static str],
    mesh: Option<&crate::netns::Mesh>,
) -> (
    tempfile::TempDir,
    BTreeMap<&'static str, TestNode>,
    TestNode,
    LogsOnPanic,
) {
    let ports = free_udp_ports(ids.len());
    let storage = tempfile::tempdir().unwrap();
    let cluster = format!("{name}-{}", rand::random::<u32>());
    let mut nodes: BTreeMap<&str, TestNode> = BTreeMap::new();
    for (i, id) in ids.iter().copied().enumerate() {
        let member = Member {
            id: id.to_string(),
            role: match id.chars().next() {
                Some('w') => "writer",
                Some('c') => "compactor",
                _ => "reader",
            },
            gossip_port: ports[i],
        };
        let mut env: Vec<(String, String)> =
            vec![("RUST_LOG".into(), "info,arc_node::replication=debug".into())];
        env.extend(
            extra
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string())),
        );
        let mut node = match mesh {
            Some(mesh) => {
                let seed = format!("{}:{}", mesh.ips[0], ports[0]);
                mesh.member(i, &cluster, &member, &seed, storage.path(), &env)
            }
            None => TestNode::prepare_owned({
                let mut all = member_env(&cluster, &member, &ports[..1], storage.path());
                all.extend(env);
                all
            }),
        };
        node.spawn().await;
        nodes.insert(id, node);
    }
    let reader = nodes.remove("r1").unwrap();
    let logs = LogsOnPanic::new(
        nodes
            .iter()
            .map(|(id, node)| (*id, node))
            .chain([("r1", &reader)]),
    );
    (storage, nodes, reader, logs)
}

/// Waits until `primary` names both other writers in sync (asked of the primary, which
/// commits the in-sync set: a reader's copy of the catalog may be a few seconds old).
async fn wait_all_in_sync(primary: &TestNode) {
    wait_in_sync(primary, 3).await;
}

/// Waits until `primary` names `writers` writers (itself included) in sync.
async fn wait_in_sync(primary: &TestNode, writers: usize) {
    wait_for("the standbys in sync", DEADLINE, || async {
        let isr = get_json(primary, "/api/v1/cluster/nodes").await?;
        let in_sync = isr["data"]
            .as_array()?
            .iter()
            .filter(|node| node["in_sync"] == true)
            .count();
        (in_sync == writers).then_some(())
    })
    .await;
}

/// The checker over every acknowledged write: each epoch acknowledged by one node, every
/// acknowledged id stored exactly once (read on the reader with read-your-writes, after a
/// flush on `primary`). On a loss, prints every log and where the lost rows were acknowledged.
/// Waits until the cluster is steady under `load`: a primary, more than `writes` writes
/// acknowledged in its epoch, and every standby in sync. Returns the primary and its epoch.
async fn steady(
    reader: &TestNode,
    nodes: &BTreeMap<&str, TestNode>,
    load: &Load,
    writes: usize,
) -> (String, u64) {
    let (first, epoch) = wait_for("a primary", DEADLINE, || primary_of(reader)).await;
    wait_for("writes", DEADLINE, || async {
        (load.acked_in(epoch) > writes).then_some(())
    })
    .await;
    wait_all_in_sync(&nodes[first.as_str()]).await;
    (first, epoch)
}

async fn check_acknowledged(
    acked: &BTreeMap<u64, Ack>,
    nodes: &BTreeMap<&str, TestNode>,
    primary: &str,
    reader: &TestNode,
) {
    // Each epoch had one node that acknowledged writes.
    let mut by_epoch: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for ack in acked.values() {
        by_epoch
            .entry(ack.epoch)
            .or_default()
            .insert(ack.served_by.clone());
    }
    for (epoch, servers) in &by_epoch {
        assert_eq!(
            servers.len(),
            1,
            "epoch {epoch} acknowledged by {servers:?}"
        );
    }
    // Every acknowledged write once, nothing twice.
    nodes[primary].flush().await;
    // A reader shows what it has applied: read your writes, as a client must (the last writes'
    // commit may not have reached it yet).
    let newest = acked.values().map(|ack| ack.lsn).max().unwrap_or(0);
    let rows = wait_for("the reader to answer", DEADLINE, || async {
        let response = reader
            .client
            .post(reader.url("/api/v1/query"))
            .header("x-arc-min-lsn", newest.to_string())
            .json(&serde_json::json!({
                "sql": format!("SELECT id, count(*) FROM {DB}.fo GROUP BY id")
            }))
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        response.json::<Value>().await.ok()
    })
    .await;
    let stored: BTreeMap<u64, u64> = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row[0].as_u64().unwrap(), row[1].as_u64().unwrap()))
        .collect();
    let twice: Vec<_> = stored
        .iter()
        .filter(|(_, count)| **count > 1)
        .take(5)
        .collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let lost: Vec<_> = acked
        .keys()
        .filter(|id| !stored.contains_key(id))
        .take(5)
        .collect();
    if !lost.is_empty() {
        let on_primary = nodes[primary]
            .query_raw(&format!(
                "SELECT id FROM {DB}.fo WHERE id IN ({})",
                lost.iter()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .await;
        let epochs: Vec<_> = lost.iter().map(|id| (**id, acked[*id].clone())).collect();
        panic!(
            "acknowledged but lost: {epochs:?} of {}; on the primary: {on_primary:?}",
            acked.len()
        );
    }
}

/// kill -9 of the primary under load, several times: a standby takes over each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kill_9_of_the_primary_under_load_loses_nothing() {
    // More for the benchmark script (scripts/bench-failover.sh).
    let drills: usize = std::env::var("ARC_FAILOVER_DRILLS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    // The benchmark script may try another failover timeout.
    let timeout = std::env::var("ARC_CLUSTER_FAILOVER_TIMEOUT").unwrap_or_default();
    kill_9_drills(
        "failover",
        &[("ARC_CLUSTER_FAILOVER_TIMEOUT", timeout.as_str())],
        drills,
    )
    .await;
}

/// The same drills with the shared storage on an S3 API (s3s-fs in this process) instead of
/// a directory: the catalog's conditional puts, the flushes and the followers' catalog reads
/// all go through HTTP, as in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kill_9_of_the_primary_on_s3_loses_nothing() {
    let s3_root = tempfile::tempdir().unwrap();
    let server = crate::s3::S3Server::start(s3_root.path()).await;
    let env = server.node_env();
    let extra: Vec<(&str, &str)> = env
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    kill_9_drills("failover-s3", &extra, 3).await;
    server.stop().await;
}

/// `drills` times: kill -9 of the primary under load through the reader, a standby takes over,
/// the killed node restarts as a standby; then every acknowledged write is checked.
async fn kill_9_drills(name: &str, extra: &[(&str, &str)], drills: usize) {
    let (_storage, mut nodes, reader, _logs) = start_cluster(name, extra).await;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..4);
    let mut recoveries = Vec::new();
    for drill in 0..drills {
        // Both standbys in sync, load flowing.
        let (primary, epoch) = wait_for("a primary", DEADLINE, || primary_of(&reader)).await;
        wait_for("writes in the current epoch", DEADLINE, || async {
            (load.acked_in(epoch) > 50).then_some(())
        })
        .await;
        wait_all_in_sync(&nodes[primary.as_str()]).await;
        let killed = Instant::now();
        let killed_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        nodes.get_mut(primary.as_str()).unwrap().kill9();
        let (new_primary, new_epoch) = loop {
            if let Some((primary_now, epoch_now)) = primary_of(&reader).await
                && epoch_now > epoch
                && primary_now != primary
            {
                break (primary_now, epoch_now);
            }
            if killed.elapsed() > DEADLINE {
                panic!("drill {drill}: no standby took over from {primary} (epoch {epoch})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        wait_for(
            "a write acknowledged in the new epoch",
            DEADLINE,
            || async { (load.acked_in(new_epoch) > 0).then_some(()) },
        )
        .await;
        let recovery = killed.elapsed();
        recoveries.push(recovery);
        // A promoted standby no longer reports hearing a primary: its old stream means nothing.
        let new = &nodes[new_primary.as_str()];
        let health = new.client.get(new.url("/health")).send().await.unwrap();
        assert!(
            health.headers().get("x-arc-primary").is_none(),
            "{new_primary}"
        );
        // Split: detection (kill -> the promote written), promotion (the winner's own
        // measure: promote, replay, start), catch-up (the rest: the first write to make it
        // through the reader and be acknowledged).
        let summary = get_json(&nodes[new_primary.as_str()], "/api/v1/cluster")
            .await
            .unwrap();
        let promoted_at_ms = summary["data"]["failovers"]
            .as_array()
            .and_then(|failovers| failovers.last())
            .and_then(|last| last["promoted_at_ms"].as_u64())
            .unwrap_or(killed_at_ms);
        let promotion_ms: u64 = nodes[new_primary.as_str()]
            .log()
            .lines()
            .rfind(|line| line.contains("took over as primary"))
            .and_then(|line| line.split("promotion_ms=").nth(1))
            .and_then(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        let detection_ms = promoted_at_ms.saturating_sub(killed_at_ms);
        let catch_up_ms = (recovery.as_millis() as u64).saturating_sub(detection_ms + promotion_ms);
        eprintln!(
            "drill {drill}: {primary} (epoch {epoch}) -> {new_primary} (epoch {new_epoch}) in {recovery:?}: detection {detection_ms} ms, promotion {promotion_ms} ms, catch-up {catch_up_ms} ms"
        );
        // The killed node restarts as a standby. Its WAL holds entries of its own, which the
        // stream reconciles: an informational line, not an alarm (operators alert on errors).
        let restarted = nodes.get_mut(primary.as_str()).unwrap();
        restarted.spawn().await;
        let local = get_json(restarted, "/api/v1/cluster/local").await.unwrap();
        assert_eq!(local["data"]["primary"], false, "{local}");
        let log = restarted.log();
        assert!(
            log.contains("holds entries of its own") && !log.contains("HOLDS ENTRIES"),
            "{log}"
        );
    }
    let (primary, _) = primary_of(&reader).await.unwrap();
    wait_for("writes after the last drill", DEADLINE, || async {
        let last = load.with(|acked| acked.values().map(|ack| ack.epoch).max().unwrap_or(0));
        (load.acked_in(last) > 50).then_some(())
    })
    .await;
    let acked = load.finish().await;

    check_acknowledged(&acked, &nodes, &primary, &reader).await;
    for (id, node) in &nodes {
        for line in node.log().lines().filter(|line| {
            line.contains("took over as primary")
                || line.contains("failover check")
                || line.contains("stream ended")
        }) {
            eprintln!("{id}: {line}");
        }
    }
    eprintln!(
        "recoveries (kill -9 -> first acknowledged write): {recoveries:?}; {} writes acknowledged",
        acked.len()
    );
}

/// The old primary frozen (SIGSTOP) past a failover, then thawed under load: it acknowledges
/// nothing after the new promote (the writes it held get 503 or go to the new primary), none
/// of its flushes counts (no row is stored twice), and it steps down to standby in the same
/// process (same pid, no restart) and gets back in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_frozen_primary_steps_down_in_process_when_thawed() {
    let (_storage, mut nodes, reader, _logs) = start_cluster("frozen", &[]).await;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..3);
    let (old, epoch) = wait_for("a primary", DEADLINE, || primary_of(&reader)).await;
    wait_for("writes in the first epoch", DEADLINE, || async {
        (load.acked_in(epoch) > 50).then_some(())
    })
    .await;
    wait_all_in_sync(&nodes[old.as_str()]).await;
    // Clients writing to the old primary directly too: they are the ones it could wrongly
    // acknowledge once thawed.
    load.through((&nodes[old.as_str()], &old), 3..5);
    wait_for("direct writes acknowledged", DEADLINE, || async {
        let direct = load.with(|acked| acked.keys().filter(|id| **id >= 30_000_000).count());
        (direct > 20).then_some(())
    })
    .await;
    let pid = nodes[old.as_str()].pid().unwrap();
    signal(pid, "STOP");
    let (new_primary, new_epoch) = wait_for("a standby to take over", DEADLINE, || async {
        let (primary, now) = primary_of(&reader).await?;
        (now > epoch && primary != old).then_some((primary, now))
    })
    .await;
    let promoted = Instant::now();
    // Every client through the reader goes on in the new epoch soon: a write the reader had
    // forwarded to the frozen primary gets 504 once the new primary shows (it does not wait
    // for the frozen one, nor for the client's own 20 s timeout).
    wait_for(
        "each client through the reader writing in the new epoch",
        Duration::from_secs(10),
        || async {
            let clients = load.with(|acked| {
                acked
                    .iter()
                    .filter(|(_, ack)| ack.epoch == new_epoch)
                    .map(|(id, _)| id / 10_000_000)
                    .filter(|client| *client < 3)
                    .collect::<BTreeSet<_>>()
                    .len()
            });
            (clients == 3).then_some(())
        },
    )
    .await;
    wait_for("writes in the new epoch", DEADLINE, || async {
        (load.acked_in(new_epoch) > 50).then_some(())
    })
    .await;
    signal(pid, "CONT");
    let thawed = Instant::now();
    // It steps down in the same process and follows the new primary.
    let old_node = &nodes[old.as_str()];
    loop {
        let local = get_json(old_node, "/api/v1/cluster/local").await;
        if local.is_some_and(|local| {
            local["data"]["primary"] == false && local["data"]["epoch"] == new_epoch
        }) {
            break;
        }
        if thawed.elapsed() > DEADLINE {
            panic!("{old} did not step down after the thaw");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(nodes.get_mut(old.as_str()).unwrap().is_running());
    assert_eq!(nodes[old.as_str()].pid(), Some(pid), "no restart");
    let log = nodes[old.as_str()].log();
    assert!(log.contains("stepping down to standby"), "{log}");
    wait_all_in_sync(&nodes[new_primary.as_str()]).await;
    wait_for("writes after the step-down", DEADLINE, || async {
        let after = load.with(|acked| {
            acked
                .values()
                .filter(|ack| ack.at > thawed && ack.epoch == new_epoch)
                .count()
        });
        (after > 50).then_some(())
    })
    .await;
    let acked = load.finish().await;
    // Nothing acknowledged in the old epoch beyond the new promote's fence: the old primary
    // acknowledged nothing after the promote. (An answer it had decided before the freeze may
    // reach its client only after the thaw, with an LSN at or below the fence.)
    let summary = get_json(&nodes[new_primary.as_str()], "/api/v1/cluster")
        .await
        .unwrap();
    let fence = summary["data"]["failovers"][0]["fence_lsn"]
        .as_u64()
        .unwrap();
    let late: Vec<_> = acked
        .iter()
        .filter(|(_, ack)| ack.epoch <= epoch && ack.lsn > fence)
        .take(5)
        .collect();
    assert!(
        late.is_empty(),
        "acknowledged by the deposed primary above the fence {fence}: {late:?}"
    );
    let delayed = acked
        .values()
        .filter(|ack| ack.epoch <= epoch && ack.at > promoted)
        .count();
    check_acknowledged(&acked, &nodes, &new_primary, &reader).await;
    eprintln!(
        "{old} -> {new_primary} (epoch {new_epoch}, fence {fence}); step-down after thaw in {:?}; {delayed} old-epoch answers arrived after the promote; {} writes acknowledged",
        thawed.elapsed(),
        acked.len()
    );
}

/// The health trigger: the primary's own health probe fails (the file its fsync probe writes
/// next to the WAL is made a directory) for `unhealthy_threshold` checks, and a standby takes
/// over (reason `unhealthy`, in the cluster API's history); the old primary steps down. The
/// new primary failing the same way within `failover_cooldown` is held back: no second
/// failover. Nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_an_unhealthy_primary_is_replaced_once_within_the_cooldown() {
    let (_storage, nodes, reader, _logs) =
        start_cluster("unhealthy", &[("ARC_CLUSTER_UNHEALTHY_THRESHOLD", "2")]).await;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..2);
    let (old, epoch) = wait_for("a primary", DEADLINE, || primary_of(&reader)).await;
    wait_all_in_sync(&nodes[old.as_str()]).await;
    let break_probe = |node: &TestNode| {
        let probe = node.dir.join("wal").join(".health-probe");
        let _ = std::fs::remove_file(&probe);
        std::fs::create_dir(&probe).unwrap();
        probe
    };
    let probe = break_probe(&nodes[old.as_str()]);
    let (new_primary, new_epoch) = wait_for("a standby to take over", DEADLINE, || async {
        let (primary, now) = primary_of(&reader).await?;
        (now > epoch && primary != old).then_some((primary, now))
    })
    .await;
    std::fs::remove_dir(&probe).unwrap_or_default();
    let summary = wait_for("the failover in the history", DEADLINE, || async {
        let summary = get_json(&nodes[new_primary.as_str()], "/api/v1/cluster").await?;
        (summary["data"]["failovers"].as_array()?.len() == 1).then_some(summary)
    })
    .await;
    let failover = &summary["data"]["failovers"][0];
    assert_eq!(failover["reason"], "unhealthy", "{summary}");
    assert_eq!(failover["node"], new_primary.as_str(), "{summary}");
    assert_eq!(failover["previous_primary"], old.as_str(), "{summary}");
    assert_eq!(failover["epoch"], new_epoch, "{summary}");
    wait_for("the old primary to step down", DEADLINE, || async {
        let local = get_json(&nodes[old.as_str()], "/api/v1/cluster/local").await?;
        (local["data"]["primary"] == false).then_some(())
    })
    .await;

    // The new primary fails its checks too, within the cooldown (60 s by default).
    let probe = break_probe(&nodes[new_primary.as_str()]);
    let held_back = wait_for("a standby holding back", DEADLINE, || async {
        nodes
            .iter()
            .filter(|(id, _)| **id != new_primary.as_str())
            .find(|(_, node)| node.log().contains("holding back"))
            .map(|(id, _)| id.to_string())
    })
    .await;
    let (primary_now, epoch_now) = primary_of(&reader).await.unwrap();
    assert_eq!(
        (primary_now.as_str(), epoch_now),
        (new_primary.as_str(), new_epoch),
        "{held_back} held back, and no one took over"
    );
    std::fs::remove_dir(&probe).unwrap_or_default();
    let acked = load.finish().await;
    check_acknowledged(&acked, &nodes, &new_primary, &reader).await;
}

/// Planned switchover under load (`POST /api/v1/cluster/failover`, sent to the reader, which
/// forwards it to the primary): to the best standby, then back to the old primary by name.
/// Each answer names the new primary and epoch; the old primary steps down in-process and gets
/// back in sync; no acknowledged write is lost or doubled. A target that is not an in-sync
/// standby gets 409 naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_planned_switchover_under_load_loses_nothing() {
    let (_storage, nodes, reader, _logs) = start_cluster("switchover", &[]).await;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..4);
    let switch = |target: Option<&str>| {
        let request = reader
            .client
            .post(reader.url("/api/v1/cluster/failover"))
            .timeout(Duration::from_secs(60));
        let request = match target {
            Some(target) => request.json(&serde_json::json!({ "target": target })),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (first, epoch) = steady(&reader, &nodes, &load, 50).await;

    let (status, body) = switch(Some("r1")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("r1 is not a healthy standby writer"),
        "{body}"
    );

    let mut windows = Vec::new();
    let mut expected = None;
    let mut current = (first.clone(), epoch);
    for round in 0..2 {
        let (status, body) = switch(expected.as_deref()).await;
        assert_eq!(status, 200, "round {round}: {body}");
        let data = &body["data"];
        let new_primary = data["primary"].as_str().unwrap().to_string();
        let new_epoch = data["epoch"].as_u64().unwrap();
        assert_eq!(data["previous_primary"], current.0.as_str(), "{body}");
        assert_ne!(new_primary, current.0, "{body}");
        assert_eq!(new_epoch, current.1 + 1, "{body}");
        if let Some(expected) = &expected {
            assert_eq!(&new_primary, expected, "{body}");
        }
        windows.push(data["unavailable_ms"].as_u64().unwrap());
        wait_for("writes in the new epoch", DEADLINE, || async {
            (load.acked_in(new_epoch) > 50).then_some(())
        })
        .await;
        // The old primary follows the new one, in the same process, and is in sync again
        // (and healthy: a switchover target must be).
        let path = format!("/api/v1/cluster/nodes/{}", current.0);
        wait_for("the old primary a healthy standby", DEADLINE, || async {
            let old = get_json(&nodes[new_primary.as_str()], &path).await?;
            (old["data"]["primary"] == false && old["data"]["state"] == "healthy").then_some(())
        })
        .await;
        wait_all_in_sync(&nodes[new_primary.as_str()]).await;
        // Neither scrape shows the role the node had before: no followers on the standby, no
        // follower position on the primary.
        let old = &nodes[current.0.as_str()];
        assert_eq!(
            metric_sum(old, "arc_replication_follower_connected", "").await,
            0.0
        );
        assert_eq!(metric_sum(old, "arc_replication_isr_size", "").await, 0.0);
        let new = &nodes[new_primary.as_str()];
        assert_eq!(
            metric_sum(new, "arc_replication_received_lsn", "").await,
            0.0
        );
        assert!(metric_sum(new, "arc_replication_isr_size", "").await >= 1.0);
        // Back to the first primary, by name.
        expected = Some(current.0.clone());
        current = (new_primary, new_epoch);
    }
    let summary = get_json(&nodes[current.0.as_str()], "/api/v1/cluster")
        .await
        .unwrap();
    let reasons: Vec<_> = summary["data"]["failovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failover| failover["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["switchover", "switchover"], "{summary}");
    let acked = load.finish().await;
    // The longest gap between two acknowledgements, as the clients saw it.
    let mut times: Vec<Instant> = acked.values().map(|ack| ack.at).collect();
    times.sort();
    let gap = times
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    check_acknowledged(&acked, &nodes, &current.0, &reader).await;
    for (id, node) in &nodes {
        for line in node.log().lines().filter(|line| {
            line.contains("switchover")
                || line.contains("took over")
                || line.contains("stepping down")
        }) {
            eprintln!("{id}: {line}");
        }
    }
    eprintln!(
        "switchover windows (gate closed -> new primary serving): {windows:?} ms; longest gap between acknowledgements: {gap:?}; {} writes acknowledged",
        acked.len()
    );
}

/// SIGTERM to a clustered primary under load (as `systemctl stop` or a rolling upgrade sends
/// it): it hands its epoch to an in-sync standby by a planned switchover before it stops, exits
/// cleanly, and no client through the reader gets a write of unknown outcome. It used to leave
/// the gossip cluster first, while it still took writes: the standbys took over at once
/// (reason `dead`) and the reader answered the writes it had forwarded with 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sigterm_to_the_primary_hands_over_and_leaves_no_write_in_doubt() {
    let (_storage, mut nodes, reader, _logs) = start_cluster("sigterm", &[]).await;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..4);
    let (first, epoch) = steady(&reader, &nodes, &load, 50).await;
    let status = nodes.get_mut(first.as_str()).unwrap().stop().await;
    assert!(status.success(), "{status:?}");
    let (new_primary, new_epoch) = wait_new_primary(&reader, epoch, &[first.as_str()]).await;
    wait_for("writes in the new epoch", DEADLINE, || async {
        (load.acked_in(new_epoch) > 50).then_some(())
    })
    .await;
    let summary = get_json(&nodes[new_primary.as_str()], "/api/v1/cluster")
        .await
        .unwrap();
    let reasons: Vec<_> = summary["data"]["failovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failover| failover["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["switchover"], "{summary}");
    let in_doubt: Vec<String> = reader
        .log()
        .lines()
        .filter(|line| line.contains("target was lost while it was in flight"))
        .map(str::to_owned)
        .collect();
    assert!(in_doubt.is_empty(), "writes answered 504: {in_doubt:#?}");
    let log = nodes[first.as_str()].log();
    assert!(
        log.contains("stopping: handed the epoch over"),
        "the primary stopped without a switchover: {log}"
    );
    let acked = load.finish().await;
    nodes.remove(first.as_str());
    check_acknowledged(&acked, &nodes, &new_primary, &reader).await;
}

/// Four switchovers asked at once, under load: one runs, the others get 409 and touch nothing.
/// A loser of the promote race stepped the node down under the winner, which then waited its
/// whole 10 s step timeout for the target to show as serving (writes refused meanwhile); and
/// one abandoned switchover reopened the gate under another, letting writes in above its fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_concurrent_switchovers_run_one_and_lose_nothing() {
    let (_storage, nodes, reader, _logs) = start_cluster("switchovers", &[]).await;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..4);
    let (first, epoch) = steady(&reader, &nodes, &load, 50).await;
    let primary = &nodes[first.as_str()];
    let answers = futures::future::join_all((0..4).map(|_| async {
        let response = primary
            .client
            .post(primary.url("/api/v1/cluster/failover"))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    }))
    .await;
    let won: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(won.len(), 1, "{answers:#?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 200) {
        assert_eq!(*status, 409, "{body}");
    }
    let data = &won[0]["data"];
    assert_eq!(data["epoch"].as_u64(), Some(epoch + 1), "{data}");
    let unavailable = data["unavailable_ms"].as_u64().unwrap();
    assert!(
        unavailable < 10_000,
        "writes were refused for {unavailable} ms: the switchover waited out its step timeout; {answers:#?}"
    );
    let new_epoch = epoch + 1;
    wait_for("writes in the new epoch", DEADLINE, || async {
        (load.acked_in(new_epoch) > 50).then_some(())
    })
    .await;
    let new_primary = data["primary"].as_str().unwrap().to_string();
    let acked = load.finish().await;
    check_acknowledged(&acked, &nodes, &new_primary, &reader).await;
}

/// A switchover whose promote landed while its answer was lost (a failpoint takes the answer
/// for a store error): the old primary keeps writes closed until a record of its own epoch
/// settles the outcome, finds the promote there, and completes the switchover. Reopening
/// writes on the error acknowledged writes above the fence that the target then cut from its
/// WAL once it read itself named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_switchover_whose_promote_answer_is_lost_loses_nothing() {
    let (_storage, nodes, reader, _logs) = start_cluster(
        "switchover-unknown",
        &[("ARC_FAILPOINTS", "promote-answer=fail-on:1")],
    )
    .await;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..4);
    let (primary, epoch) = wait_for("a primary", DEADLINE, || primary_of(&reader)).await;
    wait_for("writes", DEADLINE, || async {
        (load.acked_in(epoch) > 50).then_some(())
    })
    .await;
    wait_all_in_sync(&nodes[primary.as_str()]).await;
    let target = if primary == "w1" { "w2" } else { "w1" };
    switch_over(&nodes[primary.as_str()], target).await;
    let (now_primary, now_epoch) = wait_new_primary(&reader, epoch, &[&primary]).await;
    assert_eq!((now_primary.as_str(), now_epoch), (target, epoch + 1));
    wait_for("writes in the new epoch", DEADLINE, || async {
        (load.acked_in(now_epoch) > 50).then_some(())
    })
    .await;
    assert!(
        nodes[primary.as_str()]
            .log()
            .contains("the promote's outcome is unknown"),
        "the failpoint was not reached"
    );
    let acked = load.finish().await;
    check_acknowledged(&acked, &nodes, target, &reader).await;
}

/// The candidate killed in the middle of its promotion: both standbys are armed with a
/// failpoint that aborts the first one to get past its committed promote (before it takes
/// over). The other standby, kept in the in-sync set by that promote, takes over from the dead
/// candidate's epoch; the dead candidate restarts as a standby. The dead epoch acknowledged
/// nothing, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_candidate_killed_mid_promotion_is_replaced() {
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("aborted");
    let failpoint = format!("failover-after-promote=abort-once:{}", marker.display());
    let (_storage, mut nodes, reader, _logs) =
        start_cluster("midway", &[("ARC_FAILPOINTS", failpoint.as_str())]).await;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..3);
    let (first, epoch) = steady(&reader, &nodes, &load, 50).await;
    nodes.get_mut(first.as_str()).unwrap().kill9();
    // One candidate aborts after its promote (epoch + 1); the other takes epoch + 2.
    let (survivor, final_epoch) = wait_for("the other standby to take over", DEADLINE, || async {
        let (primary, now) = primary_of(&reader).await?;
        (now >= epoch + 2).then_some((primary, now))
    })
    .await;
    assert!(marker.exists(), "a candidate aborted mid-promotion");
    let dead: Vec<&str> = ["w1", "w2", "w3"]
        .into_iter()
        .filter(|id| *id != first && *id != survivor)
        .collect();
    let candidate = dead[0];
    assert!(
        !nodes.get_mut(candidate).unwrap().is_running(),
        "{candidate} aborted"
    );
    wait_for("writes in the survivor's epoch", DEADLINE, || async {
        (load.acked_in(final_epoch) > 50).then_some(())
    })
    .await;
    // Both dead nodes come back as standbys.
    for id in [first.as_str(), candidate] {
        nodes.get_mut(id).unwrap().spawn().await;
    }
    wait_all_in_sync(&nodes[survivor.as_str()]).await;
    let acked = load.finish().await;
    assert_eq!(
        acked_in_epoch(&acked, epoch + 1),
        0,
        "the dead candidate's epoch"
    );
    check_acknowledged(&acked, &nodes, &survivor, &reader).await;
    let summary = get_json(&nodes[survivor.as_str()], "/api/v1/cluster")
        .await
        .unwrap();
    eprintln!(
        "{first} killed; {candidate} aborted mid-promotion; {survivor} took over: {}",
        summary["data"]["failovers"]
    );
}

/// A standby that outlives the primary and every other node cannot tell that from being cut
/// off itself: none of the nodes it heard before answers. It does not take over (had it been
/// cut off, it would depose a primary the others still reach), and says why. Restarted, it
/// knows of no other node, and takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_standby_that_outlived_every_other_node_waits_until_restarted() {
    let (_storage, mut nodes, mut reader, _logs) =
        start_cluster_of("survivor", &[], &["w1", "w2", "r1"]).await;
    let (first, epoch) = wait_for("a primary", DEADLINE, || primary_of(&reader)).await;
    assert_eq!(first, "w1");
    wait_in_sync(&nodes["w1"], 2).await;
    // r1 is a witness only once w2 has heard it.
    wait_for("w2 to see r1", DEADLINE, || async {
        let listed = get_json(&nodes["w2"], "/api/v1/cluster/nodes").await?;
        let listed = listed["data"].as_array()?;
        listed
            .iter()
            .any(|node| node["id"] == "r1" && node["state"] == "healthy")
            .then_some(())
    })
    .await;
    nodes.get_mut("w1").unwrap().kill9();
    reader.kill9();
    wait_for("w2 to hold back as cut off", DEADLINE, || async {
        let log = nodes["w2"].log();
        log.contains("more likely cut off itself").then_some(())
    })
    .await;
    let local = get_json(&nodes["w2"], "/api/v1/cluster/local")
        .await
        .unwrap();
    assert_eq!(local["data"]["primary"], false, "{local}");
    assert_eq!(local["data"]["epoch"], epoch, "{local}");

    let w2 = nodes.get_mut("w2").unwrap();
    w2.kill9();
    // Ready once it serves: a standby that follows no one is not.
    w2.spawn().await;
    wait_for("the restarted w2 to take over", DEADLINE, || async {
        let local = get_json(&nodes["w2"], "/api/v1/cluster/local").await?;
        (local["data"]["primary"] == true && local["data"]["epoch"].as_u64()? > epoch).then_some(())
    })
    .await;
}

/// A failure every node shares replaces no primary: both writers' health probes fail (the
/// file the fsync probe writes next to the WAL is made a directory, as when the object store
/// is down for everyone), then both are mended at once. The primary checks its health every
/// 3 s, the standby every 200 ms, so the standby passes a check seconds before the primary
/// does, while gossip still shows the primary's count of failed checks. The standby had
/// those failures too; the primary stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_failure_every_node_shares_replaces_no_primary() {
    let storage = tempfile::tempdir().unwrap();
    let ports = free_udp_ports(2);
    let cluster = format!("shared-failure-{}", rand::random::<u32>());
    let writer = |id: &str, port: u16, interval: &str| {
        let member = Member {
            id: id.to_string(),
            role: "writer",
            gossip_port: port,
        };
        let mut env = member_env(&cluster, &member, &ports[..1], storage.path());
        env.extend([
            ("ARC_CLUSTER_HEALTH_CHECK_INTERVAL".into(), interval.into()),
            ("ARC_CLUSTER_UNHEALTHY_THRESHOLD".into(), "2".into()),
            ("RUST_LOG".into(), "info,arc_node::replication=debug".into()),
        ]);
        TestNode::prepare_owned(env)
    };
    let mut w1 = writer("w1", ports[0], "3s");
    let mut w2 = writer("w2", ports[1], "200ms");
    w1.spawn().await;
    let (primary, epoch) = wait_for("w1 to be primary", DEADLINE, || primary_of(&w1)).await;
    assert_eq!(primary, "w1");
    w2.spawn().await;
    let _logs = LogsOnPanic::new([("w1", &w1), ("w2", &w2)]);
    wait_in_sync(&w1, 2).await;
    let w1_checks = async |observer: &TestNode| {
        let listed = get_json(observer, "/api/v1/cluster/nodes").await?;
        let w1 = listed["data"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == "w1")?;
        w1["health"]["unhealthy_checks"].as_u64()
    };

    let probes: Vec<_> = [&w1, &w2]
        .iter()
        .map(|node| node.dir.join("wal").join(".health-probe"))
        .collect();
    for probe in &probes {
        let _ = std::fs::remove_file(probe);
        std::fs::create_dir(probe).unwrap();
    }
    // Mended just after the primary's second failed check: its next one is about 3 s away.
    wait_for("w2 to see w1 fail two checks", DEADLINE, || async {
        (w1_checks(&w2).await? >= 2).then_some(())
    })
    .await;
    for probe in &probes {
        std::fs::remove_dir(probe).unwrap();
    }
    // The primary's stale count is what a standby could act on: wait until it is gone.
    wait_for("w2 to see w1 pass a check", DEADLINE, || async {
        (w1_checks(&w2).await? == 0).then_some(())
    })
    .await;
    let log = w2.log();
    assert!(!log.contains("taking over as primary"), "{log}");
    let local = get_json(&w1, "/api/v1/cluster/local").await.unwrap();
    assert_eq!(local["data"]["primary"], true, "{local}");
    assert_eq!(local["data"]["epoch"], epoch, "{local}");
    w1.write_lp(DB, "fo id=1i 1785542400000000000\n").await;
}

/// Writers `w1`, `w2` and reader `r1`, each in its own namespace of a mesh (as root).
/// Declared in the order they are dropped: the logs (printed if the test failed) before the
/// nodes, the namespaces last.
struct MeshOfThree {
    _logs: LogsOnPanic,
    nodes: BTreeMap<&'static str, TestNode>,
    reader: TestNode,
    _storage: tempfile::TempDir,
    /// The S3 server and its root, if the nodes store there.
    _store: Option<(crate::s3::S3Server, tempfile::TempDir)>,
    mesh: crate::netns::Mesh,
}

impl MeshOfThree {
    const IDS: [&'static str; 3] = ["w1", "w2", "r1"];

    /// Starts the three (see [`start_cluster_in`]); `None`, shown skipped, without namespaces.
    async fn start(test: &str, name: &str) -> Option<MeshOfThree> {
        Self::start_with(test, name, false, &[]).await
    }

    /// As [`MeshOfThree::start`], on S3 (served on the mesh's store address, which
    /// [`crate::netns::Mesh::cut_store`] cuts) if `s3`, with `extra` settings.
    async fn start_with(
        test: &str,
        name: &str,
        s3: bool,
        extra: &[(&str, &str)],
    ) -> Option<MeshOfThree> {
        if !crate::netns::available_or_skip(test) {
            return None;
        }
        let mesh = crate::netns::Mesh::create(Self::IDS.len());
        let store = match s3 {
            true => {
                let root = tempfile::tempdir().unwrap();
                let addr = std::net::SocketAddr::new(mesh.store_ip, 0);
                let server = crate::s3::S3Server::start_on(root.path(), addr).await;
                Some((server, root))
            }
            false => None,
        };
        let env = store
            .as_ref()
            .map(|(server, _)| server.node_env())
            .unwrap_or_default();
        let settings: Vec<(&str, &str)> = env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .chain(extra.iter().copied())
            .collect();
        let (storage, nodes, reader, logs) =
            start_cluster_in(name, &settings, &Self::IDS, Some(&mesh)).await;
        Some(MeshOfThree {
            _logs: logs,
            nodes,
            reader,
            _storage: storage,
            _store: store,
            mesh,
        })
    }

    /// The namespace of node `id`.
    fn index(id: &str) -> usize {
        Self::IDS.iter().position(|each| *each == id).unwrap()
    }
}

/// A failover whose promote landed while its answer was lost (failpoint `promote-answer`), the
/// old primary alive but cut off from the store (network namespaces and S3, as root): it is
/// replaced on health, cannot read the promote, and goes on acknowledging whatever its in-sync
/// standby confirms. The candidate acknowledges nothing until a record of the old epoch settles
/// the outcome, finds its promote there and takes over; nothing acknowledged is lost. Breaking
/// the settle so that it never ends fails this test (no takeover); going back to following on
/// the error, as before, did not (3 runs: its next attempt found the promote before it
/// confirmed any of the old primary's writes), so the catalog tests of `confirm_epoch` are the
/// ones that show why it is settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_failover_whose_promote_answer_is_lost_loses_nothing() {
    let test = "test_a_failover_whose_promote_answer_is_lost_loses_nothing";
    let extra = [
        ("ARC_FAILPOINTS", "promote-answer=fail-on:1"),
        ("ARC_CLUSTER_UNHEALTHY_THRESHOLD", "2"),
    ];
    let Some(cluster) = MeshOfThree::start_with(test, "promote-lost", true, &extra).await else {
        return;
    };
    let (mesh, nodes, reader) = (&cluster.mesh, &cluster.nodes, &cluster.reader);
    let mut load = Load::default();
    load.through((reader, "r1"), 0..4);
    let (primary, epoch) = wait_for("a primary", DEADLINE, || primary_of(reader)).await;
    let standby = if primary == "w1" { "w2" } else { "w1" };
    wait_in_sync(&nodes[primary.as_str()], 2).await;
    wait_writes_since(&load, Instant::now(), 20).await;

    mesh.cut_store(MeshOfThree::index(&primary));
    let (now_primary, new_epoch) = wait_new_primary(reader, epoch, &[primary.as_str()]).await;
    assert_eq!(now_primary, standby);
    let log = nodes[standby].log();
    assert!(
        log.contains("promote-answer: failing call 1"),
        "the failpoint did not lose the promote's answer: {log}"
    );
    wait_writes_since(&load, Instant::now(), 20).await;
    mesh.heal();
    wait_stepped_down(
        &nodes[primary.as_str()],
        "the old primary to step down",
        new_epoch,
    )
    .await;
    wait_writes_since(&load, Instant::now(), 20).await;
    let acked = load.finish().await;
    check_acknowledged(&acked, nodes, standby, reader).await;
}

/// Only the link between the primary and a standby cut, both ways (network namespaces, as
/// root): the standby finds the primary silent, but the reader still hears it, so the standby
/// does not take over and says why. The primary drops it from the in-sync set and writes go
/// on; healed, it is back in sync. One primary and epoch throughout, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_cut_link_between_primary_and_standby_replaces_no_primary() {
    let test = "test_a_cut_link_between_primary_and_standby_replaces_no_primary";
    let Some(cluster) = MeshOfThree::start(test, "cut-link").await else {
        return;
    };
    let (mesh, nodes, reader) = (&cluster.mesh, &cluster.nodes, &cluster.reader);
    let at = MeshOfThree::index;
    let mut load = Load::default();
    load.through((reader, "r1"), 0..2);
    let (primary, epoch) = wait_for("a primary", DEADLINE, || primary_of(reader)).await;
    let standby = if primary == "w1" { "w2" } else { "w1" };
    wait_in_sync(&nodes[primary.as_str()], 2).await;
    wait_writes_since(&load, Instant::now(), 20).await;

    mesh.sever(at(&primary), at(standby));
    let cut = Instant::now();
    wait_for("the standby to hold back", DEADLINE, || async {
        let now = primary_of(reader).await;
        assert_eq!(now, Some((primary.clone(), epoch)), "{standby} took over");
        let log = nodes[standby].log();
        log.contains("but another node hears it").then_some(())
    })
    .await;
    let held_back = metric_sum(&nodes[standby], "arc_failover_held_back_total", "link_cut");
    assert!(
        held_back.await >= 1.0,
        "the metric counts the standby holding back"
    );
    // The primary goes on without it (out of the in-sync set once it lags).
    wait_writes_since(&load, Instant::now(), 20).await;
    mesh.heal();
    wait_in_sync(&nodes[primary.as_str()], 2).await;
    wait_writes_since(&load, Instant::now(), 20).await;
    assert_eq!(primary_of(reader).await, Some((primary.clone(), epoch)));
    eprintln!(
        "longest write stall since the cut: {:.1?}",
        load.longest_stall(cut)
    );
    let acked = load.finish().await;
    assert!(acked.values().all(|ack| ack.epoch == epoch));
    check_acknowledged(&acked, nodes, &primary, reader).await;
}

/// The link between a reader and a live primary cut while a write the reader forwarded is in
/// flight (network namespaces, as root): the write gets 504 (outcome unknown) once the reader
/// has not heard the primary for 10 s, not after the forward timeout (300 s) or whenever the
/// link heals. The primary stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_write_forwarded_over_a_cut_link_is_answered_within_seconds() {
    let test = "test_a_write_forwarded_over_a_cut_link_is_answered_within_seconds";
    let Some(cluster) = MeshOfThree::start(test, "cut-forward").await else {
        return;
    };
    let (mesh, nodes, reader) = (&cluster.mesh, &cluster.nodes, &cluster.reader);
    let at = MeshOfThree::index;
    let (primary, epoch) = wait_for("a primary", DEADLINE, || primary_of(reader)).await;
    wait_in_sync(&nodes[primary.as_str()], 2).await;
    // Writes through the reader leave a connection to the primary in its pool: the next
    // write goes over it, into the cut.
    for id in 0..10u64 {
        let line = format!("fo id={id}i {}\n", 1_785_542_400_000_000_000u64 + id);
        reader.write_lp(DB, &line).await;
    }

    mesh.sever(at(&primary), at("r1"));
    let sent = Instant::now();
    let response = reader
        .client
        .post(reader.url("/api/v1/write/line-protocol"))
        .header("x-arc-database", DB)
        .body("fo id=10i 1785542400000000010\n")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("an answer within 60 s");
    let took = sent.elapsed();
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    mesh.heal();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("has not heard"), "{body}");
    assert!(took < Duration::from_secs(20), "answered after {took:?}");
    eprintln!("504 after {took:?}: {body}");
    assert_eq!(primary_of(reader).await, Some((primary, epoch)));
}

/// A reader holding an entry the primary never got acknowledged (its link to the standby cut,
/// the primary killed before it gave up on it) misses the next epoch entirely: cut off from the
/// store, it reads no catalog, and it streams from nobody while the standby that took over is
/// primary. When the old primary, restarted and back in sync, is primary again (a switchover),
/// the reader's stale catalog names it, and it follows it across the skipped epoch: the stream
/// tells it the newest fence only, above which the new primary holds the skipped epoch's
/// writes. It drops what was never acknowledged, takes those writes, and shows exactly the
/// acknowledged rows (network namespaces and S3, as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_reader_that_missed_an_epoch_drops_what_a_deposed_primary_never_acknowledged() {
    let test = "test_a_reader_that_missed_an_epoch_drops_what_a_deposed_primary_never_acknowledged";
    // Nothing flushed: the reader, cut off from the store, answers from its buffers alone.
    let extra = [("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000")];
    let Some(mut cluster) = MeshOfThree::start_with(test, "skipped-epoch", true, &extra).await
    else {
        return;
    };
    let at = MeshOfThree::index;
    let reader = &cluster.reader;
    let (first, epoch) = wait_for("a primary", DEADLINE, || primary_of(reader)).await;
    let second = if first == "w1" { "w2" } else { "w1" };
    wait_in_sync(&cluster.nodes[first.as_str()], 2).await;
    let line = |id: u64| format!("fo id={id}i {}\n", 1_785_542_400_000_000_000u64 + id);
    let ids_on_reader = || async {
        let sql = format!("SELECT id FROM {DB}.fo ORDER BY id");
        let (status, body) = reader.query_raw(&sql).await;
        let rows = body["data"].as_array().filter(|_| status == 200)?;
        rows.iter()
            .map(|row| row[0].as_u64())
            .collect::<Option<Vec<u64>>>()
    };
    for id in 0..10 {
        cluster.nodes[first.as_str()].write_lp(DB, &line(id)).await;
    }
    wait_for("the reader to show the first rows", DEADLINE, || async {
        (ids_on_reader().await? == (0..10).collect::<Vec<_>>()).then_some(())
    })
    .await;
    let received = || metric_sum(reader, "arc_replication_received_lsn", "");
    let before = received().await;

    cluster.mesh.cut_store(at("r1"));
    cluster.mesh.sever(at(&first), at(second));
    let write = cluster.nodes[first.as_str()]
        .client
        .post(cluster.nodes[first.as_str()].url("/api/v1/write/line-protocol"))
        .header("x-arc-database", DB)
        .body(line(999))
        .timeout(Duration::from_secs(60))
        .send();
    let unacknowledged = tokio::spawn(async move { write.await.map(|answer| answer.status()) });
    wait_for("the reader to receive the entry", DEADLINE, || async {
        (received().await > before).then_some(())
    })
    .await;
    cluster.nodes.get_mut(first.as_str()).unwrap().kill9();
    let answer = unacknowledged.await.unwrap();
    assert!(
        answer.as_ref().is_err() || answer.as_ref().is_ok_and(|status| *status != 204),
        "the write was acknowledged: {answer:?}"
    );
    wait_for("the standby to take over", DEADLINE, || async {
        let (now, epoch_now) = primary_of(&cluster.nodes[second]).await?;
        (now == second && epoch_now == epoch + 1).then_some(())
    })
    .await;
    // Its first entry takes the LSN of the one the reader holds.
    for id in 10..20 {
        cluster.nodes[second].write_lp(DB, &line(id)).await;
    }
    // The old primary, restarted, drops its own copy of the entry and catches up; then it is
    // primary again.
    cluster.mesh.heal();
    cluster.mesh.cut_store(at("r1"));
    cluster.nodes.get_mut(first.as_str()).unwrap().spawn().await;
    wait_in_sync(&cluster.nodes[second], 2).await;
    switch_over(&cluster.nodes[second], &first).await;
    wait_for("the old primary to be primary again", DEADLINE, || async {
        let (now, epoch_now) = primary_of(&cluster.nodes[first.as_str()]).await?;
        (now == first && epoch_now == epoch + 2).then_some(())
    })
    .await;
    for id in 20..30 {
        cluster.nodes[first.as_str()].write_lp(DB, &line(id)).await;
    }
    let reader = &cluster.reader;
    let ids = wait_for("the reader to show the newest rows", DEADLINE, || async {
        let ids = ids_on_reader().await?;
        ids.contains(&29).then_some(ids)
    })
    .await;
    assert_eq!(
        ids,
        (0..30).collect::<Vec<_>>(),
        "the reader shows exactly the acknowledged rows"
    );
    let log = reader.log();
    assert!(
        log.contains("a newer promote's fence is below what this node holds"),
        "the reader dropped the entry: {log}"
    );
    cluster.mesh.heal();
}

/// The primary cut off from the store alone (network namespaces and S3, as root): a query,
/// which first catches up with the catalog log, gets 503 within seconds instead of waiting out
/// the object store client's retries (a minute or more); healed, queries answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_query_on_a_primary_cut_from_the_store_gets_503_within_seconds() {
    let test = "test_a_query_on_a_primary_cut_from_the_store_gets_503_within_seconds";
    // No failover on health: the node asked stays primary (a standby would not refresh).
    let extra = [("ARC_CLUSTER_FAILOVER_ENABLED", "false")];
    let Some(cluster) = MeshOfThree::start_with(test, "query-cut-store", true, &extra).await else {
        return;
    };
    let (primary, _) = wait_for("a primary", DEADLINE, || primary_of(&cluster.reader)).await;
    let node = &cluster.nodes[primary.as_str()];
    node.write_lp(DB, "fo id=1i 1785542400000000000\n").await;
    let sql = format!("SELECT count(*) FROM {DB}.fo");
    assert_eq!(node.query(&sql).await, [[serde_json::json!(1)]]);

    cluster.mesh.cut_store(MeshOfThree::index(&primary));
    let asked = Instant::now();
    let answer = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&serde_json::json!({ "sql": sql }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("an answer within 60 s");
    let took = asked.elapsed();
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("catalog log"), "{body}");
    assert!(took < Duration::from_secs(15), "answered after {took:?}");
    eprintln!("503 after {took:?}: {body}");

    cluster.mesh.heal();
    wait_for("queries to answer again", DEADLINE, || async {
        let (status, _) = node.query_raw(&sql).await;
        (status == 200).then_some(())
    })
    .await;
}

fn acked_in_epoch(acked: &BTreeMap<u64, Ack>, epoch: u64) -> usize {
    acked.values().filter(|ack| ack.epoch == epoch).count()
}

/// A partition (network namespaces, as root): the primary `w1` and reader `ra` on side A, the
/// standbys `w2`, `w3` and reader `rb` on side B, storage reachable from both. B elects a new
/// primary; `w1`, which can no longer acknowledge anything (its standbys are gone, and
/// removing them needs a catalog commit that the new promote fences), steps down. Healing
/// leaves one view: one primary, everyone in sync, nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_partitioned_primary_is_replaced_and_healing_leaves_one_view() {
    if !crate::netns::available_or_skip(
        "test_a_partitioned_primary_is_replaced_and_healing_leaves_one_view",
    ) {
        return;
    }
    let split = crate::netns::Split::create();
    let storage = tempfile::tempdir().unwrap();
    let plan = [
        ("w1", "writer", true, 9101),
        ("ra", "reader", true, 9102),
        ("w2", "writer", false, 9103),
        ("w3", "writer", false, 9104),
        ("rb", "reader", false, 9105),
    ];
    let seeds = format!("{}:9101,{}:9103", split.a_link_ip, split.b_link_ip);
    let mut nodes: BTreeMap<&str, TestNode> = BTreeMap::new();
    for (id, role, in_a, port) in plan {
        let member = Member {
            id: id.to_string(),
            role,
            gossip_port: port,
        };
        let mut node = split.member("partition", &member, in_a, &seeds, storage.path(), &[]);
        // w1 first, so it wins the bootstrap race.
        node.spawn().await;
        nodes.insert(id, node);
    }
    let ra = nodes.remove("ra").unwrap();
    let rb = nodes.remove("rb").unwrap();
    let _logs = LogsOnPanic::new(
        nodes
            .iter()
            .map(|(id, node)| (*id, node))
            .chain([("ra", &ra), ("rb", &rb)]),
    );
    let mut load = Load::default();
    load.through((&ra, "ra"), 0..2);
    load.through((&rb, "rb"), 2..4);
    let (first, epoch) = wait_for("a primary", DEADLINE, || primary_of(&rb)).await;
    assert_eq!(first, "w1");
    wait_for("writes from both sides", DEADLINE, || async {
        let from = |low: u64, high: u64| {
            load.with(|acked| acked.keys().filter(|id| (low..high).contains(*id)).count())
        };
        (from(0, 20_000_000) > 30 && from(20_000_000, 40_000_000) > 30).then_some(())
    })
    .await;
    wait_all_in_sync(&nodes["w1"]).await;

    split.partition();
    let cut = Instant::now();
    let (new_primary, new_epoch) = wait_for("B to elect a primary", DEADLINE, || async {
        let (primary, now) = primary_of(&rb).await?;
        (now > epoch && primary != "w1").then_some((primary, now))
    })
    .await;
    // w1 learns of the new epoch from the catalog (read when its in-sync standbys stay silent
    // past the failover timeout) and steps down.
    wait_for("w1 to step down", DEADLINE, || async {
        let local = get_json(&nodes["w1"], "/api/v1/cluster/local").await?;
        (local["data"]["primary"] == false).then_some(())
    })
    .await;
    let separated = cut.elapsed();
    wait_for("writes on side B in the new epoch", DEADLINE, || async {
        (load.acked_in(new_epoch) > 30).then_some(())
    })
    .await;

    split.heal();
    wait_all_in_sync(&nodes[new_primary.as_str()]).await;
    let everyone: Vec<&TestNode> = nodes.values().chain([&ra, &rb]).collect();
    for node in &everyone {
        wait_for("one view of the primary", DEADLINE, || async {
            let (primary, now) = primary_of(node).await?;
            (primary == new_primary && now == new_epoch).then_some(())
        })
        .await;
    }
    wait_for("writes through side A again", DEADLINE, || async {
        let count = load.with(|acked| {
            acked
                .iter()
                .filter(|(id, ack)| **id < 20_000_000 && ack.epoch == new_epoch)
                .count()
        });
        (count > 30).then_some(())
    })
    .await;
    let acked = load.finish().await;
    check_acknowledged(&acked, &nodes, &new_primary, &rb).await;
    for line in nodes["w1"]
        .log()
        .lines()
        .filter(|line| line.contains("stepping down to standby"))
    {
        eprintln!("w1: {line}");
    }
    eprintln!(
        "partition: {new_primary} took epoch {new_epoch}; w1 a standby {separated:?} after the cut; {} writes acknowledged",
        acked.len()
    );
}

/// Defaults: with no timing setting changed (5 s gossip heartbeat, 10 s health checks, 3 s
/// failover timeout, 5 s lag limit, default flush age), kill -9 of the primary is followed by
/// the first acknowledged write on the new primary within 30 s, through a reader that learns
/// of the new primary by gossip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_with_default_timings_a_kill_9_recovers_within_30_s() {
    // An empty value is the same as unset: the node uses its default.
    let defaults = [
        ("ARC_CLUSTER_HEARTBEAT_INTERVAL", ""),
        ("ARC_CLUSTER_HEALTH_CHECK_INTERVAL", ""),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", ""),
    ];
    let (_storage, mut nodes, reader, _logs) = start_cluster("defaults", &defaults).await;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..2);
    let (first, epoch) = steady(&reader, &nodes, &load, 20).await;
    let killed = Instant::now();
    nodes.get_mut(first.as_str()).unwrap().kill9();
    let recovered = wait_for("a write acknowledged in a new epoch", DEADLINE, || async {
        let newer = load.with(|acked| {
            acked
                .values()
                .any(|ack| ack.epoch > epoch && ack.at > killed)
        });
        newer.then(|| killed.elapsed())
    })
    .await;
    assert!(
        recovered < Duration::from_secs(30),
        "recovery took {recovered:?}"
    );
    let acked = load.finish().await;
    let (primary, _) = primary_of(&reader).await.unwrap();
    check_acknowledged(&acked, &nodes, &primary, &reader).await;
    eprintln!("defaults: kill -9 -> first acknowledged write in {recovered:?}");
}

/// The old primary's unacknowledged tail: the primary syncs a write to its own WAL and dies
/// before any standby got it (a failpoint between the sync and the stream). A standby takes
/// over with a fence below that entry. The old primary, restarted, cuts its WAL back to the
/// fence (the old directory kept aside), follows the new primary and gets back in sync; the
/// unacknowledged row is never shown anywhere, every acknowledged row is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_restarted_old_primary_drops_its_unacknowledged_tail() {
    old_primary_restarts(false).await;
}

/// As [`test_a_restarted_old_primary_drops_its_unacknowledged_tail`], but the old primary
/// restarts only after a second epoch began (a switchover from the standby that took over to
/// the third writer), whose fence lies above the unacknowledged entry: the new primary holds
/// another write at that LSN. The fence between (the second epoch's) is not in the catalog any
/// more, so the old primary keeps nothing of its WAL and takes what no flush covers from the
/// stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_an_old_primary_restarted_two_epochs_later_drops_its_unacknowledged_tail() {
    old_primary_restarts(true).await;
}

/// The two tests above; `two_epochs`: the old primary restarts after a switchover.
async fn old_primary_restarts(two_epochs: bool) {
    let ports = free_udp_ports(3);
    let storage = tempfile::tempdir().unwrap();
    let release = storage.path().join("release");
    std::fs::write(&release, b"").unwrap();
    let cluster = format!("tail-{}", rand::random::<u32>());
    let mut nodes: BTreeMap<&str, TestNode> = BTreeMap::new();
    for (i, id) in ["w1", "w2", "w3"].into_iter().enumerate() {
        let member = Member {
            id: id.to_string(),
            role: "writer",
            gossip_port: ports[i],
        };
        let mut env = member_env(&cluster, &member, &ports[..1], storage.path());
        if id == "w1" {
            // Passes while the release file exists.
            env.push((
                "ARC_FAILPOINTS".into(),
                format!("replicate-before-publish=pause:{}", release.display()),
            ));
        }
        let mut node = TestNode::prepare_owned(env);
        node.spawn().await;
        nodes.insert(id, node);
    }
    let write = |node: &TestNode, id: u64| {
        let request = node
            .client
            .post(node.url("/api/v1/write/line-protocol"))
            .header("x-arc-database", DB)
            .body(format!(
                "tail id={id}i {}\n",
                1_785_542_400_000_000_000u64 + id
            ))
            .timeout(Duration::from_secs(30))
            .send();
        async move {
            let response = request.await.ok()?;
            (response.status() == 204).then(|| {
                response.headers()["x-arc-durability"]
                    .to_str()
                    .unwrap()
                    .to_string()
            })
        }
    };
    let mut next = 100;
    wait_for("both standbys in sync", DEADLINE, || {
        next += 1;
        let attempt = write(&nodes["w1"], next);
        async move { (attempt.await? == "replicated:2").then_some(()) }
    })
    .await;
    for id in 1..=20 {
        assert_eq!(
            write(&nodes["w1"], id).await.as_deref(),
            Some("replicated:2")
        );
    }
    // Arm the pause: the next group commit stops after its sync, before the stream.
    for entry in std::fs::read_dir(storage.path()).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("release.reached.")
        {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    std::fs::remove_file(&release).unwrap();
    let pending = tokio::spawn(write(&nodes["w1"], 999));
    crate::harness::wait_paused(&release, 1).await;
    nodes.get_mut("w1").unwrap().kill9();
    assert_eq!(
        pending.await.unwrap(),
        None,
        "the write was never acknowledged"
    );
    let new_primary = wait_for("a standby to take over", DEADLINE, || async {
        let summary = get_json(&nodes["w2"], "/api/v1/cluster").await?;
        let primary = summary["data"]["primary"].as_str()?.to_string();
        (primary != "w1" && summary["data"]["epoch"].as_u64()? > 1).then_some(primary)
    })
    .await;
    let mut primary = new_primary;
    let mut epoch = 2;
    let mut acknowledged: Vec<u64> = (1..=20).collect();
    if two_epochs {
        // Acknowledged writes of epoch 2; the first takes the LSN of the unacknowledged one.
        for id in 21..=30 {
            assert!(write(&nodes[primary.as_str()], id).await.is_some());
            acknowledged.push(id);
        }
        let third = if primary == "w2" { "w3" } else { "w2" };
        switch_over(&nodes[primary.as_str()], third).await;
        primary = third.to_string();
        epoch = 3;
    }
    std::fs::write(&release, b"").unwrap();
    nodes.get_mut("w1").unwrap().spawn().await;
    let log = nodes["w1"].log();
    assert!(
        log.contains("rebuilt with its entries up to the fence"),
        "the old primary cut its wal back; log:\n{log}"
    );
    assert!(
        nodes["w1"]
            .dir
            .join(format!("wal.diverged-epoch-{epoch}"))
            .is_dir(),
        "the old wal is kept aside"
    );
    let new_primary = primary;
    // It follows as a standby and is back in sync.
    wait_for("the old primary in sync again", DEADLINE, || {
        next += 1;
        let attempt = write(&nodes[new_primary.as_str()], next);
        async move { (attempt.await? == "replicated:2").then_some(()) }
    })
    .await;
    async fn shown(node: &TestNode) -> Vec<u64> {
        let (status, body) = node
            .query_raw(&format!("SELECT id FROM {DB}.tail ORDER BY id"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row[0].as_u64().unwrap())
            .collect()
    }
    // Before and after the flush, on every node: every acknowledged row (a follower may take
    // a moment), never the other one.
    for flushed in [false, true] {
        if flushed {
            nodes[new_primary.as_str()].flush().await;
        }
        for (id, node) in &nodes {
            wait_for("every acknowledged row", DEADLINE, || async {
                let ids = shown(node).await;
                assert!(
                    !ids.contains(&999),
                    "{id} shows the unacknowledged row: {ids:?}"
                );
                acknowledged
                    .iter()
                    .all(|row| ids.contains(row))
                    .then_some(())
            })
            .await;
        }
    }
}

/// The faults the mixed drill draws from.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// kill -9 of the primary; it restarts once a standby has taken over.
    KillPrimary,
    /// kill -9 of a standby, down for a drawn while, then restarted.
    KillStandby,
    /// SIGSTOP of the primary until a standby has taken over, then SIGCONT: it steps down.
    FreezePrimary,
    /// SIGSTOP of a standby for a drawn while (it may leave the in-sync set), then SIGCONT.
    FreezeStandby,
    /// kill -9 of the primary, and of the standby that takes over as soon as it has: the
    /// third writer takes over; both restart.
    KillPrimaryTwice,
    /// A planned switchover to the best standby.
    Switchover,
    /// SIGTERM of the primary (an operator's restart): it drains and leaves, a standby takes
    /// over, and it starts again as a standby.
    RestartPrimary,
    /// kill -9 of the compactor, down for a drawn while, then restarted.
    KillCompactor,
    /// The object store down for a drawn while under load (S3 only).
    StoreOutage,
    /// kill -9 of the primary while the object store is down (S3 only): no promote can land
    /// until it is back.
    KillPrimaryInStoreOutage,
    /// The primary cut off from every other node, both ways (the store still reachable),
    /// until a standby has taken over, and a drawn while more: once healed it steps down.
    IsolatePrimary,
    /// The primary's packets to every other node dropped, theirs to it still arriving (a
    /// one-way partition), until a standby has taken over: it steps down.
    MutePrimary,
    /// A standby cut off from every other node: writes go on without it, it does not take
    /// over (no other node answers it), and it is healed a drawn while later.
    IsolateStandby,
    /// Only the link between the primary and one standby cut, both ways, for a drawn while:
    /// each still sees the other alive through the rest.
    CutPrimaryFromStandby,
    /// Only the link between the reader (every client's entry) and the primary cut, both ways,
    /// for a drawn while: writes stall; once healed they flow again.
    CutReaderFromPrimary,
    /// The primary's links flapping: cut off from every other node and healed, over and over,
    /// for drawn fractions of a second (shorter than the failover timeout, and sometimes in a
    /// row long enough), then healed for good.
    FlapPrimary,
    /// A standby's links flapping the same way: it may leave the in-sync set and come back,
    /// writes go on, and it never takes over (when it finds the primary silent, either no one
    /// answers it or the others still hear the primary).
    FlapStandby,
    /// A compactor cut off from every other node for a drawn while: each compactor then owns
    /// every partition, and both may merge the same files (the catalog lets one swap land).
    IsolateCompactor,
    /// The primary cut off from the object store (S3 in a mesh) for a drawn while: writes go
    /// on (acknowledging needs the WAL and the standbys, not the store).
    CutPrimaryFromStore,
    /// A standby cut off from the object store for a drawn while: writes go on.
    CutStandbyFromStore,
}

/// The faults of every mixed drill.
const FAULTS: [Fault; 8] = [
    Fault::KillPrimary,
    Fault::KillStandby,
    Fault::FreezePrimary,
    Fault::FreezeStandby,
    Fault::KillPrimaryTwice,
    Fault::Switchover,
    Fault::RestartPrimary,
    Fault::KillCompactor,
];

/// The faults added on S3, whose server the test can stop.
const STORE_FAULTS: [Fault; 2] = [Fault::StoreOutage, Fault::KillPrimaryInStoreOutage];

/// The faults added on S3 with a node per network namespace.
const STORE_PARTITION_FAULTS: [Fault; 2] = [Fault::CutPrimaryFromStore, Fault::CutStandbyFromStore];

/// The faults added with a node per network namespace ([`crate::netns::Mesh`]).
const PARTITION_FAULTS: [Fault; 8] = [
    Fault::IsolatePrimary,
    Fault::FlapPrimary,
    Fault::FlapStandby,
    Fault::MutePrimary,
    Fault::IsolateStandby,
    Fault::CutPrimaryFromStandby,
    Fault::CutReaderFromPrimary,
    Fault::IsolateCompactor,
];

/// The S3 server a mixed drill can stop and start again on the same address.
struct Store {
    root: tempfile::TempDir,
    server: Option<crate::s3::S3Server>,
    addr: std::net::SocketAddr,
}

impl Store {
    async fn stop(&mut self) {
        self.server.take().expect("the store is up").stop().await;
    }

    async fn start(&mut self) {
        let server = crate::s3::S3Server::start_on(self.root.path(), self.addr).await;
        self.server = Some(server);
    }
}

/// Compaction jobs `compactor` committed since it started.
async fn jobs_committed(compactor: &TestNode) -> u64 {
    get_json(compactor, "/api/v1/compaction/status")
        .await
        .and_then(|status| status["data"]["totals"]["jobs_committed"].as_u64())
        .unwrap_or(0)
}

/// Asks `primary` for a planned switchover to `target` once `target` is a healthy standby in
/// sync; asserts it was done.
async fn switch_over(primary: &TestNode, target: &str) {
    let path = format!("/api/v1/cluster/nodes/{target}");
    wait_for("the target a healthy standby in sync", DEADLINE, || async {
        let node = get_json(primary, &path).await?;
        (node["data"]["state"] == "healthy" && node["data"]["in_sync"] == true).then_some(())
    })
    .await;
    let switched = primary
        .client
        .post(primary.url("/api/v1/cluster/failover"))
        .json(&serde_json::json!({ "target": target }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = switched.status();
    assert_eq!(status, 200, "{}", switched.text().await.unwrap_or_default());
}

/// Waits for a primary other than every node in `not` in an epoch above `epoch`.
async fn wait_new_primary(reader: &TestNode, epoch: u64, not: &[&str]) -> (String, u64) {
    wait_for("a standby to take over", DEADLINE, || async {
        let (primary, now) = primary_of(reader).await?;
        (now > epoch && !not.contains(&primary.as_str())).then_some((primary, now))
    })
    .await
}

/// Waits until `node` (an old primary) is a standby of epoch `epoch` or a later one (a
/// failover may follow the one the test waited for, e.g. when the new primary was slow to
/// serve and another standby replaced it in turn).
async fn wait_stepped_down(node: &TestNode, what: &str, epoch: u64) {
    wait_for(what, DEADLINE, || async {
        let local = get_json(node, "/api/v1/cluster/local").await?;
        (local["data"]["primary"] == false && local["data"]["epoch"].as_u64()? >= epoch)
            .then_some(())
    })
    .await;
}

/// Waits until no node (the reader included) counts a failed health check.
async fn wait_no_failed_checks(nodes: &BTreeMap<&str, TestNode>, reader: &TestNode) {
    for (id, node) in nodes
        .iter()
        .map(|(id, node)| (*id, node))
        .chain([("r1", reader)])
    {
        wait_for(
            &format!("{id} counting no failed health check"),
            DEADLINE,
            || async {
                let health = get_json(node, "/api/v1/cluster/health").await?;
                (health["data"]["unhealthy_checks"] == 0).then_some(())
            },
        )
        .await;
    }
}

/// Waits for `count` writes acknowledged after `since`.
async fn wait_writes_since(load: &Load, since: Instant, count: usize) {
    wait_for("writes acknowledged after the fault", DEADLINE, || async {
        let after = load.with(|acked| acked.values().filter(|ack| ack.at > since).count());
        (after >= count).then_some(())
    })
    .await;
}

/// Mixed faults under load, one after the other in an order drawn from a seed: each fault of
/// [`FAULTS`] once per cycle, `ARC_CHAOS_ROUNDS` rounds (default: one cycle), seed from
/// `ARC_CHAOS_SEED` (the seed is printed so a failing order can be replayed). The default seed
/// begins with a switchover followed by two kills in a row: the standby that takes over first
/// then promotes on a copy of the log older than the in-sync set the switchover left, which
/// once named only itself and left the third writer unable to take over.
/// Before each fault every writer is in sync and writes flow; after it, writes flow again.
/// At the end, each epoch was acknowledged by one node, and every acknowledged write is
/// stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mixed_faults_under_load_lose_nothing() {
    mixed_faults("mixed", None, None, 3).await;
}

/// The same on S3 (s3s-fs in this process), with the store's outages among the faults
/// ([`STORE_FAULTS`]): alone under load, and with the primary killed while the store is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mixed_faults_on_s3_lose_nothing() {
    let root = tempfile::tempdir().unwrap();
    let server = crate::s3::S3Server::start(root.path()).await;
    let addr = server.addr;
    let store = Store {
        root,
        server: Some(server),
        addr,
    };
    mixed_faults("mixed-s3", Some(store), None, 1).await;
}

/// The same with each node in a network namespace of its own ([`crate::netns::Mesh`], as
/// root), with partitions among the faults ([`PARTITION_FAULTS`]): the primary cut off from
/// everyone, both ways and one way; a standby cut off; only the primary's link to one
/// standby cut; only the reader's link to the primary cut. The store (a shared directory)
/// stays reachable from every node, so a cut-off primary can still try to commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mixed_faults_with_partitions_lose_nothing() {
    if !crate::netns::available_or_skip("test_mixed_faults_with_partitions_lose_nothing") {
        return;
    }
    let mesh = crate::netns::Mesh::create(MESH_DRILL_NODES.len());
    mixed_faults("mixed-net", None, Some(&mesh), 1).await;
}

/// Both: S3 (s3s-fs in this process, on an address of the mesh's bridge) and a network
/// namespace per node, with the store's outages, the partitions, and the primary or a standby
/// cut off from the store alone ([`STORE_PARTITION_FAULTS`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mixed_faults_on_s3_with_partitions_lose_nothing() {
    if !crate::netns::available_or_skip("test_mixed_faults_on_s3_with_partitions_lose_nothing") {
        return;
    }
    let mesh = crate::netns::Mesh::create(MESH_DRILL_NODES.len());
    let root = tempfile::tempdir().unwrap();
    let server =
        crate::s3::S3Server::start_on(root.path(), std::net::SocketAddr::new(mesh.store_ip, 0))
            .await;
    let addr = server.addr;
    let store = Store {
        root,
        server: Some(server),
        addr,
    };
    mixed_faults("mixed-s3-net", Some(store), Some(&mesh), 2).await;
}

/// The drill's nodes: three writers, the reader every client writes through, a compactor.
const DRILL_NODES: [&str; 5] = ["w1", "w2", "w3", "r1", "c1"];

/// The drill's nodes in a mesh: a second compactor too, so that a compactor cut off from the
/// other one owns every partition on both sides of the cut.
const MESH_DRILL_NODES: [&str; 6] = ["w1", "w2", "w3", "r1", "c1", "c2"];

/// Runs the drill of [`test_mixed_faults_under_load_lose_nothing`] on `store` (local storage
/// if `None`, else with [`STORE_FAULTS`] too), in `mesh` if given (with [`PARTITION_FAULTS`]
/// too); `default_seed` unless `ARC_CHAOS_SEED` is set.
async fn mixed_faults(
    name: &str,
    mut store: Option<Store>,
    mesh: Option<&crate::netns::Mesh>,
    default_seed: u64,
) {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let env_number = |key: &str| -> Option<u64> { std::env::var(key).ok()?.parse().ok() };
    let store_faults = if store.is_some() {
        &STORE_FAULTS[..]
    } else {
        &[]
    };
    let partition_faults: Vec<Fault> = match (mesh.is_some(), store.is_some()) {
        (false, _) => Vec::new(),
        (true, false) => PARTITION_FAULTS.to_vec(),
        (true, true) => [&PARTITION_FAULTS[..], &STORE_PARTITION_FAULTS[..]].concat(),
    };
    // `ARC_CHAOS_FAULTS` (names, comma-separated) narrows the draw, to replay one kind.
    let only = std::env::var("ARC_CHAOS_FAULTS").unwrap_or_default();
    let faults: Vec<Fault> = FAULTS
        .iter()
        .chain(store_faults)
        .chain(&partition_faults)
        .copied()
        .filter(|fault| only.is_empty() || only.split(',').any(|name| name == format!("{fault:?}")))
        .collect();
    assert!(
        !faults.is_empty(),
        "ARC_CHAOS_FAULTS={only} names no fault of this drill"
    );
    // Where a node is in the mesh.
    let ids: &[&'static str] = if mesh.is_some() {
        &MESH_DRILL_NODES
    } else {
        &DRILL_NODES
    };
    let at = |id: &str| ids.iter().position(|node| *node == id).unwrap();
    let rounds = env_number("ARC_CHAOS_ROUNDS").map_or(faults.len(), |rounds| rounds as usize);
    let seed = env_number("ARC_CHAOS_SEED").unwrap_or(default_seed);
    eprintln!("{name}: {rounds} rounds, ARC_CHAOS_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order = Vec::new();
    while order.len() < rounds {
        let mut cycle = faults.clone();
        cycle.shuffle(&mut rng);
        order.extend(cycle);
    }
    order.truncate(rounds);

    let env: Vec<(String, String)> = store
        .as_ref()
        .and_then(|store| store.server.as_ref())
        .map(crate::s3::S3Server::node_env)
        .unwrap_or_default();
    let mut extra: Vec<(&str, &str)> = env
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    // Flushes all the time, and a compactor merging them: the faults land on flushes and
    // compaction swaps in flight too.
    extra.extend([
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "500"),
        ("ARC_COMPACTION_HOURLY_MIN_FILES", "2"),
        ("ARC_COMPACTION_INTERVAL", "1s"),
    ]);
    let (_storage, mut nodes, reader, _logs) = start_cluster_in(name, &extra, ids, mesh).await;
    // Compaction jobs committed, summed over the compactor's runs (its counters restart
    // with it).
    let mut compacted = 0;
    let mut load = Load::default();
    load.through((&reader, "r1"), 0..4);
    // The round of a store outage, and the primary and epoch before it.
    let mut shared_outage: Option<(usize, &str, u64)> = None;
    for (round, fault) in order.into_iter().enumerate() {
        // A settled cluster, and the same primary before and after settling: a failover still
        // under way (one on health after a store outage, say) must not turn the standby a
        // fault is aimed at into the primary.
        let (primary, epoch) = loop {
            let seen = wait_for("a primary", DEADLINE, || primary_of(&reader)).await;
            let primary = &nodes[seen.0.as_str()];
            wait_all_in_sync(primary).await;
            // Healthy again too (after a store outage every node's store probe failed): a
            // switchover targets only a healthy standby.
            wait_for("every node healthy", DEADLINE, || async {
                let listed = get_json(primary, "/api/v1/cluster/nodes").await?;
                let listed = listed["data"].as_array()?;
                (listed.len() == nodes.len() + 1
                    && listed.iter().all(|node| node["state"] == "healthy"))
                .then_some(())
            })
            .await;
            // No failed health check left counting: the primary's count is what a standby
            // replaces it on.
            wait_no_failed_checks(&nodes, &reader).await;
            wait_writes_since(&load, Instant::now(), 20).await;
            if primary_of(&reader).await.as_ref() == Some(&seen) {
                break seen;
            }
        };
        if let Some((outage, before, before_epoch)) = shared_outage.take() {
            assert_eq!(
                (primary.as_str(), epoch),
                (before, before_epoch),
                "round {outage}: a store outage every node shared moved the primary"
            );
        }
        let standbys: Vec<&'static str> = nodes
            .keys()
            .copied()
            .filter(|id| id.starts_with('w') && *id != primary)
            .collect();
        let standby = standbys[rng.random_range(0..standbys.len())];
        let primary = nodes.keys().copied().find(|id| *id == primary).unwrap();
        let began = Instant::now();
        match fault {
            Fault::KillPrimary => {
                nodes.get_mut(primary).unwrap().kill9();
                wait_new_primary(&reader, epoch, &[primary]).await;
                wait_writes_since(&load, began, 20).await;
                nodes.get_mut(primary).unwrap().spawn().await;
            }
            Fault::KillStandby => {
                nodes.get_mut(standby).unwrap().kill9();
                // How long it stays down is part of the draw, not a wait for an event.
                let down = Duration::from_millis(rng.random_range(0..4000));
                tokio::time::sleep(down).await;
                wait_writes_since(&load, began, 20).await;
                nodes.get_mut(standby).unwrap().spawn().await;
            }
            Fault::FreezePrimary => {
                let pid = nodes[primary].pid().unwrap();
                signal(pid, "STOP");
                let (_, new_epoch) = wait_new_primary(&reader, epoch, &[primary]).await;
                wait_writes_since(&load, began, 20).await;
                signal(pid, "CONT");
                wait_stepped_down(
                    &nodes[primary],
                    "the thawed primary to step down",
                    new_epoch,
                )
                .await;
            }
            Fault::FreezeStandby => {
                let pid = nodes[standby].pid().unwrap();
                signal(pid, "STOP");
                let frozen = Duration::from_millis(rng.random_range(500..5000));
                tokio::time::sleep(frozen).await;
                signal(pid, "CONT");
                wait_writes_since(&load, began, 20).await;
            }
            Fault::KillPrimaryTwice => {
                nodes.get_mut(primary).unwrap().kill9();
                let (second, second_epoch) = wait_new_primary(&reader, epoch, &[primary]).await;
                let second = nodes.keys().copied().find(|id| *id == second).unwrap();
                nodes.get_mut(second).unwrap().kill9();
                let again = Instant::now();
                wait_new_primary(&reader, second_epoch, &[primary, second]).await;
                wait_writes_since(&load, again, 20).await;
                for id in [primary, second] {
                    nodes.get_mut(id).unwrap().spawn().await;
                }
            }
            Fault::RestartPrimary => {
                let status = nodes.get_mut(primary).unwrap().stop().await;
                assert!(
                    status.success(),
                    "round {round}: {primary} stopped with {status}"
                );
                wait_new_primary(&reader, epoch, &[primary]).await;
                wait_writes_since(&load, began, 20).await;
                nodes.get_mut(primary).unwrap().spawn().await;
            }
            Fault::KillCompactor => {
                compacted += jobs_committed(&nodes["c1"]).await;
                nodes.get_mut("c1").unwrap().kill9();
                let down = Duration::from_millis(rng.random_range(0..3000));
                tokio::time::sleep(down).await;
                nodes.get_mut("c1").unwrap().spawn().await;
                wait_writes_since(&load, began, 20).await;
            }
            Fault::StoreOutage => {
                let store = store.as_mut().expect("a store to stop");
                store.stop().await;
                let down = Duration::from_millis(rng.random_range(1000..6000));
                tokio::time::sleep(down).await;
                store.start().await;
                wait_writes_since(&load, Instant::now(), 20).await;
                // Every node failed its store probe (and, while the flushes catch up, may fail
                // one now and then): no standby may replace the primary on checks it failed as
                // well. Checked once the next round has settled.
                shared_outage = Some((round, primary, epoch));
            }
            Fault::KillPrimaryInStoreOutage => {
                let store = store.as_mut().expect("a store to stop");
                store.stop().await;
                nodes.get_mut(primary).unwrap().kill9();
                let down = Duration::from_millis(rng.random_range(1000..5000));
                tokio::time::sleep(down).await;
                store.start().await;
                wait_new_primary(&reader, epoch, &[primary]).await;
                wait_writes_since(&load, began, 20).await;
                nodes.get_mut(primary).unwrap().spawn().await;
            }
            Fault::IsolatePrimary | Fault::MutePrimary => {
                let mesh = mesh.expect("a mesh to cut");
                if matches!(fault, Fault::IsolatePrimary) {
                    mesh.isolate(at(primary));
                } else {
                    for other in ids.iter().filter(|id| **id != primary) {
                        mesh.cut(at(primary), at(other));
                    }
                }
                let (_, new_epoch) = wait_new_primary(&reader, epoch, &[primary]).await;
                wait_writes_since(&load, began, 20).await;
                let longer = Duration::from_millis(rng.random_range(0..3000));
                tokio::time::sleep(longer).await;
                mesh.heal();
                wait_stepped_down(
                    &nodes[primary],
                    "the cut-off primary to step down",
                    new_epoch,
                )
                .await;
            }
            Fault::FlapPrimary | Fault::FlapStandby => {
                let mesh = mesh.expect("a mesh to cut");
                let flapping = if matches!(fault, Fault::FlapPrimary) {
                    primary
                } else {
                    standby
                };
                for _ in 0..rng.random_range(5..15) {
                    mesh.isolate(at(flapping));
                    let cut = Duration::from_millis(rng.random_range(100..1500));
                    tokio::time::sleep(cut).await;
                    mesh.heal();
                    let healed = Duration::from_millis(rng.random_range(100..800));
                    tokio::time::sleep(healed).await;
                }
                wait_writes_since(&load, Instant::now(), 20).await;
                if matches!(fault, Fault::FlapStandby) {
                    assert_eq!(
                        primary_of(&reader).await,
                        Some((primary.to_string(), epoch)),
                        "round {round}: a standby whose links flapped ({standby}) deposed the primary"
                    );
                }
            }
            Fault::IsolateStandby | Fault::CutPrimaryFromStore | Fault::CutStandbyFromStore => {
                let mesh = mesh.expect("a mesh to cut");
                match fault {
                    Fault::IsolateStandby => mesh.isolate(at(standby)),
                    Fault::CutPrimaryFromStore => mesh.cut_store(at(primary)),
                    _ => mesh.cut_store(at(standby)),
                }
                // Writes go on meanwhile: acknowledging needs neither the store nor a standby
                // the primary has dropped from the in-sync set. A standby that hears no one
                // must not take over (it would depose a primary everyone else reaches, and be
                // unreachable itself).
                wait_writes_since(&load, began + Duration::from_secs(1), 20).await;
                let longer = Duration::from_millis(rng.random_range(0..3000));
                tokio::time::sleep(longer).await;
                mesh.heal();
                wait_writes_since(&load, Instant::now(), 20).await;
                if matches!(fault, Fault::IsolateStandby) {
                    let now = primary_of(&reader).await;
                    assert_eq!(
                        now,
                        Some((primary.to_string(), epoch)),
                        "round {round}: a cut-off standby ({standby}) deposed the primary"
                    );
                }
            }
            Fault::IsolateCompactor
            | Fault::CutPrimaryFromStandby
            | Fault::CutReaderFromPrimary => {
                let mesh = mesh.expect("a mesh to cut");
                match fault {
                    Fault::IsolateCompactor => mesh.isolate(at("c1")),
                    Fault::CutPrimaryFromStandby => mesh.sever(at(primary), at(standby)),
                    _ => mesh.sever(at("r1"), at(primary)),
                }
                let cut = Duration::from_millis(rng.random_range(1000..8000));
                tokio::time::sleep(cut).await;
                mesh.heal();
                wait_writes_since(&load, Instant::now(), 20).await;
                if matches!(fault, Fault::CutPrimaryFromStandby) {
                    // The others still hear the primary: only the link is cut.
                    let now = primary_of(&reader).await;
                    assert_eq!(
                        now,
                        Some((primary.to_string(), epoch)),
                        "round {round}: a standby cut off from the primary alone ({standby}) deposed it"
                    );
                }
            }
            Fault::Switchover => {
                let response = reader
                    .client
                    .post(reader.url("/api/v1/cluster/failover"))
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                assert_eq!(status, 200, "round {round}: switchover: {body}");
                let (_, new_epoch) = wait_new_primary(&reader, epoch, &[primary]).await;
                wait_writes_since(&load, began, 20).await;
                wait_stepped_down(&nodes[primary], "the old primary to step down", new_epoch).await;
            }
        }
        let (now_primary, now_epoch) = primary_of(&reader).await.unwrap_or_default();
        let stall = load.longest_stall(began);
        eprintln!(
            "round {round}: {fault:?} ({primary} primary in epoch {epoch}, standby drawn {standby}): {now_primary} primary in epoch {now_epoch}, writes again after {:?}, longest stall {stall:.1?}",
            began.elapsed()
        );
    }
    if let Some((outage, before, before_epoch)) = shared_outage {
        wait_no_failed_checks(&nodes, &reader).await;
        assert_eq!(
            primary_of(&reader).await,
            Some((before.to_string(), before_epoch)),
            "round {outage}: a store outage every node shared moved the primary"
        );
    }
    let (primary, _) = wait_for("a primary", DEADLINE, || primary_of(&reader)).await;
    wait_all_in_sync(&nodes[primary.as_str()]).await;
    wait_writes_since(&load, Instant::now(), 20).await;
    let acked = load.finish().await;
    check_acknowledged(&acked, &nodes, &primary, &reader).await;
    compacted += jobs_committed(&nodes["c1"]).await;
    if let Some(second) = nodes.get("c2") {
        compacted += jobs_committed(second).await;
    }
    assert!(
        compacted > 0,
        "the compactor merged nothing: the drill did not test compaction"
    );
    // Each deposed primary with unacknowledged entries set its WAL aside; only the newest
    // three copies stay.
    for (id, node) in nodes.iter().filter(|(id, _)| id.starts_with('w')) {
        let set_aside = std::fs::read_dir(&node.dir)
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("wal.diverged-epoch-"))
            .count();
        assert!(set_aside <= 3, "{id} kept {set_aside} set-aside WALs");
    }
    // Swaps another compactor's landed first (since each compactor's last start).
    let mut voided = 0.0;
    for id in ["c1", "c2"] {
        if let Some(compactor) = nodes.get(id) {
            let jobs =
                crate::cluster::try_metric_sum(compactor, "arc_compact_jobs_total", "voided");
            voided += jobs.await.unwrap_or(0.0);
        }
    }
    eprintln!(
        "{name}: {} writes acknowledged; {compacted} compaction jobs committed, {voided} voided",
        acked.len()
    );
    if let Some(mut store) = store {
        store.stop().await;
    }
}
