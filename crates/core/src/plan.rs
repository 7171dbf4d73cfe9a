//! The counting planner: what should exist, from recorded demand and observed supply. Pure: the
//! time is an input, and so is everything else.
//!
//! # The rule
//! Per pool: `need = queued jobs + warm target`; `free = pending + idle` runners that can still
//! take a job; launch `min(need - free, max_runners - counted)` when positive; in reconcile,
//! terminate idle runners above `need` once they are past the idle timeout. No job is bound to
//! an instance: GitHub gives a queued job to *any* idle runner whose labels fit, so whichever
//! runner took whichever job, both counts stay right and nothing needs to be handed on.
//!
//! Demand comes from the job ledger ([`crate::ledger`]): the pool's queued jobs. Supply comes
//! from EC2 (the pool's instances and their lifecycle tags), plus the launches recorded since
//! that `DescribeInstances` may not list yet, so a lagging describe never causes a second
//! launch. A batch's own starts and ends are inputs too, because the tags that will say so are
//! written by carrying out this plan.
//!
//! # Carrying out a plan
//! Terminations first: the launch headroom counts the instances this plan terminates as gone,
//! so if a termination fails, skip the launch (the next plan sees the instance and re-plans).
//! Then tags, configs and runners, re-runs, and the launch. Re-planning after a plan is carried
//! out changes nothing (the property tests check it), so any trigger may plan again at any time.
//!
//! # Only reconcile judges runners and instances
//! Boot and idle timeouts, draining and stopped instances, stale JIT configs and dead runners
//! need GitHub's runner list to be judged safely (a healthy runner whose boot agent never tagged
//! it `idle` looks exactly like one that never booted), and only reconcile lists runners.

use crate::config::{warm_target, PoolConfig};
use crate::ids::{InstanceId, JobId, PoolName, RepoFullName, RunId, RunnerId, RunnerName};
use crate::ledger::{JobKey, LedgerJob};
use crate::metrics::{names, MetricRecord};
use crate::ports::{LaunchReason, RegisteredRunner, StoredJit};
use crate::state::{Ec2State, Lifecycle, ObservedInstance};
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A recorded launch stops counting on its own after this long: by then `DescribeInstances`
/// lists the instance (AWS documents its eventual consistency in seconds, not minutes), and its
/// EC2 state decides.
pub const RECORDED_LAUNCH_TTL_SECS: i64 = 300;

/// Metric names this planner emits beyond [`crate::metrics::names`].
pub mod metric_names {
    /// Gauge: jobs the ledger holds as queued for the pool.
    pub const QUEUED_JOBS: &str = "QueuedJobs";
    /// Gauge: how long the pool's oldest queued job has waited, in seconds. An alarm on this is
    /// the real "pool exhausted" signal: jobs wait, whatever the reason.
    pub const OLDEST_QUEUED_AGE_SECONDS: &str = "OldestQueuedAgeSeconds";
    /// Gauge: queued jobs that neither a free runner nor this plan's launch covers, because the
    /// pool is at `max_runners` (0 when the pool has room).
    pub const POOL_AT_MAX: &str = "PoolAtMax";
    /// Idle runners above the warm target terminated after the idle timeout.
    pub const IDLE_TERMINATED: &str = "IdleTerminated";
    pub const RUNNERS_DEREGISTERED: &str = "RunnersDeregistered";
    pub const JIT_PARAMETERS_DELETED: &str = "JitParametersDeleted";
    /// Jobs re-run because a spot interruption killed their runner.
    pub const SPOT_RERUNS: &str = "SpotReruns";
}

/// A JIT config (or a runner registration) younger than this whose instance is not listed yet
/// is left alone: `DescribeInstances` is eventually consistent, and the scaler writes the config
/// right after CreateFleet returns.
pub const FRESH_GRACE_SECS: i64 = 120;

/// Why the plan terminates an instance (the `hangar:terminate-reason` in logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TerminateReason {
    /// The runner finished its job (ephemeral runners terminate themselves; this is the backstop).
    JobCompleted,
    /// A spot interruption warning arrived for an instance that is not running a job.
    SpotInterrupted,
    /// Tagged `draining`: it takes no new job.
    Draining,
    /// Stopped or stopping, not busy, older than the boot timeout: it occupies a slot for nothing.
    Stopped,
    /// Never registered nor ran a job within the boot timeout.
    BootTimeout,
    /// Idle longer than the idle timeout and above the warm target.
    IdleTimeout,
}

impl TerminateReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminateReason::JobCompleted => "job-completed",
            TerminateReason::SpotInterrupted => "spot-interrupted",
            TerminateReason::Draining => "draining",
            TerminateReason::Stopped => "stopped",
            TerminateReason::BootTimeout => "boot-timeout",
            TerminateReason::IdleTimeout => "idle-timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRef {
    pub id: RunnerId,
    pub name: RunnerName,
}

/// Which invocation is planning: a batch of the pool's events, or reconcile (which also sees
/// GitHub's runners and the stored JIT configs, and judges timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Batch,
    Reconcile,
}

/// A launch the scaler recorded (with the time CreateFleet returned it), for instances that
/// `DescribeInstances` may not list yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedLaunch {
    pub id: InstanceId,
    pub launched_at: DateTime<Utc>,
}

/// Everything the planner looks at, for one pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolView<'a> {
    pub mode: Mode,
    pub now: DateTime<Utc>,
    pub pool: &'a PoolConfig,
    /// The pool's queued jobs from the ledger, with this batch's own transitions applied.
    pub queued: &'a [LedgerJob],
    /// The pool's instances as EC2 lists them, shutting-down and terminated ones included.
    pub instances: &'a [ObservedInstance],
    /// Launches recorded in the last [`RECORDED_LAUNCH_TTL_SECS`].
    pub recorded_launches: &'a [RecordedLaunch],
    /// Jobs this batch moved to started: their runners are busy now, whatever the tags say.
    pub started: &'a [LedgerJob],
    /// The ledger's started jobs on the pool's runners ([`crate::ledger::JobLedger::open`]):
    /// busy too, though the batch that tags them may not have run yet (the webhook records a
    /// start as it arrives, and the job is no longer queued from then on).
    pub running: &'a [LedgerJob],
    /// Jobs this batch moved to done: their runners are finished, and an interrupted one may
    /// earn the job a re-run.
    pub finished: &'a [LedgerJob],
    /// GitHub's registered runners (the organisation's; only this pool's names count).
    /// Reconcile only.
    pub runners: Option<&'a [RegisteredRunner]>,
    /// Stored JIT configs. Reconcile only.
    pub jit_configs: Option<&'a [StoredJit]>,
    /// Queued jobs older than this are checked against GitHub by reconcile, in case their
    /// `completed` webhook was lost.
    pub stale_after: Duration,
    /// At most this many such checks per reconcile.
    pub stale_budget: usize,
}

impl<'a> PoolView<'a> {
    /// A batch's view: no runners or configs, nothing judged stale.
    pub fn batch(
        pool: &'a PoolConfig,
        now: DateTime<Utc>,
        queued: &'a [LedgerJob],
        instances: &'a [ObservedInstance],
    ) -> Self {
        Self {
            mode: Mode::Batch,
            now,
            pool,
            queued,
            instances,
            recorded_launches: &[],
            started: &[],
            running: &[],
            finished: &[],
            runners: None,
            jit_configs: None,
            stale_after: Duration::minutes(5),
            stale_budget: 0,
        }
    }

    /// Reconcile's view.
    pub fn reconcile(
        pool: &'a PoolConfig,
        now: DateTime<Utc>,
        queued: &'a [LedgerJob],
        instances: &'a [ObservedInstance],
        runners: &'a [RegisteredRunner],
        jit_configs: &'a [StoredJit],
    ) -> Self {
        Self {
            mode: Mode::Reconcile,
            runners: Some(runners),
            jit_configs: Some(jit_configs),
            stale_budget: 20,
            ..Self::batch(pool, now, queued, instances)
        }
    }
}

/// One CreateFleet for the pool's whole shortfall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub count: u32,
    /// `Job` when queued jobs are short of runners, `WarmPool` when only the warm target is.
    pub reason: LaunchReason,
    /// CreateFleet `ClientToken`: the same for the same shortfall seen from the same state, so
    /// a retried batch whose first launch `DescribeInstances` does not list yet cannot launch
    /// twice; different once anything it was computed from changed (see [`launch_key`]).
    pub idempotency_key: String,
}

/// A job whose spot-interrupted runner died under it, to re-run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rerun {
    pub repository: RepoFullName,
    pub job: JobId,
    pub run_id: RunId,
    pub run_attempt: u32,
}

/// The counts a plan was made from, after its terminations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub queued: u32,
    pub target: u32,
    pub need: u32,
    pub pending: u32,
    pub idle: u32,
    pub busy: u32,
    /// Instances that count toward `max_runners` and are not being terminated.
    pub counted: u32,
    /// Queued jobs neither a free runner nor the launch covers.
    pub at_max: u32,
}

impl Counts {
    pub fn free(&self) -> u32 {
        self.pending + self.idle
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolPlan {
    /// In the order they must be carried out: before anything else.
    pub terminate: Vec<(InstanceId, TerminateReason)>,
    /// Tag `busy` (`ec2:CreateTags`): a job of this batch started on it.
    pub tag_busy: Vec<InstanceId>,
    /// JIT configs to delete (`ssm:DeleteParameters`). Reconcile only.
    pub delete_configs: Vec<InstanceId>,
    /// Runners to remove from GitHub, each with proof that it is not running a job. Reconcile
    /// only.
    pub deregister: Vec<RunnerRef>,
    pub reruns: Vec<Rerun>,
    pub launch: Option<Launch>,
    /// Queued jobs old enough to ask GitHub about, oldest first. Reconcile only.
    pub check_with_github: Vec<JobKey>,
    pub counts: Counts,
    pub metrics: Vec<MetricRecord>,
}

impl PoolPlan {
    pub fn launch_count(&self) -> u32 {
        self.launch.as_ref().map_or(0, |l| l.count)
    }
    /// Changes nothing in AWS or GitHub (metrics and checks aside).
    pub fn is_noop(&self) -> bool {
        self.terminate.is_empty()
            && self.tag_busy.is_empty()
            && self.delete_configs.is_empty()
            && self.deregister.is_empty()
            && self.reruns.is_empty()
            && self.launch.is_none()
    }
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }
}

/// What an instance is, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Shutting down or terminated.
    Gone,
    Busy,
    /// Its job ended: the runner is spent (ephemeral) and will not take another.
    Finished,
    Draining,
    /// Stopped or stopping: counts toward the cap, serves nothing.
    Parked,
    Pending,
    Idle,
}

struct Slot<'a> {
    id: &'a InstanceId,
    launched_at: DateTime<Utc>,
    /// When its boot clock started: the later of the launch and its JIT config's write.
    booting_since: DateTime<Utc>,
    role: Role,
    interrupted: bool,
    tagged_busy: bool,
    /// GitHub lists its runner as running a job (reconcile only): never terminated for being
    /// idle, draining, interrupted or unbooted, whatever it is counted as.
    github_busy: bool,
    terminate: Option<TerminateReason>,
}

impl Slot<'_> {
    fn counts(&self) -> bool {
        self.role != Role::Gone && self.terminate.is_none()
    }
    fn free(&self) -> bool {
        matches!(self.role, Role::Pending | Role::Idle) && !self.interrupted && self.terminate.is_none()
    }
}

/// Plans one pool. See the module docs for the rule and how to carry the result out.
pub fn plan_pool(view: &PoolView<'_>) -> PoolPlan {
    let cfg = view.pool;
    let now = view.now;
    let reconcile = view.mode == Mode::Reconcile;
    let mut slots = observe(view);
    judge(view, &mut slots);

    let target = warm_target(&cfg.warm_pool, cfg.max_runners, now);
    let queued = view.queued.len() as u32;
    let need = queued.saturating_add(target);

    // Trim idle runners above `need` (reconcile only), oldest first.
    let mut idle_trimmed = 0u64;
    if reconcile {
        let free = slots.iter().filter(|s| s.free()).count() as u32;
        let idle_timeout = secs(cfg.idle_timeout_secs);
        let mut idle: Vec<usize> = (0..slots.len())
            .filter(|&i| {
                slots[i].free()
                    && slots[i].role == Role::Idle
                    && !slots[i].github_busy
                    && now - slots[i].booting_since > idle_timeout
            })
            .collect();
        idle.sort_by(|&a, &b| (slots[a].launched_at, slots[a].id).cmp(&(slots[b].launched_at, slots[b].id)));
        for i in idle.into_iter().take(free.saturating_sub(need) as usize) {
            slots[i].terminate = Some(TerminateReason::IdleTimeout);
            idle_trimmed += 1;
        }
    }

    let free_in = |r: Role| slots.iter().filter(|s| s.role == r && s.free()).count() as u32;
    let counts_before_launch = Counts {
        queued,
        target,
        need,
        pending: free_in(Role::Pending),
        idle: free_in(Role::Idle),
        busy: slots.iter().filter(|s| s.role == Role::Busy && s.counts()).count() as u32,
        counted: slots.iter().filter(|s| s.counts()).count() as u32,
        at_max: 0,
    };
    let shortfall = need.saturating_sub(counts_before_launch.free());
    let headroom = cfg.max_runners.saturating_sub(counts_before_launch.counted);
    let count = shortfall.min(headroom);
    let jobs_short = queued.saturating_sub(counts_before_launch.free());
    let at_max = jobs_short.saturating_sub(headroom);
    let launch = (count > 0).then(|| Launch {
        count,
        reason: if jobs_short > 0 { LaunchReason::Job } else { LaunchReason::WarmPool },
        idempotency_key: launch_key(view, count),
    });

    let mut plan =
        PoolPlan { counts: Counts { at_max, ..counts_before_launch }, launch, ..PoolPlan::default() };
    for s in &slots {
        if let Some(reason) = s.terminate {
            plan.terminate.push((s.id.clone(), reason));
        } else if s.role == Role::Busy && !s.tagged_busy {
            plan.tag_busy.push(s.id.clone());
        }
    }
    plan.reruns = reruns(view);
    if reconcile {
        let (configs, runners) = cleanup(view, &slots);
        plan.delete_configs = configs;
        plan.deregister = runners;
        let stale_before = now - view.stale_after;
        plan.check_with_github = view
            .queued
            .iter()
            .filter(|j| j.created_at < stale_before)
            .take(view.stale_budget)
            .map(|j| j.key)
            .collect();
    }
    plan.metrics = metrics(view, &plan, idle_trimmed);
    plan
}

/// What `hangar status` shows for a pool: the counts a batch plan would be made from now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PoolStatus {
    pub pool: PoolName,
    pub queued: u32,
    /// Seconds the oldest queued job has waited; 0 with none queued.
    pub oldest_queued_age_secs: f64,
    pub idle: u32,
    pub busy: u32,
    pub pending: u32,
    pub target: u32,
    /// Instances that count toward the cap (draining and stopped ones included).
    pub runners: u32,
    pub max_runners: u32,
    /// The pool holds `max_runners` instances: nothing more can launch.
    pub at_max: bool,
    /// Queued jobs no free runner or launch covers because of the cap.
    pub waiting_for_capacity: u32,
}

/// [`PoolStatus`] from the same view a batch plans on.
pub fn pool_status(view: &PoolView<'_>) -> PoolStatus {
    let plan = plan_pool(view);
    let c = plan.counts;
    PoolStatus {
        pool: view.pool.name.clone(),
        queued: c.queued,
        oldest_queued_age_secs: plan.metric(metric_names::OLDEST_QUEUED_AGE_SECONDS).unwrap_or(0.0),
        idle: c.idle,
        busy: c.busy,
        pending: c.pending,
        target: c.target,
        runners: c.counted,
        max_runners: view.pool.max_runners,
        at_max: c.counted >= view.pool.max_runners,
        waiting_for_capacity: c.at_max,
    }
}

/// Runners of *other* pools that this batch's starts name (a job may run on any pool's runner
/// whose labels fit). Their pools' free counts just fell, and only their own plans can make up
/// for it: the scaler tags each one `busy` and sends its pool a tick.
pub fn foreign_starts(view: &PoolView<'_>) -> Vec<(PoolName, InstanceId)> {
    let mut out: BTreeSet<(PoolName, InstanceId)> = BTreeSet::new();
    for j in view.started {
        let Some(name) = &j.runner_name else { continue };
        if let (Some(pool), Some(id)) = (name.pool(), name.instance_id()) {
            if pool != view.pool.name {
                out.insert((pool, id));
            }
        }
    }
    out.into_iter().collect()
}

/// The pool's instances, EC2's and recorded, with what this batch says of them.
fn observe<'a>(view: &PoolView<'a>) -> Vec<Slot<'a>> {
    let now = view.now;
    let mut config_written: HashMap<&str, DateTime<Utc>> = HashMap::new();
    for c in view.jit_configs.unwrap_or(&[]) {
        if let Some(t) = c.created_at {
            config_written.insert(c.instance_id.as_str(), t);
        }
    }
    let ran = |jobs: &'a [LedgerJob]| -> BTreeSet<InstanceId> {
        jobs.iter().filter_map(|j| j.runner_name.as_ref().and_then(RunnerName::instance_id)).collect()
    };
    let mut started = ran(view.started);
    started.extend(ran(view.running));
    let finished = ran(view.finished);
    // GitHub's view, reconcile only. A runner online has registered, so its instance is idle
    // even if its tag still says pending. A runner GitHub calls busy is never trimmed or timed
    // out, but it is *counted* busy only once the ledger has its job's start (the ledger's
    // running jobs, this batch's starts, or the busy tag): until then that job is, as far as
    // the ledger knows, still queued, and counting both it and the busy runner would launch
    // for one job twice (CI's hostile run launched 13 for 12 this way: GitHub's list is read
    // after the ledger, and the `in_progress` webhook lags the assignment).
    let mut github: HashMap<InstanceId, (bool, bool)> = HashMap::new();
    for r in view.runners.unwrap_or(&[]) {
        if r.name.pool().as_ref() != Some(&view.pool.name) {
            continue;
        }
        if let Some(id) = r.name.instance_id() {
            let e = github.entry(id).or_insert((false, false));
            e.0 |= r.online;
            e.1 |= r.busy;
        }
    }
    let mut slots = Vec::with_capacity(view.instances.len() + view.recorded_launches.len());
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for inst in view.instances.iter().filter(|i| i.pool == view.pool.name) {
        if !seen.insert(inst.id.as_str()) {
            continue;
        }
        let (online, gh_busy) = github.get(&inst.id).copied().unwrap_or((false, false));
        let role = if !inst.ec2_state.counts_toward_cap() {
            Role::Gone
        } else if finished.contains(&inst.id) {
            Role::Finished
        } else if inst.lifecycle == Lifecycle::Busy || started.contains(&inst.id) {
            Role::Busy
        } else if inst.lifecycle == Lifecycle::Draining {
            Role::Draining
        } else if matches!(inst.ec2_state, Ec2State::Stopping | Ec2State::Stopped) {
            Role::Parked
        } else if inst.lifecycle == Lifecycle::Idle || online || gh_busy {
            Role::Idle
        } else {
            Role::Pending
        };
        let booting_since =
            config_written.get(inst.id.as_str()).map_or(inst.launched_at, |t| (*t).max(inst.launched_at));
        slots.push(Slot {
            id: &inst.id,
            launched_at: inst.launched_at,
            booting_since,
            role,
            interrupted: inst.interrupted,
            tagged_busy: inst.lifecycle == Lifecycle::Busy,
            github_busy: gh_busy,
            terminate: None,
        });
    }
    let ttl = Duration::seconds(RECORDED_LAUNCH_TTL_SECS);
    for l in view.recorded_launches {
        if now - l.launched_at > ttl || !seen.insert(l.id.as_str()) {
            continue;
        }
        // Not listed yet: it is booting. A start on it (a fast runner) is still a start.
        let role = if finished.contains(&l.id) {
            Role::Finished
        } else if started.contains(&l.id) {
            Role::Busy
        } else {
            Role::Pending
        };
        slots.push(Slot {
            id: &l.id,
            launched_at: l.launched_at,
            booting_since: l.launched_at,
            role,
            interrupted: false,
            // Tagging an instance EC2 does not list yet would fail; the next plan tags it.
            tagged_busy: true,
            github_busy: false,
            terminate: None,
        });
    }
    slots
}

/// Terminations that need no count: spent runners and interrupted idle ones in every plan;
/// draining, stopped and never-booted instances in reconcile.
fn judge(view: &PoolView<'_>, slots: &mut [Slot<'_>]) {
    let reconcile = view.mode == Mode::Reconcile;
    let boot = secs(view.pool.boot_timeout_secs);
    let listed: BTreeSet<&InstanceId> = view.instances.iter().map(|i| &i.id).collect();
    for s in slots.iter_mut() {
        s.terminate = match s.role {
            Role::Gone | Role::Busy => None,
            // Ephemeral runners end themselves; this is the backstop. Not before EC2 lists it.
            Role::Finished => listed.contains(s.id).then_some(TerminateReason::JobCompleted),
            // Its job runs: the ledger will hear of it, and the runner ends itself after it.
            _ if s.github_busy => None,
            _ if s.interrupted => Some(TerminateReason::SpotInterrupted),
            _ if !reconcile => None,
            Role::Draining => Some(TerminateReason::Draining),
            Role::Parked if view.now - s.launched_at > boot => Some(TerminateReason::Stopped),
            Role::Pending if listed.contains(s.id) && view.now - s.booting_since > boot => {
                Some(TerminateReason::BootTimeout)
            }
            _ => None,
        };
    }
}

/// Spot re-runs: a job that failed or was cancelled on an instance interrupted under it, while
/// its attempt is within the pool's bound.
fn reruns(view: &PoolView<'_>) -> Vec<Rerun> {
    let interrupted: BTreeSet<&InstanceId> =
        view.instances.iter().filter(|i| i.interrupted).map(|i| &i.id).collect();
    let mut seen = BTreeSet::new();
    view.finished
        .iter()
        .filter(|j| matches!(j.conclusion.as_deref(), Some("failure" | "cancelled")))
        .filter(|j| j.key.run_attempt >= 1 && j.key.run_attempt <= view.pool.max_spot_reruns)
        .filter(|j| {
            j.runner_name
                .as_ref()
                .and_then(RunnerName::instance_id)
                .is_some_and(|id| interrupted.contains(&id))
        })
        .filter(|j| seen.insert(j.key))
        .map(|j| Rerun {
            repository: j.repository.clone(),
            job: j.key.job_id,
            run_id: j.run_id,
            run_attempt: j.key.run_attempt,
        })
        .collect()
}

/// JIT configs and runners left behind (reconcile only): those of instances that are gone or
/// that this plan terminates, and those of instances EC2 does not list that are not fresh.
fn cleanup(view: &PoolView<'_>, slots: &[Slot<'_>]) -> (Vec<InstanceId>, Vec<RunnerRef>) {
    let pool = &view.pool.name;
    let grace = Duration::seconds(FRESH_GRACE_SECS);
    #[derive(PartialEq)]
    enum Fate {
        Alive,
        Dead,
        Unseen,
    }
    let by_id: HashMap<&str, &Slot<'_>> = slots.iter().map(|s| (s.id.as_str(), s)).collect();
    let fate = |id: &str| match by_id.get(id) {
        Some(s) if s.role != Role::Gone && s.terminate.is_none() => Fate::Alive,
        Some(_) => Fate::Dead,
        None => Fate::Unseen,
    };
    let configs = view.jit_configs.unwrap_or(&[]);
    let fresh: BTreeSet<&str> = configs
        .iter()
        .filter(|c| c.created_at.is_some_and(|t| view.now - t <= grace))
        .map(|c| c.instance_id.as_str())
        .collect();
    let mut delete = BTreeSet::new();
    for c in configs.iter().filter(|c| c.pool.as_ref() == Some(pool)) {
        let id = c.instance_id.as_str();
        let stale = match fate(id) {
            Fate::Alive => false,
            Fate::Dead => true,
            Fate::Unseen => !fresh.contains(id),
        };
        if stale {
            delete.insert(c.instance_id.clone());
        }
    }
    let terminating: BTreeSet<&str> =
        slots.iter().filter(|s| s.terminate.is_some()).map(|s| s.id.as_str()).collect();
    let mut runners: BTreeMap<RunnerId, RunnerRef> = BTreeMap::new();
    for r in view.runners.unwrap_or(&[]) {
        // Proof that it is idle: GitHub says it is not busy. A busy runner is never removed.
        if r.busy || r.name.pool().as_ref() != Some(pool) {
            continue;
        }
        let Some(id) = r.name.instance_id() else { continue };
        let remove = match fate(id.as_str()) {
            Fate::Alive => false,
            Fate::Dead => !r.online || terminating.contains(id.as_str()),
            Fate::Unseen => !r.online && !fresh.contains(id.as_str()),
        };
        if remove {
            runners.insert(r.id, RunnerRef { id: r.id, name: r.name.clone() });
        }
    }
    (delete.into_iter().collect(), runners.into_values().collect())
}

/// The CreateFleet token: a hash of the pool, the count, the queued jobs the plan counted, and
/// every instance id the plan saw (listed in any state, or recorded). A retry of the same batch
/// before its launch is visible computes the same token, and EC2 hands back the same instances;
/// once the launch is visible (or recorded), or an instance came or went, the token changes,
/// so a launch that failed or whose instances died is never answered with the old result.
fn launch_key(view: &PoolView<'_>, count: u32) -> String {
    let mut h = Sha256::new();
    h.update(view.pool.name.as_str().as_bytes());
    h.update([0]);
    h.update(count.to_be_bytes());
    let jobs: BTreeSet<JobKey> = view.queued.iter().map(|j| j.key).collect();
    for k in jobs {
        h.update(k.job_id.0.to_be_bytes());
        h.update(k.run_attempt.to_be_bytes());
    }
    let ids: BTreeSet<&str> = view
        .instances
        .iter()
        .filter(|i| i.pool == view.pool.name)
        .map(|i| i.id.as_str())
        .chain(view.recorded_launches.iter().map(|l| l.id.as_str()))
        .collect();
    for id in ids {
        h.update(id.as_bytes());
        h.update([0]);
    }
    format!("hangar-{}", &hex::encode(h.finalize())[..32])
}

/// The demand gauges: queued jobs and the oldest one's wait, from the ledger alone.
pub fn ledger_gauges(pool: &PoolName, now: DateTime<Utc>, queued: &[LedgerJob]) -> Vec<MetricRecord> {
    let oldest = queued.iter().map(|j| j.created_at).min();
    let age = oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
    vec![
        MetricRecord::gauge(metric_names::QUEUED_JOBS, Some(pool), queued.len() as f64),
        MetricRecord::gauge(metric_names::OLDEST_QUEUED_AGE_SECONDS, Some(pool), age),
    ]
}

fn metrics(view: &PoolView<'_>, plan: &PoolPlan, idle_trimmed: u64) -> Vec<MetricRecord> {
    let pool = Some(&view.pool.name);
    let c = plan.counts;
    let mut out = ledger_gauges(&view.pool.name, view.now, view.queued);
    out.extend([
        MetricRecord::gauge(metric_names::POOL_AT_MAX, pool, c.at_max as f64),
        MetricRecord::gauge(names::POOL_IDLE, pool, c.idle as f64),
        MetricRecord::gauge(names::POOL_BUSY, pool, c.busy as f64),
        MetricRecord::gauge(names::POOL_PENDING, pool, (c.pending + plan.launch_count()) as f64),
        MetricRecord::gauge(names::POOL_TARGET, pool, c.target as f64),
    ]);
    let orphans = plan
        .terminate
        .iter()
        .filter(|(_, r)| matches!(r, TerminateReason::BootTimeout | TerminateReason::Stopped))
        .count();
    for (name, v) in [
        (names::ORPHANS_TERMINATED, orphans as u64),
        (metric_names::IDLE_TERMINATED, idle_trimmed),
        (metric_names::RUNNERS_DEREGISTERED, plan.deregister.len() as u64),
        (metric_names::JIT_PARAMETERS_DELETED, plan.delete_configs.len() as u64),
        (metric_names::SPOT_RERUNS, plan.reruns.len() as u64),
    ] {
        if v > 0 {
            out.push(MetricRecord::count(name, pool, v as f64));
        }
    }
    out
}

fn secs(s: u64) -> Duration {
    Duration::seconds(s.min(i64::MAX as u64 / 1000) as i64)
}
