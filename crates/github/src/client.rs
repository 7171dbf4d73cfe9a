//! The HTTP client: one request loop ([`GithubClient::send`]) that owns authentication, rate
//! limits and retries. The [`RunnerRegistry`] calls built on it are in [`registry`].

mod registry;

use crate::config::GithubConfig;
use crate::GithubError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hangar_core::ids::{InstallationId, JobId, RepoFullName, RunnerGroupId, RunnerId, RunnerName};
use hangar_core::ports::{
    Clock, JitConfig, JitRequest, JobInfo, PortError, RegisteredRunner, RunnerRegistry, RunnerScopeTarget,
    SystemClock,
};
use hangar_core::secret::Secret;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, USER_AGENT};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const API_VERSION: &str = "2022-11-28";
/// GitHub's guidance when a secondary limit names no `retry-after`: wait at least a minute.
const SECONDARY_DEFAULT_WAIT: Duration = Duration::from_secs(60);
const NO_VALUE: u64 = u64::MAX;

/// Waits between retries. Injected so tests advance a simulated clock instead of sleeping.
#[async_trait]
pub trait Sleeper: Send + Sync {
    async fn sleep(&self, d: Duration);
}

/// Real waiting, on the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

#[async_trait]
impl Sleeper for TokioSleeper {
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}

/// What the client has spent, for metrics and for tests that count requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent, all kinds, retries included.
    pub requests: u64,
    pub token_requests: u64,
    pub installation_lookups: u64,
    pub runner_group_lookups: u64,
    /// Requests repeated after a 5xx, a connection error or a 401.
    pub retries: u64,
    pub rate_limit_waits: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    token_requests: AtomicU64,
    installation_lookups: AtomicU64,
    runner_group_lookups: AtomicU64,
    retries: AtomicU64,
    rate_limit_waits: AtomicU64,
}

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    expires_at: DateTime<Utc>,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    App,
    Installation(InstallationId),
}

struct Call {
    op: &'static str,
    method: Method,
    /// Absolute URL (pagination follows GitHub's own `Link` URLs).
    url: String,
    auth: Auth,
    body: Option<Value>,
}

struct Reply {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A failed call, and whether an earlier attempt of it may have reached GitHub and taken effect.
struct Failure {
    error: PortError,
    earlier_attempt_ambiguous: bool,
}

impl From<PortError> for Failure {
    fn from(error: PortError) -> Self {
        Failure { error, earlier_attempt_ambiguous: false }
    }
}

/// GitHub App client. Cheap to share behind an `Arc`; caches live as long as it does (one
/// Lambda execution environment).
pub struct GithubClient {
    cfg: GithubConfig,
    base: String,
    http: reqwest::Client,
    key: EncodingKey,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    tokens: Mutex<HashMap<InstallationId, TokenSlot>>,
    /// Owner login (lower case) -> installation.
    installations: Mutex<HashMap<String, InstallationId>>,
    /// (org lower case, group name lower case) -> group id.
    groups: Mutex<HashMap<(String, String), RunnerGroupId>>,
    rate_remaining: AtomicU64,
    counters: Counters,
}

impl std::fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubClient").field("base", &self.base).field("app_id", &self.cfg.app_id).finish()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
    expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct InstallationBody {
    id: u64,
}

#[derive(Deserialize)]
struct GroupsBody {
    runner_groups: Vec<GroupBody>,
}

#[derive(Deserialize)]
struct GroupBody {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct LabelBody {
    name: String,
}

#[derive(Deserialize)]
struct RunnerBody {
    id: u64,
    name: String,
    status: String,
    busy: bool,
    #[serde(default)]
    labels: Vec<LabelBody>,
    runner_group_id: Option<u64>,
}

#[derive(Deserialize)]
struct RunnersBody {
    runners: Vec<RunnerBody>,
}

#[derive(Deserialize)]
struct JitBody {
    runner: RunnerBody,
    encoded_jit_config: String,
}

#[derive(Deserialize)]
struct JobBody {
    id: u64,
    status: String,
    conclusion: Option<String>,
    runner_name: Option<String>,
    run_attempt: Option<u32>,
}

#[derive(serde::Serialize)]
struct Claims {
    iat: i64,
    exp: i64,
    iss: String,
}

fn decode<T: for<'de> Deserialize<'de>>(op: &'static str, what: &str, body: &[u8]) -> Result<T, PortError> {
    serde_json::from_slice(body).map_err(|e| {
        PortError::permanent(op, Some("decode".into()), format!("{what}: unexpected response body: {e}"))
    })
}

/// The `message` GitHub puts in error bodies; never the whole body (it could echo input).
fn github_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(|s| s.chars().take(300).collect()))
        .unwrap_or_else(|| "no message".to_owned())
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `rel="next"` URL of a GitHub `Link` header.
fn next_link(h: &HeaderMap) -> Option<String> {
    let link = h.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

fn split_repo<'a>(op: &'static str, repo: &'a RepoFullName) -> Result<(&'a str, &'a str), PortError> {
    repo.as_str()
        .split_once('/')
        .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| {
            PortError::permanent(op, Some("invalid-input".into()), format!("`{repo}` is not owner/name"))
        })
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn check_segment(op: &'static str, what: &str, s: &str) -> Result<(), PortError> {
    if s.is_empty() || s.contains(['/', '?', '#', '%']) || s.chars().any(char::is_whitespace) {
        return Err(PortError::permanent(op, Some("invalid-input".into()), format!("invalid {what} `{s}`")));
    }
    Ok(())
}

impl GithubClient {
    /// A client on the system clock and real sleeping.
    pub fn new(cfg: GithubConfig) -> Result<Self, GithubError> {
        Self::with_runtime(cfg, Arc::new(SystemClock), Arc::new(TokioSleeper))
    }

    /// A client with an injected clock (JWT times, token expiry, rate-limit resets) and sleeper.
    pub fn with_runtime(
        cfg: GithubConfig,
        clock: Arc<dyn Clock>,
        sleeper: Arc<dyn Sleeper>,
    ) -> Result<Self, GithubError> {
        let base = cfg.normalised_base()?;
        let key = EncodingKey::from_rsa_pem(cfg.private_key_pem.expose().as_bytes())
            .map_err(|e| GithubError::PrivateKey(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| GithubError::Http(e.to_string()))?;
        Ok(GithubClient {
            cfg,
            base,
            http,
            key,
            clock,
            sleeper,
            tokens: Mutex::default(),
            installations: Mutex::default(),
            groups: Mutex::default(),
            rate_remaining: AtomicU64::new(NO_VALUE),
            counters: Counters::default(),
        })
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            token_requests: c.token_requests.load(Ordering::Relaxed),
            installation_lookups: c.installation_lookups.load(Ordering::Relaxed),
            runner_group_lookups: c.runner_group_lookups.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rate_limit_waits: c.rate_limit_waits.load(Ordering::Relaxed),
        }
    }

    /// Records the installation of an owner, e.g. from a webhook's `installation.id`, so later
    /// calls for that owner need no lookup.
    pub fn remember_installation(&self, owner: &str, id: InstallationId) {
        self.installations.lock().unwrap_or_else(|e| e.into_inner()).insert(owner.to_ascii_lowercase(), id);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An App JWT: `iat` 60 s back for clock drift, `exp` 9 minutes ahead (GitHub allows 10).
    fn app_jwt(&self, op: &'static str) -> Result<Secret, PortError> {
        let now = self.clock.now().timestamp();
        let claims = Claims { iat: now - 60, exp: now + 540, iss: self.cfg.app_id.to_string() };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key).map(Secret::new).map_err(
            |e| PortError::permanent(op, Some("jwt".into()), format!("cannot sign the App JWT: {e}")),
        )
    }

    fn slot(&self, id: InstallationId) -> TokenSlot {
        Arc::clone(self.tokens.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default())
    }

    /// The cached installation token, minted when missing or within the refresh margin of its
    /// expiry. One mint per installation at a time: concurrent callers wait for it.
    fn token(
        &self,
        id: InstallationId,
    ) -> Pin<Box<dyn Future<Output = Result<Secret, PortError>> + Send + '_>> {
        Box::pin(async move {
            let slot = self.slot(id);
            let mut guard = slot.lock().await;
            let margin = chrono::Duration::from_std(self.cfg.token_refresh_margin).unwrap_or_default();
            if let Some(t) = guard.as_ref() {
                if t.expires_at - margin > self.clock.now() {
                    return Ok(t.token.clone());
                }
            }
            const OP: &str = "github:create-installation-token";
            self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
            let reply = self
                .send(Call {
                    op: OP,
                    method: Method::POST,
                    url: self.url(&format!("/app/installations/{id}/access_tokens")),
                    auth: Auth::App,
                    body: None,
                })
                .await
                .map_err(|f| f.error)?;
            let body: TokenBody = decode(OP, "installation token", &reply.body)?;
            let token = Secret::new(body.token);
            *guard = Some(CachedToken { token: token.clone(), expires_at: body.expires_at });
            tracing::debug!(installation = id.0, expires_at = %body.expires_at, "installation token minted");
            Ok(token)
        })
    }

    /// Drops the cached token if it is still the one that was rejected.
    async fn invalidate(&self, id: InstallationId, rejected: &Secret) {
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|t| &t.token == rejected) {
            *guard = None;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let r = &self.cfg.retry;
        let exp = r.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(r.max_delay);
        // Equal jitter: at least half the step, so retries from many callers spread out but
        // never collapse to zero.
        let half = cap / 2;
        half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis().max(1) as u64))
    }

    fn record_rate(&self, h: &HeaderMap) {
        if let Some(rem) = header_u64(h, "x-ratelimit-remaining") {
            self.rate_remaining.store(rem, Ordering::Relaxed);
        }
    }

    /// How long a 403/429 asks us to wait, or `None` if it is a plain "forbidden".
    fn rate_limit_wait(&self, h: &HeaderMap, message: &str) -> Option<(Duration, &'static str)> {
        if let Some(secs) = header_u64(h, "retry-after") {
            return Some((Duration::from_secs(secs), "secondary-rate-limit"));
        }
        if header_u64(h, "x-ratelimit-remaining") == Some(0) {
            let reset = header_u64(h, "x-ratelimit-reset").unwrap_or(0) as i64;
            let wait = (reset - self.clock.now().timestamp()).max(0) as u64;
            // One second past the reset, since the header has whole seconds.
            return Some((Duration::from_secs(wait + 1), "rate-limited"));
        }
        message
            .to_ascii_lowercase()
            .contains("secondary rate limit")
            .then_some((SECONDARY_DEFAULT_WAIT, "secondary-rate-limit"))
    }

    /// Sends one logical call: authenticates, retries what is worth retrying, waits out rate
    /// limits within the policy, and classifies the rest.
    async fn send(&self, call: Call) -> Result<Reply, Failure> {
        let policy = &self.cfg.retry;
        let path =
            call.url.strip_prefix(&self.base).unwrap_or(&call.url).split('?').next().unwrap_or("").to_owned();
        let what = format!("{} {path}", call.method);
        let mut attempts = 0u32;
        let mut waits = 0u32;
        let mut refreshed = false;
        let mut ambiguous = false;
        loop {
            attempts += 1;
            let credential = match call.auth {
                Auth::App => self.app_jwt(call.op)?,
                Auth::Installation(id) => self.token(id).await.map_err(|e| Failure {
                    error: PortError { operation: call.op, ..e },
                    earlier_attempt_ambiguous: ambiguous,
                })?,
            };
            let mut req = self
                .http
                .request(call.method.clone(), &call.url)
                .header(AUTHORIZATION, format!("Bearer {}", credential.expose()))
                .header(ACCEPT, "application/vnd.github+json")
                .header(USER_AGENT, &self.cfg.user_agent)
                .header("x-github-api-version", API_VERSION);
            if let Some(b) = &call.body {
                req = req.json(b);
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let fail =
                |error: PortError, ambiguous: bool| Failure { error, earlier_attempt_ambiguous: ambiguous };
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let kind = if e.is_timeout() { "timeout" } else { "connection" };
                    // A request that timed out may have been processed.
                    ambiguous |= e.is_timeout() || !e.is_connect();
                    if attempts < policy.max_attempts {
                        tracing::warn!(
                            op = call.op,
                            attempt = attempts,
                            error_kind = kind,
                            "github request failed, retrying"
                        );
                        self.counters.retries.fetch_add(1, Ordering::Relaxed);
                        self.sleeper.sleep(self.backoff(attempts)).await;
                        continue;
                    }
                    let msg = format!("{what}: {kind} error after {attempts} attempts: {e}");
                    return Err(fail(PortError::retryable(call.op, Some(kind.into()), msg), ambiguous));
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            self.record_rate(&headers);
            let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            if status.is_success() {
                return Ok(Reply { headers, body });
            }
            let message = github_message(&body);
            let code = Some(status.as_u16().to_string());
            match status.as_u16() {
                401 if !refreshed => {
                    if let Auth::Installation(id) = call.auth {
                        refreshed = true;
                        self.invalidate(id, &credential).await;
                        self.counters.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            op = call.op,
                            installation = id.0,
                            "401, refreshing the installation token once"
                        );
                        continue;
                    }
                    let msg = format!("{what}: 401 Unauthorized: {message}");
                    return Err(fail(PortError::permanent(call.op, code, msg), ambiguous));
                }
                403 | 429 => match self.rate_limit_wait(&headers, &message) {
                    Some((wait, kind))
                        if waits < policy.max_rate_limit_waits && wait <= policy.max_rate_limit_wait =>
                    {
                        waits += 1;
                        self.counters.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            op = call.op,
                            wait_ms = wait.as_millis() as u64,
                            kind,
                            "github rate limit, waiting"
                        );
                        self.sleeper.sleep(wait).await;
                        continue;
                    }
                    Some((wait, kind)) => {
                        let msg = format!(
                            "{what}: {status}: {message} (wait {}s exceeds the policy)",
                            wait.as_secs()
                        );
                        return Err(fail(PortError::retryable(call.op, Some(kind.into()), msg), ambiguous));
                    }
                    None => {
                        let msg = format!("{what}: {status}: {message}");
                        return Err(fail(PortError::permanent(call.op, code, msg), ambiguous));
                    }
                },
                500..=599 => {
                    ambiguous = true;
                    if attempts < policy.max_attempts {
                        tracing::warn!(
                            op = call.op,
                            attempt = attempts,
                            status = status.as_u16(),
                            "github 5xx, retrying"
                        );
                        self.counters.retries.fetch_add(1, Ordering::Relaxed);
                        self.sleeper.sleep(self.backoff(attempts)).await;
                        continue;
                    }
                    let msg = format!("{what}: {status} after {attempts} attempts: {message}");
                    return Err(fail(PortError::retryable(call.op, code, msg), ambiguous));
                }
                _ => {
                    let msg = format!("{what}: {status}: {message}");
                    return Err(fail(PortError::permanent(call.op, code, msg), ambiguous));
                }
            }
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        op: &'static str,
        path: &str,
        auth: Auth,
    ) -> Result<(T, HeaderMap), PortError> {
        let r = self
            .send(Call { op, method: Method::GET, url: self.url(path), auth, body: None })
            .await
            .map_err(|f| f.error)?;
        Ok((decode(op, path, &r.body)?, r.headers))
    }

    /// The installation for an owner: cached, else `GET /orgs/{org}/installation` (or the
    /// repository form, which also works for user-owned repositories). Needs the App JWT.
    async fn installation_for(
        &self,
        op: &'static str,
        owner: &str,
        repo: Option<&str>,
    ) -> Result<InstallationId, PortError> {
        let key = owner.to_ascii_lowercase();
        if let Some(id) = self.installations.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(*id);
        }
        self.counters.installation_lookups.fetch_add(1, Ordering::Relaxed);
        let path = match repo {
            Some(r) => format!("/repos/{owner}/{r}/installation"),
            None => format!("/orgs/{owner}/installation"),
        };
        let (body, _): (InstallationBody, _) = self.get_json(op, &path, Auth::App).await.map_err(|e| {
            PortError { message: format!("looking up the App installation of `{owner}`: {}", e.message), ..e }
        })?;
        let id = InstallationId(body.id);
        self.remember_installation(owner, id);
        Ok(id)
    }

    /// The runner group id by name (case-insensitive), listed once per organisation and cached.
    async fn runner_group(
        &self,
        op: &'static str,
        org: &str,
        name: &str,
        installation: InstallationId,
    ) -> Result<RunnerGroupId, PortError> {
        let key = (org.to_ascii_lowercase(), name.to_ascii_lowercase());
        if let Some(id) = self.groups.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(*id);
        }
        self.counters.runner_group_lookups.fetch_add(1, Ordering::Relaxed);
        let mut url = self.url(&format!("/orgs/{org}/actions/runner-groups?per_page=100"));
        let mut found = Vec::new();
        loop {
            let r = self
                .send(Call {
                    op,
                    method: Method::GET,
                    url,
                    auth: Auth::Installation(installation),
                    body: None,
                })
                .await
                .map_err(|f| f.error)?;
            let page: GroupsBody = decode(op, "runner groups", &r.body)?;
            found.extend(page.runner_groups);
            match next_link(&r.headers) {
                Some(next) => url = next,
                None => break,
            }
        }
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        // Cache every group seen: pools usually share a handful of groups.
        for g in &found {
            groups.insert((key.0.clone(), g.name.to_ascii_lowercase()), RunnerGroupId(g.id));
        }
        groups.get(&key).copied().ok_or_else(|| {
            PortError::permanent(
                op,
                Some("not-found".into()),
                format!("runner group `{name}` does not exist in `{org}`"),
            )
        })
    }

    async fn list_runners_at(
        &self,
        op: &'static str,
        path: &str,
        installation: InstallationId,
    ) -> Result<Vec<RunnerBody>, PortError> {
        let mut url = self.url(path);
        let mut out = Vec::new();
        loop {
            let r = self
                .send(Call {
                    op,
                    method: Method::GET,
                    url,
                    auth: Auth::Installation(installation),
                    body: None,
                })
                .await
                .map_err(|f| f.error)?;
            let page: RunnersBody = decode(op, "runners", &r.body)?;
            out.extend(page.runners);
            match next_link(&r.headers) {
                Some(next) => url = next,
                None => return Ok(out),
            }
        }
    }

    async fn jit_once(
        &self,
        path: &str,
        body: &Value,
        installation: InstallationId,
    ) -> Result<JitBody, Failure> {
        const OP: &str = "github:generate-jitconfig";
        let r = self
            .send(Call {
                op: OP,
                method: Method::POST,
                url: self.url(path),
                auth: Auth::Installation(installation),
                body: Some(body.clone()),
            })
            .await?;
        Ok(decode(OP, "JIT config", &r.body)?)
    }
}
