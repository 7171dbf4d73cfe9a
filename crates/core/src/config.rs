//! The pool configuration: one YAML (or JSON) document, stored in SSM Parameter Store in AWS and
//! in a file locally. Parsing is strict (`deny_unknown_fields`) and validation names the field
//! at fault, so an operator's typo fails the deploy instead of silently routing nowhere.

use crate::ids::PoolName;
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
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(text.len()));
        }
        let cfg: Config = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
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
