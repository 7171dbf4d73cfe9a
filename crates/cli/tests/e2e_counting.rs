//! The counting planner (`--planner counting`) end to end: the scaler plans each pool from the
//! job ledger. Every job completes, nothing is left behind, the ledger holds no queued job at
//! teardown, and exactly one instance is launched per job.

mod e2e_support;

use e2e_support::{pool, pools, run};

#[test]
fn the_counting_planner_launches_exactly_one_instance_per_job() {
    let cfg = pools(&pool("x64", "self-hosted, linux, x64", "m5.large, m6i.large, c5.large", 10, 0, "spot"));
    let trace = "name: counting\ntime_compression: 5\ngenerate:\n  - { count: 16, from: 0, to: 120, repos: [octo-org/api, octo-org/web], labels: [[self-hosted, linux, x64]], durations: [20, 30] }\n";
    let r = run(trace, &cfg, &["--planner", "counting"]);
    r.assert_clean();
    assert_eq!(r.report["ledger_queued_left"], 0, "{:#}", r.report);
    assert_eq!(r.u("jobs_total"), 16);
    // No earmark to lose, so no launch to replace one: whichever runner took whichever job,
    // the counts stay right. The lag that once launched extra (17 and 18 for 16 at 10x
    // compression: a job that started, ended and lost its instance before the scaler reached
    // its `in_progress`) is gone: the webhook records each transition as it arrives, and the
    // ledger's index lists started jobs under their runners' pool, so a plan sees a runner
    // busy from the moment its job's start is recorded. Three local runs on 2026-12-07: 16, 16
    // and 16.
    assert_eq!(r.u("launches"), r.u("jobs_total"), "one launch per job, exactly: {:#}", r.report);
}
