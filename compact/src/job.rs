//! Running one job: download the inputs, merge them off the runtime, upload the output, and
//! swap it in with one `compact` record.
//!
//! # The swap
//!
//! The record removes every input and adds the output under the catalog's current epoch; the
//! catalog voids it unless every input is still live and the epoch is still current, so a swap
//! is applied whole or not at all. Outcomes ([`JobOutcome`]):
//! - `Committed`: the output replaced the inputs. The inputs stay in the store until the
//!   garbage collector's grace period has passed, so queries that planned over them finish.
//! - `Voided`: an input was already gone (another compactor, or a swap retried after an
//!   ambiguous reply that had landed). The output is deleted at once: no record names it.
//!   A newer epoch (a failover mid-job) is not a reason to give up: the attempt under the old
//!   epoch is refused before anything is written (a record of an old epoch would be void for
//!   every reader anyway), the catalog applies the new promote, and the same swap is checked
//!   again against that fresh state (every input still live) and committed under the new
//!   epoch, since the merged rows do not depend on it; up to
//!   [`ExecutorSettings::max_commit_attempts`] times, then `Voided`. The report counts the
//!   fenced attempts ([`JobReport::fenced_commits`]); inputs a failover's new primary flushed
//!   into the same hour are not in the swap and stay live beside its output, for a later run.
//! - `Skipped`: an input was gone before any work was done.
//!
//! An `Err` means nothing is known to be committed. After [`CompactError::Catalog`] with
//! `Unavailable`, the record may still land, so the output is left for the garbage collector
//! rather than deleted; re-running the job is safe (one of the two swaps is void).
//!
//! # Resources
//!
//! A job needs scratch disk for its inputs and its output (the planner bounds the inputs'
//! size), one blocking thread for the merge, the merge's memory limit, and the upload's
//! buffers (`upload_part_bytes × (1 + upload_concurrency)`, 48 MiB by default). At most
//! [`ExecutorSettings::merge_threads`] merges run at once per [`Compactor`], whatever number
//! of jobs run concurrently.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_storage::paths::compacted_object_path;
use arc_storage::{Catalog, CatalogError, CatalogState, Compact, DataObject, RecordBody};
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::error::CompactError;
use crate::failpoints;
use crate::merge::{MergeInput, MergeOutput, MergeSettings, merge_files};
use crate::metrics;
use crate::plan::{Job, Tier};

/// Name prefix of a job's scratch directory; leftovers of a crashed process are removed by
/// [`Compactor::new`].
const JOB_DIR_PREFIX: &str = "arc-compact-job-";

/// Tuning of the executor (`[compaction]` keys; see each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorSettings {
    /// Local directory for downloaded inputs and merged outputs (`compaction.scratch_dir`,
    /// default `./data/compaction`). Needs room for about twice the largest job
    /// (`max_job_bytes`) per concurrent job. One process per directory: a start removes the
    /// job directories left in it.
    pub scratch_dir: PathBuf,
    /// The merge's limits.
    pub merge: MergeSettings,
    /// Merges running at once (`compaction.threads`, default 1: on a 2-core node the other
    /// core stays with ingest and queries).
    pub merge_threads: usize,
    /// Inputs downloaded at once per job (default 4).
    pub download_concurrency: usize,
    /// Upload buffer in bytes; larger outputs are uploaded in parts of this size (default
    /// 16 MiB).
    pub upload_part_bytes: usize,
    /// Parts of one upload in flight at once (default 2). An upload holds up to
    /// `upload_part_bytes × (1 + upload_concurrency)` in memory: the file is read faster than a
    /// remote store takes it, so this, not the merge, would otherwise bound a job's memory.
    pub upload_concurrency: usize,
    /// Commits of one swap before giving up on a moving epoch (default 3).
    pub max_commit_attempts: u32,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            scratch_dir: PathBuf::from("./data/compaction"),
            merge: MergeSettings::default(),
            merge_threads: 1,
            download_concurrency: 4,
            upload_part_bytes: 16 << 20,
            upload_concurrency: 2,
            max_commit_attempts: 3,
        }
    }
}

impl ExecutorSettings {
    /// Settings for tests: scratch under `dir`, small buffers.
    pub fn for_test(dir: &FsPath) -> Self {
        Self {
            scratch_dir: dir.to_path_buf(),
            merge: MergeSettings {
                memory_limit_bytes: 4 << 20,
                max_batch_rows: 1024,
                fan_in: 4,
                row_group_rows: 10_000,
            },
            upload_part_bytes: 64 << 10,
            ..Self::default()
        }
    }

    /// Checks that the limits can be met.
    ///
    /// # Errors
    ///
    /// [`CompactError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), CompactError> {
        self.merge.validate()?;
        if self.merge_threads == 0
            || self.download_concurrency == 0
            || self.upload_part_bytes == 0
            || self.upload_concurrency == 0
            || self.max_commit_attempts == 0
        {
            return Err(CompactError::Invalid(
                "threads, download_concurrency, upload_part_bytes, upload_concurrency and \
                 max_commit_attempts must be at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// How a job ended (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The swap is in the catalog at `seq`; `output` is the new object (`None` if the inputs
    /// held no rows and were only removed).
    Committed {
        /// The catalog record's seq.
        seq: u64,
        /// The epoch it was committed under: newer than the one the job started under if a
        /// failover happened meanwhile (see [`JobReport::fenced_commits`]).
        epoch: u64,
        /// The new object's key.
        output: Option<String>,
    },
    /// The catalog voided the swap; nothing changed and the output was deleted.
    Voided {
        /// Why, as the catalog said.
        reason: String,
    },
    /// An input was no longer live when the job started; nothing was done.
    Skipped {
        /// Which input.
        reason: String,
    },
}

impl JobOutcome {
    /// Returns the outcome's metric label (`committed`, `voided`, `skipped`).
    pub fn label(&self) -> &'static str {
        match self {
            JobOutcome::Committed { .. } => "committed",
            JobOutcome::Voided { .. } => "voided",
            JobOutcome::Skipped { .. } => "skipped",
        }
    }
}

/// What a job did, for logs, metrics and the status API.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// [`Job::id`].
    pub job_id: String,
    /// The job's tier.
    pub tier: Tier,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Input objects.
    pub files_in: usize,
    /// Input bytes (as the catalog records them).
    pub bytes_in: u64,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written (`rows_in - rows_out` duplicates were dropped).
    pub rows_out: u64,
    /// Bytes of the output.
    pub bytes_out: u64,
    /// Whether duplicate points were resolved (see [`crate::merge_files`]).
    pub deduplicated: bool,
    /// Commit attempts of the swap refused because a newer epoch had been promoted since
    /// the attempt's snapshot (a failover during the job); each wrote nothing, and the swap
    /// was re-checked against the state after the promote and committed again.
    pub fenced_commits: u32,
    /// Wall time of the job.
    pub elapsed: Duration,
}

/// Runs compaction jobs against one object store and catalog. Cheap to clone; clones share
/// the merge slots.
#[derive(Clone, Debug)]
pub struct Compactor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    catalog: Catalog,
    node_id: String,
    settings: ExecutorSettings,
    /// One permit per concurrent merge ([`ExecutorSettings::merge_threads`]).
    merge_slots: Arc<Semaphore>,
}

impl Compactor {
    /// Builds a compactor writing as `node_id`; creates the scratch directory and removes job
    /// directories a crashed process left in it. Blocking file I/O, once at start.
    ///
    /// # Errors
    ///
    /// [`CompactError::Invalid`] for unusable settings, [`CompactError::Io`] if the scratch
    /// directory cannot be prepared.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        catalog: Catalog,
        node_id: impl Into<String>,
        settings: ExecutorSettings,
    ) -> Result<Compactor, CompactError> {
        settings.validate()?;
        let scratch = &settings.scratch_dir;
        std::fs::create_dir_all(scratch).map_err(|source| CompactError::io(scratch, source))?;
        let entries =
            std::fs::read_dir(scratch).map_err(|source| CompactError::io(scratch, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| CompactError::io(scratch, source))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(JOB_DIR_PREFIX)
            {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(|source| CompactError::io(&path, source))?;
            }
        }
        Ok(Compactor {
            inner: Arc::new(Inner {
                store,
                catalog,
                node_id: node_id.into(),
                merge_slots: Arc::new(Semaphore::new(settings.merge_threads)),
                settings,
            }),
        })
    }

    /// Returns the catalog this compactor commits to.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Runs `job`: see the module docs for the outcomes.
    ///
    /// # Errors
    ///
    /// Any [`CompactError`] of downloading, merging, uploading or committing; nothing is
    /// known to be committed then (module docs).
    pub async fn run_job(&self, job: &Job) -> Result<JobReport, CompactError> {
        let started = Instant::now();
        let result = self.run(job, started).await;
        match &result {
            Ok(report) => {
                metrics::record_job(report);
                info!(
                    job = %report.job_id,
                    outcome = report.outcome.label(),
                    files_in = report.files_in,
                    rows_in = report.rows_in,
                    rows_out = report.rows_out,
                    bytes_in = report.bytes_in,
                    bytes_out = report.bytes_out,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    "compaction job finished"
                );
            }
            Err(_) => metrics::record_job_error(job.tier, started.elapsed()),
        }
        result
    }

    async fn run(&self, job: &Job, started: Instant) -> Result<JobReport, CompactError> {
        let report = |outcome: JobOutcome, merged: Option<&MergeOutput>| JobReport {
            job_id: job.id(),
            tier: job.tier,
            files_in: job.inputs.len(),
            bytes_in: job.input_bytes(),
            rows_in: merged.map_or(0, |merged| merged.rows_in),
            rows_out: merged.map_or(0, |merged| merged.rows_out),
            bytes_out: match (&outcome, merged) {
                (
                    JobOutcome::Committed {
                        output: Some(_), ..
                    },
                    Some(merged),
                ) => merged.bytes,
                _ => 0,
            },
            deduplicated: merged.is_some_and(|merged| merged.deduplicated),
            fenced_commits: 0,
            outcome,
            elapsed: started.elapsed(),
        };
        if let Some(reason) = self.first_input_gone(job).await? {
            return Ok(report(JobOutcome::Skipped { reason }, None));
        }
        let scratch = tempfile::Builder::new()
            .prefix(JOB_DIR_PREFIX)
            .tempdir_in(&self.inner.settings.scratch_dir)
            .map_err(|source| CompactError::io(&self.inner.settings.scratch_dir, source))?;
        let inputs = match self.download_inputs(job, scratch.path()).await {
            Ok(inputs) => inputs,
            Err(error @ CompactError::ObjectStore { .. }) => {
                // A missing input is expected if another swap removed it and the collector
                // deleted it since: tell that apart from a store fault.
                if let Some(reason) = self.first_input_gone(job).await? {
                    return Ok(report(JobOutcome::Skipped { reason }, None));
                }
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let output_file = scratch.path().join("output.parquet");
        let merged = self.merge(job, inputs, output_file.clone()).await?;

        failpoints::hit("compact-before-upload").await?;
        let added = match merged.time_range {
            Some(time_range) => {
                let key = compacted_object_path(&job.table, job.tier.period(), job.period_start_ns);
                self.upload(&output_file, &key).await?;
                vec![DataObject {
                    path: key.to_string(),
                    time_range,
                    rows: merged.rows_out,
                    bytes: merged.bytes,
                }]
            }
            // Inputs without rows are only removed.
            None => Vec::new(),
        };
        failpoints::hit("compact-after-upload-before-commit").await?;
        let (outcome, fenced_commits) = self.swap(job, added).await?;
        failpoints::hit("compact-after-commit").await?;
        let mut report = report(outcome, Some(&merged));
        report.fenced_commits = fenced_commits;
        Ok(report)
    }

    /// Tails the catalog and returns why the job cannot run if one of its inputs is not live.
    async fn first_input_gone(&self, job: &Job) -> Result<Option<String>, CompactError> {
        self.inner
            .catalog
            .refresh()
            .await
            .map_err(|source| catalog_error(job, source))?;
        let state = self.inner.catalog.snapshot();
        Ok(missing_input(&state, job))
    }

    async fn download_inputs(
        &self,
        job: &Job,
        dir: &FsPath,
    ) -> Result<Vec<MergeInput>, CompactError> {
        // Each download owns its inputs: a stream closure taking `&DataObject` would make
        // `run_job`'s future unprovably `Send`, so the node could not spawn it
        // (rust-lang/rust#102211).
        let downloads: Vec<_> = job
            .inputs
            .iter()
            .enumerate()
            .map(|(index, object)| {
                let file = dir.join(format!("input-{index}.parquet"));
                let key = object.path.clone();
                let store = Arc::clone(&self.inner.store);
                async move {
                    download(store.as_ref(), &key, &file).await?;
                    Ok::<_, CompactError>(MergeInput { object: key, file })
                }
            })
            .collect();
        futures::stream::iter(downloads)
            .buffered(self.inner.settings.download_concurrency)
            .try_collect()
            .await
    }

    /// Runs the merge on a blocking thread once a merge slot is free.
    async fn merge(
        &self,
        job: &Job,
        inputs: Vec<MergeInput>,
        output: PathBuf,
    ) -> Result<MergeOutput, CompactError> {
        let permit = Arc::clone(&self.inner.merge_slots)
            .acquire_owned()
            .await
            .expect("the merge semaphore is never closed");
        let table = job.table.clone();
        let node_id = self.inner.node_id.clone();
        let settings = self.inner.settings.merge.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            merge_files(&table, &inputs, &output, &node_id, &settings)
        });
        task.await.map_err(|join_error| CompactError::TaskFailed {
            table: job.table.to_string(),
            reason: join_error.to_string(),
        })?
    }

    /// Streams the local file to `key` (multipart above the buffer size).
    async fn upload(&self, file: &FsPath, key: &Path) -> Result<(), CompactError> {
        let upload_error = |source| CompactError::Upload {
            key: key.to_string(),
            source,
        };
        let mut local = tokio::fs::File::open(file)
            .await
            .map_err(|source| CompactError::io(file, source))?;
        let mut remote = BufWriter::with_capacity(
            Arc::clone(&self.inner.store),
            key.clone(),
            self.inner.settings.upload_part_bytes,
        )
        .with_max_concurrency(self.inner.settings.upload_concurrency);
        if let Err(source) = tokio::io::copy(&mut local, &mut remote).await {
            // Abort a started multipart upload rather than leave its parts behind.
            let _ = remote.abort().await;
            return Err(upload_error(source));
        }
        remote.shutdown().await.map_err(upload_error)?;
        debug!(key = %key, "compacted object uploaded");
        Ok(())
    }

    /// Commits the swap of `job`'s inputs for `added`; see the module docs. Returns the
    /// outcome and how many attempts a newer epoch fenced.
    async fn swap(
        &self,
        job: &Job,
        added: Vec<DataObject>,
    ) -> Result<(JobOutcome, u32), CompactError> {
        let output = added.first().map(|object| object.path.clone());
        let body = RecordBody::Compact(Compact {
            table: job.table.clone(),
            removed: job
                .inputs
                .iter()
                .map(|object| object.path.clone())
                .collect(),
            added,
        });
        let catalog = &self.inner.catalog;
        let attempts = self.inner.settings.max_commit_attempts;
        let mut last_reason = String::new();
        let mut fenced = 0;
        for attempt in 1..=attempts {
            let epoch = catalog.snapshot().epoch;
            match catalog
                .commit(epoch, &self.inner.node_id, body.clone())
                .await
            {
                Ok(seq) => return Ok((JobOutcome::Committed { seq, epoch, output }, fenced)),
                Err(CatalogError::Rejected { reason }) => {
                    self.delete_unreferenced(output.as_deref()).await;
                    return Ok((JobOutcome::Voided { reason }, fenced));
                }
                Err(error @ CatalogError::Fenced { .. }) => {
                    // Nothing was written (the catalog checks before it puts, and a record
                    // under an old epoch is void for every reader anyway). The commit applied
                    // the newer promote to the snapshot: the next attempt is checked against
                    // the state after it (every input still live) and writes under it. The
                    // output stays: it does not depend on the epoch.
                    fenced += 1;
                    metrics::record_swap_fenced(job.tier);
                    warn!(job = %job.id(), attempt, %error, "compaction swap fenced; retrying under the new epoch");
                    last_reason = error.to_string();
                }
                Err(source) => return Err(catalog_error(job, source)),
            }
        }
        self.delete_unreferenced(output.as_deref()).await;
        Ok((
            JobOutcome::Voided {
                reason: last_reason,
            },
            fenced,
        ))
    }

    /// Deletes an output no record names (its swap is void for every reader); the garbage
    /// collector gets it if this fails.
    async fn delete_unreferenced(&self, key: Option<&str>) {
        let Some(key) = key else {
            return;
        };
        let Ok(path) = Path::parse(key) else {
            return;
        };
        if let Err(error) = self.inner.store.delete(&path).await {
            warn!(key, %error, "cannot delete the output of a voided compaction swap");
        }
    }
}

fn catalog_error(job: &Job, source: CatalogError) -> CompactError {
    CompactError::Catalog {
        table: job.table.to_string(),
        source,
    }
}

/// Returns a reason if an input of `job` is not live in `state`.
fn missing_input(state: &CatalogState, job: &Job) -> Option<String> {
    let live = state.table(&job.table).map(|table| &table.objects);
    job.inputs.iter().find_map(|input| {
        let is_live = live.is_some_and(|objects| objects.iter().any(|o| o.path == input.path));
        (!is_live).then(|| {
            format!(
                "input {} of table {} is no longer live",
                input.path, job.table
            )
        })
    })
}

/// Streams object `key` into the local `file`, chunk by chunk.
async fn download(store: &dyn ObjectStore, key: &str, file: &FsPath) -> Result<(), CompactError> {
    let path = Path::parse(key).map_err(|error| {
        CompactError::object_store(
            key,
            object_store::Error::Generic {
                store: "catalog",
                source: Box::new(error),
            },
        )
    })?;
    let result = store
        .get(&path)
        .await
        .map_err(|source| CompactError::object_store(key, source))?;
    let mut stream = result.into_stream();
    let mut local = tokio::fs::File::create(file)
        .await
        .map_err(|source| CompactError::io(file, source))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| CompactError::object_store(key, source))?;
        local
            .write_all(&chunk)
            .await
            .map_err(|source| CompactError::io(file, source))?;
    }
    local
        .flush()
        .await
        .map_err(|source| CompactError::io(file, source))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only if a job's future can be spawned on a multi-threaded runtime, which is
    /// how the node runs it.
    #[allow(dead_code)]
    fn run_job_is_spawnable(compactor: Compactor, job: Job) {
        drop(tokio::spawn(async move { compactor.run_job(&job).await }));
    }
}
