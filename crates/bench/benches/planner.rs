//! Planner decisions per second for a pool of 1,000 instances (600 running ledger jobs): a
//! hot-path batch (queued, started and completed jobs), a single queued job, a burst of 100, and
//! a reconcile that also reads 1,000 GitHub runners and 300 JIT parameters. Prints a table and writes
//! `target/bench-results/planner.json` (the schema of `tools/bench_table.py`, plus rates).

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{criterion_group, Criterion, Throughput};
use hangar_core::config::{CapacityType, MarketConfig, PoolConfig, RunnerScope, WarmPoolConfig, WarmWindow};
use hangar_core::ids::{InstanceId, JobId, PoolName, RunId, RunnerId, RunnerName};
use hangar_core::ledger::{JobKey, JobStatus, LedgerJob};
use hangar_core::plan::{plan_pool, Mode, PoolView};
use hangar_core::ports::{RegisteredRunner, StoredJit};
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

/// 600 busy, 200 idle, 100 pending, 40 stopped, 60 terminated: every code path of the
/// planner sees work.
fn instances() -> Vec<ObservedInstance> {
    (0..INSTANCES)
        .map(|n| {
            let (lifecycle, ec2_state, job, age) = match n {
                0..600 => (Lifecycle::Busy, Ec2State::Running, Some(10_000 + n), 900),
                600..800 => (Lifecycle::Idle, Ec2State::Running, None, (n % 7) * 200),
                800..900 => (Lifecycle::Pending, Ec2State::Pending, None, (n % 5) * 80),
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
            }
        })
        .collect()
}

/// A ledger entry of this pool; `on`: the instance whose runner took it.
fn job(id: u64, status: JobStatus, on: Option<u64>) -> LedgerJob {
    LedgerJob {
        key: JobKey::new(JobId(id), 1),
        pool: PoolName::from(POOL),
        status,
        run_id: RunId(id / 4),
        repository: "acme/app".into(),
        installation_id: None,
        labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
        created_at: now() - Duration::seconds(30),
        started_at: on.map(|_| now()),
        completed_at: (status == JobStatus::Done).then(now),
        runner_name: on.map(name),
        conclusion: (status == JobStatus::Done).then(|| "success".into()),
        expires_at: now() + Duration::hours(48),
    }
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

struct Case {
    name: &'static str,
    queued: Vec<LedgerJob>,
    started: Vec<LedgerJob>,
    finished: Vec<LedgerJob>,
    reconcile: bool,
}

impl Case {
    fn messages(&self) -> usize {
        self.queued.len() + self.started.len() + self.finished.len()
    }
}

fn cases() -> Vec<Case> {
    let queued = |n: u64| (1..=n).map(|j| job(j, JobStatus::Queued, None)).collect::<Vec<_>>();
    // A batch of 20: 10 new jobs, 5 starts on free pending runners, 5 completions on busy ones.
    let batch = Case {
        name: "batch_20_messages",
        queued: queued(10),
        started: (0..5).map(|k| job(20 + k, JobStatus::Started, Some(850 + k))).collect(),
        finished: (0..5).map(|k| job(10_000 + k, JobStatus::Done, Some(k))).collect(),
        reconcile: false,
    };
    let only = |name, queued| Case { name, queued, started: vec![], finished: vec![], reconcile: false };
    vec![
        batch,
        only("batch_1_queued", queued(1)),
        only("batch_100_queued", queued(100)),
        Case {
            name: "reconcile_1000_runners",
            queued: vec![],
            started: vec![],
            finished: vec![],
            reconcile: true,
        },
    ]
}

fn bench(c: &mut Criterion) {
    let pool = pool();
    let instances = instances();
    let runners = runners();
    let params = params();
    // The ledger's started jobs: one on each busy runner.
    let running: Vec<LedgerJob> = (0..600).map(|n| job(10_000 + n, JobStatus::Started, Some(n))).collect();
    let mut g = c.benchmark_group("planner");
    g.throughput(Throughput::Elements(1));
    for case in cases() {
        let mut view = PoolView::batch(&pool, now(), &case.queued, &instances);
        view.started = &case.started;
        view.finished = &case.finished;
        view.running = &running;
        if case.reconcile {
            view.mode = Mode::Reconcile;
            view.runners = Some(&runners);
            view.jit_configs = Some(&params);
        }
        // The plan must do real work, or the benchmark measures an early exit.
        let p = plan_pool(&view);
        if case.reconcile {
            assert!(!p.terminate.is_empty() && p.launch_count() > 0, "{}: {p:?}", case.name);
        } else {
            // Every queued job is covered: by a free runner or by this plan's launch.
            let covered = p.counts.free() + p.launch_count();
            assert!(covered >= case.queued.len() as u32, "{}: {:?}", case.name, p.counts);
            assert_eq!(p.counts.queued as usize, case.queued.len(), "{}", case.name);
        }
        eprintln!(
            "{}: {} terminated, {} tagged busy, {} launched, counts {:?}",
            case.name,
            p.terminate.len(),
            p.tag_busy.len(),
            p.launch_count(),
            p.counts
        );
        g.bench_function(case.name, |b| b.iter(|| plan_pool(black_box(&view))));
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
            "messages": case.messages(),
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
