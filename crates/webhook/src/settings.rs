//! Configuration and secrets, loaded once per cold start. In AWS they come from SSM Parameter
//! Store; locally from a file or the environment. Secrets are held as [`Secret`] and never logged.

use hangar_aws::ssm::SsmConfigSource;
use hangar_core::config::{Config, ConfigError};
use hangar_core::ports::PortError;
use hangar_core::secret::Secret;

/// Names of the environment variables the webhook reads.
pub mod env {
    pub const CONFIG_PARAMETER: &str = "HANGAR_CONFIG_PARAMETER";
    pub const CONFIG_FILE: &str = "HANGAR_CONFIG_FILE";
    pub const SECRET_PARAMETER: &str = "HANGAR_WEBHOOK_SECRET_PARAMETER";
    pub const SECRET_FILE: &str = "HANGAR_WEBHOOK_SECRET_FILE";
    /// Local runs only; in AWS use the SecureString parameter.
    pub const SECRET: &str = "HANGAR_WEBHOOK_SECRET";
    pub const QUEUE_URL: &str = "HANGAR_QUEUE_URL";
    pub const NAMESPACE: &str = "HANGAR_METRICS_NAMESPACE";
    pub const MAX_BODY_BYTES: &str = "HANGAR_MAX_BODY_BYTES";
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("set one of {0}")]
    Missing(&'static str),
    #[error("{var} is not valid: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("reading {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("pool configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Aws(#[from] PortError),
}

pub struct Settings {
    pub config: Config,
    pub secrets: Secret,
    pub queue_url: String,
    pub namespace: String,
    pub max_body_bytes: Option<usize>,
}

/// Where a value comes from, in order of preference.
pub enum Source {
    Parameter(String),
    File(String),
    Inline(Secret),
}

/// Picks the source for a value from the environment.
pub fn source(parameter: &str, file: &str, inline: Option<&str>) -> Option<Source> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    get(parameter)
        .map(Source::Parameter)
        .or_else(|| get(file).map(Source::File))
        .or_else(|| inline.and_then(get).map(|v| Source::Inline(Secret::new(v))))
}

/// Reads a value from its source. IAM: `ssm:GetParameter` (+ `kms:Decrypt`) for parameters.
pub async fn read(ssm: &SsmConfigSource, src: Source) -> Result<Secret, SettingsError> {
    match src {
        Source::Parameter(name) => Ok(ssm.get(&name).await?),
        Source::File(path) => std::fs::read_to_string(&path)
            .map(Secret::new)
            .map_err(|source| SettingsError::File { path, source }),
        Source::Inline(s) => Ok(s),
    }
}

impl Settings {
    pub async fn load(ssm: &SsmConfigSource) -> Result<Self, SettingsError> {
        let cfg_src = source(env::CONFIG_PARAMETER, env::CONFIG_FILE, None)
            .ok_or(SettingsError::Missing("HANGAR_CONFIG_PARAMETER or HANGAR_CONFIG_FILE"))?;
        let config = Config::from_yaml(read(ssm, cfg_src).await?.expose())?;
        let secret_src = source(env::SECRET_PARAMETER, env::SECRET_FILE, Some(env::SECRET)).ok_or(
            SettingsError::Missing(
                "HANGAR_WEBHOOK_SECRET_PARAMETER, HANGAR_WEBHOOK_SECRET_FILE or HANGAR_WEBHOOK_SECRET",
            ),
        )?;
        let secrets = read(ssm, secret_src).await?;
        if secrets.expose().trim().is_empty() {
            return Err(SettingsError::Invalid { var: "webhook secret", reason: "is empty".into() });
        }
        let queue_url = std::env::var(env::QUEUE_URL)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(SettingsError::Missing(env::QUEUE_URL))?;
        let namespace = std::env::var(env::NAMESPACE).unwrap_or_else(|_| "Hangar".into());
        let max_body_bytes = match std::env::var(env::MAX_BODY_BYTES) {
            Ok(v) => {
                Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| SettingsError::Invalid {
                    var: env::MAX_BODY_BYTES,
                    reason: format!("`{v}` is not a positive integer"),
                })?)
            }
            Err(_) => None,
        };
        Ok(Settings { config, secrets, queue_url, namespace, max_body_bytes })
    }
}
