//! HTTPS for the API (`server.tls_cert_file`, `server.tls_key_file`).
//!
//! axum's own `serve` speaks plain TCP only, so with TLS configured the node runs its own
//! accept loop: a rustls handshake per connection (bounded by a timeout, so a client that
//! never finishes it cannot hold a task forever), then hyper serving the same router. Every
//! connection task lives in a `JoinSet` owned by the loop; on stop, each connection is told to
//! finish its in-flight requests and the loop waits for them.

use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no certificate.
    #[error("server.tls_cert_file {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The key file is missing, unreadable or holds no private key.
    #[error("server.tls_key_file {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why it is unusable.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("server.tls_cert_file and server.tls_key_file do not form a usable pair: {0}")]
    Config(String),
}

/// Loads the certificate chain and key into a rustls acceptor (HTTP/1.1 and HTTP/2 by ALPN).
///
/// # Errors
/// [`TlsError`] naming the file or the setting that is unusable.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert_file.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|error| cert_error(error.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|error| cert_error(error.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| TlsError::Key {
        path: key_file.display().to_string(),
        reason: error.to_string(),
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` over TLS on `listener` until `stop` is cancelled, then lets every open
/// connection finish its in-flight requests.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is transient; keep accepting.
                warn!(%error, "accepting a tls connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    debug!(%peer, %error, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            let builder = ConnectionBuilder::new(TokioExecutor::new());
            let mut connection =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                debug!(%peer, %error, "tls connection ended with an error");
            }
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}
