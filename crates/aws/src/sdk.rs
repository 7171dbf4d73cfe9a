//! The one place that builds the AWS SDK configuration. In AWS the default chain supplies region
//! and credentials; locally `HANGAR_AWS_ENDPOINT` points every client at moto (or the fault proxy
//! in front of it), exactly as the Lambdas would talk to AWS.
//!
//! Retries are the SDK's own: standard mode (token bucket, exponential backoff with jitter,
//! throttling codes such as `RequestLimitExceeded` and 5xx responses are retried), with a
//! bounded number of attempts. [`RetrySettings`] makes the bound and the backoff explicit;
//! `HANGAR_AWS_MAX_ATTEMPTS` overrides the attempt bound without a redeploy.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use std::time::Duration;

/// Env var naming an endpoint override for every AWS client (local cloud only).
pub const ENDPOINT_ENV: &str = "HANGAR_AWS_ENDPOINT";
/// Env var overriding [`RetrySettings::max_attempts`].
pub const MAX_ATTEMPTS_ENV: &str = "HANGAR_AWS_MAX_ATTEMPTS";

/// Bounds on the SDK's standard-mode retries and on each call's duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Total attempts per call, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Base of the exponential backoff; the SDK adds full jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Whole-operation deadline including retries; `None` leaves it to the Lambda timeout.
    pub operation_timeout: Option<Duration>,
}

impl Default for RetrySettings {
    /// The SDK's standard defaults (3 attempts, 1 s base, 20 s cap), with a 20 s operation
    /// deadline so a throttled call cannot eat a whole scaler invocation.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            operation_timeout: Some(Duration::from_secs(20)),
        }
    }
}

impl RetrySettings {
    /// Short backoff for tests against a local endpoint: same attempt bound, milliseconds apart.
    pub fn fast_for_tests(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
            operation_timeout: Some(Duration::from_secs(30)),
        }
    }

    /// The default, with `HANGAR_AWS_MAX_ATTEMPTS` applied if it is a positive integer.
    pub fn from_env() -> Self {
        let mut s = Self::default();
        if let Some(n) = std::env::var(MAX_ATTEMPTS_ENV).ok().and_then(|v| v.trim().parse::<u32>().ok()) {
            if n > 0 {
                s.max_attempts = n;
            }
        }
        s
    }

    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    pub fn timeout_config(&self) -> TimeoutConfig {
        let mut b = TimeoutConfig::builder();
        if let Some(t) = self.operation_timeout {
            b = b.operation_timeout(t);
        }
        b.build()
    }
}

/// Loads the SDK config once per cold start. `endpoint` overrides the service endpoints.
/// Retries follow the SDK defaults and the standard `AWS_MAX_ATTEMPTS` / `AWS_RETRY_MODE`.
pub async fn load_config(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// [`load_config`] with explicit retry bounds and operation deadline.
pub async fn load_config_with(endpoint: Option<&str>, retry: &RetrySettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry.retry_config())
        .timeout_config(retry.timeout_config());
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

/// [`load_config_with`] with the endpoint from `HANGAR_AWS_ENDPOINT` and
/// [`RetrySettings::from_env`]: what the scaler uses.
pub async fn load_config_with_retries_from_env() -> SdkConfig {
    let endpoint = std::env::var(ENDPOINT_ENV).ok().filter(|s| !s.is_empty());
    load_config_with(endpoint.as_deref(), &RetrySettings::from_env()).await
}

/// `config` with different retry bounds, for one client (tests shorten the backoff this way
/// without touching the shared config).
pub fn with_retries(config: &SdkConfig, retry: &RetrySettings) -> SdkConfig {
    config.to_builder().retry_config(retry.retry_config()).timeout_config(retry.timeout_config()).build()
}
