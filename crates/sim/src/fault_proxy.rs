//! placeholder: filled in by its issue.

/// Entry point for `hangar-sim fault_proxy`.
pub async fn cli_main(_args: Vec<String>) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
