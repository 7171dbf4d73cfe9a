//! The client against the GitHub simulator over HTTP. Time is the simulator's clock, and the
//! client's sleeper advances that clock instead of sleeping, so waits are asserted, not spent.

use async_trait::async_trait;
use hangar_core::ids::{InstallationId, JobId, RepoFullName, RunnerId, RunnerName};
use hangar_core::ports::{JitRequest, RunnerRegistry, RunnerScopeTarget};
use hangar_core::secret::Secret;
use hangar_github::{GithubClient, GithubConfig, Sleeper};
use hangar_sim::github::{Fault, GithubSim, JobSpec, SimClock, SimConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct SimSleeper {
    clock: Arc<SimClock>,
    slept: Mutex<Vec<Duration>>,
}

#[async_trait]
impl Sleeper for SimSleeper {
    async fn sleep(&self, d: Duration) {
        self.slept.lock().unwrap().push(d);
        self.clock.advance(d);
    }
}

impl SimSleeper {
    fn slept(&self) -> Vec<Duration> {
        self.slept.lock().unwrap().clone()
    }
}

fn key(name: &str) -> String {
    let p = hangar_testsupport::fixtures_dir().join("keys").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sim_config() -> SimConfig {
    SimConfig::new(4242, key("test-only-github-app.public-key.pem"))
}

struct Env {
    sim: GithubSim,
    client: GithubClient,
    sleeper: Arc<SimSleeper>,
}

async fn env_with(cfg: SimConfig, base: Option<String>) -> Env {
    let sim = GithubSim::start(cfg).await.expect("sim starts");
    let sleeper = Arc::new(SimSleeper { clock: sim.clock(), slept: Mutex::default() });
    let gc = GithubConfig::new(
        base.unwrap_or_else(|| sim.base_url()),
        sim.app_id(),
        Secret::new(key("test-only-github-app.private-key.pem")),
    );
    let client = GithubClient::with_runtime(gc, sim.clock(), sleeper.clone()).expect("client");
    Env { sim, client, sleeper }
}

async fn env() -> Env {
    env_with(sim_config(), None).await
}

fn org_req(name: &str, installation: Option<u64>) -> JitRequest {
    JitRequest {
        name: RunnerName::new(name),
        labels: vec!["hangar-linux".into(), "gpu".into()],
        runner_group: "hangar".into(),
        scope: RunnerScopeTarget::Org("octo-org".into()),
        installation: installation.map(InstallationId),
    }
}

fn responses(sim: &GithubSim, key: &str) -> u64 {
    sim.counters().responses.get(key).copied().unwrap_or(0)
}

#[tokio::test]
async fn n_jit_calls_make_one_token_request_and_one_group_lookup() {
    let e = env().await;
    for i in 0..20 {
        let jit = e.client.generate_jit_config(&org_req(&format!("r-{i}"), Some(1))).await.expect("jit");
        assert_eq!(jit.runner_group_id.0, 2, "`hangar` is the org's second group");
        assert!(!jit.encoded.expose().is_empty());
    }
    let c = e.sim.counters();
    assert_eq!(c.get("create-installation-token"), 1, "{c:?}");
    assert_eq!(c.get("list-runner-groups"), 1, "{c:?}");
    assert_eq!(c.get("generate-jitconfig"), 20, "{c:?}");
    assert_eq!(c.get("get-org-installation"), 0, "installation id came from the request");
    assert_eq!(c.total, 22);
    assert_eq!(e.client.stats().requests, 22);
    let remaining = e.client.rate_limit_remaining().expect("rate limit recorded");
    assert_eq!(remaining, 5000 - 21, "the installation bucket spent 21 (the token came from the App's)");
}

#[tokio::test]
async fn installation_is_looked_up_once_when_the_payload_has_none() {
    let e = env().await;
    for i in 0..5 {
        e.client.generate_jit_config(&org_req(&format!("r-{i}"), None)).await.expect("jit");
    }
    e.client.list_runners("octo-org").await.expect("list");
    let c = e.sim.counters();
    assert_eq!(c.get("get-org-installation"), 1, "{c:?}");
    assert_eq!(c.get("create-installation-token"), 1, "{c:?}");
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let e = env().await;
    e.client.generate_jit_config(&org_req("a", Some(1))).await.unwrap();
    e.sim.advance_clock(Duration::from_secs(50 * 60));
    e.client.generate_jit_config(&org_req("b", Some(1))).await.unwrap();
    assert_eq!(e.sim.count("create-installation-token"), 1, "50 min old token is still used");
    // 56 minutes: inside the 5-minute refresh margin, the token is still valid at GitHub but
    // the client replaces it before using it.
    e.sim.advance_clock(Duration::from_secs(6 * 60));
    e.client.generate_jit_config(&org_req("c", Some(1))).await.unwrap();
    assert_eq!(e.sim.count("create-installation-token"), 2);
    assert_eq!(responses(&e.sim, "generate-jitconfig 401"), 0, "no request was made with a stale token");
    assert_eq!(e.sim.count("generate-jitconfig"), 3);
}

#[tokio::test]
async fn primary_rate_limit_waits_until_reset_without_sleeping() {
    let e = env().await;
    e.client.generate_jit_config(&org_req("warm", Some(1))).await.unwrap();
    e.sim.exhaust_rate_limit(Some(1), Duration::from_secs(30));
    let started = Instant::now();
    e.client.generate_jit_config(&org_req("after-reset", Some(1))).await.expect("succeeds after the reset");
    assert!(started.elapsed() < Duration::from_secs(5), "the wait was simulated");
    let slept = e.sleeper.slept();
    assert_eq!(slept.len(), 1, "{slept:?}");
    assert!((30..=32).contains(&slept[0].as_secs()), "waited until x-ratelimit-reset: {slept:?}");
    assert_eq!(responses(&e.sim, "generate-jitconfig 403"), 1);
    assert_eq!(responses(&e.sim, "generate-jitconfig 201"), 2);
    assert_eq!(e.client.stats().rate_limit_waits, 1);
    assert_eq!(e.client.rate_limit_remaining(), Some(4999), "a fresh window after the reset");
}

#[tokio::test]
async fn primary_rate_limit_beyond_the_policy_fails_retryable_without_waiting() {
    let e = env().await;
    e.client.generate_jit_config(&org_req("warm", Some(1))).await.unwrap();
    e.sim.exhaust_rate_limit(Some(1), Duration::from_secs(1800));
    let err = e.client.generate_jit_config(&org_req("x", Some(1))).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert_eq!(err.code.as_deref(), Some("rate-limited"));
    assert_eq!(err.operation, "github:generate-jitconfig");
    assert!(e.sleeper.slept().is_empty());
    assert_eq!(e.client.rate_limit_remaining(), Some(0));
    assert_eq!(e.sim.count("generate-jitconfig"), 2);
}

#[tokio::test]
async fn secondary_limit_honours_retry_after() {
    let e = env().await;
    e.sim.inject_fault(Fault {
        endpoint: "generate-jitconfig".into(),
        status: 429,
        count: 1,
        retry_after: Some(7),
        message: Some("You have exceeded a secondary rate limit.".into()),
        after_processing: false,
    });
    e.client.generate_jit_config(&org_req("r", Some(1))).await.expect("succeeds after retry-after");
    assert_eq!(e.sleeper.slept(), vec![Duration::from_secs(7)]);
    assert_eq!(e.sim.count("generate-jitconfig"), 2);
}

#[tokio::test]
async fn simulator_secondary_limit_on_writes_is_waited_out() {
    let mut cfg = sim_config();
    cfg.secondary_writes_per_minute = 5;
    let e = env_with(cfg, None).await;
    // The token mint is a write too: 1 + 9 JIT calls exceed 5 per minute.
    for i in 0..9 {
        e.client.generate_jit_config(&org_req(&format!("r-{i}"), Some(1))).await.expect("jit");
    }
    let rejected = responses(&e.sim, "generate-jitconfig 403");
    assert!(rejected >= 1, "the simulator pushed back: {:?}", e.sim.counters());
    assert_eq!(responses(&e.sim, "generate-jitconfig 201"), 9);
    let slept = e.sleeper.slept();
    assert_eq!(slept.len() as u64, rejected);
    assert!(slept.iter().all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(60)), "{slept:?}");
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let e = env().await;
    e.sim.inject_fault(Fault {
        endpoint: "generate-jitconfig".into(),
        status: 502,
        count: 2,
        retry_after: None,
        message: None,
        after_processing: false,
    });
    e.client.generate_jit_config(&org_req("r", Some(1))).await.expect("third attempt succeeds");
    assert_eq!(e.sim.count("generate-jitconfig"), 3);
    assert_eq!(e.client.stats().retries, 2);
    let slept = e.sleeper.slept();
    assert_eq!(slept.len(), 2);
    assert!(
        slept.iter().all(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(5)),
        "{slept:?}"
    );
}

#[tokio::test]
async fn persistent_server_errors_stop_after_the_bounded_attempts() {
    let e = env().await;
    e.client.generate_jit_config(&org_req("warm", Some(1))).await.unwrap();
    e.sim.inject_fault(Fault {
        endpoint: "generate-jitconfig".into(),
        status: 503,
        count: 100,
        retry_after: None,
        message: None,
        after_processing: false,
    });
    let err = e.client.generate_jit_config(&org_req("r", Some(1))).await.unwrap_err();
    assert!(err.retryable);
    assert_eq!(err.code.as_deref(), Some("503"));
    assert!(err.message.contains("POST /orgs/octo-org/actions/runners/generate-jitconfig"), "{err}");
    assert_eq!(e.sim.count("generate-jitconfig"), 1 + 4, "four attempts, then give up");
}

#[tokio::test]
async fn connection_errors_are_retried_and_reported() {
    // A port nothing listens on: bind, read the port, drop the listener.
    let port = hangar_testsupport::free_port();
    let e = env_with(sim_config(), Some(format!("http://127.0.0.1:{port}"))).await;
    let err = e.client.generate_jit_config(&org_req("r", Some(1))).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert_eq!(err.code.as_deref(), Some("connection"));
    assert_eq!(err.operation, "github:generate-jitconfig");
    assert!(err.message.contains("/app/installations/1/access_tokens"), "names the failing call: {err}");
    assert_eq!(e.client.stats().requests, 4);
}

#[tokio::test]
async fn not_found_is_surfaced_without_retry() {
    let e = env().await;
    let mut req = org_req("r", Some(1));
    req.scope = RunnerScopeTarget::Org("no-such-org".into());
    req.runner_group = "Default".into();
    let err = e.client.generate_jit_config(&req).await.unwrap_err();
    assert!(!err.retryable);
    assert_eq!(err.code.as_deref(), Some("404"));
    assert_eq!(err.operation, "github:generate-jitconfig");
    assert_eq!(e.sim.count("list-runner-groups"), 1, "the 404 came from the group lookup");
    assert_eq!(responses(&e.sim, "list-runner-groups 404"), 1);

    let err = e.client.get_job(&RepoFullName::new("octo-org/app"), JobId(12345)).await.unwrap_err();
    assert_eq!((err.code.as_deref(), err.retryable, err.operation), (Some("404"), false, "github:get-job"));
    assert_eq!(e.sim.count("get-job"), 1);
    assert!(e.sleeper.slept().is_empty());
}

#[tokio::test]
async fn unprocessable_is_surfaced_without_retry() {
    let e = env().await;
    let jit = e.client.generate_jit_config(&org_req("busy-one", Some(1))).await.unwrap();
    e.sim.enqueue_job(JobSpec::new("octo-org/app", &["self-hosted", "gpu"]).duration_ms(60_000)).unwrap();
    e.sim.register_runner(jit.encoded.expose()).unwrap();
    let err = e.client.delete_runner("octo-org", jit.runner_id).await.unwrap_err();
    assert_eq!(
        (err.code.as_deref(), err.retryable, err.operation),
        (Some("422"), false, "github:delete-runner")
    );
    assert!(err.message.contains("still running a job"), "{err}");
    assert_eq!(e.sim.count("delete-runner"), 1);

    e.sim.inject_fault(Fault {
        endpoint: "generate-jitconfig".into(),
        status: 422,
        count: 5,
        retry_after: None,
        message: Some("Validation Failed".into()),
        after_processing: false,
    });
    let err = e.client.generate_jit_config(&org_req("x", Some(1))).await.unwrap_err();
    assert_eq!((err.code.as_deref(), err.retryable), (Some("422"), false));
    assert_eq!(e.sim.count("generate-jitconfig"), 2);
}

#[tokio::test]
async fn unauthorized_is_retried_once_after_a_token_refresh() {
    let e = env().await;
    e.client.generate_jit_config(&org_req("a", Some(1))).await.unwrap();
    e.sim.revoke_tokens();
    e.client.generate_jit_config(&org_req("b", Some(1))).await.expect("recovers with a new token");
    assert_eq!(e.sim.count("create-installation-token"), 2);
    assert_eq!(responses(&e.sim, "generate-jitconfig 401"), 1);

    e.sim.inject_fault(Fault {
        endpoint: "generate-jitconfig".into(),
        status: 401,
        count: 5,
        retry_after: None,
        message: Some("Bad credentials".into()),
        after_processing: false,
    });
    let err = e.client.generate_jit_config(&org_req("c", Some(1))).await.unwrap_err();
    assert_eq!((err.code.as_deref(), err.retryable), (Some("401"), false));
    assert_eq!(e.sim.count("generate-jitconfig"), 3 + 2, "one retry after the refresh, no more");
    assert_eq!(e.sim.count("create-installation-token"), 3);
}

#[tokio::test]
async fn conflict_after_a_lost_response_replaces_the_orphaned_runner() {
    let e = env().await;
    e.client.generate_jit_config(&org_req("warm", Some(1))).await.unwrap();
    e.sim.inject_fault(Fault {
        endpoint: "generate-jitconfig".into(),
        status: 502,
        count: 1,
        retry_after: None,
        message: None,
        after_processing: true,
    });
    let jit = e.client.generate_jit_config(&org_req("i-0abc", Some(1))).await.expect("recovered");
    let runners: Vec<_> = e.sim.runners().into_iter().filter(|r| r.name == "i-0abc").collect();
    assert_eq!(runners.len(), 2, "{runners:?}");
    assert!(runners[0].removed, "the orphan the lost response created was deleted");
    assert!(!runners[1].removed);
    assert_eq!(runners[1].id, jit.runner_id.0);
    assert_eq!(e.sim.count("generate-jitconfig"), 1 + 3, "502 (created), 409, 201");
    assert_eq!(e.sim.count("list-runners"), 1);
    assert_eq!(e.sim.count("delete-runner"), 1);

    // Without an ambiguous attempt before it, a 409 is a real name collision.
    let err = e.client.generate_jit_config(&org_req("i-0abc", Some(1))).await.unwrap_err();
    assert_eq!((err.code.as_deref(), err.retryable), (Some("409"), false));
    assert_eq!(e.sim.count("delete-runner"), 1);
}

#[tokio::test]
async fn enterprise_server_base_url_with_api_v3_prefix() {
    let mut cfg = sim_config();
    cfg.path_prefix = "/api/v3".into();
    let e = env_with(cfg, None).await;
    assert!(e.sim.base_url().ends_with("/api/v3"));
    let mut req = org_req("ghes-runner", None);
    req.scope = RunnerScopeTarget::Repo(RepoFullName::new("octo-org/app"));
    req.runner_group = "Default".into();
    let jit = e.client.generate_jit_config(&req).await.expect("repo-scoped jit on GHES");
    assert_eq!(jit.runner_group_id.0, 1);
    assert_eq!(e.sim.count("get-repo-installation"), 1);
    assert_eq!(e.sim.count("generate-jitconfig-repo"), 1);

    // The same simulator without the prefix in the client's base URL is not GitHub's API.
    let wrong = GithubClient::with_runtime(
        GithubConfig::new(
            e.sim.control_url(),
            e.sim.app_id(),
            Secret::new(key("test-only-github-app.private-key.pem")),
        ),
        e.sim.clock(),
        e.sleeper.clone(),
    )
    .unwrap();
    let err = wrong.generate_jit_config(&org_req("x", Some(1))).await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("404"), "{err}");
}

#[tokio::test]
async fn list_runners_follows_pagination_and_get_and_rerun_jobs() {
    let e = env().await;
    for i in 0..230 {
        e.client.generate_jit_config(&org_req(&format!("r-{i:03}"), Some(1))).await.unwrap();
    }
    e.sim.reset_counters();
    let runners = e.client.list_runners("octo-org").await.unwrap();
    assert_eq!(runners.len(), 230);
    assert_eq!(e.sim.count("list-runners"), 3, "100 per page");
    assert!(runners.iter().all(|r| !r.online && !r.busy));
    assert!(runners[0].labels.iter().any(|l| l == "gpu"));
    e.client.delete_runner("octo-org", runners[0].id).await.unwrap();
    assert_eq!(e.client.list_runners("octo-org").await.unwrap().len(), 229);
    let err = e.client.delete_runner("octo-org", RunnerId(999_999)).await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("404"));

    let job =
        e.sim.enqueue_job(JobSpec::new("octo-org/app", &["self-hosted", "gpu"]).duration_ms(0)).unwrap();
    let repo = RepoFullName::new("octo-org/app");
    let info = e.client.get_job(&repo, JobId(job.id)).await.unwrap();
    assert_eq!((info.status.as_str(), info.run_attempt), ("queued", 1));
    let err = e.client.rerun_job(&repo, JobId(job.id)).await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("403"), "a queued job cannot be re-run: {err}");
}

/// Requests per launched runner in the steady state, measured by the simulator's counters:
/// 200 launches spread over two hours of simulated time (so tokens expire and are re-minted).
#[tokio::test]
async fn requests_per_launched_runner_in_steady_state() {
    let mut cfg = sim_config();
    cfg.secondary_writes_per_minute = 10_000;
    let e = env_with(cfg, None).await;
    let launches = 200u64;
    for i in 0..launches {
        e.client.generate_jit_config(&org_req(&format!("i-{i:05}"), None)).await.unwrap();
        e.sim.advance_clock(Duration::from_secs(36));
    }
    let c = e.sim.counters();
    let tokens = c.get("create-installation-token");
    // 7200 s of launches with a token refreshed every 55 minutes.
    assert_eq!(tokens, 3, "{c:?}");
    assert_eq!(c.get("generate-jitconfig"), launches);
    assert_eq!(c.get("list-runner-groups") + c.get("get-org-installation"), 2, "one-time lookups");
    assert_eq!(c.total, launches + tokens + 2, "nothing else: {c:?}");
    let per_runner = c.total as f64 / launches as f64;
    let warm = c.get("generate-jitconfig") as f64 / launches as f64;
    println!(
        "requests per launched runner: {per_runner:.3} overall ({} requests / {launches} launches; \
         {tokens} token mints, 2 one-time lookups); {warm:.3} with warm caches",
        c.total
    );
    assert!(per_runner < 1.05, "{per_runner}");
}
