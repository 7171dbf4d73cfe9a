//! The reconcile schedule: warm pool, timeouts, cleanup, and a second run that changes nothing.
//! The schedule sends each pool a reconcile tick in its FIFO group; the pool's own batch plans
//! with GitHub's runners and the stored JIT configs.

use crate::common::{completed, fixture, run_queue, runner_name, scale_up, Env, Options, ORG, REPO};
use hangar_aws::ssm::SsmJitStore;
use hangar_core::ids::{InstanceId, RunnerName};
use hangar_core::ports::{JitRequest, JitStore, RunnerRegistry, RunnerScopeTarget};
use hangar_core::secret::Secret;
use std::collections::BTreeSet;
use std::time::Duration;

/// The schedule, then the reconcile tick it queued, handled by the pool's batch.
async fn reconcile(env: &Env) {
    let resp = env.handle(fixture("scheduled-event.json")).await;
    assert_eq!(resp["ticked"], serde_json::json!([env.pool_name().to_string()]), "{resp}");
    assert_eq!(run_queue(env).await, 1, "one reconcile tick");
}

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

    // An empty pool: the schedule itself launches nothing; its tick's batch tops the pool up.
    let resp = env.handle(fixture("scheduled-event.json")).await;
    assert_eq!(env.proxy.count("CreateFleet"), 0, "{resp}");
    assert_eq!(run_queue(&env).await, 1);
    let warm = env.live().await;
    assert_eq!(warm.len(), 2, "topped up to the warm target");
    assert!(warm.iter().all(|i| i.tag("hangar:launch-reason") == Some("warm-pool")));
    for i in &warm {
        assert!(env.jit(&i.id).await.is_some(), "warm runners get JIT configs");
    }

    // Three jobs: need is 3 queued + 2 warm, so three more are launched.
    let jobs: Vec<(String, String, u32)> = (1..=3).map(|j| (format!("q-{j}"), scale_up(&p, j), 1)).collect();
    let refs: Vec<(&str, String, u32)> = jobs.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
    assert!(env.batch(&refs).await.is_empty());
    let live = env.live().await;
    assert_eq!(live.len(), 5, "{live:?}");
    // Every runner boots except one, which never registers.
    let never = live[0].id.clone();
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

    // Before any timeout: nothing to do, and nothing is written but the tick itself.
    let (aws, github) = (env.aws_writes(), env.github_writes());
    reconcile(&env).await;
    assert_eq!((env.aws_writes(), env.github_writes()), (aws + 1, github), "{:?}", env.proxy.counts());
    assert_eq!(env.live().await.len(), 5);

    // The three jobs are cancelled while queued; then past the idle and boot timeouts (and the
    // fresh-parameter grace).
    let cancels: Vec<(String, String, u32)> = (1..=3)
        .map(|j| {
            let c = completed(&p, j, "", "cancelled", 1, REPO)
                .replace("\"runner_name\":\"\"", "\"runner_name\":null");
            (format!("c-{j}"), c, 1)
        })
        .collect();
    let refs: Vec<(&str, String, u32)> =
        cancels.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
    assert!(env.batch(&refs).await.is_empty());
    env.sim.advance_clock(Duration::from_secs(700));
    env.metrics.clear();
    reconcile(&env).await;
    let live = env.live().await;
    assert_eq!(live.len(), 2, "trimmed to the warm target: {live:?}");
    assert!(live.iter().all(|i| i.id != never), "the never-registered instance is gone");
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

    // The next run finds nothing to do: reads only, and the tick.
    let (aws, github) = (env.aws_writes(), env.github_writes());
    reconcile(&env).await;
    assert_eq!((env.aws_writes(), env.github_writes()), (aws + 1, github), "{:?}", env.proxy.counts());
    assert!(env.drain_queue().await.is_empty());
    assert_eq!(env.live().await.len(), 2);
}
