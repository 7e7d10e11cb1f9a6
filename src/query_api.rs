//! `POST /api/v1/query` and `/api/v1/query/arrow`: admission, analysis, execution in DuckDB,
//! and the answer streamed to the client as DuckDB produces it.
//!
//! A result is never collected whole: the query's blocking thread encodes each batch and hands
//! chunks to the response body through a small bounded channel, so a result of any size costs
//! a few chunks of memory, and a client that reads slowly slows the query down instead of
//! growing the node. The first [`FIRST_CHUNK_BYTES`] are held back before the answer starts,
//! so small results, and errors found before the first rows (almost all of them), get their
//! real status. An error after that (`query.max_result_bytes`, `query.timeout`, a stopping
//! node) can only cut the body short: the client sees an incomplete chunked response, and the
//! node logs why.
//!
//! The query stops when its client goes away (the body is dropped: DuckDB is interrupted),
//! at `query.timeout` (counted from the request's start, whether DuckDB is computing or the
//! client is slow to read), and when the node stops.

// As in http.rs: helpers return a ready `Response` as their error.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_query::{
    Analysis, ArrowIpcEncoder, JsonEncoder, QueryError, QueryInterrupt, QueryResult, ResultSink,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::http::{DATABASE_HEADER, header_database, read_body, unavailable};
use crate::ingest;
use crate::metrics as m;
use crate::node::NodeInner;

type AppState = Arc<NodeInner>;

/// Output held back before the answer starts: results up to this size, and errors found
/// before it fills, are answered whole with their real status.
const FIRST_CHUNK_BYTES: usize = 1 << 20;

/// Size of the chunks sent after the first.
const CHUNK_BYTES: usize = 256 << 10;

/// Chunks that may wait between the query's thread and the connection.
const CHANNEL_CHUNKS: usize = 4;

#[derive(Deserialize)]
struct QueryRequest {
    sql: String,
}

/// The two result encodings.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// Arc's JSON document.
    Json,
    /// An Arrow IPC stream.
    ArrowIpc,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::ArrowIpc => "application/vnd.apache.arrow.stream",
        }
    }
}

/// `POST /api/v1/query`: Arc's JSON document.
pub async fn query_json(State(node): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    respond(&node, &headers, body, Encoding::Json).await
}

/// `POST /api/v1/query/arrow`: an Arrow IPC stream.
pub async fn query_arrow(State(node): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    respond(&node, &headers, body, Encoding::ArrowIpc).await
}

fn query_error(error: &QueryError) -> Response {
    let status =
        StatusCode::from_u16(error.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(arc_query::error_json(&error.to_string())),
    )
        .into_response()
}

fn parse_query_request(headers: &HeaderMap, body: &Bytes) -> Result<(String, String), Response> {
    let request: QueryRequest = serde_json::from_slice(body).map_err(|error| {
        query_error(&QueryError::Invalid(format!(
            "request body must be JSON {{\"sql\": \"...\"}}: {error}"
        )))
    })?;
    let database = match header_database(headers) {
        Ok(Some(database)) => database,
        Ok(None) => "default".to_string(),
        Err(response) => return Err(response),
    };
    if ingest::validate_database_name(&database).is_err() {
        return Err(query_error(&QueryError::Invalid(format!(
            "invalid database name {database:?} in {DATABASE_HEADER}"
        ))));
    }
    Ok((request.sql, database))
}

/// Interrupts a query when dropped: with the request (the client left before the answer
/// started) or with the response body (it left during the answer). After the query finished,
/// interrupting it does nothing.
struct InterruptOnDrop(QueryInterrupt);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.interrupt("the client went away");
    }
}

/// The longest a query with `x-arc-min-lsn` waits for this node to have applied that LSN.
const MIN_LSN_WAIT: Duration = Duration::from_secs(10);

async fn respond(node: &AppState, headers: &HeaderMap, body: Body, encoding: Encoding) -> Response {
    let mut freshness = None;
    let mut response = match run(node, headers, body, encoding, &mut freshness).await {
        Ok(response) | Err(response) => response,
    };
    // What the answer saw of the primary's acknowledged writes.
    if let Some((applied, stale_ms)) = freshness.or_else(|| node.freshness()) {
        let headers = response.headers_mut();
        headers.insert("x-arc-applied-lsn", HeaderValue::from(applied));
        headers.insert("x-arc-freshness-ms", HeaderValue::from(stale_ms));
    }
    response
}

/// Read-your-writes: with `x-arc-min-lsn` (a write's `x-arc-lsn`), waits until this node has
/// applied that LSN, at most [`MIN_LSN_WAIT`]; 504 naming the applied LSN otherwise. Returns
/// the freshness the query runs with.
async fn wait_min_lsn(
    node: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(u64, u64)>, Response> {
    let parse = |name: &str| -> Result<Option<u64>, Response> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                query_error(&QueryError::Invalid(format!(
                    "{name} must be an unsigned integer (a write's x-arc-lsn / x-arc-epoch), got {value:?}"
                )))
            })
    };
    // LSNs continue across epochs (a new primary continues the log), so the LSN alone
    // orders writes; the epoch is checked for form only.
    parse("x-arc-epoch")?;
    let Some(min_lsn) = parse("x-arc-min-lsn")? else {
        return Ok(None);
    };
    let bound = MIN_LSN_WAIT.min(node.config.query.timeout.0);
    match node.wait_visible(min_lsn, bound).await {
        Some((applied, stale_ms)) if applied >= min_lsn => Ok(Some((applied, stale_ms))),
        Some((applied, _)) => Err(crate::http::error_response(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "this node ({}) has applied the primary's write-ahead log up to lsn {applied}, \
                 below x-arc-min-lsn {min_lsn}, after waiting {bound:?}; retry, or query another \
                 node",
                node.node_id
            ),
        )),
        None => Err(crate::http::error_response(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "this node ({}) serves flushed rows only (no write-ahead log stream), so it \
                 cannot wait for x-arc-min-lsn {min_lsn}; query a reader or the primary",
                node.node_id
            ),
        )),
    }
}

async fn run(
    node: &AppState,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
    freshness: &mut Option<(u64, u64)>,
) -> Result<Response, Response> {
    if !node.is_ready() {
        return Err(unavailable(node.not_ready_reason()));
    }
    // Refused at once rather than queued: a queue of slow queries would hold their clients'
    // connections and the blocking threads write decoding needs.
    let Ok(permit) = node.query_permits.clone().try_acquire_owned() else {
        m::record_query_refused("concurrency");
        return Err(unavailable(format!(
            "{} queries are running, the most query.max_concurrent allows; retry shortly",
            node.config.query.max_concurrent
        )));
    };
    let running = m::RunningQuery::start(permit);
    let started = Instant::now();
    let deadline = started + node.config.query.timeout.0;
    // The statement is bounded (arc_query::MAX_SQL_BYTES); its JSON body may escape every
    // character (`\u0000`), so allow six bytes per SQL byte, and never more than the server's
    // own limit.
    let limit = node
        .max_payload_size()
        .min(arc_query::MAX_SQL_BYTES * 6 + 64 * 1024);
    let body = read_body(headers, body, limit, node.body_read_timeout(), None).await?;
    let (sql, database) = parse_query_request(headers, &body)?;
    *freshness = wait_min_lsn(node, headers).await?;
    node.sync_catalog()
        .await
        .map_err(|error| query_error(&error))?;
    let analysis =
        arc_query::analyze(&sql, &database, node.now_ns()).map_err(|error| query_error(&error))?;
    let plan = match analysis {
        Analysis::ShowDatabases => {
            let result = QueryResult::from_names("name", node.databases());
            return Ok(whole(result, encoding, started, node.clock.now()));
        }
        Analysis::ShowTables { database } => {
            let result = QueryResult::from_names("name", node.tables_of(&database));
            return Ok(whole(result, encoding, started, node.clock.now()));
        }
        Analysis::Select(plan) => plan,
    };
    let resolved = node
        .resolve_tables(&plan.tables)
        .await
        .map_err(|error| query_error(&error))?;

    let interrupt = QueryInterrupt::new();
    // Dropped with this future while the answer has not started, then with the body.
    let on_drop = InterruptOnDrop(interrupt.clone());
    let (chunks, mut received) = mpsc::channel(CHANNEL_CHUNKS);
    let completed = Arc::new(AtomicBool::new(false));
    let timeout = node.config.query.timeout;
    let mut sink = StreamSink {
        chunks,
        completed: completed.clone(),
        encoder: None,
        encoding,
        buffer: Vec::new(),
        sent: 0,
        max_bytes: node.config.query.max_result_bytes.0,
        rows: 0,
        max_rows: node.config.query.max_result_rows,
        deadline,
        timeout_text: timeout.to_string(),
        stop: node.stop_token(),
        runtime: tokio::runtime::Handle::current(),
        started,
        now: node.clock.now(),
    };
    let engine = node.engine.clone();
    let query_interrupt = interrupt.clone();
    let mut query = tokio::task::spawn_blocking(move || {
        // The permit is held until the query's thread is done, however the answer ended.
        let _running = running;
        let outcome = engine.execute_into(&plan, &resolved, &query_interrupt, &mut sink);
        sink.end(outcome);
    });
    // The query's own timer: DuckDB is interrupted at the deadline or when the node stops,
    // also while the answer streams. It ends with the query.
    let watchdog_interrupt = interrupt.clone();
    let stop = node.stop_token();
    let watchdog = tokio::spawn(async move {
        tokio::select! {
            _ = &mut query => {}
            () = tokio::time::sleep_until(deadline.into()) => {
                watchdog_interrupt.interrupt(format!("it ran longer than query.timeout ({timeout})"));
                let _ = query.await;
            }
            () = stop.cancelled() => {
                watchdog_interrupt.interrupt("the node is stopping");
                let _ = query.await;
            }
        }
    });
    drop(watchdog);
    match received.recv().await {
        None => Err(query_error(&QueryError::Execution(
            "the query's thread ended without an answer".into(),
        ))),
        Some(Err(error)) => Err(query_error(&error)),
        Some(Ok(first)) => {
            let rest =
                futures::stream::unfold(Some((received, on_drop, completed)), |state| async move {
                    let (mut received, guard, completed) = state?;
                    match received.recv().await {
                        Some(item) => Some((item, Some((received, guard, completed)))),
                        // The query's thread is done. Unless it said the answer is complete,
                        // end the body with an error, so the client sees it cut short (an
                        // Arrow stream without its end marker could pass for a whole one).
                        None if completed.load(Ordering::Acquire) => None,
                        None => Some((
                            Err(QueryError::Interrupted("the answer ended early".into())),
                            None,
                        )),
                    }
                });
            let stream =
                futures::stream::once(async move { Ok::<_, QueryError>(first) }).chain(rest);
            Ok((
                [(header::CONTENT_TYPE, encoding.content_type())],
                Body::from_stream(stream),
            )
                .into_response())
        }
    }
}

/// Encodes a small result (`SHOW ...`) whole.
fn whole(
    result: QueryResult,
    encoding: Encoding,
    started: Instant,
    now: DateTime<Utc>,
) -> Response {
    let bytes = match encoding {
        Encoding::Json => {
            let elapsed = started.elapsed().as_millis() as u64;
            arc_query::to_json_bytes(&result, elapsed, now)
        }
        Encoding::ArrowIpc => match arc_query::to_arrow_ipc(&result) {
            Ok(bytes) => bytes,
            Err(error) => return query_error(&error),
        },
    };
    ([(header::CONTENT_TYPE, encoding.content_type())], bytes).into_response()
}

/// The sink the query's thread writes into: encodes batches and sends chunks to the body.
struct StreamSink {
    chunks: mpsc::Sender<Result<Bytes, QueryError>>,
    /// Set once the whole answer is in the channel.
    completed: Arc<AtomicBool>,
    encoder: Option<Encoder>,
    encoding: Encoding,
    /// Encoded output not yet sent.
    buffer: Vec<u8>,
    /// Bytes sent so far; zero while the answer has not started.
    sent: u64,
    /// `query.max_result_bytes`.
    max_bytes: u64,
    /// Rows encoded so far.
    rows: u64,
    /// `query.max_result_rows`.
    max_rows: Option<u64>,
    deadline: Instant,
    timeout_text: String,
    stop: CancellationToken,
    runtime: tokio::runtime::Handle,
    started: Instant,
    now: DateTime<Utc>,
}

/// One per query, never moved after it is built: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Encoder {
    Json(JsonEncoder),
    ArrowIpc(ArrowIpcEncoder),
}

impl StreamSink {
    /// Sends what is buffered once it is worth a chunk (the first one is larger, see
    /// [`FIRST_CHUNK_BYTES`]), or at once with `force`.
    fn maybe_send(&mut self, force: bool) -> Result<(), QueryError> {
        let threshold = if self.sent == 0 {
            FIRST_CHUNK_BYTES
        } else {
            CHUNK_BYTES
        };
        if self.buffer.is_empty() || (!force && self.buffer.len() < threshold) {
            return Ok(());
        }
        let total = self.sent + self.buffer.len() as u64;
        if total > self.max_bytes {
            return Err(QueryError::Limit(format!(
                "the result passed query.max_result_bytes ({} bytes); add a LIMIT, filter, or \
                 aggregate",
                self.max_bytes
            )));
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        let length = chunk.len() as u64;
        self.send(Ok(chunk))?;
        self.sent += length;
        Ok(())
    }

    /// Hands one item to the body, waiting while the client is slow, but never past the
    /// query's deadline or the node's stop.
    fn send(&self, item: Result<Bytes, QueryError>) -> Result<(), QueryError> {
        let chunks = &self.chunks;
        self.runtime.block_on(async {
            tokio::select! {
                sent = chunks.send(item) => sent
                    .map_err(|_| QueryError::Interrupted("the client went away".into())),
                () = tokio::time::sleep_until(self.deadline.into()) => Err(QueryError::Interrupted(
                    format!("it ran longer than query.timeout ({})", self.timeout_text),
                )),
                () = self.stop.cancelled() => Err(QueryError::Interrupted(
                    "the node is stopping".into(),
                )),
            }
        })
    }

    /// Finishes the answer: the document's end on success; on failure, the error, which
    /// becomes the response before the answer started and cuts the body short after.
    fn end(mut self, outcome: Result<u64, QueryError>) {
        let finished = outcome.and_then(|_| {
            match self.encoder.take() {
                Some(Encoder::Json(encoder)) => {
                    let elapsed = self.started.elapsed().as_millis() as u64;
                    encoder.finish(elapsed, self.now, &mut self.buffer);
                }
                Some(Encoder::ArrowIpc(encoder)) => encoder.finish(&mut self.buffer)?,
                None => {
                    return Err(QueryError::Execution("the query produced no schema".into()));
                }
            }
            self.completed.store(true, Ordering::Release);
            self.maybe_send(true)
        });
        if let Err(error) = finished {
            self.completed.store(false, Ordering::Release);
            if self.sent > 0 {
                warn!(%error, sent = self.sent, "query failed after its answer started; the response is cut short");
            } else {
                debug!(%error, "query failed");
            }
            // A client already gone, or a deadline passed: nobody to tell.
            let _ = self.chunks.try_send(Err(error));
        }
    }
}

impl ResultSink for StreamSink {
    fn schema(&mut self, schema: &SchemaRef) -> Result<(), QueryError> {
        self.encoder = Some(match self.encoding {
            Encoding::Json => Encoder::Json(JsonEncoder::begin(schema, &mut self.buffer)),
            Encoding::ArrowIpc => {
                Encoder::ArrowIpc(ArrowIpcEncoder::begin(schema, &mut self.buffer)?)
            }
        });
        Ok(())
    }

    fn batch(&mut self, batch: RecordBatch) -> Result<(), QueryError> {
        self.rows += batch.num_rows() as u64;
        if let Some(max_rows) = self.max_rows
            && self.rows > max_rows
        {
            return Err(QueryError::Limit(format!(
                "the result passed query.max_result_rows ({max_rows} rows); add a LIMIT, \
                 filter, or aggregate"
            )));
        }
        match &mut self.encoder {
            Some(Encoder::Json(encoder)) => encoder.batch(&batch, &mut self.buffer),
            Some(Encoder::ArrowIpc(encoder)) => encoder.batch(&batch, &mut self.buffer)?,
            None => return Err(QueryError::Execution("rows before the schema".into())),
        }
        self.maybe_send(false)
    }
}
