//! Peer authentication for replication connections: the TLS configurations of both sides, and
//! the shared-secret proof bound to one TLS session (`docs/0006-replication.md`, section 5).
//!
//! Two modes, chosen by [`AuthMode::resolve`]:
//! - **mTLS** (`tls_cert_file` + `tls_key_file` + `tls_ca_file`): each side presents a
//!   certificate the cluster CA signed, and verifies the other's. If a shared secret is set as
//!   well, the proofs below are exchanged too.
//! - **Shared secret** (the default): the server presents a certificate generated at start,
//!   which the client does not verify (it has no way to), and each side then proves it knows
//!   the secret: HMAC-SHA256 keyed by the secret over keying material exported from *this* TLS
//!   session (RFC 5705/8446 exporters), with a different context per direction. A proof is
//!   useless on any other connection (the exported material differs), a man in the middle
//!   holds two sessions and cannot forward either side's proof, and a server's proof cannot be
//!   reflected back as a client's.
//!
//! Hazard: the only crypto provider is aws-lc-rs ([`crypto_provider`]); nothing here may pull in
//! ring.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::replication::error::ReplicationError;
use crate::replication::frame::PROOF_LEN;
use crate::replication::settings::ReplicationSettings;

/// ALPN protocol id of the replication stream; a peer speaking anything else fails the
/// handshake.
pub(crate) const ALPN: &[u8] = b"arc-replication/1";
/// Exporter label of the proof's keying material.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-arc-replication-auth-v1";
/// Name in the certificate generated in shared-secret mode (never verified).
pub(crate) const SELF_SIGNED_NAME: &str = "arc-node-replication";

/// Which side of a connection a proof is for; the exporter context, so a proof is bound to a
/// direction as well as to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofDirection {
    /// The proof the connecting follower sends.
    Client,
    /// The proof the primary sends back.
    Server,
}

impl ProofDirection {
    fn context(self) -> &'static [u8] {
        match self {
            ProofDirection::Client => b"client",
            ProofDirection::Server => b"server",
        }
    }
}

/// The cluster's shared secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SharedSecret(Arc<[u8]>);

impl SharedSecret {
    /// Wraps the secret's bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(Arc::from(secret.as_ref()))
    }

    /// Returns the proof for `direction` over `keying_material` exported from a session.
    pub fn proof(&self, keying_material: &[u8], direction: ProofDirection) -> [u8; PROOF_LEN] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(direction.context());
        mac.update(keying_material);
        mac.finalize().into_bytes().into()
    }

    /// Checks `presented` against the expected proof in constant time.
    pub fn verify(
        &self,
        keying_material: &[u8],
        direction: ProofDirection,
        presented: &[u8; PROOF_LEN],
    ) -> bool {
        let expected = self.proof(keying_material, direction);
        expected.ct_eq(presented).into()
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

/// How peers authenticate, resolved from the settings.
#[derive(Debug, Clone)]
pub(crate) enum AuthMode {
    /// Certificates signed by the cluster CA, both ways; plus proofs if a secret is set too.
    Mtls {
        cert_chain: Vec<CertificateDer<'static>>,
        key: Arc<PrivateKeyDer<'static>>,
        roots: Arc<RootCertStore>,
        secret: Option<SharedSecret>,
    },
    /// A generated server certificate nobody verifies, and proofs of the secret both ways.
    SharedSecret { secret: SharedSecret },
}

impl AuthMode {
    /// Chooses the mode: mTLS when a certificate and key are configured (then the CA is
    /// required), else the shared secret (then it is required).
    ///
    /// # Errors
    /// `Invalid` if the combination is incomplete; `Tls` if a file cannot be read or parsed.
    pub(crate) fn resolve(settings: &ReplicationSettings) -> Result<AuthMode, ReplicationError> {
        let secret = settings.shared_secret.clone();
        match (&settings.tls_cert_file, &settings.tls_key_file) {
            (Some(cert_file), Some(key_file)) => {
                let ca_file = settings.tls_ca_file.as_ref().ok_or_else(|| {
                    ReplicationError::Invalid(
                        "tls_cert_file and tls_key_file need tls_ca_file to verify peers".into(),
                    )
                })?;
                Ok(AuthMode::Mtls {
                    cert_chain: read_certs(cert_file)?,
                    key: Arc::new(read_key(key_file)?),
                    roots: Arc::new(read_roots(ca_file)?),
                    secret,
                })
            }
            (None, None) => {
                let secret = secret.ok_or_else(|| {
                    ReplicationError::Invalid(
                        "replication needs a shared secret or tls_cert_file, tls_key_file and \
                         tls_ca_file"
                            .into(),
                    )
                })?;
                Ok(AuthMode::SharedSecret { secret })
            }
            _ => Err(ReplicationError::Invalid(
                "tls_cert_file and tls_key_file must be set together".into(),
            )),
        }
    }

    /// Returns the secret proofs are made with, if any.
    pub(crate) fn secret(&self) -> Option<&SharedSecret> {
        match self {
            AuthMode::Mtls { secret, .. } => secret.as_ref(),
            AuthMode::SharedSecret { secret } => Some(secret),
        }
    }

    /// Returns the server's TLS configuration.
    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig, ReplicationError> {
        let provider = crypto_provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error("tls versions"))?;
        let mut config = match self {
            AuthMode::Mtls {
                cert_chain,
                key,
                roots,
                ..
            } => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::clone(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|error| ReplicationError::Tls {
                    what: "client verifier",
                    message: error.to_string(),
                })?;
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(cert_chain.clone(), key.clone_key())
                    .map_err(tls_error("server certificate"))?
            }
            AuthMode::SharedSecret { .. } => {
                let generated = rcgen::generate_simple_self_signed(vec![SELF_SIGNED_NAME.into()])
                    .map_err(|error| ReplicationError::Tls {
                    what: "generate certificate",
                    message: error.to_string(),
                })?;
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    generated.signing_key.serialize_der(),
                ));
                builder
                    .with_no_client_auth()
                    .with_single_cert(vec![generated.cert.der().clone()], key)
                    .map_err(tls_error("server certificate"))?
            }
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// Returns the client's TLS configuration.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, ReplicationError> {
        let provider = crypto_provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error("tls versions"))?;
        let mut config = match self {
            AuthMode::Mtls {
                cert_chain,
                key,
                roots,
                ..
            } => builder
                .with_root_certificates(Arc::clone(roots))
                .with_client_auth_cert(cert_chain.clone(), key.clone_key())
                .map_err(tls_error("client certificate"))?,
            AuthMode::SharedSecret { .. } => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(UnverifiedServerCert { provider }))
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// Returns the server name to verify against: the configured one in mTLS mode, the
    /// generated certificate's in shared-secret mode (where it is not verified).
    pub(crate) fn server_name<'a>(&self, configured: &'a str) -> &'a str {
        match self {
            AuthMode::Mtls { .. } => configured,
            AuthMode::SharedSecret { .. } => SELF_SIGNED_NAME,
        }
    }
}

/// Returns the aws-lc-rs provider, the only one arc-node uses.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Exports this session's keying material for a proof in `direction`.
///
/// # Errors
/// `Tls` if the session cannot export (it is not established).
pub fn keying_material(
    connection: &quinn::Connection,
    direction: ProofDirection,
) -> Result<[u8; 32], ReplicationError> {
    let mut material = [0u8; 32];
    connection
        .export_keying_material(&mut material, EXPORTER_LABEL, direction.context())
        .map_err(|_| ReplicationError::Tls {
            what: "export keying material",
            message: "the session cannot export keying material".into(),
        })?;
    Ok(material)
}

fn tls_error(what: &'static str) -> impl FnOnce(rustls::Error) -> ReplicationError {
    move |error| ReplicationError::Tls {
        what,
        message: error.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ReplicationError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| ReplicationError::TlsFile {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ReplicationError::TlsFile {
            path: path.to_path_buf(),
            message: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ReplicationError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| ReplicationError::TlsFile {
        path: path.to_path_buf(),
        message: error.to_string(),
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, ReplicationError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|error| ReplicationError::TlsFile {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
    }
    Ok(roots)
}

/// Accepts any server certificate, but still checks that the server signed the handshake with
/// the certificate's key: in shared-secret mode the proofs authenticate, and this only keeps
/// the TLS session itself well-formed.
#[derive(Debug)]
struct UnverifiedServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for UnverifiedServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_bind_proofs_to_the_secret_the_session_and_the_direction() {
        let secret = SharedSecret::new("cluster secret");
        let session = [1u8; 32];
        let proof = secret.proof(&session, ProofDirection::Client);
        assert!(secret.verify(&session, ProofDirection::Client, &proof));
        assert!(!secret.verify(&session, ProofDirection::Server, &proof));
        assert!(!secret.verify(&[2u8; 32], ProofDirection::Client, &proof));
        assert!(!SharedSecret::new("other").verify(&session, ProofDirection::Client, &proof));
        assert_eq!(format!("{secret:?}"), "SharedSecret(..)");
    }

    #[test]
    fn test_should_refuse_incomplete_auth_settings() {
        let mut settings = ReplicationSettings::for_test("n1", None);
        assert!(matches!(
            AuthMode::resolve(&settings),
            Err(ReplicationError::Invalid(_))
        ));
        settings.tls_cert_file = Some("cert.pem".into());
        assert!(matches!(
            AuthMode::resolve(&settings),
            Err(ReplicationError::Invalid(_))
        ));
        settings.tls_key_file = Some("key.pem".into());
        assert!(matches!(
            AuthMode::resolve(&settings),
            Err(ReplicationError::Invalid(_))
        ));
        settings.tls_ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            AuthMode::resolve(&settings),
            Err(ReplicationError::TlsFile { .. })
        ));
    }
}
