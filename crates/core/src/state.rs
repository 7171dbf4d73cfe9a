//! The observed state of a pool. There is no database: EC2 instance tags are the truth, and this
//! is what the adapters read them into.

use crate::config::CapacityType;
use crate::ids::{InstanceId, JobId, PoolName, RunnerName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Tag keys Hangar writes on instances and JIT parameters.
pub mod tags {
    pub const POOL: &str = "hangar:pool";
    pub const LIFECYCLE: &str = "hangar:lifecycle";
    pub const JOB_ID: &str = "hangar:job-id";
    pub const LAUNCH_REASON: &str = "hangar:launch-reason";
    pub const INTERRUPTED: &str = "hangar:interrupted";
    pub const RUNNER_NAME: &str = "hangar:runner-name";
    pub const INSTANCE_ID: &str = "hangar:instance-id";
    /// On JIT parameters: the instance's ARN, which the runner role's IAM condition matches.
    pub const INSTANCE_ARN: &str = "hangar:instance-arn";
    pub const MANAGED_BY: &str = "hangar:managed-by";
    pub const MANAGED_BY_VALUE: &str = "hangar";
}

/// Hangar's lifecycle of a runner instance, kept in the `hangar:lifecycle` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Launched; the runner has not picked up a job yet (booting or idle: GitHub is not asked).
    Pending,
    /// Registered and waiting for a job (set when known, e.g. by the boot agent).
    Idle,
    /// Running a job (`in_progress` webhook named this runner).
    Busy,
    /// Will be terminated; takes no new job.
    Draining,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Pending => "pending",
            Lifecycle::Idle => "idle",
            Lifecycle::Busy => "busy",
            Lifecycle::Draining => "draining",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Lifecycle::Pending,
            "idle" => Lifecycle::Idle,
            "busy" => Lifecycle::Busy,
            "draining" => Lifecycle::Draining,
            _ => return None,
        })
    }
}

/// EC2's own instance state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ec2State {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl Ec2State {
    /// Counts towards `max_runners`: everything that exists or may come back.
    pub fn counts_toward_cap(self) -> bool {
        !matches!(self, Ec2State::ShuttingDown | Ec2State::Terminated)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedInstance {
    pub id: InstanceId,
    pub pool: PoolName,
    pub ec2_state: Ec2State,
    pub lifecycle: Lifecycle,
    pub launched_at: DateTime<Utc>,
    pub job_id: Option<JobId>,
    pub capacity_type: CapacityType,
    pub instance_type: String,
    /// A spot interruption warning was received for this instance.
    pub interrupted: bool,
}

impl ObservedInstance {
    pub fn runner_name(&self) -> RunnerName {
        RunnerName::for_instance(&self.pool, &self.id)
    }
}

impl RunnerName {
    /// Runner names are derived from the instance id, so an `in_progress` webhook's `runner_name`
    /// leads to the instance without asking GitHub, and CreateFleet needs no per-instance tags.
    pub fn for_instance(pool: &PoolName, id: &InstanceId) -> Self {
        RunnerName(format!("hangar-{}-{}", pool.as_str(), id.as_str()))
    }

    /// The inverse of [`RunnerName::for_instance`]; `None` for runners Hangar did not name.
    pub fn instance_id(&self) -> Option<InstanceId> {
        let rest = self.0.strip_prefix("hangar-")?;
        let idx = rest.rfind("-i-")?;
        let id = &rest[idx + 1..];
        let hex = id.strip_prefix("i-")?;
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Some(InstanceId(id.to_owned()))
    }

    pub fn pool(&self) -> Option<PoolName> {
        let rest = self.0.strip_prefix("hangar-")?;
        let idx = rest.rfind("-i-")?;
        Some(PoolName(rest[..idx].to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_name_round_trips_to_instance_and_pool() {
        let n = RunnerName::for_instance(&"linux-x64".into(), &"i-0abc123".into());
        assert_eq!(n.as_str(), "hangar-linux-x64-i-0abc123");
        assert_eq!(n.instance_id(), Some(InstanceId::from("i-0abc123")));
        assert_eq!(n.pool(), Some(PoolName::from("linux-x64")));
    }

    #[test]
    fn foreign_runner_names_are_not_ours() {
        for n in ["my-laptop", "hangar-", "hangar-x-i-", "hangar-x-i-zz", "GitHub Actions 2"] {
            assert_eq!(RunnerName::from(n).instance_id(), None, "{n}");
        }
    }
}
