//! The bound: the queue wait an ideal scaler would have had on the same trace.
//!
//! `hangar demo` reports its queue wait beside the wait of a scaler that cannot be beaten
//! fairly: it knows every arrival the instant it happens and launches at once, with no webhook,
//! queue, Lambda, EC2 or polling latency. It is held only to what binds every scaler:
//! - each pool's cap (`max_runners`; `None` is no cap);
//! - the same boot times: drawn from the runner-instance simulator's [`DelayRange`] with the
//!   same seed, through the same [`DelayRange::draw`]. The simulator keys each draw by the
//!   instance id moto picks, which no model can know in advance, so the bound keys them by
//!   launch number: the same distribution and seed, a different draw order;
//! - the same job durations, and the same re-runs (attempt `k + 1` of a job arrives the moment
//!   attempt `k` ends);
//! - the same limits: every launch needs one token of each [`Limits::jit`] limiter (a JIT runner
//!   config from GitHub) and of each [`Limits::launch`] limiter (EC2). The limiters are shared
//!   by all pools, as GitHub's secondary limit and EC2's request throttling are.
//!
//! The ideal scaler, per pool, with `queued` jobs waiting, `booting + idle` runners not yet busy
//! and `warm` the warm-pool target:
//! - a job takes an idle runner at once; runners become idle after their boot and are given to
//!   the oldest waiting job, as GitHub gives a queued job to any idle runner whose labels fit;
//! - it keeps `booting + idle >= queued + warm` by launching at once, as far as the cap and the
//!   limiters allow; what the limiters refuse is launched the moment they allow it, for the job
//!   that has waited longest first (any pool), warm-pool top-ups after jobs;
//! - runners are ephemeral: a runner that finished its job is gone and frees its cap slot at
//!   that instant.
//!
//! What is fair about the warm pool: the real scaler keeps `warm` runners idle before the trace
//! starts, so the ideal one has `min(warm, cap)` runners booted and idle at time 0 (their JIT
//! configs and launches were spent before the trace and are not charged), and tops the pool up
//! as the planner does (`need = queued + warm`). A warm-pool schedule is read once, by the
//! caller, for the whole run.
//!
//! Queue wait = start − arrival, in the same milliseconds as the input (the demo uses real
//! milliseconds: arrivals and durations already divided by the trace's compression). Events at
//! the same instant are handled in a fixed order (runners finishing, runners becoming idle,
//! arrivals; ties in input order), so the result is deterministic. [`simulate`] is a pure
//! function of its [`Input`].

use crate::instances::DelayRange;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// One pool of the ideal scaler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    /// Runners counting toward the cap (booting, idle, busy); `None`: no cap.
    pub max_runners: Option<u32>,
    /// Warm-pool target: idle at time 0, topped up after (clamped to the cap).
    pub warm: u32,
}

/// One job of the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Index into [`Input::pools`].
    pub pool: usize,
    pub arrival_ms: u64,
    pub duration_ms: u64,
    /// GitHub's `run_attempt`: the job runs this many times, each attempt after the first
    /// arriving when the previous one ends. 0 runs nothing.
    pub attempts: u32,
}

/// A rate limiter a launch must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// At most `max` in any `per_ms` (sliding) window: GitHub's secondary limit as the
    /// simulator applies it (a request is refused while `max` accepted ones are younger than
    /// `per_ms`).
    Window { max: u32, per_ms: u64 },
    /// Token bucket: starts full with `burst` tokens, one more every `every_ms` (EC2's request
    /// throttling).
    Bucket { burst: u32, every_ms: u64 },
}

/// The limiters a launch must pass; each launch takes one token of every one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Creating the runner's JIT config (GitHub).
    pub jit: Vec<Limit>,
    /// Launching the instance (EC2).
    pub launch: Vec<Limit>,
}

/// Boot time of the `k`-th launch: `range.draw(seed ^ k)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    pub range: DelayRange,
    pub seed: u64,
}

impl Boot {
    /// Every boot takes `ms`.
    pub fn fixed(ms: u64) -> Self {
        Boot { range: DelayRange::new(ms, ms), seed: 0 }
    }

    /// Boot time of launch number `k` (0-based, counted over all pools), in milliseconds.
    pub fn draw(&self, k: u64) -> u64 {
        self.range.draw(self.seed ^ k).as_millis() as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub pools: Vec<PoolSpec>,
    pub jobs: Vec<Arrival>,
    pub boot: Boot,
    pub limits: Limits,
}

/// What the ideal scaler achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bound {
    /// Per input job (same order), one wait per attempt, milliseconds.
    pub waits_ms: Vec<Vec<u64>>,
    /// Per pool: instances launched during the trace (the warm runners at time 0 not counted).
    pub launches: Vec<u64>,
    /// Per pool: the number of queued jobs (arrived, not started) after each change, as
    /// `(t_ms, queued)`, starting with `(0, 0)`; several points may share an instant.
    pub queued: Vec<Vec<(u64, u32)>>,
}

impl Bound {
    /// Every wait, all pools.
    pub fn all_waits(&self) -> Vec<u64> {
        self.waits_ms.iter().flatten().copied().collect()
    }

    /// The waits of one pool's jobs.
    pub fn pool_waits(&self, input: &Input, pool: usize) -> Vec<u64> {
        input
            .jobs
            .iter()
            .zip(&self.waits_ms)
            .filter(|(j, _)| j.pool == pool)
            .flat_map(|(_, w)| w.iter().copied())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    #[error("job {job} names pool {pool}, but there are only {pools} pools")]
    UnknownPool { job: usize, pool: usize, pools: usize },
    #[error("pool `{0}` has max_runners 0: its jobs never start")]
    ZeroCap(String),
    #[error("limit {0:?} lets nothing through: jobs would never start")]
    ClosedLimit(Limit),
}

/// A limiter's state.
enum Gate {
    /// The times of the last `max` accepted requests.
    Window { max: usize, per_ms: u64, last: VecDeque<u64> },
    /// GCRA form of a token bucket: `tat` is the theoretical arrival time of the next token.
    Bucket { burst: u64, every_ms: u64, tat: u64 },
}

impl Gate {
    fn new(l: Limit) -> Result<Self, BoundError> {
        match l {
            Limit::Window { max: 0, .. } | Limit::Bucket { burst: 0, .. } => Err(BoundError::ClosedLimit(l)),
            Limit::Window { max, per_ms } => {
                Ok(Gate::Window { max: max as usize, per_ms, last: VecDeque::new() })
            }
            Limit::Bucket { burst, every_ms } => {
                Ok(Gate::Bucket { burst: u64::from(burst), every_ms, tat: 0 })
            }
        }
    }

    /// The earliest time at or after `t` a request passes.
    fn earliest(&self, t: u64) -> u64 {
        match self {
            Gate::Window { max, per_ms, last } => match last.front() {
                Some(&oldest) if last.len() >= *max => t.max(oldest.saturating_add(*per_ms)),
                _ => t,
            },
            Gate::Bucket { burst, every_ms, tat } => {
                t.max(tat.saturating_sub((burst - 1).saturating_mul(*every_ms)))
            }
        }
    }

    /// Takes a token at `t` (which `earliest` allowed; times never go back).
    fn take(&mut self, t: u64) {
        match self {
            Gate::Window { max, last, .. } => {
                last.push_back(t);
                if last.len() > *max {
                    last.pop_front();
                }
            }
            Gate::Bucket { every_ms, tat, .. } => *tat = (*tat).max(t).saturating_add(*every_ms),
        }
    }
}

/// What happens at an instant; the variant order is the order of events at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A runner finished its job and is gone.
    Finish { pool: usize, job: usize, attempt: u32 },
    /// A runner finished booting and is idle.
    Ready { pool: usize },
    /// An attempt of a job is queued.
    Arrive { pool: usize, job: usize, attempt: u32 },
}

#[derive(Default)]
struct PoolState {
    /// (job, attempt, arrival), oldest first.
    queue: VecDeque<(usize, u32, u64)>,
    booting: u32,
    idle: u32,
    busy: u32,
    cap: Option<u32>,
    warm: u32,
}

impl PoolState {
    fn counted(&self) -> u32 {
        self.booting + self.idle + self.busy
    }
    fn room(&self) -> u32 {
        self.cap.map_or(u32::MAX, |c| c.saturating_sub(self.counted()))
    }
}

struct Sim<'a> {
    input: &'a Input,
    pools: Vec<PoolState>,
    gates: Vec<Gate>,
    /// (time, event, sequence number), smallest first.
    events: BinaryHeap<Reverse<(u64, Event, u64)>>,
    seq: u64,
    launched: u64,
    out: Bound,
}

impl Sim<'_> {
    fn push(&mut self, t: u64, e: Event) {
        self.events.push(Reverse((t, e, self.seq)));
        self.seq += 1;
    }

    fn note_queue(&mut self, t: u64, pool: usize) {
        let n = self.pools[pool].queue.len() as u32;
        let curve = &mut self.out.queued[pool];
        if curve.last().map(|p| p.1) != Some(n) {
            curve.push((t, n));
        }
    }

    fn handle(&mut self, t: u64, e: Event) {
        match e {
            Event::Finish { pool, job, attempt } => {
                self.pools[pool].busy -= 1;
                if attempt + 1 < self.input.jobs[job].attempts {
                    self.push(t, Event::Arrive { pool, job, attempt: attempt + 1 });
                }
            }
            Event::Ready { pool } => {
                let p = &mut self.pools[pool];
                p.booting -= 1;
                p.idle += 1;
            }
            Event::Arrive { pool, job, attempt } => {
                self.pools[pool].queue.push_back((job, attempt, t));
                self.note_queue(t, pool);
            }
        }
    }

    /// Idle runners to the oldest queued jobs, then launches for what is missing. Returns the
    /// time the limiters next let a wanted launch through, if one had to wait.
    fn plan(&mut self, t: u64) -> Option<u64> {
        for pool in 0..self.pools.len() {
            let mut started = false;
            while self.pools[pool].idle > 0 {
                let Some((job, attempt, arrived)) = self.pools[pool].queue.pop_front() else { break };
                let p = &mut self.pools[pool];
                p.idle -= 1;
                p.busy += 1;
                self.out.waits_ms[job].push(t - arrived);
                let d = self.input.jobs[job].duration_ms;
                self.push(t.saturating_add(d), Event::Finish { pool, job, attempt });
                started = true;
            }
            if started {
                self.note_queue(t, pool);
            }
        }
        // Launches wanted: (0, arrival) for a queued job no runner is coming for, (1, 0) for a
        // warm-pool top-up; each pool's list cut to its room under the cap. While the limiters
        // are closed, only whether any is wanted matters (and the list is not built).
        let open = self.gates.iter().map(|g| g.earliest(t)).max().unwrap_or(t);
        let mut wanted: Vec<(u8, u64, usize)> = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            let supply = (p.booting + p.idle) as usize;
            let jobs = p.queue.len().saturating_sub(supply);
            let warm = (p.queue.len() + p.warm as usize).saturating_sub(supply) - jobs;
            let room = p.room() as usize;
            if open > t {
                if room > 0 && jobs + warm > 0 {
                    return Some(open);
                }
                continue;
            }
            let first = p.queue.len() - jobs;
            let mine = p.queue.range(first..).map(|q| (0u8, q.2, i)).chain((0..warm).map(|_| (1u8, 0, i)));
            wanted.extend(mine.take(room));
        }
        wanted.sort_unstable();
        for (_, _, pool) in wanted {
            let at = self.gates.iter().map(|g| g.earliest(t)).max().unwrap_or(t);
            if at > t {
                return Some(at);
            }
            for g in &mut self.gates {
                g.take(t);
            }
            let boot = self.input.boot.draw(self.launched);
            self.launched += 1;
            self.out.launches[pool] += 1;
            self.pools[pool].booting += 1;
            self.push(t.saturating_add(boot), Event::Ready { pool });
        }
        None
    }
}

/// The ideal scaler's run over `input` (see the module documentation).
pub fn simulate(input: &Input) -> Result<Bound, BoundError> {
    let n = input.pools.len();
    for (job, j) in input.jobs.iter().enumerate() {
        if j.pool >= n {
            return Err(BoundError::UnknownPool { job, pool: j.pool, pools: n });
        }
        if j.attempts > 0 && input.pools[j.pool].max_runners == Some(0) {
            return Err(BoundError::ZeroCap(input.pools[j.pool].name.clone()));
        }
    }
    let gates = input
        .limits
        .jit
        .iter()
        .chain(&input.limits.launch)
        .map(|l| Gate::new(*l))
        .collect::<Result<_, _>>()?;
    let pools = input
        .pools
        .iter()
        .map(|p| {
            let warm = p.max_runners.map_or(p.warm, |c| p.warm.min(c));
            PoolState { idle: warm, cap: p.max_runners, warm, ..Default::default() }
        })
        .collect();
    let mut sim = Sim {
        input,
        pools,
        gates,
        events: BinaryHeap::new(),
        seq: 0,
        launched: 0,
        out: Bound {
            waits_ms: vec![Vec::new(); input.jobs.len()],
            launches: vec![0; n],
            queued: vec![vec![(0, 0)]; n],
        },
    };
    for (job, j) in input.jobs.iter().enumerate() {
        if j.attempts > 0 {
            sim.push(j.arrival_ms, Event::Arrive { pool: j.pool, job, attempt: 0 });
        }
    }
    let mut retry: Option<u64> = None;
    loop {
        let next = sim.events.peek().map(|Reverse((t, _, _))| *t);
        let t = match (next, retry) {
            (None, None) => break,
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        if retry.is_some_and(|r| r <= t) {
            retry = None;
        }
        if next == Some(t) {
            let Some(Reverse((_, e, _))) = sim.events.pop() else { break };
            sim.handle(t, e);
        }
        if let Some(r) = sim.plan(t) {
            retry = Some(retry.map_or(r, |x| x.min(r)));
        }
    }
    Ok(sim.out)
}
