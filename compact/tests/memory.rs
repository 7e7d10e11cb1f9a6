//! The merge stays within its memory limit: a counting global allocator measures the peak heap
//! while merging inputs whose decoded size is many times the limit. Its own test binary, so
//! no other test allocates at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_compact::{MergeInput, MergeSettings, merge_files};
use arc_storage::model::{ColumnKind, ColumnSpec, FieldType, schema_of};
use arc_storage::paths::data_object_path;
use arc_storage::{FlushMeta, TableId, encode_table_objects};
use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// 2024-03-05T07:00:00Z
const HOUR: i64 = 1_709_622_000_000_000_000;
const INPUTS: usize = 8;
const ROWS_PER_INPUT: usize = 60_000;

fn spec(name: &str, kind: ColumnKind) -> ColumnSpec {
    ColumnSpec {
        name: name.to_string(),
        kind,
    }
}

/// One flush's worth of rows: interleaved times across inputs, a tag, three fields.
fn rows(input: usize) -> RecordBatch {
    let times: Vec<i64> = (0..ROWS_PER_INPUT)
        .map(|row| HOUR + (row * INPUTS + input) as i64 * 1000)
        .collect();
    let hosts: Vec<String> = (0..ROWS_PER_INPUT)
        .map(|row| format!("host-{:04}", row % 1000))
        .collect();
    let values: Vec<f64> = (0..ROWS_PER_INPUT).map(|row| row as f64 * 0.5).collect();
    let counts: Vec<i64> = (0..ROWS_PER_INPUT).map(|row| row as i64).collect();
    let notes: Vec<String> = (0..ROWS_PER_INPUT)
        .map(|row| format!("note number {row} of input {input}"))
        .collect();
    let columns: Vec<(ColumnSpec, ArrayRef)> = vec![
        (
            spec("time", ColumnKind::Time),
            Arc::new(TimestampNanosecondArray::from(times)),
        ),
        (
            spec("host", ColumnKind::Tag),
            Arc::new(StringArray::from(hosts)),
        ),
        (
            spec("value", ColumnKind::Field(FieldType::Float)),
            Arc::new(Float64Array::from(values)),
        ),
        (
            spec("count", ColumnKind::Field(FieldType::Integer)),
            Arc::new(Int64Array::from(counts)),
        ),
        (
            spec("note", ColumnKind::Field(FieldType::String)),
            Arc::new(StringArray::from(notes)),
        ),
    ];
    let specs: Vec<ColumnSpec> = columns.iter().map(|(spec, _)| spec.clone()).collect();
    RecordBatch::try_new(
        schema_of(&specs),
        columns.into_iter().map(|(_, array)| array).collect(),
    )
    .unwrap()
}

#[test]
fn test_should_merge_inputs_many_times_larger_than_the_memory_limit() {
    let dir = tempfile::TempDir::new().unwrap();
    let table = TableId::new("db", "cpu");
    let mut inputs = Vec::new();
    let mut decoded_bytes = 0;
    for input in 0..INPUTS {
        let batch = rows(input);
        decoded_bytes += batch.get_array_memory_size();
        let lsn = input as u64 + 1;
        let meta = FlushMeta {
            epoch: 1,
            lsn_first: lsn,
            lsn_last: lsn,
            node_id: "writer".into(),
        };
        let objects = encode_table_objects(&table, &[batch], &meta).unwrap();
        let file = dir.path().join(format!("input-{input}.parquet"));
        std::fs::write(&file, &objects[0].bytes).unwrap();
        inputs.push(MergeInput {
            object: data_object_path(&table, HOUR, 1, lsn, lsn).to_string(),
            file,
        });
    }
    let limit: usize = 8 << 20;
    let settings = MergeSettings {
        memory_limit_bytes: limit as u64,
        ..MergeSettings::default()
    };
    assert!(
        decoded_bytes > 4 * limit,
        "the data ({decoded_bytes} bytes) dwarfs the limit"
    );

    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let output = dir.path().join("out.parquet");
    let merged = merge_files(&table, &inputs, &output, "compactor-1", &settings).unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - baseline;

    assert_eq!(merged.rows_out, (INPUTS * ROWS_PER_INPUT) as u64);
    // The limit steers the fan-in, batch sizes and the writer's pages and row groups; ZSTD
    // contexts (one per output column) and the footers come on top. Measured: 13.9 MB.
    assert!(
        peak < 2 * limit,
        "peak heap {peak} bytes with a {limit}-byte limit over {decoded_bytes} bytes of data"
    );
    println!("peak heap {peak} bytes, limit {limit}, data {decoded_bytes}");
}
