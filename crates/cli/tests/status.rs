//! `hangar status`, the real binary, against moto: a ledger table and EC2 instances built
//! through the adapters, read back as an operator would with their own credentials.

use chrono::{Duration, Utc};
use hangar_aws::dynamo::{create_table, DynamoLedger};
use hangar_aws::ec2::Ec2Fleet;
use hangar_aws::reexports::{dynamodb, ec2};
use hangar_core::config::PoolConfig;
use hangar_core::ids::{InstanceId, JobId, RunId};
use hangar_core::ledger::{JobChange, JobEvent, JobKey, JobLedger};
use hangar_core::ports::{Fleet, LaunchReason, LaunchRequest};
use hangar_core::state::Lifecycle;
use hangar_testsupport::moto;
use std::process::{Command, Output};

fn hangar(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hangar"))
        .args(args)
        .env("HANGAR_AWS_ENDPOINT", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("HANGAR_LEDGER_TABLE")
        .output()
        .expect("run hangar")
}

async fn subnet_and_template(ec2: &ec2::Client) -> (String, String) {
    let vpc = ec2.create_vpc().cidr_block("10.77.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_owned();
    let s = ec2.create_subnet().vpc_id(&vpc_id).cidr_block("10.77.1.0/24").send().await.unwrap();
    let subnet = s.subnet().and_then(|s| s.subnet_id()).unwrap().to_owned();
    let lt = ec2
        .create_launch_template()
        .launch_template_name(format!("status-lt-{}", std::process::id()))
        .launch_template_data(
            ec2::types::RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .instance_type(ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .unwrap();
    (subnet, lt.launch_template().and_then(|l| l.launch_template_id()).unwrap().to_owned())
}

fn queued(pool: &str, job: u64, age_secs: i64) -> JobEvent {
    JobEvent {
        key: JobKey::new(JobId(job), 1),
        pool: pool.into(),
        run_id: RunId(job),
        repository: "acme/app".into(),
        installation_id: None,
        change: JobChange::Queued {
            created_at: Utc::now() - Duration::seconds(age_secs),
            labels: vec!["self-hosted".into()],
        },
    }
}

#[test]
fn status_shows_each_pools_queue_and_runners_as_a_table_and_as_json() {
    let endpoint = moto().endpoint();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let table = format!("status-{}", std::process::id());
    let config_path = dir.path().join("pools.yaml");
    rt.block_on(async {
        let sdk = hangar_testsupport::aws_config_for(&endpoint).await;
        let ddb = dynamodb::Client::new(&sdk);
        create_table(&ddb, &table).await.unwrap();
        let ec2c = ec2::Client::new(&sdk);
        let (subnet, lt) = subnet_and_template(&ec2c).await;
        let config = format!(
            "organization: acme\npools:\n  - name: small\n    labels: [self-hosted, linux]\n    instance_types: [m5.large]\n    subnets: [{subnet}]\n    launch_template: {lt}\n    max_runners: 3\n  - name: quiet\n    labels: [self-hosted, linux, gpu]\n    instance_types: [m5.large]\n    subnets: [{subnet}]\n    launch_template: {lt}\n    max_runners: 2\n    warm_pool: {{ size: 1 }}\n"
        );
        std::fs::write(&config_path, &config).unwrap();
        let cfg = hangar_core::config::Config::from_yaml(&config).unwrap();
        let small: PoolConfig = cfg.pools[0].clone();
        // Five jobs queued for `small`, the oldest 90 s ago; one started (not queued any more).
        let ledger = DynamoLedger::new(ddb, &table);
        for (job, age) in [(1, 90), (2, 60), (3, 30), (4, 10), (5, 5), (6, 1)] {
            ledger.apply(&queued("small", job, age), Utc::now()).await.unwrap();
        }
        let mut start = queued("small", 6, 1);
        start.change = JobChange::Started { runner_name: None, started_at: Some(Utc::now()) };
        ledger.apply(&start, Utc::now()).await.unwrap();
        // Three instances, the cap: one busy, one idle, one pending.
        let fleet = Ec2Fleet::new(ec2c);
        let req = LaunchRequest {
            pool: small,
            count: 3,
            reason: LaunchReason::Job,
            idempotency_key: format!("status-{}", std::process::id()),
        };
        let out = fleet.launch(&req).await.unwrap();
        assert_eq!(out.launched.len(), 3);
        let ids: Vec<InstanceId> = out.launched.iter().map(|l| l.id.clone()).collect();
        fleet.set_lifecycle(&ids[0], Lifecycle::Busy, None).await.unwrap();
        fleet.set_lifecycle(&ids[1], Lifecycle::Idle, None).await.unwrap();
    });
    let config = config_path.to_str().unwrap();

    let out = hangar(&endpoint, &["status", "--config", config, "--table", &table, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let small = &rows[0];
    assert_eq!(small["pool"], "small");
    assert_eq!(small["queued"], 5);
    assert!(small["oldest_queued_age_secs"].as_f64().unwrap() >= 90.0, "{small}");
    assert_eq!(
        (small["busy"].as_u64(), small["idle"].as_u64(), small["pending"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(small["runners"], 3);
    assert_eq!(small["at_max"], true);
    // Five queued, two free runners, no room: three wait for capacity.
    assert_eq!(small["waiting_for_capacity"], 3);
    let quiet = &rows[1];
    assert_eq!(
        (quiet["queued"].as_u64(), quiet["target"].as_u64(), quiet["at_max"].as_bool()),
        (Some(0), Some(1), Some(false))
    );

    let out = hangar(&endpoint, &["status", "--config", config, "--table", &table, "--pool", "small"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    assert!(text.contains("oldest wait") && text.contains("small") && !text.contains("quiet"), "{text}");
    assert!(text.contains("3 / 3") && text.contains("yes (3 waiting)"), "{text}");
}

#[test]
fn status_without_a_table_or_with_an_unknown_pool_says_what_to_pass() {
    let endpoint = moto().endpoint();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pools.yaml");
    std::fs::write(&path, "organization: acme\npools:\n  - name: p\n    labels: [self-hosted]\n    instance_types: [m5.large]\n    subnets: [subnet-1]\n    max_runners: 1\n").unwrap();
    let out = hangar(&endpoint, &["status", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--table"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out =
        hangar(&endpoint, &["status", "--config", path.to_str().unwrap(), "--table", "t", "--pool", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pool named `nope`"));
    let out = hangar(&endpoint, &["status", "--table", "t"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}
