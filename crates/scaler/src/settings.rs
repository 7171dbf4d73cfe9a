//! Configuration and secrets, loaded once per cold start from the environment, SSM Parameter
//! Store or local files. The App key is held as a [`Secret`] and never logged.

use hangar_aws::settings::read_value;
use hangar_aws::ssm::SsmConfigSource;
use hangar_core::config::Config;
use hangar_core::secret::Secret;

/// Names of the environment variables the scaler reads.
pub mod env {
    pub use hangar_aws::settings::{CONFIG_FILE, CONFIG_PARAMETER};
    pub const APP_KEY_PARAMETER: &str = "HANGAR_GITHUB_APP_KEY_PARAMETER";
    pub const APP_KEY_FILE: &str = "HANGAR_GITHUB_APP_KEY_FILE";
    /// Overrides the config's `github.api_url` (the simulator in local runs).
    pub const GITHUB_API_URL: &str = "HANGAR_GITHUB_API_URL";
    pub const JIT_PARAMETER_PREFIX: &str = "HANGAR_JIT_PARAMETER_PREFIX";
    pub const NAMESPACE: &str = "HANGAR_METRICS_NAMESPACE";
    /// The scale queue (FIFO), where reconcile sends warm-pool top-ups.
    pub const QUEUE_URL: &str = "HANGAR_QUEUE_URL";
    /// The launch template of pools whose configuration names none (the stack's own).
    pub const LAUNCH_TEMPLATE_ID: &str = "HANGAR_LAUNCH_TEMPLATE_ID";
    /// `arn:PARTITION:ec2:REGION:ACCOUNT:instance/`: JIT parameters are tagged with the
    /// instance's ARN, which the runner role's IAM condition matches.
    pub const INSTANCE_ARN_PREFIX: &str = "HANGAR_INSTANCE_ARN_PREFIX";
}

pub use hangar_aws::settings::SettingsError;

pub struct Settings {
    pub config: Config,
    pub app_key: Secret,
    pub github_api_url: String,
    /// `None`: [`hangar_aws::ssm::DEFAULT_JIT_PREFIX`].
    pub jit_prefix: Option<String>,
    pub namespace: String,
    pub queue_url: String,
    pub instance_arn_prefix: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("organization", &self.config.organization)
            .field("pools", &self.config.pools.len())
            .field("github_api_url", &self.github_api_url)
            .field("jit_prefix", &self.jit_prefix)
            .field("namespace", &self.namespace)
            .finish()
    }
}

use hangar_aws::settings::env_var as get;

impl Settings {
    pub async fn load(ssm: &SsmConfigSource) -> Result<Self, SettingsError> {
        let mut config = hangar_aws::settings::read_config(ssm).await?;
        if let Some(lt) = get(env::LAUNCH_TEMPLATE_ID) {
            for p in config.pools.iter_mut().filter(|p| p.launch_template.is_none()) {
                p.launch_template = Some(lt.clone());
            }
        }
        if config.github.app_id == 0 {
            return Err(SettingsError::Invalid {
                var: "github.app_id",
                reason: "the scaler needs the GitHub App id".into(),
            });
        }
        let app_key = read_value(
            ssm,
            env::APP_KEY_PARAMETER,
            env::APP_KEY_FILE,
            None,
            "HANGAR_GITHUB_APP_KEY_PARAMETER or HANGAR_GITHUB_APP_KEY_FILE",
        )
        .await?;
        if !app_key.expose().contains("PRIVATE KEY") {
            return Err(SettingsError::Invalid {
                var: "GitHub App key",
                reason: "is not a PEM private key".into(),
            });
        }
        let github_api_url = get(env::GITHUB_API_URL).unwrap_or_else(|| config.github.api_url.clone());
        let queue_url = get(env::QUEUE_URL).ok_or(SettingsError::Missing(env::QUEUE_URL))?;
        Ok(Settings {
            config,
            app_key,
            github_api_url,
            jit_prefix: get(env::JIT_PARAMETER_PREFIX),
            namespace: get(env::NAMESPACE).unwrap_or_else(|| "Hangar".into()),
            queue_url,
            instance_arn_prefix: get(env::INSTANCE_ARN_PREFIX),
        })
    }
}
