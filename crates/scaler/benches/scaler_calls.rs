//! Scaler invocation cost against moto (through the fault proxy) and the GitHub simulator:
//! AWS and GitHub calls per launched runner, from the proxy's and simulator's counters, and a
//! batch of 10 queued jobs end to end (calls and milliseconds).
//!
//! `cargo bench -p hangar-scaler --bench scaler_calls --profile dev` runs 5 rounds, prints a
//! table and writes `target/bench-results/scaler.json`. The work is network I/O to local
//! servers, so the dev profile measures it as well as an optimised build would, without
//! compiling the AWS SDK a second time. Under `cargo test` (no `--bench`), one round runs as a
//! smoke test and nothing is written.

#[path = "../tests/scaler/common.rs"]
mod common;

use common::{scale_up, Env, Options};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

const JOBS: u64 = 10;

#[derive(Debug, Clone, serde::Serialize)]
struct Round {
    /// `cold`: a new scaler (no installation token or runner group cached yet), as after a
    /// Lambda cold start; `warm`: the same scaler's next batch.
    phase: &'static str,
    ms: f64,
    launched: usize,
    aws_calls: u64,
    github_calls: u64,
    aws_by_action: BTreeMap<String, u64>,
    github_by_endpoint: BTreeMap<String, u64>,
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

async fn batch(env: &Env, phase: &'static str, first_job: u64) -> Round {
    let p = env.pool_name();
    let records: Vec<(String, String, u32)> =
        (first_job..first_job + JOBS).map(|j| (format!("b-{j}"), scale_up(&p, j), 1)).collect();
    let refs: Vec<(&str, String, u32)> =
        records.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
    let (aws0, gh0) = (env.proxy.counts(), env.sim.counters().requests);
    let live0 = env.live().await.len();
    let t = Instant::now();
    let failed = env.batch(&refs).await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(failed.is_empty(), "{failed:?}");
    let launched = env.live().await.len() - live0;
    assert_eq!(launched as u64, JOBS);
    let aws_by_action = diff(&env.proxy.counts(), &aws0);
    let github_by_endpoint = diff(&env.sim.counters().requests, &gh0);
    Round {
        phase,
        ms,
        launched,
        aws_calls: aws_by_action.values().sum(),
        github_calls: github_by_endpoint.values().sum(),
        aws_by_action,
        github_by_endpoint,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds = if bench { 5 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let results: Vec<Round> = rt.block_on(async {
        let mut out = Vec::new();
        for r in 0..rounds {
            let env = Env::start(Options { max_runners: 40, ..Options::default() }).await;
            out.push(batch(&env, "cold", 1000 * (r + 1)).await);
            out.push(batch(&env, "warm", 1000 * (r + 1) + 100).await);
        }
        out
    });
    if !bench {
        println!("scaler_calls: smoke run ok ({} batches)", results.len());
        return;
    }
    println!(
        "{:<6} {:>9} {:>9} {:>10} {:>14} {:>17}",
        "phase", "ms", "launched", "aws calls", "aws/runner", "github/runner"
    );
    let mut summary = serde_json::Map::new();
    for phase in ["cold", "warm"] {
        let rs: Vec<&Round> = results.iter().filter(|r| r.phase == phase).collect();
        let ms = median(rs.iter().map(|r| r.ms).collect());
        let last = rs.last().unwrap();
        let per_aws = last.aws_calls as f64 / last.launched as f64;
        let per_gh = last.github_calls as f64 / last.launched as f64;
        println!(
            "{:<6} {:>9.1} {:>9} {:>10} {:>14.2} {:>17.2}",
            phase, ms, last.launched, last.aws_calls, per_aws, per_gh
        );
        println!("       aws: {:?}", last.aws_by_action);
        println!("       github: {:?}", last.github_by_endpoint);
        summary.insert(
            phase.into(),
            json!({
                "batch_jobs": JOBS,
                "median_ms": ms,
                "ms": rs.iter().map(|r| r.ms).collect::<Vec<_>>(),
                "launched": last.launched,
                "aws_calls": last.aws_calls,
                "github_calls": last.github_calls,
                "aws_calls_per_runner": per_aws,
                "github_calls_per_runner": per_gh,
                "aws_by_action": last.aws_by_action,
                "github_by_endpoint": last.github_by_endpoint,
            }),
        );
    }
    let dir = hangar_testsupport::workspace_root().join("target/bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scaler.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json!({ "scaler_batch_of_10": summary })).unwrap())
        .unwrap();
    println!("wrote {}", path.display());
}
