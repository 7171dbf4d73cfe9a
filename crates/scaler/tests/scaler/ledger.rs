//! The job ledger's part of the scaler: batches record their job events in queue order before
//! they plan, a ledger outage fails the message and every one after it in the pool's group, and
//! reconcile publishes the demand gauges from the ledger and asks GitHub about old queued jobs.

use crate::common::*;
use chrono::Duration;
use hangar_core::ids::{JobId, RunId};
use hangar_core::ledger::{JobChange, JobEvent, JobKey, JobLedger, JobStatus};
use hangar_sim::fault_proxy::Fault;
use hangar_sim::github::JobSpec;

fn key(job: u64) -> JobKey {
    JobKey::new(JobId(job), 1)
}

#[tokio::test]
async fn a_batch_records_every_job_event_and_publishes_the_pools_demand() {
    let env = Env::start(Options::default()).await;
    let pool = env.pool_name();
    let resp = env
        .handle(sqs_event(&[
            ("m1", scale_up(&pool, 1), 1),
            ("m2", scale_up(&pool, 2), 1),
            ("m3", scale_up(&pool, 3), 1),
        ]))
        .await;
    assert!(failures(&resp).is_empty(), "{resp}");
    let ledger = env.ledger().await;
    let queued: Vec<_> = ledger.queued(&pool).await.unwrap().into_iter().map(|j| j.key).collect();
    assert_eq!(queued, vec![key(1), key(2), key(3)]);
    // Every plan publishes the pool's demand (from the ledger it planned with).
    assert_eq!(env.metrics.last("QueuedJobs", pool.as_str()), Some(3.0));
    env.metrics.clear();
    env.handle(fixture("scheduled-event.json")).await;
    assert_eq!(env.metrics.last("QueuedJobs", pool.as_str()), Some(3.0), "and so does reconcile");

    // Job 1 starts, job 2 is cancelled while queued, job 3's `queued` is redelivered.
    let cancel =
        completed(&pool, 2, "", "cancelled", 1, REPO).replace("\"runner_name\":\"\"", "\"runner_name\":null");
    let resp = env
        .handle(sqs_event(&[
            ("m4", started(&pool, 1, &runner_name(&pool, "i-0123456789abcdef0")), 1),
            ("m5", cancel, 1),
            ("m6", scale_up(&pool, 3), 2),
        ]))
        .await;
    assert!(failures(&resp).is_empty(), "{resp}");
    assert_eq!(ledger.get(key(1)).await.unwrap().unwrap().status, JobStatus::Started);
    let two = ledger.get(key(2)).await.unwrap().unwrap();
    assert!(two.cancelled_while_queued(), "{two:?}");
    let queued: Vec<_> = ledger.queued(&pool).await.unwrap().into_iter().map(|j| j.key).collect();
    assert_eq!(queued, vec![key(3)]);
    env.handle(fixture("scheduled-event.json")).await;
    assert_eq!(env.metrics.last("QueuedJobs", pool.as_str()), Some(1.0));
    assert!(env.metrics.last("OldestQueuedAgeSeconds", pool.as_str()).is_some());
}

#[tokio::test]
async fn a_ledger_outage_fails_the_message_and_every_one_after_it_in_the_group() {
    let env = Env::start(Options::default()).await;
    let pool = env.pool_name();
    // The second write is refused as DynamoDB refuses under load (retried by the SDK: 3
    // attempts, so three injected errors exhaust them).
    let resp = env.handle(sqs_event(&[("m1", scale_up(&pool, 1), 1)])).await;
    assert!(failures(&resp).is_empty());
    env.proxy.inject(Fault::error("UpdateItem", "ProvisionedThroughputExceededException", 400, 3));
    let resp = env
        .handle(sqs_event(&[
            ("m2", scale_up(&pool, 2), 1),
            ("m3", started(&pool, 1, &runner_name(&pool, "i-0123456789abcdef0")), 1),
            ("m4", scale_up(&pool, 4), 1),
        ]))
        .await;
    assert_eq!(failures(&resp), vec!["m3".to_string(), "m4".to_string()], "{resp}");
    let ledger = env.ledger().await;
    assert_eq!(
        ledger.get(key(2)).await.unwrap().map(|j| j.status),
        Some(JobStatus::Queued),
        "recorded before the outage"
    );
    // Job 4's event may be written already (different jobs are written at once); its message
    // fails all the same, as Lambda's FIFO rule asks, and its redelivery changes nothing.
    // Redelivered in order, they are recorded.
    let resp = env
        .handle(sqs_event(&[
            ("m3", started(&pool, 1, &runner_name(&pool, "i-0123456789abcdef0")), 2),
            ("m4", scale_up(&pool, 4), 2),
        ]))
        .await;
    assert!(failures(&resp).is_empty(), "{resp}");
    assert_eq!(ledger.get(key(1)).await.unwrap().unwrap().status, JobStatus::Started);
    assert_eq!(ledger.get(key(4)).await.unwrap().unwrap().status, JobStatus::Queued);
}

#[tokio::test]
async fn reconcile_asks_github_about_old_queued_jobs_and_records_what_happened() {
    let env = Env::start(Options::default()).await;
    let pool = env.pool_name();
    let ledger = env.ledger().await;
    // Three jobs GitHub knows, queued in the ledger ten minutes ago; their later webhooks were lost.
    let labels = ["self-hosted", "linux", "x64"];
    let running = env.sim.enqueue_job(JobSpec::new(REPO, &labels).duration_ms(3_600_000)).unwrap();
    let ended = env.sim.enqueue_job(JobSpec::new(REPO, &labels).duration_ms(3_600_000)).unwrap();
    let waiting = env.sim.enqueue_job(JobSpec::new(REPO, &labels)).unwrap();
    let young = env.sim.enqueue_job(JobSpec::new(REPO, &labels)).unwrap();
    let now = env.sim.now();
    for (job, age) in [(running.id, 600), (ended.id, 600), (waiting.id, 600), (young.id, 10)] {
        let e = JobEvent {
            key: key(job),
            pool: pool.clone(),
            run_id: RunId(job),
            repository: REPO.into(),
            installation_id: None,
            change: JobChange::Queued { created_at: now - Duration::seconds(age), labels: vec![] },
        };
        ledger.apply(&e, now).await.unwrap();
    }
    // Two runners take two of the jobs; one of them dies under its job, which ends it.
    let gh = env.github_client();
    for n in 0..2 {
        let jit = hangar_core::ports::RunnerRegistry::generate_jit_config(
            &gh,
            &hangar_core::ports::JitRequest {
                name: format!("hangar-{pool}-i-0000000{n}").into(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                runner_group: "hangar".into(),
                scope: hangar_core::ports::RunnerScopeTarget::Org(ORG.into()),
                installation: None,
            },
        )
        .await
        .unwrap();
        env.sim.register_runner(jit.encoded.expose()).unwrap();
    }
    // The two runners take the two oldest queued jobs, as GitHub would; kill `ended`'s.
    let on = |id: u64| env.sim.runners().into_iter().find(|r| r.job_id == Some(id)).map(|r| r.id);
    let (Some(_), Some(ended_runner)) = (on(running.id), on(ended.id)) else {
        panic!("the runners did not take the two oldest jobs: {:?}", env.sim.runners());
    };
    let (running_id, ended_id) = (running.id, ended.id);
    env.sim.kill_runner(ended_runner).unwrap();
    let gets = env.sim.count("get-job");

    let resp = env.handle(fixture("scheduled-event.json")).await;
    assert_eq!(resp["ticked"], serde_json::json!([pool.to_string()]), "reconcile succeeded: {resp}");
    assert_eq!(ledger.get(key(running_id)).await.unwrap().unwrap().status, JobStatus::Started);
    assert_eq!(ledger.get(key(ended_id)).await.unwrap().unwrap().status, JobStatus::Done);
    assert_eq!(ledger.get(key(waiting.id)).await.unwrap().unwrap().status, JobStatus::Queued);
    assert_eq!(ledger.get(key(young.id)).await.unwrap().unwrap().status, JobStatus::Queued);
    assert_eq!(env.sim.count("get-job") - gets, 3, "one GET per old queued job, none for the young one");
    assert_eq!(env.metrics.last("QueuedJobs", pool.as_str()), Some(2.0));
}

#[tokio::test]
async fn a_queued_message_of_a_job_that_already_started_launches_nothing_and_is_acknowledged() {
    let env = Env::start(Options::default()).await;
    let pool = env.pool_name();
    // Job 5 started on a runner that is gone now (its `in_progress` was handled); then a copy of
    // its `queued` arrives, as a requeued copy or a late redelivery would.
    let runner = runner_name(&pool, "i-0123456789abcdef0");
    let resp = env.handle(sqs_event(&[("s5", started(&pool, 5, &runner), 1)])).await;
    assert!(failures(&resp).is_empty(), "{resp}");
    let before = env.proxy.count("CreateFleet");
    let resp = env.handle(sqs_event(&[("q5", scale_up(&pool, 5), 1), ("q6", scale_up(&pool, 6), 1)])).await;
    assert!(failures(&resp).is_empty(), "both acknowledged: {resp}");
    // One launch, for job 6 only.
    assert_eq!(env.proxy.count("CreateFleet"), before + 1);
    assert_eq!(env.live().await.len(), 1);
    let ledger = env.ledger().await;
    assert_eq!(ledger.get(key(5)).await.unwrap().unwrap().status, JobStatus::Started);
}
