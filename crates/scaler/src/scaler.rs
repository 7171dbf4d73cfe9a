//! The scaler: reads an event, asks the core planner what to do, and does it through the ports.

use crate::error::ScalerError;
use crate::event::{detect, EventError, ScalerEvent, SqsRecord};
use crate::lookup::InstanceLookup;
use crate::messages::{parse_body, Inbound, Item, ReplaceDead, TopUp};
use crate::metrics::Metrics;
use aws_lambda_events::event::sqs::SqsBatchResponse;
use futures::stream::{self, StreamExt};
use hangar_core::config::{Config, PoolConfig, RunnerScope};
use hangar_core::ids::{InstallationId, InstanceId, JobId, PoolName, RepoFullName, RunnerName};
use hangar_core::ledger::JobLedger;
use hangar_core::message::{JobRef, QueueMessage};
use hangar_core::metrics::{names, MetricRecord};
use hangar_core::planner::{self, Action, DeadClaim, Mode, Plan, PlanInput};
use hangar_core::ports::{
    Clock, Fleet, JitRequest, JitStore, LaunchReason, LaunchRequest, LaunchedInstance, OutboundMessage,
    PortError, RegisteredRunner, RunnerRegistry, RunnerScopeTarget, ScaleQueue, StoredJit,
};
use hangar_core::state::{Lifecycle, ObservedInstance};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Tag writes of one plan in flight at once: enough to hide EC2's latency for a batch of ten
/// events, well under EC2's CreateTags request rate.
const TAG_CONCURRENCY: usize = 8;

/// Tunables; the defaults suit a Lambda with a 60 s timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalerOptions {
    /// JIT configs generated (and written) at once after a launch.
    pub jit_concurrency: usize,
    /// How long an invocation waits before putting a job that found its pool at `max_runners`
    /// back on the queue: the pace at which a full pool is looked at again.
    pub requeue_pace: std::time::Duration,
    /// After this many requeues a job's message fails instead, and SQS's redrive policy takes
    /// it to the dead-letter queue (whose depth alarms).
    pub max_requeues: u32,
    /// Plan from the job ledger with the counting planner ([`crate::counting`]); needs
    /// [`ScalerParts::ledger`]. Off: the earmark planner.
    pub counting: bool,
}

impl Default for ScalerOptions {
    fn default() -> Self {
        // 2 s x 450 = 15 minutes of waiting for capacity before the job is given up on.
        Self {
            jit_concurrency: 4,
            requeue_pace: std::time::Duration::from_secs(2),
            max_requeues: 450,
            counting: false,
        }
    }
}

/// Everything the scaler talks to. Built once per cold start (see `main.rs`), or by tests with
/// the same adapters pointed at moto and the GitHub simulator.
pub struct ScalerParts {
    pub config: Config,
    pub fleet: Arc<dyn Fleet>,
    pub jit: Arc<dyn JitStore>,
    pub github: Arc<dyn RunnerRegistry>,
    /// The scale queue: reconcile sends warm-pool top-ups through the pool's FIFO group.
    pub queue: Arc<dyn ScaleQueue>,
    pub lookup: Arc<dyn InstanceLookup>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub options: ScalerOptions,
    /// The job ledger. Every job event of a batch is recorded here before the batch plans, and
    /// `queued` messages of jobs it holds as started or done are left out of the plan; reconcile publishes the pools'
    /// demand gauges (`QueuedJobs`, `OldestQueuedAgeSeconds`) from it and asks GitHub about old
    /// queued entries. `None` runs without one (no gauges).
    pub ledger: Option<Arc<dyn JobLedger>>,
    /// Launches recorded for the counting path's plans, which count them until
    /// `DescribeInstances` lists them. `None`: plans see EC2's answer alone.
    pub launches: Option<Arc<dyn hangar_core::ports::LaunchLog>>,
    /// The provisioning queue: on the counting path, launched instances get their JIT configs
    /// from the provisioner ([`crate::provisioner`]) instead of inside the pool's batch. `None`:
    /// the batch provisions them itself.
    pub provisioning: Option<Arc<dyn hangar_core::ports::ProvisionQueue>>,
}

pub struct Scaler {
    pub(crate) p: ScalerParts,
}

/// What one plan's execution left undone, for the messages that asked for it.
#[derive(Debug, Default)]
struct Execution {
    failed_jobs: HashSet<JobId>,
    warm_failed: bool,
    errors: Vec<PortError>,
    launched: u32,
    top_ups: u32,
}

/// Per job: where it runs (for repository-scoped JIT configs) and which deliveries asked.
#[derive(Debug, Default)]
struct JobContext {
    repository: HashMap<JobId, (RepoFullName, Option<InstallationId>)>,
    deliveries: HashMap<JobId, Vec<(String, u32)>>,
}

impl JobContext {
    fn from_items(items: &[Item]) -> Self {
        let mut ctx = JobContext::default();
        for it in items {
            // A claim's replacement is keyed by its delivery too: after a replacement that got
            // no JIT config, the same key would have EC2 hand back the terminated instance.
            if let Inbound::Replace(r) = &it.inbound {
                ctx.deliveries
                    .entry(r.claim.job)
                    .or_default()
                    .push((it.message_id.clone(), it.receive_count));
            }
            let Inbound::Queue(m) = &it.inbound else { continue };
            let (repo, inst) = match m {
                QueueMessage::ScaleUp(j) => (&j.repository, j.installation_id),
                QueueMessage::JobStarted(j) => (&j.repository, j.installation_id),
                QueueMessage::JobCompleted(j) => (&j.repository, j.installation_id),
            };
            ctx.repository.entry(m.job_id()).or_insert_with(|| (repo.clone(), inst));
            if matches!(m, QueueMessage::ScaleUp(_)) {
                ctx.deliveries.entry(m.job_id()).or_default().push((it.message_id.clone(), it.receive_count));
            }
        }
        ctx
    }

    /// The CreateFleet idempotency key for a job launch: the planner's key (the job ids) and
    /// the deliveries that asked for it, receive counts included. A retried CreateFleet within
    /// one invocation (SDK retries, capacity fallbacks) reuses it, so it cannot launch twice; a
    /// redelivery after this invocation gave up on an instance (its JIT config failed and it was
    /// terminated) gets a new key, so EC2 does not hand back the terminated instance; so does a
    /// claim's replacement after the batch that first replaced it gave up on its instance.
    /// Redelivered messages whose launch did succeed launch nothing: the planner finds their
    /// job-id (or `hangar:replaces`) tags.
    fn launch_key(&self, planner_key: &str, jobs: &[JobId]) -> String {
        let mut parts: Vec<String> = jobs
            .iter()
            .flat_map(|j| self.deliveries.get(j).into_iter().flatten())
            .map(|(id, n)| format!("{id}:{n}"))
            .collect();
        if parts.is_empty() {
            return planner_key.to_owned();
        }
        parts.sort();
        let mut h = Sha256::new();
        h.update(planner_key.as_bytes());
        for p in parts {
            h.update([0]);
            h.update(p.as_bytes());
        }
        format!("hangar-{}", &hex::encode(h.finalize())[..32])
    }
}

fn count(name: &'static str, pool: &PoolName, v: f64) -> MetricRecord {
    MetricRecord::count(name, Some(pool), v)
}

impl Scaler {
    pub fn new(parts: ScalerParts) -> Self {
        Self { p: parts }
    }

    pub fn config(&self) -> &Config {
        &self.p.config
    }

    /// The Lambda handler: detects the event kind and handles it. SQS batches answer with
    /// `batchItemFailures` and never fail as a whole; other events fail with a
    /// [`ScalerError`] that says whether a retry can help.
    pub async fn handle(&self, payload: Value) -> Result<Value, ScalerError> {
        self.handle_until(payload, None).await
    }

    /// [`Scaler::handle`] within the invocation's deadline (Lambda's `Context::deadline`): the
    /// provisioner's waits end before it and hand what is left back to the queue.
    pub async fn handle_until(
        &self,
        payload: Value,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Value, ScalerError> {
        let event = detect(&payload).map_err(|e| {
            tracing::warn!(error = %e, "event refused");
            match e {
                EventError::Unknown(_) => ScalerError::permanent("UnknownEvent", e.to_string()),
                EventError::Malformed { .. } => ScalerError::permanent("InvalidEvent", e.to_string()),
            }
        })?;
        match event {
            ScalerEvent::Sqs(records) => {
                let resp = self.handle_sqs_until(records, deadline).await;
                Ok(serde_json::to_value(resp).expect("batch response serialises"))
            }
            ScalerEvent::Schedule if self.p.options.counting => self.reconcile_by_ticks().await,
            ScalerEvent::Schedule => self.reconcile().await,
            ScalerEvent::SpotInterruption { instance } => self.spot_interruption(&instance).await,
            ScalerEvent::StateChange { instance, state } => self.state_change(&instance, &state).await,
        }
    }

    /// Handles one SQS batch. Messages are grouped by pool; each pool is described once, planned
    /// once and executed, and the batch response names exactly the messages whose work was not
    /// done (unparseable, unknown pool, or an action they needed failed).
    pub async fn handle_sqs(&self, records: Vec<SqsRecord>) -> SqsBatchResponse {
        self.handle_sqs_until(records, None).await
    }

    async fn handle_sqs_until(
        &self,
        records: Vec<SqsRecord>,
        deadline: Option<tokio::time::Instant>,
    ) -> SqsBatchResponse {
        let mut failed: BTreeSet<String> = BTreeSet::new();
        let mut by_pool: BTreeMap<PoolName, Vec<Item>> = BTreeMap::new();
        let mut provisions: Vec<Item> = Vec::new();
        for r in records {
            let inbound = match parse_body(&r.body) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(message_id = %r.message_id, bytes = r.body.len(), error = %e, "message refused");
                    failed.insert(r.message_id);
                    continue;
                }
            };
            let pool = match &inbound {
                Inbound::Queue(m) => m.pool().clone(),
                Inbound::TopUp(p) | Inbound::Tick { pool: p, .. } => p.clone(),
                Inbound::Replace(r) => r.pool.clone(),
                Inbound::Provision(p) => p.pool.clone(),
            };
            if self.p.config.pool(&pool).is_none() {
                tracing::warn!(message_id = %r.message_id, pool = %pool, "message for a pool not in the configuration");
                failed.insert(r.message_id);
                continue;
            }
            let provision = matches!(inbound, Inbound::Provision(_));
            let item = Item { message_id: r.message_id, receive_count: r.receive_count, inbound };
            if provision {
                // The standard provisioning queue's: no group, no order, each on its own.
                provisions.push(item);
            } else {
                by_pool.entry(pool).or_default().push(item);
            }
        }
        if !provisions.is_empty() {
            failed.extend(self.provision_batch(provisions, deadline).await);
        }

        let work = by_pool.into_iter().map(|(pool, items)| async move {
            let cfg = self.p.config.pool(&pool).expect("checked above");
            if self.p.options.counting {
                self.counting_batch(cfg, items).await
            } else {
                self.handle_pool_batch(cfg, items).await
            }
        });
        for f in futures::future::join_all(work).await {
            failed.extend(f);
        }
        self.emit_rate_limit();
        let mut resp = SqsBatchResponse::default();
        for id in failed {
            resp.add_failure(id);
        }
        resp
    }

    /// Records the pool's job events in the ledger (beside the describe: the two are
    /// independent), then plans and carries the plan out. A `queued` message of a job the
    /// ledger holds as started or done (a requeued copy or a late redelivery of a job that no
    /// longer waits) is acknowledged and left out of the plan: it needs no runner, and the
    /// current planner, which reads only tags, would launch for it once its runner is gone. A
    /// message the ledger could not record fails, and so does every message after it in the
    /// pool's group (Lambda's FIFO rule: SQS redelivers them in order); none of them is acted
    /// on now. The demand gauges come from reconcile. Returns the failed message ids.
    async fn handle_pool_batch(&self, pool: &PoolConfig, mut items: Vec<Item>) -> Vec<String> {
        let started = std::time::Instant::now();
        let Some(ledger) = self.p.ledger.as_deref() else {
            let described = self.p.fleet.describe_pool(&pool.name).await;
            return self.plan_pool_batch(pool, items, described, started).await;
        };
        let now = self.p.clock.now();
        let queued_messages: Vec<(usize, QueueMessage)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| match &it.inbound {
                Inbound::Queue(m) => Some((i, m.clone())),
                _ => None,
            })
            .collect();
        let messages: Vec<&QueueMessage> = queued_messages.iter().map(|(_, m)| m).collect();
        let (recorded, described) = futures::join!(
            crate::ledger::record_batch(ledger, &messages, now),
            self.p.fleet.describe_pool(&pool.name)
        );
        let mut failed = Vec::new();
        if let Some(k) = recorded.failed_from {
            failed.extend(items.drain(queued_messages[k].0..).map(|i| i.message_id));
        }
        let moot: BTreeSet<usize> =
            recorded.no_longer_waiting.iter().map(|&k| queued_messages[k].0).collect();
        if !moot.is_empty() {
            tracing::info!(pool = %pool.name, messages = moot.len(), "queued messages of jobs that no longer wait acknowledged");
            items =
                items.into_iter().enumerate().filter(|(i, _)| !moot.contains(i)).map(|(_, it)| it).collect();
        }
        if !items.is_empty() {
            failed.extend(self.plan_pool_batch(pool, items, described, started).await);
        }
        failed
    }

    /// `started`: when the batch began (its steps' wall time is logged: a pool's FIFO group
    /// waits for the whole batch, so this is most of a queued job's wait before its instance
    /// boots).
    async fn plan_pool_batch(
        &self,
        pool: &PoolConfig,
        items: Vec<Item>,
        described: Result<Vec<ObservedInstance>, PortError>,
        started: std::time::Instant,
    ) -> Vec<String> {
        let all = || items.iter().map(|i| i.message_id.clone()).collect::<Vec<_>>();
        let now = self.p.clock.now();
        let instances = match described {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(pool = %pool.name, code = e.code.as_deref().unwrap_or(""), error = %e, "describe failed; the batch is retried");
                return all();
            }
        };
        let messages: Vec<QueueMessage> = items
            .iter()
            .filter_map(|i| match &i.inbound {
                Inbound::Queue(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        let dead: Vec<DeadClaim> = items
            .iter()
            .filter_map(|i| match &i.inbound {
                Inbound::Replace(r) => Some(r.claim.clone()),
                _ => None,
            })
            .collect();
        let plan = planner::plan(&PlanInput::batch(pool, &instances, &messages, now).with_dead_claims(&dead));
        // Which job each launch is for, and what the batch said: enough to tell afterwards why
        // an instance was launched. Ids and runner names only.
        let launch_jobs: Vec<u64> = plan
            .actions
            .iter()
            .flat_map(|a| match a {
                Action::Launch { jobs, .. } => jobs.iter().map(|j| j.0).collect(),
                Action::Replace { job, .. } => vec![job.0],
                _ => vec![],
            })
            .collect();
        if !launch_jobs.is_empty() {
            let said: Vec<String> = messages
                .iter()
                .map(|m| match m {
                    QueueMessage::ScaleUp(j) => format!("queued:{}", j.job_id),
                    QueueMessage::JobStarted(j) => {
                        format!("started:{}@{}", j.job_id, j.runner_name.as_ref().map_or("-", |r| r.as_str()))
                    }
                    QueueMessage::JobCompleted(j) => format!("completed:{}", j.job_id),
                })
                .collect();
            tracing::info!(pool = %pool.name, jobs = ?launch_jobs, messages = ?said, "launching for jobs");
        }
        let ctx = JobContext::from_items(&items);
        // Nothing on the tags will remember a job that loses its earmark to another job, once
        // this plan's tags are written, and none of its messages is in this batch to be retried
        // if its launch fails; so its claim is queued first (behind this batch in the FIFO
        // group). If that fails, so does the batch, and its redelivery plans it again. A claim
        // whose plan is then carried out finds the job held or replaced, and launches nothing.
        for claim in &plan.dead_claims {
            let msg = ReplaceDead { pool: pool.name.clone(), claim: claim.clone(), requeues: 0 };
            if let Err(e) = self.p.queue.send(&msg.outbound()).await {
                tracing::warn!(pool = %pool.name, job_id = %claim.job, code = e.code.as_deref().unwrap_or(""), error = %e, "could not queue a displaced job's claim; the batch is retried");
                return all();
            }
            tracing::info!(pool = %pool.name, job_id = %claim.job, instance = %claim.instance, "earmark taken by another job; claim queued");
        }
        let described = started.elapsed();
        let exec = self.execute(pool, &instances, &messages, &plan, Mode::HandleBatch, &ctx).await;
        let executed = started.elapsed();
        self.p.metrics.emit(&plan.metrics, now);
        if !plan.unserved.is_empty() {
            tracing::info!(pool = %pool.name, unserved = plan.unserved.len(), "pool at max_runners; jobs wait for capacity");
        }

        let unserved: HashSet<JobId> = plan.unserved.iter().copied().collect();
        // A job that found the pool full is put back at the end of the pool's FIFO group as a
        // new message, and this one succeeds. Failing it instead would hold the whole group
        // (FIFO) for a visibility timeout per try, and send a burst's tail to the dead-letter
        // queue after a few tries: jobs would wait minutes, then be lost.
        let waiting: Vec<&JobRef> = items
            .iter()
            .filter_map(|i| match &i.inbound {
                Inbound::Queue(QueueMessage::ScaleUp(j))
                    if unserved.contains(&j.job_id) && !exec.failed_jobs.contains(&j.job_id) =>
                {
                    Some(j)
                }
                _ => None,
            })
            .collect();
        let mut requeued: HashSet<JobId> = HashSet::new();
        let paced = !waiting.is_empty();
        if !waiting.is_empty() {
            tokio::time::sleep(self.p.options.requeue_pace).await;
            for j in waiting.into_iter().filter(|j| j.requeues < self.p.options.max_requeues) {
                let copy = QueueMessage::ScaleUp(JobRef { requeues: j.requeues + 1, ..j.clone() });
                let out = OutboundMessage {
                    body: copy.to_json(),
                    group_id: copy.group_id(),
                    dedup_id: copy.dedup_id(),
                };
                match self.p.queue.send(&out).await {
                    Ok(()) => {
                        requeued.insert(j.job_id);
                    }
                    Err(e) => {
                        tracing::warn!(pool = %pool.name, job_id = %j.job_id, error = %e, "requeue failed; the message is retried")
                    }
                }
            }
            tracing::info!(pool = %pool.name, requeued = requeued.len(), "jobs wait for capacity at the back of the queue");
        }
        let waiting_replacements: Vec<&ReplaceDead> = items
            .iter()
            .filter_map(|i| match &i.inbound {
                Inbound::Replace(r)
                    if unserved.contains(&r.claim.job) && !exec.failed_jobs.contains(&r.claim.job) =>
                {
                    Some(r)
                }
                _ => None,
            })
            .collect();
        let mut requeued_replacements: HashSet<InstanceId> = HashSet::new();
        if !waiting_replacements.is_empty() {
            if !paced {
                tokio::time::sleep(self.p.options.requeue_pace).await;
            }
            for r in waiting_replacements.into_iter().filter(|r| r.requeues < self.p.options.max_requeues) {
                let copy = ReplaceDead { requeues: r.requeues + 1, ..r.clone() };
                match self.p.queue.send(&copy.outbound()).await {
                    Ok(()) => {
                        requeued_replacements.insert(r.claim.instance.clone());
                    }
                    Err(e) => {
                        tracing::warn!(pool = %pool.name, job_id = %r.claim.job, error = %e, "requeue failed; the message is retried")
                    }
                }
            }
        }
        let failed: Vec<String> = items
            .iter()
            .filter(|i| match &i.inbound {
                Inbound::Queue(m) => {
                    let j = m.job_id();
                    exec.failed_jobs.contains(&j)
                        || (unserved.contains(&j)
                            && matches!(m, QueueMessage::ScaleUp(_))
                            && !requeued.contains(&j))
                }
                Inbound::TopUp(_) | Inbound::Tick { .. } => exec.warm_failed,
                // Never in a pool's batch: handle_sqs hands them to the provisioner.
                Inbound::Provision(_) => false,
                Inbound::Replace(r) => {
                    exec.failed_jobs.contains(&r.claim.job)
                        || (unserved.contains(&r.claim.job)
                            && !requeued_replacements.contains(&r.claim.instance))
                }
            })
            .map(|i| i.message_id.clone())
            .collect();
        tracing::info!(
            pool = %pool.name,
            messages = items.len(),
            failed = failed.len(),
            launched = exec.launched,
            actions = plan.actions.len(),
            describe_ms = described.as_millis() as u64,
            execute_ms = (executed - described).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "batch handled"
        );
        failed
    }

    /// Runs a plan's actions in order (see the planner's docs): terminations first, and no
    /// launch if one failed, because the launch headroom counted those instances as gone.
    async fn execute(
        &self,
        pool: &PoolConfig,
        instances: &[ObservedInstance],
        messages: &[QueueMessage],
        plan: &Plan,
        mode: Mode,
        ctx: &JobContext,
    ) -> Execution {
        let mut ex = Execution::default();
        let mut terminate_failed = false;
        let now = self.p.clock.now();
        // Tag writes come in runs (before terminations, and after the cleanup); each is one
        // CreateTags/DeleteTags on its own instance, so a run is written concurrently.
        let is_tag = |a: &Action| matches!(a, Action::TagBusy { .. } | Action::Earmark { .. });
        let mut runs: Vec<&[Action]> = Vec::new();
        let mut rest = &plan.actions[..];
        while let Some(first) = rest.first() {
            let n = if is_tag(first) { rest.iter().take_while(|a| is_tag(a)).count() } else { 1 };
            let (run, tail) = rest.split_at(n);
            runs.push(run);
            rest = tail;
        }
        for run in runs {
            if is_tag(&run[0]) {
                self.write_tags(run, instances, &mut ex).await;
                continue;
            }
            let action = &run[0];
            match action {
                Action::Terminate { ids, reason } => match self.p.fleet.terminate(ids).await {
                    Ok(()) => {
                        tracing::info!(pool = %pool.name, count = ids.len(), reason = reason.as_str(), "terminated")
                    }
                    Err(e) => {
                        terminate_failed = true;
                        let set: HashSet<&InstanceId> = ids.iter().collect();
                        ex.failed_jobs.extend(
                            instances.iter().filter(|i| set.contains(&i.id)).filter_map(|i| i.job_id),
                        );
                        ex.failed_jobs.extend(messages.iter().filter_map(|m| {
                            match m {
                                QueueMessage::JobCompleted(c)
                                    if c.runner_name
                                        .as_ref()
                                        .and_then(RunnerName::instance_id)
                                        .is_some_and(|id| set.contains(&id)) =>
                                {
                                    Some(c.job_id)
                                }
                                _ => None,
                            }
                        }));
                        ex.errors.push(e);
                    }
                },
                Action::DeleteParameters { ids } => {
                    for id in ids {
                        if let Err(e) = self.p.jit.delete(id).await {
                            ex.errors.push(e);
                        }
                    }
                }
                Action::DeregisterRunners { runners } => {
                    for r in runners {
                        match self.p.github.delete_runner(&self.p.config.organization, r.id).await {
                            Ok(()) => {
                                tracing::info!(pool = %pool.name, runner = %r.name, "runner deregistered")
                            }
                            // Gone already: what we wanted.
                            Err(e) if e.code.as_deref() == Some("404") => {}
                            Err(e) => ex.errors.push(e),
                        }
                    }
                }
                Action::TagBusy { .. } | Action::Earmark { .. } => unreachable!("written as runs above"),
                Action::RerunJob { repository, job, run_attempt, .. } => {
                    if let Err(e) = self.rerun(pool, repository, *job, *run_attempt).await {
                        ex.failed_jobs.insert(*job);
                        ex.errors.push(e);
                    }
                }
                Action::Launch { count, reason, jobs, idempotency_key } => {
                    if terminate_failed {
                        ex.failed_jobs.extend(jobs.iter().copied());
                        ex.warm_failed |= *reason == LaunchReason::WarmPool;
                        continue;
                    }
                    if *reason == LaunchReason::WarmPool && pool.runner_scope == RunnerScope::Repo {
                        // A repository runner needs a repository, which a warm runner does not have.
                        tracing::warn!(pool = %pool.name, "warm pool ignored: repository-scoped pools have no warm runners");
                        continue;
                    }
                    match mode {
                        // Reconcile never launches: launches for a pool are made only by
                        // invocations for that pool's FIFO message group, one at a time.
                        Mode::Reconcile => match self.send_top_up(pool, now).await {
                            Ok(()) => ex.top_ups += 1,
                            Err(e) => ex.errors.push(e),
                        },
                        Mode::HandleBatch => {
                            self.launch(pool, *count, *reason, jobs, idempotency_key, None, ctx, &mut ex)
                                .await
                        }
                    }
                }
                Action::Replace { job, dead, idempotency_key } => {
                    if terminate_failed {
                        ex.failed_jobs.insert(*job);
                        continue;
                    }
                    if pool.runner_scope == RunnerScope::Repo {
                        // The dead instance's tags do not say which repository its job is in,
                        // and a repository runner needs one. Left to the job's own timeout.
                        tracing::warn!(pool = %pool.name, job_id = %job, dead = %dead, "no replacement: repository-scoped pools cannot replace a dead instance");
                        continue;
                    }
                    tracing::info!(pool = %pool.name, job_id = %job, dead = %dead, "replacing a lost earmark (its instance died, or another job took it at max_runners)");
                    let jobs = [*job];
                    self.launch(pool, 1, LaunchReason::Job, &jobs, idempotency_key, Some(dead), ctx, &mut ex)
                        .await
                }
            }
        }
        for e in &ex.errors {
            tracing::warn!(pool = %pool.name, operation = e.operation, code = e.code.as_deref().unwrap_or(""), retryable = e.retryable, error = %e, "action failed");
        }
        ex
    }

    async fn send_top_up(
        &self,
        pool: &PoolConfig,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), PortError> {
        let body = TopUp { pool: pool.name.clone() }.to_json();
        // One top-up per pool per minute at most: FIFO deduplication drops the repeats.
        let dedup_id = format!("top-up-{}-{}", pool.name, now.timestamp().div_euclid(60));
        self.p
            .queue
            .send(&OutboundMessage { body, group_id: pool.name.to_string(), dedup_id })
            .await
            .inspect(|_| tracing::info!(pool = %pool.name, "warm pool short; top-up queued"))
    }

    /// Writes a run of `TagBusy`/`Earmark` actions, at most [`TAG_CONCURRENCY`] at a time. IAM:
    /// `ec2:CreateTags`, `ec2:DeleteTags`.
    async fn write_tags(&self, run: &[Action], instances: &[ObservedInstance], ex: &mut Execution) {
        let results: Vec<(&Action, Result<(), PortError>)> = stream::iter(run)
            .map(|a| async move {
                let r = match a {
                    Action::TagBusy { instance, job } => {
                        self.p.fleet.set_lifecycle(instance, Lifecycle::Busy, Some(*job)).await
                    }
                    Action::Earmark { instance, lifecycle, job } => {
                        self.p.fleet.set_lifecycle(instance, *lifecycle, *job).await
                    }
                    _ => Ok(()),
                };
                (a, r)
            })
            .buffer_unordered(TAG_CONCURRENCY)
            .collect()
            .await;
        for (a, r) in results {
            let Err(e) = r else { continue };
            match a {
                Action::TagBusy { job, .. } => {
                    ex.failed_jobs.insert(*job);
                }
                Action::Earmark { instance, job, .. } => {
                    // The job gaining the earmark, or (when it is cleared) the one losing it.
                    let lost = instances.iter().find(|i| &i.id == instance).and_then(|i| i.job_id);
                    ex.failed_jobs.extend(job.or(lost));
                }
                _ => {}
            }
            ex.errors.push(e);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch(
        &self,
        pool: &PoolConfig,
        count: u32,
        reason: LaunchReason,
        jobs: &[JobId],
        planner_key: &str,
        replaces: Option<&InstanceId>,
        ctx: &JobContext,
        ex: &mut Execution,
    ) {
        let req = LaunchRequest {
            pool: pool.clone(),
            count,
            reason,
            idempotency_key: ctx.launch_key(planner_key, jobs),
            jobs: jobs.to_vec(),
            replaces: replaces.cloned(),
        };
        let now = self.p.clock.now();
        let out = match self.p.fleet.launch(&req).await {
            Ok(o) => o,
            Err(e) => {
                let code = e.code.clone().unwrap_or_else(|| "Error".into());
                self.p
                    .metrics
                    .emit(&[count_with(names::LAUNCH_FAILURES, &pool.name, 1.0, "ErrorCode", code)], now);
                ex.failed_jobs.extend(jobs.iter().copied());
                ex.warm_failed |= reason == LaunchReason::WarmPool;
                ex.errors.push(e);
                return;
            }
        };
        let mut records = Vec::new();
        let mut by_type: BTreeMap<&'static str, u32> = BTreeMap::new();
        for i in &out.launched {
            *by_type.entry(i.capacity_type.as_str()).or_default() += 1;
        }
        for (t, n) in by_type {
            records.push(count_with(names::LAUNCHES, &pool.name, n as f64, "CapacityType", t));
        }
        let mut by_code: BTreeMap<&str, u32> = BTreeMap::new();
        for f in &out.failures {
            *by_code.entry(f.code.as_str()).or_default() += 1;
        }
        for (c, n) in by_code {
            records.push(count_with(names::LAUNCH_FAILURES, &pool.name, n as f64, "ErrorCode", c));
        }
        self.p.metrics.emit(&records, now);
        // Fewer instances than asked: the jobs left over are retried by redelivery.
        ex.failed_jobs.extend(jobs.iter().skip(out.launched.len()).copied());

        // The fleet tagged launched[i] with jobs[i].
        let work: Vec<(LaunchedInstance, Option<JobId>)> =
            out.launched.iter().enumerate().map(|(i, inst)| (inst.clone(), jobs.get(i).copied())).collect();
        let results: Vec<(LaunchedInstance, Option<JobId>, Result<(), PortError>)> = stream::iter(work)
            .map(|(inst, job)| async move {
                let repo = job.and_then(|j| ctx.repository.get(&j)).map(|(r, i)| (r, *i));
                let r = self.provision(pool, &inst, repo).await;
                (inst, job, r)
            })
            .buffer_unordered(self.p.options.jit_concurrency.max(1))
            .collect()
            .await;
        for (inst, job, r) in results {
            match r {
                Ok(()) => ex.launched += 1,
                Err(e) => {
                    tracing::warn!(pool = %pool.name, instance = %inst.id, code = e.code.as_deref().unwrap_or(""), error = %e, "no JIT config; terminating the new instance");
                    self.abandon(&pool.name, &inst.id, job).await;
                    match job {
                        Some(j) => {
                            ex.failed_jobs.insert(j);
                        }
                        None => ex.warm_failed = true,
                    }
                    ex.errors.push(e);
                }
            }
        }
    }

    /// Registers a runner for a new instance and stores its JIT config where the instance's
    /// boot agent looks for it. `repo`: the repository (and installation) of the job a
    /// repository-scoped runner is for; both planners' launches come here.
    ///
    /// The config is written right after CreateFleet returns, while the instance boots; the
    /// boot agent (see `ami/components/boot-agent.yaml`) polls for its parameter with backoff
    /// up to a deadline, then terminates itself. Writing first needs no callback from the
    /// instance and no extra permission on it; booting takes far longer than these two calls.
    /// IAM: `ssm:PutParameter`, `ssm:AddTagsToResource`; GitHub "Self-hosted runners: write".
    pub(crate) async fn provision(
        &self,
        pool: &PoolConfig,
        inst: &LaunchedInstance,
        repo: Option<(&RepoFullName, Option<InstallationId>)>,
    ) -> Result<(), PortError> {
        let scope = match (pool.runner_scope, repo) {
            (RunnerScope::Org, _) => RunnerScopeTarget::Org(self.p.config.organization.clone()),
            (RunnerScope::Repo, Some((r, _))) => RunnerScopeTarget::Repo(r.clone()),
            (RunnerScope::Repo, None) => {
                return Err(PortError::permanent(
                    "scaler:provision",
                    Some("NoRepository".into()),
                    "a repository-scoped runner without a job to take its repository from",
                ))
            }
        };
        let req = JitRequest {
            name: RunnerName::for_instance(&pool.name, &inst.id),
            labels: pool.labels.clone(),
            runner_group: self.p.config.github.runner_group.clone(),
            scope,
            installation: repo.and_then(|(_, i)| i),
        };
        let jit = match self.p.github.generate_jit_config(&req).await {
            Ok(j) => j,
            // Its runner exists: an invocation that planned from the same state launched it
            // (CreateFleet's ClientToken handed both the same instances) and provisions it;
            // should that one fail, it terminates the instance itself.
            Err(e) if e.code.as_deref() == Some("409") => {
                tracing::info!(pool = %pool.name, instance = %inst.id, "runner already registered by another invocation");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = self.p.jit.put(&inst.id, &pool.name, &jit.encoded).await {
            // The runner exists at GitHub but will never start: remove it now rather than
            // leaving it to reconcile.
            if pool.runner_scope == RunnerScope::Org {
                if let Err(d) = self.p.github.delete_runner(&self.p.config.organization, jit.runner_id).await
                {
                    tracing::warn!(runner = %req.name, code = d.code.as_deref().unwrap_or(""), "could not remove the unused runner");
                }
            }
            return Err(e);
        }
        tracing::info!(pool = %pool.name, instance = %inst.id, capacity_type = inst.capacity_type.as_str(), instance_type = %inst.instance_type, "runner provisioned");
        Ok(())
    }

    /// Terminates a just-launched instance that got no JIT config, first dropping its job tag so
    /// the redelivered message launches for the job again. Should either call fail, the
    /// `draining` tag (or the boot timeout) has reconcile terminate it.
    async fn abandon(&self, pool: &PoolName, id: &InstanceId, job: Option<JobId>) {
        // The job tag must go, or the planner counts this dead instance as the job's launch and
        // the job never gets another. Throttling storms are exactly when JIT fails, so try a few
        // times with backoff before giving up on it.
        let mut delay = std::time::Duration::from_millis(200);
        for attempt in 1..=4 {
            match self.p.fleet.set_lifecycle(id, Lifecycle::Draining, None).await {
                Ok(()) => break,
                Err(e) if e.retryable && attempt < 4 => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::warn!(instance = %id, code = e.code.as_deref().unwrap_or(""), "could not untag the abandoned instance");
                    // It will die holding the job's earmark, having certainly run nothing: ask
                    // for its replacement now (after the termination below, the batch sees it
                    // dead). If even that fails, reconcile's boot timeout finds it.
                    if let Some(job) = job {
                        let msg = ReplaceDead {
                            pool: pool.clone(),
                            claim: DeadClaim { job, instance: id.clone(), displaced: false },
                            requeues: 0,
                        };
                        if let Err(e) = self.p.queue.send(&msg.outbound()).await {
                            tracing::warn!(instance = %id, job_id = %job, code = e.code.as_deref().unwrap_or(""), "could not ask for a replacement");
                        }
                    }
                    break;
                }
            }
        }
        if let Err(e) = self.p.fleet.terminate(std::slice::from_ref(id)).await {
            tracing::warn!(instance = %id, code = e.code.as_deref().unwrap_or(""), "could not terminate the abandoned instance; reconcile will");
        }
    }

    /// Re-runs a job a spot reclaim killed. The planner allows one re-run per attempt up to
    /// the pool's `max_spot_reruns`, and a completion is redelivered only if handling it failed.
    /// GitHub refuses to re-run a job whose re-run is already underway (403/409/422); that
    /// answer means the work is done, so a repeated request cannot start a second re-run.
    pub(crate) async fn rerun(
        &self,
        pool: &PoolConfig,
        repo: &RepoFullName,
        job: JobId,
        attempt: u32,
    ) -> Result<(), PortError> {
        match self.p.github.rerun_job(repo, job).await {
            Ok(()) => {
                tracing::info!(pool = %pool.name, job = %job, attempt, "job re-run after spot interruption");
                Ok(())
            }
            Err(e) if matches!(e.code.as_deref(), Some("403" | "409" | "422")) => {
                tracing::warn!(pool = %pool.name, job = %job, attempt, code = e.code.as_deref().unwrap_or(""), error = %e, "GitHub refused the re-run (already re-running, or not allowed)");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn emit_rate_limit(&self) {
        if let Some(r) = self.p.github.rate_limit_remaining() {
            self.p.metrics.emit(
                &[MetricRecord::gauge(names::GITHUB_RATE_LIMIT_REMAINING, None, r as f64)],
                self.p.clock.now(),
            );
        }
    }

    /// The reconcile schedule: every pool is described and planned with GitHub's runner list and
    /// the stored JIT parameters. Reconcile terminates, cleans up and tags, but does not launch:
    /// a short warm pool gets a top-up message in the pool's FIFO group, so every launch for a
    /// pool happens in the one invocation at a time that SQS allows per message group, and no
    /// interleaving of invocations can take a pool past `max_runners`.
    pub async fn reconcile(&self) -> Result<Value, ScalerError> {
        let now = self.p.clock.now();
        let mut errors: Vec<PortError> = Vec::new();
        // Instances first, then GitHub's runners and the parameters: a runner that registers
        // between the two reads is then seen as registered, not as an instance that never
        // booted (which the boot timeout would terminate just as it takes a job).
        let mut described = Vec::with_capacity(self.p.config.pools.len());
        for pool in &self.p.config.pools {
            match self.p.fleet.describe_pool(&pool.name).await {
                Ok(i) => described.push((pool, i)),
                Err(e) => errors.push(e),
            }
        }
        // Both lists are read once per run, for all pools. Without them, the rules that need
        // them (boot timeout, cleanup) are skipped rather than guessed.
        let runners: Option<Vec<RegisteredRunner>> =
            match self.p.github.list_runners(&self.p.config.organization).await {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.push(e);
                    None
                }
            };
        let params: Option<Vec<StoredJit>> = match self.p.jit.list().await {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if let Some(ledger) = self.p.ledger.as_deref() {
            let pools = &self.p.config.pools;
            errors.extend(
                crate::ledger::reconcile(ledger, self.p.github.as_ref(), &self.p.metrics, pools, now).await,
            );
        }
        let mut summary = serde_json::Map::new();
        for (pool, instances) in described {
            let plan = planner::plan(&PlanInput::reconcile(
                pool,
                &instances,
                runners.as_deref(),
                params.as_deref(),
                now,
            ));
            let mut ex =
                self.execute(pool, &instances, &[], &plan, Mode::Reconcile, &JobContext::default()).await;
            self.p.metrics.emit(&plan.metrics, now);
            let mut replacements = 0u32;
            for claim in &plan.dead_claims {
                let msg = ReplaceDead { pool: pool.name.clone(), claim: claim.clone(), requeues: 0 };
                match self.p.queue.send(&msg.outbound()).await {
                    Ok(()) => {
                        replacements += 1;
                        tracing::info!(pool = %pool.name, job_id = %claim.job, instance = %claim.instance, "dead earmark found; replacement requested");
                    }
                    Err(e) => ex.errors.push(e),
                }
            }
            let terminated = plan.terminated().count();
            summary.insert(
                pool.name.to_string(),
                json!({
                    "actions": plan.actions.len(),
                    "terminated": terminated,
                    "top_ups": ex.top_ups,
                    "replacements_requested": replacements,
                    "warm_target": plan.warm_target,
                    "errors": ex.errors.len(),
                }),
            );
            errors.extend(ex.errors);
        }
        self.emit_rate_limit();
        if errors.is_empty() {
            tracing::info!(pools = self.p.config.pools.len(), "reconciled");
            return Ok(Value::Object(summary));
        }
        let retryable = errors.iter().all(|e| e.retryable);
        let first = errors[0].to_string();
        Err(ScalerError {
            kind: "Reconcile",
            retryable,
            message: format!("{} action(s) failed; first: {first}", errors.len()),
        })
    }

    /// A spot interruption warning: tag the instance so that, if its job then fails, the job is
    /// re-run (see the planner), and count it.
    pub async fn spot_interruption(&self, id: &InstanceId) -> Result<Value, ScalerError> {
        let Some(inst) = self.p.lookup.lookup(id).await? else {
            tracing::info!(instance = %id, "spot interruption for an instance Hangar does not manage");
            return Ok(json!({ "instance": id, "managed": false }));
        };
        self.p.fleet.mark_interrupted(id).await?;
        if self.p.options.counting {
            // An interrupted runner is no longer free: its pool's plan replaces it.
            self.send_tick(&inst.pool, format!("spot-{id}")).await?;
        }
        self.p.metrics.emit(&[count(names::SPOT_INTERRUPTIONS, &inst.pool, 1.0)], self.p.clock.now());
        tracing::info!(instance = %id, pool = %inst.pool, lifecycle = inst.lifecycle.as_str(), job = ?inst.job_id, "spot interruption marked");
        Ok(
            json!({ "instance": id, "managed": true, "pool": inst.pool, "busy": inst.lifecycle == Lifecycle::Busy }),
        )
    }

    /// An instance is going away: its JIT parameter goes with it, and so does its runner if it
    /// registered but never ran a job (GitHub removes an ephemeral runner after its job itself).
    pub async fn state_change(&self, id: &InstanceId, state: &str) -> Result<Value, ScalerError> {
        if !matches!(state, "shutting-down" | "terminated") {
            return Ok(json!({ "instance": id, "ignored": state }));
        }
        let Some(inst) = self.p.lookup.lookup(id).await? else {
            return Ok(json!({ "instance": id, "managed": false }));
        };
        let pool = self.p.config.pool(&inst.pool);
        let org_scoped = pool.is_some_and(|p| p.runner_scope == RunnerScope::Org);
        let holding = matches!(inst.lifecycle, Lifecycle::Pending | Lifecycle::Idle);
        let (mut deregistered, mut replacement) = (false, false);
        if self.p.options.counting {
            // Its capacity is free again (and a job it never ran is still queued in the
            // ledger): the pool is planned again at once. Sent first, so that a failed cleanup
            // below (EventBridge retries it) cannot skip it; its deduplication id makes the
            // retry's copy a no-op.
            self.send_tick(&inst.pool, format!("gone-{id}")).await?;
            replacement = true;
        }
        if org_scoped && inst.lifecycle != Lifecycle::Busy {
            let name = RunnerName::for_instance(&inst.pool, id);
            let runners = self.p.github.list_runners(&self.p.config.organization).await?;
            let runner = runners.into_iter().find(|r| r.name == name);
            // Tagged with a queued job, and its runner still registered and idle: it never ran
            // a job (GitHub removes an ephemeral runner once it has), so the job needs another
            // instance. Without the runner the tags cannot tell (its runner may have run the job
            // and gone before the start was handled); reconcile's boot timeout covers an
            // instance that never booted. The message goes before the cleanup, so that a
            // failure there (and EventBridge's retry) cannot skip it; its deduplication id makes
            // the retry's copy a no-op.
            if let (false, true, Some(job), Some(r)) =
                (self.p.options.counting, holding, inst.job_id, &runner)
            {
                if !r.busy {
                    let msg = ReplaceDead {
                        pool: inst.pool.clone(),
                        claim: DeadClaim { job, instance: id.clone(), displaced: false },
                        requeues: 0,
                    };
                    self.p.queue.send(&msg.outbound()).await?;
                    tracing::info!(instance = %id, pool = %inst.pool, job_id = %job, "instance died holding a job's earmark; replacement requested");
                    replacement = true;
                }
            }
            self.p.jit.delete(id).await?;
            if let Some(r) = runner.filter(|r| !r.busy) {
                match self.p.github.delete_runner(&self.p.config.organization, r.id).await {
                    Ok(()) => deregistered = true,
                    Err(e) if e.code.as_deref() == Some("404") => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.emit_rate_limit();
        } else {
            self.p.jit.delete(id).await?;
        }
        tracing::info!(instance = %id, pool = %inst.pool, state, deregistered, "instance gone; cleaned up");
        Ok(json!({
            "instance": id,
            "managed": true,
            "pool": inst.pool,
            "deregistered": deregistered,
            "replacement_requested": replacement,
        }))
    }
}

fn count_with(
    name: &'static str,
    pool: &PoolName,
    v: f64,
    key: &'static str,
    value: impl Into<String>,
) -> MetricRecord {
    MetricRecord::count(name, Some(pool), v).with(key, value)
}
