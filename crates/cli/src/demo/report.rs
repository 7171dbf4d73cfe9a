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
    /// The ideal scaler's queue wait on the same trace (see `hangar_sim::bound`).
    pub queue_wait_bound_ms: Waits,
    /// Ours over the bound; see [`ratio`].
    pub queue_wait_ratio: Ratio,
    pub launches: u64,
    pub max_runners: u32,
    pub max_observed: u32,
    /// The longest stretch in which the pool had more queued jobs than free runners and room
    /// under its cap, and no instance came (see [`max_stall_ms`]).
    pub max_stall_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Waits {
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
}

/// Our queue wait over the bound's, at p50 and p95, rounded to 3 decimals. `None` (`null` in
/// report.json, `n/a` in the table) where the bound is 0 ms: no finite ratio says how far a wait
/// is from none at all (the wait itself does).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Ratio {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

pub fn ratio(ours: &Waits, bound: &Waits) -> Ratio {
    let over = |a: u64, b: u64| (b > 0).then(|| (a as f64 / b as f64 * 1000.0).round() / 1000.0);
    Ratio { p50: over(ours.p50, bound.p50), p95: over(ours.p95, bound.p95) }
}

impl Ratio {
    fn show(r: Option<f64>) -> String {
        r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}"))
    }
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
    /// The ideal scaler's waits on the same trace, all pools.
    pub bound_waits: Waits,
    pub launches: u64,
    pub spot_launches: u64,
    pub on_demand_launches: u64,
    pub github_calls: u64,
    pub aws_calls: u64,
    pub leftover_instances: u64,
    pub leftover_parameters: u64,
    pub leftover_runners: u64,
    /// Jobs the job ledger still holds as queued after teardown (every job ran, so 0).
    pub ledger_queued_left: u64,
    /// Messages still in the scale and provisioning queues after teardown.
    pub messages_left: u64,
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

    /// Everything completed, nothing left behind (in EC2, SSM, GitHub or the ledger), the cap
    /// held.
    pub fn clean(&self) -> bool {
        self.jobs_lost() == 0
            && self.ledger_queued_left == 0
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
            "queue_wait_bound_ms": self.bound_waits,
            "queue_wait_ratio": ratio(&self.waits, &self.bound_waits),
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
            "ledger_queued_left": self.ledger_queued_left,
            "messages_left": self.messages_left,
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
        let b = &self.bound_waits;
        row(
            &mut s,
            "queue wait bound p50 / p95 / max",
            format!("{} / {} / {} ms (ideal scaler: same caps, boots, limits)", b.p50, b.p95, b.max),
        );
        let r = ratio(&self.waits, b);
        row(
            &mut s,
            "queue wait ratio p50 / p95",
            format!("{} / {} (ours over the bound)", Ratio::show(r.p50), Ratio::show(r.p95)),
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
        row(
            &mut s,
            "left queued: ledger jobs / messages",
            format!("{} / {}", self.ledger_queued_left, self.messages_left),
        );
        row(&mut s, "max_runners exceeded", format!("{}", self.max_runners_exceeded));
        row(&mut s, "time compression", self.time_compression_note.clone());
        let _ = writeln!(s, "  per pool:");
        for (name, p) in &self.pools {
            let _ = writeln!(
                s,
                "    {name:<14} jobs {:>4}  completed {:>4}  wait p50 {:>6} p95 {:>6} max {:>6} ms  launches {:>4}  peak {:>3}/{}  max stall {} ms",
                p.jobs, p.completed, p.queue_wait_ms.p50, p.queue_wait_ms.p95, p.queue_wait_ms.max, p.launches, p.max_observed, p.max_runners, p.max_stall_ms
            );
            let (b, r) = (&p.queue_wait_bound_ms, &p.queue_wait_ratio);
            let _ = writeln!(
                s,
                "    {:<40} bound p50 {:>6} p95 {:>6} max {:>6} ms  ratio p50 {} p95 {}",
                "",
                b.p50,
                b.p95,
                b.max,
                Ratio::show(r.p50),
                Ratio::show(r.p95)
            );
        }
        s
    }
}

/// One panel per pool: pending, idle, busy runners and queued jobs over real time, and beside
/// ours the bound's queued jobs (`bound_queued`: per pool, `(t_ms, queued)` at each change, on
/// the samples' clock), dashed.
pub fn svg(
    trace: &str,
    samples: &[Sample],
    bound_queued: &BTreeMap<String, Vec<(u64, u32)>>,
    max_runners: &BTreeMap<String, u32>,
    note: &str,
) -> String {
    let pools: Vec<&String> = max_runners.keys().collect();
    let (w, ph, left, top) = (960.0f64, 200.0f64, 60.0f64, 50.0f64);
    let plot_w = w - left - 20.0;
    let h = top + pools.len() as f64 * (ph + 40.0) + 20.0;
    let bound_end = bound_queued.values().filter_map(|c| c.last()).map(|p| p.0).max().unwrap_or(0);
    let t_max = samples.last().map(|s| s.t_ms).unwrap_or(1).max(bound_end).max(1) as f64;
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
    let x = left + series.len() as f64 * 130.0;
    let _ = writeln!(
        s,
        r##"<line x1="{x}" x2="{}" y1="32" y2="32" stroke="#d55e00" stroke-width="2" stroke-dasharray="4 3"/><text x="{}" y="36">queued jobs, ideal scaler (bound)</text>"##,
        x + 12.0,
        x + 16.0
    );
    for (pi, pool) in pools.iter().enumerate() {
        let y0 = top + pi as f64 * (ph + 40.0) + 10.0;
        let cap = f64::from(max_runners[*pool]);
        let y_max = samples
            .iter()
            .filter_map(|x| x.pools.get(*pool))
            .map(|v| v[0].max(v[1]).max(v[2]).max(v[3]) as f64)
            .chain(bound_queued.get(*pool).into_iter().flatten().map(|p| f64::from(p.1)))
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
        // The bound's queued jobs, as steps: each change holds until the next.
        let curve = bound_queued.get(*pool).map(Vec::as_slice).unwrap_or(&[]);
        let mut pts = Vec::new();
        let mut prev: Option<u32> = None;
        for &(t, v) in curve {
            let x = left + t as f64 / t_max * plot_w;
            let y = |v: u32| y0 + 10.0 + ph - f64::from(v) / y_max * ph;
            for at in prev.into_iter().chain([v]) {
                let pt = format!("{x:.1},{:.1}", y(at));
                if pts.last() != Some(&pt) {
                    pts.push(pt);
                }
            }
            prev = Some(v);
        }
        if pts.len() > 1 {
            let _ = writeln!(
                s,
                r##"<polyline fill="none" stroke="#d55e00" stroke-width="1.5" stroke-dasharray="4 3" points="{}"/>"##,
                pts.join(" ")
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The longest stall of `pool` in the samples, in ms: a stretch of consecutive samples in
/// which its queued jobs outnumber its free (pending and idle) runners while it holds fewer
/// than `max_runners` instances, and the number of instances never rises. A launch, a job
/// starting (fewer queued) or the pool reaching its cap ends it. Measured from the first
/// sample of the stretch to the first one after it (the last, if it runs to the end).
pub fn max_stall_ms(samples: &[Sample], pool: &str, max_runners: u32) -> u64 {
    let mut longest = 0;
    let mut open: Option<(u64, u32)> = None; // (start, instances at start)
    for s in samples {
        let Some(&[pending, idle, _busy, queued, counted]) = s.pools.get(pool) else { continue };
        let stalled = queued > pending + idle && counted < max_runners;
        match open {
            Some((start, at)) if stalled && counted <= at => {
                longest = longest.max(s.t_ms - start);
            }
            Some((start, _)) => {
                longest = longest.max(s.t_ms - start);
                open = stalled.then_some((s.t_ms, counted));
            }
            None => open = stalled.then_some((s.t_ms, counted)),
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rows: &[(u64, [u32; 5])]) -> Vec<Sample> {
        rows.iter().map(|(t, v)| Sample { t_ms: *t, pools: [("p".to_owned(), *v)].into() }).collect()
    }

    #[test]
    fn a_stall_runs_until_an_instance_comes_and_the_longest_counts() {
        // [pending, idle, busy, queued, counted], cap 4.
        let s = samples(&[
            (0, [0, 0, 0, 0, 0]),
            (100, [0, 0, 0, 2, 0]), // stall opens
            (350, [0, 0, 0, 2, 0]), // still: no launch
            (600, [2, 0, 0, 2, 2]), // launched: ends at 600, 500 ms
            (700, [0, 0, 2, 1, 2]), // another queued job, no free runner: opens
            (800, [1, 0, 2, 1, 3]), // launched: 100 ms
            (900, [0, 0, 4, 3, 4]), // at the cap: not a stall
            (2000, [0, 0, 4, 3, 4]),
        ]);
        assert_eq!(max_stall_ms(&s, "p", 4), 500);
        assert_eq!(max_stall_ms(&s, "other", 4), 0);
        // A lower cap makes the second stretch a wait for capacity instead.
        assert_eq!(max_stall_ms(&s, "p", 2), 500);
    }

    #[test]
    fn a_stall_that_lasts_to_the_end_is_measured_to_the_last_sample() {
        let s = samples(&[(0, [0, 0, 0, 1, 0]), (250, [0, 0, 0, 1, 0]), (5000, [0, 0, 0, 1, 0])]);
        assert_eq!(max_stall_ms(&s, "p", 3), 5000);
        // Free runners cover the queue: nothing is stalled.
        let s = samples(&[(0, [1, 1, 0, 2, 2]), (9000, [0, 2, 0, 2, 2])]);
        assert_eq!(max_stall_ms(&s, "p", 3), 0);
    }

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
            assert!(v["queue_wait_bound_ms"].get(k).is_some(), "missing queue_wait_bound_ms.{k}");
        }
        for k in ["p50", "p95"] {
            assert!(v["queue_wait_ratio"].get(k).is_some(), "missing queue_wait_ratio.{k}");
        }
        assert_eq!(v["jobs_lost"], 1);
        assert_eq!(v["launches_per_job"], 1.25);
        assert!(!o.clean());
    }

    #[test]
    fn the_ratio_is_ours_over_the_bound_and_null_where_the_bound_is_zero() {
        let ours = Waits { p50: 3000, p95: 5000, max: 9000 };
        let bound = Waits { p50: 1500, p95: 3000, max: 4000 };
        assert_eq!(ratio(&ours, &bound), Ratio { p50: Some(2.0), p95: Some(1.667) });
        let zero = Waits { p50: 0, p95: 3000, max: 3000 };
        assert_eq!(ratio(&ours, &zero), Ratio { p50: None, p95: Some(1.667) });
        assert_eq!(ratio(&Waits::default(), &Waits::default()), Ratio::default());

        let mut o = Outcome { waits: ours, bound_waits: zero, ..Default::default() };
        o.pools.insert(
            "linux-x64".into(),
            PoolOutcome {
                queue_wait_ms: ours,
                queue_wait_bound_ms: bound,
                queue_wait_ratio: ratio(&ours, &bound),
                ..Default::default()
            },
        );
        let v = o.to_json();
        assert_eq!(v["queue_wait_bound_ms"], json!({"p50": 0, "p95": 3000, "max": 3000}));
        assert_eq!(v["queue_wait_ratio"], json!({"p50": null, "p95": 1.667}));
        assert_eq!(
            v["pools"]["linux-x64"]["queue_wait_bound_ms"],
            json!({"p50": 1500, "p95": 3000, "max": 4000})
        );
        assert_eq!(v["pools"]["linux-x64"]["queue_wait_ratio"], json!({"p50": 2.0, "p95": 1.667}));
        let t = o.table();
        assert!(t.contains("queue wait bound p50 / p95 / max     0 / 3000 / 3000 ms"), "{t}");
        assert!(t.contains("queue wait ratio p50 / p95           n/a / 1.67"), "{t}");
        assert!(t.contains("bound p50   1500 p95   3000 max   4000 ms  ratio p50 2.00 p95 1.67"), "{t}");
    }

    #[test]
    fn the_picture_draws_the_bounds_queued_jobs_as_dashed_steps() {
        let caps: BTreeMap<String, u32> = [("p".to_owned(), 4)].into();
        let samples = vec![
            Sample { t_ms: 0, pools: [("p".to_owned(), [0, 0, 0, 0, 0])].into() },
            Sample { t_ms: 1000, pools: [("p".to_owned(), [1, 0, 0, 2, 1])].into() },
        ];
        let bound: BTreeMap<String, Vec<(u64, u32)>> =
            [("p".to_owned(), vec![(0, 0), (500, 2), (1000, 0)])].into();
        let pic = svg("t", &samples, &bound, &caps, "note");
        let dashed: Vec<&str> =
            pic.lines().filter(|l| l.starts_with("<polyline") && l.contains("stroke-dasharray")).collect();
        assert_eq!(dashed.len(), 1, "{pic}");
        // Width 960, left 60: plot 880 px over 1000 ms; height 200 px for 4 (the cap), top at 70.
        assert!(
            dashed[0].contains(r#"points="60.0,270.0 500.0,270.0 500.0,170.0 940.0,170.0 940.0,270.0""#),
            "{}",
            dashed[0]
        );
        assert!(pic.contains("queued jobs, ideal scaler (bound)"));
        let none = svg("t", &samples, &BTreeMap::new(), &caps, "note");
        assert!(!none.lines().any(|l| l.starts_with("<polyline") && l.contains("stroke-dasharray")));
    }
}
