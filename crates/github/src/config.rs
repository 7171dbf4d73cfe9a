//! Client settings. The defaults suit a Lambda invocation: bounded waits, short timeouts.

use crate::GithubError;
use hangar_core::secret::Secret;
use std::time::Duration;

/// How transient failures are retried within one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts for 5xx and connection errors, the first included.
    pub max_attempts: u32,
    /// First backoff; doubles per attempt, with jitter, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Rate-limit waits allowed within one call.
    pub max_rate_limit_waits: u32,
    /// A rate-limit wait longer than this is not waited for: the call fails as retryable, so
    /// the queue redelivers it later instead of a Lambda sleeping through its timeout.
    pub max_rate_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_rate_limit_waits: 2,
            max_rate_limit_wait: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// REST API base: `https://api.github.com`, `https://HOST/api/v3` (GitHub Enterprise
    /// Server) or `https://api.SUBDOMAIN.ghe.com` (GHE.com). No trailing slash needed.
    pub api_url: String,
    pub app_id: u64,
    /// The App's private key (PEM, PKCS#1 as GitHub hands it out, or PKCS#8).
    pub private_key_pem: Secret,
    pub user_agent: String,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    /// A cached installation token is replaced this long before it expires.
    pub token_refresh_margin: Duration,
}

impl GithubConfig {
    pub fn new(api_url: impl Into<String>, app_id: u64, private_key_pem: Secret) -> Self {
        GithubConfig {
            api_url: api_url.into(),
            app_id,
            private_key_pem,
            user_agent: concat!("hangar/", env!("CARGO_PKG_VERSION")).to_owned(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(10),
            token_refresh_margin: Duration::from_secs(300),
        }
    }

    /// `https://HOST/api/v3`, GitHub Enterprise Server's REST base.
    pub fn enterprise_server_url(host: &str) -> String {
        format!("https://{}/api/v3", host.trim_end_matches('/'))
    }

    /// `https://api.SUBDOMAIN.ghe.com`, GitHub Enterprise Cloud with data residency.
    pub fn ghe_com_url(subdomain: &str) -> String {
        format!("https://api.{subdomain}.ghe.com")
    }

    pub(crate) fn normalised_base(&self) -> Result<String, GithubError> {
        let base = self.api_url.trim().trim_end_matches('/').to_owned();
        let parsed =
            reqwest::Url::parse(&base).map_err(|e| GithubError::BaseUrl(base.clone(), e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(GithubError::BaseUrl(base, "needs an http(s) scheme and a host".into()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(GithubError::BaseUrl(base, "must not have a query or fragment".into()));
        }
        Ok(base)
    }
}
