//! The scaler against moto (through the fault proxy) and the GitHub simulator, built from the
//! same adapters `main.rs` wires. Each test gets its own proxy, simulator, pool, queue and JIT
//! prefix; moto is shared per test binary.

#![allow(dead_code)]

use async_trait::async_trait;
use hangar_aws::dynamo::DynamoLedger;
use hangar_aws::ec2::Ec2Fleet;
use hangar_aws::reexports::{dynamodb, ec2, sqs, ssm};
use hangar_aws::sdk::{with_retries, RetrySettings};
use hangar_aws::sqs::SqsScaleQueue;
use hangar_aws::ssm::SsmJitStore;
use hangar_core::config::{Config, PoolConfig};
use hangar_core::ids::{InstallationId, JobId, PoolName, RepoFullName, RunId, RunnerName};
use hangar_core::message::{JobCompleted, JobRef, JobStarted, QueueMessage};
use hangar_core::secret::Secret;
use hangar_github::{GithubClient, GithubConfig, Sleeper};
use hangar_scaler::lookup::Ec2InstanceLookup;
use hangar_scaler::{Metrics, Scaler, ScalerOptions, ScalerParts};
use hangar_sim::fault_proxy::FaultProxy;
use hangar_sim::github::{GithubSim, SimClock, SimConfig};
use hangar_testsupport::{aws_config_for, fixtures_dir, moto};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const ORG: &str = "octo-org";
pub const REPO: &str = "octo-org/hello-world";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other test in this process uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

pub fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("fixture is JSON")
}

fn key(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join("keys").join(name)).expect("test key")
}

/// GitHub client waits advance the simulator's clock instead of sleeping.
pub struct SimSleeper(pub Arc<SimClock>);

#[async_trait]
impl Sleeper for SimSleeper {
    async fn sleep(&self, d: Duration) {
        self.0.advance(d);
    }
}

/// Write actions: anything that changes AWS state.
pub const AWS_WRITES: &[&str] = &[
    "CreateFleet",
    "RunInstances",
    "TerminateInstances",
    "CreateTags",
    "DeleteTags",
    "PutParameter",
    "DeleteParameter",
    "DeleteParameters",
    "AddTagsToResource",
    "SendMessage",
];
/// GitHub simulator endpoints that change state.
pub const GITHUB_WRITES: &[&str] =
    &["generate-jitconfig", "generate-jitconfig-repo", "delete-runner", "delete-runner-repo", "rerun-job"];

pub struct Network {
    pub subnets: Vec<String>,
    pub launch_template_id: String,
}

pub async fn network(ec2: &ec2::Client) -> Network {
    let n = SEQ.fetch_add(1, Ordering::Relaxed) % 200;
    let vpc = ec2.create_vpc().cidr_block(format!("10.{n}.0.0/16")).send().await.expect("vpc");
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
            .expect("subnet");
        subnets.push(s.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_owned());
    }
    let lt = ec2
        .create_launch_template()
        .launch_template_name(unique("lt-runners"))
        .launch_template_data(
            ec2::types::RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .instance_type(ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .expect("launch template");
    let id = lt.launch_template().and_then(|l| l.launch_template_id()).expect("lt id").to_owned();
    Network { subnets, launch_template_id: id }
}

pub struct Options {
    pub max_runners: u32,
    pub warm: u32,
    pub market: &'static str,
    pub fallback: bool,
    pub ec2_attempts: u32,
    pub idle_timeout_secs: u64,
    pub boot_timeout_secs: u64,
    /// A provisioning queue (SQS standard): launched instances' JIT configs are made by
    /// [`Env::provisioner`] from its messages, not by the pool's batch.
    pub provisioning: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_runners: 10,
            warm: 0,
            market: "spot",
            fallback: true,
            ec2_attempts: 3,
            idle_timeout_secs: 600,
            boot_timeout_secs: 300,
            provisioning: false,
        }
    }
}

pub struct Env {
    pub proxy: FaultProxy,
    pub sim: GithubSim,
    pub scaler: Arc<Scaler>,
    pub metrics: Arc<Metrics>,
    pub pool: PoolConfig,
    pub config: Config,
    pub queue_url: String,
    pub prefix: String,
    /// Clients straight to moto: assertions do not show up in the proxy's counts.
    pub ec2: ec2::Client,
    pub ssm: ssm::Client,
    pub sqs: sqs::Client,
    parts: PartsSource,
}

/// What a second scaler (a second Lambda execution environment) needs to be built.
struct PartsSource {
    endpoint: String,
    github_url: String,
    clock: Arc<SimClock>,
    ec2_attempts: u32,
    ledger_table: String,
    provision_queue_url: Option<String>,
}

impl Env {
    pub async fn start(opts: Options) -> Env {
        // `RUST_LOG=hangar_scaler=debug cargo test ...` shows the scaler's logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let moto = moto();
        let proxy = FaultProxy::start(moto.endpoint()).await.expect("proxy");
        let direct = aws_config_for(&moto.endpoint()).await;
        let ec2 = ec2::Client::new(&direct);
        let ssm = ssm::Client::new(&direct);
        let sqs = sqs::Client::new(&direct);
        let net = network(&ec2).await;
        let sim = GithubSim::start(SimConfig::new(4242, key("test-only-github-app.public-key.pem")))
            .await
            .expect("sim");
        let name = unique("pool");
        let pool: PoolConfig = serde_json::from_value(json!({
            "name": name,
            "labels": ["self-hosted", "linux", "x64"],
            "instance_types": ["m5.large", "c5.large"],
            "subnets": net.subnets,
            "launch_template": net.launch_template_id,
            "market": { "type": opts.market, "on_demand_fallback": opts.fallback },
            "max_runners": opts.max_runners,
            "warm_pool": { "size": opts.warm },
            "idle_timeout_secs": opts.idle_timeout_secs,
            "boot_timeout_secs": opts.boot_timeout_secs,
        }))
        .expect("pool");
        let config = Config {
            organization: ORG.into(),
            github: hangar_core::config::GithubConfig {
                api_url: sim.base_url(),
                app_id: sim.app_id(),
                runner_group: "hangar".into(),
            },
            pools: vec![pool.clone()],
        };
        config.validate().expect("valid config");
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{}.fifo", unique("scale")))
            .attributes(sqs::types::QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .expect("queue")
            .queue_url
            .expect("url");
        let provision_queue_url = match opts.provisioning {
            true => Some(
                sqs.create_queue()
                    .queue_name(unique("provision"))
                    .send()
                    .await
                    .expect("provision queue")
                    .queue_url
                    .expect("url"),
            ),
            false => None,
        };
        let prefix = format!("/{}/jit", unique("hangar-test"));
        let ledger_table = unique("ledger");
        hangar_aws::dynamo::create_table(&dynamodb::Client::new(&direct), &ledger_table)
            .await
            .expect("ledger table");
        let parts = PartsSource {
            endpoint: proxy.endpoint(),
            github_url: sim.base_url(),
            clock: sim.clock(),
            ec2_attempts: opts.ec2_attempts,
            ledger_table,
            provision_queue_url,
        };
        let metrics = Arc::new(Metrics::in_memory("HangarTest"));
        let scaler = Arc::new(build(&parts, &config, &queue_url, &prefix, metrics.clone()).await);
        Env { proxy, sim, scaler, metrics, pool, config, queue_url, prefix, ec2, ssm, sqs, parts }
    }

    /// Another scaler on the same cloud, as a second concurrent Lambda environment would be:
    /// its own clients, caches and metrics.
    pub async fn second_scaler(&self) -> (Arc<Scaler>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::in_memory("HangarTest"));
        let s = build(&self.parts, &self.config, &self.queue_url, &self.prefix, metrics.clone()).await;
        (Arc::new(s), metrics)
    }

    /// The scaler's job ledger, read straight from moto (not through the proxy).
    pub async fn ledger(&self) -> DynamoLedger {
        let direct = aws_config_for(&moto().endpoint()).await;
        DynamoLedger::new(dynamodb::Client::new(&direct), self.parts.ledger_table.clone())
    }

    pub fn provision_queue_url(&self) -> Option<&str> {
        self.parts.provision_queue_url.as_deref()
    }

    pub fn pool_name(&self) -> PoolName {
        self.pool.name.clone()
    }

    pub async fn handle(&self, payload: Value) -> Value {
        self.scaler.handle(payload).await.expect("handled")
    }

    /// Sends an SQS batch and returns the ids reported failed.
    pub async fn batch(&self, records: &[(&str, String, u32)]) -> Vec<String> {
        failures(&self.handle(sqs_event(records)).await)
    }

    /// Instances of this pool that are pending or running, with their tags.
    pub async fn live(&self) -> Vec<Inst> {
        instances(&self.ec2, self.pool.name.as_str()).await.into_iter().filter(|i| i.live()).collect()
    }

    pub async fn all(&self) -> Vec<Inst> {
        instances(&self.ec2, self.pool.name.as_str()).await
    }

    /// The JIT config stored for an instance, decrypted.
    pub async fn jit(&self, id: &str) -> Option<String> {
        self.ssm
            .get_parameter()
            .name(format!("{}/{id}", self.prefix))
            .with_decryption(true)
            .send()
            .await
            .ok()
            .and_then(|o| o.parameter.and_then(|p| p.value))
    }

    /// Parameter names under this test's prefix.
    pub async fn parameters(&self) -> Vec<String> {
        let out = self
            .ssm
            .get_parameters_by_path()
            .path(&self.prefix)
            .send()
            .await
            .expect("get parameters by path");
        let mut names: Vec<String> =
            out.parameters().iter().filter_map(|p| p.name().map(str::to_owned)).collect();
        names.sort();
        names
    }

    /// What the boot agent does: read and delete the parameter, start the runner (registers it
    /// with the simulator). Returns the runner id.
    pub async fn boot(&self, id: &str) -> u64 {
        let jit = self.jit(id).await.unwrap_or_else(|| panic!("no JIT parameter for {id}"));
        self.ssm.delete_parameter().name(format!("{}/{id}", self.prefix)).send().await.expect("delete");
        self.sim.register_runner(&jit).expect("runner registers").id
    }

    /// A GitHub client of its own (its calls count in the simulator like any other).
    pub fn github_client(&self) -> GithubClient {
        GithubClient::with_runtime(
            GithubConfig::new(
                self.sim.base_url(),
                self.sim.app_id(),
                Secret::new(key("test-only-github-app.private-key.pem")),
            ),
            self.sim.clock(),
            Arc::new(SimSleeper(self.sim.clock())),
        )
        .expect("github client")
    }

    pub fn aws_writes(&self) -> u64 {
        let c = self.proxy.counts();
        AWS_WRITES.iter().map(|a| c.get(*a).copied().unwrap_or(0)).sum()
    }

    pub fn github_writes(&self) -> u64 {
        GITHUB_WRITES.iter().map(|e| self.sim.count(e)).sum()
    }

    pub fn aws_calls(&self) -> u64 {
        self.proxy.counts().values().sum()
    }

    /// What the provisioner's event source does with the provisioning queue: hands the scaler
    /// every message there as one SQS batch, deletes those it did not report failed, and makes
    /// the failed ones visible again at once (the visibility timeout, elapsed). Returns
    /// `(messages handled, ids reported failed)`.
    pub async fn provisioner(&self) -> (usize, Vec<String>) {
        self.provisioner_until(None).await
    }

    /// [`Env::provisioner`] with the invocation's deadline.
    pub async fn provisioner_until(&self, deadline: Option<tokio::time::Instant>) -> (usize, Vec<String>) {
        let url = self.parts.provision_queue_url.as_deref().expect("Options::provisioning");
        let mut msgs = Vec::new();
        for _ in 0..5 {
            let got = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .message_system_attribute_names(sqs::types::MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            let got = got.messages.unwrap_or_default();
            if got.is_empty() {
                break;
            }
            msgs.extend(got);
        }
        let records: Vec<(String, String, u32)> = msgs
            .iter()
            .map(|m| {
                let count = m
                    .attributes()
                    .and_then(|a| a.get(&sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                (m.message_id().unwrap().to_owned(), m.body().unwrap().to_owned(), count)
            })
            .collect();
        if records.is_empty() {
            return (0, Vec::new());
        }
        let refs: Vec<(&str, String, u32)> =
            records.iter().map(|(i, b, c)| (i.as_str(), b.clone(), *c)).collect();
        let failed = failures(&self.scaler.handle_until(sqs_event(&refs), deadline).await.expect("handled"));
        for m in &msgs {
            let handle = m.receipt_handle().unwrap();
            if failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                self.sqs
                    .change_message_visibility()
                    .queue_url(url)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .expect("visibility");
            } else {
                self.sqs.delete_message().queue_url(url).receipt_handle(handle).send().await.expect("delete");
            }
        }
        (records.len(), failed)
    }

    /// Messages waiting in the scale queue (removed), as `(message id, body, receive count)`.
    pub async fn drain_queue(&self) -> Vec<(String, String, u32)> {
        let mut out = Vec::new();
        for _ in 0..3 {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .message_system_attribute_names(sqs::types::MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            let msgs = got.messages.unwrap_or_default();
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .expect("delete message");
                let count = m
                    .attributes()
                    .and_then(|a| a.get(&sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                out.push((m.message_id().unwrap().to_owned(), m.body().unwrap().to_owned(), count));
            }
        }
        out
    }
}

async fn build(
    src: &PartsSource,
    config: &Config,
    queue_url: &str,
    prefix: &str,
    metrics: Arc<Metrics>,
) -> Scaler {
    let cfg = aws_config_for(&src.endpoint).await;
    let fast = |n| with_retries(&cfg, &RetrySettings::fast_for_tests(n));
    let ec2_client = ec2::Client::new(&fast(src.ec2_attempts));
    let gh = GithubClient::with_runtime(
        GithubConfig::new(
            src.github_url.clone(),
            config.github.app_id,
            Secret::new(key("test-only-github-app.private-key.pem")),
        ),
        src.clock.clone(),
        Arc::new(SimSleeper(src.clock.clone())),
    )
    .expect("github client");
    Scaler::new(ScalerParts {
        config: config.clone(),
        fleet: Arc::new(Ec2Fleet::new(ec2_client.clone())),
        jit: Arc::new(SsmJitStore::with_prefix(ssm::Client::new(&fast(3)), prefix).expect("prefix")),
        github: Arc::new(gh),
        queue: Arc::new(SqsScaleQueue::new(sqs::Client::new(&fast(3)), queue_url)),
        lookup: Arc::new(Ec2InstanceLookup::new(ec2_client)),
        clock: src.clock.clone(),
        metrics,
        options: ScalerOptions::default(),
        ledger: Arc::new(DynamoLedger::new(dynamodb::Client::new(&fast(3)), src.ledger_table.clone())),
        launches: Arc::new(hangar_aws::launch_log::DynamoLaunchLog::new(
            dynamodb::Client::new(&fast(3)),
            src.ledger_table.clone(),
        )),
        provisioning: src.provision_queue_url.as_ref().map(
            |url| -> Arc<dyn hangar_core::ports::ProvisionQueue> {
                Arc::new(hangar_aws::sqs::SqsProvisionQueue::new(sqs::Client::new(&fast(3)), url.clone()))
            },
        ),
    })
}

#[derive(Debug, Clone)]
pub struct Inst {
    pub id: String,
    pub state: String,
    pub tags: BTreeMap<String, String>,
    pub instance_type: String,
    pub spot: bool,
}

impl Inst {
    pub fn live(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running" | "stopping" | "stopped")
    }
    pub fn tag(&self, k: &str) -> Option<&str> {
        self.tags.get(k).map(String::as_str)
    }
}

pub async fn instances(ec2: &ec2::Client, pool: &str) -> Vec<Inst> {
    let out = ec2
        .describe_instances()
        .filters(ec2::types::Filter::builder().name("tag:hangar:pool").values(pool).build())
        .send()
        .await
        .expect("describe");
    let mut v: Vec<Inst> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| Inst {
            id: i.instance_id().unwrap().to_owned(),
            state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()).unwrap_or_default(),
            tags: i
                .tags()
                .iter()
                .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
                .collect(),
            instance_type: i.instance_type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
            spot: i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot"),
        })
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// An SQS event in the documented shape, one record per `(message id, body, receive count)`.
pub fn sqs_event(records: &[(&str, String, u32)]) -> Value {
    let template = fixture("sqs-fifo-batch.json")["Records"][0].clone();
    let recs: Vec<Value> = records
        .iter()
        .map(|(id, body, n)| {
            let mut r = template.clone();
            r["messageId"] = json!(id);
            r["body"] = json!(body);
            r["attributes"]["ApproximateReceiveCount"] = json!(n.to_string());
            r
        })
        .collect();
    json!({ "Records": recs })
}

pub fn failures(resp: &Value) -> Vec<String> {
    let mut v: Vec<String> = resp["batchItemFailures"]
        .as_array()
        .expect("a batch response")
        .iter()
        .map(|f| f["itemIdentifier"].as_str().expect("item identifier").to_owned())
        .collect();
    v.sort();
    v
}

pub fn scale_up(pool: &PoolName, job: u64) -> String {
    QueueMessage::ScaleUp(JobRef {
        pool: pool.clone(),
        job_id: JobId(job),
        run_id: RunId(job * 10),
        run_attempt: 1,
        repository: RepoFullName::from(REPO),
        installation_id: Some(InstallationId(1)),
        labels: vec!["self-hosted".into(), "linux".into()],
        created_at: None,
        delivery_id: None,
    })
    .to_json()
}

pub fn started(pool: &PoolName, job: u64, runner: &str) -> String {
    QueueMessage::JobStarted(JobStarted {
        pool: pool.clone(),
        job_id: JobId(job),
        run_id: RunId(job * 10),
        run_attempt: 1,
        repository: RepoFullName::from(REPO),
        installation_id: Some(InstallationId(1)),
        runner_name: Some(RunnerName::from(runner)),
        started_at: None,
    })
    .to_json()
}

pub fn completed(
    pool: &PoolName,
    job: u64,
    runner: &str,
    conclusion: &str,
    attempt: u32,
    repo: &str,
) -> String {
    QueueMessage::JobCompleted(JobCompleted {
        pool: pool.clone(),
        job_id: JobId(job),
        run_id: RunId(job * 10),
        run_attempt: attempt,
        repository: RepoFullName::from(repo),
        installation_id: Some(InstallationId(1)),
        runner_name: Some(RunnerName::from(runner)),
        conclusion: Some(conclusion.into()),
        completed_at: None,
    })
    .to_json()
}

pub fn runner_name(pool: &PoolName, id: &str) -> String {
    RunnerName::for_instance(pool, &id.into()).to_string()
}

pub fn ec2_event(fixture_name: &str, instance: &str, state: Option<&str>) -> Value {
    let mut ev = fixture(fixture_name);
    ev["detail"]["instance-id"] = json!(instance);
    ev["resources"] = json!([format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")]);
    if let Some(s) = state {
        ev["detail"]["state"] = json!(s);
    }
    ev
}

pub fn create_fleets(env: &Env) -> u64 {
    env.proxy.counts().get("CreateFleet").copied().unwrap_or(0)
}

/// Feeds whatever the scaler queued (ticks) back to it as one batch, as the event source would;
/// returns how many messages there were.
pub async fn run_queue(env: &Env) -> usize {
    let queued = env.drain_queue().await;
    if queued.is_empty() {
        return 0;
    }
    let refs: Vec<(&str, String, u32)> = queued.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
    assert!(env.batch(&refs).await.is_empty(), "the queued ticks were handled");
    queued.len()
}

/// The pool's queued jobs in the ledger, oldest first.
pub async fn queued_jobs(env: &Env) -> Vec<u64> {
    use hangar_core::ledger::JobLedger as _;
    env.ledger().await.queued(&env.pool_name()).await.unwrap().into_iter().map(|j| j.key.job_id.0).collect()
}
