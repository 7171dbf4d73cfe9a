//! The run's outcome: `report.json` (stable keys, read by other tools), the printed table and
//! the SVG timeline of each pool.

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One moment of the run, for the picture.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    /// Per pool: `[pending, idle, busy, queued jobs, instances counting toward the cap]`.
    pub pools: BTreeMap<String, [u32; 5]>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolOutcome {
    pub jobs: u64,
    pub completed: u64,
    pub queue_wait_ms: Waits,
    pub launches: u64,
    pub max_runners: u32,
    pub max_observed: u32,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Waits {
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
}

/// Nearest-rank percentiles of the waits, in milliseconds.
pub fn waits(values: &[u64]) -> Waits {
    if values.is_empty() {
        return Waits::default();
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let pick = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    };
    Waits { p50: pick(0.50), p95: pick(0.95), max: *v.last().expect("non-empty") }
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub trace: String,
    pub jobs_total: u64,
    pub jobs_queued: u64,
    pub jobs_started: u64,
    pub jobs_completed: u64,
    pub waits: Waits,
    pub launches: u64,
    pub spot_launches: u64,
    pub on_demand_launches: u64,
    pub github_calls: u64,
    pub aws_calls: u64,
    pub leftover_instances: u64,
    pub leftover_parameters: u64,
    pub leftover_runners: u64,
    pub max_runners_exceeded: bool,
    pub time_compression: f64,
    pub time_compression_note: String,
    pub pools: BTreeMap<String, PoolOutcome>,
    pub extra: BTreeMap<String, Value>,
    pub duration_s: f64,
}

fn per_job(n: u64, jobs: u64) -> f64 {
    if jobs == 0 {
        0.0
    } else {
        (n as f64 / jobs as f64 * 1000.0).round() / 1000.0
    }
}

impl Outcome {
    pub fn jobs_lost(&self) -> u64 {
        self.jobs_total.saturating_sub(self.jobs_completed)
    }

    pub fn launches_per_job(&self) -> f64 {
        per_job(self.launches, self.jobs_total)
    }

    /// Everything completed, nothing left behind, the cap held.
    pub fn clean(&self) -> bool {
        self.jobs_lost() == 0
            && self.leftover_instances == 0
            && self.leftover_parameters == 0
            && self.leftover_runners == 0
            && !self.max_runners_exceeded
    }

    pub fn to_json(&self) -> Value {
        json!({
            "trace": self.trace,
            "jobs_total": self.jobs_total,
            "jobs_queued": self.jobs_queued,
            "jobs_started": self.jobs_started,
            "jobs_completed": self.jobs_completed,
            "jobs_lost": self.jobs_lost(),
            "queue_wait_ms": self.waits,
            "launches": self.launches,
            "launches_per_job": self.launches_per_job(),
            "spot_launches": self.spot_launches,
            "on_demand_launches": self.on_demand_launches,
            "github_calls_per_job": per_job(self.github_calls, self.jobs_total),
            "aws_calls_per_job": per_job(self.aws_calls, self.jobs_total),
            "github_calls": self.github_calls,
            "aws_calls": self.aws_calls,
            "leftover_instances": self.leftover_instances,
            "leftover_parameters": self.leftover_parameters,
            "leftover_runners": self.leftover_runners,
            "max_runners_exceeded": self.max_runners_exceeded,
            "time_compression": self.time_compression,
            "time_compression_note": self.time_compression_note,
            "duration_s": (self.duration_s * 10.0).round() / 10.0,
            "pools": self.pools,
            "details": self.extra,
        })
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<36} {v}");
        };
        let _ = writeln!(s, "hangar demo: trace `{}` ({:.1} s)", self.trace, self.duration_s);
        row(
            &mut s,
            "jobs queued / started / completed",
            format!(
                "{} / {} / {} (of {}, lost {})",
                self.jobs_queued,
                self.jobs_started,
                self.jobs_completed,
                self.jobs_total,
                self.jobs_lost()
            ),
        );
        row(
            &mut s,
            "queue wait p50 / p95 / max",
            format!("{} / {} / {} ms", self.waits.p50, self.waits.p95, self.waits.max),
        );
        row(
            &mut s,
            "instances launched per job",
            format!(
                "{:.3} ({} launches: {} spot, {} on-demand)",
                self.launches_per_job(),
                self.launches,
                self.spot_launches,
                self.on_demand_launches
            ),
        );
        row(
            &mut s,
            "GitHub API calls per job",
            format!("{:.3} ({} calls)", per_job(self.github_calls, self.jobs_total), self.github_calls),
        );
        row(
            &mut s,
            "AWS API calls per job",
            format!("{:.3} ({} calls)", per_job(self.aws_calls, self.jobs_total), self.aws_calls),
        );
        row(
            &mut s,
            "leftovers: instances / params / runners",
            format!("{} / {} / {}", self.leftover_instances, self.leftover_parameters, self.leftover_runners),
        );
        row(&mut s, "max_runners exceeded", format!("{}", self.max_runners_exceeded));
        row(&mut s, "time compression", self.time_compression_note.clone());
        let _ = writeln!(s, "  per pool:");
        for (name, p) in &self.pools {
            let _ = writeln!(
                s,
                "    {name:<14} jobs {:>4}  completed {:>4}  wait p50 {:>6} p95 {:>6} max {:>6} ms  launches {:>4}  peak {:>3}/{}",
                p.jobs, p.completed, p.queue_wait_ms.p50, p.queue_wait_ms.p95, p.queue_wait_ms.max, p.launches, p.max_observed, p.max_runners
            );
        }
        s
    }
}

/// One panel per pool: pending, idle, busy runners and queued jobs over real time.
pub fn svg(trace: &str, samples: &[Sample], max_runners: &BTreeMap<String, u32>, note: &str) -> String {
    let pools: Vec<&String> = max_runners.keys().collect();
    let (w, ph, left, top) = (960.0f64, 200.0f64, 60.0f64, 50.0f64);
    let plot_w = w - left - 20.0;
    let h = top + pools.len() as f64 * (ph + 40.0) + 20.0;
    let t_max = samples.last().map(|s| s.t_ms).unwrap_or(1).max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="15">hangar demo: {} (real seconds; {})</text>"#,
        esc(trace),
        esc(note)
    );
    let series = [
        ("pending", 0usize, "#e69f00"),
        ("idle", 1, "#009e73"),
        ("busy", 2, "#0072b2"),
        ("queued jobs", 3, "#d55e00"),
    ];
    for (k, (label, _, color)) in series.iter().enumerate() {
        let x = left + k as f64 * 130.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="30" width="12" height="4" fill="{color}"/><text x="{}" y="36">{label}</text>"#,
            x + 16.0
        );
    }
    for (pi, pool) in pools.iter().enumerate() {
        let y0 = top + pi as f64 * (ph + 40.0) + 10.0;
        let cap = f64::from(max_runners[*pool]);
        let y_max = samples
            .iter()
            .filter_map(|x| x.pools.get(*pool))
            .map(|v| v[0].max(v[1]).max(v[2]).max(v[3]) as f64)
            .fold(cap, f64::max)
            .max(1.0);
        let _ = writeln!(s, r#"<text x="{left}" y="{}">{} (max_runners {cap})</text>"#, y0 + 4.0, esc(pool));
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{}" width="{plot_w}" height="{ph}" fill="none" stroke="#999"/>"##,
            y0 + 10.0
        );
        let ycap = y0 + 10.0 + ph - cap / y_max * ph;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{ycap:.1}" y2="{ycap:.1}" stroke="#999" stroke-dasharray="4 3"/>"##,
            left + plot_w
        );
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{y_max}</text>"#, left - 4.0, y0 + 20.0);
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">0</text>"#, left - 4.0, y0 + 10.0 + ph);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0} s</text>"#,
            left + plot_w,
            y0 + 24.0 + ph,
            t_max / 1000.0
        );
        for (_, idx, color) in series {
            let pts: Vec<String> = samples
                .iter()
                .filter_map(|x| x.pools.get(*pool).map(|v| (x.t_ms, v[idx])))
                .map(|(t, v)| {
                    format!(
                        "{:.1},{:.1}",
                        left + t as f64 / t_max * plot_w,
                        y0 + 10.0 + ph - f64::from(v) / y_max * ph
                    )
                })
                .collect();
            if !pts.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    pts.join(" ")
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(waits(&v), Waits { p50: 50, p95: 95, max: 100 });
        assert_eq!(waits(&[7]), Waits { p50: 7, p95: 7, max: 7 });
        assert_eq!(waits(&[]), Waits::default());
    }

    #[test]
    fn report_has_the_stable_keys() {
        let o = Outcome { jobs_total: 4, jobs_completed: 3, launches: 5, ..Default::default() };
        let v = o.to_json();
        for k in [
            "jobs_total",
            "jobs_completed",
            "jobs_lost",
            "queue_wait_ms",
            "launches",
            "launches_per_job",
            "spot_launches",
            "on_demand_launches",
            "github_calls_per_job",
            "aws_calls_per_job",
            "leftover_instances",
            "leftover_parameters",
            "leftover_runners",
            "max_runners_exceeded",
            "time_compression",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in ["p50", "p95", "max"] {
            assert!(v["queue_wait_ms"].get(k).is_some());
        }
        assert_eq!(v["jobs_lost"], 1);
        assert_eq!(v["launches_per_job"], 1.25);
        assert!(!o.clean());
    }
}
