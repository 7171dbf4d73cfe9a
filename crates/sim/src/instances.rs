//! The runner-instance simulator: plays the part of every EC2 instance Hangar launches.
//!
//! It watches the instances moto holds with `hangar:managed-by=hangar` and, for each new one,
//! does what the boot agent in `ami/boot-agent/hangar-boot-agent.sh` does on a real instance:
//! 1. boots (a delay drawn from [`InstanceSimConfig::boot`]; [`InstanceSimConfig::restart`] for
//!    an instance started again from `stopped`);
//! 2. polls SSM for `<prefix>/<instance-id>` with backoff until [`InstanceSimConfig::jit_deadline`],
//!    then gives up and terminates itself, as the agent does;
//! 3. deletes the parameter as soon as it is read (one-use credential);
//! 4. starts the runner with the JIT config: `POST /_sim/runners/register` on the GitHub
//!    simulator, which assigns it one job;
//! 5. when the runner is done (ephemeral: one job) or was deleted while idle, terminates its own
//!    instance (`ec2:TerminateInstances`).
//!
//! An instance that is stopped or terminated under a running runner takes the runner process
//! with it: the simulator tells the GitHub simulator the runner was lost (a running job fails),
//! as a machine disappearing would.
//!
//! The simulator talks to moto directly, not through the fault proxy: its calls are the runner
//! instances', not Hangar's, and faults injected for Hangar must not hit them.
//! The JIT config is a credential: it is never logged.

use aws_sdk_ec2::types::Filter;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A delay drawn uniformly from `[min_ms, max_ms]` real milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayRange {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl DelayRange {
    pub fn new(min_ms: u64, max_ms: u64) -> Self {
        DelayRange { min_ms: min_ms.min(max_ms), max_ms: max_ms.max(min_ms) }
    }

    /// Draws with `seed`, so a run is reproducible per instance id.
    pub fn draw(&self, seed: u64) -> Duration {
        let span = self.max_ms - self.min_ms;
        let r = if span == 0 { 0 } else { splitmix64(seed) % (span + 1) };
        Duration::from_millis(self.min_ms + r)
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[derive(Debug, Clone)]
pub struct InstanceSimConfig {
    /// The GitHub simulator's control API root (`http://127.0.0.1:P`, without `/_sim`).
    pub github_control_url: String,
    /// SSM prefix of the JIT parameters (the boot agent's `HANGAR_JIT_PARAMETER_PREFIX`).
    pub jit_prefix: String,
    /// Boot time of a newly launched instance.
    pub boot: DelayRange,
    /// Boot time of an instance started from `stopped`.
    pub restart: DelayRange,
    /// How long an instance waits for its JIT parameter before terminating itself.
    pub jit_deadline: Duration,
    /// Cap of the exponential backoff between parameter reads (the agent's
    /// `HANGAR_POLL_MAX_INTERVAL_SECONDS`).
    pub jit_poll_max: Duration,
    /// How often moto's instances and each runner's state are read.
    pub poll_interval: Duration,
    pub seed: u64,
}

impl InstanceSimConfig {
    pub fn new(github_control_url: impl Into<String>) -> Self {
        InstanceSimConfig {
            github_control_url: github_control_url.into(),
            jit_prefix: "/hangar/jit".into(),
            boot: DelayRange::new(1000, 3000),
            restart: DelayRange::new(300, 800),
            jit_deadline: Duration::from_secs(30),
            jit_poll_max: Duration::from_millis(1000),
            poll_interval: Duration::from_millis(250),
            seed: 1,
        }
    }
}

/// What a simulated instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Booting,
    /// Booted, polling SSM for its JIT parameter.
    WaitingForJit,
    /// Runner online, no job yet.
    Idle,
    Busy,
    /// Ran its job (or was deleted while idle) and terminated itself.
    Done,
    /// No JIT parameter before the deadline: terminated itself.
    GaveUp,
    /// The JIT config was refused by GitHub (already used, runner deleted): terminated itself.
    Refused,
    /// Stopped under the simulator (EC2 `stopped`); boots again when started.
    Stopped,
    /// Terminated by someone else (reconcile, an operator) before it finished.
    Gone,
}

impl Phase {
    /// Still a machine that exists from the runner's point of view.
    pub fn active(self) -> bool {
        matches!(self, Phase::Booting | Phase::WaitingForJit | Phase::Idle | Phase::Busy)
    }
}

/// One instance as the simulator saw and played it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub pool: Option<String>,
    pub instance_type: String,
    pub spot: bool,
    pub launch_reason: Option<String>,
    pub phase: Phase,
    pub boots: u32,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub job_id: Option<u64>,
    pub jobs_run: u32,
    /// Real milliseconds since the simulator started.
    pub first_seen_ms: u64,
    pub registered_ms: Option<u64>,
    pub ended_ms: Option<u64>,
}

/// One instance in one DescribeInstances answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeenInstance {
    pub id: String,
    /// EC2 state name (`pending`, `running`, `stopped`, `terminated`, …).
    pub state: String,
    pub pool: Option<String>,
    pub lifecycle_tag: Option<String>,
    pub job_tag: Option<String>,
    pub launch_reason: Option<String>,
    pub instance_type: String,
    pub spot: bool,
}

impl SeenInstance {
    /// Counts toward `max_runners`, as `Ec2State::counts_toward_cap` defines it.
    pub fn counts_toward_cap(&self) -> bool {
        !matches!(self.state.as_str(), "shutting-down" | "terminated")
    }
}

/// The latest view of moto: every Hangar instance, at `at_ms` since the simulator started.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub at_ms: u64,
    pub instances: Vec<SeenInstance>,
    /// Phases of the simulated instances at that moment.
    pub phases: HashMap<String, Phase>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceSimError {
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Counters of what the simulated instances did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceStats {
    pub seen: u64,
    pub registered: u64,
    pub jobs_run: u64,
    pub self_terminated: u64,
    pub gave_up: u64,
    pub refused: u64,
    pub killed_runners: u64,
    pub describe_errors: u64,
}

struct Tracked {
    record: InstanceRecord,
    task: Option<JoinHandle<()>>,
}

struct Inner {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    http: reqwest::Client,
    cfg: InstanceSimConfig,
    started: Instant,
    tracked: Mutex<BTreeMap<String, Tracked>>,
    stats: Mutex<InstanceStats>,
    obs: watch::Sender<Arc<Observation>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Tracked>> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn stats(&self) -> MutexGuard<'_, InstanceStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
    fn update(&self, id: &str, f: impl FnOnce(&mut InstanceRecord)) {
        if let Some(t) = self.lock().get_mut(id) {
            f(&mut t.record);
        }
    }
    fn phase(&self, id: &str) -> Option<Phase> {
        self.lock().get(id).map(|t| t.record.phase)
    }
}

/// A running instance simulator; dropping it stops the watcher and every instance task.
pub struct InstanceSim {
    inner: Arc<Inner>,
    watcher: JoinHandle<()>,
}

impl InstanceSim {
    /// Starts watching. `ec2` and `ssm` should point at moto itself.
    pub fn start(
        ec2: aws_sdk_ec2::Client,
        ssm: aws_sdk_ssm::Client,
        cfg: InstanceSimConfig,
    ) -> Result<Self, InstanceSimError> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let (obs, _) = watch::channel(Arc::new(Observation::default()));
        let inner = Arc::new(Inner {
            ec2,
            ssm,
            http,
            cfg,
            started: Instant::now(),
            tracked: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(InstanceStats::default()),
            obs,
        });
        let watcher = tokio::spawn(watch_loop(Arc::clone(&inner)));
        Ok(InstanceSim { inner, watcher })
    }

    /// Every instance seen so far, in id order.
    pub fn records(&self) -> Vec<InstanceRecord> {
        self.inner.lock().values().map(|t| t.record.clone()).collect()
    }

    pub fn stats(&self) -> InstanceStats {
        self.inner.stats().clone()
    }

    /// Observations of moto as the watcher makes them.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Observation>> {
        self.inner.obs.subscribe()
    }

    /// The latest observation.
    pub fn latest(&self) -> Arc<Observation> {
        self.inner.obs.borrow().clone()
    }

    /// Milliseconds since the simulator started (the clock of [`InstanceRecord`]).
    pub fn elapsed_ms(&self) -> u64 {
        self.inner.ms()
    }

    /// Stops watching and abandons every instance task (the instances stay as they are in moto).
    pub fn stop(&self) {
        self.watcher.abort();
        for t in self.inner.lock().values_mut() {
            if let Some(h) = t.task.take() {
                h.abort();
            }
        }
    }
}

impl Drop for InstanceSim {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tag_of(i: &aws_sdk_ec2::types::Instance, key: &str) -> Option<String> {
    i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(str::to_owned)
}

async fn describe(inner: &Inner) -> Result<Vec<SeenInstance>, String> {
    let mut out = Vec::new();
    let mut pages = inner
        .ec2
        .describe_instances()
        .filters(Filter::builder().name("tag:hangar:managed-by").values("hangar").build())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("{e:?}"))?;
        for r in page.reservations() {
            for i in r.instances() {
                let Some(id) = i.instance_id() else { continue };
                let state = i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_else(|| "unknown".into());
                out.push(SeenInstance {
                    id: id.to_owned(),
                    state,
                    pool: tag_of(i, "hangar:pool"),
                    lifecycle_tag: tag_of(i, "hangar:lifecycle"),
                    job_tag: tag_of(i, "hangar:job-id"),
                    launch_reason: tag_of(i, "hangar:launch-reason"),
                    instance_type: i.instance_type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
                    spot: matches!(i.instance_lifecycle(), Some(l) if l.as_str() == "spot"),
                });
            }
        }
    }
    Ok(out)
}

async fn watch_loop(inner: Arc<Inner>) {
    loop {
        match describe(&inner).await {
            Ok(seen) => {
                step(&inner, &seen).await;
                let phases = inner.lock().iter().map(|(k, t)| (k.clone(), t.record.phase)).collect();
                inner.obs.send_replace(Arc::new(Observation { at_ms: inner.ms(), instances: seen, phases }));
            }
            Err(e) => {
                inner.stats().describe_errors += 1;
                tracing::warn!(error = %e, "instance simulator: DescribeInstances failed");
            }
        }
        tokio::time::sleep(inner.cfg.poll_interval).await;
    }
}

/// Reacts to one observation: boots new or restarted instances, takes stopped or terminated
/// ones (and their runner processes) down.
async fn step(inner: &Arc<Inner>, seen: &[SeenInstance]) {
    let mut lost_runners = Vec::new();
    {
        let mut tracked = inner.lock();
        for s in seen {
            let up = matches!(s.state.as_str(), "pending" | "running");
            let down_stopped = matches!(s.state.as_str(), "stopping" | "stopped");
            let entry = tracked.get_mut(&s.id);
            match entry {
                None if up => {
                    inner.stats().seen += 1;
                    let record = InstanceRecord {
                        id: s.id.clone(),
                        pool: s.pool.clone(),
                        instance_type: s.instance_type.clone(),
                        spot: s.spot,
                        launch_reason: s.launch_reason.clone(),
                        phase: Phase::Booting,
                        boots: 1,
                        runner_id: None,
                        runner_name: None,
                        job_id: None,
                        jobs_run: 0,
                        first_seen_ms: inner.ms(),
                        registered_ms: None,
                        ended_ms: None,
                    };
                    let delay = inner.cfg.boot.draw(inner.cfg.seed ^ fnv(&s.id));
                    let task = tokio::spawn(run_instance(Arc::clone(inner), s.id.clone(), delay));
                    tracked.insert(s.id.clone(), Tracked { record, task: Some(task) });
                }
                None => {
                    // Seen for the first time already stopped or terminated: nothing runs on it.
                    inner.stats().seen += 1;
                    let record = InstanceRecord {
                        id: s.id.clone(),
                        pool: s.pool.clone(),
                        instance_type: s.instance_type.clone(),
                        spot: s.spot,
                        launch_reason: s.launch_reason.clone(),
                        phase: if down_stopped { Phase::Stopped } else { Phase::Gone },
                        boots: 0,
                        runner_id: None,
                        runner_name: None,
                        job_id: None,
                        jobs_run: 0,
                        first_seen_ms: inner.ms(),
                        registered_ms: None,
                        ended_ms: Some(inner.ms()),
                    };
                    tracked.insert(s.id.clone(), Tracked { record, task: None });
                }
                Some(t) if up && t.record.phase == Phase::Stopped => {
                    t.record.phase = Phase::Booting;
                    t.record.boots += 1;
                    t.record.runner_id = None;
                    t.record.runner_name = None;
                    t.record.job_id = None;
                    let delay =
                        inner.cfg.restart.draw(inner.cfg.seed ^ fnv(&s.id) ^ u64::from(t.record.boots));
                    t.task = Some(tokio::spawn(run_instance(Arc::clone(inner), s.id.clone(), delay)));
                }
                Some(t) if !up && t.record.phase.active() => {
                    if let Some(h) = t.task.take() {
                        h.abort();
                    }
                    if matches!(t.record.phase, Phase::Idle | Phase::Busy) {
                        if let Some(r) = t.record.runner_id {
                            lost_runners.push(r);
                        }
                    }
                    t.record.phase = if down_stopped { Phase::Stopped } else { Phase::Gone };
                    t.record.ended_ms = Some(inner.ms());
                }
                Some(_) => {}
            }
        }
    }
    for r in lost_runners {
        inner.stats().killed_runners += 1;
        let url = format!("{}/_sim/runners/{r}/kill", inner.cfg.github_control_url);
        if let Err(e) = inner.http.post(&url).send().await {
            tracing::warn!(runner = r, error = %e, "instance simulator: could not report a lost runner");
        }
    }
}

#[derive(Deserialize)]
struct RunnerState {
    id: u64,
    name: String,
    phase: String,
    job_id: Option<u64>,
    removed: bool,
}

/// One instance's life, from boot to self-termination.
async fn run_instance(inner: Arc<Inner>, id: String, boot: Duration) {
    tokio::time::sleep(boot).await;
    inner.update(&id, |r| r.phase = Phase::WaitingForJit);
    let Some(jit) = read_jit(&inner, &id).await else {
        inner.stats().gave_up += 1;
        terminate_self(&inner, &id, Phase::GaveUp).await;
        return;
    };
    delete_jit(&inner, &id).await;

    let url = format!("{}/_sim/runners/register", inner.cfg.github_control_url);
    let body = serde_json::json!({ "encoded_jit_config": jit });
    let runner = match inner.http.post(&url).json(&body).send().await {
        Ok(resp) if resp.status().is_success() => resp.json::<RunnerState>().await.ok(),
        Ok(resp) => {
            tracing::info!(instance = %id, status = resp.status().as_u16(), "runner refused its JIT config");
            None
        }
        Err(e) => {
            tracing::warn!(instance = %id, error = %e, "runner could not reach GitHub");
            None
        }
    };
    let Some(runner) = runner else {
        inner.stats().refused += 1;
        terminate_self(&inner, &id, Phase::Refused).await;
        return;
    };
    inner.stats().registered += 1;
    let now = inner.ms();
    inner.update(&id, |r| {
        r.phase = Phase::Idle;
        r.runner_id = Some(runner.id);
        r.runner_name = Some(runner.name.clone());
        r.registered_ms = Some(now);
    });

    let url = format!("{}/_sim/runners/{}", inner.cfg.github_control_url, runner.id);
    loop {
        tokio::time::sleep(inner.cfg.poll_interval).await;
        if !inner.phase(&id).is_some_and(Phase::active) {
            return;
        }
        let state = match inner.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json::<RunnerState>().await.ok(),
            _ => None,
        };
        let Some(st) = state else { continue };
        match st.phase.as_str() {
            "busy" => inner.update(&id, |r| {
                r.phase = Phase::Busy;
                r.job_id = st.job_id;
            }),
            "done" => {
                inner.stats().jobs_run += 1;
                inner.update(&id, |r| r.jobs_run += 1);
                terminate_self(&inner, &id, Phase::Done).await;
                return;
            }
            // Deleted while idle (scale-in): the runner process exits, the instance ends.
            "idle" | "configured" if st.removed => {
                terminate_self(&inner, &id, Phase::Done).await;
                return;
            }
            "lost" => return,
            _ => {}
        }
    }
}

async fn read_jit(inner: &Inner, id: &str) -> Option<String> {
    let name = format!("{}/{id}", inner.cfg.jit_prefix);
    let deadline = Instant::now() + inner.cfg.jit_deadline;
    let mut delay = Duration::from_millis(100);
    loop {
        match inner.ssm.get_parameter().name(&name).with_decryption(true).send().await {
            Ok(out) => {
                if let Some(v) = out.parameter().and_then(|p| p.value()).filter(|v| !v.is_empty()) {
                    return Some(v.to_owned());
                }
            }
            Err(e) => {
                let code = e.as_service_error().and_then(|s| {
                    use aws_sdk_ssm::error::ProvideErrorMetadata;
                    s.code().map(str::to_owned)
                });
                tracing::debug!(instance = %id, code = code.as_deref().unwrap_or("unknown"), "JIT parameter not readable yet");
            }
        }
        if Instant::now() >= deadline {
            tracing::info!(instance = %id, "no JIT parameter before the deadline; giving up");
            return None;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(inner.cfg.jit_poll_max);
    }
}

async fn delete_jit(inner: &Inner, id: &str) {
    let name = format!("{}/{id}", inner.cfg.jit_prefix);
    for _ in 0..3 {
        if inner.ssm.delete_parameter().name(&name).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!(instance = %id, "could not delete the JIT parameter; leaving it to reconcile");
}

async fn terminate_self(inner: &Inner, id: &str, phase: Phase) {
    // The phase changes first, so the watcher does not mistake this instance's own
    // termination for a machine taken away under its runner.
    let now = inner.ms();
    inner.update(id, |r| {
        r.phase = phase;
        r.ended_ms = Some(now);
    });
    for attempt in 0..5u32 {
        match inner.ec2.terminate_instances().instance_ids(id).send().await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(instance = %id, attempt, error = ?e, "TerminateInstances on itself failed");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    inner.stats().self_terminated += 1;
}
