//! Planner decisions per second for a pool of 1,000 instances: a hot-path batch (queued, started
//! and completed jobs), a single queued job, a burst of 100, and a reconcile that also reads 1,000
//! GitHub runners and 300 JIT parameters. Prints a table and writes
//! `target/bench-results/planner.json` (the schema of `tools/bench_table.py`, plus rates).

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{criterion_group, Criterion, Throughput};
use hangar_core::config::{CapacityType, MarketConfig, PoolConfig, RunnerScope, WarmPoolConfig, WarmWindow};
use hangar_core::ids::{InstanceId, JobId, PoolName, RunId, RunnerId, RunnerName};
use hangar_core::message::{JobCompleted, JobRef, JobStarted, QueueMessage};
use hangar_core::planner::{plan, Action, PlanInput};
use hangar_core::ports::{LaunchReason, RegisteredRunner, StoredJit};
use hangar_core::state::{Ec2State, Lifecycle, ObservedInstance};
use std::hint::black_box;
use std::path::PathBuf;

const POOL: &str = "linux-x64";
const INSTANCES: u64 = 1_000;

fn now() -> DateTime<Utc> {
    // A Tuesday, 09:30 in Berlin: inside the office-hours window.
    Utc.with_ymd_and_hms(2026, 3, 3, 8, 30, 0).unwrap()
}

fn pool() -> PoolConfig {
    PoolConfig {
        name: PoolName::from(POOL),
        labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
        priority: 0,
        instance_types: vec!["m7i.large".into(), "m6i.large".into()],
        subnets: vec!["subnet-a".into(), "subnet-b".into()],
        launch_template: Some("lt-0123".into()),
        market: MarketConfig::default(),
        max_runners: 1_200,
        warm_pool: WarmPoolConfig {
            size: 20,
            timezone: "Europe/Berlin".into(),
            schedule: vec![WarmWindow {
                days: ["mon", "tue", "wed", "thu", "fri"].iter().map(|d| d.to_string()).collect(),
                from: "08:00".into(),
                to: "18:00".into(),
                size: 300,
            }],
        },
        idle_timeout_secs: 600,
        boot_timeout_secs: 300,
        repositories: vec![],
        allow_public_repositories: false,
        runner_scope: RunnerScope::Org,
        max_spot_reruns: 1,
    }
}

fn iid(n: u64) -> InstanceId {
    InstanceId(format!("i-{n:017x}"))
}

fn name(n: u64) -> RunnerName {
    RunnerName::for_instance(&PoolName::from(POOL), &iid(n))
}

/// 600 busy, 200 idle (3/4 earmarked), 100 pending (half earmarked), 40 stopped, 60 terminated:
/// every code path of the planner sees work.
fn instances() -> Vec<ObservedInstance> {
    (0..INSTANCES)
        .map(|n| {
            let (lifecycle, ec2_state, job, age) = match n {
                0..600 => (Lifecycle::Busy, Ec2State::Running, Some(10_000 + n), 900),
                600..800 => {
                    (Lifecycle::Idle, Ec2State::Running, (n % 4 != 0).then_some(10_000 + n), (n % 7) * 200)
                }
                800..900 => {
                    (Lifecycle::Pending, Ec2State::Pending, (n % 2 == 0).then_some(10_000 + n), (n % 5) * 80)
                }
                900..940 => (Lifecycle::Idle, Ec2State::Stopped, None, 1_000),
                _ => (Lifecycle::Busy, Ec2State::Terminated, Some(10_000 + n), 3_000),
            };
            ObservedInstance {
                id: iid(n),
                pool: PoolName::from(POOL),
                ec2_state,
                lifecycle,
                launched_at: now() - Duration::seconds(age as i64),
                job_id: job.map(JobId),
                capacity_type: if n % 3 == 0 { CapacityType::OnDemand } else { CapacityType::Spot },
                instance_type: "m7i.large".into(),
                interrupted: n % 97 == 0,
                replaces: None,
            }
        })
        .collect()
}

fn queued(job: u64) -> QueueMessage {
    QueueMessage::ScaleUp(JobRef {
        pool: PoolName::from(POOL),
        job_id: JobId(job),
        run_id: RunId(job / 4),
        run_attempt: 1,
        repository: "acme/app".into(),
        installation_id: None,
        labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
        created_at: Some(now()),
        delivery_id: None,
        requeues: 0,
    })
}

fn started(job: u64, on: u64) -> QueueMessage {
    QueueMessage::JobStarted(JobStarted {
        pool: PoolName::from(POOL),
        job_id: JobId(job),
        run_id: RunId(job / 4),
        run_attempt: 1,
        repository: "acme/app".into(),
        installation_id: None,
        runner_name: Some(name(on)),
        started_at: Some(now()),
    })
}

fn completed(job: u64, on: u64) -> QueueMessage {
    QueueMessage::JobCompleted(JobCompleted {
        pool: PoolName::from(POOL),
        job_id: JobId(job),
        run_id: RunId(job / 4),
        run_attempt: 1,
        repository: "acme/app".into(),
        installation_id: None,
        runner_name: Some(name(on)),
        conclusion: Some("success".into()),
        completed_at: Some(now()),
    })
}

fn runners() -> Vec<RegisteredRunner> {
    (0..INSTANCES)
        .map(|n| RegisteredRunner {
            id: RunnerId(n + 1),
            name: if n % 50 == 0 { RunnerName::from(format!("laptop-{n}")) } else { name(n) },
            online: n < 900,
            busy: n < 600,
            labels: vec![],
        })
        .collect()
}

fn params() -> Vec<StoredJit> {
    (700..1_000)
        .map(|n| StoredJit {
            instance_id: iid(n),
            pool: Some(PoolName::from(POOL)),
            created_at: Some(now() - Duration::seconds(600)),
        })
        .collect()
}

/// Jobs given capacity by the plan: earmarked on a free runner or launched for.
fn served(actions: &[Action]) -> Vec<JobId> {
    let mut out = Vec::new();
    for a in actions {
        match a {
            Action::Earmark { job: Some(j), .. } => out.push(*j),
            Action::Launch { reason: LaunchReason::Job, jobs, .. } => out.extend(jobs),
            _ => {}
        }
    }
    out
}

struct Case {
    name: &'static str,
    messages: Vec<QueueMessage>,
    reconcile: bool,
}

fn cases() -> Vec<Case> {
    // 10 new jobs, 5 starts on free pending runners, 5 completions on busy ones.
    let mut batch: Vec<QueueMessage> = (1..=10).map(queued).collect();
    batch.extend((0..5).map(|k| started(20 + k, 850 + k)));
    batch.extend((0..5).map(|k| completed(10_000 + k, k)));
    vec![
        Case { name: "batch_20_messages", messages: batch, reconcile: false },
        Case { name: "batch_1_queued", messages: vec![queued(1)], reconcile: false },
        Case { name: "batch_100_queued", messages: (1..=100).map(queued).collect(), reconcile: false },
        Case { name: "reconcile_1000_runners", messages: vec![], reconcile: true },
    ]
}

fn bench(c: &mut Criterion) {
    let pool = pool();
    let instances = instances();
    let runners = runners();
    let params = params();
    let mut g = c.benchmark_group("planner");
    g.throughput(Throughput::Elements(1));
    for case in cases() {
        let input = if case.reconcile {
            PlanInput::reconcile(&pool, &instances, Some(&runners), Some(&params), now())
        } else {
            PlanInput::batch(&pool, &instances, &case.messages, now())
        };
        // The plan must do real work, or the benchmark measures an early exit.
        let p = plan(&input);
        if case.reconcile {
            assert!(p.terminated().count() > 0 && p.launch_count() > 0, "{}", case.name);
        } else {
            // Every new queued job gets exactly one runner: earmarked or launched.
            let mut want: Vec<JobId> = case
                .messages
                .iter()
                .filter(|m| matches!(m, QueueMessage::ScaleUp(_)))
                .map(|m| m.job_id())
                .collect();
            let mut got: Vec<JobId> = served(&p.actions).into_iter().filter(|j| want.contains(j)).collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{}: {:?}", case.name, p.actions);
        }
        eprintln!(
            "{}: {} actions, {} launched ({} for jobs)",
            case.name,
            p.actions.len(),
            p.launch_count(),
            p.actions
                .iter()
                .map(|a| match a {
                    Action::Launch { count, reason: LaunchReason::Job, .. } => *count,
                    _ => 0,
                })
                .sum::<u32>()
        );
        g.bench_function(case.name, |b| b.iter(|| plan(black_box(&input))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Criterion's estimates, as a table with decisions per second, and as JSON.
fn report() {
    let target = target_dir();
    let mut rows = Vec::new();
    println!("\nplanner, pool of {INSTANCES} instances");
    println!("{:<36} {:>12} {:>12} {:>16}", "benchmark", "mean", "median", "decisions/s");
    for case in cases() {
        let est = target.join("criterion/planner").join(case.name).join("new/estimates.json");
        let Ok(text) = std::fs::read_to_string(&est) else {
            // Filtered out on the command line, or criterion ran in --list/--test mode.
            continue;
        };
        let e: serde_json::Value = serde_json::from_str(&text).expect("criterion estimates are JSON");
        let mean = e["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
        let median = e["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
        let ci = [
            e["mean"]["confidence_interval"]["lower_bound"].as_f64().unwrap_or(f64::NAN),
            e["mean"]["confidence_interval"]["upper_bound"].as_f64().unwrap_or(f64::NAN),
        ];
        let per_sec = 1e9 / mean;
        println!(
            "{:<36} {:>9.2} µs {:>9.2} µs {:>16.0}",
            format!("planner/{}", case.name),
            mean / 1e3,
            median / 1e3,
            per_sec
        );
        rows.push(serde_json::json!({
            "bench": format!("planner/{}", case.name),
            "instances": INSTANCES,
            "messages": case.messages.len(),
            "mean_ns": mean,
            "median_ns": median,
            "ci95_ns": ci,
            "decisions_per_sec": per_sec,
        }));
    }
    if rows.is_empty() {
        return;
    }
    let dir = target.join("bench-results");
    std::fs::create_dir_all(&dir).expect("create target/bench-results");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let doc = serde_json::json!({ "machine": { "cores": cores }, "results": rows });
    let out = dir.join("planner.json");
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).expect("write planner.json");
    println!("written: {}", out.display());
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
