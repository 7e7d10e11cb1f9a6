//! The compaction scheduler: the one task that plans and runs this node's compaction jobs and
//! collects garbage (issue 12; DESIGN.md section 8; the work itself is the `arc-compact`
//! crate's).
//!
//! # Who runs it
//!
//! A standalone node compacts in-process; in a cluster only nodes with role `compactor` do
//! (writers and readers never start this task, see [`compacts`]). Several compactors share
//! the work: every run keeps only the jobs whose partition (table and UTC day) this node owns
//! by [`arc_compact::jobs_owned_by`] over the live, healthy compactors of its gossip view,
//! itself included. Views that briefly disagree may run a job twice; the catalog voids the
//! second swap, so that costs work, never correctness.
//!
//! # Lifecycle
//!
//! [`start`] runs after the node is ready and returns a [`CompactionTask`]; the task is one
//! `select!` loop over its cancellation token, manual triggers (the API), the run interval
//! (`compaction.interval`, first run one interval after start) and the garbage collector's
//! interval (`compaction.gc_interval`). A run refreshes the catalog, plans from its snapshot,
//! and runs each owned partition's jobs one after the other in plan order (the planner's
//! write-order rule needs that), at most `compaction.threads` partitions at once; the merges
//! themselves run on blocking threads inside the crate. A job that fails ends its partition's
//! run (its later chunks wait for the next run); the other partitions go on.
//!
//! Stopping cancels the token; a job in flight is abandoned at its next await point. That is
//! safe by the crate's design (a swap is one catalog record, applied whole or not at all, and
//! an orphaned output is collected later), the same as a `kill -9`, which the tests exercise.
//! A panic in the task ends it ("closed"): the status keeps its last state, triggers answer
//! 503, and the node keeps serving ingest and queries.
//!
//! # The shared handle
//!
//! [`CompactionHandle`] (status and the trigger channel) is what the API uses; the node keeps
//! it in its shared state once the scheduler starts ([`handle_of`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use arc_compact::{
    Compactor, ExecutorSettings, GarbageCollector, Job, JobOutcome, JobReport, MergeSettings,
    PartitionKey, PlanSettings, Tier,
};
use arc_gossip::{NodeState, Role};
use arc_storage::Catalog;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use object_store::ObjectStore;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{CompactionSettings, Config};
use crate::metrics as m;
use crate::node::NodeInner;

/// Job reports the status keeps (newest last).
const RECENT_JOBS: usize = 20;

/// The node failpoint hit at the start of every run, after the run is marked as going (tests
/// pause there to hold a run open; see `src/failpoints.rs`).
const FAILPOINT_BEFORE_RUN: &str = "compaction-before-run";

/// Returns whether a node with this configuration runs the compaction task: a standalone node
/// or a clustered compactor, with `compaction.enabled`.
pub fn compacts(config: &Config) -> bool {
    let role_compacts = match config.cluster.role {
        Role::Standalone => !config.cluster.enabled,
        Role::Compactor => true,
        Role::Writer | Role::Reader => false,
    };
    config.compaction.enabled && role_compacts
}

/// The planner's settings from `[compaction]`.
pub fn plan_settings(settings: &CompactionSettings) -> PlanSettings {
    PlanSettings {
        hourly_enabled: settings.hourly_enabled,
        daily_enabled: settings.daily_enabled,
        hourly_min_files: settings.hourly_min_files as usize,
        daily_min_files: settings.daily_min_files as usize,
        closed_after: settings.closed_after.0,
        max_job_bytes: settings.max_job_bytes.0,
        max_job_rows: settings.max_job_rows,
        max_job_objects: usize::try_from(settings.max_job_objects).unwrap_or(usize::MAX),
    }
}

/// The executor's settings from `[compaction]` (the crate's defaults for what is not a key).
pub fn executor_settings(settings: &CompactionSettings) -> ExecutorSettings {
    ExecutorSettings {
        scratch_dir: settings.scratch_dir.clone(),
        merge: MergeSettings {
            memory_limit_bytes: settings.memory_limit.0,
            fan_in: usize::try_from(settings.merge_fan_in).unwrap_or(usize::MAX),
            ..MergeSettings::default()
        },
        merge_threads: usize::try_from(settings.threads).unwrap_or(usize::MAX),
        ..ExecutorSettings::default()
    }
}

/// What a manual trigger asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRequest {
    /// Only this database's tables (`None`: every database).
    pub database: Option<String>,
    /// Only this tier (`None`: the tiers `[compaction]` enables). A named tier runs even if
    /// its `*_enabled` key is off: the operator asked for it.
    pub tier: Option<Tier>,
}

/// Why a trigger was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TriggerError {
    /// A run is going (or an accepted trigger has not started yet): 409.
    #[error(
        "a compaction run is in progress (started {started_at} by {trigger}); try again when it has finished"
    )]
    Busy {
        /// When the run started.
        started_at: String,
        /// `schedule` or `manual`.
        trigger: &'static str,
    },
    /// The scheduler task has ended (the node is stopping, or the task failed): 503.
    #[error("the compaction scheduler is not running on this node")]
    Closed,
}

/// One job in progress.
#[derive(Debug, Clone, Serialize)]
pub struct RunningJob {
    /// The job's id (`db.table/tier/period_start_ns/chunk`).
    pub job_id: String,
    /// `hourly` or `daily`.
    pub tier: &'static str,
    /// Input objects.
    pub files_in: usize,
    /// Input bytes.
    pub bytes_in: u64,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// The run in progress.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `schedule` or `manual`.
    pub trigger: &'static str,
    /// The trigger's database filter.
    pub database: Option<String>,
    /// The trigger's tier filter.
    pub tier: Option<&'static str>,
    /// When the run started (or the trigger was accepted), RFC 3339.
    pub started_at: String,
}

/// A finished run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// How the run was asked for and when it started.
    #[serde(flatten)]
    pub run: RunInfo,
    /// When it ended, RFC 3339.
    pub finished_at: String,
    /// Jobs this node owned and ran (or tried).
    pub jobs: usize,
    /// Jobs planned cluster-wide, before the ownership split.
    pub jobs_planned: usize,
    /// Jobs that committed.
    pub committed: usize,
    /// Jobs that failed.
    pub errors: usize,
    /// Why the run could not plan at all (the catalog could not be read), if so.
    pub error: Option<String>,
}

/// One finished job, for the status API.
#[derive(Debug, Clone, Serialize)]
pub struct JobEntry {
    /// The job's id.
    pub job_id: String,
    /// `hourly` or `daily`.
    pub tier: &'static str,
    /// `committed`, `voided`, `skipped` or `error`.
    pub outcome: &'static str,
    /// Why it was voided, skipped or failed.
    pub reason: Option<String>,
    /// The new object's key, if one was committed.
    pub output: Option<String>,
    /// Input objects.
    pub files_in: usize,
    /// Input bytes.
    pub bytes_in: u64,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written (fewer when duplicate points were dropped).
    pub rows_out: u64,
    /// Output bytes.
    pub bytes_out: u64,
    /// Whether duplicate points were resolved (the inputs named their tags).
    pub deduplicated: bool,
    /// The epoch the swap was committed under, if it was.
    pub epoch: Option<u64>,
    /// Commits of the swap a newer epoch refused (a failover during the job); the swap was
    /// then re-checked and committed under that epoch, or voided.
    pub fenced_commits: u32,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
    /// When it ended, RFC 3339.
    pub finished_at: String,
}

/// Totals of committed jobs since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Committed jobs.
    pub jobs_committed: u64,
    /// Objects the committed jobs took out of the catalog.
    pub files_before: u64,
    /// Objects they put in (one per job, none for inputs without rows).
    pub files_after: u64,
    /// Bytes of their inputs.
    pub bytes_before: u64,
    /// Bytes of their outputs.
    pub bytes_after: u64,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
}

/// The garbage collector's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcStatus {
    /// When it last ran, RFC 3339.
    pub last_run_at: Option<String>,
    /// Why the last run failed, if it did.
    pub last_error: Option<String>,
    /// Objects deleted since start.
    pub objects_deleted: u64,
    /// Bytes deleted since start.
    pub bytes_deleted: u64,
}

/// What `GET /api/v1/compaction/status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This node's id.
    pub node_id: String,
    /// The compactors the last run split the work over.
    pub compactors: Vec<String>,
    /// The run in progress, if any.
    pub run: Option<RunInfo>,
    /// The jobs in progress.
    pub running_jobs: Vec<RunningJob>,
    /// Jobs of the current run not yet finished (0 between runs).
    pub pending_jobs: usize,
    /// Partitions (table and day) of those jobs.
    pub pending_partitions: usize,
    /// Runs finished since start.
    pub runs_completed: u64,
    /// The last finished run.
    pub last_run: Option<RunSummary>,
    /// The last finished jobs, oldest first.
    pub recent_jobs: VecDeque<JobEntry>,
    /// Totals since start.
    pub totals: Totals,
    /// The garbage collector.
    pub gc: GcStatus,
}

/// The scheduler's status and trigger channel. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct CompactionHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    status: Mutex<Status>,
    /// Manual runs for the task. At most one message is ever queued: a trigger is accepted
    /// only while no run is marked, and accepting it marks one.
    triggers: mpsc::Sender<TriggerRequest>,
}

impl CompactionHandle {
    fn new(node_id: &str, triggers: mpsc::Sender<TriggerRequest>) -> CompactionHandle {
        CompactionHandle {
            inner: Arc::new(HandleInner {
                status: Mutex::new(Status {
                    node_id: node_id.to_string(),
                    compactors: Vec::new(),
                    run: None,
                    running_jobs: Vec::new(),
                    pending_jobs: 0,
                    pending_partitions: 0,
                    runs_completed: 0,
                    last_run: None,
                    recent_jobs: VecDeque::new(),
                    totals: Totals::default(),
                    gc: GcStatus::default(),
                }),
                triggers,
            }),
        }
    }

    /// Returns a copy of the status.
    pub fn status(&self) -> Status {
        self.lock().clone()
    }

    /// Asks for a run now; returns at once (the run's outcome shows in [`Self::status`]).
    ///
    /// # Errors
    ///
    /// [`TriggerError::Busy`] while a run is going, [`TriggerError::Closed`] if the task has
    /// ended.
    pub fn trigger(&self, request: TriggerRequest, now: DateTime<Utc>) -> Result<(), TriggerError> {
        let mut status = self.lock();
        if let Some(run) = &status.run {
            return Err(TriggerError::Busy {
                started_at: run.started_at.clone(),
                trigger: run.trigger,
            });
        }
        // Marked before it is sent, under the lock: a second trigger sees it at once, and a
        // tick arriving before the task reads the channel leaves the run to the trigger.
        self.inner
            .triggers
            .try_send(request.clone())
            .map_err(|_| TriggerError::Closed)?;
        status.run = Some(RunInfo {
            trigger: "manual",
            database: request.database,
            tier: request.tier.map(Tier::as_str),
            started_at: rfc3339(now),
        });
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        // The status is plain data, consistent after every statement: a panic elsewhere
        // while holding the lock leaves nothing half-written worth refusing.
        self.inner
            .status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Marks a scheduled run as going; `false` if a (triggered) run is marked already.
    fn begin_scheduled(&self, now: DateTime<Utc>) -> bool {
        let mut status = self.lock();
        if status.run.is_some() {
            return false;
        }
        status.run = Some(RunInfo {
            trigger: "schedule",
            database: None,
            tier: None,
            started_at: rfc3339(now),
        });
        true
    }
}

/// Returns the scheduler handle of `node`, or `None` if it does not compact.
pub fn handle_of(node: &NodeInner) -> Option<CompactionHandle> {
    node.compaction.get().cloned()
}

/// The running scheduler: its token and task. [`CompactionTask::stop`] ends it.
pub struct CompactionTask {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl CompactionTask {
    /// Cancels the task, waits for it, and logs how it ended.
    pub async fn stop(self) {
        self.cancel.cancel();
        match self.task.await {
            Ok(()) => info!("compaction scheduler stopped"),
            Err(join_error) if join_error.is_panic() => {
                error!(error = %join_error, "compaction scheduler panicked");
            }
            Err(join_error) => warn!(error = %join_error, "compaction scheduler task failed"),
        }
    }
}

/// Starts the scheduler if this node compacts ([`compacts`]); `None` otherwise, or if the
/// scratch directory cannot be prepared (logged: the node serves on without compaction).
/// `stop` is the node's token; the task gets a child of it.
pub fn start(
    node: &Arc<NodeInner>,
    store: Arc<dyn ObjectStore>,
    catalog: Catalog,
    stop: &CancellationToken,
) -> Option<CompactionTask> {
    let config = &node.config;
    if !compacts(config) {
        return None;
    }
    arm_failpoints();
    let settings = config.compaction.clone();
    let compactor = match Compactor::new(
        Arc::clone(&store),
        catalog.clone(),
        node.node_id.clone(),
        executor_settings(&settings),
    ) {
        Ok(compactor) => compactor,
        Err(error) => {
            error!(%error, scratch_dir = %settings.scratch_dir.display(), "cannot start compaction; this node will not compact");
            return None;
        }
    };
    let (triggers, trigger_rx) = mpsc::channel(1);
    let handle = CompactionHandle::new(&node.node_id, triggers);
    let _ = node.compaction.set(handle.clone());
    let cancel = stop.child_token();
    let scheduler = Scheduler {
        node: Arc::downgrade(node),
        node_id: node.node_id.clone(),
        clock: Arc::clone(&node.clock),
        store,
        catalog,
        compactor,
        collector: GarbageCollector::new(settings.gc_grace.0),
        handle,
        settings,
    };
    let span = info_span!("compaction", node_id = %node.node_id);
    let task = tokio::spawn(scheduler.run(cancel.clone(), trigger_rx).instrument(span));
    Some(CompactionTask { cancel, task })
}

/// Arms the crate's failpoints from the `compact-*` entries of `ARC_FAILPOINTS` (the node's
/// own points are read by `src/failpoints.rs`). Nothing is armed unless a test sets it.
fn arm_failpoints() {
    let Ok(spec) = std::env::var("ARC_FAILPOINTS") else {
        return;
    };
    let compact_points: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|pair| pair.starts_with("compact-"))
        .collect();
    if compact_points.is_empty() {
        return;
    }
    if let Err(error) = arc_compact::configure_failpoints(&compact_points.join(",")) {
        warn!(%error, "ignoring malformed compaction failpoints");
    }
}

/// The task's state: everything a run needs.
struct Scheduler {
    /// The node, for its cluster view; the task ends if it is gone.
    node: Weak<NodeInner>,
    node_id: String,
    clock: Arc<dyn arc_clock::Clock>,
    store: Arc<dyn ObjectStore>,
    catalog: Catalog,
    compactor: Compactor,
    collector: GarbageCollector,
    handle: CompactionHandle,
    settings: CompactionSettings,
}

impl Scheduler {
    async fn run(
        mut self,
        cancel: CancellationToken,
        mut triggers: mpsc::Receiver<TriggerRequest>,
    ) {
        let first_run = tokio::time::Instant::now() + self.settings.interval.0;
        let mut runs = tokio::time::interval_at(first_run, self.settings.interval.0);
        runs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let first_gc = tokio::time::Instant::now() + self.settings.gc_interval.0;
        let mut collections = tokio::time::interval_at(first_gc, self.settings.gc_interval.0);
        collections.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(
            interval = %self.settings.interval,
            gc_interval = %self.settings.gc_interval,
            "compaction scheduler started"
        );
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                request = triggers.recv() => {
                    let Some(request) = request else { break };
                    self.run_cancellable(&cancel, "manual", request).await;
                }
                _ = runs.tick() => {
                    if self.handle.begin_scheduled(self.clock.now()) {
                        let request = TriggerRequest { database: None, tier: None };
                        self.run_cancellable(&cancel, "schedule", request).await;
                    }
                }
                _ = collections.tick() => {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        () = self.collect_garbage() => {}
                    }
                }
            }
        }
    }

    /// Runs once unless cancelled first (module docs: an abandoned job is safe).
    async fn run_cancellable(
        &self,
        cancel: &CancellationToken,
        trigger: &'static str,
        request: TriggerRequest,
    ) {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => info!("stopping: compaction run abandoned"),
            () = self.run_once(trigger, request) => {}
        }
    }

    /// One run: refresh, plan, keep the owned jobs, run them, record everything.
    async fn run_once(&self, trigger: &'static str, request: TriggerRequest) {
        // A blocking failpoint (pause) must not hold a runtime worker.
        let _ = tokio::task::spawn_blocking(|| crate::failpoints::hit(FAILPOINT_BEFORE_RUN)).await;
        let started = std::time::Instant::now();
        let outcome = self.plan_and_run(&request).await;
        let finished_at = self.clock.now();
        let mut status = self.handle.lock();
        let run = status.run.take().unwrap_or_else(|| RunInfo {
            trigger,
            database: request.database.clone(),
            tier: request.tier.map(Tier::as_str),
            started_at: rfc3339(finished_at),
        });
        let summary = match outcome {
            Ok(counts) => RunSummary {
                run,
                finished_at: rfc3339(finished_at),
                jobs: counts.jobs,
                jobs_planned: counts.jobs_planned,
                committed: counts.committed,
                errors: counts.errors,
                error: None,
            },
            Err(error) => {
                warn!(%error, "compaction run could not plan");
                RunSummary {
                    run,
                    finished_at: rfc3339(finished_at),
                    jobs: 0,
                    jobs_planned: 0,
                    committed: 0,
                    errors: 0,
                    error: Some(error),
                }
            }
        };
        let ok = summary.error.is_none() && summary.errors == 0;
        m::record_compaction_run(trigger, ok, started.elapsed());
        if summary.jobs > 0 || !ok {
            info!(
                trigger,
                jobs = summary.jobs,
                jobs_planned = summary.jobs_planned,
                committed = summary.committed,
                errors = summary.errors,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "compaction run finished"
            );
        }
        status.pending_jobs = 0;
        status.pending_partitions = 0;
        status.running_jobs.clear();
        status.runs_completed += 1;
        status.last_run = Some(summary);
        m::set_compaction_pending_jobs(0);
    }

    async fn plan_and_run(&self, request: &TriggerRequest) -> Result<RunCounts, String> {
        self.catalog
            .refresh()
            .await
            .map_err(|error| format!("reading the catalog log: {error}"))?;
        let snapshot = self.catalog.snapshot();
        let now_ns = self.clock.now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut plan_settings = plan_settings(&self.settings);
        if let Some(tier) = request.tier {
            plan_settings.hourly_enabled = tier == Tier::Hourly;
            plan_settings.daily_enabled = tier == Tier::Daily;
        }
        let planned: Vec<Job> = arc_compact::plan(&snapshot, now_ns, &plan_settings)
            .into_iter()
            .filter(|job| {
                request
                    .database
                    .as_ref()
                    .is_none_or(|database| &job.table.database == database)
            })
            .collect();
        let jobs_planned = planned.len();
        let compactors = self.live_compactors();
        let owned = arc_compact::jobs_owned_by(planned, &self.node_id, &compactors);
        let partitions = group_by_partition(owned);
        let jobs: usize = partitions.iter().map(|(_, jobs)| jobs.len()).sum();
        {
            let mut status = self.handle.lock();
            status.compactors = compactors;
            status.pending_jobs = jobs;
            status.pending_partitions = partitions.len();
        }
        m::set_compaction_pending_jobs(jobs);
        let threads = usize::try_from(self.settings.threads).unwrap_or(1).max(1);
        // The partition futures own what they use: futures borrowing `self` inside a
        // `FuturesUnordered` make the spawned task's `Send` bound unprovable
        // (rust-lang/rust#102211).
        let partition_run = |jobs: Vec<Job>| {
            run_partition(
                self.compactor.clone(),
                self.handle.clone(),
                Arc::clone(&self.clock),
                jobs,
            )
        };
        let mut waiting = partitions.into_iter();
        let mut running = FuturesUnordered::new();
        for (_, jobs) in waiting.by_ref().take(threads) {
            running.push(partition_run(jobs));
        }
        let mut results: Vec<(usize, usize)> = Vec::new();
        while let Some(result) = running.next().await {
            results.push(result);
            if let Some((_, jobs)) = waiting.next() {
                running.push(partition_run(jobs));
            }
        }
        Ok(RunCounts {
            jobs,
            jobs_planned,
            committed: results.iter().map(|(committed, _)| committed).sum(),
            errors: results.iter().map(|(_, errors)| errors).sum(),
        })
    }

    /// The live, healthy compactors of this node's view, itself included (standalone: itself).
    fn live_compactors(&self) -> Vec<String> {
        let mut live = vec![self.node_id.clone()];
        let Some(node) = self.node.upgrade() else {
            return live;
        };
        if !node.cluster.is_clustered() {
            return live;
        }
        let view = node.cluster.view();
        live.extend(
            view.nodes
                .iter()
                .filter(|member| {
                    member.info.role == Role::Compactor
                        && member.state == NodeState::Healthy
                        && member.id != self.node_id
                })
                .map(|member| member.id.clone()),
        );
        live.sort();
        live
    }

    /// Runs the garbage collector, on one compactor only: the first of the live set by id
    /// (the others would LIST the same prefixes to delete the same objects).
    async fn collect_garbage(&mut self) {
        let compactors = self.live_compactors();
        if compactors.first() != Some(&self.node_id) {
            return;
        }
        let now = self.clock.now();
        let result = self
            .collector
            .collect(self.store.as_ref(), &self.catalog, now)
            .await;
        m::record_compaction_gc(result.is_ok());
        let mut status = self.handle.lock();
        status.gc.last_run_at = Some(rfc3339(now));
        match result {
            Ok(report) => {
                status.gc.last_error = None;
                status.gc.objects_deleted += report.deleted as u64;
                status.gc.bytes_deleted += report.deleted_bytes;
            }
            Err(error) => {
                warn!(%error, "garbage collection failed; the next run retries");
                status.gc.last_error = Some(error.to_string());
            }
        }
    }
}

/// Runs one partition's jobs in plan order; stops at the first error (its later chunks
/// wait for the next run). Returns (committed, errors).
async fn run_partition(
    compactor: Compactor,
    handle: CompactionHandle,
    clock: Arc<dyn arc_clock::Clock>,
    jobs: Vec<Job>,
) -> (usize, usize) {
    let mut committed = 0;
    let mut remaining = jobs.len();
    for job in jobs {
        let job_id = job.id();
        {
            let mut status = handle.lock();
            status.running_jobs.push(RunningJob {
                job_id: job_id.clone(),
                tier: job.tier.as_str(),
                files_in: job.inputs.len(),
                bytes_in: job.input_bytes(),
                started_at: rfc3339(clock.now()),
            });
        }
        let result = compactor.run_job(&job).await;
        let failed = result.is_err();
        if let Err(error) = &result {
            warn!(job = %job_id, %error, "compaction job failed; its partition waits for the next run");
        }
        if matches!(
            result,
            Ok(JobReport {
                outcome: JobOutcome::Committed { .. },
                ..
            })
        ) {
            committed += 1;
        }
        let finished_at = rfc3339(clock.now());
        let mut status = handle.lock();
        status
            .running_jobs
            .retain(|running| running.job_id != job_id);
        record(&mut status, &job, result, finished_at);
        if failed {
            // The job that failed and the ones that now wait.
            status.pending_jobs = status.pending_jobs.saturating_sub(remaining);
            status.pending_partitions = status.pending_partitions.saturating_sub(1);
            m::set_compaction_pending_jobs(status.pending_jobs);
            return (committed, 1);
        }
        remaining -= 1;
        status.pending_jobs = status.pending_jobs.saturating_sub(1);
        if remaining == 0 {
            status.pending_partitions = status.pending_partitions.saturating_sub(1);
        }
        m::set_compaction_pending_jobs(status.pending_jobs);
    }
    (committed, 0)
}

struct RunCounts {
    jobs: usize,
    jobs_planned: usize,
    committed: usize,
    errors: usize,
}

/// Groups jobs by partition, keeping plan order within each partition and ordering the
/// partitions by their first job.
fn group_by_partition(jobs: Vec<Job>) -> Vec<(PartitionKey, Vec<Job>)> {
    let mut partitions: Vec<(PartitionKey, Vec<Job>)> = Vec::new();
    for job in jobs {
        let key = job.partition();
        match partitions.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, jobs)) => jobs.push(job),
            None => partitions.push((key, vec![job])),
        }
    }
    partitions
}

/// Adds a finished job to the status.
fn record(
    status: &mut Status,
    job: &Job,
    result: Result<JobReport, arc_compact::CompactError>,
    finished_at: String,
) {
    let entry = match result {
        Ok(report) => {
            let (reason, output, epoch) = match &report.outcome {
                JobOutcome::Committed { output, epoch, .. } => (None, output.clone(), Some(*epoch)),
                JobOutcome::Voided { reason } | JobOutcome::Skipped { reason } => {
                    (Some(reason.clone()), None, None)
                }
            };
            if let JobOutcome::Committed { output, .. } = &report.outcome {
                let totals = &mut status.totals;
                totals.jobs_committed += 1;
                totals.files_before += report.files_in as u64;
                totals.files_after += u64::from(output.is_some());
                totals.bytes_before += report.bytes_in;
                totals.bytes_after += report.bytes_out;
                totals.rows_in += report.rows_in;
                totals.rows_out += report.rows_out;
            }
            JobEntry {
                job_id: report.job_id,
                tier: report.tier.as_str(),
                outcome: report.outcome.label(),
                reason,
                output,
                files_in: report.files_in,
                bytes_in: report.bytes_in,
                rows_in: report.rows_in,
                rows_out: report.rows_out,
                bytes_out: report.bytes_out,
                deduplicated: report.deduplicated,
                epoch,
                fenced_commits: report.fenced_commits,
                elapsed_ms: report.elapsed.as_millis() as u64,
                finished_at,
            }
        }
        Err(error) => JobEntry {
            job_id: job.id(),
            tier: job.tier.as_str(),
            outcome: "error",
            reason: Some(error.to_string()),
            output: None,
            files_in: job.inputs.len(),
            bytes_in: job.input_bytes(),
            rows_in: 0,
            rows_out: 0,
            bytes_out: 0,
            deduplicated: false,
            epoch: None,
            fenced_commits: 0,
            elapsed_ms: 0,
            finished_at,
        },
    };
    status.recent_jobs.push_back(entry);
    while status.recent_jobs.len() > RECENT_JOBS {
        status.recent_jobs.pop_front();
    }
}

/// RFC 3339 UTC with millisecond precision.
fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses the `tier` parameter of a trigger.
///
/// # Errors
///
/// A message naming the bad value.
pub fn parse_tier(text: &str) -> Result<Tier, String> {
    match text {
        "hourly" => Ok(Tier::Hourly),
        "daily" => Ok(Tier::Daily),
        other => Err(format!("invalid tier {other:?}: expected hourly or daily")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::load(
            None,
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string())),
        )
        .expect("valid configuration")
    }

    #[test]
    fn test_should_compact_only_standalone_and_compactor_nodes() {
        assert!(compacts(&config(&[])));
        assert!(!compacts(&config(&[("ARC_COMPACTION_ENABLED", "false")])));
        let clustered = |role: &str| {
            config(&[
                ("ARC_CLUSTER_ENABLED", "true"),
                ("ARC_CLUSTER_ROLE", role),
                ("ARC_CLUSTER_SHARED_SECRET", "0123456789abcdef-secret"),
            ])
        };
        assert!(compacts(&clustered("compactor")));
        assert!(!compacts(&clustered("writer")));
        assert!(!compacts(&clustered("reader")));
    }

    #[test]
    fn test_should_map_the_keys_to_the_crate_settings_with_their_defaults() {
        let defaults = config(&[]);
        assert_eq!(plan_settings(&defaults.compaction), PlanSettings::default());
        let executor = executor_settings(&defaults.compaction);
        let crate_defaults = ExecutorSettings::default();
        assert_eq!(executor.merge, crate_defaults.merge);
        assert_eq!(executor.merge_threads, crate_defaults.merge_threads);
        assert!(executor.scratch_dir.is_absolute());
        assert!(executor.scratch_dir.ends_with("data/compaction"));
        executor.validate().expect("the defaults are valid");

        let tuned = config(&[
            ("ARC_COMPACTION_CLOSED_AFTER", "30s"),
            ("ARC_COMPACTION_MAX_JOB_BYTES", "64MB"),
            ("ARC_COMPACTION_MEMORY_LIMIT", "32MB"),
            ("ARC_COMPACTION_MERGE_FAN_IN", "8"),
            ("ARC_COMPACTION_THREADS", "2"),
            ("ARC_COMPACTION_HOURLY_MIN_FILES", "2"),
        ]);
        let plan = plan_settings(&tuned.compaction);
        assert_eq!(plan.closed_after, Duration::from_secs(30));
        assert_eq!(plan.max_job_bytes, 64 << 20);
        assert_eq!(plan.hourly_min_files, 2);
        let executor = executor_settings(&tuned.compaction);
        assert_eq!(executor.merge.memory_limit_bytes, 32 << 20);
        assert_eq!(executor.merge.fan_in, 8);
        assert_eq!(executor.merge_threads, 2);
    }

    #[test]
    fn test_should_reject_unusable_values_naming_the_key() {
        for (name, value, key) in [
            (
                "ARC_COMPACTION_HOURLY_MIN_FILES",
                "0",
                "compaction.hourly_min_files",
            ),
            (
                "ARC_COMPACTION_MEMORY_LIMIT",
                "512KB",
                "compaction.memory_limit",
            ),
            (
                "ARC_COMPACTION_MERGE_FAN_IN",
                "1",
                "compaction.merge_fan_in",
            ),
            ("ARC_COMPACTION_THREADS", "0", "compaction.threads"),
            ("ARC_COMPACTION_INTERVAL", "0s", "compaction.interval"),
            ("ARC_COMPACTION_GC_INTERVAL", "0", "compaction.gc_interval"),
            (
                "ARC_COMPACTION_MAX_JOB_BYTES",
                "0",
                "compaction.max_job_bytes",
            ),
        ] {
            let error = Config::load(None, [(name.to_string(), value.to_string())])
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{name}={value}: {error}");
        }
    }

    #[test]
    fn test_should_refuse_a_second_trigger_while_one_is_marked() {
        let (sender, mut receiver) = mpsc::channel(1);
        let handle = CompactionHandle::new("n1", sender);
        let now = Utc::now();
        let request = TriggerRequest {
            database: Some("db".into()),
            tier: Some(Tier::Hourly),
        };
        handle.trigger(request.clone(), now).unwrap();
        assert!(matches!(
            handle.trigger(request.clone(), now),
            Err(TriggerError::Busy {
                trigger: "manual",
                ..
            })
        ));
        // A tick meanwhile leaves the run to the trigger.
        assert!(!handle.begin_scheduled(now));
        assert_eq!(receiver.try_recv().unwrap(), request);
        assert_eq!(handle.status().run.unwrap().tier, Some("hourly"));
        drop(receiver);
        handle.lock().run = None;
        assert_eq!(handle.trigger(request, now), Err(TriggerError::Closed));
        assert!(
            handle.status().run.is_none(),
            "a refused trigger marks nothing"
        );
    }

    #[test]
    fn test_should_parse_tiers() {
        assert_eq!(parse_tier("hourly"), Ok(Tier::Hourly));
        assert_eq!(parse_tier("daily"), Ok(Tier::Daily));
        assert!(parse_tier("weekly").unwrap_err().contains("weekly"));
    }
}
