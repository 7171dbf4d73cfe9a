//! The `workflow_job` webhook payload, reduced to the fields Hangar reads. Unknown fields are
//! skipped, so GitHub adding fields never breaks parsing; a field we need that is missing, null
//! where not allowed, or of the wrong type is a clear parse error.

use crate::ids::{InstallationId, JobId, RepoFullName, RunId, RunnerName};
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Jobs with more labels than this are refused as malformed: GitHub's own runners carry far
/// fewer, and bounding it bounds routing work per delivery.
pub const MAX_JOB_LABELS: usize = 256;
pub const MAX_LABEL_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowJobAction {
    Queued,
    Waiting,
    InProgress,
    Completed,
    /// An action GitHub may add later; acknowledged and ignored.
    Other(String),
}

impl<'de> Deserialize<'de> for WorkflowJobAction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(match s.as_ref() {
            "queued" => Self::Queued,
            "waiting" => Self::Waiting,
            "in_progress" => Self::InProgress,
            "completed" => Self::Completed,
            other => Self::Other(other.to_owned()),
        })
    }
}

impl WorkflowJobAction {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Waiting => "waiting",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJobEvent {
    pub action: WorkflowJobAction,
    pub workflow_job: WorkflowJob,
    pub repository: Repository,
    #[serde(default)]
    pub organization: Option<Account>,
    #[serde(default)]
    pub installation: Option<Installation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJob {
    pub id: JobId,
    pub run_id: RunId,
    #[serde(default = "one")]
    pub run_attempt: u32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    pub labels: Vec<String>,
    #[serde(default)]
    pub runner_name: Option<RunnerName>,
    /// Absent from some older payloads (GitHub's own `in_progress` example lacks it).
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub full_name: RepoFullName,
    pub private: bool,
    /// `public`, `private` or `internal`; absent in some older payloads.
    #[serde(default)]
    pub visibility: Option<String>,
    pub owner: Account,
}

impl Repository {
    /// Public when GitHub says so either way; an `internal` repository is private to the enterprise.
    pub fn is_public(&self) -> bool {
        !self.private || self.visibility.as_deref() == Some("public")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub login: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Installation {
    pub id: InstallationId,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("payload does not fit the workflow_job model: {0}")]
    Model(String),
    #[error("workflow_job has {0} labels, more than {MAX_JOB_LABELS}")]
    TooManyLabels(usize),
    #[error("a workflow_job label is longer than {MAX_LABEL_BYTES} bytes")]
    LabelTooLong,
}

impl WorkflowJobEvent {
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let ev: WorkflowJobEvent =
            serde_json::from_slice(body).map_err(|e| ParseError::Model(e.to_string()))?;
        let labels = &ev.workflow_job.labels;
        if labels.len() > MAX_JOB_LABELS {
            return Err(ParseError::TooManyLabels(labels.len()));
        }
        if labels.iter().any(|l| l.len() > MAX_LABEL_BYTES) {
            return Err(ParseError::LabelTooLong);
        }
        Ok(ev)
    }

    /// The organisation the job belongs to: `organization.login`, else the repository owner.
    pub fn org_login(&self) -> &str {
        self.organization.as_ref().map(|o| o.login.as_str()).unwrap_or(&self.repository.owner.login)
    }
}
