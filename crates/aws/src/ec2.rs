//! Runner instances on EC2: launch through an `instant` CreateFleet, read a pool back from its
//! tags, tag, terminate, stop and start.
//!
//! Launching is where money is spent, so [`Ec2Fleet::launch`] is careful about three things:
//! - every CreateFleet carries a `ClientToken` derived from the request, so a retried call (by
//!   the SDK after a lost response, or by a redelivered SQS message replaying the same steps)
//!   returns the original fleet instead of launching again;
//! - the per-override `Errors` of the response are read: a spot pool that is out of capacity is
//!   excluded and the remaining capacity is asked for on the other type/subnet pairs, then
//!   on-demand when the pool allows it;
//! - the number of calls is bounded ([`FleetOptions::max_calls_per_launch`]).

use crate::error::{classify, code_is_retryable};
use async_trait::async_trait;
use aws_sdk_ec2::types::{
    CreateFleetError as FleetOverrideError, DefaultTargetCapacityType, Filter,
    FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, FleetOnDemandAllocationStrategy, FleetType, Instance,
    InstanceLifecycle, InstanceLifecycleType, InstanceStateName, InstanceType, OnDemandOptionsRequest,
    ResourceType, SpotAllocationStrategy, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};
use chrono::{DateTime, Utc};
use hangar_core::config::{CapacityType, PoolConfig};
use hangar_core::ids::{InstanceId, JobId, PoolName};
use hangar_core::ports::{Fleet, LaunchFailure, LaunchOutcome, LaunchRequest, LaunchedInstance, PortError};
use hangar_core::state::{tags, Ec2State, Lifecycle, ObservedInstance};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// Per-override error codes that mean the whole market (not one type/subnet pair) is out for
/// this account: stop asking it and fall back at once.
const MARKET_WIDE_CODES: &[&str] = &[
    "MaxSpotInstanceCountExceeded",
    "MaxSpotFleetRequestCountExceeded",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
];

/// TerminateInstances / StopInstances / StartInstances ids per call; EC2 documents 1000 as the
/// ceiling, a smaller batch keeps one bad id from failing a huge request.
const ID_BATCH: usize = 500;

/// EC2's `ClientToken` is at most 64 ASCII characters.
const CLIENT_TOKEN_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOptions {
    /// Upper bound on CreateFleet calls for one [`LaunchRequest`], fallbacks included.
    pub max_calls_per_launch: u32,
    /// Launch template version to use: `$Default` lets operators roll AMIs by changing the
    /// template's default version.
    pub launch_template_version: String,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self { max_calls_per_launch: 5, launch_template_version: "$Default".into() }
    }
}

/// [`Fleet`] on EC2.
///
/// IAM: `ec2:CreateFleet`, `ec2:RunInstances`, `ec2:CreateTags` (at launch, condition
/// `ec2:CreateAction=CreateFleet`; later on pool instances), `ec2:DeleteTags`, `ec2:DescribeInstances`,
/// `ec2:TerminateInstances`, `ec2:StopInstances`, `ec2:StartInstances`, `iam:PassRole` on the
/// runner instance role, and `iam:CreateServiceLinkedRole` once for spot.
#[derive(Debug, Clone)]
pub struct Ec2Fleet {
    client: aws_sdk_ec2::Client,
    opts: FleetOptions,
}

/// One type/subnet pair of the pool; `None` leaves the value to the launch template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Pair {
    instance_type: Option<String>,
    subnet: Option<String>,
}

impl Pair {
    /// An error names the pair it failed for; a missing field matches any value.
    fn matched_by(&self, instance_type: Option<&str>, subnet: Option<&str>) -> bool {
        instance_type.is_none_or(|t| self.instance_type.as_deref() == Some(t))
            && subnet.is_none_or(|s| self.subnet.as_deref() == Some(s))
    }
}

/// The idempotency token for one CreateFleet call of a launch. It covers the request key and
/// everything that shapes the call, so replaying the same steps reuses the same tokens (EC2
/// returns the original fleet) while a different call never collides with an earlier one
/// (which EC2 would refuse as `IdempotentParameterMismatch`).
pub fn client_token(
    idempotency_key: &str,
    attempt: u32,
    market: CapacityType,
    count: u32,
    overrides: &[(Option<&str>, Option<&str>)],
) -> String {
    let mut h = Sha256::new();
    for part in [idempotency_key, &attempt.to_string(), market.as_str(), &count.to_string()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    for (t, s) in overrides {
        h.update(t.unwrap_or("-").as_bytes());
        h.update([1u8]);
        h.update(s.unwrap_or("-").as_bytes());
        h.update([0u8]);
    }
    let mut token = hex::encode(h.finalize());
    token.truncate(CLIENT_TOKEN_MAX);
    token
}

/// `lt-` and 17 hex digits (older ids have 8) is an id; anything else is a name (names may
/// themselves start with `lt-`).
pub fn is_template_id(s: &str) -> bool {
    s.strip_prefix("lt-")
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit()))
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn market_of(lifecycle: Option<&InstanceLifecycle>, asked: CapacityType) -> CapacityType {
    match lifecycle {
        Some(InstanceLifecycle::Spot) => CapacityType::Spot,
        Some(InstanceLifecycle::OnDemand) => CapacityType::OnDemand,
        _ => asked,
    }
}

fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn ec2_state(s: Option<&InstanceStateName>) -> Option<Ec2State> {
    Some(match s? {
        InstanceStateName::Pending => Ec2State::Pending,
        InstanceStateName::Running => Ec2State::Running,
        InstanceStateName::Stopping => Ec2State::Stopping,
        InstanceStateName::Stopped => Ec2State::Stopped,
        InstanceStateName::ShuttingDown => Ec2State::ShuttingDown,
        InstanceStateName::Terminated => Ec2State::Terminated,
        _ => return None,
    })
}

/// Reads one described instance into the core's view. Instances without an id or a known state
/// are skipped (EC2 always sends both); a missing or foreign lifecycle tag reads as `pending`,
/// which counts toward the cap and is reaped by the boot timeout, the safe side either way.
pub fn observe(pool: &PoolName, inst: &Instance) -> Option<ObservedInstance> {
    let id = inst.instance_id()?;
    let ec2_state = ec2_state(inst.state().and_then(|s| s.name()))?;
    let tag_value = |k: &str| inst.tags().iter().find(|t| t.key() == Some(k)).and_then(|t| t.value());
    let lifecycle = tag_value(tags::LIFECYCLE).and_then(Lifecycle::parse).unwrap_or(Lifecycle::Pending);
    let job_id = tag_value(tags::JOB_ID).and_then(|v| v.trim().parse::<u64>().ok()).map(JobId);
    let capacity_type = match inst.instance_lifecycle() {
        Some(InstanceLifecycleType::Spot) => CapacityType::Spot,
        _ => CapacityType::OnDemand,
    };
    Some(ObservedInstance {
        id: InstanceId::from(id),
        pool: tag_value(tags::POOL).map(PoolName::from).unwrap_or_else(|| pool.clone()),
        ec2_state,
        lifecycle,
        // EC2 always reports it; the epoch makes a malformed instance look old, so the boot
        // timeout reaps it rather than letting it linger.
        launched_at: inst.launch_time().and_then(to_chrono).unwrap_or(DateTime::UNIX_EPOCH),
        job_id,
        capacity_type,
        instance_type: inst.instance_type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
        interrupted: tag_value(tags::INTERRUPTED).is_some_and(interrupted_tag_says_so),
    })
}

/// Both the scaler and the boot agent write `hangar:interrupted=true`; boot agents of older
/// images wrote the notice's time instead. Any value but `false` means a spot notice was seen,
/// so a job reclaimed on such an instance is still re-run.
fn interrupted_tag_says_so(value: &str) -> bool {
    !value.trim().eq_ignore_ascii_case("false")
}

/// Pulls the instance ids an `InvalidInstanceID.NotFound` message names
/// (`The instance ID 'i-1' does not exist`, `The instance IDs 'i-1, i-2' do not exist`).
fn ids_in_message(msg: &str) -> HashSet<String> {
    msg.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            w.strip_prefix("i-").is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .map(str::to_owned)
        .collect()
}

enum BatchOp {
    Terminate,
    Stop,
    Start,
}

impl BatchOp {
    fn name(&self) -> &'static str {
        match self {
            BatchOp::Terminate => "ec2:TerminateInstances",
            BatchOp::Stop => "ec2:StopInstances",
            BatchOp::Start => "ec2:StartInstances",
        }
    }
}

impl Ec2Fleet {
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        Self { client, opts: FleetOptions::default() }
    }

    pub fn with_options(client: aws_sdk_ec2::Client, opts: FleetOptions) -> Self {
        Self { client, opts }
    }

    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    /// Stops instances (kept for a stopped warm pool). IAM: `ec2:StopInstances`.
    pub async fn stop(&self, ids: &[InstanceId]) -> Result<(), PortError> {
        self.batch(BatchOp::Stop, ids).await
    }

    /// Starts stopped instances. IAM: `ec2:StartInstances`.
    pub async fn start(&self, ids: &[InstanceId]) -> Result<(), PortError> {
        self.batch(BatchOp::Start, ids).await
    }

    /// Sets arbitrary tags on one instance. IAM: `ec2:CreateTags`.
    pub async fn tag(&self, id: &InstanceId, pairs: &[(&str, &str)]) -> Result<(), PortError> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.client
            .create_tags()
            .resources(id.as_str())
            .set_tags(Some(pairs.iter().map(|(k, v)| tag(k, v)).collect()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("ec2:CreateTags", e, |_| None))
    }

    /// Runs one batch operation over `ids` in chunks. Ids EC2 no longer knows are treated as
    /// done: terminating an instance that is already gone is what the caller wanted.
    async fn batch(&self, op: BatchOp, ids: &[InstanceId]) -> Result<(), PortError> {
        for chunk in ids.chunks(ID_BATCH) {
            let mut pending: Vec<String> = chunk.iter().map(|i| i.as_str().to_owned()).collect();
            pending.sort();
            pending.dedup();
            // Each round removes at least one id, so this ends; the bound is a guard.
            for _ in 0..=chunk.len() {
                if pending.is_empty() {
                    break;
                }
                let res = match op {
                    BatchOp::Terminate => self
                        .client
                        .terminate_instances()
                        .set_instance_ids(Some(pending.clone()))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| classify(op.name(), e, |_| None)),
                    BatchOp::Stop => self
                        .client
                        .stop_instances()
                        .set_instance_ids(Some(pending.clone()))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| classify(op.name(), e, |_| None)),
                    BatchOp::Start => self
                        .client
                        .start_instances()
                        .set_instance_ids(Some(pending.clone()))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| classify(op.name(), e, |_| None)),
                };
                match res {
                    Ok(()) => break,
                    Err(e) if e.code.as_deref() == Some("InvalidInstanceID.NotFound") => {
                        let gone = ids_in_message(&e.message);
                        let before = pending.len();
                        pending.retain(|id| !gone.contains(id));
                        if pending.len() == before {
                            // The message named none of ours: we cannot tell which are gone.
                            return Err(e);
                        }
                        tracing::info!(
                            operation = op.name(),
                            gone = before - pending.len(),
                            "skipping unknown instance ids"
                        );
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn pairs(pool: &PoolConfig) -> Vec<Pair> {
        let types: Vec<Option<String>> = if pool.instance_types.is_empty() {
            vec![None]
        } else {
            pool.instance_types.iter().cloned().map(Some).collect()
        };
        let subnets: Vec<Option<String>> = if pool.subnets.is_empty() {
            vec![None]
        } else {
            pool.subnets.iter().cloned().map(Some).collect()
        };
        let mut out = Vec::with_capacity(types.len() * subnets.len());
        for t in &types {
            for s in &subnets {
                out.push(Pair { instance_type: t.clone(), subnet: s.clone() });
            }
        }
        out
    }

    fn tag_specs(req: &LaunchRequest) -> Vec<TagSpecification> {
        let tags = vec![
            tag(tags::POOL, req.pool.name.as_str()),
            tag(tags::LIFECYCLE, Lifecycle::Pending.as_str()),
            tag(tags::LAUNCH_REASON, req.reason.as_str()),
            tag(tags::MANAGED_BY, tags::MANAGED_BY_VALUE),
        ];
        [ResourceType::Instance, ResourceType::Volume]
            .into_iter()
            .map(|rt| TagSpecification::builder().resource_type(rt).set_tags(Some(tags.clone())).build())
            .collect()
    }

    async fn create_fleet_once(
        &self,
        req: &LaunchRequest,
        template: &str,
        market: CapacityType,
        count: u32,
        pairs: &[&Pair],
        token: String,
    ) -> Result<aws_sdk_ec2::operation::create_fleet::CreateFleetOutput, PortError> {
        let mut spec =
            FleetLaunchTemplateSpecificationRequest::builder().version(&self.opts.launch_template_version);
        spec = if is_template_id(template) {
            spec.launch_template_id(template)
        } else {
            spec.launch_template_name(template)
        };
        let overrides = pairs
            .iter()
            .map(|p| {
                FleetLaunchTemplateOverridesRequest::builder()
                    .set_instance_type(p.instance_type.as_deref().map(InstanceType::from))
                    .set_subnet_id(p.subnet.clone())
                    .build()
            })
            .collect();
        let config = FleetLaunchTemplateConfigRequest::builder()
            .launch_template_specification(spec.build())
            .set_overrides(Some(overrides))
            .build();
        let default_type = match market {
            CapacityType::Spot => DefaultTargetCapacityType::Spot,
            CapacityType::OnDemand => DefaultTargetCapacityType::OnDemand,
        };
        let target = TargetCapacitySpecificationRequest::builder()
            .total_target_capacity(count as i32)
            .default_target_capacity_type(default_type)
            .build();
        let mut call = self
            .client
            .create_fleet()
            .r#type(FleetType::Instant)
            .client_token(token)
            .launch_template_configs(config)
            .target_capacity_specification(target)
            .set_tag_specifications(Some(Self::tag_specs(req)));
        call = match market {
            CapacityType::Spot => call.spot_options(
                SpotOptionsRequest::builder()
                    .allocation_strategy(SpotAllocationStrategy::from(
                        req.pool.market.allocation_strategy.as_str(),
                    ))
                    .build(),
            ),
            CapacityType::OnDemand => call.on_demand_options(
                OnDemandOptionsRequest::builder()
                    .allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice)
                    .build(),
            ),
        };
        call.send().await.map_err(|e| classify("ec2:CreateFleet", e, |_| None))
    }
}

fn failure_of(err: &FleetOverrideError, asked: CapacityType) -> LaunchFailure {
    let ov = err.launch_template_and_overrides().and_then(|l| l.overrides());
    LaunchFailure {
        code: err.error_code().unwrap_or("Unknown").to_owned(),
        message: err.error_message().unwrap_or_default().chars().take(300).collect(),
        instance_type: ov.and_then(|o| o.instance_type()).map(|t| t.as_str().to_owned()),
        subnet: ov.and_then(|o| o.subnet_id()).map(str::to_owned),
        capacity_type: market_of(err.lifecycle(), asked),
    }
}

#[async_trait]
impl Fleet for Ec2Fleet {
    async fn launch(&self, req: &LaunchRequest) -> Result<LaunchOutcome, PortError> {
        const OP: &str = "ec2:CreateFleet";
        let mut outcome = LaunchOutcome::default();
        if req.count == 0 {
            return Ok(outcome);
        }
        let Some(template) = req.pool.launch_template.as_deref().filter(|t| !t.trim().is_empty()) else {
            return Err(PortError::permanent(
                OP,
                Some("NoLaunchTemplate".into()),
                format!("pool `{}` has no launch_template", req.pool.name),
            ));
        };
        let key = req.idempotency_key.clone();
        let all = Self::pairs(&req.pool);
        let mut excluded_spot: HashSet<Pair> = HashSet::new();
        let mut excluded_od: HashSet<Pair> = HashSet::new();
        let mut market = req.pool.market.capacity_type;
        let fallback = req.pool.market.on_demand_fallback;
        let mut remaining = req.count;
        let mut attempt = 0u32;

        while remaining > 0 && outcome.calls < self.opts.max_calls_per_launch.max(1) {
            let excluded = if market == CapacityType::Spot { &excluded_spot } else { &excluded_od };
            let candidates: Vec<&Pair> = all.iter().filter(|p| !excluded.contains(*p)).collect();
            if candidates.is_empty() {
                if market == CapacityType::Spot && fallback {
                    market = CapacityType::OnDemand;
                    continue;
                }
                break;
            }
            let shape: Vec<(Option<&str>, Option<&str>)> =
                candidates.iter().map(|p| (p.instance_type.as_deref(), p.subnet.as_deref())).collect();
            let token = client_token(&key, attempt, market, remaining, &shape);
            attempt += 1;
            outcome.calls += 1;
            let resp = match self
                .create_fleet_once(req, template, market, remaining, &candidates, token)
                .await
            {
                Ok(r) => r,
                Err(e) if outcome.launched.is_empty() => return Err(e),
                Err(e) => {
                    // Instances are already running: report them (they are tagged, so reconcile
                    // sees them either way) and the error as a failure, rather than losing them.
                    tracing::warn!(pool = %req.pool.name, code = e.code.as_deref().unwrap_or(""), "fallback CreateFleet failed");
                    outcome.failures.push(LaunchFailure {
                        code: e.code.clone().unwrap_or_else(|| "Error".into()),
                        message: e.message.clone(),
                        instance_type: None,
                        subnet: None,
                        capacity_type: market,
                    });
                    break;
                }
            };
            let mut got = 0u32;
            for inst in resp.instances() {
                let capacity_type = market_of(inst.lifecycle(), market);
                let ov = inst.launch_template_and_overrides().and_then(|l| l.overrides());
                for id in inst.instance_ids() {
                    got += 1;
                    outcome.launched.push(LaunchedInstance {
                        id: InstanceId::from(id.as_str()),
                        capacity_type,
                        instance_type: inst
                            .instance_type()
                            .map(|t| t.as_str().to_owned())
                            .or_else(|| ov.and_then(|o| o.instance_type()).map(|t| t.as_str().to_owned()))
                            .unwrap_or_default(),
                        subnet: inst
                            .subnet_id()
                            .or_else(|| ov.and_then(|o| o.subnet_id()))
                            .map(str::to_owned),
                    });
                }
            }
            remaining = remaining.saturating_sub(got);
            let mut excluded_any = false;
            let mut market_out = false;
            for err in resp.errors() {
                let f = failure_of(err, market);
                tracing::info!(
                    pool = %req.pool.name,
                    code = %f.code,
                    instance_type = f.instance_type.as_deref().unwrap_or(""),
                    subnet = f.subnet.as_deref().unwrap_or(""),
                    capacity_type = f.capacity_type.as_str(),
                    "CreateFleet override error"
                );
                if MARKET_WIDE_CODES.contains(&f.code.as_str()) {
                    market_out = true;
                } else if f.instance_type.is_some() || f.subnet.is_some() {
                    let set = if f.capacity_type == CapacityType::Spot {
                        &mut excluded_spot
                    } else {
                        &mut excluded_od
                    };
                    for p in &all {
                        if p.matched_by(f.instance_type.as_deref(), f.subnet.as_deref())
                            && set.insert(p.clone())
                        {
                            excluded_any = true;
                        }
                    }
                }
                outcome.failures.push(f);
            }
            if remaining == 0 {
                break;
            }
            if market_out || !excluded_any {
                // Nothing left to learn on this market: the same call would fail the same way.
                if market == CapacityType::Spot && fallback {
                    market = CapacityType::OnDemand;
                    continue;
                }
                break;
            }
        }
        if remaining > 0 {
            tracing::warn!(pool = %req.pool.name, asked = req.count, short = remaining, calls = outcome.calls, "launch short of request");
        }
        Ok(outcome)
    }

    async fn describe_pool(&self, pool: &PoolName) -> Result<Vec<ObservedInstance>, PortError> {
        let mut pages = self
            .client
            .describe_instances()
            .filters(Filter::builder().name(format!("tag:{}", tags::POOL)).values(pool.as_str()).build())
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("ec2:DescribeInstances", e, |_| None))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().filter_map(|i| observe(pool, i)));
            }
        }
        Ok(out)
    }

    async fn terminate(&self, ids: &[InstanceId]) -> Result<(), PortError> {
        self.batch(BatchOp::Terminate, ids).await
    }

    async fn set_lifecycle(
        &self,
        id: &InstanceId,
        lifecycle: Lifecycle,
        job_id: Option<JobId>,
    ) -> Result<(), PortError> {
        match job_id {
            Some(j) => {
                self.tag(id, &[(tags::LIFECYCLE, lifecycle.as_str()), (tags::JOB_ID, &j.to_string())]).await
            }
            None => {
                self.tag(id, &[(tags::LIFECYCLE, lifecycle.as_str())]).await?;
                // Deleting a tag the instance does not have succeeds, so this stays idempotent.
                self.client
                    .delete_tags()
                    .resources(id.as_str())
                    .tags(Tag::builder().key(tags::JOB_ID).build())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("ec2:DeleteTags", e, |_| None))
            }
        }
    }

    async fn mark_interrupted(&self, id: &InstanceId) -> Result<(), PortError> {
        self.tag(id, &[(tags::INTERRUPTED, "true")]).await
    }
}

/// Is a launch failure code about capacity (worth retrying elsewhere), as opposed to a
/// configuration error an operator must fix?
pub fn is_capacity_code(code: &str) -> bool {
    MARKET_WIDE_CODES.contains(&code)
        || code_is_retryable(code)
        || matches!(
            code,
            "SpotMaxPriceTooLow"
                | "InsufficientFreeAddressesInSubnet"
                | "UnfulfillableCapacity"
                | "InsufficientHostCapacity"
                | "InsufficientReservedInstanceCapacity"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_fit_ec2_and_differ_per_call() {
        let ov = [(Some("m5.large"), Some("subnet-1"))];
        let a = client_token("msg-1", 0, CapacityType::Spot, 3, &ov);
        assert_eq!(a.len(), 64);
        assert!(a.is_ascii());
        assert_eq!(a, client_token("msg-1", 0, CapacityType::Spot, 3, &ov));
        assert_ne!(a, client_token("msg-1", 1, CapacityType::Spot, 3, &ov));
        assert_ne!(a, client_token("msg-1", 0, CapacityType::OnDemand, 3, &ov));
        assert_ne!(a, client_token("msg-1", 0, CapacityType::Spot, 2, &ov));
        assert_ne!(a, client_token("msg-2", 0, CapacityType::Spot, 3, &ov));
        assert_ne!(
            a,
            client_token("msg-1", 0, CapacityType::Spot, 3, &[(Some("c5.large"), Some("subnet-1"))])
        );
    }

    #[test]
    fn template_ids_are_told_from_names() {
        assert!(is_template_id("lt-0abc1234def567890"));
        assert!(is_template_id("lt-12345678"));
        assert!(!is_template_id("lt-runners"));
        assert!(!is_template_id("linux-runners"));
        assert!(!is_template_id("lt-"));
    }

    #[test]
    fn not_found_messages_name_the_missing_ids() {
        let one = ids_in_message("The instance ID 'i-0abc123' does not exist");
        assert_eq!(one, HashSet::from(["i-0abc123".to_owned()]));
        let two = ids_in_message("The instance IDs 'i-1a, i-2b' do not exist");
        assert_eq!(two, HashSet::from(["i-1a".to_owned(), "i-2b".to_owned()]));
        assert!(ids_in_message("Request limit exceeded. i-zz is not hex").is_empty());
    }

    #[test]
    fn pairs_cover_types_times_subnets() {
        let pool: PoolConfig = pool_fixture();
        let pairs = Ec2Fleet::pairs(&pool);
        assert_eq!(pairs.len(), 4);
        let p = Pair { instance_type: Some("m5.large".into()), subnet: Some("subnet-b".into()) };
        assert!(pairs.contains(&p));
        assert!(p.matched_by(Some("m5.large"), None));
        assert!(p.matched_by(None, Some("subnet-b")));
        assert!(!p.matched_by(Some("c5.large"), Some("subnet-b")));
    }

    fn pool_fixture() -> PoolConfig {
        serde_json::from_value(serde_json::json!({
            "name": "p", "labels": ["x"], "instance_types": ["m5.large", "c5.large"],
            "subnets": ["subnet-a", "subnet-b"], "max_runners": 3
        }))
        .unwrap()
    }
}
