//! Raw replication connections for tests (the `testsuite` feature): a peer that runs TLS and
//! then says whatever the test wants, as an attacker or a broken follower would. Never
//! enabled in production builds.

use std::net::SocketAddr;
use std::time::Duration;

use quinn::{Endpoint, RecvStream, SendStream};
use tokio::time::timeout;

use crate::replication::auth::{AuthMode, ProofDirection};
use crate::replication::error::ReplicationError;
use crate::replication::frame::{Frame, PROOF_LEN};
use crate::replication::io::{read_frame, write_frame};
use crate::replication::settings::ReplicationSettings;
use crate::replication::transport::{CLOSE_NORMAL, client_endpoint, own_proof};

/// A TLS-established connection with one open stream, on which nothing was sent yet.
pub struct RawConnection {
    /// The connection.
    pub connection: quinn::Connection,
    send: SendStream,
    recv: RecvStream,
    peer: SocketAddr,
    endpoint: Endpoint,
    auth: AuthMode,
}

impl RawConnection {
    /// Connects with `settings` (their certificates, if any, are used for TLS; their secret
    /// only by [`RawConnection::own_proof`]) and opens the stream.
    ///
    /// # Errors
    /// Any connection error.
    pub async fn connect(
        settings: &ReplicationSettings,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<RawConnection, ReplicationError> {
        let auth = AuthMode::resolve(settings)?;
        let endpoint = client_endpoint(settings, &auth, addr)?;
        let connection = endpoint
            .connect(addr, auth.server_name(server_name))
            .map_err(|error| ReplicationError::Connect {
                peer: addr,
                message: error.to_string(),
            })?
            .await
            .map_err(|error| ReplicationError::Connect {
                peer: addr,
                message: error.to_string(),
            })?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|source| ReplicationError::Connection { peer: addr, source })?;
        Ok(RawConnection {
            connection,
            send,
            recv,
            peer: addr,
            endpoint,
            auth,
        })
    }

    /// Returns the client proof for this session with the settings' secret.
    ///
    /// # Errors
    /// `Tls` if the session cannot export keying material.
    pub fn own_proof(&self) -> Result<Option<[u8; PROOF_LEN]>, ReplicationError> {
        own_proof(&self.auth, &self.connection, ProofDirection::Client)
    }

    /// Sends a frame.
    ///
    /// # Errors
    /// Any stream error.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), ReplicationError> {
        write_frame(&mut self.send, frame, self.peer).await
    }

    /// Sends raw bytes.
    ///
    /// # Errors
    /// Any stream error.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ReplicationError> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|_| ReplicationError::Closed { peer: self.peer })
    }

    /// Reads the next frame.
    ///
    /// # Errors
    /// Any stream error, or a decoding error.
    pub async fn read_frame(&mut self) -> Result<Frame, ReplicationError> {
        read_frame(&mut self.recv, self.peer).await
    }

    /// Reads every byte the peer sends until the stream or connection ends (or `limit`
    /// passes), and returns them.
    pub async fn read_all(&mut self, limit: Duration) -> Vec<u8> {
        let mut received = Vec::new();
        let _ = timeout(limit, async {
            let mut chunk = [0u8; 4096];
            while let Ok(Some(read)) = self.recv.read(&mut chunk).await {
                received.extend_from_slice(&chunk[..read]);
            }
        })
        .await;
        received
    }

    /// Closes the connection and waits (bounded) for the endpoint.
    pub async fn close(self) {
        self.connection.close(CLOSE_NORMAL, b"done");
        let _ = timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}
