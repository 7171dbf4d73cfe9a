//! SQS batches of scale requests: what is launched, tagged and registered, and what is reported
//! failed when AWS or GitHub misbehave.

use crate::common::{runner_name, scale_up, started, Env, Options};
use hangar_core::ids::PoolName;
use hangar_core::ledger::JobLedger as _;
use hangar_core::message::QueueMessage;
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
async fn a_batch_launches_one_tagged_registered_runner_per_job_and_a_redelivery_launches_nothing() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    let batch = jobs(&p, &[101, 102, 103]);
    assert!(env.batch(&refs(&batch)).await.is_empty());

    let live = env.live().await;
    assert_eq!(live.len(), 3, "{live:?}");
    let mut job_tags = BTreeSet::new();
    for i in &live {
        assert_eq!(i.tag("hangar:pool"), Some(p.as_str()));
        assert_eq!(i.tag("hangar:lifecycle"), Some("pending"));
        assert_eq!(i.tag("hangar:launch-reason"), Some("job"));
        assert_eq!(i.tag("hangar:managed-by"), Some("hangar"));
        assert!(i.spot, "the pool asks for spot");
        job_tags.insert(i.tag("hangar:job-id").expect("job id tag").to_owned());
        let jit = env.jit(&i.id).await.expect("a JIT parameter per instance");
        assert!(!jit.is_empty());
    }
    assert_eq!(job_tags, BTreeSet::from(["101".to_owned(), "102".into(), "103".into()]));
    let names: BTreeSet<String> = env.sim.runners().into_iter().map(|r| r.name).collect();
    let want: BTreeSet<String> = live.iter().map(|i| runner_name(&p, &i.id)).collect();
    assert_eq!(names, want, "one runner per instance, named after it");
    assert_eq!(env.metrics.total("Launches", Some(("CapacityType", "spot"))), 3.0);
    assert_eq!(env.proxy.count("CreateFleet"), 1);
    assert_eq!(env.proxy.count("DescribeInstances"), 1, "the pool is described once");
    assert_eq!(env.sim.count("generate-jitconfig"), 3);

    // The same batch again (SQS redelivery): nothing is launched or registered.
    let (aws_writes, gh_writes) = (env.aws_writes(), env.github_writes());
    assert!(env.batch(&refs(&redelivered(&batch))).await.is_empty());
    assert_eq!(env.live().await.len(), 3);
    assert_eq!(env.proxy.count("CreateFleet"), 1);
    assert_eq!((env.aws_writes(), env.github_writes()), (aws_writes, gh_writes));
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
    let gh = env.sim.counters().total;
    assert!(env.batch(&[("s-1", msg, 2)]).await.is_empty());
    let after = env.proxy.counts();
    let delta: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
    // The ledger's conditional write, refused (it says the job started already), and one
    // DescribeInstances. No write changes anything.
    assert_eq!(delta, 2, "{before:?} -> {after:?}");
    assert_eq!(after["DescribeInstances"], before["DescribeInstances"] + 1);
    assert_eq!(after["UpdateItem"], before["UpdateItem"] + 1);
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
    // One error per m5.large override (two subnets).
    assert_eq!(env.metrics.total("LaunchFailures", Some(("ErrorCode", "InsufficientInstanceCapacity"))), 2.0);
    assert_eq!(env.metrics.total("Launches", Some(("CapacityType", "spot"))), 2.0);

    env.proxy.clear_faults();
    env.proxy.inject(Fault::all_spot_exhausted());
    assert!(env.batch(&refs(&jobs(&p, &[3, 4]))).await.is_empty());
    let od: Vec<_> = env.live().await.into_iter().filter(|i| !i.spot).collect();
    assert_eq!(od.len(), 2, "the rest on on-demand");
    assert_eq!(env.metrics.total("Launches", Some(("CapacityType", "on-demand"))), 2.0);
    assert_eq!(
        env.metrics.total("LaunchFailures", Some(("ErrorCode", "InsufficientInstanceCapacity"))),
        2.0 + 4.0,
        "2 types x 2 subnets of spot failed"
    );
    for i in &od {
        assert!(env.jit(&i.id).await.is_some(), "on-demand runners get JIT configs too");
    }
}

#[tokio::test]
async fn throttling_is_retried_within_bounds_reported_failed_and_succeeds_on_redelivery() {
    let env = Env::start(Options { ec2_attempts: 3, ..Options::default() }).await;
    let p = env.pool_name();
    env.proxy.inject(Fault::error("CreateFleet", "RequestLimitExceeded", 503, 2));
    assert!(env.batch(&refs(&jobs(&p, &[1]))).await.is_empty(), "two throttles, then success");
    assert_eq!(env.proxy.count("CreateFleet"), 3);

    env.proxy.inject(Fault::error("CreateFleet", "RequestLimitExceeded", 503, 100));
    let batch = jobs(&p, &[2]);
    assert_eq!(env.batch(&refs(&batch)).await, ["msg-2"]);
    assert_eq!(env.proxy.count("CreateFleet"), 6, "bounded at 3 attempts");
    assert_eq!(env.metrics.total("LaunchFailures", Some(("ErrorCode", "RequestLimitExceeded"))), 1.0);
    assert_eq!(env.live().await.len(), 1);

    // Describe throttled past the bound: every message of the pool is retried.
    env.proxy.clear_faults();
    env.proxy.inject(Fault::error("DescribeInstances", "RequestLimitExceeded", 503, 3));
    assert_eq!(env.batch(&refs(&batch)).await, ["msg-2"]);
    assert_eq!(env.proxy.count("CreateFleet"), 6, "no launch without a describe");

    // Redelivered once AWS recovers: launched, exactly once.
    assert!(env.batch(&refs(&redelivered(&redelivered(&batch)))).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 2);
    assert_eq!(live.iter().filter(|i| i.tag("hangar:job-id") == Some("2")).count(), 1);
    assert!(env.jit(&live.iter().find(|i| i.tag("hangar:job-id") == Some("2")).unwrap().id).await.is_some());
}

#[tokio::test]
async fn github_5xx_during_jit_leaves_no_orphan_and_the_messages_are_retried() {
    let env = Env::start(Options::default()).await;
    let p = env.pool_name();
    env.sim.inject_fault(jit_outage());
    let batch = jobs(&p, &[11, 12]);
    assert_eq!(env.batch(&refs(&batch)).await, ["msg-11", "msg-12"]);
    assert!(env.live().await.is_empty(), "both new instances were terminated: {:?}", env.all().await);
    assert_eq!(env.all().await.len(), 2);
    assert!(env.parameters().await.is_empty());
    assert!(env.sim.runners().iter().all(|r| r.removed), "no runner was created");

    env.sim.clear_faults();
    assert!(env.batch(&refs(&redelivered(&batch))).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 2, "launched again for the redelivered messages");
    let tags: BTreeSet<_> = live.iter().map(|i| i.tag("hangar:job-id").unwrap().to_owned()).collect();
    assert_eq!(tags, BTreeSet::from(["11".to_owned(), "12".into()]));
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

#[tokio::test]
async fn a_full_pool_puts_the_jobs_it_cannot_serve_back_on_the_queue() {
    let env = Env::start(Options { max_runners: 2, ..Options::default() }).await;
    let p = env.pool_name();
    let failed = env.batch(&refs(&jobs(&p, &[1, 2, 3]))).await;
    // Job 3 waits at the back of the pool's group instead of failing (and blocking the group).
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(env.live().await.len(), 2);
    assert!(env.metrics.total("PoolExhausted", None) >= 3.0);
    let queued = env.drain_queue().await;
    let copies: Vec<QueueMessage> =
        queued.iter().filter_map(|(_, body, _)| QueueMessage::parse(body).ok()).collect();
    assert_eq!(copies.len(), 1, "{queued:?}");
    let QueueMessage::ScaleUp(j) = &copies[0] else { panic!("{copies:?}") };
    assert_eq!((j.job_id.0, j.requeues), (3, 1));
    assert_eq!(copies[0].dedup_id(), "3-1-queued-r1", "a new copy, not deduplicated away");
    // Handled again while still full: requeued once more, still nothing launched.
    let again = env.batch(&[("msg-3b", copies[0].to_json(), 1)]).await;
    assert!(again.is_empty());
    assert_eq!(env.live().await.len(), 2);
    let next: Vec<QueueMessage> =
        env.drain_queue().await.iter().filter_map(|(_, b, _)| QueueMessage::parse(b).ok()).collect();
    assert!(matches!(&next[..], [QueueMessage::ScaleUp(j)] if j.requeues == 2), "{next:?}");
}

#[tokio::test]
async fn a_job_whose_runner_another_job_takes_at_the_cap_gets_a_claim_queued_first() {
    let env = Env::start(Options { max_runners: 1, ..Options::default() }).await;
    let p = env.pool_name();
    assert!(env.batch(&[("msg-1", scale_up(&p, 1), 1)]).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 1);
    let i1 = live[0].id.clone();
    assert_eq!(live[0].tag("hangar:job-id"), Some("1"));
    env.drain_queue().await;

    // Job 2 (not ours to launch for) takes job 1's runner while the pool is full. If the claim
    // cannot be queued, nothing is written and the batch is retried.
    let start = [("msg-s2", started(&p, 2, &runner_name(&p, &i1)), 1)];
    env.proxy.inject(Fault::error("SendMessage", "InternalError", 500, 20));
    assert_eq!(env.batch(&start).await, ["msg-s2"]);
    assert_eq!(env.live().await[0].tag("hangar:job-id"), Some("1"), "no tag before the claim is queued");
    env.proxy.clear_faults();

    // Redelivered: the claim is queued, then the runner is tagged busy with job 2.
    assert!(env.batch(&[("msg-s2", started(&p, 2, &runner_name(&p, &i1)), 2)]).await.is_empty());
    let now = env.live().await;
    assert_eq!((now[0].tag("hangar:lifecycle"), now[0].tag("hangar:job-id")), (Some("busy"), Some("2")));
    let queued = env.drain_queue().await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let body: serde_json::Value = serde_json::from_str(&queued[0].1).unwrap();
    assert_eq!(body["kind"], "replace_dead");
    assert_eq!((body["job"].as_u64(), body["instance"].as_str()), (Some(1), Some(i1.as_str())));
    assert_eq!(body["displaced"], true);
    assert_eq!(env.metrics.total("EarmarksDisplaced", None), 1.0, "counted once the claim is queued");

    // Taken while the pool is still full: put back, nothing launched.
    assert!(env.batch(&[("msg-c1", queued[0].1.clone(), 1)]).await.is_empty());
    assert_eq!(env.live().await.len(), 1);
    let back = env.drain_queue().await;
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(back[0].1.contains("\"requeues\":1"), "{back:?}");

    // Job 2's runner finishes and goes: the claim launches one instance for job 1.
    env.ec2.terminate_instances().instance_ids(&i1).send().await.unwrap();
    assert!(env.batch(&[("msg-c1b", back[0].1.clone(), 1)]).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].tag("hangar:job-id"), Some("1"));
    assert_eq!(live[0].tag("hangar:replaces"), Some(i1.as_str()));
    assert!(env.jit(&live[0].id).await.is_some());
    // The same claim again launches nothing more.
    assert!(env.batch(&[("msg-c1b", back[0].1.clone(), 2)]).await.is_empty());
    assert_eq!(env.live().await.len(), 1);
}

/// Below the cap a displaced job is launched for at once (a replacement of the runner it lost),
/// and its claim is queued first. If that replacement gets no JIT config, the scaler abandons it
/// and no message of the job's is in the batch to be retried: the claim is what launches again.
#[tokio::test]
async fn a_displaced_job_whose_replacement_gets_no_jit_config_is_launched_for_again_from_its_claim() {
    let env = Env::start(Options { max_runners: 5, ..Options::default() }).await;
    let p = env.pool_name();
    assert!(env.batch(&[("msg-1", scale_up(&p, 1), 1)]).await.is_empty());
    let i1 = env.live().await[0].id.clone();
    env.drain_queue().await;

    // Job 2 (which had no earmark) takes job 1's runner; GitHub fails every JIT config.
    env.sim.inject_fault(jit_outage());
    let start = [("msg-s2", started(&p, 2, &runner_name(&p, &i1)), 1)];
    assert!(env.batch(&start).await.is_empty(), "the start itself is handled");
    let all = env.all().await;
    let abandoned: Vec<_> = all.iter().filter(|i| i.tag("hangar:replaces") == Some(i1.as_str())).collect();
    assert_eq!(abandoned.len(), 1, "one replacement launched for job 1: {all:?}");
    assert_eq!(abandoned[0].tag("hangar:lifecycle"), Some("draining"));
    assert_eq!(abandoned[0].tag("hangar:job-id"), None, "untagged when it got no config");
    assert_eq!(env.live().await.len(), 1, "the abandoned replacement is terminated");
    let queued = env.drain_queue().await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let body: serde_json::Value = serde_json::from_str(&queued[0].1).unwrap();
    assert_eq!((body["kind"].as_str(), body["job"].as_u64()), (Some("replace_dead"), Some(1)));
    assert_eq!(body["displaced"], true);

    // GitHub recovers: the claim launches one instance for job 1, with its config.
    env.sim.clear_faults();
    assert!(env.batch(&[("msg-c1", queued[0].1.clone(), 1)]).await.is_empty());
    let live = env.live().await;
    let new: Vec<_> = live.iter().filter(|i| i.tag("hangar:job-id") == Some("1")).collect();
    assert_eq!(new.len(), 1, "{live:?}");
    assert_eq!(new[0].tag("hangar:replaces"), Some(i1.as_str()));
    assert!(env.jit(&new[0].id).await.is_some());
    // Served: the claim again launches nothing.
    assert!(env.batch(&[("msg-c1", queued[0].1.clone(), 2)]).await.is_empty());
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
