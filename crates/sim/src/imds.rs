//! An EC2 instance metadata service (IMDSv2 only) for one simulated instance.
//!
//! It serves what the boot agent (`ami/boot-agent/`) and the AWS CLI's credential chain read:
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1..=21600) returns a
//!   session token; a request carrying `X-Forwarded-For` is refused, as EC2 does;
//! - `GET /latest/meta-data/...` and `/latest/dynamic/instance-identity/document` require a live
//!   token in `X-aws-ec2-metadata-token` and answer 401 without one (IMDSv1 is off, as in the
//!   launch template);
//! - `spot/instance-action` is 404 until an interruption is set, from Rust with
//!   [`ImdsServer::set_spot_action`] or over HTTP on the control endpoint
//!   `PUT /hangar-sim/spot/instance-action` (JSON `{"action": "terminate", "time": "..."}`,
//!   `DELETE` clears it);
//! - `iam/security-credentials/<role>` returns fixed test credentials, so an SDK or CLI pointed
//!   here (`AWS_EC2_METADATA_SERVICE_ENDPOINT`) signs its requests exactly as on an instance.
//!
//! `GET /hangar-sim/stats` returns request counters so tests can see what a client did.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// EC2's upper bound on a session token's lifetime (six hours).
pub const MAX_TOKEN_TTL_SECONDS: u64 = 21_600;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("invalid instance id `{0}`: expected `i-` followed by 8 or 17 lowercase hex digits")]
    InvalidInstanceId(String),
    #[error("cannot bind the IMDS simulator on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// What the simulated instance reports about itself.
#[derive(Debug, Clone)]
pub struct InstanceIdentity {
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    pub instance_type: String,
    pub ami_id: String,
    pub account_id: String,
    /// Instance profile role name; `None` serves no credentials (404), like an instance without a role.
    pub role_name: Option<String>,
    /// Instance tags, served under `tags/instance/` (the launch template's `InstanceMetadataTags`).
    pub tags: BTreeMap<String, String>,
}

impl InstanceIdentity {
    /// An arm64 runner in us-east-1 with role `hangar-runner`; checks the id's shape.
    pub fn new(instance_id: &str) -> Result<Self, ImdsError> {
        let hex = instance_id.strip_prefix("i-").unwrap_or("");
        let valid = matches!(hex.len(), 8 | 17)
            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(ImdsError::InvalidInstanceId(instance_id.to_string()));
        }
        Ok(Self {
            instance_id: instance_id.to_string(),
            region: "us-east-1".into(),
            availability_zone: "us-east-1a".into(),
            instance_type: "m7g.large".into(),
            ami_id: "ami-0123456789abcdef0".into(),
            account_id: "123456789012".into(),
            role_name: Some("hangar-runner".into()),
            tags: BTreeMap::new(),
        })
    }
}

/// A spot interruption notice as EC2 serves it at `spot/instance-action`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpotAction {
    /// `terminate`, `stop` or `hibernate`.
    pub action: String,
    /// RFC 3339 time at which the action happens (two minutes after the notice on EC2).
    pub time: String,
}

/// Request counters, for tests that check how a client used the service.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImdsStats {
    pub tokens_issued: u64,
    /// Metadata reads refused for a missing, unknown or expired token.
    pub unauthorized: u64,
    /// Metadata reads answered (any status other than 401).
    pub reads: u64,
    pub spot_action_reads: u64,
}

struct Inner {
    identity: InstanceIdentity,
    tokens: HashMap<String, Instant>,
    spot_action: Option<SpotAction>,
    stats: ImdsStats,
}

type Shared = Arc<Mutex<Inner>>;

/// A running simulator on 127.0.0.1; stops when dropped.
pub struct ImdsServer {
    addr: SocketAddr,
    state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ImdsServer {
    /// Starts on a free port of 127.0.0.1 (port 0 asks the kernel, so there is no race).
    pub async fn start(identity: InstanceIdentity) -> Result<Self, ImdsError> {
        Self::start_on(identity, 0).await
    }

    /// Starts on `port` of 127.0.0.1 (0 for any free port). Must run inside a Tokio runtime.
    pub async fn start_on(identity: InstanceIdentity, port: u16) -> Result<Self, ImdsError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ImdsError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| ImdsError::Bind { addr, source })?;
        let state: Shared = Arc::new(Mutex::new(Inner {
            identity,
            tokens: HashMap::new(),
            spot_action: None,
            stats: ImdsStats::default(),
        }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(state.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(error) = served.await {
                tracing::error!(%error, "IMDS simulator stopped");
            }
        });
        tracing::info!(%addr, "IMDS simulator listening");
        Ok(Self { addr, state, shutdown: Some(tx) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the value for `AWS_EC2_METADATA_SERVICE_ENDPOINT` and the boot
    /// agent's `HANGAR_IMDS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve an interruption notice at `spot/instance-action` from now on.
    pub fn set_spot_action(&self, action: SpotAction) {
        lock(&self.state).spot_action = Some(action);
    }

    pub fn clear_spot_action(&self) {
        lock(&self.state).spot_action = None;
    }

    pub fn stats(&self) -> ImdsStats {
        lock(&self.state).stats.clone()
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/latest/api/token", put(issue_token))
        .route("/latest/meta-data", get(metadata_root))
        .route("/latest/meta-data/", get(metadata_root))
        .route("/latest/meta-data/{*path}", get(metadata))
        .route("/latest/dynamic/instance-identity/document", get(identity_document))
        .route("/hangar-sim/spot/instance-action", put(control_set_spot).delete(control_clear_spot))
        .route("/hangar-sim/stats", get(control_stats))
        .with_state(state)
}

async fn issue_token(State(state): State<Shared>, headers: HeaderMap) -> Response {
    // EC2 refuses token requests that went through a proxy, so a forwarded SSRF cannot get one.
    if headers.contains_key("x-forwarded-for") {
        return (StatusCode::FORBIDDEN, "Forbidden").into_response();
    }
    let ttl =
        headers.get(TTL_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let ttl = match ttl {
        Some(ttl) if (1..=MAX_TOKEN_TTL_SECONDS).contains(&ttl) => ttl,
        _ => return (StatusCode::BAD_REQUEST, "Bad Request").into_response(),
    };
    let token = {
        use base64::Engine as _;
        let bytes: [u8; 32] = rand::random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let mut inner = lock(&state);
    let now = Instant::now();
    inner.tokens.retain(|_, expiry| *expiry > now);
    inner.tokens.insert(token.clone(), now + Duration::from_secs(ttl));
    inner.stats.tokens_issued += 1;
    ([(TTL_HEADER, ttl.to_string())], token).into_response()
}

/// Checks the session token; on success returns the guard so the handler reads consistent state.
/// `None` means the caller answers 401 (see [`unauthorized`]).
fn authorized<'a>(state: &'a Shared, headers: &HeaderMap) -> Option<std::sync::MutexGuard<'a, Inner>> {
    let mut inner = lock(state);
    let token = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let live = token.and_then(|t| inner.tokens.get(t)).is_some_and(|expiry| *expiry > Instant::now());
    if !live {
        inner.stats.unauthorized += 1;
        return None;
    }
    inner.stats.reads += 1;
    Some(inner)
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "Unauthorized").into_response()
}

async fn metadata_root(State(state): State<Shared>, headers: HeaderMap) -> Response {
    match authorized(&state, &headers) {
        Some(_) => text(
            "ami-id\navailability-zone\niam/\ninstance-id\ninstance-type\nplacement/\nspot/\ntags/\n".into(),
        ),
        None => unauthorized(),
    }
}

async fn metadata(State(state): State<Shared>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(mut inner) = authorized(&state, &headers) else {
        return unauthorized();
    };
    let path = path.trim_end_matches('/');
    let id = &inner.identity;
    let body = match path {
        "instance-id" => Some(id.instance_id.clone()),
        "instance-type" => Some(id.instance_type.clone()),
        "ami-id" => Some(id.ami_id.clone()),
        "placement" => Some("availability-zone\nregion".into()),
        "placement/region" => Some(id.region.clone()),
        "placement/availability-zone" | "availability-zone" => Some(id.availability_zone.clone()),
        "iam" => id.role_name.as_ref().map(|_| "info\nsecurity-credentials/".to_string()),
        "iam/info" => id.role_name.as_ref().map(|role| {
            serde_json::json!({
                "Code": "Success",
                "LastUpdated": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "InstanceProfileArn": format!("arn:aws:iam::{}:instance-profile/{role}", id.account_id),
                "InstanceProfileId": "AIPAHANGARSIMULATOR01",
            })
            .to_string()
        }),
        "iam/security-credentials" => id.role_name.clone(),
        "tags" => Some("instance".into()),
        "tags/instance" => Some(id.tags.keys().cloned().collect::<Vec<_>>().join("\n")),
        "spot" => Some("instance-action".into()),
        "spot/instance-action" => {
            let action = inner.spot_action.clone();
            inner.stats.spot_action_reads += 1;
            action.map(|a| serde_json::to_string(&a).expect("serialisable"))
        }
        other => {
            if let Some(role) = other.strip_prefix("iam/security-credentials/") {
                (id.role_name.as_deref() == Some(role)).then(credentials_document)
            } else if let Some(key) = other.strip_prefix("tags/instance/") {
                id.tags.get(key).cloned()
            } else {
                None
            }
        }
    };
    match body {
        Some(body) => text(body),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

fn credentials_document() -> String {
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::hours(6);
    serde_json::json!({
        "Code": "Success",
        "LastUpdated": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "Type": "AWS-HMAC",
        // Fixed, well-known test values that moto accepts; nothing here is a secret.
        "AccessKeyId": "ASIAHANGARSIMULATOR1",
        "SecretAccessKey": "testing",
        "Token": "testing",
        "Expiration": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
    .to_string()
}

async fn identity_document(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let Some(inner) = authorized(&state, &headers) else {
        return unauthorized();
    };
    let id = &inner.identity;
    let doc = serde_json::json!({
        "accountId": id.account_id,
        "architecture": "arm64",
        "availabilityZone": id.availability_zone,
        "imageId": id.ami_id,
        "instanceId": id.instance_id,
        "instanceType": id.instance_type,
        "region": id.region,
        "version": "2017-09-30",
    });
    text(doc.to_string())
}

async fn control_set_spot(
    State(state): State<Shared>,
    body: Result<Json<SpotAction>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(action)) if matches!(action.action.as_str(), "terminate" | "stop" | "hibernate") => {
            lock(&state).spot_action = Some(action);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Json(action)) => (
            StatusCode::BAD_REQUEST,
            format!("action must be terminate, stop or hibernate, not `{}`", action.action),
        )
            .into_response(),
        Err(rejection) => (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
    }
}

async fn control_clear_spot(State(state): State<Shared>) -> StatusCode {
    lock(&state).spot_action = None;
    StatusCode::NO_CONTENT
}

async fn control_stats(State(state): State<Shared>) -> Json<ImdsStats> {
    Json(lock(&state).stats.clone())
}

fn text(body: String) -> Response {
    ([(http::header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// Options of `hangar-sim imds`.
#[derive(Debug, clap::Parser)]
#[command(name = "hangar-sim imds", about = "Serve IMDSv2 for one simulated instance on 127.0.0.1")]
struct Cli {
    /// Port on 127.0.0.1; 0 picks a free one (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long)]
    instance_id: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Instance profile role whose (test) credentials are served.
    #[arg(long, default_value = "hangar-runner")]
    role: String,
    /// Instance tag served under tags/instance/, as KEY=VALUE; repeatable.
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

/// Entry point for `hangar-sim imds --port P --instance-id ID`: serves until interrupted.
pub async fn cli_main(args: Vec<String>) -> anyhow::Result<()> {
    use clap::Parser as _;
    let cli = Cli::try_parse_from(std::iter::once("hangar-sim imds".to_string()).chain(args))?;
    // Logs go to stderr: stdout carries only the endpoint, for scripts that start the simulator.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
    let mut identity = InstanceIdentity::new(&cli.instance_id)?;
    identity.availability_zone = format!("{}a", cli.region);
    identity.region = cli.region;
    identity.role_name = Some(cli.role);
    identity.tags = cli.tags.into_iter().collect();
    let server = ImdsServer::start_on(identity, cli.port).await?;
    println!("{}", server.endpoint());
    tokio::signal::ctrl_c().await?;
    drop(server);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn client_for(server: &ImdsServer) -> (reqwest::Client, String) {
        (reqwest::Client::new(), server.endpoint())
    }

    async fn token(client: &reqwest::Client, base: &str, ttl: &str) -> reqwest::Response {
        client.put(format!("{base}/latest/api/token")).header(TTL_HEADER, ttl).send().await.unwrap()
    }

    #[tokio::test]
    async fn metadata_requires_a_live_token() {
        let server = ImdsServer::start(InstanceIdentity::new("i-0123456789abcdef0").unwrap()).await.unwrap();
        let (client, base) = client_for(&server).await;
        let url = format!("{base}/latest/meta-data/instance-id");

        let without = client.get(&url).send().await.unwrap();
        assert_eq!(without.status(), 401);
        let forged = client.get(&url).header(TOKEN_HEADER, "not-a-token").send().await.unwrap();
        assert_eq!(forged.status(), 401);

        let issued = token(&client, &base, "60").await;
        assert_eq!(issued.status(), 200);
        assert_eq!(issued.headers()[TTL_HEADER], "60");
        let tok = issued.text().await.unwrap();
        let with = client.get(&url).header(TOKEN_HEADER, &tok).send().await.unwrap();
        assert_eq!(with.status(), 200);
        assert_eq!(with.text().await.unwrap(), "i-0123456789abcdef0");

        let region = client
            .get(format!("{base}/latest/meta-data/placement/region"))
            .header(TOKEN_HEADER, &tok)
            .send()
            .await
            .unwrap();
        assert_eq!(region.text().await.unwrap(), "us-east-1");
        let stats = server.stats();
        assert_eq!((stats.tokens_issued, stats.unauthorized, stats.reads), (1, 2, 2));
    }

    #[tokio::test]
    async fn token_ttl_is_validated_and_enforced() {
        let server = ImdsServer::start(InstanceIdentity::new("i-0123456789abcdef0").unwrap()).await.unwrap();
        let (client, base) = client_for(&server).await;
        for bad in ["0", "21601", "soon"] {
            assert_eq!(token(&client, &base, bad).await.status(), 400, "ttl {bad}");
        }
        let missing = client.put(format!("{base}/latest/api/token")).send().await.unwrap();
        assert_eq!(missing.status(), 400);
        let proxied = client
            .put(format!("{base}/latest/api/token"))
            .header(TTL_HEADER, "60")
            .header("X-Forwarded-For", "10.0.0.1")
            .send()
            .await
            .unwrap();
        assert_eq!(proxied.status(), 403);

        let tok = token(&client, &base, "1").await.text().await.unwrap();
        let url = format!("{base}/latest/meta-data/instance-id");
        assert_eq!(client.get(&url).header(TOKEN_HEADER, &tok).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(client.get(&url).header(TOKEN_HEADER, &tok).send().await.unwrap().status(), 401);
    }

    #[tokio::test]
    async fn spot_action_is_404_until_set_over_http_or_rust() {
        let server = ImdsServer::start(InstanceIdentity::new("i-0123456789abcdef0").unwrap()).await.unwrap();
        let (client, base) = client_for(&server).await;
        let tok = token(&client, &base, "60").await.text().await.unwrap();
        let url = format!("{base}/latest/meta-data/spot/instance-action");
        let get = || client.get(&url).header(TOKEN_HEADER, &tok).send();
        assert_eq!(get().await.unwrap().status(), 404);

        let set = client
            .put(format!("{base}/hangar-sim/spot/instance-action"))
            .json(&serde_json::json!({"action": "terminate", "time": "2026-01-01T00:02:00Z"}))
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 204);
        let notice: SpotAction = get().await.unwrap().json().await.unwrap();
        assert_eq!(notice, SpotAction { action: "terminate".into(), time: "2026-01-01T00:02:00Z".into() });

        let bad = client
            .put(format!("{base}/hangar-sim/spot/instance-action"))
            .json(&serde_json::json!({"action": "explode", "time": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);

        let cleared = client.delete(format!("{base}/hangar-sim/spot/instance-action")).send().await.unwrap();
        assert_eq!(cleared.status(), 204);
        assert_eq!(get().await.unwrap().status(), 404);
        server.set_spot_action(SpotAction { action: "stop".into(), time: "t".into() });
        assert_eq!(get().await.unwrap().status(), 200);
        server.clear_spot_action();
        assert_eq!(get().await.unwrap().status(), 404);
        assert_eq!(server.stats().spot_action_reads, 5);
    }

    #[tokio::test]
    async fn serves_role_credentials_tags_and_identity() {
        let mut identity = InstanceIdentity::new("i-0123456789abcdef0").unwrap();
        identity.tags.insert("hangar:pool".into(), "linux-arm64".into());
        let server = ImdsServer::start(identity).await.unwrap();
        let (client, base) = client_for(&server).await;
        let tok = token(&client, &base, "60").await.text().await.unwrap();
        let get = |path: &str| client.get(format!("{base}{path}")).header(TOKEN_HEADER, &tok).send();

        let role = get("/latest/meta-data/iam/security-credentials/").await.unwrap().text().await.unwrap();
        assert_eq!(role, "hangar-runner");
        let creds: serde_json::Value = get("/latest/meta-data/iam/security-credentials/hangar-runner")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(creds["Code"], "Success");
        assert!(creds["Expiration"].as_str().unwrap().ends_with('Z'));
        assert_eq!(get("/latest/meta-data/iam/security-credentials/other").await.unwrap().status(), 404);
        assert_eq!(
            get("/latest/meta-data/tags/instance").await.unwrap().text().await.unwrap(),
            "hangar:pool"
        );
        assert_eq!(
            get("/latest/meta-data/tags/instance/hangar:pool").await.unwrap().text().await.unwrap(),
            "linux-arm64"
        );
        let doc: serde_json::Value =
            get("/latest/dynamic/instance-identity/document").await.unwrap().json().await.unwrap();
        assert_eq!(doc["instanceId"], "i-0123456789abcdef0");
        assert_eq!(doc["region"], "us-east-1");
    }

    #[test]
    fn rejects_malformed_instance_ids() {
        for bad in ["", "i-", "0123456789abcdef0", "i-XYZ12345", "i-0123456789ABCDEF0", "i-123"] {
            assert!(InstanceIdentity::new(bad).is_err(), "{bad}");
        }
        assert!(InstanceIdentity::new("i-1234abcd").is_ok());
    }
}
