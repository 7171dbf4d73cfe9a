//! End-to-end runs: the real `hangar demo` binary, which starts moto (behind the fault proxy),
//! `cargo lambda watch` with the real `hangar-webhook` and `hangar-scaler` binaries, and the
//! GitHub and runner-instance simulators, replays a trace and writes report.json. The tests
//! assert on that report: outcomes (every job completed, nothing left, the cap held), never on
//! timings, except where one run compares two pools with each other.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One local cloud at a time: each is several processes, and the machine has two cores.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A pool configuration in the demo's conventions (subnet names, GitHub filled in by the demo).
pub fn pools(extra: &str) -> String {
    format!("organization: octo-org\ngithub:\n  app_id: 4242\n  runner_group: hangar\npools:\n{extra}")
}

/// One pool block; `market` is `spot` or `on-demand`.
pub fn pool(name: &str, labels: &str, types: &str, max: u32, warm: u32, market: &str) -> String {
    format!(
        "  - name: {name}\n    labels: [{labels}]\n    instance_types: [{types}]\n    subnets: [demo-a, demo-b]\n    launch_template: hangar-demo-runner\n    market: {{ type: {market}, on_demand_fallback: true }}\n    max_runners: {max}\n    warm_pool: {{ size: {warm} }}\n    idle_timeout_secs: 15\n    boot_timeout_secs: 20\n"
    )
}

pub struct Run {
    pub report: Value,
    pub status: i32,
    pub dir: tempfile::TempDir,
    pub output: String,
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_hangar")).parent().expect("bin dir").to_path_buf()
}

/// Runs `hangar demo` on a trace (and pool configuration) written into a fresh directory.
pub fn run(trace_yaml: &str, pools_yaml: &str, args: &[&str]) -> Run {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bins = bin_dir();
    for b in ["hangar-webhook", "hangar-scaler"] {
        assert!(
            bins.join(b).exists(),
            "{} missing: the end-to-end tests run the real Lambda binaries; build the workspace \
             (`cargo build --workspace --all-targets`, as `make test` does) first",
            bins.join(b).display()
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pools.yaml"), pools_yaml).unwrap();
    std::fs::write(dir.path().join("trace.yaml"), format!("{trace_yaml}\nconfig: pools.yaml\n")).unwrap();
    let report = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hangar"))
        .arg("demo")
        .arg("--trace")
        .arg(dir.path().join("trace.yaml"))
        .arg("--report")
        .arg(&report)
        .arg("--bin-dir")
        .arg(&bins)
        .args(args)
        .output()
        .expect("run hangar demo");
    let output =
        format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report ({e}); hangar demo said:\n{output}"));
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    eprintln!("{output}");
    if let Ok(keep) = std::env::var("HANGAR_E2E_KEEP") {
        // For debugging a failed run: keep logs, report and picture.
        let _ = Command::new("cp").arg("-r").arg(dir.path()).arg(&keep).status();
    }
    Run { report, status: out.status.code().unwrap_or(-1), dir, output }
}

impl Run {
    pub fn u(&self, key: &str) -> u64 {
        self.report[key].as_u64().unwrap_or_else(|| panic!("report.{key} is not a number: {}", self.report))
    }
    pub fn detail(&self, key: &str) -> u64 {
        self.report["details"][key].as_u64().unwrap_or(0)
    }
    /// The sum of a detail that counts by kind (`{"kind": n, ...}`); panics if it is missing.
    pub fn detail_total(&self, key: &str) -> u64 {
        let by_kind = self.report["details"][key].as_object();
        by_kind
            .unwrap_or_else(|| panic!("details.{key} missing: {:#}", self.report))
            .values()
            .filter_map(|v| v.as_u64())
            .sum()
    }
    /// Prints every log line of the run that names an unfinished job (CI keeps no logs, so a
    /// lost job's story has to be in the test's output).
    pub fn print_trail(&self) {
        let ids: Vec<String> = self.report["details"]["unfinished_jobs"]
            .as_array()
            .map(|a| a.iter().filter_map(|j| j["job_id"].as_u64()).map(|i| i.to_string()).collect())
            .unwrap_or_default();
        let logs = self.dir.path().join("hangar-demo-logs");
        let Ok(entries) = std::fs::read_dir(&logs) else {
            eprintln!("no logs at {}", logs.display());
            return;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for id in &ids {
            eprintln!("---- log lines naming unfinished job {id} ----");
            for f in &files {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                for line in text.lines().filter(|l| l.contains(id.as_str())).take(80) {
                    let cut: String = line.chars().take(600).collect();
                    eprintln!("{name}: {cut}");
                }
            }
        }
    }

    pub fn pool(&self, name: &str) -> &Value {
        &self.report["pools"][name]
    }

    /// Every job completed, nothing is left in EC2, SSM or GitHub, the cap held, and no job
    /// got a second instance.
    pub fn assert_clean(&self) {
        let r = &self.report;
        assert!(self.u("jobs_total") > 0, "{r:#}");
        if self.u("jobs_completed") != self.u("jobs_total") {
            self.print_trail();
        }
        assert_eq!(self.u("jobs_completed"), self.u("jobs_total"), "every job completes: {r:#}");
        assert_eq!(self.u("jobs_lost"), 0, "{r:#}");
        assert_eq!(self.u("leftover_instances"), 0, "no instance left: {r:#}");
        assert_eq!(self.u("leftover_parameters"), 0, "no JIT parameter left: {r:#}");
        assert_eq!(self.u("leftover_runners"), 0, "no runner left registered: {r:#}");
        assert_eq!(r["max_runners_exceeded"], Value::Bool(false), "{r:#}");
        assert_eq!(r["ledger_queued_left"], Value::from(0), "no job left queued in the ledger: {r:#}");
        // Duplicate launches are bounded by the launches-per-job checks of each test: no job is
        // bound to an instance, so no tag says which instance was launched for which job.
        assert_eq!(self.u("jobs_queued"), self.u("jobs_total"), "no job ran twice in GitHub: {r:#}");
        assert_eq!(self.status, 0, "hangar demo exits 0 on a clean run:\n{}", self.output);
    }
}
