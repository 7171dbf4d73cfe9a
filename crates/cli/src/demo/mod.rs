//! `hangar demo`: the whole of Hangar on one machine, on real binaries.
//!
//! moto_server (behind the AWS fault proxy) is the AWS account; `cargo lambda watch` runs the
//! Lambda runtime API in front of the real `hangar-webhook` and `hangar-scaler` binaries (the
//! latter twice, as the stack deploys it: scaler and provisioner; see [`lambdas`]); the
//! GitHub simulator queues the trace's jobs and sends signed webhooks to the webhook's function
//! URL; the runner-instance simulator plays every launched instance. The demo itself stands in
//! for the SQS event source mappings and the EventBridge rules (see [`esm`]), replays the trace
//! and its faults, drains the pools (warm pools to zero, as an operator would before deleting
//! the stack), counts what is left, and stops everything it started, by PID.

mod esm;
mod faults;
mod lambdas;
mod observe;
mod procs;
mod report;
mod runtime_api;
mod stack;

use anyhow::{bail, Context};
use hangar_core::config::Config;
use hangar_core::routing::Router;
use hangar_sim::bound::{Arrival, Boot, Bound, Limit, Limits, PoolSpec};
use hangar_sim::fault_proxy::FaultProxy;
use hangar_sim::github::{GithubSim, JobSpec, JobStatus, OrgSpec, SimConfig};
use hangar_sim::instances::{DelayRange, InstanceSim, InstanceSimConfig};
use hangar_sim::trace::Trace;
use procs::{free_port, wait_port, Proc, Spec};
use report::{Outcome, PoolOutcome};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const APP_ID: u64 = 4242;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The workload trace (see crates/sim/src/trace.rs and traces/).
    #[arg(long)]
    pub trace: PathBuf,
    /// Where report.json goes; the SVG picture goes next to it (same name, `.svg`).
    #[arg(long, default_value = "report.json")]
    pub report: PathBuf,
    /// Pool configuration; default: the trace's `config`, else traces/pools.yaml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Repository root (for `cargo lambda watch`, .venv and target/); default: this build's.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Where the Lambda binaries are; default ROOT/target/debug.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Process logs; default: `hangar-demo-logs/` next to the report.
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// Scaler execution environments: the function's reserved concurrency (the stack's
    /// `ScalerReservedConcurrency`, default 5). Its queue mapping may use all but two of them,
    /// as the stack's `ScalerQueueConcurrency` has it, so reconcile and EC2 events always find
    /// one.
    #[arg(long, default_value_t = 5)]
    pub scalers: usize,
    /// Provisioner execution environments (the function's
    /// concurrency, and its queue mapping's: batches in flight at once).
    #[arg(long, default_value_t = 2)]
    pub provisioners: usize,
    /// Webhook execution environments, and the webhook deliveries the GitHub simulator has in
    /// flight at once (GitHub and Lambda both work concurrently; one job's deliveries stay in
    /// order).
    #[arg(long, default_value_t = 4)]
    pub webhooks: usize,
    /// Real seconds between reconcile events (the schedule is `rate(1 minute)` in AWS).
    #[arg(long, default_value_t = 2.0)]
    pub reconcile_every: f64,
    /// Real seconds a message whose handling failed stays invisible before it is retried (the
    /// queue's visibility timeout, 360 in AWS). Messages in flight stay invisible for longer
    /// than `--lambda-timeout`, as in AWS.
    #[arg(long, default_value_t = 5)]
    pub visibility_timeout: u32,
    /// Real seconds an invocation may take before it counts as failed (60 in AWS).
    #[arg(long, default_value_t = 30)]
    pub lambda_timeout: u64,
    /// Boot delay of a new instance, `MIN-MAX` real milliseconds.
    #[arg(long, default_value = "1000-2500")]
    pub boot_ms: String,
    /// Boot delay of an instance started from stopped, `MIN-MAX` real milliseconds.
    #[arg(long, default_value = "300-800")]
    pub restart_ms: String,
    /// Real seconds an instance waits for its JIT parameter (600 on a real runner).
    #[arg(long, default_value_t = 30.0)]
    pub jit_deadline: f64,
    /// Real seconds to wait, after the last arrival and the longest job, for jobs to finish. A
    /// run ends as soon as every job has; the default leaves room for GitHub's secondary rate
    /// limit (80 JIT configs a minute) to pace a 200-job burst.
    #[arg(long, default_value_t = 480.0)]
    pub settle_timeout: f64,
    /// Real seconds to wait for the drained pools to empty.
    #[arg(long, default_value_t = 90.0)]
    pub drain_timeout: f64,
    /// Extra `KEY=VALUE` for every Lambda function (repeatable).
    #[arg(long = "lambda-env")]
    pub lambda_env: Vec<String>,
    /// Do not forward EC2 state changes to the scaler.
    #[arg(long)]
    pub no_ec2_events: bool,
}

fn parse_range(s: &str) -> anyhow::Result<DelayRange> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u64 = a.trim().parse().with_context(|| format!("`{s}` is not MIN-MAX milliseconds"))?;
    let b: u64 = b.trim().parse().with_context(|| format!("`{s}` is not MIN-MAX milliseconds"))?;
    Ok(DelayRange::new(a, b))
}

pub fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(orchestrate(args))
}

struct Paths {
    root: PathBuf,
    bin_dir: PathBuf,
    moto: PathBuf,
    cargo_lambda: PathBuf,
    logs: PathBuf,
    svg: PathBuf,
}

fn resolve(args: &DemoArgs) -> anyhow::Result<Paths> {
    let root = match &args.root {
        Some(r) => r.clone(),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).context("repository root")?.to_path_buf()
        }
    };
    let bin_dir = args.bin_dir.clone().unwrap_or_else(|| root.join("target/debug"));
    let moto = std::env::var_os("HANGAR_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/moto_server"));
    let cargo_lambda = root.join(".venv/bin/cargo-lambda");
    for (what, p) in [("moto_server", &moto), ("cargo-lambda", &cargo_lambda)] {
        if !p.exists() {
            bail!("{what} not found at {}; run `bash tools/setup.sh` (make demo does)", p.display());
        }
    }
    for b in ["hangar-webhook", "hangar-scaler"] {
        if !bin_dir.join(b).exists() {
            bail!(
                "{} not found; run `cargo build --workspace --all-targets` (make demo does)",
                bin_dir.join(b).display()
            );
        }
    }
    let report_dir =
        args.report.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let logs = args.logs.clone().unwrap_or_else(|| report_dir.join("hangar-demo-logs"));
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    Ok(Paths { root, bin_dir, moto, cargo_lambda, logs, svg: args.report.with_extension("svg") })
}

async fn aws_client_config(endpoint: &str) -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new("testing", "testing", None, None, "hangar-demo");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Every process the demo started, stopped in reverse order whatever happens.
#[derive(Default)]
struct Started {
    procs: Vec<Proc>,
    /// The functions whose execution environments come and go (scaler, provisioner).
    functions: Vec<Arc<lambdas::Environments>>,
    /// Servers in this process between the functions and their runtime APIs.
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    async fn stop_all(&mut self) {
        while let Some(f) = self.functions.pop() {
            f.stop_all().await;
        }
        for s in self.servers.drain(..) {
            s.abort();
        }
        while let Some(mut p) = self.procs.pop() {
            p.stop().await;
        }
    }
}

async fn orchestrate(args: DemoArgs) -> anyhow::Result<i32> {
    let paths = resolve(&args)?;
    let trace = Trace::load(&args.trace).with_context(|| format!("trace {}", args.trace.display()))?;
    let config_path = args
        .config
        .clone()
        .or_else(|| trace.config.clone())
        .unwrap_or_else(|| paths.root.join("traces/pools.yaml"));
    let config_text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config = Config::from_yaml(&config_text)
        .with_context(|| format!("pool configuration {}", config_path.display()))?;
    let router = Router::new(&config);
    for (i, j) in trace.expanded().iter().enumerate() {
        if router.route(&j.labels).is_err() {
            bail!("trace job {i} (labels {:?}) routes to no pool of {}", j.labels, config_path.display());
        }
    }
    let mut started = Started::default();
    let result = run_cloud(&args, &paths, &trace, config, &mut started).await;
    started.stop_all().await;
    let outcome = result?;
    let json = serde_json::to_string_pretty(&outcome.0.to_json())?;
    std::fs::write(&args.report, json + "\n")
        .with_context(|| format!("writing {}", args.report.display()))?;
    std::fs::write(&paths.svg, outcome.1).with_context(|| format!("writing {}", paths.svg.display()))?;
    print!("{}", outcome.0.table());
    println!(
        "  report: {}  picture: {}  logs: {}",
        args.report.display(),
        paths.svg.display(),
        paths.logs.display()
    );
    Ok(if outcome.0.clean() { 0 } else { 1 })
}

/// A trace job and what became of it (the attempts are a chain of re-runs in the simulator).
struct Root {
    id: u64,
    pool: String,
    attempts: u32,
    conclusion: String,
}

async fn run_cloud(
    args: &DemoArgs,
    paths: &Paths,
    trace: &Trace,
    config: Config,
    started: &mut Started,
) -> anyhow::Result<(Outcome, String)> {
    let t0 = Instant::now();
    let say = |msg: String| eprintln!("[{:>6.1}s] {msg}", t0.elapsed().as_secs_f64());

    // AWS: moto, and the fault proxy in front of it for everything Hangar calls.
    let moto_port = free_port()?;
    let mut moto = Proc::spawn(Spec {
        name: "moto_server".into(),
        program: &paths.moto,
        args: vec!["-H".into(), "127.0.0.1".into(), "-p".into(), moto_port.to_string()],
        env: BTreeMap::new(),
        cwd: &paths.logs,
        log_dir: &paths.logs,
    })?;
    let ready = wait_port(&mut moto, moto_port, Duration::from_secs(60)).await;
    started.procs.push(moto);
    ready?;
    let moto_url = format!("http://127.0.0.1:{moto_port}");
    let proxy = FaultProxy::start(moto_url.clone()).await.context("starting the fault proxy")?;
    let direct = aws_client_config(&moto_url).await;
    let ec2 = aws_sdk_ec2::Client::new(&direct);
    let ssm = aws_sdk_ssm::Client::new(&direct);
    let sqs = aws_sdk_sqs::Client::new(&direct);
    let ddb = hangar_aws::reexports::dynamodb::Client::new(&direct);
    say(format!("moto on {moto_url}, fault proxy on {}", proxy.endpoint()));

    // GitHub, sending webhooks to the webhook function's URL.
    let ports = lambdas::Ports::pick()?;
    let webhook_url = ports.webhook_url();
    let secret = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let keys = paths.root.join("fixtures/keys");
    let public_key = std::fs::read_to_string(keys.join("test-only-github-app.public-key.pem"))
        .context("reading the test-only App public key")?;
    let private_key = std::fs::read_to_string(keys.join("test-only-github-app.private-key.pem"))
        .context("reading the test-only App private key")?;
    let mut sim_cfg = SimConfig::new(APP_ID, public_key);
    let group = config.github.runner_group.clone();
    sim_cfg.orgs = vec![OrgSpec {
        login: config.organization.clone(),
        id: 33435655,
        installation_id: 1,
        runner_groups: if group == "Default" { vec![] } else { vec![group] },
    }];
    sim_cfg.webhook_url = Some(webhook_url.clone());
    sim_cfg.webhook_secret = secret.clone();
    sim_cfg.webhook_concurrency = args.webhooks.max(1);
    let writes_per_minute = sim_cfg.secondary_writes_per_minute;
    let sim = Arc::new(GithubSim::start(sim_cfg).await.context("starting the GitHub simulator")?);
    say(format!("GitHub simulator on {}", sim.base_url()));

    let stack = stack::create(
        &ec2,
        &sqs,
        &ssm,
        stack::StackInput {
            config: &config,
            api_url: &sim.base_url(),
            app_id: APP_ID,
            webhook_secret: &secret,
            app_private_key_pem: &private_key,
            visibility_timeout_secs: args.visibility_timeout,
        },
    )
    .await?;
    stack::create_ledger(&ddb).await?;
    say(format!(
        "stack: queue {}, {} subnets, launch templates {:?}",
        stack.queue_url,
        stack.subnets.len(),
        stack.launch_templates.keys().collect::<Vec<_>>()
    ));

    let lambdas = lambdas::start(args, paths, &stack, proxy.endpoint(), &ports, started).await?;
    let scalers = Arc::clone(&lambdas.scalers);
    say(format!(
        "Lambdas: webhook ×{} on {webhook_url}, scaler ×{} on 127.0.0.1:{}, provisioner ×{} on 127.0.0.1:{}",
        args.webhooks.max(1),
        args.scalers.max(1),
        ports.scaler,
        args.provisioners.max(1),
        ports.provisioner,
    ));

    // Runner instances.
    let mut icfg = InstanceSimConfig::new(sim.control_url());
    icfg.jit_prefix = stack::JIT_PREFIX.into();
    icfg.boot = parse_range(&args.boot_ms)?;
    icfg.restart = parse_range(&args.restart_ms)?;
    icfg.jit_deadline = Duration::from_secs_f64(args.jit_deadline.max(1.0));
    let boot = Boot { range: icfg.boot, seed: icfg.seed };
    let instances = Arc::new(InstanceSim::start(ec2.clone(), ssm.clone(), icfg)?);

    // Event sources.
    let (stop_tx, stop_rx) = watch::channel(false);
    let invoker = Arc::clone(&lambdas.scaler);
    let inflight_visibility = (args.lambda_timeout + 10).min(i32::MAX as u64) as i32;
    // The stack's ScalerQueueConcurrency: two fewer batches at once than executions.
    let esm = Arc::new(esm::Esm::new(
        sqs.clone(),
        stack.queue_url.clone(),
        Arc::clone(&invoker),
        args.scalers.saturating_sub(2).max(1),
        args.visibility_timeout as i32,
        inflight_visibility,
    ));
    // The provisioning queue's mapping (standard queue: no groups), invoking the provisioner.
    let provision_esm = Arc::new(esm::Esm::new(
        sqs.clone(),
        stack.provision_queue_url.clone(),
        Arc::clone(&lambdas.provisioner),
        args.provisioners.max(1),
        args.visibility_timeout as i32,
        inflight_visibility,
    ));
    // The queues' mappings stop before teardown, the schedule and EC2 events with everything.
    let (poll_stop_tx, poll_stop_rx) = watch::channel(false);
    // The schedule and EC2 events stop once the pools are empty, before the queue's last
    // messages (their ticks among them) are drained.
    let (events_stop_tx, events_stop_rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(Arc::clone(&esm).run(poll_stop_rx.clone())),
        tokio::spawn(esm::schedule(
            Arc::clone(&esm),
            Duration::from_secs_f64(args.reconcile_every.max(0.2)),
            events_stop_rx.clone(),
        )),
    ];
    tasks.push(tokio::spawn(Arc::clone(&provision_esm).run(poll_stop_rx)));
    if !args.no_ec2_events {
        tasks.push(tokio::spawn(esm::ec2_events(
            Arc::clone(&esm),
            instances.subscribe(),
            events_stop_rx.clone(),
        )));
    }

    // Sampling: the pools' picture, and the cap, checked on every look at moto.
    let max_runners: BTreeMap<String, u32> =
        config.pools.iter().map(|p| (p.name.to_string(), p.max_runners)).collect();
    let pool_names: Vec<String> = config.pools.iter().map(|p| p.name.to_string()).collect();
    let (seen, sampler) = observe::sample(Arc::clone(&sim), &config, instances.subscribe(), stop_rx.clone());
    tasks.push(sampler);
    let observe::Seen { samples, t0: samples_t0, peaks, job_tags } = seen;

    // Faults.
    let extra = Arc::new(Mutex::new(BTreeMap::<String, serde_json::Value>::new()));
    let replay_start = Instant::now();
    let proxy = Arc::new(proxy);
    tasks.extend(faults::spawn(
        trace,
        replay_start,
        faults::Targets {
            sim: Arc::clone(&sim),
            proxy: Arc::clone(&proxy),
            scalers: Arc::clone(&scalers),
            invoker: Arc::clone(&invoker),
            extra: Arc::clone(&extra),
            webhook_url: webhook_url.clone(),
        },
    ));

    // Replay, and the bound: the ideal scaler's run on the same trace.
    let (bound_input, bound) = ideal(trace, &config, boot, writes_per_minute)?;
    let jobs = trace.expanded();
    say(format!(
        "replaying `{}`: {} jobs over {:.0} real s ({}x compression)",
        trace.name,
        jobs.len(),
        trace.real(trace.span()).as_secs_f64(),
        trace.time_compression
    ));
    let router = Router::new(&config);
    let mut roots: Vec<Root> = Vec::new();
    for j in &jobs {
        tokio::time::sleep_until((replay_start + trace.real(j.at)).into()).await;
        let mut spec = JobSpec::new(j.repo.clone(), &j.labels.iter().map(String::as_str).collect::<Vec<_>>());
        spec.duration_ms = trace.real(j.duration).as_millis() as u64;
        spec.conclusion = j.conclusion.clone();
        let job = sim.enqueue_job(spec).map_err(|e| anyhow::anyhow!("enqueue {}: {e}", j.repo))?;
        let pool = router.route(&j.labels).map(|i| pool_names[i].clone()).unwrap_or_default();
        roots.push(Root { id: job.id, pool, attempts: j.run_attempt, conclusion: j.conclusion.clone() });
    }
    let longest = jobs.iter().map(|j| trace.real(j.duration)).max().unwrap_or_default();
    let deadline = Instant::now() + longest + Duration::from_secs_f64(args.settle_timeout);
    say("all jobs queued; waiting for them to finish".into());
    let mut last_note = Instant::now();
    loop {
        let all = sim.jobs();
        let by_id: HashMap<u64, &hangar_sim::github::Job> = all.iter().map(|j| (j.id, j)).collect();
        let mut pending = 0;
        for r in &roots {
            let chain = observe::chain_of(r.id, &by_id);
            let ok = chain
                .iter()
                .filter(|j| {
                    j.status == JobStatus::Completed && j.conclusion.as_deref() == Some(r.conclusion.as_str())
                })
                .count() as u32;
            if ok >= r.attempts {
                continue;
            }
            pending += 1;
            let last = chain.last().expect("chain has the root");
            // The trace's own re-runs: the next attempt once the previous one is done.
            if last.status == JobStatus::Completed
                && last.conclusion.as_deref() == Some(r.conclusion.as_str())
            {
                let _ = sim.rerun_job(last.id);
            }
        }
        if pending == 0 || Instant::now() >= deadline {
            if pending > 0 {
                say(format!("{pending} trace jobs did not finish before the deadline"));
            }
            break;
        }
        if last_note.elapsed() >= Duration::from_secs(5) {
            last_note = Instant::now();
            let o = instances.latest();
            let live = o.instances.iter().filter(|i| i.counts_toward_cap()).count();
            say(format!("{pending} trace jobs unfinished; {live} instances up"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Teardown: warm pools to zero (a new configuration means new execution environments),
    // then wait for the pools to empty. The queue may still hold a backlog (late job events,
    // ticks), and a batch of it can launch after the pools
    // look empty; so once they do, the schedule and EC2 events stop, the mapping delivers what
    // the queue holds, then it is disabled, as one would in AWS, the batches in flight
    // finish, and the pools must be empty again.
    say("draining: warm pools to 0".into());
    stack::put_config(&ssm, &stack::drained(&stack.config)).await?;
    // The provisioner keeps its environments: it reads only what the drained configuration
    // leaves as it was (the pools' names and launch settings), and restarting it would fail the
    // batches it has in flight.
    scalers.stop_all().await;
    scalers.start().await?;
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    let mut polling = true;
    loop {
        let live = instances.latest().instances.iter().filter(|i| i.counts_toward_cap()).count();
        let params = stack::jit_parameters(&ssm).await.map(|p| p.len()).unwrap_or(usize::MAX);
        let runners = sim.runners().iter().filter(|r| !r.removed).count();
        if live == 0 && params == 0 && runners == 0 {
            if !polling {
                break;
            }
            polling = false;
            // Nothing sends any more; the mapping then delivers what the queue holds (a
            // message it cannot handle goes to the dead-letter queue by its redrive policy).
            let _ = events_stop_tx.send(true);
            // The scale queue first, then the provisioning queue, which the scale queue's last
            // batches may still feed; a provisioning message may take all its receives (each
            // up to an invocation and a visibility timeout) before it is done.
            let queue_wait = u64::from(args.visibility_timeout) * 4
                + 10
                + u64::from(stack::PROVISION_MAX_RECEIVE_COUNT)
                    * (args.lambda_timeout + u64::from(args.visibility_timeout));
            let queue_deadline = Instant::now() + Duration::from_secs(queue_wait);
            let mappings: Vec<&esm::Esm> = vec![&*esm, &*provision_esm];
            while Instant::now() < queue_deadline && esm::any_busy(&mappings).await {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = poll_stop_tx.send(true);
            let flight_deadline = Instant::now() + Duration::from_secs(args.lambda_timeout + 5);
            while mappings.iter().any(|m| m.batches_in_flight() > 0) && Instant::now() < flight_deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            say("drained; queue mappings disabled, looking again".into());
            // Of the instance simulator's next two looks at moto, the second began after the
            // last batch ended, so it sees whatever that batch launched.
            let mut seen = instances.latest().at_ms;
            let mut fresh = 0;
            let look_deadline = Instant::now() + Duration::from_secs(10);
            while fresh < 2 && Instant::now() < look_deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let at = instances.latest().at_ms;
                if at > seen {
                    seen = at;
                    fresh += 1;
                }
            }
            continue;
        }
        if Instant::now() >= drain_deadline {
            say(format!("drain deadline: {live} instances, {params} parameters, {runners} runners remain"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop_tx.send(true);
    for t in &tasks {
        t.abort();
    }
    instances.stop();
    scalers.stop_all().await;
    lambdas.provisioners.stop_all().await;

    // Leftovers, read from the sources of truth after teardown.
    let left_instances = observe::count_live(&ec2).await?;
    let left_params = stack::jit_parameters(&ssm).await?.len() as u64;
    let left_runners = sim.runners().iter().filter(|r| !r.removed).count() as u64;
    let dlq_depth = stack::queue_depth(&sqs, &stack.dlq_url).await.unwrap_or(0);
    let queue_depth = stack::queue_depth(&sqs, &stack.queue_url).await.unwrap_or(0);
    let provision_dlq_depth = stack::queue_depth(&sqs, &stack.provision_dlq_url).await.unwrap_or(0);
    let provision_depth = stack::queue_depth(&sqs, &stack.provision_queue_url).await.unwrap_or(0);
    let ledger_queued_left = stack::ledger_queued(&ddb, &stack.config).await?;

    // The outcome.
    let all = sim.jobs();
    let by_id: HashMap<u64, &hangar_sim::github::Job> = all.iter().map(|j| (j.id, j)).collect();
    let mut o = Outcome {
        trace: trace.name.clone(),
        time_compression: trace.time_compression,
        time_compression_note: format!(
            "trace time runs {}x real time (arrivals, job durations); boot {} ms, reconcile every {} s, SQS visibility {} s and pool timeouts are real time",
            trace.time_compression, args.boot_ms, args.reconcile_every, args.visibility_timeout
        ),
        ..Default::default()
    };
    let mut all_waits = Vec::new();
    let mut pool_waits: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in &pool_names {
        o.pools.insert(p.clone(), PoolOutcome { max_runners: max_runners[p], ..Default::default() });
    }
    for r in &roots {
        let chain = observe::chain_of(r.id, &by_id);
        o.jobs_total += u64::from(r.attempts);
        o.jobs_queued += chain.len() as u64;
        o.jobs_started += chain.iter().filter(|j| j.started_at.is_some()).count() as u64;
        let ok = chain
            .iter()
            .filter(|j| {
                j.status == JobStatus::Completed && j.conclusion.as_deref() == Some(r.conclusion.as_str())
            })
            .count() as u64;
        let done = ok.min(u64::from(r.attempts));
        o.jobs_completed += done;
        let po = o.pools.entry(r.pool.clone()).or_default();
        po.jobs += u64::from(r.attempts);
        po.completed += done;
        for j in &chain {
            if let Some(s) = j.started_at {
                let w = (s - j.created_at).num_milliseconds().max(0) as u64;
                all_waits.push(w);
                pool_waits.entry(r.pool.clone()).or_default().push(w);
            }
        }
    }
    o.waits = report::waits(&all_waits);
    o.bound_waits = report::waits(&bound.all_waits());
    let peaks = peaks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let samples_now = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (p, po) in o.pools.iter_mut() {
        po.queue_wait_ms = report::waits(pool_waits.get(p).map(Vec::as_slice).unwrap_or(&[]));
        if let Some(i) = pool_names.iter().position(|n| n == p) {
            po.queue_wait_bound_ms = report::waits(&bound.pool_waits(&bound_input, i));
        }
        po.queue_wait_ratio = report::ratio(&po.queue_wait_ms, &po.queue_wait_bound_ms);
        po.max_observed = peaks.get(p).copied().unwrap_or(0);
        po.max_stall_ms = report::max_stall_ms(&samples_now, p, po.max_runners);
    }
    o.max_runners_exceeded = o.pools.values().any(|p| p.max_observed > p.max_runners);
    let records = instances.records();
    for r in &records {
        o.launches += 1;
        if r.spot {
            o.spot_launches += 1;
        } else {
            o.on_demand_launches += 1;
        }
        if let Some(p) = r.pool.as_ref().and_then(|p| o.pools.get_mut(p)) {
            p.launches += 1;
        }
    }
    o.github_calls = sim.counters().total;
    o.aws_calls = proxy.counts().values().sum();
    o.leftover_instances = left_instances;
    o.leftover_parameters = left_params;
    o.leftover_runners = left_runners;
    o.ledger_queued_left = ledger_queued_left;
    o.messages_left = queue_depth + provision_depth;
    o.duration_s = t0.elapsed().as_secs_f64();
    let mut extra = extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let tags = job_tags.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Instances are tagged with the job that started on them: a job on two instances ran twice.
    extra.insert(
        "jobs_with_multiple_instances".into(),
        serde_json::json!(tags.values().filter(|v| v.len() > 1).count()),
    );
    extra.insert("jobs_tagged_on_instances".into(), serde_json::json!(tags.len()));
    if let Some(ids) = extra.get("hostile_job_ids").and_then(|v| v.as_array()).cloned() {
        let touched = all.iter().filter(|j| ids.iter().any(|i| i.as_u64() == Some(j.id))).count();
        extra.insert("hostile_jobs_known_to_github".into(), serde_json::json!(touched));
    }
    let deliveries = sim.deliveries();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for d in &deliveries {
        *statuses.entry(observe::delivery_outcome(d)).or_default() += 1;
    }
    extra.insert("webhook_deliveries".into(), serde_json::json!(statuses));
    // For a run that lost jobs: what GitHub sent about each, and how it ended, so that a failed
    // CI run says where to look without its logs.
    let unfinished: Vec<serde_json::Value> = all
        .iter()
        .filter(|j| j.status != JobStatus::Completed)
        .take(20)
        .map(|j| {
            let sent: Vec<String> = deliveries
                .iter()
                .filter(|d| d.job_id == j.id)
                .map(|d| format!("{}:{}", d.action, observe::delivery_outcome(d)))
                .collect();
            serde_json::json!({
                "job_id": j.id,
                "status": format!("{:?}", j.status).to_lowercase(),
                "created_at": j.created_at,
                "runner_name": j.runner_name,
                "deliveries": sent,
                "instances_tagged": tags.get(&j.id.to_string()).map_or(0, |t| t.len()),
            })
        })
        .collect();
    extra.insert("unfinished_jobs".into(), serde_json::Value::Array(unfinished));
    extra.insert("event_source".into(), serde_json::to_value(esm.stats())?);
    extra.insert("event_source_provision".into(), serde_json::to_value(provision_esm.stats())?);
    // Every function's timed-out invocations, and by function.
    let timeouts = |i: &esm::Invoker| i.timeouts.load(std::sync::atomic::Ordering::SeqCst);
    let by_function =
        BTreeMap::from([("scaler", timeouts(&invoker)), ("provisioner", timeouts(&lambdas.provisioner))]);
    extra.insert("invocation_timeouts".into(), serde_json::json!(by_function.values().sum::<u64>()));
    extra.insert("invocation_timeouts_by_function".into(), serde_json::json!(by_function));
    extra.insert("instances".into(), serde_json::to_value(instances.stats())?);
    extra.insert(
        "instances_by_phase".into(),
        serde_json::json!(records.iter().fold(BTreeMap::<String, u64>::new(), |mut m, r| {
            *m.entry(format!("{:?}", r.phase).to_lowercase()).or_default() += 1;
            m
        })),
    );
    extra.insert("aws_calls_by_action".into(), serde_json::to_value(proxy.counts())?);
    extra.insert("aws_faults_injected".into(), serde_json::to_value(proxy.injected())?);
    extra.insert("github_calls_by_endpoint".into(), serde_json::to_value(sim.counters().requests)?);
    // Both dead-letter queues: anything there is a message no invocation could handle. The
    // provisioning queue's own count says which queue it was.
    extra.insert("dead_letter_messages".into(), serde_json::json!(dlq_depth + provision_dlq_depth));
    extra.insert("provision_dead_letter_messages".into(), serde_json::json!(provision_dlq_depth));
    extra.insert(
        "bound".into(),
        serde_json::json!({
            "model": "an ideal scaler (crates/sim/src/bound.rs): sees each arrival at once, launches at once; held to the caps, warm pools, boot times and seed, job durations and GitHub's write limit",
            "boot_ms": format!("{}-{}", boot.range.min_ms, boot.range.max_ms),
            "seed": boot.seed,
            "jit_configs_per_minute": writes_per_minute,
            "launches": pool_names.iter().cloned().zip(bound.launches.iter().copied()).collect::<BTreeMap<_, _>>(),
        }),
    );
    extra.insert("scale_queue_messages_left".into(), serde_json::json!(queue_depth));
    extra.insert("provision_queue_messages_left".into(), serde_json::json!(provision_depth));
    extra.insert("jobs_in_github".into(), serde_json::json!(all.len()));
    extra.insert(
        "lambda_runtime".into(),
        serde_json::json!(
            "cargo lambda watch --only-lambda-apis (one per function), real binaries from target/debug"
        ),
    );
    o.extra = extra;
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // The bound's clock starts with the replay; the samples' a little earlier.
    let offset = replay_start.saturating_duration_since(samples_t0).as_millis() as u64;
    let bound_queued: BTreeMap<String, Vec<(u64, u32)>> = pool_names
        .iter()
        .cloned()
        .zip(bound.queued.iter().map(|c| c.iter().map(|&(t, n)| (t + offset, n)).collect()))
        .collect();
    let svg = report::svg(&trace.name, &samples, &bound_queued, &max_runners, &o.time_compression_note);

    if let Ok(p) = Arc::try_unwrap(proxy) {
        p.shutdown().await;
    }
    drop(instances);
    say("done; stopping everything".into());
    Ok((o, svg))
}

/// The bound: the ideal scaler's run on this trace, in the real milliseconds of the replay
/// (arrivals and durations compressed as the replay compresses them). It has the same caps,
/// warm pools (the size in force at the start), boot-time range and seed as the instance
/// simulator, the trace's durations and re-runs, and GitHub's secondary limit as the simulator
/// applies it (`writes_per_minute` writes in any 60 s; the ideal scaler spends them all on JIT
/// configs). The fault proxy throttles no EC2 call unless a trace fault says so, and faults are
/// not limits: the bound has no EC2 limit and no faults.
fn ideal(
    trace: &Trace,
    config: &Config,
    boot: Boot,
    writes_per_minute: usize,
) -> anyhow::Result<(hangar_sim::bound::Input, Bound)> {
    let router = Router::new(config);
    let pools = config
        .pools
        .iter()
        .map(|p| PoolSpec {
            name: p.name.to_string(),
            max_runners: Some(p.max_runners),
            warm: hangar_core::config::warm_target(&p.warm_pool, p.max_runners, chrono::Utc::now()),
        })
        .collect();
    let mut jobs = Vec::new();
    for j in trace.expanded() {
        let pool = router.route(&j.labels).map_err(|e| anyhow::anyhow!("bound: {e:?}"))?;
        jobs.push(Arrival {
            pool,
            arrival_ms: trace.real(j.at).as_millis() as u64,
            duration_ms: trace.real(j.duration).as_millis() as u64,
            attempts: j.run_attempt,
        });
    }
    let max = u32::try_from(writes_per_minute).unwrap_or(u32::MAX);
    let limits = Limits { jit: vec![Limit::Window { max, per_ms: 60_000 }], launch: vec![] };
    let input = hangar_sim::bound::Input { pools, jobs, boot, limits };
    let bound = hangar_sim::bound::simulate(&input).context("computing the bound")?;
    Ok((input, bound))
}
