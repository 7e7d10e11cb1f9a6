//! The executor's core: a streaming k-way merge of time-sorted Parquet files into one.
//!
//! [`merge_files`] is blocking and CPU-bound (Parquet decoding, ZSTD): run it on
//! `spawn_blocking` or a dedicated thread, never on the async runtime.
//!
//! # Bounded memory
//!
//! Inputs are read batch by batch, never whole. [`MergeSettings::memory_limit_bytes`] is split:
//! - half for the open inputs' decoders, each of which holds about one decompressed page per
//!   column (up to 1 MiB each in a flush's files, estimated from the footer). This sets how
//!   many inputs are open at once (at least 2, at most [`MergeSettings::fan_in`]); a job with
//!   more inputs is merged in passes, each group of consecutive inputs (in write order) into a
//!   local intermediate file first;
//! - a quarter for decoded batches: one per open input, sized from the widest input row (a
//!   run of equal timestamps longer than a batch is held until it ends, because
//!   deduplication must see all of it);
//! - a quarter for the writer: its row group is flushed early when its buffered size reaches
//!   that, and its pages are sized to fit.
//!
//! The limit is a target, not a cap: two open inputs with wide pages need what they need, so
//! the limit should allow at least two inputs' pages (2 × columns × 1 MiB), and the writer's
//! ZSTD contexts (about 1 MiB per output column) come on top. Measured (tests/memory.rs):
//! 40 MB of decoded rows in 8 inputs merge with an 8 MiB limit at a 14 MB peak heap.
//!
//! # Output
//!
//! Sorted by `time` (rows with equal times in write order), ZSTD, page statistics, row groups
//! of at most [`MergeSettings::row_group_rows`] rows, the columns of every input (time, tags
//! sorted, fields sorted; a column an input lacks is null in its rows), and the footer keys a
//! flush writes: the table, the tag names, the newest epoch of the inputs, the LSN range
//! spanning them, and the compacting node.
//!
//! # Duplicate points
//!
//! InfluxDB and Arc treat a point with the same measurement, tag set and timestamp as a
//! replacement of the earlier one. When every input's footer names its tags (`arc.tags`) and
//! its write position (`arc.epoch`, `arc.lsn_first`, `arc.lsn_last`), the merge keeps, of each
//! such group, the row written last: inputs are ranked by (epoch, lsn_last, lsn_first, key),
//! and within one input a later row is a later write (a flush stable-sorts by time, keeping
//! arrival order). A tag missing from a row counts as "no such tag", so `host=a` and
//! `host=a,dc=x` are different series. Without those footers the merge keeps every row and
//! says so in [`MergeOutput::deduplicated`]. Before compaction, a query sees every duplicate
//! (one row per write); after it, only the last write.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_storage::model::{ColumnKind, ColumnSpec, TIME_COLUMN, schema_of};
use arc_storage::parquet::{
    FOOTER_EPOCH, FOOTER_LSN_FIRST, FOOTER_LSN_LAST, FOOTER_NODE, FOOTER_TABLE, FOOTER_TAGS,
    writer_properties,
};
use arc_storage::{TableId, TimeRange};
use arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array,
    new_null_array,
};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::{KeyValue, ParquetMetaData};

use crate::error::CompactError;

/// ZSTD level of the final output: the flush's level (zstd's default), most of the ratio of
/// higher levels at a fraction of their CPU.
const OUTPUT_ZSTD_LEVEL: i32 = 3;
/// ZSTD level of intermediate files of a multi-pass merge: read once, then deleted.
const INTERMEDIATE_ZSTD_LEVEL: i32 = 1;
/// The smallest batch worth decoding, whatever the memory limit says.
const MIN_BATCH_ROWS: usize = 64;
/// A row is assumed at least this wide when sizing batches (an input's footer may say less).
const MIN_ROW_BYTES: u64 = 16;
/// The largest page a reader is assumed to decode at once: the Parquet writer's default page
/// size limit, which flushes use. An open input holds about one such page per column.
const DECODED_PAGE_BYTES: u64 = 1 << 20;
/// Bounds of the output's page size (the writer holds one page per column before compressing).
const MIN_OUTPUT_PAGE_BYTES: usize = 64 << 10;
const MAX_OUTPUT_PAGE_BYTES: usize = 1 << 20;

/// Tuning of one merge (`[compaction]` keys; see each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSettings {
    /// Memory one merge aims to stay within, in bytes (`compaction.memory_limit`, default
    /// 256 MiB): decoded input batches get half, the output row group a quarter. Lower:
    /// smaller batches, more per-batch overhead.
    pub memory_limit_bytes: u64,
    /// Largest batch decoded from one input, in rows (default 8192).
    pub max_batch_rows: usize,
    /// Most inputs open at once (`compaction.merge_fan_in`, default 64); more inputs are
    /// merged in passes through local intermediate files.
    pub fan_in: usize,
    /// Most rows per output row group (default 122 880, DuckDB's own row group size, so a
    /// query parallelizes over row groups as it would over its native storage).
    pub row_group_rows: usize,
}

impl Default for MergeSettings {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 256 << 20,
            max_batch_rows: 8192,
            fan_in: 64,
            row_group_rows: 122_880,
        }
    }
}

impl MergeSettings {
    /// Checks that the limits can be met.
    ///
    /// # Errors
    ///
    /// [`CompactError::Invalid`] naming the setting that is too small.
    pub fn validate(&self) -> Result<(), CompactError> {
        if self.memory_limit_bytes < (1 << 20) {
            return Err(CompactError::Invalid(
                "compaction.memory_limit must be at least 1 MiB".into(),
            ));
        }
        if self.fan_in < 2 {
            return Err(CompactError::Invalid(
                "compaction.merge_fan_in must be at least 2".into(),
            ));
        }
        if self.max_batch_rows == 0 || self.row_group_rows == 0 {
            return Err(CompactError::Invalid(
                "max_batch_rows and row_group_rows must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One input of a merge: a local Parquet file and the object key it was downloaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeInput {
    /// The object key (for error messages, and the write position if the footer lacks it).
    pub object: String,
    /// The local file.
    pub file: PathBuf,
}

/// What a merge wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOutput {
    /// Rows read from the inputs.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Size of the output file in bytes.
    pub bytes: u64,
    /// Smallest and largest `time` written (`None`: no rows).
    pub time_range: Option<TimeRange>,
    /// The output's columns in file order.
    pub columns: Vec<ColumnSpec>,
    /// Whether duplicate points were resolved (every input's footer names its tags and write
    /// position); if not, every row was kept.
    pub deduplicated: bool,
    /// The newest epoch of the inputs (footer `arc.epoch`).
    pub epoch: u64,
    /// The smallest `lsn_first` of the inputs.
    pub lsn_first: u64,
    /// The largest `lsn_last` of the inputs.
    pub lsn_last: u64,
}

/// What an input's footer and schema say, read before merging.
#[derive(Debug)]
struct Inspected {
    input: MergeInput,
    columns: Vec<ColumnSpec>,
    /// `arc.tags`, if present and readable.
    tags: Option<Vec<String>>,
    /// (epoch, lsn_first, lsn_last) from the footer, else from the key of a flush object.
    position: Option<(u64, u64, u64)>,
    rows: u64,
    /// Uncompressed size of the data, for sizing batches.
    uncompressed_bytes: u64,
    /// Estimated memory its decoder holds while open: about one page per column.
    decoder_bytes: u64,
}

/// Merges the time-sorted Parquet `inputs` of `table` into one file at `output`, written by
/// `node_id`. Intermediate files of a multi-pass merge go next to `output` and are removed.
/// Blocking: see the module docs for memory, ordering and duplicate handling.
///
/// # Errors
///
/// [`CompactError::ReadInput`] or [`CompactError::BadInput`] naming the input that cannot be
/// read, lacks `time`, has null times, is not sorted or belongs to another table;
/// [`CompactError::ColumnConflict`] naming the column and input whose kind or type disagrees;
/// [`CompactError::WriteOutput`], [`CompactError::Arrow`] or [`CompactError::Io`] if writing
/// fails; [`CompactError::Invalid`] for unusable settings.
pub fn merge_files(
    table: &TableId,
    inputs: &[MergeInput],
    output: &Path,
    node_id: &str,
    settings: &MergeSettings,
) -> Result<MergeOutput, CompactError> {
    settings.validate()?;
    let mut inspected = inputs
        .iter()
        .map(|input| inspect(table, input))
        .collect::<Result<Vec<_>, _>>()?;
    let columns = union_columns(table, &inspected)?;
    let deduplicated = inspected
        .iter()
        .all(|input| input.tags.is_some() && input.position.is_some());
    // Write order: the rank of an input among the merge's inputs (module docs).
    inspected.sort_by(|a, b| {
        let key = |input: &Inspected| {
            let (epoch, lsn_first, lsn_last) = input.position.unwrap_or_default();
            (epoch, lsn_last, lsn_first)
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| a.input.object.cmp(&b.input.object))
    });
    let positions: Vec<(u64, u64, u64)> = inspected.iter().filter_map(|i| i.position).collect();
    let footer = Footer {
        table: table.to_string(),
        tags: columns
            .iter()
            .filter(|column| column.kind == ColumnKind::Tag)
            .map(|column| column.name.clone())
            .collect(),
        epoch: positions.iter().map(|p| p.0).max().unwrap_or(0),
        lsn_first: positions.iter().map(|p| p.1).min().unwrap_or(0),
        lsn_last: positions.iter().map(|p| p.2).max().unwrap_or(0),
        node_id: node_id.to_string(),
    };
    let widest_row = inspected
        .iter()
        .map(|input| input.uncompressed_bytes / input.rows.max(1))
        .max()
        .unwrap_or(0)
        .max(MIN_ROW_BYTES);
    let widest_decoder = inspected
        .iter()
        .map(|input| input.decoder_bytes)
        .max()
        .unwrap_or(0);
    let rows_in = inspected.iter().map(|input| input.rows).sum();
    let fan_in = fan_in(settings, widest_decoder);
    let plan = MergePlan {
        table,
        columns: &columns,
        schema: schema_of(&columns),
        deduplicated,
        footer: &footer,
        settings,
        fan_in,
        batch_rows: batch_rows(settings, inspected.len().min(fan_in), widest_row),
    };
    let runs: Vec<MergeInput> = inspected.into_iter().map(|input| input.input).collect();
    let written = plan.merge_in_passes(runs, output)?;
    Ok(MergeOutput {
        rows_in,
        rows_out: written.rows,
        bytes: written.bytes,
        time_range: written.time_range,
        columns,
        deduplicated,
        epoch: footer.epoch,
        lsn_first: footer.lsn_first,
        lsn_last: footer.lsn_last,
    })
}

/// Inputs open at once: as many decoders as half the memory limit holds, at least 2.
fn fan_in(settings: &MergeSettings, decoder_bytes: u64) -> usize {
    let fitting = (settings.memory_limit_bytes / 2) / decoder_bytes.max(1);
    usize::try_from(fitting)
        .unwrap_or(usize::MAX)
        .clamp(2, settings.fan_in.max(2))
}

/// Rows per decoded batch: a quarter of the memory limit over the open inputs, each row held
/// up to three times (pending, concatenated with the other inputs' rows, reordered).
fn batch_rows(settings: &MergeSettings, open_inputs: usize, widest_row: u64) -> usize {
    let open = open_inputs.max(1) as u64;
    let per_input = settings.memory_limit_bytes / 4 / open / 3;
    let rows = usize::try_from(per_input / widest_row).unwrap_or(usize::MAX);
    rows.clamp(MIN_BATCH_ROWS, settings.max_batch_rows.max(MIN_BATCH_ROWS))
}

fn open_reader(input: &MergeInput) -> Result<ParquetRecordBatchReaderBuilder<File>, CompactError> {
    let file = File::open(&input.file).map_err(|source| CompactError::io(&input.file, source))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| CompactError::ReadInput {
        object: input.object.clone(),
        source,
    })
}

fn footer_value<'a>(metadata: &'a ParquetMetaData, key: &str) -> Option<&'a str> {
    metadata
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|pair| pair.key == key)?
        .value
        .as_deref()
}

/// Reads an input's footer and schema.
fn inspect(table: &TableId, input: &MergeInput) -> Result<Inspected, CompactError> {
    let builder = open_reader(input)?;
    let metadata = builder.metadata();
    if let Some(footer_table) = footer_value(metadata, FOOTER_TABLE)
        && footer_table != table.to_string()
    {
        return Err(CompactError::bad_input(
            &input.object,
            format!("it belongs to table {footer_table}, not {table}"),
        ));
    }
    let tags: Option<Vec<String>> =
        footer_value(metadata, FOOTER_TAGS).and_then(|json| serde_json::from_str(json).ok());
    let number = |key: &str| footer_value(metadata, key).and_then(|value| value.parse().ok());
    let footer_position = match (
        number(FOOTER_EPOCH),
        number(FOOTER_LSN_FIRST),
        number(FOOTER_LSN_LAST),
    ) {
        (Some(epoch), Some(first), Some(last)) => Some((epoch, first, last)),
        _ => None,
    };
    let position = footer_position.or_else(|| {
        object_store::path::Path::parse(&input.object)
            .ok()
            .and_then(|key| arc_storage::paths::parse_data_object_path(&key))
            .map(|key| (key.epoch, key.lsn_first, key.lsn_last))
    });

    let mut columns = Vec::new();
    for field in builder.schema().fields() {
        let name = field.name();
        let listed_as_tag = tags.as_ref().is_some_and(|tags| tags.contains(name));
        let kind = if listed_as_tag {
            Some(ColumnKind::Tag)
        } else {
            ColumnKind::of_field(field)
        };
        let conflict = |reason: String| CompactError::ColumnConflict {
            table: table.to_string(),
            column: name.clone(),
            object: input.object.clone(),
            reason,
        };
        let Some(kind) = kind else {
            return Err(conflict(format!("unsupported type {}", field.data_type())));
        };
        if field.data_type() != &kind.data_type() {
            return Err(conflict(format!(
                "a {} column of type {}",
                kind_name(kind),
                field.data_type()
            )));
        }
        if (kind == ColumnKind::Time) != (name == TIME_COLUMN) {
            return Err(conflict(format!(
                "a {} column; only {TIME_COLUMN} may be the time column",
                kind_name(kind)
            )));
        }
        columns.push(ColumnSpec {
            name: name.clone(),
            kind,
        });
    }
    if !columns.iter().any(|column| column.kind == ColumnKind::Time) {
        return Err(CompactError::bad_input(
            &input.object,
            format!("it has no {TIME_COLUMN} column"),
        ));
    }
    let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
    let uncompressed_bytes = metadata
        .row_groups()
        .iter()
        .map(|row_group| u64::try_from(row_group.total_byte_size()).unwrap_or(0))
        .sum();
    let decoder_bytes = metadata
        .row_groups()
        .iter()
        .map(|row_group| {
            row_group
                .columns()
                .iter()
                .map(|chunk| {
                    let size = u64::try_from(chunk.uncompressed_size()).unwrap_or(0);
                    size.min(DECODED_PAGE_BYTES)
                })
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    Ok(Inspected {
        input: input.clone(),
        columns,
        tags,
        position,
        rows,
        uncompressed_bytes,
        decoder_bytes,
    })
}

fn kind_name(kind: ColumnKind) -> String {
    match kind {
        ColumnKind::Time => "time".to_string(),
        ColumnKind::Tag => "tag".to_string(),
        ColumnKind::Field(field_type) => format!("{field_type} field"),
    }
}

/// The union of the inputs' columns, ordered as a flush orders them: time, tags by name,
/// fields by name.
fn union_columns(table: &TableId, inputs: &[Inspected]) -> Result<Vec<ColumnSpec>, CompactError> {
    let mut kinds: BTreeMap<&str, (ColumnKind, &str)> = BTreeMap::new();
    for input in inputs {
        for column in &input.columns {
            match kinds.get(column.name.as_str()) {
                Some((seen, first_object)) if *seen != column.kind => {
                    return Err(CompactError::ColumnConflict {
                        table: table.to_string(),
                        column: column.name.clone(),
                        object: input.input.object.clone(),
                        reason: format!(
                            "a {} column here, a {} column in {first_object}",
                            kind_name(column.kind),
                            kind_name(*seen)
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    kinds.insert(&column.name, (column.kind, &input.input.object));
                }
            }
        }
    }
    let mut columns = vec![ColumnSpec {
        name: TIME_COLUMN.to_string(),
        kind: ColumnKind::Time,
    }];
    for wanted_tags in [true, false] {
        for (name, (kind, _)) in &kinds {
            if *kind != ColumnKind::Time && (*kind == ColumnKind::Tag) == wanted_tags {
                columns.push(ColumnSpec {
                    name: name.to_string(),
                    kind: *kind,
                });
            }
        }
    }
    Ok(columns)
}

/// The footer keys of the output (and of intermediate files).
#[derive(Debug)]
struct Footer {
    table: String,
    tags: Vec<String>,
    epoch: u64,
    lsn_first: u64,
    lsn_last: u64,
    node_id: String,
}

impl Footer {
    fn key_values(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new(FOOTER_TABLE.to_string(), self.table.clone()),
            KeyValue::new(
                FOOTER_TAGS.to_string(),
                serde_json::to_string(&self.tags).expect("a list of strings serializes"),
            ),
            KeyValue::new(FOOTER_EPOCH.to_string(), self.epoch.to_string()),
            KeyValue::new(FOOTER_LSN_FIRST.to_string(), self.lsn_first.to_string()),
            KeyValue::new(FOOTER_LSN_LAST.to_string(), self.lsn_last.to_string()),
            KeyValue::new(FOOTER_NODE.to_string(), self.node_id.clone()),
        ]
    }
}

/// What one pass wrote.
struct Written {
    rows: u64,
    bytes: u64,
    time_range: Option<TimeRange>,
}

/// Everything a merge pass needs besides its inputs.
struct MergePlan<'a> {
    table: &'a TableId,
    columns: &'a [ColumnSpec],
    schema: SchemaRef,
    deduplicated: bool,
    footer: &'a Footer,
    settings: &'a MergeSettings,
    /// Inputs open at once (from the memory limit, at most `settings.fan_in`).
    fan_in: usize,
    batch_rows: usize,
}

impl MergePlan<'_> {
    /// Merges `runs` (in write order) into `output`, in several passes if there are more
    /// than the fan-in.
    fn merge_in_passes(
        &self,
        mut runs: Vec<MergeInput>,
        output: &Path,
    ) -> Result<Written, CompactError> {
        let mut pass = 0;
        let mut intermediates: Vec<PathBuf> = Vec::new();
        while runs.len() > self.fan_in {
            pass += 1;
            let mut next = Vec::new();
            // Consecutive groups keep write order: group i holds only writes older than group
            // i + 1's, so ranking the intermediates by group index stays correct.
            for (group_index, group) in runs.chunks(self.fan_in).enumerate() {
                let file = intermediate_path(output, pass, group_index);
                self.merge_pass(group, &file, INTERMEDIATE_ZSTD_LEVEL)?;
                intermediates.push(file.clone());
                next.push(MergeInput {
                    object: format!("{} (merge pass {pass})", file.display()),
                    file,
                });
            }
            // Files of the pass before are consumed now.
            for run in &runs {
                if intermediates.contains(&run.file) {
                    remove_file(&run.file)?;
                }
            }
            runs = next;
        }
        let written = self.merge_pass(&runs, output, OUTPUT_ZSTD_LEVEL);
        for run in &runs {
            if intermediates.contains(&run.file) {
                remove_file(&run.file)?;
            }
        }
        written
    }

    /// One k-way merge of `runs` (in write order, at most the fan-in) into `output`.
    fn merge_pass(
        &self,
        runs: &[MergeInput],
        output: &Path,
        zstd_level: i32,
    ) -> Result<Written, CompactError> {
        let mut cursors = runs
            .iter()
            .map(|run| Cursor::open(self, run))
            .collect::<Result<Vec<_>, _>>()?;
        let mut writer = OutputWriter::create(self, output, zstd_level)?;
        loop {
            for cursor in &mut cursors {
                while cursor.pending_rows() == 0 && !cursor.exhausted {
                    cursor.read_more(self)?;
                }
            }
            if cursors.iter().all(|cursor| cursor.pending_rows() == 0) {
                break;
            }
            // Every open input's future rows are at or after its last pending time, so rows
            // strictly before the smallest of those are final. With every input exhausted,
            // everything pending is.
            let horizon = cursors
                .iter()
                .filter(|cursor| !cursor.exhausted)
                .filter_map(Cursor::last_pending_time)
                .min();
            let pieces: Vec<RecordBatch> = cursors
                .iter_mut()
                .filter_map(|cursor| cursor.take_before(horizon))
                .collect();
            if pieces.is_empty() {
                // The inputs holding the horizon hold nothing else yet: read on until their
                // run of that timestamp ends, so its duplicates can be resolved together.
                for cursor in &mut cursors {
                    if !cursor.exhausted && cursor.last_pending_time() == horizon {
                        cursor.read_more(self)?;
                    }
                }
                continue;
            }
            let merged = self.merge_pieces(pieces)?;
            writer.write(self, &merged)?;
        }
        writer.finish(self)
    }

    /// Merges final pieces (one per input, in write order, each sorted by time) into one
    /// sorted batch, dropping overwritten duplicates.
    fn merge_pieces(&self, pieces: Vec<RecordBatch>) -> Result<RecordBatch, CompactError> {
        let arrow_error = |source| CompactError::Arrow {
            table: self.table.to_string(),
            source,
        };
        let batch = if pieces.len() == 1 {
            pieces.into_iter().next().expect("one piece")
        } else {
            concat_batches(&self.schema, &pieces).map_err(arrow_error)?
        };
        let times = time_values(&batch);
        // Pieces are concatenated in write order, so a stable sort by time orders equal times
        // by write (the sort also finds the sorted runs and merges them in O(n log k)).
        let mut order: Vec<usize> = (0..batch.num_rows()).collect();
        order.sort_by_key(|index| times[*index]);
        if self.deduplicated {
            order = self.drop_overwritten(&batch, times, order);
        }
        let unchanged = order.len() == batch.num_rows()
            && order
                .iter()
                .enumerate()
                .all(|(position, index)| position == *index);
        if unchanged {
            return Ok(batch);
        }
        let indices = UInt64Array::from_iter_values(order.into_iter().map(|index| index as u64));
        take_record_batch(&batch, &indices).map_err(arrow_error)
    }

    /// Keeps, of every group of rows with the same time and tag values, the last in `order`.
    fn drop_overwritten(
        &self,
        batch: &RecordBatch,
        times: &[i64],
        order: Vec<usize>,
    ) -> Vec<usize> {
        let tag_columns: Vec<&StringArray> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, column)| column.kind == ColumnKind::Tag)
            .map(|(index, _)| {
                batch
                    .column(index)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("union_columns gives tags the Utf8 type")
            })
            .collect();
        let series_of = |row: usize| -> Vec<Option<&str>> {
            tag_columns
                .iter()
                .map(|column| column.is_valid(row).then(|| column.value(row)))
                .collect()
        };
        let mut kept = Vec::with_capacity(order.len());
        let mut start = 0;
        while start < order.len() {
            let time = times[order[start]];
            let end = start
                + order[start..]
                    .iter()
                    .take_while(|index| times[**index] == time)
                    .count();
            if end - start == 1 {
                kept.push(order[start]);
            } else {
                // Walk the run backwards: the first row seen of a series is its last write.
                let mut seen = HashSet::new();
                let mut run_kept: Vec<usize> = order[start..end]
                    .iter()
                    .rev()
                    .copied()
                    .filter(|row| seen.insert(series_of(*row)))
                    .collect();
                run_kept.reverse();
                kept.extend(run_kept);
            }
            start = end;
        }
        kept
    }
}

fn intermediate_path(output: &Path, pass: usize, group: usize) -> PathBuf {
    let name = output
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "merge".to_string());
    output.with_file_name(format!("{name}.pass{pass}-{group}"))
}

fn remove_file(path: &Path) -> Result<(), CompactError> {
    std::fs::remove_file(path).map_err(|source| CompactError::io(path, source))
}

/// Returns the `time` values of a batch in the merge's column order (time first).
fn time_values(batch: &RecordBatch) -> &[i64] {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .expect("the merge schema puts a nanosecond time column first")
        .values()
}

/// One input being read: its reader and the rows read but not yet merged.
struct Cursor {
    object: String,
    reader: ParquetRecordBatchReader,
    /// For each merge column, its index in this input's batches (`None`: null here).
    mapping: Vec<Option<usize>>,
    /// Rows read, aligned to the merge schema and not yet merged; sorted by time.
    pending: Option<RecordBatch>,
    /// Whether the reader has no more batches.
    exhausted: bool,
    /// The last time read so far, to check the order across batches.
    last_time: Option<i64>,
}

impl Cursor {
    fn open(plan: &MergePlan<'_>, run: &MergeInput) -> Result<Cursor, CompactError> {
        let builder = open_reader(run)?.with_batch_size(plan.batch_rows);
        let file_schema = Arc::clone(builder.schema());
        let mut mapping = Vec::with_capacity(plan.columns.len());
        for column in plan.columns {
            let index = file_schema.index_of(&column.name).ok();
            if let Some(index) = index {
                let data_type = file_schema.field(index).data_type();
                if data_type != &column.kind.data_type() {
                    return Err(CompactError::ColumnConflict {
                        table: plan.table.to_string(),
                        column: column.name.clone(),
                        object: run.object.clone(),
                        reason: format!("type {data_type}, expected {}", column.kind.data_type()),
                    });
                }
            }
            mapping.push(index);
        }
        let reader = builder.build().map_err(|source| CompactError::ReadInput {
            object: run.object.clone(),
            source,
        })?;
        Ok(Cursor {
            object: run.object.clone(),
            reader,
            mapping,
            pending: None,
            exhausted: false,
            last_time: None,
        })
    }

    fn pending_rows(&self) -> usize {
        self.pending.as_ref().map_or(0, RecordBatch::num_rows)
    }

    fn last_pending_time(&self) -> Option<i64> {
        self.pending
            .as_ref()
            .and_then(|batch| time_values(batch).last().copied())
    }

    /// Reads the next batch, checks it and appends it to the pending rows.
    fn read_more(&mut self, plan: &MergePlan<'_>) -> Result<(), CompactError> {
        let batch = match self.reader.next() {
            None => {
                self.exhausted = true;
                return Ok(());
            }
            Some(Err(source)) => {
                return Err(CompactError::ReadInput {
                    object: self.object.clone(),
                    source: source.into(),
                });
            }
            Some(Ok(batch)) => batch,
        };
        let rows = batch.num_rows();
        let time_index = self.mapping[0].expect("inspect checked the time column");
        if batch.column(time_index).null_count() > 0 {
            return Err(CompactError::bad_input(
                &self.object,
                format!("the {TIME_COLUMN} column has null values"),
            ));
        }
        let arrays: Vec<ArrayRef> = plan
            .columns
            .iter()
            .zip(&self.mapping)
            .map(|(column, index)| match index {
                Some(index) => Arc::clone(batch.column(*index)),
                None => new_null_array(&column.kind.data_type(), rows),
            })
            .collect();
        let arrow_error = |source| CompactError::Arrow {
            table: plan.table.to_string(),
            source,
        };
        let aligned =
            RecordBatch::try_new(Arc::clone(&plan.schema), arrays).map_err(arrow_error)?;
        let times = time_values(&aligned);
        let in_order = times.is_sorted()
            && match (self.last_time, times.first()) {
                (Some(last), Some(first)) => last <= *first,
                _ => true,
            };
        if !in_order {
            return Err(CompactError::bad_input(
                &self.object,
                format!("rows are not sorted by {TIME_COLUMN}"),
            ));
        }
        if let Some(last) = times.last() {
            self.last_time = Some(*last);
        }
        self.pending = match self.pending.take() {
            Some(pending) if pending.num_rows() > 0 => {
                Some(concat_batches(&plan.schema, [&pending, &aligned]).map_err(arrow_error)?)
            }
            _ => Some(aligned),
        };
        Ok(())
    }

    /// Takes the pending rows before `horizon` (all of them for `None`).
    fn take_before(&mut self, horizon: Option<i64>) -> Option<RecordBatch> {
        let pending = self.pending.as_ref()?;
        let count = match horizon {
            None => pending.num_rows(),
            Some(horizon) => time_values(pending).partition_point(|time| *time < horizon),
        };
        if count == 0 {
            return None;
        }
        let taken = pending.slice(0, count);
        let rest = pending.slice(count, pending.num_rows() - count);
        self.pending = Some(rest);
        Some(taken)
    }
}

/// The Parquet writer of one pass and what it has written.
struct OutputWriter {
    path: PathBuf,
    writer: ArrowWriter<File>,
    /// Flush a row group early once its buffered size reaches this.
    flush_bytes: usize,
    rows: u64,
    first_time: Option<i64>,
    last_time: Option<i64>,
}

impl OutputWriter {
    fn create(plan: &MergePlan<'_>, path: &Path, zstd_level: i32) -> Result<Self, CompactError> {
        let file = File::create(path).map_err(|source| CompactError::io(path, source))?;
        let flush_bytes =
            usize::try_from(plan.settings.memory_limit_bytes / 4).unwrap_or(usize::MAX);
        // The writer buffers one page per column (and a dictionary) before compressing it: let
        // those fit in half of its quarter.
        let page_bytes = (flush_bytes / 2 / plan.columns.len().max(1))
            .clamp(MIN_OUTPUT_PAGE_BYTES, MAX_OUTPUT_PAGE_BYTES);
        // The flush's properties (ZSTD, page statistics, sorted by time, the footer), sized
        // for the memory limit.
        let properties = writer_properties(zstd_level, plan.footer.key_values())
            .set_max_row_group_row_count(Some(plan.settings.row_group_rows))
            .set_data_page_size_limit(page_bytes)
            .set_dictionary_page_size_limit(page_bytes)
            .build();
        let writer = ArrowWriter::try_new(file, Arc::clone(&plan.schema), Some(properties))
            .map_err(|source| CompactError::WriteOutput {
                table: plan.table.to_string(),
                source,
            })?;
        Ok(OutputWriter {
            path: path.to_path_buf(),
            writer,
            flush_bytes,
            rows: 0,
            first_time: None,
            last_time: None,
        })
    }

    fn write(&mut self, plan: &MergePlan<'_>, batch: &RecordBatch) -> Result<(), CompactError> {
        let write_error = |source| CompactError::WriteOutput {
            table: plan.table.to_string(),
            source,
        };
        let times = time_values(batch);
        if let (Some(first), Some(last)) = (times.first(), times.last()) {
            self.first_time.get_or_insert(*first);
            self.last_time = Some(*last);
        }
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch).map_err(write_error)?;
        if self.writer.in_progress_size() >= self.flush_bytes / 2 {
            self.writer.flush().map_err(write_error)?;
        }
        Ok(())
    }

    fn finish(self, plan: &MergePlan<'_>) -> Result<Written, CompactError> {
        let file = self
            .writer
            .into_inner()
            .map_err(|source| CompactError::WriteOutput {
                table: plan.table.to_string(),
                source,
            })?;
        let bytes = file
            .metadata()
            .map_err(|source| CompactError::io(&self.path, source))?
            .len();
        let time_range = match (self.first_time, self.last_time) {
            (Some(start_ns), Some(end_ns)) => Some(TimeRange { start_ns, end_ns }),
            _ => None,
        };
        Ok(Written {
            rows: self.rows,
            bytes,
            time_range,
        })
    }
}

/// Reads the `arc.*` footer keys of a local Parquet file (tests and diagnostics).
#[cfg(test)]
pub(crate) fn read_footer(path: &Path) -> std::collections::HashMap<String, String> {
    let bytes = bytes::Bytes::from(std::fs::read(path).expect("test file exists"));
    arc_storage::parquet::read_footer_metadata(bytes).expect("test file is Parquet")
}

#[cfg(test)]
mod tests;
