//! End to end against a real `LocalFileSystem` store and a real catalog: objects written by
//! storage's own flush path, then planned, merged, swapped and collected.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arc_compact::{
    CompactError, Compactor, ExecutorSettings, GarbageCollector, JobOutcome, ObjectKind,
    PlanSettings, Tier, object_kind, plan,
};
use arc_storage::model::{ColumnKind, ColumnSpec, FieldType, schema_of};
use arc_storage::parquet::{FOOTER_EPOCH, FOOTER_LSN_FIRST, FOOTER_LSN_LAST, read_footer_metadata};
use arc_storage::testing::{FailingObjectStore, FaultOp, FaultTiming};
use arc_storage::{
    Catalog, CatalogSettings, Compact, DataObject, FlushMeta, RecordBody, TableId,
    encode_table_objects, upload_and_commit,
};
use arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::compute::concat_batches;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tempfile::TempDir;

// 2024-03-05T00:00:00Z
const DAY: i64 = 1_709_596_800_000_000_000;
const HOUR: i64 = 3_600_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn table() -> TableId {
    TableId::new("db", "cpu")
}

/// One test's store, catalog and scratch directory.
struct Fixture {
    _dir: TempDir,
    scratch: std::path::PathBuf,
    store: Arc<dyn ObjectStore>,
    catalog: Catalog,
    epoch: u64,
    next_lsn: u64,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = TempDir::new().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir_all(&root).unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
        Fixture::with_store(dir, store).await
    }

    async fn with_store(dir: TempDir, store: Arc<dyn ObjectStore>) -> Fixture {
        let catalog = Catalog::open(store.clone(), CatalogSettings::for_test())
            .await
            .unwrap();
        let epoch = catalog.promote("writer", 0).await.unwrap();
        Fixture {
            scratch: dir.path().join("scratch"),
            _dir: dir,
            store,
            catalog,
            epoch,
            next_lsn: 1,
        }
    }

    /// Flushes `rows` as the writer would: encode, upload, commit one `flush` record.
    async fn flush(&mut self, rows: RecordBatch) {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        let meta = FlushMeta {
            epoch: self.epoch,
            lsn_first: lsn,
            lsn_last: lsn,
            node_id: "writer".into(),
        };
        let objects = encode_table_objects(&table(), &[rows], &meta).unwrap();
        upload_and_commit(self.store.as_ref(), &self.catalog, &table(), objects, &meta)
            .await
            .unwrap();
    }

    fn compactor(&self, store: Arc<dyn ObjectStore>) -> Compactor {
        Compactor::new(
            store,
            self.catalog.clone(),
            "compactor-1",
            ExecutorSettings::for_test(&self.scratch),
        )
        .unwrap()
    }

    fn live(&self) -> Vec<DataObject> {
        self.catalog
            .snapshot()
            .table(&table())
            .map(|state| state.objects.clone())
            .unwrap_or_default()
    }

    fn live_in(&self, start_ns: i64, len_ns: i64) -> Vec<DataObject> {
        self.live()
            .into_iter()
            .filter(|object| {
                object.time_range.start_ns >= start_ns
                    && object.time_range.end_ns < start_ns + len_ns
            })
            .collect()
    }

    async fn read(&self, object: &DataObject) -> RecordBatch {
        let bytes = self.object_bytes(&object.path).await;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    async fn object_bytes(&self, key: &str) -> Bytes {
        self.store
            .get(&Path::parse(key).unwrap())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }

    async fn exists(&self, key: &str) -> bool {
        self.store.head(&Path::parse(key).unwrap()).await.is_ok()
    }
}

fn spec(name: &str, kind: ColumnKind) -> ColumnSpec {
    ColumnSpec {
        name: name.to_string(),
        kind,
    }
}

/// `count` points at `start_ns`, one second apart, hosts a, b, c by second; `usage` is
/// `base + i`, `requests` `i`; with `extra`, a column only some flushes have.
fn points(start_ns: i64, count: usize, base: f64, extra: bool) -> RecordBatch {
    let times: Vec<i64> = (0..count).map(|i| start_ns + i as i64 * SECOND).collect();
    let hosts: Vec<&str> = times
        .iter()
        .map(|time| ["a", "b", "c"][((time - DAY) / SECOND % 3) as usize])
        .collect();
    let usage: Vec<f64> = (0..count).map(|i| base + i as f64).collect();
    let requests: Vec<i64> = (0..count).map(|i| i as i64).collect();
    let mut columns: Vec<(ColumnSpec, ArrayRef)> = vec![
        (
            spec("time", ColumnKind::Time),
            Arc::new(TimestampNanosecondArray::from(times)),
        ),
        (
            spec("host", ColumnKind::Tag),
            Arc::new(StringArray::from(hosts)),
        ),
        (
            spec("usage", ColumnKind::Field(FieldType::Float)),
            Arc::new(Float64Array::from(usage)),
        ),
        (
            spec("requests", ColumnKind::Field(FieldType::Integer)),
            Arc::new(Int64Array::from(requests)),
        ),
    ];
    if extra {
        columns.push((
            spec("extra", ColumnKind::Field(FieldType::Float)),
            Arc::new(Float64Array::from(vec![1.5; count])),
        ));
    }
    let specs: Vec<ColumnSpec> = columns.iter().map(|(spec, _)| spec.clone()).collect();
    RecordBatch::try_new(
        schema_of(&specs),
        columns.into_iter().map(|(_, array)| array).collect(),
    )
    .unwrap()
}

/// Row count and per-column sums (nulls skipped) of some objects' rows.
#[derive(Debug, PartialEq)]
struct Totals {
    rows: usize,
    sums: BTreeMap<String, f64>,
}

fn totals(batches: &[RecordBatch]) -> Totals {
    let mut sums = BTreeMap::new();
    let mut rows = 0;
    for batch in batches {
        rows += batch.num_rows();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let sum: f64 = if let Some(floats) = column.as_any().downcast_ref::<Float64Array>() {
                floats.iter().flatten().sum()
            } else if let Some(ints) = column.as_any().downcast_ref::<Int64Array>() {
                ints.iter().flatten().map(|value| value as f64).sum()
            } else if let Some(times) = column.as_any().downcast_ref::<TimestampNanosecondArray>() {
                // Offsets from the day keep the sum exact in an f64.
                times
                    .iter()
                    .flatten()
                    .map(|value| (value - DAY) as f64 / 1e9)
                    .sum()
            } else {
                continue;
            };
            *sums.entry(field.name().clone()).or_default() += sum;
        }
    }
    Totals { rows, sums }
}

fn times_of(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column_by_name("time")
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .unwrap()
        .values()
        .to_vec()
}

fn settings() -> PlanSettings {
    PlanSettings {
        hourly_min_files: 10,
        daily_min_files: 3,
        ..PlanSettings::default()
    }
}

/// An hour's worth of flushes: `flushes` objects of 20 points each, distinct times.
async fn flush_hour(fixture: &mut Fixture, hour: i64, flushes: usize) {
    for index in 0..flushes {
        let start = hour + index as i64 * 60 * SECOND;
        fixture
            .flush(points(start, 20, index as f64 * 100.0, index % 4 == 0))
            .await;
    }
}

#[tokio::test]
async fn test_should_compact_a_closed_hour_into_one_object_with_the_same_rows() {
    let mut fixture = Fixture::new().await;
    let hour = DAY + 7 * HOUR;
    flush_hour(&mut fixture, hour, 12).await;
    flush_hour(&mut fixture, hour + HOUR, 2).await;
    let inputs = fixture.live_in(hour, HOUR);
    assert_eq!(inputs.len(), 12);
    let mut before = Vec::new();
    for object in &inputs {
        before.push(fixture.read(object).await);
    }

    // Hours are closed 10 minutes after they end; at 09:05 only 07:00 qualifies by count.
    let now = hour + 2 * HOUR + 5 * 60 * SECOND;
    assert!(
        plan(
            &fixture.catalog.snapshot(),
            hour + HOUR + 60 * SECOND,
            &settings()
        )
        .is_empty()
    );
    let jobs = plan(&fixture.catalog.snapshot(), now, &settings());
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].tier, jobs[0].period_start_ns),
        (Tier::Hourly, hour)
    );

    let compactor = fixture.compactor(fixture.store.clone());
    let report = compactor.run_job(&jobs[0]).await.unwrap();
    let JobOutcome::Committed {
        output: Some(output),
        ..
    } = &report.outcome
    else {
        panic!("{report:?}");
    };
    assert_eq!(
        (report.files_in, report.rows_in, report.rows_out),
        (12, 240, 240)
    );

    // The hour is one hourly object; the next hour is untouched.
    let after = fixture.live_in(hour, HOUR);
    assert_eq!(after.len(), 1);
    assert_eq!(&after[0].path, output);
    assert_eq!(object_kind(output), ObjectKind::Hourly);
    assert!(
        output.starts_with("db/cpu/2024/03/05/07/compacted-"),
        "{output}"
    );
    assert_eq!(fixture.live_in(hour + HOUR, HOUR).len(), 2);
    let merged = fixture.read(&after[0]).await;
    assert_eq!(totals(std::slice::from_ref(&merged)), totals(&before));
    assert_eq!(after[0].rows, 240);
    assert!(times_of(&merged).is_sorted());
    let footer = read_footer_metadata(fixture.object_bytes(output).await).unwrap();
    assert_eq!(footer[FOOTER_EPOCH], fixture.epoch.to_string());
    assert_eq!(footer[FOOTER_LSN_FIRST], "1");
    assert_eq!(footer[FOOTER_LSN_LAST], "12");

    // Inputs stay in the store for the garbage collector; the plan has converged.
    for object in &inputs {
        assert!(fixture.exists(&object.path).await);
    }
    assert!(plan(&fixture.catalog.snapshot(), now, &settings()).is_empty());
}

#[tokio::test]
async fn test_should_keep_the_last_write_of_duplicate_points() {
    let mut fixture = Fixture::new().await;
    let hour = DAY + 3 * HOUR;
    // The same 30 points written three times with different values, then the last third of
    // them once more after a failover (a new epoch).
    for base in [0.0, 1000.0, 2000.0] {
        fixture.flush(points(hour, 30, base, false)).await;
    }
    fixture.epoch = fixture
        .catalog
        .promote("writer-2", fixture.next_lsn)
        .await
        .unwrap();
    fixture
        .flush(points(hour + 20 * SECOND, 10, 9000.0, false))
        .await;
    let all = PlanSettings {
        hourly_min_files: 2,
        ..settings()
    };
    let jobs = plan(&fixture.catalog.snapshot(), hour + 2 * HOUR, &all);
    assert_eq!(jobs.len(), 1);
    let report = fixture
        .compactor(fixture.store.clone())
        .run_job(&jobs[0])
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, JobOutcome::Committed { .. }),
        "{report:?}"
    );
    assert!(report.deduplicated);
    assert_eq!((report.rows_in, report.rows_out), (100, 30));
    let live = fixture.live_in(hour, HOUR);
    assert_eq!(live.len(), 1);
    let rows = fixture.read(&live[0]).await;
    let usage: Vec<f64> = rows
        .column_by_name("usage")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .values()
        .to_vec();
    let expected: Vec<f64> = (0..20)
        .map(|i| 2000.0 + f64::from(i))
        .chain((0..10).map(|i| 9000.0 + f64::from(i)))
        .collect();
    assert_eq!(usage, expected);
}

#[tokio::test]
async fn test_should_compact_a_closed_day_and_collect_the_replaced_inputs_after_the_grace_period() {
    let mut fixture = Fixture::new().await;
    flush_hour(&mut fixture, DAY + HOUR, 10).await;
    flush_hour(&mut fixture, DAY + 5 * HOUR, 2).await;
    // Hourly first (the day is still open): 01:00 becomes one object.
    let hourly = plan(&fixture.catalog.snapshot(), DAY + 12 * HOUR, &settings());
    assert_eq!(hourly.len(), 1);
    let compactor = fixture.compactor(fixture.store.clone());
    compactor.run_job(&hourly[0]).await.unwrap();
    flush_hour(&mut fixture, DAY + 23 * HOUR, 1).await;
    let day_inputs = fixture.live_in(DAY, 24 * HOUR);
    assert_eq!(day_inputs.len(), 4);
    let mut before = Vec::new();
    for object in &day_inputs {
        before.push(fixture.read(object).await);
    }

    // An orphan: uploaded by a flush whose commit was lost.
    let orphan = Path::from("db/cpu/2024/03/05/09/000001-99-99-orphan.parquet");
    fixture
        .store
        .put(&orphan, PutPayload::from_static(b"PAR1"))
        .await
        .unwrap();

    let daily = plan(&fixture.catalog.snapshot(), DAY + 25 * HOUR, &settings());
    assert_eq!(daily.len(), 1);
    assert_eq!(
        (daily[0].tier, daily[0].period_start_ns),
        (Tier::Daily, DAY)
    );
    let report = compactor.run_job(&daily[0]).await.unwrap();
    assert!(
        matches!(report.outcome, JobOutcome::Committed { .. }),
        "{report:?}"
    );
    let after = fixture.live_in(DAY, 24 * HOUR);
    assert_eq!(after.len(), 1);
    assert_eq!(object_kind(&after[0].path), ObjectKind::Daily);
    assert_eq!(totals(&[fixture.read(&after[0]).await]), totals(&before));

    // Garbage: the 10 raw inputs of the hourly job, the 4 inputs of the daily one, the orphan.
    let mut collector = GarbageCollector::new(std::time::Duration::from_secs(3600));
    let now = Utc::now();
    let first = collector
        .collect(fixture.store.as_ref(), &fixture.catalog, now)
        .await
        .unwrap();
    assert_eq!((first.unreferenced, first.deleted), (15, 0));
    let early = collector
        .collect(
            fixture.store.as_ref(),
            &fixture.catalog,
            now + TimeDelta::minutes(59),
        )
        .await
        .unwrap();
    assert_eq!(early.deleted, 0);
    let late = collector
        .collect(
            fixture.store.as_ref(),
            &fixture.catalog,
            now + TimeDelta::minutes(61),
        )
        .await
        .unwrap();
    assert_eq!(late.deleted, 15);
    for object in &day_inputs {
        assert!(!fixture.exists(&object.path).await, "{}", object.path);
    }
    assert!(!fixture.exists(orphan.as_ref()).await);
    // Everything live is still there, and so is the catalog.
    for object in fixture.live() {
        assert!(fixture.exists(&object.path).await, "{}", object.path);
    }
    let reopened = Catalog::open(fixture.store.clone(), CatalogSettings::for_test())
        .await
        .unwrap();
    assert_eq!(*reopened.snapshot(), *fixture.catalog.snapshot());
}

/// A store that runs a hook (once) just before the first upload of a compacted object: the
/// moment between merging and committing, where concurrent changes land.
struct HookStore {
    inner: Arc<dyn ObjectStore>,
    hook: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl fmt::Debug for HookStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HookStore({})", self.inner)
    }
}

impl fmt::Display for HookStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HookStore({})", self.inner)
    }
}

impl HookStore {
    async fn run_hook(&self, location: &Path) {
        if !location.as_ref().contains("compacted-") {
            return;
        }
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook.await;
        }
    }
}

#[async_trait]
impl ObjectStore for HookStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.run_hook(location).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.run_hook(location).await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[tokio::test]
async fn test_should_void_a_swap_whose_input_was_removed_concurrently() {
    let mut fixture = Fixture::new().await;
    let hour = DAY + 7 * HOUR;
    flush_hour(&mut fixture, hour, 10).await;
    let jobs = plan(&fixture.catalog.snapshot(), hour + 2 * HOUR, &settings());
    assert_eq!(jobs.len(), 1);

    // While the job merges, another compactor (its own catalog handle) swaps one input out.
    let other = Catalog::open(fixture.store.clone(), CatalogSettings::for_test())
        .await
        .unwrap();
    let taken = jobs[0].inputs[3].clone();
    let epoch = fixture.epoch;
    let store = fixture.store.clone();
    let hook_store = Arc::new(HookStore {
        inner: fixture.store.clone(),
        hook: Mutex::new(Some(Box::pin(async move {
            let copy = Path::from(format!("{}.copy.parquet", taken.path));
            store
                .copy(&Path::parse(&taken.path).unwrap(), &copy)
                .await
                .unwrap();
            let swap = RecordBody::Compact(Compact {
                table: table(),
                removed: vec![taken.path.clone()],
                added: vec![DataObject {
                    path: copy.to_string(),
                    ..taken
                }],
            });
            other.commit(epoch, "compactor-2", swap).await.unwrap();
        }))),
    });
    let compactor = fixture.compactor(hook_store.clone());
    let report = compactor.run_job(&jobs[0]).await.unwrap();
    let JobOutcome::Voided { reason } = &report.outcome else {
        panic!("{report:?}");
    };
    assert!(reason.contains(&jobs[0].inputs[3].path), "{reason}");

    // The catalog holds exactly what the other compactor left: nine inputs and the copy.
    fixture.catalog.refresh().await.unwrap();
    let live = fixture.live();
    assert_eq!(live.len(), 10);
    assert!(
        live.iter()
            .all(|object| object_kind(&object.path) == ObjectKind::Raw)
    );
    assert!(!live.contains(&jobs[0].inputs[3]));
    // No compacted object is left behind: the void swap's output was deleted.
    let listed: Vec<ObjectMeta> =
        futures::TryStreamExt::try_collect(fixture.store.list(Some(&Path::from("db/cpu"))))
            .await
            .unwrap();
    assert!(
        listed
            .iter()
            .all(|meta| !meta.location.as_ref().contains("compacted-"))
    );

    // Planned again from the fresh snapshot, the hour compacts.
    let jobs = plan(&fixture.catalog.snapshot(), hour + 2 * HOUR, &settings());
    let report = compactor.run_job(&jobs[0]).await.unwrap();
    assert!(
        matches!(report.outcome, JobOutcome::Committed { .. }),
        "{report:?}"
    );
    assert_eq!(fixture.live().len(), 1);

    // And a job planned before that swap is skipped without any work.
    let stale = compactor.run_job(&jobs[0]).await.unwrap();
    assert!(
        matches!(stale.outcome, JobOutcome::Skipped { .. }),
        "{stale:?}"
    );
}

#[tokio::test]
async fn test_should_recommit_under_a_new_epoch_after_a_failover_mid_job() {
    let mut fixture = Fixture::new().await;
    let hour = DAY + 7 * HOUR;
    flush_hour(&mut fixture, hour, 10).await;
    let jobs = plan(&fixture.catalog.snapshot(), hour + 2 * HOUR, &settings());
    let new_writer = Catalog::open(fixture.store.clone(), CatalogSettings::for_test())
        .await
        .unwrap();
    let hook_store = Arc::new(HookStore {
        inner: fixture.store.clone(),
        hook: Mutex::new(Some(Box::pin(async move {
            new_writer.promote("writer-2", 100).await.unwrap();
        }))),
    });
    let report = fixture
        .compactor(hook_store)
        .run_job(&jobs[0])
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, JobOutcome::Committed { epoch, .. } if epoch == fixture.epoch + 1),
        "{report:?}"
    );
    assert_eq!(report.fenced_commits, 1, "{report:?}");
    let state = fixture.catalog.snapshot();
    assert_eq!(state.epoch, fixture.epoch + 1);
    assert_eq!(fixture.live().len(), 1);
}

#[tokio::test]
async fn test_should_leave_the_catalog_unchanged_when_the_upload_fails() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let failing = Arc::new(FailingObjectStore::new(Arc::new(
        LocalFileSystem::new_with_prefix(&root).unwrap(),
    )));
    let mut fixture = Fixture::with_store(dir, failing.clone()).await;
    let hour = DAY + 7 * HOUR;
    flush_hour(&mut fixture, hour, 10).await;
    let jobs = plan(&fixture.catalog.snapshot(), hour + 2 * HOUR, &settings());
    let before = fixture.catalog.snapshot();
    failing.inject(FaultOp::Put, FaultTiming::Before, "db/cpu/", 1);
    let compactor = fixture.compactor(fixture.store.clone());
    let error = compactor.run_job(&jobs[0]).await.unwrap_err();
    assert!(matches!(error, CompactError::Upload { .. }), "{error}");
    assert!(error.to_string().contains("compacted-"), "{error}");
    fixture.catalog.refresh().await.unwrap();
    assert_eq!(*fixture.catalog.snapshot(), *before);
    // The same job runs once the store recovers; its scratch space was cleaned up.
    let report = compactor.run_job(&jobs[0]).await.unwrap();
    assert!(
        matches!(report.outcome, JobOutcome::Committed { .. }),
        "{report:?}"
    );
    assert_eq!(std::fs::read_dir(&fixture.scratch).unwrap().count(), 0);
}

#[tokio::test]
async fn test_should_remove_scratch_left_by_a_crashed_process() {
    let fixture = Fixture::new().await;
    let stale = fixture.scratch.join("arc-compact-job-crashed");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("input-0.parquet"), b"partial").unwrap();
    let unrelated = fixture.scratch.join("keep.txt");
    std::fs::write(&unrelated, b"not ours").unwrap();
    let _compactor = fixture.compactor(fixture.store.clone());
    assert!(!stale.exists());
    assert!(unrelated.exists());
}
