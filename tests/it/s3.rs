//! The end-to-end test against a real S3 API: an s3s-fs server started in this process on
//! loopback, the node configured for it only through `ARC_STORAGE_*` variables.

use std::net::SocketAddr;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

use crate::e2e::{check_everything, write_everything};
use crate::harness::TestNode;

const ACCESS_KEY: &str = "arc-test-access";
const SECRET_KEY: &str = "arc-test-secret-key-0123456789";
/// The bucket the server serves (a directory of its root).
pub const BUCKET: &str = "arc-data";

/// An S3 API (s3s-fs) over a directory, served in this process on loopback.
pub struct S3Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The accept loop; its connections live in a `JoinSet` it owns, so aborting it closes
    /// every connection too (pooled keep-alive connections included).
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Serves `root` on a fresh loopback port.
    pub async fn start(root: &std::path::Path) -> S3Server {
        Self::start_on(root, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Serves `root` on `addr` (e.g. the address of a stopped server, to bring it back).
    pub async fn start_on(root: &std::path::Path, addr: SocketAddr) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).expect("creating the bucket directory");
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs over the temp dir");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3 = builder.build();
        // s3s-fs checks `If-None-Match: *` and then writes, so racing creates of one key can
        // all succeed; S3 and MinIO decide them atomically (one winner). Serializing the
        // conditional PUTs makes the test server keep the promise the catalog relies on.
        let creates = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (s3, creates) = (s3.clone(), creates.clone());
                async move {
                    let conditional = request.method() == hyper::Method::PUT
                        && request.headers().contains_key(hyper::header::IF_NONE_MATCH);
                    let _serialized = if conditional {
                        Some(creates.lock_owned().await)
                    } else {
                        None
                    };
                    hyper::service::Service::call(&s3, request).await
                }
            });
        let listener = TcpListener::bind(addr).await.expect("binding s3");
        let addr = listener.local_addr().expect("s3 address");
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let connection = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                connections.spawn(async move {
                    let _ = connection.await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        S3Server { addr, task }
    }

    /// The `ARC_STORAGE_*` variables that point a node at this server.
    pub fn node_env(&self) -> Vec<(String, String)> {
        [
            ("ARC_STORAGE_BACKEND", "s3".to_string()),
            ("ARC_STORAGE_S3_BUCKET", BUCKET.to_string()),
            ("ARC_STORAGE_S3_REGION", "us-east-1".to_string()),
            ("ARC_STORAGE_S3_ENDPOINT", format!("http://{}", self.addr)),
            ("ARC_STORAGE_S3_ACCESS_KEY", ACCESS_KEY.to_string()),
            ("ARC_STORAGE_S3_SECRET_KEY", SECRET_KEY.to_string()),
            ("ARC_STORAGE_S3_USE_SSL", "false".to_string()),
            ("ARC_STORAGE_S3_PATH_STYLE", "true".to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }

    /// Stops serving and closes every connection; waits until the port is free.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn test_should_run_end_to_end_on_s3_with_put_if_absent_catalog() {
    let s3_root = tempfile::tempdir().unwrap();
    let server = S3Server::start(s3_root.path()).await;
    let addr = server.addr;
    let endpoint = format!("http://{addr}");
    let mut env = server.node_env();
    env.push(("ARC_INGEST_MAX_BUFFER_SIZE".into(), "1000000".into()));
    env.push(("ARC_INGEST_MAX_BUFFER_AGE_MS".into(), "3600000".into()));
    // A user's defaults, not the harness's absolute paths: the WAL and the query cache under
    // `./data` of the working directory (the node's directory). An empty value is unset.
    env.push(("ARC_WAL_DIRECTORY".into(), String::new()));
    env.push(("ARC_QUERY_CACHE_DIR".into(), String::new()));
    let mut node = TestNode::prepare_owned(env);
    node.spawn().await;
    write_everything(&node).await;
    check_everything(&node, "s3 before flush").await;
    node.flush().await;
    check_everything(&node, "s3 after flush").await;
    let status = node.stop().await;
    assert!(status.success(), "{}", node.log());
    node.spawn().await;
    check_everything(&node, "s3 after restart").await;
    assert!(
        node.dir.join("data/cache").is_dir() && node.dir.join("data/wal").is_dir(),
        "the default relative directories were used"
    );

    // The data and the catalog went through the S3 API into the bucket.
    let bucket_dir = s3_root.path().join(BUCKET);
    assert!(
        bucket_dir.join("e2e").join("lp_types").is_dir(),
        "data objects in the bucket"
    );
    let log_dir = bucket_dir.join("_catalog").join("log");
    let mut records: Vec<_> = std::fs::read_dir(&log_dir)
        .expect("catalog log in the bucket")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".json"))
        .collect();
    records.sort();
    assert!(records.len() >= 4, "promotes and flushes: {records:?}");

    // Put-if-absent on an existing catalog slot is refused by the S3 API.
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_endpoint(&endpoint)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let taken = object_store::path::Path::from(format!("_catalog/log/{}", records[0]));
    let outcome = store
        .put_opts(
            &taken,
            PutPayload::from_static(b"{}"),
            PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(outcome, Err(object_store::Error::AlreadyExists { .. })),
        "{outcome:?}"
    );
}

/// The catalog's put-if-absent through the node's own code on the S3 API: catalog handles (as
/// in separate processes) racing for one slot, many times; exactly one wins each round, and
/// the losers see the winner's epoch.
#[tokio::test]
async fn test_should_let_exactly_one_catalog_win_a_slot_on_s3() {
    const HANDLES: usize = 3;
    const ROUNDS: u64 = 8;
    let s3_root = tempfile::tempdir().unwrap();
    let server = S3Server::start(s3_root.path()).await;
    let store = client(&server);
    let mut catalogs = Vec::new();
    for _ in 0..HANDLES {
        catalogs.push(
            arc_storage::Catalog::open(store.clone(), arc_storage::CatalogSettings::default())
                .await
                .unwrap(),
        );
    }
    for round in 0..ROUNDS {
        // Every handle has read the same epoch; a barrier releases their promotes together.
        for catalog in &catalogs {
            catalog.refresh().await.unwrap();
            assert_eq!(catalog.snapshot().epoch, round);
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(HANDLES));
        let mut racers = tokio::task::JoinSet::new();
        for (index, catalog) in catalogs.iter().enumerate() {
            let (catalog, barrier) = (catalog.clone(), barrier.clone());
            racers.spawn(async move {
                let node = format!("n{index}");
                barrier.wait().await;
                let outcome = catalog
                    .promote_if(round, &node, 0, vec![node.clone()])
                    .await;
                (node, outcome)
            });
        }
        let mut winners = Vec::new();
        while let Some(joined) = racers.join_next().await {
            let (node, outcome) = joined.expect("racer task");
            match outcome {
                Ok(epoch) => {
                    assert_eq!(epoch, round + 1);
                    winners.push(node);
                }
                Err(arc_storage::CatalogError::Fenced { current_epoch, .. }) => {
                    assert_eq!(current_epoch, round + 1, "{node} lost to the new epoch");
                }
                Err(error) => panic!("{node}: {error}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let fresh =
            arc_storage::Catalog::open(store.clone(), arc_storage::CatalogSettings::default())
                .await
                .unwrap();
        assert_eq!(fresh.snapshot().primary.as_ref(), Some(&winners[0]));
    }
    server.stop().await;
}

/// An object store client of `server`'s bucket.
fn client(server: &S3Server) -> std::sync::Arc<dyn ObjectStore> {
    std::sync::Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(format!("http://{}", server.addr))
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap(),
    )
}

/// The catalog log is truncated through the S3 API too (bulk deletes, listing with an offset),
/// and a catalog reopened over S3 after it equals the one that wrote it.
#[tokio::test]
async fn test_should_truncate_the_catalog_log_on_s3() {
    use arc_storage::{Catalog, CatalogSettings, DataObject, Flush, RecordBody, TableId};
    let s3_root = tempfile::tempdir().unwrap();
    let server = S3Server::start(s3_root.path()).await;
    let store = client(&server);
    // A checkpoint every ten records: the third one truncates the log behind the first.
    let catalog = Catalog::open(store.clone(), CatalogSettings::for_test())
        .await
        .unwrap();
    let epoch = catalog.promote("a", 0).await.unwrap();
    for lsn in 1..=44u64 {
        let flush = RecordBody::Flush(Flush {
            table: TableId::new("db", "cpu"),
            lsn_first: lsn,
            lsn_last: lsn,
            objects: vec![DataObject {
                path: format!("db/cpu/o{lsn}.parquet"),
                time_range: arc_storage::TimeRange {
                    start_ns: 0,
                    end_ns: 1,
                },
                rows: 1,
                bytes: 1,
            }],
            columns: Vec::new(),
        });
        catalog.commit(epoch, "a", flush).await.unwrap();
    }
    let log_dir = s3_root.path().join(BUCKET).join("_catalog").join("log");
    let mut slots: Vec<u64> = std::fs::read_dir(&log_dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().to_string();
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    slots.sort_unstable();
    assert_eq!(
        slots,
        (21..=45).collect::<Vec<_>>(),
        "slots left in the bucket"
    );
    let reopened = Catalog::open(store, CatalogSettings::for_test())
        .await
        .unwrap();
    assert_eq!(*reopened.snapshot(), *catalog.snapshot());
    server.stop().await;
}
