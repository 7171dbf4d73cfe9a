//! The reconcile schedule: warm pool, timeouts, cleanup, and a second run that changes nothing.

use crate::common::{fixture, runner_name, scale_up, Env, Options, ORG};
use hangar_aws::ssm::SsmJitStore;
use hangar_core::ids::{InstanceId, RunnerName};
use hangar_core::ports::{JitRequest, JitStore, RunnerRegistry, RunnerScopeTarget};
use hangar_core::secret::Secret;
use hangar_scaler::TopUp;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test]
async fn reconcile_tops_up_trims_kills_cleans_up_and_then_does_nothing() {
    let env = Env::start(Options {
        max_runners: 6,
        warm: 2,
        idle_timeout_secs: 600,
        boot_timeout_secs: 300,
        ..Options::default()
    })
    .await;
    let p = env.pool_name();

    // An empty pool: reconcile does not launch, it queues a top-up in the pool's FIFO group.
    let summary = env.handle(fixture("scheduled-event.json")).await;
    assert_eq!(summary[p.as_str()]["top_ups"], 1, "{summary}");
    assert_eq!(env.proxy.count("CreateFleet"), 0);
    let queued = env.drain_queue().await;
    assert_eq!(queued.len(), 1);
    let top_up = TopUp::parse(&queued[0].1).unwrap();
    assert_eq!(top_up.pool, p);
    assert!(env.batch(&[(queued[0].0.as_str(), queued[0].1.clone(), 1)]).await.is_empty());
    let warm = env.live().await;
    assert_eq!(warm.len(), 2, "topped up to the warm target");
    assert!(warm
        .iter()
        .all(|i| i.tag("hangar:launch-reason") == Some("warm-pool") && i.tag("hangar:job-id").is_none()));
    for i in &warm {
        assert!(env.jit(&i.id).await.is_some(), "warm runners get JIT configs");
    }

    // Three jobs: two take the warm runners, one gets a launch, and the warm pool is refilled.
    let jobs: Vec<(String, String, u32)> = (1..=3).map(|j| (format!("q-{j}"), scale_up(&p, j), 1)).collect();
    let refs: Vec<(&str, String, u32)> = jobs.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
    assert!(env.batch(&refs).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 5, "{live:?}");
    // Every runner boots except one warm runner, which never registers.
    let never = live.iter().find(|i| i.tag("hangar:job-id").is_none()).unwrap().id.clone();
    for i in live.iter().filter(|i| i.id != never) {
        env.boot(&i.id).await;
    }
    // Leftovers of an instance long gone: its parameter and its never-started runner.
    let ghost = InstanceId::from("i-0fedcba9876543210");
    let store = SsmJitStore::with_prefix(env.ssm.clone(), &env.prefix).unwrap();
    store.put(&ghost, &p, &Secret::new("ghost-jit")).await.unwrap();
    let gh = env.github_client();
    gh.generate_jit_config(&JitRequest {
        name: RunnerName::for_instance(&p, &ghost),
        labels: env.pool.labels.clone(),
        runner_group: "hangar".into(),
        scope: RunnerScopeTarget::Org(ORG.into()),
        installation: None,
    })
    .await
    .unwrap();

    // Before any timeout: nothing to do, and nothing is written.
    let (aws, github) = (env.aws_writes(), env.github_writes());
    env.handle(fixture("scheduled-event.json")).await;
    assert_eq!((env.aws_writes(), env.github_writes()), (aws, github), "{:?}", env.proxy.counts());
    assert_eq!(env.live().await.len(), 5);

    // Past the idle and boot timeouts (and the fresh-parameter grace).
    env.sim.advance_clock(Duration::from_secs(700));
    env.metrics.clear();
    env.handle(fixture("scheduled-event.json")).await;
    let live = env.live().await;
    assert_eq!(live.len(), 2, "trimmed to the warm target: {live:?}");
    assert!(live.iter().all(|i| i.id != never), "the never-registered instance is gone");
    assert!(live.iter().all(|i| i.tag("hangar:job-id").is_none()), "stale earmarks cleared");
    assert_eq!(env.metrics.total("OrphansTerminated", None), 1.0);
    assert_eq!(env.metrics.total("IdleTerminated", None), 2.0);
    assert!(env.parameters().await.is_empty(), "stale and orphaned parameters deleted");
    let registered: BTreeSet<String> =
        env.sim.runners().into_iter().filter(|r| !r.removed).map(|r| r.name).collect();
    let expected: BTreeSet<String> = live.iter().map(|i| runner_name(&p, &i.id)).collect();
    assert_eq!(registered, expected, "only the live runners stay registered");
    assert_eq!(env.metrics.total("RunnersDeregistered", None), 4.0, "2 trimmed, 1 never started, 1 ghost");
    assert_eq!(env.metrics.last("PoolIdle", p.as_str()), Some(2.0));
    assert_eq!(env.metrics.last("PoolTarget", p.as_str()), Some(2.0));

    // The second run finds nothing to do: reads only.
    let (aws, github) = (env.aws_writes(), env.github_writes());
    let summary = env.handle(fixture("scheduled-event.json")).await;
    assert_eq!(summary[p.as_str()]["actions"], 0, "{summary}");
    assert_eq!((env.aws_writes(), env.github_writes()), (aws, github), "{:?}", env.proxy.counts());
    assert!(env.drain_queue().await.is_empty());
    let _ = store.list().await.unwrap();
}
