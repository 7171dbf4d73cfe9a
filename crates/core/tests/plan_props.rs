//! Properties of the counting planner on pools that fill, over random interleavings of
//! arrivals, duplicate and reordered webhooks, lost `in_progress` webhooks, runners stolen
//! within a pool and across two pools whose labels overlap, instances dying before and after
//! they register, spot reclaims, cancels and JIT outages. Every plan is checked as it is made
//! (`plan_support::Sim`): the cap holds, a launch never exceeds `need - free`, no running job
//! loses its runner, and planning again after carrying a plan out changes nothing. At the end,
//! with the faults stopped, every job runs (liveness) and the pools shrink to their warm targets.
//!
//! `HANGAR_PROPTEST_CASES` sets the number of cases (CI runs the default).

mod plan_support;

use plan_support::Sim;
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("HANGAR_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone)]
enum Op {
    Arrive { pool: usize, copies: usize },
    Deliver(usize),
    Boot { k: usize, tag_idle: bool },
    Assign { k: usize, lose_start: bool },
    Finish(usize),
    Cancel(usize),
    Kill(usize),
    Reconcile(usize),
    Tick(i64),
    JitOutage(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 1..3usize).prop_map(|(pool, copies)| Op::Arrive { pool, copies }),
        6 => any::<usize>().prop_map(Op::Deliver),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(k, tag_idle)| Op::Boot { k, tag_idle }),
        3 => (any::<usize>(), prop::bool::weighted(0.15)).prop_map(|(k, lose_start)| Op::Assign { k, lose_start }),
        2 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Kill),
        1 => (0..2usize).prop_map(Op::Reconcile),
        2 => (1..120i64).prop_map(Op::Tick),
        1 => prop::bool::weighted(0.2).prop_map(Op::JitOutage),
    ]
}

fn run(sim: &mut Sim, ops: &[Op]) {
    for o in ops {
        match *o {
            Op::Arrive { pool, copies } => {
                sim.arrive(pool, copies);
            }
            Op::Deliver(k) => sim.deliver(k),
            Op::Boot { k, tag_idle } => sim.boot(k, tag_idle),
            Op::Assign { k, lose_start } => sim.assign(k, lose_start),
            Op::Finish(k) => sim.finish(k),
            Op::Cancel(k) => sim.cancel(k),
            Op::Kill(k) => sim.kill(k),
            Op::Reconcile(p) => sim.reconcile(p),
            Op::Tick(s) => sim.tick(s),
            Op::JitOutage(on) => sim.jit_outage = on,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), ..ProptestConfig::default() })]

    /// Small caps, so the pools fill and jobs wait in the ledger.
    #[test]
    fn the_cap_holds_plans_are_idempotent_and_every_job_runs(
        cap_a in 1..4u32,
        cap_b in 1..4u32,
        warm_b in 0..2u32,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut sim = Sim::two_pools(cap_a, cap_b, warm_b.min(cap_b));
        run(&mut sim, &ops);
        let rounds = sim.drain(200);
        prop_assert!(rounds.is_some(), "jobs still wait: {} on GitHub, ledger {:?}", sim.gh_waiting(),
            sim.ledger.values().filter(|j| j.status == hangar_core::ledger::JobStatus::Queued).collect::<Vec<_>>());
        // With nothing queued and past every idle timeout, only the warm pools are left.
        for _ in 0..8 {
            sim.tick(300);
            sim.reconcile(0);
            sim.reconcile(1);
        }
        prop_assert_eq!(sim.live(0), 0);
        prop_assert_eq!(sim.live(1) as u32, warm_b.min(cap_b));
    }
}
