//! The planner: a pure function from a catalog snapshot and the time to the compaction jobs.
//!
//! # Rules
//!
//! Objects are grouped per table by the UTC hour and day of their data (`time_range`), and
//! classified by key ([`ObjectKind`]): raw flush objects, hourly and daily compacted objects.
//! - A day is *closed* once `now >= day end + closed_after`, an hour once
//!   `now >= hour end + closed_after`; nothing in a period that is not closed is touched, so
//!   late rows still arriving through flushes never race a merge of their period.
//! - Daily: a closed day with at least `daily_min_files` raw and hourly objects becomes one
//!   daily object; its inputs are all of the day's objects (existing daily objects too, so a day
//!   converges to one object). A day planned daily gets no hourly jobs in the same plan.
//! - Hourly: a closed hour with at least `hourly_min_files` raw objects becomes one hourly
//!   object; its inputs are the hour's raw and hourly objects.
//! - A partition larger than `max_job_bytes`, `max_job_rows` or `max_job_objects` is split
//!   into several jobs, each a contiguous run of its inputs in *write order* (below), so each
//!   output covers one stretch of the log and "the last write wins" stays well defined when the
//!   outputs are merged again. A chunk that is a single object already of the job's tier is
//!   dropped (rewriting it would gain nothing), which also makes the plan converge: the
//!   trigger counts only objects of a lower tier, and every job turns its inputs into one
//!   object of its tier.
//! - Those outputs are merged again, into one, as soon as the period's objects fit in one job
//!   (a closed hour with two or more hourly objects, a closed day with two or more daily
//!   ones): splits by object count are the common case (an hour of small flushes), and until
//!   a point's writes are in one merge, each stretch keeps its own copy of it. This converges
//!   too: the merge leaves one object, and a period that does not fit is left as it is.
//!
//! Every live object is in at most one job, and the same snapshot, time and settings always
//! give the same jobs in the same order (tables, days and hours ascending).
//!
//! # Write order
//!
//! Within one period, inputs are ordered oldest write first: daily objects, then hourly
//! objects (by key: the UUID v7 in it orders by creation), then raw objects by (epoch,
//! lsn_last, lsn_first) from their key. Compacted objects come first because a partition's
//! jobs run one after the other on its single owner ([`crate::owner_of`]), so any raw object
//! still live next to a compacted one was committed after that compacted object's inputs.
//! The merge itself orders its inputs by the epoch and LSNs in their footers.

use std::collections::BTreeMap;
use std::time::Duration;

use arc_storage::paths::{self, CompactionPeriod, parse_compacted_object_path};
use arc_storage::{CatalogState, DataObject, TableId};
use object_store::path::Path;

use crate::error::CompactError;

pub(crate) const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
pub(crate) const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;

/// The tier a job writes: one object per hour or per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// Merge a closed hour's objects into one hourly object.
    Hourly,
    /// Merge a closed day's objects into one daily object.
    Daily,
}

impl Tier {
    /// Returns the tier's name as used in labels and the API (`hourly`, `daily`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hourly => "hourly",
            Tier::Daily => "daily",
        }
    }

    /// Returns the period the tier's objects cover, for `compacted_object_path`.
    pub fn period(self) -> CompactionPeriod {
        match self {
            Tier::Hourly => CompactionPeriod::Hour,
            Tier::Daily => CompactionPeriod::Day,
        }
    }

    fn object_kind(self) -> ObjectKind {
        match self {
            Tier::Hourly => ObjectKind::Hourly,
            Tier::Daily => ObjectKind::Daily,
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a live object is, by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A daily compacted object (`.../{DD}/compacted-{uuid}.parquet`).
    Daily,
    /// An hourly compacted object (`.../{DD}/{HH}/compacted-{uuid}.parquet`).
    Hourly,
    /// Anything else: a flush's object (`.../{HH}/{epoch}-{lsn_first}-{lsn_last}-{uuid}.parquet`).
    Raw,
}

/// Classifies a live object's key by `arc_storage::paths`' own parser of compacted keys.
pub fn object_kind(key: &str) -> ObjectKind {
    let Ok(path) = Path::parse(key) else {
        return ObjectKind::Raw;
    };
    match parse_compacted_object_path(&path).map(|key| key.period) {
        Some(CompactionPeriod::Day) => ObjectKind::Daily,
        Some(CompactionPeriod::Hour) => ObjectKind::Hourly,
        None => ObjectKind::Raw,
    }
}

/// The unit of ownership: one table's objects of one UTC day (its hourly and daily jobs
/// alike), so one compactor runs all of a day's jobs, one after the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// The table.
    pub table: TableId,
    /// Start of the UTC day, nanoseconds since the Unix epoch.
    pub day_start_ns: i64,
}

/// Tuning of the planner (`[compaction]` keys; see each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSettings {
    /// Plan hourly jobs (`compaction.hourly_enabled`, default true).
    pub hourly_enabled: bool,
    /// Plan daily jobs (`compaction.daily_enabled`, default true).
    pub daily_enabled: bool,
    /// Fewest raw objects in a closed hour worth merging (`compaction.hourly_min_files`,
    /// default 10). Lower: fewer small files sooner, more rewriting.
    pub hourly_min_files: usize,
    /// Fewest raw and hourly objects in a closed day worth merging
    /// (`compaction.daily_min_files`, default 12).
    pub daily_min_files: usize,
    /// How long after a period ends it counts as closed (`compaction.closed_after`, default
    /// 10 minutes): late rows flushed within this window land before the merge, later ones in
    /// a new raw object that a later run merges. Longer: fewer re-merges, later compaction.
    pub closed_after: Duration,
    /// Largest total input size of one job in bytes (`compaction.max_job_bytes`, default
    /// 2 GiB): bounds the scratch disk a job needs (inputs plus output) and its duration.
    pub max_job_bytes: u64,
    /// Largest total input rows of one job (`compaction.max_job_rows`, default 200 million).
    pub max_job_rows: u64,
    /// Most input objects of one job (`compaction.max_job_objects`, default 2000); the merge
    /// opens at most its fan-in at once, whatever this is.
    pub max_job_objects: usize,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            hourly_enabled: true,
            daily_enabled: true,
            hourly_min_files: 10,
            daily_min_files: 12,
            closed_after: Duration::from_secs(600),
            max_job_bytes: 2 << 30,
            max_job_rows: 200_000_000,
            max_job_objects: 2000,
        }
    }
}

impl PlanSettings {
    /// Checks that the limits can be met.
    ///
    /// # Errors
    ///
    /// [`CompactError::Invalid`] naming the setting that is zero.
    pub fn validate(&self) -> Result<(), CompactError> {
        for (name, value) in [
            ("hourly_min_files", self.hourly_min_files as u64),
            ("daily_min_files", self.daily_min_files as u64),
            ("max_job_bytes", self.max_job_bytes),
            ("max_job_rows", self.max_job_rows),
            ("max_job_objects", self.max_job_objects as u64),
        ] {
            if value == 0 {
                return Err(CompactError::Invalid(format!(
                    "compaction.{name} must be at least 1"
                )));
            }
        }
        Ok(())
    }
}

/// One compaction job: merge `inputs` into one object of `tier` for the period starting at
/// `period_start_ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The table.
    pub table: TableId,
    /// The tier of the output.
    pub tier: Tier,
    /// Start of the UTC hour (hourly) or day (daily) the output covers.
    pub period_start_ns: i64,
    /// Which chunk of its period this job is (0 unless the period was split).
    pub chunk: usize,
    /// The objects to merge and remove, oldest write first.
    pub inputs: Vec<DataObject>,
}

impl Job {
    /// Returns the partition (table and day) the job belongs to, for ownership.
    pub fn partition(&self) -> PartitionKey {
        PartitionKey {
            table: self.table.clone(),
            day_start_ns: paths::day_start_ns(self.period_start_ns),
        }
    }

    /// Returns a stable, human-readable id for logs and the status API:
    /// `db.table/hourly/{period_start_ns}/{chunk}`.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.table, self.tier, self.period_start_ns, self.chunk
        )
    }

    /// Returns the total size of the inputs in bytes.
    pub fn input_bytes(&self) -> u64 {
        self.inputs.iter().map(|object| object.bytes).sum()
    }

    /// Returns the total rows of the inputs.
    pub fn input_rows(&self) -> u64 {
        self.inputs.iter().map(|object| object.rows).sum()
    }
}

/// A live object placed in its periods.
struct Placed<'a> {
    object: &'a DataObject,
    kind: ObjectKind,
    /// The hour of an object whose data lies within one hour (`None`: it spans hours).
    hour_start_ns: Option<i64>,
}

/// The objects of one table in one day.
#[derive(Default)]
struct DayObjects<'a> {
    objects: Vec<Placed<'a>>,
}

/// Plans the jobs for `state` at `now_ns` (nanoseconds since the Unix epoch, UTC).
///
/// Pure and deterministic: see the module docs for the rules. Objects whose time range spans
/// two days (never written by a flush or a compaction) are left alone.
pub fn plan(state: &CatalogState, now_ns: i64, settings: &PlanSettings) -> Vec<Job> {
    let closed_after_ns = i64::try_from(settings.closed_after.as_nanos()).unwrap_or(i64::MAX);
    let mut jobs = Vec::new();
    for (table, table_state) in &state.tables {
        let mut days: BTreeMap<i64, DayObjects<'_>> = BTreeMap::new();
        for object in &table_state.objects {
            let range = object.time_range;
            if range.start_ns > range.end_ns {
                continue;
            }
            let day = paths::day_start_ns(range.start_ns);
            if paths::day_start_ns(range.end_ns) != day {
                continue;
            }
            let hour = paths::hour_start_ns(range.start_ns);
            let hour_start_ns = (paths::hour_start_ns(range.end_ns) == hour).then_some(hour);
            days.entry(day).or_default().objects.push(Placed {
                object,
                kind: object_kind(&object.path),
                hour_start_ns,
            });
        }
        for (day_start_ns, day) in days {
            plan_day(
                table,
                day_start_ns,
                day,
                now_ns,
                closed_after_ns,
                settings,
                &mut jobs,
            );
        }
    }
    jobs
}

fn is_closed(period_start_ns: i64, period_ns: i64, closed_after_ns: i64, now_ns: i64) -> bool {
    // Saturating: a period at the end of time is simply never closed.
    period_start_ns
        .checked_add(period_ns)
        .and_then(|end| end.checked_add(closed_after_ns))
        .is_some_and(|closed_at| now_ns >= closed_at)
}

fn plan_day(
    table: &TableId,
    day_start_ns: i64,
    day: DayObjects<'_>,
    now_ns: i64,
    closed_after_ns: i64,
    settings: &PlanSettings,
    jobs: &mut Vec<Job>,
) {
    if settings.daily_enabled && is_closed(day_start_ns, NANOS_PER_DAY, closed_after_ns, now_ns) {
        let lower_tier = day
            .objects
            .iter()
            .filter(|placed| placed.kind != ObjectKind::Daily)
            .count();
        let daily = day.objects.len() - lower_tier;
        if lower_tier >= settings.daily_min_files
            || (daily >= 2 && fits_one_job(day.objects.iter(), settings))
        {
            let inputs: Vec<&Placed<'_>> = day.objects.iter().collect();
            push_chunks(table, Tier::Daily, day_start_ns, inputs, settings, jobs);
            return;
        }
    }
    if !settings.hourly_enabled {
        return;
    }
    let mut hours: BTreeMap<i64, Vec<&Placed<'_>>> = BTreeMap::new();
    for placed in &day.objects {
        // Daily objects and objects spanning hours belong to no hour.
        if let (Some(hour), ObjectKind::Raw | ObjectKind::Hourly) =
            (placed.hour_start_ns, placed.kind)
        {
            hours.entry(hour).or_default().push(placed);
        }
    }
    for (hour_start_ns, inputs) in hours {
        if !is_closed(hour_start_ns, NANOS_PER_HOUR, closed_after_ns, now_ns) {
            continue;
        }
        let raw = inputs
            .iter()
            .filter(|placed| placed.kind == ObjectKind::Raw)
            .count();
        let hourly = inputs
            .iter()
            .filter(|placed| placed.kind == ObjectKind::Hourly)
            .count();
        if raw >= settings.hourly_min_files
            || (hourly >= 2 && fits_one_job(inputs.iter().copied(), settings))
        {
            push_chunks(table, Tier::Hourly, hour_start_ns, inputs, settings, jobs);
        }
    }
}

/// The size of a job's inputs, against the `max_job_*` bounds.
#[derive(Debug, Clone, Copy, Default)]
struct JobSize {
    objects: usize,
    bytes: u64,
    rows: u64,
}

impl JobSize {
    /// This size with `placed` added.
    fn with(self, placed: &Placed<'_>) -> Self {
        Self {
            objects: self.objects + 1,
            bytes: self.bytes.saturating_add(placed.object.bytes),
            rows: self.rows.saturating_add(placed.object.rows),
        }
    }

    /// Whether one job may have inputs of this size.
    fn within(self, settings: &PlanSettings) -> bool {
        self.objects <= settings.max_job_objects
            && self.bytes <= settings.max_job_bytes
            && self.rows <= settings.max_job_rows
    }
}

/// Whether `objects` are within every bound of one job.
fn fits_one_job<'p, 'a: 'p>(
    mut objects: impl Iterator<Item = &'p Placed<'a>>,
    settings: &PlanSettings,
) -> bool {
    objects
        .try_fold(JobSize::default(), |size, placed| {
            Some(size.with(placed)).filter(|size| size.within(settings))
        })
        .is_some()
}

/// The planner's write-order key of an object (see the module docs).
fn write_order(placed: &Placed<'_>) -> (ObjectKind, u64, u64, u64, String) {
    let path = &placed.object.path;
    let (epoch, lsn_last, lsn_first) = match placed.kind {
        ObjectKind::Raw => object_store::path::Path::parse(path)
            .ok()
            .and_then(|key| paths::parse_data_object_path(&key))
            .map_or((0, 0, 0), |key| (key.epoch, key.lsn_last, key.lsn_first)),
        ObjectKind::Daily | ObjectKind::Hourly => (0, 0, 0),
    };
    (placed.kind, epoch, lsn_last, lsn_first, path.clone())
}

/// Sorts a period's inputs into write order and appends one job per bounded chunk.
fn push_chunks(
    table: &TableId,
    tier: Tier,
    period_start_ns: i64,
    mut inputs: Vec<&Placed<'_>>,
    settings: &PlanSettings,
    jobs: &mut Vec<Job>,
) {
    inputs.sort_by_cached_key(|placed| write_order(placed));
    let mut chunks: Vec<Vec<&Placed<'_>>> = Vec::new();
    let mut current: Vec<&Placed<'_>> = Vec::new();
    let mut size = JobSize::default();
    for placed in inputs {
        if !current.is_empty() && !size.with(placed).within(settings) {
            chunks.push(std::mem::take(&mut current));
            size = JobSize::default();
        }
        size = size.with(placed);
        current.push(placed);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    let mut chunk_index = 0;
    for chunk in chunks {
        if let [only] = chunk.as_slice()
            && only.kind == tier.object_kind()
        {
            continue;
        }
        jobs.push(Job {
            table: table.clone(),
            tier,
            period_start_ns,
            chunk: chunk_index,
            inputs: chunk.iter().map(|placed| placed.object.clone()).collect(),
        });
        chunk_index += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use arc_storage::{TableState, TimeRange};
    use proptest::prelude::*;

    use super::*;

    // 2024-03-05T00:00:00Z
    const DAY: i64 = 1_709_596_800_000_000_000;
    const HOUR: i64 = NANOS_PER_HOUR;
    const MINUTE: i64 = 60_000_000_000;

    fn settings() -> PlanSettings {
        PlanSettings {
            hourly_min_files: 3,
            daily_min_files: 4,
            ..PlanSettings::default()
        }
    }

    /// A raw object key as a flush makes it (`paths::data_object_path`), with a readable id.
    fn raw(hour: i64, epoch: u64, lsn: u64, start_ns: i64, end_ns: i64) -> DataObject {
        let table = TableId::new("db", "cpu");
        let path = paths::data_object_path(&table, paths::hour_start_ns(hour), epoch, lsn, lsn);
        DataObject {
            path: path.to_string(),
            time_range: TimeRange { start_ns, end_ns },
            rows: 10,
            bytes: 1000,
        }
    }

    fn compacted(tier: Tier, start_ns: i64, end_ns: i64) -> DataObject {
        let table = TableId::new("db", "cpu");
        let path = paths::compacted_object_path(&table, tier.period(), start_ns);
        DataObject {
            path: path.to_string(),
            time_range: TimeRange { start_ns, end_ns },
            rows: 100,
            bytes: 10_000,
        }
    }

    fn state_of(objects: Vec<DataObject>) -> CatalogState {
        let mut state = CatalogState::default();
        state.tables.insert(
            TableId::new("db", "cpu"),
            Arc::new(TableState {
                objects,
                ..TableState::default()
            }),
        );
        state
    }

    fn hour_objects(hour: i64, count: u64, first_lsn: u64) -> Vec<DataObject> {
        (0..count)
            .map(|index| {
                let start = hour + index as i64 * MINUTE;
                raw(hour, 1, first_lsn + index, start, start + MINUTE / 2)
            })
            .collect()
    }

    #[test]
    fn test_should_classify_keys() {
        let table = TableId::new("db", "cpu");
        let hourly = paths::compacted_object_path(&table, CompactionPeriod::Hour, DAY);
        let daily = paths::compacted_object_path(&table, CompactionPeriod::Day, DAY);
        let flushed = paths::data_object_path(&table, DAY, 1, 2, 3);
        assert_eq!(object_kind(hourly.as_ref()), ObjectKind::Hourly);
        assert_eq!(object_kind(daily.as_ref()), ObjectKind::Daily);
        assert_eq!(object_kind(flushed.as_ref()), ObjectKind::Raw);
        assert_eq!(object_kind("compacted-x.parquet"), ObjectKind::Raw);
    }

    #[test]
    fn test_should_plan_one_hourly_job_per_closed_hour() {
        let mut objects = hour_objects(DAY, 3, 1);
        objects.extend(hour_objects(DAY + HOUR, 2, 10));
        objects.extend(hour_objects(DAY + 2 * HOUR, 5, 20));
        let state = state_of(objects);
        // Hours 0 and 1 are closed (10 minutes after hour 2 starts), hour 2 is open.
        let now = DAY + 2 * HOUR + 10 * MINUTE;
        let jobs = plan(&state, now, &settings());
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        let job = &jobs[0];
        assert_eq!(
            (job.tier, job.period_start_ns, job.chunk),
            (Tier::Hourly, DAY, 0)
        );
        assert_eq!(job.inputs.len(), 3);
        assert_eq!(job.id(), format!("db.cpu/hourly/{DAY}/0"));
        // One minute earlier, hour 0 is not closed yet either.
        assert!(plan(&state, now - HOUR - 1, &settings()).is_empty());
    }

    #[test]
    fn test_should_order_inputs_by_write_order() {
        let late = raw(DAY, 2, 5, DAY, DAY + 1);
        let early = raw(DAY, 1, 9, DAY + 5, DAY + 6);
        let middle = raw(DAY, 2, 3, DAY + 2, DAY + 3);
        let hourly = compacted(Tier::Hourly, DAY + 7, DAY + 8);
        let state = state_of(vec![
            late.clone(),
            early.clone(),
            hourly.clone(),
            middle.clone(),
        ]);
        let jobs = plan(&state, DAY + 2 * HOUR, &settings());
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].inputs, vec![hourly, early, middle, late]);
    }

    #[test]
    fn test_should_prefer_daily_over_hourly_for_a_closed_day() {
        let mut objects = hour_objects(DAY, 3, 1);
        objects.extend(hour_objects(DAY + 5 * HOUR, 2, 10));
        objects.push(compacted(Tier::Hourly, DAY + 7 * HOUR, DAY + 8 * HOUR - 1));
        let state = state_of(objects.clone());
        let now = DAY + NANOS_PER_DAY + 10 * MINUTE;
        let jobs = plan(&state, now, &settings());
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].tier, jobs[0].period_start_ns), (Tier::Daily, DAY));
        assert_eq!(jobs[0].inputs.len(), objects.len());

        // Daily disabled: the hour with enough raw objects is merged on its own.
        let hourly_only = PlanSettings {
            daily_enabled: false,
            ..settings()
        };
        let jobs = plan(&state, now, &hourly_only);
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].tier, jobs[0].period_start_ns), (Tier::Hourly, DAY));
    }

    #[test]
    fn test_should_converge_after_compaction() {
        // A day already compacted into one daily object plus two late hourly ones: they count
        // towards a new daily job only once there are enough of them.
        let daily = compacted(Tier::Daily, DAY, DAY + NANOS_PER_DAY - 1);
        let first_hourly = compacted(Tier::Hourly, DAY + HOUR, DAY + 2 * HOUR - 1);
        let second_hourly = compacted(Tier::Hourly, DAY + 3 * HOUR, DAY + 4 * HOUR - 1);
        let now = DAY + 3 * NANOS_PER_DAY;
        let state = state_of(vec![daily.clone(), first_hourly.clone()]);
        assert!(plan(&state, now, &settings()).is_empty());
        let low_threshold = PlanSettings {
            daily_min_files: 2,
            ..settings()
        };
        let state = state_of(vec![
            daily.clone(),
            first_hourly.clone(),
            second_hourly.clone(),
        ]);
        let jobs = plan(&state, now, &low_threshold);
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            jobs[0].inputs,
            vec![daily.clone(), first_hourly, second_hourly]
        );
        // After that job: one daily object, nothing left to do.
        let state = state_of(vec![daily]);
        assert!(plan(&state, now, &low_threshold).is_empty());
    }

    #[test]
    fn test_should_split_large_partitions_into_contiguous_bounded_jobs() {
        let objects = hour_objects(DAY, 10, 1);
        let state = state_of(objects.clone());
        let bounded = PlanSettings {
            max_job_bytes: 3500,
            ..settings()
        };
        let jobs = plan(&state, DAY + 2 * HOUR, &bounded);
        let sizes: Vec<usize> = jobs.iter().map(|job| job.inputs.len()).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        let chunks: Vec<usize> = jobs.iter().map(|job| job.chunk).collect();
        assert_eq!(chunks, [0, 1, 2, 3]);
        let flattened: Vec<DataObject> = jobs.into_iter().flat_map(|job| job.inputs).collect();
        assert_eq!(flattened, objects);
        for job in plan(&state, DAY + 2 * HOUR, &bounded) {
            assert!(job.input_bytes() <= 3500);
        }
    }

    /// The object a job leaves: one of its tier, holding every input row.
    fn output_of(job: &Job) -> DataObject {
        let end_ns = job
            .inputs
            .iter()
            .map(|input| input.time_range.end_ns)
            .max()
            .unwrap_or(job.period_start_ns);
        DataObject {
            rows: job.input_rows(),
            bytes: job.input_bytes(),
            ..compacted(job.tier, job.period_start_ns, end_ns)
        }
    }

    /// Replaces every job's inputs by its output, as running the jobs would.
    fn apply(state: &CatalogState, jobs: &[Job]) -> CatalogState {
        let mut next = state.clone();
        for job in jobs {
            let table = Arc::make_mut(next.tables.get_mut(&job.table).expect("a live table"));
            table.objects.retain(|object| !job.inputs.contains(object));
            table.objects.push(output_of(job));
        }
        next
    }

    #[test]
    fn test_should_merge_the_outputs_of_a_split_hour_once_they_fit_one_job() {
        // Ten small flushes, at most four objects per job: three jobs, three hourly objects.
        let bounded = PlanSettings {
            max_job_objects: 4,
            ..settings()
        };
        let now = DAY + 2 * HOUR;
        let state = state_of(hour_objects(DAY, 10, 1));
        let jobs = plan(&state, now, &bounded);
        assert_eq!(jobs.len(), 3);
        // A point written in two of them is in two objects until they are merged: they fit
        // one job, so they are, into one; then nothing is left to do.
        let split = apply(&state, &jobs);
        let jobs = plan(&split, now, &bounded);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].inputs.len(), 3);
        assert_eq!(jobs[0].tier, Tier::Hourly);
        let merged = apply(&split, &jobs);
        assert_eq!(merged.tables.values().next().unwrap().objects.len(), 1);
        assert!(plan(&merged, now, &bounded).is_empty());
        // Outputs that do not fit one job together (4000 + 4000 + 2000 bytes) are left as they
        // are: merging two of them would rewrite data without bringing all the writes of a
        // point together.
        let tight = PlanSettings {
            max_job_bytes: 9000,
            ..bounded
        };
        assert!(plan(&split, now, &tight).is_empty());
    }

    #[test]
    fn test_should_merge_the_daily_objects_of_a_split_day_once_they_fit_one_job() {
        let first = compacted(Tier::Daily, DAY, DAY + HOUR);
        let second = compacted(Tier::Daily, DAY, DAY + 2 * HOUR);
        let state = state_of(vec![first.clone(), second.clone()]);
        let jobs = plan(&state, DAY + 2 * NANOS_PER_DAY, &settings());
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].tier, Tier::Daily);
        assert_eq!(jobs[0].inputs.len(), 2);
        assert!(plan(&apply(&state, &jobs), DAY + 2 * NANOS_PER_DAY, &settings()).is_empty());
    }

    #[test]
    fn test_should_not_rewrite_a_lone_object_of_the_same_tier() {
        let big = DataObject {
            bytes: 10_000,
            ..compacted(Tier::Hourly, DAY, DAY + 1)
        };
        let mut objects = vec![big];
        objects.extend(hour_objects(DAY, 3, 1));
        let state = state_of(objects);
        let bounded = PlanSettings {
            max_job_bytes: 5000,
            ..settings()
        };
        let jobs = plan(&state, DAY + 2 * HOUR, &bounded);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].inputs.len(), 3);
        assert!(
            jobs[0]
                .inputs
                .iter()
                .all(|o| object_kind(&o.path) == ObjectKind::Raw)
        );
    }

    #[test]
    fn test_should_reject_zero_limits() {
        let bad = PlanSettings {
            max_job_rows: 0,
            ..PlanSettings::default()
        };
        let error = bad.validate().unwrap_err();
        assert!(error.to_string().contains("max_job_rows"), "{error}");
        assert!(PlanSettings::default().validate().is_ok());
    }

    /// A random live object of one of three tables within four days: raw, hourly or daily.
    fn arbitrary_object() -> impl Strategy<Value = (u8, DataObject)> {
        (
            0u8..3,
            0i64..4 * 24,
            0u8..3,
            0i64..HOUR,
            0u64..5,
            1u64..100,
            1u64..5000,
        )
            .prop_map(|(table, hour_index, kind, offset, epoch, lsn, bytes)| {
                let hour = DAY + hour_index * HOUR;
                let object = match kind {
                    0 => raw(hour, epoch, lsn, hour + offset / 2, hour + offset),
                    1 => compacted(Tier::Hourly, hour, hour + offset),
                    _ => {
                        let day = paths::day_start_ns(hour);
                        compacted(Tier::Daily, day, day + NANOS_PER_DAY - 1)
                    }
                };
                (table, DataObject { bytes, ..object })
            })
    }

    fn arbitrary_state() -> impl Strategy<Value = CatalogState> {
        proptest::collection::vec(arbitrary_object(), 0..120).prop_map(|objects| {
            let mut state = CatalogState::default();
            for (table, object) in objects {
                let id = TableId::new("db", format!("m{table}"));
                let entry = state.tables.entry(id).or_default();
                Arc::make_mut(entry).objects.push(object);
            }
            state
        })
    }

    fn arbitrary_settings() -> impl Strategy<Value = PlanSettings> {
        (
            1usize..6,
            1usize..8,
            0i64..120,
            1000u64..20_000,
            1usize..10,
            any::<(bool, bool)>(),
        )
            .prop_map(
                |(hourly_min, daily_min, closed_minutes, max_bytes, max_objects, enabled)| {
                    PlanSettings {
                        hourly_enabled: enabled.0,
                        daily_enabled: enabled.1,
                        hourly_min_files: hourly_min,
                        daily_min_files: daily_min,
                        closed_after: Duration::from_secs(closed_minutes as u64 * 60),
                        max_job_bytes: max_bytes,
                        max_job_rows: 1_000_000,
                        max_job_objects: max_objects,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn prop_every_object_is_input_to_at_most_one_job(
            state in arbitrary_state(),
            now_hours in 0i64..6 * 24,
            settings in arbitrary_settings(),
        ) {
            let jobs = plan(&state, DAY + now_hours * HOUR, &settings);
            let mut seen = HashSet::new();
            for job in &jobs {
                let live = &state.table(&job.table).expect("jobs name live tables").objects;
                for input in &job.inputs {
                    prop_assert!(live.contains(input), "{} is not live", input.path);
                    prop_assert!(seen.insert((job.table.clone(), input.path.clone())),
                        "{} is in two jobs", input.path);
                }
            }
        }

        #[test]
        fn prop_nothing_young_is_touched(
            state in arbitrary_state(),
            now_hours in 0i64..6 * 24,
            now_offset in 0i64..HOUR,
            settings in arbitrary_settings(),
        ) {
            let now = DAY + now_hours * HOUR + now_offset;
            let closed_after = settings.closed_after.as_nanos() as i64;
            for job in plan(&state, now, &settings) {
                let period = match job.tier { Tier::Hourly => HOUR, Tier::Daily => NANOS_PER_DAY };
                let period_end = job.period_start_ns + period;
                prop_assert!(now >= period_end + closed_after, "{} is not closed", job.id());
                for input in &job.inputs {
                    prop_assert!(input.time_range.start_ns >= job.period_start_ns);
                    prop_assert!(input.time_range.end_ns < period_end);
                }
            }
        }

        #[test]
        fn prop_same_snapshot_same_plan(
            state in arbitrary_state(),
            now_hours in 0i64..6 * 24,
            settings in arbitrary_settings(),
        ) {
            let now = DAY + now_hours * HOUR;
            let first = plan(&state, now, &settings);
            // The same state rebuilt in another object order plans the same jobs.
            let mut shuffled = state.clone();
            for table_state in shuffled.tables.values_mut() {
                Arc::make_mut(table_state).objects.reverse();
            }
            prop_assert_eq!(&first, &plan(&state, now, &settings));
            prop_assert_eq!(&first, &plan(&shuffled, now, &settings));
        }

        /// Running the planned jobs and planning again comes to rest: no plan is endless.
        #[test]
        fn prop_compaction_converges(
            state in arbitrary_state(),
            now_hours in 0i64..6 * 24,
            settings in arbitrary_settings(),
        ) {
            let now = DAY + now_hours * HOUR;
            let mut state = state;
            for _ in 0..4 {
                let jobs = plan(&state, now, &settings);
                if jobs.is_empty() {
                    return Ok(());
                }
                state = apply(&state, &jobs);
            }
            prop_assert!(plan(&state, now, &settings).is_empty(), "still planning after 4 rounds");
        }

        #[test]
        fn prop_jobs_are_bounded_and_useful(
            state in arbitrary_state(),
            now_hours in 0i64..6 * 24,
            settings in arbitrary_settings(),
        ) {
            for job in plan(&state, DAY + 6 * 24 * HOUR + now_hours, &settings) {
                prop_assert!(!job.inputs.is_empty());
                prop_assert!(job.inputs.len() <= settings.max_job_objects);
                prop_assert!(job.inputs.len() == 1 || job.input_bytes() <= settings.max_job_bytes);
                if let [only] = job.inputs.as_slice() {
                    prop_assert_ne!(object_kind(&only.path), job.tier.object_kind());
                }
            }
        }
    }
}
