//! [`AuthenticatedUdpTransport`]: a chitchat [`Transport`] whose datagrams carry a MAC.
//!
//! chitchat's envelope codec is private, so this module never encodes or decodes chitchat
//! messages itself. Each socket owns three UDP sockets:
//!
//! - `external`: bound to the gossip address; carries sealed frames (see [`crate::frame`]).
//! - `inner`: chitchat's own public [`chitchat::transport::UdpSocket`] on an ephemeral loopback
//!   port, used purely as the codec.
//! - `codec`: our loopback peer of `inner`.
//!
//! Sending: chitchat's socket encodes the envelope and sends it to `codec`; we read those bytes,
//! seal them and send them to the real peer. Receiving: we open and verify a frame from
//! `external`, forward the payload from `codec` to `inner`, let chitchat decode it, and return the
//! envelope with the real peer address. Nothing unauthenticated ever reaches `inner` from us, and
//! datagrams reaching `inner` or `codec` from anyone else on the host are discarded by source
//! address.
//!
//! Time: frame timestamps and the freshness check read the transport's injected [`Clock`]
//! (default [`SystemClock`]; see [`AuthenticatedUdpTransport::with_clock`]).
//!
//! Cancellation: chitchat cancels `recv` whenever its gossip timer fires. The only state kept
//! across an await is `pending`, set right after a payload was forwarded to `inner` and
//! consumed by the next `recv`, so a cancelled `recv` never misattributes a peer address.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_clock::{Clock, SystemClock};
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use tracing::{debug, warn};

use crate::frame::{self, FrameKey, MAX_PAYLOAD_LEN, RejectReason, ReplayCache};
use crate::metrics;

/// Receive buffer size: one byte more than the largest datagram, to detect truncation.
const RECV_BUF_LEN: usize = frame::MAX_DATAGRAM_LEN + 1;

/// Errors building the transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Clustering requires `cluster.shared_secret`; an empty secret authenticates nothing.
    #[error("gossip shared secret is empty")]
    EmptySecret,
}

/// Operator settings of the authenticated transport.
#[derive(Debug, Clone)]
pub struct GossipAuthSettings {
    /// Largest accepted `|now - timestamp|` of a datagram. Default 30 s. Longer tolerates more
    /// clock skew between nodes but keeps captured datagrams replayable to other nodes longer
    /// and grows the replay cache.
    pub freshness_window: Duration,
    /// Most `(timestamp, nonce)` pairs remembered per socket. Default 200,000 (about 10 MB):
    /// enough for ~6,600 datagrams/s over a 30 s window. When full, new datagrams are dropped.
    pub replay_cache_capacity: usize,
    /// How long to wait for chitchat's codec socket on loopback. Default 200 ms. Only reached
    /// when an authenticated peer sends bytes chitchat can't decode.
    pub loopback_timeout: Duration,
}

impl Default for GossipAuthSettings {
    fn default() -> Self {
        GossipAuthSettings {
            freshness_window: Duration::from_secs(30),
            replay_cache_capacity: 200_000,
            loopback_timeout: Duration::from_millis(200),
        }
    }
}

/// A chitchat [`Transport`] that authenticates every datagram with a key derived from the
/// cluster's shared secret and name. Pass it to `chitchat::spawn_chitchat`.
#[derive(Debug, Clone)]
pub struct AuthenticatedUdpTransport {
    key: FrameKey,
    settings: GossipAuthSettings,
    /// Stamps sent frames and judges the freshness of received ones.
    clock: Arc<dyn Clock>,
}

impl AuthenticatedUdpTransport {
    /// Creates a transport for `cluster_name` with default settings.
    ///
    /// # Errors
    ///
    /// `EmptySecret` if `shared_secret` is empty.
    pub fn new(shared_secret: &[u8], cluster_name: &str) -> Result<Self, Error> {
        Self::with_settings(shared_secret, cluster_name, GossipAuthSettings::default())
    }

    /// Creates a transport for `cluster_name` with the given settings.
    ///
    /// # Errors
    ///
    /// `EmptySecret` if `shared_secret` is empty.
    pub fn with_settings(
        shared_secret: &[u8],
        cluster_name: &str,
        settings: GossipAuthSettings,
    ) -> Result<Self, Error> {
        if shared_secret.is_empty() {
            return Err(Error::EmptySecret);
        }
        Ok(AuthenticatedUdpTransport {
            key: FrameKey::derive(shared_secret, cluster_name),
            settings,
            clock: Arc::new(SystemClock),
        })
    }

    /// Replaces the clock (default [`SystemClock`]) that timestamps sent frames and judges
    /// received ones against the freshness window. Sockets opened afterwards use it.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Opens a socket bound to `listen_addr`, with its concrete type (tests use it directly).
    ///
    /// # Errors
    ///
    /// Fails if a socket can't be bound.
    pub async fn open_socket(
        &self,
        listen_addr: SocketAddr,
    ) -> anyhow::Result<AuthenticatedUdpSocket> {
        let external = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        let loopback: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let inner = chitchat::transport::UdpSocket::open(loopback).await?;
        let inner_addr = inner.local_addr()?;
        let codec = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("failed to bind the loopback gossip codec socket")?;
        let codec_addr = codec
            .local_addr()
            .context("failed to get the codec socket address")?;
        Ok(AuthenticatedUdpSocket {
            key: self.key.clone(),
            clock: self.clock.clone(),
            loopback_timeout: self.settings.loopback_timeout,
            replay_cache: ReplayCache::new(
                self.settings.freshness_window,
                self.settings.replay_cache_capacity,
            ),
            external,
            inner,
            inner_addr,
            codec,
            codec_addr,
            pending: None,
            buf_recv: vec![0u8; RECV_BUF_LEN].into_boxed_slice(),
            buf_send: Vec::with_capacity(frame::MAX_DATAGRAM_LEN),
        })
    }
}

#[async_trait]
impl Transport for AuthenticatedUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(self.open_socket(listen_addr).await?))
    }
}

/// A verified payload forwarded to chitchat's codec socket and not yet decoded.
#[derive(Debug, Clone, Copy)]
struct Pending {
    from_addr: SocketAddr,
    num_bytes_received: usize,
}

/// One gossip socket; see the module docs for how its three UDP sockets cooperate.
pub struct AuthenticatedUdpSocket {
    key: FrameKey,
    clock: Arc<dyn Clock>,
    loopback_timeout: Duration,
    replay_cache: ReplayCache,
    /// The gossip address peers send to.
    external: tokio::net::UdpSocket,
    /// chitchat's socket, used only to encode and decode envelopes over loopback.
    inner: chitchat::transport::UdpSocket,
    inner_addr: SocketAddr,
    /// Our loopback peer of `inner`.
    codec: tokio::net::UdpSocket,
    codec_addr: SocketAddr,
    /// Set once a payload is forwarded to `inner`, cleared when its envelope is returned.
    pending: Option<Pending>,
    buf_recv: Box<[u8]>,
    buf_send: Vec<u8>,
}

impl AuthenticatedUdpSocket {
    /// Encodes `envelope` through chitchat's socket and returns the length of the bytes now in
    /// `buf_recv`, or `None` if chitchat could not send them (too large for a datagram).
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Option<usize>> {
        // Drop anything left over from a cancelled send or sent by a stranger.
        while self.codec.try_recv_from(&mut self.buf_recv).is_ok() {}
        if let Err(error) = self.inner.send(self.codec_addr, envelope).await {
            warn!(error=%error, "chitchat failed to encode a gossip message");
            return Ok(None);
        }
        loop {
            let (num_bytes, from_addr) = tokio::time::timeout(
                self.loopback_timeout,
                self.codec.recv_from(&mut self.buf_recv),
            )
            .await
            .context("chitchat's codec socket delivered nothing on loopback")?
            .context("failed to receive from chitchat's codec socket")?;
            if from_addr == self.inner_addr {
                return Ok(Some(num_bytes));
            }
        }
    }

    /// Waits for chitchat to decode the pending payload.
    async fn decode_pending(&mut self, pending: Pending) -> anyhow::Result<Option<RecvOutcome>> {
        let deadline = tokio::time::Instant::now() + self.loopback_timeout;
        loop {
            let decoded = tokio::time::timeout_at(deadline, self.inner.recv()).await;
            match decoded {
                Ok(Ok(outcome)) if outcome.from_addr == self.codec_addr => {
                    self.pending = None;
                    return Ok(Some(RecvOutcome {
                        from_addr: pending.from_addr,
                        envelope: outcome.envelope,
                        num_bytes_received: pending.num_bytes_received,
                    }));
                }
                // A stranger on this host wrote to chitchat's loopback port.
                Ok(Ok(_stray)) => continue,
                Ok(Err(error)) => return Err(error),
                Err(_elapsed) => {
                    self.pending = None;
                    metrics::count_rejected(RejectReason::Undecodable.as_label());
                    warn!(from=%pending.from_addr, "authenticated gossip payload was undecodable");
                    return Ok(None);
                }
            }
        }
    }

    /// Reads one datagram from `external`, verifies it and forwards its payload to chitchat.
    async fn receive_and_forward(&mut self) -> anyhow::Result<()> {
        let (num_bytes, from_addr) = match self.external.recv_from(&mut self.buf_recv).await {
            Ok(received) => received,
            Err(error) if is_transient_io_error(&error) => {
                debug!(error=%error, "transient gossip recv error");
                return Ok(());
            }
            Err(error) => return Err(error).context("fatal gossip UDP recv error"),
        };
        let datagram = &self.buf_recv[..num_bytes];
        let verified = frame::open(&self.key, datagram).and_then(|opened| {
            self.replay_cache
                .check_and_insert(self.clock.unix_ms(), opened.timestamp_ms, opened.nonce)
                .map(|()| opened.payload)
        });
        let payload = match verified {
            Ok(payload) => payload,
            Err(reason) => {
                metrics::count_rejected(reason.as_label());
                debug!(from=%from_addr, num_bytes, reason=reason.as_label(), "dropped gossip datagram");
                return Ok(());
            }
        };
        self.codec
            .send_to(payload, self.inner_addr)
            .await
            .context("failed to forward gossip payload to chitchat's codec socket")?;
        // No await between the send above and this line: see the module docs on cancellation.
        self.pending = Some(Pending {
            from_addr,
            num_bytes_received: num_bytes,
        });
        metrics::count_received(num_bytes);
        Ok(())
    }
}

#[async_trait]
impl Socket for AuthenticatedUdpSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.external
            .local_addr()
            .context("failed to get gossip UDP socket address")
    }

    async fn send(
        &mut self,
        to_addr: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let Some(payload_len) = self.encode(envelope).await? else {
            metrics::count_send_oversize();
            return Ok(SendOutcome { num_bytes_sent: 0 });
        };
        if payload_len > MAX_PAYLOAD_LEN {
            metrics::count_send_oversize();
            warn!(payload_len, max = MAX_PAYLOAD_LEN, to=%to_addr, "gossip message too large once sealed, not sent");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        frame::seal(
            &self.key,
            self.clock.unix_ms(),
            rand::random(),
            &self.buf_recv[..payload_len],
            &mut self.buf_send,
        );
        let num_bytes_sent = self
            .external
            .send_to(&self.buf_send, to_addr)
            .await
            .context("failed to send gossip datagram to peer")?;
        metrics::count_sent(num_bytes_sent);
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(pending) = self.pending {
                if let Some(outcome) = self.decode_pending(pending).await? {
                    return Ok(outcome);
                }
                continue;
            }
            self.receive_and_forward().await?;
        }
    }
}

/// Same policy as chitchat's `UdpSocket`: these errors don't mean the socket is broken.
fn is_transient_io_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use arc_clock::ManualClock;
    use chitchat::{ChitchatMessage, ProtocolVersion};

    use super::*;

    const SILENCE: Duration = Duration::from_millis(300);

    fn loopback() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 0).into()
    }

    fn envelope() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        }
    }

    async fn open(secret: &[u8]) -> AuthenticatedUdpSocket {
        AuthenticatedUdpTransport::new(secret, "cluster-a")
            .unwrap()
            .open_socket(loopback())
            .await
            .unwrap()
    }

    async fn assert_nothing_received(socket: &mut AuthenticatedUdpSocket) {
        let received = tokio::time::timeout(SILENCE, socket.recv()).await;
        assert!(received.is_err(), "unexpected message: {received:?}");
    }

    /// Sends one genuine message from `sender` and captures the sealed datagram on a raw socket.
    async fn capture(sender: &mut AuthenticatedUdpSocket) -> (tokio::net::UdpSocket, Vec<u8>) {
        let sniffer = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
        let sniffer_addr = sniffer.local_addr().unwrap();
        sender.send(sniffer_addr, envelope()).await.unwrap();
        let mut buf = vec![0u8; RECV_BUF_LEN];
        let (len, _) = sniffer.recv_from(&mut buf).await.unwrap();
        buf.truncate(len);
        (sniffer, buf)
    }

    async fn assert_still_works(
        sender: &mut AuthenticatedUdpSocket,
        receiver: &mut AuthenticatedUdpSocket,
    ) {
        let receiver_addr = receiver.local_addr().unwrap();
        sender.send(receiver_addr, envelope()).await.unwrap();
        let outcome = receiver.recv().await.unwrap();
        assert_eq!(outcome.envelope, envelope());
        assert_eq!(outcome.from_addr, sender.local_addr().unwrap());
    }

    #[test]
    fn test_should_refuse_empty_secret() {
        assert!(matches!(
            AuthenticatedUdpTransport::new(b"", "cluster-a"),
            Err(Error::EmptySecret)
        ));
    }

    #[tokio::test]
    async fn test_should_exchange_messages_with_same_secret() {
        let mut alice = open(b"secret").await;
        let mut bob = open(b"secret").await;
        for version in [ProtocolVersion::V0, ProtocolVersion::V1] {
            let sent = ChitchatEnvelope {
                version,
                message: ChitchatMessage::BadCluster,
            };
            let outcome = alice.send(bob.local_addr().unwrap(), sent).await.unwrap();
            let received = bob.recv().await.unwrap();
            assert_eq!(received.from_addr, alice.local_addr().unwrap());
            assert_eq!(received.envelope.version, version);
            assert_eq!(received.envelope.message, ChitchatMessage::BadCluster);
            assert_eq!(received.num_bytes_received, outcome.num_bytes_sent);
        }
        assert_still_works(&mut bob, &mut alice).await;
    }

    #[tokio::test]
    async fn test_should_drop_wrong_secret() {
        let mut alice = open(b"secret").await;
        let mut bob = open(b"secret").await;
        let mut mallory = open(b"guess").await;
        mallory
            .send(bob.local_addr().unwrap(), envelope())
            .await
            .unwrap();
        assert_nothing_received(&mut bob).await;
        assert_still_works(&mut alice, &mut bob).await;
    }

    #[tokio::test]
    async fn test_should_drop_other_cluster_with_same_secret() {
        let mut bob = open(b"secret").await;
        let mut other_cluster = AuthenticatedUdpTransport::new(b"secret", "cluster-b")
            .unwrap()
            .open_socket(loopback())
            .await
            .unwrap();
        other_cluster
            .send(bob.local_addr().unwrap(), envelope())
            .await
            .unwrap();
        assert_nothing_received(&mut bob).await;
    }

    #[tokio::test]
    async fn test_should_drop_tampered_then_replayed_datagrams() {
        let mut alice = open(b"secret").await;
        let mut bob = open(b"secret").await;
        let bob_addr = bob.local_addr().unwrap();
        let (sniffer, datagram) = capture(&mut alice).await;

        for index in [0, 4, 5, 13, frame::HEADER_LEN, datagram.len() - 1] {
            let mut tampered = datagram.clone();
            tampered[index] ^= 0x01;
            sniffer.send_to(&tampered, bob_addr).await.unwrap();
        }
        assert_nothing_received(&mut bob).await;

        // The genuine datagram is accepted once, then its replays are dropped.
        sniffer.send_to(&datagram, bob_addr).await.unwrap();
        let outcome = bob.recv().await.unwrap();
        assert_eq!(outcome.envelope, envelope());
        sniffer.send_to(&datagram, bob_addr).await.unwrap();
        sniffer.send_to(&datagram, bob_addr).await.unwrap();
        assert_nothing_received(&mut bob).await;
        assert_still_works(&mut alice, &mut bob).await;
    }

    #[tokio::test]
    async fn test_should_drop_stale_and_future_timestamps() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // Thread-local; `#[tokio::test]` runs everything on this thread.
        let _guard = ::metrics::set_default_local_recorder(&recorder);

        // alice and bob read one hand-driven clock; the window is the default 30 s.
        let sent_at = (UNIX_EPOCH + Duration::from_secs(1_767_225_600)).into();
        let clock = Arc::new(ManualClock::new(sent_at));
        let transport = AuthenticatedUdpTransport::new(b"secret", "cluster-a")
            .unwrap()
            .with_clock(clock.clone());
        let mut alice = transport.open_socket(loopback()).await.unwrap();
        let mut bob = transport.open_socket(loopback()).await.unwrap();
        let bob_addr = bob.local_addr().unwrap();
        let (sniffer, datagram) = capture(&mut alice).await;
        let key = FrameKey::derive(b"secret", "cluster-a");
        assert_eq!(
            frame::open(&key, &datagram).unwrap().timestamp_ms,
            clock.unix_ms()
        );

        // bob judges the datagram by his clock when he reads it, inside `recv`: one millisecond
        // past the window, it is stale; one millisecond before it, it comes from the future.
        let window = GossipAuthSettings::default().freshness_window;
        let just_outside = window + Duration::from_millis(1);
        for bob_time in [sent_at + just_outside, sent_at - just_outside] {
            clock.set(bob_time);
            sniffer.send_to(&datagram, bob_addr).await.unwrap();
            assert_nothing_received(&mut bob).await;
        }

        // The very same datagram on the edge of the window is accepted: only the time was wrong.
        clock.set(sent_at + window);
        sniffer.send_to(&datagram, bob_addr).await.unwrap();
        assert_eq!(bob.recv().await.unwrap().envelope, envelope());

        let snapshot = snapshotter.snapshot().into_vec();
        let rejected = crate::metrics::REJECTED_PACKETS_TOTAL;
        assert_eq!(counter(&snapshot, rejected, Some("stale")), 2);
        assert_eq!(counter(&snapshot, rejected, None), 2);
    }

    #[tokio::test]
    async fn test_should_survive_random_and_undecodable_bytes() {
        let mut alice = open(b"secret").await;
        let mut bob = open(b"secret").await;
        let bob_addr = bob.local_addr().unwrap();
        let stranger = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
        for len in [0usize, 1, 20, 53, 54, 1_000, 65_507] {
            let junk: Vec<u8> = (0..len).map(|_| rand::random()).collect();
            stranger.send_to(&junk, bob_addr).await.unwrap();
        }
        // An authenticated frame whose payload is not chitchat: dropped after chitchat rejects it.
        let key = FrameKey::derive(b"secret", "cluster-a");
        let mut sealed = Vec::new();
        frame::seal(
            &key,
            SystemClock.unix_ms(),
            rand::random(),
            b"not chitchat",
            &mut sealed,
        );
        stranger.send_to(&sealed, bob_addr).await.unwrap();
        assert_nothing_received(&mut bob).await;
        assert_still_works(&mut alice, &mut bob).await;
    }

    #[tokio::test]
    async fn test_should_ignore_strangers_on_the_loopback_codec_sockets() {
        let mut alice = open(b"secret").await;
        let mut bob = open(b"secret").await;
        let stranger = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
        // A stranger's datagram queued on alice's codec socket must not be sealed and sent.
        let (sniffer, _) = capture(&mut alice).await;
        stranger.send_to(b"junk", alice.codec_addr).await.unwrap();
        alice
            .send(sniffer.local_addr().unwrap(), envelope())
            .await
            .unwrap();
        let mut buf = vec![0u8; RECV_BUF_LEN];
        let (len, _) = sniffer.recv_from(&mut buf).await.unwrap();
        let key = FrameKey::derive(b"secret", "cluster-a");
        assert_ne!(frame::open(&key, &buf[..len]).unwrap().payload, b"junk");
        // A stranger's datagram queued on bob's chitchat codec socket is never returned.
        stranger.send_to(b"junk", bob.inner_addr).await.unwrap();
        assert_still_works(&mut alice, &mut bob).await;
    }

    #[tokio::test]
    async fn test_should_not_misattribute_after_cancelled_recv() {
        let mut alice = open(b"secret").await;
        let mut bob = open(b"secret").await;
        let mut carol = open(b"secret").await;
        let bob_addr = bob.local_addr().unwrap();
        alice.send(bob_addr, envelope()).await.unwrap();
        // Forward alice's payload to chitchat without decoding it, as a cancelled recv would.
        bob.receive_and_forward().await.unwrap();
        assert!(bob.pending.is_some());
        carol.send(bob_addr, envelope()).await.unwrap();
        let first = bob.recv().await.unwrap();
        let second = bob.recv().await.unwrap();
        assert_eq!(first.from_addr, alice.local_addr().unwrap());
        assert_eq!(second.from_addr, carol.local_addr().unwrap());
    }

    type Snapshot = Vec<(
        metrics_util::CompositeKey,
        Option<::metrics::Unit>,
        Option<::metrics::SharedString>,
        metrics_util::debugging::DebugValue,
    )>;

    /// Returns the value of counter `name` (with `reason`, if given) in `snapshot`.
    fn counter(snapshot: &Snapshot, name: &str, reason: Option<&str>) -> u64 {
        snapshot
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .filter(|(key, ..)| {
                reason.is_none_or(|reason| {
                    key.key()
                        .labels()
                        .any(|label| label.key() == "reason" && label.value() == reason)
                })
            })
            .map(|(.., value)| match value {
                metrics_util::debugging::DebugValue::Counter(count) => *count,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    /// A SYN whose chitchat encoding is `base_len + cluster_id_len` bytes long.
    fn syn(cluster_id_len: usize) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::Syn {
                cluster_id: "x".repeat(cluster_id_len),
                // chitchat keeps the digest type private; its default is the empty digest.
                digest: Default::default(),
            },
        }
    }

    #[tokio::test]
    async fn test_should_refuse_and_count_envelopes_too_large_once_sealed() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // Thread-local; `#[tokio::test]` runs everything on this thread.
        let _guard = ::metrics::set_default_local_recorder(&recorder);

        let mut alice = open(b"secret").await;
        let mut bob = open(b"secret").await;
        let bob_addr = bob.local_addr().unwrap();
        // chitchat's encoding of the SYN grows byte for byte with its cluster id: measure the
        // fixed part once, then size envelopes exactly.
        let (sniffer, datagram) = {
            let sniffer = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
            alice
                .send(sniffer.local_addr().unwrap(), syn(0))
                .await
                .unwrap();
            let mut buf = vec![0u8; RECV_BUF_LEN];
            let (len, _) = sniffer.recv_from(&mut buf).await.unwrap();
            buf.truncate(len);
            (sniffer, buf)
        };
        let fixed_len = datagram.len() - frame::OVERHEAD;

        // Exactly at the limit: sent, 65,507 bytes on the wire, and accepted.
        let largest = syn(MAX_PAYLOAD_LEN - fixed_len);
        let outcome = alice.send(bob_addr, largest).await.unwrap();
        assert_eq!(outcome.num_bytes_sent, frame::MAX_DATAGRAM_LEN);
        let received = bob.recv().await.unwrap();
        assert_eq!(received.envelope, syn(MAX_PAYLOAD_LEN - fixed_len));

        // One byte more: chitchat could send it unsealed, but sealed it would not fit.
        let outcome = alice
            .send(bob_addr, syn(MAX_PAYLOAD_LEN - fixed_len + 1))
            .await
            .unwrap();
        assert_eq!(outcome.num_bytes_sent, 0);
        // Larger than a datagram even before sealing: chitchat's own send fails.
        let outcome = alice
            .send(bob_addr, syn(frame::MAX_DATAGRAM_LEN - fixed_len + 1))
            .await
            .unwrap();
        assert_eq!(outcome.num_bytes_sent, 0);
        assert_nothing_received(&mut bob).await;

        // Refusals leave the socket usable.
        assert_still_works(&mut alice, &mut bob).await;
        drop(sniffer);

        let snapshot = snapshotter.snapshot().into_vec();
        assert_eq!(
            counter(&snapshot, crate::metrics::SEND_OVERSIZE_TOTAL, None),
            2
        );
        // The sniffed SYN, the largest one, and the final check's message.
        assert_eq!(
            counter(&snapshot, crate::metrics::SENT_PACKETS_TOTAL, None),
            3
        );
    }

    #[tokio::test]
    async fn test_should_count_rejections_and_traffic() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // Thread-local; `#[tokio::test]` runs everything on this thread.
        let _guard = ::metrics::set_default_local_recorder(&recorder);

        let mut alice = open(b"secret").await;
        let mut bob = open(b"secret").await;
        let mut mallory = open(b"guess").await;
        let bob_addr = bob.local_addr().unwrap();
        let (sniffer, datagram) = capture(&mut alice).await;
        sniffer.send_to(b"junk", bob_addr).await.unwrap();
        let mut bad_magic = datagram.clone();
        bad_magic[0] ^= 1;
        sniffer.send_to(&bad_magic, bob_addr).await.unwrap();
        mallory.send(bob_addr, envelope()).await.unwrap();
        sniffer.send_to(&datagram, bob_addr).await.unwrap();
        sniffer.send_to(&datagram, bob_addr).await.unwrap();
        bob.recv().await.unwrap();
        assert_nothing_received(&mut bob).await;

        // Taking a snapshot resets the debugging recorder's counters: take exactly one.
        let snapshot = snapshotter.snapshot().into_vec();
        let rejected = crate::metrics::REJECTED_PACKETS_TOTAL;
        assert_eq!(counter(&snapshot, rejected, Some("length")), 1);
        assert_eq!(counter(&snapshot, rejected, Some("magic")), 1);
        assert_eq!(counter(&snapshot, rejected, Some("mac")), 1);
        assert_eq!(counter(&snapshot, rejected, Some("replay")), 1);
        assert_eq!(counter(&snapshot, rejected, None), 4);
        // alice -> sniffer and mallory -> bob were sent; bob accepted one datagram.
        assert_eq!(
            counter(&snapshot, crate::metrics::SENT_PACKETS_TOTAL, None),
            2
        );
        assert_eq!(
            counter(&snapshot, crate::metrics::RECEIVED_PACKETS_TOTAL, None),
            1
        );
        assert_eq!(
            counter(&snapshot, crate::metrics::RECEIVED_BYTES_TOTAL, None),
            datagram.len() as u64
        );
    }
}
