//! Failpoints at the crash-relevant steps of a job, compiled in only with the `failpoints`
//! feature (without it, [`hit`] is an inlined `Ok(())`).
//!
//! Names: `compact-before-upload` (merged, nothing uploaded), `compact-after-upload-before-commit`
//! (an orphan output exists), `compact-after-commit` (swapped, inputs not yet collected).
//! Actions: `abort` ends the process on the spot (`std::process::abort`, as close to `kill -9`
//! as a process can do to itself), `error` fails the job with [`CompactError::Invalid`],
//! `pause:/some/file` creates `/some/file.reached.<pid>` and waits (asynchronously, holding no
//! runtime thread) until `/some/file` exists, the convention of the node's own failpoints, so a
//! test can act inside the window (promote a new epoch, run another compactor) and release it.
//! A test or a node start sets them with [`configure_failpoints`], e.g. from
//! `ARC_FAILPOINTS=compact-after-commit=abort`.

use crate::error::CompactError;

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use crate::error::CompactError;

    /// What a failpoint does when hit.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum FailAction {
        /// Return an error from the job.
        Error,
        /// Abort the process.
        Abort,
        /// Wait until the file exists (see the module docs).
        Pause(PathBuf),
    }

    static ARMED: Mutex<Option<HashMap<String, FailAction>>> = Mutex::new(None);

    fn armed() -> std::sync::MutexGuard<'static, Option<HashMap<String, FailAction>>> {
        // A test that panicked while holding the lock has failed already; keep going.
        ARMED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Arms failpoints from `name=action` pairs separated by `,` or `;` (actions `error`,
    /// `abort`, `pause:<file>`, `off`).
    ///
    /// # Errors
    ///
    /// [`CompactError::Invalid`] naming a malformed pair.
    pub fn configure_failpoints(spec: &str) -> Result<(), CompactError> {
        let mut guard = armed();
        let map = guard.get_or_insert_with(HashMap::new);
        for pair in spec
            .split([',', ';'])
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
        {
            let bad = || {
                CompactError::Invalid(format!(
                    "bad failpoint {pair:?} (expected name=error|abort|pause:<file>|off)"
                ))
            };
            let (name, action) = pair.split_once('=').ok_or_else(bad)?;
            let name = name.trim().to_string();
            match action.trim() {
                "error" => map.insert(name, FailAction::Error),
                "abort" => map.insert(name, FailAction::Abort),
                "off" => map.remove(&name),
                action => match action.strip_prefix("pause:") {
                    Some(file) if !file.is_empty() => {
                        map.insert(name, FailAction::Pause(PathBuf::from(file)))
                    }
                    _ => return Err(bad()),
                },
            };
        }
        Ok(())
    }

    /// Disarms every failpoint.
    pub fn clear_failpoints() {
        *armed() = None;
    }

    pub(crate) fn action(name: &str) -> Option<FailAction> {
        armed().as_ref().and_then(|map| map.get(name).cloned())
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{FailAction, clear_failpoints, configure_failpoints};

/// Runs failpoint `name`: nothing unless it is armed.
#[cfg(feature = "failpoints")]
pub(crate) async fn hit(name: &str) -> Result<(), CompactError> {
    match armed::action(name) {
        None => Ok(()),
        Some(FailAction::Error) => Err(CompactError::Invalid(format!("failpoint {name} hit"))),
        Some(FailAction::Abort) => {
            tracing::error!(failpoint = name, "failpoint hit; aborting");
            std::process::abort()
        }
        Some(FailAction::Pause(release)) => {
            tracing::warn!(failpoint = name, release = %release.display(), "failpoint hit; paused");
            let mut reached = release.as_os_str().to_owned();
            reached.push(format!(".reached.{}", std::process::id()));
            if let Err(error) = tokio::fs::write(&reached, b"").await {
                tracing::error!(failpoint = name, ?reached, %error, "cannot mark the pause");
            }
            while !tokio::fs::try_exists(&release).await.unwrap_or(false) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tracing::warn!(failpoint = name, "failpoint released");
            Ok(())
        }
    }
}

/// Runs failpoint `name`: compiled out without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
#[allow(clippy::unused_async)]
pub(crate) async fn hit(_name: &str) -> Result<(), CompactError> {
    Ok(())
}
