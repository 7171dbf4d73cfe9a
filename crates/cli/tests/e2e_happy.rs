//! Happy path: a steady workload on two pools (one with a warm pool) completes, leaves nothing
//! behind, and launches at most 1.1 instances per job.

mod e2e_support;

use e2e_support::{pool, pools, run};

#[test]
fn every_job_completes_with_no_leftovers_and_about_one_launch_per_job() {
    let cfg = pools(
        &(pool("x64", "self-hosted, linux, x64", "m5.large, m6i.large", 10, 1, "spot")
            + &pool("arm64", "self-hosted, linux, arm64", "m7g.large", 6, 0, "on-demand")),
    );
    // Compressed 5x: jobs run 4-8 s real. On the counting planner (the earmark planner, at 10x,
    // let runners swap jobs and die before their starts were handled: one CI run saw 1.118).
    // Two local runs on 2026-12-07 launched 35 for 34 jobs and a warm runner: once 25 + 10,
    // once 24 + 11 (the x64 warm runner taken by its last job as teardown drained the warm
    // pools, and one launch too many in arm64 that this test does not explain yet).
    let trace = "name: happy\ntime_compression: 5\ngenerate:\n  - { count: 24, from: 0, to: 200, repos: [octo-org/api, octo-org/web], labels: [[self-hosted, linux, x64]], durations: [20, 30, 40] }\n  - { count: 10, from: 5, to: 195, repos: [octo-org/mobile], labels: [[self-hosted, linux, arm64]], durations: [25, 35] }\n";
    let r = run(trace, &cfg, &[]);
    r.assert_clean();
    assert_eq!(r.u("jobs_total"), 34);
    let lpj = r.report["launches_per_job"].as_f64().unwrap();
    assert!(lpj <= 1.1, "launches per job {lpj}: {:#}", r.report);
    assert!(r.u("spot_launches") >= 1 && r.u("on_demand_launches") >= 1, "{:#}", r.report);
    assert_eq!(r.pool("x64")["completed"], 24);
    assert_eq!(r.pool("arm64")["completed"], 10);
    assert!(r.dir.path().join("report.svg").exists());
}
