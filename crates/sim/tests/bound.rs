//! The bound (`hangar_sim::bound`): hand-worked runs of the ideal scaler.

use hangar_sim::bound::{simulate, Arrival, Boot, Bound, BoundError, Input, Limit, Limits, PoolSpec};
use hangar_sim::instances::DelayRange;

fn pool(name: &str, max_runners: Option<u32>, warm: u32) -> PoolSpec {
    PoolSpec { name: name.into(), max_runners, warm }
}

fn job(pool: usize, arrival_ms: u64, duration_ms: u64) -> Arrival {
    Arrival { pool, arrival_ms, duration_ms, attempts: 1 }
}

fn run(pools: Vec<PoolSpec>, jobs: Vec<Arrival>, boot: Boot, limits: Limits) -> Bound {
    simulate(&Input { pools, jobs, boot, limits }).expect("valid input")
}

#[test]
fn with_no_cap_and_no_limits_every_wait_is_the_boot_time() {
    // Three at the same instant, one while those boot, one long after.
    let jobs = vec![job(0, 0, 5000), job(0, 0, 100), job(0, 0, 0), job(0, 300, 2000), job(0, 60_000, 10)];
    let b = run(vec![pool("p", None, 0)], jobs, Boot::fixed(1500), Limits::default());
    assert_eq!(b.waits_ms, vec![vec![1500]; 5]);
    assert_eq!(b.launches, vec![5]);
}

#[test]
fn with_a_cap_of_two_later_jobs_wait_for_finished_runners_and_a_new_boot() {
    // Cap 2, boot 1000 ms.
    //   t=0     J0 (3000 ms) and J1 (5000 ms) arrive: two launches, ready at 1000; cap full.
    //   t=500   J2 (1000 ms) arrives, t=600 J3 (1000 ms) arrives: at the cap, they wait.
    //   t=1000  J0, J1 start: wait 1000 each. J0 ends at 4000, J1 at 6000.
    //   t=4000  J0's runner is gone: launch for J2, ready 5000; J2 waits 5000-500 = 4500, ends 6000.
    //   t=6000  J1 and J2 end: launch for J3, ready 7000; J3 waits 7000-600 = 6400.
    let jobs = vec![job(0, 0, 3000), job(0, 0, 5000), job(0, 500, 1000), job(0, 600, 1000)];
    let b = run(vec![pool("p", Some(2), 0)], jobs, Boot::fixed(1000), Limits::default());
    assert_eq!(b.waits_ms, vec![vec![1000], vec![1000], vec![4500], vec![6400]]);
    assert_eq!(b.launches, vec![4]);
    assert_eq!(
        b.queued[0],
        vec![(0, 0), (0, 1), (0, 2), (500, 3), (600, 4), (1000, 3), (1000, 2), (5000, 1), (7000, 0)]
    );
}

#[test]
fn with_githubs_write_window_the_third_jit_config_waits_for_the_window() {
    // No cap, boot 1000 ms, at most 2 JIT configs in any 60 s: four jobs at t=0.
    //   t=0      two JIT configs and launches (J0, J1), ready 1000: waits 1000.
    //   t=60000  the window lets two more through (the first two are 60 s old): J2, J3 ready at
    //            61000: waits 61000.
    let jobs = vec![job(0, 0, 10_000); 4];
    let limits = Limits { jit: vec![Limit::Window { max: 2, per_ms: 60_000 }], launch: vec![] };
    let b = run(vec![pool("p", None, 0)], jobs, Boot::fixed(1000), limits);
    assert_eq!(b.waits_ms, vec![vec![1000], vec![1000], vec![61_000], vec![61_000]]);
}

#[test]
fn with_an_ec2_token_bucket_launches_are_paced_one_per_refill() {
    // Bucket of 1 token, one more every 500 ms, boot 1000 ms: launches at 0, 500, 1000.
    let jobs = vec![job(0, 0, 10_000); 3];
    let limits = Limits { jit: vec![], launch: vec![Limit::Bucket { burst: 1, every_ms: 500 }] };
    let b = run(vec![pool("p", None, 0)], jobs, Boot::fixed(1000), limits);
    assert_eq!(b.waits_ms, vec![vec![1000], vec![1500], vec![2000]]);
}

#[test]
fn a_launch_waits_for_the_stricter_of_the_jit_and_launch_limits() {
    // JIT: 3 per 10 s. EC2: bucket of 2, one more every 1000 ms. Boot 1000 ms, 4 jobs at t=0.
    //   launch 1, 2 at t=0 (bucket 2 -> 0), ready 1000: waits 1000, 1000;
    //   launch 3 at t=1000 (the bucket's next token; JIT window has room), ready 2000: wait 2000;
    //   launch 4: the bucket allows 2000, but the JIT window holds 3 younger than 10 s until
    //   t=10000; ready 11000: wait 11000.
    let jobs = vec![job(0, 0, 60_000); 4];
    let limits = Limits {
        jit: vec![Limit::Window { max: 3, per_ms: 10_000 }],
        launch: vec![Limit::Bucket { burst: 2, every_ms: 1000 }],
    };
    let b = run(vec![pool("p", None, 0)], jobs, Boot::fixed(1000), limits);
    assert_eq!(b.waits_ms, vec![vec![1000], vec![1000], vec![2000], vec![11_000]]);
}

#[test]
fn a_shared_limit_serves_the_job_that_has_waited_longest_whatever_its_pool() {
    // One JIT config per second for both pools; boot 100 ms. Pool 0 is "b", pool 1 is "a".
    //   t=0     b0 launches, ready 100: wait 100.
    //   t=10    a0 arrives: no token until t=1000.  t=20  b1 arrives: no token either.
    //   t=1000  one token: a0 has waited longest (since 10), ready 1100: wait 1090.
    //   t=2000  b1, ready 2100: wait 2080.
    let jobs = vec![job(0, 0, 50_000), job(1, 10, 50_000), job(0, 20, 50_000)];
    let limits = Limits { jit: vec![Limit::Window { max: 1, per_ms: 1000 }], launch: vec![] };
    let input =
        Input { pools: vec![pool("b", None, 0), pool("a", None, 0)], jobs, boot: Boot::fixed(100), limits };
    let b = simulate(&input).unwrap();
    assert_eq!(b.waits_ms, vec![vec![100], vec![1090], vec![2080]]);
    assert_eq!(b.pool_waits(&input, 0), vec![100, 2080]);
    assert_eq!(b.pool_waits(&input, 1), vec![1090]);
    assert_eq!(b.all_waits(), vec![100, 1090, 2080]);
    assert_eq!(b.launches, vec![2, 1]);
}

#[test]
fn a_warm_pool_is_idle_at_the_start_and_topped_up_under_the_cap() {
    // Warm 2, cap 3, boot 1000 ms, jobs of 10 s at 0, 100, 200, 300.
    //   t=0      J0 takes a warm runner (wait 0); top-up launch A, ready 1000 (cap: 2 + 1).
    //   t=100    J1 takes the other warm runner (wait 0); at the cap, no top-up.
    //   t=200    J2 counts on A. t=300 J3: nothing coming, at the cap.
    //   t=1000   A is ready: J2 starts, wait 800.
    //   t=10000  J0 ends: launch B for J3 (jobs before top-ups), ready 11000.
    //   t=10100  J1 ends: top-up launch C, ready 11100.
    //   t=11000  J2 ends (before B is ready: finishes first): top-up launch D, ready 12000;
    //            then B is ready: J3 starts, wait 10700.
    let jobs = vec![job(0, 0, 10_000), job(0, 100, 10_000), job(0, 200, 10_000), job(0, 300, 10_000)];
    let b = run(vec![pool("p", Some(3), 2)], jobs, Boot::fixed(1000), Limits::default());
    assert_eq!(b.waits_ms, vec![vec![0], vec![0], vec![800], vec![10_700]]);
    assert_eq!(b.launches, vec![4]);
}

#[test]
fn a_warm_pool_larger_than_the_cap_is_cut_to_the_cap() {
    // Cap 1, warm 5: one warm runner. J0 takes it at once; J1 waits for J0's end (1000) and a
    // boot (500): starts 1500, wait 1500.
    let jobs = vec![job(0, 0, 1000), job(0, 0, 1000)];
    let b = run(vec![pool("p", Some(1), 5)], jobs, Boot::fixed(500), Limits::default());
    assert_eq!(b.waits_ms, vec![vec![0], vec![1500]]);
}

#[test]
fn an_empty_trace_has_no_waits_and_no_launches() {
    let b = run(vec![pool("p", Some(3), 0)], vec![], Boot::fixed(1000), Limits::default());
    assert!(b.waits_ms.is_empty());
    assert!(b.all_waits().is_empty());
    assert_eq!(b.launches, vec![0]);
    assert_eq!(b.queued, vec![vec![(0, 0)]]);
    let none = run(vec![], vec![], Boot::fixed(1000), Limits::default());
    assert_eq!(none, Bound::default());
}

#[test]
fn zero_duration_jobs_free_their_slot_the_instant_they_start() {
    // Cap 1, boot 1000 ms, three jobs of 0 ms at t=0: each starts, ends and frees the slot at
    // once, so the next boots right after: starts at 1000, 2000, 3000.
    let b = run(vec![pool("p", Some(1), 0)], vec![job(0, 0, 0); 3], Boot::fixed(1000), Limits::default());
    assert_eq!(b.waits_ms, vec![vec![1000], vec![2000], vec![3000]]);
    assert_eq!(b.launches, vec![3]);
}

#[test]
fn jobs_arriving_at_the_same_instant_start_in_input_order() {
    // Cap 1: the one runner goes to J0 first, then J1, then J2 (boot 100, jobs 1000).
    //   J0: ready 100, wait 100, ends 1100; J1: ready 1200, wait 1200, ends 2200; J2: 2300.
    let b = run(vec![pool("p", Some(1), 0)], vec![job(0, 0, 1000); 3], Boot::fixed(100), Limits::default());
    assert_eq!(b.waits_ms, vec![vec![100], vec![1200], vec![2300]]);
}

#[test]
fn each_attempt_of_a_rerun_job_arrives_when_the_previous_one_ends() {
    // 3 attempts of 2000 ms, boot 1000: starts at 1000, 4000, 7000, each after its own boot.
    let jobs = vec![
        Arrival { pool: 0, arrival_ms: 0, duration_ms: 2000, attempts: 3 },
        Arrival { pool: 0, arrival_ms: 0, duration_ms: 5, attempts: 0 },
    ];
    let b = run(vec![pool("p", None, 0)], jobs, Boot::fixed(1000), Limits::default());
    assert_eq!(b.waits_ms, vec![vec![1000, 1000, 1000], vec![]]);
    assert_eq!(b.launches, vec![3]);
}

#[test]
fn boot_times_are_the_instance_simulators_draws_by_launch_number() {
    // No cap, jobs far apart: each job gets the runner launched for it, whose boot is draw k.
    let range = DelayRange::new(1000, 2500);
    let boot = Boot { range, seed: 1 };
    let jobs: Vec<Arrival> = (0..20).map(|k| job(0, k * 10_000, 100)).collect();
    let b = run(vec![pool("p", None, 0)], jobs.clone(), boot, Limits::default());
    let expected: Vec<Vec<u64>> = (0..20u64).map(|k| vec![range.draw(1 ^ k).as_millis() as u64]).collect();
    assert_eq!(b.waits_ms, expected);
    assert!(b.all_waits().iter().all(|w| (1000..=2500).contains(w)));
    // Not all the same draw: the seed does vary the boots.
    assert!(b.all_waits().iter().any(|w| *w != b.all_waits()[0]));
    // Deterministic: the same input gives the same bound.
    assert_eq!(run(vec![pool("p", None, 0)], jobs, boot, Limits::default()), b);
}

#[test]
fn input_that_could_never_finish_is_refused() {
    let boot = Boot::fixed(1);
    let err = |pools: Vec<PoolSpec>, jobs: Vec<Arrival>, limits: Limits| {
        simulate(&Input { pools, jobs, boot, limits }).unwrap_err()
    };
    assert_eq!(
        err(vec![pool("p", None, 0)], vec![job(1, 0, 1)], Limits::default()),
        BoundError::UnknownPool { job: 0, pool: 1, pools: 1 }
    );
    assert_eq!(
        err(vec![pool("p", Some(0), 0)], vec![job(0, 0, 1)], Limits::default()),
        BoundError::ZeroCap("p".into())
    );
    let closed = Limit::Window { max: 0, per_ms: 1000 };
    assert_eq!(
        err(vec![pool("p", None, 0)], vec![job(0, 0, 1)], Limits { jit: vec![closed], launch: vec![] }),
        BoundError::ClosedLimit(closed)
    );
    let closed = Limit::Bucket { burst: 0, every_ms: 1000 };
    assert_eq!(
        err(vec![pool("p", None, 0)], vec![job(0, 0, 1)], Limits { jit: vec![], launch: vec![closed] }),
        BoundError::ClosedLimit(closed)
    );
}

#[test]
fn a_trace_of_the_largest_size_with_a_tight_limit_runs_every_job_once() {
    // MAX_JOBS jobs at the same instant, no cap, 80 JIT configs a minute: the k-th launch
    // happens in minute k / 80 and boots in 1000 ms, so the last job starts 249 minutes and a
    // second after it arrived.
    let n = hangar_sim::trace::MAX_JOBS;
    let limits = Limits { jit: vec![Limit::Window { max: 80, per_ms: 60_000 }], launch: vec![] };
    let b = run(vec![pool("p", None, 0)], vec![job(0, 0, 1000); n], Boot::fixed(1000), limits);
    assert_eq!(b.launches, vec![n as u64]);
    assert!(b.waits_ms.iter().all(|w| w.len() == 1));
    let last = (n as u64 - 1) / 80 * 60_000 + 1000;
    assert_eq!(b.all_waits().iter().max(), Some(&last));
    assert_eq!(b.waits_ms[79], vec![1000]);
    assert_eq!(b.waits_ms[80], vec![61_000]);
}
