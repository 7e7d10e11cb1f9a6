//! Endpoint plumbing shared by the server and the client: quinn configurations from the
//! settings and the auth mode, the proof exchange, and the counters of refused peers.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use metrics::counter;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, IdleTimeout, TransportConfig, VarInt};
use tracing::warn;

use crate::replication::auth::{AuthMode, ProofDirection, keying_material};
use crate::replication::error::ReplicationError;
use crate::replication::frame::PROOF_LEN;
use crate::replication::settings::ReplicationSettings;

/// `arc_replication_rejected_total{reason}`: peers refused before they saw any WAL byte.
pub const REJECTED_TOTAL: &str = "arc_replication_rejected_total";
/// `arc_replication_cut_total{reason}`: follower streams the primary cut.
pub const CUT_TOTAL: &str = "arc_replication_cut_total";
/// `arc_replication_sent_entries_total`: entries streamed to followers.
pub const SENT_ENTRIES_TOTAL: &str = "arc_replication_sent_entries_total";
/// `arc_replication_sent_bytes_total`: entry frame bytes streamed to followers.
pub const SENT_BYTES_TOTAL: &str = "arc_replication_sent_bytes_total";

/// Registers the descriptions of the replication metrics with the installed recorder.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter};
    describe_counter!(
        REJECTED_TOTAL,
        Unit::Count,
        "Replication peers refused before they saw any WAL byte, by reason."
    );
    describe_counter!(
        CUT_TOTAL,
        Unit::Count,
        "Replication follower streams cut by the primary, by reason."
    );
    describe_counter!(
        SENT_ENTRIES_TOTAL,
        Unit::Count,
        "WAL entries streamed to followers."
    );
    describe_counter!(
        SENT_BYTES_TOTAL,
        Unit::Bytes,
        "WAL entry frame bytes streamed to followers."
    );
}

/// Application close code: normal end.
pub(crate) const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);
/// Application close code: the peer was refused (authentication or protocol).
pub(crate) const CLOSE_REFUSED: VarInt = VarInt::from_u32(1);
/// Application close code: the follower stopped hearing the primary (no frame, no keep-alive)
/// and gives up on this connection.
pub(crate) const CLOSE_UNHEARD: VarInt = VarInt::from_u32(2);

/// Why a peer was refused; the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// The TLS handshake failed (no or an untrusted certificate in mTLS mode).
    Tls,
    /// It did not open a stream or send a hello in time, or sent something else first.
    NoHello,
    /// Its hello carried no proof where one is required.
    NoProof,
    /// Its proof is wrong: another secret, or a proof from another connection (a replay).
    BadProof,
}

impl RejectReason {
    /// Returns the metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Tls => "tls",
            RejectReason::NoHello => "no_hello",
            RejectReason::NoProof => "no_proof",
            RejectReason::BadProof => "bad_proof",
        }
    }
}

/// Counts of refused peers by reason, kept beside the metric so a handle can report them.
#[derive(Debug, Default)]
pub(crate) struct Rejections(Mutex<BTreeMap<RejectReason, u64>>);

impl Rejections {
    /// Counts and logs one refused peer.
    pub(crate) fn record(
        &self,
        reason: RejectReason,
        peer: SocketAddr,
        error: &dyn std::fmt::Display,
    ) {
        count_rejection(reason, peer, error);
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts.entry(reason).or_default() += 1;
    }

    /// Returns the counts so far.
    pub(crate) fn snapshot(&self) -> BTreeMap<RejectReason, u64> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Counts (the metric) and logs one refused peer.
pub(crate) fn count_rejection(
    reason: RejectReason,
    peer: SocketAddr,
    error: &dyn std::fmt::Display,
) {
    counter!(REJECTED_TOTAL, "reason" => reason.as_str()).increment(1);
    warn!(peer = %peer, reason = reason.as_str(), error = %error, "replication peer refused");
}

fn transport_config(settings: &ReplicationSettings) -> Result<TransportConfig, ReplicationError> {
    let mut transport = TransportConfig::default();
    transport.keep_alive_interval(Some(settings.keepalive_interval));
    let idle = IdleTimeout::try_from(settings.silence_timeout).map_err(|_| {
        ReplicationError::Invalid(format!(
            "silence timeout {:?} is out of range",
            settings.silence_timeout
        ))
    })?;
    transport.max_idle_timeout(Some(idle));
    // One stream each way is all the protocol uses.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(1));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    Ok(transport)
}

/// Builds the listening endpoint.
pub(crate) fn server_endpoint(
    settings: &ReplicationSettings,
    auth: &AuthMode,
    addr: SocketAddr,
) -> Result<Endpoint, ReplicationError> {
    let tls = auth.server_config()?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|error| ReplicationError::Tls {
        what: "quic server config",
        message: error.to_string(),
    })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(settings)?));
    Endpoint::server(config, addr).map_err(|source| ReplicationError::Bind { addr, source })
}

/// Builds a client endpoint able to reach `peer`.
pub(crate) fn client_endpoint(
    settings: &ReplicationSettings,
    auth: &AuthMode,
    peer: SocketAddr,
) -> Result<Endpoint, ReplicationError> {
    let tls = auth.client_config()?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|error| ReplicationError::Tls {
        what: "quic client config",
        message: error.to_string(),
    })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(settings)?));
    let local: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let mut endpoint = Endpoint::client(local).map_err(|source| ReplicationError::Bind {
        addr: local,
        source,
    })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Returns this side's proof for `connection`, if a secret is configured.
pub(crate) fn own_proof(
    auth: &AuthMode,
    connection: &quinn::Connection,
    direction: ProofDirection,
) -> Result<Option<[u8; PROOF_LEN]>, ReplicationError> {
    let Some(secret) = auth.secret() else {
        return Ok(None);
    };
    let material = keying_material(connection, direction)?;
    Ok(Some(secret.proof(&material, direction)))
}

/// Checks the peer's proof for `connection`; `Ok` when no secret is configured (mTLS alone).
pub(crate) fn check_proof(
    auth: &AuthMode,
    connection: &quinn::Connection,
    direction: ProofDirection,
    presented: Option<[u8; PROOF_LEN]>,
) -> Result<(), RejectReason> {
    let Some(secret) = auth.secret() else {
        return Ok(());
    };
    let presented = presented.ok_or(RejectReason::NoProof)?;
    let material = keying_material(connection, direction).map_err(|_| RejectReason::Tls)?;
    if secret.verify(&material, direction, &presented) {
        Ok(())
    } else {
        Err(RejectReason::BadProof)
    }
}
