//! Helpers shared by this crate's tests: a fixed start time, stores, and request headers.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::clock::ManualClock;
use crate::service::{AuthService, Bootstrap};
use crate::settings::AuthSettings;

/// A preset bootstrap token (≥ 32 characters).
pub(crate) const ADMIN_TOKEN: &str = "arc_test-bootstrap-admin-token-0123456789abcdef";

/// 2026-08-01T00:00:00Z.
pub(crate) fn start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_785_542_400, 0).expect("valid instant")
}

pub(crate) fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(start_time()))
}

pub(crate) fn memory_store() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

/// A real filesystem store on a fresh temp dir (kept alive by the returned guard).
pub(crate) fn local_store() -> (Arc<dyn ObjectStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
    (Arc::new(store), dir)
}

/// Opens a service with the preset [`ADMIN_TOKEN`] and a manual clock.
pub(crate) async fn open_service(
    store: &Arc<dyn ObjectStore>,
    clock: &Arc<ManualClock>,
) -> Arc<AuthService> {
    let (service, _) = open_with(
        store,
        clock,
        AuthSettings::with_bootstrap_token(ADMIN_TOKEN),
    )
    .await;
    service
}

pub(crate) async fn open_with(
    store: &Arc<dyn ObjectStore>,
    clock: &Arc<ManualClock>,
    settings: AuthSettings,
) -> (Arc<AuthService>, Bootstrap) {
    AuthService::open_with_clock(store.clone(), settings, clock.clone())
        .await
        .expect("auth service opens")
}

pub(crate) fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
    );
    headers
}

/// Returns every object of the store with its bytes.
pub(crate) async fn all_objects(store: &Arc<dyn ObjectStore>) -> Vec<(String, Vec<u8>)> {
    let metas: Vec<_> = store.list(None).try_collect().await.expect("list");
    let mut objects = Vec::new();
    for meta in metas {
        let bytes = store
            .get(&meta.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        objects.push((meta.location.to_string(), bytes.to_vec()));
    }
    objects
}
