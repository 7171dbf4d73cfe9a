//! The Lambda functions, as the stack has them: one `cargo lambda watch --only-lambda-apis` (the
//! Lambda runtime API) per function, each function's environment variables, and its execution
//! environments, the real binaries polling that API: the webhook, the scaler, and the
//! provisioner (the same `hangar-scaler` binary on the provisioning queue).

use super::esm::Invoker;
use super::procs::{free_port, wait_port, Proc, Spec};
use super::runtime_api;
use super::stack::{self, Stack};
use super::{DemoArgs, Paths, Started};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lambda's longest function timeout, in seconds.
const LONGEST_TIMEOUT_SECS: u64 = 900;

/// The runtime API ports, chosen before anything starts (GitHub needs the webhook's URL).
pub struct Ports {
    pub webhook: u16,
    pub scaler: u16,
    pub provisioner: u16,
}

impl Ports {
    pub fn pick() -> anyhow::Result<Self> {
        Ok(Ports { webhook: free_port()?, scaler: free_port()?, provisioner: free_port()? })
    }

    /// The webhook function's URL, where GitHub delivers.
    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/lambda-url/_/", self.webhook)
    }
}

/// A function's execution environments: `count` processes of one binary polling one runtime
/// API. The kill fault replaces the scaler's; a new configuration replaces them too.
pub struct Environments {
    /// Log names are `{name}-{generation}-{i}`.
    name: &'static str,
    program: PathBuf,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    logs: PathBuf,
    count: usize,
    procs: tokio::sync::Mutex<Vec<Proc>>,
    generation: Mutex<u32>,
}

impl Environments {
    fn new(
        name: &'static str,
        program: PathBuf,
        env: BTreeMap<String, String>,
        paths: &Paths,
        count: usize,
    ) -> Self {
        Environments {
            name,
            program,
            env,
            cwd: paths.logs.clone(),
            logs: paths.logs.clone(),
            count: count.max(1),
            procs: tokio::sync::Mutex::new(Vec::new()),
            generation: Mutex::new(0),
        }
    }

    pub async fn start(&self) -> anyhow::Result<()> {
        let gen = {
            let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
            *g += 1;
            *g
        };
        let mut procs = self.procs.lock().await;
        for i in 0..self.count {
            procs.push(Proc::spawn(Spec {
                name: format!("{}-{gen}-{i}", self.name),
                program: &self.program,
                args: vec![],
                env: self.env.clone(),
                cwd: &self.cwd,
                log_dir: &self.logs,
            })?);
        }
        Ok(())
    }

    pub async fn kill_all_hard(&self) {
        let mut procs = self.procs.lock().await;
        for p in procs.iter_mut() {
            p.kill_hard().await;
        }
        procs.clear();
    }

    pub async fn stop_all(&self) {
        let mut procs = self.procs.lock().await;
        for p in procs.iter_mut() {
            p.stop().await;
        }
        procs.clear();
    }
}

/// The functions the demo started, and how to invoke them.
pub struct Lambdas {
    pub scalers: Arc<Environments>,
    /// The scaler function's invoke API (what its event sources call).
    pub scaler: Arc<Invoker>,
    /// The provisioner's environments and invoke API.
    pub provisioners: Arc<Environments>,
    pub provisioner: Arc<Invoker>,
}

/// Starts every function's runtime API and execution environments; what it starts goes into
/// `started`. `aws_endpoint` is where the functions call AWS (the fault proxy).
pub async fn start(
    args: &DemoArgs,
    paths: &Paths,
    stack: &Stack,
    aws_endpoint: String,
    ports: &Ports,
    started: &mut Started,
) -> anyhow::Result<Lambdas> {
    // The Lambda runtime API: one `cargo lambda watch` per function. Its `--timeout` bounds an
    // invocation, and also how long it holds an idle `/next`: after it, it answers 408 with no
    // request id, on which lambda_runtime panics and the environment is gone (Lambda holds
    // `/next` until an event comes). Reconcile keeps the scaler busy every few seconds, but
    // the webhook may idle for longer (no job changes state while runners boot), so its
    // watch gets Lambda's longest timeout; the scaler's is the function's timeout, which the
    // report's timeouts are measured against. The provisioner's is the function's timeout too
    // (the template gives it the scaler's, 30 s), which its invocation timeouts are measured
    // against in the same way. Both idle at times (the provisioner whenever nothing launches,
    // the scaler between a burst's batches), so their environments poll through a front that
    // holds `/next` as Lambda does and hands out the invocation's deadline, which both work to
    // and the watch gets wrong (see [`runtime_api`]).
    let watches = [
        ("webhook", ports.webhook, LONGEST_TIMEOUT_SECS),
        ("scaler", ports.scaler, args.lambda_timeout),
        ("provisioner", ports.provisioner, args.lambda_timeout),
    ];
    for (name, port, timeout) in watches {
        let mut p = Proc::spawn(Spec {
            name: format!("cargo-lambda-watch-{name}"),
            program: &paths.cargo_lambda,
            args: vec![
                "lambda".into(),
                "watch".into(),
                "--only-lambda-apis".into(),
                "-A".into(),
                "127.0.0.1".into(),
                "-P".into(),
                port.to_string(),
                "--timeout".into(),
                timeout.to_string(),
            ],
            env: BTreeMap::new(),
            cwd: &paths.root,
            log_dir: &paths.logs,
        })?;
        let ready = wait_port(&mut p, port, Duration::from_secs(60)).await;
        started.procs.push(p);
        ready?;
    }

    let mut fronts = Vec::new();
    for port in [ports.scaler, ports.provisioner] {
        let upstream = format!("http://127.0.0.1:{port}/.rt");
        let (api, task) = runtime_api::start(upstream, Duration::from_secs(args.lambda_timeout)).await?;
        started.servers.push(task);
        fronts.push(api);
    }
    let provisioner_api = fronts.pop().expect("two fronts");
    let scaler_api = fronts.pop().expect("two fronts");
    let (webhook_env, scaler_env, provisioner_env) =
        environment(args, stack, aws_endpoint, ports, scaler_api, provisioner_api)?;
    // Execution environments of one function: each polls the same runtime API.
    for i in 0..args.webhooks.max(1) {
        started.procs.push(Proc::spawn(Spec {
            name: format!("hangar-webhook-{i}"),
            program: &paths.bin_dir.join("hangar-webhook"),
            args: vec![],
            env: webhook_env.clone(),
            cwd: &paths.logs,
            log_dir: &paths.logs,
        })?);
    }
    let program = paths.bin_dir.join("hangar-scaler");
    let scalers =
        Arc::new(Environments::new("hangar-scaler", program.clone(), scaler_env, paths, args.scalers));
    scalers.start().await?;
    started.functions.push(Arc::clone(&scalers));
    let timeout = Duration::from_secs(args.lambda_timeout);
    let scaler =
        Arc::new(Invoker::new(&format!("http://127.0.0.1:{}", ports.scaler), timeout, args.scalers)?);
    let provisioners =
        Arc::new(Environments::new("hangar-provisioner", program, provisioner_env, paths, args.provisioners));
    provisioners.start().await?;
    started.functions.push(Arc::clone(&provisioners));
    let provisioner = Arc::new(Invoker::new(
        &format!("http://127.0.0.1:{}", ports.provisioner),
        timeout,
        args.provisioners,
    )?);
    Ok(Lambdas { scalers, scaler, provisioners, provisioner })
}

type Env = BTreeMap<String, String>;

/// The functions' environment variables, as the template sets them: (webhook, scaler,
/// provisioner). The scaler and the provisioner poll their runtime-API fronts.
fn environment(
    args: &DemoArgs,
    stack: &Stack,
    aws_endpoint: String,
    ports: &Ports,
    scaler_api: String,
    provisioner_api: String,
) -> anyhow::Result<(Env, Env, Env)> {
    let mut common: Env = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
        ("HANGAR_METRICS_NAMESPACE", "HangarDemo"),
        ("HANGAR_CONFIG_PARAMETER", stack::CONFIG_PARAMETER),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    common.insert("HANGAR_AWS_ENDPOINT".into(), aws_endpoint);
    common.insert("HANGAR_QUEUE_URL".into(), stack.queue_url.clone());
    let mut webhook_env = common.clone();
    webhook_env.insert("AWS_LAMBDA_RUNTIME_API".into(), format!("http://127.0.0.1:{}/.rt", ports.webhook));
    webhook_env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), "hangar-demo-webhook".into());
    webhook_env.insert("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), "128".into());
    webhook_env.insert("HANGAR_WEBHOOK_SECRET_PARAMETER".into(), stack::SECRET_PARAMETER.into());
    webhook_env.insert("HANGAR_MAX_BODY_BYTES".into(), "1048576".into());
    let mut scaler_env = common.clone();
    scaler_env.insert("AWS_LAMBDA_RUNTIME_API".into(), scaler_api);
    scaler_env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), "hangar-demo-scaler".into());
    scaler_env.insert("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), "256".into());
    scaler_env.insert("HANGAR_GITHUB_APP_KEY_PARAMETER".into(), stack::APP_KEY_PARAMETER.into());
    scaler_env.insert("HANGAR_JIT_PARAMETER_PREFIX".into(), stack::JIT_PREFIX.into());
    scaler_env.insert("HANGAR_LEDGER_TABLE".into(), stack::LEDGER_TABLE.into());
    // One message per launched instance, for the provisioner.
    scaler_env.insert("HANGAR_PROVISION_QUEUE_URL".into(), stack.provision_queue_url.clone());
    // The webhook records each event as it arrives, as the stack has it do.
    webhook_env.insert("HANGAR_LEDGER_TABLE".into(), stack::LEDGER_TABLE.into());
    if let Some(id) = stack.launch_templates.values().next() {
        scaler_env.insert("HANGAR_LAUNCH_TEMPLATE_ID".into(), id.clone());
    }
    for kv in &args.lambda_env {
        let (k, v) = kv.split_once('=').with_context(|| format!("--lambda-env `{kv}` is not KEY=VALUE"))?;
        webhook_env.insert(k.to_owned(), v.to_owned());
        scaler_env.insert(k.to_owned(), v.to_owned());
    }
    // The provisioner: the same binary with the scaler's environment (the stack gives it a
    // subset; the binary tells the two apart by the messages it is handed), its own name and
    // its own runtime API.
    let mut provisioner_env = scaler_env.clone();
    provisioner_env.insert("AWS_LAMBDA_RUNTIME_API".into(), provisioner_api);
    provisioner_env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), "hangar-demo-provisioner".into());
    Ok((webhook_env, scaler_env, provisioner_env))
}
