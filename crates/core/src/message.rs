//! What the webhook Lambda puts on the scale queue and the scaler takes off it. The JSON shape is
//! a contract between two deployed functions that may briefly run different versions, so fields
//! are only ever added, with defaults; a field no longer written (`requeues`) is ignored where an
//! older version's message still has it.

use crate::ids::{DeliveryId, InstallationId, JobId, PoolName, RepoFullName, RunId, RunnerName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An SQS body is capped at 256 KiB; ours are far smaller. The scaler refuses larger ones.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueueMessage {
    /// A job was queued and routed to `pool`: make sure a runner will take it.
    ScaleUp(JobRef),
    /// A job started on a runner (`in_progress`).
    JobStarted(JobStarted),
    /// A job finished (`completed`).
    JobCompleted(JobCompleted),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub pool: PoolName,
    pub job_id: JobId,
    pub run_id: RunId,
    #[serde(default = "one")]
    pub run_attempt: u32,
    pub repository: RepoFullName,
    #[serde(default)]
    pub installation_id: Option<InstallationId>,
    pub labels: Vec<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub delivery_id: Option<DeliveryId>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStarted {
    pub pool: PoolName,
    pub job_id: JobId,
    pub run_id: RunId,
    #[serde(default = "one")]
    pub run_attempt: u32,
    pub repository: RepoFullName,
    #[serde(default)]
    pub installation_id: Option<InstallationId>,
    pub runner_name: Option<RunnerName>,
    pub started_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCompleted {
    pub pool: PoolName,
    pub job_id: JobId,
    pub run_id: RunId,
    #[serde(default = "one")]
    pub run_attempt: u32,
    pub repository: RepoFullName,
    #[serde(default)]
    pub installation_id: Option<InstallationId>,
    pub runner_name: Option<RunnerName>,
    /// `success`, `failure`, `cancelled`, … as GitHub reports it.
    pub conclusion: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl QueueMessage {
    pub fn pool(&self) -> &PoolName {
        match self {
            QueueMessage::ScaleUp(j) => &j.pool,
            QueueMessage::JobStarted(j) => &j.pool,
            QueueMessage::JobCompleted(j) => &j.pool,
        }
    }

    pub fn job_id(&self) -> JobId {
        match self {
            QueueMessage::ScaleUp(j) => j.job_id,
            QueueMessage::JobStarted(j) => j.job_id,
            QueueMessage::JobCompleted(j) => j.job_id,
        }
    }

    fn action(&self) -> &'static str {
        match self {
            QueueMessage::ScaleUp(_) => "queued",
            QueueMessage::JobStarted(_) => "in_progress",
            QueueMessage::JobCompleted(_) => "completed",
        }
    }

    fn run_attempt(&self) -> u32 {
        match self {
            QueueMessage::ScaleUp(j) => j.run_attempt,
            QueueMessage::JobStarted(j) => j.run_attempt,
            QueueMessage::JobCompleted(j) => j.run_attempt,
        }
    }

    /// SQS FIFO deduplication id: one per job, attempt and action. A redelivered webhook, or a
    /// second `queued` for the same job, maps to the same id and SQS drops it (5-minute window);
    /// the job ledger's conditional writes make a later redelivery change nothing. A message
    /// from a version that put at-cap jobs back on the queue may carry `requeues`; it is ignored.
    pub fn dedup_id(&self) -> String {
        format!("{}-{}-{}", self.job_id(), self.run_attempt(), self.action())
    }

    /// SQS FIFO message group: one per pool, so one pool's messages are handled in order by one
    /// scaler invocation at a time while different pools scale in parallel.
    pub fn group_id(&self) -> String {
        self.pool().to_string()
    }

    pub fn parse(body: &str) -> Result<Self, MessageError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge(body.len()));
        }
        serde_json::from_str(body).map_err(|e| MessageError::Malformed(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        // Serialising plain structs with string keys cannot fail.
        serde_json::to_string(self).expect("QueueMessage serialises")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("message body is {0} bytes, over the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("message body is not a Hangar queue message: {0}")]
    Malformed(String),
}
