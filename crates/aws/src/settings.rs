//! Loading a Lambda's settings once per cold start: each value from an SSM parameter (in AWS), a
//! file, or (local runs only) the environment itself. Shared by the webhook and the scaler.

use crate::ssm::SsmConfigSource;
use hangar_core::config::ConfigError;
use hangar_core::ports::PortError;
use hangar_core::secret::Secret;

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

/// An environment variable, `None` when unset or blank.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads a value named by the environment: the SSM parameter named by `parameter_var` (preferred),
/// else the file named by `file_var`, else the value of `inline_var` itself. `missing` names the
/// variables in the error when none is set. IAM: `ssm:GetParameter` (+ `kms:Decrypt`).
pub async fn read_value(
    ssm: &SsmConfigSource,
    parameter_var: &str,
    file_var: &str,
    inline_var: Option<&str>,
    missing: &'static str,
) -> Result<Secret, SettingsError> {
    if let Some(name) = env_var(parameter_var) {
        return Ok(ssm.get(&name).await?);
    }
    if let Some(path) = env_var(file_var) {
        return std::fs::read_to_string(&path)
            .map(Secret::new)
            .map_err(|source| SettingsError::File { path, source });
    }
    inline_var.and_then(env_var).map(Secret::new).ok_or(SettingsError::Missing(missing))
}

/// The pool configuration, as both Lambdas read it: the SSM parameter named by
/// `HANGAR_CONFIG_PARAMETER` (IAM: `ssm:GetParameter`), else the file named by
/// `HANGAR_CONFIG_FILE`.
pub const CONFIG_PARAMETER: &str = "HANGAR_CONFIG_PARAMETER";
pub const CONFIG_FILE: &str = "HANGAR_CONFIG_FILE";

pub async fn read_config(ssm: &SsmConfigSource) -> Result<hangar_core::config::Config, SettingsError> {
    let text =
        read_value(ssm, CONFIG_PARAMETER, CONFIG_FILE, None, "HANGAR_CONFIG_PARAMETER or HANGAR_CONFIG_FILE")
            .await?;
    Ok(hangar_core::config::Config::from_yaml(text.expose())?)
}
