//! GitHub REST API simulator: App JWTs, installation tokens, JIT runner configs, runners, jobs,
//! rate limits, fault injection, and a job model that sends signed `workflow_job` webhooks.
//!
//! Start it in-process with [`GithubSim::start`], or as `hangar-sim github ...`. The control API
//! (`/_sim/...`) is described in `crates/sim/README.md`; the same controls are methods on
//! [`GithubSim`].

mod api;
mod control;
mod model;
mod payload;

pub use model::{Delivery, Fault, Job, JobStatus, Label, OrgSpec, RunnerPhase, READ_ONLY_LABELS};

use axum::Router;
use chrono::{DateTime, Utc};
use clap::Parser;
use hangar_core::ports::Clock;
use hmac::{Hmac, Mac};
use jsonwebtoken::DecodingKey;
use model::{Org, State};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How the simulator is set up. [`SimConfig::new`] gives GitHub's defaults and one organisation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub app_id: u64,
    /// PEM (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`) that App JWTs must verify against.
    pub app_public_key_pem: String,
    pub orgs: Vec<OrgSpec>,
    /// Where `workflow_job` webhooks go; `None` records deliveries without sending them.
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    /// `""` for github.com, `"/api/v3"` to serve the REST API as GitHub Enterprise Server does.
    pub path_prefix: String,
    /// 127.0.0.1 port; 0 picks a free one.
    pub port: u16,
    /// Primary limit per installation (and for the App's JWT), per hour.
    pub rate_limit: u64,
    /// Secondary limit: content-creating requests (POST, DELETE) accepted per minute.
    pub secondary_writes_per_minute: usize,
    /// Installation token lifetime (GitHub: one hour).
    pub token_lifetime: Duration,
    /// Deliveries in flight at once. GitHub sends webhooks concurrently and promises no order;
    /// the simulator keeps each job's deliveries in order (`queued`, `in_progress`,
    /// `completed`, as GitHub usually sends them) and lets different jobs' overlap.
    pub webhook_concurrency: usize,
}

impl SimConfig {
    pub fn new(app_id: u64, app_public_key_pem: impl Into<String>) -> Self {
        SimConfig {
            app_id,
            app_public_key_pem: app_public_key_pem.into(),
            orgs: vec![OrgSpec {
                login: "octo-org".into(),
                id: 33435655,
                installation_id: 1,
                runner_groups: vec!["hangar".into()],
            }],
            webhook_url: None,
            webhook_secret: "sim-webhook-secret".into(),
            path_prefix: String::new(),
            port: 0,
            rate_limit: 5000,
            // GitHub documents at most 80 content-generating requests per minute.
            secondary_writes_per_minute: 80,
            token_lifetime: Duration::from_secs(3600),
            webhook_concurrency: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid app public key: {0}")]
    PublicKey(String),
    #[error("cannot bind 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("unknown organisation `{0}`")]
    UnknownOrg(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// The simulator's clock: real time plus an offset the control API can move forward, so token
/// expiry and rate-limit windows are tested without sleeping.
#[derive(Debug, Default)]
pub struct SimClock {
    offset_ms: AtomicI64,
}

impl SimClock {
    pub fn advance(&self, d: Duration) {
        self.offset_ms.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
    pub fn offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }
}

/// What a new job looks like; everything but `repo` and `labels` has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// `owner/name`; the owner must be a configured organisation.
    pub repo: String,
    pub labels: Vec<String>,
    #[serde(default = "default_duration")]
    pub duration_ms: u64,
    /// `success`, `failure`, `cancelled` or `skipped`.
    #[serde(default = "default_conclusion")]
    pub conclusion: String,
    #[serde(default = "default_job_name")]
    pub name: String,
    #[serde(default = "default_workflow")]
    pub workflow_name: String,
    #[serde(default = "default_branch")]
    pub head_branch: String,
}

fn default_duration() -> u64 {
    1000
}
fn default_conclusion() -> String {
    "success".into()
}
fn default_job_name() -> String {
    "build".into()
}
fn default_workflow() -> String {
    "CI".into()
}
fn default_branch() -> String {
    "main".into()
}

impl JobSpec {
    pub fn new(repo: impl Into<String>, labels: &[&str]) -> Self {
        JobSpec {
            repo: repo.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            duration_ms: default_duration(),
            conclusion: default_conclusion(),
            name: default_job_name(),
            workflow_name: default_workflow(),
            head_branch: default_branch(),
        }
    }
    pub fn duration_ms(mut self, ms: u64) -> Self {
        self.duration_ms = ms;
        self
    }
}

/// A runner as the control API reports it (including removed ones, which the REST API hides).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunnerView {
    pub id: u64,
    pub name: String,
    pub org: String,
    pub repo: Option<String>,
    pub runner_group_id: u64,
    pub labels: Vec<String>,
    pub phase: String,
    pub job_id: Option<u64>,
    pub removed: bool,
}

/// Request counters: per endpoint key, and per `endpoint status` response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub requests: BTreeMap<String, u64>,
    pub responses: BTreeMap<String, u64>,
    pub total: u64,
}

impl Counters {
    pub fn get(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
    }
}

pub(crate) struct Shared {
    cfg: SimConfig,
    key: DecodingKey,
    /// Scheme, host and path prefix: what the REST API's own URLs start with.
    api_base: String,
    root: String,
    clock: Arc<SimClock>,
    state: Mutex<State>,
    hooks: mpsc::UnboundedSender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a simulator bug; keep serving the other tests.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Records a `workflow_job` delivery for the job's current state and queues it for sending.
    fn emit(&self, st: &mut State, job_id: u64, action: &str) {
        let Some(job) = st.jobs.get(&job_id) else { return };
        let Some(org) = st.org(&job.org).cloned() else { return };
        let body = payload::workflow_job_event(&self.api_base, &org, job, action).to_string();
        st.next_delivery_id += 1;
        let id = st.next_delivery_id;
        st.deliveries.push(Delivery {
            id,
            guid: uuid::Uuid::new_v4().to_string(),
            event: "workflow_job".into(),
            action: action.into(),
            job_id,
            redelivery: false,
            status_code: None,
            error: None,
            delivered_at: None,
            body,
        });
        let _ = self.hooks.send(id);
    }

    /// Assigns queued jobs to idle runners and starts the timers that complete them.
    fn run_assignment(self: &Arc<Self>, st: &mut State) {
        let now = self.now();
        for job_id in st.assign(now) {
            self.emit(st, job_id, "in_progress");
            let ms = st.jobs[&job_id].duration_ms;
            let me = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let mut st = me.lock();
                let conclusion = st.jobs[&job_id].planned_conclusion.clone();
                let now = me.now();
                if st.complete(job_id, &conclusion, now, false) {
                    me.emit(&mut st, job_id, "completed");
                    me.run_assignment(&mut st);
                }
            });
        }
    }

    pub(crate) fn enqueue(self: &Arc<Self>, spec: JobSpec) -> Result<Job, SimError> {
        let (owner, repo) = spec
            .repo
            .split_once('/')
            .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| SimError::BadRequest(format!("repo `{}` is not owner/name", spec.repo)))?;
        if !["success", "failure", "cancelled", "skipped"].contains(&spec.conclusion.as_str()) {
            return Err(SimError::BadRequest(format!("unknown conclusion `{}`", spec.conclusion)));
        }
        if spec.labels.is_empty() {
            return Err(SimError::BadRequest("a job needs at least one label".into()));
        }
        let now = self.now();
        let mut st = self.lock();
        let org = st.org(owner).ok_or_else(|| SimError::UnknownOrg(owner.to_owned()))?.login.clone();
        st.next_job_id += 1;
        st.next_run_id += 1;
        let id = 7_000_000_000 + st.next_job_id;
        let job = Job {
            id,
            run_id: 900_000_000 + st.next_run_id,
            run_attempt: 1,
            org,
            repo: repo.to_owned(),
            name: spec.name,
            workflow_name: spec.workflow_name,
            head_branch: spec.head_branch,
            head_sha: format!("{:040x}", u128::from(id) * 0x9e37_79b9_7f4a_7c15),
            labels: spec.labels,
            status: JobStatus::Queued,
            conclusion: None,
            planned_conclusion: spec.conclusion,
            duration_ms: spec.duration_ms,
            created_at: now,
            started_at: None,
            completed_at: None,
            runner_id: None,
            runner_name: None,
            runner_group_id: None,
            runner_group_name: None,
            rerun_of: None,
            rerun_by: None,
        };
        st.jobs.insert(id, job);
        self.emit(&mut st, id, "queued");
        self.run_assignment(&mut st);
        Ok(st.jobs[&id].clone())
    }

    /// Re-runs a completed job as GitHub does: a new job id, `run_attempt + 1`, queued again.
    pub(crate) fn rerun(self: &Arc<Self>, job_id: u64) -> Result<Job, SimError> {
        let now = self.now();
        let mut st = self.lock();
        let old = st.jobs.get(&job_id).ok_or_else(|| SimError::NotFound(format!("job {job_id}")))?.clone();
        if old.status != JobStatus::Completed {
            return Err(SimError::Conflict(format!("job {job_id} is not complete")));
        }
        if let Some(newer) = old.rerun_by.and_then(|n| st.jobs.get(&n)) {
            if newer.status != JobStatus::Completed {
                return Err(SimError::Conflict(format!("job {job_id} is already being re-run")));
            }
        }
        st.next_job_id += 1;
        let id = 7_000_000_000 + st.next_job_id;
        let job = Job {
            id,
            run_attempt: old.run_attempt + 1,
            status: JobStatus::Queued,
            conclusion: None,
            created_at: now,
            started_at: None,
            completed_at: None,
            runner_id: None,
            runner_name: None,
            runner_group_id: None,
            runner_group_name: None,
            rerun_of: Some(job_id),
            rerun_by: None,
            ..old
        };
        st.jobs.insert(id, job);
        if let Some(o) = st.jobs.get_mut(&job_id) {
            o.rerun_by = Some(id);
        }
        self.emit(&mut st, id, "queued");
        self.run_assignment(&mut st);
        Ok(st.jobs[&id].clone())
    }

    /// A runner process starts with its JIT config: the runner goes online and may get a job.
    pub(crate) fn register(self: &Arc<Self>, encoded: &str) -> Result<RunnerView, SimError> {
        let runner_id = api::decode_jit(encoded).ok_or_else(|| {
            SimError::BadRequest("encoded_jit_config was not issued by this simulator".into())
        })?;
        let mut st = self.lock();
        let r =
            st.runners.get(&runner_id).ok_or_else(|| SimError::NotFound(format!("runner {runner_id}")))?;
        if r.removed {
            return Err(SimError::NotFound(format!("runner {runner_id} was deleted")));
        }
        if !st.used_jit.insert(runner_id) {
            return Err(SimError::Conflict(format!("JIT config of runner {runner_id} was already used")));
        }
        st.runners.get_mut(&runner_id).expect("runner").phase = RunnerPhase::Idle;
        self.run_assignment(&mut st);
        Ok(view(&st.runners[&runner_id]))
    }

    /// The runner's machine disappears (spot interruption, termination): a running job fails,
    /// and the runner stays registered but offline until someone deletes it.
    pub(crate) fn kill(self: &Arc<Self>, runner_id: u64) -> Result<RunnerView, SimError> {
        let now = self.now();
        let mut st = self.lock();
        let r =
            st.runners.get(&runner_id).ok_or_else(|| SimError::NotFound(format!("runner {runner_id}")))?;
        match r.job {
            Some(job_id) => {
                st.complete(job_id, "failure", now, true);
                self.emit(&mut st, job_id, "completed");
            }
            None => {
                let r = st.runners.get_mut(&runner_id).expect("runner");
                if !r.removed {
                    r.phase = RunnerPhase::Lost;
                }
            }
        }
        Ok(view(&st.runners[&runner_id]))
    }

    pub(crate) fn redeliver(&self, id: u64) -> Result<Delivery, SimError> {
        let mut st = self.lock();
        let d = st
            .deliveries
            .iter()
            .find(|d| d.id == id)
            .cloned()
            .ok_or_else(|| SimError::NotFound(format!("delivery {id}")))?;
        st.next_delivery_id += 1;
        let new = Delivery {
            id: st.next_delivery_id,
            redelivery: true,
            status_code: None,
            error: None,
            delivered_at: None,
            ..d
        };
        st.deliveries.push(new.clone());
        let _ = self.hooks.send(new.id);
        Ok(new)
    }

    pub(crate) fn counters(&self) -> Counters {
        let st = self.lock();
        Counters {
            requests: st.counters.clone(),
            responses: st.responses.clone(),
            total: st.counters.values().sum(),
        }
    }

    pub(crate) fn exhaust(&self, installation: Option<u64>, reset_in: Duration) {
        let now = self.now();
        let reset = now + chrono::Duration::milliseconds(reset_in.as_millis() as i64);
        let mut st = self.lock();
        let mut keys: Vec<String> = match installation {
            Some(i) => vec![format!("installation:{i}")],
            None => st.orgs.values().map(|o| format!("installation:{}", o.installation_id)).collect(),
        };
        if installation.is_none() {
            keys.push("app".into());
        }
        let limit = self.cfg.rate_limit;
        for k in keys {
            st.rate.insert(k, model::RateBucket { limit, used: limit, reset });
        }
    }
}

pub(crate) fn view(r: &model::Runner) -> RunnerView {
    RunnerView {
        id: r.id,
        name: r.name.clone(),
        org: r.org.clone(),
        repo: r.repo.clone(),
        runner_group_id: r.group_id,
        labels: r.labels.iter().map(|l| l.name.clone()).collect(),
        phase: serde_json::to_value(r.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        job_id: r.job,
        removed: r.removed,
    }
}

/// `sha256=` + hex HMAC-SHA256 of the raw body, as in `X-Hub-Signature-256`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Hands each delivery to one of `webhook_concurrency` senders, chosen by job, so a receiver
/// sees a job's `queued` before its `in_progress` before its `completed`, as it usually does from
/// GitHub, while different jobs' deliveries overlap.
async fn deliver_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<u64>) {
    // GitHub gives up on a delivery after 10 seconds.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("reqwest client");
    let n = shared.cfg.webhook_concurrency.max(1);
    let mut lanes = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, lane_rx) = mpsc::unbounded_channel();
        lanes.push(tx);
        senders.push(tokio::spawn(send_lane(Arc::clone(&shared), http.clone(), lane_rx)));
    }
    while let Some(id) = rx.recv().await {
        let job = shared.lock().deliveries.iter().find(|d| d.id == id).map_or(0, |d| d.job_id);
        let _ = lanes[(job % n as u64) as usize].send(id);
    }
    drop(lanes);
    for s in senders {
        let _ = s.await;
    }
}

/// Sends its deliveries one at a time, in the order they were recorded.
async fn send_lane(shared: Arc<Shared>, http: reqwest::Client, mut rx: mpsc::UnboundedReceiver<u64>) {
    while let Some(id) = rx.recv().await {
        let (url, guid, event, body, target) = {
            let st = shared.lock();
            let Some(d) = st.deliveries.iter().find(|d| d.id == id) else { continue };
            let target = st.jobs.get(&d.job_id).and_then(|j| st.org(&j.org)).map(|o| o.id).unwrap_or(0);
            (st.webhook_url.clone(), d.guid.clone(), d.event.clone(), d.body.clone(), target)
        };
        let Some(url) = url else { continue };
        let sig = sign(&shared.cfg.webhook_secret, body.as_bytes());
        let res = http
            .post(&url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/hangar-sim")
            .header("x-github-event", &event)
            .header("x-github-delivery", &guid)
            .header("x-github-hook-id", "1")
            .header("x-github-hook-installation-target-type", "organization")
            .header("x-github-hook-installation-target-id", target.to_string())
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await;
        let now = shared.now();
        let mut st = shared.lock();
        if let Some(d) = st.deliveries.iter_mut().find(|d| d.id == id) {
            d.delivered_at = Some(now);
            match res {
                Ok(r) => d.status_code = Some(r.status().as_u16()),
                Err(e) => d.error = Some(e.to_string()),
            }
        }
    }
}

/// A running simulator. Dropping it stops the server.
pub struct GithubSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    sender: tokio::task::JoinHandle<()>,
}

impl GithubSim {
    /// Binds 127.0.0.1 (port from the config, 0 for any) and serves until dropped.
    pub async fn start(cfg: SimConfig) -> Result<Self, SimError> {
        let key = DecodingKey::from_rsa_pem(cfg.app_public_key_pem.as_bytes())
            .map_err(|e| SimError::PublicKey(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port))
            .await
            .map_err(|source| SimError::Bind { port: cfg.port, source })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind { port: cfg.port, source })?;
        let prefix = normalise_prefix(&cfg.path_prefix);
        let root = format!("http://{addr}");
        let mut st = State { webhook_url: cfg.webhook_url.clone(), ..State::default() };
        for o in &cfg.orgs {
            st.orgs.insert(o.login.to_ascii_lowercase(), Org::from_spec(o));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            api_base: format!("{root}{prefix}"),
            root,
            key,
            clock: Arc::new(SimClock::default()),
            state: Mutex::new(st),
            hooks: tx,
            cfg: SimConfig { path_prefix: prefix.clone(), ..cfg },
        });
        let sender = tokio::spawn(deliver_loop(Arc::clone(&shared), rx));
        let api = api::router(Arc::clone(&shared));
        let app = if prefix.is_empty() { api } else { Router::new().nest(&prefix, api) };
        let app = app.merge(control::router(Arc::clone(&shared)));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        tracing::info!(%addr, prefix = %prefix, "github simulator listening");
        Ok(GithubSim { shared, addr, stop: Some(stop), task: Some(task), sender })
    }

    /// The REST API base, including the path prefix (`http://127.0.0.1:P` or `.../api/v3`).
    pub fn base_url(&self) -> String {
        self.shared.api_base.clone()
    }
    /// Where the control API (`/_sim/...`) lives.
    pub fn control_url(&self) -> String {
        self.shared.root.clone()
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn app_id(&self) -> u64 {
        self.shared.cfg.app_id
    }
    pub fn webhook_secret(&self) -> &str {
        &self.shared.cfg.webhook_secret
    }
    /// The simulator's clock, so an in-process client can share its notion of time.
    pub fn clock(&self) -> Arc<SimClock> {
        Arc::clone(&self.shared.clock)
    }
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }
    pub fn advance_clock(&self, d: Duration) {
        self.shared.clock.advance(d)
    }
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }
    /// Requests seen by one endpoint key (see the README for the keys).
    pub fn count(&self, endpoint: &str) -> u64 {
        self.counters().get(endpoint)
    }
    pub fn reset_counters(&self) {
        let mut st = self.shared.lock();
        st.counters.clear();
        st.responses.clear();
    }
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }
    /// Adds latency to every call of `endpoint` (`*` for all); 0 removes it.
    pub fn set_latency(&self, endpoint: &str, ms: u64) {
        let mut st = self.shared.lock();
        if ms == 0 {
            st.latency_ms.remove(endpoint);
        } else {
            st.latency_ms.insert(endpoint.to_owned(), ms);
        }
    }
    /// Uses up the primary rate limit of one installation (or of all, and of the App's JWT),
    /// with the window resetting `reset_in` from the simulator's now.
    pub fn exhaust_rate_limit(&self, installation: Option<u64>, reset_in: Duration) {
        self.shared.exhaust(installation, reset_in)
    }
    /// Invalidates every installation token, as a key rotation or revocation would.
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.clear();
    }
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.shared.lock().webhook_url = url;
    }
    pub fn enqueue_job(&self, spec: JobSpec) -> Result<Job, SimError> {
        self.shared.enqueue(spec)
    }
    pub fn jobs(&self) -> Vec<Job> {
        self.shared.lock().jobs.values().cloned().collect()
    }
    pub fn job(&self, id: u64) -> Option<Job> {
        self.shared.lock().jobs.get(&id).cloned()
    }
    pub fn rerun_job(&self, id: u64) -> Result<Job, SimError> {
        self.shared.rerun(id)
    }
    pub fn register_runner(&self, encoded_jit_config: &str) -> Result<RunnerView, SimError> {
        self.shared.register(encoded_jit_config)
    }
    pub fn kill_runner(&self, id: u64) -> Result<RunnerView, SimError> {
        self.shared.kill(id)
    }
    pub fn runners(&self) -> Vec<RunnerView> {
        self.shared.lock().runners.values().map(view).collect()
    }
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }
    /// The raw body of one delivery, exactly as sent (and signed).
    pub fn delivery_body(&self, id: u64) -> Option<String> {
        self.shared.lock().deliveries.iter().find(|d| d.id == id).map(|d| d.body.clone())
    }
    pub fn redeliver(&self, id: u64) -> Result<Delivery, SimError> {
        self.shared.redeliver(id)
    }

    /// Stops the server and waits for it to finish in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for GithubSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.sender.abort();
    }
}

fn normalise_prefix(p: &str) -> String {
    let t = p.trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("/{t}")
    }
}

/// `hangar-sim github`: the simulator as a process (for `make demo` and end-to-end tests).
#[derive(Debug, Parser)]
#[command(name = "hangar-sim github", about = "GitHub REST API and webhook simulator")]
struct Cli {
    /// Port on 127.0.0.1; 0 picks a free one (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long)]
    webhook_url: Option<String>,
    #[arg(long, default_value = "sim-webhook-secret")]
    webhook_secret: String,
    #[arg(long, default_value_t = 1)]
    app_id: u64,
    /// The App's public key: a PEM file path, or the PEM itself.
    #[arg(long)]
    app_public_key: String,
    /// `login:installation_id[:group,group...]`, repeatable; default `octo-org:1:hangar`.
    #[arg(long = "org")]
    orgs: Vec<String>,
    /// `/api/v3` to look like GitHub Enterprise Server.
    #[arg(long, default_value = "")]
    path_prefix: String,
    #[arg(long, default_value_t = 5000)]
    rate_limit: u64,
    #[arg(long, default_value_t = 80)]
    secondary_writes_per_minute: usize,
}

fn parse_org(s: &str, n: usize) -> anyhow::Result<OrgSpec> {
    let mut parts = s.split(':');
    let login =
        parts.next().filter(|l| !l.is_empty()).ok_or_else(|| anyhow::anyhow!("--org `{s}`: empty login"))?;
    let installation_id = match parts.next() {
        Some(i) => i.parse().map_err(|_| anyhow::anyhow!("--org `{s}`: installation id is not a number"))?,
        None => n as u64 + 1,
    };
    let runner_groups = parts
        .next()
        .map(|g| g.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(OrgSpec { login: login.to_owned(), id: payload::stable_id(login), installation_id, runner_groups })
}

/// Entry point for `hangar-sim github`.
pub async fn cli_main(args: Vec<String>) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("hangar-sim github".to_owned()).chain(args))?;
    let pem = if cli.app_public_key.trim_start().starts_with("-----BEGIN") {
        cli.app_public_key.clone()
    } else {
        std::fs::read_to_string(&cli.app_public_key)
            .map_err(|e| anyhow::anyhow!("--app-public-key {}: {e}", cli.app_public_key))?
    };
    let mut cfg = SimConfig::new(cli.app_id, pem);
    if !cli.orgs.is_empty() {
        cfg.orgs =
            cli.orgs.iter().enumerate().map(|(i, s)| parse_org(s, i)).collect::<anyhow::Result<_>>()?;
    }
    cfg.port = cli.port;
    cfg.webhook_url = cli.webhook_url;
    cfg.webhook_secret = cli.webhook_secret;
    cfg.path_prefix = cli.path_prefix;
    cfg.rate_limit = cli.rate_limit;
    cfg.secondary_writes_per_minute = cli.secondary_writes_per_minute;
    let sim = GithubSim::start(cfg).await?;
    // Scripts read this line to learn the port.
    println!("hangar-sim github listening on {} (control {}/_sim)", sim.base_url(), sim.control_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
