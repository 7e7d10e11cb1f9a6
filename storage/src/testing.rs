//! Test helpers: [`FailingObjectStore`], an `ObjectStore` wrapper that injects faults.
//!
//! Compiled for this crate's tests and, with the `testsuite` feature, for other crates' tests.
//! Faults are armed per operation kind and key prefix and fire a given number of times:
//! - [`FaultTiming::Before`]: the call fails without reaching the inner store (a refused
//!   connection);
//! - [`FaultTiming::After`]: the call reaches the inner store and takes effect, then the caller
//!   gets an error anyway (a timeout or 5xx after the write landed): the ambiguous outcome the
//!   catalog must resolve by reading the slot back.
//!
//! A latency, if set, delays every call (to widen race windows in concurrency tests).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Which operation a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `put_opts`.
    Put,
    /// `get_opts` (and so `get`, `head`).
    Get,
}

/// When an injected error is returned relative to the real operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTiming {
    /// Fail without performing the operation.
    Before,
    /// Perform the operation, then return an error instead of its result.
    After,
}

#[derive(Debug, Clone)]
struct Fault {
    op: FaultOp,
    timing: FaultTiming,
    prefix: String,
    remaining: u32,
}

#[derive(Debug, Default)]
struct FaultState {
    faults: Vec<Fault>,
    latency: Duration,
    injected: u64,
    /// Puts ignore their mode, as S3-compatible servers that ignore `If-None-Match` do.
    ignore_put_modes: bool,
}

/// An `ObjectStore` that forwards to an inner store and injects errors and latency.
#[derive(Debug)]
pub struct FailingObjectStore {
    inner: Arc<dyn ObjectStore>,
    state: Mutex<FaultState>,
}

impl FailingObjectStore {
    /// Wraps `inner` with no faults armed.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            state: Mutex::new(FaultState::default()),
        }
    }

    /// Makes the next `count` operations `op` on keys starting with `prefix` fail at `timing`.
    pub fn inject(&self, op: FaultOp, timing: FaultTiming, prefix: &str, count: u32) {
        self.lock().faults.push(Fault {
            op,
            timing,
            prefix: prefix.to_string(),
            remaining: count,
        });
    }

    /// Delays every operation by `latency` (zero to disable).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Makes every put overwrite whatever its mode asks (`true`), like a store that ignores
    /// conditional writes.
    pub fn set_ignore_put_modes(&self, ignore: bool) {
        self.lock().ignore_put_modes = ignore;
    }

    /// Disarms every fault and removes the latency.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.faults.clear();
        state.latency = Duration::ZERO;
    }

    /// Returns how many errors have been injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // A test that panicked while holding the lock has failed already; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one armed fault matching `op` and `location`, if any.
    fn take_fault(&self, op: FaultOp, location: &Path) -> Option<FaultTiming> {
        let mut state = self.lock();
        let index = state.faults.iter().position(|fault| {
            fault.op == op && fault.remaining > 0 && location.as_ref().starts_with(&fault.prefix)
        })?;
        let fault = &mut state.faults[index];
        fault.remaining -= 1;
        let timing = fault.timing;
        if fault.remaining == 0 {
            state.faults.remove(index);
        }
        state.injected += 1;
        Some(timing)
    }

    async fn delay(&self) {
        let latency = self.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
}

fn injected_error(location: &Path, timing: FaultTiming) -> object_store::Error {
    object_store::Error::Generic {
        store: "FailingObjectStore",
        source: format!("injected 503 service unavailable ({timing:?}) on {location}").into(),
    }
}

impl fmt::Display for FailingObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FailingObjectStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FailingObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        self.delay().await;
        if self.lock().ignore_put_modes {
            opts.mode = PutMode::Overwrite;
        }
        match self.take_fault(FaultOp::Put, location) {
            Some(FaultTiming::Before) => Err(injected_error(location, FaultTiming::Before)),
            Some(FaultTiming::After) => {
                // The write may land or be refused; either way the caller only sees an error.
                let _ = self.inner.put_opts(location, payload, opts).await;
                Err(injected_error(location, FaultTiming::After))
            }
            None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.delay().await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.delay().await;
        match self.take_fault(FaultOp::Get, location) {
            Some(timing) => Err(injected_error(location, timing)),
            None => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.delay().await;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.delay().await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.delay().await;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.delay().await;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutMode};

    use super::*;

    #[tokio::test]
    async fn test_should_inject_errors_before_and_after_landing() {
        let store = FailingObjectStore::new(Arc::new(InMemory::new()));
        let key = Path::from("a/b");
        store.inject(FaultOp::Put, FaultTiming::Before, "a/", 1);
        assert!(
            store
                .put(&key, PutPayload::from_static(b"1"))
                .await
                .is_err()
        );
        assert!(matches!(
            store.get(&key).await,
            Err(object_store::Error::NotFound { .. })
        ));

        store.inject(FaultOp::Put, FaultTiming::After, "a/", 1);
        let create = PutOptions::from(PutMode::Create);
        assert!(
            store
                .put_opts(&key, PutPayload::from_static(b"2"), create.clone())
                .await
                .is_err()
        );
        let landed = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(landed.as_ref(), b"2");

        // Faults are spent; a key outside the prefix was never affected.
        store
            .put(&Path::from("c"), PutPayload::from_static(b"3"))
            .await
            .unwrap();
        assert_eq!(store.injected(), 2);
        store.inject(FaultOp::Get, FaultTiming::Before, "a/", 1);
        assert!(store.get(&key).await.is_err());
        assert!(store.get(&key).await.is_ok());
    }
}
