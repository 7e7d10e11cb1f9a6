//! `arc-bench`: a load generator for any Influx/Arc-compatible URL.
//!
//! `write` drives line protocol or MessagePack columnar ingest at a chosen concurrency and
//! batch size and reports acknowledged rows/s and the p50/p99 acknowledgement latency.
//! `query` runs one SQL statement repeatedly (JSON or Arrow) and reports queries/s, result
//! rows/s and latency. With `--rate`, requests are sent on a fixed schedule (open loop) and a
//! late request is timed from when it was due, so a stall shows in every request it delayed,
//! not only in the one it hit. `visible` writes one row at a time to a primary and times how long each
//! takes, after its acknowledgement, to show in a reader's answers. Payloads are generated
//! before the clock starts, so the generator's own CPU use stays out of the measurement as far
//! as possible on a shared machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

/// Load generator for arc-node (and any Influx/Arc-compatible endpoint).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Base URL of the node.
    #[arg(long, default_value = "http://127.0.0.1:8000", global = true)]
    url: String,
    /// API token (sent as `Authorization: Bearer`).
    #[arg(long, env = "ARC_BENCH_TOKEN", global = true)]
    token: Option<String>,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 8, global = true)]
    concurrency: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0, global = true)]
    duration: f64,
    /// Send at this many requests per second in all, spread evenly over the connections
    /// (open loop), instead of each connection sending again as soon as it has its answer.
    /// A request sent late because its connection was still waiting for an earlier answer
    /// counts its latency from when it was due, so a stall is not hidden by the requests it
    /// held back.
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends writes.
    Write {
        /// Payload format.
        #[arg(long, value_enum, default_value_t = WriteFormat::Msgpack)]
        format: WriteFormat,
        /// Rows per request.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// Distinct `host` tag values.
        #[arg(long, default_value_t = 100)]
        hosts: usize,
        /// Target database.
        #[arg(long, default_value = "bench")]
        database: String,
        /// Measurement name.
        #[arg(long, default_value = "cpu")]
        measurement: String,
        /// Spread the payloads over this many measurements (`<measurement>_0`, ...), each
        /// payload writing one of them; 1 writes `<measurement>` itself.
        #[arg(long, default_value_t = 1)]
        tables: usize,
        /// Distinct payloads generated up front and cycled through.
        #[arg(long, default_value_t = 64)]
        payloads: usize,
    },
    /// Measures the disk: appends 4 KiB to a file in `--dir` and calls fdatasync, repeatedly
    /// (what one WAL group commit costs at least). Sends no request.
    Fsync {
        /// Directory on the disk to measure (the WAL's).
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Runs a query repeatedly.
    Query {
        /// The SQL statement.
        #[arg(long)]
        sql: String,
        /// Result format.
        #[arg(long, value_enum, default_value_t = QueryFormat::Json)]
        format: QueryFormat,
        /// Default database (`x-arc-database`).
        #[arg(long, default_value = "bench")]
        database: String,
    },
    /// Sends `GET <path>` repeatedly (e.g. `/health`): the round trip of the HTTP stack alone,
    /// the floor under every write's latency on the same machine.
    Get {
        /// Path to request.
        #[arg(long, default_value = "/health")]
        path: String,
    },
    /// Measures ack-to-visible: writes one row at a time to `--url` (the primary) and polls
    /// `--reader-url` without `x-arc-min-lsn` until the row shows; reports the time from each
    /// 204 to the first answer that counts the row.
    Visible {
        /// Base URL of the reader to poll.
        #[arg(long)]
        reader_url: String,
        /// Rows written and waited for, one after the other.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Target database.
        #[arg(long, default_value = "bench")]
        database: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum WriteFormat {
    /// Line protocol to /api/v1/write/line-protocol.
    Lp,
    /// MessagePack columnar to /api/v1/write/msgpack.
    Msgpack,
}

#[derive(Clone, Copy, ValueEnum)]
enum QueryFormat {
    /// /api/v1/query.
    Json,
    /// /api/v1/query/arrow.
    Arrow,
}

struct Request {
    /// `None` for a `GET` without body, else the `POST` body.
    body: Option<bytes::Bytes>,
    url: String,
    rows: u64,
    content_type: &'static str,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    arc_node::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

/// The `p` quantile of sorted latencies, in milliseconds (0 for none).
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

/// Appends 4 KiB and fdatasyncs in a loop for `duration`; reports the latency of each sync.
fn fsync_bench(dir: &std::path::Path, duration: f64, json: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = dir.join(".arc-bench-fsync");
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5au8; 4096];
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < duration {
        let sync_started = Instant::now();
        file.write_all(&block)
            .with_context(|| format!("writing {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("fdatasync {}", path.display()))?;
        latencies.push(sync_started.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    latencies.sort();
    let percentile = |p: f64| percentile_ms(&latencies, p);
    let report = serde_json::json!({
        "mode": "fsync",
        "syncs": latencies.len(),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": percentile(1.0),
    });
    if json {
        println!("{report}");
    } else {
        println!(
            "{} fdatasyncs of 4 KiB appends: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len(),
            percentile(0.50),
            percentile(0.99),
            percentile(1.0)
        );
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(rate) = cli.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of requests per second, not {rate}");
    }
    if let Command::Fsync { dir } = &cli.command {
        return fsync_bench(dir, cli.duration, cli.json);
    }
    let base = cli.url.trim_end_matches('/').to_string();
    if let Command::Visible {
        reader_url,
        samples,
        database,
    } = &cli.command
    {
        let reader = reader_url.trim_end_matches('/');
        return visible_bench(&cli, &base, reader, *samples, database).await;
    }
    let requests: Vec<Request> = match &cli.command {
        Command::Write {
            format,
            batch_size,
            hosts,
            measurement,
            tables,
            payloads,
            ..
        } => {
            let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
            let tables = (*tables).max(1);
            (0..(*payloads).max(1))
                .map(|index| {
                    let start_ns = now_ns - (index as i64 + 1) * (*batch_size as i64) * 1_000_000;
                    let measurement = &if tables == 1 {
                        measurement.clone()
                    } else {
                        format!("{measurement}_{}", index % tables)
                    };
                    match format {
                        WriteFormat::Lp => Request {
                            url: format!("{base}/api/v1/write/line-protocol"),
                            body: Some(
                                line_protocol(measurement, *batch_size, *hosts, start_ns).into(),
                            ),
                            rows: *batch_size as u64,
                            content_type: "text/plain",
                        },
                        WriteFormat::Msgpack => Request {
                            url: format!("{base}/api/v1/write/msgpack"),
                            body: Some(
                                msgpack_columnar(measurement, *batch_size, *hosts, start_ns).into(),
                            ),
                            rows: *batch_size as u64,
                            content_type: "application/msgpack",
                        },
                    }
                })
                .collect()
        }
        Command::Fsync { .. } | Command::Visible { .. } => unreachable!("measured above"),
        Command::Query { sql, format, .. } => {
            let path = match format {
                QueryFormat::Json => "/api/v1/query",
                QueryFormat::Arrow => "/api/v1/query/arrow",
            };
            vec![Request {
                url: format!("{base}{path}"),
                body: Some(serde_json::to_vec(&serde_json::json!({ "sql": sql }))?.into()),
                rows: 0,
                content_type: "application/json",
            }]
        }
        Command::Get { path } => vec![Request {
            url: format!("{base}{path}"),
            body: None,
            rows: 0,
            content_type: "text/plain",
        }],
    };
    let database = match &cli.command {
        Command::Write { database, .. } | Command::Query { database, .. } => database.clone(),
        Command::Get { .. } => String::new(),
        Command::Fsync { .. } | Command::Visible { .. } => unreachable!("measured above"),
    };
    let is_query = matches!(cli.command, Command::Query { .. });
    let arrow_query = matches!(
        cli.command,
        Command::Query {
            format: QueryFormat::Arrow,
            ..
        }
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.concurrency)
        .build()
        .context("building the HTTP client")?;
    let requests = Arc::new(requests);
    let stop = Arc::new(AtomicBool::new(false));
    let rows_done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..cli.concurrency.max(1) {
        let client = client.clone();
        let requests = requests.clone();
        let stop = stop.clone();
        let rows_done = rows_done.clone();
        let errors = errors.clone();
        let token = cli.token.clone();
        let database = database.clone();
        let connections = cli.concurrency.max(1);
        let interval = cli.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut index = worker;
            let mut first_error: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                let request = &requests[index % requests.len()];
                // Open loop: request `index` is due at `index` intervals after the start.
                let due = interval.map(|interval| started + interval * index as u32);
                index += connections;
                let late = match due {
                    Some(due) if due > Instant::now() => {
                        tokio::time::sleep_until(due.into()).await;
                        None
                    }
                    // Timed from when it was due: the wait behind the previous answer is
                    // latency the server caused. (A request sent on time is timed from its
                    // send, so the timer's own coarseness is not counted.)
                    due => due,
                };
                let mut builder = match &request.body {
                    Some(body) => client
                        .post(&request.url)
                        .header("content-type", request.content_type)
                        .header("x-arc-database", &database)
                        .body(body.clone()),
                    None => client.get(&request.url),
                };
                if let Some(token) = &token {
                    builder = builder.bearer_auth(token);
                }
                let sent = late.unwrap_or_else(Instant::now);
                let outcome = match builder.send().await {
                    Ok(response) if response.status().is_success() => {
                        if is_query {
                            match response.bytes().await {
                                Ok(body) => Ok(count_result_rows(&body, arrow_query)),
                                Err(error) => Err(error.to_string()),
                            }
                        } else {
                            Ok(request.rows)
                        }
                    }
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        Err(format!("{status}: {text}"))
                    }
                    Err(error) => Err(error.to_string()),
                };
                match outcome {
                    Ok(rows) => {
                        latencies.push(sent.elapsed());
                        rows_done.fetch_add(rows, Ordering::Relaxed);
                    }
                    Err(message) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(message);
                    }
                }
            }
            (latencies, first_error)
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(cli.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (mut worker_latencies, worker_error) = joined.context("bench worker")?;
        latencies.append(&mut worker_latencies);
        if first_error.is_none() {
            first_error = worker_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| percentile_ms(&latencies, p);
    let requests_ok = latencies.len() as f64;
    let rows = rows_done.load(Ordering::Relaxed) as f64;
    let error_count = errors.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "mode": match cli.command {
            Command::Query { .. } => "query",
            Command::Get { .. } => "get",
            _ => "write",
        },
        "seconds": elapsed,
        "requests_ok": requests_ok,
        "requests_per_s": requests_ok / elapsed,
        "rows": rows,
        "rows_per_s": rows / elapsed,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": percentile(1.0),
        "errors": error_count,
        "first_error": first_error,
    });
    if cli.json {
        println!("{report}");
    } else {
        println!(
            "{} requests in {:.1}s ({:.0}/s), {:.0} rows/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
            requests_ok,
            elapsed,
            requests_ok / elapsed,
            rows / elapsed,
            percentile(0.50),
            percentile(0.99),
            percentile(1.0),
            error_count
        );
        if let Some(message) = report["first_error"].as_str() {
            println!("first error: {message}");
        }
    }
    if requests_ok == 0.0 {
        bail!("no request succeeded");
    }
    Ok(())
}

/// How long one row may take to show on the reader before the run fails.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `samples` rows one after the other to `base` and times each from its 204 until
/// `reader` answers a count that includes it.
async fn visible_bench(
    cli: &Cli,
    base: &str,
    reader: &str,
    samples: usize,
    database: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let post = |url: String| {
        let builder = client.post(url).header("x-arc-database", database);
        match &cli.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    };
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("?")
            .to_string()
    };
    // Sequence numbers start at the clock, so rows of an earlier run never count as visible.
    let first = chrono::Utc::now().timestamp_micros();
    let mut latencies = Vec::with_capacity(samples);
    let mut polls = 0u64;
    let started = Instant::now();
    for seq in first..first + samples as i64 {
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let response = post(format!("{base}/api/v1/write/line-protocol"))
            .header("content-type", "text/plain")
            .body(format!("visible,probe=x seq={seq}i {now_ns}\n"))
            .send()
            .await
            .context("writing to the primary")?;
        let acked = Instant::now();
        if !response.status().is_success() {
            let status = response.status();
            bail!("write refused: {status}: {}", response.text().await?);
        }
        let lsn = header(&response, "x-arc-lsn");
        let query =
            serde_json::json!({ "sql": format!("SELECT count(*) FROM visible WHERE seq = {seq}") });
        loop {
            polls += 1;
            let response = post(format!("{reader}/api/v1/query"))
                .json(&query)
                .send()
                .await
                .context("querying the reader")?;
            let applied = header(&response, "x-arc-applied-lsn");
            // Before the table's first row reaches the reader the query is an error: not yet.
            let count = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|answer| answer["data"][0][0].as_u64())
                .unwrap_or(0);
            if count > 0 {
                latencies.push(acked.elapsed());
                break;
            }
            if acked.elapsed() > VISIBLE_TIMEOUT {
                bail!(
                    "seq={seq} (lsn {lsn}) not visible on the reader after {VISIBLE_TIMEOUT:?}; \
                     it has applied lsn {applied}"
                );
            }
            // A blocking sleep: tokio's timer rounds up to whole milliseconds, coarser than the
            // delays measured. No request is in flight meanwhile, so it holds nothing up.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| percentile_ms(&latencies, p);
    if cli.json {
        let report = serde_json::json!({
            "mode": "visible",
            "seconds": elapsed,
            "samples": latencies.len(),
            "polls": polls,
            "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99),
            "max_ms": percentile(1.0),
        });
        println!("{report}");
    } else {
        println!(
            "{} rows in {:.1}s ({} polls), ack to visible on the reader: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len(),
            elapsed,
            polls,
            percentile(0.50),
            percentile(0.99),
            percentile(1.0)
        );
    }
    Ok(())
}

fn count_result_rows(body: &[u8], arrow: bool) -> u64 {
    if arrow {
        let Ok(reader) =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        else {
            return 0;
        };
        reader
            .filter_map(Result::ok)
            .map(|batch| batch.num_rows() as u64)
            .sum()
    } else {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|value| value.get("row_count").and_then(serde_json::Value::as_u64))
            .unwrap_or(0)
    }
}

fn line_protocol(measurement: &str, rows: usize, hosts: usize, start_ns: i64) -> Vec<u8> {
    use std::fmt::Write;
    let mut text = String::with_capacity(rows * 120);
    for row in 0..rows {
        let host = row % hosts.max(1);
        let value = (row % 1000) as f64 / 10.0;
        let _ = writeln!(
            text,
            "{measurement},host=host-{host},region=us-east-{} usage_user={value},usage_system={},usage_idle={},requests={}i {}",
            host % 4,
            value / 2.0,
            100.0 - value,
            row,
            start_ns + row as i64 * 1_000_000
        );
    }
    text.into_bytes()
}

fn msgpack_columnar(measurement: &str, rows: usize, hosts: usize, start_ns: i64) -> Vec<u8> {
    use rmpv::Value;
    let column = |values: Vec<Value>| Value::Array(values);
    let times = (0..rows)
        .map(|row| Value::from(start_ns + row as i64 * 1_000_000))
        .collect();
    let host_names = (0..rows)
        .map(|row| Value::from(format!("host-{}", row % hosts.max(1))))
        .collect();
    let regions = (0..rows)
        .map(|row| Value::from(format!("us-east-{}", (row % hosts.max(1)) % 4)))
        .collect();
    let user = (0..rows)
        .map(|row| Value::from((row % 1000) as f64 / 10.0))
        .collect();
    let system = (0..rows)
        .map(|row| Value::from((row % 1000) as f64 / 20.0))
        .collect();
    let idle = (0..rows)
        .map(|row| Value::from(100.0 - (row % 1000) as f64 / 10.0))
        .collect();
    let requests = (0..rows).map(|row| Value::from(row as i64)).collect();
    let payload = Value::Map(vec![
        (Value::from("m"), Value::from(measurement)),
        (
            Value::from("columns"),
            Value::Map(vec![
                (Value::from("time"), column(times)),
                (Value::from("host"), column(host_names)),
                (Value::from("region"), column(regions)),
                (Value::from("usage_user"), column(user)),
                (Value::from("usage_system"), column(system)),
                (Value::from("usage_idle"), column(idle)),
                (Value::from("requests"), column(requests)),
            ]),
        ),
        (
            Value::from("tag_keys"),
            Value::Array(vec![Value::from("host"), Value::from("region")]),
        ),
    ]);
    let mut bytes = Vec::with_capacity(rows * 64);
    // Writing into a Vec cannot fail.
    rmpv::encode::write_value(&mut bytes, &payload).expect("encoding into a Vec");
    bytes
}
