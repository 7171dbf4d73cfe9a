//! GitHub App client for Hangar: implements [`hangar_core::ports::RunnerRegistry`].
//!
//! - App authentication with an RS256 JWT (`iat` 60 s in the past, `exp` 9 minutes ahead,
//!   `iss` the App id), used only to mint installation tokens and to look up installations.
//! - Installation tokens cached per installation and refreshed `token_refresh_margin` before they
//!   expire, so steady-state traffic is one request per launched runner (the JIT call).
//! - Installation ids taken from the webhook payload when the caller has one, otherwise looked up
//!   once per owner and cached; runner groups resolved by name once per organisation and cached.
//! - Failure handling: primary rate limit (waits until `x-ratelimit-reset`), secondary limit
//!   (403/429 with `retry-after`), 5xx and connection errors retried with jittered bounded
//!   backoff, 401 retried once after a token refresh, 404/409/422 and other 4xx never retried.
//!   Waits go through an injectable [`Sleeper`] and [`Clock`], so tests never really sleep.
//!
//! GitHub App permissions: organisation "Self-hosted runners" read/write (org runners),
//! repository "Administration" read/write (repository runners), repository "Actions" read (jobs)
//! and write (re-runs).

mod client;
mod config;

pub use client::{ClientStats, GithubClient, Sleeper, TokioSleeper};
pub use config::{GithubConfig, RetryPolicy};

use hangar_core::ports::Clock;

/// A configuration the client cannot work with. Runtime failures are
/// [`hangar_core::ports::PortError`]s.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("the GitHub App private key is not a valid RSA PEM key: {0}")]
    PrivateKey(String),
    #[error("invalid GitHub API base URL `{0}`: {1}")]
    BaseUrl(String, String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// Re-exported so callers can inject the clock without naming the core crate path.
pub type SharedClock = std::sync::Arc<dyn Clock>;
