//! EC2 events: spot interruption warnings (and the re-run that follows a failed job), and
//! instances going away.

use crate::common::{
    completed, ec2_event, fixture, queued_jobs, run_queue, runner_name, scale_up, started, Env, Options, REPO,
};
use hangar_sim::github::JobSpec;
use serde_json::json;

#[tokio::test]
async fn a_spot_interruption_then_a_failed_completion_reruns_the_job_once() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    let job =
        env.sim.enqueue_job(JobSpec::new(REPO, &["self-hosted", "linux"]).duration_ms(3_600_000)).unwrap();
    assert!(env.batch(&[("up", scale_up(&p, job.id), 1)]).await.is_empty());
    let id = env.live().await[0].id.clone();
    let runner = env.boot(&id).await;
    let running = env.sim.job(job.id).unwrap();
    assert_eq!(
        running.runner_name.as_deref(),
        Some(runner_name(&p, &id).as_str()),
        "the sim gave it the job"
    );
    assert!(env.batch(&[("start", started(&p, job.id, &runner_name(&p, &id)), 1)]).await.is_empty());

    let resp = env.handle(ec2_event("ec2-spot-interruption-warning.json", &id, None)).await;
    assert_eq!(resp["managed"], true);
    assert_eq!(resp["busy"], true);
    assert_eq!(env.live().await[0].tag("hangar:interrupted"), Some("true"));
    assert_eq!(env.metrics.total("SpotInterruptions", Some(("Pool", p.as_str()))), 1.0);

    // EC2 takes the instance; the job fails with it.
    env.sim.kill_runner(runner).unwrap();
    let done = completed(&p, job.id, &runner_name(&p, &id), "failure", 1, REPO);
    assert!(env.batch(&[("done", done.clone(), 1)]).await.is_empty());
    let reruns: Vec<_> = env.sim.jobs().into_iter().filter(|j| j.rerun_of == Some(job.id)).collect();
    assert_eq!(reruns.len(), 1);
    assert_eq!(reruns[0].run_attempt, 2);
    assert!(env.live().await.is_empty(), "the finished instance is terminated");

    // A redelivery of the completion does not start a second re-run.
    assert!(env.batch(&[("done", done, 2)]).await.is_empty());
    assert_eq!(env.sim.jobs().into_iter().filter(|j| j.rerun_of == Some(job.id)).count(), 1);
    // Nor does a second failure of the re-run on an interrupted runner: one re-run is the bound.
    let again = completed(&p, job.id, &runner_name(&p, &id), "failure", 2, REPO);
    let before = env.sim.count("rerun-job");
    assert!(env.batch(&[("done-2", again, 1)]).await.is_empty());
    assert_eq!(env.sim.count("rerun-job"), before);
    assert_eq!(env.metrics.total("SpotReruns", None), 2.0, "planned for attempt 1 (twice), never for 2");
}

#[tokio::test]
async fn a_success_on_an_interrupted_runner_is_not_rerun() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    assert!(env.batch(&[("up", scale_up(&p, 77), 1)]).await.is_empty());
    let id = env.live().await[0].id.clone();
    env.handle(ec2_event("ec2-spot-interruption-warning.json", &id, None)).await;
    let ok = completed(&p, 77, &runner_name(&p, &id), "success", 1, REPO);
    assert!(env.batch(&[("done", ok, 1)]).await.is_empty());
    assert_eq!(env.sim.count("rerun-job"), 0);
}

#[tokio::test]
async fn a_terminated_instance_loses_its_parameter_and_its_unused_runner_and_its_job_gets_another() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    assert!(env.batch(&[("up", scale_up(&p, 5), 1)]).await.is_empty());
    let id = env.live().await[0].id.clone();
    assert!(env.jit(&id).await.is_some());
    env.ec2.terminate_instances().instance_ids(&id).send().await.unwrap();

    let resp = env.handle(ec2_event("ec2-state-change-terminated.json", &id, Some("shutting-down"))).await;
    assert_eq!(resp["deregistered"], true, "{resp}");
    assert!(env.jit(&id).await.is_none());
    assert!(env.sim.runners().iter().all(|r| r.removed));
    // Its capacity is free: the pool is ticked, to be planned again in its group.
    assert_eq!(resp["replacement_requested"], true, "{resp}");
    // The second notification (`terminated`) finds nothing left to clean up; its tick has the
    // first one's deduplication id.
    let (aws, gh) = (env.aws_writes(), env.github_writes());
    let resp = env.handle(ec2_event("ec2-state-change-terminated.json", &id, Some("terminated"))).await;
    assert_eq!(resp["deregistered"].as_bool(), Some(false), "{resp}");
    assert_eq!(env.github_writes(), gh);
    // The tick (SendMessage) and DeleteParameter of a missing parameter: writes by name only.
    assert_eq!(env.aws_writes(), aws + 2, "{:?}", env.proxy.counts());

    // The tick's batch launches one instance: job 5 is still queued in the ledger.
    assert_eq!(run_queue(&env).await, 1, "one tick: SQS deduplicated the second");
    let live = env.live().await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(env.jit(&live[0].id).await.is_some(), "the new instance got its JIT config");
    assert_eq!(queued_jobs(&env).await, vec![5]);
    // Reconcile's tick launches nothing more.
    env.handle(fixture("scheduled-event.json")).await;
    assert_eq!(run_queue(&env).await, 1);
    assert_eq!(env.live().await.len(), 1);
}

#[tokio::test]
async fn an_instance_that_ran_another_job_before_dying_is_not_replaced() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    assert!(env.batch(&[("a", scale_up(&p, 1), 1), ("b", scale_up(&p, 2), 1)]).await.is_empty());
    let live = env.live().await;
    let (gone, other) = (live[0].id.clone(), live[1].id.clone());
    // GitHub gave job 2 to one runner, which finished it and went away before either webhook
    // was handled.
    env.ec2.terminate_instances().instance_ids(&gone).send().await.unwrap();
    let resp = env.handle(ec2_event("ec2-state-change-terminated.json", &gone, Some("shutting-down"))).await;
    assert_eq!(resp["replacement_requested"], true, "the pool is ticked: {resp}");
    let tick = env.drain_queue().await.remove(0).1;
    // FIFO order: the runner's webhooks were queued before the state change.
    let start = started(&p, 2, &runner_name(&p, &gone));
    let done = completed(&p, 2, &runner_name(&p, &gone), "success", 1, REPO);
    assert!(env.batch(&[("s", start, 1), ("c", done, 1), ("t", tick, 1)]).await.is_empty());
    // One job queued, one free runner: nothing is launched.
    let live = env.live().await;
    assert_eq!(live.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![other], "{live:?}");
    assert_eq!(queued_jobs(&env).await, vec![1]);
    assert_eq!(env.proxy.count("CreateFleet"), 1);
}

/// An instance of a pool taken out of the configuration: its events clean up after it but tick
/// no pool (a tick for it would fail into the dead-letter queue); reconcile judges it.
#[tokio::test]
async fn events_for_a_pool_no_longer_configured_send_no_tick() {
    let env = Env::start(Options::default()).await;
    let tag = |k: &str, v: &str| hangar_aws::reexports::ec2::types::Tag::builder().key(k).value(v).build();
    let retired = env
        .ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            hangar_aws::reexports::ec2::types::TagSpecification::builder()
                .resource_type(hangar_aws::reexports::ec2::types::ResourceType::Instance)
                .tags(tag("hangar:pool", "retired"))
                .tags(tag("hangar:managed-by", "hangar"))
                .tags(tag("hangar:lifecycle", "idle"))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    let spot = env.handle(ec2_event("ec2-spot-interruption-warning.json", &retired, None)).await;
    assert_eq!((spot["managed"].as_bool(), spot["pool"].as_str()), (Some(true), Some("retired")), "{spot}");
    let gone = env.handle(ec2_event("ec2-state-change-terminated.json", &retired, Some("terminated"))).await;
    assert_eq!(gone["replacement_requested"], false, "{gone}");
    assert_eq!(env.proxy.count("SendMessage"), 0);
    assert!(env.drain_queue().await.is_empty());
}

#[tokio::test]
async fn events_for_instances_hangar_does_not_manage_change_nothing() {
    let env = Env::start(Options::default()).await;
    let stranger = env
        .ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    for ev in [
        ec2_event("ec2-spot-interruption-warning.json", &stranger, None),
        ec2_event("ec2-state-change-terminated.json", &stranger, Some("terminated")),
        ec2_event("ec2-spot-interruption-warning.json", "i-0123456789abcdef0", None),
    ] {
        assert_eq!(env.handle(ev).await["managed"], false);
    }
    assert_eq!(env.proxy.counts().keys().collect::<Vec<_>>(), ["DescribeInstances"]);
    assert_eq!(env.sim.counters().total, 0);

    let running = env.handle(ec2_event("ec2-state-change-terminated.json", &stranger, Some("running"))).await;
    assert_eq!(running, json!({ "instance": stranger, "ignored": "running" }));
    assert_eq!(env.proxy.count("DescribeInstances"), 3, "a state Hangar ignores costs no call");
}
