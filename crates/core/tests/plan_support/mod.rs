//! A small pure world for the counting planner: two pools whose labels overlap, a job ledger
//! kept by the core's own rules, EC2 with a lagging `DescribeInstances`, and GitHub, which gives
//! a queued job to *any* online idle runner whose labels fit. Every plan is carried out the way
//! the scaler would, and checked as it is made: the cap holds, a launch never exceeds the
//! shortfall, and planning again on the result changes nothing.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use hangar_core::config::{CapacityType, MarketConfig, PoolConfig, RunnerScope, WarmPoolConfig};
use hangar_core::ids::{InstanceId, JobId, PoolName, RunId, RunnerId, RunnerName};
use hangar_core::ledger::{transition, Applied, JobChange, JobEvent, JobKey, JobStatus, LedgerJob};
use hangar_core::plan::{foreign_starts, plan_pool, Mode, PoolPlan, PoolView, RecordedLaunch};
use hangar_core::ports::{RegisteredRunner, StoredJit};
use hangar_core::state::{Ec2State, Lifecycle, ObservedInstance};
use std::collections::BTreeMap;

pub const LAG_SECS: i64 = 2;

/// Monday 2026-03-02 10:00 UTC.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
}

pub fn pool(name: &str, labels: &[&str], max_runners: u32, warm: u32) -> PoolConfig {
    PoolConfig {
        name: PoolName::from(name),
        labels: labels.iter().map(|l| l.to_string()).collect(),
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GhStatus {
    Queued,
    Running(InstanceId),
    Done(&'static str),
}

#[derive(Debug, Clone)]
pub struct GhJob {
    pub pool: usize,
    pub labels: Vec<String>,
    pub status: GhStatus,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub inst: ObservedInstance,
    pub visible_at: DateTime<Utc>,
    pub registered: bool,
}

#[derive(Debug, Clone)]
pub struct Sim {
    pub now: DateTime<Utc>,
    pub pools: Vec<PoolConfig>,
    pub ledger: BTreeMap<JobKey, LedgerJob>,
    pub machines: Vec<Machine>,
    pub recorded: Vec<(usize, RecordedLaunch)>,
    pub configs: Vec<StoredJit>,
    pub runners: Vec<RegisteredRunner>,
    pub gh: BTreeMap<JobKey, GhJob>,
    /// Webhook events not yet handled by a batch, with the pool they are routed to.
    pub inbox: Vec<(usize, JobEvent)>,
    pub launches: Vec<u32>,
    pub plans: u64,
    next: u64,
    /// When set, every launched instance gets no JIT config and is terminated at once.
    pub jit_outage: bool,
}

impl Sim {
    /// Pool 0 `linux` (`self-hosted, linux`) and pool 1 `arm` (`self-hosted, linux, arm64`):
    /// a `linux` job can run on an `arm` runner, never the other way.
    pub fn two_pools(cap_a: u32, cap_b: u32, warm_b: u32) -> Self {
        Self {
            now: t0(),
            pools: vec![
                pool("linux", &["self-hosted", "linux"], cap_a, 0),
                pool("arm", &["self-hosted", "linux", "arm64"], cap_b, warm_b),
            ],
            ledger: BTreeMap::new(),
            machines: vec![],
            recorded: vec![],
            configs: vec![],
            runners: vec![],
            gh: BTreeMap::new(),
            inbox: vec![],
            launches: vec![0, 0],
            plans: 0,
            next: 0x1000,
            jit_outage: false,
        }
    }

    pub fn tick(&mut self, secs: i64) {
        self.now += Duration::seconds(secs);
    }

    fn event(&self, key: JobKey, pool: usize, change: JobChange) -> JobEvent {
        JobEvent {
            key,
            pool: self.pools[pool].name.clone(),
            run_id: RunId(key.job_id.0 * 10),
            repository: "acme/app".into(),
            installation_id: None,
            change,
        }
    }

    /// GitHub queues a job for `pool`; its `queued` webhook goes to the inbox (`copies` times).
    pub fn arrive(&mut self, pool: usize, copies: usize) -> JobKey {
        self.next += 1;
        let key = JobKey::new(JobId(self.next), 1);
        self.queue_attempt(key, pool, copies);
        key
    }

    fn queue_attempt(&mut self, key: JobKey, pool: usize, copies: usize) {
        let labels: Vec<String> = self.pools[pool].labels.clone();
        self.gh.insert(key, GhJob { pool, labels: labels.clone(), status: GhStatus::Queued });
        let e = self.event(key, pool, JobChange::Queued { created_at: self.now, labels });
        for _ in 0..copies.max(1) {
            self.inbox.push((pool, e.clone()));
        }
    }

    /// The `queued` webhook of a job GitHub knows, sent again now.
    pub fn inbox_event_queued(&self, key: JobKey) -> JobEvent {
        let g = &self.gh[&key];
        self.event(key, g.pool, JobChange::Queued { created_at: self.now, labels: g.labels.clone() })
    }

    fn instance_pool(&self, id: &InstanceId) -> Option<usize> {
        let m = self.machines.iter().find(|m| &m.inst.id == id)?;
        self.pools.iter().position(|p| p.name == m.inst.pool)
    }

    fn machine(&mut self, id: &InstanceId) -> Option<&mut Machine> {
        self.machines.iter_mut().find(|m| &m.inst.id == id)
    }

    /// A batch handles the inbox's `k`-th event.
    pub fn deliver(&mut self, k: usize) {
        if self.inbox.is_empty() {
            return;
        }
        let (pool, e) = self.inbox.remove(k % self.inbox.len());
        let (started, finished) = self.record(&e);
        self.batch(pool, &started, &finished);
    }

    /// Applies one event to the ledger by the core's rules; returns the batch's starts and ends.
    fn record(&mut self, e: &JobEvent) -> (Vec<LedgerJob>, Vec<LedgerJob>) {
        let applied = transition(self.ledger.get(&e.key), e, self.now);
        let (mut started, mut finished) = (vec![], vec![]);
        if let Applied::Recorded { job, .. } = applied {
            match job.status {
                JobStatus::Started => started.push((*job).clone()),
                JobStatus::Done => finished.push((*job).clone()),
                JobStatus::Queued => {}
            }
            self.ledger.insert(job.key, *job);
        }
        (started, finished)
    }

    fn queued(&self, pool: usize) -> Vec<LedgerJob> {
        let mut q: Vec<_> = self
            .ledger
            .values()
            .filter(|j| j.pool == self.pools[pool].name && j.status == JobStatus::Queued)
            .cloned()
            .collect();
        hangar_core::ledger::sort_oldest_first(&mut q);
        q
    }

    /// What `DescribeInstances` lists for the pool now (it lags launches by [`LAG_SECS`]).
    fn described(&self, pool: usize) -> Vec<ObservedInstance> {
        self.machines
            .iter()
            .filter(|m| m.inst.pool == self.pools[pool].name && m.visible_at <= self.now)
            .map(|m| m.inst.clone())
            .collect()
    }

    fn recorded_for(&self, pool: usize) -> Vec<RecordedLaunch> {
        self.recorded.iter().filter(|(p, _)| *p == pool).map(|(_, l)| l.clone()).collect()
    }

    pub fn batch(&mut self, pool: usize, started: &[LedgerJob], finished: &[LedgerJob]) {
        let plan = self.plan(pool, Mode::Batch, started, finished);
        self.carry_out(pool, &plan);
        // The scaler tags another pool's runner busy and ticks that pool.
        let cfg = self.pools[pool].clone();
        let view_queued = self.queued(pool);
        let instances = self.described(pool);
        let mut view = PoolView::batch(&cfg, self.now, &view_queued, &instances);
        view.started = started;
        for (other, id) in foreign_starts(&view) {
            let Some(p) = self.pools.iter().position(|c| c.name == other) else { continue };
            if let Some(m) = self.machine(&id) {
                if m.inst.ec2_state.counts_toward_cap() {
                    m.inst.lifecycle = Lifecycle::Busy;
                }
            }
            let plan = self.plan(p, Mode::Batch, &[], &[]);
            self.carry_out(p, &plan);
        }
    }

    pub fn plan(
        &mut self,
        pool: usize,
        mode: Mode,
        started: &[LedgerJob],
        finished: &[LedgerJob],
    ) -> PoolPlan {
        let cfg = self.pools[pool].clone();
        let queued = self.queued(pool);
        let instances = self.described(pool);
        let recorded = self.recorded_for(pool);
        let runners = self.runners.clone();
        let configs = self.configs.clone();
        let mut view = match mode {
            Mode::Batch => PoolView::batch(&cfg, self.now, &queued, &instances),
            Mode::Reconcile => PoolView::reconcile(&cfg, self.now, &queued, &instances, &runners, &configs),
        };
        view.recorded_launches = &recorded;
        view.started = started;
        view.finished = finished;
        let plan = plan_pool(&view);
        self.plans += 1;
        let c = plan.counts;
        assert!(
            plan.launch_count() <= c.need.saturating_sub(c.free()),
            "a launch exceeds the shortfall: {c:?} launch {}",
            plan.launch_count()
        );
        plan
    }

    /// Carries a plan out as the scaler, EC2 and GitHub would, then checks the cap and that
    /// planning again changes nothing.
    pub fn carry_out(&mut self, pool: usize, plan: &PoolPlan) {
        for (id, _) in &plan.terminate {
            let running = self.gh.values().any(|j| j.status == GhStatus::Running(id.clone()));
            assert!(!running, "terminated a runner that is running a job: {id}");
            if let Some(m) = self.machine(id) {
                m.inst.ec2_state = Ec2State::Terminated;
            }
            self.runners
                .iter_mut()
                .filter(|r| r.name.instance_id().as_ref() == Some(id))
                .for_each(|r| r.online = false);
        }
        for id in &plan.tag_busy {
            if let Some(m) = self.machine(id) {
                m.inst.lifecycle = Lifecycle::Busy;
            }
        }
        self.configs.retain(|c| !plan.delete_configs.contains(&c.instance_id));
        self.runners.retain(|r| !plan.deregister.iter().any(|d| d.id == r.id));
        for r in &plan.reruns {
            let key = JobKey::new(r.job, r.run_attempt + 1);
            if !self.gh.contains_key(&key) {
                self.queue_attempt(key, pool, 1);
            }
        }
        if let Some(l) = &plan.launch {
            self.launches[pool] += l.count;
            for _ in 0..l.count {
                self.next += 1;
                let id = InstanceId(format!("i-{:08x}", self.next));
                let mut inst = ObservedInstance {
                    id: id.clone(),
                    pool: self.pools[pool].name.clone(),
                    ec2_state: Ec2State::Running,
                    lifecycle: Lifecycle::Pending,
                    launched_at: self.now,
                    job_id: None,
                    capacity_type: CapacityType::Spot,
                    instance_type: "m7g.large".into(),
                    interrupted: false,
                };
                if self.jit_outage {
                    // The provisioning worker gave up on its config and terminated it at once.
                    inst.ec2_state = Ec2State::Terminated;
                } else {
                    self.configs.push(StoredJit {
                        instance_id: id.clone(),
                        pool: Some(self.pools[pool].name.clone()),
                        created_at: Some(self.now),
                    });
                }
                self.recorded.push((pool, RecordedLaunch { id: id.clone(), launched_at: self.now }));
                self.machines.push(Machine {
                    inst,
                    visible_at: self.now + Duration::seconds(LAG_SECS),
                    registered: false,
                });
            }
        }
        self.check_cap();
        let again = self.plan(pool, Mode::Batch, &[], &[]);
        assert!(
            again.launch.is_none() && again.terminate.is_empty() && again.tag_busy.is_empty(),
            "planning again changed something: {again:?}"
        );
    }

    pub fn check_cap(&self) {
        for p in &self.pools {
            let live = self
                .machines
                .iter()
                .filter(|m| m.inst.pool == p.name && m.inst.ec2_state.counts_toward_cap())
                .count();
            assert!(
                live as u32 <= p.max_runners,
                "pool {} has {live} instances, cap {}",
                p.name,
                p.max_runners
            );
        }
    }

    /// A pending instance with its config boots, registers, and (sometimes) tags itself idle.
    pub fn boot(&mut self, k: usize, tag_idle: bool) {
        let ready: Vec<usize> = (0..self.machines.len())
            .filter(|&i| {
                let m = &self.machines[i];
                !m.registered
                    && m.inst.ec2_state == Ec2State::Running
                    && self.configs.iter().any(|c| c.instance_id == m.inst.id)
            })
            .collect();
        if ready.is_empty() {
            return;
        }
        let i = ready[k % ready.len()];
        let id = self.machines[i].inst.id.clone();
        // The boot agent reads and deletes its config, then registers.
        self.configs.retain(|c| c.instance_id != id);
        let m = &mut self.machines[i];
        m.registered = true;
        if tag_idle {
            m.inst.lifecycle = Lifecycle::Idle;
        }
        let name = RunnerName::for_instance(&m.inst.pool, &m.inst.id);
        self.next += 1;
        self.runners.push(RegisteredRunner {
            id: RunnerId(self.next),
            name,
            online: true,
            busy: false,
            labels: vec![],
        });
    }

    fn pool_labels_of(&self, id: &InstanceId) -> Vec<String> {
        self.instance_pool(id).map(|p| self.pools[p].labels.clone()).unwrap_or_default()
    }

    /// GitHub gives a queued job to an online idle runner whose labels fit (any pool). The
    /// `in_progress` webhook is lost when `lose` is set.
    pub fn assign(&mut self, k: usize, lose: bool) {
        let queued: Vec<JobKey> =
            self.gh.iter().filter(|(_, j)| j.status == GhStatus::Queued).map(|(k, _)| *k).collect();
        if queued.is_empty() {
            return;
        }
        let key = queued[k % queued.len()];
        let labels = self.gh[&key].labels.clone();
        let fits: Vec<usize> = (0..self.runners.len())
            .filter(|&r| {
                let run = &self.runners[r];
                let Some(id) = run.name.instance_id() else { return false };
                let alive =
                    self.machines.iter().any(|m| m.inst.id == id && m.inst.ec2_state == Ec2State::Running);
                let pl = self.pool_labels_of(&id);
                run.online && !run.busy && alive && labels.iter().all(|l| pl.contains(l))
            })
            .collect();
        if fits.is_empty() {
            return;
        }
        let r = fits[(k / queued.len().max(1)) % fits.len()];
        self.runners[r].busy = true;
        let name = self.runners[r].name.clone();
        let id = name.instance_id().expect("ours");
        let pool = self.gh[&key].pool;
        self.gh.get_mut(&key).unwrap().status = GhStatus::Running(id);
        if !lose {
            let e = self.event(
                key,
                pool,
                JobChange::Started { runner_name: Some(name), started_at: Some(self.now) },
            );
            self.inbox.push((pool, e));
        }
    }

    fn end(&mut self, key: JobKey, conclusion: &'static str, runner: Option<RunnerName>) {
        let pool = self.gh[&key].pool;
        self.gh.get_mut(&key).unwrap().status = GhStatus::Done(conclusion);
        let e = self.event(
            key,
            pool,
            JobChange::Completed {
                runner_name: runner,
                conclusion: Some(conclusion.into()),
                completed_at: Some(self.now),
            },
        );
        self.inbox.push((pool, e));
    }

    /// A running job ends; its ephemeral runner deregisters and its instance terminates itself.
    pub fn finish(&mut self, k: usize) {
        let running: Vec<(JobKey, InstanceId)> = self
            .gh
            .iter()
            .filter_map(|(k, j)| match &j.status {
                GhStatus::Running(id) => Some((*k, id.clone())),
                _ => None,
            })
            .collect();
        if running.is_empty() {
            return;
        }
        let (key, id) = running[k % running.len()].clone();
        let name =
            self.runners.iter().find(|r| r.name.instance_id().as_ref() == Some(&id)).map(|r| r.name.clone());
        self.runners.retain(|r| r.name.instance_id().as_ref() != Some(&id));
        if let Some(m) = self.machine(&id) {
            m.inst.ec2_state = Ec2State::Terminated;
        }
        self.end(key, "success", name);
    }

    /// A queued job is cancelled: `completed`, `cancelled`, no runner.
    pub fn cancel(&mut self, k: usize) {
        let queued: Vec<JobKey> =
            self.gh.iter().filter(|(_, j)| j.status == GhStatus::Queued).map(|(k, _)| *k).collect();
        if let Some(key) = queued.get(k % queued.len().max(1)).copied() {
            self.end(key, "cancelled", None);
        }
    }

    /// An instance dies. A busy one was a spot reclaim: tagged interrupted, its job fails.
    pub fn kill(&mut self, k: usize) {
        let live: Vec<usize> = (0..self.machines.len())
            .filter(|&i| self.machines[i].inst.ec2_state == Ec2State::Running)
            .collect();
        if live.is_empty() {
            return;
        }
        let i = live[k % live.len()];
        let id = self.machines[i].inst.id.clone();
        let running =
            self.gh.iter().find(|(_, j)| j.status == GhStatus::Running(id.clone())).map(|(k, _)| *k);
        let m = &mut self.machines[i];
        m.inst.ec2_state = Ec2State::Terminated;
        if let Some(key) = running {
            m.inst.interrupted = true;
            let name = RunnerName::for_instance(&m.inst.pool, &m.inst.id);
            self.runners.retain(|r| r.name.instance_id().as_ref() != Some(&id));
            self.end(key, "failure", Some(name));
        } else {
            self.runners
                .iter_mut()
                .filter(|r| r.name.instance_id().as_ref() == Some(&id))
                .for_each(|r| r.online = false);
        }
    }

    /// Reconcile plans the pool with GitHub's runners and the stored configs, and asks GitHub
    /// about the queued jobs it names (the answer is recorded as the webhook would have been).
    pub fn reconcile(&mut self, pool: usize) {
        let plan = self.plan(pool, Mode::Reconcile, &[], &[]);
        self.carry_out(pool, &plan);
        let again = self.plan(pool, Mode::Reconcile, &[], &[]);
        assert!(again.is_noop(), "reconcile again changed something: {again:?}");
        for key in &plan.check_with_github {
            let Some(j) = self.gh.get(key).cloned() else { continue };
            let change = match j.status {
                GhStatus::Queued => continue,
                GhStatus::Running(id) => JobChange::Started {
                    runner_name: self
                        .runners
                        .iter()
                        .find(|r| r.name.instance_id() == Some(id.clone()))
                        .map(|r| r.name.clone()),
                    started_at: Some(self.now),
                },
                GhStatus::Done(c) => JobChange::Completed {
                    runner_name: None,
                    conclusion: Some(c.into()),
                    completed_at: Some(self.now),
                },
            };
            let e = self.event(*key, j.pool, change);
            let (s, f) = self.record(&e);
            self.batch(pool, &s, &f);
        }
    }

    pub fn gh_waiting(&self) -> usize {
        self.gh.values().filter(|j| matches!(j.status, GhStatus::Queued | GhStatus::Running(_))).count()
    }

    pub fn live(&self, pool: usize) -> usize {
        self.machines
            .iter()
            .filter(|m| m.inst.pool == self.pools[pool].name && m.inst.ec2_state.counts_toward_cap())
            .count()
    }

    /// Everything settles: every event handled, every runner booted, every job run, reconcile
    /// past every timeout. Returns the rounds it took, or `None` if jobs still wait.
    pub fn drain(&mut self, max_rounds: usize) -> Option<usize> {
        self.jit_outage = false;
        for round in 0..max_rounds {
            while !self.inbox.is_empty() {
                self.deliver(0);
            }
            self.tick(LAG_SECS + 1);
            for _ in 0..self.machines.len() {
                self.boot(0, true);
            }
            for k in 0..self.gh.len() {
                self.assign(k, false);
            }
            for k in 0..self.gh.len() {
                self.finish(k);
            }
            while !self.inbox.is_empty() {
                self.deliver(0);
            }
            self.tick(120);
            for p in 0..self.pools.len() {
                self.reconcile(p);
            }
            let ledger_queued = (0..self.pools.len()).map(|p| self.queued(p).len()).sum::<usize>();
            if self.gh_waiting() == 0 && self.inbox.is_empty() && ledger_queued == 0 {
                return Some(round);
            }
        }
        None
    }
}
