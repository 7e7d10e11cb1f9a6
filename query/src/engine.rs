//! Phase 2 of a query: runs a [`SelectPlan`] in DuckDB over the files and fresh rows the
//! caller resolved for its tables.
//!
//! One in-memory DuckDB database per engine, locked down when the engine is built: reads are
//! allowed only below the configured directories, no other external access, no extension
//! installing or autoloading, and the configuration is locked so no query can undo that.
//! Each [`QueryEngine::execute`] runs on its own clone of the connection, so queries run
//! concurrently (DuckDB's own threads do the work inside each).
//!
//! Every generated CTE reads one table as
//! `SELECT * FROM arrow($K) UNION ALL BY NAME SELECT * FROM read_parquet([...], union_by_name = true)`:
//! the Arrow side carries the table's full schema (fresh rows, or none), so the CTE has every
//! column in schema order even when no file holds rows, and union-by-name lines up files
//! written before and after columns were added.
//!
//! # Hazards
//! - `execute` blocks for as long as DuckDB runs; async callers use `spawn_blocking`.
//! - The `arrow` table function reads batches registered in a process-wide registry by a
//!   token; user SQL must never call it (phase 1 denies it by name), or a query could read
//!   another query's fresh rows.
//! - Parquet paths go into the SQL text quoted; a path with glob characters would be
//!   expanded by DuckDB, so such paths are refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_storage::model::TableId;
use arrow::array::{ArrayRef, new_null_array};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use duckdb::vtab::arrow::{ArrowBatchRegistration, ArrowVTab};
use duckdb::{Connection, params_from_iter};
use serde::{Deserialize, Serialize};

use crate::error::QueryError;
use crate::metrics;
use crate::result::{QueryResult, ResultSink};
use crate::sql::SelectPlan;

/// Name under which the Arrow table function is registered; phase 1 denies it in user SQL.
const ARROW_FUNCTION: &str = "arrow";

/// Operator settings of the query engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuerySettings {
    /// DuckDB worker threads per query; `None` lets DuckDB use every core. Fewer threads
    /// leave room for ingest on small machines.
    pub threads: Option<usize>,
    /// DuckDB memory limit, in DuckDB's syntax (`"4GB"`, `"75%"`); `None` is DuckDB's default
    /// (80% of RAM). Queries that need more fail rather than push the node into swap.
    pub memory_limit: Option<String>,
    /// Directories DuckDB may read Parquet files from (the local data directory and the
    /// object cache). Everything else on the filesystem is off limits to queries.
    pub allowed_directories: Vec<PathBuf>,
    /// Largest result a query may build, in Arrow bytes; `None` is unbounded. A query past it
    /// stops with [`QueryError::Limit`] instead of exhausting the node's memory (results are
    /// held whole before they are encoded).
    pub max_result_bytes: Option<u64>,
}

/// Stops a running query from another thread: a timeout, a client that went away, a node
/// that is stopping. Cheap to clone; clones share the state. Interrupting before the query
/// starts makes it stop at once.
#[derive(Clone, Default)]
pub struct QueryInterrupt {
    inner: Arc<InterruptState>,
}

#[derive(Default)]
struct InterruptState {
    /// Why the query was interrupted; `None` while it may run.
    reason: Mutex<Option<String>>,
    /// DuckDB's handle on the query's connection, once it runs.
    handle: Mutex<Option<Arc<duckdb::InterruptHandle>>>,
}

impl std::fmt::Debug for QueryInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryInterrupt")
            .field("reason", &self.reason())
            .finish_non_exhaustive()
    }
}

impl QueryInterrupt {
    /// A handle for one query that nothing has interrupted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the query (if it runs) and records `reason`, which its error names. Only the
    /// first reason is kept.
    pub fn interrupt(&self, reason: impl Into<String>) {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| reason.into());
        if let Some(handle) = self
            .inner
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            handle.interrupt();
        }
    }

    /// Why the query was interrupted, if it was.
    pub fn reason(&self) -> Option<String> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Attaches the running query's connection; interrupts it at once if that was asked
    /// before it started.
    fn attach(&self, handle: Arc<duckdb::InterruptHandle>) {
        *self
            .inner
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(handle.clone());
        if self.reason().is_some() {
            handle.interrupt();
        }
    }

    fn check(&self) -> Result<(), QueryError> {
        match self.reason() {
            Some(reason) => Err(QueryError::Interrupted(reason)),
            None => Ok(()),
        }
    }
}

/// What the caller found for one table of a plan.
#[derive(Debug, Clone)]
pub struct ResolvedTable {
    /// The table's full known schema; the query sees these columns even with no rows.
    pub schema: SchemaRef,
    /// Local Parquet files (absolute paths inside the allowed directories) whose time range
    /// overlaps the plan's range for this table.
    pub files: Vec<PathBuf>,
    /// Acknowledged rows not yet in any file. Batches may have different schemas (columns
    /// added over time); missing columns read as NULL.
    pub fresh: Vec<RecordBatch>,
}

/// Runs query plans in a locked-down, in-memory DuckDB. Cheap to clone; clones share the
/// database.
#[derive(Clone)]
pub struct QueryEngine {
    /// The connection queries are cloned from. The mutex is held only to clone it: a
    /// `duckdb::Connection` may move between threads but not be shared by them.
    connection: Arc<Mutex<Connection>>,
    max_result_bytes: Option<u64>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").finish_non_exhaustive()
    }
}

impl QueryEngine {
    /// Opens the in-memory database, registers the Arrow table function and locks DuckDB
    /// down according to `settings`.
    ///
    /// # Errors
    /// [`QueryError::Execution`] when DuckDB cannot be opened or refuses a setting (the
    /// message names the setting).
    pub fn new(settings: QuerySettings) -> Result<Self, QueryError> {
        let connection = Connection::open_in_memory()
            .map_err(|error| QueryError::Execution(format!("opening duckdb: {error}")))?;
        connection
            .register_table_function::<ArrowVTab>(ARROW_FUNCTION)
            .map_err(|error| {
                QueryError::Execution(format!("registering the arrow table function: {error}"))
            })?;
        for statement in lockdown_statements(&settings)? {
            connection.execute_batch(&statement).map_err(|error| {
                QueryError::Execution(format!("configuring duckdb with `{statement}`: {error}"))
            })?;
        }
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            max_result_bytes: settings.max_result_bytes,
        })
    }

    /// Runs `plan` over `tables` and collects the result. Blocking.
    ///
    /// # Errors
    /// [`QueryError::UnknownTable`] when a table of the plan is missing from `tables`;
    /// [`QueryError::Invalid`] when DuckDB's parser, binder or catalog rejects the query;
    /// [`QueryError::Forbidden`] when DuckDB refuses a file access; [`QueryError::Execution`]
    /// for everything else.
    /// [`QueryError::Limit`] when the result outgrows `max_result_bytes`;
    /// [`QueryError::Interrupted`] when `interrupt` stopped it.
    pub fn execute(
        &self,
        plan: &SelectPlan,
        tables: &HashMap<TableId, ResolvedTable>,
        interrupt: &QueryInterrupt,
    ) -> Result<QueryResult, QueryError> {
        let mut collected = Collect {
            schema: None,
            batches: Vec::new(),
            bytes: 0,
            rows: 0,
            limit: self.max_result_bytes,
        };
        self.execute_into(plan, tables, interrupt, &mut collected)?;
        let schema = collected
            .schema
            .ok_or_else(|| QueryError::Execution("the query produced no schema".into()))?;
        Ok(QueryResult {
            schema,
            batches: collected.batches,
        })
    }

    /// Runs a plan like [`QueryEngine::execute`], handing the schema and each batch to `sink`
    /// as DuckDB produces them instead of collecting them; returns the number of rows. The
    /// sink decides about size limits (`max_result_bytes` is not applied here).
    ///
    /// # Errors
    /// As [`QueryEngine::execute`], and any error the sink returns.
    pub fn execute_into(
        &self,
        plan: &SelectPlan,
        tables: &HashMap<TableId, ResolvedTable>,
        interrupt: &QueryInterrupt,
        sink: &mut dyn ResultSink,
    ) -> Result<u64, QueryError> {
        let started = Instant::now();
        let result = self.run(plan, tables, interrupt, sink);
        let elapsed = started.elapsed();
        match &result {
            Ok(rows) => metrics::record_success(elapsed, *rows as usize),
            Err(error) => {
                metrics::record_failure(error);
                metrics::record_execution_time(elapsed);
            }
        }
        result
    }

    fn run(
        &self,
        plan: &SelectPlan,
        tables: &HashMap<TableId, ResolvedTable>,
        interrupt: &QueryInterrupt,
        sink: &mut dyn ResultSink,
    ) -> Result<u64, QueryError> {
        interrupt.check()?;
        let mut registrations = Vec::with_capacity(plan.tables.len());
        let mut cte_bodies = Vec::with_capacity(plan.tables.len());
        for (index, (table, _)) in plan.tables.iter().enumerate() {
            let resolved = tables
                .get(table)
                .ok_or_else(|| QueryError::UnknownTable(table.to_string()))?;
            registrations.push(ArrowBatchRegistration::new(fresh_batch(table, resolved)?));
            // Parameters are numbered from 1.
            cte_bodies.push(cte_body(index + 1, &resolved.files)?);
        }
        let sql = plan.render(&cte_bodies);
        tracing::debug!(tables = plan.tables.len(), %sql, "running query");

        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_clone()
            .map_err(|error| QueryError::Execution(format!("cloning connection: {error}")))?;
        interrupt.attach(connection.interrupt_handle());
        // An interrupted query fails inside DuckDB with its own message; the reason says why.
        let classify = |error: duckdb::Error| match interrupt.check() {
            Err(interrupted) => interrupted,
            Ok(()) => classify(error),
        };
        let mut statement = connection.prepare(&sql).map_err(classify)?;
        // Streaming execution: DuckDB produces chunks as they are fetched instead of
        // materializing the whole result first (which held a 400M-row answer in memory).
        let schema = statement
            .stream_arrow(params_from_iter(registrations.iter()))
            .map_err(classify)?
            .get_schema();
        sink.schema(&schema)?;
        // `Arrow`'s iterator panics on a fetch error; stepping by hand returns it instead.
        let mut rows = 0u64;
        while let Some(array) = statement.step().map_err(classify)? {
            let batch = RecordBatch::from(&array);
            rows += batch.num_rows() as u64;
            interrupt.check()?;
            sink.batch(batch)?;
        }
        Ok(rows)
    }

    /// Runs raw SQL on a fresh clone of the connection, bypassing phase 1. Tests use it to
    /// check that DuckDB's own lockdown holds.
    #[cfg(test)]
    fn execute_raw(&self, sql: &str) -> Result<usize, QueryError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_clone()
            .map_err(|error| QueryError::Execution(error.to_string()))?;
        let mut statement = connection.prepare(sql).map_err(classify)?;
        let _ = statement.query_arrow([]).map_err(classify)?;
        let mut rows = 0;
        while let Some(array) = statement.step().map_err(classify)? {
            rows += arrow::array::Array::len(&array);
        }
        Ok(rows)
    }
}

/// The statements that apply `settings` and lock DuckDB down, in order. The lock comes
/// last: after it no `SET` is accepted.
fn lockdown_statements(settings: &QuerySettings) -> Result<Vec<String>, QueryError> {
    let mut statements = Vec::new();
    if let Some(threads) = settings.threads {
        statements.push(format!("SET threads = {threads}"));
    }
    if let Some(limit) = &settings.memory_limit {
        statements.push(format!("SET memory_limit = {}", quote_literal(limit)));
    }
    let mut directories = Vec::with_capacity(settings.allowed_directories.len());
    for directory in &settings.allowed_directories {
        let text = directory.to_str().ok_or_else(|| {
            QueryError::Execution(format!(
                "allowed directory {} is not valid utf-8",
                directory.display()
            ))
        })?;
        // DuckDB matches by prefix: the separator keeps `/data` from admitting `/data2`.
        let with_separator = if text.ends_with('/') {
            text.to_string()
        } else {
            format!("{text}/")
        };
        directories.push(quote_literal(&with_separator));
    }
    statements.push(format!(
        "SET allowed_directories = [{}]",
        directories.join(", ")
    ));
    statements.extend(
        [
            // Data objects are immutable under unique names, so their footers can be kept
            // between queries; the cache is an LRU inside the memory limit.
            "SET GLOBAL parquet_metadata_cache = true",
            "SET enable_external_access = false",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET lock_configuration = true",
        ]
        .map(String::from),
    );
    Ok(statements)
}

/// Quotes `text` as a SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Builds the body of the CTE whose fresh rows are parameter `$parameter`.
fn cte_body(parameter: usize, files: &[PathBuf]) -> Result<String, QueryError> {
    let mut body = format!("SELECT * FROM {ARROW_FUNCTION}(${parameter})");
    if files.is_empty() {
        return Ok(body);
    }
    let mut quoted = Vec::with_capacity(files.len());
    for file in files {
        quoted.push(quote_path(file)?);
    }
    body.push_str(" UNION ALL BY NAME SELECT * FROM read_parquet([");
    body.push_str(&quoted.join(", "));
    body.push_str("], union_by_name = true)");
    Ok(body)
}

/// Quotes a Parquet path for `read_parquet`, refusing what DuckDB would not read literally.
fn quote_path(path: &std::path::Path) -> Result<String, QueryError> {
    let text = path.to_str().ok_or_else(|| {
        QueryError::Execution(format!(
            "parquet path {} is not valid utf-8",
            path.display()
        ))
    })?;
    if !path.is_absolute() {
        return Err(QueryError::Execution(format!(
            "parquet path {text} is not absolute"
        )));
    }
    if text.contains(['*', '?', '[', ']', '{', '}', '\0']) {
        return Err(QueryError::Execution(format!(
            "parquet path {text} contains glob characters"
        )));
    }
    Ok(quote_literal(text))
}

/// Unifies the fresh batches of a table to its full schema (plus any column only the fresh
/// rows know) and concatenates them; an empty batch of that schema when there are none.
fn fresh_batch(table: &TableId, resolved: &ResolvedTable) -> Result<RecordBatch, QueryError> {
    let conversion_error = |error: arrow::error::ArrowError| {
        QueryError::Execution(format!("preparing fresh rows of {table}: {error}"))
    };
    // Every column nullable: a column added later is NULL in older rows.
    let mut fields: Vec<Field> = resolved
        .schema
        .fields()
        .iter()
        .map(|field| Field::new(field.name(), field.data_type().clone(), true))
        .collect();
    for batch in &resolved.fresh {
        for field in batch.schema().fields() {
            if !fields.iter().any(|known| known.name() == field.name()) {
                fields.push(Field::new(field.name(), field.data_type().clone(), true));
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let mut aligned = Vec::with_capacity(resolved.fresh.len());
    for batch in resolved.fresh.iter().filter(|batch| batch.num_rows() > 0) {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column = match batch.column_by_name(field.name()) {
                Some(column) if column.data_type() == field.data_type() => Arc::clone(column),
                Some(column) => cast(column, field.data_type()).map_err(conversion_error)?,
                None => new_null_array(field.data_type(), batch.num_rows()),
            };
            columns.push(column);
        }
        aligned.push(RecordBatch::try_new(Arc::clone(&schema), columns).map_err(conversion_error)?);
    }
    concat_batches(&schema, &aligned).map_err(conversion_error)
}

/// Maps a DuckDB error to ours by DuckDB's error class, keeping DuckDB's text.
fn classify(error: duckdb::Error) -> QueryError {
    let message = error.to_string();
    let has_class =
        |class: &str| message.starts_with(class) || message.contains(&format!(": {class}"));
    if ["Parser Error", "Binder Error", "Catalog Error"]
        .iter()
        .any(|class| has_class(class))
    {
        QueryError::Invalid(message)
    } else if has_class("Permission Error") {
        QueryError::Forbidden(message)
    } else {
        QueryError::Execution(message)
    }
}

/// The sink behind [`QueryEngine::execute`]: keeps every batch, up to `max_result_bytes`.
struct Collect {
    schema: Option<SchemaRef>,
    batches: Vec<RecordBatch>,
    bytes: u64,
    rows: u64,
    limit: Option<u64>,
}

impl ResultSink for Collect {
    fn schema(&mut self, schema: &SchemaRef) -> Result<(), QueryError> {
        self.schema = Some(schema.clone());
        Ok(())
    }

    fn batch(&mut self, batch: RecordBatch) -> Result<(), QueryError> {
        self.bytes += batch.get_array_memory_size() as u64;
        self.rows += batch.num_rows() as u64;
        if let Some(limit) = self.limit
            && self.bytes > limit
        {
            return Err(QueryError::Limit(format!(
                "the result passed query.max_result_bytes ({limit} bytes) after {} rows; \
                 add a LIMIT, filter, or aggregate",
                self.rows
            )));
        }
        self.batches.push(batch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::Path;

    use arc_storage::model::{ColumnKind, ColumnSpec, FieldType, TimeRange, schema_of};
    use arrow::array::{
        Array, AsArray, Float64Array, Int64Array, StringArray, TimestampNanosecondArray,
    };
    use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType};
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::sql::{Analysis, analyze};

    const T0: i64 = 1_785_542_400_000_000_000; // 2026-08-01T00:00:00Z

    fn spec(name: &str, kind: ColumnKind) -> ColumnSpec {
        ColumnSpec {
            name: name.to_string(),
            kind,
        }
    }

    /// The full schema of `cpu`: time, host, usage, and `note`, added later.
    fn cpu_schema() -> SchemaRef {
        schema_of(&[
            spec("time", ColumnKind::Time),
            spec("host", ColumnKind::Tag),
            spec("usage", ColumnKind::Field(FieldType::Float)),
            spec("note", ColumnKind::Field(FieldType::String)),
        ])
    }

    /// A batch of `cpu` rows with only time, host and usage (the schema before `note`).
    fn old_cpu_batch(times: &[i64], hosts: &[&str], usages: &[f64]) -> RecordBatch {
        let schema = schema_of(&[
            spec("time", ColumnKind::Time),
            spec("host", ColumnKind::Tag),
            spec("usage", ColumnKind::Field(FieldType::Float)),
        ]);
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampNanosecondArray::from(times.to_vec())),
                Arc::new(StringArray::from(hosts.to_vec())),
                Arc::new(Float64Array::from(usages.to_vec())),
            ],
        )
        .expect("valid batch")
    }

    /// A batch of `cpu` rows in the full schema.
    fn new_cpu_batch(times: &[i64], hosts: &[&str], usages: &[f64], notes: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            cpu_schema(),
            vec![
                Arc::new(TimestampNanosecondArray::from(times.to_vec())),
                Arc::new(StringArray::from(hosts.to_vec())),
                Arc::new(Float64Array::from(usages.to_vec())),
                Arc::new(StringArray::from(notes.to_vec())),
            ],
        )
        .expect("valid batch")
    }

    fn write_parquet(path: &Path, batch: &RecordBatch) {
        let file = File::create(path).expect("create parquet file");
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(batch).expect("write batch");
        writer.close().expect("close writer");
    }

    fn engine_for(directory: &Path) -> QueryEngine {
        QueryEngine::new(QuerySettings {
            threads: Some(2),
            memory_limit: Some("1GB".to_string()),
            allowed_directories: vec![directory.to_path_buf()],
            max_result_bytes: None,
        })
        .expect("engine starts")
    }

    #[test]
    fn test_should_stop_a_result_past_max_result_bytes() {
        let engine = QueryEngine::new(QuerySettings {
            threads: Some(2),
            max_result_bytes: Some(1 << 20),
            ..QuerySettings::default()
        })
        .unwrap();
        let error = run(&engine, "SELECT * FROM range(400000000)", &HashMap::new()).unwrap_err();
        assert!(matches!(error, QueryError::Limit(_)), "{error}");
        assert!(error.to_string().contains("max_result_bytes"), "{error}");
        assert_eq!(error.status_code(), 400);
        // A result within the bound is whole.
        let result = run(&engine, "SELECT * FROM range(1000)", &HashMap::new()).unwrap();
        assert_eq!(result.row_count(), 1000);
    }

    #[test]
    fn test_should_interrupt_a_running_query_with_its_reason() {
        let engine = QueryEngine::new(QuerySettings {
            threads: Some(2),
            ..QuerySettings::default()
        })
        .unwrap();
        let interrupt = QueryInterrupt::new();
        let stopper = interrupt.clone();
        let started = Instant::now();
        let worker = std::thread::spawn(move || {
            engine.execute(
                &plan_of("SELECT count(*) FROM range(1000000000000)"),
                &HashMap::new(),
                &interrupt,
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        stopper.interrupt("the client went away");
        let error = worker.join().unwrap().unwrap_err();
        assert!(
            matches!(&error, QueryError::Interrupted(reason) if reason == "the client went away"),
            "{error}"
        );
        assert_eq!(error.status_code(), 503);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));

        // Interrupted before it starts: it never runs.
        let engine = QueryEngine::new(QuerySettings::default()).unwrap();
        let early = QueryInterrupt::new();
        early.interrupt("stopping");
        let error = engine
            .execute(&plan_of("SELECT 1"), &HashMap::new(), &early)
            .unwrap_err();
        assert!(matches!(error, QueryError::Interrupted(_)), "{error}");
    }

    fn plan_of(sql: &str) -> SelectPlan {
        match analyze(sql, "default", T0) {
            Ok(Analysis::Select(plan)) => plan,
            other => panic!("expected a plan for {sql}, got {other:?}"),
        }
    }

    fn run(
        engine: &QueryEngine,
        sql: &str,
        tables: &HashMap<TableId, ResolvedTable>,
    ) -> Result<QueryResult, QueryError> {
        engine.execute(&plan_of(sql), tables, &QueryInterrupt::new())
    }

    fn single_batch(result: &QueryResult) -> RecordBatch {
        concat_batches(&result.schema, &result.batches).expect("same schema")
    }

    fn cpu() -> TableId {
        TableId::new("default", "cpu")
    }

    /// Two Parquet files (old and new schema) plus fresh rows (both schemas) for `cpu`.
    fn cpu_fixture(directory: &Path) -> HashMap<TableId, ResolvedTable> {
        let old_file = directory.join("old.parquet");
        let new_file = directory.join("new.parquet");
        write_parquet(
            &old_file,
            &old_cpu_batch(&[T0, T0 + 1], &["a", "b"], &[1.0, 2.0]),
        );
        write_parquet(
            &new_file,
            &new_cpu_batch(&[T0 + 2], &["a"], &[3.0], &["from file"]),
        );
        let fresh = vec![
            old_cpu_batch(&[T0 + 3], &["b"], &[4.0]),
            new_cpu_batch(&[T0 + 4], &["c"], &[5.0], &["fresh"]),
        ];
        HashMap::from([(
            cpu(),
            ResolvedTable {
                schema: cpu_schema(),
                files: vec![old_file, new_file],
                fresh,
            },
        )])
    }

    #[test]
    fn test_should_union_files_and_fresh_rows_of_different_schemas() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let tables = cpu_fixture(directory.path());
        let result = run(
            &engine,
            "SELECT time, host, usage, note FROM cpu ORDER BY time",
            &tables,
        )
        .expect("query runs");
        let batch = single_batch(&result);
        assert_eq!(batch.num_rows(), 5);
        let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(
            times.values().to_vec(),
            vec![T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4],
            "nanoseconds survive files and fresh rows"
        );
        let hosts = batch.column(1).as_string::<i32>();
        assert_eq!(
            (0..5).map(|row| hosts.value(row)).collect::<Vec<_>>(),
            vec!["a", "b", "a", "b", "c"]
        );
        let usages = batch.column(2).as_primitive::<Float64Type>();
        assert_eq!(usages.values().to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let notes = batch.column(3).as_string::<i32>();
        assert!(notes.is_null(0) && notes.is_null(1) && notes.is_null(3));
        assert_eq!(notes.value(2), "from file");
        assert_eq!(notes.value(4), "fresh");
    }

    #[test]
    fn test_should_keep_time_as_timestamp_ns_in_schema_order() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let tables = cpu_fixture(directory.path());
        let result = run(&engine, "SELECT * FROM cpu LIMIT 1", &tables).expect("query runs");
        let names: Vec<&str> = result
            .schema
            .fields()
            .iter()
            .map(|field| field.name().as_str())
            .collect();
        assert_eq!(names, vec!["time", "host", "usage", "note"]);
        assert_eq!(
            result.schema.field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, None)
        );
    }

    #[test]
    fn test_should_keep_columns_of_a_table_without_rows() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let tables = HashMap::from([(
            cpu(),
            ResolvedTable {
                schema: cpu_schema(),
                files: Vec::new(),
                fresh: Vec::new(),
            },
        )]);
        let result = run(&engine, "SELECT * FROM cpu", &tables).expect("query runs");
        assert_eq!(result.row_count(), 0);
        assert_eq!(result.schema.fields().len(), 4);
        let result = run(
            &engine,
            "SELECT host, avg(usage) FROM cpu WHERE time > now() - INTERVAL '1 hour' GROUP BY host",
            &tables,
        )
        .expect("query runs");
        assert_eq!(result.row_count(), 0);
    }

    #[test]
    fn test_should_run_aggregates_joins_and_ctes() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let mut tables = cpu_fixture(directory.path());
        let mem_schema = schema_of(&[
            spec("time", ColumnKind::Time),
            spec("host", ColumnKind::Tag),
            spec("free", ColumnKind::Field(FieldType::Integer)),
        ]);
        let mem_rows = RecordBatch::try_new(
            Arc::clone(&mem_schema),
            vec![
                Arc::new(TimestampNanosecondArray::from(vec![T0, T0])),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![i64::MAX, -7])),
            ],
        )
        .expect("valid batch");
        tables.insert(
            TableId::new("prod", "mem"),
            ResolvedTable {
                schema: mem_schema,
                files: Vec::new(),
                fresh: vec![mem_rows],
            },
        );
        let result = run(
            &engine,
            "WITH busy AS (SELECT host, sum(usage) AS total FROM cpu GROUP BY host) \
             SELECT b.host, b.total, m.free FROM busy b JOIN prod.mem m ON b.host = m.host \
             ORDER BY b.host",
            &tables,
        )
        .expect("query runs");
        let batch = single_batch(&result);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            batch
                .column(1)
                .as_primitive::<Float64Type>()
                .values()
                .to_vec(),
            vec![4.0, 6.0]
        );
        assert_eq!(
            batch
                .column(2)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec(),
            vec![i64::MAX, -7],
            "i64 values are exact"
        );
        let result = run(
            &engine,
            "SELECT time_bucket(INTERVAL '1 hour', time) AS hour, count(*) AS n FROM cpu \
             GROUP BY hour",
            &tables,
        )
        .expect("query runs");
        let batch = single_batch(&result);
        assert_eq!(batch.column(1).as_primitive::<Int64Type>().value(0), 5);
    }

    #[test]
    fn test_should_apply_the_time_filter_in_duckdb() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let tables = cpu_fixture(directory.path());
        for sql in [
            "SELECT count(*) FROM cpu WHERE time >= '2026-08-01T00:00:00.000000002Z'",
            "SELECT count(*) FROM cpu WHERE time >= '2026-08-01 00:00:00.000000002'::TIMESTAMP_NS",
        ] {
            let result = run(&engine, sql, &tables).expect("query runs");
            let batch = single_batch(&result);
            assert_eq!(
                batch.column(0).as_primitive::<Int64Type>().value(0),
                3,
                "{sql}"
            );
        }
    }

    #[test]
    fn test_should_bind_table_columns_before_select_aliases_in_where() {
        // Pruning assumes `time` in WHERE is the table's column even when the select list
        // defines an alias of that name.
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let tables = cpu_fixture(directory.path());
        let result = run(
            &engine,
            "SELECT time - INTERVAL '1 day' AS time FROM cpu WHERE time >= '2026-08-01'",
            &tables,
        )
        .expect("query runs");
        assert_eq!(result.row_count(), 5);
    }

    #[test]
    fn test_should_report_an_unknown_table() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let result = run(&engine, "SELECT * FROM prod.missing", &HashMap::new());
        assert_eq!(
            result.map(|_| ()),
            Err(QueryError::UnknownTable("prod.missing".to_string()))
        );
    }

    #[test]
    fn test_should_map_binder_and_catalog_errors_to_invalid() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let tables = cpu_fixture(directory.path());
        for sql in [
            "SELECT no_such_column FROM cpu",
            "SELECT no_such_function(usage) FROM cpu",
            "SELECT host FROM cpu GROUP BY nothing",
        ] {
            match run(&engine, sql, &tables) {
                Err(QueryError::Invalid(message)) => {
                    assert!(message.contains("Error"), "keeps DuckDB's text: {message}")
                }
                other => panic!("expected Invalid for {sql}, got {other:?}"),
            }
        }
    }

    #[test]
    fn test_should_map_runtime_failures_to_execution() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let tables = cpu_fixture(directory.path());
        let result = run(&engine, "SELECT CAST(host AS INTEGER) FROM cpu", &tables);
        assert!(
            matches!(result, Err(QueryError::Execution(_))),
            "{result:?}"
        );
        assert_eq!(result.map(|_| ()).unwrap_err().status_code(), 500);
    }

    #[test]
    fn test_should_refuse_file_access_in_analyze() {
        for sql in [
            "SELECT * FROM read_parquet('/etc/passwd')",
            "SELECT * FROM read_csv_auto('/etc/passwd')",
            "SELECT * FROM '/etc/passwd'",
            "SELECT * FROM glob('/etc/*')",
        ] {
            let result = analyze(sql, "default", T0);
            assert!(
                matches!(result, Err(QueryError::Forbidden(_))),
                "{sql}: {result:?}"
            );
        }
    }

    #[test]
    fn test_should_refuse_file_access_outside_allowed_directories_even_without_analyze() {
        let allowed = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(allowed.path());
        let inside = allowed.path().join("inside.parquet");
        let outside = elsewhere.path().join("outside.parquet");
        let batch = old_cpu_batch(&[T0], &["a"], &[1.0]);
        write_parquet(&inside, &batch);
        write_parquet(&outside, &batch);
        let inside_sql = format!("SELECT * FROM read_parquet('{}')", inside.display());
        assert_eq!(
            engine.execute_raw(&inside_sql),
            Ok(1),
            "allowed directory is readable"
        );
        for sql in [
            format!("SELECT * FROM read_parquet('{}')", outside.display()),
            "SELECT * FROM read_csv('/etc/passwd')".to_string(),
            "SELECT * FROM read_text('/etc/hostname')".to_string(),
            "SELECT * FROM glob('/etc/*')".to_string(),
            format!("COPY (SELECT 1) TO '{}/x.csv'", elsewhere.path().display()),
            format!("ATTACH '{}/other.db' AS other", elsewhere.path().display()),
            "INSTALL httpfs".to_string(),
            "LOAD httpfs".to_string(),
            "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')".to_string(),
        ] {
            let result = engine.execute_raw(&sql);
            assert!(result.is_err(), "{sql} must fail, got {result:?}");
        }
    }

    #[test]
    fn test_should_lock_the_configuration() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        for sql in [
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "SET lock_configuration = false",
            "RESET lock_configuration",
            "SET autoload_known_extensions = true",
        ] {
            let result = engine.execute_raw(sql);
            assert!(result.is_err(), "{sql} must fail, got {result:?}");
        }
    }

    #[test]
    fn test_should_refuse_paths_duckdb_would_not_read_literally() {
        assert!(cte_body(1, &[PathBuf::from("relative.parquet")]).is_err());
        assert!(cte_body(1, &[PathBuf::from("/data/*.parquet")]).is_err());
        assert!(cte_body(1, &[PathBuf::from("/data/[ab].parquet")]).is_err());
        assert_eq!(
            cte_body(2, &[PathBuf::from("/data/it's.parquet")]).expect("quotes"),
            "SELECT * FROM arrow($2) UNION ALL BY NAME SELECT * FROM \
             read_parquet(['/data/it''s.parquet'], union_by_name = true)"
        );
        assert_eq!(
            cte_body(1, &[]).expect("no files"),
            "SELECT * FROM arrow($1)"
        );
    }

    #[test]
    fn test_should_read_parquet_paths_with_quotes() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let file = directory.path().join("it's.parquet");
        write_parquet(&file, &new_cpu_batch(&[T0], &["a"], &[1.0], &["x"]));
        let tables = HashMap::from([(
            cpu(),
            ResolvedTable {
                schema: cpu_schema(),
                files: vec![file],
                fresh: Vec::new(),
            },
        )]);
        let result = run(&engine, "SELECT * FROM cpu", &tables).expect("query runs");
        assert_eq!(result.row_count(), 1);
    }

    #[test]
    fn test_should_run_queries_concurrently_from_clones() {
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let tables = Arc::new(cpu_fixture(directory.path()));
        let plan = Arc::new(plan_of("SELECT count(*) FROM cpu"));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let engine = engine.clone();
                let tables = Arc::clone(&tables);
                let plan = Arc::clone(&plan);
                std::thread::spawn(move || {
                    (0..5)
                        .map(|_| {
                            let result = engine
                                .execute(&plan, &tables, &QueryInterrupt::new())
                                .expect("query runs");
                            single_batch(&result)
                                .column(0)
                                .as_primitive::<Int64Type>()
                                .value(0)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().expect("thread"), vec![5; 5]);
        }
    }

    #[test]
    fn test_should_unify_fresh_batches_to_the_full_schema() {
        let resolved = ResolvedTable {
            schema: cpu_schema(),
            files: Vec::new(),
            fresh: vec![
                old_cpu_batch(&[1], &["a"], &[1.0]),
                new_cpu_batch(&[2], &["b"], &[2.0], &["n"]),
            ],
        };
        let batch = fresh_batch(&cpu(), &resolved).expect("unifies");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.num_columns(), 4);
        assert!(batch.column(3).is_null(0));
        let empty = fresh_batch(
            &cpu(),
            &ResolvedTable {
                schema: cpu_schema(),
                files: Vec::new(),
                fresh: Vec::new(),
            },
        )
        .expect("empty");
        assert_eq!(empty.num_rows(), 0);
        assert_eq!(empty.num_columns(), 4);
    }

    #[test]
    fn test_should_prune_nothing_the_query_returns() {
        // The plan's range for a bounded query covers every row that query returns.
        let directory = tempfile::tempdir().expect("tempdir");
        let engine = engine_for(directory.path());
        let tables = cpu_fixture(directory.path());
        let plan = plan_of("SELECT time FROM cpu WHERE time > '2026-08-01T00:00:00.000000001Z'");
        let range: TimeRange = plan.tables[0].1;
        let result = engine
            .execute(&plan, &tables, &QueryInterrupt::new())
            .expect("query runs");
        let batch = single_batch(&result);
        let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(times.len(), 3);
        for row in 0..times.len() {
            let value = times.value(row);
            assert!(range.start_ns <= value && value <= range.end_ns);
        }
    }
}
