//! One instance by id, for EC2 events: they name an instance but not its pool, and may name
//! instances Hangar does not manage (the EventBridge rule cannot filter on tags).

use async_trait::async_trait;
use hangar_aws::error::classify;
use hangar_aws::reexports::ec2;
use hangar_core::ids::{InstanceId, PoolName};
use hangar_core::ports::PortError;
use hangar_core::state::{tags, ObservedInstance};

#[async_trait]
pub trait InstanceLookup: Send + Sync {
    /// The instance as Hangar sees it, or `None` if EC2 does not know it or it carries no
    /// `hangar:pool` tag (not ours).
    async fn lookup(&self, id: &InstanceId) -> Result<Option<ObservedInstance>, PortError>;
}

/// [`InstanceLookup`] on EC2. IAM: `ec2:DescribeInstances`.
#[derive(Debug, Clone)]
pub struct Ec2InstanceLookup {
    client: ec2::Client,
}

impl Ec2InstanceLookup {
    pub fn new(client: ec2::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl InstanceLookup for Ec2InstanceLookup {
    async fn lookup(&self, id: &InstanceId) -> Result<Option<ObservedInstance>, PortError> {
        let out = match self.client.describe_instances().instance_ids(id.as_str()).send().await {
            Ok(o) => o,
            Err(e) => {
                let err = classify("ec2:DescribeInstances", e, |_| None);
                if err.code.as_deref() == Some("InvalidInstanceID.NotFound") {
                    return Ok(None);
                }
                return Err(err);
            }
        };
        let Some(inst) = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id.as_str()))
        else {
            return Ok(None);
        };
        let Some(pool) = inst.tags().iter().find(|t| t.key() == Some(tags::POOL)).and_then(|t| t.value())
        else {
            return Ok(None);
        };
        Ok(hangar_aws::ec2::observe(&PoolName::from(pool), inst))
    }
}
