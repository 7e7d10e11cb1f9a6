//! Failpoints: named places where a test can make the process crash or wait, to prove recovery
//! and to open race windows on purpose.
//!
//! `ARC_FAILPOINTS=name=action,...`. Actions:
//! - `abort`: the process aborts (like `kill -9`: no destructors, no flush);
//! - `panic`: the calling thread panics (to prove a dead thread is noticed);
//! - `abort-once:/some/file`: the first process to get here creates `/some/file` and aborts,
//!   later ones (the file exists) pass: several nodes armed alike, exactly one dies;
//! - `pause:/some/file`: the caller creates `/some/file.reached.<pid>` and waits until
//!   `/some/file` exists (a test does something in the window, then releases it; several
//!   processes paused on one file are released together, which makes them race).
//!
//! Points asked with [`fails`] instead make the caller report an error, with the action
//! `fail-on:N`: the Nth time the process gets there, and only then.
//!
//! Unset, a failpoint costs one lookup in an empty map. Known points: `flush-before-commit`
//! (Parquet encoded, nothing committed), `flush-after-commit` (record committed, WAL not yet
//! trimmed), `writer-before-promote` (WAL recovered, epoch not yet claimed), `wal-writer` (the
//! WAL writer thread, once per group commit), `replicate-before-publish` (a clustered
//! primary's group commit is durable locally, not yet streamed to any follower),
//! `failover-after-promote` (a standby's failover promote is committed, it has not taken
//! over yet); for [`fails`]: `flush-commit` (one chunk's upload and commit fail),
//! `promote-answer` (a failover's or switchover's promote landed, its answer is taken for a
//! store error: see [`lose_promote_answer`]).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

fn configured() -> &'static HashMap<String, String> {
    static POINTS: OnceLock<HashMap<String, String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("ARC_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|item| item.split_once('='))
            .map(|(name, action)| (name.trim().to_string(), action.trim().to_string()))
            .collect()
    })
}

/// Acts on the failpoint `name` if it is configured. A pause blocks the calling thread: only
/// tests arm it.
pub fn hit(name: &str) {
    let Some(action) = configured().get(name) else {
        return;
    };
    if action == "abort" {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
    if action == "panic" {
        panic!("failpoint {name}: panicking");
    }
    if let Some(marker) = action.strip_prefix("abort-once:") {
        // The first process to get here creates the marker and aborts; later ones pass.
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(marker)
            .is_ok()
        {
            eprintln!("failpoint {name}: aborting (once, marker {marker})");
            std::process::abort();
        }
        return;
    }
    if let Some(release) = action.strip_prefix("pause:") {
        let release = std::path::Path::new(release);
        eprintln!(
            "failpoint {name}: paused until {} exists",
            release.display()
        );
        let mut reached = release.as_os_str().to_owned();
        reached.push(format!(".reached.{}", std::process::id()));
        if let Err(error) = std::fs::write(&reached, b"") {
            eprintln!("failpoint {name}: cannot create {reached:?}: {error}");
        }
        while !release.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Whether the failpoint `name` makes this call fail (`fail-on:N`: the Nth call in this
/// process does). Unset, it never does.
pub fn fails(name: &str) -> bool {
    static CALLS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let Some(nth) = configured()
        .get(name)
        .and_then(|action| action.strip_prefix("fail-on:"))
        .and_then(|nth| nth.parse::<u64>().ok())
    else {
        return false;
    };
    let mut calls = CALLS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let count = calls.entry(name.to_string()).or_default();
    *count += 1;
    if *count == nth {
        eprintln!("failpoint {name}: failing call {nth}");
    }
    *count == nth
}

/// The failpoint `promote-answer`: a promote that landed is answered as a store error, as when
/// the store's answer is lost on the way (the outcome then unknown to the node).
pub fn lose_promote_answer(
    promoted: Result<u64, arc_storage::CatalogError>,
) -> Result<u64, arc_storage::CatalogError> {
    match promoted {
        Ok(_) if fails("promote-answer") => Err(arc_storage::CatalogError::Unavailable {
            key: "the promote record".into(),
            attempts: 1,
            reason: "failpoint promote-answer: the store's answer was lost".into(),
        }),
        promoted => promoted,
    }
}
