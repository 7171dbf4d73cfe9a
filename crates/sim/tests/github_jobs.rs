//! The simulator's job model: label matching, one job per runner, signed `workflow_job`
//! webhooks for every transition, redelivery, lost runners and re-runs.

mod github_support;

use github_support::*;
use hangar_sim::github::{GithubSim, JobSpec, JobStatus};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

async fn sim_with_receiver() -> (GithubSim, Receiver) {
    let rx = Receiver::start().await;
    let mut cfg = config();
    cfg.webhook_url = Some(rx.url.clone());
    cfg.webhook_secret = "It's a Secret to Everybody".into();
    (GithubSim::start(cfg).await.expect("sim"), rx)
}

/// Verified independently of the simulator's own signing code.
fn signature_ok(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hexsig) = header.strip_prefix("sha256=") else { return false };
    let Ok(sig) = hex::decode(hexsig) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn status(sim: &GithubSim, id: u64) -> JobStatus {
    sim.job(id).unwrap().status
}

#[tokio::test]
async fn job_goes_to_a_runner_whose_labels_cover_it() {
    let (s, _rx) = sim_with_receiver().await;
    let t = token(&s).await;
    let job = s
        .enqueue_job(JobSpec::new("octo-org/app", &["self-hosted", "linux", "GPU"]).duration_ms(60_000))
        .unwrap();
    let cpu = runner(&s, &t, "cpu-1", &["cpu"]).await;
    assert_eq!(status(&s, job.id), JobStatus::Queued, "`cpu` runner lacks the gpu label");
    let other_repo_runner = {
        let url = format!("{}/repos/octo-org/other/actions/runners/generate-jitconfig", s.base_url());
        let body = serde_json::json!({ "name": "repo-gpu", "runner_group_id": 1, "labels": ["gpu"] });
        let r = call(reqwest::Method::POST, &url, Some(&t), Some(body)).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        s.register_runner(r.body["encoded_jit_config"].as_str().unwrap()).unwrap().id
    };
    assert_eq!(status(&s, job.id), JobStatus::Queued, "a runner of another repository does not take it");
    let gpu = runner(&s, &t, "gpu-1", &["gpu"]).await;
    let j = s.job(job.id).unwrap();
    assert_eq!(j.status, JobStatus::InProgress, "labels match case-insensitively");
    assert_eq!(j.runner_id, Some(gpu));
    assert_eq!(j.runner_name.as_deref(), Some("gpu-1"));
    let runners = s.runners();
    let phase = |id: u64| runners.iter().find(|r| r.id == id).unwrap().phase.clone();
    assert_eq!(
        (phase(cpu), phase(other_repo_runner), phase(gpu)),
        ("idle".into(), "idle".into(), "busy".into())
    );
}

#[tokio::test]
async fn each_runner_takes_one_job_then_is_removed() {
    let (s, _rx) = sim_with_receiver().await;
    let t = token(&s).await;
    let a = s.enqueue_job(JobSpec::new("octo-org/app", &["x"]).duration_ms(50)).unwrap();
    let b = s.enqueue_job(JobSpec::new("octo-org/app", &["x"]).duration_ms(50)).unwrap();
    let r1 = runner(&s, &t, "r1", &["x"]).await;
    assert_eq!(
        (status(&s, a.id), status(&s, b.id)),
        (JobStatus::InProgress, JobStatus::Queued),
        "oldest job first"
    );
    eventually("job a completes", || status(&s, a.id) == JobStatus::Completed).await;
    assert_eq!(status(&s, b.id), JobStatus::Queued, "an ephemeral runner does not take a second job");
    let gone = s.runners().into_iter().find(|r| r.id == r1).unwrap();
    assert!(gone.removed && gone.phase == "done", "{gone:?}");
    let list = call(
        reqwest::Method::GET,
        &format!("{}/orgs/octo-org/actions/runners", s.base_url()),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(list.body["total_count"], 0, "GitHub removes the ephemeral runner after its job");
    let r2 = runner(&s, &t, "r2", &["x"]).await;
    assert_eq!(s.job(b.id).unwrap().runner_id, Some(r2));
    eventually("job b completes", || status(&s, b.id) == JobStatus::Completed).await;
    let done = s.job(a.id).unwrap();
    assert_eq!(done.conclusion.as_deref(), Some("success"));
    assert!(done.started_at.unwrap() <= done.completed_at.unwrap());
}

#[tokio::test]
async fn every_transition_is_a_signed_workflow_job_webhook() {
    let (s, rx) = sim_with_receiver().await;
    let t = token(&s).await;
    let job = s.enqueue_job(JobSpec::new("octo-org/app", &["self-hosted", "x"]).duration_ms(20)).unwrap();
    runner(&s, &t, "r1", &["x"]).await;
    let got = rx.wait_for(3).await;
    let mut actions = Vec::new();
    for d in &got {
        let h = |n: &str| d.headers.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("x-github-event"), "workflow_job");
        assert_eq!(h("content-type"), "application/json");
        assert!(uuid::Uuid::parse_str(&h("x-github-delivery")).is_ok());
        assert!(signature_ok("It's a Secret to Everybody", &d.body, &h("x-hub-signature-256")));
        assert!(!signature_ok("another secret", &d.body, &h("x-hub-signature-256")), "the check can fail");
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["workflow_job"]["id"], job.id);
        assert_eq!(v["installation"]["id"], 1);
        assert_eq!(v["repository"]["full_name"], "octo-org/app");
        actions.push((v["action"].as_str().unwrap().to_owned(), v["workflow_job"]["runner_name"].clone()));
    }
    assert_eq!(
        actions,
        vec![
            ("queued".into(), Value::Null),
            ("in_progress".into(), Value::from("r1")),
            ("completed".into(), Value::from("r1")),
        ]
    );
    let deliveries = s.deliveries();
    assert!(deliveries.iter().all(|d| d.status_code == Some(200)), "{deliveries:?}");

    // Redelivery: same GUID and byte-identical body, marked as a redelivery.
    let first = &deliveries[0];
    let again = s.redeliver(first.id).unwrap();
    assert!(again.redelivery);
    let got = rx.wait_for(4).await;
    let last = &got[3];
    assert_eq!(last.headers["x-github-delivery"].to_str().unwrap(), first.guid);
    assert_eq!(last.body, got[0].body);
}

#[tokio::test]
async fn a_lost_runner_fails_its_job_and_a_rerun_queues_a_new_attempt() {
    let (s, rx) = sim_with_receiver().await;
    let t = token(&s).await;
    let job = s.enqueue_job(JobSpec::new("octo-org/app", &["x"]).duration_ms(60_000)).unwrap();
    let r = runner(&s, &t, "spot-1", &["x"]).await;
    assert!(s.rerun_job(job.id).is_err(), "an in-progress job cannot be re-run");
    s.kill_runner(r).unwrap();
    let j = s.job(job.id).unwrap();
    assert_eq!((j.status, j.conclusion.as_deref()), (JobStatus::Completed, Some("failure")));
    let ghost = s.runners().into_iter().find(|x| x.id == r).unwrap();
    assert!(!ghost.removed && ghost.phase == "lost", "the runner stays registered, offline: {ghost:?}");

    let url = format!("{}/repos/octo-org/app/actions/jobs/{}/rerun", s.base_url(), job.id);
    let resp = call(reqwest::Method::POST, &url, Some(&t), None).await;
    assert_eq!(resp.status, 201);
    let again = s.jobs().into_iter().find(|x| x.rerun_of == Some(job.id)).expect("re-run job");
    assert_eq!((again.run_attempt, again.run_id, again.status), (2, job.run_id, JobStatus::Queued));
    assert_ne!(again.id, job.id);
    let second = call(reqwest::Method::POST, &url, Some(&t), None).await;
    assert_eq!(second.status, 403, "already being re-run");
    let got = rx.wait_for(4).await;
    let last: Value = serde_json::from_slice(&got[3].body).unwrap();
    assert_eq!(
        (last["action"].as_str(), last["workflow_job"]["run_attempt"].as_u64()),
        (Some("queued"), Some(2))
    );
}

/// With `webhook_concurrency`, deliveries of different jobs overlap (a slow receiver sees
/// several at once, never more than the setting), and each job's still arrive in order.
#[tokio::test]
async fn deliveries_overlap_across_jobs_and_stay_in_order_per_job() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let app = {
        let (in_flight, peak, seen) = (Arc::clone(&in_flight), Arc::clone(&peak), Arc::clone(&seen));
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (in_flight, peak, seen) = (Arc::clone(&in_flight), Arc::clone(&peak), Arc::clone(&seen));
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Slow enough that a serial sender could never have two open at once.
                    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    let job = v["workflow_job"]["id"].as_u64().unwrap();
                    seen.lock().unwrap().push((job, v["action"].as_str().unwrap().to_owned()));
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut cfg = config();
    cfg.webhook_url = Some(url);
    cfg.webhook_concurrency = 3;
    let s = GithubSim::start(cfg).await.expect("sim");
    let t = token(&s).await;
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(
            s.enqueue_job(JobSpec::new("octo-org/app", &["self-hosted", "x"]).duration_ms(10)).unwrap().id,
        );
    }
    for i in 0..6 {
        runner(&s, &t, &format!("r{i}"), &["x"]).await;
    }
    eventually("18 deliveries", || seen.lock().unwrap().len() == 18).await;
    let p = peak.load(Ordering::SeqCst);
    assert!((2..=3).contains(&p), "peak in flight {p}: overlapping, within the setting");
    let seen = seen.lock().unwrap().clone();
    for j in jobs {
        let order: Vec<&str> = seen.iter().filter(|(id, _)| *id == j).map(|(_, a)| a.as_str()).collect();
        assert_eq!(order, ["queued", "in_progress", "completed"], "job {j}: {seen:?}");
    }
    server.abort();
}
