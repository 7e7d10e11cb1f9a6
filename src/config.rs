//! Node configuration: a TOML file plus `ARC_<SECTION>_<KEY>` environment variables.
//!
//! Precedence: built-in defaults < the TOML file < the environment. The section is the first
//! `_`-separated word after `ARC_`; the key keeps its own underscores (`ARC_CLUSTER_NODE_ID` is
//! `cluster.node_id`, `ARC_STORAGE_S3_BUCKET` is `storage.s3_bucket`). Lists are
//! comma-separated. The whole configuration is read and validated once, at start; every error
//! names the key and the bad value, and the process exits non-zero.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use arc_storage::StorageSettings;
use arc_wal::SyncMode;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The sections an `ARC_` variable may name.
const SECTIONS: &[&str] = &[
    "server",
    "storage",
    "auth",
    "ingest",
    "wal",
    "query",
    "compaction",
    "cluster",
    "log",
];

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["cluster.seeds"];

/// Keys whose values `config show` never prints.
const SECRET_KEYS: &[&str] = &[
    "storage.s3_access_key",
    "storage.s3_secret_key",
    "storage.azure_access_key",
    "auth.bootstrap_token",
    "cluster.shared_secret",
];

/// A configuration that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or a value could not be read or has the wrong type.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// A key has a value that parses but is not acceptable.
    #[error("invalid configuration: {key} = {value:?}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `server.port`.
        key: String,
        /// The offending value as given.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
}

fn invalid(key: &str, value: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The complete node configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP API.
    pub server: ServerSettings,
    /// Object storage (the durable data and the catalog log).
    pub storage: StorageSettings,
    /// API tokens.
    pub auth: AuthSettings,
    /// Ingest buffering.
    pub ingest: IngestSettings,
    /// Write-ahead log.
    pub wal: WalConfig,
    /// Query engine.
    pub query: QueryConfig,
    /// Compaction (hourly and daily merges).
    pub compaction: CompactionSettings,
    /// Clustering.
    pub cluster: ClusterSettings,
    /// Logging.
    pub log: LogSettings,
}

/// `[server]`: the HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on. Default `0.0.0.0`.
    pub host: String,
    /// Port to listen on. Default 8000; 0 picks a free port (logged, and written to
    /// `server.port_file` if set).
    pub port: u16,
    /// Largest request body accepted, checked before and after decompression (413 beyond).
    /// Default 1GB. Accepts bytes or `512MB`, `1GiB`, ...
    pub max_payload_size: ByteSize,
    /// PEM certificate for HTTPS (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key_file: Option<PathBuf>,
    /// How long a graceful stop may take to drain requests and flush buffers. Default 30s.
    pub shutdown_timeout: HumanDuration,
    /// If set, the bound API address (`host:port`) is written here once listening: lets tests
    /// and scripts use port 0.
    pub port_file: Option<PathBuf>,
    /// Most connections served at once. Past it, [`RESERVED_CONNECTIONS`] more are accepted for
    /// `/health`, `/ready` and `/metrics` only (so probes and scrapes still get through a flood),
    /// and any beyond those are closed at once. Default 10000; lowered at start to what the
    /// process's file-descriptor limit leaves room for.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, from their first byte.
    /// Default 10s.
    pub header_read_timeout: HumanDuration,
    /// How long a request may take to send its whole body (408 past it). Default 60s.
    pub body_read_timeout: HumanDuration,
    /// How long a connection with no request in flight may stay silent before it is closed.
    /// Default 60s.
    pub idle_timeout: HumanDuration,
}

/// Connections accepted past `server.max_connections` for the health, readiness and metrics
/// routes only.
pub const RESERVED_CONNECTIONS: usize = 64;

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8000,
            max_payload_size: ByteSize(1024 * 1024 * 1024),
            tls_cert_file: None,
            tls_key_file: None,
            shutdown_timeout: HumanDuration(Duration::from_secs(30)),
            port_file: None,
            max_connections: 10_000,
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            body_read_timeout: HumanDuration(Duration::from_secs(60)),
            idle_timeout: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// `[auth]`: API tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Whether every non-public route needs a token. Default true.
    pub enabled: bool,
    /// Preset admin token for the first start (at least 32 characters).
    pub bootstrap_token: Option<String>,
    /// How long a node trusts its cached view of the tokens: a token revoked on another node
    /// stops working here within this time. Default 5 s.
    pub cache_ttl: HumanDuration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bootstrap_token: None,
            cache_ttl: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// `[ingest]`: in-memory buffers between the WAL and Parquet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// A table's buffer is flushed to Parquet once it holds this many rows. Default 50000.
    /// Larger means fewer, bigger files and more memory.
    pub max_buffer_size: u64,
    /// A table's buffer is flushed once its oldest row is this old (milliseconds). Default
    /// 5000. Smaller means fresher files and more, smaller objects.
    pub max_buffer_age_ms: u64,
    /// Bytes that write bodies being read, decompressed and decoded may hold at once, all
    /// requests together: a body as it is read and inflated, its rows as they are decoded (8
    /// bytes per value, null and timestamp, plus the strings' bytes). Default `2GB`, a twelfth
    /// of a 24 GiB node. A write past it gets 503 with `Retry-After`; one that needs more than
    /// all of it, 413.
    pub max_inflight_bytes: ByteSize,
    /// Arrow bytes of acknowledged rows that may wait in memory for a flush. Default `4GB`.
    /// Past it (the object store is slow or down) writes get 503 with `Retry-After` until
    /// flushes catch up: what cannot be kept is never acknowledged, and the node never grows
    /// until the kernel kills it. A start whose WAL replay holds more flushes during replay.
    pub max_buffered_bytes: ByteSize,
    /// Leave out the bad lines of a line protocol write and store the rest (Arc's behaviour)
    /// instead of refusing the whole request with 400 naming the first. Default false. A
    /// request whose every line is bad still gets 400; the answer to one with lines left out
    /// is 204 with `x-arc-skipped-lines`, and `arc_ingest_skipped_lines_total` counts them.
    pub lenient_line_protocol: bool,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_buffer_size: 50_000,
            max_buffer_age_ms: 5_000,
            max_inflight_bytes: ByteSize(2 * 1024 * 1024 * 1024),
            max_buffered_bytes: ByteSize(4 * 1024 * 1024 * 1024),
            lenient_line_protocol: false,
        }
    }
}

/// `[wal]`: the write-ahead log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// Directory of the WAL segments. Default `./data/wal`.
    pub directory: PathBuf,
    /// `fsync`, `fdatasync` (default) or `async`. `async` acknowledges before the data is on
    /// disk: a crash or power loss can lose acknowledged writes. Unsafe; for benchmarks only.
    #[serde(with = "sync_mode_serde")]
    pub sync_mode: SyncMode,
    /// Size of one WAL segment in MiB before a new one starts. Default 64.
    pub max_size_mb: u64,
    /// Start even though the WAL is corrupt in the middle (not just a torn tail), keeping what
    /// precedes the damage. Default false: the node refuses to start and names the segment and
    /// offset, because entries after the damage were acknowledged and would be lost. The
    /// damaged segments are copied aside first either way; set this only once you have decided
    /// that what follows the damage is gone, and unset it after that start.
    pub truncate_corrupt: bool,
    /// Bytes the WAL's segments may take on disk (they are deleted as flushes commit). Default
    /// `16GB`. Past it writes get 503 with `Retry-After` until flushes catch up.
    pub max_total_size: ByteSize,
    /// Free space the WAL's filesystem must keep. Default `512MB`. Below it writes get 503
    /// with `Retry-After` (naming the directory) rather than failing the log on a full disk.
    pub min_free_space: ByteSize,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("./data/wal"),
            sync_mode: SyncMode::Fdatasync,
            max_size_mb: 64,
            truncate_corrupt: false,
            max_total_size: ByteSize(16 * 1024 * 1024 * 1024),
            min_free_space: ByteSize(512 * 1024 * 1024),
        }
    }
}

mod sync_mode_serde {
    use super::*;

    pub fn serialize<S: Serializer>(mode: &SyncMode, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&mode.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SyncMode, D::Error> {
        let text = String::deserialize(deserializer)?;
        SyncMode::from_str(&text).map_err(|_| {
            de::Error::custom(format!(
                "invalid sync mode {text:?} (expected fsync, fdatasync or async)"
            ))
        })
    }
}

/// `[query]`: the DuckDB engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Local copies of remote Parquet objects. Default `./data/cache`.
    pub cache_dir: PathBuf,
    /// DuckDB worker threads. Default: DuckDB's choice (one per core).
    pub threads: Option<usize>,
    /// DuckDB memory limit, e.g. `4GB`. Default: DuckDB's choice (80% of RAM). It bounds
    /// DuckDB's operators (hash tables, sorts) for all queries together; answers are streamed
    /// as they are produced, so a query's result adds only a few MiB on top.
    pub memory_limit: Option<String>,
    /// Longest a query may run before it is stopped (503 naming this key). Default `300s`,
    /// as long as a forwarded request may take. A query is also stopped when its client
    /// disconnects and when the node stops.
    pub timeout: HumanDuration,
    /// Largest answer a query may send (encoded bytes). Default `512MB`. Answers are streamed,
    /// so this bounds what a client receives, not memory: past it within the first 1 MiB the
    /// query gets a 400 naming this key; after that the body is cut short (the client sees an
    /// incomplete response) and the node logs why.
    pub max_result_bytes: ByteSize,
    /// Most rows one answer may hold. Default: no limit (`max_result_bytes` bounds it).
    /// Past it, as past `max_result_bytes`: a 400 naming this key within the first 1 MiB,
    /// else the body is cut short.
    pub max_result_rows: Option<u64>,
    /// Queries that may run at once; more get 503 with `Retry-After` at once instead of
    /// queueing. Default 16. Each holds a blocking thread (shared with write decoding) and
    /// DuckDB memory, so this keeps a burst of slow queries from starving ingest.
    pub max_concurrent: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("./data/cache"),
            threads: None,
            memory_limit: None,
            timeout: HumanDuration(Duration::from_secs(300)),
            max_result_bytes: ByteSize(512 * 1024 * 1024),
            max_result_rows: None,
            max_concurrent: 16,
        }
    }
}

/// `[compaction]`: hourly and daily merges of the small Parquet objects flushes write (see
/// the `compact/` crate and README "Compaction"). A standalone node compacts in-process; in a
/// cluster only nodes with role `compactor` do, sharing the partitions between them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionSettings {
    /// Whether this node compacts (if its role does). Default true.
    pub enabled: bool,
    /// Merge the raw objects of a closed hour into one hourly object. Default true.
    pub hourly_enabled: bool,
    /// Merge a closed day's objects into one daily object. Default true.
    pub daily_enabled: bool,
    /// Fewest raw objects in a closed hour worth merging. Default 10. Lower: fewer small
    /// objects sooner, more rewriting.
    pub hourly_min_files: u32,
    /// Fewest raw and hourly objects in a closed day worth merging. Default 12.
    pub daily_min_files: u32,
    /// How long after an hour (or day) ends it counts as closed and may be merged. Default
    /// 10m. Late rows flushed within this window land before the merge; later ones make a new
    /// raw object that a later run merges. Longer: fewer re-merges, later compaction.
    pub closed_after: HumanDuration,
    /// How often the scheduler plans and runs jobs. Default 1m. Shorter: small objects live
    /// less long, more catalog reads (one LIST per run).
    pub interval: HumanDuration,
    /// Largest total input size of one job; larger partitions are split. Default 2GB. Bounds
    /// the scratch disk a job needs (inputs plus output, about twice this) and its duration.
    pub max_job_bytes: ByteSize,
    /// Largest total input rows of one job. Default 200000000.
    pub max_job_rows: u64,
    /// Most input objects of one job. Default 2000; the merge opens at most `merge_fan_in`
    /// of them at once whatever this is.
    pub max_job_objects: u64,
    /// Memory one merge aims to stay within (decoded batches and the output row group).
    /// Default 256MB, at least 1MB. Lower: smaller batches and more merge passes, slower.
    pub memory_limit: ByteSize,
    /// Most inputs a merge opens at once; more are merged in passes through local
    /// intermediate files. Default 64, at least 2. Higher: fewer passes, more memory.
    pub merge_fan_in: u64,
    /// Merges running at once (each on its own blocking thread). Default 1: on a 2-core
    /// node the other core stays with ingest and queries.
    pub threads: u64,
    /// Local directory for a job's downloaded inputs and merged output. Default
    /// `./data/compaction`; needs room for about twice `max_job_bytes` per thread. One node
    /// per directory: a start removes the job directories left in it.
    pub scratch_dir: PathBuf,
    /// How long an object the catalog no longer names is kept before the garbage collector
    /// deletes it. Default 1h. Must exceed the longest query (queries planned before a swap
    /// still read its inputs) and the longest flush between upload and commit.
    pub gc_grace: HumanDuration,
    /// How often the garbage collector runs. Default 5m. Each run LISTs every table's
    /// prefix.
    pub gc_interval: HumanDuration,
}

impl Default for CompactionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            hourly_enabled: true,
            daily_enabled: true,
            hourly_min_files: 10,
            daily_min_files: 12,
            closed_after: HumanDuration(Duration::from_secs(600)),
            interval: HumanDuration(Duration::from_secs(60)),
            max_job_bytes: ByteSize(2 << 30),
            max_job_rows: 200_000_000,
            max_job_objects: 2000,
            memory_limit: ByteSize(256 << 20),
            merge_fan_in: 64,
            threads: 1,
            scratch_dir: PathBuf::from("./data/compaction"),
            gc_grace: HumanDuration(Duration::from_secs(3600)),
            gc_interval: HumanDuration(Duration::from_secs(300)),
        }
    }
}

impl CompactionSettings {
    /// Checks values that parse but cannot work; each error names the key.
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            (
                "compaction.hourly_min_files",
                u64::from(self.hourly_min_files),
            ),
            (
                "compaction.daily_min_files",
                u64::from(self.daily_min_files),
            ),
            ("compaction.max_job_bytes", self.max_job_bytes.0),
            ("compaction.max_job_rows", self.max_job_rows),
            ("compaction.max_job_objects", self.max_job_objects),
            ("compaction.threads", self.threads),
        ] {
            if value == 0 {
                return Err(invalid(key, value, "must be at least 1"));
            }
        }
        if self.memory_limit.0 < 1 << 20 {
            return Err(invalid(
                "compaction.memory_limit",
                self.memory_limit,
                "must be at least 1MB",
            ));
        }
        if self.merge_fan_in < 2 {
            return Err(invalid(
                "compaction.merge_fan_in",
                self.merge_fan_in,
                "must be at least 2",
            ));
        }
        for (key, value) in [
            ("compaction.interval", self.interval),
            ("compaction.gc_interval", self.gc_interval),
        ] {
            if value.0.is_zero() {
                return Err(invalid(key, value, "must be greater than 0"));
            }
        }
        Ok(())
    }
}

/// A node's role: `writer`, `reader`, `compactor` or `standalone` (gossip advertises it).
pub use arc_gossip::Role;

/// `[cluster]`: membership, replication and failover.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Whether this node joins a cluster. Default false (standalone).
    pub enabled: bool,
    /// Unique node id. Default: the host name.
    pub node_id: String,
    /// `writer`, `reader`, `compactor` or `standalone` (default).
    pub role: Role,
    /// Cluster name; nodes of different names never mix. Default `arc`.
    pub cluster_name: String,
    /// Seed gossip addresses (`host:port`).
    #[serde(deserialize_with = "string_or_list")]
    pub seeds: Vec<String>,
    /// Gossip address (UDP). Default `:9000` (all interfaces).
    pub coordinator_addr: String,
    /// How often a node checks its own health. Default 10s (a bare number is seconds).
    pub health_check_interval: HumanDuration,
    /// Gossip heartbeat. Default 5s (a bare number is seconds).
    pub heartbeat_interval: HumanDuration,
    /// Stream the WAL to readers and standbys. Default true.
    pub replication_enabled: bool,
    /// Secret that authenticates gossip and replication.
    pub shared_secret: Option<String>,
    /// Replication listen address (QUIC). Default `:9100`.
    pub replication_addr: String,
    /// The least number of in-sync standbys a write needs: with fewer, writes get 503. Every
    /// in-sync standby acknowledges every write whatever this says. Default 0, so a cluster
    /// without standby writers takes writes.
    pub replication_ack: u32,
    /// A standby whose oldest unacknowledged entry is older than this is removed from the
    /// in-sync set (an `isr` record) so writes go on without it; it is added back once its lag
    /// is at most half of it. This is also the longest a stalled standby holds writes up.
    /// Default 5s.
    pub replication_lag_limit: HumanDuration,
    /// Whether standbys take over a failed primary. Default true.
    pub failover_enabled: bool,
    /// Least time between two health-triggered failovers. Default 60s.
    pub failover_cooldown: HumanDuration,
    /// A standby starts a failover once the primary's replication stream has been silent this
    /// long and a reconnect failed (the fast path; gossip's failure detector is far slower).
    /// Default 3s: three missed keep-alives.
    pub failover_timeout: HumanDuration,
    /// Failed health checks before a primary counts as unhealthy. Default 3.
    pub unhealthy_threshold: u32,
    /// The host or IP other nodes reach this node at (API, gossip, replication). Default: the
    /// listen address when it names one; for a wildcard listen address, the local address
    /// that routes to the first seed (127.0.0.1 without seeds).
    pub advertise_host: Option<String>,
    /// PEM file of CA certificates trusted, in addition to the platform's roots, when this
    /// node forwards a request to another node over HTTPS (a cluster on a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM certificate chain this node presents to replication peers (mTLS, with
    /// `tls_key_file` and `tls_ca_file`, which signs every node's certificate). Unset (the
    /// default): peers prove `shared_secret` instead, bound to each TLS session.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            node_id: default_node_id(),
            role: Role::Standalone,
            cluster_name: "arc".into(),
            seeds: Vec::new(),
            coordinator_addr: ":9000".into(),
            health_check_interval: HumanDuration(Duration::from_secs(10)),
            heartbeat_interval: HumanDuration(Duration::from_secs(5)),
            replication_enabled: true,
            shared_secret: None,
            replication_addr: ":9100".into(),
            replication_ack: 0,
            replication_lag_limit: HumanDuration(Duration::from_secs(5)),
            failover_enabled: true,
            failover_cooldown: HumanDuration(Duration::from_secs(60)),
            failover_timeout: HumanDuration(Duration::from_secs(3)),
            unhealthy_threshold: 3,
            advertise_host: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// The shortest accepted `cluster.shared_secret`: it keys the gossip MAC, so it must not be
/// guessable.
pub const MIN_SHARED_SECRET_LEN: usize = 16;

impl ClusterSettings {
    /// Checks what clustering needs; each error names the key.
    fn validate_enabled(&self) -> Result<(), ConfigError> {
        if self.role == Role::Standalone {
            return Err(invalid(
                "cluster.role",
                self.role,
                "a clustered node needs a role: writer, reader or compactor",
            ));
        }
        match &self.shared_secret {
            None => {
                return Err(invalid(
                    "cluster.shared_secret",
                    "<unset>",
                    "required when cluster.enabled = true: it authenticates every gossip datagram",
                ));
            }
            Some(secret) if secret.len() < MIN_SHARED_SECRET_LEN => {
                return Err(invalid(
                    "cluster.shared_secret",
                    "<redacted>",
                    format!("must be at least {MIN_SHARED_SECRET_LEN} characters"),
                ));
            }
            Some(_) => {}
        }
        if self.cluster_name.is_empty()
            || self.cluster_name.len() > 64
            || !self
                .cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(invalid(
                "cluster.cluster_name",
                &self.cluster_name,
                "must be 1-64 ASCII letters, digits, '-', '_' or '.'",
            ));
        }
        if self.node_id.len() > 64 {
            return Err(invalid(
                "cluster.node_id",
                &self.node_id,
                "must be at most 64 characters",
            ));
        }
        for seed in &self.seeds {
            let valid = seed
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(invalid(
                    "cluster.seeds",
                    seed,
                    "each seed must be host:port, e.g. 10.0.1.10:9000",
                ));
            }
        }
        if self.heartbeat_interval.0.is_zero() {
            return Err(invalid(
                "cluster.heartbeat_interval",
                self.heartbeat_interval,
                "must be greater than 0",
            ));
        }
        if self.health_check_interval.0.is_zero() {
            return Err(invalid(
                "cluster.health_check_interval",
                self.health_check_interval,
                "must be greater than 0",
            ));
        }
        if let Some(path) = &self.tls_ca_file
            && !path.is_file()
        {
            return Err(invalid(
                "cluster.tls_ca_file",
                path.display(),
                "no such file",
            ));
        }
        for (key, path) in [
            ("cluster.tls_cert_file", &self.tls_cert_file),
            ("cluster.tls_key_file", &self.tls_key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(invalid(key, path.display(), "no such file"));
            }
        }
        match (&self.tls_cert_file, &self.tls_key_file, &self.tls_ca_file) {
            (None, None, _) | (Some(_), Some(_), Some(_)) => {}
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(invalid(
                    "cluster.tls_cert_file",
                    "<partial>",
                    "cluster.tls_cert_file and cluster.tls_key_file are set together",
                ));
            }
            (Some(_), Some(_), None) => {
                return Err(invalid(
                    "cluster.tls_ca_file",
                    "<unset>",
                    "required with cluster.tls_cert_file: it verifies the replication peers' certificates",
                ));
            }
        }
        if self.failover_timeout.0 < Duration::from_millis(100) {
            return Err(invalid(
                "cluster.failover_timeout",
                self.failover_timeout,
                "must be at least 100ms",
            ));
        }
        if self.replication_lag_limit.0 < Duration::from_millis(100) {
            return Err(invalid(
                "cluster.replication_lag_limit",
                self.replication_lag_limit,
                "must be at least 100ms",
            ));
        }
        if let Some(host) = &self.advertise_host
            && (host.trim().is_empty() || host.contains('/') || host.contains(' '))
        {
            return Err(invalid(
                "cluster.advertise_host",
                host,
                "must be a host name or IP address",
            ));
        }
        Ok(())
    }
}

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "arc-node".to_string())
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Level filter (`info`, `debug`, `arc_node=debug,info`, ...). `RUST_LOG` wins if set.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// A byte size: an integer number of bytes, or a string like `512KB`, `100MB`, `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits.parse().map_err(|_| {
            format!("invalid size {text:?} (expected e.g. 1048576, 512KB, 100MB, 1GB)")
        })?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "invalid size {text:?} (unknown unit {unit:?}; use B, KB, MB, GB or TB)"
                ));
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {text:?} (too large)"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, size) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
            if bytes >= size && bytes.is_multiple_of(size) {
                return write!(f, "{}{unit}", bytes / size);
            }
        }
        write!(f, "{bytes}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes or a string like 100MB")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {value} (negative)")))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
                ByteSize::from_str(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration: a bare number of seconds, or a string like `250ms`, `5s`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let bad = || format!("invalid duration {text:?} (expected e.g. 10, 500ms, 5s, 2m, 1h)");
        let number: f64 = digits.parse().map_err(|_| bad())?;
        let seconds_per_unit = match unit.trim() {
            "" | "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        let seconds = number * seconds_per_unit;
        if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
            return Err(bad());
        }
        Ok(HumanDuration(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis.is_multiple_of(1000) {
            write!(f, "{}s", millis / 1000)
        } else {
            write!(f, "{millis}ms")
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds, or a string like 500ms or 5s")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration(Duration::from_secs(value)))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<HumanDuration, E> {
                u64::try_from(value)
                    .map(|secs| HumanDuration(Duration::from_secs(secs)))
                    .map_err(|_| E::custom(format!("invalid duration {value} (negative)")))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<HumanDuration, E> {
                HumanDuration::from_str(&value.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<HumanDuration, E> {
                HumanDuration::from_str(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => split_list(&text),
        OneOrMany::Many(items) => items,
    })
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `host:port`, `:port` (all interfaces) or `[v6]:port` into a socket address.
///
/// # Errors
/// Names `key` and the value when it is not an address with a port.
pub fn parse_listen_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_string()
    };
    full.parse::<SocketAddr>()
        .map_err(|_| invalid(key, value, "expected an address like 0.0.0.0:9000 or :9000"))
}

impl Config {
    /// Loads the configuration from an optional TOML file and the given environment (pairs of
    /// name and value; pass `std::env::vars()`), then validates it.
    ///
    /// # Errors
    /// A missing or malformed file, an unknown key, a value of the wrong type or an invalid
    /// value; the message names the key and the value.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
            );
        }
        for (key, value) in env_overrides(env)? {
            builder = if LIST_KEYS.contains(&key.as_str()) {
                builder.set_override(key.as_str(), split_list(&value))
            } else {
                builder.set_override(key.as_str(), value)
            }
            .map_err(|error| ConfigError::Load(format!("{key}: {error}")))?;
        }
        let loaded = builder
            .build()
            .map_err(|error| ConfigError::Load(error.to_string()))?;
        let config: Config = loaded
            .try_deserialize()
            .map_err(|error| ConfigError::Load(error.to_string()))?;
        let mut config = config;
        config.validate()?;
        config.resolve_paths()?;
        Ok(config)
    }

    /// Makes every configured path absolute, against the working directory at start, so that
    /// what the node hands on (a cached object's path to DuckDB, above all) means the same
    /// whoever reads it, and `config show` prints what is really used.
    ///
    /// # Errors
    /// When the working directory cannot be read.
    fn resolve_paths(&mut self) -> Result<(), ConfigError> {
        let absolute = |key: &str, path: &mut PathBuf| -> Result<(), ConfigError> {
            if !path.is_absolute() {
                *path = std::path::absolute(&*path).map_err(|error| {
                    ConfigError::Load(format!(
                        "{key}: cannot make {} absolute: {error}",
                        path.display()
                    ))
                })?;
            }
            Ok(())
        };
        absolute("wal.directory", &mut self.wal.directory)?;
        absolute("query.cache_dir", &mut self.query.cache_dir)?;
        absolute("storage.local_path", &mut self.storage.local_path)?;
        absolute("compaction.scratch_dir", &mut self.compaction.scratch_dir)?;
        for (key, path) in [
            ("server.tls_cert_file", &mut self.server.tls_cert_file),
            ("server.tls_key_file", &mut self.server.tls_key_file),
            ("server.port_file", &mut self.server.port_file),
            ("cluster.tls_ca_file", &mut self.cluster.tls_ca_file),
            ("cluster.tls_cert_file", &mut self.cluster.tls_cert_file),
            ("cluster.tls_key_file", &mut self.cluster.tls_key_file),
        ] {
            if let Some(path) = path {
                absolute(key, path)?;
            }
        }
        Ok(())
    }

    /// Combinations that work but defeat a guarantee in some failure, each as a sentence naming
    /// the keys (logged at start).
    pub fn warnings(&self) -> Vec<String> {
        let cluster = &self.cluster;
        let mut warnings = Vec::new();
        // A primary whose outgoing packets are lost keeps a standby that stopped hearing it in
        // the in-sync set for one lag limit; the standby needs the failover timeout and a rank
        // step or two to take over within it.
        let takeover = cluster.failover_timeout.0 + Duration::from_secs(2);
        if cluster.enabled
            && cluster.failover_enabled
            && matches!(cluster.role, Role::Writer)
            && cluster.replication_lag_limit.0 < takeover
        {
            warnings.push(format!(
                "cluster.replication_lag_limit ({}) is shorter than cluster.failover_timeout ({}) \
                 plus 2s: a primary whose outgoing packets are lost can drop its standbys from \
                 the in-sync set before one of them takes over, and writes then stop until the \
                 network heals",
                cluster.replication_lag_limit, cluster.failover_timeout
            ));
        }
        warnings
    }

    /// Checks values that parse but cannot work.
    ///
    /// # Errors
    /// The first invalid key, with its value and the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.host.trim().is_empty() {
            return Err(invalid(
                "server.host",
                &self.server.host,
                "must not be empty",
            ));
        }
        self.listen_addr()?;
        if self.server.max_payload_size.0 == 0 {
            return Err(invalid(
                "server.max_payload_size",
                self.server.max_payload_size,
                "must be greater than 0",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(invalid(
                "server.max_connections",
                0,
                "must be greater than 0",
            ));
        }
        for (key, value) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.body_read_timeout", self.server.body_read_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
        ] {
            if value.0.is_zero() {
                return Err(invalid(key, value, "must be greater than 0"));
            }
        }
        if self.server.tls_cert_file.is_some() != self.server.tls_key_file.is_some() {
            return Err(invalid(
                "server.tls_cert_file",
                format!("{:?}", self.server.tls_cert_file),
                "tls_cert_file and tls_key_file must be set together",
            ));
        }
        if self.ingest.max_buffer_size == 0 {
            return Err(invalid(
                "ingest.max_buffer_size",
                0,
                "must be greater than 0",
            ));
        }
        if self.ingest.max_buffer_age_ms == 0 {
            return Err(invalid(
                "ingest.max_buffer_age_ms",
                0,
                "must be greater than 0",
            ));
        }
        if self.query.timeout.0.is_zero() {
            return Err(invalid(
                "query.timeout",
                self.query.timeout,
                "must be greater than 0",
            ));
        }
        if self.ingest.max_inflight_bytes.0 == 0 {
            return Err(invalid(
                "ingest.max_inflight_bytes",
                self.ingest.max_inflight_bytes,
                "must be greater than 0",
            ));
        }
        if self.query.max_concurrent == 0 {
            return Err(invalid("query.max_concurrent", 0, "must be greater than 0"));
        }
        if self.query.max_result_bytes.0 == 0 {
            return Err(invalid(
                "query.max_result_bytes",
                self.query.max_result_bytes,
                "must be greater than 0",
            ));
        }
        if self.wal.max_size_mb == 0 {
            return Err(invalid("wal.max_size_mb", 0, "must be greater than 0"));
        }
        if self.wal.max_total_size.0 < self.wal.max_size_mb.saturating_mul(2 << 20) {
            return Err(invalid(
                "wal.max_total_size",
                self.wal.max_total_size,
                "must hold at least two segments (2 × wal.max_size_mb)",
            ));
        }
        if self.ingest.max_buffered_bytes.0 == 0 {
            return Err(invalid(
                "ingest.max_buffered_bytes",
                self.ingest.max_buffered_bytes,
                "must be greater than 0",
            ));
        }
        if let Some(token) = &self.auth.bootstrap_token
            && token.len() < 32
        {
            return Err(invalid(
                "auth.bootstrap_token",
                "<redacted>",
                "must be at least 32 characters",
            ));
        }
        if self.cluster.node_id.trim().is_empty()
            || !self
                .cluster
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(invalid(
                "cluster.node_id",
                &self.cluster.node_id,
                "must be non-empty ASCII letters, digits, '-', '_' or '.'",
            ));
        }
        parse_listen_addr("cluster.coordinator_addr", &self.cluster.coordinator_addr)?;
        parse_listen_addr("cluster.replication_addr", &self.cluster.replication_addr)?;
        if self.cluster.enabled {
            self.cluster.validate_enabled()?;
        } else if self.cluster.role != Role::Standalone {
            return Err(invalid(
                "cluster.role",
                self.cluster.role,
                "roles other than standalone need cluster.enabled = true",
            ));
        }
        self.compaction.validate()?;
        self.storage
            .validate()
            .map_err(|error| ConfigError::Load(error.to_string()))?;
        Ok(())
    }

    /// Returns the HTTP listen address.
    ///
    /// # Errors
    /// When `server.host` and `server.port` do not form an address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let host = self.server.host.trim();
        let joined = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.server.port)
        } else {
            format!("{host}:{}", self.server.port)
        };
        if let Ok(addr) = joined.parse::<SocketAddr>() {
            return Ok(addr);
        }
        if host == "localhost" {
            return Ok(SocketAddr::from(([127, 0, 0, 1], self.server.port)));
        }
        Err(invalid(
            "server.host",
            host,
            "expected an IP address such as 0.0.0.0, 127.0.0.1 or ::",
        ))
    }

    /// Renders the effective configuration as TOML with every secret replaced by `<redacted>`.
    pub fn to_redacted_toml(&self) -> String {
        let mut value =
            toml::Value::try_from(self).unwrap_or(toml::Value::Table(Default::default()));
        for key in SECRET_KEYS {
            let (section, name) = key.split_once('.').expect("secret keys are dotted");
            if let Some(table) = value.get_mut(section).and_then(toml::Value::as_table_mut)
                && table.contains_key(name)
            {
                table.insert(name.to_string(), toml::Value::String("<redacted>".into()));
            }
        }
        toml::to_string_pretty(&value).unwrap_or_default()
    }
}

/// Maps `ARC_<SECTION>_<KEY>` variables to dotted keys; variables of unknown sections are
/// ignored (other software uses the `ARC_` prefix too), empty values are skipped.
fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut overrides = BTreeMap::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("ARC_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            continue;
        };
        // `ARC_WAL_DIRECTORY=` (an env file's placeholder) means "not set", not "empty".
        if !SECTIONS.contains(&section) || key.is_empty() || value.trim().is_empty() {
            continue;
        }
        overrides.insert(format!("{section}.{key}"), value);
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn test_should_use_defaults_without_file_or_env() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.server.port, 8000);
        // Relative defaults are resolved against the working directory once, at load.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(config.wal.directory, cwd.join("data/wal"));
        assert_eq!(config.query.cache_dir, cwd.join("data/cache"));
        assert_eq!(config.storage.local_path, cwd.join("data/storage"));
        let blank = Config::load(
            None,
            env(&[("ARC_WAL_DIRECTORY", ""), ("ARC_SERVER_PORT", " ")]),
        )
        .unwrap();
        assert_eq!(
            blank.wal.directory,
            cwd.join("data/wal"),
            "empty means unset"
        );
        assert_eq!(blank.server.port, 8000);
        assert!(!config.wal.truncate_corrupt);
        assert_eq!(config.wal.sync_mode, SyncMode::Fdatasync);
        assert_eq!(config.ingest.max_buffer_size, 50_000);
        assert_eq!(config.cluster.role, Role::Standalone);
    }

    #[test]
    fn test_should_let_env_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arc.toml");
        std::fs::write(
            &path,
            "[server]\nport = 9001\nmax_payload_size = \"2MB\"\n[ingest]\nmax_buffer_size = 10\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&path),
            env(&[
                ("ARC_SERVER_PORT", "9002"),
                ("ARC_WAL_SYNC_MODE", "fsync"),
                ("ARC_CLUSTER_NODE_ID", "writer-01"),
                ("ARC_CLUSTER_SEEDS", "10.0.1.10:9000, 10.0.1.11:9000"),
                ("ARC_CLUSTER_HEARTBEAT_INTERVAL", "250ms"),
                ("ARC_LICENSE_KEY", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.port, 9002);
        assert_eq!(config.server.max_payload_size, ByteSize(2 << 20));
        assert_eq!(config.ingest.max_buffer_size, 10);
        assert_eq!(config.wal.sync_mode, SyncMode::Fsync);
        assert_eq!(config.cluster.node_id, "writer-01");
        assert_eq!(
            config.cluster.seeds,
            vec!["10.0.1.10:9000", "10.0.1.11:9000"]
        );
        assert_eq!(
            config.cluster.heartbeat_interval,
            HumanDuration(Duration::from_millis(250))
        );
    }

    #[test]
    fn test_should_name_key_and_value_of_bad_values() {
        let cases: &[(&str, &str, &str)] = &[
            ("ARC_CLUSTER_ROLE", "leader", "leader"),
            ("ARC_SERVER_PORT", "eighty", "eighty"),
            ("ARC_SERVER_PORT", "70000", "70000"),
            ("ARC_SERVER_MAX_PAYLOAD_SIZE", "12XB", "12XB"),
            ("ARC_CLUSTER_HEARTBEAT_INTERVAL", "soon", "soon"),
            ("ARC_WAL_SYNC_MODE", "sometimes", "sometimes"),
            ("ARC_CLUSTER_COORDINATOR_ADDR", "nohost", "nohost"),
            ("ARC_SERVER_HOST", "not an ip", "not an ip"),
            ("ARC_INGEST_MAX_BUFFER_SIZE", "0", "ingest.max_buffer_size"),
            ("ARC_AUTH_BOOTSTRAP_TOKEN", "short", "auth.bootstrap_token"),
        ];
        for (name, value, expected) in cases {
            let error = Config::load(None, env(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{name}={value}: {error}");
        }
    }

    /// The defaults warn of nothing; a lag limit shorter than a takeover takes is named.
    #[test]
    fn test_should_warn_of_a_lag_limit_shorter_than_a_takeover() {
        let base = [
            ("ARC_CLUSTER_ENABLED", "true"),
            ("ARC_CLUSTER_ROLE", "writer"),
            ("ARC_CLUSTER_SHARED_SECRET", "0123456789abcdef-secret"),
        ];
        let config = Config::load(None, env(&base)).unwrap();
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        let mut vars = base.to_vec();
        vars.push(("ARC_CLUSTER_REPLICATION_LAG_LIMIT", "2s"));
        let warnings = Config::load(None, env(&vars)).unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("cluster.replication_lag_limit (2s)"),
            "{warnings:?}"
        );
        vars.push(("ARC_CLUSTER_FAILOVER_ENABLED", "false"));
        assert!(
            Config::load(None, env(&vars))
                .unwrap()
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn test_should_require_a_shared_secret_and_a_role_when_clustered() {
        let base = [
            ("ARC_CLUSTER_ENABLED", "true"),
            ("ARC_CLUSTER_ROLE", "reader"),
            ("ARC_CLUSTER_SHARED_SECRET", "0123456789abcdef-secret"),
        ];
        let config = Config::load(None, env(&base)).unwrap();
        assert!(config.cluster.enabled);
        assert_eq!(config.cluster.role, Role::Reader);
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("ARC_CLUSTER_SHARED_SECRET", None, "cluster.shared_secret"),
            ("ARC_CLUSTER_SHARED_SECRET", Some("short"), "at least 16"),
            ("ARC_CLUSTER_ROLE", Some("standalone"), "cluster.role"),
            (
                "ARC_CLUSTER_CLUSTER_NAME",
                Some("a b"),
                "cluster.cluster_name",
            ),
            ("ARC_CLUSTER_SEEDS", Some("10.0.0.1"), "cluster.seeds"),
            (
                "ARC_CLUSTER_TLS_CA_FILE",
                Some("/nonexistent/ca.pem"),
                "cluster.tls_ca_file",
            ),
            (
                "ARC_CLUSTER_HEARTBEAT_INTERVAL",
                Some("0s"),
                "cluster.heartbeat_interval",
            ),
        ];
        for (name, value, expected) in cases {
            let mut vars: Vec<(&str, &str)> = base
                .iter()
                .copied()
                .filter(|(key, _)| key != name)
                .collect();
            if let Some(value) = value {
                vars.push((name, value));
            }
            let error = Config::load(None, env(&vars)).unwrap_err().to_string();
            assert!(error.contains(expected), "{name}={value:?}: {error}");
            assert!(!error.contains("0123456789abcdef-secret"), "{error}");
        }
    }

    #[test]
    fn test_should_reject_unknown_key_naming_it() {
        let error = Config::load(None, env(&[("ARC_SERVER_PROT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("prot"), "{error}");
    }

    #[test]
    fn test_should_redact_secrets_in_show() {
        let config = Config::load(
            None,
            env(&[
                ("ARC_STORAGE_S3_SECRET_KEY", "hunter2-secret"),
                (
                    "ARC_AUTH_BOOTSTRAP_TOKEN",
                    "0123456789abcdef0123456789abcdef",
                ),
            ]),
        )
        .unwrap();
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("port = 8000"), "{shown}");
    }

    #[test]
    fn test_should_parse_sizes_and_durations() {
        assert_eq!("1GB".parse::<ByteSize>().unwrap(), ByteSize(1 << 30));
        assert_eq!("512kib".parse::<ByteSize>().unwrap(), ByteSize(512 << 10));
        assert!("1.5GB".parse::<ByteSize>().is_err());
        assert!("99999999999999TB".parse::<ByteSize>().is_err());
        assert_eq!(
            "1.5s".parse::<HumanDuration>().unwrap(),
            HumanDuration(Duration::from_millis(1500))
        );
        assert!("-1s".parse::<HumanDuration>().is_err());
    }
}
