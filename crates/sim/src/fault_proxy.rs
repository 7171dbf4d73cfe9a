//! The AWS fault proxy: an HTTP proxy on 127.0.0.1 in front of moto_server.
//!
//! Every request is forwarded to moto unchanged (body and headers, SigV4 `Authorization`
//! included; moto does not verify signatures). The proxy recognises the AWS action from the
//! form body's `Action=` (query protocol: EC2) or the `X-Amz-Target` header (JSON protocol:
//! SSM, SQS) and can, per action:
//! - fail the next N calls with an AWS error code and HTTP status, in the error format the
//!   SDK expects for that protocol;
//! - add latency;
//! - for CreateFleet, return a partial result with per-override `Errors`
//!   (e.g. `InsufficientInstanceCapacity` for chosen instance types, or for all of spot), which
//!   moto never does (see [`fleet`]).
//!
//! It counts calls per action, and, unless turned off, gives CreateFleet the `ClientToken`
//! idempotency EC2 has and moto lacks: a repeated token with the same parameters returns the
//! first answer without launching again; with different parameters it is refused with
//! `IdempotentParameterMismatch`.
//!
//! Control API (JSON over HTTP, same port): `POST /__proxy/faults` (a [`Fault`]),
//! `DELETE /__proxy/faults`, `GET /__proxy/counts`, `GET /__proxy/injected`,
//! `POST /__proxy/reset`, `PUT /__proxy/idempotency` (`{"enabled": bool}`),
//! `GET /__proxy/health`.

pub mod fleet;
pub mod form;
pub mod protocol;

use crate::relay::{bad_gateway, read_body, respond, Relay};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use protocol::Call;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FaultProxyError {
    #[error("upstream URL `{0}` must be http://HOST:PORT")]
    BadUpstream(String),
    #[error("cannot bind 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The market a CreateFleet request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    Spot,
    OnDemand,
}

impl Market {
    fn as_str(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::OnDemand => "on-demand",
        }
    }
}

/// One injected fault. `times: None` means every matching call until cleared; `action` is the
/// API action name (`CreateFleet`, `PutParameter`, `SendMessage`) or `*` for all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with an AWS error instead of forwarding.
    Error {
        action: String,
        code: String,
        #[serde(default = "default_status")]
        status: u16,
        #[serde(default)]
        times: Option<u32>,
        #[serde(default)]
        message: Option<String>,
    },
    /// Wait before forwarding.
    Latency {
        action: String,
        millis: u64,
        #[serde(default)]
        times: Option<u32>,
    },
    /// CreateFleet: fail the overrides with these instance types (all when `None`) and subnets
    /// (all when `None`), on this market (both when `None`), with a per-override error.
    FleetErrors {
        #[serde(default)]
        instance_types: Option<Vec<String>>,
        #[serde(default)]
        subnets: Option<Vec<String>>,
        #[serde(default)]
        market: Option<Market>,
        #[serde(default = "default_fleet_code")]
        code: String,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        times: Option<u32>,
    },
}

fn default_status() -> u16 {
    500
}
fn default_fleet_code() -> String {
    "InsufficientInstanceCapacity".into()
}

impl Fault {
    /// `action` fails `times` times with `code` and HTTP `status`.
    pub fn error(action: &str, code: &str, status: u16, times: u32) -> Self {
        Fault::Error { action: action.into(), code: code.into(), status, times: Some(times), message: None }
    }

    /// Every `action` call waits `latency` first.
    pub fn latency(action: &str, latency: Duration) -> Self {
        Fault::Latency { action: action.into(), millis: latency.as_millis() as u64, times: None }
    }

    /// Spot `InsufficientInstanceCapacity` for these instance types, on every CreateFleet.
    pub fn spot_capacity(instance_types: &[&str]) -> Self {
        Fault::FleetErrors {
            instance_types: Some(instance_types.iter().map(|s| s.to_string()).collect()),
            subnets: None,
            market: Some(Market::Spot),
            code: default_fleet_code(),
            message: None,
            times: None,
        }
    }

    /// Spot `InsufficientInstanceCapacity` for every override: spot is out.
    pub fn all_spot_exhausted() -> Self {
        Fault::FleetErrors {
            instance_types: None,
            subnets: None,
            market: Some(Market::Spot),
            code: default_fleet_code(),
            message: None,
            times: None,
        }
    }

    fn times(&self) -> Option<u32> {
        match self {
            Fault::Error { times, .. } | Fault::Latency { times, .. } | Fault::FleetErrors { times, .. } => {
                *times
            }
        }
    }
}

fn action_matches(pattern: &str, action: &str) -> bool {
    pattern == "*" || pattern == action
}

#[derive(Debug, Clone)]
struct ActiveFault {
    id: u64,
    fault: Fault,
    remaining: Option<u32>,
}

#[derive(Debug, Clone)]
struct Cached {
    fingerprint: Vec<(String, String)>,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<Cached>>>;

#[derive(Default)]
struct Inner {
    faults: Vec<ActiveFault>,
    next_fault_id: u64,
    counts: BTreeMap<String, u64>,
    injected: BTreeMap<String, u64>,
    idempotency_off: bool,
    tokens: HashMap<String, TokenSlot>,
}

struct Shared {
    relay: Relay,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running proxy. Dropping it stops the server.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 and a free port in front of `upstream` (moto's endpoint).
    pub async fn start(upstream: impl Into<String>) -> Result<Self, FaultProxyError> {
        Self::start_on_port(upstream, 0).await
    }

    pub async fn start_on_port(upstream: impl Into<String>, port: u16) -> Result<Self, FaultProxyError> {
        let upstream = upstream.into().trim_end_matches('/').to_owned();
        if !upstream.starts_with("http://") || upstream.len() <= "http://".len() {
            return Err(FaultProxyError::BadUpstream(upstream));
        }
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build()?;
        let shared =
            Arc::new(Shared { relay: Relay::new(upstream, http), inner: Mutex::new(Inner::default()) });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|source| FaultProxyError::Bind { port, source })?;
        let addr = listener.local_addr().map_err(|source| FaultProxyError::Bind { port, source })?;
        let app = router(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "fault proxy stopped");
            }
        });
        tracing::info!(%addr, upstream = %shared.relay.upstream(), "fault proxy listening");
        Ok(Self { addr, shared, shutdown: Some(tx), task: Some(task) })
    }

    /// `http://127.0.0.1:PORT`: give this to the SDK as its endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn upstream(&self) -> &str {
        self.shared.relay.upstream()
    }

    pub fn inject(&self, fault: Fault) {
        inject(&self.shared, fault);
    }

    /// Removes every fault; counts stay.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Calls per action, injected failures included.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.shared.lock().counts.clone()
    }

    pub fn count(&self, action: &str) -> u64 {
        self.shared.lock().counts.get(action).copied().unwrap_or(0)
    }

    /// Injected error responses per action (whole-call errors, and CreateFleet calls that got
    /// per-override errors).
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.shared.lock().injected.clone()
    }

    /// Clears faults, counts and remembered client tokens (moto's state is not touched).
    pub fn reset(&self) {
        reset(&self.shared);
    }

    /// EC2-like `ClientToken` idempotency for CreateFleet (on by default).
    pub fn set_client_token_idempotency(&self, enabled: bool) {
        self.shared.lock().idempotency_off = !enabled;
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn inject(shared: &Shared, fault: Fault) {
    let remaining = fault.times();
    tracing::info!(?fault, "fault injected");
    let mut g = shared.lock();
    g.next_fault_id += 1;
    let id = g.next_fault_id;
    g.faults.push(ActiveFault { id, fault, remaining });
}

/// Takes one use of a fault; `false` when it is used up.
fn consume(f: &mut ActiveFault) -> bool {
    match &mut f.remaining {
        None => true,
        Some(0) => false,
        Some(n) => {
            *n -= 1;
            true
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/__proxy/health", get(|| async { "ok" }))
        .route("/__proxy/counts", get(counts_handler))
        .route("/__proxy/injected", get(injected_handler))
        .route("/__proxy/faults", post(add_fault_handler).delete(clear_faults_handler))
        .route("/__proxy/reset", post(reset_handler))
        .route("/__proxy/idempotency", put(idempotency_handler))
        .fallback(proxy_handler)
        .with_state(shared)
}

async fn counts_handler(State(s): State<Arc<Shared>>) -> Json<BTreeMap<String, u64>> {
    Json(s.lock().counts.clone())
}

async fn injected_handler(State(s): State<Arc<Shared>>) -> Json<BTreeMap<String, u64>> {
    Json(s.lock().injected.clone())
}

async fn add_fault_handler(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) => {
            inject(&s, f);
            (StatusCode::OK, Json(serde_json::json!({ "ok": true }))).into_response()
        }
        Err(e) => {
            (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": format!("invalid fault: {e}") })))
                .into_response()
        }
    }
}

async fn clear_faults_handler(State(s): State<Arc<Shared>>) -> StatusCode {
    s.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn reset_handler(State(s): State<Arc<Shared>>) -> StatusCode {
    reset(&s);
    StatusCode::NO_CONTENT
}

fn reset(shared: &Shared) {
    let mut g = shared.lock();
    let off = g.idempotency_off;
    *g = Inner { idempotency_off: off, ..Inner::default() };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdempotencyBody {
    enabled: bool,
}

async fn idempotency_handler(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<IdempotencyBody>(&body) {
        Ok(b) => {
            s.lock().idempotency_off = !b.enabled;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}

/// What to do with one call, decided under the lock in one step.
struct Plan {
    latency: Duration,
    error: Option<(String, u16, String)>,
}

fn plan(shared: &Shared, call: &Call) -> Plan {
    let mut g = shared.lock();
    let mut p = Plan { latency: Duration::ZERO, error: None };
    let Some(action) = call.action.as_deref() else { return p };
    *g.counts.entry(action.to_owned()).or_default() += 1;
    for f in g.faults.iter_mut() {
        let matches = match &f.fault {
            Fault::Latency { action: a, .. } | Fault::Error { action: a, .. } => action_matches(a, action),
            Fault::FleetErrors { .. } => false,
        };
        if !matches {
            continue;
        }
        match f.fault.clone() {
            Fault::Latency { millis, .. } => {
                if consume(f) {
                    p.latency += Duration::from_millis(millis);
                }
            }
            Fault::Error { code, status, message, .. } => {
                if p.error.is_none() && consume(f) {
                    let msg = message.unwrap_or_else(|| protocol::default_message(&code));
                    p.error = Some((code, status, msg));
                }
            }
            Fault::FleetErrors { .. } => {}
        }
    }
    if p.error.is_some() {
        *g.injected.entry(action.to_owned()).or_default() += 1;
    }
    g.faults.retain(|f| f.remaining != Some(0));
    p
}

/// Fleet faults still live, with their ids, for a CreateFleet that is about to be forwarded.
fn live_fleet_faults(shared: &Shared) -> (Vec<u64>, Vec<fleet::OverrideFault>) {
    let g = shared.lock();
    let mut idx = Vec::new();
    let mut out = Vec::new();
    for f in g.faults.iter() {
        if let Fault::FleetErrors { instance_types, subnets, market, code, message, .. } = &f.fault {
            if f.remaining != Some(0) {
                idx.push(f.id);
                out.push(fleet::OverrideFault {
                    instance_types: instance_types.clone(),
                    subnets: subnets.clone(),
                    market: market.map(|m| m.as_str().to_owned()),
                    code: code.clone(),
                    message: message.clone(),
                });
            }
        }
    }
    (idx, out)
}

async fn proxy_handler(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let call = protocol::identify(&path_and_query, &parts.headers, &body);
    let p = plan(&shared, &call);
    if !p.latency.is_zero() {
        tokio::time::sleep(p.latency).await;
    }
    if let Some((code, status, message)) = p.error {
        tracing::debug!(action = call.action.as_deref().unwrap_or(""), %code, status, "injecting error");
        let (st, h, b) = protocol::error_response(&call, &code, status, &message);
        return respond(st, h, b);
    }
    if call.action.as_deref() == Some("CreateFleet") {
        return create_fleet(&shared, &parts, &path_and_query, &call, body).await;
    }
    match shared.relay.forward(&parts.method, &path_and_query, &parts.headers, body).await {
        Ok((st, h, b)) => respond(st, h, b),
        Err(e) => bad_gateway(e),
    }
}

async fn create_fleet(
    shared: &Shared,
    parts: &http::request::Parts,
    path_and_query: &str,
    call: &Call,
    body: Bytes,
) -> Response {
    let token = form::get(&call.form, "ClientToken").map(str::to_owned);
    let slot: Option<TokenSlot> = match &token {
        Some(t) if !shared.lock().idempotency_off => Some(
            shared
                .lock()
                .tokens
                .entry(t.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
                .clone(),
        ),
        _ => None,
    };
    // Same-token calls are serialised, as EC2 serialises them: the second sees the first's result.
    let mut guard = match &slot {
        Some(s) => Some(s.clone().lock_owned().await),
        None => None,
    };
    let mut fingerprint = call.form.clone();
    fingerprint.sort();
    if let Some(Some(cached)) = guard.as_deref() {
        if cached.fingerprint == fingerprint {
            tracing::debug!("CreateFleet replayed from its ClientToken");
            return respond(cached.status, cached.headers.clone(), cached.body.clone());
        }
        let (st, h, b) = protocol::error_response(
            call,
            "IdempotentParameterMismatch",
            400,
            "The client token you have provided is associated with a resource that is already deleted or has different parameters.",
        );
        return respond(st, h, b);
    }

    let (indexes, faults) = live_fleet_faults(shared);
    let rewrite = if faults.is_empty() { None } else { fleet::rewrite(&call.form, &faults) };
    let result: Result<(StatusCode, HeaderMap, Bytes), String> = match &rewrite {
        None => shared.relay.forward(&parts.method, path_and_query, &parts.headers, body).await,
        Some(rw) => {
            {
                let mut g = shared.lock();
                for i in &rw.applied {
                    let Some(id) = indexes.get(*i) else { continue };
                    if let Some(f) = g.faults.iter_mut().find(|f| f.id == *id) {
                        consume(f);
                    }
                }
                g.faults.retain(|f| f.remaining != Some(0));
                *g.injected.entry("CreateFleet".into()).or_default() += 1;
            }
            match &rw.forward {
                None => {
                    let mut h = HeaderMap::new();
                    h.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/xml;charset=UTF-8"),
                    );
                    Ok((StatusCode::OK, h, Bytes::from(fleet::all_failed_response(&rw.error_items))))
                }
                Some(fwd) => {
                    let new_body = Bytes::from(form::encode(fwd));
                    match shared.relay.forward(&parts.method, path_and_query, &parts.headers, new_body).await
                    {
                        Ok((st, h, b)) if st.is_success() => {
                            let merged = fleet::merge_errors(&String::from_utf8_lossy(&b), &rw.error_items);
                            Ok((st, h, Bytes::from(merged)))
                        }
                        other => other,
                    }
                }
            }
        }
    };
    match result {
        Ok((st, h, b)) => {
            if let Some(g) = guard.as_deref_mut() {
                if st.is_success() {
                    *g = Some(Cached { fingerprint, status: st, headers: h.clone(), body: b.clone() });
                }
            }
            respond(st, h, b)
        }
        Err(e) => bad_gateway(e),
    }
}

/// `hangar-sim fault-proxy --port P --upstream URL`: run until interrupted.
pub async fn cli_main(args: Vec<String>) -> anyhow::Result<()> {
    use clap::Parser;

    /// AWS fault proxy in front of moto_server.
    #[derive(Parser, Debug)]
    #[command(name = "hangar-sim fault-proxy")]
    struct Args {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// moto_server's endpoint, e.g. http://127.0.0.1:5000.
        #[arg(long)]
        upstream: String,
        /// Forward repeated CreateFleet ClientTokens to moto instead of answering them as EC2 does.
        #[arg(long)]
        no_idempotency: bool,
    }

    let args = Args::try_parse_from(std::iter::once("fault-proxy".to_owned()).chain(args))?;
    let proxy = FaultProxy::start_on_port(args.upstream, args.port).await?;
    if args.no_idempotency {
        proxy.set_client_token_idempotency(false);
    }
    println!("fault proxy listening on {}", proxy.endpoint());
    tokio::signal::ctrl_c().await?;
    proxy.shutdown().await;
    Ok(())
}
