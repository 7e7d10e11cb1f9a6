//! Multi-process harness: starts the real `arc-node` binary on loopback with its own
//! directories and `ARC_*` environment, waits for readiness with deadlines, and crashes
//! (SIGKILL), stops (SIGTERM) or restarts it. Each node's log goes to `node.log` in its
//! directory and is printed when a wait times out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use serde_json::Value;

/// The admin token every test node is bootstrapped with; [`TestNode::client`] sends it.
pub const ADMIN_TOKEN: &str = "arc-test-admin-token-0123456789abcdefghij";

/// An HTTP client that sends `token` as a bearer token on every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .expect("token is a valid header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("building the http client")
}

/// Reports that the calling test skipped itself, on the process's real stderr: the test
/// harness captures `eprintln!` of passing tests, which would hide the skip from CI's output.
/// Returns nothing; the caller returns right after.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("\nSKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// How many processes are paused at a `pause:<release>` failpoint (see `src/failpoints.rs`).
pub fn paused_at(release: &Path) -> usize {
    let (Some(dir), Some(name)) = (release.parent(), release.file_name()) else {
        return 0;
    };
    let prefix = format!("{}.reached.", name.to_string_lossy());
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until `count` processes are paused at the failpoint released by `release`.
pub async fn wait_paused(release: &Path, count: usize) {
    wait_for(
        &format!("{count} processes paused at {}", release.display()),
        READY_DEADLINE,
        || async { (paused_at(release) >= count).then_some(()) },
    )
    .await;
}

/// How long a node may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some` or the deadline passes.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running (or stopped) arc-node process.
pub struct TestNode {
    child: Option<Child>,
    /// The node's own directory (WAL, storage, cache, log).
    pub dir: PathBuf,
    /// Extra environment given at start (kept for restarts).
    env: Vec<(String, String)>,
    /// The bound HTTP address, once started.
    pub addr: Option<SocketAddr>,
    /// HTTP client that sends [`ADMIN_TOKEN`].
    pub client: reqwest::Client,
    /// Network namespace the process runs in (`ip netns exec`), and the IP the test reaches
    /// its API at from outside (the port file holds the bound, possibly wildcard, address).
    netns: Option<(String, std::net::IpAddr)>,
    _temp: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts a node in a fresh temporary directory with extra `ARC_*` variables.
    pub async fn start(env: &[(&str, &str)]) -> TestNode {
        let mut node = TestNode::prepare(env);
        node.spawn().await;
        node
    }

    /// A node in a fresh temporary directory, not yet spawned.
    pub fn prepare(env: &[(&str, &str)]) -> TestNode {
        TestNode::prepare_owned(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// As [`TestNode::prepare`], for an environment built at run time.
    pub fn prepare_owned(env: Vec<(String, String)>) -> TestNode {
        let temp = tempfile::tempdir().expect("creating a temp dir");
        let dir = temp.path().to_path_buf();
        TestNode {
            child: None,
            dir,
            env,
            addr: None,
            client: client_with_token(ADMIN_TOKEN),
            netns: None,
            _temp: Some(temp),
        }
    }

    /// Runs the process in network namespace `netns` (needs root); the test reaches the API
    /// at `reach_ip` and the port the node bound.
    pub fn in_netns(mut self, netns: &str, reach_ip: std::net::IpAddr) -> TestNode {
        self.netns = Some((netns.to_string(), reach_ip));
        self
    }

    /// The environment a node gets before the test's own variables.
    fn base_env(dir: &Path) -> Vec<(String, String)> {
        let path = |name: &str| dir.join(name).display().to_string();
        vec![
            ("ARC_SERVER_HOST".into(), "127.0.0.1".into()),
            ("ARC_SERVER_PORT".into(), "0".into()),
            ("ARC_SERVER_PORT_FILE".into(), path("port")),
            ("ARC_WAL_DIRECTORY".into(), path("wal")),
            ("ARC_STORAGE_LOCAL_PATH".into(), path("storage")),
            ("ARC_QUERY_CACHE_DIR".into(), path("cache")),
            ("ARC_QUERY_THREADS".into(), "2".into()),
            ("ARC_AUTH_BOOTSTRAP_TOKEN".into(), ADMIN_TOKEN.into()),
            ("ARC_CLUSTER_NODE_ID".into(), "test-node".into()),
            // Any free port: tests run many clusters at once.
            ("ARC_CLUSTER_REPLICATION_ADDR".into(), "127.0.0.1:0".into()),
            ("ARC_SERVER_SHUTDOWN_TIMEOUT".into(), "20s".into()),
            ("RUST_LOG".into(), "info".into()),
        ]
    }

    /// Spawns the process without waiting for readiness.
    pub fn spawn_only(&mut self) {
        let port_file = self.dir.join("port");
        let _ = std::fs::remove_file(&port_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .expect("opening node.log");
        // A copy of the binary may be named, to run the suite while the workspace rebuilds.
        let binary = std::env::var("ARC_TEST_NODE_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_arc-node").to_string());
        // `ip netns exec` execs the binary in place: the child's pid is the node's, so signals
        // reach it directly.
        let mut command = match &self.netns {
            None => Command::new(binary),
            Some((netns, _)) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, &binary]);
                command
            }
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning log handle"))
            .stderr(log);
        for (key, value) in Self::base_env(&self.dir)
            .into_iter()
            .chain(self.env.clone())
        {
            command.env(key, value);
        }
        self.child = Some(command.spawn().expect("spawning arc-node"));
        self.addr = None;
    }

    /// Spawns and waits until `/ready` answers 200.
    pub async fn spawn(&mut self) {
        self.spawn_only();
        self.wait_ready().await;
    }

    /// Waits for the port file and a 200 from `/ready`.
    pub async fn wait_ready(&mut self) {
        let port_file = self.dir.join("port");
        let log = self.dir.join("node.log");
        let child = self.child.as_mut().expect("node was spawned");
        let started = Instant::now();
        let addr: SocketAddr = loop {
            if let Some(status) = child.try_wait().expect("polling child") {
                panic!(
                    "arc-node exited with {status} before listening; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                break match &self.netns {
                    Some((_, reach_ip)) => SocketAddr::new(*reach_ip, addr.port()),
                    None => addr,
                };
            }
            assert!(
                started.elapsed() < READY_DEADLINE,
                "no port file after {READY_DEADLINE:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.addr = Some(addr);
        let url = format!("http://{addr}/ready");
        let client = self.client.clone();
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(&url).send().await
                && response.status() == 200
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("arc-node exited with {status}; log:\n{}", log_text());
            }
            assert!(
                started.elapsed() < READY_DEADLINE,
                "not ready after {READY_DEADLINE:?}; log:\n{}",
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Base URL of the API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.expect("node is running"))
    }

    /// Sends SIGKILL (a crash) and reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running (not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("polling child") {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "arc-node did not exit after SIGTERM; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit by itself (e.g. at a failpoint).
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("polling child") {
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "arc-node did not exit; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replaces the extra environment for the next start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// POSTs a body with headers; returns status and body text.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
        let mut request = self.client.post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("sending request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Writes line protocol to `/api/v1/write/line-protocol` and asserts 204.
    pub async fn write_lp(&self, database: &str, body: &str) {
        let (status, text) = self
            .post(
                "/api/v1/write/line-protocol",
                &[("x-arc-database", database)],
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(status, 204, "write failed: {text}");
    }

    /// Runs SQL through `/api/v1/query`; returns status and the JSON body.
    pub async fn query_raw(&self, sql: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/api/v1/query"))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .expect("sending query");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Runs SQL and returns the `data` rows, asserting success.
    pub async fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let (status, body) = self.query_raw(sql).await;
        assert_eq!(status, 200, "query {sql:?} failed: {body}");
        assert_eq!(body["success"], true, "{body}");
        serde_json::from_value(body["data"].clone()).expect("data is rows")
    }

    /// Runs SQL through `/api/v1/query/arrow`.
    pub async fn query_arrow(&self, sql: &str) -> Vec<RecordBatch> {
        let response = self
            .client
            .post(self.url("/api/v1/query/arrow"))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .expect("sending arrow query");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("reading arrow body");
        assert_eq!(
            status,
            200,
            "arrow query failed: {}",
            String::from_utf8_lossy(&bytes)
        );
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .expect("arrow stream")
            .map(|batch| batch.expect("arrow batch"))
            .collect()
    }

    /// Calls the flush endpoint and asserts success.
    pub async fn flush(&self) {
        let (status, text) = self
            .post("/api/v1/write/line-protocol/flush", &[], Vec::new())
            .await;
        assert_eq!(status, 200, "flush failed: {text}");
    }

    /// Counts the Parquet files under the node's local storage.
    pub fn parquet_files(&self) -> usize {
        count_files(&self.dir.join("storage"), "parquet")
    }
}

/// Counts the files with `extension` under `dir`, recursively.
pub fn count_files(dir: &Path, extension: &str) -> usize {
    files_with(dir, extension).len()
}

/// The files with `extension` under `dir`, recursively.
pub fn files_with(dir: &Path, extension: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                files_with(&path, extension)
            } else if path.extension().is_some_and(|ext| ext == extension) {
                vec![path]
            } else {
                Vec::new()
            }
        })
        .collect()
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Asks `node` for `SELECT * FROM range(rows)` as JSON and reads the answer chunk by chunk
/// without keeping it; checks that it is whole (its end names the row count) and returns its
/// size in bytes.
pub async fn read_range_answer(node: &TestNode, rows: u64) -> u64 {
    let mut response = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&serde_json::json!({ "sql": format!("SELECT * FROM range({rows})") }))
        .send()
        .await
        .expect("an answer starts");
    assert_eq!(response.status().as_u16(), 200);
    let (mut bytes, mut tail) = (0u64, Vec::new());
    while let Some(chunk) = response.chunk().await.expect("the whole body") {
        bytes += chunk.len() as u64;
        tail.extend_from_slice(&chunk);
        tail.drain(..tail.len().saturating_sub(4096));
    }
    let tail = String::from_utf8_lossy(&tail);
    assert!(
        tail.contains(&format!("\"row_count\":{rows},")),
        "the document's end: {tail}"
    );
    bytes
}

/// Peak resident memory of process `pid` so far, in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

/// Sends `SIG<name>` to a node's process.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Prints the logs of the nodes it was given when the test panics (declare it after the
/// nodes, so it is dropped, and prints, while their directories still exist).
pub struct LogsOnPanic(Vec<(String, PathBuf)>);

impl LogsOnPanic {
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a TestNode)>) -> LogsOnPanic {
        LogsOnPanic(
            nodes
                .into_iter()
                .map(|(id, node)| (id.to_string(), node.dir.join("node.log")))
                .collect(),
        )
    }
}

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (id, log) in &self.0 {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                eprintln!("---- {id} ----\n{text}");
            }
        }
    }
}
