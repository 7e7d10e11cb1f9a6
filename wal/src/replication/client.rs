//! [`ReplicationClient`]: a follower's QUIC shell: connects to the primary, authenticates both
//! ways, subscribes, and then yields the primary's frames and carries the follower's acks.
//!
//! The client does not interpret the stream: feed each frame to
//! [`crate::replication::FollowerState::frame_received`] and carry out its actions (the first
//! frame is the primary's `Subscribed` or `Refuse`). Two tasks per client, in its `JoinSet`:
//! a reader (frames into a bounded channel, so a follower that stops consuming stops reading,
//! and QUIC flow control pushes back to the primary, which then cuts it) and a writer (the
//! latest ack, and keep-alives). Both stop on [`ReplicationClient::close`], on drop, or when the
//! connection ends; the frame channel then yields the error that ended it, then `None`.

use std::net::SocketAddr;
use std::time::Duration;

use quinn::{Endpoint, SendStream, VarInt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::lsn::Lsn;
use crate::replication::auth::{AuthMode, ProofDirection};
use crate::replication::error::ReplicationError;
use crate::replication::frame::{Frame, Subscribe};
use crate::replication::io::{read_frame, read_hello, write_frame};
use crate::replication::settings::ReplicationSettings;
use crate::replication::transport::{
    CLOSE_NORMAL, CLOSE_UNHEARD, RejectReason, check_proof, client_endpoint, count_rejection,
    own_proof,
};

/// Frames buffered between the stream and the follower.
const FRAME_BUFFER: usize = 1024;

/// A follower's connection to the primary. See the module docs.
pub struct ReplicationClient {
    peer: SocketAddr,
    endpoint: Endpoint,
    connection: quinn::Connection,
    frames: mpsc::Receiver<Result<Frame, ReplicationError>>,
    /// The latest confirmation to send; the writer sends each new value once.
    confirmation: watch::Sender<Option<Frame>>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl ReplicationClient {
    /// Connects to the primary at `addr`, runs the TLS handshake and the proof exchange
    /// (refusing a primary that cannot prove the secret), and sends `subscribe`. The server
    /// name is verified in mTLS mode (it must be in the primary's certificate) and ignored
    /// otherwise. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// `Invalid`, `Tls`, `TlsFile` for unusable settings; `Connect` if the primary cannot be
    /// reached or the TLS handshake fails; `Unauthenticated` if the primary fails its proof;
    /// `Connection`, `Closed`, `Frame` or `Protocol` if the handshake breaks off (a primary
    /// that refused this node's proof closes the connection).
    pub async fn connect(
        settings: &ReplicationSettings,
        addr: SocketAddr,
        server_name: &str,
        subscribe: Subscribe,
        cancel: CancellationToken,
    ) -> Result<ReplicationClient, ReplicationError> {
        let auth = AuthMode::resolve(settings)?;
        let endpoint = client_endpoint(settings, &auth, addr)?;
        let outcome = timeout(
            settings.handshake_timeout,
            handshake(&endpoint, &auth, addr, server_name, &subscribe),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ReplicationError::Connect {
                peer: addr,
                message: "handshake timed out".into(),
            })
        });
        let (connection, send, mut recv) = match outcome {
            Ok(connected) => connected,
            Err(error) => {
                endpoint.close(CLOSE_NORMAL, b"handshake failed");
                return Err(error);
            }
        };

        let cancel = cancel.child_token();
        let (frames_tx, frames_rx) = mpsc::channel(FRAME_BUFFER);
        let (confirmation_tx, confirmation_rx) = watch::channel(None);
        let mut tasks = JoinSet::new();
        let silence = settings.silence_timeout;
        let reader_cancel = cancel.clone();
        tasks.spawn(
            async move {
                loop {
                    let next = tokio::select! {
                        _ = reader_cancel.cancelled() => break,
                        next = timeout(silence, read_frame(&mut recv, addr)) => next,
                    };
                    let item = match next {
                        Ok(Ok(frame)) => Ok(frame),
                        Ok(Err(error)) => Err(error),
                        Err(_) => Err(ReplicationError::Silent {
                            peer: addr,
                            silent_ms: silence.as_millis() as u64,
                        }),
                    };
                    let last = item.is_err() || matches!(item, Ok(Frame::Refuse { .. }));
                    if frames_tx.send(item).await.is_err() || last {
                        break;
                    }
                }
                reader_cancel.cancel();
            }
            .instrument(info_span!("replication_client_reader", peer = %addr)),
        );
        let writer_cancel = cancel.clone();
        let keepalive_interval = settings.keepalive_interval;
        tasks.spawn(
            write_confirmations(
                send,
                confirmation_rx,
                keepalive_interval,
                writer_cancel,
                addr,
            )
            .instrument(info_span!("replication_client_writer", peer = %addr)),
        );
        Ok(ReplicationClient {
            peer: addr,
            endpoint,
            connection,
            frames: frames_rx,
            confirmation: confirmation_tx,
            cancel,
            tasks,
        })
    }

    /// Returns the primary's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Returns the next frame from the primary; `Some(Err(..))` once with what ended the
    /// stream, then `None`.
    pub async fn next_frame(&mut self) -> Option<Result<Frame, ReplicationError>> {
        self.frames.recv().await
    }

    /// Sends a standby's ack: durable (fsynced) up to `durable_lsn`. Coalesced: only the latest
    /// value is sent if several come faster than the stream takes them.
    pub fn send_ack(&self, durable_lsn: Lsn) {
        self.confirmation
            .send_replace(Some(Frame::Ack { durable_lsn }));
    }

    /// Sends a reader's applied report. Coalesced like [`ReplicationClient::send_ack`].
    pub fn send_applied(&self, applied_lsn: Lsn) {
        self.confirmation
            .send_replace(Some(Frame::Applied { applied_lsn }));
    }

    /// Closes the connection and waits for the client's tasks and endpoint (bounded).
    pub async fn close(self) {
        self.close_with(CLOSE_NORMAL, b"closed").await;
    }

    /// As [`ReplicationClient::close`], telling the primary that this follower stopped hearing
    /// it. If the close gets through, only the primary's outgoing packets are being lost: it
    /// then keeps this follower in the in-sync set until the follower's lag passes the lag
    /// limit, instead of removing it at once, because a standby that cannot hear the primary
    /// may be about to replace it, and may only while it is in the set.
    pub async fn close_unheard(self) {
        self.close_with(CLOSE_UNHEARD, b"primary unheard").await;
    }

    async fn close_with(mut self, code: VarInt, reason: &[u8]) {
        self.cancel.cancel();
        self.connection.close(code, reason);
        while self.tasks.join_next().await.is_some() {}
        let _ = timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

impl Drop for ReplicationClient {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.connection.close(CLOSE_NORMAL, b"dropped");
    }
}

async fn handshake(
    endpoint: &Endpoint,
    auth: &AuthMode,
    addr: SocketAddr,
    server_name: &str,
    subscribe: &Subscribe,
) -> Result<(quinn::Connection, SendStream, quinn::RecvStream), ReplicationError> {
    let connect_error = |message: String| ReplicationError::Connect {
        peer: addr,
        message,
    };
    let connecting = endpoint
        .connect(addr, auth.server_name(server_name))
        .map_err(|error| connect_error(error.to_string()))?;
    let connection = connecting
        .await
        .map_err(|error| connect_error(error.to_string()))?;
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|source| ReplicationError::Connection { peer: addr, source })?;
    let proof = own_proof(auth, &connection, ProofDirection::Client)?;
    write_frame(&mut send, &Frame::Hello { proof }, addr).await?;
    let server_proof = read_hello(&mut recv, addr).await?;
    if let Err(reason) = check_proof(auth, &connection, ProofDirection::Server, server_proof) {
        // Counted like a refused follower: a primary that cannot prove the secret.
        count_rejection(reason, addr, &"the primary's proof does not verify");
        connection.close(CLOSE_NORMAL, b"unauthenticated primary");
        return Err(ReplicationError::Unauthenticated {
            peer: addr,
            reason: match reason {
                RejectReason::NoProof => "the primary sent no proof",
                _ => "the primary's proof does not verify",
            },
        });
    }
    write_frame(&mut send, &Frame::Subscribe(subscribe.clone()), addr).await?;
    Ok((connection, send, recv))
}

async fn write_confirmations(
    mut send: SendStream,
    mut confirmation: watch::Receiver<Option<Frame>>,
    keepalive_interval: Duration,
    cancel: CancellationToken,
    peer: SocketAddr,
) {
    let mut keepalive = tokio::time::interval(keepalive_interval);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            changed = confirmation.changed() => {
                if changed.is_err() {
                    break;
                }
                let latest = confirmation.borrow_and_update().clone();
                match latest {
                    Some(frame) => frame,
                    None => continue,
                }
            }
            _ = keepalive.tick() => Frame::KeepAlive,
        };
        if let Err(error) = write_frame(&mut send, &frame, peer).await {
            debug!(error = %error, "replication client stream closed");
            break;
        }
    }
    cancel.cancel();
}
