//! The pool configuration: one YAML (or JSON) document, stored in SSM Parameter Store in AWS and
//! in a file locally. Parsing is strict (`deny_unknown_fields`) and validation names the field
//! at fault, so an operator's typo fails the deploy instead of silently routing nowhere.

use crate::ids::PoolName;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Larger documents are refused before parsing; SSM's advanced tier caps a parameter at 8 KiB,
/// a local file has no good reason to be far larger, and YAML alias expansion is bounded by it.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration is {0} bytes, over the {MAX_CONFIG_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("configuration is not valid YAML/JSON for the schema: {0}")]
    Parse(String),
    #[error("configuration field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), reason: reason.into() }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The GitHub organisation this deployment serves. Webhooks from any other are refused.
    pub organization: String,
    #[serde(default)]
    pub github: GithubConfig,
    pub pools: Vec<PoolConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// `https://api.github.com`, `https://HOST/api/v3` (GHES) or `https://api.SUBDOMAIN.ghe.com`.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The GitHub App's id (the JWT `iss`).
    #[serde(default)]
    pub app_id: u64,
    /// Runner group new runners join, resolved by name once and cached.
    #[serde(default = "default_runner_group")]
    pub runner_group: String,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self { api_url: default_api_url(), app_id: 0, runner_group: default_runner_group() }
    }
}

fn default_api_url() -> String {
    "https://api.github.com".into()
}
fn default_runner_group() -> String {
    "Default".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    Spot,
    OnDemand,
}

impl CapacityType {
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::Spot => "spot",
            CapacityType::OnDemand => "on-demand",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    #[serde(rename = "type", default = "default_capacity")]
    pub capacity_type: CapacityType,
    /// When spot capacity is exhausted on every type and subnet, launch on-demand instead.
    #[serde(default = "yes")]
    pub on_demand_fallback: bool,
    #[serde(default = "default_allocation")]
    pub allocation_strategy: String,
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            capacity_type: default_capacity(),
            on_demand_fallback: true,
            allocation_strategy: default_allocation(),
        }
    }
}

fn default_capacity() -> CapacityType {
    CapacityType::Spot
}
fn default_allocation() -> String {
    "price-capacity-optimized".into()
}
fn yes() -> bool {
    true
}

/// A warm-pool size per schedule window, evaluated in `timezone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmPoolConfig {
    /// Size outside every window.
    #[serde(default)]
    pub size: u32,
    /// IANA timezone name, e.g. `Europe/Berlin`.
    #[serde(default = "default_tz")]
    pub timezone: String,
    #[serde(default)]
    pub schedule: Vec<WarmWindow>,
}

impl Default for WarmPoolConfig {
    fn default() -> Self {
        Self { size: 0, timezone: default_tz(), schedule: vec![] }
    }
}

fn default_tz() -> String {
    "UTC".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmWindow {
    /// Three-letter lowercase weekdays (`mon` … `sun`); empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, inclusive.
    pub from: String,
    /// `HH:MM`, exclusive.
    pub to: String,
    pub size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunnerScope {
    #[default]
    Org,
    Repo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: PoolName,
    /// Labels every runner of this pool registers with. A job routes here when all of its labels
    /// are among these (case-insensitive).
    pub labels: Vec<String>,
    /// Higher wins when several pools can serve a job.
    #[serde(default)]
    pub priority: i32,
    pub instance_types: Vec<String>,
    pub subnets: Vec<String>,
    /// Launch template id (`lt-…`) or name.
    #[serde(default)]
    pub launch_template: Option<String>,
    #[serde(default)]
    pub market: MarketConfig,
    pub max_runners: u32,
    #[serde(default)]
    pub warm_pool: WarmPoolConfig,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    #[serde(default = "default_boot_timeout")]
    pub boot_timeout_secs: u64,
    /// Repositories (`owner/name`, `owner/*`, `*`) the pool may serve. Empty means all of the org.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Public repositories are refused unless this is set; any fork could run code on the runner.
    #[serde(default)]
    pub allow_public_repositories: bool,
    #[serde(default)]
    pub runner_scope: RunnerScope,
    /// How many times a job interrupted by spot reclaim is re-run.
    #[serde(default = "default_spot_retries")]
    pub max_spot_reruns: u32,
}

fn default_idle_timeout() -> u64 {
    600
}
fn default_boot_timeout() -> u64 {
    300
}
fn default_spot_retries() -> u32 {
    1
}

pub const MAX_POOLS: usize = 64;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_LEN: usize = 256;

impl Config {
    /// Parse and validate a YAML or JSON document (JSON is YAML).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg = Self::parse(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// [`Config::from_yaml`] without [`Config::validate`]: the size limit and the schema only.
    /// For tools that report more than the first problem of a document (`hangar config
    /// validate`); a service must load with `from_yaml`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(text.len()));
        }
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    pub fn pool(&self, name: &PoolName) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| &p.name == name)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.organization.trim().is_empty() {
            return Err(invalid("organization", "must not be empty"));
        }
        if !self.github.api_url.starts_with("https://")
            && !self.github.api_url.starts_with("http://127.0.0.1")
        {
            return Err(invalid("github.api_url", "must be an https:// URL (http only for 127.0.0.1)"));
        }
        if self.pools.is_empty() {
            return Err(invalid("pools", "at least one pool is required"));
        }
        if self.pools.len() > MAX_POOLS {
            return Err(invalid("pools", format!("at most {MAX_POOLS} pools")));
        }
        let mut names = HashSet::new();
        for (i, p) in self.pools.iter().enumerate() {
            let at = |f: &str| format!("pools[{i}].{f}");
            let n = p.name.as_str();
            if n.is_empty()
                || n.len() > 64
                || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(at("name"), "1-64 characters of [A-Za-z0-9_-]"));
            }
            if !names.insert(n.to_ascii_lowercase()) {
                return Err(invalid(at("name"), format!("duplicate pool name `{n}`")));
            }
            if p.labels.is_empty() {
                return Err(invalid(at("labels"), "at least one label"));
            }
            if p.labels.len() > MAX_LABELS {
                return Err(invalid(at("labels"), format!("at most {MAX_LABELS} labels")));
            }
            for l in &p.labels {
                if l.trim().is_empty() || l.len() > MAX_LABEL_LEN {
                    return Err(invalid(at("labels"), format!("label `{l}` is empty or too long")));
                }
            }
            if p.instance_types.is_empty() {
                return Err(invalid(at("instance_types"), "at least one instance type"));
            }
            if p.subnets.is_empty() {
                return Err(invalid(at("subnets"), "at least one subnet"));
            }
            if p.max_runners == 0 {
                return Err(invalid(at("max_runners"), "must be at least 1"));
            }
            let tz: Result<chrono_tz::Tz, _> = p.warm_pool.timezone.parse();
            if tz.is_err() {
                return Err(invalid(
                    at("warm_pool.timezone"),
                    format!("unknown timezone `{}`", p.warm_pool.timezone),
                ));
            }
            if p.warm_pool.size > p.max_runners {
                return Err(invalid(at("warm_pool.size"), "must not exceed max_runners"));
            }
            for (j, w) in p.warm_pool.schedule.iter().enumerate() {
                let wat = |f: &str| at(&format!("warm_pool.schedule[{j}].{f}"));
                let from = parse_hhmm(&w.from).ok_or_else(|| invalid(wat("from"), "expected HH:MM"))?;
                let to = parse_hhmm(&w.to).ok_or_else(|| invalid(wat("to"), "expected HH:MM"))?;
                if from >= to {
                    return Err(invalid(wat("to"), "must be after `from`"));
                }
                if w.size > p.max_runners {
                    return Err(invalid(wat("size"), "must not exceed max_runners"));
                }
                for d in &w.days {
                    if weekday_index(d).is_none() {
                        return Err(invalid(wat("days"), format!("unknown day `{d}`, use mon..sun")));
                    }
                }
            }
            if p.boot_timeout_secs == 0 || p.idle_timeout_secs == 0 {
                return Err(invalid(at("boot_timeout_secs"), "timeouts must be positive"));
            }
            for r in &p.repositories {
                if !(r == "*" || r.split_once('/').is_some_and(|(o, n)| !o.is_empty() && !n.is_empty())) {
                    return Err(invalid(
                        at("repositories"),
                        format!("`{r}` is not `owner/name`, `owner/*` or `*`"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Minutes since midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    // 24:00 is allowed as the end of a day.
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// Monday = 0.
pub fn weekday_index(d: &str) -> Option<u32> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].iter().position(|x| *x == d).map(|i| i as u32)
}

// `hangar config validate`: the load checks above, and the checks only an operator can act on.

/// How long the boot agent waits for its instance's JIT config before it gives up and terminates
/// the instance: the default of `HANGAR_JIT_DEADLINE_SECONDS` in
/// `ami/boot-agent/hangar-boot-agent.sh`, which the launch template's user data
/// (`infra/template.yaml`) also sets. `crates/core/tests/config_lint.rs` reads both and fails
/// when either differs from this.
pub const BOOT_AGENT_JIT_DEADLINE_SECS: u64 = 600;

/// One problem in a configuration document, at a field path shaped as the load errors' are
/// (`pools[1].subnets[2]`); an empty path means the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub field: String,
    pub message: String,
}

impl ConfigProblem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// What [`check_document`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentCheck {
    /// Not a YAML (or JSON) document at all, so nothing else could be checked.
    NotYaml(String),
    /// Checked. No problems: the Lambdas load the document and no operator check objects.
    Checked {
        /// How many pools it defines, when it fits the schema.
        pools: Option<usize>,
        problems: Vec<ConfigProblem>,
    },
}

/// Every check `hangar config validate` runs on a document. First exactly the Lambdas' load,
/// [`Config::from_yaml`], which stops at its first error; then, whenever the document fits the
/// schema, every [`lint`] problem (one on the field the load error names is left out: it is the
/// same problem).
pub fn check_document(text: &str) -> DocumentCheck {
    let (cfg, mut problems) = match Config::from_yaml(text) {
        Ok(cfg) => (cfg, vec![]),
        Err(e @ ConfigError::TooLarge(_)) => {
            return DocumentCheck::Checked {
                pools: None,
                problems: vec![ConfigProblem::new("", e.to_string())],
            };
        }
        Err(ConfigError::Parse(msg)) => {
            // Within the size limit, so parsing it once more is bounded as the load was.
            if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
                return DocumentCheck::NotYaml(e.to_string());
            }
            let (field, message) = split_yaml_path(&msg);
            return DocumentCheck::Checked {
                pools: None,
                problems: vec![ConfigProblem::new(field, message)],
            };
        }
        Err(ConfigError::Invalid { field, reason }) => {
            let load = ConfigProblem::new(field, reason);
            match Config::parse(text) {
                Ok(cfg) => (cfg, vec![load]),
                // Unreachable: `from_yaml` validates only what it parsed.
                Err(_) => return DocumentCheck::Checked { pools: None, problems: vec![load] },
            }
        }
    };
    for p in lint(&cfg) {
        if !problems.iter().any(|q| q.field == p.field) {
            problems.push(p);
        }
    }
    DocumentCheck::Checked { pools: Some(cfg.pools.len()), problems }
}

/// serde_yaml_ng's messages start with the path of the value at fault (`pools[0]: unknown field
/// ...`) unless it is the root.
fn split_yaml_path(msg: &str) -> (&str, &str) {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "_-.[]?".contains(c);
    match msg.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && path.chars().all(path_char) => (path, rest),
        _ => ("", msg),
    }
}

/// The checks the Lambdas do not make because only an operator can act on them, all of them
/// (not only the first): subnets and instance types named twice, a boot timeout above the boot
/// agent's JIT deadline, a warm pool above `max_runners`, a schedule window that never applies,
/// A missing `github.app_id` is not a problem: the stack passes the App id (`GitHubAppId`),
/// and before the App exists the scaler waits for it without an error. Pure; safe on a
/// document that failed [`Config::validate`].
pub fn lint(cfg: &Config) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    for (i, p) in cfg.pools.iter().enumerate() {
        let at = |f: &str| format!("pools[{i}].{f}");
        let overrides =
            "each (instance type, subnet) pair is one CreateFleet override, so some are sent twice";
        for (list, name) in [(&p.subnets, "subnets"), (&p.instance_types, "instance_types")] {
            for (k, first) in duplicates(list) {
                out.push(ConfigProblem::new(
                    at(&format!("{name}[{k}]")),
                    format!("`{}` is already listed as {name}[{first}]: {overrides}", list[k].trim()),
                ));
            }
        }
        if p.boot_timeout_secs > BOOT_AGENT_JIT_DEADLINE_SECS {
            out.push(ConfigProblem::new(
                at("boot_timeout_secs"),
                format!(
                    "{} s is above the boot agent's JIT deadline ({BOOT_AGENT_JIT_DEADLINE_SECS} s): an \
                     instance whose JIT config comes late ends itself before reconcile can reap it and \
                     relaunch its job",
                    p.boot_timeout_secs
                ),
            ));
        }
        let above = |size: u32| {
            format!(
                "{size} is above max_runners ({}), so the warm pool can never be that large",
                p.max_runners
            )
        };
        if p.warm_pool.size > p.max_runners {
            out.push(ConfigProblem::new(at("warm_pool.size"), above(p.warm_pool.size)));
        }
        for (j, w) in p.warm_pool.schedule.iter().enumerate() {
            if w.size > p.max_runners {
                out.push(ConfigProblem::new(at(&format!("warm_pool.schedule[{j}].size")), above(w.size)));
            }
        }
        for (j, field, message) in never_applies(&p.warm_pool.schedule) {
            let f = match field {
                "" => format!("warm_pool.schedule[{j}]"),
                f => format!("warm_pool.schedule[{j}].{f}"),
            };
            out.push(ConfigProblem::new(at(&f), message));
        }
    }
    out
}

/// `(index, index of its first occurrence)` of every entry listed before (compared trimmed).
fn duplicates(list: &[String]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (k, item) in list.iter().enumerate() {
        if let Some(first) = list[..k].iter().position(|x| x.trim() == item.trim()) {
            out.push((k, first));
        }
    }
    out
}

/// The windows of a schedule that never set the warm-pool size, as
/// [`warm_target`] evaluates a schedule: the size in force at a local weekday
/// and minute is the largest `size` of the windows containing it (`days` empty or naming that
/// day, `from <= minute < to`), else the pool's `size`. So a window never applies when it
/// contains no time at all (a `from` or `to` that is not `HH:MM`, `from` not before `to`, or
/// `days` naming no weekday), or when at every time it contains another window sets the size:
/// one with a larger `size`, or one listed before it with the same `size` (which sets the same
/// size, so this one changes nothing). Returns `(window, field, message)`; an empty field is
/// the window itself.
fn never_applies(schedule: &[WarmWindow]) -> Vec<(usize, &'static str, String)> {
    let mut out = Vec::new();
    // (index, from, to, days, size) of the windows that contain some time.
    let mut live: Vec<(usize, u32, u32, [bool; 7], u32)> = Vec::new();
    for (j, w) in schedule.iter().enumerate() {
        let (from, to) = (parse_hhmm(&w.from), parse_hhmm(&w.to));
        let Some(from) = from else {
            out.push((j, "from", format!("`{}` is not HH:MM, so the window never applies", w.from)));
            continue;
        };
        let Some(to) = to else {
            out.push((j, "to", format!("`{}` is not HH:MM, so the window never applies", w.to)));
            continue;
        };
        if from >= to {
            let hint = if from > to {
                format!(
                    " (a window cannot cross midnight: split it into {}-24:00 and 00:00-{})",
                    w.from, w.to
                )
            } else {
                String::new()
            };
            out.push((
                j,
                "to",
                format!(
                    "`{}` is not after `from` `{}`: the window holds no time and never applies{hint}",
                    w.to, w.from
                ),
            ));
            continue;
        }
        let mut days = [w.days.is_empty(); 7];
        for d in &w.days {
            if let Some(k) = weekday_index(d) {
                days[k as usize] = true;
            }
        }
        if !days.contains(&true) {
            out.push((j, "days", "names no weekday (mon..sun), so the window never applies".to_owned()));
            continue;
        }
        live.push((j, from, to, days, w.size));
    }
    // Which windows are contained in a window is the same between consecutive `from`/`to`
    // values, so evaluating at those minutes covers the week.
    let mut minutes: Vec<u32> = live.iter().flat_map(|w| [w.1, w.2]).filter(|m| *m < 24 * 60).collect();
    minutes.sort_unstable();
    minutes.dedup();
    // For each live window: whether it ever sets the size, and which windows do in its place.
    let mut applies = vec![false; live.len()];
    let mut instead: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); live.len()];
    for day in 0..7 {
        for &m in &minutes {
            let containing: Vec<usize> =
                (0..live.len()).filter(|&k| live[k].3[day] && live[k].1 <= m && m < live[k].2).collect();
            // The first of the largest: `max_by_key` would keep the last.
            let Some(&winner) = containing.iter().rev().max_by_key(|&&k| live[k].4) else { continue };
            applies[winner] = true;
            for &k in &containing {
                if k != winner {
                    instead[k].insert(winner);
                }
            }
        }
    }
    for (k, w) in live.iter().enumerate() {
        if !applies[k] {
            const NAMED: usize = 3;
            let mut by: Vec<String> = instead[k]
                .iter()
                .take(NAMED)
                .map(|&o| format!("schedule[{}] (size {})", live[o].0, live[o].4))
                .collect();
            if instead[k].len() > NAMED {
                by.push(format!("{} more", instead[k].len() - NAMED));
            }
            out.push((
                w.0,
                "",
                format!(
                    "never applies: wherever it holds, {} sets the size instead (the largest window wins, \
                     the first of equal ones)",
                    by.join(", ")
                ),
            ));
        }
    }
    out.sort_by_key(|(j, _, _)| *j);
    out
}

/// The warm-pool size in force at `now`: the largest window containing the local time (in the
/// pool's timezone), else `size`; never above `max_runners`. An unknown timezone (which config
/// validation rejects) falls back to UTC rather than failing the scaler.
pub fn warm_target(cfg: &WarmPoolConfig, max_runners: u32, now: DateTime<Utc>) -> u32 {
    let tz: chrono_tz::Tz = cfg.timezone.parse().unwrap_or(chrono_tz::UTC);
    let local = now.with_timezone(&tz);
    let day = local.weekday().num_days_from_monday();
    let minute = local.hour() * 60 + local.minute();
    let in_window = cfg.schedule.iter().filter(|w| {
        let (Some(from), Some(to)) = (parse_hhmm(&w.from), parse_hhmm(&w.to)) else { return false };
        let day_ok = w.days.is_empty() || w.days.iter().any(|d| weekday_index(d) == Some(day));
        day_ok && from <= minute && minute < to
    });
    in_window.map(|w| w.size).max().unwrap_or(cfg.size).min(max_runners)
}
