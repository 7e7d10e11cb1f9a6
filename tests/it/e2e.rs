//! End to end through the real binary: every ingest endpoint and format, read back value for
//! value and type for type through JSON and Arrow, before and after the flush, and after a
//! restart.

use std::io::Write;

use arrow::datatypes::{DataType, TimeUnit};
use serde_json::{Value, json};

use crate::harness::TestNode;

/// Converts JSON to MessagePack (integers stay integers, floats stay floats).
pub fn msgpack(value: &Value) -> Vec<u8> {
    fn convert(value: &Value) -> rmpv::Value {
        match value {
            Value::Null => rmpv::Value::Nil,
            Value::Bool(flag) => rmpv::Value::Boolean(*flag),
            Value::Number(number) => {
                if let Some(int) = number.as_i64() {
                    rmpv::Value::from(int)
                } else if let Some(uint) = number.as_u64() {
                    rmpv::Value::from(uint)
                } else {
                    rmpv::Value::from(number.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(text) => rmpv::Value::from(text.as_str()),
            Value::Array(items) => rmpv::Value::Array(items.iter().map(convert).collect()),
            Value::Object(map) => rmpv::Value::Map(
                map.iter()
                    .map(|(key, value)| (rmpv::Value::from(key.as_str()), convert(value)))
                    .collect(),
            ),
        }
    }
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &convert(value)).expect("encoding msgpack");
    bytes
}

/// Gzips bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip finish")
}

/// Zstd-compresses bytes.
pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd")
}

const LP_TYPES: &str = concat!(
    r#"lp_types,host=a\,b\ c\=d,region=eu f=1.5,i=-42i,u=18446744073709551615u,bt=t,bf=false,s="say \"hi\" \\ back",e=1e3 1700000000123456789"#,
    "\n",
    r#"lp_types,host=plain,region=eu f=-0.25,i=9223372036854775807i,u=0u,bt=T,bf=F,s="x=1, y 2",e=2.5E-3 1700000000123456790"#,
    "\n",
    r#"lp_types,host=t3,region=eu bt=true,bf=f,s="" 1700000000123456791"#,
    "\n",
);

fn lp_types_expected() -> Vec<Vec<Value>> {
    vec![
        vec![
            json!("2023-11-14T22:13:20.123456789Z"),
            json!("a,b c=d"),
            json!("eu"),
            json!(1.5),
            json!(-42),
            json!(18446744073709551615u64),
            json!(true),
            json!(false),
            json!("say \"hi\" \\ back"),
            json!(1000.0),
        ],
        vec![
            json!("2023-11-14T22:13:20.12345679Z"),
            json!("plain"),
            json!("eu"),
            json!(-0.25),
            json!(9223372036854775807i64),
            json!(0),
            json!(true),
            json!(false),
            json!("x=1, y 2"),
            json!(0.0025),
        ],
        vec![
            json!("2023-11-14T22:13:20.123456791Z"),
            json!("t3"),
            json!("eu"),
            Value::Null,
            Value::Null,
            Value::Null,
            json!(true),
            json!(false),
            json!(""),
            Value::Null,
        ],
    ]
}

const LP_TYPES_SQL: &str =
    "SELECT time, host, region, f, i, u, bt, bf, s, e FROM e2e.lp_types ORDER BY time";
const PREC_SQL: &str = "SELECT p, time, v FROM e2e.prec WHERE p <> 'none' ORDER BY time";
const MP_SQL: &str = "SELECT time, host, v, n, ok, s FROM e2e.mp ORDER BY time";

fn prec_expected() -> Vec<Vec<Value>> {
    vec![
        vec![json!("s"), json!("2023-11-14T22:13:20Z"), json!(1)],
        vec![
            json!("ns"),
            json!("2023-11-14T22:13:20.000000003Z"),
            json!(4),
        ],
        vec![json!("us"), json!("2023-11-14T22:13:20.000002Z"), json!(3)],
        vec![json!("ms"), json!("2023-11-14T22:13:20.001Z"), json!(2)],
    ]
}

fn mp_expected() -> Vec<Vec<Value>> {
    let row = |time: &str, host: &str, v: f64, n: i64, ok: bool, s: &str| {
        vec![
            json!(time),
            json!(host),
            json!(v),
            json!(n),
            json!(ok),
            json!(s),
        ]
    };
    vec![
        row("2023-11-14T22:13:20Z", "h1", 1.5, 1, true, "a"),
        row("2023-11-14T22:13:20.001Z", "h2", 2.5, -2, false, "b"),
        row("2023-11-14T22:13:20.002Z", "h3", 3.5, 3, true, "c"),
        row("2023-11-14T22:13:20.003Z", "h4", 4.5, 4, false, "d"),
        row("2023-11-14T22:13:20.004Z", "h5", 5.5, 5, true, "e"),
        row("2023-11-14T22:13:25Z", "h6", 6.5, 6, false, "f"),
        row("2023-11-14T22:13:26Z", "h7", 7.5, 7, true, "g"),
    ]
}

pub async fn write_everything(node: &TestNode) {
    let (status, text) = node
        .post(
            "/api/v1/write/line-protocol",
            &[("x-arc-database", "e2e")],
            LP_TYPES.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, 204, "{text}");

    let precision_writes: [(&str, &str); 5] = [
        ("/write?db=e2e&precision=s", "prec,p=s v=1i 1700000000"),
        (
            "/api/v2/write?bucket=e2e&org=ignored&precision=ms",
            "prec,p=ms v=2i 1700000000001",
        ),
        (
            "/api/v1/write/line-protocol?precision=us",
            "prec,p=us v=3i 1700000000000002",
        ),
        (
            "/write?db=e2e&rp=ignored",
            "prec,p=ns v=4i 1700000000000000003",
        ),
        ("/api/v2/write?bucket=e2e", "prec,p=none v=5i"),
    ];
    for (path, body) in precision_writes {
        // `?db=` and `?bucket=` name the database on their own, as InfluxDB clients send it;
        // only Arc's own endpoint gets the header.
        let headers: &[(&str, &str)] = if path.starts_with("/api/v1/") {
            &[("x-arc-database", "e2e")]
        } else {
            &[]
        };
        let (status, text) = node.post(path, headers, body.as_bytes().to_vec()).await;
        assert_eq!(status, 204, "{path}: {text}");
    }

    let columnar = msgpack(&json!({
        "m": "mp",
        "columns": {
            "time": [1700000000000i64, 1700000000001i64],
            "host": ["h1", "h2"],
            "v": [1.5, 2.5],
            "n": [1, -2],
            "ok": [true, false],
            "s": ["a", "b"]
        },
        "tag_keys": ["host"]
    }));
    let row = msgpack(&json!({
        "m": "mp", "t": 1700000000002i64, "tags": {"host": "h3"},
        "fields": {"v": 3.5, "n": 3, "ok": true, "s": "c"}
    }));
    let batch = msgpack(&json!({"batch": [
        {"m": "mp", "t": 1700000000003000i64, "tags": {"host": "h4"},
         "fields": {"v": 4.5, "n": 4, "ok": false, "s": "d"}},
        {"m": "mp", "t": 1700000000004000000i64, "h": "h5",
         "fields": {"v": 5.5, "n": 5, "ok": true, "s": "e"}}
    ]}));
    let array = msgpack(&json!([
        {"m": "mp", "t": 1700000005i64, "tags": {"host": "h6"},
         "fields": {"v": 6.5, "n": 6, "ok": false, "s": "f"}}
    ]));
    let columnar_zstd = msgpack(&json!({
        "m": "mp",
        "columns": {"time": [1700000006i64], "host": ["h7"], "v": [7.5], "n": [7], "ok": [true], "s": ["g"]},
        "tag_keys": ["host"]
    }));
    for body in [
        columnar,
        gzip(&row),
        zstd(&batch),
        array,
        zstd(&columnar_zstd),
    ] {
        let (status, text) = node
            .post("/api/v1/write/msgpack", &[("x-arc-database", "e2e")], body)
            .await;
        assert_eq!(status, 204, "msgpack write: {text}");
    }
}

pub async fn check_everything(node: &TestNode, when: &str) {
    assert_eq!(
        node.query(LP_TYPES_SQL).await,
        lp_types_expected(),
        "{when}: lp types"
    );
    assert_eq!(
        node.query(PREC_SQL).await,
        prec_expected(),
        "{when}: precisions"
    );
    assert_eq!(node.query(MP_SQL).await, mp_expected(), "{when}: msgpack");

    // The row without a timestamp got the node's clock.
    let rows = node
        .query("SELECT epoch_ns(time) FROM e2e.prec WHERE p = 'none'")
        .await;
    let stamped = rows[0][0].as_i64().expect("epoch_ns is an integer");
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    assert!(
        (now - stamped).abs() < 600 * 1_000_000_000,
        "{when}: {stamped} vs {now}"
    );

    let batches = node.query_arrow(LP_TYPES_SQL).await;
    let schema = batches[0].schema();
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::Utf8,
            DataType::Utf8,
            DataType::Float64,
            DataType::Int64,
            DataType::UInt64,
            DataType::Boolean,
            DataType::Boolean,
            DataType::Utf8,
            DataType::Float64,
        ],
        "{when}: arrow types"
    );
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 3, "{when}: arrow rows");
    let times = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let time_column = times
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::TimestampNanosecondArray>()
        .expect("time is TimestampNanosecond");
    assert_eq!(
        time_column.value(0),
        1700000000123456789,
        "{when}: ns precision kept"
    );
    let unsigned = times
        .column(5)
        .as_any()
        .downcast_ref::<arrow::array::UInt64Array>()
        .expect("u is UInt64");
    assert_eq!(unsigned.value(0), u64::MAX, "{when}: u64 kept");
}

#[tokio::test]
async fn test_should_read_back_every_format_before_and_after_flush_and_restart() {
    // Large buffers: nothing flushes until the test says so.
    let mut node = TestNode::start(&[
        ("ARC_INGEST_MAX_BUFFER_SIZE", "1000000"),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
    ])
    .await;
    write_everything(&node).await;
    assert_eq!(node.parquet_files(), 0);
    check_everything(&node, "before flush").await;

    node.flush().await;
    assert!(node.parquet_files() >= 3, "flush wrote Parquet files");
    check_everything(&node, "after flush").await;

    let status = node.stop().await;
    assert!(
        status.success(),
        "clean stop: {status}; log:\n{}",
        node.log()
    );
    node.spawn().await;
    check_everything(&node, "after restart").await;

    // SHOW answers come from the node itself.
    let databases = node.query("SHOW DATABASES").await;
    assert!(databases.contains(&vec![json!("e2e")]), "{databases:?}");
    let tables = node.query("SHOW TABLES FROM e2e").await;
    assert_eq!(
        tables,
        vec![
            vec![json!("lp_types")],
            vec![json!("mp")],
            vec![json!("prec")]
        ]
    );
}

#[tokio::test]
async fn test_should_answer_bare_names_from_default_database_and_prune_by_time() {
    let node = TestNode::start(&[
        ("ARC_INGEST_MAX_BUFFER_SIZE", "1000000"),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
    ])
    .await;
    // Two hours of data in the default database, flushed into per-hour files.
    node.write_lp(
        "default",
        "cpu,host=a v=1 1700000000000000000\ncpu,host=a v=2 1700003600000000000",
    )
    .await;
    node.flush().await;
    node.write_lp("default", "cpu,host=b v=3 1700003601000000000")
        .await;
    let rows = node
        .query("SELECT host, v FROM cpu WHERE time >= '2023-11-14T23:00:00Z' ORDER BY time")
        .await;
    assert_eq!(
        rows,
        vec![vec![json!("a"), json!(2.0)], vec![json!("b"), json!(3.0)]]
    );
    let rows = node
        .query("SELECT count(*) FROM default.cpu WHERE time < TIMESTAMP '2023-11-14 23:00:00'")
        .await;
    assert_eq!(rows, vec![vec![json!(1)]]);
    let (status, body) = node.query_raw("SELECT * FROM nosuch").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["success"], false);
    assert!(body["error"].as_str().unwrap().contains("nosuch"), "{body}");
}

/// Every 204 says what it got: the WAL entry's LSN, the epoch it was written under (the same
/// until the node starts again, then higher), and where it is durable (`local` until WAL
/// replication).
#[tokio::test]
async fn test_should_tell_the_lsn_epoch_and_durability_of_every_write() {
    async fn write(node: &TestNode) -> (u64, u64, String) {
        let response = node
            .client
            .post(node.url("/api/v1/write/line-protocol"))
            .header("x-arc-database", "acks")
            .body("acks v=1 1")
            .send()
            .await
            .expect("write");
        assert_eq!(response.status().as_u16(), 204);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .to_str()
                .expect("ascii")
                .to_string()
        };
        let number = |name: &str| header(name).parse::<u64>().expect("a number");
        (
            number("x-arc-lsn"),
            number("x-arc-epoch"),
            header("x-arc-durability"),
        )
    }
    let mut node = TestNode::start(&[]).await;
    let (lsn1, epoch1, durability) = write(&node).await;
    let (lsn2, epoch2, _) = write(&node).await;
    assert_eq!(durability, "local");
    assert!(lsn2 > lsn1, "{lsn1} then {lsn2}");
    assert_eq!(epoch1, epoch2);
    assert!(epoch1 >= 1);
    node.stop().await;
    node.spawn().await;
    let (lsn3, epoch3, _) = write(&node).await;
    assert!(lsn3 > lsn2, "{lsn2} then {lsn3}");
    assert!(
        epoch3 > epoch2,
        "epoch {epoch2} then {epoch3} after a restart"
    );
}

/// InfluxDB client libraries check `/ping` (the Python client's `ping()` and `version()`, with
/// GET or HEAD and no token): 204 and the version header they read.
#[tokio::test]
async fn test_should_answer_influxdb_clients_ping_without_a_token() {
    let node = TestNode::start(&[]).await;
    let anonymous = reqwest::Client::new();
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let response = anonymous
            .request(method.clone(), node.url("/ping"))
            .send()
            .await
            .expect("ping");
        assert_eq!(response.status().as_u16(), 204, "{method}");
        let version = response.headers()["x-influxdb-version"].to_str().unwrap();
        assert!(version.starts_with("arc-node-"), "{method}: {version}");
    }
}
