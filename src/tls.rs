//! HTTPS for the API (`server.tls_cert_file`, `server.tls_key_file`).
//!
//! The acceptor built here is used by the node's own accept loop (`server.rs`), which bounds
//! the handshake by `server.header_read_timeout`.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

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
