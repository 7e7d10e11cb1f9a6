//! Entries flow from the primary to followers in order, acks flow back and move the
//! acknowledged LSN, readers see the commit LSN, and a follower behind the in-memory tail
//! catches up from the primary's WAL segments.

use arc_wal::replication::{FlushNotice, FollowerRole, PrimaryConfig, ReplicationSettings};
use arc_wal::{Epoch, Lsn};

use crate::support::*;

fn config(min_in_sync: usize) -> PrimaryConfig {
    PrimaryConfig {
        lag_limit_ms: 5_000,
        min_in_sync,
        max_reader_backlog: 100_000,
    }
}

#[tokio::test]
async fn test_should_stream_entries_in_order_and_acknowledge_after_the_standby_acks() {
    let mut primary = Primary::start(
        ReplicationSettings::for_test("primary", Some(SECRET)),
        Epoch(1),
        &["standby"],
        config(1),
    );
    primary.append(Epoch(1), 1..=20);
    // The standby is in the committed ISR: nothing is acknowledged before it acks.
    primary
        .wait_status("20 entries durable", |s| s.local_durable == Some(Lsn(20)))
        .await;
    assert_eq!(primary.handle.status().acknowledged, None);

    let mut standby = Follower::connect(
        &standby_settings("standby"),
        primary.addr,
        FollowerRole::Standby,
        (Epoch(1), Lsn(0)),
        Lsn(1),
    )
    .await
    .expect("connect");
    standby
        .run_until("the first 20 entries", |f| {
            f.state.confirmed() == Some(Lsn(20))
        })
        .await;
    primary
        .wait_status("acknowledged 20", |s| s.acknowledged == Some(Lsn(20)))
        .await;

    for batch in 0..5u64 {
        let first = 21 + batch * 10;
        primary.append(Epoch(1), first..first + 10);
    }
    standby
        .run_until("70 entries", |f| f.state.confirmed() == Some(Lsn(70)))
        .await;
    primary
        .wait_status("acknowledged 70", |s| s.acknowledged == Some(Lsn(70)))
        .await;
    let lsns: Vec<u64> = standby.received.iter().map(|entry| entry.lsn.0).collect();
    assert_eq!(lsns, (1..=70).collect::<Vec<_>>());
    for entry in &standby.received {
        assert_eq!(entry.payload, payload(entry.lsn.0));
    }
    // The standby's WAL holds the primary's entries at the primary's LSNs.
    let wal = standby.wal.as_ref().expect("wal");
    let copied: Vec<_> = wal
        .read_from(Lsn(1))
        .expect("read")
        .map(|entry| entry.expect("entry"))
        .collect();
    assert_eq!(copied, standby.received);

    standby.close().await;
    primary.stop().await;
}

#[tokio::test]
async fn test_should_catch_up_a_follower_from_the_wal_and_bound_readers_by_the_commit_lsn() {
    let mut settings = ReplicationSettings::for_test("primary", Some(SECRET));
    // A tiny tail: everything older than the last batch is read back from the segments.
    settings.tail_cache_bytes = 16;
    let mut primary = Primary::start(settings, Epoch(2), &[], config(0));
    for batch in 0..10u64 {
        primary.append(Epoch(2), batch * 10 + 1..=batch * 10 + 10);
    }
    primary
        .wait_status("acknowledged 100", |s| s.acknowledged == Some(Lsn(100)))
        .await;

    let mut reader = Follower::connect(
        &ReplicationSettings::for_test("reader", Some(SECRET)),
        primary.addr,
        FollowerRole::Reader,
        (Epoch(2), Lsn(0)),
        Lsn(1),
    )
    .await
    .expect("connect");
    reader
        .run_until("100 entries and the commit lsn", |f| {
            f.state.visible_lsn() == Some(Lsn(100))
        })
        .await;
    let lsns: Vec<u64> = reader.received.iter().map(|entry| entry.lsn.0).collect();
    assert_eq!(lsns, (1..=100).collect::<Vec<_>>());
    primary
        .wait_status("the reader's applied report", |s| {
            s.followers
                .iter()
                .any(|f| f.node_id == "reader" && f.confirmed == Some(Lsn(100)))
        })
        .await;

    // A flush notice reaches the reader.
    primary.handle.flush_committed(FlushNotice {
        seq: 7,
        tables: vec![("db/cpu".into(), Lsn(90))],
    });
    primary.append(Epoch(2), [101]);
    reader
        .run_until("entry 101", |f| f.state.confirmed() == Some(Lsn(101)))
        .await;

    reader.close().await;
    primary.stop().await;
}

#[tokio::test]
async fn test_should_admit_a_caught_up_standby_to_the_isr_through_a_committed_proposal() {
    let mut primary = Primary::start(
        ReplicationSettings::for_test("primary", Some(SECRET)),
        Epoch(1),
        &[],
        config(1),
    );
    primary.append(Epoch(1), 1..=5);
    assert!(
        !primary.handle.writes_available(),
        "replication_ack 1 and no standby in sync"
    );
    let mut standby = Follower::connect(
        &standby_settings("standby"),
        primary.addr,
        FollowerRole::Standby,
        (Epoch(1), Lsn(0)),
        Lsn(1),
    )
    .await
    .expect("connect");
    standby
        .run_until("5 entries", |f| f.state.confirmed() == Some(Lsn(5)))
        .await;
    primary
        .commit_proposals_until("the standby in sync", |s| {
            s.committed_isr == ["standby"] && s.acknowledged == Some(Lsn(5))
        })
        .await;
    assert!(primary.handle.writes_available());

    // It disconnects: its removal is proposed, and nothing is acknowledged until it commits.
    standby.close().await;
    primary.append(Epoch(1), [6]);
    let proposal = tokio::time::timeout(DEADLINE, primary.proposals.recv())
        .await
        .expect("a proposal")
        .expect("open");
    assert_eq!(proposal.in_sync, Vec::<String>::new());
    assert_eq!(primary.handle.status().acknowledged, Some(Lsn(5)));
    primary.handle.isr_committed(proposal.in_sync);
    primary
        .wait_status("writes unavailable without the standby", |s| {
            !s.writes_available && s.committed_isr.is_empty()
        })
        .await;
    primary.stop().await;
}
