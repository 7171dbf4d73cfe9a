//! The job ledger: demand, recorded. One entry per job attempt (job id + run attempt) with its
//! pool, status and times. The planner reads a pool's queued jobs from here instead of inferring
//! them from instance tags, so whichever runner took whichever job, the count of queued jobs
//! stays right.
//!
//! [`transition`] is the whole rule set, as a pure function. The DynamoDB adapter
//! (`hangar_aws::dynamo::DynamoLedger`) writes the same rules as conditional writes, and its
//! tests check it against this function on every order of events; [`MemoryLedger`] applies this
//! function to a map, for tests of the orchestration.
//!
//! The rules, which make redeliveries, duplicates and out-of-order webhooks harmless:
//! - `queued` creates a queued entry; on an existing entry (any status) it changes nothing, so a
//!   late or repeated `queued` never revives a job that started or ended;
//! - `in_progress` moves a queued entry to started, or creates it started (it arrived first);
//!   on a started or done entry it changes nothing;
//! - `completed` ends the entry from any status but done, or creates it done. A `completed`
//!   with no runner is a job cancelled while queued.
//!
//! A re-run is a new run attempt, so a new entry. Entries expire ([`ENTRY_TTL_HOURS`]) after
//! their last change: GitHub itself gives up on a job queued for 24 hours, so a `queued`
//! arriving later than that for an ended job is not worth a runner either.

use crate::event::{MAX_JOB_LABELS, MAX_LABEL_BYTES};
use crate::ids::{InstallationId, JobId, PoolName, RepoFullName, RunId, RunnerName};
use crate::message::QueueMessage;
use crate::ports::PortError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// How long an entry lives after its last change (DynamoDB TTL). GitHub cancels a job that has
/// been queued for 24 hours ("Usage limits": job queue time), so an entry older than that is
/// of no use to any plan.
pub const ENTRY_TTL_HOURS: i64 = 24;

/// Longest pool name, repository name or runner name an event may carry. GitHub's own limits are
/// far lower (a repository's full name is at most 140 characters); this only bounds what a
/// hostile message can make the ledger store.
pub const MAX_NAME_BYTES: usize = 512;

/// One job attempt: the ledger's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobKey {
    pub job_id: JobId,
    pub run_attempt: u32,
}

impl JobKey {
    pub fn new(job_id: JobId, run_attempt: u32) -> Self {
        Self { job_id, run_attempt }
    }
}

impl fmt::Display for JobKey {
    /// `<job id>#<run attempt>`: the DynamoDB partition key, and what logs name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.job_id, self.run_attempt)
    }
}

impl std::str::FromStr for JobKey {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        let bad = || LedgerError::Corrupt(format!("job key `{}` is not <job id>#<attempt>", short(s)));
        let (id, attempt) = s.split_once('#').ok_or_else(bad)?;
        Ok(JobKey {
            job_id: JobId(id.parse().map_err(|_| bad())?),
            run_attempt: attempt.parse().map_err(|_| bad())?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Started,
    Done,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Started => "started",
            JobStatus::Done => "done",
        }
    }
    pub fn parse(s: &str) -> Result<Self, LedgerError> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "started" => JobStatus::Started,
            "done" => JobStatus::Done,
            other => return Err(LedgerError::Corrupt(format!("unknown job status `{}`", short(other)))),
        })
    }
}

/// A ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerJob {
    pub key: JobKey,
    pub pool: PoolName,
    pub status: JobStatus,
    pub run_id: RunId,
    pub repository: RepoFullName,
    pub installation_id: Option<InstallationId>,
    /// The job's labels as the `queued` event gave them; empty when `queued` never arrived.
    pub labels: Vec<String>,
    /// When GitHub queued the job; for an entry created by a later event, that event's time.
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub runner_name: Option<RunnerName>,
    pub conclusion: Option<String>,
    /// DynamoDB TTL: [`ENTRY_TTL_HOURS`] after the last change.
    pub expires_at: DateTime<Utc>,
}

impl LedgerJob {
    /// Cancelled while queued: ended with no runner ever named.
    pub fn cancelled_while_queued(&self) -> bool {
        self.status == JobStatus::Done && self.runner_name.is_none() && self.started_at.is_none()
    }
}

/// What happened to a job, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobChange {
    Queued {
        created_at: DateTime<Utc>,
        labels: Vec<String>,
    },
    Started {
        runner_name: Option<RunnerName>,
        started_at: Option<DateTime<Utc>>,
    },
    Completed {
        runner_name: Option<RunnerName>,
        conclusion: Option<String>,
        completed_at: Option<DateTime<Utc>>,
    },
}

impl JobChange {
    pub fn status(&self) -> JobStatus {
        match self {
            JobChange::Queued { .. } => JobStatus::Queued,
            JobChange::Started { .. } => JobStatus::Started,
            JobChange::Completed { .. } => JobStatus::Done,
        }
    }
}

/// One event for one job attempt, with what every entry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub key: JobKey,
    pub pool: PoolName,
    pub run_id: RunId,
    pub repository: RepoFullName,
    pub installation_id: Option<InstallationId>,
    pub change: JobChange,
}

impl JobEvent {
    /// The ledger event a scale-queue message carries.
    pub fn from_message(msg: &QueueMessage) -> Self {
        match msg {
            QueueMessage::ScaleUp(j) => JobEvent {
                key: JobKey::new(j.job_id, j.run_attempt),
                pool: j.pool.clone(),
                run_id: j.run_id,
                repository: j.repository.clone(),
                installation_id: j.installation_id,
                change: JobChange::Queued {
                    // A `queued` payload always has `created_at`; an old message without it
                    // counts from the epoch, so it sorts first (served first), never last.
                    created_at: j.created_at.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
                    labels: j.labels.clone(),
                },
            },
            QueueMessage::JobStarted(j) => JobEvent {
                key: JobKey::new(j.job_id, j.run_attempt),
                pool: j.pool.clone(),
                run_id: j.run_id,
                repository: j.repository.clone(),
                installation_id: j.installation_id,
                change: JobChange::Started { runner_name: j.runner_name.clone(), started_at: j.started_at },
            },
            QueueMessage::JobCompleted(j) => JobEvent {
                key: JobKey::new(j.job_id, j.run_attempt),
                pool: j.pool.clone(),
                run_id: j.run_id,
                repository: j.repository.clone(),
                installation_id: j.installation_id,
                change: JobChange::Completed {
                    runner_name: j.runner_name.clone(),
                    conclusion: j.conclusion.clone(),
                    completed_at: j.completed_at,
                },
            },
        }
    }

    /// Refuses what no GitHub event carries: empty or oversized names, too many or too long
    /// labels. A refused event is a permanent failure: retrying cannot make it valid.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let name = |what: &str, v: &str| {
            if v.is_empty() {
                Err(LedgerError::Invalid(format!("{what} is empty")))
            } else if v.len() > MAX_NAME_BYTES {
                Err(LedgerError::Invalid(format!("{what} is over {MAX_NAME_BYTES} bytes")))
            } else {
                Ok(())
            }
        };
        name("pool", self.pool.as_str())?;
        name("repository", self.repository.as_str())?;
        let runner = match &self.change {
            JobChange::Queued { labels, .. } => {
                if labels.len() > MAX_JOB_LABELS {
                    return Err(LedgerError::Invalid(format!(
                        "{} labels, over {MAX_JOB_LABELS}",
                        labels.len()
                    )));
                }
                if labels.iter().any(|l| l.len() > MAX_LABEL_BYTES) {
                    return Err(LedgerError::Invalid(format!("a label is over {MAX_LABEL_BYTES} bytes")));
                }
                None
            }
            JobChange::Started { runner_name, .. } | JobChange::Completed { runner_name, .. } => {
                runner_name.as_ref()
            }
        };
        if let Some(r) = runner {
            name("runner name", r.as_str())?;
        }
        if let JobChange::Completed { conclusion: Some(c), .. } = &self.change {
            name("conclusion", c)?;
        }
        Ok(())
    }
}

/// The outcome of applying one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The entry was created (`from: None`) or moved on.
    Recorded { from: Option<JobStatus>, job: Box<LedgerJob> },
    /// Nothing changed: a duplicate, or an event older than the entry's status.
    Unchanged { existing: JobStatus },
}

impl Applied {
    pub fn changed(&self) -> bool {
        matches!(self, Applied::Recorded { .. })
    }
}

/// The rule set: what `event` does to `current` at `now`. `Unchanged` leaves the entry as it is
/// (its TTL too).
pub fn transition(current: Option<&LedgerJob>, event: &JobEvent, now: DateTime<Utc>) -> Applied {
    let to = event.change.status();
    if let Some(cur) = current {
        let moves_on = matches!(
            (cur.status, to),
            (JobStatus::Queued, JobStatus::Started | JobStatus::Done) | (JobStatus::Started, JobStatus::Done)
        );
        if !moves_on {
            return Applied::Unchanged { existing: cur.status };
        }
    }
    let expires_at = expires_at(now);
    let mut job = match current {
        Some(cur) => cur.clone(),
        None => LedgerJob {
            key: event.key,
            pool: event.pool.clone(),
            status: to,
            run_id: event.run_id,
            repository: event.repository.clone(),
            installation_id: event.installation_id,
            labels: Vec::new(),
            created_at: now,
            started_at: None,
            completed_at: None,
            runner_name: None,
            conclusion: None,
            expires_at,
        },
    };
    job.status = to;
    job.expires_at = expires_at;
    if job.installation_id.is_none() {
        job.installation_id = event.installation_id;
    }
    match &event.change {
        JobChange::Queued { created_at, labels } => {
            job.created_at = *created_at;
            job.labels = labels.clone();
        }
        JobChange::Started { runner_name, started_at } => {
            let at = started_at.unwrap_or(now);
            if current.is_none() {
                job.created_at = at;
            }
            job.started_at = Some(at);
            job.runner_name = runner_name.clone();
        }
        JobChange::Completed { runner_name, conclusion, completed_at } => {
            let at = completed_at.unwrap_or(now);
            if current.is_none() {
                job.created_at = at;
            }
            job.completed_at = Some(at);
            if runner_name.is_some() {
                job.runner_name = runner_name.clone();
            }
            job.conclusion = conclusion.clone();
        }
    }
    Applied::Recorded { from: current.map(|c| c.status), job: Box::new(job) }
}

/// When an entry changed at `now` expires: [`ENTRY_TTL_HOURS`] later, in whole seconds, as
/// DynamoDB's TTL attribute holds it.
pub fn expires_at(now: DateTime<Utc>) -> DateTime<Utc> {
    let at = now.timestamp().saturating_add(ENTRY_TTL_HOURS * 3600);
    DateTime::from_timestamp(at, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Oldest first, then by key: the order a pool's queued jobs are served and reported in.
pub fn sort_oldest_first(jobs: &mut [LedgerJob]) {
    jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.key.cmp(&b.key)));
}

/// A pool's queued jobs as a batch that just wrote `own` sees them: `queried` (which an index
/// that lags may not show the batch's own writes in) with each of the batch's entries in its
/// latest state, oldest first. `own` holds the entries this batch recorded for the pool, later
/// ones last.
pub fn merge_own_writes(queried: Vec<LedgerJob>, own: &[LedgerJob]) -> Vec<LedgerJob> {
    let mut by_key: BTreeMap<JobKey, LedgerJob> = queried.into_iter().map(|j| (j.key, j)).collect();
    for j in own {
        if j.status == JobStatus::Queued {
            by_key.insert(j.key, j.clone());
        } else {
            by_key.remove(&j.key);
        }
    }
    let mut out: Vec<LedgerJob> = by_key.into_values().collect();
    sort_oldest_first(&mut out);
    out
}

/// A ledger failure the core can name.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    /// The event cannot be recorded as it is; retrying will not help.
    #[error("job event refused: {0}")]
    Invalid(String),
    /// A stored entry does not fit the model (written by hand, or by a newer version).
    #[error("ledger entry does not fit the model: {0}")]
    Corrupt(String),
}

impl From<LedgerError> for PortError {
    fn from(e: LedgerError) -> Self {
        PortError::permanent("ledger", None, e.to_string())
    }
}

/// The pool an open entry is listed under, for [`JobLedger::open`]: a queued job's own pool; a
/// started job's *runner's* pool (a job may run on any pool's runner whose labels fit, and it
/// is that pool's runner it keeps busy), or its own when the runner's name names no pool; none
/// once it is done.
pub fn open_pool(job: &LedgerJob) -> Option<PoolName> {
    match job.status {
        JobStatus::Queued => Some(job.pool.clone()),
        JobStatus::Started => {
            Some(job.runner_name.as_ref().and_then(RunnerName::pool).unwrap_or_else(|| job.pool.clone()))
        }
        JobStatus::Done => None,
    }
}

/// [`JobLedger::open`]'s entries as a plan takes them: the queued jobs, and the running ones
/// (whose runners are busy), each oldest first.
pub fn split_open(open: Vec<LedgerJob>) -> (Vec<LedgerJob>, Vec<LedgerJob>) {
    open.into_iter().partition(|j| j.status == JobStatus::Queued)
}

/// The job ledger.
///
/// The DynamoDB adapter needs `dynamodb:PutItem`, `dynamodb:UpdateItem` and `dynamodb:GetItem`
/// on the table for [`JobLedger::apply`], and `dynamodb:Query` on its `open-by-pool` index
/// plus `dynamodb:BatchGetItem` on the table for [`JobLedger::open`].
#[async_trait]
pub trait JobLedger: Send + Sync {
    /// Applies one event by [`transition`]'s rules, atomically (a conditional write), with the
    /// TTL counted from `now`.
    async fn apply(&self, event: &JobEvent, now: DateTime<Utc>) -> Result<Applied, PortError>;
    /// The pool's open entries ([`open_pool`]): its queued jobs and the started jobs running on
    /// its runners, oldest first, each as of a consistent read. The started ones tell a plan
    /// which runners are busy as soon as anyone recorded the start, before the pool's own
    /// batch reaches it and tags the instance.
    async fn open(&self, pool: &PoolName) -> Result<Vec<LedgerJob>, PortError>;
    /// The pool's queued jobs, oldest first: the queued part of [`JobLedger::open`].
    async fn queued(&self, pool: &PoolName) -> Result<Vec<LedgerJob>, PortError> {
        Ok(split_open(self.open(pool).await?).0)
    }
    /// One entry, read consistently.
    async fn get(&self, key: JobKey) -> Result<Option<LedgerJob>, PortError>;
}

/// [`transition`] over a map: the ledger for tests of the orchestration. Its behaviour is the
/// specification the DynamoDB adapter is tested against.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    jobs: Mutex<BTreeMap<JobKey, LedgerJob>>,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn all(&self) -> Vec<LedgerJob> {
        self.jobs.lock().expect("ledger lock").values().cloned().collect()
    }
}

#[async_trait]
impl JobLedger for MemoryLedger {
    async fn apply(&self, event: &JobEvent, now: DateTime<Utc>) -> Result<Applied, PortError> {
        event.validate()?;
        let mut jobs = self.jobs.lock().expect("ledger lock");
        let applied = transition(jobs.get(&event.key), event, now);
        if let Applied::Recorded { job, .. } = &applied {
            jobs.insert(job.key, (**job).clone());
        }
        Ok(applied)
    }

    async fn open(&self, pool: &PoolName) -> Result<Vec<LedgerJob>, PortError> {
        let jobs = self.jobs.lock().expect("ledger lock");
        let mut out: Vec<_> =
            jobs.values().filter(|j| open_pool(j).as_ref() == Some(pool)).cloned().collect();
        sort_oldest_first(&mut out);
        Ok(out)
    }

    async fn get(&self, key: JobKey) -> Result<Option<LedgerJob>, PortError> {
        Ok(self.jobs.lock().expect("ledger lock").get(&key).cloned())
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(1_700_000_000 + s)
    }

    fn ev(change: JobChange) -> JobEvent {
        JobEvent {
            key: JobKey::new(JobId(7), 1),
            pool: "linux-x64".into(),
            run_id: RunId(70),
            repository: "acme/app".into(),
            installation_id: Some(InstallationId(3)),
            change,
        }
    }
    fn queued() -> JobEvent {
        ev(JobChange::Queued { created_at: t(0), labels: vec!["self-hosted".into()] })
    }
    fn started() -> JobEvent {
        ev(JobChange::Started { runner_name: Some("r1".into()), started_at: Some(t(5)) })
    }
    fn completed(runner: Option<&str>) -> JobEvent {
        ev(JobChange::Completed {
            runner_name: runner.map(RunnerName::from),
            conclusion: Some("success".into()),
            completed_at: Some(t(9)),
        })
    }

    fn record(cur: Option<&LedgerJob>, e: &JobEvent) -> LedgerJob {
        match transition(cur, e, t(100)) {
            Applied::Recorded { job, .. } => *job,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn queued_then_started_then_completed_keeps_every_time() {
        let q = record(None, &queued());
        assert_eq!((q.status, q.created_at), (JobStatus::Queued, t(0)));
        let s = record(Some(&q), &started());
        assert_eq!(
            (s.status, s.started_at, s.runner_name.as_ref().map(|r| r.as_str())),
            (JobStatus::Started, Some(t(5)), Some("r1"))
        );
        assert_eq!(s.labels, vec!["self-hosted".to_string()]);
        let d = record(Some(&s), &completed(Some("r1")));
        assert_eq!((d.status, d.created_at, d.completed_at), (JobStatus::Done, t(0), Some(t(9))));
        assert_eq!(d.expires_at, t(100) + Duration::hours(ENTRY_TTL_HOURS));
        assert!(!d.cancelled_while_queued());
    }

    #[test]
    fn a_late_queued_never_revives_a_started_or_done_job() {
        let s = record(None, &started());
        assert_eq!(
            transition(Some(&s), &queued(), t(1)),
            Applied::Unchanged { existing: JobStatus::Started }
        );
        let d = record(Some(&s), &completed(Some("r1")));
        assert_eq!(transition(Some(&d), &queued(), t(1)), Applied::Unchanged { existing: JobStatus::Done });
        assert_eq!(transition(Some(&d), &started(), t(1)), Applied::Unchanged { existing: JobStatus::Done });
    }

    #[test]
    fn duplicates_change_nothing() {
        let q = record(None, &queued());
        assert_eq!(transition(Some(&q), &queued(), t(1)), Applied::Unchanged { existing: JobStatus::Queued });
        let s = record(Some(&q), &started());
        assert_eq!(
            transition(Some(&s), &started(), t(1)),
            Applied::Unchanged { existing: JobStatus::Started }
        );
    }

    #[test]
    fn a_cancel_while_queued_ends_the_job_with_no_runner() {
        let q = record(None, &queued());
        let d = record(Some(&q), &completed(None));
        assert!(d.cancelled_while_queued());
        assert_eq!(d.status, JobStatus::Done);
    }

    #[test]
    fn a_batchs_own_writes_win_over_a_lagging_index() {
        let q = record(None, &queued());
        let mut other = q.clone();
        other.key = JobKey::new(JobId(8), 1);
        other.created_at = t(-5);
        // The index still lists job 7, which this batch started, and misses job 8, which this
        // batch queued.
        let started_7 = record(Some(&q), &started());
        let merged = merge_own_writes(vec![q.clone()], &[started_7.clone(), other.clone()]);
        assert_eq!(merged, vec![other.clone()]);
        let merged = merge_own_writes(vec![], &[q.clone(), other.clone()]);
        assert_eq!(merged.iter().map(|j| j.key.job_id.0).collect::<Vec<_>>(), vec![8, 7], "oldest first");
        // Later writes win: queued, then started, in one batch.
        assert!(merge_own_writes(vec![], &[q, started_7]).is_empty());
    }

    #[test]
    fn job_keys_round_trip_and_refuse_garbage() {
        let k = JobKey::new(JobId(u64::MAX), 3);
        assert_eq!(k.to_string().parse::<JobKey>().unwrap(), k);
        for bad in ["", "1", "1#", "#1", "x#1", "1#-1", "1#2#3"] {
            assert!(bad.parse::<JobKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hostile_events_are_refused() {
        let mut e = queued();
        e.pool = "".into();
        assert!(e.validate().is_err());
        let mut e = queued();
        e.repository = RepoFullName("r".repeat(MAX_NAME_BYTES + 1));
        assert!(e.validate().is_err());
        let e = ev(JobChange::Queued { created_at: t(0), labels: vec!["l".into(); MAX_JOB_LABELS + 1] });
        assert!(e.validate().is_err());
        assert!(queued().validate().is_ok());
        assert!(JobStatus::parse("running").is_err());
    }
}
