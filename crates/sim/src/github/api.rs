//! The REST endpoints Hangar uses, with GitHub's authentication, rate limits and error shapes.
//!
//! Every request goes through [`Shared::gate`]: count, latency, injected fault, authentication,
//! primary limit, secondary limit, in that order (as GitHub checks credentials before limits).

// Handlers return `Result<_, Response>` so a rejection is one `?`-like early return; the size of
// the error variant does not matter on this path.
#![allow(clippy::result_large_err)]

use super::model::{scope_key, Runner, RunnerPhase, TokenInfo, READ_ONLY_LABELS};
use super::{payload, Shared};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type S = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/app/installations/{installation_id}/access_tokens", post(create_token))
        .route("/orgs/{org}/installation", get(org_installation))
        .route("/repos/{owner}/{repo}/installation", get(repo_installation))
        .route("/orgs/{org}/actions/runner-groups", get(list_groups))
        .route("/orgs/{org}/actions/runners/generate-jitconfig", post(jit_org))
        .route("/repos/{owner}/{repo}/actions/runners/generate-jitconfig", post(jit_repo))
        .route("/orgs/{org}/actions/runners", get(list_runners_org))
        .route("/repos/{owner}/{repo}/actions/runners", get(list_runners_repo))
        .route("/orgs/{org}/actions/runners/{runner_id}", get(get_runner_org).delete(delete_runner_org))
        .route(
            "/repos/{owner}/{repo}/actions/runners/{runner_id}",
            get(get_runner_repo).delete(delete_runner_repo),
        )
        .route("/repos/{owner}/{repo}/actions/jobs/{job_id}", get(get_job))
        .route("/repos/{owner}/{repo}/actions/jobs/{job_id}/rerun", post(rerun_job))
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, axum::Json(payload::error("Not Found"))).into_response()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Jwt,
    Token,
}

/// The caller, once authenticated, and the rate-limit state to report on the response.
struct Ctx {
    endpoint: &'static str,
    /// A fault to answer with once the request has been processed.
    after: Option<super::model::Fault>,
    installation: Option<u64>,
    rate: Option<RateSnap>,
}

#[derive(Clone, Copy)]
struct RateSnap {
    limit: u64,
    remaining: u64,
    used: u64,
    reset: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Claims {
    iat: i64,
    exp: i64,
    iss: Value,
}

impl Shared {
    fn reply(
        &self,
        endpoint: &str,
        status: StatusCode,
        body: Option<Value>,
        rate: Option<RateSnap>,
    ) -> Response {
        *self.lock().responses.entry(format!("{endpoint} {}", status.as_u16())).or_default() += 1;
        let mut resp = match body {
            Some(b) => (status, axum::Json(b)).into_response(),
            None => status.into_response(),
        };
        let h = resp.headers_mut();
        h.insert("x-github-api-version-selected", HeaderValue::from_static("2022-11-28"));
        if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string()[..16].to_uppercase())
        {
            h.insert("x-github-request-id", v);
        }
        if let Some(r) = rate {
            h.insert("x-ratelimit-limit", r.limit.into());
            h.insert("x-ratelimit-remaining", r.remaining.into());
            h.insert("x-ratelimit-used", r.used.into());
            h.insert("x-ratelimit-reset", (r.reset.timestamp().max(0) as u64).into());
            h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
        }
        resp
    }

    /// A success reply, unless an `after_processing` fault replaces it.
    fn ok(&self, ctx: &Ctx, status: StatusCode, body: Option<Value>) -> Response {
        match &ctx.after {
            Some(f) => {
                let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let msg = f
                    .message
                    .clone()
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("Injected fault").to_owned());
                self.reply(ctx.endpoint, status, Some(payload::error(&msg)), None)
            }
            None => self.reply(ctx.endpoint, status, body, ctx.rate),
        }
    }

    fn err(&self, ctx: &Ctx, status: StatusCode, message: &str) -> Response {
        self.reply(ctx.endpoint, status, Some(payload::error(message)), ctx.rate)
    }

    fn unprocessable(&self, ctx: &Ctx, message: &str) -> Response {
        self.reply(
            ctx.endpoint,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(payload::validation_error(message, &[])),
            ctx.rate,
        )
    }

    fn check_jwt(&self, token: &str) -> Result<(), &'static str> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        // Time claims are checked below against the simulator's clock, not the wall clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &v)
            .map_err(|_| "A JSON web token could not be decoded")?;
        let c = data.claims;
        let now = self.now().timestamp();
        if c.exp <= now {
            return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires");
        }
        if c.iat > now {
            return Err("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued");
        }
        if c.exp - c.iat > 600 {
            return Err("'Expiration time' claim ('exp') is too far in the future");
        }
        let iss_ok = match &c.iss {
            Value::Number(n) => n.as_u64() == Some(self.cfg.app_id),
            Value::String(s) => s.parse::<u64>().ok() == Some(self.cfg.app_id),
            _ => false,
        };
        if !iss_ok {
            return Err("'Issuer' claim ('iss') must be the App's id");
        }
        Ok(())
    }

    async fn gate(
        &self,
        endpoint: &'static str,
        write: bool,
        need: Need,
        headers: &HeaderMap,
    ) -> Result<Ctx, Response> {
        let mut ctx = Ctx { endpoint, after: None, installation: None, rate: None };
        let (latency, fault) = {
            let mut st = self.lock();
            *st.counters.entry(endpoint.to_owned()).or_default() += 1;
            let latency = st.latency_ms.get(endpoint).or_else(|| st.latency_ms.get("*")).copied();
            (latency, st.fault_for(endpoint))
        };
        if let Some(ms) = latency {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(f) = fault.as_ref().filter(|f| f.after_processing) {
            ctx.after = Some(f.clone());
        } else if let Some(f) = fault {
            let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let msg = f
                .message
                .clone()
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("Injected fault").to_owned());
            let mut resp = self.reply(endpoint, status, Some(payload::error(&msg)), None);
            if let Some(s) = f.retry_after {
                resp.headers_mut().insert("retry-after", s.into());
            }
            return Err(resp);
        }
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let cred = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("token ")).map(str::trim);
        let Some(cred) = cred.filter(|c| !c.is_empty()) else {
            return Err(self.err(&ctx, StatusCode::UNAUTHORIZED, "Requires authentication"));
        };
        let bucket = match need {
            Need::Jwt => {
                if let Err(msg) = self.check_jwt(cred) {
                    return Err(self.err(&ctx, StatusCode::UNAUTHORIZED, msg));
                }
                "app".to_owned()
            }
            Need::Token => {
                let now = self.now();
                let info = self.lock().tokens.get(cred).cloned();
                match info {
                    Some(TokenInfo { installation_id, expires_at }) if expires_at > now => {
                        ctx.installation = Some(installation_id);
                        format!("installation:{installation_id}")
                    }
                    _ => return Err(self.err(&ctx, StatusCode::UNAUTHORIZED, "Bad credentials")),
                }
            }
        };
        let now = self.now();
        let mut st = self.lock();
        let limit = self.cfg.rate_limit;
        let b = st.rate.entry(bucket.clone()).or_insert_with(|| super::model::RateBucket {
            limit,
            used: 0,
            reset: now + chrono::Duration::hours(1),
        });
        b.roll(now);
        let snap = RateSnap { limit: b.limit, remaining: b.remaining(), used: b.used, reset: b.reset };
        if snap.remaining == 0 {
            drop(st);
            ctx.rate = Some(snap);
            let who = match ctx.installation {
                Some(i) => format!("installation ID {i}"),
                None => "the App".to_owned(),
            };
            return Err(self.err(
                &ctx,
                StatusCode::FORBIDDEN,
                &format!("API rate limit exceeded for {who}."),
            ));
        }
        if write {
            let window = chrono::Duration::seconds(60);
            while st.writes.front().is_some_and(|t| *t + window <= now) {
                st.writes.pop_front();
            }
            if st.writes.len() >= self.cfg.secondary_writes_per_minute {
                let oldest = *st.writes.front().expect("non-empty");
                let wait = ((oldest + window) - now).num_milliseconds().max(0) as u64;
                drop(st);
                ctx.rate = Some(snap);
                let mut resp = self.err(
                    &ctx,
                    StatusCode::FORBIDDEN,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                );
                resp.headers_mut().insert("retry-after", wait.div_ceil(1000).max(1).into());
                return Err(resp);
            }
            st.writes.push_back(now);
        }
        let b = st.rate.get_mut(&bucket).expect("bucket");
        b.used += 1;
        ctx.rate = Some(RateSnap { limit: b.limit, remaining: b.remaining(), used: b.used, reset: b.reset });
        Ok(ctx)
    }

    /// The organisation, if it exists and the caller's installation covers it.
    fn org_for(&self, ctx: &Ctx, login: &str) -> Result<super::model::Org, Response> {
        let org = self.lock().org(login).cloned();
        match org {
            None => Err(self.err(ctx, StatusCode::NOT_FOUND, "Not Found")),
            Some(o) if ctx.installation.is_some_and(|i| i != o.installation_id) => {
                Err(self.err(ctx, StatusCode::FORBIDDEN, "Resource not accessible by integration"))
            }
            Some(o) => Ok(o),
        }
    }
}

async fn create_token(State(s): S, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let ctx = match s.gate("create-installation-token", true, Need::Jwt, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(id) = id.parse::<u64>() else { return s.err(&ctx, StatusCode::NOT_FOUND, "Not Found") };
    if s.lock().org_by_installation(id).is_none() {
        return s.err(&ctx, StatusCode::NOT_FOUND, "Not Found");
    }
    let token = format!("ghs_{}", Alphanumeric.sample_string(&mut rand::rng(), 36));
    let expires_at = s.now() + chrono::Duration::milliseconds(s.cfg.token_lifetime.as_millis() as i64);
    s.lock().tokens.insert(token.clone(), TokenInfo { installation_id: id, expires_at });
    s.ok(&ctx, StatusCode::CREATED, Some(payload::installation_token(&token, expires_at)))
}

async fn org_installation(State(s): S, Path(org): Path<String>, headers: HeaderMap) -> Response {
    let ctx = match s.gate("get-org-installation", false, Need::Jwt, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match s.org_for(&ctx, &org) {
        Ok(o) => s.ok(&ctx, StatusCode::OK, Some(payload::installation(&s.api_base, &o, s.cfg.app_id))),
        Err(r) => r,
    }
}

async fn repo_installation(
    State(s): S,
    Path((owner, _repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let ctx = match s.gate("get-repo-installation", false, Need::Jwt, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match s.org_for(&ctx, &owner) {
        Ok(o) => s.ok(&ctx, StatusCode::OK, Some(payload::installation(&s.api_base, &o, s.cfg.app_id))),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
    name: Option<String>,
}

impl PageQuery {
    fn bounds(&self) -> (usize, usize) {
        (self.per_page.unwrap_or(30).clamp(1, 100), self.page.unwrap_or(1).max(1))
    }
}

/// GitHub's `Link` header for page `page` of `pages`.
fn link_header(url: &str, extra: &str, per_page: usize, page: usize, pages: usize) -> Option<String> {
    let mk = |p: usize, rel: &str| format!("<{url}?per_page={per_page}&page={p}{extra}>; rel=\"{rel}\"");
    let mut parts = Vec::new();
    if page > 1 {
        parts.push(mk(page - 1, "prev"));
        parts.push(mk(1, "first"));
    }
    if page < pages {
        parts.push(mk(page + 1, "next"));
        parts.push(mk(pages, "last"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn paged<T: Clone>(items: &[T], q: &PageQuery) -> (Vec<T>, usize, usize, usize) {
    let (per_page, page) = q.bounds();
    let pages = items.len().div_ceil(per_page).max(1);
    let slice = items.iter().skip((page - 1) * per_page).take(per_page).cloned().collect();
    (slice, per_page, page, pages)
}

fn with_link(mut resp: Response, link: Option<String>) -> Response {
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert("link", v);
    }
    resp
}

async fn list_groups(
    State(s): S,
    Path(org): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match s.gate("list-runner-groups", false, Need::Token, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let o = match s.org_for(&ctx, &org) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (items, per_page, page, pages) = paged(&o.groups, &q);
    let url = format!("{}/orgs/{}/actions/runner-groups", s.api_base, o.login);
    let body = payload::runner_groups(&s.api_base, &o, &items, o.groups.len());
    with_link(s.ok(&ctx, StatusCode::OK, Some(body)), link_header(&url, "", per_page, page, pages))
}

/// Encodes a JIT config in the shape GitHub's has (base64 JSON of base64 `.runner` and
/// credential files), so a runner simulator can decode which runner it is.
fn encode_jit(api_root: &str, r: &Runner) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let runner_file = json!({
        "AgentId": r.id,
        "AgentName": r.name,
        "PoolId": r.group_id,
        "ServerUrl": api_root,
        "GitHubUrl": format!("https://github.com/{}", r.org),
        "WorkFolder": "_work",
        "Ephemeral": true,
        "DisableUpdate": true,
    });
    let creds = json!({ "scheme": "OAuth", "data": { "clientId": uuid::Uuid::new_v4().to_string() } });
    let outer = json!({
        ".runner": b64.encode(runner_file.to_string()),
        ".credentials": b64.encode(creds.to_string()),
        ".credentials_rsaparams": b64.encode(Alphanumeric.sample_string(&mut rand::rng(), 64)),
    });
    b64.encode(outer.to_string())
}

/// The runner id inside a JIT config this simulator issued.
pub(crate) fn decode_jit(encoded: &str) -> Option<u64> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let outer: Value = serde_json::from_slice(&b64.decode(encoded.trim()).ok()?).ok()?;
    let runner: Value = serde_json::from_slice(&b64.decode(outer.get(".runner")?.as_str()?).ok()?).ok()?;
    runner.get("AgentId")?.as_u64()
}

async fn jit(s: Arc<Shared>, org: String, repo: Option<String>, headers: HeaderMap, body: Bytes) -> Response {
    let endpoint = if repo.is_some() { "generate-jitconfig-repo" } else { "generate-jitconfig" };
    let ctx = match s.gate(endpoint, true, Need::Token, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let o = match s.org_for(&ctx, &org) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return s.err(&ctx, StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(name) = v.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return s.unprocessable(&ctx, "Invalid request.\n\n\"name\" wasn't supplied.");
    };
    let Some(group_id) = v.get("runner_group_id").and_then(Value::as_u64) else {
        return s.unprocessable(&ctx, "Invalid request.\n\n\"runner_group_id\" wasn't supplied.");
    };
    let labels: Vec<String> = match v.get("labels").and_then(Value::as_array) {
        Some(a) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(|l| l.as_str().map(str::to_owned)).collect()
        }
        _ => return s.unprocessable(&ctx, "Invalid request.\n\n\"labels\" wasn't supplied."),
    };
    if labels.is_empty() || labels.len() > 100 {
        return s.unprocessable(&ctx, "Invalid request.\n\n\"labels\" must have between 1 and 100 items.");
    }
    if o.group_name(group_id).is_none() {
        return s.unprocessable(&ctx, &format!("Invalid request.\n\nNo runner group with id {group_id}."));
    }
    let scope = scope_key(&o.login, repo.as_deref());
    let mut st = s.lock();
    if st.name_taken(&scope, name) {
        drop(st);
        return s.err(
            &ctx,
            StatusCode::CONFLICT,
            &format!("Already exists - A runner with the name {name} already exists."),
        );
    }
    let mut all = Vec::new();
    for l in READ_ONLY_LABELS {
        let label = st.label(l, "read-only");
        all.push(label);
    }
    for l in &labels {
        if !all.iter().any(|x| x.name.eq_ignore_ascii_case(l)) {
            let label = st.label(l, "custom");
            all.push(label);
        }
    }
    st.next_runner_id += 1;
    let runner = Runner {
        id: st.next_runner_id,
        name: name.to_owned(),
        org: o.login.clone(),
        repo,
        group_id,
        labels: all,
        phase: RunnerPhase::Configured,
        job: None,
        removed: false,
    };
    let encoded = encode_jit(&s.root, &runner);
    let body = json!({ "runner": payload::runner(&runner), "encoded_jit_config": encoded });
    st.runners.insert(runner.id, runner);
    drop(st);
    s.ok(&ctx, StatusCode::CREATED, Some(body))
}

async fn jit_org(State(s): S, Path(org): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    jit(s, org, None, headers, body).await
}

async fn jit_repo(
    State(s): S,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    jit(s, owner, Some(repo), headers, body).await
}

async fn list_runners(
    s: Arc<Shared>,
    org: String,
    repo: Option<String>,
    q: PageQuery,
    headers: HeaderMap,
) -> Response {
    let endpoint = if repo.is_some() { "list-runners-repo" } else { "list-runners" };
    let ctx = match s.gate(endpoint, false, Need::Token, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let o = match s.org_for(&ctx, &org) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let scope = scope_key(&o.login, repo.as_deref());
    let all: Vec<Runner> = s
        .lock()
        .runners
        .values()
        .filter(|r| !r.removed && r.scope_key() == scope)
        .filter(|r| q.name.as_deref().is_none_or(|n| r.name.eq_ignore_ascii_case(n)))
        .cloned()
        .collect();
    let (items, per_page, page, pages) = paged(&all, &q);
    let body =
        json!({ "total_count": all.len(), "runners": items.iter().map(payload::runner).collect::<Vec<_>>() });
    let url = match &repo {
        Some(r) => format!("{}/repos/{}/{r}/actions/runners", s.api_base, o.login),
        None => format!("{}/orgs/{}/actions/runners", s.api_base, o.login),
    };
    let extra = q.name.as_deref().map(|n| format!("&name={n}")).unwrap_or_default();
    with_link(s.ok(&ctx, StatusCode::OK, Some(body)), link_header(&url, &extra, per_page, page, pages))
}

async fn list_runners_org(
    State(s): S,
    Path(org): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    list_runners(s, org, None, q, headers).await
}

async fn list_runners_repo(
    State(s): S,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    list_runners(s, owner, Some(repo), q, headers).await
}

async fn runner_op(
    s: Arc<Shared>,
    org: String,
    repo: Option<String>,
    id: String,
    delete: bool,
    headers: HeaderMap,
) -> Response {
    let endpoint = match (delete, repo.is_some()) {
        (false, false) => "get-runner",
        (false, true) => "get-runner-repo",
        (true, false) => "delete-runner",
        (true, true) => "delete-runner-repo",
    };
    let ctx = match s.gate(endpoint, delete, Need::Token, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let o = match s.org_for(&ctx, &org) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let scope = scope_key(&o.login, repo.as_deref());
    let mut st = s.lock();
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|id| st.runners.get_mut(&id))
        .filter(|r| !r.removed && r.scope_key() == scope);
    let Some(r) = found else {
        drop(st);
        return s.err(&ctx, StatusCode::NOT_FOUND, "Not Found");
    };
    if !delete {
        let body = payload::runner(r);
        drop(st);
        return s.ok(&ctx, StatusCode::OK, Some(body));
    }
    if r.job.is_some() {
        let msg = format!("Bad request - Runner \"{}\" is still running a job\"", r.name);
        drop(st);
        return s.unprocessable(&ctx, &msg);
    }
    r.removed = true;
    drop(st);
    s.ok(&ctx, StatusCode::NO_CONTENT, None)
}

async fn get_runner_org(
    State(s): S,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    runner_op(s, org, None, id, false, headers).await
}
async fn delete_runner_org(
    State(s): S,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    runner_op(s, org, None, id, true, headers).await
}
async fn get_runner_repo(
    State(s): S,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (o, r, id) = (p["owner"].clone(), p["repo"].clone(), p["runner_id"].clone());
    runner_op(s, o, Some(r), id, false, headers).await
}
async fn delete_runner_repo(
    State(s): S,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (o, r, id) = (p["owner"].clone(), p["repo"].clone(), p["runner_id"].clone());
    runner_op(s, o, Some(r), id, true, headers).await
}

fn find_job(s: &Shared, owner: &str, repo: &str, id: &str) -> Option<super::model::Job> {
    let id = id.parse::<u64>().ok()?;
    let st = s.lock();
    st.jobs
        .get(&id)
        .filter(|j| j.org.eq_ignore_ascii_case(owner) && j.repo.eq_ignore_ascii_case(repo))
        .cloned()
}

async fn get_job(State(s): S, Path(p): Path<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let ctx = match s.gate("get-job", false, Need::Token, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = s.org_for(&ctx, &p["owner"]) {
        return r;
    }
    match find_job(&s, &p["owner"], &p["repo"], &p["job_id"]) {
        Some(j) => s.ok(&ctx, StatusCode::OK, Some(payload::job(&s.api_base, &j))),
        None => s.err(&ctx, StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn rerun_job(State(s): S, Path(p): Path<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let ctx = match s.gate("rerun-job", true, Need::Token, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = s.org_for(&ctx, &p["owner"]) {
        return r;
    }
    let Some(j) = find_job(&s, &p["owner"], &p["repo"], &p["job_id"]) else {
        return s.err(&ctx, StatusCode::NOT_FOUND, "Not Found");
    };
    match s.rerun(j.id) {
        Ok(_) => s.ok(&ctx, StatusCode::CREATED, Some(json!({}))),
        Err(e) => s.err(&ctx, StatusCode::FORBIDDEN, &e.to_string()),
    }
}
