//! Failpoints inside a job (feature `failpoints`): a failure between upload and commit leaves
//! the catalog unchanged and an orphan that the garbage collector removes. Its own test
//! binary, because failpoints are process-wide.
#![cfg(feature = "failpoints")]

use std::sync::Arc;

use arc_compact::{
    Compactor, ExecutorSettings, GarbageCollector, JobOutcome, PlanSettings, clear_failpoints,
    configure_failpoints, plan,
};
use arc_storage::model::{ColumnKind, ColumnSpec, FieldType, schema_of};
use arc_storage::{
    Catalog, CatalogSettings, FlushMeta, TableId, encode_table_objects, upload_and_commit,
};
use arrow::array::{ArrayRef, Float64Array, RecordBatch, TimestampNanosecondArray};
use chrono::{TimeDelta, Utc};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

// 2024-03-05T07:00:00Z
const HOUR: i64 = 1_709_622_000_000_000_000;

#[tokio::test]
async fn test_should_leave_an_orphan_and_an_unchanged_catalog_when_failing_before_commit() {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
    let catalog = Catalog::open(store.clone(), CatalogSettings::for_test())
        .await
        .unwrap();
    let epoch = catalog.promote("writer", 0).await.unwrap();
    let table = TableId::new("db", "cpu");
    let columns = [
        ColumnSpec {
            name: "time".into(),
            kind: ColumnKind::Time,
        },
        ColumnSpec {
            name: "v".into(),
            kind: ColumnKind::Field(FieldType::Float),
        },
    ];
    for lsn in 1..=3u64 {
        let rows = RecordBatch::try_new(
            schema_of(&columns),
            vec![
                Arc::new(TimestampNanosecondArray::from(vec![HOUR + lsn as i64])) as ArrayRef,
                Arc::new(Float64Array::from(vec![lsn as f64])),
            ],
        )
        .unwrap();
        let meta = FlushMeta {
            epoch,
            lsn_first: lsn,
            lsn_last: lsn,
            node_id: "writer".into(),
        };
        let objects = encode_table_objects(&table, &[rows], &meta).unwrap();
        upload_and_commit(store.as_ref(), &catalog, &table, objects, &meta)
            .await
            .unwrap();
    }
    let settings = PlanSettings {
        hourly_min_files: 2,
        ..PlanSettings::default()
    };
    let jobs = plan(&catalog.snapshot(), HOUR + 3 * 3_600_000_000_000, &settings);
    let compactor = Compactor::new(
        store.clone(),
        catalog.clone(),
        "compactor-1",
        ExecutorSettings::for_test(&dir.path().join("scratch")),
    )
    .unwrap();

    configure_failpoints("compact-after-upload-before-commit=error").unwrap();
    let before = catalog.snapshot();
    let error = compactor.run_job(&jobs[0]).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("compact-after-upload-before-commit"),
        "{error}"
    );
    assert_eq!(*catalog.snapshot(), *before);

    clear_failpoints();
    let mut collector = GarbageCollector::new(std::time::Duration::from_secs(60));
    let now = Utc::now();
    let first = collector
        .collect(store.as_ref(), &catalog, now)
        .await
        .unwrap();
    assert_eq!(first.unreferenced, 1, "the uploaded output is an orphan");
    let later = collector
        .collect(store.as_ref(), &catalog, now + TimeDelta::minutes(2))
        .await
        .unwrap();
    assert_eq!(later.deleted, 1);

    let report = compactor.run_job(&jobs[0]).await.unwrap();
    assert!(
        matches!(report.outcome, JobOutcome::Committed { .. }),
        "{report:?}"
    );
    assert!(configure_failpoints("nonsense").is_err());
    assert!(configure_failpoints("compact-before-upload=pause:").is_err());

    // A pause holds the job before its commit while a new epoch is promoted; released, the
    // swap is fenced once, checked against the state after the promote, and committed under
    // the new epoch.
    let next_hour = HOUR + 3_600_000_000_000;
    for lsn in 4..=5u64 {
        let rows = RecordBatch::try_new(
            schema_of(&columns),
            vec![
                Arc::new(TimestampNanosecondArray::from(vec![next_hour + lsn as i64])) as ArrayRef,
                Arc::new(Float64Array::from(vec![lsn as f64])),
            ],
        )
        .unwrap();
        let meta = FlushMeta {
            epoch,
            lsn_first: lsn,
            lsn_last: lsn,
            node_id: "writer".into(),
        };
        let objects = encode_table_objects(&table, &[rows], &meta).unwrap();
        upload_and_commit(store.as_ref(), &catalog, &table, objects, &meta)
            .await
            .unwrap();
    }
    let jobs = plan(&catalog.snapshot(), HOUR + 4 * 3_600_000_000_000, &settings);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let release = dir.path().join("release");
    configure_failpoints(&format!(
        "compact-after-upload-before-commit=pause:{}",
        release.display()
    ))
    .unwrap();
    let job = jobs[0].clone();
    let paused = tokio::spawn({
        let compactor = compactor.clone();
        async move { compactor.run_job(&job).await }
    });
    let reached = dir
        .path()
        .join(format!("release.reached.{}", std::process::id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !reached.exists() {
        assert!(std::time::Instant::now() < deadline, "the job never paused");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let other_writer = Catalog::open(store.clone(), CatalogSettings::for_test())
        .await
        .unwrap();
    let new_epoch = other_writer.promote("writer-2", 5).await.unwrap();
    assert_eq!(new_epoch, epoch + 1);
    assert!(!paused.is_finished(), "held at the failpoint");
    std::fs::write(&release, b"").unwrap();
    let report = paused.await.unwrap().unwrap();
    assert!(
        matches!(report.outcome, JobOutcome::Committed { epoch, .. } if epoch == new_epoch),
        "{report:?}"
    );
    assert_eq!(report.fenced_commits, 1, "{report:?}");
    clear_failpoints();
}
