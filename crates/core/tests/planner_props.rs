//! Property tests of the planner's invariants over random pool states and event sequences. Each
//! plan is applied to the state with the pure simulator in `planner_support`, as the scaler and
//! AWS would, and the result is checked.

mod planner_support;

use chrono::Duration;
use hangar_core::config::PoolConfig;
use hangar_core::ids::{InstanceId, JobId};
use hangar_core::message::QueueMessage;
use hangar_core::planner::{plan, Action, DeadClaim, Mode, Plan, PlanInput, TerminateReason};
use hangar_core::ports::{LaunchReason, RegisteredRunner, StoredJit};
use hangar_core::state::{Ec2State, Lifecycle, ObservedInstance};
use planner_support::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const JOBS: u64 = 8;

/// `PROPTEST_CASES` overrides the default, for a longer search by hand.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn lifecycle() -> impl Strategy<Value = Lifecycle> {
    prop_oneof![
        Just(Lifecycle::Pending),
        Just(Lifecycle::Idle),
        Just(Lifecycle::Busy),
        Just(Lifecycle::Draining)
    ]
}

fn ec2_state() -> impl Strategy<Value = Ec2State> {
    prop_oneof![
        6 => Just(Ec2State::Running),
        2 => Just(Ec2State::Pending),
        1 => Just(Ec2State::Stopping),
        1 => Just(Ec2State::Stopped),
        1 => Just(Ec2State::ShuttingDown),
        1 => Just(Ec2State::Terminated),
    ]
}

fn pool_strategy() -> impl Strategy<Value = PoolConfig> {
    (1u32..=12, 0u32..=5, 0u32..=2).prop_map(|(max, warm, reruns)| {
        let mut p = pool(max, warm.min(max));
        p.max_spot_reruns = reruns;
        p
    })
}

fn instances_strategy() -> impl Strategy<Value = Vec<ObservedInstance>> {
    prop::collection::vec(
        (
            lifecycle(),
            ec2_state(),
            0i64..4000,
            prop::option::weighted(0.5, 1..=JOBS),
            prop::bool::weighted(0.2),
        ),
        0..14,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(k, (lc, st, age, job, intr))| {
                let mut i = inst(k as u64 + 1, lc, age).ec2(st);
                i.job_id = job.map(JobId);
                i.interrupted = intr;
                i
            })
            .collect()
    })
}

/// A runner reference: one of the first 16 instance numbers (some not listed), none, or foreign.
fn runner_ref() -> impl Strategy<Value = Option<hangar_core::ids::RunnerName>> {
    prop_oneof![
        8 => (1u64..=16).prop_map(|n| Some(runner_name(n))),
        1 => Just(None),
        1 => Just(Some("gh-hosted-3".into())),
    ]
}

fn message() -> impl Strategy<Value = QueueMessage> {
    prop_oneof![
        3 => (1..=JOBS).prop_map(queued),
        2 => (1..=JOBS, runner_ref()).prop_map(|(j, r)| started(j, r)),
        2 => (1..=JOBS, runner_ref(), prop_oneof![Just("success"), Just("failure"), Just("cancelled")], 1u32..=3)
            .prop_map(|(j, r, c, a)| completed(j, r, c, a)),
    ]
}

fn runners_strategy() -> impl Strategy<Value = Option<Vec<RegisteredRunner>>> {
    prop::option::of(
        prop::collection::vec((1u64..=20, any::<bool>(), prop::bool::weighted(0.3)), 0..12).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(k, (n, online, busy))| {
                    let name = if n == 20 { "my-laptop".into() } else { runner_name(n) };
                    registered(k as u64 + 1, name, online, busy && online)
                })
                .collect()
        }),
    )
}

fn params_strategy() -> impl Strategy<Value = Option<Vec<StoredJit>>> {
    prop::option::of(
        prop::collection::vec(
            (
                1u64..=20,
                prop::option::of(0i64..1000),
                prop_oneof![8 => Just(Some(POOL)), 1 => Just(Some("gpu")), 1 => Just(None)],
            ),
            0..10,
        )
        .prop_map(|v| v.into_iter().map(|(n, age, pool)| param(n, pool, age)).collect()),
    )
}

#[derive(Debug, Clone)]
struct Scenario {
    pool: PoolConfig,
    world: World,
    messages: Vec<QueueMessage>,
    mode: Mode,
    runners_known: bool,
    params_known: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        pool_strategy(),
        instances_strategy(),
        prop::collection::vec(message(), 0..10),
        prop_oneof![Just(Mode::HandleBatch), Just(Mode::Reconcile)],
        runners_strategy(),
        params_strategy(),
    )
        .prop_map(|(pool, instances, messages, mode, runners, params)| {
            let mut world = World::new(instances);
            let (runners_known, params_known) = (runners.is_some(), params.is_some());
            // Reconcile runs on a schedule, without messages (and ignores any).
            let messages = if mode == Mode::Reconcile { vec![] } else { messages };
            world.runners = runners.unwrap_or_default();
            world.params = params.unwrap_or_default();
            Scenario { pool, world, messages, mode, runners_known, params_known }
        })
}

fn run(s: &Scenario, w: &World) -> Plan {
    plan(&PlanInput {
        mode: s.mode,
        now: t0(),
        pool: &s.pool,
        instances: &w.instances,
        messages: &s.messages,
        runners: s.runners_known.then_some(&w.runners[..]),
        jit_parameters: s.params_known.then_some(&w.params[..]),
        dead_claims: &[],
    })
}

/// Instances a completion in this batch names, by runner name or (without one) by the job on it.
fn named_by_completion(s: &Scenario) -> HashSet<InstanceId> {
    let mut out = HashSet::new();
    for m in &s.messages {
        if let QueueMessage::JobCompleted(c) = m {
            for i in &s.world.instances {
                let by_name = c.runner_name.as_ref() == Some(&i.runner_name());
                // Without a runner name: the instance tagged with the job, or the one this
                // batch says the job started on.
                let started_there = s.messages.iter().any(|m| {
                    matches!(m, QueueMessage::JobStarted(st)
                        if st.job_id == c.job_id && st.runner_name.as_ref() == Some(&i.runner_name()))
                });
                let by_job = c.runner_name.is_none() && (i.job_id == Some(c.job_id) || started_there);
                if by_name || by_job {
                    out.insert(i.id.clone());
                }
            }
        }
    }
    out
}

/// A start or a named completion in the batch puts `job` on `i`.
fn placed_in_batch(s: &Scenario, job: JobId, i: &ObservedInstance) -> bool {
    s.messages.iter().any(|m| match m {
        QueueMessage::JobStarted(st) => st.job_id == job && st.runner_name.as_ref() == Some(&i.runner_name()),
        QueueMessage::JobCompleted(c) => c.job_id == job && c.runner_name.as_ref() == Some(&i.runner_name()),
        _ => false,
    })
}

fn is_busy(s: &Scenario, i: &ObservedInstance) -> bool {
    let runner_busy = s.runners_known && s.world.runners.iter().any(|r| r.busy && r.name == i.runner_name());
    let started_now = s.messages.iter().any(
        |m| matches!(m, QueueMessage::JobStarted(st) if st.runner_name.as_ref() == Some(&i.runner_name())),
    );
    i.lifecycle == Lifecycle::Busy || runner_busy || started_now
}

/// Job ids on more than one live instance cannot happen through Hangar (a job runs once, an
/// earmark is moved, not copied); the idempotency property is stated for consistent states.
fn make_consistent(w: &mut World) {
    let mut seen = HashSet::new();
    for i in w.instances.iter_mut().filter(|i| i.ec2_state.counts_toward_cap()) {
        if let Some(j) = i.job_id {
            if !seen.insert(j) {
                i.job_id = None;
            }
        }
    }
}

fn writes(p: &Plan) -> Vec<&Action> {
    p.actions.iter().filter(|a| !matches!(a, Action::RerunJob { .. })).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn cap_is_never_exceeded_after_applying_a_plan(s in scenario()) {
        let p = run(&s, &s.world);
        let mut after = s.world.clone();
        after.apply(&p.actions, t0());
        let max = s.pool.max_runners as usize;
        // Launching never takes the pool above the cap; a pool already above it (the cap was
        // lowered) only shrinks.
        if s.world.counted() <= max || p.launch_count() > 0 {
            prop_assert!(after.counted() <= max, "{} > {max}: {p:#?}", after.counted());
        }
        prop_assert!(after.counted() <= s.world.counted().max(max));
    }

    #[test]
    fn busy_instances_are_never_terminated(s in scenario()) {
        let p = run(&s, &s.world);
        let completed = named_by_completion(&s);
        for id in p.terminated() {
            let i = s.world.instances.iter().find(|i| &i.id == id).unwrap();
            prop_assert!(i.ec2_state.counts_toward_cap(), "terminating a gone instance {id}");
            prop_assert!(completed.contains(id) || !is_busy(&s, i), "busy {id} terminated: {p:#?}");
        }
        for a in &p.actions {
            if let Action::DeregisterRunners { runners } = a {
                for r in runners {
                    prop_assert!(r.name.instance_id().is_some(), "foreign runner {r:?}");
                    let listed = s.world.runners.iter().find(|x| x.id == r.id).unwrap();
                    prop_assert!(!listed.busy);
                }
            }
        }
    }

    #[test]
    fn planning_again_after_applying_changes_nothing(mut s in scenario()) {
        make_consistent(&mut s.world);
        let first = run(&s, &s.world);
        let mut w = s.world.clone();
        w.apply(&first.actions, t0());
        let second = run(&s, &w);
        prop_assert!(writes(&second).is_empty(), "first: {first:#?}\nsecond: {second:#?}");
        // Jobs the batch queued stay unserved until capacity frees up. A job whose earmarked
        // runner another job took, at the cap, is reported once, with a claim to queue: no tag
        // can remember it.
        let queued: HashSet<JobId> = s.messages.iter().filter(|m| matches!(m, QueueMessage::ScaleUp(_))).map(|m| m.job_id()).collect();
        let displaced: HashSet<JobId> = first.dead_claims.iter().filter(|c| c.displaced).map(|c| c.job).collect();
        let mut first_queued: Vec<_> = first.unserved.iter().filter(|j| queued.contains(j) && !displaced.contains(j)).copied().collect();
        // Whether the same batch again still finds such a job unserved depends on whether a
        // dead instance carries its label; the claim below is what serves it either way.
        let mut second_unserved: Vec<_> = second.unserved.iter().filter(|j| !displaced.contains(j)).copied().collect();
        first_queued.sort();
        second_unserved.sort();
        prop_assert_eq!(first_queued, second_unserved, "first: {:#?}\nsecond: {:#?}", first, second);
        // The queued claim is what serves a displaced job: taken by a later batch (no messages
        // of its own), it launches for the job or waits for capacity; it is never dropped. A
        // claim whose replacement this plan launched already is moot once that is applied.
        let claims: Vec<_> = first.dead_claims.iter().filter(|c| c.displaced).cloned().collect();
        if !claims.is_empty() {
            let later = plan(&PlanInput::batch(&s.pool, &w.instances, &[], t0()).with_dead_claims(&claims));
            let replaces = |p: &Plan, c: &DeadClaim| {
                p.actions.iter().any(|a| matches!(a, Action::Replace { job, dead, .. } if *job == c.job && *dead == c.instance))
            };
            for c in &claims {
                let launched_later = later.actions.iter().any(|a| matches!(a, Action::Replace { job, .. } if *job == c.job));
                if replaces(&first, c) {
                    prop_assert!(!launched_later && !later.unserved.contains(&c.job), "claim {c:?} served twice: first: {first:#?}\nlater: {later:#?}");
                } else {
                    prop_assert!(launched_later || later.unserved.contains(&c.job), "claim {c:?} dropped: first: {first:#?}\nlater: {later:#?}");
                }
            }
        }
    }

    #[test]
    fn a_batch_launches_at_most_once_per_job_and_only_for_queued_ones(s in scenario()) {
        let p = run(&s, &s.world);
        let mut launched = HashSet::new();
        let queued: HashSet<JobId> = s.messages.iter().filter(|m| matches!(m, QueueMessage::ScaleUp(_))).map(|m| m.job_id()).collect();
        let displaced: HashSet<JobId> = s.world.instances.iter().filter_map(|i| i.job_id).collect();
        for a in &p.actions {
            if let Action::Launch { reason: LaunchReason::Job, jobs, count, .. } = a {
                prop_assert_eq!(jobs.len(), *count as usize);
                for j in jobs {
                    prop_assert!(launched.insert(*j), "two launches for {j}");
                    // A launch is for a queued job, or for one whose earmark a started job took.
                    prop_assert!(queued.contains(j) || displaced.contains(j));
                }
            }
            // A displaced job gets its instance as a replacement (no dead claims are input here).
            if let Action::Replace { job, .. } = a {
                prop_assert!(launched.insert(*job), "two launches for {job}");
                prop_assert!(displaced.contains(job), "replacement for {job}, which lost no earmark");
            }
        }
    }

    #[test]
    fn reruns_only_follow_a_killed_interrupted_runner_and_respect_the_bound(s in scenario()) {
        let p = run(&s, &s.world);
        let mut seen = HashSet::new();
        for a in &p.actions {
            if let Action::RerunJob { job, run_attempt, .. } = a {
                prop_assert!(seen.insert((*job, *run_attempt)));
                prop_assert!(*run_attempt >= 1 && *run_attempt <= s.pool.max_spot_reruns);
                let justified = s.messages.iter().any(|m| match m {
                    QueueMessage::JobCompleted(c) => {
                        c.job_id == *job
                            && c.run_attempt == *run_attempt
                            && matches!(c.conclusion.as_deref(), Some("failure" | "cancelled"))
                            && s.world.instances.iter().any(|i| i.interrupted
                                && (c.runner_name.as_ref() == Some(&i.runner_name())
                                    || (c.runner_name.is_none() && (i.job_id == Some(*job) || placed_in_batch(&s, *job, i)))))
                    }
                    _ => false,
                });
                prop_assert!(justified, "{a:?}");
            }
        }
    }
}

/// One step of a simulated workload: GitHub's side (jobs queued, started on a runner of its
/// choosing, finished) feeds messages to the scaler, which plans and applies; reconcile runs in
/// between; time moves on.
#[derive(Debug, Clone)]
enum Step {
    /// Queue a new job, or (when `redeliver`) send an old job's ScaleUp again.
    Queue {
        redeliver: bool,
        pick: usize,
    },
    /// GitHub gives a queued job to a live idle/pending runner.
    Start {
        job: usize,
        runner: usize,
    },
    /// A busy runner's job finishes.
    Complete {
        runner: usize,
        failed: bool,
    },
    /// Deliver the accumulated messages as one batch (twice when `duplicate`).
    Deliver {
        duplicate: bool,
    },
    Reconcile,
    Wait {
        secs: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (prop::bool::weighted(0.3), any::<usize>()).prop_map(|(redeliver, pick)| Step::Queue { redeliver, pick }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(job, runner)| Step::Start { job, runner }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(runner, failed)| Step::Complete { runner, failed }),
        3 => any::<bool>().prop_map(|duplicate| Step::Deliver { duplicate }),
        1 => Just(Step::Reconcile),
        1 => (0i64..400).prop_map(|secs| Step::Wait { secs }),
    ]
}

struct Sim {
    pool: PoolConfig,
    world: World,
    now: chrono::DateTime<chrono::Utc>,
    next_job: u64,
    queued_ever: Vec<u64>,
    waiting: Vec<u64>,
    started: HashSet<u64>,
    outbox: Vec<QueueMessage>,
    job_launches: HashMap<JobId, u32>,
    /// Instances with a job id that were terminated without running it.
    wasted: u32,
}

impl Sim {
    fn plan_and_apply(&mut self, messages: &[QueueMessage], mode: Mode) -> Result<(), TestCaseError> {
        let p = plan(&PlanInput {
            mode,
            now: self.now,
            pool: &self.pool,
            instances: &self.world.instances,
            messages,
            runners: (mode == Mode::Reconcile).then_some(&self.world.runners[..]),
            jit_parameters: (mode == Mode::Reconcile).then_some(&self.world.params[..]),
            dead_claims: &[],
        });
        let before = self.world.clone();
        for a in &p.actions {
            match a {
                Action::Launch { reason: LaunchReason::Job, jobs, .. } => {
                    for j in jobs {
                        *self.job_launches.entry(*j).or_default() += 1;
                    }
                }
                Action::Terminate { ids, reason } => {
                    for id in ids {
                        let i = before.instances.iter().find(|i| &i.id == id).unwrap();
                        prop_assert!(
                            *reason == TerminateReason::JobCompleted || i.lifecycle != Lifecycle::Busy,
                            "busy {id} terminated for {reason:?}"
                        );
                        if i.lifecycle != Lifecycle::Busy && i.job_id.is_some() {
                            self.wasted += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        self.world.apply(&p.actions, self.now);
        prop_assert!(self.world.counted() <= self.pool.max_runners as usize, "cap exceeded: {p:#?}");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// Redelivered and duplicated ScaleUps (and reconciles between them) never launch twice for
    /// one job, from any starting state.
    #[test]
    fn duplicate_scale_ups_across_batches_launch_once(
        pool in pool_strategy(),
        instances in instances_strategy(),
        batches in prop::collection::vec((prop::collection::vec(1..=JOBS, 0..6), any::<bool>(), 0i64..400), 1..8),
    ) {
        let mut w = World::new(instances);
        make_consistent(&mut w);
        let mut launches: HashMap<JobId, u32> = HashMap::new();
        let mut now = t0();
        for (jobs, reconcile_after, wait) in batches {
            let msgs: Vec<_> = jobs.iter().map(|j| queued(*j)).collect();
            for mode in [Some(Mode::HandleBatch), reconcile_after.then_some(Mode::Reconcile)].into_iter().flatten() {
                let msgs = if mode == Mode::HandleBatch { &msgs[..] } else { &[] };
                let p = plan(&PlanInput {
                    mode, now, pool: &pool, instances: &w.instances, messages: msgs,
                    runners: Some(&w.runners), jit_parameters: Some(&w.params), dead_claims: &[],
                });
                for a in &p.actions {
                    if let Action::Launch { reason: LaunchReason::Job, jobs, .. } = a {
                        for j in jobs {
                            let n = launches.entry(*j).or_default();
                            *n += 1;
                            prop_assert_eq!(*n, 1, "second launch for {}", j);
                        }
                    }
                }
                w.apply(&p.actions, now);
            }
            now += Duration::seconds(wait);
        }
    }

    /// A workload of queued, started and finished jobs with duplicate deliveries and reconciles:
    /// the cap holds at every step, busy runners are never terminated, and job launches never
    /// exceed the jobs queued plus the earmarked instances that died unused.
    #[test]
    fn workload_keeps_cap_and_launches_about_one_instance_per_job(
        pool in pool_strategy(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let mut sim = Sim {
            pool, world: World::new(vec![]), now: t0(), next_job: 1, queued_ever: vec![], waiting: vec![],
            started: HashSet::new(), outbox: vec![], job_launches: HashMap::new(), wasted: 0,
        };
        for st in steps {
            match st {
                Step::Queue { redeliver, pick } => {
                    if redeliver && !sim.queued_ever.is_empty() {
                        let j = sim.queued_ever[pick % sim.queued_ever.len()];
                        sim.outbox.push(queued(j));
                    } else {
                        let j = sim.next_job;
                        sim.next_job += 1;
                        sim.queued_ever.push(j);
                        sim.waiting.push(j);
                        sim.outbox.push(queued(j));
                    }
                }
                Step::Start { job, runner } => {
                    let free: Vec<&ObservedInstance> = sim.world.instances.iter()
                        .filter(|i| matches!(i.ec2_state, Ec2State::Running | Ec2State::Pending)
                            && matches!(i.lifecycle, Lifecycle::Idle | Lifecycle::Pending)
                            && !sim.outbox.iter().any(|m| matches!(m, QueueMessage::JobStarted(s) if s.runner_name.as_ref() == Some(&i.runner_name()))))
                        .collect();
                    // Only jobs whose ScaleUp is already on its way can start.
                    if !free.is_empty() && !sim.waiting.is_empty() {
                        let j = sim.waiting.remove(job % sim.waiting.len());
                        let r = free[runner % free.len()].runner_name();
                        sim.started.insert(j);
                        sim.outbox.push(started(j, Some(r)));
                    }
                }
                Step::Complete { runner, failed } => {
                    let busy: Vec<&ObservedInstance> = sim.world.instances.iter()
                        .filter(|i| i.ec2_state.counts_toward_cap() && i.lifecycle == Lifecycle::Busy)
                        .collect();
                    if !busy.is_empty() {
                        let i = busy[runner % busy.len()];
                        let j = i.job_id.unwrap();
                        sim.outbox.push(completed(j.0, Some(i.runner_name()), if failed { "failure" } else { "success" }, 1));
                    }
                }
                Step::Deliver { duplicate } => {
                    let batch = std::mem::take(&mut sim.outbox);
                    sim.plan_and_apply(&batch, Mode::HandleBatch)?;
                    if duplicate {
                        sim.plan_and_apply(&batch, Mode::HandleBatch)?;
                    }
                }
                Step::Reconcile => sim.plan_and_apply(&[], Mode::Reconcile)?,
                Step::Wait { secs } => sim.now += Duration::seconds(secs),
            }
        }
        let launches: u32 = sim.job_launches.values().sum();
        prop_assert!(
            launches as usize <= sim.queued_ever.len() + sim.wasted as usize,
            "{launches} job launches for {} jobs ({} wasted)", sim.queued_ever.len(), sim.wasted
        );
    }
}
