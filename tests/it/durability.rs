//! Issue 8 through the real binary: a late flush of the previous incarnation landing between
//! start and promote, a busy table next to a quiet one, a dead WAL writer thread, corruption in
//! the middle of the WAL, and a standby writer holding a WAL it did not write.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_storage::model::{ColumnKind, ColumnSpec, FieldType, schema_of};
use arc_storage::{Catalog, CatalogSettings, FlushMeta, FlushOutcome, TableId};
use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};

use crate::harness::{TestNode, count_files, wait_for, wait_paused};

/// One hour, in nanoseconds.
const HOUR_NS: i64 = 3_600_000_000_000;
/// The start of an hour, so every test row stays inside it (one object per flush).
const BASE_NS: i64 = 1_764_000_000 / 3600 * 3600 * 1_000_000_000;

/// `rows` rows of `durability.load` written by `writer`: tag w, fields seq and v.
fn lines(writer: u64, rows: u64) -> String {
    (0..rows)
        .map(|seq| {
            let time = BASE_NS + (writer * 1_000 + seq) as i64 * 1_000_000;
            format!("load,w={writer} seq={seq}i,v=1.5 {time}\n")
        })
        .collect()
}

/// The same rows as [`lines`], as the Arrow batch a flush of them would encode.
fn batch(writer: u64, rows: u64) -> RecordBatch {
    let columns = [
        ("time", ColumnKind::Time),
        ("w", ColumnKind::Tag),
        ("seq", ColumnKind::Field(FieldType::Integer)),
        ("v", ColumnKind::Field(FieldType::Float)),
    ]
    .map(|(name, kind)| ColumnSpec {
        name: name.into(),
        kind,
    });
    let times: Vec<i64> = (0..rows)
        .map(|seq| BASE_NS + (writer * 1_000 + seq) as i64 * 1_000_000)
        .collect();
    RecordBatch::try_new(
        schema_of(&columns),
        vec![
            Arc::new(TimestampNanosecondArray::from(times)),
            Arc::new(StringArray::from(vec![writer.to_string(); rows as usize])),
            Arc::new(Int64Array::from((0..rows as i64).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(vec![1.5; rows as usize])),
        ],
    )
    .expect("a valid batch")
}

/// Rows per writer, asserting that no (w, seq) is stored twice.
async fn rows_per_writer(node: &TestNode) -> BTreeMap<String, u64> {
    let duplicates = node
        .query("SELECT w, seq FROM durability.load GROUP BY w, seq HAVING count(*) > 1")
        .await;
    assert!(duplicates.is_empty(), "rows stored twice: {duplicates:?}");
    node.query("SELECT w, count(*) FROM durability.load GROUP BY w ORDER BY w")
        .await
        .into_iter()
        .map(|row| {
            (
                row[0].as_str().expect("w").to_string(),
                row[1].as_u64().expect("count"),
            )
        })
        .collect()
}

const NO_FLUSH: [(&str, &str); 2] = [
    ("ARC_INGEST_MAX_BUFFER_SIZE", "1000000"),
    ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
];

/// Defect 2: the previous incarnation's last flush lands after the new one read the catalog at
/// start but before it promoted. Replay must see that flush (it reads the catalog after the
/// promote), or those rows are flushed twice.
#[tokio::test]
async fn test_should_not_replay_rows_a_late_flush_committed_before_the_promote() {
    let mut node = TestNode::start(&NO_FLUSH).await;
    node.write_lp("durability", &lines(1, 40)).await;
    node.write_lp("durability", &lines(2, 30)).await;
    node.kill9();

    let release = node.dir.join("release-promote");
    let spec = format!("writer-before-promote=pause:{}", release.display());
    let mut env = NO_FLUSH.to_vec();
    env.push(("ARC_FAILPOINTS", spec.as_str()));
    node.set_env(&env);
    node.spawn_only();
    wait_paused(&release, 1).await;

    // In the window: the first write's flush, by the previous incarnation (epoch 1, LSN 1),
    // lands in the catalog.
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(node.dir.join("storage"))
            .expect("local store"),
    );
    let catalog = Catalog::open(store.clone(), CatalogSettings::default())
        .await
        .expect("catalog");
    assert_eq!(catalog.snapshot().epoch, 1);
    let table = TableId::new("durability", "load");
    let meta = FlushMeta {
        epoch: 1,
        lsn_first: 1,
        lsn_last: 1,
        node_id: "test-node".into(),
    };
    let objects = arc_storage::encode_table_objects(&table, &[batch(1, 40)], &meta).unwrap();
    let outcome = arc_storage::upload_and_commit(store.as_ref(), &catalog, &table, objects, &meta)
        .await
        .expect("the late flush commits");
    assert!(matches!(outcome, FlushOutcome::Committed { .. }));

    std::fs::write(&release, b"").unwrap();
    node.wait_ready().await;
    let expected: BTreeMap<String, u64> = [("1".to_string(), 40), ("2".to_string(), 30)].into();
    assert_eq!(rows_per_writer(&node).await, expected, "before the flush");
    node.flush().await;
    assert_eq!(rows_per_writer(&node).await, expected, "after the flush");
    node.set_env(&NO_FLUSH);
    let _ = node.stop().await;
    node.spawn().await;
    assert_eq!(rows_per_writer(&node).await, expected, "after a restart");
}

/// Defect 3: a table written without pause must not keep one flush round going (an object per
/// turn) while a quiet table waits past its age.
#[tokio::test]
async fn test_should_flush_a_quiet_table_on_time_next_to_a_busy_one() {
    const MAX_AGE: Duration = Duration::from_millis(200);
    const BUSY_FOR: Duration = Duration::from_secs(8);
    let node = TestNode::start(&[("ARC_INGEST_MAX_BUFFER_AGE_MS", "200")]).await;
    let url = node.url("/api/v1/write/line-protocol");
    let running = Arc::new(AtomicBool::new(true));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..4u64 {
        let (client, url, running) = (node.client.clone(), url.clone(), running.clone());
        writers.spawn(async move {
            let mut written = 0u64;
            while running.load(Ordering::Relaxed) {
                let time = BASE_NS + (writer * 1_000_000 + written) as i64;
                let response = client
                    .post(&url)
                    .header("x-arc-database", "durability")
                    .body(format!("hot,w={writer} v={written}i {time}"))
                    .send()
                    .await
                    .expect("write");
                assert_eq!(response.status(), 204);
                written += 1;
            }
            written
        });
    }
    let busy_since = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.write_lp("durability", &format!("cold v=1 {}", BASE_NS + HOUR_NS / 2))
        .await;
    let written_cold = Instant::now();
    let cold_dir = node.dir.join("storage/durability/cold");
    // Its age (200 ms) plus a few flusher ticks and one round of the busy table, with slack for
    // a loaded machine; before the fix it waited until the writers stopped (7 s later).
    wait_for(
        "the quiet table's flush",
        Duration::from_secs(4),
        || async { (count_files(&cold_dir, "parquet") > 0).then_some(()) },
    )
    .await;
    let cold_latency = written_cold.elapsed();
    let remaining = BUSY_FOR.saturating_sub(busy_since.elapsed());
    tokio::time::sleep(remaining).await;
    running.store(false, Ordering::Relaxed);
    let mut hot_rows = 0;
    while let Some(written) = writers.join_next().await {
        hot_rows += written.expect("writer task");
    }
    let busy = busy_since.elapsed();
    let hot_objects = count_files(&node.dir.join("storage/durability/hot"), "parquet");
    // One object per max age, with slack for the flushes a full buffer or timing adds.
    let bound = (busy.as_millis() / MAX_AGE.as_millis()) as usize * 2 + 5;
    assert!(
        hot_objects <= bound,
        "{hot_objects} objects for {hot_rows} rows in {busy:?} (bound {bound})"
    );
    assert!(hot_rows > 100, "the busy table was busy: {hot_rows} rows");
    eprintln!("quiet table flushed after {cold_latency:?}; busy table: {hot_objects} objects");
}

/// Defect 6: a WAL writer thread that dies must stop the node (systemd restarts it), not leave
/// it answering 503 to every write while it reports ready.
#[tokio::test]
async fn test_should_stop_the_node_when_the_wal_writer_thread_dies() {
    let mut node = TestNode::start(&[("ARC_FAILPOINTS", "wal-writer=panic")]).await;
    let (status, _) = node
        .post(
            "/api/v1/write/line-protocol",
            &[("x-arc-database", "durability")],
            b"load v=1 1".to_vec(),
        )
        .await;
    assert_eq!(status, 503, "the write was not acknowledged");
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "exit status {status}");
    let log = node.log();
    assert!(log.contains("writer thread died"), "log:\n{log}");
}

fn segments(wal_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(wal_dir)
        .expect("wal dir")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "wal"))
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().to_string(),
                std::fs::read(entry.path()).expect("segment"),
            )
        })
        .collect()
}

/// Defect 5: a bad CRC with valid entries after it is not a torn tail. The node refuses to
/// start, names the segment and offset and changes no byte; the operator's override starts
/// from the intact prefix and keeps a copy of the damaged segment.
#[tokio::test]
async fn test_should_refuse_to_start_on_corruption_in_the_middle_of_the_wal() {
    let mut node = TestNode::start(&NO_FLUSH).await;
    let wal_dir = node.dir.join("wal");
    node.write_lp("durability", &lines(1, 20)).await;
    let (name, bytes) = segments(&wal_dir)
        .into_iter()
        .next_back()
        .expect("a segment");
    let first_entry_end = bytes.len();
    node.write_lp("durability", &lines(2, 20)).await;
    node.write_lp("durability", &lines(3, 20)).await;
    node.kill9();

    let path = wal_dir.join(&name);
    let mut damaged = std::fs::read(&path).unwrap();
    let flip_at = first_entry_end + 40;
    damaged[flip_at] ^= 0x5a;
    std::fs::write(&path, &damaged).unwrap();
    let before = segments(&wal_dir);

    node.spawn_only();
    let status = node.wait_exit(Duration::from_secs(60)).await;
    assert!(!status.success(), "refused to start");
    let log = node.log();
    assert!(log.contains(&name), "names the segment; log:\n{log}");
    assert!(
        log.contains("truncate_corrupt"),
        "names the override; log:\n{log}"
    );
    assert_eq!(segments(&wal_dir), before, "no byte changed");

    let mut env = NO_FLUSH.to_vec();
    env.push(("ARC_WAL_TRUNCATE_CORRUPT", "true"));
    node.set_env(&env);
    node.spawn().await;
    let expected: BTreeMap<String, u64> = [("1".to_string(), 20)].into();
    assert_eq!(rows_per_writer(&node).await, expected);
    let copies: Vec<Vec<u8>> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains("corrupt"))
        .map(|entry| std::fs::read(entry.path()).unwrap())
        .collect();
    assert!(
        copies.iter().any(|copy| copy == &damaged),
        "the damaged bytes are kept in a copy"
    );
}

/// Defect 7: a writer that comes up standby (here: its node id changed, so the catalog names
/// another primary) holds a WAL with acknowledged, unflushed rows. It says so loudly at start
/// and leaves every byte in place (it opens the WAL to follow the primary, and deletes only
/// what the primary's flushes cover).
#[tokio::test]
async fn test_should_report_a_standby_wal_written_under_another_node_id() {
    let ports = crate::cluster::free_udp_ports(2);
    let storage = tempfile::tempdir().unwrap();
    let env = |id: &str, port: u16| {
        let mut env = crate::cluster::writer_env(id, port, storage.path());
        env.extend(NO_FLUSH.map(|(key, value)| (key.to_string(), value.to_string())));
        env
    };
    let mut node = TestNode::prepare_owned(env("writer-a", ports[0]));
    node.spawn().await;
    node.write_lp("durability", &lines(1, 20)).await;
    node.kill9();
    let wal_dir = node.dir.join("wal");
    let before = segments(&wal_dir);
    assert!(!before.is_empty());

    // The same machine and directories after a host name change.
    let renamed: Vec<(String, String)> = env("writer-b", ports[1]);
    let renamed: Vec<(&str, &str)> = renamed
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    node.set_env(&renamed);
    node.spawn().await;
    let log = node.log();
    assert!(
        log.contains("WRITTEN BY ANOTHER NODE ID") && log.contains("writer-a"),
        "log:\n{log}"
    );
    assert!(
        log.contains("STANDBY WRITER'S WRITE-AHEAD LOG HOLDS ENTRIES"),
        "log:\n{log}"
    );
    // It opened its WAL to follow the primary's stream (recovery added an empty segment),
    // and kept every byte that was there.
    let after = segments(&wal_dir);
    for (name, bytes) in &before {
        assert_eq!(
            after.get(name),
            Some(bytes),
            "the standby kept segment {name} as it was"
        );
    }
}
