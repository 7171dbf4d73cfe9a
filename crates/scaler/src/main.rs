//! The scaler Lambda's entry point: wiring only. Logic lives in `hangar_scaler::Scaler` and the
//! core planner.

use hangar_aws::dynamo::DynamoLedger;
use hangar_aws::ec2::Ec2Fleet;
use hangar_aws::launch_log::DynamoLaunchLog;
use hangar_aws::reexports::{dynamodb, ec2, sqs, ssm};
use hangar_aws::sqs::{SqsProvisionQueue, SqsScaleQueue};
use hangar_aws::ssm::{SsmConfigSource, SsmJitStore};
use hangar_core::ports::ProvisionQueue;
use hangar_core::ports::SystemClock;
use hangar_github::{GithubClient, GithubConfig};
use hangar_scaler::lookup::Ec2InstanceLookup;
use hangar_scaler::provisioner::time_left;
use hangar_scaler::settings::Settings;
use hangar_scaler::{Metrics, Scaler, ScalerError, ScalerOptions, ScalerParts};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .init();

    let sdk = hangar_aws::sdk::load_config_with_retries_from_env().await;
    let settings = Settings::load(&SsmConfigSource::new(ssm::Client::new(&sdk))).await?;
    let Some(app_key) = settings.app_key.clone() else {
        // Deployed before the GitHub App exists: one log line per invocation, nothing else.
        // A redeploy with the App id starts a fresh environment, which loads the settings again.
        return run(service_fn(|event: LambdaEvent<Value>| async move {
            hangar_scaler::without_app::handle(&event.payload)
        }))
        .await;
    };
    let ec2_client = ec2::Client::new(&sdk);
    let jit = match &settings.jit_prefix {
        Some(prefix) => SsmJitStore::with_prefix(ssm::Client::new(&sdk), prefix)?,
        None => SsmJitStore::new(ssm::Client::new(&sdk)),
    };
    let jit = match &settings.instance_arn_prefix {
        Some(prefix) => jit.with_instance_arn_prefix(prefix.clone()),
        None => jit,
    };
    let github = GithubClient::new(GithubConfig::new(
        settings.github_api_url.clone(),
        settings.config.github.app_id,
        app_key,
    ))?;
    let fallback = settings.function_timeout;
    let scaler = Arc::new(Scaler::new(ScalerParts {
        fleet: Arc::new(Ec2Fleet::new(ec2_client.clone())),
        jit: Arc::new(jit),
        github: Arc::new(github),
        queue: Arc::new(SqsScaleQueue::new(sqs::Client::new(&sdk), settings.queue_url.clone())),
        lookup: Arc::new(Ec2InstanceLookup::new(ec2_client)),
        clock: Arc::new(SystemClock),
        metrics: Arc::new(Metrics::stdout(settings.namespace.clone())),
        options: ScalerOptions::default(),
        ledger: Arc::new(DynamoLedger::new(dynamodb::Client::new(&sdk), settings.ledger_table.clone())),
        launches: Arc::new(DynamoLaunchLog::new(dynamodb::Client::new(&sdk), settings.ledger_table.clone())),
        provisioning: settings.provision_queue_url.as_ref().map(|url| -> Arc<dyn ProvisionQueue> {
            Arc::new(SqsProvisionQueue::new(sqs::Client::new(&sdk), url.clone()))
        }),
        config: settings.config,
    }));

    run(service_fn(move |event: LambdaEvent<Value>| {
        let scaler = Arc::clone(&scaler);
        // Lambda's deadline, on the tokio clock: the provisioner's waits end before it.
        let left = time_left(event.context.deadline(), std::time::SystemTime::now(), fallback);
        let deadline = left.map(|l| tokio::time::Instant::now() + l);
        async move { scaler.handle_until(event.payload, deadline).await.map_err(|e: ScalerError| e) }
    }))
    .await
}
