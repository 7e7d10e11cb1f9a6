//! Compaction for arc-node (issue 12; DESIGN.md section 8): merging the small Parquet objects
//! flushes write into one object per closed hour and per closed day, without changing what a
//! query returns (except that, of duplicate points, only the last write remains).
//!
//! The crate depends on storage only; the node decides when and where it runs (a compactor
//! role in a cluster, in-process on a standalone node) and owns the schedule.
//!
//! # Layout
//! - [`plan`](crate::plan()): the pure planner: catalog snapshot + time + [`PlanSettings`]
//!   → [`Job`]s.
//! - [`owner_of`], [`jobs_owned_by`]: the pure split of partitions over the live compactors
//!   (rendezvous hashing).
//! - [`merge_files`]: the blocking, bounded-memory k-way merge of time-sorted Parquet files,
//!   with the duplicate-point rule.
//! - [`Compactor`]: runs one job against the object store and the catalog: download, merge
//!   off the runtime, upload, one `compact` record; reports [`JobOutcome`].
//! - [`GarbageCollector`]: deletes objects the catalog no longer names, after a grace period.
//! - [`metrics`]: metric names and [`metrics::describe`].
//! - [`CompactError`]: the error type.
//! - `failpoints` (feature `failpoints`): crash points inside a job.
//!
//! # Lifecycle (what the node runs)
//!
//! Every tick: refresh the catalog, [`plan()`] from its snapshot, keep the jobs this node owns
//! ([`jobs_owned_by`] over the live compactors), and run them one partition after the other
//! with [`Compactor::run_job`]; every few minutes run [`GarbageCollector::collect`].

mod error;
mod failpoints;
mod gc;
mod job;
mod merge;
pub mod metrics;
mod ownership;
mod plan;

pub use error::CompactError;
#[cfg(feature = "failpoints")]
pub use failpoints::{FailAction, clear_failpoints, configure_failpoints};
pub use gc::{GarbageCollector, GcReport};
pub use job::{Compactor, ExecutorSettings, JobOutcome, JobReport};
pub use merge::{MergeInput, MergeOutput, MergeSettings, merge_files};
pub use ownership::{jobs_owned_by, owner_of};
pub use plan::{Job, ObjectKind, PartitionKey, PlanSettings, Tier, object_kind, plan};
