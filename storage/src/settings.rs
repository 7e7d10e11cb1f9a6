//! `[storage]` settings: which object store holds the data and the catalog, and how to reach it.
//!
//! Settings are plain serde data read once at start (TOML plus `ARC_STORAGE_<KEY>`); the store
//! itself is built from them by [`crate::store::ObjectStorage::open`]. [`StorageSettings::validate`]
//! names the missing or bad key, so a misconfigured node fails at start, not at its first flush.
//! Secrets (`s3_secret_key`, `azure_access_key`) are redacted from `Debug` output.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::StorageError;

/// Which object store backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A directory on the local filesystem (standalone nodes, tests).
    #[default]
    Local,
    /// Amazon S3 or any S3-compatible service that supports conditional puts (`If-None-Match`).
    S3,
    /// MinIO: S3 with path-style requests; `s3_endpoint` is required.
    Minio,
    /// Azure Blob Storage.
    Azure,
    /// Google Cloud Storage.
    Gcs,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Local => "local",
            Backend::S3 => "s3",
            Backend::Minio => "minio",
            Backend::Azure => "azure",
            Backend::Gcs => "gcs",
        })
    }
}

/// The `[storage]` section.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Backend: `local`, `s3`, `minio`, `azure` or `gcs`. Default `local`. Every backend gives
    /// the same guarantees (put-if-absent is all the catalog needs); only `local` cannot be
    /// shared between machines.
    pub backend: Backend,
    /// Directory of the `local` backend. Default `./data/storage`; created if missing. Writes
    /// are fsynced (file and directory) before they count, as on a remote store.
    pub local_path: PathBuf,
    /// S3/MinIO bucket. Required for `s3` and `minio`.
    pub s3_bucket: Option<String>,
    /// S3 region. Default: `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`. MinIO ignores
    /// it unless configured with a region.
    pub s3_region: Option<String>,
    /// S3 endpoint, with or without scheme (`minio:9000` or `https://s3.example.com`). Without
    /// a scheme, `https://` or `http://` is prepended per `s3_use_ssl`. Required for `minio`;
    /// for `s3` the default is AWS's regional endpoint.
    pub s3_endpoint: Option<String>,
    /// S3 access key id. Default: the AWS credential chain (environment, web identity,
    /// instance metadata). Must be set together with `s3_secret_key`.
    pub s3_access_key: Option<String>,
    /// S3 secret access key. Must be set together with `s3_access_key`.
    pub s3_secret_key: Option<String>,
    /// Whether to use TLS towards the endpoint. Default `true`. `false` allows plain HTTP
    /// (a local MinIO); credentials and data then cross the network unencrypted.
    pub s3_use_ssl: bool,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted style
    /// (`bucket.endpoint/key`). Default `false` (AWS's preferred style); `minio` always uses
    /// path style.
    pub s3_path_style: bool,
    /// Key prefix inside the bucket for `s3`/`minio` (e.g. `arc/prod`), so several clusters can
    /// share one bucket. Default none (the bucket root). Changing it hides existing data.
    pub s3_prefix: Option<String>,
    /// Azure storage account name. Required for `azure`.
    pub azure_account: Option<String>,
    /// Azure storage account access key. Default: the Azure credential chain (environment,
    /// managed identity).
    pub azure_access_key: Option<String>,
    /// Azure blob container. Required for `azure`.
    pub azure_container: Option<String>,
    /// Azure endpoint override (e.g. an Azurite emulator URL). Default: the public endpoint
    /// of the account.
    pub azure_endpoint: Option<String>,
    /// GCS bucket. Required for `gcs`.
    pub gcs_bucket: Option<String>,
    /// Path to a GCS service account JSON key. Default: `GOOGLE_APPLICATION_CREDENTIALS` or
    /// the instance's default credentials.
    pub gcs_credentials_file: Option<PathBuf>,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            local_path: PathBuf::from("./data/storage"),
            s3_bucket: None,
            s3_region: None,
            s3_endpoint: None,
            s3_access_key: None,
            s3_secret_key: None,
            s3_use_ssl: true,
            s3_path_style: false,
            s3_prefix: None,
            azure_account: None,
            azure_access_key: None,
            azure_container: None,
            azure_endpoint: None,
            gcs_bucket: None,
            gcs_credentials_file: None,
        }
    }
}

impl fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("StorageSettings")
            .field("backend", &self.backend)
            .field("local_path", &self.local_path)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_region", &self.s3_region)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_access_key", &self.s3_access_key)
            .field("s3_secret_key", &redacted(&self.s3_secret_key))
            .field("s3_use_ssl", &self.s3_use_ssl)
            .field("s3_path_style", &self.s3_path_style)
            .field("s3_prefix", &self.s3_prefix)
            .field("azure_account", &self.azure_account)
            .field("azure_access_key", &redacted(&self.azure_access_key))
            .field("azure_container", &self.azure_container)
            .field("azure_endpoint", &self.azure_endpoint)
            .field("gcs_bucket", &self.gcs_bucket)
            .field("gcs_credentials_file", &self.gcs_credentials_file)
            .finish()
    }
}

/// Returns the value of an optional setting if it is set and not blank.
pub(crate) fn present(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

impl StorageSettings {
    /// Settings for a local store in `path` (tests, standalone nodes).
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self {
            local_path: path.into(),
            ..Self::default()
        }
    }

    /// Returns `s3_endpoint` with a scheme: as given if it has one, else `https://` or
    /// `http://` per `s3_use_ssl`.
    pub fn s3_endpoint_url(&self) -> Option<String> {
        let endpoint = present(&self.s3_endpoint)?.trim_end_matches('/');
        if endpoint.contains("://") {
            return Some(endpoint.to_string());
        }
        let scheme = if self.s3_use_ssl { "https" } else { "http" };
        Some(format!("{scheme}://{endpoint}"))
    }

    /// Returns the normalized `s3_prefix` (no leading or trailing `/`), if set.
    pub fn s3_prefix_normalized(&self) -> Option<String> {
        let prefix = present(&self.s3_prefix)?.trim_matches('/');
        (!prefix.is_empty()).then(|| prefix.to_string())
    }

    /// Checks that the keys the chosen backend needs are present and consistent.
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] naming the first missing or bad key, e.g.
    /// `storage.s3_bucket is required when storage.backend = "s3"`.
    pub fn validate(&self) -> Result<(), StorageError> {
        let backend = self.backend;
        let required = |value: &Option<String>, key: &str| match present(value) {
            Some(_) => Ok(()),
            None => Err(StorageError::Invalid(format!(
                "storage.{key} is required when storage.backend = \"{backend}\""
            ))),
        };
        match backend {
            Backend::Local => {
                if self.local_path.as_os_str().is_empty() {
                    return Err(StorageError::Invalid(
                        "storage.local_path must not be empty when storage.backend = \"local\""
                            .into(),
                    ));
                }
            }
            Backend::S3 | Backend::Minio => {
                required(&self.s3_bucket, "s3_bucket")?;
                if backend == Backend::Minio {
                    required(&self.s3_endpoint, "s3_endpoint")?;
                    required(&self.s3_access_key, "s3_access_key")?;
                    required(&self.s3_secret_key, "s3_secret_key")?;
                }
                match (present(&self.s3_access_key), present(&self.s3_secret_key)) {
                    (Some(_), None) => {
                        return Err(StorageError::Invalid(
                            "storage.s3_secret_key is required when storage.s3_access_key is set"
                                .into(),
                        ));
                    }
                    (None, Some(_)) => {
                        return Err(StorageError::Invalid(
                            "storage.s3_access_key is required when storage.s3_secret_key is set"
                                .into(),
                        ));
                    }
                    _ => {}
                }
                if let Some(url) = self.s3_endpoint_url()
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    return Err(StorageError::Invalid(format!(
                        "storage.s3_endpoint must be host[:port] or an http(s) URL, got {url:?}"
                    )));
                }
                if let Some(prefix) = self.s3_prefix_normalized() {
                    object_store::path::Path::parse(&prefix).map_err(|error| {
                        StorageError::Invalid(format!(
                            "storage.s3_prefix {prefix:?} is not a valid key prefix: {error}"
                        ))
                    })?;
                }
            }
            Backend::Azure => {
                required(&self.azure_account, "azure_account")?;
                required(&self.azure_container, "azure_container")?;
            }
            Backend::Gcs => {
                required(&self.gcs_bucket, "gcs_bucket")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_default_to_local_backend() {
        let settings = StorageSettings::default();
        assert_eq!(settings.backend, Backend::Local);
        assert_eq!(settings.local_path, PathBuf::from("./data/storage"));
        assert!(settings.s3_use_ssl);
        settings.validate().unwrap();
    }

    #[test]
    fn test_should_name_missing_key() {
        let settings = StorageSettings {
            backend: Backend::S3,
            ..StorageSettings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains(r#"storage.s3_bucket is required when storage.backend = "s3""#),
            "{error}"
        );

        let settings = StorageSettings {
            backend: Backend::Minio,
            s3_bucket: Some("b".into()),
            ..StorageSettings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("storage.s3_endpoint is required"), "{error}");

        let settings = StorageSettings {
            backend: Backend::Azure,
            azure_account: Some("acct".into()),
            ..StorageSettings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("storage.azure_container"), "{error}");

        let settings = StorageSettings {
            backend: Backend::Gcs,
            ..StorageSettings::default()
        };
        assert!(
            settings
                .validate()
                .unwrap_err()
                .to_string()
                .contains("storage.gcs_bucket")
        );
    }

    #[test]
    fn test_should_require_both_s3_keys() {
        let settings = StorageSettings {
            backend: Backend::S3,
            s3_bucket: Some("b".into()),
            s3_access_key: Some("AKIA".into()),
            ..StorageSettings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("storage.s3_secret_key"), "{error}");
    }

    #[test]
    fn test_should_prepend_scheme_to_endpoint() {
        let mut settings = StorageSettings {
            s3_endpoint: Some("minio:9000".into()),
            ..StorageSettings::default()
        };
        assert_eq!(
            settings.s3_endpoint_url().as_deref(),
            Some("https://minio:9000")
        );
        settings.s3_use_ssl = false;
        assert_eq!(
            settings.s3_endpoint_url().as_deref(),
            Some("http://minio:9000")
        );
        settings.s3_endpoint = Some("https://s3.example.com/".into());
        assert_eq!(
            settings.s3_endpoint_url().as_deref(),
            Some("https://s3.example.com")
        );
    }

    #[test]
    fn test_should_reject_unknown_fields_and_parse_backend() {
        let parsed: StorageSettings =
            serde_json::from_str(r#"{"backend":"minio","s3_bucket":"b"}"#).unwrap();
        assert_eq!(parsed.backend, Backend::Minio);
        assert!(parsed.s3_use_ssl);
        assert!(serde_json::from_str::<StorageSettings>(r#"{"s3_bukket":"b"}"#).is_err());
    }

    #[test]
    fn test_should_redact_secrets_in_debug() {
        let settings = StorageSettings {
            s3_secret_key: Some("very-secret".into()),
            azure_access_key: Some("also-secret".into()),
            ..StorageSettings::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("very-secret") && !debug.contains("also-secret"));
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn test_should_normalize_prefix() {
        let settings = StorageSettings {
            s3_prefix: Some("/arc/prod/".into()),
            ..StorageSettings::default()
        };
        assert_eq!(settings.s3_prefix_normalized().as_deref(), Some("arc/prod"));
    }
}
