//! The simulator's state: organisations, installations, tokens, runners, jobs, rate-limit
//! buckets, faults and counters. Everything lives behind one mutex held only for short,
//! non-awaiting sections; side effects (webhook sends, timers) are returned to the caller.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Runner labels GitHub adds itself when a runner is configured (`type: read-only`).
pub const READ_ONLY_LABELS: [&str; 3] = ["self-hosted", "Linux", "X64"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgSpec {
    pub login: String,
    pub id: u64,
    pub installation_id: u64,
    /// Runner groups other than `Default` (id 1, always present).
    #[serde(default)]
    pub runner_groups: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Org {
    pub login: String,
    pub id: u64,
    pub installation_id: u64,
    /// `(id, name)`; id 1 is `Default`.
    pub groups: Vec<(u64, String)>,
}

impl Org {
    pub fn from_spec(spec: &OrgSpec) -> Self {
        let mut groups = vec![(1, "Default".to_owned())];
        for (i, g) in spec.runner_groups.iter().enumerate() {
            groups.push((i as u64 + 2, g.clone()));
        }
        Org { login: spec.login.clone(), id: spec.id, installation_id: spec.installation_id, groups }
    }
    pub fn group_name(&self, id: u64) -> Option<&str> {
        self.groups.iter().find(|(g, _)| *g == id).map(|(_, n)| n.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub installation_id: u64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Label {
    pub id: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// What the runner process is doing, as the runner-instance simulator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerPhase {
    /// JIT config issued, no process has used it yet (GitHub shows `offline`).
    Configured,
    /// Online, waiting for a job.
    Idle,
    Busy,
    /// Ran its one job (ephemeral) and was removed by GitHub.
    Done,
    /// The process went away without finishing (instance killed); GitHub shows it `offline`.
    Lost,
}

#[derive(Debug, Clone)]
pub struct Runner {
    pub id: u64,
    pub name: String,
    pub org: String,
    /// `Some(repo name)` for a repository runner.
    pub repo: Option<String>,
    pub group_id: u64,
    pub labels: Vec<Label>,
    pub phase: RunnerPhase,
    pub job: Option<u64>,
    /// Deleted through the API, or removed by GitHub after its ephemeral job.
    pub removed: bool,
}

impl Runner {
    pub fn online(&self) -> bool {
        matches!(self.phase, RunnerPhase::Idle | RunnerPhase::Busy)
    }
    pub fn scope_key(&self) -> String {
        scope_key(&self.org, self.repo.as_deref())
    }
    /// The runner takes the job only if every job label is one of its labels, ignoring case.
    pub fn covers(&self, job_labels: &[String]) -> bool {
        job_labels.iter().all(|l| self.labels.iter().any(|r| r.name.eq_ignore_ascii_case(l)))
    }
}

pub fn scope_key(org: &str, repo: Option<&str>) -> String {
    match repo {
        Some(r) => format!("{}/{}", org.to_ascii_lowercase(), r.to_ascii_lowercase()),
        None => org.to_ascii_lowercase(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    InProgress,
    Completed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: u64,
    pub run_id: u64,
    pub run_attempt: u32,
    pub org: String,
    pub repo: String,
    pub name: String,
    pub workflow_name: String,
    pub head_branch: String,
    pub head_sha: String,
    pub labels: Vec<String>,
    pub status: JobStatus,
    pub conclusion: Option<String>,
    /// The conclusion the job reaches if its runner finishes it.
    pub planned_conclusion: String,
    pub duration_ms: u64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub runner_group_id: Option<u64>,
    pub runner_group_name: Option<String>,
    /// The job this one re-runs, if any.
    pub rerun_of: Option<u64>,
    /// Set once a re-run of this job was requested.
    pub rerun_by: Option<u64>,
}

impl Job {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.org, self.repo)
    }
}

/// One primary rate-limit window (`x-ratelimit-resource: core`).
#[derive(Debug, Clone)]
pub struct RateBucket {
    pub limit: u64,
    pub used: u64,
    pub reset: DateTime<Utc>,
}

impl RateBucket {
    pub fn roll(&mut self, now: DateTime<Utc>) {
        if now >= self.reset {
            self.used = 0;
            self.reset = now + ChronoDuration::hours(1);
        }
    }
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

/// A fault rule from the control API: the next `remaining` calls of `endpoint` (or `*`) fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub endpoint: String,
    pub status: u16,
    #[serde(default = "one")]
    pub count: u32,
    /// Sent as `retry-after` (seconds), for 403/429 secondary-limit faults.
    #[serde(default)]
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    /// Process the request first, then answer with the fault (a response lost on the way
    /// back: the runner exists although the caller saw an error).
    #[serde(default)]
    pub after_processing: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: u64,
    pub guid: String,
    pub event: String,
    pub action: String,
    pub job_id: u64,
    pub redelivery: bool,
    /// HTTP status the receiver answered with; `None` while pending or on connection failure.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub body: String,
}

#[derive(Debug, Default)]
pub struct State {
    pub orgs: BTreeMap<String, Org>,
    pub tokens: HashMap<String, TokenInfo>,
    pub runners: BTreeMap<u64, Runner>,
    pub jobs: BTreeMap<u64, Job>,
    pub next_runner_id: u64,
    pub next_job_id: u64,
    pub next_run_id: u64,
    pub next_label_id: u64,
    pub next_delivery_id: u64,
    pub rate: HashMap<String, RateBucket>,
    /// Sim-clock times of accepted writes within the last minute (secondary limit).
    pub writes: VecDeque<DateTime<Utc>>,
    pub faults: Vec<Fault>,
    pub latency_ms: HashMap<String, u64>,
    /// Requests per endpoint key, including rejected ones.
    pub counters: BTreeMap<String, u64>,
    /// Responses per `endpoint status`.
    pub responses: BTreeMap<String, u64>,
    pub deliveries: Vec<Delivery>,
    pub webhook_url: Option<String>,
    /// JIT configs already used by a runner process (single use, like GitHub's).
    pub used_jit: std::collections::HashSet<u64>,
}

impl State {
    pub fn org(&self, login: &str) -> Option<&Org> {
        self.orgs.get(&login.to_ascii_lowercase())
    }
    pub fn org_by_installation(&self, installation: u64) -> Option<&Org> {
        self.orgs.values().find(|o| o.installation_id == installation)
    }
    pub fn label(&mut self, name: &str, kind: &'static str) -> Label {
        self.next_label_id += 1;
        Label { id: self.next_label_id, name: name.to_owned(), kind }
    }
    pub fn name_taken(&self, scope: &str, name: &str) -> bool {
        self.runners
            .values()
            .any(|r| !r.removed && r.scope_key() == scope && r.name.eq_ignore_ascii_case(name))
    }
    pub fn fault_for(&mut self, endpoint: &str) -> Option<Fault> {
        let idx =
            self.faults.iter().position(|f| (f.endpoint == endpoint || f.endpoint == "*") && f.count > 0)?;
        let f = &mut self.faults[idx];
        f.count -= 1;
        let out = f.clone();
        if f.count == 0 {
            self.faults.remove(idx);
        }
        Some(out)
    }

    /// Queued jobs matched to idle runners, oldest job first, longest-idle (lowest id) runner
    /// first. Returns the `(job, runner)` pairs it assigned; the caller sends the webhooks and
    /// starts the timers.
    pub fn assign(&mut self, now: DateTime<Utc>) -> Vec<u64> {
        let mut started = Vec::new();
        let queued: Vec<u64> =
            self.jobs.values().filter(|j| j.status == JobStatus::Queued).map(|j| j.id).collect();
        for job_id in queued {
            let job = &self.jobs[&job_id];
            let (org, repo, labels) =
                (job.org.to_ascii_lowercase(), job.repo.to_ascii_lowercase(), &job.labels);
            let runner = self.runners.values().find(|r| {
                !r.removed
                    && r.phase == RunnerPhase::Idle
                    && r.org.eq_ignore_ascii_case(&org)
                    && r.repo.as_deref().is_none_or(|rr| rr.eq_ignore_ascii_case(&repo))
                    && r.covers(labels)
            });
            let Some(runner) = runner else { continue };
            let (rid, rname, gid) = (runner.id, runner.name.clone(), runner.group_id);
            let gname = self.org(&org).and_then(|o| o.group_name(gid)).map(str::to_owned);
            let r = self.runners.get_mut(&rid).expect("runner");
            r.phase = RunnerPhase::Busy;
            r.job = Some(job_id);
            let j = self.jobs.get_mut(&job_id).expect("job");
            j.status = JobStatus::InProgress;
            j.started_at = Some(now);
            j.runner_id = Some(rid);
            j.runner_name = Some(rname);
            j.runner_group_id = Some(gid);
            j.runner_group_name = gname;
            started.push(job_id);
        }
        started
    }

    /// Completes a running job; its ephemeral runner is removed, as GitHub removes JIT runners
    /// after their job. Returns false if the job was not running.
    pub fn complete(&mut self, job_id: u64, conclusion: &str, now: DateTime<Utc>, runner_lost: bool) -> bool {
        let Some(job) = self.jobs.get_mut(&job_id) else { return false };
        if job.status != JobStatus::InProgress {
            return false;
        }
        job.status = JobStatus::Completed;
        job.conclusion = Some(conclusion.to_owned());
        job.completed_at = Some(now);
        if let Some(rid) = job.runner_id {
            if let Some(r) = self.runners.get_mut(&rid) {
                r.job = None;
                if runner_lost {
                    r.phase = RunnerPhase::Lost;
                } else {
                    r.phase = RunnerPhase::Done;
                    r.removed = true;
                }
            }
        }
        true
    }
}
