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
const BUCKET: &str = "arc-data";

/// Serves an S3 API over `root` on a loopback port until the test ends.
async fn start_s3(root: &std::path::Path) -> SocketAddr {
    std::fs::create_dir_all(root.join(BUCKET)).expect("creating the bucket directory");
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs over the temp dir");
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding s3");
    let addr = listener.local_addr().expect("s3 address");
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn test_should_run_end_to_end_on_s3_with_put_if_absent_catalog() {
    let s3_root = tempfile::tempdir().unwrap();
    let addr = start_s3(s3_root.path()).await;
    let endpoint = format!("http://{addr}");
    let env = [
        ("ARC_STORAGE_BACKEND", "s3"),
        ("ARC_STORAGE_S3_BUCKET", BUCKET),
        ("ARC_STORAGE_S3_REGION", "us-east-1"),
        ("ARC_STORAGE_S3_ENDPOINT", endpoint.as_str()),
        ("ARC_STORAGE_S3_ACCESS_KEY", ACCESS_KEY),
        ("ARC_STORAGE_S3_SECRET_KEY", SECRET_KEY),
        ("ARC_STORAGE_S3_USE_SSL", "false"),
        ("ARC_STORAGE_S3_PATH_STYLE", "true"),
        ("ARC_INGEST_MAX_BUFFER_SIZE", "1000000"),
        ("ARC_INGEST_MAX_BUFFER_AGE_MS", "3600000"),
    ];
    let mut node = TestNode::start(&env).await;
    write_everything(&node).await;
    check_everything(&node, "s3 before flush").await;
    node.flush().await;
    check_everything(&node, "s3 after flush").await;
    let status = node.stop().await;
    assert!(status.success(), "{}", node.log());
    node.spawn().await;
    check_everything(&node, "s3 after restart").await;

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
