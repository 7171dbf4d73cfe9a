//! The fault proxy in front of moto, driven by the real AWS SDK clients.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, FleetType, InstanceLifecycle, InstanceType,
    RequestLaunchTemplateData, TargetCapacitySpecificationRequest,
};
use hangar_sim::fault_proxy::{Fault, FaultProxy};
use hangar_testsupport::{aws_config_for, moto};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

fn retry(attempts: u32) -> aws_sdk_ec2::config::retry::RetryConfig {
    aws_sdk_ec2::config::retry::RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(20))
}

/// EC2, SSM and SQS clients for `endpoint` with `attempts` SDK attempts per call.
async fn clients(
    endpoint: &str,
    attempts: u32,
) -> (aws_sdk_ec2::Client, aws_sdk_ssm::Client, aws_sdk_sqs::Client) {
    let shared = aws_config_for(endpoint).await;
    (
        aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&shared).retry_config(retry(attempts)).build(),
        ),
        aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(&shared).retry_config(retry(attempts)).build(),
        ),
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&shared).retry_config(retry(attempts)).build(),
        ),
    )
}

async fn ec2(endpoint: &str, attempts: u32) -> aws_sdk_ec2::Client {
    clients(endpoint, attempts).await.0
}

struct Net {
    subnet: String,
    template: String,
}

async fn network(ec2: &aws_sdk_ec2::Client) -> Net {
    let n = SEQ.fetch_add(1, Ordering::Relaxed) % 200;
    let vpc = ec2.create_vpc().cidr_block(format!("10.{n}.0.0/16")).send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap();
    let subnet =
        ec2.create_subnet().vpc_id(vpc_id).cidr_block(format!("10.{n}.1.0/24")).send().await.unwrap();
    let lt = ec2
        .create_launch_template()
        .launch_template_name(unique("proxy-lt"))
        .launch_template_data(RequestLaunchTemplateData::builder().image_id("ami-12c6146b").build())
        .send()
        .await
        .unwrap();
    Net {
        subnet: subnet.subnet().unwrap().subnet_id().unwrap().to_owned(),
        template: lt.launch_template().unwrap().launch_template_id().unwrap().to_owned(),
    }
}

fn fleet_call(
    ec2: &aws_sdk_ec2::Client,
    net: &Net,
    market: DefaultTargetCapacityType,
    count: i32,
    token: &str,
) -> aws_sdk_ec2::operation::create_fleet::builders::CreateFleetFluentBuilder {
    let overrides = ["m5.large", "c5.large"]
        .into_iter()
        .map(|t| {
            FleetLaunchTemplateOverridesRequest::builder()
                .instance_type(InstanceType::from(t))
                .subnet_id(&net.subnet)
                .build()
        })
        .collect();
    ec2.create_fleet()
        .r#type(FleetType::Instant)
        .client_token(token)
        .launch_template_configs(
            FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(
                    FleetLaunchTemplateSpecificationRequest::builder()
                        .launch_template_id(&net.template)
                        .version("$Latest")
                        .build(),
                )
                .set_overrides(Some(overrides))
                .build(),
        )
        .target_capacity_specification(
            TargetCapacitySpecificationRequest::builder()
                .total_target_capacity(count)
                .default_target_capacity_type(market)
                .build(),
        )
}

fn ids(out: &aws_sdk_ec2::operation::create_fleet::CreateFleetOutput) -> Vec<String> {
    out.instances().iter().flat_map(|i| i.instance_ids().iter().cloned()).collect()
}

#[tokio::test]
async fn passes_ec2_ssm_and_sqs_calls_through_and_counts_them() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let (ec2, ssm, sqs) = clients(&proxy.endpoint(), 1).await;
    let vpc = ec2.create_vpc().cidr_block("10.250.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let described = ec2.describe_vpcs().vpc_ids(&vpc_id).send().await.unwrap();
    assert_eq!(described.vpcs()[0].vpc_id(), Some(vpc_id.as_str()));

    let name = format!("/{}", unique("pass"));
    ssm.put_parameter()
        .name(&name)
        .value("v1")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let got = ssm.get_parameter().name(&name).with_decryption(true).send().await.unwrap();
    assert_eq!(got.parameter().unwrap().value(), Some("v1"));

    let q = sqs.create_queue().queue_name(unique("pass")).send().await.unwrap();
    let url = q.queue_url().unwrap();
    sqs.send_message().queue_url(url).message_body("hello").send().await.unwrap();
    let rec = sqs.receive_message().queue_url(url).send().await.unwrap();
    assert_eq!(rec.messages()[0].body(), Some("hello"));

    let counts = proxy.counts();
    for action in [
        "CreateVpc",
        "DescribeVpcs",
        "PutParameter",
        "GetParameter",
        "CreateQueue",
        "SendMessage",
        "ReceiveMessage",
    ] {
        assert_eq!(counts.get(action), Some(&1), "{action}: {counts:?}");
    }
    // The same numbers over the control API.
    let over_http: std::collections::BTreeMap<String, u64> =
        reqwest::get(format!("{}/__proxy/counts", proxy.endpoint())).await.unwrap().json().await.unwrap();
    assert_eq!(over_http, counts);
    assert!(proxy.injected().is_empty());
}

#[tokio::test]
async fn injected_request_limit_exceeded_reaches_the_sdk_after_its_retries() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let ec2 = ec2(&proxy.endpoint(), 3).await;
    proxy.inject(Fault::error("DescribeInstances", "RequestLimitExceeded", 503, 5));

    let err = ec2.describe_instances().send().await.unwrap_err();
    assert_eq!(err.code(), Some("RequestLimitExceeded"));
    assert_eq!(err.message(), Some("Request limit exceeded."));
    assert_eq!(proxy.count("DescribeInstances"), 3, "the SDK made its three attempts");

    // Two injected failures are left; the third attempt reaches moto.
    ec2.describe_instances().send().await.unwrap();
    assert_eq!(proxy.count("DescribeInstances"), 6);
    assert_eq!(proxy.injected().get("DescribeInstances"), Some(&5));
    // Used up: no more failures.
    ec2.describe_instances().send().await.unwrap();
    assert_eq!(proxy.count("DescribeInstances"), 7);
    // Other actions were never touched.
    ec2.describe_vpcs().send().await.unwrap();
    assert_eq!(proxy.injected().get("DescribeVpcs"), None);
}

#[tokio::test]
async fn json_protocol_errors_parse_as_the_services_typed_errors() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let (_, ssm, sqs) = clients(&proxy.endpoint(), 1).await;
    let q = sqs.create_queue().queue_name(unique("json")).send().await.unwrap();
    let url = q.queue_url().unwrap().to_owned();

    proxy.inject(Fault::error("GetParameter", "ParameterNotFound", 400, 1));
    let e = ssm.get_parameter().name("/anything").send().await.unwrap_err();
    assert!(e.as_service_error().unwrap().is_parameter_not_found(), "{e:?}");

    proxy.inject(Fault::error("PutParameter", "ThrottlingException", 400, 1));
    let e = ssm.put_parameter().name("/x").value("y").send().await.unwrap_err();
    assert_eq!(e.code(), Some("ThrottlingException"));

    proxy.inject(Fault::error("SendMessage", "RequestThrottled", 400, 1));
    let e = sqs.send_message().queue_url(&url).message_body("b").send().await.unwrap_err();
    assert!(e.as_service_error().unwrap().is_request_throttled(), "{e:?}");

    proxy.inject(Fault::error("SendMessage", "AWS.SimpleQueueService.NonExistentQueue", 400, 1));
    let e = sqs.send_message().queue_url(&url).message_body("b").send().await.unwrap_err();
    assert!(e.as_service_error().unwrap().is_queue_does_not_exist(), "{e:?}");

    // Faults used up: the real calls go through.
    sqs.send_message().queue_url(&url).message_body("b").send().await.unwrap();
}

#[tokio::test]
async fn create_fleet_partial_errors_are_parsed_by_the_sdk() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let ec2 = ec2(&proxy.endpoint(), 1).await;
    let net = network(&ec2).await;
    proxy.inject(Fault::FleetErrors {
        instance_types: Some(vec!["m5.large".into()]),
        subnets: None,
        market: Some(hangar_sim::fault_proxy::Market::Spot),
        code: "InsufficientInstanceCapacity".into(),
        message: None,
        times: Some(1),
    });

    // On-demand requests are not matched and do not use the fault up.
    let od =
        fleet_call(&ec2, &net, DefaultTargetCapacityType::OnDemand, 1, &unique("t")).send().await.unwrap();
    assert!(od.errors().is_empty());
    assert_eq!(
        od.instances()[0].instance_type().map(|t| t.as_str()),
        Some("m5.large"),
        "moto fills from the first override"
    );

    let spot = fleet_call(&ec2, &net, DefaultTargetCapacityType::Spot, 2, &unique("t")).send().await.unwrap();
    assert_eq!(spot.errors().len(), 1);
    let e = &spot.errors()[0];
    assert_eq!(e.error_code(), Some("InsufficientInstanceCapacity"));
    assert_eq!(e.lifecycle(), Some(&InstanceLifecycle::Spot));
    let ov = e.launch_template_and_overrides().unwrap();
    assert_eq!(ov.overrides().unwrap().instance_type().map(|t| t.as_str()), Some("m5.large"));
    assert_eq!(ov.overrides().unwrap().subnet_id(), Some(net.subnet.as_str()));
    assert_eq!(ov.launch_template_specification().unwrap().launch_template_id(), Some(net.template.as_str()));
    assert!(e.error_message().unwrap().contains("m5.large"));
    assert_eq!(ids(&spot).len(), 2);
    assert!(spot.instances().iter().all(|i| i.instance_type().map(|t| t.as_str()) == Some("c5.large")));

    // times = 1: the next spot call is whole again.
    let next = fleet_call(&ec2, &net, DefaultTargetCapacityType::Spot, 1, &unique("t")).send().await.unwrap();
    assert!(next.errors().is_empty());

    // Every override failing: no instances, one error each, and moto is not asked.
    proxy.inject(Fault::all_spot_exhausted());
    let in_subnet = || async {
        let f = aws_sdk_ec2::types::Filter::builder().name("subnet-id").values(&net.subnet).build();
        let out = ec2.describe_instances().filters(f).send().await.unwrap();
        out.reservations().iter().map(|r| r.instances().len()).sum::<usize>()
    };
    let before = in_subnet().await;
    let none = fleet_call(&ec2, &net, DefaultTargetCapacityType::Spot, 2, &unique("t")).send().await.unwrap();
    assert!(none.instances().is_empty());
    assert_eq!(none.errors().len(), 2);
    assert!(none.fleet_id().is_some_and(|f| f.starts_with("fleet-")));
    assert_eq!(in_subnet().await, before);
}

#[tokio::test]
async fn client_tokens_are_idempotent_through_the_proxy_but_not_in_moto() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let via_proxy = ec2(&proxy.endpoint(), 1).await;
    let direct = ec2(&moto().endpoint(), 1).await;
    let net = network(&direct).await;

    let token = unique("tok");
    let first =
        fleet_call(&via_proxy, &net, DefaultTargetCapacityType::Spot, 2, &token).send().await.unwrap();
    let again =
        fleet_call(&via_proxy, &net, DefaultTargetCapacityType::Spot, 2, &token).send().await.unwrap();
    assert_eq!(ids(&first), ids(&again));
    assert_eq!(proxy.count("CreateFleet"), 2, "both calls are counted");

    let mismatch =
        fleet_call(&via_proxy, &net, DefaultTargetCapacityType::Spot, 3, &token).send().await.unwrap_err();
    assert_eq!(mismatch.code(), Some("IdempotentParameterMismatch"));

    // moto itself launches again for a repeated token: the reason the proxy does this.
    let token2 = unique("tok");
    let a = fleet_call(&direct, &net, DefaultTargetCapacityType::Spot, 1, &token2).send().await.unwrap();
    let b = fleet_call(&direct, &net, DefaultTargetCapacityType::Spot, 1, &token2).send().await.unwrap();
    assert_ne!(ids(&a), ids(&b), "moto started honouring ClientToken; the proxy emulation may be dropped");

    // Turned off over the control API, the proxy forwards repeats to moto.
    let r = reqwest::Client::new()
        .put(format!("{}/__proxy/idempotency", proxy.endpoint()))
        .json(&serde_json::json!({ "enabled": false }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let third =
        fleet_call(&via_proxy, &net, DefaultTargetCapacityType::Spot, 2, &token).send().await.unwrap();
    assert_ne!(ids(&third), ids(&first));
}

#[tokio::test]
async fn latency_is_added_per_action() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let ec2 = ec2(&proxy.endpoint(), 1).await;
    proxy.inject(Fault::latency("DescribeVpcs", Duration::from_millis(300)));
    let t = Instant::now();
    ec2.describe_vpcs().send().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    proxy.clear_faults();
    ec2.describe_vpcs().send().await.unwrap();
    assert_eq!(proxy.count("DescribeVpcs"), 2);
}

#[tokio::test]
async fn control_api_accepts_faults_as_json_and_refuses_bad_ones() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let http = reqwest::Client::new();
    let base = proxy.endpoint();
    assert_eq!(http.get(format!("{base}/__proxy/health")).send().await.unwrap().text().await.unwrap(), "ok");

    let bad = http
        .post(format!("{base}/__proxy/faults"))
        .body(r#"{"kind":"error","action":"X"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("code"));
    let unknown =
        http.post(format!("{base}/__proxy/faults")).body(r#"{"kind":"explode"}"#).send().await.unwrap();
    assert_eq!(unknown.status(), 400);

    let ok = http
        .post(format!("{base}/__proxy/faults"))
        .json(&serde_json::json!({"kind": "error", "action": "DescribeVpcs", "code": "Unavailable", "status": 503, "times": 1}))
        .send()
        .await
        .unwrap();
    assert!(ok.status().is_success());
    let ec2 = ec2(&base, 1).await;
    assert_eq!(ec2.describe_vpcs().send().await.unwrap_err().code(), Some("Unavailable"));

    http.post(format!("{base}/__proxy/faults"))
        .json(&serde_json::json!({"kind": "error", "action": "*", "code": "InternalError"}))
        .send()
        .await
        .unwrap();
    assert!(ec2.describe_vpcs().send().await.is_err());
    assert_eq!(http.delete(format!("{base}/__proxy/faults")).send().await.unwrap().status(), 204);
    ec2.describe_vpcs().send().await.unwrap();

    assert_eq!(http.post(format!("{base}/__proxy/reset")).send().await.unwrap().status(), 204);
    assert!(proxy.counts().is_empty());
}

#[tokio::test]
async fn bad_upstream_is_refused() {
    assert!(FaultProxy::start("moto:5000").await.is_err());
    assert!(FaultProxy::start("").await.is_err());
}

#[test]
fn cli_serves_until_stopped_and_rejects_missing_upstream() {
    let bin = env!("CARGO_BIN_EXE_hangar-sim");
    let missing = std::process::Command::new(bin).args(["fault-proxy", "--port", "0"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--upstream"));

    let port = hangar_testsupport::free_port();
    let mut child = hangar_testsupport::spawn_with_watchdog(&format!(
        "{} fault-proxy --port {port} --upstream {}",
        hangar_testsupport::shell_quote(bin),
        moto().endpoint()
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut healthy = false;
    while Instant::now() < deadline {
        if let Ok(out) = std::process::Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/__proxy/health")])
            .output()
        {
            if out.status.success() && out.stdout == b"ok" {
                healthy = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    hangar_testsupport::stop_watchdog(&mut child);
    assert!(healthy, "CLI proxy never answered on port {port}");
}
