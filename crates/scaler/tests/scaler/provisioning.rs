//! The provisioning queue (`HANGAR_PROVISION_QUEUE_URL`): a pool's batch
//! launches and hands each new instance to the provisioner, which makes its JIT config from
//! the standard queue. The pool's batch never calls GitHub.

use crate::common::*;
use hangar_core::ledger::JobLedger;
use hangar_scaler::provisioner::MAX_PROVISION_RECEIVES;
use hangar_sim::github::Fault as GhFault;

fn provisioning(max_runners: u32) -> Options {
    Options { provisioning: true, max_runners, ..Options::default() }
}

fn jit_fault(status: u16, count: u32) -> GhFault {
    GhFault {
        endpoint: "generate-jitconfig".into(),
        status,
        count,
        retry_after: None,
        message: None,
        after_processing: false,
    }
}

async fn queued_jobs(env: &Env) -> Vec<u64> {
    env.ledger().await.queued(&env.pool_name()).await.unwrap().into_iter().map(|j| j.key.job_id.0).collect()
}

#[tokio::test]
async fn the_pools_batch_launches_and_hands_each_instance_to_the_provisioner_without_calling_github() {
    let env = Env::start(provisioning(10)).await;
    let p = env.pool_name();
    let batch = [("m1", scale_up(&p, 1), 1), ("m2", scale_up(&p, 2), 1), ("m3", scale_up(&p, 3), 1)];
    assert!(env.batch(&batch).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 3, "one CreateFleet for the shortfall");
    assert_eq!(env.sim.count("generate-jitconfig"), 0, "the pool's batch never waits on GitHub");
    for i in &live {
        assert!(env.jit(&i.id).await.is_none(), "{} has no config yet", i.id);
    }

    let (handled, failed) = env.provisioner().await;
    assert_eq!((handled, failed.len()), (3, 0), "one message per instance, all provisioned");
    assert_eq!(env.sim.count("generate-jitconfig"), 3);
    for i in &live {
        assert!(env.jit(&i.id).await.is_some(), "{} has its JIT config", i.id);
    }
    assert_eq!(env.metrics.lines().iter().filter(|l| l.contains("ProvisionDelayMs")).count(), 3);
    assert_eq!(env.provisioner().await.0, 0, "every message deleted");
    assert!(env.drain_queue().await.is_empty(), "nothing goes round the scale queue");
    assert_eq!(env.live().await.len(), 3, "and nothing launched twice");
}

#[tokio::test]
async fn a_config_github_keeps_failing_is_retried_then_its_instance_goes_and_the_job_still_counts() {
    let env = Env::start(provisioning(10)).await;
    let p = env.pool_name();
    assert!(env.batch(&[("q", scale_up(&p, 1), 1)]).await.is_empty());
    let a = env.live().await[0].id.clone();
    env.sim.inject_fault(jit_fault(502, 1000));
    for receive in 1..MAX_PROVISION_RECEIVES {
        let (handled, failed) = env.provisioner().await;
        assert_eq!((handled, failed.len()), (1, 1), "receive {receive}: a 5xx is worth another try");
        assert_eq!(env.live().await.len(), 1, "receive {receive}: the instance waits for its config");
    }
    let (handled, failed) = env.provisioner().await;
    assert_eq!((handled, failed.len()), (1, 0), "the last receive gives up on the instance");
    assert!(env.live().await.is_empty(), "{a} terminated at once, not left to the boot timeout");
    assert!(env.jit(&a).await.is_none());
    assert_eq!(env.metrics.total("ProvisionFailures", Some(("Pool", p.as_str()))), 1.0);
    assert_eq!(queued_jobs(&env).await, vec![1], "the ledger still counts the job");

    // Its state change ticks the pool, whose plan launches again; GitHub is back.
    env.sim.clear_faults();
    let resp = env.handle(ec2_event("ec2-state-change-terminated.json", &a, Some("terminated"))).await;
    assert_eq!(resp["replacement_requested"], true, "{resp}");
    let ticks = env.drain_queue().await;
    let refs: Vec<(&str, String, u32)> = ticks.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
    assert!(env.batch(&refs).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 1, "one launch for the job");
    assert_eq!(env.provisioner().await, (1, vec![]));
    assert!(env.jit(&live[0].id).await.is_some());
}

#[tokio::test]
async fn a_refusal_no_retry_mends_terminates_the_instance_on_the_first_receive() {
    let env = Env::start(provisioning(10)).await;
    let p = env.pool_name();
    assert!(env.batch(&[("q", scale_up(&p, 1), 1)]).await.is_empty());
    // 422: GitHub refuses the request itself (a label or group it will not take).
    env.sim.inject_fault(jit_fault(422, 1));
    assert_eq!(env.provisioner().await, (1, vec![]), "acknowledged: another try cannot help");
    assert!(env.live().await.is_empty());
    assert_eq!(env.metrics.total("ProvisionFailures", Some(("Pool", p.as_str()))), 1.0);
    assert_eq!(queued_jobs(&env).await, vec![1]);
}

#[tokio::test]
async fn a_message_with_no_time_left_goes_back_to_the_queue_untouched() {
    let env = Env::start(provisioning(10)).await;
    let p = env.pool_name();
    assert!(env.batch(&[("q", scale_up(&p, 1), 1)]).await.is_empty());
    let a = env.live().await[0].id.clone();
    // The invocation's deadline has come: nothing is started, the message is handed back (not
    // a timed-out invocation), and the instance is not given up on.
    let (handled, failed) = env.provisioner_until(Some(tokio::time::Instant::now())).await;
    assert_eq!((handled, failed.len()), (1, 1));
    assert_eq!(env.sim.count("generate-jitconfig"), 0);
    assert_eq!(env.live().await.len(), 1);
    // The next invocation, with time, provisions it.
    let later = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    assert_eq!(env.provisioner_until(Some(later)).await, (1, vec![]));
    assert!(env.jit(&a).await.is_some());
}

#[tokio::test]
async fn a_provisioning_message_delivered_twice_registers_one_runner() {
    let env = Env::start(provisioning(10)).await;
    let p = env.pool_name();
    assert!(env.batch(&[("q", scale_up(&p, 1), 1)]).await.is_empty());
    let a = env.live().await[0].id.clone();
    // A standard queue delivers at least once: the same message twice, in one batch.
    let url = env.provision_queue_url().expect("provisioning queue");
    let got = env.sqs.receive_message().queue_url(url).send().await.expect("receive");
    let body = got.messages()[0].body().unwrap().to_owned();
    let twice = [("p1", body.clone(), 1), ("p1-copy", body, 1)];
    assert!(env.batch(&twice).await.is_empty(), "the copy's 409 is no failure");
    assert_eq!(env.sim.count("generate-jitconfig"), 2);
    assert!(env.jit(&a).await.is_some());
    assert_eq!(env.live().await.len(), 1, "the copy terminated nothing");
    assert_eq!(env.metrics.total("ProvisionFailures", None), 0.0);
}

#[tokio::test]
async fn a_provisioning_queue_that_refuses_the_message_terminates_the_instance_and_the_plan_retries() {
    let env = Env::start(provisioning(10)).await;
    let p = env.pool_name();
    env.proxy.inject(hangar_sim::fault_proxy::Fault::error("SendMessageBatch", "InternalError", 500, 10));
    assert!(env.batch(&[("q", scale_up(&p, 1), 1)]).await.is_empty(), "the retry tick carries the plan");
    assert!(env.live().await.is_empty(), "an instance nobody will provision is terminated at once");
    assert_eq!(queued_jobs(&env).await, vec![1]);
    let ticks = env.drain_queue().await;
    assert_eq!(ticks.len(), 1, "one retry tick: {ticks:?}");
    env.proxy.clear_faults();
    let refs: Vec<(&str, String, u32)> = ticks.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
    assert!(env.batch(&refs).await.is_empty());
    assert_eq!(env.live().await.len(), 1, "the retry launched again");
    assert_eq!(env.provisioner().await, (1, vec![]));
}
