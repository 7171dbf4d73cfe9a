//! The simulator's REST semantics over raw HTTP: App JWT rules, token expiry, errors, rate-limit
//! headers, the secondary limit, fault injection and the control API.

mod github_support;

use github_support::*;
use hangar_sim::github::{Fault, GithubSim};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

async fn sim() -> GithubSim {
    GithubSim::start(config()).await.expect("sim starts")
}

fn token_url(sim: &GithubSim) -> String {
    format!("{}/app/installations/1/access_tokens", sim.base_url())
}

#[tokio::test]
async fn app_jwt_is_checked_like_github() {
    let s = sim().await;
    let url = token_url(&s);
    let ok = call(Method::POST, &url, Some(&good_jwt(&s)), None).await;
    assert_eq!(ok.status, 201);
    assert!(ok.body["token"].as_str().unwrap().starts_with("ghs_"));

    let cases = [
        ("expired", jwt(&s, -700, -100, json!(APP_ID)), "Expiration time"),
        ("issued in the future", jwt(&s, 120, 500, json!(APP_ID)), "Issued at"),
        ("lives over 10 minutes", jwt(&s, -60, 700, json!(APP_ID)), "too far in the future"),
        ("another app", jwt(&s, -60, 500, json!(APP_ID + 1)), "Issuer"),
        ("not a JWT", "not-a-jwt".to_owned(), "could not be decoded"),
    ];
    for (what, token, msg) in cases {
        let r = call(Method::POST, &url, Some(&token), None).await;
        assert_eq!(r.status, 401, "{what}: {:?}", r.body);
        assert!(r.body["message"].as_str().unwrap().contains(msg), "{what}: {:?}", r.body);
    }
    // Signed with a secret instead of the App's key.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "iat": s.now().timestamp() - 60, "exp": s.now().timestamp() + 500, "iss": APP_ID }),
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    assert_eq!(call(Method::POST, &url, Some(&hs), None).await.status, 401);
    assert_eq!(call(Method::POST, &url, None, None).await.status, 401);
    // An installation token is not an App JWT.
    let t = ok.body["token"].as_str().unwrap().to_owned();
    assert_eq!(call(Method::POST, &url, Some(&t), None).await.status, 401);
    let unknown = format!("{}/app/installations/999/access_tokens", s.base_url());
    assert_eq!(call(Method::POST, &unknown, Some(&good_jwt(&s)), None).await.status, 404);
}

#[tokio::test]
async fn installation_tokens_expire_after_an_hour() {
    let s = sim().await;
    let r = call(Method::POST, &token_url(&s), Some(&good_jwt(&s)), None).await;
    let expires = chrono::DateTime::parse_from_rfc3339(r.body["expires_at"].as_str().unwrap()).unwrap();
    let lifetime = expires.signed_duration_since(s.now()).num_seconds();
    assert!((3590..=3600).contains(&lifetime), "{lifetime}");
    let t = r.body["token"].as_str().unwrap().to_owned();
    let groups = format!("{}/orgs/octo-org/actions/runner-groups", s.base_url());
    assert_eq!(call(Method::GET, &groups, Some(&t), None).await.status, 200);
    s.advance_clock(Duration::from_secs(59 * 60));
    assert_eq!(call(Method::GET, &groups, Some(&t), None).await.status, 200);
    s.advance_clock(Duration::from_secs(61));
    let r = call(Method::GET, &groups, Some(&t), None).await;
    assert_eq!((r.status, r.body["message"].as_str()), (401, Some("Bad credentials")));
}

#[tokio::test]
async fn runner_endpoints_answer_with_githubs_errors() {
    let s = sim().await;
    let t = token(&s).await;
    let r = jit(&s, &t, "r1", &["gpu"], 2).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let labels: Vec<_> =
        r.body["runner"]["labels"].as_array().unwrap().iter().map(|l| l["name"].clone()).collect();
    assert_eq!(labels, vec![json!("self-hosted"), json!("Linux"), json!("X64"), json!("gpu")]);
    assert_eq!(r.body["runner"]["status"], "offline");

    assert_eq!(jit(&s, &t, "r1", &["gpu"], 2).await.status, 409, "names are unique");
    assert_eq!(jit(&s, &t, "R1", &["gpu"], 2).await.status, 409, "case-insensitively");
    assert_eq!(jit(&s, &t, "r2", &["gpu"], 99).await.status, 422, "unknown runner group");
    assert_eq!(jit(&s, &t, "r2", &[], 1).await.status, 422, "no labels");
    let url = format!("{}/orgs/octo-org/actions/runners/generate-jitconfig", s.base_url());
    let missing = call(Method::POST, &url, Some(&t), Some(json!({ "name": "r3", "labels": ["x"] }))).await;
    assert_eq!(missing.status, 422);
    assert!(missing.body["message"].as_str().unwrap().contains("runner_group_id"));
    let other = format!("{}/orgs/nope/actions/runners/generate-jitconfig", s.base_url());
    let r = call(
        Method::POST,
        &other,
        Some(&t),
        Some(json!({ "name": "r", "runner_group_id": 1, "labels": ["x"] })),
    )
    .await;
    assert_eq!(r.status, 404);
    let r =
        call(Method::GET, &format!("{}/orgs/octo-org/actions/runners/424242", s.base_url()), Some(&t), None)
            .await;
    assert_eq!(r.status, 404);
    assert_eq!(s.count("generate-jitconfig"), 7);
}

#[tokio::test]
async fn rate_limit_headers_count_down_and_exhaustion_is_403() {
    let s = sim().await;
    let t = token(&s).await;
    let url = format!("{}/orgs/octo-org/actions/runners", s.base_url());
    let a = call(Method::GET, &url, Some(&t), None).await;
    let b = call(Method::GET, &url, Some(&t), None).await;
    let h = |r: &Reply, n: &str| r.headers.get(n).unwrap().to_str().unwrap().to_owned();
    assert_eq!(h(&a, "x-ratelimit-limit"), "5000");
    assert_eq!(h(&a, "x-ratelimit-remaining"), "4999");
    assert_eq!(h(&b, "x-ratelimit-remaining"), "4998");
    assert_eq!(h(&b, "x-ratelimit-used"), "2");
    assert_eq!(h(&b, "x-ratelimit-resource"), "core");
    let reset: i64 = h(&b, "x-ratelimit-reset").parse().unwrap();
    assert!((reset - s.now().timestamp() - 3600).abs() <= 2);

    s.exhaust_rate_limit(Some(1), Duration::from_secs(30));
    let c = call(Method::GET, &url, Some(&t), None).await;
    assert_eq!(c.status, 403);
    assert_eq!(h(&c, "x-ratelimit-remaining"), "0");
    assert!(c.body["message"].as_str().unwrap().contains("API rate limit exceeded"));
    s.advance_clock(Duration::from_secs(31));
    let d = call(Method::GET, &url, Some(&t), None).await;
    assert_eq!((d.status, h(&d, "x-ratelimit-remaining")), (200, "4999".into()));
}

#[tokio::test]
async fn too_many_writes_per_minute_hit_the_secondary_limit() {
    let mut cfg = config();
    cfg.secondary_writes_per_minute = 3;
    let s = GithubSim::start(cfg).await.unwrap();
    let t = token(&s).await; // one write
    assert_eq!(jit(&s, &t, "a", &["x"], 1).await.status, 201);
    assert_eq!(jit(&s, &t, "b", &["x"], 1).await.status, 201);
    let r = jit(&s, &t, "c", &["x"], 1).await;
    assert_eq!(r.status, 403);
    assert!(r.body["message"].as_str().unwrap().contains("secondary rate limit"));
    let wait: u64 = r.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Reads are not limited by it.
    let list = format!("{}/orgs/octo-org/actions/runners", s.base_url());
    assert_eq!(call(Method::GET, &list, Some(&t), None).await.status, 200);
    s.advance_clock(Duration::from_secs(wait));
    assert_eq!(jit(&s, &t, "c", &["x"], 1).await.status, 201);
}

#[tokio::test]
async fn faults_and_latency_are_injected_per_endpoint() {
    let s = sim().await;
    let t = token(&s).await;
    s.inject_fault(Fault {
        endpoint: "generate-jitconfig".into(),
        status: 502,
        count: 2,
        retry_after: None,
        message: None,
        after_processing: false,
    });
    assert_eq!(jit(&s, &t, "a", &["x"], 1).await.status, 502);
    assert_eq!(jit(&s, &t, "a", &["x"], 1).await.status, 502);
    assert_eq!(jit(&s, &t, "a", &["x"], 1).await.status, 201, "only the next two failed");
    s.set_latency("list-runners", 150);
    let started = Instant::now();
    call(Method::GET, &format!("{}/orgs/octo-org/actions/runners", s.base_url()), Some(&t), None).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    let c = s.counters();
    assert_eq!(c.get("generate-jitconfig"), 3);
    assert_eq!(c.responses["generate-jitconfig 502"], 2);
}

#[tokio::test]
async fn control_api_over_http() {
    let s = sim().await;
    let ctl = format!("{}/_sim", s.control_url());
    let r = call(
        Method::POST,
        &format!("{ctl}/faults"),
        None,
        Some(json!({"endpoint": "get-job", "status": 503})),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = call(
        Method::POST,
        &format!("{ctl}/faults"),
        None,
        Some(json!({"endpoint": "get-job", "status": 200})),
    )
    .await;
    assert_eq!(r.status, 400, "a fault must be an error status");
    let r = call(
        Method::POST,
        &format!("{ctl}/jobs"),
        None,
        Some(json!({"repo": "octo-org/app", "labels": ["gpu"]})),
    )
    .await;
    assert_eq!(r.status, 201);
    let job_id = r.body["id"].as_u64().unwrap();
    let r = call(
        Method::POST,
        &format!("{ctl}/jobs"),
        None,
        Some(json!({"repo": "nope/app", "labels": ["gpu"]})),
    )
    .await;
    assert_eq!(r.status, 404);
    let jobs = call(Method::GET, &format!("{ctl}/jobs"), None, None).await;
    assert_eq!(jobs.body[0]["status"], "queued");
    let t = token(&s).await;
    let get = format!("{}/repos/octo-org/app/actions/jobs/{job_id}", s.base_url());
    assert_eq!(call(Method::GET, &get, Some(&t), None).await.status, 503);
    assert_eq!(call(Method::GET, &get, Some(&t), None).await.status, 200);
    let r = jit(&s, &t, "r", &["gpu"], 1).await;
    let cfg = r.body["encoded_jit_config"].clone();
    let reg = call(
        Method::POST,
        &format!("{ctl}/runners/register"),
        None,
        Some(json!({"encoded_jit_config": cfg})),
    )
    .await;
    assert_eq!((reg.status, reg.body["phase"].as_str()), (200, Some("busy")), "{:?}", reg.body);
    let again = call(
        Method::POST,
        &format!("{ctl}/runners/register"),
        None,
        Some(json!({"encoded_jit_config": cfg})),
    )
    .await;
    assert_eq!(again.status, 409, "a JIT config is single use");
    let counters = call(Method::GET, &format!("{ctl}/counters"), None, None).await;
    assert_eq!(counters.body["requests"]["get-job"], 2);
    let clock =
        call(Method::POST, &format!("{ctl}/clock/advance"), None, Some(json!({"seconds": 120}))).await;
    assert!(clock.body["offset_ms"].as_i64().unwrap() >= 120_000);
    let r =
        call(Method::POST, &format!("{ctl}/rate-limit/exhaust"), None, Some(json!({"reset_in_secs": 10})))
            .await;
    assert_eq!(r.status, 204);
    assert_eq!(call(Method::GET, &get, Some(&t), None).await.status, 403);
}

#[tokio::test]
async fn binary_serves_the_same_api() {
    let pem = hangar_testsupport::fixtures_dir().join("keys/test-only-github-app.public-key.pem");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hangar-sim"))
        .args(["github", "--port", "0", "--app-id", "4242", "--path-prefix", "/api/v3", "--app-public-key"])
        .arg(&pem)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn hangar-sim");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).expect("url on stdout").to_owned();
    assert!(base.ends_with("/api/v3"), "{line}");
    let r = call(Method::GET, &format!("{base}/orgs/octo-org/installation"), Some("x"), None).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 401, "served, and checks the JWT: {:?}", r.body);
}
