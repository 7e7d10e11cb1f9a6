//! `arc-node wal dump` through the real binary: on the WAL of a running node (no lock needed),
//! then of a node killed with SIGKILL under load, where every acknowledged LSN (the `x-arc-lsn`
//! of each 204) must be listed with its tables and row counts, and no byte may change; then on
//! a damaged log, which is reported with its segment and offset, never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;

use crate::harness::{TestNode, wait_for};

/// What an acknowledged write put in its entry: rows per `database.measurement`.
type Tables = BTreeMap<String, u64>;

/// Runs `arc-node wal dump` with `args`; returns exit code, stdout and stderr. Bounded: a
/// regression that makes it hang (or serve) fails the test instead of the suite.
fn run_dump(args: &[&str]) -> (i32, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_arc-node"))
        .arg("wal")
        .arg("dump")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // A broken configuration must not matter to a tool that reads files only.
        .env("ARC_SERVER_PORT", "not-a-port")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running arc-node wal dump");
    let pid = child.id();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let Ok(output) = outcome.recv_timeout(Duration::from_secs(60)) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("arc-node wal dump {args:?} did not exit within 60 s");
    };
    let output = output.expect("waiting for arc-node wal dump");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "wal dump panicked: {stderr}");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        stderr,
    )
}

fn dump_json(wal: &Path, extra: &[&str]) -> (i32, Value, String) {
    let dir = wal.to_str().expect("utf-8 path");
    let mut args = vec!["--dir", dir, "--json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run_dump(&args);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("wal dump printed no JSON ({error}): {stdout}{stderr}"));
    (code, json, stderr)
}

/// Every file of `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("reading the wal dir")
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let bytes = std::fs::read(&path).expect("reading a wal file");
            (path, bytes)
        })
        .collect()
}

/// The body of request `seq` of `writer`, and the rows it writes per table: 1 to 7 rows of
/// `cpu`, every fifth request one row of `mem` too, and every twentieth a few hundred KB more
/// of `cpu` so that the 1 MB segments rotate.
fn request(writer: u64, seq: u64) -> (String, Tables) {
    let mut body = String::new();
    let mut tables = Tables::new();
    let big = seq % 20 == 7;
    let rows = if big { 1_500 } else { 1 + seq % 7 };
    let note = if big { "n".repeat(200) } else { String::new() };
    for row in 0..rows {
        body.push_str(&format!(
            "cpu,writer=w{writer} seq={seq}i,row={row}i,note=\"{note}\" {}\n",
            1_700_000_000_000_000_000u64 + writer * 1_000_000_000 + seq * 10_000 + row
        ));
    }
    tables.insert("dumpdb.cpu".into(), rows);
    if seq.is_multiple_of(5) {
        body.push_str(&format!(
            "mem,writer=w{writer} free={seq}i {}\n",
            1_700_000_000_000_000_000u64 + seq
        ));
        tables.insert("dumpdb.mem".into(), 1);
    }
    (body, tables)
}

/// Writers that send requests until stopped, recording each acknowledged write's LSN.
struct Load {
    acked: Arc<Mutex<BTreeMap<u64, Tables>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_load(node: &TestNode, writers: u64) -> Load {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let url = node.url("/api/v1/write/line-protocol");
    let tasks = (0..writers)
        .map(|writer| {
            let (client, url) = (node.client.clone(), url.clone());
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            tokio::spawn(async move {
                for seq in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let (body, tables) = request(writer, seq);
                    let Ok(response) = client
                        .post(&url)
                        .header("x-arc-database", "dumpdb")
                        .body(body)
                        .send()
                        .await
                    else {
                        // The kill cut this request off: not acknowledged.
                        return;
                    };
                    if response.status() != 204 {
                        return;
                    }
                    let lsn: u64 = response
                        .headers()
                        .get("x-arc-lsn")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse().ok())
                        .expect("every 204 carries x-arc-lsn");
                    let previous = acked.lock().await.insert(lsn, tables);
                    assert!(previous.is_none(), "lsn {lsn} acknowledged twice");
                }
            })
        })
        .collect();
    Load { acked, stop, tasks }
}

async fn acked_count(load: &Load) -> usize {
    load.acked.lock().await.len()
}

#[tokio::test]
async fn test_should_dump_every_acknowledged_lsn_with_tables_and_rows_after_sigkill() {
    // No flush during the test, so the WAL keeps every acknowledged entry.
    let mut node = TestNode::start(&[
        ("ARC_INGEST_MAX_BUFFER_SIZE", "100000000"),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
        ("ARC_WAL_MAX_SIZE_MB", "1"),
    ])
    .await;
    let wal = node.dir.join("wal");
    let load = start_load(&node, 3);
    wait_for(
        "60 acknowledged writes",
        Duration::from_secs(60),
        || async { (acked_count(&load).await >= 60).then_some(()) },
    )
    .await;

    // The running node holds the WAL's lock and keeps appending: the dump needs neither the
    // lock nor a quiet log. Its newest segment may end mid-write (a torn tail, not damage).
    let acked_before = load.acked.lock().await.keys().max().copied();
    let (code, live, stderr) = dump_json(&wal, &[]);
    assert_eq!(code, 0, "dump of a live wal failed: {stderr}\n{live:#}");
    assert!(live.get("entries").is_none(), "entries only when asked");
    assert!(
        live["last_lsn"].as_u64() >= acked_before,
        "the live dump ends at {} before the acknowledged lsn {acked_before:?}",
        live["last_lsn"]
    );

    wait_for(
        "120 acknowledged writes",
        Duration::from_secs(60),
        || async { (acked_count(&load).await >= 120).then_some(()) },
    )
    .await;
    // Killed with requests in flight; the writers end on the connection errors.
    node.kill9();
    load.stop.store(true, Ordering::SeqCst);
    for task in load.tasks {
        task.await.expect("writer task");
    }
    let acked = load.acked.lock().await.clone();

    let before = snapshot(&wal);
    let (code, dump, stderr) = dump_json(&wal, &["--entries"]);
    assert_eq!(code, 0, "{stderr}\n{dump:#}");
    assert_eq!(before, snapshot(&wal), "wal dump changed the wal directory");
    let segments = dump["segments"].as_array().expect("segments");
    assert!(
        segments.len() >= 2,
        "the big requests fill more than one 1 MB segment: {segments:?}"
    );
    for segment in &segments[..segments.len() - 1] {
        assert_eq!(segment["end"]["status"], "clean", "{segment}");
    }
    let listed: BTreeMap<u64, (u64, Tables)> = dump["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| {
            let tables = entry["tables"]
                .as_array()
                .expect("tables")
                .iter()
                .map(|table| {
                    let name = table["table"].as_str().expect("table name").to_string();
                    (name, table["rows"].as_u64().expect("rows"))
                })
                .collect();
            let lsn = entry["lsn"].as_u64().expect("lsn");
            (lsn, (entry["epoch"].as_u64().expect("epoch"), tables))
        })
        .collect();
    assert_eq!(dump["entry_count"].as_u64(), Some(listed.len() as u64));
    assert_eq!(dump["first_lsn"].as_u64(), listed.keys().next().copied());
    assert_eq!(dump["last_lsn"].as_u64(), listed.keys().last().copied());
    let epochs: std::collections::BTreeSet<u64> =
        listed.values().map(|(epoch, _)| *epoch).collect();
    assert_eq!(epochs.len(), 1, "one writer epoch: {epochs:?}");
    assert!(acked.len() >= 120);
    for (lsn, tables) in &acked {
        let Some((_, found)) = listed.get(lsn) else {
            panic!("acknowledged lsn {lsn} is not in the dump");
        };
        assert_eq!(found, tables, "lsn {lsn}");
    }

    // The text form says the same in lines an operator reads.
    let dir = wal.to_str().expect("utf-8 path");
    let (code, text, stderr) = run_dump(&["--dir", dir, "--entries"]);
    assert_eq!(code, 0, "{stderr}");
    let (first_acked, _) = acked.first_key_value().expect("acknowledged writes");
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|line| line.contains(&format!(
                "{} segments, {} entries",
                segments.len(),
                listed.len()
            ))),
        "{text}"
    );
    assert!(
        text.lines().any(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            columns.get(1) == Some(&first_acked.to_string().as_str())
                && columns
                    .iter()
                    .any(|column| column.starts_with("dumpdb.cpu="))
        }),
        "no entry line for lsn {first_acked}: {text}"
    );

    // Damage: a flipped payload byte in the second entry of the oldest segment is reported
    // with its segment and offset, the later segments are still listed, and the exit code
    // says the log is damaged.
    let entries = dump["entries"].as_array().expect("entries");
    let victim = &entries[1];
    let file = victim["segment"].as_str().expect("segment");
    assert_eq!(file, segments[0]["file"].as_str().expect("file"));
    let offset = victim["offset"].as_u64().expect("offset");
    let path = wal.join(file);
    let mut bytes = std::fs::read(&path).expect("reading the segment");
    bytes[offset as usize + 40] ^= 0x5a;
    std::fs::write(&path, bytes).expect("damaging the segment");
    let (code, damaged, stderr) = dump_json(&wal, &["--entries"]);
    assert_eq!(code, 1, "damage must fail the dump: {damaged:#}");
    assert!(stderr.contains(dir), "{stderr}");
    assert_eq!(damaged["segments"][0]["end"]["status"], "damaged");
    assert_eq!(
        damaged["segments"][0]["end"]["offset"].as_u64(),
        Some(offset)
    );
    assert_eq!(damaged["last_lsn"], dump["last_lsn"]);
    let (_, text, _) = run_dump(&["--dir", dir]);
    assert!(
        text.contains(&format!("DAMAGED at offset {offset}")),
        "{text}"
    );

    // A directory that does not exist is named in the error.
    let missing = node.dir.join("no-such-wal");
    let (code, stdout, stderr) = run_dump(&["--dir", missing.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("no-such-wal"), "{stderr}");
}
