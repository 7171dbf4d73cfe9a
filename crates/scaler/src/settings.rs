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
    /// The scale queue (FIFO), where ticks plan a pool again in its message group.
    pub const QUEUE_URL: &str = "HANGAR_QUEUE_URL";
    /// The provisioning queue (SQS standard, the stack's `ProvisionQueue`): launched
    /// instances' JIT configs are made by the provisioner from it. Unset: the
    /// pool's batch makes them. See [`crate::provisioner`].
    pub const PROVISION_QUEUE_URL: &str = "HANGAR_PROVISION_QUEUE_URL";
    /// The function's timeout in seconds, for a runtime that sends no usable deadline (`cargo
    /// lambda watch`; see [`crate::provisioner::time_left`]). Lambda's own deadline wins.
    pub const FUNCTION_TIMEOUT_SECS: &str = "HANGAR_FUNCTION_TIMEOUT_SECS";
    /// The job ledger's DynamoDB table (the stack's `JobLedgerTable`), which also holds the
    /// recorded launches. Required: every plan counts the jobs it holds.
    pub const LEDGER_TABLE: &str = "HANGAR_LEDGER_TABLE";
    /// The launch template of pools whose configuration names none (the stack's own).
    pub const LAUNCH_TEMPLATE_ID: &str = "HANGAR_LAUNCH_TEMPLATE_ID";
    /// `arn:PARTITION:ec2:REGION:ACCOUNT:instance/`: JIT parameters are tagged with the
    /// instance's ARN, which the runner role's IAM condition matches.
    pub const INSTANCE_ARN_PREFIX: &str = "HANGAR_INSTANCE_ARN_PREFIX";
    /// The stack's `GitHubAppId`: a non-zero value overrides the config's `github.app_id`.
    /// It is in the function's environment so that setting it after the App exists changes
    /// the function's configuration, and Lambda starts fresh environments that load it, where
    /// a changed SSM parameter alone would wait for the warm ones to be recycled.
    pub const GITHUB_APP_ID: &str = "HANGAR_GITHUB_APP_ID";
}

pub use hangar_aws::settings::SettingsError;

pub struct Settings {
    pub config: Config,
    /// `None`: the GitHub App is not configured yet (`github.app_id` is 0, the stack's
    /// default until the App exists), and the key is not read. See [`crate::without_app`].
    pub app_key: Option<Secret>,
    pub github_api_url: String,
    /// `None`: [`hangar_aws::ssm::DEFAULT_JIT_PREFIX`].
    pub jit_prefix: Option<String>,
    pub namespace: String,
    pub queue_url: String,
    pub provision_queue_url: Option<String>,
    pub function_timeout: Option<std::time::Duration>,
    pub ledger_table: String,
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
            .field("github_app_configured", &self.app_configured())
            .finish()
    }
}

use hangar_aws::settings::env_var as get;

impl Settings {
    /// The App exists: its id is set and its key was read.
    pub fn app_configured(&self) -> bool {
        self.app_key.is_some()
    }

    pub async fn load(ssm: &SsmConfigSource) -> Result<Self, SettingsError> {
        let mut config = hangar_aws::settings::read_config(ssm).await?;
        if let Some(lt) = get(env::LAUNCH_TEMPLATE_ID) {
            for p in config.pools.iter_mut().filter(|p| p.launch_template.is_none()) {
                p.launch_template = Some(lt.clone());
            }
        }
        if let Some(v) = get(env::GITHUB_APP_ID) {
            let id: u64 = v.trim().parse().map_err(|_| SettingsError::Invalid {
                var: env::GITHUB_APP_ID,
                reason: "is not a number".into(),
            })?;
            if id != 0 {
                config.github.app_id = id;
            }
        }
        // The stack is deployed before the App exists (the App needs the stack's webhook URL),
        // so app_id 0 is a state, not an error: no key is read and nothing calls GitHub. Once
        // an id is set, a missing or malformed key is an error as before.
        let app_key = if config.github.app_id == 0 {
            None
        } else {
            let key = read_value(
                ssm,
                env::APP_KEY_PARAMETER,
                env::APP_KEY_FILE,
                None,
                "HANGAR_GITHUB_APP_KEY_PARAMETER or HANGAR_GITHUB_APP_KEY_FILE",
            )
            .await?;
            if !key.expose().contains("PRIVATE KEY") {
                return Err(SettingsError::Invalid {
                    var: "GitHub App key",
                    reason: "is not a PEM private key".into(),
                });
            }
            Some(key)
        };
        let github_api_url = get(env::GITHUB_API_URL).unwrap_or_else(|| config.github.api_url.clone());
        let queue_url = get(env::QUEUE_URL).ok_or(SettingsError::Missing(env::QUEUE_URL))?;
        let ledger_table = get(env::LEDGER_TABLE).ok_or(SettingsError::Missing(env::LEDGER_TABLE))?;
        let function_timeout = match get(env::FUNCTION_TIMEOUT_SECS) {
            None => None,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(std::time::Duration::from_secs(n)),
                _ => {
                    return Err(SettingsError::Invalid {
                        var: env::FUNCTION_TIMEOUT_SECS,
                        reason: "is not a positive number of seconds".into(),
                    })
                }
            },
        };
        Ok(Settings {
            config,
            app_key,
            github_api_url,
            jit_prefix: get(env::JIT_PARAMETER_PREFIX),
            namespace: get(env::NAMESPACE).unwrap_or_else(|| "Hangar".into()),
            queue_url,
            provision_queue_url: get(env::PROVISION_QUEUE_URL),
            function_timeout,
            ledger_table,
            instance_arn_prefix: get(env::INSTANCE_ARN_PREFIX),
        })
    }
}
