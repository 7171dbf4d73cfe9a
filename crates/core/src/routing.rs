//! Routing a job to a pool, and the repository policy.
//!
//! GitHub's rule: a self-hosted runner can take a job when every label the job asks for is among
//! the runner's labels, compared case-insensitively. Among several pools that qualify, the highest
//! `priority` wins, then the pool with the fewest labels the job did not ask for (the tightest
//! fit), then the pool listed first.

use crate::config::{Config, PoolConfig};
use crate::event::WorkflowJobEvent;

/// Built once per cold start from the configuration: labels are lower-cased here, not per job.
#[derive(Debug, Clone)]
pub struct Router {
    pools: Vec<RoutedPool>,
    organization: String,
}

#[derive(Debug, Clone)]
struct RoutedPool {
    index: usize,
    labels: Vec<String>,
    priority: i32,
}

/// Why a job did not route, or was refused by policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefusal {
    #[error("job has no labels; it is not for a self-hosted runner")]
    NoLabels,
    #[error("no pool carries all of the job's labels")]
    NoPool,
    #[error("organisation `{0}` is not the one this deployment serves")]
    ForeignOrganization(String),
    #[error("repository is public and pool `{0}` does not allow public repositories")]
    PublicRepository(String),
    #[error("repository is not in the allow list of pool `{0}`")]
    RepositoryNotAllowed(String),
}

impl RouteRefusal {
    /// A short, stable code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            RouteRefusal::NoLabels => "no-labels",
            RouteRefusal::NoPool => "no-pool",
            RouteRefusal::ForeignOrganization(_) => "foreign-organization",
            RouteRefusal::PublicRepository(_) => "public-repository",
            RouteRefusal::RepositoryNotAllowed(_) => "repository-not-allowed",
        }
    }
}

impl Router {
    pub fn new(config: &Config) -> Self {
        let pools = config
            .pools
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let mut labels: Vec<String> = p.labels.iter().map(|l| l.to_lowercase()).collect();
                labels.sort();
                labels.dedup();
                RoutedPool { index, labels, priority: p.priority }
            })
            .collect();
        Self { pools, organization: config.organization.to_lowercase() }
    }

    /// The index (into `config.pools`) of the pool that should serve a job with these labels.
    pub fn route(&self, job_labels: &[String]) -> Result<usize, RouteRefusal> {
        if job_labels.is_empty() {
            return Err(RouteRefusal::NoLabels);
        }
        let mut wanted: Vec<String> = job_labels.iter().map(|l| l.to_lowercase()).collect();
        wanted.sort();
        wanted.dedup();
        let mut best: Option<(&RoutedPool, usize)> = None;
        for pool in &self.pools {
            if !wanted.iter().all(|l| pool.labels.binary_search(l).is_ok()) {
                continue;
            }
            let extra = pool.labels.len() - wanted.len();
            let better = match best {
                None => true,
                Some((b, b_extra)) => {
                    pool.priority > b.priority || (pool.priority == b.priority && extra < b_extra)
                }
            };
            if better {
                best = Some((pool, extra));
            }
        }
        best.map(|(p, _)| p.index).ok_or(RouteRefusal::NoPool)
    }

    /// Routes the job and applies the organisation and repository policy of the chosen pool.
    pub fn route_event<'c>(
        &self,
        config: &'c Config,
        ev: &WorkflowJobEvent,
    ) -> Result<&'c PoolConfig, RouteRefusal> {
        let org = ev.org_login();
        if org.to_lowercase() != self.organization {
            return Err(RouteRefusal::ForeignOrganization(org.to_owned()));
        }
        let pool = &config.pools[self.route(&ev.workflow_job.labels)?];
        if ev.repository.is_public() && !pool.allow_public_repositories {
            return Err(RouteRefusal::PublicRepository(pool.name.to_string()));
        }
        if !repository_allowed(&pool.repositories, ev.repository.full_name.as_str()) {
            return Err(RouteRefusal::RepositoryNotAllowed(pool.name.to_string()));
        }
        Ok(pool)
    }
}

/// `patterns` empty allows every repository of the organisation; otherwise one of `*`,
/// `owner/*` or `owner/name` must match, case-insensitively.
pub fn repository_allowed(patterns: &[String], full_name: &str) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let Some((owner, name)) = full_name.split_once('/') else {
        return false;
    };
    patterns.iter().any(|p| {
        if p == "*" {
            return true;
        }
        match p.split_once('/') {
            Some((po, "*")) => po.eq_ignore_ascii_case(owner),
            Some((po, pn)) => po.eq_ignore_ascii_case(owner) && pn.eq_ignore_ascii_case(name),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_yaml(
            r#"
organization: octo-org
pools:
  - name: linux
    labels: [self-hosted, linux, x64]
    instance_types: [m7i.large]
    subnets: [subnet-a]
    max_runners: 10
  - name: linux-gpu
    labels: [self-hosted, linux, x64, gpu]
    instance_types: [g5.xlarge]
    subnets: [subnet-a]
    max_runners: 2
  - name: linux-big
    labels: [self-hosted, Linux, X64, big]
    priority: 5
    instance_types: [m7i.4xlarge]
    subnets: [subnet-a]
    max_runners: 2
    repositories: [octo-org/monorepo]
"#,
        )
        .unwrap()
    }

    fn route(labels: &[&str]) -> Result<&'static str, RouteRefusal> {
        let c = config();
        let r = Router::new(&c);
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        r.route(&labels).map(|i| match i {
            0 => "linux",
            1 => "linux-gpu",
            2 => "linux-big",
            _ => unreachable!(),
        })
    }

    #[test]
    fn routing_table() {
        // The README documents these same examples.
        assert_eq!(route(&["self-hosted"]), Ok("linux-big"), "priority beats fit");
        assert_eq!(route(&["self-hosted", "linux", "x64", "gpu"]), Ok("linux-gpu"));
        assert_eq!(route(&["self-hosted", "gpu"]), Ok("linux-gpu"));
        assert_eq!(route(&["SELF-HOSTED", "Linux", "big"]), Ok("linux-big"), "case-insensitive");
        assert_eq!(route(&["self-hosted", "linux", "linux"]), Ok("linux-big"));
        assert_eq!(route(&["self-hosted", "windows"]), Err(RouteRefusal::NoPool));
        assert_eq!(route(&["ubuntu-latest"]), Err(RouteRefusal::NoPool));
        assert_eq!(route(&[]), Err(RouteRefusal::NoLabels));
        assert_eq!(route(&["self-hosted", "linux", "x64", "gpu", "big"]), Err(RouteRefusal::NoPool));
    }

    #[test]
    fn fewest_extra_labels_breaks_priority_ties() {
        let mut c = config();
        c.pools[2].priority = 0;
        let r = Router::new(&c);
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(r.route(&l(&["self-hosted", "linux"])), Ok(0));
        assert_eq!(r.route(&l(&["self-hosted", "big"])), Ok(2));
    }

    #[test]
    fn repository_patterns() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(repository_allowed(&[], "a/b"));
        assert!(repository_allowed(&p(&["*"]), "a/b"));
        assert!(repository_allowed(&p(&["A/*"]), "a/b"));
        assert!(repository_allowed(&p(&["a/B"]), "A/b"));
        assert!(!repository_allowed(&p(&["a/c"]), "a/b"));
        assert!(!repository_allowed(&p(&["x/*"]), "a/b"));
        assert!(!repository_allowed(&p(&["a/b"]), "ab"));
    }
}
