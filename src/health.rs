//! The node's view of its own health (DESIGN.md section 6): every
//! `cluster.health_check_interval` it probes the object store, the free space and fsync latency
//! of the WAL disk, and available memory, and publishes a score and a status (healthy,
//! degraded, unhealthy) with the reasons in gossip.
//!
//! [`assess`] turns measurements into a [`Health`] and is a plain function; [`measure`] does
//! the I/O.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arc_gossip::{Health, HealthStatus};
use arc_storage::ObjectStorage;

/// One round of measurements. `Err` carries what failed, for the reasons list.
#[derive(Debug, Clone)]
pub struct Measurements {
    /// Round trip of a HEAD on the object store.
    pub storage: Result<Duration, String>,
    /// Free and total bytes of the file system holding the WAL.
    pub wal_disk: Result<(u64, u64), String>,
    /// Time to write and fsync a small file next to the WAL.
    pub fsync: Result<Duration, String>,
    /// Available and total memory in bytes (`/proc/meminfo`); `None` where unknown.
    pub memory: Option<(u64, u64)>,
    /// A follower's replication lag: how long its rows have trailed the primary's
    /// acknowledged writes (or its stream has been down). `None` on other nodes.
    pub replication_lag: Option<Duration>,
}

/// Where each measurement turns a node degraded or unhealthy.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Object store round trip above which the node is degraded.
    pub storage_slow: Duration,
    /// Free fraction of the WAL disk below which the node is degraded.
    pub disk_low: f64,
    /// Free fraction of the WAL disk below which the node is unhealthy.
    pub disk_critical: f64,
    /// fsync latency above which the node is degraded.
    pub fsync_slow: Duration,
    /// fsync latency above which the node is unhealthy.
    pub fsync_critical: Duration,
    /// Available memory fraction below which the node is degraded.
    pub memory_low: f64,
    /// Available memory fraction below which the node is unhealthy.
    pub memory_critical: f64,
    /// Replication lag above which a follower is degraded (`cluster.replication_lag_limit`).
    pub replication_lag: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            storage_slow: Duration::from_secs(2),
            disk_low: 0.10,
            disk_critical: 0.02,
            fsync_slow: Duration::from_millis(100),
            fsync_critical: Duration::from_secs(1),
            memory_low: 0.10,
            memory_critical: 0.03,
            replication_lag: Duration::from_secs(5),
        }
    }
}

/// Score lost per degraded finding.
const DEGRADED_PENALTY: u8 = 15;
/// Score lost per unhealthy finding.
const UNHEALTHY_PENALTY: u8 = 50;

/// Turns measurements into a status, a score (100 minus penalties) and the reasons.
pub fn assess(measured: &Measurements, limits: &Thresholds) -> Health {
    let mut parts = BTreeMap::new();
    let mut reasons = Vec::new();
    let mut degraded = 0u8;
    let mut unhealthy = 0u8;
    let millis = |duration: Duration| duration.as_secs_f64() * 1000.0;

    match &measured.storage {
        Ok(latency) => {
            parts.insert("storage_latency_ms".into(), millis(*latency));
            if *latency > limits.storage_slow {
                degraded += 1;
                reasons.push(format!("object store slow: {:.0} ms", millis(*latency)));
            }
        }
        Err(error) => {
            unhealthy += 1;
            reasons.push(format!("object store unreachable: {error}"));
        }
    }
    match &measured.wal_disk {
        Ok((free, total)) => {
            let ratio = if *total == 0 {
                0.0
            } else {
                *free as f64 / *total as f64
            };
            parts.insert("wal_disk_free_ratio".into(), ratio);
            parts.insert("wal_disk_free_bytes".into(), *free as f64);
            if ratio < limits.disk_critical {
                unhealthy += 1;
                reasons.push(format!("wal disk almost full: {:.1}% free", ratio * 100.0));
            } else if ratio < limits.disk_low {
                degraded += 1;
                reasons.push(format!("wal disk low: {:.1}% free", ratio * 100.0));
            }
        }
        Err(error) => {
            unhealthy += 1;
            reasons.push(format!("wal disk unreadable: {error}"));
        }
    }
    match &measured.fsync {
        Ok(latency) => {
            parts.insert("fsync_latency_ms".into(), millis(*latency));
            if *latency > limits.fsync_critical {
                unhealthy += 1;
                reasons.push(format!("fsync very slow: {:.0} ms", millis(*latency)));
            } else if *latency > limits.fsync_slow {
                degraded += 1;
                reasons.push(format!("fsync slow: {:.0} ms", millis(*latency)));
            }
        }
        Err(error) => {
            unhealthy += 1;
            reasons.push(format!("fsync failed: {error}"));
        }
    }
    if let Some((available, total)) = measured.memory
        && total > 0
    {
        let ratio = available as f64 / total as f64;
        parts.insert("memory_available_ratio".into(), ratio);
        if ratio < limits.memory_critical {
            unhealthy += 1;
            reasons.push(format!(
                "memory almost exhausted: {:.1}% available",
                ratio * 100.0
            ));
        } else if ratio < limits.memory_low {
            degraded += 1;
            reasons.push(format!("memory low: {:.1}% available", ratio * 100.0));
        }
    }
    if let Some(lag) = measured.replication_lag {
        parts.insert("replication_lag_ms".into(), millis(lag));
        if lag > limits.replication_lag {
            degraded += 1;
            reasons.push(format!(
                "replication lag {:.0} ms (limit {:.0} ms)",
                millis(lag),
                millis(limits.replication_lag)
            ));
        }
    }

    let penalty = u16::from(degraded) * u16::from(DEGRADED_PENALTY)
        + u16::from(unhealthy) * u16::from(UNHEALTHY_PENALTY);
    let score = 100u16.saturating_sub(penalty) as u8;
    let status = if unhealthy > 0 {
        HealthStatus::Unhealthy
    } else if degraded > 0 {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    };
    Health {
        status,
        score,
        reasons,
        parts,
        unhealthy_checks: 0,
    }
}

/// Counts `report` among the consecutive unhealthy checks that `previous` (the last report)
/// ended with: one more if it is unhealthy, none otherwise.
pub fn count_unhealthy(report: &mut Health, previous: &Health) {
    report.unhealthy_checks = if report.status == HealthStatus::Unhealthy {
        previous.unhealthy_checks.saturating_add(1)
    } else {
        0
    };
}

/// The probe file written and fsynced next to the WAL each round.
const PROBE_FILE: &str = ".health-probe";

/// Measures everything [`assess`] needs. Never fails: a failed probe is a finding, and so is
/// an object store that does not answer within `probe_timeout` (a hung store must not leave
/// the last healthy verdict standing).
pub async fn measure(
    storage: &ObjectStorage,
    wal_dir: &Path,
    probe_timeout: Duration,
) -> Measurements {
    let storage_probe = match tokio::time::timeout(probe_timeout, storage.probe()).await {
        Ok(probed) => probed.map_err(|error| error.to_string()),
        Err(_) => Err(format!(
            "no answer from {} within {probe_timeout:?}",
            storage.describe()
        )),
    };
    let dir = wal_dir.to_path_buf();
    let local = tokio::task::spawn_blocking(move || (disk_space(&dir), fsync_probe(&dir)))
        .await
        .unwrap_or_else(|error| {
            let failed = format!("probe task failed: {error}");
            (Err(failed.clone()), Err(failed))
        });
    Measurements {
        storage: storage_probe,
        wal_disk: local.0,
        fsync: local.1,
        memory: memory(),
        replication_lag: None,
    }
}

/// Free and total bytes of the filesystem holding `dir`.
pub(crate) fn disk_space(dir: &Path) -> Result<(u64, u64), String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", dir.display()))?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stats` a writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    if rc != 0 {
        return Err(format!(
            "statvfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    let block = stats.f_frsize as u64;
    Ok((
        (stats.f_bavail as u64).saturating_mul(block),
        (stats.f_blocks as u64).saturating_mul(block),
    ))
}

fn fsync_probe(dir: &Path) -> Result<Duration, String> {
    let path: PathBuf = dir.join(PROBE_FILE);
    let started = Instant::now();
    let result = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0u8; 4096])?;
        file.sync_all()
    })();
    result
        .map(|()| started.elapsed())
        .map_err(|error| format!("{}: {error}", path.display()))
}

fn memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|line| line.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Measurements {
        Measurements {
            storage: Ok(Duration::from_millis(3)),
            wal_disk: Ok((50, 100)),
            fsync: Ok(Duration::from_millis(2)),
            memory: Some((60, 100)),
            replication_lag: Some(Duration::from_millis(3)),
        }
    }

    /// The count grows with each unhealthy check and starts over at any other verdict; a
    /// degraded check breaks a run too.
    #[test]
    fn test_should_count_consecutive_unhealthy_checks() {
        let unhealthy = || {
            assess(
                &Measurements {
                    storage: Err("probe failed".into()),
                    ..good()
                },
                &Thresholds::default(),
            )
        };
        let mut last = assess(&good(), &Thresholds::default());
        for expected in 1..=3 {
            let mut report = unhealthy();
            count_unhealthy(&mut report, &last);
            assert_eq!(report.unhealthy_checks, expected);
            last = report;
        }
        let mut degraded = assess(
            &Measurements {
                fsync: Ok(Duration::from_millis(300)),
                ..good()
            },
            &Thresholds::default(),
        );
        assert_eq!(degraded.status, HealthStatus::Degraded);
        count_unhealthy(&mut degraded, &last);
        assert_eq!(degraded.unhealthy_checks, 0);
        let mut again = unhealthy();
        count_unhealthy(&mut again, &degraded);
        assert_eq!(again.unhealthy_checks, 1);
    }

    #[test]
    fn test_should_be_healthy_with_full_score_when_all_is_well() {
        let health = assess(&good(), &Thresholds::default());
        assert_eq!(health.status, HealthStatus::Healthy);
        assert_eq!(health.score, 100);
        assert!(health.reasons.is_empty());
        assert_eq!(health.parts["wal_disk_free_ratio"], 0.5);
    }

    #[test]
    fn test_should_degrade_on_slow_fsync_and_low_disk() {
        let measured = Measurements {
            fsync: Ok(Duration::from_millis(300)),
            wal_disk: Ok((5, 100)),
            ..good()
        };
        let health = assess(&measured, &Thresholds::default());
        assert_eq!(health.status, HealthStatus::Degraded);
        assert_eq!(health.score, 70);
        assert_eq!(health.reasons.len(), 2, "{:?}", health.reasons);
    }

    #[test]
    fn test_should_degrade_a_follower_whose_replication_lags() {
        let measured = Measurements {
            replication_lag: Some(Duration::from_secs(9)),
            ..good()
        };
        let health = assess(&measured, &Thresholds::default());
        assert_eq!(health.status, HealthStatus::Degraded);
        assert!(
            health.reasons[0].contains("replication lag"),
            "{:?}",
            health.reasons
        );
        assert_eq!(health.parts["replication_lag_ms"], 9000.0);
    }

    #[test]
    fn test_should_be_unhealthy_when_storage_is_unreachable_and_name_it() {
        let measured = Measurements {
            storage: Err("HEAD _catalog/log/0: connection refused".into()),
            ..good()
        };
        let health = assess(&measured, &Thresholds::default());
        assert_eq!(health.status, HealthStatus::Unhealthy);
        assert_eq!(health.score, 50);
        assert!(health.reasons[0].contains("connection refused"));
    }

    #[test]
    fn test_should_floor_the_score_at_zero() {
        let measured = Measurements {
            storage: Err("down".into()),
            wal_disk: Ok((1, 100)),
            fsync: Err("EIO".into()),
            memory: Some((1, 100)),
            replication_lag: None,
        };
        let health = assess(&measured, &Thresholds::default());
        assert_eq!(health.status, HealthStatus::Unhealthy);
        assert_eq!(health.score, 0);
        assert_eq!(health.reasons.len(), 4);
    }

    #[tokio::test]
    async fn test_should_measure_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let storage = ObjectStorage::open(&arc_storage::StorageSettings {
            local_path: dir.path().join("storage"),
            ..arc_storage::StorageSettings::default()
        })
        .unwrap();
        let measured = measure(&storage, dir.path(), Duration::from_secs(5)).await;
        assert!(measured.storage.is_ok(), "{:?}", measured.storage);
        let (free, total) = measured.wal_disk.unwrap();
        assert!(free <= total && total > 0);
        assert!(measured.fsync.is_ok());
        let missing = measure(
            &storage,
            &dir.path().join("missing"),
            Duration::from_secs(5),
        )
        .await;
        assert!(missing.fsync.unwrap_err().contains("missing"));
    }
}
