//! Failpoints: named places where a test can make the process crash, to prove recovery.
//!
//! `ARC_FAILPOINTS=flush-after-commit=abort,flush-before-commit=abort` makes the process abort
//! (like `kill -9`: no destructors, no flush) when it reaches the named point. Unset, a
//! failpoint costs one atomic load. Known points: `flush-before-commit` (Parquet encoded,
//! nothing committed), `flush-after-commit` (record committed, WAL not yet trimmed).

use std::collections::HashMap;
use std::sync::OnceLock;

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

/// Acts on the failpoint `name` if it is configured.
pub fn hit(name: &str) {
    if let Some(action) = configured().get(name)
        && action == "abort"
    {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
