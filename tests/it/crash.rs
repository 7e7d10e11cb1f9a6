//! Crash safety through the real binary: SIGKILL under concurrent load, crashes at the flush's
//! failpoints, a torn WAL tail and a flipped CRC byte. Every acknowledged row must be there
//! exactly once after the restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::harness::{TestNode, wait_for};

/// Rows per write request in the load tests.
const ROWS_PER_WRITE: u64 = 50;

fn batch(writer: u64, first_seq: u64) -> String {
    (first_seq..first_seq + ROWS_PER_WRITE)
        .map(|seq| {
            // A distinct timestamp per row, spread over two hours so flushes split files.
            let time = 1_700_000_000_000_000_000i64 + (seq as i64 * 7_000_000_000) + writer as i64;
            format!("load,w={writer} seq={seq}i,v={}.5 {time}\n", seq % 97)
        })
        .collect()
}

/// Reads every (w, seq) pair and asserts none appears twice.
async fn stored_rows(node: &TestNode) -> BTreeSet<(u64, u64)> {
    let duplicates = node
        .query("SELECT w, seq, count(*) AS c FROM crash.load GROUP BY w, seq HAVING count(*) > 1")
        .await;
    assert!(duplicates.is_empty(), "duplicated rows: {duplicates:?}");
    node.query("SELECT w, seq FROM crash.load")
        .await
        .into_iter()
        .map(|row| {
            let writer: u64 = row[0].as_str().and_then(|w| w.parse().ok()).expect("w tag");
            let seq = row[1].as_u64().expect("seq");
            (writer, seq)
        })
        .collect()
}

/// A writer's request: its writer and the `seq`s of its rows.
type Request = (u64, std::ops::Range<u64>);

/// Writers still running against a node: what they got acknowledged, and the requests that
/// were in flight (sent, never answered) when they stopped.
struct Load {
    acked: Arc<Mutex<BTreeSet<(u64, u64)>>>,
    in_flight: Arc<Mutex<Vec<Request>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    /// Waits for every writer to end (they end on the connection errors a kill causes); a
    /// writer that panicked (a refused write) fails the test here rather than vanishing.
    async fn join(&mut self) {
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = joined {
                if error.is_panic() {
                    std::panic::resume_unwind(error.into_panic());
                }
                panic!("writer task failed: {error}");
            }
        }
    }
}

/// Starts `writers` concurrent writers and returns once `target_rows` are acknowledged, with
/// the writers still running. A write that fails (the node died) is recorded as in flight:
/// it may or may not have been applied, but never in part.
async fn load_until(node: &TestNode, writers: std::ops::Range<u64>, target_rows: usize) -> Load {
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let in_flight = Arc::new(Mutex::new(Vec::new()));
    let url = node.url("/api/v1/write/line-protocol");
    let mut tasks = tokio::task::JoinSet::new();
    for writer in writers {
        let acked = acked.clone();
        let in_flight = in_flight.clone();
        let url = url.clone();
        let client = node.client.clone();
        tasks.spawn(async move {
            let mut seq = 0;
            loop {
                let body = batch(writer, seq);
                let response = client
                    .post(&url)
                    .header("x-arc-database", "crash")
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == 204 => {
                        let mut acked = acked.lock().await;
                        for row_seq in seq..seq + ROWS_PER_WRITE {
                            acked.insert((writer, row_seq));
                        }
                    }
                    Ok(response) => panic!("write refused: {}", response.status()),
                    Err(_) => {
                        in_flight
                            .lock()
                            .await
                            .push((writer, seq..seq + ROWS_PER_WRITE));
                        return;
                    }
                }
                seq += ROWS_PER_WRITE;
            }
        });
    }
    let probe = acked.clone();
    wait_for("enough acknowledged rows", Duration::from_secs(120), || {
        let probe = probe.clone();
        async move { (probe.lock().await.len() >= target_rows).then_some(()) }
    })
    .await;
    Load {
        acked,
        in_flight,
        tasks,
    }
}

#[tokio::test]
async fn test_should_keep_every_acknowledged_row_once_after_sigkill_under_load() {
    // Small buffers so flushes (and WAL trimming) happen while the load runs.
    let mut node = TestNode::start(&[
        ("ARC_INGEST_MAX_BUFFER_SIZE", "700"),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "50"),
        ("ARC_WAL_MAX_SIZE_MB", "1"),
    ])
    .await;
    let mut all_acked = BTreeSet::new();
    let mut in_flight_total = 0;
    for round in 0..2u64 {
        let files_before = node.parquet_files();
        let mut load = load_until(&node, round * 100..round * 100 + 8, 6_000).await;
        // The kill must find both flushed rows (files) and rows only in the WAL.
        wait_for(
            "a flush during the load",
            Duration::from_secs(60),
            || async { (node.parquet_files() > files_before).then_some(()) },
        )
        .await;
        // The kill lands while all writers have requests in flight; they end on the
        // connection errors that follow.
        node.kill9();
        load.join().await;
        all_acked.extend(load.acked.lock().await.iter().copied());
        node.spawn().await;
        let stored = stored_rows(&node).await;
        let missing: Vec<_> = all_acked.difference(&stored).take(10).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged rows lost: {missing:?}"
        );
        // A request the kill cut off is all or nothing.
        for (writer, seqs) in load.in_flight.lock().await.iter() {
            let present = seqs
                .clone()
                .filter(|seq| stored.contains(&(*writer, *seq)))
                .count();
            assert!(
                present == 0 || present == seqs.clone().count(),
                "round {round}: writer {writer}'s cut-off request {seqs:?} is partly stored ({present} rows)"
            );
            in_flight_total += 1;
        }
        // Rows of cut-off requests that did land count as acknowledged from now on.
        all_acked.extend(stored);
    }
    assert!(in_flight_total > 0, "the kills cut off requests in flight");
}

#[tokio::test]
async fn test_should_recover_from_crashes_at_each_flush_failpoint() {
    for failpoint in ["flush-before-commit", "flush-after-commit"] {
        let mut node = TestNode::start(&[
            ("ARC_INGEST_MAX_BUFFER_SIZE", "1000000"),
            ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
        ])
        .await;
        let mut expected = BTreeSet::new();
        for writer in 0..4 {
            node.write_lp("crash", &batch(writer, 0)).await;
            expected.extend((0..ROWS_PER_WRITE).map(|seq| (writer, seq)));
        }
        // Restart with the failpoint armed; the replayed rows are flushed and the process
        // aborts at the failpoint.
        let _ = node.stop().await;
        let spec = format!("{failpoint}=abort");
        node.set_env(&[
            ("ARC_INGEST_MAX_BUFFER_SIZE", "1000000"),
            ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
            ("ARC_FAILPOINTS", spec.as_str()),
        ]);
        node.spawn().await;
        node.write_lp("crash", &batch(9, 0)).await;
        expected.extend((0..ROWS_PER_WRITE).map(|seq| (9, seq)));
        // The process aborts while answering, so the request itself may fail.
        let _ = node
            .client
            .post(node.url("/api/v1/write/line-protocol/flush"))
            .send()
            .await;
        let status = node.wait_exit(Duration::from_secs(30)).await;
        assert!(
            !status.success(),
            "{failpoint}: the failpoint aborted the process"
        );
        node.set_env(&[]);
        node.spawn().await;
        assert_eq!(stored_rows(&node).await, expected, "{failpoint}");
        // And once more after a clean flush.
        node.flush().await;
        assert_eq!(
            stored_rows(&node).await,
            expected,
            "{failpoint} after flush"
        );
    }
}

/// A flush round of six chunks whose second fails to commit: the chunks encoded ahead of it
/// are not committed past it (that would make it look flushed, and its rows would be
/// dropped), and the next round flushes the rest. Every row is there once, from the store
/// alone and after a restart.
#[tokio::test]
async fn test_should_flush_every_chunk_once_after_one_fails_mid_round() {
    const WRITES: u64 = 6;
    let held = [
        ("ARC_INGEST_MAX_BUFFER_SIZE", "1000000"),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
    ];
    // Above the size under which the buffers merge small writes into one batch.
    const ROWS: u64 = 6 * ROWS_PER_WRITE;
    let mut node = TestNode::start(&held).await;
    let mut expected = BTreeSet::new();
    for writer in 0..WRITES {
        let body: String = (0..ROWS / ROWS_PER_WRITE)
            .map(|part| batch(writer, part * ROWS_PER_WRITE))
            .collect();
        node.write_lp("crash", &body).await;
        expected.extend((0..ROWS).map(|seq| (writer, seq)));
    }
    // Nothing flushed yet: after the restart one round finds all six writes, one chunk each.
    node.kill9();
    let chunk_rows = ROWS.to_string();
    node.set_env(&[
        ("ARC_INGEST_MAX_BUFFER_SIZE", chunk_rows.as_str()),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
        ("ARC_FAILPOINTS", "flush-commit=fail-on:2"),
    ]);
    node.spawn().await;
    wait_for("every chunk flushed", Duration::from_secs(30), || async {
        let failed =
            crate::cluster::metric_sum(&node, "arc_flush_total", "outcome=\"error\"").await;
        let buffered = crate::cluster::metric_sum(&node, "arc_buffer_bytes ", "").await;
        (failed >= 1.0 && buffered == 0.0).then_some(())
    })
    .await;
    let committed = crate::cluster::metric_sum(&node, "arc_flush_total", "outcome=\"ok\"").await;
    assert_eq!(committed, WRITES as f64, "each chunk committed once");
    assert_eq!(stored_rows(&node).await, expected, "from the store");
    node.kill9();
    node.set_env(&held);
    node.spawn().await;
    assert_eq!(stored_rows(&node).await, expected, "after a restart");
}

fn newest_segment(wal_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(wal_dir)
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a wal segment")
}

#[tokio::test]
async fn test_should_survive_torn_tail_and_flipped_crc_without_losing_earlier_entries() {
    let mut node = TestNode::start(&[
        ("ARC_INGEST_MAX_BUFFER_SIZE", "1000000"),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
    ])
    .await;
    let wal_dir = node.dir.join("wal");
    node.write_lp("crash", &batch(1, 0)).await;
    let segment = newest_segment(&wal_dir);
    let length_after_first = std::fs::metadata(&segment).unwrap().len();
    node.write_lp("crash", &batch(2, 0)).await;
    node.kill9();

    // Flip one byte inside the second entry: it is dropped, the first is kept.
    let mut bytes = std::fs::read(&segment).unwrap();
    let flip_at = length_after_first as usize + 40;
    assert!(flip_at < bytes.len());
    bytes[flip_at] ^= 0x5a;
    std::fs::write(&segment, &bytes).unwrap();
    node.spawn().await;
    let expected: BTreeSet<(u64, u64)> = (0..ROWS_PER_WRITE).map(|seq| (1, seq)).collect();
    assert_eq!(stored_rows(&node).await, expected);

    // A torn tail (half an entry of garbage) is cut off; new writes continue after it.
    node.write_lp("crash", &batch(3, 0)).await;
    node.kill9();
    let segment = newest_segment(&wal_dir);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(&mut file, &[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .unwrap();
    drop(file);
    node.spawn().await;
    node.write_lp("crash", &batch(4, 0)).await;
    node.kill9();
    node.spawn().await;
    let mut expected = expected;
    expected.extend((0..ROWS_PER_WRITE).map(|seq| (3, seq)));
    expected.extend((0..ROWS_PER_WRITE).map(|seq| (4, seq)));
    assert_eq!(stored_rows(&node).await, expected);
    let log = node.log();
    assert!(!log.contains("panicked"), "no panic; log:\n{log}");
}
