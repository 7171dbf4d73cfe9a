//! Workload traces: which jobs arrive when, for `hangar demo` and the end-to-end tests.
//!
//! A trace is one YAML (or JSON) document. Times are in *trace seconds*; `time_compression`
//! says how many trace seconds pass per real second, so an office-hours day replays in minutes.
//! Boot delays and the reconcile period are real time (they belong to the local cloud, not to
//! the workload) and are set by the demo's options.
//!
//! ```yaml
//! name: steady-trickle
//! description: one job every 4 s for two minutes
//! time_compression: 10          # trace seconds per real second (default 1)
//! config: pools.yaml            # pool configuration, relative to this file (optional)
//! jobs:                         # explicit jobs
//!   - at: 0                     # arrival, trace seconds from the start
//!     repo: octo-org/app        # owner/name; the owner is the organisation
//!     labels: [self-hosted, linux, x64]
//!     duration: 60              # run time in trace seconds
//!     run_attempt: 2            # optional: re-run until this attempt (each attempt needs a runner)
//!     conclusion: success       # optional: success (default), failure, cancelled
//! generate:                     # optional: many jobs, spread evenly, deterministic
//!   - count: 200
//!     from: 0                   # first arrival
//!     to: 10                    # last arrival
//!     repos: [octo-org/monorepo]          # cycled
//!     labels: [[self-hosted, linux, x64]] # cycled
//!     durations: [60, 90, 120]            # cycled
//! faults:                       # optional: things that go wrong during the run
//!   - at: 5
//!     aws: { kind: error, action: CreateFleet, code: RequestLimitExceeded, status: 503, times: 20 }
//!   - at: 5
//!     github: { endpoint: generate-jitconfig, status: 502, count: 3 }
//!   - at: 8
//!     github_rate_limit: { reset_in: 10 }   # real seconds until the window resets
//!   - at: 10
//!     kill_scaler: {}                        # kill one scaler process mid-invocation
//!   - at: 0
//!     duplicate_webhooks: { until: 60, after: 30 }  # redeliver every delivery sent before
//!                                            # `until`, `after` trace seconds later (default 0)
//!   - at: 3
//!     hostile_webhooks: { count: 20 }        # unsigned and badly signed deliveries
//! ```
//! `aws` takes a [`crate::fault_proxy::Fault`], `github` a [`crate::github::Fault`].

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A parsed trace. [`Trace::expanded`] gives the jobs in arrival order, generators applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Trace seconds per real second.
    #[serde(default = "one_f")]
    pub time_compression: f64,
    /// Pool configuration file, relative to the trace file.
    #[serde(default)]
    pub config: Option<PathBuf>,
    #[serde(default)]
    pub jobs: Vec<TraceJob>,
    #[serde(default)]
    pub generate: Vec<Generator>,
    #[serde(default)]
    pub faults: Vec<TimedFault>,
}

fn one_f() -> f64 {
    1.0
}

fn one_u() -> u32 {
    1
}

fn success() -> String {
    "success".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceJob {
    /// Arrival, trace seconds from the start.
    pub at: f64,
    pub repo: String,
    pub labels: Vec<String>,
    /// Trace seconds.
    pub duration: f64,
    /// The job is re-run after it completes until this attempt is reached (GitHub's
    /// `run_attempt`); every attempt is a job of its own that needs a runner.
    #[serde(default = "one_u")]
    pub run_attempt: u32,
    #[serde(default = "success")]
    pub conclusion: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generator {
    pub count: u32,
    pub from: f64,
    pub to: f64,
    pub repos: Vec<String>,
    pub labels: Vec<Vec<String>>,
    pub durations: Vec<f64>,
    #[serde(default = "one_u")]
    pub run_attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedFault {
    /// Trace seconds from the start.
    pub at: f64,
    #[serde(flatten)]
    pub action: FaultAction,
}

/// Something the local cloud does to Hangar during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Injected at the AWS fault proxy (errors, latency, per-override CreateFleet errors).
    Aws(crate::fault_proxy::Fault),
    /// Injected at the GitHub simulator.
    Github(GithubFault),
    /// Uses up GitHub's primary rate limit for every installation and the App.
    GithubRateLimit(RateLimitFault),
    /// Kills one scaler process (SIGKILL) while it handles an invocation; a new one starts.
    KillScaler(KillScaler),
    /// Redelivers every webhook GitHub sends from `at` until `until` (trace seconds), once.
    DuplicateWebhooks(Until),
    /// Sends `count` unsigned and badly signed `workflow_job` deliveries to the webhook.
    HostileWebhooks(Hostile),
}

/// A GitHub simulator fault; mirrors [`crate::github::Fault`] so traces stay readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubFault {
    pub endpoint: String,
    pub status: u16,
    #[serde(default = "one_u")]
    pub count: u32,
    #[serde(default)]
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub after_processing: bool,
}

impl GithubFault {
    pub fn to_sim(&self) -> crate::github::Fault {
        crate::github::Fault {
            endpoint: self.endpoint.clone(),
            status: self.status,
            count: self.count,
            retry_after: self.retry_after,
            message: None,
            after_processing: self.after_processing,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFault {
    /// Real seconds until the exhausted window resets.
    pub reset_in: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KillScaler {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Until {
    pub until: f64,
    /// Trace seconds between a delivery and its duplicate. A duplicate sent after the original's
    /// queue message was consumed is not deduplicated by SQS (its window is 5 minutes, a GitHub
    /// redelivery can come later), so the scaler itself must refuse it.
    #[serde(default)]
    pub after: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hostile {
    pub count: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading trace {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("trace is not valid YAML/JSON for the trace format: {0}")]
    Parse(String),
    #[error("trace field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> TraceError {
    TraceError::Invalid { field: field.into(), reason: reason.into() }
}

/// Upper bound on expanded jobs: a trace is a test workload, not a load generator.
pub const MAX_JOBS: usize = 20_000;

const CONCLUSIONS: [&str; 3] = ["success", "failure", "cancelled"];

impl Trace {
    pub fn from_yaml(text: &str) -> Result<Self, TraceError> {
        let t: Trace = serde_yaml_ng::from_str(text).map_err(|e| TraceError::Parse(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    /// Reads and validates a trace; a relative `config` is resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TraceError::Read { path: path.display().to_string(), source })?;
        let mut t = Self::from_yaml(&text)?;
        if let Some(c) = t.config.take() {
            let base = path.parent().unwrap_or(Path::new("."));
            t.config = Some(if c.is_absolute() { c } else { base.join(c) });
        }
        Ok(t)
    }

    pub fn validate(&self) -> Result<(), TraceError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if !(self.time_compression.is_finite() && self.time_compression > 0.0) {
            return Err(invalid("time_compression", "must be a positive number"));
        }
        let check_repo = |field: String, r: &str| match r.split_once('/') {
            Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => Ok(()),
            _ => Err(invalid(field, format!("`{r}` is not owner/name"))),
        };
        let check_time = |field: String, t: f64| {
            if t.is_finite() && t >= 0.0 {
                Ok(())
            } else {
                Err(invalid(field, "must be a non-negative number of seconds"))
            }
        };
        let check_labels = |field: String, l: &[String]| {
            if l.is_empty() || l.iter().any(|x| x.trim().is_empty()) {
                Err(invalid(field, "at least one label, none empty"))
            } else {
                Ok(())
            }
        };
        for (i, j) in self.jobs.iter().enumerate() {
            let at = |f: &str| format!("jobs[{i}].{f}");
            check_time(at("at"), j.at)?;
            check_time(at("duration"), j.duration)?;
            check_repo(at("repo"), &j.repo)?;
            check_labels(at("labels"), &j.labels)?;
            if j.run_attempt == 0 {
                return Err(invalid(at("run_attempt"), "attempts start at 1"));
            }
            if !CONCLUSIONS.contains(&j.conclusion.as_str()) {
                return Err(invalid(at("conclusion"), format!("one of {}", CONCLUSIONS.join(", "))));
            }
        }
        for (i, g) in self.generate.iter().enumerate() {
            let at = |f: &str| format!("generate[{i}].{f}");
            check_time(at("from"), g.from)?;
            check_time(at("to"), g.to)?;
            if g.to < g.from {
                return Err(invalid(at("to"), "must not be before `from`"));
            }
            if g.repos.is_empty() {
                return Err(invalid(at("repos"), "at least one repository"));
            }
            for r in &g.repos {
                check_repo(at("repos"), r)?;
            }
            if g.labels.is_empty() {
                return Err(invalid(at("labels"), "at least one label set"));
            }
            for l in &g.labels {
                check_labels(at("labels"), l)?;
            }
            if g.durations.is_empty() {
                return Err(invalid(at("durations"), "at least one duration"));
            }
            for d in &g.durations {
                check_time(at("durations"), *d)?;
            }
            if g.run_attempt == 0 {
                return Err(invalid(at("run_attempt"), "attempts start at 1"));
            }
        }
        let total = self.jobs.len() as u64 + self.generate.iter().map(|g| u64::from(g.count)).sum::<u64>();
        if total == 0 {
            return Err(invalid("jobs", "a trace needs at least one job (in `jobs` or `generate`)"));
        }
        if total > MAX_JOBS as u64 {
            return Err(invalid("jobs", format!("at most {MAX_JOBS} jobs")));
        }
        for (i, f) in self.faults.iter().enumerate() {
            check_time(format!("faults[{i}].at"), f.at)?;
            match &f.action {
                FaultAction::Github(g) if g.count == 0 || !(400..=599).contains(&g.status) => {
                    return Err(invalid(format!("faults[{i}].github"), "count >= 1 and status 400..=599"));
                }
                FaultAction::GithubRateLimit(r) => check_time(format!("faults[{i}].reset_in"), r.reset_in)?,
                FaultAction::DuplicateWebhooks(u) if !(u.until.is_finite() && u.until >= f.at) => {
                    return Err(invalid(format!("faults[{i}].until"), "must not be before `at`"));
                }
                FaultAction::DuplicateWebhooks(u)
                    if !(u.after.is_finite() && (0.0..=3600.0).contains(&u.after)) =>
                {
                    return Err(invalid(format!("faults[{i}].after"), "must be 0 to 3600 trace seconds"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every job, generators expanded, sorted by arrival (stable: file order breaks ties).
    pub fn expanded(&self) -> Vec<TraceJob> {
        let mut out = self.jobs.clone();
        for g in &self.generate {
            let n = g.count as usize;
            for k in 0..n {
                let at = if n <= 1 { g.from } else { g.from + (g.to - g.from) * k as f64 / (n - 1) as f64 };
                out.push(TraceJob {
                    at,
                    repo: g.repos[k % g.repos.len()].clone(),
                    labels: g.labels[k % g.labels.len()].clone(),
                    duration: g.durations[k % g.durations.len()],
                    run_attempt: g.run_attempt,
                    conclusion: success(),
                });
            }
        }
        out.sort_by(|a, b| a.at.total_cmp(&b.at));
        out
    }

    /// Runners the trace needs: one per attempt of every job.
    pub fn attempts(&self) -> u64 {
        self.expanded().iter().map(|j| u64::from(j.run_attempt)).sum()
    }

    /// The last arrival, in trace seconds.
    pub fn span(&self) -> f64 {
        self.expanded().iter().map(|j| j.at).fold(0.0, f64::max)
    }

    /// Trace seconds to real time.
    pub fn real(&self, trace_seconds: f64) -> std::time::Duration {
        std::time::Duration::from_secs_f64((trace_seconds / self.time_compression).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_spread_evenly_and_cycle() {
        let t = Trace::from_yaml(
            "name: t\ntime_compression: 10\ngenerate:\n  - {count: 3, from: 0, to: 10, repos: [o/a, o/b], labels: [[x]], durations: [1, 2]}\n",
        )
        .unwrap();
        let j = t.expanded();
        assert_eq!(j.iter().map(|j| j.at).collect::<Vec<_>>(), vec![0.0, 5.0, 10.0]);
        assert_eq!(j.iter().map(|j| j.repo.as_str()).collect::<Vec<_>>(), vec!["o/a", "o/b", "o/a"]);
        assert_eq!(j.iter().map(|j| j.duration).collect::<Vec<_>>(), vec![1.0, 2.0, 1.0]);
        assert_eq!(t.real(10.0), std::time::Duration::from_secs(1));
    }

    #[test]
    fn bad_traces_name_the_field() {
        let cases = [
            ("name: t\n", "jobs"),
            ("name: t\njobs: [{at: 0, repo: nope, labels: [x], duration: 1}]\n", "jobs[0].repo"),
            ("name: t\njobs: [{at: -1, repo: o/r, labels: [x], duration: 1}]\n", "jobs[0].at"),
            ("name: t\njobs: [{at: 0, repo: o/r, labels: [], duration: 1}]\n", "jobs[0].labels"),
            (
                "name: t\ntime_compression: 0\njobs: [{at: 0, repo: o/r, labels: [x], duration: 1}]\n",
                "time_compression",
            ),
            (
                "name: t\njobs: [{at: 0, repo: o/r, labels: [x], duration: 1, run_attempt: 0}]\n",
                "jobs[0].run_attempt",
            ),
            (
                "name: t\njobs: [{at: 0, repo: o/r, labels: [x], duration: 1}]\nfaults: [{at: 5, duplicate_webhooks: {until: 4}}]\n",
                "faults[0].until",
            ),
            (
                "name: t\njobs: [{at: 0, repo: o/r, labels: [x], duration: 1}]\nfaults: [{at: 0, duplicate_webhooks: {until: 4, after: -1}}]\n",
                "faults[0].after",
            ),
            (
                "name: t\njobs: [{at: 0, repo: o/r, labels: [x], duration: 1}]\nfaults: [{at: 0, duplicate_webhooks: {until: 4, after: .nan}}]\n",
                "faults[0].after",
            ),
        ];
        for (text, field) in cases {
            match Trace::from_yaml(text) {
                Err(TraceError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: expected Invalid({field}), got {other:?}"),
            }
        }
        assert!(matches!(Trace::from_yaml("name: t\nbogus: 1\n"), Err(TraceError::Parse(_))));
    }

    #[test]
    fn faults_parse_with_their_payloads() {
        let t = Trace::from_yaml(
            "name: t\njobs: [{at: 0, repo: o/r, labels: [x], duration: 1}]\nfaults:\n  - {at: 1, aws: {kind: error, action: CreateFleet, code: RequestLimitExceeded, status: 503, times: 2}}\n  - {at: 2, github: {endpoint: generate-jitconfig, status: 502, count: 3}}\n  - {at: 3, kill_scaler: {}}\n  - {at: 0, duplicate_webhooks: {until: 9}}\n  - {at: 0, hostile_webhooks: {count: 4}}\n  - {at: 0, github_rate_limit: {reset_in: 5}}\n",
        )
        .unwrap();
        assert_eq!(t.faults.len(), 6);
        assert!(
            matches!(&t.faults[0].action, FaultAction::Aws(crate::fault_proxy::Fault::Error { code, .. }) if code == "RequestLimitExceeded")
        );
        assert!(matches!(&t.faults[2].action, FaultAction::KillScaler(_)));
        assert!(
            matches!(&t.faults[3].action, FaultAction::DuplicateWebhooks(u) if u.until == 9.0 && u.after == 0.0)
        );
    }
}
