//! The webhook Lambda's entry point: wiring only. Logic lives in `hangar_webhook::App` and the core.

use hangar_aws::dynamo::DynamoLedger;
use hangar_aws::reexports::{dynamodb, sqs, ssm};
use hangar_aws::ssm::SsmConfigSource;
use hangar_webhook::settings::Settings;
use hangar_webhook::App;
use lambda_http::{run, service_fn, Error, Request};
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

    let sdk = hangar_aws::sdk::load_config_from_env().await;
    let settings = Settings::load(&SsmConfigSource::new(ssm::Client::new(&sdk))).await?;
    let queue = hangar_aws::sqs::SqsScaleQueue::new(sqs::Client::new(&sdk), settings.queue_url.clone());
    let app = App::from_parts(
        settings.config,
        &settings.secrets,
        settings.max_body_bytes,
        Arc::new(queue),
        settings.namespace,
    );
    let app = Arc::new(match settings.ledger_table {
        Some(table) => app.with_ledger(Arc::new(DynamoLedger::new(dynamodb::Client::new(&sdk), table))),
        None => app,
    });

    run(service_fn(move |req: Request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
    }))
    .await
}
