//! Shared set-up for tests against moto: a VPC with two subnets and a launch template, built
//! through the SDK as an operator's stack would build them.

#![allow(dead_code)]

use hangar_aws::sdk::{with_retries, RetrySettings};
use hangar_core::config::PoolConfig;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other test in this process uses (moto is shared per test binary).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

pub struct Network {
    pub subnets: Vec<String>,
    pub launch_template_id: String,
    pub launch_template_name: String,
}

/// Clients with short backoff so retry tests take milliseconds.
pub async fn ec2_client(endpoint: &str, attempts: u32) -> aws_sdk_ec2::Client {
    let cfg = hangar_testsupport::aws_config_for(endpoint).await;
    aws_sdk_ec2::Client::new(&with_retries(&cfg, &RetrySettings::fast_for_tests(attempts)))
}

pub async fn ssm_client(endpoint: &str) -> aws_sdk_ssm::Client {
    let cfg = hangar_testsupport::aws_config_for(endpoint).await;
    aws_sdk_ssm::Client::new(&with_retries(&cfg, &RetrySettings::fast_for_tests(3)))
}

pub async fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let cfg = hangar_testsupport::aws_config_for(endpoint).await;
    aws_sdk_sqs::Client::new(&with_retries(&cfg, &RetrySettings::fast_for_tests(3)))
}

pub async fn network(ec2: &aws_sdk_ec2::Client) -> Network {
    let n = SEQ.fetch_add(1, Ordering::Relaxed) % 200;
    let vpc = ec2.create_vpc().cidr_block(format!("10.{n}.0.0/16")).send().await.expect("create vpc");
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_owned();
    let mut subnets = Vec::new();
    for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.{n}.{i}.0/24"))
            .availability_zone(*az)
            .send()
            .await
            .expect("create subnet");
        subnets.push(s.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_owned());
    }
    let name = unique("lt-runners");
    let lt = ec2
        .create_launch_template()
        .launch_template_name(&name)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .expect("create launch template");
    let id = lt.launch_template().and_then(|l| l.launch_template_id()).expect("lt id").to_owned();
    Network { subnets, launch_template_id: id, launch_template_name: name }
}

pub fn pool(name: &str, net: &Network, market: &str, fallback: bool) -> PoolConfig {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "labels": ["self-hosted", "linux"],
        "instance_types": ["m5.large", "c5.large"],
        "subnets": net.subnets,
        "launch_template": net.launch_template_id,
        "market": { "type": market, "on_demand_fallback": fallback },
        "max_runners": 20
    }))
    .expect("pool config")
}

/// Tags of one instance, straight from DescribeInstances.
pub async fn instance_tags(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
) -> std::collections::BTreeMap<String, String> {
    let out = ec2.describe_instances().instance_ids(id).send().await.expect("describe");
    let inst = &out.reservations()[0].instances()[0];
    inst.tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
        .collect()
}
