//! Liveness: no queued job is left without a runner. Instances die holding earmarks (the boot
//! agent found no JIT config, a runner finished someone else's job and went away before its
//! webhooks were handled), GitHub hands any queued job to any idle runner, state-change reports
//! get lost, and messages arrive in FIFO order. Once every message is handled and reconcile has
//! run, each job still queued at GitHub has a live instance set aside for it, and no dead
//! instance was replaced twice.
//!
//! Tags cannot tell an instance that never ran a job from one whose runner ran its own job and
//! went away before its start was handled (EC2 does not tag terminated instances). GitHub can:
//! it removes an ephemeral runner once it has run a job. So only an instance whose runner is
//! still registered and idle is replaced, and the simulation keeps GitHub's runner list.

mod planner_support;

use chrono::Duration;
use hangar_core::config::PoolConfig;
use hangar_core::ids::JobId;
use hangar_core::message::QueueMessage;
use hangar_core::planner::{plan, Action, DeadClaim, Mode, PlanInput};
use hangar_core::state::{Ec2State, Lifecycle};
use planner_support::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone)]
enum Step {
    /// A new job is queued at GitHub; its webhook puts a ScaleUp on the queue.
    Queue,
    /// GitHub gives a queued job to a live runner that is not running one.
    Start {
        job: usize,
        runner: usize,
    },
    /// A busy runner finishes and terminates itself (ephemeral).
    Complete {
        runner: usize,
    },
    /// A live instance not known to be busy dies. If its runner had taken a job, it finished
    /// that job first. `report`: the state-change event reaches the scaler.
    Die {
        pick: usize,
        report: bool,
    },
    /// The queue delivers everything sent so far as one batch.
    Deliver,
    Reconcile,
    Wait {
        secs: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Queue),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(job, runner)| Step::Start { job, runner }),
        2 => any::<usize>().prop_map(|runner| Step::Complete { runner }),
        2 => (any::<usize>(), prop::bool::weighted(0.7)).prop_map(|(pick, report)| Step::Die { pick, report }),
        3 => Just(Step::Deliver),
        1 => Just(Step::Reconcile),
        1 => (0i64..30).prop_map(|secs| Step::Wait { secs }),
    ]
}

#[derive(Debug, Clone)]
enum Msg {
    Queue(QueueMessage),
    Dead(DeadClaim),
}

struct Sim {
    pool: PoolConfig,
    world: World,
    now: chrono::DateTime<chrono::Utc>,
    next_job: u64,
    /// Queued at GitHub, not started.
    waiting: Vec<u64>,
    /// Runner name -> the job GitHub gave it (started, not finished).
    running: HashMap<String, u64>,
    outbox: Vec<Msg>,
    replaced: HashMap<String, u32>,
    deaths: u32,
    /// Runners that finished a job and died before their start message was handled: the start
    /// hands the dead instance's earmark on, and an heir with no live claim left is launched for.
    early_exits: u32,
    job_launches: u32,
}

impl Sim {
    fn new() -> Self {
        // Room for every job, and timeouts longer than any run: this checks the claims, not
        // the cap or the timers.
        let mut pool = pool(500, 0);
        pool.boot_timeout_secs = 100_000;
        pool.idle_timeout_secs = 100_000;
        Sim {
            pool,
            world: World::new(vec![]),
            now: t0(),
            next_job: 1,
            waiting: vec![],
            running: HashMap::new(),
            outbox: vec![],
            replaced: HashMap::new(),
            deaths: 0,
            early_exits: 0,
            job_launches: 0,
        }
    }

    fn run(&mut self, mode: Mode) -> Result<(), TestCaseError> {
        let batch = if mode == Mode::HandleBatch { std::mem::take(&mut self.outbox) } else { vec![] };
        let messages: Vec<QueueMessage> =
            batch.iter().filter_map(|m| if let Msg::Queue(q) = m { Some(q.clone()) } else { None }).collect();
        let dead: Vec<DeadClaim> =
            batch.iter().filter_map(|m| if let Msg::Dead(d) = m { Some(d.clone()) } else { None }).collect();
        let input = match mode {
            Mode::HandleBatch => PlanInput::batch(&self.pool, &self.world.instances, &messages, self.now)
                .with_dead_claims(&dead),
            Mode::Reconcile => PlanInput::reconcile(
                &self.pool,
                &self.world.instances,
                Some(&self.world.runners),
                Some(&[]),
                self.now,
            ),
        };
        let p = plan(&input);
        if std::env::var_os("HANGAR_TRACE_SIM").is_some() {
            eprintln!(
                "== {mode:?} msgs={messages:?} dead={dead:?}\n   actions={:?}\n   dead_out={:?}",
                p.actions, p.dead_claims
            );
        }
        prop_assert!(p.unserved.is_empty(), "the pool never fills here: {p:#?}");
        for a in &p.actions {
            match a {
                Action::Replace { dead, .. } => {
                    let n = self.replaced.entry(dead.to_string()).or_default();
                    *n += 1;
                    prop_assert_eq!(*n, 1, "{} replaced twice", dead);
                    self.job_launches += 1;
                }
                Action::Launch { jobs, .. } => self.job_launches += jobs.len() as u32,
                _ => {}
            }
        }
        let before = self.world.instances.len();
        self.world.apply(&p.actions, self.now);
        // Each new instance's JIT config registered its runner.
        for k in before..self.world.instances.len() {
            let name = self.world.instances[k].runner_name();
            self.world.runners.push(registered(1_000 + k as u64, name, false, false));
        }
        self.outbox.extend(p.dead_claims.into_iter().map(Msg::Dead));
        Ok(())
    }

    fn free_runners(&self) -> Vec<usize> {
        (0..self.world.instances.len())
            .filter(|&k| {
                let i = &self.world.instances[k];
                i.ec2_state.counts_toward_cap()
                    && matches!(i.lifecycle, Lifecycle::Idle | Lifecycle::Pending)
                    && !self.running.contains_key(i.runner_name().as_str())
            })
            .collect()
    }

    /// The instance goes. A runner that ran a job is removed by GitHub; one that never did stays
    /// registered until the scaler deregisters it.
    fn finish(&mut self, k: usize) {
        let name = self.world.instances[k].runner_name();
        if let Some(j) = self.running.remove(name.as_str()) {
            self.world.runners.retain(|r| r.name != name);
            let unhandled = self.outbox.iter().any(
                |m| matches!(m, Msg::Queue(QueueMessage::JobStarted(s)) if s.runner_name.as_ref() == Some(&name)),
            );
            self.early_exits += u32::from(unhandled);
            self.outbox.push(Msg::Queue(completed(j, Some(name), "success", 1)));
        }
        self.world.instances[k].ec2_state = Ec2State::Terminated;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn every_queued_job_keeps_a_live_claim_when_instances_die(steps in prop::collection::vec(step(), 1..80)) {
        check(steps)?;
    }
}

fn check(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut sim = Sim::new();
    for st in steps {
        match st {
            Step::Queue => {
                let j = sim.next_job;
                sim.next_job += 1;
                sim.waiting.push(j);
                sim.outbox.push(Msg::Queue(queued(j)));
            }
            Step::Start { job, runner } => {
                let free = sim.free_runners();
                if !free.is_empty() && !sim.waiting.is_empty() {
                    let j = sim.waiting.remove(job % sim.waiting.len());
                    let name = sim.world.instances[free[runner % free.len()]].runner_name();
                    for r in sim.world.runners.iter_mut().filter(|r| r.name == name) {
                        r.busy = true;
                    }
                    sim.running.insert(name.to_string(), j);
                    sim.outbox.push(Msg::Queue(started(j, Some(name))));
                }
            }
            Step::Complete { runner } => {
                let busy: Vec<usize> = (0..sim.world.instances.len())
                    .filter(|&k| {
                        let i = &sim.world.instances[k];
                        i.ec2_state.counts_toward_cap() && sim.running.contains_key(i.runner_name().as_str())
                    })
                    .collect();
                if !busy.is_empty() {
                    sim.finish(busy[runner % busy.len()]);
                }
            }
            Step::Die { pick, report } => {
                let alive: Vec<usize> = (0..sim.world.instances.len())
                    .filter(|&k| {
                        let i = &sim.world.instances[k];
                        i.ec2_state.counts_toward_cap() && i.lifecycle != Lifecycle::Busy
                    })
                    .collect();
                if !alive.is_empty() {
                    let k = alive[pick % alive.len()];
                    sim.finish(k);
                    sim.deaths += 1;
                    // The state-change handler: a runner still registered and idle never ran a
                    // job, so an earmark on the instance asks for a replacement; the runner is
                    // deregistered either way.
                    let i = sim.world.instances[k].clone();
                    let idle_runner = sim.world.runners.iter().any(|r| r.name == i.runner_name() && !r.busy);
                    if report {
                        if let (true, Some(job)) = (idle_runner, i.died_holding_earmark()) {
                            sim.outbox.push(Msg::Dead(DeadClaim {
                                job,
                                instance: i.id.clone(),
                                displaced: false,
                            }));
                        }
                        sim.world.runners.retain(|r| r.name != i.runner_name());
                    }
                }
            }
            Step::Deliver => sim.run(Mode::HandleBatch)?,
            Step::Reconcile => sim.run(Mode::Reconcile)?,
            Step::Wait { secs } => sim.now += Duration::seconds(secs),
        }
    }
    // Quiesce: handle everything, let reconcile look, handle what it sent.
    for _ in 0..3 {
        sim.run(Mode::HandleBatch)?;
        sim.run(Mode::Reconcile)?;
    }
    sim.run(Mode::HandleBatch)?;
    prop_assert!(sim.outbox.is_empty(), "reconcile keeps finding dead claims: {:?}", sim.outbox);
    for j in &sim.waiting {
        let holders = sim.world.instances.iter().filter(|i| {
            i.ec2_state.counts_toward_cap()
                && i.job_id == Some(JobId(*j))
                && !sim.running.contains_key(i.runner_name().as_str())
        });
        prop_assert_eq!(
            holders.count(),
            1,
            "job {} has no live instance set aside: {:#?}",
            j,
            sim.world.instances
        );
    }
    let queued_total = sim.next_job - 1;
    let bound = queued_total + sim.deaths as u64 + sim.early_exits as u64;
    prop_assert!(
        sim.job_launches as u64 <= bound,
        "{} job launches for {} jobs, {} deaths, {} early exits",
        sim.job_launches,
        queued_total,
        sim.deaths,
        sim.early_exits
    );
    Ok(())
}
