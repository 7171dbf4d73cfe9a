//! The counting path: a pool is planned from the job ledger ([`hangar_core::ledger`]) and what
//! EC2 lists, by [`hangar_core::plan::plan_pool`]. No job is bound to an instance, so nothing
//! has to be handed on when one job takes the runner launched for another.
//!
//! # Triggers, one plan per pool at a time
//! Every trigger for a pool arrives as a message in the pool's FIFO group, so SQS runs one
//! batch per pool at a time and no two plans of a pool overlap:
//! - the pool's job events (the webhook's messages);
//! - a [`Tick`] when an instance of the pool goes (the state-change handler), when one is
//!   interrupted (the spot handler), when another pool's job started on one of its runners (a
//!   batch), and once a minute from reconcile (`reconcile: true`: the plan also sees GitHub's
//!   runners and the stored JIT configs, and judges timeouts).
//!
//! # At the cap, jobs wait in the ledger
//! A job the pool has no room for is simply still queued in the ledger: its message is
//! acknowledged, and the next trigger (its runner's job ending frees capacity, and so does an
//! instance going) plans again. Nothing goes round the queue.
//!
//! # Failures
//! The ledger records the batch's events first; a message it could not record fails with every
//! message after it in the group (Lambda's FIFO rule). If carrying the plan out fails in a way
//! a retry can mend, a retry tick plans the pool again right after the batch, up to
//! [`QUICK_RETRIES`] times in a row; after that the batch's last message is reported failed,
//! SQS redelivers it after the visibility timeout, and that delivery plans the pool again
//! (recording it again changes nothing). The others are acknowledged: the ledger holds what
//! they said.

use crate::ledger::record_batch;
use crate::messages::{Inbound, Item, Provision, Tick};
use crate::scaler::Scaler;
use futures::stream::{self, StreamExt};
use hangar_core::config::{PoolConfig, RunnerScope};
use hangar_core::ids::{InstanceId, PoolName, RunnerName};
use hangar_core::ledger::{merge_own_writes, split_open, JobStatus, LedgerJob};
use hangar_core::message::QueueMessage;
use hangar_core::metrics::{names, MetricRecord};
use hangar_core::plan::{
    foreign_starts, plan_pool, Mode, PoolPlan, PoolView, RecordedLaunch, RECORDED_LAUNCH_TTL_SECS,
};
use hangar_core::ports::{LaunchRequest, LaunchedInstance, PortError, RegisteredRunner, StoredJit};
use hangar_core::state::Lifecycle;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Plans that failed in a way a retry can mend are retried at once this many times in a row
/// (each call's own SDK retries and backoff come first); then the visibility timeout paces
/// them.
pub const QUICK_RETRIES: u32 = 3;

/// Tag writes of one plan in flight at once: enough to hide EC2's latency for a batch of ten
/// events, well under EC2's CreateTags request rate.
const TAG_CONCURRENCY: usize = 8;

/// What carrying a plan out left undone.
#[derive(Debug, Default)]
struct Carried {
    errors: Vec<PortError>,
    launched: u32,
}

impl Carried {
    /// A retry could mend something: plan the pool again after the visibility timeout.
    fn retry(&self) -> bool {
        self.errors.iter().any(|e| e.retryable)
    }
}

impl Scaler {
    /// Sends the pool a [`Tick`]. IAM: `sqs:SendMessage` on the scale queue.
    /// `Ok(false)` for a pool no longer configured: it has no group to plan in (a tick would
    /// fail into the dead-letter queue), and its instances are reconcile's orphans to judge.
    pub(crate) async fn send_tick(&self, pool: &PoolName, dedup_id: String) -> Result<bool, PortError> {
        if self.p.config.pool(pool).is_none() {
            return Ok(false);
        }
        let tick = Tick { pool: pool.clone(), reconcile: false, retry: 0, dedup_id };
        self.p.queue.send(&tick.outbound()).await.map(|()| true)
    }

    /// The reconcile schedule on the counting path: the ledger's part (old queued jobs checked
    /// against GitHub, the demand gauges), then one reconcile tick per pool, in the pool's FIFO
    /// group, so that reconcile's judgements and launches are made by the pool's own batch.
    pub async fn reconcile_by_ticks(&self) -> Result<Value, crate::ScalerError> {
        let now = self.p.clock.now();
        let mut errors = Vec::new();
        let pools = &self.p.config.pools;
        errors.extend(
            crate::ledger::reconcile(
                self.p.ledger.as_ref(),
                self.p.github.as_ref(),
                &self.p.metrics,
                pools,
                now,
            )
            .await,
        );
        let mut ticked = Vec::new();
        for pool in &self.p.config.pools {
            // One per pool per minute: a retried schedule event sends no second one.
            let dedup_id = format!("reconcile-{}-{}", pool.name, now.timestamp().div_euclid(60));
            let tick = Tick { pool: pool.name.clone(), reconcile: true, retry: 0, dedup_id };
            match self.p.queue.send(&tick.outbound()).await {
                Ok(()) => ticked.push(pool.name.to_string()),
                Err(e) => errors.push(e),
            }
        }
        self.emit_rate_limit();
        if errors.is_empty() {
            tracing::info!(pools = ticked.len(), "reconcile ticks sent");
            return Ok(json!({ "ticked": ticked }));
        }
        let retryable = errors.iter().all(|e| e.retryable);
        Err(crate::ScalerError {
            kind: "Reconcile",
            retryable,
            message: format!("{} step(s) failed; first: {}", errors.len(), errors[0]),
        })
    }

    /// One pool's batch: record its job events, plan from the ledger, carry the plan out.
    /// Returns the failed message ids.
    pub(crate) async fn counting_batch(&self, pool: &PoolConfig, mut items: Vec<Item>) -> Vec<String> {
        let started = std::time::Instant::now();
        let ledger = self.p.ledger.as_ref();
        let now = self.p.clock.now();
        let indexed: Vec<(usize, &QueueMessage)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| match &it.inbound {
                Inbound::Queue(m) => Some((i, m)),
                _ => None,
            })
            .collect();
        let messages: Vec<&QueueMessage> = indexed.iter().map(|(_, m)| *m).collect();
        let (recorded, described, launches) = futures::join!(
            record_batch(ledger, &messages, now),
            self.p.fleet.describe_pool(&pool.name),
            self.recorded_launches(&pool.name)
        );
        let mut failed = Vec::new();
        if let Some(k) = recorded.failed_from {
            let cut = indexed[k].0;
            failed.extend(items.drain(cut..).map(|i| i.message_id));
        }
        if items.is_empty() {
            return failed;
        }
        let instances = match described {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(pool = %pool.name, code = e.code.as_deref().unwrap_or(""), error = %e, "describe failed; the batch is retried");
                failed.extend(items.into_iter().map(|i| i.message_id));
                return failed;
            }
        };
        let (queued, running) = match ledger.open(&pool.name).await {
            Ok(open) => split_open(open),
            Err(e) => {
                tracing::warn!(pool = %pool.name, code = e.code.as_deref().unwrap_or(""), error = %e, "ledger query failed; the batch is retried");
                failed.extend(items.into_iter().map(|i| i.message_id));
                return failed;
            }
        };
        let own: Vec<LedgerJob> = recorded.changed.iter().filter(|j| j.pool == pool.name).cloned().collect();
        let queued = merge_own_writes(queued, &own);
        let of =
            |s: JobStatus| recorded.changed.iter().filter(|j| j.status == s).cloned().collect::<Vec<_>>();
        let (started_jobs, finished_jobs) = (of(JobStatus::Started), of(JobStatus::Done));

        let reconcile = items.iter().any(|i| matches!(i.inbound, Inbound::Tick { reconcile: true, .. }));
        let (runners, configs) = if reconcile { self.reconcile_inputs().await } else { (None, None) };
        let mut view = PoolView::batch(pool, now, &queued, &instances);
        view.recorded_launches = &launches;
        view.started = &started_jobs;
        view.running = &running;
        view.finished = &finished_jobs;
        if let (Some(r), Some(c)) = (&runners, &configs) {
            view.mode = Mode::Reconcile;
            view.runners = Some(r);
            view.jit_configs = Some(c);
        }
        let plan = plan_pool(&view);
        let planned = started.elapsed();
        let mut carried = self.carry_out(pool, &view, &plan).await;
        for (other, id) in foreign_starts(&view) {
            self.foreign_start(&other, &id, &mut carried).await;
        }
        self.p.metrics.emit(&plan.metrics, now);
        for e in &carried.errors {
            tracing::warn!(pool = %pool.name, operation = e.operation, code = e.code.as_deref().unwrap_or(""), retryable = e.retryable, error = %e, "action failed");
        }
        // A failed action is acknowledged or retried within the pool's group, never a Lambda
        // error, so it has a metric of its own (the PlanActionsFailing alarm).
        let action_errors: Vec<MetricRecord> = carried
            .errors
            .iter()
            .map(|e| {
                MetricRecord::count(names::PLAN_ACTION_ERRORS, Some(&pool.name), 1.0)
                    .with("Operation", e.operation.to_string())
            })
            .collect();
        self.p.metrics.emit(&action_errors, now);
        let c = plan.counts;
        tracing::info!(
            pool = %pool.name,
            mode = if view.mode == Mode::Reconcile { "reconcile" } else { "batch" },
            messages = items.len(),
            queued = c.queued,
            free = c.free(),
            busy = c.busy,
            counted = c.counted,
            at_max = c.at_max,
            terminated = plan.terminate.len(),
            launched = carried.launched,
            plan_ms = planned.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "pool planned"
        );
        if carried.retry() && !self.retry_soon(&pool.name, &items).await {
            // The last message only: its redelivery plans the pool again, and the others'
            // events are in the ledger already.
            failed.extend(items.pop().map(|i| i.message_id));
        }
        failed
    }

    /// After a plan that a retry could mend (throttling, capacity), plan again right after
    /// this batch: a retry tick in the pool's group, at most [`QUICK_RETRIES`] in a row. Past
    /// that, or if the tick cannot be sent, `false`: the batch's last message is reported
    /// failed and SQS redelivers it after the visibility timeout, which paces a failure that
    /// lasts. Each tick's deduplication id names the batch it retries, so a retried batch
    /// sends no second one.
    async fn retry_soon(&self, pool: &PoolName, items: &[Item]) -> bool {
        let prior = items
            .iter()
            .filter_map(|i| match i.inbound {
                Inbound::Tick { retry, .. } => Some(retry),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let retry = prior + 1;
        if retry > QUICK_RETRIES {
            return false;
        }
        let first = items.first().map_or("", |i| i.message_id.as_str());
        let tick =
            Tick { pool: pool.clone(), reconcile: false, retry, dedup_id: format!("retry-{retry}-{first}") };
        match self.p.queue.send(&tick.outbound()).await {
            Ok(()) => {
                tracing::info!(pool = %pool, retry, "plan failed; planning again after this batch");
                true
            }
            Err(e) => {
                tracing::warn!(pool = %pool, code = e.code.as_deref().unwrap_or(""), "could not send a retry tick");
                false
            }
        }
    }

    /// The pool's recorded launches; none if the log cannot be read (the plan then trusts
    /// `DescribeInstances` alone).
    async fn recorded_launches(&self, pool: &PoolName) -> Vec<RecordedLaunch> {
        self.p.launches.recent(pool).await.unwrap_or_else(|e| {
            tracing::warn!(pool = %pool, code = e.code.as_deref().unwrap_or(""), error = %e, "recorded launches unreadable; planning on DescribeInstances alone");
            Vec::new()
        })
    }

    /// Records a launch's instances (and drops the entries past their time) so the next plans
    /// count them before `DescribeInstances` lists them.
    async fn record_launches(&self, pool: &PoolName, view: &PoolView<'_>, launched: &[LaunchedInstance]) {
        let now = self.p.clock.now();
        let new: Vec<RecordedLaunch> =
            launched.iter().map(|i| RecordedLaunch { id: i.id.clone(), launched_at: now }).collect();
        let ttl = chrono::Duration::seconds(RECORDED_LAUNCH_TTL_SECS);
        let stale: Vec<InstanceId> = view
            .recorded_launches
            .iter()
            .filter(|l| now - l.launched_at > ttl)
            .map(|l| l.id.clone())
            .collect();
        if let Err(e) = self.p.launches.record(pool, &new, &stale).await {
            tracing::warn!(pool = %pool, code = e.code.as_deref().unwrap_or(""), error = %e, "launch not recorded; a describe that lags may see it late");
        }
    }

    /// GitHub's runners and the stored JIT configs, for a reconcile plan; `None` for both if
    /// either read fails (the plan then judges nothing that needs them).
    async fn reconcile_inputs(&self) -> (Option<Vec<RegisteredRunner>>, Option<Vec<StoredJit>>) {
        let (runners, configs) =
            futures::join!(self.p.github.list_runners(&self.p.config.organization), self.p.jit.list());
        match (runners, configs) {
            (Ok(r), Ok(c)) => (Some(r), Some(c)),
            (r, c) => {
                for e in [r.err(), c.err()].into_iter().flatten() {
                    tracing::warn!(code = e.code.as_deref().unwrap_or(""), error = %e, "reconcile input unavailable; planned as a batch");
                }
                (None, None)
            }
        }
    }

    /// Carries a plan out in its order: terminations first, and no launch if one failed (the
    /// launch headroom counted those instances as gone). IAM: `ec2:TerminateInstances`,
    /// `ec2:CreateTags`, `ssm:DeleteParameter`; GitHub "Self-hosted runners: write".
    async fn carry_out(&self, pool: &PoolConfig, view: &PoolView<'_>, plan: &PoolPlan) -> Carried {
        let mut out = Carried::default();
        let mut terminate_failed = false;
        let ids: Vec<InstanceId> = plan.terminate.iter().map(|(id, _)| id.clone()).collect();
        if !ids.is_empty() {
            match self.p.fleet.terminate(&ids).await {
                Ok(()) => {
                    let reasons: BTreeSet<&str> = plan.terminate.iter().map(|(_, r)| r.as_str()).collect();
                    tracing::info!(pool = %pool.name, count = ids.len(), reasons = ?reasons, "terminated");
                }
                Err(e) => {
                    terminate_failed = true;
                    out.errors.push(e);
                }
            }
        }
        let tags: Vec<Result<(), PortError>> = stream::iter(&plan.tag_busy)
            .map(|id| async move {
                let job = view
                    .started
                    .iter()
                    .chain(view.running)
                    .find(|j| j.runner_name.as_ref().and_then(RunnerName::instance_id).as_ref() == Some(id))
                    .map(|j| j.key.job_id);
                self.p.fleet.set_lifecycle(id, Lifecycle::Busy, job).await
            })
            .buffer_unordered(TAG_CONCURRENCY)
            .collect()
            .await;
        out.errors.extend(tags.into_iter().filter_map(Result::err));
        for id in &plan.delete_configs {
            if let Err(e) = self.p.jit.delete(id).await {
                out.errors.push(e);
            }
        }
        for r in &plan.deregister {
            match self.p.github.delete_runner(&self.p.config.organization, r.id).await {
                Ok(()) => tracing::info!(pool = %pool.name, runner = %r.name, "runner deregistered"),
                // Gone already: what we wanted.
                Err(e) if e.code.as_deref() == Some("404") => {}
                Err(e) => out.errors.push(e),
            }
        }
        for r in &plan.reruns {
            if let Err(e) = self.rerun(pool, &r.repository, r.job, r.run_attempt).await {
                out.errors.push(e);
            }
        }
        if let Some(launch) = &plan.launch {
            if terminate_failed {
                tracing::warn!(pool = %pool.name, "a termination failed; no launch until the pool is planned again");
            } else {
                self.launch_shortfall(pool, view, plan, launch, &mut out).await;
            }
        }
        out
    }

    /// One CreateFleet for the plan's whole shortfall, then a JIT config per new instance,
    /// written concurrently while they boot. An instance that gets no config is terminated at
    /// once; the ledger still counts its job, so the plan its termination triggers launches
    /// again. IAM: `ec2:CreateFleet`, `ec2:RunInstances`, `ec2:CreateTags`, `iam:PassRole`;
    /// `ssm:PutParameter`, `ssm:AddTagsToResource`; GitHub "Self-hosted runners: write".
    async fn launch_shortfall(
        &self,
        pool: &PoolConfig,
        view: &PoolView<'_>,
        plan: &PoolPlan,
        launch: &hangar_core::plan::Launch,
        out: &mut Carried,
    ) {
        // A repository runner serves only its repository's jobs, so a repository-scoped pool
        // launches one per queued job beyond its free runners, each for that job's repository,
        // and keeps no warm runners (a warm runner has no repository).
        let for_repos: Vec<&LedgerJob> = view.queued.iter().skip(plan.counts.free() as usize).collect();
        let count = match pool.runner_scope {
            RunnerScope::Org => launch.count,
            RunnerScope::Repo => launch.count.min(for_repos.len() as u32),
        };
        if count == 0 {
            return;
        }
        let req = LaunchRequest {
            pool: pool.clone(),
            count,
            reason: launch.reason,
            idempotency_key: launch.idempotency_key.clone(),
        };
        let now = self.p.clock.now();
        let outcome = match self.p.fleet.launch(&req).await {
            Ok(o) => o,
            Err(e) => {
                let code = e.code.clone().unwrap_or_else(|| "Error".into());
                let m = MetricRecord::count(names::LAUNCH_FAILURES, Some(&pool.name), 1.0)
                    .with("ErrorCode", code);
                self.p.metrics.emit(&[m], now);
                out.errors.push(e);
                return;
            }
        };
        self.emit_launch_metrics(pool, &outcome, now);
        self.record_launches(&pool.name, view, &outcome.launched).await;
        if (outcome.launched.len() as u32) < count {
            // Fewer than asked (capacity): plan again after the visibility timeout.
            out.errors.push(PortError::retryable(
                "ec2:CreateFleet",
                Some("ShortLaunch".into()),
                format!("{} of {count} instances launched", outcome.launched.len()),
            ));
        }
        tracing::info!(pool = %pool.name, count, launched = outcome.launched.len(), reason = ?launch.reason, queued = plan.counts.queued, "launched for the shortfall");
        let work: Vec<(LaunchedInstance, Option<&LedgerJob>)> = outcome
            .launched
            .iter()
            .enumerate()
            .map(|(i, inst)| (inst.clone(), for_repos.get(i).copied()))
            .collect();
        if let Some(queue) = self.p.provisioning.as_deref() {
            self.hand_to_provisioner(queue, pool, work, now, out).await;
            return;
        }
        let results: Vec<(LaunchedInstance, Result<(), PortError>)> = stream::iter(work)
            .map(|(inst, job)| async move {
                let r = self.provision(pool, &inst, job.map(|j| (&j.repository, j.installation_id))).await;
                (inst, r)
            })
            .buffer_unordered(self.p.options.jit_concurrency.max(1))
            .collect()
            .await;
        for (inst, r) in results {
            match r {
                Ok(()) => out.launched += 1,
                Err(e) => {
                    tracing::warn!(pool = %pool.name, instance = %inst.id, code = e.code.as_deref().unwrap_or(""), error = %e, "no JIT config; terminating the new instance");
                    if let Err(t) = self.p.fleet.terminate(std::slice::from_ref(&inst.id)).await {
                        tracing::warn!(instance = %inst.id, code = t.code.as_deref().unwrap_or(""), "could not terminate the unprovisioned instance; reconcile's boot timeout will");
                    }
                    out.errors.push(e);
                }
            }
        }
    }

    /// The new instances' JIT configs are the provisioner's ([`crate::provisioner`]): one
    /// message each. An instance whose message cannot be sent is terminated at once (its job
    /// stays counted, so the plan its termination triggers launches again), and the plan is
    /// retried.
    async fn hand_to_provisioner(
        &self,
        queue: &dyn hangar_core::ports::ProvisionQueue,
        pool: &PoolConfig,
        work: Vec<(LaunchedInstance, Option<&LedgerJob>)>,
        launched_at: chrono::DateTime<chrono::Utc>,
        out: &mut Carried,
    ) {
        let work: Vec<(LaunchedInstance, Option<Provision>)> = work
            .into_iter()
            .map(|(inst, job)| {
                let repository = match (pool.runner_scope, job) {
                    (RunnerScope::Repo, Some(j)) => Some((j.repository.clone(), j.installation_id)),
                    (RunnerScope::Repo, None) => return (inst, None),
                    (RunnerScope::Org, _) => None,
                };
                let p = Provision {
                    pool: pool.name.clone(),
                    instance: inst.id.clone(),
                    capacity_type: inst.capacity_type,
                    instance_type: inst.instance_type.clone(),
                    repository,
                    launched_at,
                };
                (inst, Some(p))
            })
            .collect();
        // A repository runner with no job to take its repository from cannot be provisioned
        // (launch_shortfall launches at most one per job, so this is a guard, not a path).
        let mut unsent: Vec<(LaunchedInstance, PortError)> = work
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(i, _)| {
                let e = PortError::permanent(
                    "scaler:provision",
                    Some("NoRepository".into()),
                    "no job's repository",
                );
                (i.clone(), e)
            })
            .collect();
        unsent.extend(self.send_provisions(queue, pool, &work).await);
        out.launched += (work.len() - unsent.len()) as u32;
        if unsent.is_empty() {
            return;
        }
        let ids: Vec<InstanceId> = unsent.iter().map(|(i, _)| i.id.clone()).collect();
        tracing::warn!(pool = %pool.name, count = ids.len(), "no provisioning message; terminating the new instances");
        if let Err(t) = self.p.fleet.terminate(&ids).await {
            tracing::warn!(pool = %pool.name, code = t.code.as_deref().unwrap_or(""), "could not terminate them; reconcile's boot timeout will");
        }
        out.errors.extend(unsent.into_iter().map(|(_, e)| e));
    }

    fn emit_launch_metrics(
        &self,
        pool: &PoolConfig,
        outcome: &hangar_core::ports::LaunchOutcome,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let mut records = Vec::new();
        let mut by_type: std::collections::BTreeMap<&'static str, u32> = Default::default();
        for i in &outcome.launched {
            *by_type.entry(i.capacity_type.as_str()).or_default() += 1;
        }
        for (t, n) in by_type {
            records.push(
                MetricRecord::count(names::LAUNCHES, Some(&pool.name), n as f64).with("CapacityType", t),
            );
        }
        let mut by_code: std::collections::BTreeMap<&str, u32> = Default::default();
        for f in &outcome.failures {
            *by_code.entry(f.code.as_str()).or_default() += 1;
        }
        if outcome.launched.is_empty() {
            // Every override failed (no capacity anywhere the pool allows, or a limit): the
            // fleet call itself returned, but nothing launched, which is a failed launch.
            let code = by_code.keys().next().copied().unwrap_or("NoCapacity");
            records.push(
                MetricRecord::count(names::LAUNCH_FAILURES, Some(&pool.name), 1.0).with("ErrorCode", code),
            );
        }
        for (code, n) in by_code {
            records.push(
                MetricRecord::count(names::LAUNCH_OVERRIDE_ERRORS, Some(&pool.name), n as f64)
                    .with("ErrorCode", code),
            );
        }
        self.p.metrics.emit(&records, now);
    }

    /// A job of this batch started on another pool's runner (labels overlap): that runner is
    /// busy now, so its pool is short one free runner. Tag it `busy` and tick its pool, whose
    /// own plan makes up for it.
    async fn foreign_start(&self, pool: &PoolName, id: &InstanceId, out: &mut Carried) {
        // Tagged before the tick, so the plan the tick starts sees it busy; a pool no longer
        // configured has no plan to tell.
        if self.p.config.pool(pool).is_none() {
            return;
        }
        if let Err(e) = self.p.fleet.set_lifecycle(id, Lifecycle::Busy, None).await {
            out.errors.push(e);
        }
        if let Err(e) = self.send_tick(pool, format!("busy-{id}")).await {
            out.errors.push(e);
        }
    }
}
