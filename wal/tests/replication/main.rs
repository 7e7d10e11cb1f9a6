//! Replication over QUIC on loopback, through the public API: one test binary, a module per
//! concern. Every wait has a deadline; nothing sleeps a fixed time.

mod epochs;
mod lagging;
mod security;
mod streaming;
mod support;
