//! The job ledger's part of a batch and of reconcile: every job event of a pool's batch is
//! recorded (each job's in queue order), and reconcile publishes each pool's
//! demand gauges from it and asks GitHub about queued jobs old enough that a lost `completed`
//! or `in_progress` webhook may be why they still look queued.
//!
//! IAM: the DynamoDB actions of [`hangar_aws::dynamo::DynamoLedger`]; `GET` job needs the
//! GitHub App's "Actions: read" permission.

use crate::metrics::Metrics;
use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt};
use hangar_core::config::PoolConfig;
use hangar_core::ledger::{
    transition, Applied, JobChange, JobEvent, JobKey, JobLedger, JobStatus, LedgerJob,
};
use hangar_core::message::QueueMessage;
use hangar_core::plan::ledger_gauges;
use hangar_core::ports::{PortError, RunnerRegistry};
use std::collections::BTreeMap;

/// Queued jobs older than this are checked against GitHub by reconcile.
pub const STALE_AFTER_SECS: i64 = 300;
/// At most this many such checks per reconcile run, oldest first, over all pools: one `GET`
/// job each, well inside an installation's 5,000 requests an hour at one run a minute.
pub const STALE_CHECK_BUDGET: usize = 20;

/// What recording a pool's batch left.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The entries this batch changed, in order.
    pub changed: Vec<LedgerJob>,
    /// The index of the first message that could not be recorded: it and every message after
    /// it in the pool's group must be reported failed (Lambda's FIFO rule), so that SQS
    /// redelivers them in order.
    pub failed_from: Option<usize>,
    /// The `queued` messages (by index) of jobs the ledger holds as started or done: copies and
    /// redeliveries of jobs that no longer wait, which need no runner.
    pub no_longer_waiting: Vec<usize>,
}

/// Job events recorded at once: a batch holds at most ten messages, and each job's own events
/// stay in order (see [`record_batch`]).
const RECORD_CONCURRENCY: usize = 10;

/// One message's outcome: its index in the batch, its event, what the ledger said.
type Outcome = (usize, JobEvent, Result<Applied, PortError>);

/// Records `messages` (one pool's, in queue order). Different jobs' events are written at once,
/// each job's in order. A write that fails with a retryable error stops that job's events
/// there, and the earliest such message is where the batch's failures start. An event the
/// ledger refuses as invalid is logged and skipped: retrying cannot make it valid, and failing
/// it would hold the pool's whole group.
pub async fn record_batch(
    ledger: &dyn JobLedger,
    messages: &[&QueueMessage],
    now: DateTime<Utc>,
) -> Recorded {
    let mut by_job: BTreeMap<JobKey, Vec<(usize, JobEvent)>> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        let e = JobEvent::from_message(m);
        by_job.entry(e.key).or_default().push((i, e));
    }
    let per_job: Vec<Vec<Outcome>> = stream::iter(by_job.into_values())
        .map(|events| async move {
            let mut out = Vec::with_capacity(events.len());
            for (i, e) in events {
                let r = ledger.apply(&e, now).await;
                let stop = matches!(&r, Err(err) if err.retryable);
                out.push((i, e, r));
                if stop {
                    break;
                }
            }
            out
        })
        .buffer_unordered(RECORD_CONCURRENCY)
        .collect()
        .await;
    let mut results: Vec<Outcome> = per_job.into_iter().flatten().collect();
    results.sort_by_key(|(i, _, _)| *i);
    let mut out = Recorded::default();
    for (i, event, r) in results {
        let event_key = event.key;
        match r {
            Ok(Applied::Recorded { from, job }) => {
                tracing::debug!(job = %job.key, pool = %job.pool, from = from.map_or("none", JobStatus::as_str), to = job.status.as_str(), "ledger entry recorded");
                out.changed.push(*job);
            }
            // Already where this event takes it: the webhook recorded it as it arrived (or
            // this is a redelivery). It is still this batch's news to the plan (a start makes a
            // runner busy, an end spends it, and an index that lags may not show a new queued
            // job yet), so it counts as this batch's change, as the event says it.
            Ok(Applied::Unchanged { existing }) if existing == event.change.status() => {
                tracing::debug!(job = %event_key, existing = existing.as_str(), "ledger entry already recorded");
                if let Applied::Recorded { job, .. } = transition(None, &event, now) {
                    out.changed.push(*job);
                }
            }
            Ok(Applied::Unchanged { existing }) => {
                tracing::debug!(job = %event_key, existing = existing.as_str(), "ledger entry unchanged (duplicate or stale event)");
                if matches!(messages[i], QueueMessage::ScaleUp(_)) && existing != JobStatus::Queued {
                    out.no_longer_waiting.push(i);
                }
            }
            Err(e) if !e.retryable => {
                tracing::warn!(job = %event_key, error = %e, "job event refused by the ledger");
            }
            Err(e) => {
                tracing::warn!(job = %event_key, code = e.code.as_deref().unwrap_or(""), error = %e, "ledger write failed; this message and those after it in the pool's group are retried");
                out.failed_from.get_or_insert(i);
            }
        }
    }
    out
}

/// Reconcile's ledger part: old queued jobs checked against GitHub, then every pool's demand
/// gauges. Returns the errors.
pub async fn reconcile(
    ledger: &dyn JobLedger,
    github: &dyn RunnerRegistry,
    metrics: &Metrics,
    pools: &[PoolConfig],
    now: DateTime<Utc>,
) -> Vec<PortError> {
    let mut errors = Vec::new();
    let mut all_queued = Vec::new();
    for pool in pools {
        match ledger.queued(&pool.name).await {
            Ok(q) => all_queued.extend(q),
            Err(e) => errors.push(e),
        }
    }
    let (moved, check_errors) = check_stale(ledger, github, &all_queued, now).await;
    errors.extend(check_errors);
    for pool in pools {
        // Read again only if the checks moved an entry on.
        let queued: Vec<LedgerJob> = if moved == 0 {
            all_queued.iter().filter(|j| j.pool == pool.name).cloned().collect()
        } else {
            match ledger.queued(&pool.name).await {
                Ok(q) => q,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            }
        };
        metrics.emit(&ledger_gauges(&pool.name, now, &queued), now);
    }
    errors
}

/// Reconcile's check of old queued jobs: `GET` each from GitHub (oldest first, within the
/// budget) and record what GitHub says happened. Returns how many entries it moved on, and the
/// errors. A job GitHub answers 404 for (its run deleted) is left to the entry's TTL.
pub async fn check_stale(
    ledger: &dyn JobLedger,
    github: &dyn RunnerRegistry,
    queued: &[LedgerJob],
    now: DateTime<Utc>,
) -> (u32, Vec<PortError>) {
    let stale_before = now - Duration::seconds(STALE_AFTER_SECS);
    let mut old: Vec<&LedgerJob> = queued.iter().filter(|j| j.created_at < stale_before).collect();
    old.sort_by_key(|j| (j.created_at, j.key));
    old.truncate(STALE_CHECK_BUDGET);
    let results: Vec<Result<bool, PortError>> = stream::iter(old)
        .map(|j| async move {
            let info = github.get_job(&j.repository, j.key.job_id).await?;
            let change = match info.status.as_str() {
                "completed" => JobChange::Completed {
                    runner_name: info.runner_name,
                    conclusion: info.conclusion,
                    completed_at: Some(now),
                },
                "in_progress" => JobChange::Started { runner_name: info.runner_name, started_at: Some(now) },
                // Still queued, waiting or pending on GitHub too: the ledger is right.
                _ => return Ok(false),
            };
            let event = JobEvent {
                key: j.key,
                pool: j.pool.clone(),
                run_id: j.run_id,
                repository: j.repository.clone(),
                installation_id: j.installation_id,
                change,
            };
            let applied = ledger.apply(&event, now).await?;
            if applied.changed() {
                tracing::info!(job = %j.key, pool = %j.pool, github_status = %info.status, "queued job found ended or running on GitHub; ledger updated");
            }
            Ok(applied.changed())
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut moved = 0;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(true) => moved += 1,
            Ok(false) => {}
            Err(e) if e.code.as_deref() == Some("404") => {
                tracing::info!(error = %e, "queued job unknown to GitHub; left to its TTL");
            }
            Err(e) => errors.push(e),
        }
    }
    (moved, errors)
}
