//! Builders and a tiny pure simulator for planner tests: it applies a plan's actions to the
//! observed state the way the scaler and AWS would, so tests can plan again on the result.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use hangar_core::config::{CapacityType, MarketConfig, PoolConfig, RunnerScope, WarmPoolConfig, WarmWindow};
use hangar_core::ids::{InstanceId, JobId, PoolName, RunId, RunnerId, RunnerName};
use hangar_core::message::{JobCompleted, JobRef, JobStarted, QueueMessage};
use hangar_core::planner::Action;
use hangar_core::ports::{LaunchReason, RegisteredRunner, StoredJit};
use hangar_core::state::{Ec2State, Lifecycle, ObservedInstance};

pub const POOL: &str = "linux";

/// Monday 2026-03-02 10:00 UTC.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
}

pub fn pool(max_runners: u32, warm: u32) -> PoolConfig {
    PoolConfig {
        name: PoolName::from(POOL),
        labels: vec!["self-hosted".into(), "linux".into()],
        priority: 0,
        instance_types: vec!["m7g.large".into()],
        subnets: vec!["subnet-1".into()],
        launch_template: None,
        market: MarketConfig::default(),
        max_runners,
        warm_pool: WarmPoolConfig { size: warm, timezone: "UTC".into(), schedule: vec![] },
        idle_timeout_secs: 600,
        boot_timeout_secs: 300,
        repositories: vec![],
        allow_public_repositories: false,
        runner_scope: RunnerScope::Org,
        max_spot_reruns: 1,
    }
}

pub fn window(days: &[&str], from: &str, to: &str, size: u32) -> WarmWindow {
    WarmWindow { days: days.iter().map(|d| d.to_string()).collect(), from: from.into(), to: to.into(), size }
}

pub fn iid(n: u64) -> InstanceId {
    InstanceId(format!("i-{n:08x}"))
}

pub fn runner_name(n: u64) -> RunnerName {
    RunnerName::for_instance(&PoolName::from(POOL), &iid(n))
}

/// An instance launched `age_secs` before [`t0`].
pub fn inst(n: u64, lifecycle: Lifecycle, age_secs: i64) -> ObservedInstance {
    ObservedInstance {
        id: iid(n),
        pool: PoolName::from(POOL),
        ec2_state: Ec2State::Running,
        lifecycle,
        launched_at: t0() - Duration::seconds(age_secs),
        job_id: None,
        capacity_type: CapacityType::Spot,
        instance_type: "m7g.large".into(),
        interrupted: false,
        replaces: None,
    }
}

pub trait InstExt {
    fn job(self, j: u64) -> Self;
    fn ec2(self, s: Ec2State) -> Self;
    fn interrupted(self) -> Self;
}

impl InstExt for ObservedInstance {
    fn job(mut self, j: u64) -> Self {
        self.job_id = Some(JobId(j));
        self
    }
    fn ec2(mut self, s: Ec2State) -> Self {
        self.ec2_state = s;
        self
    }
    fn interrupted(mut self) -> Self {
        self.interrupted = true;
        self
    }
}

pub fn queued(job: u64) -> QueueMessage {
    QueueMessage::ScaleUp(JobRef {
        pool: PoolName::from(POOL),
        job_id: JobId(job),
        run_id: RunId(job * 10),
        run_attempt: 1,
        repository: "acme/app".into(),
        installation_id: None,
        labels: vec!["self-hosted".into(), "linux".into()],
        created_at: Some(t0()),
        delivery_id: None,
        requeues: 0,
    })
}

pub fn started(job: u64, runner: Option<RunnerName>) -> QueueMessage {
    QueueMessage::JobStarted(JobStarted {
        pool: PoolName::from(POOL),
        job_id: JobId(job),
        run_id: RunId(job * 10),
        run_attempt: 1,
        repository: "acme/app".into(),
        installation_id: None,
        runner_name: runner,
        started_at: Some(t0()),
    })
}

pub fn completed(job: u64, runner: Option<RunnerName>, conclusion: &str, attempt: u32) -> QueueMessage {
    QueueMessage::JobCompleted(JobCompleted {
        pool: PoolName::from(POOL),
        job_id: JobId(job),
        run_id: RunId(job * 10),
        run_attempt: attempt,
        repository: "acme/app".into(),
        installation_id: None,
        runner_name: runner,
        conclusion: Some(conclusion.into()),
        completed_at: Some(t0()),
    })
}

pub fn registered(id: u64, name: RunnerName, online: bool, busy: bool) -> RegisteredRunner {
    RegisteredRunner { id: RunnerId(id), name, online, busy, labels: vec![] }
}

pub fn param(n: u64, pool: Option<&str>, age_secs: Option<i64>) -> StoredJit {
    StoredJit {
        instance_id: iid(n),
        pool: pool.map(PoolName::from),
        created_at: age_secs.map(|a| t0() - Duration::seconds(a)),
    }
}

/// The world a plan acts on. `next_instance` numbers launched instances.
#[derive(Debug, Clone)]
pub struct World {
    pub instances: Vec<ObservedInstance>,
    pub runners: Vec<RegisteredRunner>,
    pub params: Vec<StoredJit>,
    pub next_instance: u64,
    pub reruns: Vec<(JobId, u32)>,
}

impl World {
    pub fn new(instances: Vec<ObservedInstance>) -> Self {
        // Launched instances get ids no test message can refer to in advance, as in EC2.
        let next_instance = 0x1000;
        Self { instances, runners: vec![], params: vec![], next_instance, reruns: vec![] }
    }

    pub fn counted(&self) -> usize {
        self.instances.iter().filter(|i| i.ec2_state.counts_toward_cap()).count()
    }

    fn get(&mut self, id: &InstanceId) -> &mut ObservedInstance {
        self.instances.iter_mut().find(|i| &i.id == id).expect("plan names an observed instance")
    }

    /// Applies every action as AWS and GitHub would if all calls succeed.
    pub fn apply(&mut self, actions: &[Action], now: DateTime<Utc>) {
        for a in actions {
            match a {
                Action::Terminate { ids, .. } => {
                    for id in ids {
                        self.get(id).ec2_state = Ec2State::ShuttingDown;
                    }
                }
                Action::DeleteParameters { ids } => self.params.retain(|p| !ids.contains(&p.instance_id)),
                Action::DeregisterRunners { runners } => {
                    self.runners.retain(|r| !runners.iter().any(|x| x.id == r.id))
                }
                Action::TagBusy { instance, job } => {
                    let i = self.get(instance);
                    i.lifecycle = Lifecycle::Busy;
                    i.job_id = Some(*job);
                }
                Action::Earmark { instance, job, .. } => self.get(instance).job_id = *job,
                Action::RerunJob { job, run_attempt, .. } => self.reruns.push((*job, *run_attempt)),
                Action::Replace { job, dead, .. } => {
                    let n = self.next_instance;
                    self.next_instance += 1;
                    let mut i = inst(n, Lifecycle::Pending, 0);
                    i.launched_at = now;
                    i.job_id = Some(*job);
                    i.replaces = Some(dead.clone());
                    self.params.push(StoredJit {
                        instance_id: i.id.clone(),
                        pool: Some(PoolName::from(POOL)),
                        created_at: Some(now),
                    });
                    self.instances.push(i);
                }
                Action::Launch { count, reason, jobs, .. } => {
                    assert!(*reason != LaunchReason::Job || jobs.len() == *count as usize);
                    for k in 0..*count as usize {
                        let n = self.next_instance;
                        self.next_instance += 1;
                        let mut i = inst(n, Lifecycle::Pending, 0);
                        i.launched_at = now;
                        i.job_id = jobs.get(k).copied();
                        self.params.push(StoredJit {
                            instance_id: i.id.clone(),
                            pool: Some(PoolName::from(POOL)),
                            created_at: Some(now),
                        });
                        self.instances.push(i);
                    }
                }
            }
        }
    }
}
