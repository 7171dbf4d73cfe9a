//! SQS batches of scale requests: what is launched, tagged and registered, and what is reported
//! failed when AWS or GitHub misbehave.

use crate::common::{queued_jobs, run_queue, runner_name, scale_up, started, Env, Options};
use hangar_core::ids::PoolName;
use hangar_core::ledger::JobLedger as _;
use hangar_sim::fault_proxy::Fault;
use hangar_sim::github::Fault as GhFault;
use std::collections::BTreeSet;

fn jobs(p: &PoolName, ids: &[u64]) -> Vec<(String, String, u32)> {
    ids.iter().map(|j| (format!("msg-{j}"), scale_up(p, *j), 1)).collect()
}

fn refs(v: &[(String, String, u32)]) -> Vec<(&str, String, u32)> {
    v.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect()
}

fn redelivered(v: &[(String, String, u32)]) -> Vec<(String, String, u32)> {
    v.iter().map(|(a, b, c)| (a.clone(), b.clone(), c + 1)).collect()
}

#[tokio::test]
async fn a_batch_launches_one_tagged_registered_runner_per_queued_job_and_a_redelivery_launches_nothing() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    let batch = jobs(&p, &[101, 102, 103]);
    assert!(env.batch(&refs(&batch)).await.is_empty());

    let live = env.live().await;
    assert_eq!(live.len(), 3, "{live:?}");
    for i in &live {
        assert_eq!(i.tag("hangar:pool"), Some(p.as_str()));
        assert_eq!(i.tag("hangar:lifecycle"), Some("pending"));
        assert_eq!(i.tag("hangar:launch-reason"), Some("job"));
        assert_eq!(i.tag("hangar:managed-by"), Some("hangar"));
        assert!(i.spot, "the pool asks for spot");
        let jit = env.jit(&i.id).await.expect("a JIT parameter per instance");
        assert!(!jit.is_empty());
    }
    let names: BTreeSet<String> = env.sim.runners().into_iter().map(|r| r.name).collect();
    let want: BTreeSet<String> = live.iter().map(|i| runner_name(&p, &i.id)).collect();
    assert_eq!(names, want, "one runner per instance, named after it");
    assert_eq!(env.metrics.total("Launches", Some(("CapacityType", "spot"))), 3.0);
    assert_eq!(env.proxy.count("CreateFleet"), 1);
    assert_eq!(env.proxy.count("DescribeInstances"), 1, "the pool is described once");
    assert_eq!(env.sim.count("generate-jitconfig"), 3);

    // The same batch again (SQS redelivery): three runners cover three queued jobs already, so
    // nothing is launched or registered.
    let (aws_writes, gh_writes) = (env.aws_writes(), env.github_writes());
    assert!(env.batch(&refs(&redelivered(&batch))).await.is_empty());
    assert_eq!(env.live().await.len(), 3);
    assert_eq!(env.proxy.count("CreateFleet"), 1);
    assert_eq!((env.aws_writes(), env.github_writes()), (aws_writes, gh_writes));
    assert!(env.drain_queue().await.is_empty(), "nothing goes round the queue");
}

#[tokio::test]
async fn a_start_tags_the_runner_busy_and_its_redelivery_makes_no_write() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    assert!(env.batch(&refs(&jobs(&p, &[7]))).await.is_empty());
    let id = env.live().await[0].id.clone();
    let msg = started(&p, 7, &runner_name(&p, &id));
    assert!(env.batch(&[("s-1", msg.clone(), 1)]).await.is_empty());
    let inst = env.live().await.remove(0);
    assert_eq!((inst.tag("hangar:lifecycle"), inst.tag("hangar:job-id")), (Some("busy"), Some("7")));

    let before = env.proxy.counts();
    let (aws_writes, gh) = (env.aws_writes(), env.sim.counters().total);
    assert!(env.batch(&[("s-1", msg, 2)]).await.is_empty());
    let after = env.proxy.counts();
    // The ledger's conditional write, refused (it says the job started already), and the
    // plan's reads (one DescribeInstances). No write changes anything.
    assert_eq!(env.aws_writes(), aws_writes, "{before:?} -> {after:?}");
    assert_eq!(after["DescribeInstances"], before["DescribeInstances"] + 1);
    assert_eq!(after["UpdateItem"], before["UpdateItem"] + 1, "{before:?} -> {after:?}");
    let entry = env
        .ledger()
        .await
        .get(hangar_core::ledger::JobKey::new(hangar_core::ids::JobId(7), 1))
        .await
        .unwrap();
    assert_eq!(entry.map(|j| j.status), Some(hangar_core::ledger::JobStatus::Started));
    assert_eq!(env.sim.counters().total, gh, "no GitHub call on the hot path");
}

#[tokio::test]
async fn spot_capacity_errors_fall_back_to_other_types_then_on_demand_and_are_counted() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    env.proxy.inject(Fault::spot_capacity(&["m5.large"]));
    assert!(env.batch(&refs(&jobs(&p, &[1, 2]))).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|i| i.spot && i.instance_type == "c5.large"), "{live:?}");
    // One error per m5.large override (two subnets); the fleet itself launched, so no failure.
    let override_errors =
        || env.metrics.total("LaunchOverrideErrors", Some(("ErrorCode", "InsufficientInstanceCapacity")));
    assert_eq!(override_errors(), 2.0);
    assert_eq!(env.metrics.total("LaunchFailures", None), 0.0);
    assert_eq!(env.metrics.total("Launches", Some(("CapacityType", "spot"))), 2.0);

    env.proxy.clear_faults();
    env.proxy.inject(Fault::all_spot_exhausted());
    assert!(env.batch(&refs(&jobs(&p, &[3, 4]))).await.is_empty());
    let od: Vec<_> = env.live().await.into_iter().filter(|i| !i.spot).collect();
    assert_eq!(od.len(), 2, "the rest on on-demand");
    assert_eq!(env.metrics.total("Launches", Some(("CapacityType", "on-demand"))), 2.0);
    assert_eq!(override_errors(), 2.0 + 4.0, "2 types x 2 subnets of spot failed");
    assert_eq!(env.metrics.total("LaunchFailures", None), 0.0, "on-demand covered them");
    for i in &od {
        assert!(env.jit(&i.id).await.is_some(), "on-demand runners get JIT configs too");
    }
}

/// With no fallback to on-demand and no spot capacity anywhere, CreateFleet answers but launches
/// nothing: a launch failure (the LaunchFailures alarm's signal), and the job still waits.
#[tokio::test]
async fn a_fleet_that_launches_nothing_counts_as_a_failed_launch() {
    let env = Env::start(Options { fallback: false, ..Options::default() }).await;
    let p = env.pool_name();
    env.proxy.inject(Fault::all_spot_exhausted());
    assert!(env.batch(&refs(&jobs(&p, &[1]))).await.is_empty(), "acknowledged: a retry tick plans again");
    assert!(env.live().await.is_empty());
    assert_eq!(env.metrics.total("LaunchFailures", Some(("ErrorCode", "InsufficientInstanceCapacity"))), 1.0);
    assert_eq!(env.metrics.total("Launches", None), 0.0);
    assert!(env.metrics.total("PlanActionErrors", None) >= 1.0, "the short launch is a failed action");
    assert_eq!(queued_jobs(&env).await, vec![1]);
}

#[tokio::test]
async fn throttling_is_retried_within_bounds_reported_failed_and_succeeds_on_redelivery() {
    let env = Env::start(Options { ec2_attempts: 3, ..Options::default() }).await;
    let p = env.pool_name();
    env.proxy.inject(Fault::error("CreateFleet", "RequestLimitExceeded", 503, 2));
    assert!(env.batch(&refs(&jobs(&p, &[1]))).await.is_empty(), "two throttles, then success");
    assert_eq!(env.proxy.count("CreateFleet"), 3);

    // A lasting throttle is crates/scaler/tests/scaler/counting.rs's: quick retry ticks, then
    // the visibility timeout.
    let batch = jobs(&p, &[2]);
    env.proxy.clear_faults();
    // Describe throttled past the SDK's attempts: every message of the pool is retried, and
    // nothing is launched blind.
    env.proxy.inject(Fault::error("DescribeInstances", "RequestLimitExceeded", 503, 3));
    assert_eq!(env.batch(&refs(&batch)).await, ["msg-2"]);
    assert_eq!(env.proxy.count("CreateFleet"), 3, "no launch without a describe");
    assert_eq!(queued_jobs(&env).await, vec![1, 2], "recorded beside the describe; planned on redelivery");

    // Redelivered once AWS recovers: launched, exactly once.
    assert!(env.batch(&refs(&redelivered(&batch))).await.is_empty());
    assert!(env.batch(&refs(&redelivered(&redelivered(&batch)))).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 2);
    assert_eq!(env.proxy.count("CreateFleet"), 4);
    for i in &live {
        assert!(env.jit(&i.id).await.is_some());
    }
}

/// Without a provisioning queue the pool's batch makes the JIT configs itself.
#[tokio::test]
async fn github_5xx_during_jit_leaves_no_orphan_and_the_jobs_are_launched_for_again() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    env.sim.inject_fault(jit_outage());
    let batch = jobs(&p, &[11, 12]);
    assert!(env.batch(&refs(&batch)).await.is_empty(), "acknowledged: a retry tick plans again");
    assert!(env.live().await.is_empty(), "both new instances were terminated: {:?}", env.all().await);
    assert_eq!(env.all().await.len(), 2);
    assert!(env.parameters().await.is_empty());
    assert!(env.sim.runners().iter().all(|r| r.removed), "no runner was created");
    assert_eq!(queued_jobs(&env).await, vec![11, 12], "the ledger still counts both jobs");

    env.sim.clear_faults();
    assert_eq!(run_queue(&env).await, 1, "one retry tick");
    let live = env.live().await;
    assert_eq!(live.len(), 2, "launched again for the jobs still queued");
    for i in &live {
        assert!(env.jit(&i.id).await.is_some());
    }
    assert_eq!(env.proxy.count("CreateFleet"), 2);
}

#[tokio::test]
async fn a_malformed_or_oversized_message_fails_alone() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    let big = format!("{{\"kind\":\"scale_up\",\"pad\":\"{}\"}}", "x".repeat(20 * 1024));
    let other_pool = scale_up(&PoolName::from("not-configured"), 9);
    let records = vec![
        ("ok-1", scale_up(&p, 1), 1),
        ("bad", "{not json".to_owned(), 1),
        ("big", big, 1),
        ("wrong-shape", r#"{"kind":"scale_up","pool":"x"}"#.to_owned(), 1),
        ("unknown-pool", other_pool, 1),
        ("ok-2", scale_up(&p, 2), 1),
    ];
    assert_eq!(env.batch(&records).await, ["bad", "big", "unknown-pool", "wrong-shape"]);
    assert_eq!(env.live().await.len(), 2);
}

/// GitHub answers every org JIT config request with 502, for longer than any retry.
fn jit_outage() -> GhFault {
    GhFault {
        endpoint: "generate-jitconfig".into(),
        status: 502,
        count: 1000,
        retry_after: None,
        message: None,
        after_processing: false,
    }
}
