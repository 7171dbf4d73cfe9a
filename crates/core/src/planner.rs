//! The scaling planner: pool state and events in, actions out. Pure: no I/O, no clock (the time
//! is an input), so every rule is checked by plain-value tests and property tests.
//!
//! # Model
//! EC2 tags are the only state. An instance carries a lifecycle (`pending`, `idle`, `busy`,
//! `draining`) and, optionally, a job id. A job id on a `busy` instance is the job it runs; on a
//! `pending` or `idle` instance it is an *earmark*: the instance was launched for, or set aside
//! for, that queued job. Earmarks are what make the planner exact across batches:
//! - a redelivered `ScaleUp` for a job whose id is already on any instance launches nothing;
//! - free capacity (pending/idle, no job id) covering a queued job is earmarked for it, so the next
//!   batch does not count the same idle runner twice;
//! - GitHub gives a job to *any* matching runner, so when job J starts on an instance earmarked
//!   for K, K's earmark moves to the instance that was earmarked for J (the counts stay exact).
//!   This holds even when the instance has died since: its runner ran J, so K's claim moves on.
//!
//! # Dead earmarks
//! An instance can die still holding a job's earmark: its boot agent found no JIT config (the
//! scaler died between CreateFleet and the parameter write, or the write failed and the untag
//! did too), it never booted and reconcile reaped it, a spot reclaim took it, or reconcile
//! terminated an idle runner a batch had just earmarked. A redelivered `ScaleUp` cannot help
//! (the dead label counts as the job's launch, which is what makes redelivery safe), and GitHub
//! keeps the job queued with one runner too few. So the scaler reports each such instance as a
//! [`DeadClaim`] (its state-change handler when the instance goes, reconcile as the backstop),
//! and the pool's next batch replaces it: one instance, tagged `hangar:replaces`, unless the
//! job started or finished meanwhile, its claim moved to a live instance, or the dead instance
//! was replaced already. Each dead instance is replaced at most once.
//!
//! The same message serves a job *displaced*: job J starts on the instance earmarked for K, and
//! J had no earmark of its own to hand on. Nothing on the tags says K still needs a runner (a
//! label on a dead instance even reads as its launch), and no message of K's is in the batch to
//! be retried, so the plan lists a displaced claim, which the scaler queues before it carries
//! the plan out. With headroom, the plan also launches for K at once, as a replacement of the
//! instance K lost (tagged `hangar:replaces`), which makes the queued claim moot; if that launch
//! fails (the new instance got no JIT config and was abandoned: untagged, `draining`) or never
//! happens, the claim launches again. At the cap, a later batch replaces it, unless K is held or
//! has run by then. The cost: when runners swap jobs and die before their starts are handled, K
//! may have run on a dead instance whose tags never said so, and the replacement idles out.
//!
//! # Executing a plan
//! Actions come ordered: tags of finished instances whose tags missed their job and untags of stale
//! earmarks on instances about to go, terminations,
//! parameter deletions, deregistrations, tags, re-runs, replacements, launches. Launch headroom
//! counts the instances this plan terminates as gone, so execute terminations first and, if one
//! fails, skip the launches (the next invocation re-plans). Consecutive tag actions name
//! different instances, so each such run may be written concurrently.
//! `Earmark`/`TagBusy` map to `Fleet::set_lifecycle`; `job: None` must remove the `hangar:job-id`
//! tag. A `Launch` for jobs must tag each new instance with one of `jobs` (at launch, or with
//! `set_lifecycle(id, Pending, Some(job))` right after).
//!
//! # What the planner needs to see
//! `instances` should include shutting-down and terminated instances that EC2 still lists: they
//! never count toward `max_runners`, but their job ids stop a redelivered job from launching again
//! and their `interrupted` flag is what triggers a spot re-run once the job's failure arrives.

use crate::config::{parse_hhmm, weekday_index, PoolConfig, WarmPoolConfig};
use crate::ids::{InstanceId, JobId, RepoFullName, RunId, RunnerId, RunnerName};
use crate::message::QueueMessage;
use crate::metrics::{names, MetricRecord};
use crate::ports::{LaunchReason, RegisteredRunner, StoredJit};
use crate::state::{Ec2State, Lifecycle, ObservedInstance};
use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A JIT parameter (or a runner registration) younger than this whose instance is not listed
/// yet is left alone: `DescribeInstances` is eventually consistent, and the scaler writes the
/// parameter right after CreateFleet returns.
pub const FRESH_GRACE_SECS: i64 = 120;

/// Metric names the planner adds to those in [`crate::metrics::names`].
pub mod metric_names {
    /// Queued jobs left without capacity because the pool is at `max_runners`.
    pub const POOL_AT_MAX: &str = "PoolAtMax";
    /// Idle runners above the warm target terminated after the idle timeout.
    pub const IDLE_TERMINATED: &str = "IdleTerminated";
    pub const RUNNERS_DEREGISTERED: &str = "RunnersDeregistered";
    pub const JIT_PARAMETERS_DELETED: &str = "JitParametersDeleted";
    /// Jobs re-run because a spot interruption killed their runner.
    pub const SPOT_RERUNS: &str = "SpotReruns";
    /// Instances launched to replace one that died holding a queued job's earmark.
    pub const EARMARKS_REPLACED: &str = "EarmarksReplaced";
    /// Reconcile found instances that died holding a queued job's earmark, not yet replaced.
    pub const DEAD_EARMARKS: &str = "DeadEarmarks";
    /// Jobs whose earmark another job took, with none to take in return: a claim was queued for
    /// each, and those that found headroom were launched for at once (the scaler emits a plan's
    /// metrics only once its claims are queued).
    pub const EARMARKS_DISPLACED: &str = "EarmarksDisplaced";
}

/// A queued job whose earmarked instance died before running it, or (`displaced`) whose
/// earmark another job took while the pool was full (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeadClaim {
    pub job: JobId,
    pub instance: InstanceId,
    /// The instance is not dead: another job took it (or this plan terminated it after the
    /// claim was handed to it). The claim is moot only while the instance still holds the job.
    #[serde(default)]
    pub displaced: bool,
}

/// Which invocation is planning. `HandleBatch` handles the batch's messages, launches for
/// queued jobs and tops up the warm pool. `Reconcile` ignores messages (it runs on a schedule and
/// has none); it tops up the warm pool, applies the time-based rules (boot and idle timeouts,
/// stale earmarks, draining and stopped instances) and cleans up parameters and runners. Only
/// reconcile judges boot, because only it reads GitHub's runner list: without it a healthy runner
/// whose boot agent never tags it `idle` looks exactly like one that never booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    HandleBatch,
    Reconcile,
}

/// Everything the planner looks at, for one pool.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub mode: Mode,
    pub now: DateTime<Utc>,
    pub pool: &'a PoolConfig,
    /// The pool's instances, from EC2 tags (see the module docs on terminated ones).
    pub instances: &'a [ObservedInstance],
    /// This batch's messages for the pool, in queue order. Messages for other pools are ignored,
    /// and so are all of them in `Mode::Reconcile`.
    pub messages: &'a [QueueMessage],
    /// GitHub's registered runners (all of the organisation's are fine: only runners Hangar
    /// named for this pool are considered). Reconcile only; `None` on the hot path.
    pub runners: Option<&'a [RegisteredRunner]>,
    /// Stored JIT parameters. Reconcile only.
    pub jit_parameters: Option<&'a [StoredJit]>,
    /// Instances reported dead holding an earmark, to replace. Batch only.
    pub dead_claims: &'a [DeadClaim],
}

impl<'a> PlanInput<'a> {
    pub fn batch(
        pool: &'a PoolConfig,
        instances: &'a [ObservedInstance],
        messages: &'a [QueueMessage],
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            mode: Mode::HandleBatch,
            now,
            pool,
            instances,
            messages,
            runners: None,
            jit_parameters: None,
            dead_claims: &[],
        }
    }

    pub fn with_dead_claims(self, dead_claims: &'a [DeadClaim]) -> Self {
        Self { dead_claims, ..self }
    }

    pub fn reconcile(
        pool: &'a PoolConfig,
        instances: &'a [ObservedInstance],
        runners: Option<&'a [RegisteredRunner]>,
        jit_parameters: Option<&'a [StoredJit]>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            mode: Mode::Reconcile,
            now,
            pool,
            instances,
            messages: &[],
            runners,
            jit_parameters,
            dead_claims: &[],
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `ec2:TerminateInstances`. Never holds an instance running a job.
    Terminate { ids: Vec<InstanceId>, reason: TerminateReason },
    /// `ssm:DeleteParameters` for these instances' JIT parameters.
    DeleteParameters { ids: Vec<InstanceId> },
    /// Delete these runners from GitHub (all named by Hangar for this pool, none busy).
    DeregisterRunners { runners: Vec<RunnerRef> },
    /// Tag the instance `busy` with the job it runs.
    TagBusy { instance: InstanceId, job: JobId },
    /// Set (or with `None`, remove) the instance's job id, keeping its lifecycle tag.
    Earmark { instance: InstanceId, lifecycle: Lifecycle, job: Option<JobId> },
    /// Re-run a job whose spot-interrupted runner died under it.
    RerunJob { repository: RepoFullName, job: JobId, run_id: RunId, run_attempt: u32 },
    /// Launch `count` instances. For `LaunchReason::Job`, `jobs.len() == count` and each new
    /// instance carries one of these job ids. `idempotency_key` is stable for the same request
    /// (CreateFleet `ClientToken`, at most 64 characters).
    Launch { count: u32, reason: LaunchReason, jobs: Vec<JobId>, idempotency_key: String },
    /// Launch one instance for `job`, tagged `hangar:replaces = dead`: `dead` died holding the
    /// job's earmark, or (a displaced claim) another job took it from `dead`. Counted in the
    /// launch headroom like a `Launch`.
    Replace { job: JobId, dead: InstanceId, idempotency_key: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Queued jobs that got neither a free runner nor a launch because the pool is at
    /// `max_runners`. Nothing remembers them: the scaler should put their messages back so
    /// that they are planned again once capacity frees up. A job that lost its earmarked runner
    /// to another job while the pool was full is listed here and has a displaced claim in
    /// `dead_claims` (no tag can hold it). Jobs of dead claims that found the pool full are
    /// listed here too.
    pub unserved: Vec<JobId>,
    /// Claims to queue, one message each in the pool's group, for the batch that takes it to
    /// replace: reconcile's instances that died holding an earmark and are not replaced yet, and
    /// (`displaced`) a batch's jobs whose earmark another job took. Queue a batch's claims before
    /// carrying out its plan: a displaced job launched for in this plan (a `Replace` naming the
    /// same instance) has nothing else that remembers it if that launch fails.
    pub dead_claims: Vec<DeadClaim>,
    pub warm_target: u32,
    pub metrics: Vec<MetricRecord>,
}

impl Plan {
    /// Instances this plan launches, over all `Launch` actions.
    pub fn launch_count(&self) -> u32 {
        self.actions
            .iter()
            .map(|a| match a {
                Action::Launch { count, .. } => *count,
                Action::Replace { .. } => 1,
                _ => 0,
            })
            .sum()
    }

    /// Every instance this plan terminates.
    pub fn terminated(&self) -> impl Iterator<Item = &InstanceId> {
        self.actions.iter().flat_map(|a| match a {
            Action::Terminate { ids, .. } => ids.as_slice(),
            _ => &[],
        })
    }

    /// True when the plan changes nothing in AWS or GitHub (metrics aside).
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }
}

/// The warm-pool size in force at `now`: the largest window containing the local time (in the
/// pool's timezone), else `size`; never above `max_runners`. An unknown timezone (which config
/// validation rejects) falls back to UTC rather than failing the scaler.
pub fn warm_target(cfg: &WarmPoolConfig, max_runners: u32, now: DateTime<Utc>) -> u32 {
    let tz: chrono_tz::Tz = cfg.timezone.parse().unwrap_or(chrono_tz::UTC);
    let local = now.with_timezone(&tz);
    let day = local.weekday().num_days_from_monday();
    let minute = local.hour() * 60 + local.minute();
    let in_window = cfg.schedule.iter().filter(|w| {
        let (Some(from), Some(to)) = (parse_hhmm(&w.from), parse_hhmm(&w.to)) else { return false };
        let day_ok = w.days.is_empty() || w.days.iter().any(|d| weekday_index(d) == Some(day));
        day_ok && from <= minute && minute < to
    });
    in_window.map(|w| w.size).max().unwrap_or(cfg.size).min(max_runners)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Shutting down or terminated: history only.
    Gone,
    Busy,
    Draining,
    Idle,
    Pending,
}

#[derive(Debug)]
struct Slot<'a> {
    inst: &'a ObservedInstance,
    status: Status,
    /// Stopped or stopping: counts toward the cap, serves nothing.
    parked: bool,
    job: Option<JobId>,
    /// Became busy through an event in this batch (so it needs a `busy` tag).
    started: bool,
    completed: bool,
    /// Dead, and a message of this batch says its runner ran a job: it holds no claim.
    ran_dead: bool,
    terminate: Option<TerminateReason>,
}

impl Slot<'_> {
    fn alive(&self) -> bool {
        self.status != Status::Gone
    }
    /// Holds a job's claim that can be handed on: only an instance that could still serve.
    fn holds_earmark(&self) -> bool {
        matches!(self.status, Status::Idle | Status::Pending)
            && !self.parked
            && !self.inst.interrupted
            && self.job.is_some()
    }
    /// The job id the tags will show once the plan is applied. Instances being terminated get no
    /// tag writes (except a finished one whose tags missed its job, see `finish`), so theirs stay.
    fn label_after(&self) -> Option<JobId> {
        if self.terminate.is_some() && !self.retag_before_terminate() && !self.untag_before_terminate() {
            self.inst.job_id
        } else {
            self.job
        }
    }
    /// Terminated with an earmark this plan dropped as stale: the tag must go first, or the
    /// dead instance would read as one that died holding the job's claim, and be replaced.
    fn untag_before_terminate(&self) -> bool {
        !self.completed
            && self.job.is_none()
            && self.inst.job_id.is_some()
            && matches!(self.inst.lifecycle, Lifecycle::Pending | Lifecycle::Idle)
    }
    fn retag_before_terminate(&self) -> bool {
        self.completed && self.job.is_some_and(|job| self.inst.job_id.is_some_and(|j| j != job))
    }
    /// Can take a queued job, and is not set aside for one.
    fn free(&self) -> bool {
        matches!(self.status, Status::Idle | Status::Pending)
            && !self.parked
            && !self.inst.interrupted
            && self.job.is_none()
            && self.terminate.is_none()
    }
    fn age(&self, now: DateTime<Utc>) -> Duration {
        now - self.inst.launched_at
    }
}

struct Planner<'a> {
    input: &'a PlanInput<'a>,
    slots: Vec<Slot<'a>>,
    by_id: Map<&'a str, usize>,
    /// Jobs this batch says have started or completed: they need no capacity.
    settled: Set<JobId>,
    /// Queued jobs in first-seen order (queued messages, then jobs whose earmark was taken).
    demand: Vec<JobId>,
    /// Jobs in `demand` that lost their live claim in this batch (displaced by another job, or
    /// handed to an instance this plan terminates). A label on a dead instance is not their
    /// launch: they need capacity now.
    /// Each maps to the instance that lost the claim.
    heirs: Map<JobId, usize>,
    /// GitHub's runners of this pool by instance id: (online, busy). Reconcile only.
    runners_by_instance: Map<&'a str, (bool, bool)>,
    /// Jobs whose instance died before they started: re-homed on free capacity, never launched
    /// for again (each job gets at most one launch).
    rehome: Vec<JobId>,
    reruns: Vec<Action>,
    rerun_seen: Set<(JobId, u32)>,
}

/// Jobs with a claim that still counts, and dead instances already replaced.
struct Claims<'s> {
    jobs: Set<JobId>,
    replaced: Set<&'s str>,
}

enum Runner {
    /// An instance of this pool that EC2 lists.
    Ours(usize),
    /// Not an instance we can see (another pool, a foreign runner, none named, or vanished).
    Elsewhere,
}

/// Plans one pool. See the module docs for the model and how to execute the result.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut p = Planner::new(input);
    p.apply_messages();
    p.finish()
}

impl<'a> Planner<'a> {
    fn new(input: &'a PlanInput<'a>) -> Self {
        let pool = &input.pool.name;
        // (online, busy) per instance. GitHub keeps runner names unique, but if a list ever
        // repeats one, any busy or online entry wins: the safe reading.
        let mut runners_by_instance: Map<&str, (bool, bool)> = Map::default();
        for r in input.runners.unwrap_or(&[]) {
            if let Some((p, id)) = split_runner_name(r.name.as_str()) {
                if p == pool.as_str() {
                    let e = runners_by_instance.entry(id).or_default();
                    *e = (e.0 || r.online, e.1 || r.busy);
                }
            }
        }
        let mut slots = Vec::with_capacity(input.instances.len());
        let mut by_id = Map::with_capacity_and_hasher(input.instances.len(), Default::default());
        for inst in input.instances.iter().filter(|i| &i.pool == pool) {
            // Duplicate ids (a describe paginated twice over the same instance) are one instance.
            match by_id.entry(inst.id.as_str()) {
                std::collections::hash_map::Entry::Occupied(_) => continue,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(slots.len());
                }
            }
            let runner = runners_by_instance.get(inst.id.as_str());
            let parked = matches!(inst.ec2_state, Ec2State::Stopped | Ec2State::Stopping);
            let status = if !inst.ec2_state.counts_toward_cap() {
                Status::Gone
            } else if inst.lifecycle == Lifecycle::Busy || runner.is_some_and(|r| r.1) {
                Status::Busy
            } else if inst.lifecycle == Lifecycle::Draining {
                Status::Draining
            } else if inst.lifecycle == Lifecycle::Idle || runner.is_some_and(|r| r.0) {
                Status::Idle
            } else {
                Status::Pending
            };
            slots.push(Slot {
                inst,
                status,
                parked,
                job: inst.job_id,
                started: false,
                completed: false,
                ran_dead: false,
                terminate: None,
            });
        }
        Self {
            input,
            slots,
            by_id,
            settled: Set::default(),
            demand: Vec::new(),
            heirs: Map::default(),
            runners_by_instance,
            rehome: Vec::new(),
            reruns: Vec::new(),
            rerun_seen: Set::default(),
        }
    }

    fn resolve(&self, runner: Option<&RunnerName>, job: JobId) -> Runner {
        match runner {
            Some(name) => match split_runner_name(name.as_str()) {
                Some((pool, id)) if pool == self.input.pool.name.as_str() => {
                    self.by_id.get(id).map_or(Runner::Elsewhere, |&i| Runner::Ours(i))
                }
                _ => Runner::Elsewhere,
            },
            // A webhook without `runner_name`: the instance already tagged busy with the job.
            None => self
                .slots
                .iter()
                .position(|s| s.status == Status::Busy && s.job == Some(job))
                .map_or(Runner::Elsewhere, Runner::Ours),
        }
    }

    /// Job `job` runs on slot `x`. If `x` was earmarked for another job K, K's claim moves to
    /// the instance that was earmarked for `job`, or, if there is none, K needs capacity again.
    fn assign(&mut self, job: JobId, x: usize) {
        let slot = &mut self.slots[x];
        if slot.status == Status::Busy && slot.job == Some(job) {
            return;
        }
        let displaced = if slot.status == Status::Busy { None } else { slot.job.filter(|k| *k != job) };
        // A job that already started or finished elsewhere in this batch needs no claim (each
        // such event released that job's earmarks; this keeps it from inheriting one again).
        let displaced = displaced.filter(|k| !self.settled.contains(k));
        slot.status = Status::Busy;
        slot.job = Some(job);
        slot.started = true;
        self.release_earmarks(job, displaced.map(|k| (k, x)));
    }

    /// Job `job` ran on slot `x`, which has died since. If it died still tagged with another
    /// job K's earmark (its start was never tagged), K's claim moves on as in [`Self::assign`],
    /// and the dead instance's label now reads as the job it ran, so K is not replaced for it.
    fn ran_on_dead(&mut self, job: JobId, x: usize) {
        let slot = &mut self.slots[x];
        let mut displaced = None;
        if slot.inst.died_holding_earmark().is_some() && !slot.ran_dead {
            displaced = slot.job.filter(|j| *j != job && !self.settled.contains(j));
            slot.job = Some(job);
            slot.ran_dead = true;
        }
        self.release_earmarks(job, displaced.map(|k| (k, x)));
    }

    /// Which jobs hold a claim that still counts: on a live instance (earmarked or busy), or on
    /// one tagged busy (it ran the job, dead or not). And which dead instances were replaced.
    fn claims(&self) -> Claims<'a> {
        let mut jobs = Set::with_capacity_and_hasher(self.slots.len(), Default::default());
        let mut replaced = Set::default();
        for s in &self.slots {
            if let Some(j) = s.job.filter(|_| s.alive() || s.inst.lifecycle == Lifecycle::Busy) {
                jobs.insert(j);
            }
            // A replacement the scaler abandoned (it got no JIT config, so its job tag was
            // dropped and it was tagged `draining`) replaced nothing: the claim stands.
            let abandoned = s.inst.lifecycle == Lifecycle::Draining && s.inst.job_id.is_none();
            if let Some(d) = s.inst.replaces.as_ref().filter(|_| !abandoned) {
                replaced.insert(d.as_str());
            }
        }
        Claims { jobs, replaced }
    }

    /// The batch's dead claims that still need an instance (see the module docs).
    fn live_dead_claims(&self, claims: &Claims<'_>) -> Vec<DeadClaim> {
        let mut seen = Set::default();
        let mut out = Vec::new();
        for c in self.input.dead_claims {
            if self.settled.contains(&c.job) || claims.jobs.contains(&c.job) {
                continue;
            }
            if claims.replaced.contains(c.instance.as_str()) {
                continue;
            }
            // A dead claim on an instance listed alive (a false report), or whose label moved on
            // since, is moot: nothing died with it. A displaced claim names a live instance
            // that no longer holds the job (had it, `claims` would have the job, above).
            if let Some(&i) = self.by_id.get(c.instance.as_str()) {
                let s = &self.slots[i];
                if !c.displaced && (s.alive() || s.job != Some(c.job)) {
                    continue;
                }
            }
            if seen.insert(c.job) {
                out.push(c.clone());
            }
        }
        out
    }

    /// Reconcile's look at the dead: instances that died holding a claim nobody else holds, and
    /// that certainly never ran a job. Tags alone cannot say that: a runner that ran its own job
    /// and went away before its start was handled leaves the same tags, and EC2 does not tag a
    /// terminated instance. GitHub removes an ephemeral runner once it has run a job, so a
    /// runner still registered and not busy proves it never ran one. Instances this plan
    /// terminates for never booting, being stopped or a spot warning are proof too.
    fn found_dead_claims(&self, claims: &Claims<'_>) -> Vec<DeadClaim> {
        let never_ran = |s: &Slot<'_>| {
            matches!(
                s.terminate,
                Some(
                    TerminateReason::BootTimeout
                        | TerminateReason::Stopped
                        | TerminateReason::SpotInterrupted
                )
            ) || (!s.alive() && self.runners_by_instance.get(s.inst.id.as_str()).is_some_and(|r| !r.1))
        };
        self.slots
            .iter()
            .filter(|s| never_ran(s) && !claims.replaced.contains(s.inst.id.as_str()))
            .filter_map(|s| {
                let job = s.job.filter(|j| s.inst.job_id == Some(*j))?;
                let holding = matches!(s.inst.lifecycle, Lifecycle::Pending | Lifecycle::Idle);
                let held_elsewhere = self.slots.iter().any(|o| {
                    o.job == Some(job)
                        && o.terminate.is_none()
                        && (o.alive() || o.inst.lifecycle == Lifecycle::Busy)
                });
                (holding && !held_elsewhere).then(|| DeadClaim {
                    job,
                    instance: s.inst.id.clone(),
                    displaced: false,
                })
            })
            .collect()
    }

    /// `job` no longer needs the capacity earmarked for it; hand it to `heir` (a job that lost its
    /// own instance, with that instance's slot) or free it.
    fn release_earmarks(&mut self, job: JobId, mut heir: Option<(JobId, usize)>) {
        for s in self.slots.iter_mut().filter(|s| s.holds_earmark() && s.job == Some(job)) {
            s.job = heir.take().map(|(k, _)| k);
        }
        if let Some((k, lost)) = heir {
            self.demand.push(k);
            self.heirs.entry(k).or_insert(lost);
        }
    }

    fn apply_messages(&mut self) {
        if self.input.mode == Mode::Reconcile {
            return;
        }
        let pool = &self.input.pool.name;
        let ours = self.input.messages.iter().filter(|m| m.pool() == pool);
        // A completion without a runner name (cancelled while queued, or an older webhook) is
        // placed by the job on an instance, so it goes after every start in the batch: a
        // redelivered batch can bring them out of order.
        let nameless =
            |m: &&QueueMessage| matches!(m, QueueMessage::JobCompleted(c) if c.runner_name.is_none());
        let ordered = ours.clone().filter(|m| !nameless(m)).chain(ours.filter(nameless));
        for msg in ordered {
            match msg {
                QueueMessage::ScaleUp(j) => self.demand.push(j.job_id),
                QueueMessage::JobStarted(s) => {
                    self.settled.insert(s.job_id);
                    match self.resolve(s.runner_name.as_ref(), s.job_id) {
                        Runner::Ours(x) if self.slots[x].alive() => self.assign(s.job_id, x),
                        Runner::Ours(x) => self.ran_on_dead(s.job_id, x),
                        Runner::Elsewhere => self.release_earmarks(s.job_id, None),
                    }
                }
                QueueMessage::JobCompleted(c) if c.runner_name.is_none() => {
                    self.settled.insert(c.job_id);
                    // Every live instance busy with the job is done with it (tags should name
                    // one; if a lost update left two, both are finished).
                    let done: Vec<usize> = (0..self.slots.len())
                        .filter(|&i| {
                            self.slots[i].status == Status::Busy && self.slots[i].job == Some(c.job_id)
                        })
                        .collect();
                    if done.is_empty() {
                        self.release_earmarks(c.job_id, None);
                    }
                    for x in done {
                        self.slots[x].completed = true;
                        self.consider_rerun(c, x);
                    }
                }
                QueueMessage::JobCompleted(c) => {
                    self.settled.insert(c.job_id);
                    let at = self.resolve(c.runner_name.as_ref(), c.job_id);
                    match at {
                        Runner::Ours(x) if self.slots[x].alive() => {
                            self.assign(c.job_id, x);
                            self.slots[x].completed = true;
                        }
                        Runner::Ours(x) => self.ran_on_dead(c.job_id, x),
                        Runner::Elsewhere => self.release_earmarks(c.job_id, None),
                    }
                    if let Runner::Ours(x) = at {
                        self.consider_rerun(c, x);
                    }
                }
            }
        }
    }

    fn consider_rerun(&mut self, c: &crate::message::JobCompleted, x: usize) {
        let inst = self.slots[x].inst;
        let failed = matches!(c.conclusion.as_deref(), Some("failure" | "cancelled"));
        // Attempt n follows n-1 re-runs; allow another while fewer than the bound were made.
        let within_bound = c.run_attempt >= 1 && c.run_attempt <= self.input.pool.max_spot_reruns;
        if inst.interrupted && failed && within_bound && self.rerun_seen.insert((c.job_id, c.run_attempt)) {
            self.reruns.push(Action::RerunJob {
                repository: c.repository.clone(),
                job: c.job_id,
                run_id: c.run_id,
                run_attempt: c.run_attempt,
            });
        }
    }

    fn mark_terminations(&mut self) {
        let input = self.input;
        let cfg = input.pool;
        let reconcile = input.mode == Mode::Reconcile;
        let boot = Duration::seconds(cfg.boot_timeout_secs.min(i64::MAX as u64) as i64);
        let runners_known = input.runners.is_some();
        // The boot clock starts when the instance's JIT config was written, if that was after
        // the launch: under GitHub's rate limits it can come late, and an instance cannot
        // register before it has its config. Judged from the launch alone, such an instance
        // is reaped just as its runner registers and takes a job.
        let mut config_written: Map<&str, DateTime<Utc>> = Map::default();
        for p in input.jit_parameters.unwrap_or(&[]) {
            if let Some(t) = p.created_at {
                config_written.insert(p.instance_id.as_str(), t);
            }
        }
        for s in self.slots.iter_mut().filter(|s| s.alive()) {
            let not_busy = s.status != Status::Busy;
            let booting_since = config_written
                .get(s.inst.id.as_str())
                .map_or(s.inst.launched_at, |t| (*t).max(s.inst.launched_at));
            s.terminate = if s.completed {
                Some(TerminateReason::JobCompleted)
            } else if not_busy && s.inst.interrupted {
                Some(TerminateReason::SpotInterrupted)
            } else if !reconcile || !not_busy {
                None
            } else if s.status == Status::Draining {
                Some(TerminateReason::Draining)
            } else if s.parked && s.age(input.now) > boot {
                Some(TerminateReason::Stopped)
            } else if runners_known
                && s.status == Status::Pending
                && !s.parked
                && input.now - booting_since > boot
            {
                Some(TerminateReason::BootTimeout)
            } else {
                None
            };
            // A job waiting on an instance that a spot reclaim takes away was never served; give
            // it free capacity if there is some (no second launch: see `rehome`).
            if s.terminate == Some(TerminateReason::SpotInterrupted) {
                if let Some(j) = s.job {
                    self.rehome.push(j);
                }
            }
        }
    }

    /// Oldest free idle first; pending (still booting) after idle; id breaks ties so plans are
    /// deterministic.
    fn free_slots(&self) -> Vec<usize> {
        let mut free: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].free()).collect();
        free.sort_by(|&a, &b| {
            let (a, b) = (&self.slots[a], &self.slots[b]);
            (a.status != Status::Idle, a.inst.launched_at, &a.inst.id).cmp(&(
                b.status != Status::Idle,
                b.inst.launched_at,
                &b.inst.id,
            ))
        });
        free
    }

    fn finish(mut self) -> Plan {
        let input = self.input;
        let cfg = input.pool;
        let now = input.now;
        self.mark_terminations();

        if input.mode == Mode::Reconcile {
            // An earmark on a runner idle for longer than the idle timeout is stale: a job that
            // could run there would have started (the webhook saying where it went was lost, or it
            // was cancelled). The launch time is the only clock the tags give, so this may also
            // catch an earmark set moments ago on an old warm runner; that costs nothing, since
            // the runner stays free for that job and is trimmed only above the warm target.
            let idle = Duration::seconds(cfg.idle_timeout_secs.min(i64::MAX as u64) as i64);
            for s in self.slots.iter_mut() {
                if s.status == Status::Idle && !s.parked && s.terminate.is_none() && s.age(now) > idle {
                    s.job = None;
                }
            }
        }

        let claims = self.claims();
        let replace =
            if input.mode == Mode::HandleBatch { self.live_dead_claims(&claims) } else { Vec::new() };

        // Jobs that still need capacity: queued, not started or finished, and not already on
        // (launched for, earmarked on, or run by) any instance, dead ones included.
        // Labels as the next plan will read them, so that both plans agree on which jobs had
        // their launch.
        let mut labelled: Set<JobId> = Set::with_capacity_and_hasher(self.slots.len(), Default::default());
        labelled.extend(self.slots.iter().filter_map(|s| s.label_after()));
        // A claim handed in this batch to an instance this plan terminates dies with it: that job
        // needs capacity again.
        let orphaned: Vec<(JobId, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.terminate.is_some() && s.label_after() != s.job)
            .filter_map(|(x, s)| s.job.map(|j| (j, x)))
            .collect();
        for (j, x) in orphaned {
            self.heirs.entry(j).or_insert(x);
            self.demand.push(j);
        }
        let mut held_or_ran: Set<JobId> = Set::with_capacity_and_hasher(self.slots.len(), Default::default());
        held_or_ran
            .extend(self.slots.iter().filter(|s| s.alive() && s.terminate.is_none()).filter_map(|s| s.job));
        // A dead instance tagged busy ran its job: that job needs nothing, heir or not.
        held_or_ran.extend(
            self.slots
                .iter()
                .filter(|s| !s.alive() && s.inst.lifecycle == Lifecycle::Busy)
                .filter_map(|s| s.job),
        );
        // A job replaced for a dead instance in this batch has its launch.
        let mut seen: Set<JobId> = replace.iter().map(|c| c.job).collect();
        let wanted: Vec<JobId> = std::mem::take(&mut self.demand)
            .into_iter()
            .filter(|j| {
                let had_launch =
                    if self.heirs.contains_key(j) { held_or_ran.contains(j) } else { labelled.contains(j) };
                !self.settled.contains(j) && !had_launch && seen.insert(*j)
            })
            .collect();
        let rehome: Vec<JobId> = std::mem::take(&mut self.rehome)
            .into_iter()
            .filter(|j| !self.settled.contains(j) && !held_or_ran.contains(j) && seen.insert(*j))
            .collect();

        let free = self.free_slots();
        // Reconcile would call an earmark on a long-idle runner stale (see above), so it does not
        // place one there: the next reconcile must agree with this one.
        let idle_limit = Duration::seconds(cfg.idle_timeout_secs.min(i64::MAX as u64) as i64);
        let earmarkable = |s: &Slot<'_>| {
            input.mode != Mode::Reconcile || s.status != Status::Idle || s.age(now) <= idle_limit
        };
        let mut taken = vec![false; free.len()];
        let mut take = |slots: &mut [Slot<'_>], job: JobId| -> bool {
            let pick = (0..free.len()).find(|&k| !taken[k] && earmarkable(&slots[free[k]]));
            if let Some(k) = pick {
                taken[k] = true;
                slots[free[k]].job = Some(job);
            }
            pick.is_some()
        };
        let mut uncovered = Vec::new();
        for job in wanted {
            if !take(&mut self.slots, job) {
                uncovered.push(job);
            }
        }
        for job in rehome {
            if take(&mut self.slots, job) {
                // The claim moved to free capacity: the reclaimed instance's tag must not
                // outlive it as a second claim (it is untagged before it goes).
                for s in self
                    .slots
                    .iter_mut()
                    .filter(|s| s.terminate == Some(TerminateReason::SpotInterrupted) && s.job == Some(job))
                {
                    s.job = None;
                }
            }
        }
        let mut dead_claims =
            if input.mode == Mode::Reconcile { self.found_dead_claims(&claims) } else { Vec::new() };
        drop(claims);
        let free_left: Vec<usize> = (0..free.len()).filter(|&k| !taken[k]).map(|k| free[k]).collect();

        let target = warm_target(&cfg.warm_pool, cfg.max_runners, now);
        let mut idle_trimmed = 0u64;
        if input.mode == Mode::Reconcile {
            let idle = Duration::seconds(cfg.idle_timeout_secs.min(i64::MAX as u64) as i64);
            let excess = free_left.len().saturating_sub(target as usize);
            // `free_left` is oldest-idle-first already.
            let trim: Vec<usize> = free_left
                .iter()
                .copied()
                .filter(|&i| self.slots[i].status == Status::Idle && self.slots[i].age(now) > idle)
                .take(excess)
                .collect();
            for i in trim {
                self.slots[i].terminate = Some(TerminateReason::IdleTimeout);
                idle_trimmed += 1;
            }
        }
        let free_after = free_left.iter().filter(|&&i| self.slots[i].terminate.is_none()).count() as u32;

        let counted = self
            .slots
            .iter()
            .filter(|s| s.inst.ec2_state.counts_toward_cap() && s.terminate.is_none())
            .count() as u32;
        let mut headroom = cfg.max_runners.saturating_sub(counted);
        // Replacements first: their jobs have waited longest.
        let n_replace = (replace.len() as u32).min(headroom);
        headroom -= n_replace;
        let mut replace = replace;
        let replace_unserved: Vec<JobId> =
            replace.split_off(n_replace as usize).into_iter().map(|c| c.job).collect();
        let n_jobs = (uncovered.len() as u32).min(headroom);
        headroom -= n_jobs;
        let mut unserved = uncovered.split_off(n_jobs as usize);
        // A job that lost its earmark in this plan and found the pool full has nothing left on
        // the tags that says it still needs a runner (a label on a dead instance would even
        // read as its launch), so the scaler queues a claim for it, as for a dead instance.
        dead_claims.extend(unserved.iter().filter_map(|j| {
            let &x = self.heirs.get(j)?;
            Some(DeadClaim { job: *j, instance: self.slots[x].inst.id.clone(), displaced: true })
        }));
        unserved.extend(replace_unserved);
        // A displaced job that gets capacity is launched for as a replacement of the instance
        // that lost its claim, with the claim queued too: if the launch fails (no JIT config, so
        // the new instance is untagged and abandoned), or the invocation dies before it, no tag
        // says the job still needs a runner, and no message of its own would be retried. Once
        // the launch has happened, the `hangar:replaces` tag makes the queued claim moot.
        let (heir_jobs, launch_jobs): (Vec<JobId>, Vec<JobId>) =
            uncovered.into_iter().partition(|j| self.heirs.contains_key(j));
        let heir_claims: Vec<DeadClaim> = heir_jobs
            .iter()
            .map(|j| DeadClaim {
                job: *j,
                instance: self.slots[self.heirs[j]].inst.id.clone(),
                displaced: true,
            })
            .collect();
        dead_claims.extend(heir_claims.iter().cloned());
        let n_jobs = launch_jobs.len() as u32;
        let n_heirs = heir_claims.len() as u32;
        let n_warm = target.saturating_sub(free_after).min(headroom);

        let mut actions = Vec::new();
        let mut by_reason: Vec<(TerminateReason, Vec<InstanceId>)> = Vec::new();
        for s in &self.slots {
            if let Some(r) = s.terminate {
                match by_reason.iter_mut().find(|(k, _)| *k == r) {
                    Some((_, ids)) => ids.push(s.inst.id.clone()),
                    None => by_reason.push((r, vec![s.inst.id.clone()])),
                }
            }
        }
        by_reason.sort_by_key(|(r, _)| *r);
        let orphans: u64 = by_reason
            .iter()
            .filter(|(r, _)| matches!(r, TerminateReason::BootTimeout | TerminateReason::Stopped))
            .map(|(_, ids)| ids.len() as u64)
            .sum();
        let terminating: Set<&InstanceId> = by_reason.iter().flat_map(|(_, ids)| ids).collect();
        // An instance that finished a job its tags do not show (the start was never seen) still
        // carries an earmark; record the job it ran before it goes, or a later redelivery of the
        // earmarked job would count that dead earmark as its launch.
        for s in self.slots.iter().filter(|s| s.terminate.is_some() && s.retag_before_terminate()) {
            if let Some(job) = s.job {
                actions.push(Action::TagBusy { instance: s.inst.id.clone(), job });
            }
        }
        for s in self.slots.iter().filter(|s| s.terminate.is_some() && s.untag_before_terminate()) {
            actions.push(Action::Earmark {
                instance: s.inst.id.clone(),
                lifecycle: s.inst.lifecycle,
                job: None,
            });
        }
        for (reason, ids) in &by_reason {
            actions.push(Action::Terminate { ids: ids.clone(), reason: *reason });
        }

        let (params, runners) = self.cleanup(&terminating);
        let (n_params, n_runners) = (params.len() as u64, runners.len() as u64);
        if !params.is_empty() {
            actions.push(Action::DeleteParameters { ids: params });
        }
        if !runners.is_empty() {
            actions.push(Action::DeregisterRunners { runners });
        }

        for s in self.slots.iter().filter(|s| s.alive() && s.terminate.is_none()) {
            let inst = s.inst;
            if s.started {
                if let Some(job) = s.job {
                    if inst.lifecycle != Lifecycle::Busy || inst.job_id != Some(job) {
                        actions.push(Action::TagBusy { instance: inst.id.clone(), job });
                    }
                }
            } else if s.job != inst.job_id && s.status != Status::Busy {
                actions.push(Action::Earmark {
                    instance: inst.id.clone(),
                    lifecycle: inst.lifecycle,
                    job: s.job,
                });
            }
        }
        let n_reruns = self.reruns.len() as u64;
        actions.append(&mut self.reruns);

        for c in replace.iter().chain(&heir_claims) {
            let mut h = Sha256::new();
            for part in [cfg.name.as_str(), "replace", c.instance.as_str()] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            h.update(c.job.0.to_be_bytes());
            let idempotency_key = format!("hangar-{}", &hex::encode(h.finalize())[..32]);
            actions.push(Action::Replace { job: c.job, dead: c.instance.clone(), idempotency_key });
        }
        if n_jobs > 0 {
            let key = launch_key(cfg, LaunchReason::Job, &launch_jobs, None);
            actions.push(Action::Launch {
                count: n_jobs,
                reason: LaunchReason::Job,
                jobs: launch_jobs.clone(),
                idempotency_key: key,
            });
        }
        if n_warm > 0 {
            let key = launch_key(cfg, LaunchReason::WarmPool, &[], Some((&self.slots, now, n_warm)));
            actions.push(Action::Launch {
                count: n_warm,
                reason: LaunchReason::WarmPool,
                jobs: Vec::new(),
                idempotency_key: key,
            });
        }

        let live = |st: Status| {
            self.slots.iter().filter(|s| s.status == st && !s.parked && s.terminate.is_none()).count() as f64
        };
        let pool = Some(&cfg.name);
        let mut metrics = vec![
            MetricRecord::gauge(names::POOL_IDLE, pool, live(Status::Idle)),
            MetricRecord::gauge(names::POOL_BUSY, pool, live(Status::Busy)),
            MetricRecord::gauge(
                names::POOL_PENDING,
                pool,
                live(Status::Pending) + (n_replace + n_heirs + n_jobs + n_warm) as f64,
            ),
            MetricRecord::gauge(names::POOL_TARGET, pool, target as f64),
        ];
        let counts = [
            (names::POOL_EXHAUSTED, (launch_jobs.len() + heir_claims.len() + unserved.len()) as u64),
            (metric_names::POOL_AT_MAX, unserved.len() as u64),
            (names::ORPHANS_TERMINATED, orphans),
            (metric_names::IDLE_TERMINATED, idle_trimmed),
            (metric_names::RUNNERS_DEREGISTERED, n_runners),
            (metric_names::JIT_PARAMETERS_DELETED, n_params),
            (metric_names::SPOT_RERUNS, n_reruns),
            (metric_names::EARMARKS_REPLACED, n_replace as u64),
            (metric_names::DEAD_EARMARKS, dead_claims.iter().filter(|c| !c.displaced).count() as u64),
            (metric_names::EARMARKS_DISPLACED, dead_claims.iter().filter(|c| c.displaced).count() as u64),
        ];
        for (name, v) in counts {
            // Gauges always; counters only when something happened, except pool exhaustion on the
            // hot path, which the alarm needs as a continuous series.
            if v > 0 || (name == names::POOL_EXHAUSTED && input.mode == Mode::HandleBatch) {
                metrics.push(MetricRecord::count(name, pool, v as f64));
            }
        }

        Plan { actions, unserved, dead_claims, warm_target: target, metrics }
    }

    /// Parameters and runners to remove (reconcile only): those of instances that are gone, or
    /// that this plan terminates.
    fn cleanup(&self, terminating: &Set<&InstanceId>) -> (Vec<InstanceId>, Vec<RunnerRef>) {
        let input = self.input;
        let pool = &input.pool.name;
        let now = input.now;
        let grace = Duration::seconds(FRESH_GRACE_SECS);
        let terminating: Set<&str> = terminating.iter().map(|id| id.as_str()).collect();
        let fate = |id: &str| -> Fate {
            if terminating.contains(id) {
                return Fate::Dead;
            }
            match self.by_id.get(id) {
                Some(&i) if self.slots[i].alive() => Fate::Alive,
                Some(_) => Fate::Dead,
                None => Fate::Unseen,
            }
        };
        let fresh_params: Set<&str> = input
            .jit_parameters
            .unwrap_or(&[])
            .iter()
            .filter(|p| p.created_at.is_some_and(|t| now - t <= grace))
            .map(|p| p.instance_id.as_str())
            .collect();

        let mut params = Vec::new();
        if input.mode == Mode::Reconcile {
            let mut seen = Set::default();
            for p in input.jit_parameters.unwrap_or(&[]) {
                // Another pool's parameter is that pool's business; one without a pool tag
                // cannot be attributed, so no pool's reconcile deletes it.
                if p.pool.as_ref() != Some(pool) || !seen.insert(&p.instance_id) {
                    continue;
                }
                let id = p.instance_id.as_str();
                let delete = match fate(id) {
                    Fate::Alive => false,
                    Fate::Dead => true,
                    Fate::Unseen => !fresh_params.contains(id),
                };
                if delete {
                    params.push(p.instance_id.clone());
                }
            }
        }

        let mut runners = Vec::new();
        if input.mode == Mode::Reconcile {
            let mut seen = Set::default();
            for r in input.runners.unwrap_or(&[]) {
                let Some((runner_pool, id)) = split_runner_name(r.name.as_str()) else { continue };
                if runner_pool != pool.as_str() || r.busy || !seen.insert(r.id) {
                    continue;
                }
                let remove = match fate(id) {
                    Fate::Alive => false,
                    // Terminated now, or gone: online or not, the runner can never run a job.
                    Fate::Dead => !r.online || terminating.contains(id),
                    // Not listed: either long gone, or launched seconds ago and not yet visible
                    // (its JIT parameter is then fresh).
                    Fate::Unseen => !r.online && !fresh_params.contains(id),
                };
                if remove {
                    runners.push(RunnerRef { id: r.id, name: r.name.clone() });
                }
            }
        }
        (params, runners)
    }
}

enum Fate {
    Alive,
    Dead,
    Unseen,
}

/// A CreateFleet `ClientToken`: the same jobs give the same token, so a retried call (or a
/// redelivery that runs before the new instances show up in DescribeInstances) cannot launch
/// twice. Warm-pool launches key on the pool's instance set, the count and the minute.
fn launch_key(
    cfg: &PoolConfig,
    reason: LaunchReason,
    jobs: &[JobId],
    warm: Option<(&[Slot<'_>], DateTime<Utc>, u32)>,
) -> String {
    let mut h = Sha256::new();
    h.update(cfg.name.as_str().as_bytes());
    h.update([0]);
    h.update(reason.as_str().as_bytes());
    let mut sorted = jobs.to_vec();
    sorted.sort_unstable();
    for j in sorted {
        h.update(j.0.to_be_bytes());
    }
    if let Some((slots, now, count)) = warm {
        // The instance set, independent of the order DescribeInstances lists it in: a sum of
        // per-id hashes (cheaper than sorting a thousand ids, and stable across builds).
        let (mut sum, mut n) = (0u64, 0u64);
        for s in slots.iter().filter(|s| s.alive()) {
            sum = sum.wrapping_add(words_hash(0, s.inst.id.as_str().as_bytes()));
            n += 1;
        }
        h.update(sum.to_be_bytes());
        h.update(n.to_be_bytes());
        h.update(now.timestamp().div_euclid(60).to_be_bytes());
        h.update(count.to_be_bytes());
    }
    let digest = h.finalize();
    format!("hangar-{}", &hex::encode(digest)[..32])
}

/// Maps keyed by our own instance ids and job ids: SipHash's flooding resistance buys nothing
/// here and was most of a plan's time over a thousand instances.
type Map<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;
type Set<T> = HashSet<T, BuildHasherDefault<WordHasher>>;

#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        // Fold the high half in: hashbrown picks buckets from the low bits.
        self.0 ^ (self.0 >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = words_hash(self.0, bytes);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(23);
    }
}

/// A multiply-rotate hash eight bytes at a time. Stable across builds and platforms (it feeds
/// the warm-pool launch key), fast on 19-byte instance ids.
fn words_hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325 ^ (bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("chunks_exact gives 8 bytes"));
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(last)).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    h ^ (h >> 32)
}

/// `(pool, instance id)` of a runner name Hangar gave, without allocating: the same reading as
/// [`RunnerName::pool`] and [`RunnerName::instance_id`], done once per runner of a long list.
fn split_runner_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("hangar-")?;
    let idx = rest.as_bytes().windows(3).rposition(|w| w == b"-i-")?;
    let id = &rest[idx + 1..];
    let hex = &id[2..];
    if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((&rest[..idx], id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_runner_name_reads_names_as_runner_name_does() {
        let names = [
            "hangar-linux-x64-i-0abc123",
            "hangar-a-i-b-i-0f",
            "hangar-i-i-00",
            "hangar--i-1",
            "hangar-x-i-",
            "hangar-x-i-zz",
            "hangar-",
            "my-laptop",
            "hangar-gpu-i-0123-extra",
            "hangar-linux-i-0abc\u{e9}",
        ];
        for n in names {
            let r = RunnerName::from(n);
            let want = r.instance_id().map(|id| (r.pool().unwrap().0, id.0));
            let got = split_runner_name(n).map(|(p, id)| (p.to_owned(), id.to_owned()));
            assert_eq!(got, want, "{n}");
        }
    }
}
