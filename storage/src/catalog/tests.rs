//! Catalog tests against `InMemory`, `LocalFileSystem` and the fault-injecting wrapper.

use std::collections::BTreeSet;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::*;
use crate::model::{TableId, TimeRange};
use crate::testing::{FailingObjectStore, FaultOp, FaultTiming};

const LOG_PREFIX: &str = "_catalog/log/";

fn table() -> TableId {
    TableId::new("db", "cpu")
}

fn object(path: &str) -> DataObject {
    DataObject {
        path: path.to_string(),
        time_range: TimeRange {
            start_ns: 0,
            end_ns: 10,
        },
        rows: 1,
        bytes: 1,
    }
}

fn flush(lsn: u64, path: &str) -> RecordBody {
    flush_of(table(), lsn, path)
}

/// A flush of its own table: commits that race for slots do not also race for LSNs.
fn flush_of(table: TableId, lsn: u64, path: &str) -> RecordBody {
    RecordBody::Flush(Flush {
        table,
        lsn_first: lsn,
        lsn_last: lsn,
        objects: vec![object(path)],
        columns: vec![],
    })
}

fn all_live_paths(state: &CatalogState) -> Vec<String> {
    state
        .tables
        .values()
        .flat_map(|table_state| table_state.objects.iter().map(|o| o.path.clone()))
        .collect()
}

fn live_paths(state: &CatalogState) -> Vec<String> {
    state
        .table(&table())
        .map(|table_state| table_state.objects.iter().map(|o| o.path.clone()).collect())
        .unwrap_or_default()
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

async fn open(store: Arc<dyn ObjectStore>) -> Catalog {
    Catalog::open(store, CatalogSettings::for_test())
        .await
        .unwrap()
}

async fn slot_exists(store: &dyn ObjectStore, seq: u64) -> bool {
    store.head(&paths::catalog_log_path(seq)).await.is_ok()
}

#[tokio::test]
async fn test_should_commit_and_reopen_same_state() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let catalog = open(store.clone()).await;
    assert_eq!(catalog.snapshot().seq, 0);
    let epoch = catalog.promote("a", 0).await.unwrap();
    assert_eq!(epoch, 1);
    assert_eq!(catalog.commit(epoch, "a", flush(5, "x")).await.unwrap(), 2);
    let state = catalog.snapshot();
    assert_eq!(state.primary.as_deref(), Some("a"));
    assert_eq!(state.max_flushed_lsn(), 5);

    let reopened = open(store).await;
    assert_eq!(*reopened.snapshot(), *state);
}

#[tokio::test]
async fn test_should_give_dense_slots_to_concurrent_committers() {
    const CATALOGS: usize = 3;
    const TASKS_PER_CATALOG: usize = 3;
    const COMMITS_PER_TASK: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());

    // No checkpoint, hence no truncation: every slot stays readable for the checks below.
    let settings = CatalogSettings {
        checkpoint_interval: 1000,
        ..CatalogSettings::for_test()
    };

    // Several processes (one Catalog each) with several tasks each, all racing for slots.
    let mut handles = Vec::new();
    for catalog_index in 0..CATALOGS {
        let catalog = Catalog::open(store.clone(), settings.clone())
            .await
            .unwrap();
        for task in 0..TASKS_PER_CATALOG {
            let catalog = catalog.clone();
            handles.push(tokio::spawn(async move {
                let mut landed = Vec::new();
                for commit in 0..COMMITS_PER_TASK {
                    let path = format!("p-{catalog_index}-{task}-{commit}");
                    let seq = catalog
                        .commit(
                            0,
                            &format!("n{catalog_index}"),
                            flush_of(TableId::new("db", &path), 1, &path),
                        )
                        .await
                        .unwrap();
                    landed.push((seq, path));
                }
                landed
            }));
        }
    }
    let mut landed = Vec::new();
    for handle in handles {
        landed.extend(handle.await.unwrap());
    }
    let total = CATALOGS * TASKS_PER_CATALOG * COMMITS_PER_TASK;
    let seqs: BTreeSet<u64> = landed.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<BTreeSet<_>>());

    // Every record landed exactly once, in the slot its committer was told.
    for (seq, path) in &landed {
        let record = read_record(store.as_ref(), *seq).await.unwrap().unwrap();
        let RecordBody::Flush(flush) = record.record else {
            panic!("slot {seq} holds {:?}", record.record);
        };
        assert_eq!(&flush.objects[0].path, path);
    }
    assert!(!slot_exists(store.as_ref(), total as u64 + 1).await);
    let fresh = open(store.clone()).await;
    let state = fresh.snapshot();
    assert_eq!(state.seq, total as u64);
    let live: BTreeSet<String> = all_live_paths(&state).into_iter().collect();
    assert_eq!(live.len(), total);
    let replayed = Catalog::open_with(store, settings, false).await.unwrap();
    assert_eq!(*replayed.snapshot(), *state);
}

#[tokio::test]
async fn test_should_resolve_error_after_landing_as_success() {
    let failing = Arc::new(FailingObjectStore::new(Arc::new(InMemory::new())));
    let catalog = open(failing.clone()).await;
    let epoch = catalog.promote("a", 0).await.unwrap();
    failing.inject(FaultOp::Put, FaultTiming::After, LOG_PREFIX, 1);

    let seq = catalog.commit(epoch, "a", flush(3, "x")).await.unwrap();
    assert_eq!(seq, 2);
    assert_eq!(failing.injected(), 1);
    // No duplicate in the next slot.
    assert!(!slot_exists(failing.as_ref(), 3).await);
    let fresh = open(failing.clone()).await;
    assert_eq!(fresh.snapshot().seq, 2);
    assert_eq!(live_paths(&fresh.snapshot()), ["x"]);
}

#[tokio::test]
async fn test_should_resolve_ambiguity_when_read_back_also_fails() {
    let failing = Arc::new(FailingObjectStore::new(Arc::new(InMemory::new())));
    let catalog = open(failing.clone()).await;
    let epoch = catalog.promote("a", 0).await.unwrap();
    failing.inject(FaultOp::Put, FaultTiming::After, LOG_PREFIX, 1);
    failing.inject(FaultOp::Get, FaultTiming::Before, LOG_PREFIX, 1);

    // Put lands but errors; the read-back errors; the retry finds the slot taken by our own
    // record (same nonce) and reports success.
    assert_eq!(catalog.commit(epoch, "a", flush(3, "x")).await.unwrap(), 2);
    assert!(!slot_exists(failing.as_ref(), 3).await);
    assert_eq!(live_paths(&catalog.snapshot()), ["x"]);
}

#[tokio::test]
async fn test_should_retry_same_slot_after_error_before_landing() {
    let failing = Arc::new(FailingObjectStore::new(Arc::new(InMemory::new())));
    let catalog = open(failing.clone()).await;
    let epoch = catalog.promote("a", 0).await.unwrap();
    failing.inject(FaultOp::Put, FaultTiming::Before, LOG_PREFIX, 2);

    assert_eq!(catalog.commit(epoch, "a", flush(3, "x")).await.unwrap(), 2);
    assert_eq!(failing.injected(), 2);
    assert_eq!(open(failing.clone()).await.snapshot().seq, 2);
}

#[tokio::test]
async fn test_should_give_up_as_unavailable_without_consuming_the_slot() {
    let failing = Arc::new(FailingObjectStore::new(Arc::new(InMemory::new())));
    let catalog = open(failing.clone()).await;
    let epoch = catalog.promote("a", 0).await.unwrap();
    failing.inject(FaultOp::Put, FaultTiming::Before, LOG_PREFIX, 1000);

    let error = catalog.commit(epoch, "a", flush(3, "x")).await.unwrap_err();
    let CatalogError::Unavailable { key, attempts, .. } = &error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert_eq!(key, paths::catalog_log_path(2).as_ref());
    assert_eq!(*attempts, CatalogSettings::for_test().max_commit_attempts);
    assert!(error.is_retryable());

    failing.clear();
    assert_eq!(catalog.commit(epoch, "a", flush(3, "x")).await.unwrap(), 2);
}

#[tokio::test]
async fn test_should_fence_older_writer_and_void_its_late_record() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let node_a = open(store.clone()).await;
    let epoch_a = node_a.promote("a", 0).await.unwrap();
    assert_eq!(
        node_a.commit(epoch_a, "a", flush(1, "a1")).await.unwrap(),
        2
    );

    let node_b = open(store.clone()).await;
    let epoch_b = node_b.promote("b", 1).await.unwrap();
    assert_eq!(epoch_b, 2);

    // A has not seen B's promote: it loses slot 3, learns the new epoch, and is fenced.
    let error = node_a
        .commit(epoch_a, "a", flush(2, "a2"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CatalogError::Fenced {
                our_epoch: 1,
                current_epoch: 2
            }
        ),
        "{error:?}"
    );
    assert_eq!(node_a.snapshot().primary.as_deref(), Some("b"));
    // Knowing it is fenced, A writes nothing more.
    assert!(matches!(
        node_a.commit(epoch_a, "a", flush(2, "a2")).await,
        Err(CatalogError::Fenced { .. })
    ));
    assert!(!slot_exists(store.as_ref(), 4).await);

    // A zombie that ignores the rules lands a record of epoch 1 after B's promote: void for
    // every reader.
    let zombie = LogRecord {
        version: FORMAT_VERSION,
        seq: 4,
        epoch: epoch_a,
        nonce: "zombie".into(),
        node: "a".into(),
        record: flush(3, "a3"),
    };
    store
        .put_opts(
            &paths::catalog_log_path(4),
            PutPayload::from(zombie.encode()),
            PutOptions::from(PutMode::Create),
        )
        .await
        .unwrap();
    let fresh = open(store.clone()).await;
    let state = fresh.snapshot();
    assert_eq!(state.seq, 4);
    assert_eq!(state.epoch, 2);
    assert_eq!(live_paths(&state), ["a1"]);
    assert_eq!(state.max_flushed_lsn(), 1);

    // B keeps committing after the void record.
    assert_eq!(
        node_b.commit(epoch_b, "b", flush(4, "b1")).await.unwrap(),
        5
    );

    // A stale failover candidate that expected epoch 1 loses.
    assert!(matches!(
        node_a.promote_if(1, "a", 9, vec!["a".into()]).await,
        Err(CatalogError::Fenced { .. })
    ));
}

#[tokio::test]
async fn test_should_reject_epoch_never_promoted_and_dead_compaction() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let catalog = open(store.clone()).await;
    let epoch = catalog.promote("a", 0).await.unwrap();
    assert!(matches!(
        catalog.commit(epoch + 1, "a", flush(1, "x")).await,
        Err(CatalogError::Invalid(_))
    ));
    let compact = RecordBody::Compact(Compact {
        table: table(),
        removed: vec!["missing".into()],
        added: vec![object("merged")],
    });
    assert!(matches!(
        catalog.commit(epoch, "c", compact).await,
        Err(CatalogError::Rejected { .. })
    ));
    // Neither wrote anything.
    assert!(!slot_exists(store.as_ref(), 2).await);

    catalog.commit(epoch, "a", flush(1, "x")).await.unwrap();
    let compact = RecordBody::Compact(Compact {
        table: table(),
        removed: vec!["x".into()],
        added: vec![object("merged")],
    });
    assert_eq!(catalog.commit(epoch, "c", compact).await.unwrap(), 3);
    assert_eq!(live_paths(&catalog.snapshot()), ["merged"]);
}

#[tokio::test]
async fn test_should_open_from_checkpoint_like_full_replay() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (catalog, epoch) = promoted_with_flushes(&store, 24).await;
    let compact = RecordBody::Compact(Compact {
        table: table(),
        removed: vec!["o1".into(), "o2".into()],
        added: vec![object("o1-2")],
    });
    catalog.commit(epoch, "a", compact).await.unwrap();
    assert_eq!(catalog.snapshot().seq, 26);

    assert_eq!(checkpoints(&store).await, [10, 20]);

    let from_checkpoint = open(store.clone()).await;
    let replayed = Catalog::open_with(store.clone(), CatalogSettings::for_test(), false)
        .await
        .unwrap();
    assert_eq!(*from_checkpoint.snapshot(), *replayed.snapshot());
    assert_eq!(*from_checkpoint.snapshot(), *catalog.snapshot());

    // An unreadable newest checkpoint is skipped for the one before it.
    store
        .put(
            &paths::catalog_checkpoint_path(25),
            PutPayload::from_static(b"{broken"),
        )
        .await
        .unwrap();
    let despite_garbage = open(store.clone()).await;
    assert_eq!(*despite_garbage.snapshot(), *catalog.snapshot());

    // A fresh catalog sees records committed by others after it opened.
    catalog.commit(epoch, "a", flush(30, "late")).await.unwrap();
    assert_eq!(from_checkpoint.refresh().await.unwrap(), 27);
    assert_eq!(*from_checkpoint.snapshot(), *catalog.snapshot());
}

/// A catalog in `store` promoted by node `a`, then `count` flushes (LSNs 1 to `count`, objects
/// `o1`...), and the epoch.
async fn promoted_with_flushes(store: &Arc<dyn ObjectStore>, count: u64) -> (Catalog, u64) {
    let catalog = open(store.clone()).await;
    let epoch = catalog.promote("a", 0).await.unwrap();
    commit_flushes(&catalog, epoch, 1..=count).await;
    (catalog, epoch)
}

/// Commits flushes of LSNs `lsns` (objects `o{lsn}`) as node `a`.
async fn commit_flushes(catalog: &Catalog, epoch: u64, lsns: impl Iterator<Item = u64>) {
    for lsn in lsns {
        catalog
            .commit(epoch, "a", flush(lsn, &format!("o{lsn}")))
            .await
            .unwrap();
    }
}

/// The checkpoints in `store`, by seq.
async fn checkpoints(store: &Arc<dyn ObjectStore>) -> Vec<u64> {
    store
        .list(Some(&paths::catalog_checkpoint_prefix()))
        .map(|meta| paths::parse_catalog_checkpoint_path(&meta.unwrap().location).unwrap())
        .collect::<BTreeSet<_>>()
        .await
        .into_iter()
        .collect()
}

#[tokio::test]
async fn test_should_keep_only_the_newest_checkpoints() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (catalog, _) = promoted_with_flushes(&store, 64).await;
    // Every tenth record wrote one (test settings); only the newest three remain.
    assert_eq!(checkpoints(&store).await, [40, 50, 60]);
    let reopened = open(store.clone()).await;
    assert_eq!(*reopened.snapshot(), *catalog.snapshot());
}

/// The slots in `range` that hold a record.
async fn slots_present(
    store: &Arc<dyn ObjectStore>,
    range: std::ops::RangeInclusive<u64>,
) -> Vec<u64> {
    let mut present = Vec::new();
    for seq in range {
        if slot_exists(store.as_ref(), seq).await {
            present.push(seq);
        }
    }
    present
}

/// Runs `check` against an in-memory store and against the local filesystem (whose listing is
/// unordered and whose deletes of missing keys fail).
async fn on_both_stores<F, Fut>(check: F)
where
    F: Fn(Arc<dyn ObjectStore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    check(Arc::new(InMemory::new())).await;
    let dir = tempfile::tempdir().unwrap();
    check(Arc::new(
        LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn test_should_truncate_the_log_behind_the_kept_checkpoints() {
    on_both_stores(truncates_the_log_behind_the_kept_checkpoints).await;
}

async fn truncates_the_log_behind_the_kept_checkpoints(store: Arc<dyn ObjectStore>) {
    // Thirty records written without checkpoints (as an older version left its log), then a
    // process with the test interval: its first truncation must find those by listing.
    let untruncated = CatalogSettings {
        checkpoint_interval: 1000,
        ..CatalogSettings::for_test()
    };
    let old = Catalog::open(store.clone(), untruncated).await.unwrap();
    let epoch = old.promote("a", 0).await.unwrap();
    commit_flushes(&old, epoch, 1..30).await;
    let catalog = open(store.clone()).await;
    commit_flushes(&catalog, epoch, 30..=64).await;
    assert_eq!(catalog.snapshot().seq, 65);
    assert_truncated_to(&store, &catalog, [40, 50, 60]).await;
    // The next checkpoint moves the floor by one interval.
    commit_flushes(&catalog, epoch, 65..=75).await;
    assert_truncated_to(&store, &catalog, [50, 60, 70]).await;
    assert_eq!(live_paths(&catalog.snapshot()).len(), 75);
}

/// Asserts that `store` keeps the checkpoints `kept` and the log records after the oldest of
/// them, none at or below it, and opens to `catalog`'s state.
async fn assert_truncated_to(store: &Arc<dyn ObjectStore>, catalog: &Catalog, kept: [u64; 3]) {
    let seq = catalog.snapshot().seq;
    assert_eq!(checkpoints(store).await, kept);
    assert_eq!(
        slots_present(store, 1..=seq).await,
        (kept[0] + 1..=seq).collect::<Vec<_>>()
    );
    let reopened = open(store.clone()).await;
    assert_eq!(*reopened.snapshot(), *catalog.snapshot());
}

/// A committer whose state is older than the truncated prefix puts its record into a slot
/// that is empty again. Nobody reads that slot, so the commit must not count: the committer
/// notices, catches up from the checkpoint and commits again at the end of the log.
#[tokio::test]
async fn test_should_not_count_a_record_that_landed_in_a_truncated_slot() {
    on_both_stores(does_not_count_a_record_that_landed_in_a_truncated_slot).await;
}

async fn does_not_count_a_record_that_landed_in_a_truncated_slot(store: Arc<dyn ObjectStore>) {
    let (writer, epoch) = promoted_with_flushes(&store, 2).await;
    let stale_flusher = open(store.clone()).await;
    let stale_compactor = open(store.clone()).await;
    commit_flushes(&writer, epoch, 3..=42).await;
    assert_eq!(checkpoints(&store).await, [20, 30, 40]);
    assert!(!slot_exists(store.as_ref(), 4).await);

    // Its precheck passes against its stale state, and the put into slot 4 succeeds.
    let seq = stale_flusher
        .commit(epoch, "a", flush(100, "late"))
        .await
        .unwrap();
    assert_eq!(seq, 44, "committed again at the end of the log");
    assert!(
        slot_exists(store.as_ref(), 4).await,
        "the first put landed in the hole"
    );

    let compact = RecordBody::Compact(Compact {
        table: table(),
        removed: vec!["o1".into(), "o2".into()],
        added: vec![object("o1-2")],
    });
    assert_eq!(
        stale_compactor.commit(epoch, "c", compact).await.unwrap(),
        45
    );

    let fresh = open(store.clone()).await;
    let live = live_paths(&fresh.snapshot());
    assert!(live.contains(&"late".to_string()), "{live:?}");
    assert!(live.contains(&"o1-2".to_string()), "{live:?}");
    assert!(!live.contains(&"o1".to_string()), "{live:?}");
    assert_eq!(fresh.snapshot().table(&table()).unwrap().flushed_lsn, 100);
}

/// A follower more than two checkpoints behind finds its next slot empty: it must not take
/// that for the end of the log.
#[tokio::test]
async fn test_should_catch_up_a_follower_whose_next_records_were_truncated() {
    on_both_stores(catches_up_a_follower_whose_next_records_were_truncated).await;
}

async fn catches_up_a_follower_whose_next_records_were_truncated(store: Arc<dyn ObjectStore>) {
    let (writer, epoch) = promoted_with_flushes(&store, 1).await;
    let follower = open(store.clone()).await;
    assert_eq!(follower.snapshot().seq, 2);
    commit_flushes(&writer, epoch, 2..=40).await;
    assert!(!slot_exists(store.as_ref(), 3).await);
    assert_eq!(follower.refresh().await.unwrap(), 41);
    assert_eq!(*follower.snapshot(), *writer.snapshot());
}

#[tokio::test]
async fn test_should_report_corrupt_record() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let catalog = open(store.clone()).await;
    let epoch = catalog.promote("a", 0).await.unwrap();
    store
        .put_opts(
            &paths::catalog_log_path(2),
            PutPayload::from_static(b"{\"version\":1,\"seq\":"),
            PutOptions::from(PutMode::Create),
        )
        .await
        .unwrap();

    let error = catalog.refresh().await.unwrap_err();
    let CatalogError::Corrupt { key, .. } = &error else {
        panic!("expected Corrupt, got {error:?}");
    };
    assert_eq!(key, paths::catalog_log_path(2).as_ref());
    assert!(matches!(
        Catalog::open(store.clone(), CatalogSettings::for_test()).await,
        Err(CatalogError::Corrupt { .. })
    ));
    assert!(matches!(
        catalog.commit(epoch, "a", flush(1, "x")).await,
        Err(CatalogError::Corrupt { .. })
    ));
    // The state stays at the last good record.
    assert_eq!(catalog.snapshot().seq, 1);
}

#[tokio::test]
async fn test_should_notify_subscribers_of_new_state() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let writer = open(store.clone()).await;
    let reader = open(store.clone()).await;
    let mut changes = reader.subscribe();
    let epoch = writer.promote("a", 0).await.unwrap();
    writer.commit(epoch, "a", flush(1, "x")).await.unwrap();
    reader.refresh().await.unwrap();
    let seen = changes.wait_for(|state| state.seq == 2).await.unwrap();
    assert_eq!(seen.primary.as_deref(), Some("a"));
}

#[tokio::test]
async fn test_should_commit_through_latency_and_contention() {
    let failing = Arc::new(FailingObjectStore::new(Arc::new(InMemory::new())));
    failing.set_latency(Duration::from_millis(1));
    let first = open(failing.clone()).await;
    let second = open(failing.clone()).await;
    let mut handles = Vec::new();
    for (index, catalog) in [first, second].into_iter().enumerate() {
        handles.push(tokio::spawn(async move {
            for commit in 0..5 {
                catalog
                    .commit(0, "n", {
                        let path = format!("{index}-{commit}");
                        flush_of(TableId::new("db", &path), 1, &path)
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    failing.clear();
    let state = open(failing).await.snapshot();
    assert_eq!(state.seq, 10);
    assert_eq!(all_live_paths(&state).len(), 10);
}

/// Standbys racing to replace the same primary (one `Catalog` each, as separate processes
/// are, on one store): exactly one failover promote on the epoch they read wins each round,
/// every other one is told it was fenced, and the log names the winner.
#[tokio::test]
async fn test_should_let_exactly_one_racing_failover_promote_win() {
    const STANDBYS: usize = 4;
    const ROUNDS: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let ids: Vec<String> = (0..STANDBYS).map(|i| format!("w{i}")).collect();
    let first = open(store.clone()).await;
    first.promote_if(0, "w0", 0, ids.clone()).await.unwrap();
    let mut catalogs = Vec::new();
    for _ in 0..STANDBYS {
        catalogs.push(open(store.clone()).await);
    }
    for round in 1..=ROUNDS {
        let mut racers = Vec::new();
        for (catalog, id) in catalogs.iter().zip(&ids) {
            let (catalog, id, in_sync) = (catalog.clone(), id.clone(), ids.clone());
            racers.push(tokio::spawn(async move {
                let record = FailoverRecord {
                    reason: "dead".into(),
                    detected_at_ms: round,
                    promoted_at_ms: round,
                };
                let outcome = catalog
                    .promote_for_failover(round, &id, round * 10, in_sync, record)
                    .await;
                (id, outcome)
            }));
        }
        let mut winners = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                (id, Ok(epoch)) => {
                    assert_eq!(epoch, round + 1);
                    winners.push(id);
                }
                (_, Err(CatalogError::Fenced { current_epoch, .. })) => {
                    assert_eq!(current_epoch, round + 1);
                }
                (id, Err(other)) => panic!("{id}: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        for catalog in &catalogs {
            catalog.refresh().await.unwrap();
            let state = catalog.snapshot();
            assert_eq!(state.epoch, round + 1);
            assert_eq!(state.primary.as_ref(), Some(&winners[0]));
        }
    }
}

fn flush_body(table: TableId, lsn_first: u64, lsn_last: u64, path: &str) -> Flush {
    Flush {
        table,
        lsn_first,
        lsn_last,
        objects: vec![object(path)],
        columns: vec![],
    }
}

/// Starts `commit_flush` of each flush while the commit lock is held, and returns once all of
/// them are queued: the first to get the lock then commits the whole queue.
async fn commit_flushes_queued(
    catalog: &Catalog,
    epoch: u64,
    flushes: Vec<Flush>,
) -> Vec<Result<u64, CatalogError>> {
    let count = flushes.len();
    let held = catalog.inner.writer.lock().await;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, flush) in flushes.into_iter().enumerate() {
        let catalog = catalog.clone();
        tasks.spawn(async move { (index, catalog.commit_flush(epoch, "a", flush).await) });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while catalog.queued_flushes().len() < count {
        assert!(Instant::now() < deadline, "the flushes never queued");
        tokio::task::yield_now().await;
    }
    drop(held);
    let mut results: Vec<(usize, Result<u64, CatalogError>)> = tasks.join_all().await;
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_commit_the_flushes_waiting_together_in_one_record() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let catalog = open(store.clone()).await;
    let epoch = catalog.promote("a", 0).await.unwrap();
    let tables: Vec<TableId> = (0..5)
        .map(|i| TableId::new("db", format!("t{i}")))
        .collect();
    let flushes = tables
        .iter()
        .map(|table| flush_body(table.clone(), 1, 4, &format!("{table}/x")))
        .collect();
    let results = commit_flushes_queued(&catalog, epoch, flushes).await;
    // One record, slot 2, for all five.
    for result in &results {
        assert_eq!(result.as_ref().ok(), Some(&2), "{results:?}");
    }
    let record = read_record(store.as_ref(), 2).await.unwrap().unwrap();
    let RecordBody::Flushes(flushes) = record.record else {
        panic!("slot 2 holds {record:?}");
    };
    assert_eq!(flushes.flushes.len(), 5);
    assert!(!slot_exists(store.as_ref(), 3).await);
    // Every reader applies it alike.
    let reopened = open(store).await;
    for state in [catalog.snapshot(), reopened.snapshot()] {
        for table in &tables {
            assert_eq!(state.table(table).unwrap().flushed_lsn, 4);
            assert_eq!(state.table(table).unwrap().objects.len(), 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_answer_each_flush_of_a_partly_covered_batch_on_its_own() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let catalog = open(store.clone()).await;
    let epoch = catalog.promote("a", 0).await.unwrap();
    let (done, fresh) = (TableId::new("db", "done"), TableId::new("db", "fresh"));
    // An earlier attempt of `done`'s flush landed (its reply was lost, say).
    catalog
        .commit_flush(epoch, "a", flush_body(done.clone(), 1, 4, "done/x"))
        .await
        .unwrap();
    let results = commit_flushes_queued(
        &catalog,
        epoch,
        vec![
            flush_body(done.clone(), 1, 4, "done/x"),
            flush_body(fresh.clone(), 1, 4, "fresh/x"),
        ],
    )
    .await;
    assert!(
        matches!(
            results[0],
            Err(CatalogError::Covered { flushed_lsn: 4, .. })
        ),
        "{results:?}"
    );
    assert!(results[1].is_ok(), "{results:?}");
    let state = open(store).await.snapshot();
    assert_eq!(state.table(&done).unwrap().objects.len(), 1);
    assert_eq!(state.table(&fresh).unwrap().flushed_lsn, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_fence_every_flush_of_a_batch_from_an_old_epoch() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let old = open(store.clone()).await;
    let old_epoch = old.promote("a", 0).await.unwrap();
    let new = open(store.clone()).await;
    new.promote("b", 0).await.unwrap();
    let flushes = (0..3)
        .map(|i| {
            flush_body(
                TableId::new("db", format!("t{i}")),
                1,
                2,
                &format!("t{i}/x"),
            )
        })
        .collect();
    let results = commit_flushes_queued(&old, old_epoch, flushes).await;
    for result in &results {
        assert!(
            matches!(
                result,
                Err(CatalogError::Fenced {
                    current_epoch: 2,
                    ..
                })
            ),
            "{results:?}"
        );
    }
    assert!(open(store).await.snapshot().tables.is_empty());
}

#[test]
fn test_should_void_a_flushes_record_unless_every_flush_is_valid() {
    let (a, b) = (TableId::new("db", "a"), TableId::new("db", "b"));
    let mut state = CatalogState::default();
    let envelope = |seq: u64, epoch: u64, record: RecordBody| LogRecord {
        version: FORMAT_VERSION,
        seq,
        epoch,
        nonce: format!("n{seq}"),
        node: "n".into(),
        record,
    };
    let promote = RecordBody::Promote(Promote {
        epoch: 1,
        node_id: "n".into(),
        fence: Fence {
            previous_epoch: 0,
            last_lsn: 0,
        },
        in_sync: vec![],
        failover: None,
    });
    let flushes = |list: Vec<Flush>| RecordBody::Flushes(Flushes { flushes: list });
    assert_eq!(state.apply(&envelope(1, 1, promote)), Verdict::Valid);
    let first = flushes(vec![
        flush_body(a.clone(), 1, 5, "a/1"),
        flush_body(b.clone(), 1, 5, "b/1"),
    ]);
    assert_eq!(state.apply(&envelope(2, 1, first)), Verdict::Valid);
    // `a` overlaps its flushed LSN: the whole record is void, `b` included.
    let overlapping = flushes(vec![
        flush_body(b.clone(), 6, 9, "b/2"),
        flush_body(a.clone(), 3, 9, "a/2"),
    ]);
    assert!(matches!(
        state.apply(&envelope(3, 1, overlapping)),
        Verdict::Rejected(_)
    ));
    let twice = flushes(vec![
        flush_body(b.clone(), 6, 7, "b/3"),
        flush_body(b.clone(), 8, 9, "b/4"),
    ]);
    assert!(matches!(
        state.apply(&envelope(4, 1, twice)),
        Verdict::Rejected(_)
    ));
    assert_eq!(state.table(&b).unwrap().flushed_lsn, 5);
    assert_eq!(state.table(&b).unwrap().objects.len(), 1);
    assert_eq!(state.seq, 4);
}

/// A standby promotes on a copy of the log older than the in-sync set: the record names the
/// standbys it was given only as far as they are in the set where the record lands. One
/// removed meanwhile (it may lack writes acknowledged after its removal) is left out; one
/// added meanwhile (the stale copy did not show it) is kept.
#[tokio::test]
async fn test_should_name_only_current_in_sync_members_in_a_failover_promote() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let primary = open(store.clone()).await;
    let isr = |names: &[&str]| {
        RecordBody::Isr(Isr {
            in_sync: ids(names),
        })
    };
    let record = || FailoverRecord {
        reason: "dead".into(),
        detected_at_ms: 1,
        promoted_at_ms: 1,
    };
    let epoch = primary
        .promote_if(0, "a", 0, ids(&["a", "b", "c"]))
        .await
        .unwrap();
    // b's copy of the log stops here; the primary then drops c and adds d.
    let standby = open(store.clone()).await;
    primary.commit(epoch, "a", isr(&["a", "b"])).await.unwrap();
    primary
        .commit(epoch, "a", isr(&["a", "b", "d"]))
        .await
        .unwrap();
    assert_eq!(standby.snapshot().in_sync, ids(&["a", "b", "c"]));
    let new_epoch = standby
        .promote_for_failover(epoch, "b", 0, ids(&["b", "c", "d"]), record())
        .await
        .unwrap();
    let state = open(store).await.snapshot();
    assert_eq!(state.epoch, new_epoch);
    assert_eq!(state.primary.as_deref(), Some("b"));
    assert_eq!(state.in_sync, ids(&["b", "d"]));
}

#[tokio::test]
async fn test_should_settle_a_promote_of_unknown_outcome_with_a_record_of_the_old_epoch() {
    let record = || FailoverRecord {
        reason: "switchover".into(),
        detected_at_ms: 1,
        promoted_at_ms: 1,
    };
    for landed in [true, false] {
        let failing = Arc::new(FailingObjectStore::new(Arc::new(InMemory::new())));
        let catalog = open(failing.clone()).await;
        let epoch = catalog
            .promote_if(0, "a", 0, ids(&["a", "b"]))
            .await
            .unwrap();
        // The promote's put lands (or not) and no read can tell.
        let timing = if landed {
            FaultTiming::After
        } else {
            FaultTiming::Before
        };
        failing.inject(
            FaultOp::Put,
            timing,
            LOG_PREFIX,
            if landed { 1 } else { 1000 },
        );
        failing.inject(FaultOp::Get, FaultTiming::Before, LOG_PREFIX, 1000);
        let error = catalog
            .promote_for_failover(epoch, "b", 7, ids(&["b", "a"]), record())
            .await
            .unwrap_err();
        assert!(
            matches!(error, CatalogError::Unavailable { .. }),
            "{error:?}"
        );
        failing.clear();
        let settled = catalog.confirm_epoch(epoch, "a").await;
        let state = open(failing.clone()).await.snapshot();
        if landed {
            assert!(
                matches!(settled, Err(CatalogError::Fenced { current_epoch, .. }) if current_epoch == epoch + 1),
                "{settled:?}"
            );
            assert_eq!(state.primary.as_deref(), Some("b"));
        } else {
            settled.unwrap();
            // The old epoch stays, with its in-sync set, and the promote can no longer land.
            assert_eq!(state.epoch, epoch);
            assert_eq!(state.primary.as_deref(), Some("a"));
            assert_eq!(state.in_sync, ["a", "b"]);
        }
    }
}

#[tokio::test]
async fn test_should_confirm_an_epoch_without_changing_the_in_sync_set_from_a_stale_copy() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let primary = open(store.clone()).await;
    let epoch = primary
        .promote_if(0, "a", 0, ids(&["a", "b", "c"]))
        .await
        .unwrap();
    // b's copy stops here; the primary then drops c.
    let standby = open(store.clone()).await;
    primary
        .commit(
            epoch,
            "a",
            RecordBody::Isr(Isr {
                in_sync: ids(&["a", "b"]),
            }),
        )
        .await
        .unwrap();
    standby.confirm_epoch(epoch, "b").await.unwrap();
    let state = open(store).await.snapshot();
    assert_eq!((state.epoch, state.primary.as_deref()), (epoch, Some("a")));
    assert_eq!(state.in_sync, ids(&["a", "b"]));
}
