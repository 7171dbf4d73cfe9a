//! Configuration and secrets, loaded once per cold start. In AWS they come from SSM Parameter
//! Store; locally from a file or the environment. Secrets are held as [`Secret`] and never logged.

use hangar_aws::settings::read_value;
use hangar_aws::ssm::SsmConfigSource;
use hangar_core::config::Config;
use hangar_core::secret::Secret;

/// Names of the environment variables the webhook reads.
pub mod env {
    pub use hangar_aws::settings::{CONFIG_FILE, CONFIG_PARAMETER};
    pub const SECRET_PARAMETER: &str = "HANGAR_WEBHOOK_SECRET_PARAMETER";
    pub const SECRET_FILE: &str = "HANGAR_WEBHOOK_SECRET_FILE";
    /// Local runs only; in AWS use the SecureString parameter.
    pub const SECRET: &str = "HANGAR_WEBHOOK_SECRET";
    pub const QUEUE_URL: &str = "HANGAR_QUEUE_URL";
    pub const NAMESPACE: &str = "HANGAR_METRICS_NAMESPACE";
    pub const MAX_BODY_BYTES: &str = "HANGAR_MAX_BODY_BYTES";
    /// The job ledger's DynamoDB table: job events are recorded there as they arrive. Unset:
    /// only the scaler records them.
    pub const LEDGER_TABLE: &str = "HANGAR_LEDGER_TABLE";
}

pub use hangar_aws::settings::SettingsError;

pub struct Settings {
    pub config: Config,
    pub secrets: Secret,
    pub queue_url: String,
    pub namespace: String,
    pub max_body_bytes: Option<usize>,
    pub ledger_table: Option<String>,
}

impl Settings {
    pub async fn load(ssm: &SsmConfigSource) -> Result<Self, SettingsError> {
        let config = hangar_aws::settings::read_config(ssm).await?;
        let secrets = read_value(
            ssm,
            env::SECRET_PARAMETER,
            env::SECRET_FILE,
            Some(env::SECRET),
            "HANGAR_WEBHOOK_SECRET_PARAMETER, HANGAR_WEBHOOK_SECRET_FILE or HANGAR_WEBHOOK_SECRET",
        )
        .await?;
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
        let ledger_table = std::env::var(env::LEDGER_TABLE).ok().filter(|v| !v.is_empty());
        Ok(Settings { config, secrets, queue_url, namespace, max_body_bytes, ledger_table })
    }
}
