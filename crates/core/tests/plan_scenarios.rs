//! The counting planner in the situations operators meet, each named for the situation.

mod plan_support;

use chrono::Duration;
use hangar_core::ids::{InstanceId, RunnerId};
use hangar_core::ledger::JobKey;
use hangar_core::plan::TerminateReason;
use hangar_core::plan::{metric_names, plan_pool, Mode, PoolView, RecordedLaunch, RECORDED_LAUNCH_TTL_SECS};
use hangar_core::ports::{LaunchReason, RegisteredRunner, StoredJit};
use hangar_core::state::{Ec2State, Lifecycle, ObservedInstance};
use plan_support::{GhStatus, Sim, LAG_SECS};

const LINUX: usize = 0;
const ARM: usize = 1;

fn handle_all(sim: &mut Sim) {
    while !sim.inbox.is_empty() {
        sim.deliver(0);
    }
}

fn running_on(sim: &Sim, key: JobKey) -> InstanceId {
    match &sim.gh[&key].status {
        GhStatus::Running(id) => id.clone(),
        other => panic!("{key} is {other:?}"),
    }
}

/// `n` jobs queued in the `linux` pool, as the ledger holds them once their batches ran.
fn queued_linux_jobs(n: usize) -> Vec<hangar_core::ledger::LedgerJob> {
    let mut sim = Sim::two_pools(5, 0, 0);
    let keys: Vec<JobKey> = (0..n).map(|_| sim.arrive(LINUX, 1)).collect();
    handle_all(&mut sim);
    keys.iter().map(|k| sim.ledger[k].clone()).collect()
}

/// The registered runner of `instance` in `cfg`'s pool.
fn runner_of(
    cfg: &hangar_core::config::PoolConfig,
    id: u64,
    instance: &InstanceId,
    online: bool,
    busy: bool,
) -> RegisteredRunner {
    RegisteredRunner {
        id: RunnerId(id),
        name: hangar_core::ids::RunnerName::for_instance(&cfg.name, instance),
        online,
        busy,
        labels: vec![],
    }
}

#[test]
fn job_j_takes_the_runner_launched_for_k_there_is_no_extra_launch_and_k_starts_on_the_next() {
    let mut sim = Sim::two_pools(10, 0, 0);
    let k = sim.arrive(LINUX, 1);
    handle_all(&mut sim);
    assert_eq!(sim.launches[LINUX], 1);
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    let j = sim.arrive(LINUX, 1);
    handle_all(&mut sim);
    assert_eq!(sim.launches[LINUX], 2, "J's queued webhook launches J's own runner");
    // GitHub hands J the runner launched for K (the only one booted).
    let j_key_index = sim.gh.keys().position(|x| *x == j).unwrap();
    sim.assign(j_key_index, false);
    assert_eq!(sim.gh[&k].status, GhStatus::Queued);
    handle_all(&mut sim);
    assert_eq!(sim.launches[LINUX], 2, "no launch for K: the second runner is still free");
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    let k_index = sim.gh.keys().position(|x| *x == k).unwrap();
    sim.assign(k_index, false);
    let (on_j, on_k) = (running_on(&sim, j), running_on(&sim, k));
    assert_ne!(on_j, on_k);
    handle_all(&mut sim);
    assert_eq!(sim.launches, vec![2, 0]);
}

#[test]
fn a_job_routed_to_one_pool_runs_on_another_pools_runner() {
    // Pool `arm` keeps one warm runner; a `linux` job may run on it.
    let mut sim = Sim::two_pools(10, 10, 1);
    sim.reconcile(ARM);
    assert_eq!(sim.launches, vec![0, 1]);
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    let j = sim.arrive(LINUX, 1);
    handle_all(&mut sim);
    assert_eq!(sim.launches, vec![1, 1], "linux launches for its job");
    sim.assign(0, false);
    let arm_runner = running_on(&sim, j);
    assert!(sim.machines.iter().any(|m| m.inst.id == arm_runner && m.inst.pool.as_str() == "arm"));
    // The start names arm's runner: linux's batch tags it busy and ticks arm, which tops its
    // warm pool up again at once.
    handle_all(&mut sim);
    assert_eq!(sim.launches, vec![1, 2]);
    let arm_busy = sim.machines.iter().find(|m| m.inst.id == arm_runner).unwrap();
    assert_eq!(arm_busy.inst.lifecycle, Lifecycle::Busy);
    // linux's own runner is surplus now, and goes only after its idle timeout.
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    sim.boot(0, true);
    sim.tick(120);
    sim.reconcile(LINUX);
    assert_eq!(sim.live(LINUX), 1, "not before the idle timeout");
    sim.tick(600);
    sim.reconcile(LINUX);
    assert_eq!(sim.live(LINUX), 0);
    assert_eq!(sim.launches, vec![1, 2]);
}

#[test]
fn a_cancel_while_queued_ends_the_demand_and_the_runner_idles_out() {
    let mut sim = Sim::two_pools(10, 0, 0);
    let j = sim.arrive(LINUX, 1);
    handle_all(&mut sim);
    sim.cancel(0);
    handle_all(&mut sim);
    assert_eq!(sim.ledger[&j].status, hangar_core::ledger::JobStatus::Done);
    assert!(sim.ledger[&j].cancelled_while_queued());
    // A late duplicate `queued` does not bring it back.
    sim.inbox.push((LINUX, sim.inbox_event_queued(j)));
    handle_all(&mut sim);
    assert_eq!(sim.launches[LINUX], 1);
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    sim.tick(601);
    sim.reconcile(LINUX);
    assert_eq!(sim.live(LINUX), 0);
}

#[test]
fn a_lost_completed_is_found_by_reconcile() {
    let mut sim = Sim::two_pools(10, 0, 0);
    let j = sim.arrive(LINUX, 1);
    handle_all(&mut sim);
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    sim.assign(0, true); // the `in_progress` webhook is lost
    sim.finish(0);
    sim.inbox.clear(); // and so is `completed`
    assert_eq!(sim.ledger[&j].status, hangar_core::ledger::JobStatus::Queued);
    sim.tick(60);
    sim.reconcile(LINUX);
    assert_eq!(
        sim.ledger[&j].status,
        hangar_core::ledger::JobStatus::Queued,
        "too young to ask GitHub about"
    );
    sim.tick(300);
    sim.reconcile(LINUX);
    assert_eq!(sim.ledger[&j].status, hangar_core::ledger::JobStatus::Done);
    // Until GitHub was asked, the ledger said the job waited, and its runner was gone: the lost
    // webhooks cost one launch, which idles out once the ledger is right.
    assert_eq!(sim.launches[LINUX], 2);
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    sim.tick(601);
    sim.reconcile(LINUX);
    assert_eq!(sim.live(LINUX), 0);
    assert_eq!(sim.launches[LINUX], 2);
}

#[test]
fn a_runner_that_never_gets_its_jit_config_is_reaped_at_its_boot_timeout_and_launched_for_again() {
    let mut sim = Sim::two_pools(10, 0, 0);
    let j = sim.arrive(LINUX, 1);
    sim.jit_outage = true;
    handle_all(&mut sim);
    assert_eq!(sim.launches[LINUX], 1);
    // The provisioning worker terminated it at once; the ledger still counts the job.
    sim.jit_outage = false;
    sim.tick(LAG_SECS + 1);
    sim.reconcile(LINUX);
    assert_eq!(sim.launches[LINUX], 2, "the next plan launches again: nothing special needed");
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    sim.assign(0, false);
    assert!(matches!(sim.gh[&j].status, GhStatus::Running(_)));
}

fn view_instances(
    pool: &hangar_core::config::PoolConfig,
    n: u64,
    lifecycle: Lifecycle,
    age: i64,
) -> ObservedInstance {
    ObservedInstance {
        id: InstanceId(format!("i-{n:08x}")),
        pool: pool.name.clone(),
        ec2_state: Ec2State::Running,
        lifecycle,
        launched_at: plan_support::t0() - Duration::seconds(age),
        job_id: None,
        capacity_type: hangar_core::config::CapacityType::Spot,
        instance_type: "m7g.large".into(),
        interrupted: false,
    }
}

#[test]
fn an_instance_with_no_config_is_judged_only_by_reconcile_and_from_its_config_write() {
    let cfg = plan_support::pool("linux", &["self-hosted"], 5, 0);
    let now = plan_support::t0();
    let old = [view_instances(&cfg, 1, Lifecycle::Pending, 400)];
    let batch = plan_pool(&PoolView::batch(&cfg, now, &[], &old));
    assert!(batch.terminate.is_empty(), "a batch never judges boot");
    let rec = plan_pool(&PoolView::reconcile(&cfg, now, &[], &old, &[], &[]));
    assert_eq!(rec.terminate, vec![(old[0].id.clone(), TerminateReason::BootTimeout)]);
    // Its config was written 100 s ago: the boot clock started then.
    let configs = [StoredJit {
        instance_id: old[0].id.clone(),
        pool: Some(cfg.name.clone()),
        created_at: Some(now - Duration::seconds(100)),
    }];
    let late = plan_pool(&PoolView::reconcile(&cfg, now, &[], &old, &[], &configs));
    assert!(late.terminate.is_empty(), "{late:?}");
}

#[test]
fn a_busy_runner_is_never_deregistered_and_a_dead_idle_one_is() {
    let cfg = plan_support::pool("linux", &["self-hosted"], 5, 0);
    let now = plan_support::t0();
    let mut gone = view_instances(&cfg, 1, Lifecycle::Idle, 900);
    gone.ec2_state = Ec2State::Terminated;
    let mut gone_busy = view_instances(&cfg, 2, Lifecycle::Busy, 900);
    gone_busy.ec2_state = Ec2State::Terminated;
    let runner =
        |id: u64, n: u64, busy: bool| runner_of(&cfg, id, &InstanceId(format!("i-{n:08x}")), false, busy);
    let runners = [runner(10, 1, false), runner(11, 2, true)];
    let p = plan_pool(&PoolView::reconcile(&cfg, now, &[], &[gone, gone_busy], &runners, &[]));
    assert_eq!(p.deregister.iter().map(|r| r.id).collect::<Vec<_>>(), vec![RunnerId(10)]);
}

#[test]
fn a_launch_describe_does_not_list_yet_is_counted_until_it_is_listed_or_expires() {
    let cfg = plan_support::pool("linux", &["self-hosted"], 5, 0);
    let now = plan_support::t0();
    let queued = queued_linux_jobs(1);
    let recorded = [RecordedLaunch { id: InstanceId("i-00000f00".into()), launched_at: now }];
    let mut v = PoolView::batch(&cfg, now, &queued, &[]);
    let first = plan_pool(&v);
    assert_eq!(first.launch_count(), 1);
    v.recorded_launches = &recorded;
    assert_eq!(plan_pool(&v).launch_count(), 0, "the recorded launch covers the job");
    v.now = now + Duration::seconds(RECORDED_LAUNCH_TTL_SECS + 1);
    let expired = plan_pool(&v);
    assert_eq!(expired.launch_count(), 1, "an expired record no longer counts");
    assert_ne!(expired.launch.unwrap().idempotency_key, first.launch.unwrap().idempotency_key);
}

#[test]
fn the_launch_token_is_stable_for_the_same_shortfall_and_changes_once_an_instance_came_or_went() {
    let cfg = plan_support::pool("linux", &["self-hosted"], 5, 0);
    let now = plan_support::t0();
    let mut sim = Sim::two_pools(5, 0, 0);
    let j = sim.arrive(LINUX, 1);
    handle_all(&mut sim);
    let queued = vec![sim.ledger[&j].clone()];
    let key = |instances: &[ObservedInstance]| {
        plan_pool(&PoolView::batch(&cfg, now, &queued, instances)).launch.map(|l| l.idempotency_key)
    };
    assert_eq!(key(&[]), key(&[]));
    assert!(key(&[]).is_some());
    let mut dead = view_instances(&cfg, 7, Lifecycle::Pending, 10);
    dead.ec2_state = Ec2State::Terminated;
    assert_ne!(key(&[]), key(&[dead]), "a failed launch's dead instance gives the retry a new token");
}

#[test]
fn at_the_cap_jobs_wait_in_the_ledger_and_the_gauges_say_so() {
    let mut sim = Sim::two_pools(2, 0, 0);
    for _ in 0..5 {
        sim.arrive(LINUX, 1);
    }
    handle_all(&mut sim);
    assert_eq!(sim.launches[LINUX], 2);
    let plan = sim.plan(LINUX, Mode::Batch, &[], &[]);
    assert_eq!(plan.metric(metric_names::QUEUED_JOBS), Some(5.0));
    assert_eq!(plan.metric(metric_names::POOL_AT_MAX), Some(3.0));
    assert_eq!(plan.launch_count(), 0);
    // One job runs and ends: capacity frees, and the completion's batch launches at once.
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    sim.assign(0, false);
    sim.finish(0);
    handle_all(&mut sim);
    assert_eq!(sim.launches[LINUX], 3);
    sim.tick(90);
    let plan = sim.plan(LINUX, Mode::Batch, &[], &[]);
    assert_eq!(plan.metric(metric_names::QUEUED_JOBS), Some(4.0));
    assert!(plan.metric(metric_names::OLDEST_QUEUED_AGE_SECONDS).unwrap() >= 90.0);
}

#[test]
fn a_warm_pool_launches_for_its_target_as_a_warm_pool_launch() {
    let cfg = plan_support::pool("linux", &["self-hosted"], 5, 2);
    let p = plan_pool(&PoolView::batch(&cfg, plan_support::t0(), &[], &[]));
    let l = p.launch.expect("warm launch");
    assert_eq!((l.count, l.reason), (2, LaunchReason::WarmPool));
}

#[test]
fn a_spot_reclaimed_job_is_re_run_once_and_no_more() {
    let mut sim = Sim::two_pools(5, 0, 0);
    let j = sim.arrive(LINUX, 1);
    handle_all(&mut sim);
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    sim.assign(0, false);
    handle_all(&mut sim);
    sim.kill(0); // spot reclaim of the busy runner: the job fails
    handle_all(&mut sim);
    let rerun = JobKey::new(j.job_id, 2);
    assert!(sim.gh.contains_key(&rerun), "attempt 2 was requested");
    handle_all(&mut sim);
    sim.tick(LAG_SECS + 1);
    sim.boot(0, true);
    sim.assign(0, false);
    handle_all(&mut sim);
    sim.kill(0);
    handle_all(&mut sim);
    assert!(!sim.gh.contains_key(&JobKey::new(j.job_id, 3)), "max_spot_reruns is 1");
}

#[test]
fn a_runner_github_calls_busy_before_the_ledger_has_its_start_is_not_counted_twice() {
    // GitHub assigns J to the pool's one runner and lists it busy; J's `in_progress` webhook
    // has not been recorded yet, so the ledger still holds J as queued. Reconcile reads both.
    let cfg = plan_support::pool("linux", &["self-hosted"], 5, 0);
    let now = plan_support::t0();
    let queued = queued_linux_jobs(1);
    // Past the idle and boot timeouts, so only GitHub's word keeps it.
    let inst = view_instances(&cfg, 1, Lifecycle::Pending, 3600);
    let runner = runner_of(&cfg, 7, &inst.id, true, true);
    let instances = [inst];
    let p =
        plan_pool(&PoolView::reconcile(&cfg, now, &queued, &instances, std::slice::from_ref(&runner), &[]));
    assert_eq!(p.launch_count(), 0, "J and the runner it took are one job, not two: {p:?}");
    assert!(p.terminate.is_empty(), "a runner GitHub calls busy is never terminated: {p:?}");
    assert!(p.deregister.is_empty(), "{p:?}");
    // Once J's start is recorded (its batch tags the instance busy), J is not queued and the
    // runner counts busy: still no launch.
    let mut tagged = instances[0].clone();
    tagged.lifecycle = Lifecycle::Busy;
    let after = plan_pool(&PoolView::reconcile(&cfg, now, &[], &[tagged], &[runner], &[]));
    assert_eq!((after.launch_count(), after.counts.busy), (0, 1), "{after:?}");
    assert!(after.terminate.is_empty(), "{after:?}");
}

#[test]
fn a_start_the_webhook_recorded_makes_its_runner_busy_before_the_pools_batch_reaches_it() {
    // J runs on the pool's one runner; the webhook recorded its start (so J is not queued), and
    // the pool's batch has not reached J's `in_progress` yet (so the instance is not tagged).
    // K arrives: its batch must launch for it, not count J's runner as free (a stall).
    let cfg = plan_support::pool("linux", &["self-hosted"], 5, 0);
    let now = plan_support::t0();
    let mut jobs = queued_linux_jobs(2);
    let queued = jobs.split_off(1);
    let inst = view_instances(&cfg, 1, Lifecycle::Pending, 30);
    let mut running = jobs.remove(0);
    running.status = hangar_core::ledger::JobStatus::Started;
    running.runner_name = Some(hangar_core::ids::RunnerName::for_instance(&cfg.name, &inst.id));
    let instances = [inst];
    let mut view = PoolView::batch(&cfg, now, &queued, &instances);
    assert_eq!(plan_pool(&view).launch_count(), 0, "without the ledger's starts the runner looks free");
    let running = [running];
    view.running = &running;
    let p = plan_pool(&view);
    assert_eq!((p.launch_count(), p.counts.busy, p.counts.free()), (1, 1, 0), "{p:?}");
    assert_eq!(p.tag_busy, vec![instances[0].id.clone()], "the plan tags it busy itself");
}
