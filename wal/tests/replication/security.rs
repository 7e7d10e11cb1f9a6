//! Authentication: a peer without the secret, a replayed proof, and (with mTLS) a peer
//! without a trusted certificate are refused before they see one byte of the WAL, and
//! counted; a primary that cannot prove the secret is refused by the follower.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arc_wal::replication::testkit::RawConnection;
use arc_wal::replication::{
    FollowerRole, Frame, PrimaryConfig, RejectReason, ReplicationError, ReplicationSettings,
    Subscribe,
};
use arc_wal::{Epoch, Lsn};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::support::*;

fn subscribe(node: &str) -> Subscribe {
    Subscribe {
        node_id: node.into(),
        role: FollowerRole::Reader,
        known_epoch: Epoch(1),
        from_lsn: Lsn(1),
    }
}

/// A primary with entries kept, so that any leak would show WAL bytes.
fn primary_with_entries(settings: ReplicationSettings) -> Primary {
    let mut primary = Primary::start(settings, Epoch(1), &[], PrimaryConfig::for_test());
    primary.append(Epoch(1), 1..=10);
    primary
}

fn rejected(primary: &Primary, reason: RejectReason) -> u64 {
    primary
        .handle
        .status()
        .rejected
        .get(&reason)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn test_should_refuse_a_peer_with_the_wrong_secret_before_any_wal_byte() {
    let primary = primary_with_entries(ReplicationSettings::for_test("primary", Some(SECRET)));
    let intruder = ReplicationSettings::for_test("intruder", Some("not the cluster secret"));

    let mut raw = RawConnection::connect(&intruder, primary.addr, "localhost")
        .await
        .expect("tls itself succeeds");
    let proof = raw.own_proof().expect("proof");
    raw.send(&Frame::Hello { proof }).await.expect("send hello");
    raw.send(&Frame::Subscribe(subscribe("intruder")))
        .await
        .expect("send subscribe");
    let received = raw.read_all(DEADLINE).await;
    assert!(
        received.is_empty(),
        "the intruder got {} bytes",
        received.len()
    );
    raw.close().await;
    primary
        .wait_status("a bad proof counted", |s| {
            s.rejected
                .get(&RejectReason::BadProof)
                .copied()
                .unwrap_or(0)
                >= 1
        })
        .await;

    // The real client sees the refusal as an error, not as a stream.
    let refused = arc_wal::replication::ReplicationClient::connect(
        &intruder,
        primary.addr,
        "localhost",
        subscribe("intruder"),
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    assert!(refused.is_err(), "connected without the secret");
    primary
        .wait_status("the second bad proof counted", |s| {
            s.rejected
                .get(&RejectReason::BadProof)
                .copied()
                .unwrap_or(0)
                >= 2
        })
        .await;

    // A peer that says nothing is refused too, after the handshake timeout.
    let silent = RawConnection::connect(&intruder, primary.addr, "localhost")
        .await
        .expect("tls");
    primary
        .wait_status("a silent peer counted", |s| {
            s.rejected.get(&RejectReason::NoHello).copied().unwrap_or(0) >= 1
        })
        .await;
    silent.close().await;
    primary.stop().await;
}

#[tokio::test]
async fn test_should_refuse_a_proof_replayed_from_another_connection() {
    let primary = primary_with_entries(ReplicationSettings::for_test("primary", Some(SECRET)));
    let settings = ReplicationSettings::for_test("reader", Some(SECRET));

    // A legitimate connection: its proof is accepted, and the primary proves itself back.
    let mut first = RawConnection::connect(&settings, primary.addr, "localhost")
        .await
        .expect("connect");
    let captured = first.own_proof().expect("proof");
    first
        .send(&Frame::Hello { proof: captured })
        .await
        .expect("send");
    let reply = tokio::time::timeout(DEADLINE, first.read_frame())
        .await
        .expect("in time")
        .expect("the primary's hello");
    assert!(
        matches!(reply, Frame::Hello { proof: Some(_) }),
        "{reply:?}"
    );
    first.close().await;

    // The captured proof on a new connection (another TLS session) is refused.
    let before = rejected(&primary, RejectReason::BadProof);
    let attacker = ReplicationSettings::for_test("attacker", Some("knows nothing"));
    let mut replay = RawConnection::connect(&attacker, primary.addr, "localhost")
        .await
        .expect("connect");
    replay
        .send(&Frame::Hello { proof: captured })
        .await
        .expect("send");
    replay
        .send(&Frame::Subscribe(subscribe("attacker")))
        .await
        .expect("send");
    let received = replay.read_all(DEADLINE).await;
    assert!(
        received.is_empty(),
        "the replay got {} bytes",
        received.len()
    );
    replay.close().await;
    primary
        .wait_status("the replay counted", |s| {
            s.rejected
                .get(&RejectReason::BadProof)
                .copied()
                .unwrap_or(0)
                > before
        })
        .await;
    primary.stop().await;
}

#[tokio::test]
async fn test_should_refuse_a_primary_that_cannot_prove_the_secret() {
    let primary = primary_with_entries(ReplicationSettings::for_test("primary", Some(SECRET)));
    // The follower has another secret: the primary refuses it; and had the primary accepted,
    // the follower would refuse the primary's proof. Both sides end with an error.
    let follower = ReplicationSettings::for_test("reader", Some("another secret entirely"));
    let result = arc_wal::replication::ReplicationClient::connect(
        &follower,
        primary.addr,
        "localhost",
        subscribe("reader"),
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(
            result,
            Err(ReplicationError::Connection { .. }
                | ReplicationError::Closed { .. }
                | ReplicationError::Unauthenticated { .. })
        ),
        "{:?}",
        result.as_ref().map(|_| ())
    );
    primary.stop().await;
}

/// A CA and PEM files for node certificates it signs, in `dir`.
struct Pki {
    ca_file: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, issuer.pem()).expect("write ca");
        Pki { ca_file, issuer }
    }

    /// Issues a certificate for `localhost` and 127.0.0.1 and writes it and its key.
    fn issue(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let cert_file = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        (cert_file, key_file)
    }

    fn settings(&self, dir: &Path, name: &str) -> ReplicationSettings {
        let (cert, key) = self.issue(dir, name);
        let mut settings = ReplicationSettings::for_test(name, None);
        settings.tls_cert_file = Some(cert);
        settings.tls_key_file = Some(key);
        settings.tls_ca_file = Some(self.ca_file.clone());
        settings
    }
}

#[tokio::test]
async fn test_should_stream_over_mtls_and_refuse_peers_without_a_trusted_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "cluster");
    let primary = primary_with_entries(pki.settings(dir.path(), "primary"));

    // A node with a certificate of the cluster CA streams.
    let mut reader = Follower::connect(
        &pki.settings(dir.path(), "reader"),
        primary.addr,
        FollowerRole::Reader,
        (Epoch(1), Lsn(0)),
        Lsn(1),
    )
    .await
    .expect("connect with a cluster certificate");
    reader
        .run_until("10 entries", |f| f.state.confirmed() == Some(Lsn(10)))
        .await;
    reader.close().await;

    // No client certificate (shared-secret mode, which presents none): refused in TLS.
    let no_cert = ReplicationSettings::for_test("no-cert", Some(SECRET));
    assert_refused_without_wal_bytes(&primary, &no_cert).await;
    // A certificate from another CA: refused too.
    let other = Pki::new(dir.path(), "other");
    let mut foreign = other.settings(dir.path(), "foreign");
    // It trusts the cluster CA (so its side of TLS succeeds); the primary must not trust it.
    foreign.tls_ca_file = pki.settings(dir.path(), "unused").tls_ca_file;
    assert_refused_without_wal_bytes(&primary, &foreign).await;
    primary
        .wait_status("tls refusals counted", |s| {
            s.rejected.get(&RejectReason::Tls).copied().unwrap_or(0) >= 2
        })
        .await;
    primary.stop().await;
}

async fn assert_refused_without_wal_bytes(primary: &Primary, settings: &ReplicationSettings) {
    // TLS 1.3: the client may finish its side before the server rejects its certificate, so
    // connecting may succeed; what matters is that nothing comes back.
    if let Ok(mut raw) = RawConnection::connect(settings, primary.addr, "localhost").await {
        let _ = raw.send(&Frame::Hello { proof: None }).await;
        let _ = raw.send(&Frame::Subscribe(subscribe("no-cert"))).await;
        let received = raw.read_all(Duration::from_secs(5)).await;
        assert!(received.is_empty(), "got {} bytes", received.len());
        raw.close().await;
    }
}
