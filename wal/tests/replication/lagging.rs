//! A follower that stops reading never slows the primary: its bounded queue fills, it is cut,
//! and a new subscription from what it holds gets everything.

use arc_wal::replication::testkit::RawConnection;
use arc_wal::replication::{FollowerRole, Frame, PrimaryConfig, ReplicationSettings, Subscribe};
use arc_wal::{Epoch, Lsn};

use crate::support::*;

#[tokio::test]
async fn test_should_cut_a_reader_that_stops_reading_and_serve_its_resubscription() {
    let mut settings = ReplicationSettings::for_test("primary", Some(SECRET));
    settings.follower_queue_frames = 8;
    // Long silence limits: the stuck reader must be cut for its backlog, not for silence.
    settings.silence_timeout = std::time::Duration::from_secs(30);
    // Only the queue bound may cut it (the state machine's stalled-reader cut is off).
    let config = PrimaryConfig {
        max_reader_backlog: u64::MAX,
        ..PrimaryConfig::for_test()
    };
    let mut primary = Primary::start(settings, Epoch(1), &[], config);

    // A reader that subscribes and then never reads.
    let reader_settings = ReplicationSettings::for_test("reader", Some(SECRET));
    let mut stuck = RawConnection::connect(&reader_settings, primary.addr, "localhost")
        .await
        .expect("connect");
    let proof = stuck.own_proof().expect("proof");
    stuck.send(&Frame::Hello { proof }).await.expect("hello");
    let hello = stuck.read_frame().await.expect("the primary's hello");
    assert!(matches!(hello, Frame::Hello { .. }));
    stuck
        .send(&Frame::Subscribe(Subscribe {
            node_id: "reader".into(),
            role: FollowerRole::Reader,
            known_epoch: Epoch(1),
            from_lsn: Lsn(1),
        }))
        .await
        .expect("subscribe");
    primary
        .wait_status("the reader subscribed", |s| {
            s.followers
                .iter()
                .any(|f| f.node_id == "reader" && f.connected)
        })
        .await;

    // Big entries: QUIC flow control stops the stream, the queue fills, the reader is cut,
    // and acknowledgements (no standby required) never wait for it.
    let big = vec![7u8; 256 * 1024];
    let mut lsn = 0;
    while primary.handle.status().cuts == 0 {
        lsn += 1;
        // QUIC's windows hold a few MiB, the queue 8 ranges.
        assert!(lsn < 200, "the stuck reader was never cut");
        primary.wal.append(Epoch(1), &big).expect("append");
        primary.wal.sync().expect("sync");
        primary.handle.publish(vec![arc_wal::Entry {
            epoch: Epoch(1),
            lsn: Lsn(lsn),
            payload: big.clone(),
        }]);
        primary
            .wait_status("acknowledged", |s| s.acknowledged == Some(Lsn(lsn)))
            .await;
    }
    primary
        .wait_status("the reader disconnected", |s| {
            s.followers
                .iter()
                .any(|f| f.node_id == "reader" && !f.connected)
        })
        .await;
    stuck.close().await;

    // It resubscribes and gets everything, from the WAL and the tail.
    let mut reader = Follower::connect(
        &reader_settings,
        primary.addr,
        FollowerRole::Reader,
        (Epoch(1), Lsn(0)),
        Lsn(1),
    )
    .await
    .expect("resubscribe");
    reader
        .run_until("every entry", |f| f.state.confirmed() == Some(Lsn(lsn)))
        .await;
    assert_eq!(reader.received.len() as u64, lsn);
    reader.close().await;
    primary.stop().await;
}
