//! Creates in moto what `infra/template.yaml` creates in AWS: the runner network, the launch
//! template, the FIFO scale queue and the standard provisioning queue, each with its dead-letter
//! queue, and the SSM parameters (pool configuration, webhook secret, GitHub App key, runner AMI).

use anyhow::Context;
use aws_sdk_ec2::types::{
    InstanceType, LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataOptionsRequest,
    RequestLaunchTemplateData, ResourceType, ShutdownBehavior, Tag, TagSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_ssm::types::ParameterType;
use base64::Engine;
use hangar_core::config::Config;
use std::collections::BTreeMap;

/// The stack's queue gives a message 5 receives of 360 s visibility: 30 minutes to succeed. The
/// demo's visibility is 5 s, so it allows 60 receives (5 minutes), keeping a retried message alive
/// through a GitHub outage or a throttling storm the way the deployed queue does.
const MAX_RECEIVE_COUNT: u32 = 60;

/// The provisioning queue gives a message 3 receives, as the stack's `ProvisionQueue` does, and
/// not a count scaled to the demo's shorter visibility like [`MAX_RECEIVE_COUNT`]: what matters
/// here is not how long a message lives but on which receive it goes. The provisioner gives an
/// instance up (terminates it at once) on the receive its `MAX_PROVISION_RECEIVES` (3) names,
/// which the stack makes its `maxReceiveCount` so that the give-up comes before the dead-letter
/// queue takes the message. Fewer here, and the dead-letter queue would take messages the
/// provisioner still retries; more, and a message whose invocations crash or time out would
/// come back more often than in AWS.
pub const PROVISION_MAX_RECEIVE_COUNT: u32 = 3;

/// The stack's `ProvisionQueue` retention (600 s: a message older than a runner's JIT deadline
/// is for an instance that is gone or going).
const PROVISION_RETENTION_SECS: u32 = 600;

pub const PROVISION_QUEUE: &str = "hangar-demo-provision";
pub const PROVISION_DLQ: &str = "hangar-demo-provision-dlq";

pub const CONFIG_PARAMETER: &str = "/hangar/hangar-demo/config";
pub const SECRET_PARAMETER: &str = "/hangar/webhook-secret";
pub const APP_KEY_PARAMETER: &str = "/hangar/github-app-private-key";
pub const AMI_PARAMETER: &str = "/hangar/ami/runner-arm64";
pub const JIT_PREFIX: &str = "/hangar/jit";
/// One of moto's built-in images.
const AMI: &str = "ami-12c6146b";

/// The job ledger's table, created as `infra/template.yaml` creates `JobLedgerTable`.
pub const LEDGER_TABLE: &str = "hangar-demo-jobs";

/// Creates the job ledger's table (the stack's `JobLedgerTable`).
pub async fn create_ledger(ddb: &hangar_aws::reexports::dynamodb::Client) -> anyhow::Result<()> {
    hangar_aws::dynamo::create_table(ddb, LEDGER_TABLE).await.context("CreateTable (job ledger)")
}

/// Jobs the ledger still holds as queued, over every pool.
pub async fn ledger_queued(
    ddb: &hangar_aws::reexports::dynamodb::Client,
    config: &Config,
) -> anyhow::Result<u64> {
    use hangar_core::ledger::JobLedger;
    let ledger = hangar_aws::dynamo::DynamoLedger::new(ddb.clone(), LEDGER_TABLE);
    let mut n = 0;
    for p in &config.pools {
        n += ledger.queued(&p.name).await.with_context(|| format!("ledger query for pool {}", p.name))?.len()
            as u64;
    }
    Ok(n)
}

pub struct Stack {
    pub queue_url: String,
    pub dlq_url: String,
    /// The provisioning queue (standard), where the counting planner's scaler sends one message
    /// per launched instance for the provisioner.
    pub provision_queue_url: String,
    pub provision_dlq_url: String,
    pub launch_templates: BTreeMap<String, String>,
    pub subnets: BTreeMap<String, String>,
    /// The configuration as deployed (subnet names and the GitHub URL filled in).
    pub config: Config,
}

/// The demo's configuration conventions applied: subnet names become the subnets created here,
/// and GitHub is the simulator.
pub fn localise(
    mut config: Config,
    subnets: &BTreeMap<String, String>,
    api_url: &str,
    app_id: u64,
) -> Config {
    config.github.api_url = api_url.to_owned();
    config.github.app_id = app_id;
    for p in &mut config.pools {
        p.subnets = p.subnets.iter().map(|s| subnets.get(s).cloned().unwrap_or_else(|| s.clone())).collect();
    }
    config
}

/// The same configuration with every warm pool at zero: what an operator deploys to drain.
pub fn drained(config: &Config) -> Config {
    let mut c = config.clone();
    for p in &mut c.pools {
        p.warm_pool.size = 0;
        p.warm_pool.schedule.clear();
    }
    c
}

pub async fn put_config(ssm: &aws_sdk_ssm::Client, config: &Config) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(config)?;
    ssm.put_parameter()
        .name(CONFIG_PARAMETER)
        .value(text)
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .context("PutParameter (pool configuration)")?;
    Ok(())
}

pub struct StackInput<'a> {
    pub config: &'a Config,
    pub api_url: &'a str,
    pub app_id: u64,
    pub webhook_secret: &'a str,
    pub app_private_key_pem: &'a str,
    pub visibility_timeout_secs: u32,
}

pub async fn create(
    ec2: &aws_sdk_ec2::Client,
    sqs: &aws_sdk_sqs::Client,
    ssm: &aws_sdk_ssm::Client,
    input: StackInput<'_>,
) -> anyhow::Result<Stack> {
    let vpc = ec2.create_vpc().cidr_block("10.42.0.0/16").send().await.context("CreateVpc")?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("CreateVpc: no id")?.to_owned();
    let mut names: Vec<&String> = input.config.pools.iter().flat_map(|p| p.subnets.iter()).collect();
    names.sort();
    names.dedup();
    let mut subnets = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let az = ["us-east-1a", "us-east-1b", "us-east-1c"][i % 3];
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.42.{i}.0/24"))
            .availability_zone(az)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Subnet)
                    .tags(Tag::builder().key("Name").value(name.as_str()).build())
                    .build(),
            )
            .send()
            .await
            .context("CreateSubnet")?;
        let id = s.subnet().and_then(|s| s.subnet_id()).context("CreateSubnet: no id")?;
        subnets.insert((*name).clone(), id.to_owned());
    }

    ssm.put_parameter()
        .name(AMI_PARAMETER)
        .value(AMI)
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .context("PutParameter (AMI)")?;
    // The template's user data: what starts the boot agent on a real instance.
    let user_data = base64::engine::general_purpose::STANDARD.encode(format!(
        "#cloud-config\nwrite_files:\n  - path: /etc/hangar/boot-agent.env\n    permissions: \"0644\"\n    content: |\n      HANGAR_JIT_PARAMETER_PREFIX={JIT_PREFIX}\n      HANGAR_JIT_DEADLINE_SECONDS=600\n"
    ));
    let mut launch_templates = BTreeMap::new();
    let mut lt_names: Vec<String> =
        input.config.pools.iter().filter_map(|p| p.launch_template.clone()).collect();
    lt_names.sort();
    lt_names.dedup();
    for name in lt_names {
        let data = RequestLaunchTemplateData::builder()
            .image_id(AMI)
            .instance_type(InstanceType::M5Large)
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .user_data(user_data.clone())
            .build();
        let lt = ec2
            .create_launch_template()
            .launch_template_name(&name)
            .launch_template_data(data)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .tags(Tag::builder().key("hangar:managed-by").value("hangar").build())
                    .build(),
            )
            .send()
            .await
            .with_context(|| format!("CreateLaunchTemplate {name}"))?;
        let id = lt.launch_template().and_then(|l| l.launch_template_id()).context("no template id")?;
        launch_templates.insert(name, id.to_owned());
    }

    let dlq = sqs
        .create_queue()
        .queue_name("hangar-demo-scale-dlq.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .context("CreateQueue (dead-letter)")?;
    let dlq_url = dlq.queue_url().context("no DLQ url")?.to_owned();
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT })
        .to_string();
    let q = sqs
        .create_queue()
        .queue_name("hangar-demo-scale.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .attributes(QueueAttributeName::DeduplicationScope, "messageGroup")
        .attributes(QueueAttributeName::FifoThroughputLimit, "perMessageGroupId")
        .attributes(QueueAttributeName::VisibilityTimeout, input.visibility_timeout_secs.to_string())
        .attributes(QueueAttributeName::MessageRetentionPeriod, "86400")
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .context("CreateQueue (scale)")?;
    let queue_url = q.queue_url().context("no queue url")?.to_owned();
    let (provision_queue_url, provision_dlq_url) =
        create_provision_queue(sqs, input.visibility_timeout_secs).await?;

    let config = localise(input.config.clone(), &subnets, input.api_url, input.app_id);
    config.validate().context("the localised pool configuration")?;
    put_config(ssm, &config).await?;
    for (name, value) in
        [(SECRET_PARAMETER, input.webhook_secret), (APP_KEY_PARAMETER, input.app_private_key_pem)]
    {
        ssm.put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .with_context(|| format!("PutParameter {name}"))?;
    }
    Ok(Stack {
        queue_url,
        dlq_url,
        provision_queue_url,
        provision_dlq_url,
        launch_templates,
        subnets,
        config,
    })
}

/// The stack's `ProvisionQueue` and `ProvisionDeadLetterQueue`: standard queues (the messages
/// are independent, one instance each, and need no order), with the demo's visibility timeout.
/// Returns (queue URL, dead-letter queue URL).
async fn create_provision_queue(
    sqs: &aws_sdk_sqs::Client,
    visibility_timeout_secs: u32,
) -> anyhow::Result<(String, String)> {
    let dlq = sqs
        .create_queue()
        .queue_name(PROVISION_DLQ)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .context("CreateQueue (provisioning dead-letter)")?;
    let dlq_url = dlq.queue_url().context("no provisioning DLQ url")?.to_owned();
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": PROVISION_MAX_RECEIVE_COUNT })
            .to_string();
    let q = sqs
        .create_queue()
        .queue_name(PROVISION_QUEUE)
        .attributes(QueueAttributeName::VisibilityTimeout, visibility_timeout_secs.to_string())
        .attributes(QueueAttributeName::MessageRetentionPeriod, PROVISION_RETENTION_SECS.to_string())
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .context("CreateQueue (provisioning)")?;
    let url = q.queue_url().context("no provisioning queue url")?.to_owned();
    Ok((url, dlq_url))
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("GetQueueAttributes ({url})"))?;
    attrs.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn)).cloned().context("queue has no ARN")
}

/// JIT parameters still stored under the prefix.
pub async fn jit_parameters(ssm: &aws_sdk_ssm::Client) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pages = ssm.get_parameters_by_path().path(JIT_PREFIX).recursive(true).into_paginator().send();
    while let Some(p) = pages.next().await {
        let p = p.context("GetParametersByPath")?;
        out.extend(p.parameters().iter().filter_map(|x| x.name().map(str::to_owned)));
    }
    Ok(out)
}

/// Messages waiting in a queue (visible and in flight).
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<u64> {
    let a = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .context("GetQueueAttributes")?;
    let get = |k: &QueueAttributeName| {
        a.attributes().and_then(|m| m.get(k)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    Ok(get(&QueueAttributeName::ApproximateNumberOfMessages)
        + get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}
