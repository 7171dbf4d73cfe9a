//! Metric records as plain values. The core decides what to measure; [`crate::emf`] renders
//! records as CloudWatch Embedded Metric Format lines, which Lambda ships to CloudWatch from stdout
//! with no API call (and so no `cloudwatch:PutMetricData` permission and no latency).

use crate::ids::PoolName;
use serde::Serialize;

/// Metric names: the dashboard and alarms in `infra/template.yaml` use exactly these.
pub mod names {
    pub const JOBS_QUEUED: &str = "JobsQueued";
    pub const JOBS_STARTED: &str = "JobsStarted";
    pub const JOBS_COMPLETED: &str = "JobsCompleted";
    pub const QUEUE_WAIT_MS: &str = "QueueWaitMs";
    pub const JOB_DURATION_MS: &str = "JobDurationMs";
    pub const LAUNCHES: &str = "Launches";
    /// A CreateFleet that launched nothing (by `ErrorCode`): no fallback covered it.
    pub const LAUNCH_FAILURES: &str = "LaunchFailures";
    /// Errors CreateFleet reported for single overrides (an instance type in a subnet, by
    /// `ErrorCode`), including those a fallback to another type, zone or on-demand then
    /// covered: a capacity signal, not a failure.
    pub const LAUNCH_OVERRIDE_ERRORS: &str = "LaunchOverrideErrors";
    /// An action of a pool's plan that failed (by `Operation`): a termination, a tag, a JIT
    /// config deleted, a runner deregistered, a re-run, a launch. Retried or acknowledged
    /// within the pool's FIFO group, so never a Lambda error.
    pub const PLAN_ACTION_ERRORS: &str = "PlanActionErrors";
    /// A launched instance that got no JIT config and was terminated (the provisioner).
    pub const PROVISION_FAILURES: &str = "ProvisionFailures";
    /// From CreateFleet to the instance's JIT config written (the provisioner).
    pub const PROVISION_DELAY_MS: &str = "ProvisionDelayMs";
    pub const POOL_IDLE: &str = "PoolIdle";
    pub const POOL_BUSY: &str = "PoolBusy";
    pub const POOL_PENDING: &str = "PoolPending";
    pub const POOL_TARGET: &str = "PoolTarget";
    pub const GITHUB_RATE_LIMIT_REMAINING: &str = "GithubRateLimitRemaining";
    pub const SPOT_INTERRUPTIONS: &str = "SpotInterruptions";
    pub const ORPHANS_TERMINATED: &str = "OrphansTerminated";
    pub const WEBHOOK_REJECTED: &str = "WebhookRejected";
    pub const WEBHOOK_IGNORED: &str = "WebhookIgnored";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    Count,
    Milliseconds,
    None,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::None => "None",
        }
    }
}

/// One data point. `pool` becomes the `Pool` dimension; `extra` adds one more dimension
/// (e.g. `CapacityType` for launches, `ErrorCode` for launch failures, `Reason` for rejects).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRecord {
    pub name: &'static str,
    pub value: f64,
    pub unit: Unit,
    pub pool: Option<PoolName>,
    pub extra: Option<(&'static str, String)>,
}

impl MetricRecord {
    pub fn count(name: &'static str, pool: Option<&PoolName>, value: f64) -> Self {
        Self { name, value, unit: Unit::Count, pool: pool.cloned(), extra: None }
    }
    pub fn millis(name: &'static str, pool: Option<&PoolName>, value: f64) -> Self {
        Self { name, value, unit: Unit::Milliseconds, pool: pool.cloned(), extra: None }
    }
    pub fn gauge(name: &'static str, pool: Option<&PoolName>, value: f64) -> Self {
        Self { name, value, unit: Unit::None, pool: pool.cloned(), extra: None }
    }
    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.extra = Some((key, value.into()));
        self
    }
}
