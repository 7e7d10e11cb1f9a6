//! Lifecycle under systemd: the notify protocol and the SIGTERM drain, through the real binary.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::TestNode;

/// Receives notify datagrams until one contains `wanted`; returns everything received.
async fn receive_until(socket: &UnixDatagram, wanted: &str, deadline: Duration) -> Vec<String> {
    let socket = socket.try_clone().expect("cloning the notify socket");
    let wanted = wanted.to_string();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut received = Vec::new();
        let mut buffer = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "no {wanted:?} within {deadline:?}; got {received:?}"
            );
            socket
                .set_read_timeout(Some(left))
                .expect("setting the read timeout");
            let length = match socket.recv(&mut buffer) {
                Ok(length) => length,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(error) if error.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(error) => panic!("reading the notify socket: {error}"),
            };
            let datagram = String::from_utf8_lossy(&buffer[..length]).into_owned();
            let done = datagram.lines().any(|line| line == wanted);
            received.push(datagram);
            if done {
                return received;
            }
        }
    })
    .await
    .expect("notify reader task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_notify_ready_after_replay_and_flush_acknowledged_rows_on_sigterm() {
    let socket_dir = tempfile::tempdir().expect("temp dir for the notify socket");
    let socket_path = socket_dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
    let socket_text = socket_path.display().to_string();
    // Buffers that never flush on their own: only the drain can put the rows in Parquet.
    let mut node = TestNode::prepare(&[
        ("NOTIFY_SOCKET", socket_text.as_str()),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
        ("ARC_INGEST_MAX_BUFFER_SIZE", "10000000"),
    ]);
    node.spawn_only();

    let before_ready = receive_until(&socket, "READY=1", Duration::from_secs(60)).await;
    // READY=1 is sent only once the node is ready, so the very first /ready must say 200.
    // The port file is written when the listener is bound, before READY=1.
    let port = std::fs::read_to_string(node.dir.join("port")).expect("port file before READY=1");
    node.addr = Some(port.trim().parse().expect("port file holds an address"));
    let ready = node
        .client
        .get(node.url("/ready"))
        .send()
        .await
        .expect("GET /ready");
    assert_eq!(ready.status(), 200, "READY=1 came before /ready turned 200");
    assert!(
        before_ready.iter().any(|d| d.contains("STATUS=")),
        "READY=1 carries a STATUS= line: {before_ready:?}"
    );

    let lines: String = (0..500)
        .map(|i| {
            format!(
                "drain,host=h{} value={i}i {}\n",
                i % 7,
                1_785_542_400_000_000_000i64 + i
            )
        })
        .collect();
    node.write_lp("default", &lines).await;
    assert_eq!(
        node.parquet_files(),
        0,
        "nothing is flushed before the stop"
    );

    let status = node.stop().await;
    let stopping = receive_until(&socket, "STOPPING=1", Duration::from_secs(5)).await;
    assert!(!stopping.is_empty());
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; log:\n{}",
        node.log()
    );
    assert!(
        node.parquet_files() > 0,
        "the drain wrote Parquet; log:\n{}",
        node.log()
    );
    // stderr went to a file, as under systemd to the journal: no terminal colour codes.
    assert!(
        !node.log().contains('\u{1b}'),
        "the log holds escape codes:\n{}",
        node.log()
    );

    // Without the WAL, only what the catalog committed can come back.
    std::fs::remove_dir_all(node.dir.join("wal")).expect("removing the wal");
    node.spawn().await;
    let rows = node
        .query("SELECT count(*) AS n, sum(value) AS s FROM drain")
        .await;
    assert_eq!(
        rows[0][0], 500,
        "every acknowledged row was committed before exit"
    );
    assert_eq!(rows[0][1], (0..500).sum::<i64>());
}
