//! A warm pool shortens queue wait: two pools in one run, identical but for the warm pool, get
//! the same jobs; boot takes 3-4 s, so the cold pool's jobs wait at least that long.

mod e2e_support;

use e2e_support::{pool, pools, run};

#[test]
fn warm_pool_lowers_queue_wait_against_pool_size_zero() {
    let cfg = pools(
        &(pool("warm", "self-hosted, linux, warm", "m5.large", 8, 3, "spot")
            + &pool("cold", "self-hosted, linux, cold", "m5.large", 8, 0, "spot")),
    );
    // One job per pool every 5 s: the warm pool has time to refill between jobs.
    let trace = "name: warm-vs-cold\ntime_compression: 1\ngenerate:\n  - { count: 8, from: 6, to: 41, repos: [octo-org/api], labels: [[self-hosted, linux, warm]], durations: [2] }\n  - { count: 8, from: 6.5, to: 41.5, repos: [octo-org/api], labels: [[self-hosted, linux, cold]], durations: [2] }\n";
    let r = run(trace, &cfg, &["--boot-ms", "3000-4000"]);
    r.assert_clean();
    let warm = r.pool("warm")["queue_wait_ms"]["p50"].as_u64().unwrap();
    let cold = r.pool("cold")["queue_wait_ms"]["p50"].as_u64().unwrap();
    assert!(cold >= 3000, "a cold job waits at least a boot: {cold} ms: {:#}", r.report);
    assert!(warm < cold, "warm p50 {warm} ms is not below cold p50 {cold} ms: {:#}", r.report);
}
