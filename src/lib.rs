//! arc-node: the node agent of a clustered, Arc-compatible time-series database.
//!
//! One binary, four roles (writer, reader, compactor, standalone): durable ingest (WAL with
//! group commit), Parquet on object storage through the catalog log, DuckDB queries over files
//! and fresh rows, and cluster membership by authenticated gossip with write forwarding to the
//! primary writer.
//!
//! # Layout
//! - [`config`]: the TOML file and `ARC_*` variables, validated at start.
//! - `ingest`: line protocol and MessagePack decoders into Arrow batches.
//! - `payload`: the bytes of one WAL entry.
//! - `writer`: the WAL writer thread (group commit, schema checks); `wal_owner`: who wrote
//!   the WAL directory.
//! - `buffers`: acknowledged rows not yet in Parquet.
//! - `node`: start-up, replay, flushing, stop.
//! - `http`: the API of COMPAT.md; `cluster_api`: its cluster routes; `compaction_api`: its
//!   compaction routes.
//! - `compaction`: the compaction scheduler (standalone nodes and compactors).
//! - `cluster`: membership, what this node advertises, and request routing.
//! - `health`: the node's self-checks.
//! - [`sdnotify`]: the systemd notify protocol (READY, STATUS, STOPPING, WATCHDOG).
//! - `tls`: HTTPS for the API when `server.tls_cert_file` and `server.tls_key_file` are set.
//! - `metrics`, `failpoints`.

mod buffers;
mod cluster;
mod cluster_api;
mod compaction;
mod compaction_api;
pub mod config;
mod failpoints;
mod health;
mod http;
mod ingest;
mod metrics;
mod node;
mod payload;
mod query_api;
mod replication;
pub mod sdnotify;
mod server;
mod switchover;
mod throttle;
mod tls;
pub mod wal_dump;
mod wal_owner;
mod writer;

pub use config::Config;
pub use http::{Access, routes};
pub use node::run;

/// Installs the process-wide TLS crypto provider (aws-lc-rs, which object_store's clients
/// already use) so that every rustls user in the binary agrees on one.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
