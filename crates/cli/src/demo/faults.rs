//! The trace's faults, each at its time in the replay: AWS and GitHub faults and rate limits,
//! the scaler's environments killed mid-invocation, duplicate and hostile webhook deliveries.
//! What each did is counted in the report's details (`faults_aws`, `scaler_kills`, ...).

use super::esm::Invoker;
use super::lambdas::Environments;
use hangar_sim::fault_proxy::FaultProxy;
use hangar_sim::github::GithubSim;
use hangar_sim::trace::{FaultAction, Trace};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the faults act on.
pub struct Targets {
    pub sim: Arc<GithubSim>,
    pub proxy: Arc<FaultProxy>,
    pub scalers: Arc<Environments>,
    /// The scaler's: a kill waits for an invocation of it in flight.
    pub invoker: Arc<Invoker>,
    /// The report's details, where the faults count what they did.
    pub extra: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    pub webhook_url: String,
}

/// One task per fault of the trace, each waiting for its time (from `replay_start`).
pub fn spawn(trace: &Trace, replay_start: Instant, t: Targets) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for f in trace.faults.clone() {
        let at = trace.real(f.at);
        let (sim, proxy, scalers, invoker, extra) = (
            Arc::clone(&t.sim),
            Arc::clone(&t.proxy),
            Arc::clone(&t.scalers),
            Arc::clone(&t.invoker),
            Arc::clone(&t.extra),
        );
        let (until, after) = match &f.action {
            FaultAction::DuplicateWebhooks(u) => (Some(trace.real(u.until)), trace.real(u.after)),
            _ => (None, Duration::ZERO),
        };
        let webhook_url = t.webhook_url.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((replay_start + at).into()).await;
            let bump = |k: &str, n: u64| {
                let mut e = extra.lock().unwrap_or_else(|e| e.into_inner());
                let v = e.entry(k.to_owned()).or_insert(serde_json::json!(0));
                *v = serde_json::json!(v.as_u64().unwrap_or(0) + n);
            };
            match f.action {
                FaultAction::Aws(fault) => {
                    proxy.inject(fault);
                    bump("faults_aws", 1);
                }
                FaultAction::Github(g) => {
                    sim.inject_fault(g.to_sim());
                    bump("faults_github", 1);
                }
                FaultAction::GithubRateLimit(r) => {
                    sim.exhaust_rate_limit(None, Duration::from_secs_f64(r.reset_in));
                    bump("faults_github_rate_limit", 1);
                }
                FaultAction::KillScaler(_) => {
                    // Wait for an invocation in flight, so the kill lands mid-batch.
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while invoker.inflight.load(std::sync::atomic::Ordering::SeqCst) == 0
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let inflight = invoker.inflight.load(std::sync::atomic::Ordering::SeqCst);
                    scalers.kill_all_hard().await;
                    bump("scaler_kills", 1);
                    if inflight > 0 {
                        bump("scaler_kills_mid_invocation", 1);
                    }
                    // Every environment dies, so every invocation in flight with it.
                    bump("scaler_invocations_killed", inflight as u64);
                    if let Err(e) = scalers.start().await {
                        eprintln!("hangar demo: restarting the scaler failed: {e:#}");
                    }
                }
                FaultAction::DuplicateWebhooks(_) => {
                    let until = replay_start + until.unwrap_or_default();
                    // Deliveries carry wall-clock times; the cut-off is on the same clock.
                    let until_wall = chrono::Utc::now()
                        + chrono::Duration::from_std(until.saturating_duration_since(Instant::now()))
                            .unwrap_or_default();
                    let delay = chrono::Duration::from_std(after).unwrap_or_default();
                    let mut done: HashSet<u64> = HashSet::new();
                    loop {
                        let now = chrono::Utc::now();
                        let due: Vec<u64> = sim
                            .deliveries()
                            .into_iter()
                            .filter(|d| !d.redelivery && !done.contains(&d.id))
                            .filter(|d| d.delivered_at.is_some_and(|t| t <= until_wall && t + delay <= now))
                            .map(|d| d.id)
                            .collect();
                        for id in due {
                            done.insert(id);
                            if sim.redeliver(id).is_ok() {
                                bump("duplicate_deliveries", 1);
                            }
                        }
                        if now > until_wall + delay {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                FaultAction::HostileWebhooks(h) => {
                    let (sent, rejected, ids) = hostile(&sim, &webhook_url, h.count).await;
                    bump("hostile_sent", sent);
                    bump("hostile_rejected", rejected);
                    extra
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert("hostile_job_ids".into(), serde_json::json!(ids));
                }
            }
        }));
    }
    tasks
}

/// Deliveries an attacker could send: a real `queued` payload for a job that does not exist,
/// unsigned, signed with the wrong secret, or signed over a different body. Returns (sent,
/// answered 401, the job ids used).
async fn hostile(sim: &GithubSim, url: &str, count: u32) -> (u64, u64, Vec<u64>) {
    let mut template = None;
    for _ in 0..100 {
        template =
            sim.deliveries().into_iter().find(|d| d.action == "queued").and_then(|d| sim.delivery_body(d.id));
        if template.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(template) = template.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) else {
        return (0, 0, vec![]);
    };
    let http = reqwest::Client::new();
    let (mut sent, mut rejected, mut ids) = (0, 0, Vec::new());
    for k in 0..count {
        let id = 9_100_000_000u64 + u64::from(k);
        let mut body = template.clone();
        body["workflow_job"]["id"] = serde_json::json!(id);
        let body = body.to_string();
        let mut req = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", uuid::Uuid::new_v4().to_string());
        match k % 3 {
            0 => {}
            1 => {
                req = req.header(
                    "x-hub-signature-256",
                    hangar_sim::github::sign("not-the-secret", body.as_bytes()),
                )
            }
            _ => {
                req = req.header(
                    "x-hub-signature-256",
                    hangar_sim::github::sign("not-the-secret", b"another body"),
                )
            }
        }
        ids.push(id);
        sent += 1;
        if let Ok(r) = req.body(body).send().await {
            if r.status().as_u16() == 401 {
                rejected += 1;
            }
        }
    }
    (sent, rejected, ids)
}
