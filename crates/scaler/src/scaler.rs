//! The scaler: reads an event, asks the core planner what to do, and does it through the ports.

use crate::error::ScalerError;
use crate::event::{detect, EventError, ScalerEvent, SqsRecord};
use crate::lookup::InstanceLookup;
use crate::messages::{parse_body, Inbound, Item};
use crate::metrics::Metrics;
use aws_lambda_events::event::sqs::SqsBatchResponse;
use hangar_core::config::{Config, PoolConfig, RunnerScope};
use hangar_core::ids::{InstallationId, InstanceId, JobId, PoolName, RepoFullName, RunnerName};
use hangar_core::ledger::JobLedger;
use hangar_core::metrics::{names, MetricRecord};
use hangar_core::ports::{
    Clock, Fleet, JitRequest, JitStore, LaunchLog, LaunchedInstance, PortError, ProvisionQueue,
    RunnerRegistry, RunnerScopeTarget, ScaleQueue,
};
use hangar_core::state::Lifecycle;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Tunables; the defaults suit a Lambda with a 60 s timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalerOptions {
    /// JIT configs generated (and written) at once after a launch, when the pool's batch makes
    /// them itself (no provisioning queue).
    pub jit_concurrency: usize,
}

impl Default for ScalerOptions {
    fn default() -> Self {
        Self { jit_concurrency: 4 }
    }
}

/// Everything the scaler talks to. Built once per cold start (see `main.rs`), or by tests with
/// the same adapters pointed at moto and the GitHub simulator.
pub struct ScalerParts {
    pub config: Config,
    pub fleet: Arc<dyn Fleet>,
    pub jit: Arc<dyn JitStore>,
    pub github: Arc<dyn RunnerRegistry>,
    /// The scale queue: ticks go through the pool's FIFO group ([`crate::counting`]).
    pub queue: Arc<dyn ScaleQueue>,
    pub lookup: Arc<dyn InstanceLookup>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub options: ScalerOptions,
    /// The job ledger: the demand every plan counts. Every job event of a batch is recorded
    /// here before the batch plans; reconcile publishes the pools' demand gauges
    /// (`QueuedJobs`, `OldestQueuedAgeSeconds`) from it and asks GitHub about old queued jobs.
    pub ledger: Arc<dyn JobLedger>,
    /// Launches recorded by the plans, which count them until `DescribeInstances` lists them.
    pub launches: Arc<dyn LaunchLog>,
    /// The provisioning queue: launched instances get their JIT configs from the provisioner
    /// ([`crate::provisioner`]) instead of inside the pool's batch. `None`: the batch
    /// provisions them itself.
    pub provisioning: Option<Arc<dyn ProvisionQueue>>,
}

pub struct Scaler {
    pub(crate) p: ScalerParts,
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
            ScalerEvent::Schedule => self.reconcile_by_ticks().await,
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
                Inbound::Tick { pool: p, .. } => p.clone(),
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
            self.counting_batch(cfg, items).await
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

    /// Registers a runner for a new instance and stores its JIT config where the instance's
    /// boot agent looks for it. `repo`: the repository (and installation) of the job a
    /// repository-scoped runner is for.
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

    /// A spot interruption warning: tag the instance so that, if its job then fails, the job is
    /// re-run (see [`hangar_core::plan`]), count it, and tick its pool: an interrupted runner is
    /// no longer free, so the pool's plan replaces it. IAM: `ec2:CreateTags`,
    /// `sqs:SendMessage`.
    pub async fn spot_interruption(&self, id: &InstanceId) -> Result<Value, ScalerError> {
        let Some(inst) = self.p.lookup.lookup(id).await? else {
            tracing::info!(instance = %id, "spot interruption for an instance Hangar does not manage");
            return Ok(json!({ "instance": id, "managed": false }));
        };
        self.p.fleet.mark_interrupted(id).await?;
        self.send_tick(&inst.pool, format!("spot-{id}")).await?;
        self.p.metrics.emit(&[count(names::SPOT_INTERRUPTIONS, &inst.pool, 1.0)], self.p.clock.now());
        tracing::info!(instance = %id, pool = %inst.pool, lifecycle = inst.lifecycle.as_str(), job = ?inst.job_id, "spot interruption marked");
        Ok(
            json!({ "instance": id, "managed": true, "pool": inst.pool, "busy": inst.lifecycle == Lifecycle::Busy }),
        )
    }

    /// An instance is going away: its pool is planned again (its capacity is free, and a job it
    /// never ran is still queued in the ledger), its JIT parameter goes with it, and so does its
    /// runner if it registered but never ran a job (GitHub removes an ephemeral runner after
    /// its job itself). IAM: `sqs:SendMessage`, `ssm:DeleteParameter`; GitHub "Self-hosted
    /// runners: write" (list and delete).
    pub async fn state_change(&self, id: &InstanceId, state: &str) -> Result<Value, ScalerError> {
        if !matches!(state, "shutting-down" | "terminated") {
            return Ok(json!({ "instance": id, "ignored": state }));
        }
        let Some(inst) = self.p.lookup.lookup(id).await? else {
            return Ok(json!({ "instance": id, "managed": false }));
        };
        // Sent first, so that a failed cleanup below (EventBridge retries it) cannot skip it;
        // its deduplication id makes the retry's copy a no-op.
        let ticked = self.send_tick(&inst.pool, format!("gone-{id}")).await?;
        let pool = self.p.config.pool(&inst.pool);
        let org_scoped = pool.is_some_and(|p| p.runner_scope == RunnerScope::Org);
        let mut deregistered = false;
        self.p.jit.delete(id).await?;
        if org_scoped && inst.lifecycle != Lifecycle::Busy {
            let name = RunnerName::for_instance(&inst.pool, id);
            let runners = self.p.github.list_runners(&self.p.config.organization).await?;
            if let Some(r) = runners.into_iter().find(|r| r.name == name && !r.busy) {
                match self.p.github.delete_runner(&self.p.config.organization, r.id).await {
                    Ok(()) => deregistered = true,
                    Err(e) if e.code.as_deref() == Some("404") => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.emit_rate_limit();
        }
        tracing::info!(instance = %id, pool = %inst.pool, state, deregistered, "instance gone; cleaned up");
        Ok(json!({
            "instance": id,
            "managed": true,
            "pool": inst.pool,
            "deregistered": deregistered,
            "replacement_requested": ticked,
        }))
    }
}
