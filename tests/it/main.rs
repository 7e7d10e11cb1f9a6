//! Integration tests: the real `arc-node` binary on loopback. One test binary with modules, so
//! DuckDB is linked once.

mod auth;
mod bad_inputs;
mod cluster;
mod compaction;
mod config_cli;
mod crash;
mod deploy;
mod durability;
mod e2e;
mod failover;
mod harness;
mod hostile;
mod lifecycle;
mod metrics;
mod netns;
mod overload;
mod replication;
mod s3;
mod tls;
mod wal_dump;
