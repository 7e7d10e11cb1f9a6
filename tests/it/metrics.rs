//! `/metrics` as Prometheus sees it: checked with Prometheus's own `promtool`, and carrying
//! the families operators alert on after real traffic.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::TestNode;

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
    let node = TestNode::start(&[]).await;
    node.write_lp("default", "scrape,host=a value=1i 1785542400000000000\n")
        .await;
    node.flush().await;
    let rows = node.query("SELECT count(*) FROM scrape").await;
    assert_eq!(rows[0][0], 1);
    // Unauthenticated on purpose: Prometheus scrapes without a token.
    let response = reqwest::get(node.url("/metrics")).await.expect("scraping");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("metrics text");
    for family in EXPECTED {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("# TYPE {family} "))),
            "{family} missing from /metrics:\n{text}"
        );
    }
    assert!(
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .all(|line| line.starts_with("arc_")),
        "every metric is named arc_*"
    );

    let Some(promtool) = promtool() else {
        eprintln!(
            "skipped the promtool check: promtool not installed (Debian package prometheus; .ci/run unpacks it)"
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
}
