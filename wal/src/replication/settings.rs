//! [`ReplicationSettings`]: what an operator tunes about the replication transport, shared by
//! the primary's server and the followers' clients. The binary maps its `[cluster]` keys onto
//! it; the state machines' own knobs are in [`crate::replication::PrimaryConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::replication::auth::SharedSecret;

/// Transport and authentication settings of one node's replication endpoint.
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    /// This node's id, as the catalog names it (followers subscribe with it).
    pub node_id: String,
    /// `cluster.shared_secret`: authenticates peers when no certificates are configured (each
    /// side proves it knows it, bound to the TLS session), and additionally with them.
    pub shared_secret: Option<SharedSecret>,
    /// `cluster.tls_cert_file`: this node's PEM certificate chain for mTLS (with
    /// `tls_key_file` and `tls_ca_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// `cluster.tls_key_file`: the PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// `cluster.tls_ca_file`: PEM certificate(s) of the cluster CA that signs every node's
    /// certificate; both sides verify the other against it.
    pub tls_ca_file: Option<PathBuf>,
    /// How often an idle stream carries a keep-alive frame (and QUIC its own pings). Default
    /// 1 s. Shorter detects a dead peer sooner at the cost of a few bytes per interval.
    pub keepalive_interval: Duration,
    /// A peer heard from for no longer than this is dropped (the QUIC idle timeout, and the
    /// follower's silent-primary limit). Default 5 s; keep it several keep-alive intervals.
    pub silence_timeout: Duration,
    /// Time a connecting peer has to complete TLS, authenticate and subscribe. Default 5 s.
    pub handshake_timeout: Duration,
    /// Frames (entries, flush notices) queued per follower before the primary cuts it: a slow
    /// follower never slows the primary, it resubscribes instead. Default 8192.
    pub follower_queue_frames: usize,
    /// Bytes of recent entries the primary keeps in memory to serve followers; older ones are
    /// read back from its WAL segments. Default 64 MiB.
    pub tail_cache_bytes: usize,
    /// Bytes read from the WAL per catch-up batch. Default 4 MiB.
    pub catch_up_batch_bytes: usize,
}

impl ReplicationSettings {
    /// Returns the defaults for `node_id` authenticated by `shared_secret`.
    pub fn new(node_id: impl Into<String>, shared_secret: Option<SharedSecret>) -> Self {
        Self {
            node_id: node_id.into(),
            shared_secret,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            keepalive_interval: Duration::from_secs(1),
            silence_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            follower_queue_frames: 8192,
            tail_cache_bytes: 64 * 1024 * 1024,
            catch_up_batch_bytes: 4 * 1024 * 1024,
        }
    }

    /// Returns settings with short timers for tests: 100 ms keep-alives, 1 s silence and
    /// handshake timeouts.
    pub fn for_test(node_id: impl Into<String>, shared_secret: Option<&str>) -> Self {
        Self {
            keepalive_interval: Duration::from_millis(100),
            silence_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            ..Self::new(node_id, shared_secret.map(SharedSecret::new))
        }
    }
}
