//! Replication over QUIC on loopback, through the public API: one test binary, a module per
//! concern.
