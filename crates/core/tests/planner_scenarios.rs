//! One table (or one scenario) per planner rule, with plain values.

mod planner_support;

use chrono::{TimeZone, Utc};
use hangar_core::ids::{InstanceId, JobId, RunnerId};
use hangar_core::metrics::names;
use hangar_core::planner::{
    metric_names, plan, warm_target, Action, DeadClaim, Plan, PlanInput, TerminateReason,
};
use hangar_core::ports::LaunchReason;
use hangar_core::state::{Ec2State, Lifecycle, ObservedInstance};
use planner_support::*;

fn batch(
    pool: &hangar_core::config::PoolConfig,
    w: &World,
    msgs: &[hangar_core::message::QueueMessage],
) -> Plan {
    plan(&PlanInput::batch(pool, &w.instances, msgs, t0()))
}

fn reconcile(pool: &hangar_core::config::PoolConfig, w: &World) -> Plan {
    plan(&PlanInput::reconcile(pool, &w.instances, Some(&w.runners), Some(&w.params), t0()))
}

fn launches(p: &Plan, reason: LaunchReason) -> (u32, Vec<JobId>) {
    p.actions.iter().fold((0, vec![]), |(n, mut jobs), a| match a {
        Action::Launch { count, reason: r, jobs: j, .. } if *r == reason => {
            jobs.extend(j);
            (n + count, jobs)
        }
        _ => (n, jobs),
    })
}

/// (job, dead or displaced instance) of each `Replace`.
fn replacements(p: &Plan) -> Vec<(JobId, InstanceId)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Replace { job, dead, .. } => Some((*job, dead.clone())),
            _ => None,
        })
        .collect()
}

fn terminated(p: &Plan, reason: TerminateReason) -> Vec<InstanceId> {
    p.actions
        .iter()
        .flat_map(|a| match a {
            Action::Terminate { ids, reason: r } if *r == reason => ids.clone(),
            _ => vec![],
        })
        .collect()
}

fn ids(ns: &[u64]) -> Vec<InstanceId> {
    ns.iter().map(|n| iid(*n)).collect()
}

fn jobs(ns: &[u64]) -> Vec<JobId> {
    ns.iter().map(|n| JobId(*n)).collect()
}

#[test]
fn queued_jobs_launch_only_what_free_capacity_does_not_cover() {
    use Lifecycle::*;
    // (case, max, warm, instances, queued jobs, expected job launches, expected unserved, earmarked)
    type Case = (&'static str, u32, u32, Vec<ObservedInstance>, Vec<u64>, Vec<u64>, Vec<u64>, usize);
    let cases: Vec<Case> = vec![
        ("empty pool launches one per job", 10, 0, vec![], vec![1, 2, 3], vec![1, 2, 3], vec![], 0),
        ("free idle covers a job", 10, 0, vec![inst(1, Idle, 60)], vec![7], vec![], vec![], 1),
        ("free pending covers a job", 10, 0, vec![inst(1, Pending, 10)], vec![7], vec![], vec![], 1),
        ("busy runners do not cover", 10, 0, vec![inst(1, Busy, 60).job(5)], vec![7], vec![7], vec![], 0),
        (
            "capacity earmarked for another job does not cover",
            10,
            0,
            vec![inst(1, Pending, 10).job(5)],
            vec![7],
            vec![7],
            vec![],
            0,
        ),
        ("duplicates in one batch launch once", 10, 0, vec![], vec![4, 4, 4, 9, 9], vec![4, 9], vec![], 0),
        (
            "a job already on an instance launches nothing",
            10,
            0,
            vec![inst(1, Pending, 10).job(4), inst(2, Busy, 90).job(9)],
            vec![4, 9],
            vec![],
            vec![],
            0,
        ),
        (
            "a job whose instance is already terminated launches nothing",
            10,
            0,
            vec![inst(1, Busy, 900).job(4).ec2(Ec2State::Terminated)],
            vec![4],
            vec![],
            vec![],
            0,
        ),
        (
            "cap counts pending, idle, busy, draining and stopped",
            5,
            0,
            vec![
                inst(1, Pending, 10).job(50),
                inst(2, Idle, 10).job(51),
                inst(3, Busy, 10),
                inst(4, Draining, 10),
                inst(5, Idle, 10).job(52).ec2(Ec2State::Stopped),
                inst(6, Idle, 10).ec2(Ec2State::Terminated),
                inst(7, Idle, 10).ec2(Ec2State::ShuttingDown),
            ],
            vec![1],
            vec![],
            vec![1],
            0,
        ),
        ("partial headroom", 3, 0, vec![inst(1, Busy, 10)], vec![1, 2, 3], vec![1, 2], vec![3], 0),
        (
            "idle first, then launch the rest",
            10,
            0,
            vec![inst(1, Idle, 100), inst(2, Pending, 5)],
            vec![1, 2, 3, 4],
            vec![3, 4],
            vec![],
            2,
        ),
        (
            "stopped instances serve nothing",
            10,
            0,
            vec![inst(1, Idle, 10).ec2(Ec2State::Stopped)],
            vec![1],
            vec![1],
            vec![],
            0,
        ),
        (
            "interrupted idle serves nothing",
            10,
            0,
            vec![inst(1, Idle, 10).interrupted()],
            vec![1],
            vec![1],
            vec![],
            0,
        ),
    ];
    for (case, max, warm, instances, q, want_jobs, want_unserved, want_earmarks) in cases {
        let pool = pool(max, warm);
        let w = World::new(instances);
        let msgs: Vec<_> = q.iter().map(|j| queued(*j)).collect();
        let p = batch(&pool, &w, &msgs);
        let (n, launched) = launches(&p, LaunchReason::Job);
        assert_eq!(launched, jobs(&want_jobs), "{case}: {p:#?}");
        assert_eq!(n as usize, want_jobs.len(), "{case}");
        assert_eq!(p.unserved, jobs(&want_unserved), "{case}");
        let earmarks = p.actions.iter().filter(|a| matches!(a, Action::Earmark { job: Some(_), .. })).count();
        assert_eq!(earmarks, want_earmarks, "{case}: {p:#?}");
        assert_eq!(
            p.metric(names::POOL_EXHAUSTED),
            Some((want_jobs.len() + want_unserved.len()) as f64),
            "{case}"
        );
        if !want_unserved.is_empty() {
            assert_eq!(p.metric(metric_names::POOL_AT_MAX), Some(want_unserved.len() as f64), "{case}");
        }
        let mut after = w.clone();
        after.apply(&p.actions, t0());
        assert!(after.counted() <= max as usize, "{case}: cap exceeded");
    }
}

#[test]
fn the_same_batch_twice_launches_nothing_more() {
    let pool = pool(10, 0);
    let mut w = World::new(vec![inst(1, Lifecycle::Idle, 30)]);
    let msgs = vec![queued(1), queued(2), queued(3)];
    let first = batch(&pool, &w, &msgs);
    assert_eq!(first.launch_count(), 2);
    w.apply(&first.actions, t0());
    let second = batch(&pool, &w, &msgs);
    assert!(second.is_noop(), "{second:#?}");
    // A batch that only overlaps launches only for the new job.
    let third = batch(&pool, &w, &[queued(3), queued(4)]);
    assert_eq!(launches(&third, LaunchReason::Job).1, jobs(&[4]));
}

#[test]
fn launch_keys_are_stable_per_job_set() {
    let pool = pool(10, 0);
    let w = World::new(vec![]);
    let key = |p: &Plan| {
        p.actions
            .iter()
            .find_map(|a| match a {
                Action::Launch { idempotency_key, .. } => Some(idempotency_key.clone()),
                _ => None,
            })
            .unwrap()
    };
    let a = key(&batch(&pool, &w, &[queued(1), queued(2)]));
    let b = key(&batch(&pool, &w, &[queued(2), queued(1), queued(2)]));
    let c = key(&batch(&pool, &w, &[queued(1), queued(3)]));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.len() <= 64 && a.is_ascii());
}

#[test]
fn warm_target_follows_schedule_windows_in_the_pool_timezone() {
    let mut cfg = pool(20, 1).warm_pool;
    cfg.timezone = "Europe/Berlin".into();
    cfg.schedule = vec![
        window(&["mon", "tue", "wed", "thu", "fri"], "08:00", "18:00", 5),
        window(&[], "12:00", "13:00", 8),
    ];
    let at = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
    // (case, UTC time, expected). Berlin is UTC+1 in winter, UTC+2 in summer.
    let cases = [
        ("Monday 06:59 UTC = 07:59 Berlin: before the window", at(2026, 1, 5, 6, 59), 1),
        ("Monday 07:00 UTC = 08:00 Berlin: from is inclusive", at(2026, 1, 5, 7, 0), 5),
        ("Monday 16:59 UTC = 17:59 Berlin", at(2026, 1, 5, 16, 59), 5),
        ("Monday 17:00 UTC = 18:00 Berlin: to is exclusive", at(2026, 1, 5, 17, 0), 1),
        ("overlapping windows: the largest wins", at(2026, 1, 5, 11, 30), 8),
        ("Saturday noon Berlin: only the every-day window", at(2026, 1, 10, 11, 15), 8),
        ("Saturday morning: default", at(2026, 1, 10, 8, 0), 1),
        ("summer time: 06:00 UTC = 08:00 Berlin", at(2026, 7, 6, 6, 0), 5),
        ("Sunday 23:30 UTC = Monday 00:30 Berlin: weekday is local", at(2026, 1, 4, 23, 30), 1),
    ];
    for (case, now, want) in cases {
        assert_eq!(warm_target(&cfg, 20, now), want, "{case}");
    }
    assert_eq!(warm_target(&cfg, 3, at(2026, 1, 5, 11, 30)), 3, "clamped to max_runners");
}

#[test]
fn warm_pool_is_topped_up_to_target_within_the_cap() {
    use Lifecycle::*;
    // (case, max, warm, instances, queued, warm launches expected)
    type Case = (&'static str, u32, u32, Vec<ObservedInstance>, Vec<u64>, u32);
    let cases: Vec<Case> = vec![
        ("empty pool", 10, 3, vec![], vec![], 3),
        (
            "one idle, one pending count as warm",
            10,
            3,
            vec![inst(1, Idle, 60), inst(2, Pending, 5)],
            vec![],
            1,
        ),
        (
            "busy and earmarked are not warm",
            10,
            2,
            vec![inst(1, Busy, 60), inst(2, Pending, 5).job(9)],
            vec![],
            2,
        ),
        ("a queued job takes a warm runner, which is replaced", 10, 1, vec![inst(1, Idle, 60)], vec![7], 1),
        ("cap limits the top-up", 3, 5, vec![inst(1, Busy, 60)], vec![], 2),
        ("jobs go before warm capacity", 3, 5, vec![inst(1, Busy, 60)], vec![1], 1),
        ("at target: nothing", 10, 2, vec![inst(1, Idle, 60), inst(2, Idle, 60)], vec![], 0),
    ];
    for (case, max, warm, instances, q, want) in cases {
        let pool = pool(max, warm);
        let w = World::new(instances);
        let msgs: Vec<_> = q.iter().map(|j| queued(*j)).collect();
        let p = batch(&pool, &w, &msgs);
        assert_eq!(launches(&p, LaunchReason::WarmPool).0, want, "{case}: {p:#?}");
        assert_eq!(p.metric(names::POOL_TARGET), Some(warm.min(max) as f64), "{case}");
        if msgs.is_empty() {
            // Reconcile tops up the same way.
            let r = plan(&PlanInput::reconcile(&pool, &w.instances, Some(&[]), Some(&[]), t0()));
            assert_eq!(launches(&r, LaunchReason::WarmPool).0, want, "{case}: {r:#?}");
        }
    }
}

#[test]
fn idle_runners_above_target_are_trimmed_after_the_idle_timeout_oldest_first() {
    use Lifecycle::*;
    // idle_timeout is 600 s.
    // (case, warm, instances, expected terminated)
    let cases: Vec<(&str, u32, Vec<ObservedInstance>, Vec<u64>)> = vec![
        (
            "oldest idle above target",
            1,
            vec![inst(1, Idle, 700), inst(2, Idle, 900), inst(3, Idle, 800)],
            vec![2, 3],
        ),
        ("young idle are kept even above target", 0, vec![inst(1, Idle, 599), inst(2, Idle, 601)], vec![2]),
        ("at target nothing goes", 2, vec![inst(1, Idle, 7000), inst(2, Idle, 7000)], vec![]),
        ("busy never goes", 0, vec![inst(1, Busy, 7000).job(3), inst(2, Busy, 7000)], vec![]),
        (
            "pending count toward target but are not trimmed",
            1,
            vec![inst(1, Pending, 100), inst(2, Idle, 7000)],
            vec![2],
        ),
        (
            "a stale earmark frees its runner",
            0,
            vec![inst(1, Idle, 700).job(4), inst(2, Idle, 100).job(5)],
            vec![1],
        ),
    ];
    for (case, warm, instances, want) in cases {
        let pool = pool(20, warm);
        let w = World::new(instances);
        let p = reconcile(&pool, &w);
        let mut got = terminated(&p, TerminateReason::IdleTimeout);
        got.sort();
        assert_eq!(got, ids(&want), "{case}: {p:#?}");
        if !want.is_empty() {
            assert_eq!(p.metric(metric_names::IDLE_TERMINATED), Some(want.len() as f64));
        }
        // The hot path never trims.
        assert!(terminated(&batch(&pool, &w, &[]), TerminateReason::IdleTimeout).is_empty(), "{case}");
    }
}

#[test]
fn instances_that_never_came_up_are_terminated_after_the_boot_timeout() {
    use Lifecycle::*;
    let n1 = runner_name(1);
    // boot_timeout is 300 s. (case, instance, runners, runners known, expected terminated)
    let cases = vec![
        ("pending past the timeout, unknown to GitHub", inst(1, Pending, 301), vec![], true, true),
        ("pending within the timeout", inst(1, Pending, 299), vec![], true, false),
        (
            "pending, runner registered and online: alive",
            inst(1, Pending, 3000),
            vec![registered(1, n1.clone(), true, false)],
            true,
            false,
        ),
        (
            "pending, runner busy: alive",
            inst(1, Pending, 3000),
            vec![registered(1, n1.clone(), true, true)],
            true,
            false,
        ),
        (
            "pending, runner registered but offline",
            inst(1, Pending, 3000),
            vec![registered(1, n1.clone(), false, false)],
            true,
            true,
        ),
        ("tagged idle is alive", inst(1, Idle, 400), vec![], true, false),
        ("earmarked pending too", inst(1, Pending, 400).job(5), vec![], true, true),
        ("without GitHub's runner list nothing is judged", inst(1, Pending, 3000), vec![], false, false),
    ];
    for (case, i, runners, known, want) in cases {
        let pool = pool(10, 0);
        let mut w = World::new(vec![i]);
        w.runners = runners;
        let p = plan(&PlanInput::reconcile(
            &pool,
            &w.instances,
            known.then_some(&w.runners[..]),
            Some(&[]),
            t0(),
        ));
        let got = terminated(&p, TerminateReason::BootTimeout);
        assert_eq!(got, if want { ids(&[1]) } else { vec![] }, "{case}: {p:#?}");
        if want {
            assert_eq!(p.metric(names::ORPHANS_TERMINATED), Some(1.0), "{case}");
        }
        assert!(batch(&pool, &w, &[]).is_noop(), "{case}: the hot path never judges boot");
    }
}

#[test]
fn the_boot_clock_starts_when_the_jit_config_was_written() {
    // Launched 400 s ago (boot timeout 300), but GitHub's rate limit held its JIT config back
    // until 100 s ago: it has had 100 s to boot, and its runner may be registering right now.
    let pool = pool(10, 0);
    let w = World::new(vec![inst(1, Lifecycle::Pending, 400).job(5)]);
    let late = [param(1, Some(POOL), Some(100))];
    let p = plan(&PlanInput::reconcile(&pool, &w.instances, Some(&[]), Some(&late), t0()));
    assert!(terminated(&p, TerminateReason::BootTimeout).is_empty(), "{p:#?}");
    // Written 400 s ago and still unread: the boot agent never came up.
    let stale = [param(1, Some(POOL), Some(400))];
    let p = plan(&PlanInput::reconcile(&pool, &w.instances, Some(&[]), Some(&stale), t0()));
    assert_eq!(terminated(&p, TerminateReason::BootTimeout), ids(&[1]));
    // It dies holding job 5's earmark, having run nothing: reconcile asks for a replacement.
    assert_eq!(p.dead_claims.len(), 1, "{p:#?}");
    assert_eq!((p.dead_claims[0].job, p.dead_claims[0].instance.clone()), (JobId(5), iid(1)));
}

#[test]
fn offline_runners_hangar_named_are_deregistered_when_their_instance_is_gone() {
    use Lifecycle::*;
    let other_pool = hangar_core::ids::RunnerName::for_instance(&"gpu".into(), &iid(9));
    // (case, runner, params, expected deregistered)
    let cases = vec![
        ("offline, instance terminated", registered(1, runner_name(2), false, false), vec![], true),
        ("offline, instance never listed", registered(1, runner_name(77), false, false), vec![], true),
        (
            "offline, not listed yet but its parameter is fresh",
            registered(1, runner_name(77), false, false),
            vec![param(77, Some(POOL), Some(30))],
            false,
        ),
        (
            "offline, not listed and its parameter is old",
            registered(1, runner_name(77), false, false),
            vec![param(77, Some(POOL), Some(3000))],
            true,
        ),
        (
            "offline but its instance is alive (booting)",
            registered(1, runner_name(1), false, false),
            vec![],
            false,
        ),
        (
            "online runner of a dead instance is left for GitHub",
            registered(1, runner_name(2), true, false),
            vec![],
            false,
        ),
        ("a runner Hangar did not name", registered(1, "my-laptop".into(), false, false), vec![], false),
        ("a look-alike name", registered(1, "hangar-linux-i-zz".into(), false, false), vec![], false),
        ("another pool's runner", registered(1, other_pool.clone(), false, false), vec![], false),
    ];
    for (case, r, params, want) in cases {
        let pool = pool(10, 0);
        let mut w = World::new(vec![inst(1, Pending, 10), inst(2, Busy, 900).ec2(Ec2State::Terminated)]);
        w.runners = vec![r.clone()];
        w.params = params;
        let p = reconcile(&pool, &w);
        let got: Vec<RunnerId> = p
            .actions
            .iter()
            .flat_map(|a| match a {
                Action::DeregisterRunners { runners } => runners.iter().map(|r| r.id).collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(got, if want { vec![r.id] } else { vec![] }, "{case}: {p:#?}");
    }
}

#[test]
fn jit_parameters_are_deleted_when_their_instance_is_gone() {
    use Lifecycle::*;
    // (case, parameter, expected deleted)
    let cases = vec![
        ("instance alive", param(1, Some(POOL), Some(9000)), false),
        ("instance terminated", param(2, Some(POOL), Some(30)), true),
        ("instance never listed, old", param(50, Some(POOL), Some(3000)), true),
        ("instance never listed, no date", param(50, Some(POOL), None), true),
        ("instance not listed yet, fresh", param(50, Some(POOL), Some(60)), false),
        ("another pool's parameter", param(50, Some("gpu"), Some(9000)), false),
        ("untagged parameter", param(50, None, Some(9000)), false),
    ];
    for (case, prm, want) in cases {
        let pool = pool(10, 0);
        let mut w = World::new(vec![inst(1, Pending, 10), inst(2, Busy, 900).ec2(Ec2State::Terminated)]);
        w.params = vec![prm.clone()];
        let p = reconcile(&pool, &w);
        let got: Vec<InstanceId> = p
            .actions
            .iter()
            .flat_map(|a| match a {
                Action::DeleteParameters { ids } => ids.clone(),
                _ => vec![],
            })
            .collect();
        assert_eq!(got, if want { vec![prm.instance_id.clone()] } else { vec![] }, "{case}");
        if want {
            assert_eq!(p.metric(metric_names::JIT_PARAMETERS_DELETED), Some(1.0));
        }
    }
}

#[test]
fn terminating_an_instance_also_removes_its_parameter_and_runner_so_a_second_run_is_quiet() {
    use Lifecycle::*;
    let pool = pool(10, 1);
    let mut w = World::new(vec![
        inst(1, Pending, 3000), // never came up
        inst(2, Idle, 3000),    // warm, kept (target 1)
        inst(3, Idle, 4000),    // idle above target, trimmed
        inst(4, Busy, 900).job(4).ec2(Ec2State::Terminated),
        inst(5, Draining, 10),
    ]);
    w.runners = vec![
        registered(1, runner_name(1), false, false),
        registered(3, runner_name(3), true, false),
        registered(4, runner_name(4), false, false),
    ];
    w.params = vec![param(1, Some(POOL), Some(3000)), param(4, Some(POOL), Some(900))];
    let first = reconcile(&pool, &w);
    assert_eq!(terminated(&first, TerminateReason::BootTimeout), ids(&[1]));
    assert_eq!(terminated(&first, TerminateReason::IdleTimeout), ids(&[3]));
    assert_eq!(terminated(&first, TerminateReason::Draining), ids(&[5]));
    assert_eq!(first.launch_count(), 0);
    w.apply(&first.actions, t0());
    assert!(w.params.is_empty(), "{:?}", w.params);
    assert!(w.runners.is_empty(), "{:?}", w.runners);
    let second = reconcile(&pool, &w);
    assert!(second.is_noop(), "{second:#?}");
}

#[test]
fn job_events_tag_busy_move_earmarks_and_release_finished_instances() {
    use Lifecycle::*;
    let pool = pool(10, 0);
    let w = World::new(vec![
        inst(1, Idle, 100).job(10), // earmarked for job 10
        inst(2, Idle, 100).job(20), // earmarked for job 20
        inst(3, Busy, 100).job(30),
        inst(4, Pending, 100),
    ]);
    // Job 20 starts on the runner earmarked for 10: 10's claim moves to instance 2.
    let p = batch(&pool, &w, &[started(20, Some(runner_name(1)))]);
    assert_eq!(
        p.actions,
        vec![
            Action::TagBusy { instance: iid(1), job: JobId(20) },
            Action::Earmark { instance: iid(2), lifecycle: Idle, job: Some(JobId(10)) },
        ]
    );
    // A job that started on a runner outside the pool frees its earmark.
    let p = batch(&pool, &w, &[started(20, Some("someone-else".into()))]);
    assert_eq!(p.actions, vec![Action::Earmark { instance: iid(2), lifecycle: Idle, job: None }]);
    // A job cancelled while queued frees its earmark too.
    let p = batch(&pool, &w, &[completed(10, None, "cancelled", 1)]);
    assert_eq!(p.actions, vec![Action::Earmark { instance: iid(1), lifecycle: Idle, job: None }]);
    // Job 40 takes the free pending runner 4; nothing else changes.
    let p = batch(&pool, &w, &[started(40, Some(runner_name(4)))]);
    assert_eq!(p.actions, vec![Action::TagBusy { instance: iid(4), job: JobId(40) }]);
    // Job 20 takes 1 and no instance was earmarked for it: job 10 needs a new runner, launched
    // as a replacement of instance 1, with a claim queued in case the launch fails.
    let w2 = World::new(vec![inst(1, Idle, 100).job(10)]);
    let p = batch(&pool, &w2, &[started(20, Some(runner_name(1)))]);
    assert_eq!(launches(&p, LaunchReason::Job).0, 0);
    assert_eq!(replacements(&p), vec![(JobId(10), iid(1))]);
    assert_eq!(p.dead_claims, vec![DeadClaim { job: JobId(10), instance: iid(1), displaced: true }]);
    // Completion releases the instance, found by runner name or by the job on it.
    for msg in [completed(30, Some(runner_name(3)), "success", 1), completed(30, None, "success", 1)] {
        let p = batch(&pool, &w, &[msg]);
        assert_eq!(
            p.actions,
            vec![Action::Terminate { ids: ids(&[3]), reason: TerminateReason::JobCompleted }]
        );
    }
    // Queued, started and completed in one batch: nothing to launch, the runner is released.
    let p = batch(
        &pool,
        &w,
        &[queued(50), started(50, Some(runner_name(4))), completed(50, Some(runner_name(4)), "success", 1)],
    );
    assert_eq!(p.actions, vec![Action::Terminate { ids: ids(&[4]), reason: TerminateReason::JobCompleted }]);
}

#[test]
fn spot_interrupted_busy_runner_whose_job_fails_is_rerun_within_bounds() {
    use Lifecycle::*;
    let busy_interrupted = inst(1, Busy, 100).job(5).interrupted();
    // (case, instance, completion, max_spot_reruns, expect a rerun)
    let cases = vec![
        (
            "failure, first attempt",
            busy_interrupted.clone(),
            completed(5, Some(runner_name(1)), "failure", 1),
            1,
            true,
        ),
        (
            "cancelled counts as killed",
            busy_interrupted.clone(),
            completed(5, Some(runner_name(1)), "cancelled", 1),
            1,
            true,
        ),
        (
            "instance already reclaimed",
            busy_interrupted.clone().ec2(Ec2State::Terminated),
            completed(5, Some(runner_name(1)), "failure", 1),
            1,
            true,
        ),
        ("found by job id", busy_interrupted.clone(), completed(5, None, "failure", 1), 1, true),
        (
            "bound reached",
            busy_interrupted.clone(),
            completed(5, Some(runner_name(1)), "failure", 2),
            1,
            false,
        ),
        (
            "bound 2 allows attempt 2",
            busy_interrupted.clone(),
            completed(5, Some(runner_name(1)), "failure", 2),
            2,
            true,
        ),
        (
            "rerun disabled",
            busy_interrupted.clone(),
            completed(5, Some(runner_name(1)), "failure", 1),
            0,
            false,
        ),
        (
            "success is not rerun",
            busy_interrupted.clone(),
            completed(5, Some(runner_name(1)), "success", 1),
            1,
            false,
        ),
        (
            "not interrupted",
            inst(1, Busy, 100).job(5),
            completed(5, Some(runner_name(1)), "failure", 1),
            1,
            false,
        ),
    ];
    for (case, i, msg, bound, want) in cases {
        let mut pool = pool(10, 0);
        pool.max_spot_reruns = bound;
        let w = World::new(vec![i]);
        // The same completion twice in one batch re-runs once.
        let p = batch(&pool, &w, &[msg.clone(), msg]);
        let reruns: Vec<_> = p.actions.iter().filter(|a| matches!(a, Action::RerunJob { .. })).collect();
        assert_eq!(reruns.len(), want as usize, "{case}: {p:#?}");
        if want {
            assert!(matches!(reruns[0], Action::RerunJob { job: JobId(5), .. }));
            assert_eq!(p.metric(metric_names::SPOT_RERUNS), Some(1.0));
        }
    }
}

#[test]
fn interrupted_idle_runner_is_terminated_and_its_job_moves_to_free_capacity() {
    use Lifecycle::*;
    let pool = pool(10, 0);
    let w = World::new(vec![
        inst(1, Idle, 100).job(5).interrupted(),
        inst(2, Pending, 10),
        inst(3, Busy, 100).interrupted(),
    ]);
    let p = batch(&pool, &w, &[]);
    assert_eq!(
        terminated(&p, TerminateReason::SpotInterrupted),
        ids(&[1]),
        "busy interrupted stays until its job ends"
    );
    assert!(p.actions.contains(&Action::Earmark {
        instance: iid(2),
        lifecycle: Pending,
        job: Some(JobId(5))
    }));
    assert_eq!(p.launch_count(), 0, "the job had its launch");
}

#[test]
fn stopped_instances_are_terminated_by_reconcile_unless_busy() {
    use Lifecycle::*;
    let pool = pool(10, 0);
    let w = World::new(vec![
        inst(1, Idle, 400).ec2(Ec2State::Stopped),
        inst(2, Busy, 400).job(3).ec2(Ec2State::Stopped),
        inst(3, Idle, 100).ec2(Ec2State::Stopping),
    ]);
    let p = reconcile(&pool, &w);
    assert_eq!(terminated(&p, TerminateReason::Stopped), ids(&[1]));
    assert_eq!(p.terminated().count(), 1);
}

#[test]
fn terminations_free_slots_for_launches_in_the_same_plan() {
    use Lifecycle::*;
    let pool = pool(2, 0);
    let w = World::new(vec![inst(1, Busy, 100).job(1), inst(2, Busy, 100).job(2)]);
    let p = batch(&pool, &w, &[completed(1, Some(runner_name(1)), "success", 1), queued(3)]);
    // Terminate comes before the launch it makes room for.
    let term = p.actions.iter().position(|a| matches!(a, Action::Terminate { .. })).unwrap();
    let launch = p.actions.iter().position(|a| matches!(a, Action::Launch { .. })).unwrap();
    assert!(term < launch, "{p:#?}");
    assert_eq!(launches(&p, LaunchReason::Job).1, jobs(&[3]));
}

#[test]
fn gauges_describe_the_pool_after_the_plan() {
    use Lifecycle::*;
    let pool = pool(10, 2);
    let w = World::new(vec![
        inst(1, Idle, 10),
        inst(2, Busy, 10),
        inst(3, Busy, 10),
        inst(4, Pending, 10).job(9),
    ]);
    let p = batch(&pool, &w, &[queued(1)]);
    // Job 1 takes idle 1; warm target 2 with no free runner left: 2 warm launches.
    assert_eq!(p.metric(names::POOL_IDLE), Some(1.0));
    assert_eq!(p.metric(names::POOL_BUSY), Some(2.0));
    assert_eq!(p.metric(names::POOL_PENDING), Some(3.0));
    assert_eq!(p.metric(names::POOL_TARGET), Some(2.0));
    assert_eq!(p.metric(names::POOL_EXHAUSTED), Some(0.0));
    assert!(p.metrics.iter().all(|m| m.pool.as_ref().map(|p| p.as_str()) == Some(POOL)));
}

#[test]
fn messages_and_instances_of_other_pools_are_ignored() {
    let pool = pool(10, 0);
    let mut foreign = inst(1, Lifecycle::Idle, 10);
    foreign.pool = "gpu".into();
    let w = World::new(vec![foreign]);
    let mut msg = queued(1);
    if let hangar_core::message::QueueMessage::ScaleUp(j) = &mut msg {
        j.pool = "gpu".into();
    }
    let p = batch(&pool, &w, &[msg, queued(2)]);
    assert_eq!(launches(&p, LaunchReason::Job).1, jobs(&[2]), "{p:#?}");
    assert_eq!(p.metric(names::POOL_IDLE), Some(0.0));
}

#[test]
fn stale_earmarks_on_long_idle_runners_are_cleared_by_reconcile() {
    use Lifecycle::*;
    let pool = pool(10, 5);
    let w =
        World::new(vec![inst(1, Idle, 700).job(4), inst(2, Idle, 100).job(5), inst(3, Pending, 700).job(6)]);
    let p = plan(&PlanInput::reconcile(&pool, &w.instances, None, None, t0()));
    // Within the warm target the runner stays, now free; young earmarks and pending ones stay.
    assert!(p.actions.contains(&Action::Earmark { instance: iid(1), lifecycle: Idle, job: None }), "{p:#?}");
    assert_eq!(p.terminated().count(), 0);
    assert_eq!(launches(&p, LaunchReason::WarmPool).0, 4);
    assert!(batch(&pool, &w, &[]).actions.iter().all(|a| !matches!(a, Action::Earmark { .. })));
}

#[test]
fn reconcile_ignores_messages() {
    let pool = pool(10, 0);
    let w = World::new(vec![inst(1, Lifecycle::Busy, 100).job(1)]);
    let msgs = [queued(2), completed(1, Some(runner_name(1)), "success", 1)];
    let p =
        plan(&PlanInput { messages: &msgs, ..PlanInput::reconcile(&pool, &w.instances, None, None, t0()) });
    assert!(p.is_noop(), "{p:#?}");
}

#[test]
fn a_finished_instance_whose_tags_missed_its_job_is_tagged_before_it_goes() {
    use Lifecycle::*;
    let pool = pool(1, 0);
    // Instance 2 was earmarked for job 3, but job 5 ran on it (its start was never seen).
    let mut w = World::new(vec![inst(2, Pending, 100).job(3)]);
    let msgs = [completed(5, Some(runner_name(2)), "success", 1), queued(3)];
    let first = batch(&pool, &w, &msgs);
    assert_eq!(
        first.actions[..2],
        [
            Action::TagBusy { instance: iid(2), job: JobId(5) },
            Action::Terminate { ids: ids(&[2]), reason: TerminateReason::JobCompleted },
        ],
        "{first:#?}"
    );
    // Job 3 lost its runner and gets a launch in the slot the finished instance frees (a
    // replacement of it, its claim queued too).
    assert_eq!(launches(&first, LaunchReason::Job).0, 0);
    assert_eq!(replacements(&first), vec![(JobId(3), iid(2))]);
    assert_eq!(first.dead_claims, vec![DeadClaim { job: JobId(3), instance: iid(2), displaced: true }]);
    w.apply(&first.actions, t0());
    assert!(batch(&pool, &w, &msgs).is_noop());
}

#[test]
fn a_job_that_finished_earlier_in_the_batch_inherits_no_earmark() {
    use Lifecycle::*;
    let pool = pool(1, 0);
    // Job 1 finished on a runner outside the pool; job 8 then starts on the draining instance
    // 4, which still carries job 1's id. Instance 5's earmark for job 8 must be freed, not
    // handed to job 1.
    let w = World::new(vec![inst(4, Draining, 10).job(1), inst(5, Pending, 10).job(8)]);
    let p = batch(
        &pool,
        &w,
        &[completed(1, Some("gh-hosted-1".into()), "success", 1), started(8, Some(runner_name(4)))],
    );
    assert!(
        p.actions.contains(&Action::Earmark { instance: iid(5), lifecycle: Pending, job: None }),
        "{p:#?}"
    );
}

#[test]
fn a_job_whose_earmark_is_taken_at_the_cap_gets_a_claim_that_a_later_batch_serves() {
    use Lifecycle::*;
    let pool = pool(1, 0);
    // Job 10's runner is taken by job 20, which had no earmark; the pool is full.
    let mut w = World::new(vec![inst(1, Idle, 100).job(10)]);
    // A stale label on a dead instance would read as job 10's launch to a plain `ScaleUp`.
    w.instances.push(inst(2, Pending, 100).job(10).ec2(Ec2State::Terminated));
    let p = batch(&pool, &w, &[started(20, Some(runner_name(1)))]);
    assert_eq!(p.actions, vec![Action::TagBusy { instance: iid(1), job: JobId(20) }]);
    assert_eq!(p.unserved, jobs(&[10]));
    let claim = DeadClaim { job: JobId(10), instance: iid(1), displaced: true };
    assert_eq!(p.dead_claims, vec![claim.clone()]);
    assert_eq!(p.metric(metric_names::EARMARKS_DISPLACED), Some(1.0));
    assert_eq!(p.metric(metric_names::DEAD_EARMARKS), None);
    w.apply(&p.actions, t0());

    // The requeued `ScaleUp` alone finds the dead label and launches nothing: the claim is what
    // remembers the job.
    let mut free = w.clone();
    free.instances[0].ec2_state = Ec2State::Terminated; // job 20 finished; capacity is back
    assert_eq!(launches(&batch(&pool, &free, &[queued(10)]), LaunchReason::Job).0, 0);
    let later = plan(
        &PlanInput::batch(&pool, &free.instances, &[queued(10)], t0())
            .with_dead_claims(std::slice::from_ref(&claim)),
    );
    let replaced: Vec<_> = later
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Replace { job, dead, .. } => Some((*job, dead.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(replaced, vec![(JobId(10), iid(1))]);
    assert_eq!(later.launch_count(), 1, "the ScaleUp adds nothing to the replacement: {later:#?}");

    // Still full: the claim waits (and the scaler requeues it).
    let full = plan(
        &PlanInput::batch(&pool, &w.instances, &[], t0()).with_dead_claims(std::slice::from_ref(&claim)),
    );
    assert_eq!(full.launch_count(), 0);
    assert_eq!(full.unserved, jobs(&[10]));
    assert!(full.dead_claims.is_empty(), "a waiting claim is requeued, not claimed again: {full:#?}");

    // Moot once served: the job has a live earmark elsewhere.
    let mut served = free.clone();
    served.instances.push(inst(3, Pending, 10).job(10));
    let p = plan(
        &PlanInput::batch(&pool, &served.instances, &[], t0()).with_dead_claims(std::slice::from_ref(&claim)),
    );
    assert_eq!(p.launch_count(), 0);
    assert!(p.unserved.is_empty());
    // Moot if the start that took the runner was never applied: it still holds job 10 (a
    // live earmark, as above).
    let untouched = World::new(vec![inst(1, Idle, 100).job(10)]);
    let p = plan(
        &PlanInput::batch(&pool, &untouched.instances, &[], t0())
            .with_dead_claims(std::slice::from_ref(&claim)),
    );
    assert!(p.actions.is_empty() && p.unserved.is_empty(), "{p:#?}");
}

/// Below the cap a displaced job is launched for at once, and its claim is queued all the same:
/// the claim is moot once the replacement is tagged, and serves the job again if the scaler had
/// to abandon the replacement (no JIT config: untagged, `draining`) or never launched it.
#[test]
fn a_displaced_job_launched_for_keeps_its_claim_until_the_replacement_stands() {
    use Lifecycle::*;
    let pool = pool(5, 0);
    let mut w = World::new(vec![inst(1, Idle, 100).job(10)]);
    let p = batch(&pool, &w, &[started(20, Some(runner_name(1)))]);
    let claim = DeadClaim { job: JobId(10), instance: iid(1), displaced: true };
    assert_eq!(p.dead_claims, vec![claim.clone()]);
    assert_eq!(replacements(&p), vec![(JobId(10), iid(1))]);
    assert_eq!(p.metric(metric_names::EARMARKS_DISPLACED), Some(1.0));
    w.apply(&p.actions, t0());
    let claimed = |w: &World| {
        plan(&PlanInput::batch(&pool, &w.instances, &[], t0()).with_dead_claims(std::slice::from_ref(&claim)))
    };

    // The replacement stands (pending, tagged with the job): the claim launches nothing.
    let later = claimed(&w);
    assert_eq!(later.launch_count(), 0, "{later:#?}");
    assert!(later.unserved.is_empty());
    // It has since died after running some other job whose start is not handled yet: still
    // moot, by its `hangar:replaces` tag (each displaced claim gets one replacement).
    let mut gone = w.clone();
    let new = gone.instances.iter().position(|i| i.replaces.as_ref() == Some(&iid(1))).expect("replacement");
    gone.instances[new].ec2_state = Ec2State::Terminated;
    assert_eq!(claimed(&gone).launch_count(), 0);

    // Abandoned: the scaler dropped its job tag and tagged it `draining`. The job gets another.
    let mut abandoned = w.clone();
    abandoned.instances[new].lifecycle = Draining;
    abandoned.instances[new].job_id = None;
    abandoned.instances[new].ec2_state = Ec2State::Terminated;
    assert_eq!(replacements(&claimed(&abandoned)), vec![(JobId(10), iid(1))]);
    // Never launched (CreateFleet failed, or the invocation died first): likewise.
    let mut never = w.clone();
    never.instances.remove(new);
    assert_eq!(replacements(&claimed(&never)), vec![(JobId(10), iid(1))]);
}

/// A dead instance's replacement that the scaler abandoned (no JIT config) replaced nothing:
/// the redelivered claim launches again.
#[test]
fn an_abandoned_replacement_does_not_settle_a_dead_claim() {
    use Lifecycle::*;
    let pool = pool(5, 0);
    let w = World::new(vec![inst(1, Pending, 100).job(10).ec2(Ec2State::Terminated)]);
    let claim = DeadClaim { job: JobId(10), instance: iid(1), displaced: false };
    let first = plan(
        &PlanInput::batch(&pool, &w.instances, &[], t0()).with_dead_claims(std::slice::from_ref(&claim)),
    );
    assert_eq!(replacements(&first), vec![(JobId(10), iid(1))]);
    let mut after = w.clone();
    after.apply(&first.actions, t0());
    let again = |w: &World| {
        plan(&PlanInput::batch(&pool, &w.instances, &[], t0()).with_dead_claims(std::slice::from_ref(&claim)))
    };
    assert_eq!(again(&after).launch_count(), 0, "served once");
    let new = after.instances.iter().position(|i| i.replaces.as_ref() == Some(&iid(1))).expect("replacement");
    after.instances[new].lifecycle = Draining;
    after.instances[new].job_id = None;
    assert_eq!(replacements(&again(&after)), vec![(JobId(10), iid(1))]);
    // An operator draining a replacement that still holds the job does not reopen the claim.
    after.instances[new].job_id = Some(JobId(10));
    assert_eq!(again(&after).launch_count(), 0);
}
