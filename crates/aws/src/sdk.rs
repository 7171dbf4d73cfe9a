//! The one place that builds the AWS SDK configuration. In AWS the default chain supplies region
//! and credentials; locally `HANGAR_AWS_ENDPOINT` points every client at moto (or the fault proxy
//! in front of it), exactly as the Lambdas would talk to AWS.

use aws_config::{BehaviorVersion, SdkConfig};

/// Env var naming an endpoint override for every AWS client (local cloud only).
pub const ENDPOINT_ENV: &str = "HANGAR_AWS_ENDPOINT";

/// Loads the SDK config once per cold start. `endpoint` overrides the service endpoints.
pub async fn load_config(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// [`load_config`] with the endpoint taken from `HANGAR_AWS_ENDPOINT`, if set.
pub async fn load_config_from_env() -> SdkConfig {
    let endpoint = std::env::var(ENDPOINT_ENV).ok().filter(|s| !s.is_empty());
    load_config(endpoint.as_deref()).await
}
