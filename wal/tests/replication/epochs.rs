//! Epoch fencing over the wire: a follower refuses entries of an epoch older than the newest
//! promote it knows (above that promote's fence), and a primary older than the follower's
//! newest promote refuses the subscription.

use arc_wal::replication::{FollowerRole, PrimaryConfig, ReplicationSettings, ResubscribeReason};
use arc_wal::{Epoch, Lsn};

use crate::support::*;

#[tokio::test]
async fn test_should_refuse_entries_of_an_older_epoch_above_the_fence() {
    // The primary streams epoch-1 entries 1..=3 and then, wrongly, another epoch-1 entry at 4;
    // the follower knows a promote of epoch 2 whose fence keeps epoch 1 up to LSN 3.
    let mut primary = Primary::start(
        ReplicationSettings::for_test("primary", Some(SECRET)),
        Epoch(2),
        &[],
        PrimaryConfig::for_test(),
    );
    primary.append(Epoch(1), 1..=4);
    let mut standby = Follower::connect(
        &standby_settings("standby"),
        primary.addr,
        FollowerRole::Standby,
        (Epoch(2), Lsn(3)),
        Lsn(1),
    )
    .await
    .expect("connect");
    let reason = standby.run_until_dropped().await;
    assert_eq!(
        reason,
        ResubscribeReason::StaleEpoch {
            epoch: Epoch(1),
            promised: Epoch(2),
            lsn: Some(Lsn(4)),
        }
    );
    let lsns: Vec<u64> = standby.received.iter().map(|entry| entry.lsn.0).collect();
    assert_eq!(
        lsns,
        [1, 2, 3],
        "entries up to the fence are kept, the stale one is not"
    );
    let wal = standby.wal.as_ref().expect("wal");
    assert_eq!(wal.next_lsn(), Lsn(4));
    standby.close().await;
    primary.stop().await;
}

#[tokio::test]
async fn test_should_stream_from_the_fence_to_a_follower_that_knew_only_an_older_epoch() {
    // Epoch 2's promote kept epoch 1 up to LSN 3; the primary wrote 4..=6 since. The reader
    // knows only epoch 1 and claims 1..=5: its 4 and 5 came from the deposed epoch-1 primary,
    // were never acknowledged, and differ from the new primary's.
    let mut primary = Primary::start_fenced(
        ReplicationSettings::for_test("primary", Some(SECRET)),
        (Epoch(2), Lsn(3)),
        &[],
        PrimaryConfig::for_test(),
    );
    primary.append(Epoch(1), 1..=3);
    primary.append(Epoch(2), 4..=6);
    let mut reader = Follower::connect(
        &ReplicationSettings::for_test("reader", Some(SECRET)),
        primary.addr,
        FollowerRole::Reader,
        (Epoch(1), Lsn(0)),
        Lsn(6),
    )
    .await
    .expect("connect");
    reader
        .run_until("the new primary's entries", |reader| {
            reader.state.next_lsn() == Lsn(7)
        })
        .await;
    assert_eq!(reader.dropped_above, Some(Lsn(3)));
    let received: Vec<(u64, u64)> = reader
        .received
        .iter()
        .map(|entry| (entry.epoch.0, entry.lsn.0))
        .collect();
    assert_eq!(
        received,
        [(2, 4), (2, 5), (2, 6)],
        "the new primary's entries from the fence on, none skipped"
    );
    reader.close().await;
    primary.stop().await;
}

#[tokio::test]
async fn test_should_refuse_to_follow_a_deposed_primary() {
    let mut primary = Primary::start(
        ReplicationSettings::for_test("primary", Some(SECRET)),
        Epoch(2),
        &[],
        PrimaryConfig::for_test(),
    );
    primary.append(Epoch(2), 1..=3);
    let mut reader = Follower::connect(
        &ReplicationSettings::for_test("reader", Some(SECRET)),
        primary.addr,
        FollowerRole::Reader,
        (Epoch(3), Lsn(3)),
        Lsn(1),
    )
    .await
    .expect("connect");
    let reason = reader.run_until_dropped().await;
    assert!(
        matches!(&reason, ResubscribeReason::Refused { reason } if reason.contains("deposed")),
        "{reason:?}"
    );
    assert!(reader.received.is_empty());
    reader.close().await;
    primary.stop().await;
}
