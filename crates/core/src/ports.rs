//! Ports: one small trait per capability the core needs from the outside world. Adapters in
//! `hangar-aws` and `hangar-github` implement them; tests may implement them with plain values.

use crate::config::{CapacityType, PoolConfig};
use crate::ids::{
    InstallationId, InstanceId, JobId, PoolName, RepoFullName, RunnerGroupId, RunnerId, RunnerName,
};
use crate::secret::Secret;
use crate::state::{Lifecycle, ObservedInstance};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An adapter failure, classified once at the edge so the core can decide between retrying and
/// giving up without knowing which SDK produced it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{operation} failed ({}): {message}", code.as_deref().unwrap_or("no code"))]
pub struct PortError {
    /// The call that failed, e.g. `ec2:CreateFleet` or `github:generate-jitconfig`.
    pub operation: &'static str,
    /// Throttling, 5xx, timeouts: trying again later may succeed.
    pub retryable: bool,
    /// The provider's error code (`RequestLimitExceeded`, `422`, …).
    pub code: Option<String>,
    pub message: String,
}

impl PortError {
    pub fn retryable(operation: &'static str, code: Option<String>, message: impl Into<String>) -> Self {
        Self { operation, retryable: true, code, message: message.into() }
    }
    pub fn permanent(operation: &'static str, code: Option<String>, message: impl Into<String>) -> Self {
        Self { operation, retryable: false, code, message: message.into() }
    }
}

/// A message for the scale queue, already serialised, with its FIFO keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub body: String,
    pub group_id: String,
    pub dedup_id: String,
}

/// The scale queue. IAM: `sqs:SendMessage` on the queue.
#[async_trait]
pub trait ScaleQueue: Send + Sync {
    async fn send(&self, msg: &OutboundMessage) -> Result<(), PortError>;
}

/// The provisioning queue (SQS standard): one message per launched instance, whose JIT config
/// the provisioner makes while it boots, so a pool's plan never waits on GitHub. Bodies are
/// serialised by the scaler. IAM: `sqs:SendMessage` on the queue (`SendMessageBatch` is
/// authorised as `SendMessage`).
#[async_trait]
pub trait ProvisionQueue: Send + Sync {
    /// Sends each body as its own message; returns the indexes of those not sent, with why.
    async fn send(&self, bodies: &[String]) -> Vec<(usize, PortError)>;
}

/// Why an instance was launched; kept in a tag and in the launch metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LaunchReason {
    Job,
    WarmPool,
}

impl LaunchReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchReason::Job => "job",
            LaunchReason::WarmPool => "warm-pool",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    pub pool: PoolConfig,
    pub count: u32,
    pub reason: LaunchReason,
    /// Stable for the same shortfall seen from the same state (the plan's key), so a retried
    /// CreateFleet call cannot launch twice.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchedInstance {
    pub id: InstanceId,
    pub capacity_type: CapacityType,
    pub instance_type: String,
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchFailure {
    pub code: String,
    pub message: String,
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    pub capacity_type: CapacityType,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LaunchOutcome {
    pub launched: Vec<LaunchedInstance>,
    /// Per-override errors CreateFleet reported, including those a fallback then covered.
    pub failures: Vec<LaunchFailure>,
    /// CreateFleet calls made for this request (fallbacks add calls).
    pub calls: u32,
}

/// Runner instances. IAM: `ec2:CreateFleet`, `ec2:RunInstances`, `ec2:CreateTags`,
/// `ec2:DescribeInstances`, `ec2:TerminateInstances`, `iam:PassRole` on the runner role.
#[async_trait]
pub trait Fleet: Send + Sync {
    async fn launch(&self, req: &LaunchRequest) -> Result<LaunchOutcome, PortError>;
    /// All instances of one pool that EC2 still lists, in one paginated, tag-filtered call.
    /// Shutting-down and terminated ones are included: they never count toward `max_runners`
    /// ([`crate::state::Ec2State::counts_toward_cap`]), but the planner needs their
    /// interruption flags.
    async fn describe_pool(&self, pool: &PoolName) -> Result<Vec<ObservedInstance>, PortError>;
    async fn terminate(&self, ids: &[InstanceId]) -> Result<(), PortError>;
    /// Sets `hangar:lifecycle`; `Some(job)` sets `hangar:job-id`, `None` removes it.
    async fn set_lifecycle(
        &self,
        id: &InstanceId,
        lifecycle: Lifecycle,
        job_id: Option<JobId>,
    ) -> Result<(), PortError>;
    async fn mark_interrupted(&self, id: &InstanceId) -> Result<(), PortError>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredJit {
    pub instance_id: InstanceId,
    pub pool: Option<PoolName>,
    pub created_at: Option<DateTime<Utc>>,
}

/// One SecureString JIT config per instance. IAM: `ssm:PutParameter`, `ssm:AddTagsToResource`,
/// `ssm:DeleteParameter(s)`, `ssm:DescribeParameters`, `kms:Encrypt` on the parameter key.
#[async_trait]
pub trait JitStore: Send + Sync {
    async fn put(&self, instance: &InstanceId, pool: &PoolName, jit: &Secret) -> Result<(), PortError>;
    async fn delete(&self, instance: &InstanceId) -> Result<(), PortError>;
    async fn list(&self) -> Result<Vec<StoredJit>, PortError>;
}

/// Where a runner registers: the organisation, or one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerScopeTarget {
    Org(String),
    Repo(RepoFullName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitRequest {
    pub name: RunnerName,
    pub labels: Vec<String>,
    pub runner_group: String,
    pub scope: RunnerScopeTarget,
    pub installation: Option<InstallationId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitConfig {
    pub runner_id: RunnerId,
    pub runner_group_id: RunnerGroupId,
    pub encoded: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredRunner {
    pub id: RunnerId,
    pub name: RunnerName,
    /// `online` or `offline`.
    pub online: bool,
    pub busy: bool,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: JobId,
    pub status: String,
    pub conclusion: Option<String>,
    pub runner_name: Option<RunnerName>,
    pub run_attempt: u32,
}

/// GitHub's self-hosted runner API. GitHub App permission: organisation "Self-hosted runners"
/// read/write (org scope) or repository "Administration" read/write (repo scope); "Actions"
/// read for jobs, write for re-runs.
#[async_trait]
pub trait RunnerRegistry: Send + Sync {
    /// `POST /orgs/{org}/actions/runners/generate-jitconfig` (or the repository form).
    async fn generate_jit_config(&self, req: &JitRequest) -> Result<JitConfig, PortError>;
    /// Paginated; reconcile only, never the hot path.
    async fn list_runners(&self, org: &str) -> Result<Vec<RegisteredRunner>, PortError>;
    async fn delete_runner(&self, org: &str, id: RunnerId) -> Result<(), PortError>;
    async fn get_job(&self, repo: &RepoFullName, job: JobId) -> Result<JobInfo, PortError>;
    /// `POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun`.
    async fn rerun_job(&self, repo: &RepoFullName, job: JobId) -> Result<(), PortError>;
    /// The last `x-ratelimit-remaining` seen, for the metric.
    fn rate_limit_remaining(&self) -> Option<u64>;
}

/// The clock, injectable so that time-dependent rules are tested without sleeping.
/// Launches a pool's plans must count before `DescribeInstances` lists them (EC2's describes
/// are eventually consistent), so that a plan right after a launch does not launch again. Each
/// pool's entries live in one item of the job ledger's table. IAM: `dynamodb:UpdateItem` and
/// `dynamodb:GetItem` on that table.
#[async_trait]
pub trait LaunchLog: Send + Sync {
    /// Records `launched` for `pool`, and drops `stale` (entries past
    /// [`crate::plan::RECORDED_LAUNCH_TTL_SECS`] that an earlier [`LaunchLog::recent`] returned).
    async fn record(
        &self,
        pool: &PoolName,
        launched: &[crate::plan::RecordedLaunch],
        stale: &[InstanceId],
    ) -> Result<(), PortError>;
    /// The pool's recorded launches, read consistently, stale ones included.
    async fn recent(&self, pool: &PoolName) -> Result<Vec<crate::plan::RecordedLaunch>, PortError>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
