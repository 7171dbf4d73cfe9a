//! The EC2 adapter against recorded responses in EC2's real wire format (StaticReplayClient):
//! per-override CreateFleet errors, throttling error XML, pagination, and calls that must not
//! be made at all.

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryConfig;
use hangar_aws::ec2::Ec2Fleet;
use hangar_core::config::{CapacityType, PoolConfig};
use hangar_core::ids::{InstanceId, PoolName};
use hangar_core::ports::{Fleet, LaunchReason, LaunchRequest};
use hangar_core::state::{Ec2State, Lifecycle};
use hangar_sim::fault_proxy::form;
use std::time::Duration;

fn event(status: u16, body: &str) -> ReplayEvent {
    ReplayEvent::new(
        http::Request::builder().uri("https://ec2.us-east-1.amazonaws.com/").body(SdkBody::empty()).unwrap(),
        http::Response::builder()
            .status(status)
            .header("content-type", "text/xml;charset=UTF-8")
            .body(SdkBody::from(body.to_owned()))
            .unwrap(),
    )
}

fn fleet(replay: &StaticReplayClient, attempts: u32) -> Ec2Fleet {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "replay"))
        .http_client(replay.clone())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .build();
    Ec2Fleet::new(aws_sdk_ec2::Client::from_conf(conf))
}

fn pool() -> PoolConfig {
    serde_json::from_value(serde_json::json!({
        "name": "linux-x64",
        "labels": ["self-hosted"],
        "instance_types": ["m5.large", "c5.large"],
        "subnets": ["subnet-0aaa"],
        "launch_template": "lt-0123456789abcdef0",
        "max_runners": 10
    }))
    .unwrap()
}

fn forms(replay: &StaticReplayClient) -> Vec<Vec<(String, String)>> {
    replay.actual_requests().map(|r| form::decode(r.body().bytes().expect("in-memory body"))).collect()
}

/// Spot has no capacity for either type: EC2 answers 200 with one error per override and no
/// instances (shape as documented for CreateFleet `instant`).
const SPOT_ICE_BOTH: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>2d4f1e6a-7d9c-4a0b-9a37-0f0c1e2d3b4a</requestId>
    <fleetId>fleet-7a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d</fleetId>
    <errorSet>
        <item>
            <launchTemplateAndOverrides>
                <launchTemplateSpecification>
                    <launchTemplateId>lt-0123456789abcdef0</launchTemplateId>
                    <version>3</version>
                </launchTemplateSpecification>
                <overrides>
                    <instanceType>m5.large</instanceType>
                    <subnetId>subnet-0aaa</subnetId>
                </overrides>
            </launchTemplateAndOverrides>
            <lifecycle>spot</lifecycle>
            <errorCode>InsufficientInstanceCapacity</errorCode>
            <errorMessage>We currently do not have sufficient m5.large capacity in the Availability Zone you requested (us-east-1a).</errorMessage>
        </item>
        <item>
            <launchTemplateAndOverrides>
                <launchTemplateSpecification>
                    <launchTemplateId>lt-0123456789abcdef0</launchTemplateId>
                    <version>3</version>
                </launchTemplateSpecification>
                <overrides>
                    <instanceType>c5.large</instanceType>
                    <subnetId>subnet-0aaa</subnetId>
                </overrides>
            </launchTemplateAndOverrides>
            <lifecycle>spot</lifecycle>
            <errorCode>InsufficientInstanceCapacity</errorCode>
            <errorMessage>We currently do not have sufficient c5.large capacity in the Availability Zone you requested (us-east-1a).</errorMessage>
        </item>
    </errorSet>
    <fleetInstanceSet/>
</CreateFleetResponse>"#;

const ON_DEMAND_TWO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>5b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e</requestId>
    <fleetId>fleet-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d</fleetId>
    <errorSet/>
    <fleetInstanceSet>
        <item>
            <launchTemplateAndOverrides>
                <launchTemplateSpecification>
                    <launchTemplateId>lt-0123456789abcdef0</launchTemplateId>
                    <version>3</version>
                </launchTemplateSpecification>
                <overrides>
                    <instanceType>m5.large</instanceType>
                    <subnetId>subnet-0aaa</subnetId>
                </overrides>
            </launchTemplateAndOverrides>
            <lifecycle>on-demand</lifecycle>
            <instanceIds>
                <item>i-0a1b2c3d4e5f60718</item>
                <item>i-0f1e2d3c4b5a69788</item>
            </instanceIds>
            <instanceType>m5.large</instanceType>
            <platform/>
        </item>
    </fleetInstanceSet>
</CreateFleetResponse>"#;

const REQUEST_LIMIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d</RequestID></Response>"#;

#[tokio::test]
async fn per_override_spot_errors_fall_back_to_on_demand_and_are_counted() {
    let replay = StaticReplayClient::new(vec![event(200, SPOT_ICE_BOTH), event(200, ON_DEMAND_TWO)]);
    let req =
        LaunchRequest { pool: pool(), count: 2, reason: LaunchReason::Job, idempotency_key: "m-1".into() };
    let out = fleet(&replay, 3).launch(&req).await.unwrap();

    assert_eq!(out.calls, 2);
    assert_eq!(out.launched.len(), 2);
    assert!(out
        .launched
        .iter()
        .all(|i| i.capacity_type == CapacityType::OnDemand && i.instance_type == "m5.large"));
    assert_eq!(out.launched[0].id, InstanceId::from("i-0a1b2c3d4e5f60718"));
    assert_eq!(out.failures.len(), 2);
    assert!(out
        .failures
        .iter()
        .all(|f| f.code == "InsufficientInstanceCapacity" && f.capacity_type == CapacityType::Spot));
    assert_eq!(
        out.failures.iter().map(|f| f.instance_type.clone().unwrap()).collect::<Vec<_>>(),
        vec!["m5.large", "c5.large"]
    );

    let sent = forms(&replay);
    assert_eq!(sent.len(), 2);
    let (spot, od) = (&sent[0], &sent[1]);
    assert_eq!(form::get(spot, "Action"), Some("CreateFleet"));
    assert_eq!(form::get(spot, "Type"), Some("instant"));
    assert_eq!(form::get(spot, "TargetCapacitySpecification.DefaultTargetCapacityType"), Some("spot"));
    assert_eq!(form::get(spot, "TargetCapacitySpecification.TotalTargetCapacity"), Some("2"));
    assert_eq!(form::get(spot, "SpotOptions.AllocationStrategy"), Some("price-capacity-optimized"));
    assert_eq!(
        form::get(spot, "LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateId"),
        Some("lt-0123456789abcdef0")
    );
    assert_eq!(form::get(spot, "LaunchTemplateConfigs.1.Overrides.2.InstanceType"), Some("c5.large"));
    assert_eq!(form::get(spot, "TagSpecification.1.ResourceType"), Some("instance"));
    assert_eq!(form::get(spot, "TagSpecification.2.ResourceType"), Some("volume"));
    let tags: Vec<(&str, &str)> = (1..=4)
        .map(|i| {
            (
                form::get(spot, &format!("TagSpecification.1.Tag.{i}.Key")).unwrap(),
                form::get(spot, &format!("TagSpecification.1.Tag.{i}.Value")).unwrap(),
            )
        })
        .collect();
    assert!(tags.contains(&("hangar:pool", "linux-x64")));
    assert!(tags.contains(&("hangar:lifecycle", "pending")));
    assert!(tags.contains(&("hangar:launch-reason", "job")));
    assert!(tags.contains(&("hangar:managed-by", "hangar")));

    assert_eq!(form::get(od, "TargetCapacitySpecification.DefaultTargetCapacityType"), Some("on-demand"));
    assert_eq!(form::get(od, "OnDemandOptions.AllocationStrategy"), Some("lowest-price"));
    assert_eq!(form::get(od, "SpotOptions.AllocationStrategy"), None);
    let (t1, t2) = (form::get(spot, "ClientToken").unwrap(), form::get(od, "ClientToken").unwrap());
    assert!(t1.len() <= 64 && t2.len() <= 64);
    assert_ne!(t1, t2, "each call of a launch has its own token");

    // The same request replays the same tokens, so EC2 would answer from its idempotency record.
    let again = StaticReplayClient::new(vec![event(200, SPOT_ICE_BOTH), event(200, ON_DEMAND_TWO)]);
    fleet(&again, 3).launch(&req).await.unwrap();
    let tokens: Vec<String> =
        forms(&again).iter().map(|f| form::get(f, "ClientToken").unwrap().to_owned()).collect();
    assert_eq!(tokens, vec![t1.to_owned(), t2.to_owned()]);
}

#[tokio::test]
async fn request_limit_exceeded_is_retried_then_reported_retryable() {
    let replay = StaticReplayClient::new(vec![event(503, REQUEST_LIMIT), event(503, REQUEST_LIMIT)]);
    let req = LaunchRequest {
        pool: pool(),
        count: 1,
        reason: LaunchReason::WarmPool,
        idempotency_key: "m-2".into(),
    };
    let err = fleet(&replay, 2).launch(&req).await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("RequestLimitExceeded"));
    assert!(err.retryable);
    assert_eq!(err.operation, "ec2:CreateFleet");
    let sent = forms(&replay);
    assert_eq!(sent.len(), 2, "the SDK retried once (max_attempts = 2)");
    assert_eq!(
        form::get(&sent[0], "ClientToken"),
        form::get(&sent[1], "ClientToken"),
        "a retry keeps the token"
    );

    let recovered = StaticReplayClient::new(vec![event(503, REQUEST_LIMIT), event(200, ON_DEMAND_TWO)]);
    let out = fleet(&recovered, 2).launch(&LaunchRequest { count: 2, ..req }).await.unwrap();
    assert_eq!((out.launched.len(), out.calls), (2, 1));
}

#[tokio::test]
async fn no_op_requests_make_no_calls() {
    let replay = StaticReplayClient::new(vec![event(200, ON_DEMAND_TWO)]);
    let f = fleet(&replay, 1);
    let out = f
        .launch(&LaunchRequest {
            pool: pool(),
            count: 0,
            reason: LaunchReason::Job,
            idempotency_key: "m".into(),
        })
        .await
        .unwrap();
    assert_eq!(out, Default::default());
    f.terminate(&[]).await.unwrap();
    f.stop(&[]).await.unwrap();
    f.start(&[]).await.unwrap();
    f.tag(&InstanceId::from("i-0a1b2c3d4e5f60718"), &[]).await.unwrap();
    assert_eq!(replay.actual_requests().count(), 0);

    let mut no_template = pool();
    no_template.launch_template = None;
    let e = f
        .launch(&LaunchRequest {
            pool: no_template,
            count: 1,
            reason: LaunchReason::Job,
            idempotency_key: "m".into(),
        })
        .await
        .unwrap_err();
    assert!(!e.retryable && e.message.contains("launch_template"), "{e}");
    assert_eq!(replay.actual_requests().count(), 0);
}

const DESCRIBE_PAGE_1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>8f7e6d5c-4b3a-4291-8f7e-6d5c4b3a2918</requestId>
    <reservationSet>
        <item>
            <reservationId>r-0a1b2c3d4e5f60718</reservationId>
            <ownerId>123456789012</ownerId>
            <instancesSet>
                <item>
                    <instanceId>i-0a1b2c3d4e5f60718</instanceId>
                    <imageId>ami-0abcdef1234567890</imageId>
                    <instanceState><code>16</code><name>running</name></instanceState>
                    <instanceType>m5.large</instanceType>
                    <launchTime>2026-03-01T10:00:00.000Z</launchTime>
                    <instanceLifecycle>spot</instanceLifecycle>
                    <tagSet>
                        <item><key>hangar:pool</key><value>linux-x64</value></item>
                        <item><key>hangar:lifecycle</key><value>busy</value></item>
                        <item><key>hangar:job-id</key><value>987654321</value></item>
                        <item><key>hangar:interrupted</key><value>true</value></item>
                    </tagSet>
                </item>
            </instancesSet>
        </item>
    </reservationSet>
    <nextToken>page-2-token</nextToken>
</DescribeInstancesResponse>"#;

const DESCRIBE_PAGE_2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d</requestId>
    <reservationSet>
        <item>
            <reservationId>r-0f1e2d3c4b5a69788</reservationId>
            <ownerId>123456789012</ownerId>
            <instancesSet>
                <item>
                    <instanceId>i-0f1e2d3c4b5a69788</instanceId>
                    <imageId>ami-0abcdef1234567890</imageId>
                    <instanceState><code>80</code><name>stopped</name></instanceState>
                    <instanceType>c5.large</instanceType>
                    <launchTime>2026-03-01T09:00:00.000Z</launchTime>
                    <tagSet>
                        <item><key>hangar:pool</key><value>linux-x64</value></item>
                        <item><key>hangar:lifecycle</key><value>something-new</value></item>
                    </tagSet>
                </item>
            </instancesSet>
        </item>
    </reservationSet>
</DescribeInstancesResponse>"#;

/// `hangar:interrupted` as the scaler and current boot agents write it (`true`), as older boot
/// agents wrote it (the notice's time), and an explicit `false` or no tag at all.
#[test]
fn any_interrupted_tag_value_but_false_means_interrupted() {
    use hangar_aws::reexports::ec2::types::{Instance, InstanceState, InstanceStateName, Tag};
    let with = |value: Option<&str>| {
        let mut b = Instance::builder()
            .instance_id("i-0a1b2c3d4e5f60718")
            .state(InstanceState::builder().name(InstanceStateName::Running).build())
            .tags(Tag::builder().key("hangar:pool").value("linux-x64").build());
        if let Some(v) = value {
            b = b.tags(Tag::builder().key("hangar:interrupted").value(v).build());
        }
        hangar_aws::ec2::observe(&PoolName::from("linux-x64"), &b.build()).expect("observed").interrupted
    };
    assert!(with(Some("true")));
    assert!(with(Some("2026-03-01T10:00:05Z")), "old agents tagged the notice's time");
    assert!(!with(Some("false")));
    assert!(!with(Some("FALSE ")));
    assert!(!with(None));
}

#[tokio::test]
async fn describe_pool_follows_pages_and_reads_tags() {
    let replay = StaticReplayClient::new(vec![event(200, DESCRIBE_PAGE_1), event(200, DESCRIBE_PAGE_2)]);
    let seen = fleet(&replay, 1).describe_pool(&PoolName::from("linux-x64")).await.unwrap();
    assert_eq!(seen.len(), 2);
    let busy = &seen[0];
    assert_eq!(busy.id, InstanceId::from("i-0a1b2c3d4e5f60718"));
    assert_eq!(
        (busy.lifecycle, busy.ec2_state, busy.capacity_type),
        (Lifecycle::Busy, Ec2State::Running, CapacityType::Spot)
    );
    assert_eq!(busy.job_id.map(|j| j.0), Some(987654321));
    assert!(busy.interrupted);
    assert_eq!(busy.launched_at.to_rfc3339(), "2026-03-01T10:00:00+00:00");
    let stopped = &seen[1];
    assert_eq!(
        (stopped.lifecycle, stopped.ec2_state, stopped.capacity_type),
        (Lifecycle::Pending, Ec2State::Stopped, CapacityType::OnDemand)
    );
    assert_eq!(stopped.instance_type, "c5.large");

    let sent = forms(&replay);
    assert_eq!(form::get(&sent[0], "Filter.1.Name"), Some("tag:hangar:pool"));
    assert_eq!(form::get(&sent[0], "Filter.1.Value.1"), Some("linux-x64"));
    // No state filter: terminated instances keep job ids and interruption flags the planner needs.
    assert_eq!(form::get(&sent[0], "Filter.2.Name"), None);
    assert_eq!(form::get(&sent[0], "NextToken"), None);
    assert_eq!(form::get(&sent[1], "NextToken"), Some("page-2-token"));
}
