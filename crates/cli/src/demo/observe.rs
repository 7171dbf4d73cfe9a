//! What the run sees of itself: the pools sampled on every look the instance simulator takes at
//! moto (the picture, the cap, which job each instance came up for), and, after it, the live
//! instances, each job's chain of re-runs and each delivery's outcome.

use super::report::Sample;
use anyhow::Context;
use hangar_core::config::Config;
use hangar_core::routing::Router;
use hangar_sim::github::{GithubSim, JobStatus};
use hangar_sim::instances::{Observation, Phase};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// What sampling records, shared with the task that records it.
pub struct Seen {
    /// The pools every 500 ms or more, for the picture.
    pub samples: Arc<Mutex<Vec<Sample>>>,
    /// The samples' clock.
    pub t0: Instant,
    /// Per pool, the most instances counting toward the cap seen at once.
    pub peaks: Arc<Mutex<BTreeMap<String, u32>>>,
    /// Per job id, the instances tagged with it (the scaler tags an instance with the job that
    /// started on it) that came up as runners.
    pub job_tags: Arc<Mutex<HashMap<String, HashSet<String>>>>,
}

/// Samples every observation of the instance simulator until `stop`.
pub fn sample(
    sim: Arc<GithubSim>,
    config: &Config,
    mut obs: watch::Receiver<Arc<Observation>>,
    mut stop: watch::Receiver<bool>,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen = Seen {
        samples: Arc::new(Mutex::new(Vec::new())),
        t0: Instant::now(),
        peaks: Arc::new(Mutex::new(BTreeMap::new())),
        job_tags: Arc::new(Mutex::new(HashMap::new())),
    };
    let (samples, peaks, job_tags) =
        (Arc::clone(&seen.samples), Arc::clone(&seen.peaks), Arc::clone(&seen.job_tags));
    let router = Router::new(config);
    let pool_names: Vec<String> = config.pools.iter().map(|p| p.name.to_string()).collect();
    let start = seen.t0;
    let task = tokio::spawn(async move {
        let mut last_sample: Option<u64> = None;
        let mut first_tag: HashMap<String, String> = HashMap::new();
        loop {
            tokio::select! {
                r = obs.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
            let o = obs.borrow_and_update().clone();
            let mut counts: BTreeMap<String, [u32; 5]> =
                pool_names.iter().map(|p| (p.clone(), [0; 5])).collect();
            for i in &o.instances {
                // A job ran twice when two instances that came up as runners were tagged
                // with it (the first job-id tag each got, from the job that started on it).
                if let (Some(j), Some("job")) = (&i.job_tag, i.launch_reason.as_deref()) {
                    first_tag.entry(i.id.clone()).or_insert_with(|| j.clone());
                }
                if matches!(o.phases.get(&i.id), Some(Phase::Idle | Phase::Busy)) {
                    if let Some(j) = first_tag.get(&i.id) {
                        job_tags
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(j.clone())
                            .or_default()
                            .insert(i.id.clone());
                    }
                }
                let Some(c) = i.pool.as_ref().and_then(|p| counts.get_mut(p)) else { continue };
                if !i.counts_toward_cap() {
                    continue;
                }
                c[4] += 1;
                match o.phases.get(&i.id) {
                    Some(Phase::Idle) => c[1] += 1,
                    Some(Phase::Busy) => c[2] += 1,
                    _ => c[0] += 1,
                }
            }
            for j in sim.jobs().iter().filter(|j| j.status == JobStatus::Queued) {
                if let Ok(idx) = router.route(&j.labels) {
                    if let Some(c) = counts.get_mut(&pool_names[idx]) {
                        c[3] += 1;
                    }
                }
            }
            {
                let mut pk = peaks.lock().unwrap_or_else(|e| e.into_inner());
                for (p, c) in &counts {
                    let e = pk.entry(p.clone()).or_default();
                    *e = (*e).max(c[4]);
                }
            }
            let t = start.elapsed().as_millis() as u64;
            if last_sample.is_none_or(|l| t >= l + 500) {
                last_sample = Some(t);
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(Sample { t_ms: t, pools: counts });
            }
        }
    });
    (seen, task)
}

/// A delivery's HTTP status, `error` (no answer: the connection failed or timed out), or
/// `pending` (not sent when the run ended).
pub fn delivery_outcome(d: &hangar_sim::github::Delivery) -> String {
    match (d.status_code, &d.error) {
        (Some(s), _) => s.to_string(),
        (None, Some(_)) => "error".into(),
        (None, None) => "pending".into(),
    }
}

/// A job and its re-runs, in order.
pub fn chain_of<'a>(
    root: u64,
    by_id: &HashMap<u64, &'a hangar_sim::github::Job>,
) -> Vec<&'a hangar_sim::github::Job> {
    let mut out = Vec::new();
    let mut cur = by_id.get(&root).copied();
    while let Some(j) = cur {
        out.push(j);
        cur = j.rerun_by.and_then(|n| by_id.get(&n).copied());
        if out.len() > 1000 {
            break;
        }
    }
    out
}

pub async fn count_live(ec2: &aws_sdk_ec2::Client) -> anyhow::Result<u64> {
    let mut n = 0;
    let mut pages = ec2
        .describe_instances()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:hangar:managed-by").values("hangar").build())
        .into_paginator()
        .send();
    while let Some(p) = pages.next().await {
        let p = p.context("DescribeInstances")?;
        for r in p.reservations() {
            for i in r.instances() {
                let state =
                    i.state().and_then(|s| s.name()).map(|s| s.as_str().to_owned()).unwrap_or_default();
                if !matches!(state.as_str(), "shutting-down" | "terminated") {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}
