//! SSM Parameter Store: one SecureString JIT runner config per instance, and the configuration
//! and secrets the Lambdas load at cold start.

use crate::error::classify;
use async_trait::async_trait;
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterTier, ParameterType, ResourceTypeForTagging, Tag};
use chrono::{DateTime, Utc};
use hangar_core::ids::{InstanceId, PoolName};
use hangar_core::ports::{JitStore, PortError, StoredJit};
use hangar_core::secret::Secret;
use hangar_core::state::tags;

/// Where JIT configs live unless configured otherwise.
pub const DEFAULT_JIT_PREFIX: &str = "/hangar/jit";

/// Standard-tier parameters hold 4 KB; larger values need the advanced tier (which costs money,
/// so it is only used when the value needs it).
const STANDARD_TIER_MAX: usize = 4096;

/// The description carries the pool so that listing needs no per-parameter tag lookups.
const POOL_MARKER: &str = "hangar:pool=";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsmSetupError {
    #[error(
        "JIT parameter prefix `{0}` must start with `/`, not end with `/`, and use only [A-Za-z0-9_.-/]"
    )]
    InvalidPrefix(String),
}

/// [`JitStore`] on SSM Parameter Store: `{prefix}/{instance-id}`, SecureString, tagged with
/// `hangar:instance-id` and `hangar:pool`, so an IAM condition can restrict each instance to
/// its own parameter.
///
/// IAM: `ssm:PutParameter`, `ssm:AddTagsToResource`, `ssm:DeleteParameter`,
/// `ssm:DeleteParameters`, `ssm:DescribeParameters` on `parameter{prefix}/*`; `kms:Encrypt` on
/// the key (the AWS-managed `aws/ssm` key unless `kms_key_id` is set).
#[derive(Debug, Clone)]
pub struct SsmJitStore {
    client: aws_sdk_ssm::Client,
    prefix: String,
    kms_key_id: Option<String>,
    instance_arn_prefix: Option<String>,
}

fn valid_instance_id(id: &InstanceId) -> bool {
    id.as_str()
        .strip_prefix("i-")
        .is_some_and(|h| !h.is_empty() && h.len() <= 32 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn ssm_tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build().expect("key and value are set")
}

impl SsmJitStore {
    pub fn new(client: aws_sdk_ssm::Client) -> Self {
        Self { client, prefix: DEFAULT_JIT_PREFIX.into(), kms_key_id: None, instance_arn_prefix: None }
    }

    pub fn with_prefix(client: aws_sdk_ssm::Client, prefix: &str) -> Result<Self, SsmSetupError> {
        let ok = prefix.len() > 1
            && prefix.starts_with('/')
            && !prefix.ends_with('/')
            && !prefix.contains("//")
            && prefix.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
        if !ok {
            return Err(SsmSetupError::InvalidPrefix(prefix.to_owned()));
        }
        Ok(Self { client, prefix: prefix.to_owned(), kms_key_id: None, instance_arn_prefix: None })
    }

    /// Encrypt with this customer-managed KMS key instead of `aws/ssm`.
    pub fn with_kms_key(mut self, key_id: impl Into<String>) -> Self {
        self.kms_key_id = Some(key_id.into());
        self
    }

    /// Also tag each parameter `hangar:instance-arn = {prefix}{instance-id}`, where `prefix` is
    /// `arn:PARTITION:ec2:REGION:ACCOUNT:instance/`. The runner role's policy compares that tag
    /// with `${ec2:SourceInstanceARN}`: IAM has no policy variable for the bare instance id, so
    /// this tag is what limits each instance to its own parameter.
    pub fn with_instance_arn_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.instance_arn_prefix = Some(prefix.into());
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The parameter name for an instance, as the boot agent computes it too.
    pub fn parameter_name(&self, instance: &InstanceId) -> String {
        format!("{}/{}", self.prefix, instance.as_str())
    }

    fn check(op: &'static str, instance: &InstanceId) -> Result<(), PortError> {
        if valid_instance_id(instance) {
            Ok(())
        } else {
            Err(PortError::permanent(
                op,
                Some("InvalidInstanceId".into()),
                format!("`{instance}` is not an EC2 instance id"),
            ))
        }
    }

    /// Deletes many parameters, 10 per `DeleteParameters` call (the API's limit). Names SSM does
    /// not know count as deleted. IAM: `ssm:DeleteParameters`.
    pub async fn delete_many(&self, instances: &[InstanceId]) -> Result<(), PortError> {
        for i in instances {
            Self::check("ssm:DeleteParameters", i)?;
        }
        let names: Vec<String> = instances.iter().map(|i| self.parameter_name(i)).collect();
        for chunk in names.chunks(10) {
            self.client.delete_parameters().set_names(Some(chunk.to_vec())).send().await.map_err(|e| {
                classify("ssm:DeleteParameters", e, |e| e.is_internal_server_error().then_some(true))
            })?;
        }
        Ok(())
    }
}

#[async_trait]
impl JitStore for SsmJitStore {
    async fn put(&self, instance: &InstanceId, pool: &PoolName, jit: &Secret) -> Result<(), PortError> {
        const OP: &str = "ssm:PutParameter";
        Self::check(OP, instance)?;
        let name = self.parameter_name(instance);
        let tier = if jit.expose().len() > STANDARD_TIER_MAX {
            ParameterTier::Advanced
        } else {
            ParameterTier::Standard
        };
        let mut tag_list = vec![
            ssm_tag(tags::INSTANCE_ID, instance.as_str()),
            ssm_tag(tags::POOL, pool.as_str()),
            ssm_tag(tags::MANAGED_BY, tags::MANAGED_BY_VALUE),
        ];
        if let Some(arn_prefix) = &self.instance_arn_prefix {
            tag_list.push(ssm_tag(tags::INSTANCE_ARN, &format!("{arn_prefix}{}", instance.as_str())));
        }
        let description = format!("Hangar JIT runner config; {POOL_MARKER}{pool}");
        let put = |overwrite: bool| {
            let b = self
                .client
                .put_parameter()
                .name(&name)
                .value(jit.expose())
                .r#type(ParameterType::SecureString)
                .tier(tier.clone())
                .description(&description)
                .set_key_id(self.kms_key_id.clone())
                .overwrite(overwrite);
            // SSM refuses tags together with Overwrite, so tags go with the create only.
            if overwrite {
                b
            } else {
                b.set_tags(Some(tag_list.clone()))
            }
        };
        let typed = |e: &aws_sdk_ssm::operation::put_parameter::PutParameterError| {
            if e.is_too_many_updates() || e.is_internal_server_error() {
                Some(true)
            } else if e.is_parameter_limit_exceeded()
                || e.is_invalid_key_id()
                || e.is_unsupported_parameter_type()
            {
                Some(false)
            } else {
                None
            }
        };
        match put(false).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_already_exists()) => {
                // A retry after a lost response, or an instance id reused by a relaunch: replace
                // the value, then make sure the tags are ours.
                tracing::debug!(instance = %instance, "JIT parameter exists; overwriting");
                put(true).send().await.map_err(|e| classify(OP, e, typed))?;
                self.client
                    .add_tags_to_resource()
                    .resource_type(ResourceTypeForTagging::Parameter)
                    .resource_id(&name)
                    .set_tags(Some(tag_list))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        classify("ssm:AddTagsToResource", e, |e| {
                            (e.is_too_many_updates() || e.is_internal_server_error()).then_some(true)
                        })
                    })
            }
            Err(e) => Err(classify(OP, e, typed)),
        }
    }

    async fn delete(&self, instance: &InstanceId) -> Result<(), PortError> {
        const OP: &str = "ssm:DeleteParameter";
        Self::check(OP, instance)?;
        match self.client.delete_parameter().name(self.parameter_name(instance)).send().await {
            Ok(_) => Ok(()),
            // The boot agent deletes its parameter on first read; gone is the goal.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => Ok(()),
            Err(e) => Err(classify(OP, e, |e| e.is_internal_server_error().then_some(true))),
        }
    }

    async fn list(&self) -> Result<Vec<StoredJit>, PortError> {
        const OP: &str = "ssm:DescribeParameters";
        let filter = ParameterStringFilter::builder()
            .key("Path")
            .option("OneLevel")
            .values(&self.prefix)
            .build()
            .expect("key is set");
        let mut pages = self
            .client
            .describe_parameters()
            .parameter_filters(filter)
            .max_results(50)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        let lead = format!("{}/", self.prefix);
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(OP, e, |e| e.is_internal_server_error().then_some(true)))?;
            for p in page.parameters() {
                let Some(id) = p.name().and_then(|n| n.strip_prefix(&lead)).map(InstanceId::from) else {
                    continue;
                };
                // Anything else under the prefix is not ours to judge.
                if !valid_instance_id(&id) {
                    continue;
                }
                let pool = p
                    .description()
                    .and_then(|d| d.split_once(POOL_MARKER))
                    .map(|(_, pool)| PoolName::from(pool.trim()))
                    .filter(|p| !p.as_str().is_empty());
                out.push(StoredJit {
                    instance_id: id,
                    pool,
                    created_at: p.last_modified_date().and_then(to_chrono),
                });
            }
        }
        Ok(out)
    }
}

/// Reads configuration and secrets (webhook secret, GitHub App key, pool config) from
/// Parameter Store, decrypted.
///
/// IAM: `ssm:GetParameter` / `ssm:GetParameters` on the named parameters, `kms:Decrypt` on
/// their key.
#[derive(Debug, Clone)]
pub struct SsmConfigSource {
    client: aws_sdk_ssm::Client,
}

impl SsmConfigSource {
    pub fn new(client: aws_sdk_ssm::Client) -> Self {
        Self { client }
    }

    /// The decrypted value of one parameter; a missing one is a permanent `ParameterNotFound`.
    pub async fn get(&self, name: &str) -> Result<Secret, PortError> {
        const OP: &str = "ssm:GetParameter";
        let out = self.client.get_parameter().name(name).with_decryption(true).send().await.map_err(|e| {
            classify(OP, e, |e| {
                if e.is_internal_server_error() {
                    Some(true)
                } else if e.is_parameter_not_found()
                    || e.is_invalid_key_id()
                    || e.is_parameter_version_not_found()
                {
                    Some(false)
                } else {
                    None
                }
            })
        })?;
        out.parameter()
            .and_then(|p| p.value())
            .map(Secret::new)
            .ok_or_else(|| PortError::permanent(OP, None, format!("parameter `{name}` has no value")))
    }

    /// Several parameters in `GetParameters` calls of 10; the result follows `names`' order.
    /// Any missing name is a permanent `ParameterNotFound` naming it.
    pub async fn get_many(&self, names: &[&str]) -> Result<Vec<Secret>, PortError> {
        const OP: &str = "ssm:GetParameters";
        let mut found = std::collections::HashMap::new();
        for chunk in names.chunks(10) {
            let out = self
                .client
                .get_parameters()
                .set_names(Some(chunk.iter().map(|s| s.to_string()).collect()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| classify(OP, e, |e| e.is_internal_server_error().then_some(true)))?;
            for p in out.parameters() {
                if let (Some(n), Some(v)) = (p.name(), p.value()) {
                    found.insert(n.to_owned(), Secret::new(v));
                }
            }
        }
        names
            .iter()
            .map(|n| {
                found.get(*n).cloned().ok_or_else(|| {
                    PortError::permanent(
                        OP,
                        Some("ParameterNotFound".into()),
                        format!("parameter `{n}` not found"),
                    )
                })
            })
            .collect()
    }
}
