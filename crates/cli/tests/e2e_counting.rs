//! The counting planner end to end: the scaler plans each pool from the
//! job ledger. Every job completes, nothing is left behind, the ledger holds no queued job at
//! teardown, and launches stay close to one per job.

mod e2e_support;

use e2e_support::{pool, pools, run};

#[test]
fn the_counting_planner_launches_about_one_instance_per_job() {
    let cfg = pools(&pool("x64", "self-hosted, linux, x64", "m5.large, m6i.large, c5.large", 10, 0, "spot"));
    let trace = "name: counting\ntime_compression: 5\ngenerate:\n  - { count: 16, from: 0, to: 120, repos: [octo-org/api, octo-org/web], labels: [[self-hosted, linux, x64]], durations: [20, 30] }\n";
    let r = run(trace, &cfg, &[]);
    r.assert_clean();
    assert_eq!(r.report["ledger_queued_left"], 0, "{:#}", r.report);
    assert_eq!(r.u("jobs_total"), 16);
    // No earmark to lose, so no launch to replace one: whichever runner took whichever job,
    // the counts stay right. Five runs on 2026-12-07, with the ledger's open-jobs index,
    // launched 16, 16, 16, 16 and 17 for 16 jobs; where the 17th came from is not found yet,
    // so the bound stays at one extra launch in four jobs until it is.
    let (launches, jobs) = (r.u("launches"), r.u("jobs_total"));
    assert!(launches >= jobs, "every job had a runner: {:#}", r.report);
    assert!(launches * 4 <= jobs * 5, "{launches} launches for {jobs} jobs: {:#}", r.report);
}
