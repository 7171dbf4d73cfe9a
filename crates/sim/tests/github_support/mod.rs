//! Helpers shared by the GitHub simulator's tests: App JWTs signed with the test-only key, raw
//! REST calls, and a webhook receiver on 127.0.0.1.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::HeaderMap;
use hangar_sim::github::{GithubSim, SimConfig};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const APP_ID: u64 = 4242;

pub fn key(name: &str) -> String {
    let p = hangar_testsupport::fixtures_dir().join("keys").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn config() -> SimConfig {
    SimConfig::new(APP_ID, key("test-only-github-app.public-key.pem"))
}

/// An App JWT with `iat`/`exp` relative to the simulator's now, in seconds.
pub fn jwt(sim: &GithubSim, iat: i64, exp: i64, iss: Value) -> String {
    let now = sim.now().timestamp();
    let claims = json!({ "iat": now + iat, "exp": now + exp, "iss": iss });
    let k = jsonwebtoken::EncodingKey::from_rsa_pem(key("test-only-github-app.private-key.pem").as_bytes())
        .unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &k).unwrap()
}

pub fn good_jwt(sim: &GithubSim) -> String {
    jwt(sim, -60, 540, json!(APP_ID))
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub async fn call(method: reqwest::Method, url: &str, bearer: Option<&str>, body: Option<Value>) -> Reply {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("user-agent", "hangar-sim-tests")
        .header("accept", "application/vnd.github+json");
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
    Reply { status, headers, body }
}

pub async fn token(sim: &GithubSim) -> String {
    let url = format!("{}/app/installations/1/access_tokens", sim.base_url());
    let r = call(reqwest::Method::POST, &url, Some(&good_jwt(sim)), None).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

pub async fn jit(sim: &GithubSim, token: &str, name: &str, labels: &[&str], group: u64) -> Reply {
    let url = format!("{}/orgs/octo-org/actions/runners/generate-jitconfig", sim.base_url());
    let body = json!({ "name": name, "runner_group_id": group, "labels": labels });
    call(reqwest::Method::POST, &url, Some(token), Some(body)).await
}

/// A registered, idle runner with these custom labels; returns its id.
pub async fn runner(sim: &GithubSim, token: &str, name: &str, labels: &[&str]) -> u64 {
    let r = jit(sim, token, name, labels, 1).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let v = sim.register_runner(r.body["encoded_jit_config"].as_str().unwrap()).expect("register");
    v.id
}

#[derive(Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A webhook endpoint that records every request.
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = Arc::clone(&got);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let sink = Arc::clone(&sink);
                async move {
                    sink.lock().unwrap().push(Received { headers, body });
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, got }
    }

    /// Waits (bounded) until `n` deliveries arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..500 {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} deliveries, got {}", self.got.lock().unwrap().len());
    }
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
