//! Merge tests over files written by storage's own flush encoding (`encode_table_objects`).

use arc_storage::model::{FieldType, columns_of};
use arc_storage::paths::data_object_path;
use arc_storage::{FlushMeta, encode_table_objects};
use arrow::array::{Float64Array, Int64Array};
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use tempfile::TempDir;

use super::*;

// 2024-03-05T07:00:00Z
const HOUR: i64 = 1_709_622_000_000_000_000;

fn table() -> TableId {
    TableId::new("db", "cpu")
}

fn spec(name: &str, kind: ColumnKind) -> ColumnSpec {
    ColumnSpec {
        name: name.to_string(),
        kind,
    }
}

fn time(values: &[i64]) -> (ColumnSpec, ArrayRef) {
    let times: Vec<i64> = values.iter().map(|offset| HOUR + offset).collect();
    (
        spec("time", ColumnKind::Time),
        Arc::new(TimestampNanosecondArray::from(times)),
    )
}

fn tag(name: &str, values: &[Option<&str>]) -> (ColumnSpec, ArrayRef) {
    (
        spec(name, ColumnKind::Tag),
        Arc::new(StringArray::from(values.to_vec())),
    )
}

fn float(name: &str, values: &[f64]) -> (ColumnSpec, ArrayRef) {
    (
        spec(name, ColumnKind::Field(FieldType::Float)),
        Arc::new(Float64Array::from(values.to_vec())),
    )
}

fn integer(name: &str, values: &[i64]) -> (ColumnSpec, ArrayRef) {
    (
        spec(name, ColumnKind::Field(FieldType::Integer)),
        Arc::new(Int64Array::from(values.to_vec())),
    )
}

fn batch(columns: Vec<(ColumnSpec, ArrayRef)>) -> RecordBatch {
    let specs: Vec<ColumnSpec> = columns.iter().map(|(spec, _)| spec.clone()).collect();
    RecordBatch::try_new(
        schema_of(&specs),
        columns.into_iter().map(|(_, array)| array).collect(),
    )
    .unwrap()
}

/// Writes `rows` as one flush of (`epoch`, `lsn`) would, into a local file.
fn flush_file(dir: &TempDir, rows: RecordBatch, epoch: u64, lsn: u64) -> MergeInput {
    let meta = FlushMeta {
        epoch,
        lsn_first: lsn,
        lsn_last: lsn,
        node_id: "writer".into(),
    };
    let objects = encode_table_objects(&table(), &[rows], &meta).unwrap();
    assert_eq!(objects.len(), 1, "test data stays within one hour");
    let object = data_object_path(&table(), HOUR, epoch, lsn, lsn).to_string();
    let file = dir.path().join(format!("{epoch}-{lsn}.parquet"));
    std::fs::write(&file, &objects[0].bytes).unwrap();
    MergeInput { object, file }
}

/// Writes a Parquet file without any `arc.*` footer key (a foreign or legacy object).
fn plain_file(dir: &TempDir, name: &str, rows: &RecordBatch) -> MergeInput {
    let file = dir.path().join(name);
    let mut writer =
        ArrowWriter::try_new(File::create(&file).unwrap(), rows.schema(), None).unwrap();
    writer.write(rows).unwrap();
    writer.close().unwrap();
    MergeInput {
        object: format!("db/cpu/legacy/{name}"),
        file,
    }
}

fn read_all(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}

fn offsets(batch: &RecordBatch) -> Vec<i64> {
    time_values(batch).iter().map(|time| time - HOUR).collect()
}

fn floats(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    column::<Float64Array>(batch, name).iter().collect()
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    column::<StringArray>(batch, name)
        .iter()
        .map(|value| value.map(str::to_string))
        .collect()
}

fn merge(dir: &TempDir, inputs: &[MergeInput], settings: &MergeSettings) -> (MergeOutput, PathBuf) {
    let output = dir.path().join("out.parquet");
    let merged = merge_files(&table(), inputs, &output, "compactor-1", settings).unwrap();
    (merged, output)
}

#[test]
fn test_should_merge_sorted_inputs_into_the_union_of_columns() {
    let dir = TempDir::new().unwrap();
    let first = flush_file(
        &dir,
        batch(vec![
            time(&[0, 2, 4]),
            tag("host", &[Some("a"), Some("a"), Some("b")]),
            float("usage", &[1.0, 2.0, 3.0]),
        ]),
        1,
        1,
    );
    let second = flush_file(
        &dir,
        batch(vec![
            time(&[1, 3]),
            tag("region", &[Some("eu"), Some("us")]),
            integer("count", &[10, 20]),
        ]),
        2,
        7,
    );
    let (merged, output) = merge(&dir, &[second, first], &MergeSettings::default());
    assert_eq!((merged.rows_in, merged.rows_out), (5, 5));
    assert!(merged.deduplicated);
    assert_eq!(
        merged.time_range,
        Some(TimeRange {
            start_ns: HOUR,
            end_ns: HOUR + 4
        })
    );
    assert_eq!((merged.epoch, merged.lsn_first, merged.lsn_last), (2, 1, 7));
    let rows = read_all(&output);
    assert_eq!(
        columns_of(&rows.schema()),
        vec![
            spec("time", ColumnKind::Time),
            spec("host", ColumnKind::Tag),
            spec("region", ColumnKind::Tag),
            spec("count", ColumnKind::Field(FieldType::Integer)),
            spec("usage", ColumnKind::Field(FieldType::Float)),
        ]
    );
    assert_eq!(merged.columns, columns_of(&rows.schema()));
    assert_eq!(offsets(&rows), [0, 1, 2, 3, 4]);
    assert_eq!(
        floats(&rows, "usage"),
        [Some(1.0), None, Some(2.0), None, Some(3.0)]
    );
    let count: Vec<Option<i64>> = column::<Int64Array>(&rows, "count").iter().collect();
    assert_eq!(count, [None, Some(10), None, Some(20), None]);

    // The footer a flush writes, spanning the inputs.
    let footer = read_footer(&output);
    assert_eq!(footer[FOOTER_TABLE], "db.cpu");
    assert_eq!(footer[FOOTER_TAGS], r#"["host","region"]"#);
    assert_eq!(footer[FOOTER_EPOCH], "2");
    assert_eq!(footer[FOOTER_LSN_FIRST], "1");
    assert_eq!(footer[FOOTER_LSN_LAST], "7");
    assert_eq!(footer[FOOTER_NODE], "compactor-1");
    let reader = SerializedFileReader::new(File::open(&output).unwrap()).unwrap();
    let row_group = reader.metadata().row_group(0);
    assert!(matches!(
        row_group.column(0).compression(),
        Compression::ZSTD(_)
    ));
    assert!(row_group.column(0).statistics().is_some());
    assert_eq!(merged.bytes, std::fs::metadata(&output).unwrap().len());
}

#[test]
fn test_should_keep_the_last_write_of_duplicate_points() {
    let dir = TempDir::new().unwrap();
    // Write order: early (1, 3) < middle (1, 5) < late (1, 7) < next epoch (2, 1).
    let early = flush_file(
        &dir,
        batch(vec![
            time(&[20, 20]),
            tag("host", &[Some("a"), Some("a")]),
            float("v", &[7.0, 8.0]),
        ]),
        1,
        3,
    );
    let middle = flush_file(
        &dir,
        batch(vec![
            time(&[10, 10, 20, 30]),
            tag("host", &[Some("a"), Some("b"), Some("a"), None]),
            float("v", &[1.0, 2.0, 3.0, 4.0]),
        ]),
        1,
        5,
    );
    let late = flush_file(
        &dir,
        batch(vec![
            time(&[10, 30]),
            tag("host", &[Some("b"), Some("a")]),
            float("v", &[50.0, 60.0]),
        ]),
        1,
        7,
    );
    let next_epoch = flush_file(
        &dir,
        batch(vec![
            time(&[10, 20]),
            tag("host", &[Some("a"), Some("c")]),
            float("v", &[100.0, 300.0]),
        ]),
        2,
        1,
    );
    let inputs = [next_epoch, late, early, middle];
    let (merged, output) = merge(&dir, &inputs, &MergeSettings::default());
    assert_eq!((merged.rows_in, merged.rows_out), (10, 6));
    let rows = read_all(&output);
    assert_eq!(offsets(&rows), [10, 10, 20, 20, 30, 30]);
    // Equal times in write order; of each series the last write: epoch beats LSN, a later
    // LSN beats an earlier one, and a missing tag is a series of its own.
    assert_eq!(
        strings(&rows, "host"),
        [Some("b"), Some("a"), Some("a"), Some("c"), None, Some("a")]
            .map(|host| host.map(str::to_string))
    );
    assert_eq!(
        floats(&rows, "v"),
        [50.0, 100.0, 3.0, 300.0, 4.0, 60.0].map(Some)
    );
}

#[test]
fn test_should_resolve_duplicates_within_one_input() {
    let dir = TempDir::new().unwrap();
    let only = flush_file(
        &dir,
        batch(vec![time(&[5, 5, 5]), float("v", &[1.0, 2.0, 3.0])]),
        1,
        1,
    );
    let (merged, output) = merge(&dir, &[only], &MergeSettings::default());
    assert_eq!(merged.rows_out, 1);
    // No tags: every point of the measurement at one time is the same series.
    assert_eq!(floats(&read_all(&output), "v"), [Some(3.0)]);
}

#[test]
fn test_should_keep_every_row_when_footers_are_missing() {
    let dir = TempDir::new().unwrap();
    let rows = batch(vec![time(&[1, 1]), float("v", &[1.0, 2.0])]);
    let first = plain_file(&dir, "a.parquet", &rows);
    let second = plain_file(&dir, "b.parquet", &rows);
    let (merged, output) = merge(&dir, &[first, second], &MergeSettings::default());
    assert!(!merged.deduplicated);
    assert_eq!(merged.rows_out, 4);
    assert_eq!(
        floats(&read_all(&output), "v"),
        [1.0, 2.0, 1.0, 2.0].map(Some)
    );
}

#[test]
fn test_should_name_column_and_object_of_a_type_conflict() {
    let dir = TempDir::new().unwrap();
    let first = flush_file(&dir, batch(vec![time(&[1]), float("value", &[1.0])]), 1, 1);
    let second = flush_file(&dir, batch(vec![time(&[2]), integer("value", &[1])]), 1, 2);
    let second_key = second.object.clone();
    let output = dir.path().join("out.parquet");
    let error = merge_files(
        &table(),
        &[first, second],
        &output,
        "c",
        &MergeSettings::default(),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, CompactError::ColumnConflict { .. }),
        "{message}"
    );
    assert!(message.contains("column value"), "{message}");
    assert!(message.contains(&second_key), "{message}");
    assert!(
        message.contains("integer field") && message.contains("float field"),
        "{message}"
    );
}

#[test]
fn test_should_reject_unsorted_inputs_and_other_tables() {
    let dir = TempDir::new().unwrap();
    let unsorted = plain_file(
        &dir,
        "u.parquet",
        &batch(vec![time(&[3, 1]), float("v", &[1.0, 2.0])]),
    );
    let output = dir.path().join("out.parquet");
    let error = merge_files(
        &table(),
        &[unsorted],
        &output,
        "c",
        &MergeSettings::default(),
    )
    .unwrap_err();
    assert!(matches!(error, CompactError::BadInput { .. }), "{error}");
    assert!(
        error.to_string().contains("db/cpu/legacy/u.parquet"),
        "{error}"
    );

    let foreign = flush_file(&dir, batch(vec![time(&[1]), float("v", &[1.0])]), 1, 1);
    let error = merge_files(
        &TableId::new("db", "mem"),
        &[foreign],
        &output,
        "c",
        &MergeSettings::default(),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("belongs to table db.cpu"),
        "{error}"
    );
}

/// Inputs with overlapping times, shared timestamps and duplicates across inputs.
fn overlapping_inputs(dir: &TempDir, count: u64, rows_per_input: i64) -> Vec<MergeInput> {
    (0..count)
        .map(|index| {
            let times: Vec<i64> = (0..rows_per_input)
                .map(|row| row * 3 + (index as i64 % 3))
                .collect();
            let hosts: Vec<Option<String>> = (0..rows_per_input)
                .map(|row| Some(format!("h{}", (row + index as i64 / 4) % 4)))
                .collect();
            let host_refs: Vec<Option<&str>> = hosts.iter().map(|host| host.as_deref()).collect();
            let values: Vec<f64> = (0..rows_per_input)
                .map(|row| (index * 1000) as f64 + row as f64)
                .collect();
            flush_file(
                dir,
                batch(vec![
                    time(&times),
                    tag("host", &host_refs),
                    float("v", &values),
                ]),
                1,
                index + 1,
            )
        })
        .collect()
}

#[test]
fn test_should_give_the_same_output_in_several_passes() {
    let dir = TempDir::new().unwrap();
    let inputs = overlapping_inputs(&dir, 7, 300);
    let (single, single_output) = merge(&dir, &inputs, &MergeSettings::default());
    let single_rows = read_all(&single_output);
    let narrow = MergeSettings {
        fan_in: 2,
        max_batch_rows: 50,
        ..MergeSettings::default()
    };
    let output = dir.path().join("narrow.parquet");
    let passes = merge_files(&table(), &inputs, &output, "compactor-1", &narrow).unwrap();
    assert_eq!(passes.rows_out, single.rows_out);
    assert!(single.rows_out < single.rows_in, "the data has duplicates");
    assert_eq!(read_all(&output), single_rows);
    // Intermediate files are gone: only the inputs and the two outputs remain.
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, inputs.len() + 2);
}

#[test]
fn test_should_resolve_a_run_of_equal_times_longer_than_a_batch() {
    let dir = TempDir::new().unwrap();
    let hosts: Vec<String> = (0..1000).map(|row| format!("h{}", row % 10)).collect();
    let mut times = vec![0];
    times.extend(std::iter::repeat_n(50, 1000));
    times.push(90);
    let mut host_refs: Vec<Option<&str>> = vec![Some("x")];
    host_refs.extend(hosts.iter().map(|host| Some(host.as_str())));
    host_refs.push(Some("x"));
    let values: Vec<f64> = (0..1002).map(f64::from).collect();
    let older = flush_file(
        &dir,
        batch(vec![
            time(&times),
            tag("host", &host_refs),
            float("v", &values),
        ]),
        1,
        1,
    );
    let newer_hosts: Vec<String> = (0..300).map(|row| format!("h{}", row % 5)).collect();
    let newer_refs: Vec<Option<&str>> =
        newer_hosts.iter().map(|host| Some(host.as_str())).collect();
    let newer_values: Vec<f64> = (0..300).map(|row| -f64::from(row)).collect();
    let newer = flush_file(
        &dir,
        batch(vec![
            time(&vec![50; 300]),
            tag("host", &newer_refs),
            float("v", &newer_values),
        ]),
        1,
        2,
    );
    let small = MergeSettings {
        max_batch_rows: 64,
        ..MergeSettings::default()
    };
    let (merged, output) = merge(&dir, &[older, newer], &small);
    assert_eq!(merged.rows_out, 12);
    let rows = read_all(&output);
    assert_eq!(offsets(&rows)[0], 0);
    assert_eq!(offsets(&rows)[11], 90);
    // h5..h9 keep the older input's last writes (rows 996..1000), h0..h4 the newer input's.
    let values = floats(&rows, "v");
    assert_eq!(
        &values[1..6],
        [996.0, 997.0, 998.0, 999.0, 1000.0].map(Some)
    );
    assert_eq!(
        &values[6..11],
        [-295.0, -296.0, -297.0, -298.0, -299.0].map(Some)
    );
}

#[test]
fn test_should_bound_row_groups_and_batches() {
    let dir = TempDir::new().unwrap();
    let inputs = overlapping_inputs(&dir, 4, 12_000);
    let settings = MergeSettings {
        memory_limit_bytes: 1 << 20,
        row_group_rows: 5_000,
        ..MergeSettings::default()
    };
    let (merged, output) = merge(&dir, &inputs, &settings);
    let reader = SerializedFileReader::new(File::open(&output).unwrap()).unwrap();
    let metadata = reader.metadata();
    assert!(metadata.num_row_groups() > 1);
    for row_group in metadata.row_groups() {
        assert!(row_group.num_rows() <= 5_000);
    }
    let rows = read_all(&output);
    assert_eq!(rows.num_rows() as u64, merged.rows_out);
    assert!(time_values(&rows).is_sorted());
    // 1 MiB over 4 inputs of ~40-byte rows: batches well below the 8192 maximum.
    let widest = inputs.len() as u64 * 40;
    assert!(batch_rows(&settings, inputs.len(), widest / 4) < 8192);
    assert_eq!(batch_rows(&settings, 10_000, 1 << 20), MIN_BATCH_ROWS);
}

#[test]
fn test_should_reject_unusable_settings() {
    let bad = MergeSettings {
        fan_in: 1,
        ..MergeSettings::default()
    };
    assert!(matches!(bad.validate(), Err(CompactError::Invalid(_))));
}
