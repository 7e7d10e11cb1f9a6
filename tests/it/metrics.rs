//! `/metrics` as Prometheus sees it: checked with Prometheus's own `promtool`, and carrying
//! the families operators alert on after real traffic.

use std::io::Write;
use std::process::{Command, Stdio};

use std::time::Duration;

use crate::harness::{TestNode, wait_for};

/// The families that must be present once the node has taken a write, a flush and a query.
const EXPECTED: &[&str] = &[
    "arc_http_requests_total",
    "arc_http_request_seconds",
    "arc_ingest_rows_total",
    "arc_ingest_bytes_total",
    "arc_wal_appends_total",
    "arc_wal_fsync_seconds",
    "arc_wal_group_commit_seconds",
    "arc_flush_total",
    "arc_flush_seconds",
    "arc_catalog_commits_total",
    "arc_catalog_commit_seconds",
    "arc_query_total",
    "arc_query_seconds",
    "arc_auth_requests_total",
    "arc_cluster_nodes",
    "arc_cluster_generation",
    "arc_cluster_bootstrap_total",
    "arc_gossip_sent_packets_total",
    "arc_gossip_rejected_packets_total",
    "arc_health_score",
];

fn promtool() -> Option<String> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    found.then(|| "promtool".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_expose_metrics_that_promtool_accepts() {
    // A clustered writer, so the gossip and cluster families are there too: its seed is a
    // silent port (gossip is sent) and a junk datagram reaches its gossip port (rejected).
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|socket| socket.local_addr().unwrap().port())
        .collect();
    let gossip = format!("127.0.0.1:{}", ports[0]);
    let seed = format!("127.0.0.1:{}", ports[1]);
    let node = TestNode::start(&[
        ("ARC_CLUSTER_ENABLED", "true"),
        ("ARC_CLUSTER_ROLE", "writer"),
        (
            "ARC_CLUSTER_SHARED_SECRET",
            "metrics-test-secret-0123456789",
        ),
        ("ARC_CLUSTER_COORDINATOR_ADDR", &gossip),
        ("ARC_CLUSTER_SEEDS", &seed),
        ("ARC_CLUSTER_HEARTBEAT_INTERVAL", "100ms"),
    ])
    .await;
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    junk.send_to(b"not a gossip frame", &gossip).unwrap();
    node.write_lp("default", "scrape,host=a value=1i 1785542400000000000\n")
        .await;
    node.flush().await;
    let rows = node.query("SELECT count(*) FROM scrape").await;
    assert_eq!(rows[0][0], 1);
    // Unauthenticated on purpose: Prometheus scrapes without a token.
    let scrape = || async {
        let response = reqwest::get(node.url("/metrics")).await.expect("scraping");
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics text")
    };
    let has_all = |text: &str| {
        EXPECTED.iter().all(|family| {
            text.lines()
                .any(|line| line.starts_with(&format!("# TYPE {family} ")))
        })
    };
    // Gossip rounds and the junk datagram are counted asynchronously.
    let text = wait_for("every expected family", Duration::from_secs(30), || async {
        let text = scrape().await;
        has_all(&text).then_some(text)
    })
    .await;
    assert!(
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .all(|line| line.starts_with("arc_")),
        "every metric is named arc_*"
    );

    // Every metric the shipped alerting rules use is one the node serves.
    let rules_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/arc-alerts.yml");
    let rules = std::fs::read_to_string(&rules_path).expect("reading scripts/arc-alerts.yml");
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("arc_") {
            continue;
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| word.strip_suffix(suffix))
            .unwrap_or(word);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "arc-alerts.yml uses {word}, which /metrics does not serve"
        );
    }

    let Some(promtool) = promtool() else {
        crate::harness::skip(
            "test_should_expose_metrics_that_promtool_accepts (its promtool check)",
            "promtool not installed (Debian package prometheus; .ci/run unpacks it)",
        );
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("feeding promtool");
    let output = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // promtool exits 0 for lint-clean text, 3 for lint findings only, 1 for a parse error.
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{report}",
        output.status
    );
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_path)
        .output()
        .expect("running promtool check rules");
    assert!(
        checked.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
