//! Typed identifiers. Each wraps the representation GitHub or AWS uses, so a job id can never be
//! passed where an installation id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! numeric_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(v: &str) -> Self {
                Self(v.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(v: String) -> Self {
                Self(v)
            }
        }
    };
}

numeric_id!(
    /// A `workflow_job` id (`workflow_job.id`).
    JobId
);
numeric_id!(
    /// A workflow run id (`workflow_job.run_id`).
    RunId
);
numeric_id!(
    /// A GitHub App installation id (`installation.id`).
    InstallationId
);
numeric_id!(
    /// A registered self-hosted runner's id in GitHub.
    RunnerId
);
numeric_id!(
    /// A runner group id in GitHub.
    RunnerGroupId
);
string_id!(
    /// An EC2 instance id (`i-...`).
    InstanceId
);
string_id!(
    /// A self-hosted runner's name, unique within the organisation.
    RunnerName
);
string_id!(
    /// A pool's name from the configuration.
    PoolName
);
string_id!(
    /// GitHub's `X-GitHub-Delivery` GUID.
    DeliveryId
);
string_id!(
    /// `owner/name` of a repository.
    RepoFullName
);
