//! A matrix burst of 200 jobs in 10 s on a pool capped at 20: the cap holds at every look at
//! moto (the demo samples DescribeInstances every 250 ms), and every job still completes.

mod e2e_support;

use e2e_support::{pool, pools, run};

#[test]
fn a_burst_of_200_jobs_never_exceeds_max_runners() {
    let cfg =
        pools(&pool("burst", "self-hosted, linux, x64", "m5.large, m6i.large, c5.large", 20, 0, "spot"));
    let trace = "name: burst\ntime_compression: 1\ngenerate:\n  - { count: 200, from: 0, to: 10, repos: [octo-org/monorepo], labels: [[self-hosted, linux, x64]], durations: [2, 3, 4] }\n";
    // 200 runners need 200 JIT calls, and GitHub's secondary limit (80 writes a minute, which
    // the simulator enforces) makes that at least 2.5 minutes however fast Hangar is.
    // The counting planner: with the earmark planner, at-cap jobs cycle through the queue, and
    // in a fresh-clone `.ci/run` on 2026-12-03 the queue was not drained by teardown (390
    // messages, 3 instances and 5 runners left after the drain deadline; 207 launches). On
    // counting, one local run: 200 launches for 200 jobs, nothing left in EC2, SSM, GitHub or
    // the ledger.
    let r = run(trace, &cfg, &["--settle-timeout", "480"]);
    r.assert_clean();
    assert_eq!(r.u("jobs_total"), 200);
    let p = r.pool("burst");
    let peak = p["max_observed"].as_u64().unwrap();
    assert!(peak <= 20, "peak {peak} over the cap: {:#}", r.report);
    // The pool did scale out to (near) the cap, so the samples saw the pressure.
    assert!(peak >= 10, "peak {peak}: the burst never filled the pool: {:#}", r.report);
}
