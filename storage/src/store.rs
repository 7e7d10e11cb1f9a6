//! The object store handle ([`ObjectStorage`]) built from [`StorageSettings`], and the local
//! read-through cache of remote objects ([`ObjectCache`]).
//!
//! Every backend is wrapped as `Arc<dyn ObjectStore>`; the only backend-specific knowledge kept
//! afterwards is the root directory of the local backend, so DuckDB can read local objects in
//! place instead of through the cache.
//!
//! Hazards: the cache has no size bound yet (objects are immutable, so entries never go stale,
//! but they are only removed by deleting the directory), and one cache directory must not be
//! shared by two processes (each cleans the other's partial downloads at start).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::error::StorageError;
use crate::metrics;
use crate::paths;
use crate::settings::{Backend, StorageSettings, present};

/// A configured object store: where data objects and the catalog live.
///
/// Cheap to clone (the store is behind an `Arc`).
#[derive(Clone, Debug)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// Root directory of the local backend; `None` for remote stores. Keys map to files
    /// under it one path segment per directory.
    local_root: Option<PathBuf>,
    /// Human-readable description without secrets, for logs and `/api/v1/cluster/local`.
    description: String,
}

impl ObjectStorage {
    /// Builds the object store the settings describe. For the local backend the directory is
    /// created if missing and every write is fsynced before it returns.
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] if the settings are incomplete or the builder rejects them,
    /// [`StorageError::Io`] if the local directory cannot be created.
    pub fn open(settings: &StorageSettings) -> Result<ObjectStorage, StorageError> {
        settings.validate()?;
        match settings.backend {
            Backend::Local => open_local(&settings.local_path),
            Backend::S3 | Backend::Minio => open_s3(settings),
            Backend::Azure => open_azure(settings),
            Backend::Gcs => open_gcs(settings),
        }
    }

    /// Wraps an existing store (tests: `InMemory`, fault injection). `local_root` is the
    /// directory that holds the objects if they are plain files (a `LocalFileSystem` root).
    pub fn from_store(store: Arc<dyn ObjectStore>, local_root: Option<PathBuf>) -> ObjectStorage {
        let description = match &local_root {
            Some(root) => format!("local path={}", root.display()),
            None => format!("custom {store}"),
        };
        ObjectStorage {
            store,
            local_root,
            description,
        }
    }

    /// Returns the object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Returns the file that holds object `path`, if the backend is the local filesystem
    /// (DuckDB reads it in place); `None` for remote backends.
    pub fn local_path_of(&self, path: &Path) -> Option<PathBuf> {
        let root = self.local_root.as_ref()?;
        Some(join_key(root, path))
    }

    /// Returns the root directory of the local backend (`None` for remote backends).
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// Returns a description of the backend without secrets, e.g.
    /// `s3 bucket=data region=eu-west-1 endpoint=http://minio:9000 prefix=arc`.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Checks that the store answers, returning how long it took. A missing object is a
    /// fine answer: only errors count.
    ///
    /// # Errors
    ///
    /// [`StorageError::ObjectStore`] if the store cannot be reached or refuses the request.
    pub async fn probe(&self) -> Result<Duration, StorageError> {
        // Slot 0 is never written (sequence numbers start at 1), so this is a cheap HEAD.
        let key = paths::catalog_log_path(0);
        let started = Instant::now();
        match self.store.head(&key).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(started.elapsed()),
            Err(source) => Err(StorageError::object_store(key, source)),
        }
    }

    /// Checks that the store refuses to create an object that already exists (put-if-absent,
    /// S3's `If-None-Match: *`). The catalog log rests on it: every slot is created once, which
    /// is what makes one writer win each slot and fences the others. A store that ignores the
    /// condition (some S3-compatible servers do) would let two writers both "win" a slot,
    /// silently; refusing to start is the only safe answer. Costs two puts and a delete.
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] naming the store if the second create succeeded or the store
    /// does not implement it; [`StorageError::ObjectStore`] if the store cannot be written.
    pub async fn check_conditional_writes(&self) -> Result<(), StorageError> {
        let key = paths::conditional_write_probe_path();
        let create = || PutOptions::from(PutMode::Create);
        let first = self
            .store
            .put_opts(&key, PutPayload::from_static(b"first"), create())
            .await;
        if let Err(source) = first {
            return Err(self.conditional_write_error(&key, source));
        }
        let second = self
            .store
            .put_opts(&key, PutPayload::from_static(b"second"), create())
            .await;
        if let Err(error) = self.store.delete(&key).await {
            warn!(%key, %error, "could not delete the conditional write probe");
        }
        match second {
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(()),
            Ok(_) => Err(StorageError::Invalid(format!(
                "the object store ({}) ignored a conditional write: creating {key} a second time \
                 succeeded. The catalog log needs put-if-absent (S3 `If-None-Match: *`) to keep \
                 writers apart; use a store that supports it",
                self.description
            ))),
            Err(source) => Err(self.conditional_write_error(&key, source)),
        }
    }

    fn conditional_write_error(&self, key: &Path, source: object_store::Error) -> StorageError {
        match source {
            object_store::Error::NotImplemented { .. }
            | object_store::Error::NotSupported { .. } => StorageError::Invalid(format!(
                "the object store ({}) does not support conditional writes (put-if-absent, \
                     needed by the catalog log): {source}",
                self.description
            )),
            source => StorageError::object_store(key, source),
        }
    }
}

/// Maps a key to a file under `root`, one directory per path segment. Path segments are
/// already percent-encoded by `object_store` and can never be `.` or `..`.
fn join_key(root: &FsPath, path: &Path) -> PathBuf {
    let mut file = root.to_path_buf();
    for part in path.parts() {
        file.push(part.as_ref());
    }
    file
}

fn invalid(backend: Backend, error: object_store::Error) -> StorageError {
    StorageError::Invalid(format!("cannot build the {backend} object store: {error}"))
}

fn open_local(dir: &FsPath) -> Result<ObjectStorage, StorageError> {
    std::fs::create_dir_all(dir).map_err(|source| StorageError::io(dir, source))?;
    let root = dir
        .canonicalize()
        .map_err(|source| StorageError::io(dir, source))?;
    let store = LocalFileSystem::new_with_prefix(&root)
        .map_err(|error| invalid(Backend::Local, error))?
        // Remote stores are durable when a put returns; the local backend must be too, or a
        // catalog record could vanish in a power cut after the WAL below it was deleted.
        .with_fsync(true);
    Ok(ObjectStorage {
        store: Arc::new(store),
        description: format!("local path={}", root.display()),
        local_root: Some(root),
    })
}

/// Turns `https://host:port` into `https://bucket.host:port` for virtual-hosted requests,
/// unless the endpoint already names the bucket.
fn virtual_hosted_endpoint(url: &str, bucket: &str) -> String {
    let Some((scheme, host)) = url.split_once("://") else {
        return url.to_string();
    };
    if host.starts_with(&format!("{bucket}.")) {
        return url.to_string();
    }
    format!("{scheme}://{bucket}.{host}")
}

fn open_s3(settings: &StorageSettings) -> Result<ObjectStorage, StorageError> {
    let backend = settings.backend;
    let bucket = present(&settings.s3_bucket).expect("validate checked s3_bucket");
    let path_style = backend == Backend::Minio || settings.s3_path_style;
    // The environment supplies what settings leave out (credential chain, region).
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(!path_style);
    let mut description = format!("{backend} bucket={bucket}");
    if let Some(region) = present(&settings.s3_region) {
        builder = builder.with_region(region);
        description.push_str(&format!(" region={region}"));
    }
    if let Some(url) = settings.s3_endpoint_url() {
        let allow_http = !settings.s3_use_ssl || url.starts_with("http://");
        let endpoint = if path_style {
            url.clone()
        } else {
            virtual_hosted_endpoint(&url, bucket)
        };
        builder = builder.with_endpoint(&endpoint).with_allow_http(allow_http);
        description.push_str(&format!(" endpoint={endpoint}"));
    }
    if let (Some(access_key), Some(secret_key)) = (
        present(&settings.s3_access_key),
        present(&settings.s3_secret_key),
    ) {
        builder = builder
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key);
    }
    let store: Arc<dyn ObjectStore> =
        Arc::new(builder.build().map_err(|error| invalid(backend, error))?);
    let store = match settings.s3_prefix_normalized() {
        Some(prefix) => {
            description.push_str(&format!(" prefix={prefix}"));
            Arc::new(PrefixStore::new(store, prefix.as_str())) as Arc<dyn ObjectStore>
        }
        None => store,
    };
    Ok(ObjectStorage {
        store,
        local_root: None,
        description,
    })
}

fn open_azure(settings: &StorageSettings) -> Result<ObjectStorage, StorageError> {
    let account = present(&settings.azure_account).expect("validate checked azure_account");
    let container = present(&settings.azure_container).expect("validate checked azure_container");
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_account(account)
        .with_container_name(container);
    let mut description = format!("azure account={account} container={container}");
    if let Some(access_key) = present(&settings.azure_access_key) {
        builder = builder.with_access_key(access_key);
    }
    if let Some(endpoint) = present(&settings.azure_endpoint) {
        builder = builder
            .with_endpoint(endpoint.to_string())
            .with_allow_http(endpoint.starts_with("http://"));
        description.push_str(&format!(" endpoint={endpoint}"));
    }
    let store = builder
        .build()
        .map_err(|error| invalid(Backend::Azure, error))?;
    Ok(ObjectStorage {
        store: Arc::new(store),
        local_root: None,
        description,
    })
}

fn open_gcs(settings: &StorageSettings) -> Result<ObjectStorage, StorageError> {
    let bucket = present(&settings.gcs_bucket).expect("validate checked gcs_bucket");
    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
    if let Some(credentials) = &settings.gcs_credentials_file {
        builder = builder.with_service_account_path(credentials.to_string_lossy());
    }
    let store = builder
        .build()
        .map_err(|error| invalid(Backend::Gcs, error))?;
    Ok(ObjectStorage {
        store: Arc::new(store),
        local_root: None,
        description: format!("gcs bucket={bucket}"),
    })
}

/// Number of download locks; two keys that hash alike only wait for each other.
const DOWNLOAD_LOCK_STRIPES: usize = 64;
const TEMP_SUFFIX: &str = ".download.tmp";

/// Gives local files for objects so DuckDB can read them: the object's own file on the local
/// backend, else a copy downloaded once into `cache_dir`.
///
/// Cheap to clone. Objects are immutable (unique names, never rewritten), so a cached copy
/// never goes stale.
#[derive(Clone, Debug)]
pub struct ObjectCache {
    storage: ObjectStorage,
    cache_dir: PathBuf,
    /// Serializes downloads of the same key (striped by hash) so concurrent queries of one
    /// object download it once.
    download_locks: Arc<Vec<Mutex<()>>>,
}

impl ObjectCache {
    /// Creates the cache over `storage`, keeping copies in `cache_dir` (created if missing).
    /// Partial downloads left by a previous process are removed.
    ///
    /// # Errors
    ///
    /// [`StorageError::Io`] if the directory cannot be created.
    pub fn new(
        storage: &ObjectStorage,
        cache_dir: impl Into<PathBuf>,
    ) -> Result<ObjectCache, StorageError> {
        let cache_dir = cache_dir.into();
        if storage.local_root.is_none() {
            std::fs::create_dir_all(&cache_dir)
                .map_err(|source| StorageError::io(&cache_dir, source))?;
            remove_partial_downloads(&cache_dir);
        }
        Ok(ObjectCache {
            storage: storage.clone(),
            cache_dir,
            download_locks: Arc::new((0..DOWNLOAD_LOCK_STRIPES).map(|_| Mutex::new(())).collect()),
        })
    }

    /// Returns a local file holding object `path`: the real file on the local backend,
    /// else the cached copy, downloading it first if needed.
    ///
    /// # Errors
    ///
    /// [`StorageError::ObjectStore`] if the download fails (`NotFound` included),
    /// [`StorageError::Io`] if the copy cannot be written.
    pub async fn local_file(&self, path: &Path) -> Result<PathBuf, StorageError> {
        if let Some(file) = self.storage.local_path_of(path) {
            return Ok(file);
        }
        let file = join_key(&self.cache_dir, path);
        if tokio::fs::try_exists(&file).await.unwrap_or(false) {
            return Ok(file);
        }
        let _guard = self.download_locks[stripe_of(path)].lock().await;
        // Another task may have finished the download while we waited.
        if tokio::fs::try_exists(&file).await.unwrap_or(false) {
            return Ok(file);
        }
        self.download(path, &file).await?;
        Ok(file)
    }

    async fn download(&self, path: &Path, file: &FsPath) -> Result<(), StorageError> {
        let started = Instant::now();
        let parent = file.parent().expect("a cached file is below the cache dir");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| StorageError::io(parent, source))?;
        let temp = file.with_extension(format!("{:016x}{TEMP_SUFFIX}", rand::random::<u64>()));
        let result = self.download_to(path, &temp).await;
        if let Err(error) = result {
            // Best effort: a leftover temp file is removed at the next start anyway.
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(error);
        }
        tokio::fs::rename(&temp, file)
            .await
            .map_err(|source| StorageError::io(file, source))?;
        metrics::record_cache_download();
        debug!(key = %path, elapsed_ms = started.elapsed().as_millis() as u64, "object cached");
        Ok(())
    }

    async fn download_to(&self, path: &Path, temp: &FsPath) -> Result<(), StorageError> {
        let result = self
            .storage
            .store
            .get_opts(path, GetOptions::default())
            .await
            .map_err(|source| StorageError::object_store(path, source))?;
        let mut stream = result.into_stream();
        let mut out = tokio::fs::File::create(temp)
            .await
            .map_err(|source| StorageError::io(temp, source))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| StorageError::object_store(path, source))?;
            out.write_all(&chunk)
                .await
                .map_err(|source| StorageError::io(temp, source))?;
        }
        // The rename publishes the copy; without the fsync a power cut could leave a
        // published but empty file that would never be downloaded again.
        out.sync_all()
            .await
            .map_err(|source| StorageError::io(temp, source))?;
        Ok(())
    }
}

fn stripe_of(path: &Path) -> usize {
    let mut hasher = DefaultHasher::new();
    path.as_ref().hash(&mut hasher);
    (hasher.finish() % DOWNLOAD_LOCK_STRIPES as u64) as usize
}

fn remove_partial_downloads(dir: &FsPath) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => remove_partial_downloads(&path),
            Ok(_) if path.to_string_lossy().ends_with(TEMP_SUFFIX) => {
                if let Err(error) = std::fs::remove_file(&path) {
                    warn!(path = %path.display(), %error, "cannot remove partial download");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    use super::*;
    use crate::testing::FailingObjectStore;

    #[tokio::test]
    async fn test_should_refuse_a_store_that_ignores_conditional_writes() {
        let dir = tempfile::tempdir().unwrap();
        let local = ObjectStorage::open(&StorageSettings::local(dir.path().join("objects")));
        local.unwrap().check_conditional_writes().await.unwrap();
        let failing = Arc::new(FailingObjectStore::new(Arc::new(InMemory::new())));
        let storage = ObjectStorage::from_store(failing.clone(), None);
        storage.check_conditional_writes().await.unwrap();
        failing.set_ignore_put_modes(true);
        let error = storage.check_conditional_writes().await.unwrap_err();
        assert!(
            error.to_string().contains("ignored a conditional write")
                && error.to_string().contains("FailingObjectStore"),
            "{error}"
        );
        // The probes are deleted.
        assert_eq!(failing.list(None).count().await, 0);
    }

    #[tokio::test]
    async fn test_should_open_local_store_and_map_keys_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StorageSettings::local(dir.path().join("objects"));
        let storage = ObjectStorage::open(&settings).unwrap();
        let key = Path::from("db/cpu/2024/01/02/03/x.parquet");
        storage
            .store()
            .put(&key, PutPayload::from_static(b"hello"))
            .await
            .unwrap();
        let file = storage.local_path_of(&key).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"hello");
        assert!(storage.describe().starts_with("local path="));
        storage.probe().await.unwrap();

        let cache = ObjectCache::new(&storage, dir.path().join("cache")).unwrap();
        assert_eq!(cache.local_file(&key).await.unwrap(), file);
    }

    #[tokio::test]
    async fn test_should_download_remote_object_once() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(InMemory::new());
        let storage = ObjectStorage::from_store(memory.clone(), None);
        let key = Path::from("db/cpu/2024/01/02/03/y.parquet");
        memory
            .put(&key, PutPayload::from(Bytes::from_static(b"remote")))
            .await
            .unwrap();
        // A stale partial download from an earlier process is cleaned at start.
        let stale = dir.path().join("db").join(format!("z{TEMP_SUFFIX}"));
        std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
        std::fs::write(&stale, b"partial").unwrap();

        let cache = ObjectCache::new(&storage, dir.path()).unwrap();
        assert!(!stale.exists());
        let file = cache.local_file(&key).await.unwrap();
        assert!(file.starts_with(dir.path()));
        assert_eq!(std::fs::read(&file).unwrap(), b"remote");

        // Immutable objects: once cached, the store is not asked again.
        memory.delete(&key).await.unwrap();
        assert_eq!(cache.local_file(&key).await.unwrap(), file);

        let missing = Path::from("db/cpu/none.parquet");
        assert!(matches!(
            cache.local_file(&missing).await,
            Err(StorageError::ObjectStore {
                source: object_store::Error::NotFound { .. },
                ..
            })
        ));
    }

    #[test]
    fn test_should_describe_s3_without_secrets() {
        let settings = StorageSettings {
            backend: Backend::Minio,
            s3_bucket: Some("data".into()),
            s3_endpoint: Some("minio:9000".into()),
            s3_use_ssl: false,
            s3_access_key: Some("minioadmin".into()),
            s3_secret_key: Some("secret-value".into()),
            s3_prefix: Some("/arc/".into()),
            ..StorageSettings::default()
        };
        let storage = ObjectStorage::open(&settings).unwrap();
        let description = storage.describe();
        assert_eq!(
            description,
            "minio bucket=data endpoint=http://minio:9000 prefix=arc"
        );
        assert!(storage.local_path_of(&Path::from("a/b")).is_none());
    }

    #[test]
    fn test_should_build_virtual_hosted_endpoint() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example.com", "b"),
            "https://b.s3.example.com"
        );
        assert_eq!(
            virtual_hosted_endpoint("https://b.s3.example.com", "b"),
            "https://b.s3.example.com"
        );
    }

    #[test]
    fn test_should_build_azure_store() {
        let azure = StorageSettings {
            backend: Backend::Azure,
            azure_account: Some("acct".into()),
            azure_container: Some("data".into()),
            azure_access_key: Some("a2V5".into()),
            ..StorageSettings::default()
        };
        let storage = ObjectStorage::open(&azure).unwrap();
        assert_eq!(storage.describe(), "azure account=acct container=data");
    }
}
