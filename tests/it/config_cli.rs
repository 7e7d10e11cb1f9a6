//! Configuration through the real binary, as an operator sets it: a TOML file, `ARC_*`
//! overrides, `arc-node config show`, and a non-zero exit naming the key for each kind of bad
//! value.

use std::process::Command;

fn arc_node(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_arc-node"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
    for (key, value) in env {
        command.env(key, value);
    }
    // A regression that makes these commands serve instead of exit must fail the test, not
    // hang the suite.
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running arc-node");
    let pid = child.id();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let Ok(output) = outcome.recv_timeout(std::time::Duration::from_secs(30)) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("arc-node {args:?} did not exit within 30 s");
    };
    let output = output.expect("waiting for arc-node");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn test_should_show_file_values_with_env_overrides_and_redacted_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("arc.toml");
    std::fs::write(
        &file,
        "[server]\nport = 9100\n\n[storage]\nbackend = \"local\"\nlocal_path = \"/srv/arc\"\ns3_secret_key = \"file-secret\"\n\n[wal]\nsync_mode = \"fsync\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = arc_node(
        &["--config", file.to_str().unwrap(), "config", "show"],
        &[
            ("ARC_SERVER_PORT", "9200"),
            ("ARC_INGEST_MAX_BUFFER_AGE_MS", "250"),
            (
                "ARC_AUTH_BOOTSTRAP_TOKEN",
                "abcdefghijklmnopqrstuvwxyz0123456789",
            ),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    let shown: toml::Value = toml::from_str(&stdout).expect("config show prints TOML");
    assert_eq!(shown["server"]["port"].as_integer(), Some(9200), "env wins");
    assert_eq!(
        shown["storage"]["local_path"].as_str(),
        Some("/srv/arc"),
        "file value"
    );
    assert_eq!(shown["wal"]["sync_mode"].as_str(), Some("fsync"));
    // Relative paths are shown as the node resolves them, against its working directory.
    let cwd = dir.path().canonicalize().unwrap();
    let shown_wal = std::path::PathBuf::from(shown["wal"]["directory"].as_str().unwrap());
    assert_eq!(
        shown_wal.canonicalize().ok(),
        None,
        "not created by config show"
    );
    assert!(shown_wal.is_absolute(), "{shown_wal:?}");
    assert!(
        shown_wal.ends_with("data/wal") && shown_wal.starts_with(&cwd),
        "{shown_wal:?} under {cwd:?}"
    );
    assert_eq!(shown["ingest"]["max_buffer_age_ms"].as_integer(), Some(250));
    assert!(
        !stdout.contains("file-secret") && !stdout.contains("abcdefghijklmnop"),
        "{stdout}"
    );
    assert_eq!(
        shown["storage"]["s3_secret_key"].as_str(),
        Some("<redacted>")
    );
}

#[test]
fn test_should_exit_nonzero_naming_the_key_for_each_kind_of_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        ("ARC_CLUSTER_ROLE", "leader", &["role", "leader"]),
        (
            "ARC_SERVER_HOST",
            "300.1.1.1",
            &["server.host", "300.1.1.1"],
        ),
        (
            "ARC_CLUSTER_COORDINATOR_ADDR",
            "nowhere",
            &["cluster.coordinator_addr", "nowhere"],
        ),
        (
            "ARC_SERVER_MAX_PAYLOAD_SIZE",
            "lots",
            &["max_payload_size", "lots"],
        ),
        (
            "ARC_CLUSTER_HEARTBEAT_INTERVAL",
            "5 parsecs",
            &["heartbeat_interval", "5 parsecs"],
        ),
        ("ARC_WAL_SYNC_MODE", "never", &["sync_mode", "never"]),
        ("ARC_SERVER_PORT", "65536", &["port", "65536"]),
        ("ARC_STORAGE_BACKEND", "floppy", &["backend", "floppy"]),
        ("ARC_SERVER_PROT", "1", &["prot"]),
    ];
    for (name, value, mentions) in cases {
        let (code, _, stderr) = arc_node(&["config", "show"], &[(name, value)], dir.path());
        assert_ne!(code, 0, "{name}={value} accepted");
        for mention in *mentions {
            assert!(stderr.contains(mention), "{name}={value}: {stderr}");
        }
        // The node itself refuses to start the same way.
        let (code, _, stderr) = arc_node(&[], &[(name, value)], dir.path());
        assert_ne!(code, 0, "{name}={value}: node started: {stderr}");
    }
    // Clustering without the gossip secret: refused before anything listens.
    let (code, _, stderr) = arc_node(
        &[],
        &[
            ("ARC_CLUSTER_ENABLED", "true"),
            ("ARC_CLUSTER_ROLE", "writer"),
        ],
        dir.path(),
    );
    assert_ne!(
        code, 0,
        "a clustered node started without a secret: {stderr}"
    );
    assert!(stderr.contains("cluster.shared_secret"), "{stderr}");
    let (code, _, stderr) = arc_node(&["--config", "/nonexistent/arc.toml"], &[], dir.path());
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/arc.toml"), "{stderr}");
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "[server\nport = 1").unwrap();
    let (code, _, stderr) = arc_node(&["--config", bad_file.to_str().unwrap()], &[], dir.path());
    assert_ne!(code, 0);
    assert!(stderr.contains("bad.toml"), "{stderr}");
}
