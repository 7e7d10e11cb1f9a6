//! arc-node: the node agent of a clustered, Arc-compatible time-series database.
//!
//! One binary, four roles (writer, reader, compactor, standalone). This version runs the
//! standalone role: durable ingest (WAL with group commit), Parquet on object storage through
//! the catalog log, and DuckDB queries over files and fresh rows.
//!
//! # Layout
//! - [`config`]: the TOML file and `ARC_*` variables, validated at start.
//! - `ingest`: line protocol and MessagePack decoders into Arrow batches.
//! - `payload`: the bytes of one WAL entry.
//! - `writer`: the WAL writer thread (group commit, schema checks).
//! - `buffers`: acknowledged rows not yet in Parquet.
//! - `node`: start-up, replay, flushing, stop.
//! - `http`: the API of COMPAT.md.
//! - [`sdnotify`]: the systemd notify protocol (READY, STATUS, STOPPING, WATCHDOG).
//! - `tls`: HTTPS for the API when `server.tls_cert_file` and `server.tls_key_file` are set.
//! - `metrics`, `failpoints`.

mod buffers;
pub mod config;
mod failpoints;
mod http;
mod ingest;
mod metrics;
mod node;
mod payload;
pub mod sdnotify;
mod tls;
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
