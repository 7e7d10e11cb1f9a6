//! The deployment files in `scripts/`, checked the way an operator uses them: `install.sh` as a
//! dry run, as a real install into a temporary prefix (twice, to prove it is idempotent and
//! keeps an edited environment file), the systemd unit through `systemd-analyze verify`, the
//! example environment file through `arc-node config show` (so every variable in it is a real
//! key with a valid value), and the Prometheus example through `promtool check config`.
//!
//! Tools that a machine may lack (`systemd-analyze`, `promtool`) make their test print
//! "skipped: ..." and pass; CI installs them (Debian packages `systemd` and `prometheus`).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

fn arc_node_binary() -> &'static str {
    env!("CARGO_BIN_EXE_arc-node")
}

/// The outcome of one command: exit code (-1 if killed), stdout and stderr.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn of(command: &mut Command) -> Outcome {
        let output = command
            .output()
            .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn both(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Runs `scripts/install.sh` through bash (so a lost exec bit fails only its own assertion).
fn install_sh(args: &[&str], path_env: Option<&str>) -> Outcome {
    let mut command = Command::new("bash");
    command.arg(scripts_dir().join("install.sh")).args(args);
    if let Some(path) = path_env {
        command.env("PATH", path);
    }
    Outcome::of(&mut command)
}

/// Returns true when `tool` can be started; reports the test (`test`) skipped otherwise.
fn tool_available(test: &str, tool: &str, skip_message: &str) -> bool {
    match Command::new(tool).arg("--version").output() {
        Ok(_) => true,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            crate::harness::skip(test, skip_message);
            false
        }
        Err(error) => panic!("starting {tool}: {error}"),
    }
}

/// Lists every file and directory under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).expect("listing a directory") {
            let path = entry.expect("reading a directory entry").path();
            let relative = path.strip_prefix(dir).expect("under the root");
            found.insert(relative.display().to_string());
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|error| panic!("stat {}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Whether install.sh ran a command (it prints `+ command` before each one it runs).
fn executed_anything(outcome: &Outcome) -> bool {
    outcome.stdout.lines().any(|line| line.starts_with("+ "))
}

/// A stand-in binary: installing the real one (hundreds of MB with DuckDB) twice per test
/// would only slow the test down without checking anything more.
fn fake_binary(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("arc-node-build");
    fs::write(&path, format!("#!/bin/sh\necho {text}\n")).expect("writing the fake binary");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn test_should_keep_install_script_executable() {
    let mode = mode_of(&scripts_dir().join("install.sh"));
    assert_eq!(
        mode & 0o111,
        0o111,
        "scripts/install.sh mode {mode:o}: chmod +x it"
    );
}

#[test]
fn test_should_plan_every_action_and_change_nothing_in_dry_run() {
    let prefix = tempfile::tempdir().expect("creating the prefix");
    let prefix_path = prefix.path().to_str().expect("utf-8 temp path");
    let outcome = install_sh(
        &[
            "--dry-run",
            "--prefix",
            prefix_path,
            "--binary",
            arc_node_binary(),
        ],
        None,
    );
    assert_eq!(outcome.code, 0, "{}", outcome.both());
    for planned in [
        "usr/local/bin/arc-node",
        "etc/arc-node",
        "var/lib/arc-node",
        "etc/arc-node/arc-node.env",
        "etc/systemd/system/arc-node.service",
        "skipping user creation",
        "skipping systemctl daemon-reload",
    ] {
        assert!(
            outcome.stdout.contains(planned),
            "missing {planned:?}\n{}",
            outcome.both()
        );
    }
    assert!(
        !executed_anything(&outcome),
        "a dry run executed something\n{}",
        outcome.both()
    );
    assert_eq!(
        tree(prefix.path()),
        BTreeSet::new(),
        "the dry run wrote under the prefix"
    );
}

#[test]
fn test_should_plan_the_build_without_running_cargo_in_dry_run() {
    // A `cargo` that records being run: if the dry run ever executed it, the marker shows it,
    // and no real release build (an hour with DuckDB) starts from a test.
    let tools = tempfile::tempdir().expect("creating a tools dir");
    let marker = tools.path().join("cargo-ran");
    let fake_cargo = tools.path().join("cargo");
    fs::write(
        &fake_cargo,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .expect("writing the fake cargo");
    fs::set_permissions(&fake_cargo, fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let prefix = tempfile::tempdir().expect("creating the prefix");
    let outcome = install_sh(
        &[
            "--dry-run",
            "--prefix",
            prefix.path().to_str().expect("utf-8 temp path"),
        ],
        Some(&path),
    );
    assert_eq!(outcome.code, 0, "{}", outcome.both());
    assert!(
        outcome
            .stdout
            .contains("cargo build --release --bin arc-node"),
        "{}",
        outcome.both()
    );
    assert!(
        !marker.exists(),
        "the dry run ran cargo\n{}",
        outcome.both()
    );
    assert_eq!(
        tree(prefix.path()),
        BTreeSet::new(),
        "the dry run wrote under the prefix"
    );
}

#[test]
fn test_should_install_into_prefix_idempotently_keeping_edited_env_file() {
    let work = tempfile::tempdir().expect("creating a work dir");
    let prefix = work.path().join("root");
    let prefix_arg = prefix.to_str().expect("utf-8 temp path");
    let binary = fake_binary(work.path(), "v1");
    let binary_arg = binary.to_str().expect("utf-8 temp path");

    let first = install_sh(&["--prefix", prefix_arg, "--binary", binary_arg], None);
    assert_eq!(first.code, 0, "{}", first.both());
    let installed_binary = prefix.join("usr/local/bin/arc-node");
    let env_file = prefix.join("etc/arc-node/arc-node.env");
    let unit = prefix.join("etc/systemd/system/arc-node.service");
    assert_eq!(
        fs::read(&installed_binary).unwrap(),
        fs::read(&binary).unwrap()
    );
    assert_eq!(mode_of(&installed_binary), 0o755);
    assert_eq!(
        fs::read(&env_file).unwrap(),
        fs::read(scripts_dir().join("arc-node.env")).unwrap()
    );
    assert_eq!(mode_of(&env_file), 0o640, "the env file holds secrets");
    assert_eq!(
        fs::read(&unit).unwrap(),
        fs::read(scripts_dir().join("arc-node.service")).unwrap()
    );
    assert!(prefix.join("var/lib/arc-node").is_dir());
    assert_eq!(mode_of(&prefix.join("etc/arc-node")), 0o750);
    let files_after_first = tree(&prefix);

    // The operator edits the configuration; a re-run (an upgrade) must keep it.
    let edited = format!(
        "{}ARC_CLUSTER_NODE_ID=edited-by-operator\n",
        fs::read_to_string(&env_file).unwrap()
    );
    fs::write(&env_file, &edited).unwrap();
    let second = install_sh(&["--prefix", prefix_arg, "--binary", binary_arg], None);
    assert_eq!(second.code, 0, "{}", second.both());
    assert_eq!(
        fs::read_to_string(&env_file).unwrap(),
        edited,
        "{}",
        second.both()
    );
    assert!(
        second.stdout.contains("keeping existing"),
        "{}",
        second.both()
    );
    assert!(
        !executed_anything(&second),
        "nothing to do, yet:\n{}",
        second.both()
    );
    assert_eq!(tree(&prefix), files_after_first);

    // A new build replaces the binary, and still leaves the configuration alone.
    let upgraded = fake_binary(work.path(), "v2");
    let third = install_sh(
        &[
            "--prefix",
            prefix_arg,
            "--binary",
            upgraded.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(third.code, 0, "{}", third.both());
    assert_eq!(
        fs::read(&installed_binary).unwrap(),
        fs::read(&upgraded).unwrap()
    );
    assert_eq!(fs::read_to_string(&env_file).unwrap(), edited);
}

#[test]
fn test_should_refuse_missing_binary_and_unknown_options() {
    let prefix = tempfile::tempdir().expect("creating the prefix");
    let prefix_arg = prefix.path().to_str().expect("utf-8 temp path");
    let missing = prefix.path().join("no-such-binary");
    let outcome = install_sh(
        &[
            "--prefix",
            prefix_arg,
            "--binary",
            missing.to_str().unwrap(),
        ],
        None,
    );
    assert_ne!(outcome.code, 0, "{}", outcome.both());
    assert!(
        outcome.stderr.contains("no-such-binary"),
        "{}",
        outcome.both()
    );
    let outcome = install_sh(&["--prefix", prefix_arg, "--frobnicate"], None);
    assert_ne!(outcome.code, 0, "{}", outcome.both());
    assert!(
        outcome.stderr.contains("--frobnicate"),
        "{}",
        outcome.both()
    );
    assert_eq!(tree(prefix.path()), BTreeSet::new());
    let help = install_sh(&["--help"], None);
    assert_eq!(help.code, 0, "{}", help.both());
    assert!(help.stdout.contains("--dry-run") && help.stdout.contains("--prefix"));
}

/// Reads `KEY=<n>s` from a unit or env file as seconds.
fn seconds_setting(text: &str, key: &str) -> u64 {
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= not set"));
    value
        .trim()
        .strip_suffix('s')
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("{key}={value}: expected whole seconds like 45s"))
}

#[test]
fn test_should_ship_a_notify_unit_that_outlasts_the_drain() {
    let unit = fs::read_to_string(scripts_dir().join("arc-node.service")).unwrap();
    for directive in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/local/bin/arc-node run",
        "EnvironmentFile=-/etc/arc-node/arc-node.env",
        "User=arc-node",
        "StateDirectory=arc-node",
        "ReadWritePaths=/var/lib/arc-node",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(
            unit.lines().any(|line| line == directive),
            "missing {directive}"
        );
    }
    let env_file = fs::read_to_string(scripts_dir().join("arc-node.env")).unwrap();
    let drain = seconds_setting(&env_file, "ARC_SERVER_SHUTDOWN_TIMEOUT");
    let stop = seconds_setting(&unit, "TimeoutStopSec");
    assert!(
        stop > drain,
        "TimeoutStopSec={stop}s must exceed shutdown_timeout={drain}s"
    );
    assert!(seconds_setting(&unit, "WatchdogSec") > 0);
}

/// Runs `systemd-analyze verify` on a copy of the unit whose ExecStart is `executable`.
fn verify_unit(unit_text: &str, executable: &str) -> (Outcome, String) {
    // `verify` insists that ExecStart names an existing executable, and /usr/local/bin/arc-node
    // is not installed on a build machine. Pointing it at the binary this test run built keeps
    // the check honest (the real arc-node, with the real `run` argument) without installing
    // anything. Quoted, and `%` doubled, because systemd expands specifiers in ExecStart.
    let quoted = format!("\"{}\"", executable.replace('%', "%%"));
    let rewritten = unit_text.replace(
        "ExecStart=/usr/local/bin/arc-node ",
        &format!("ExecStart={quoted} "),
    );
    assert_ne!(
        rewritten, unit_text,
        "the unit's ExecStart moved; update this test"
    );
    let dir = tempfile::tempdir().expect("creating a unit dir");
    // The file name matters: verify derives the unit name from it.
    let path = dir.path().join("arc-node.service");
    fs::write(&path, rewritten).expect("writing the unit copy");
    let outcome = Outcome::of(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path),
    );
    (outcome, path.display().to_string())
}

/// The lines of verify's output that are about our unit (it may also warn about the host's).
fn complaints_about(outcome: &Outcome, unit_path: &str) -> Vec<String> {
    format!("{}\n{}", outcome.stdout, outcome.stderr)
        .lines()
        .filter(|line| line.contains(unit_path) || line.contains("arc-node.service"))
        .map(str::to_string)
        .collect()
}

#[test]
fn test_should_pass_systemd_analyze_verify() {
    if !tool_available(
        "test_should_pass_systemd_analyze_verify",
        "systemd-analyze",
        "systemd-analyze not installed (apt-get install systemd)",
    ) {
        return;
    }
    let unit = fs::read_to_string(scripts_dir().join("arc-node.service")).unwrap();
    let (outcome, path) = verify_unit(&unit, arc_node_binary());
    assert_eq!(outcome.code, 0, "{}", outcome.both());
    // verify exits 0 on unknown keys and unparsable values (it only warns), so the warnings
    // about our file are the real verdict.
    let complaints = complaints_about(&outcome, &path);
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify:\n{}",
        complaints.join("\n")
    );

    // And the check can fail: a typo must be reported, or the assertion above proves nothing.
    let broken = unit.replace("Type=notify", "Type=notifyy");
    let (outcome, path) = verify_unit(&broken, arc_node_binary());
    assert!(
        !complaints_about(&outcome, &path).is_empty(),
        "verify did not notice Type=notifyy\n{}",
        outcome.both()
    );
}

/// `(name, value, commented_out)` for every `ARC_*=` line of the example env file.
fn env_file_variables() -> Vec<(String, String, bool)> {
    let text = fs::read_to_string(scripts_dir().join("arc-node.env")).unwrap();
    text.lines()
        .filter_map(|line| {
            let (commented, assignment) = match line.strip_prefix('#') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let (name, value) = assignment.split_once('=')?;
            let is_variable = name.starts_with("ARC_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_variable.then(|| (name.to_string(), value.to_string(), commented))
        })
        .collect()
}

/// The variables of the example whose values `config show` must redact.
const SECRET_VARIABLES: &[&str] = &[
    "ARC_STORAGE_S3_SECRET_KEY",
    "ARC_STORAGE_AZURE_ACCESS_KEY",
    "ARC_AUTH_BOOTSTRAP_TOKEN",
    "ARC_CLUSTER_SHARED_SECRET",
];

fn config_show(variables: &[(String, String)]) -> Outcome {
    let dir = tempfile::tempdir().expect("creating a work dir");
    let mut command = Command::new(arc_node_binary());
    command
        .args(["config", "show"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path());
    for (name, value) in variables {
        command.env(name, value);
    }
    Outcome::of(&mut command)
}

#[test]
fn test_should_list_only_real_keys_with_valid_values_in_env_example() {
    let variables = env_file_variables();
    let mut seen = BTreeSet::new();
    for (name, _, _) in &variables {
        assert!(
            seen.insert(name.clone()),
            "{name} appears twice in arc-node.env"
        );
    }

    // As shipped (only the active lines), the node accepts the file.
    let active: Vec<(String, String)> = variables
        .iter()
        .filter(|(_, _, commented)| !commented)
        .map(|(name, value, _)| (name.clone(), value.clone()))
        .collect();
    let shipped = config_show(&active);
    assert_eq!(shipped.code, 0, "{}", shipped.both());
    assert!(
        shipped.stdout.contains("/var/lib/arc-node/wal"),
        "{}",
        shipped.both()
    );

    // With every optional line uncommented too, each name is a real key and each example value
    // parses. Cluster mode and the backend are pinned so validation of this version's
    // standalone-only rules and of one backend's required keys does not mask a bad name.
    let mut everything: Vec<(String, String)> = variables
        .iter()
        .map(|(name, value, _)| (name.clone(), value.clone()))
        .collect();
    for (name, value) in [
        ("ARC_CLUSTER_ENABLED", "false"),
        ("ARC_CLUSTER_ROLE", "standalone"),
        ("ARC_STORAGE_BACKEND", "local"),
    ] {
        everything.retain(|(existing, _)| existing != name);
        everything.push((name.to_string(), value.to_string()));
    }
    let all = config_show(&everything);
    assert_eq!(all.code, 0, "{}", all.both());
    for (name, value, _) in &variables {
        if SECRET_VARIABLES.contains(&name.as_str()) {
            assert!(
                !all.stdout.contains(value.as_str()),
                "config show printed {name}"
            );
        }
    }

    // And the reverse: every key the node reports (those with a default) has a line in the
    // example, so a new setting cannot be forgotten there.
    let mut section = String::new();
    let mut undocumented = Vec::new();
    for line in shipped.stdout.lines() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            section = name.to_string();
        } else if let Some((key, _)) = line.split_once(" = ") {
            let variable = format!("ARC_{}_{}", section, key.trim()).to_ascii_uppercase();
            if !seen.contains(&variable) {
                undocumented.push(variable);
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "missing from scripts/arc-node.env: {undocumented:?}"
    );
}

#[test]
fn test_should_ship_a_valid_prometheus_config() {
    let path = scripts_dir().join("prometheus.yml");
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("metrics_path: /metrics") && text.contains(":8000"),
        "{text}"
    );
    if !tool_available(
        "test_should_ship_a_valid_prometheus_config",
        "promtool",
        "promtool not installed (apt-get install prometheus)",
    ) {
        return;
    }
    let outcome = Outcome::of(
        Command::new("promtool")
            .args(["check", "config"])
            .arg(&path),
    );
    assert_eq!(outcome.code, 0, "{}", outcome.both());
}
