//! A table of bad inputs: each gets its documented 4xx and a message naming what failed; the
//! node keeps serving; nothing of a rejected request appears in any query.

use serde_json::{Value, json};

use crate::e2e::{gzip, msgpack, zstd};
use crate::harness::TestNode;

struct Case {
    name: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// Lowercase substrings the error message must contain.
    mentions: Vec<&'static str>,
}

fn lp(name: &'static str, body: &str, status: u16, mentions: &[&'static str]) -> Case {
    Case {
        name,
        path: "/api/v1/write/line-protocol".into(),
        headers: vec![("x-arc-database", "bad".into())],
        body: body.as_bytes().to_vec(),
        status,
        mentions: mentions.to_vec(),
    }
}

fn mp(name: &'static str, body: Vec<u8>, status: u16, mentions: &[&'static str]) -> Case {
    Case {
        name,
        path: "/api/v1/write/msgpack".into(),
        headers: vec![("x-arc-database", "bad".into())],
        body,
        status,
        mentions: mentions.to_vec(),
    }
}

fn sql(name: &'static str, text: &str, mentions: &[&'static str]) -> Case {
    Case {
        name,
        path: "/api/v1/query".into(),
        headers: vec![("content-type", "application/json".into())],
        body: serde_json::to_vec(&json!({ "sql": text })).unwrap(),
        status: 400,
        mentions: mentions.to_vec(),
    }
}

fn cases() -> Vec<Case> {
    let big_zeros = vec![0u8; 4 << 20];
    vec![
        lp("no fields", "cpu,host=a 1", 400, &["line 1"]),
        lp("bad integer", "cpu v=12ai 1", 400, &["line 1"]),
        lp(
            "second line bad",
            "cpu,host=z v=1 1\ncpu v= 2",
            400,
            &["line 2"],
        ),
        lp(
            "unterminated string",
            "cpu,host=z v=1 1\n\ncpu s=\"abc 3",
            400,
            &["line 3"],
        ),
        lp("bad timestamp", "cpu v=1 notatime", 400, &["line 1"]),
        lp("trailing content", "cpu v=1 1 extra", 400, &["line 1"]),
        lp("duplicate field", "cpu v=1,v=2 1", 400, &["line 1"]),
        lp(
            "type conflict in request",
            "cpu v=1i 1\ncpu v=1.5 2",
            400,
            &["line 2"],
        ),
        lp(
            "measurement starts with digit",
            "1cpu v=1 1",
            400,
            &["line 1"],
        ),
        lp("measurement with space", "my\\ cpu v=1 1", 400, &["line 1"]),
        lp(
            "tag named time",
            "cpu,time=x v=1 1",
            400,
            &["line 1", "time"],
        ),
        lp("empty body", "", 400, &[]),
        Case {
            name: "bad precision",
            path: "/api/v1/write/line-protocol?precision=h".into(),
            headers: vec![("x-arc-database", "bad".into())],
            body: b"cpu v=1 1".to_vec(),
            status: 400,
            mentions: vec!["precision"],
        },
        Case {
            name: "timestamp overflow",
            path: "/write?db=bad&precision=s".into(),
            headers: vec![],
            body: b"cpu v=1 99999999999999999".to_vec(),
            status: 400,
            mentions: vec!["line 1"],
        },
        Case {
            name: "non-utf8 body",
            path: "/api/v1/write/line-protocol".into(),
            headers: vec![("x-arc-database", "bad".into())],
            body: vec![b'c', b'p', b'u', b' ', b'v', b'=', 0xff, 0xfe],
            status: 400,
            mentions: vec!["utf-8"],
        },
        Case {
            name: "bad database name",
            path: "/api/v1/write/line-protocol".into(),
            headers: vec![("x-arc-database", "9bad".into())],
            body: b"cpu v=1 1".to_vec(),
            status: 400,
            mentions: vec!["9bad"],
        },
        Case {
            name: "database name too long",
            path: format!("/write?db={}", "d".repeat(65)),
            headers: vec![],
            body: b"cpu v=1 1".to_vec(),
            status: 400,
            mentions: vec!["database"],
        },
        mp("not msgpack", vec![0xc1, 0xc1, 0xc1], 400, &[]),
        mp(
            "truncated msgpack",
            msgpack(&json!({"m": "cpu", "columns": {"v": [1, 2, 3]}}))[..12].to_vec(),
            400,
            &[],
        ),
        mp(
            "length mismatch",
            msgpack(&json!({"m": "cpu", "columns": {"time": [1, 2], "v": [1.0]}})),
            400,
            &["v"],
        ),
        mp(
            "missing measurement",
            msgpack(&json!({"columns": {"v": [1.0]}})),
            400,
            &["m"],
        ),
        mp(
            "bad measurement name",
            msgpack(&json!({"m": "bad name", "fields": {"v": 1}})),
            400,
            &["bad name"],
        ),
        mp(
            "string times",
            msgpack(&json!({"m": "cpu", "columns": {"time": ["yesterday"], "v": [1.0]}})),
            400,
            &["time"],
        ),
        mp(
            "row without fields",
            msgpack(&json!({"m": "cpu", "t": 1})),
            400,
            &["fields"],
        ),
        mp("top-level integer", msgpack(&json!(42)), 400, &[]),
        mp(
            "nested field value",
            msgpack(&json!({"m": "cpu", "fields": {"v": {"x": 1}}})),
            400,
            &["v"],
        ),
        mp(
            "truncated gzip",
            gzip(b"cpu v=1 1")[..10].to_vec(),
            400,
            &["gzip"],
        ),
        mp(
            "zstd garbage",
            vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4, 5],
            400,
            &["zstd"],
        ),
        mp("gzip bomb", gzip(&big_zeros), 413, &[]),
        mp("zstd bomb", zstd(&big_zeros), 413, &[]),
        lp(
            "oversize body",
            &format!("cpu v=1 {}\n", "1".repeat(2 << 20)),
            413,
            &[],
        ),
        sql("syntax error", "SELEC 1", &[]),
        sql("drop table", "DROP TABLE cpu", &[]),
        sql("copy out", "COPY (SELECT 1) TO '/tmp/x.csv'", &[]),
        sql(
            "read_parquet",
            "SELECT * FROM read_parquet('/etc/passwd')",
            &["read_parquet"],
        ),
        sql("file as table", "SELECT * FROM '/etc/passwd'", &[]),
        sql("attach", "ATTACH '/tmp/x.db' AS x", &[]),
        sql("install", "INSTALL httpfs", &[]),
        sql("getenv", "SELECT getenv('HOME')", &["getenv"]),
        sql("two statements", "SELECT 1; SELECT 2", &[]),
        sql("unknown table", "SELECT * FROM bad.nosuch", &["nosuch"]),
        // Walking or dropping a 50,000-deep tree overflowed the stack and aborted the process.
        sql(
            "50,000 additions",
            &format!("SELECT {}", vec!["1"; 50_000].join("+")),
            &["1000"],
        ),
        sql(
            "50,000 ORs",
            &format!(
                "SELECT * FROM bad.cpu WHERE {}",
                vec!["v = 1"; 50_000].join(" OR ")
            ),
            &["1000"],
        ),
        sql(
            "50,000 UNION ALLs",
            &vec!["SELECT 1"; 50_000].join(" UNION ALL "),
            &["1000"],
        ),
        Case {
            name: "oversize sql",
            path: "/api/v1/query".into(),
            headers: vec![],
            body: serde_json::to_vec(
                &json!({ "sql": format!("SELECT '{}'", "x".repeat(2 << 20)) }),
            )
            .unwrap(),
            status: 413,
            mentions: vec![],
        },
        // DuckDB compares names case-insensitively: such a table could never be read again.
        lp(
            "columns differing only in case",
            "casey,host=a usage=1,USAGE=2 1",
            400,
            &["case", "usage"],
        ),
        lp("field named Time", "casey Time=1 1", 400, &["case", "time"]),
        lp(
            "a known column in another case",
            "cpu,HOST=b v=2 2",
            400,
            &["case", "host"],
        ),
        Case {
            name: "query body not json",
            path: "/api/v1/query".into(),
            headers: vec![],
            body: b"sql=SELECT 1".to_vec(),
            status: 400,
            mentions: vec![],
        },
    ]
}

#[tokio::test]
async fn test_should_reject_each_bad_input_with_its_status_and_store_nothing() {
    let node = TestNode::start(&[
        ("ARC_SERVER_MAX_PAYLOAD_SIZE", "1MB"),
        ("ARC_INGEST_MAX_BUFFER_SIZE", "1000000"),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
    ])
    .await;
    node.write_lp("bad", "cpu,host=seed v=1 1").await;
    node.write_lp("bad", "conflict v=1i 1").await;

    let mut all = cases();
    // Across requests: a column keeps its first type.
    all.push(lp(
        "type conflict across requests",
        "conflict v=1.5 2",
        400,
        &["v"],
    ));
    assert!(all.len() >= 25, "the table has {} cases", all.len());
    let mut failures = Vec::new();
    for case in &all {
        let headers: Vec<(&str, &str)> =
            case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, text) = node.post(&case.path, &headers, case.body.clone()).await;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = body["error"].as_str().unwrap_or_default().to_lowercase();
        if status != case.status {
            failures.push(format!(
                "{}: status {status} (want {}): {text}",
                case.name, case.status
            ));
            continue;
        }
        if message.is_empty() {
            failures.push(format!("{}: no error message: {text}", case.name));
        }
        for mention in &case.mentions {
            if !message.contains(mention) {
                failures.push(format!(
                    "{}: message lacks {mention:?}: {message}",
                    case.name
                ));
            }
        }
        // The node keeps serving after every case.
        let health = node.client.get(node.url("/health")).send().await.unwrap();
        assert_eq!(health.status(), 200, "after {}", case.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing of a rejected request is stored.
    assert_eq!(
        node.query("SELECT host, v FROM bad.cpu").await,
        vec![vec![json!("seed"), json!(1.0)]]
    );
    assert_eq!(
        node.query("SELECT v FROM bad.conflict").await,
        vec![vec![json!(1)]]
    );
    assert_eq!(
        node.query("SHOW TABLES FROM bad").await,
        vec![vec![json!("conflict")], vec![json!("cpu")]]
    );
}

/// With `ingest.lenient_line_protocol`, a line protocol write keeps its good lines and leaves
/// out each bad one whole, as Arc does (through InfluxDB 1.x's `/write`, gzipped as its
/// clients send it): 204 with `x-arc-skipped-lines`, counted in `/metrics`; a body of only bad
/// lines still gets 400, and MessagePack stays strict. Lines that conflict with what the table
/// stores (another type, a name differing only in case) are left out too, also after a restart.
#[tokio::test]
async fn test_a_lenient_node_keeps_the_good_lines_of_a_write() {
    let mut node = TestNode::start(&[("ARC_INGEST_LENIENT_LINE_PROTOCOL", "true")]).await;
    let body = "cpu,host=a v=1 1\n\
                cpu v= 2\n\
                cpu,host=b v=2i,w=5 3\n\
                cpu,host=c v=3,time=1 4\n\
                cpu,host=d v=4 5\n";
    let response = node
        .client
        .post(node.url("/write?db=lenient&precision=s"))
        .body(gzip(body.as_bytes()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["x-arc-skipped-lines"], "3");
    // Nothing of the bad lines is stored: not the `w` of the line whose `v` conflicts.
    assert_eq!(
        node.query("SELECT host, v FROM lenient.cpu ORDER BY time")
            .await,
        vec![vec![json!("a"), json!(1.0)], vec![json!("d"), json!(4.0)]]
    );
    let (status, answer) = node.query_raw("SELECT * FROM lenient.cpu LIMIT 1").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["columns"], json!(["time", "host", "v"]));
    let skipped = crate::cluster::metric_sum(&node, "arc_ingest_skipped_lines_total", "").await;
    assert_eq!(skipped, 3.0);

    let (status, text) = node
        .post("/write?db=lenient", &[], b"cpu v=\ncpu time=1".to_vec())
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("line 1"), "{text}");
    let (status, text) = node
        .post(
            "/api/v1/write/msgpack",
            &[("x-arc-database", "lenient")],
            msgpack(&json!([
                {"m": "cpu", "t": 6000, "fields": {"v": 6.0}},
                {"m": "cpu", "t": 7000, "fields": {"time": 1}}
            ])),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        node.query("SELECT count(*) FROM lenient.cpu").await,
        vec![vec![json!(2)]]
    );

    // Against the stored columns (`host` a tag, `v` a float): before and after a restart.
    let against_stored = "cpu,host=e v=5i 10\n\
                          cpu,host=f V=6 11\n\
                          cpu host=\"g\",v=7 12\n\
                          cpu,host=h v=8,Time=1 13\n\
                          cpu,host=i v=9,idle=1i 14\n\
                          mem,host=j used=1i 15\n";
    for round in ["before the restart", "after the restart"] {
        let response = node
            .client
            .post(node.url("/write?db=lenient&precision=s"))
            .body(against_stored)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 204, "{round}");
        assert_eq!(response.headers()["x-arc-skipped-lines"], "4", "{round}");
        node.stop().await;
        node.spawn().await;
    }
    assert_eq!(
        node.query("SELECT host, v, idle FROM lenient.cpu WHERE time >= '1970-01-01T00:00:10Z' ORDER BY time")
            .await,
        vec![
            vec![json!("i"), json!(9.0), json!(1)],
            vec![json!("i"), json!(9.0), json!(1)]
        ]
    );
    assert_eq!(
        node.query("SELECT count(*) FROM lenient.mem").await,
        vec![vec![json!(2)]]
    );
}
