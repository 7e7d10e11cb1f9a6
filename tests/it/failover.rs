//! Writer failover through the real binaries (issue 11): the primary killed with kill -9 under
//! load is replaced by an in-sync standby in seconds; no acknowledged write is lost or stored
//! twice; each epoch has one node that acknowledged writes; the killed node restarts as a
//! standby (its unacknowledged tail set aside) and rejoins the in-sync set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Member, free_udp_ports, member_env};
use crate::harness::{TestNode, wait_for};

const DB: &str = "failover";
const DEADLINE: Duration = Duration::from_secs(60);

/// One acknowledged write: its epoch and the node that answered it.
#[derive(Debug, Clone)]
struct Ack {
    epoch: u64,
    served_by: String,
}

/// Writers of fresh ids through `entry` (a reader, which forwards to whoever is primary), each
/// id sent once (no retry: an ambiguous answer must not become a duplicate), until `stop`.
fn load(
    entry: &TestNode,
    clients: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u64, Ack>>>,
) -> tokio::task::JoinHandle<()> {
    let client = entry.client.clone();
    let url = entry.url("/api/v1/write/line-protocol");
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let (client, url, stop, acked) =
                (client.clone(), url.clone(), stop.clone(), acked.clone());
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
                                served_by: header("x-arc-served-by"),
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

/// kill -9 of the primary under load, several times: a standby takes over each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kill_9_of_the_primary_under_load_loses_nothing() {
    const DRILLS: usize = 10;
    let ports = free_udp_ports(4);
    let storage = tempfile::tempdir().unwrap();
    let cluster = format!("failover-{}", rand::random::<u32>());
    let ids = ["w1", "w2", "w3", "r1"];
    let mut nodes: BTreeMap<&str, TestNode> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let member = Member {
            id: id.to_string(),
            role: if id.starts_with('w') {
                "writer"
            } else {
                "reader"
            },
            gossip_port: ports[i],
        };
        let mut node = TestNode::prepare_owned({
            let mut env = member_env(&cluster, &member, &ports[..1], storage.path());
            env.push(("RUST_LOG".into(), "info,arc_node::replication=debug".into()));
            env
        });
        node.spawn().await;
        nodes.insert(id, node);
    }
    let reader = nodes.remove("r1").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let writers = load(&reader, 4, stop.clone(), acked.clone());
    let acked_in = |epoch: u64| {
        acked
            .lock()
            .unwrap()
            .values()
            .filter(|ack| ack.epoch == epoch)
            .count()
    };
    let mut recoveries = Vec::new();
    for drill in 0..DRILLS {
        // Both standbys in sync, load flowing.
        let (primary, epoch) = wait_for("a primary", DEADLINE, || primary_of(&reader)).await;
        wait_for("writes in the current epoch", DEADLINE, || async {
            (acked_in(epoch) > 50).then_some(())
        })
        .await;
        // Asked of the primary, which commits the in-sync set (a reader's copy of the catalog
        // may be a few seconds old).
        let current = &nodes[primary.as_str()];
        wait_for("both standbys in sync", DEADLINE, || async {
            let isr = get_json(current, "/api/v1/cluster/nodes").await?;
            let in_sync = isr["data"]
                .as_array()?
                .iter()
                .filter(|node| node["in_sync"] == true)
                .count();
            (in_sync == 3).then_some(())
        })
        .await;
        let killed = Instant::now();
        nodes.get_mut(primary.as_str()).unwrap().kill9();
        let (new_primary, new_epoch) = loop {
            if let Some((primary_now, epoch_now)) = primary_of(&reader).await
                && epoch_now > epoch
                && primary_now != primary
            {
                break (primary_now, epoch_now);
            }
            if killed.elapsed() > DEADLINE {
                for (id, node) in &nodes {
                    eprintln!("---- {id} ----\n{}", node.log());
                }
                panic!("drill {drill}: no standby took over from {primary} (epoch {epoch})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        wait_for(
            "a write acknowledged in the new epoch",
            DEADLINE,
            || async { (acked_in(new_epoch) > 0).then_some(()) },
        )
        .await;
        recoveries.push(killed.elapsed());
        eprintln!(
            "drill {drill}: {primary} (epoch {epoch}) -> {new_primary} (epoch {new_epoch}) in {:?}",
            killed.elapsed()
        );
        // The killed node restarts as a standby.
        let restarted = nodes.get_mut(primary.as_str()).unwrap();
        restarted.spawn().await;
        let local = get_json(restarted, "/api/v1/cluster/local").await.unwrap();
        assert_eq!(local["data"]["primary"], false, "{local}");
    }
    let (primary, _) = primary_of(&reader).await.unwrap();
    wait_for("writes after the last drill", DEADLINE, || async {
        let last = acked
            .lock()
            .unwrap()
            .values()
            .map(|ack| ack.epoch)
            .max()
            .unwrap_or(0);
        (acked_in(last) > 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writers.await.unwrap();
    let acked = std::mem::take(&mut *acked.lock().unwrap());

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
    nodes[primary.as_str()].flush().await;
    let rows = wait_for("the reader to answer", DEADLINE, || async {
        let (status, body) = reader
            .query_raw(&format!("SELECT id, count(*) FROM {DB}.fo GROUP BY id"))
            .await;
        (status == 200).then_some(body)
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
        let on_primary = nodes[primary.as_str()]
            .query_raw(&format!(
                "SELECT id FROM {DB}.fo WHERE id IN ({})",
                lost.iter()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .await;
        let epochs: Vec<_> = lost.iter().map(|id| (**id, acked[*id].clone())).collect();
        for (id, node) in &nodes {
            eprintln!("---- {id} ----\n{}", node.log());
        }
        eprintln!("---- reader ----\n{}", reader.log());
        panic!(
            "acknowledged but lost: {epochs:?} of {}; on the primary: {on_primary:?}",
            acked.len()
        );
    }
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

/// The old primary's unacknowledged tail: the primary syncs a write to its own WAL and dies
/// before any standby got it (a failpoint between the sync and the stream). A standby takes
/// over with a fence below that entry. The old primary, restarted, cuts its WAL back to the
/// fence (the old directory kept aside), follows the new primary and gets back in sync; the
/// unacknowledged row is never shown anywhere, every acknowledged row is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_restarted_old_primary_drops_its_unacknowledged_tail() {
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
    std::fs::write(&release, b"").unwrap();
    nodes.get_mut("w1").unwrap().spawn().await;
    let log = nodes["w1"].log();
    assert!(
        log.contains("rebuilt with its entries up to the fence"),
        "the old primary cut its wal back to the fence; log:\n{log}"
    );
    assert!(
        nodes["w1"].dir.join("wal.diverged-epoch-2").is_dir(),
        "the old wal is kept aside"
    );
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
                (1..=20).all(|row| ids.contains(&row)).then_some(())
            })
            .await;
        }
    }
}
