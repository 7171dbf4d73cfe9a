//! The counting planner against moto and the GitHub simulator: a pool
//! is planned from the job ledger and what EC2 lists. No job is bound to an instance, at the cap
//! jobs wait in the ledger, and every other trigger is a tick in the pool's FIFO group.

use crate::common::*;
use hangar_core::ledger::JobLedger;
use hangar_scaler::Tick;
use hangar_sim::fault_proxy::Fault;

fn counting(max_runners: u32) -> Options {
    Options { max_runners, ..Options::default() }
}

#[tokio::test]
async fn job_j_takes_the_runner_launched_for_k_and_k_starts_on_the_next_with_no_extra_launch() {
    let env = Env::start(counting(10)).await;
    let p = env.pool_name();
    assert!(env.batch(&[("k", scale_up(&p, 1), 1)]).await.is_empty());
    let a = env.live().await[0].id.clone();
    assert!(env.batch(&[("j", scale_up(&p, 2), 1)]).await.is_empty());
    let b = env.live().await.into_iter().map(|i| i.id).find(|id| id != &a).expect("a second instance");
    // J (job 2) takes A, launched while only K (job 1) was queued.
    assert!(env.batch(&[("j-start", started(&p, 2, &runner_name(&p, &a)), 1)]).await.is_empty());
    assert_eq!(queued_jobs(&env).await, vec![1], "K still waits, and B is free for it");
    assert_eq!(env.live().await.len(), 2, "no launch: B covers K");
    assert!(env.batch(&[("k-start", started(&p, 1, &runner_name(&p, &b)), 1)]).await.is_empty());
    assert_eq!(queued_jobs(&env).await, Vec::<u64>::new());
    let batch = [
        ("j-done", completed(&p, 2, &runner_name(&p, &a), "success", 1, REPO), 1),
        ("k-done", completed(&p, 1, &runner_name(&p, &b), "success", 1, REPO), 1),
    ];
    assert!(env.batch(&batch).await.is_empty());
    assert_eq!(env.live().await.len(), 0, "both spent runners terminated");
    assert_eq!(create_fleets(&env), 2, "one launch per job, none extra");
}

#[tokio::test]
async fn at_the_cap_jobs_wait_in_the_ledger_and_one_launches_when_a_job_ends() {
    let env = Env::start(counting(2)).await;
    let p = env.pool_name();
    let batch = [("m1", scale_up(&p, 1), 1), ("m2", scale_up(&p, 2), 1), ("m3", scale_up(&p, 3), 1)];
    assert!(env.batch(&batch).await.is_empty(), "a job the pool has no room for is acknowledged");
    assert_eq!(env.live().await.len(), 2);
    assert!(env.drain_queue().await.is_empty(), "no requeued copy: the job waits in the ledger");
    assert_eq!(queued_jobs(&env).await, vec![1, 2, 3]);
    assert_eq!(env.metrics.last("PoolAtMax", p.as_str()), Some(1.0));

    let a = env.live().await[0].id.clone();
    assert!(env.batch(&[("s1", started(&p, 1, &runner_name(&p, &a)), 1)]).await.is_empty());
    assert_eq!(env.live().await.len(), 2, "still at the cap");
    assert!(env
        .batch(&[("c1", completed(&p, 1, &runner_name(&p, &a), "success", 1, REPO), 1)])
        .await
        .is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 2, "A terminated, one launched in its place");
    assert!(live.iter().all(|i| i.id != a));
    assert_eq!(env.metrics.last("PoolAtMax", p.as_str()), Some(0.0));
    assert_eq!(create_fleets(&env), 2);
}

#[tokio::test]
async fn a_job_cancelled_while_queued_needs_no_runner() {
    let env = Env::start(counting(10)).await;
    let p = env.pool_name();
    let cancel =
        completed(&p, 1, "", "cancelled", 1, REPO).replace("\"runner_name\":\"\"", "\"runner_name\":null");
    assert!(env.batch(&[("q", scale_up(&p, 1), 1), ("c", cancel, 1)]).await.is_empty());
    assert_eq!(env.live().await.len(), 0);
    assert_eq!(create_fleets(&env), 0);
    assert_eq!(queued_jobs(&env).await, Vec::<u64>::new());
}

#[tokio::test]
async fn an_instance_that_dies_before_its_runner_registers_is_replaced_by_its_tick() {
    let env = Env::start(counting(10)).await;
    let p = env.pool_name();
    assert!(env.batch(&[("q", scale_up(&p, 1), 1)]).await.is_empty());
    let a = env.live().await[0].id.clone();
    env.ec2.terminate_instances().instance_ids(&a).send().await.expect("terminate");
    let resp = env.handle(ec2_event("ec2-state-change-terminated.json", &a, Some("terminated"))).await;
    assert_eq!(resp["replacement_requested"], true, "{resp}");
    assert_eq!(run_queue(&env).await, 1, "one tick in the pool's group");
    let live = env.live().await;
    assert_eq!(live.len(), 1, "the job is still queued in the ledger, so the tick launched");
    assert_ne!(live[0].id, a);
    // EventBridge retries the event. SQS drops the copy of the tick within its 5-minute
    // deduplication interval (moto delivers it once the first is deleted); either way the
    // second plan launches nothing.
    env.handle(ec2_event("ec2-state-change-terminated.json", &a, Some("terminated"))).await;
    run_queue(&env).await;
    assert_eq!(env.live().await.len(), 1);
    assert_eq!(queued_jobs(&env).await, vec![1]);
}

#[tokio::test]
async fn reconcile_sends_each_pool_a_tick_and_the_tick_judges_with_githubs_runners() {
    let env = Env::start(Options { warm: 2, ..counting(10) }).await;
    let resp = env.handle(fixture("scheduled-event.json")).await;
    assert_eq!(resp["ticked"], serde_json::json!([env.pool_name().to_string()]), "{resp}");
    assert_eq!(env.live().await.len(), 0, "the schedule itself launches nothing");
    let queued = env.drain_queue().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(Tick::parse(&queued[0].1), Some((env.pool_name(), true)));
    let refs: Vec<(&str, String, u32)> = queued.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
    let lists_before = env.sim.count("list-runners");
    assert!(env.batch(&refs).await.is_empty());
    assert_eq!(env.live().await.len(), 2, "the pool's own batch tops the warm pool up");
    assert_eq!(env.sim.count("list-runners"), lists_before + 1, "a reconcile tick lists GitHub's runners");
}

#[tokio::test]
async fn two_invocations_planning_the_same_shortfall_at_once_launch_it_once() {
    let env = Env::start(counting(10)).await;
    let p = env.pool_name();
    let (other, _) = env.second_scaler().await;
    // Slow launches: both have described the pool before either launch lands.
    env.proxy.inject(Fault::latency("CreateFleet", std::time::Duration::from_millis(400)));
    let batch = sqs_event(&[("m1", scale_up(&p, 1), 1), ("m2", scale_up(&p, 2), 1)]);
    let redelivered = sqs_event(&[("m1", scale_up(&p, 1), 2), ("m2", scale_up(&p, 2), 2)]);
    let (a, b) = tokio::join!(env.scaler.handle(batch), other.handle(redelivered));
    assert!(failures(&a.unwrap()).is_empty());
    assert!(failures(&b.unwrap()).is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 2, "the same state gave the same CreateFleet token: {live:?}");
    for i in &live {
        assert!(env.jit(&i.id).await.is_some(), "{} keeps its JIT config", i.id);
    }
    assert_eq!(queued_jobs(&env).await, vec![1, 2]);
}

#[tokio::test]
async fn a_start_the_webhook_already_recorded_still_makes_its_runner_busy_in_the_plan() {
    let env = Env::start(counting(10)).await;
    let p = env.pool_name();
    assert!(env.batch(&[("q", scale_up(&p, 1), 1)]).await.is_empty());
    let a = env.live().await[0].id.clone();
    // The webhook recorded the start as it arrived, before the scaler reached its message.
    let start = started(&p, 1, &runner_name(&p, &a));
    let event = hangar_core::ledger::JobEvent::from_message(
        &hangar_core::message::QueueMessage::parse(&start).unwrap(),
    );
    env.ledger().await.apply(&event, chrono::Utc::now()).await.unwrap();
    assert!(env.batch(&[("s", start, 1)]).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 1, "no launch: the job runs");
    assert_eq!(live[0].tag("hangar:lifecycle"), Some("busy"), "the plan still saw this batch's start");
}

#[tokio::test]
async fn a_throttled_launch_is_planned_again_at_once_and_a_lasting_one_waits_for_redelivery() {
    let env = Env::start(counting(10)).await;
    let p = env.pool_name();
    // One plan's CreateFleet calls (the SDK tries 3 times) are all throttled.
    env.proxy.inject(Fault::error("CreateFleet", "RequestLimitExceeded", 503, 3));
    assert!(env.batch(&[("q", scale_up(&p, 1), 1)]).await.is_empty(), "acknowledged: a tick retries");
    assert_eq!(env.live().await.len(), 0);
    let queued = env.drain_queue().await;
    assert_eq!(queued.len(), 1, "one retry tick: {queued:?}");
    let refs: Vec<(&str, String, u32)> = queued.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
    assert!(env.batch(&refs).await.is_empty());
    assert_eq!(env.live().await.len(), 1, "the retry launched");

    // Throttled for longer than the quick retries: after them the batch's last message fails,
    // and SQS's visibility timeout paces the next try.
    env.proxy.inject(Fault::error("CreateFleet", "RequestLimitExceeded", 503, 100));
    assert!(env.batch(&[("q2", scale_up(&p, 2), 1)]).await.is_empty());
    for n in 1..=hangar_scaler::counting::QUICK_RETRIES {
        let queued = env.drain_queue().await;
        assert_eq!(queued.len(), 1, "retry {n}");
        let refs: Vec<(&str, String, u32)> =
            queued.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
        let failed = env.batch(&refs).await;
        if n < hangar_scaler::counting::QUICK_RETRIES {
            assert!(failed.is_empty(), "retry {n}: {failed:?}");
        } else {
            assert_eq!(failed, vec![queued[0].0.clone()], "the last quick retry fails its message");
        }
    }
    assert!(env.drain_queue().await.is_empty(), "no fourth tick");
    assert_eq!(env.live().await.len(), 1);
    assert_eq!(queued_jobs(&env).await, vec![1, 2], "job 2 still waits in the ledger");
}

#[tokio::test]
async fn a_launch_describe_does_not_list_yet_covers_its_job_and_counts_no_longer_once_stale() {
    use hangar_core::plan::{RecordedLaunch, RECORDED_LAUNCH_TTL_SECS};
    use hangar_core::ports::LaunchLog;
    let env = Env::start(counting(10)).await;
    let p = env.pool_name();
    let table = env.ledger().await.table().to_owned();
    let log = hangar_aws::launch_log::DynamoLaunchLog::new(
        hangar_aws::reexports::dynamodb::Client::new(
            &hangar_testsupport::aws_config_for(&hangar_testsupport::moto().endpoint()).await,
        ),
        table,
    );
    // A launch this pool's last plan made, which EC2's eventually consistent describe does not
    // list yet (an id moto never issued stands for it).
    let now = env.sim.now();
    log.record(&p, &[RecordedLaunch { id: "i-0000000000000abcd".into(), launched_at: now }], &[])
        .await
        .unwrap();
    assert!(env.batch(&[("q", scale_up(&p, 1), 1)]).await.is_empty());
    assert_eq!(env.live().await.len(), 0, "the recorded launch covers the job: no second launch");

    // Once past its time it no longer counts (DescribeInstances would list it by then), and the
    // next launch drops it from the log.
    env.sim.advance_clock(std::time::Duration::from_secs(RECORDED_LAUNCH_TTL_SECS as u64 + 1));
    assert!(env.batch(&[("q", scale_up(&p, 1), 2)]).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 1);
    let ids: Vec<String> = log.recent(&p).await.unwrap().into_iter().map(|l| l.id.to_string()).collect();
    assert_eq!(ids, vec![live[0].id.clone()], "the new launch recorded, the stale one dropped");
}
