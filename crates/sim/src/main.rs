//! `hangar-sim <github|fault-proxy|imds> [options]`: run one simulator until killed.

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        anyhow::bail!("usage: hangar-sim <github|fault-proxy|imds> [options]");
    }
    let which = args.remove(0);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match which.as_str() {
            "github" => hangar_sim::github::cli_main(args).await,
            "fault-proxy" => hangar_sim::fault_proxy::cli_main(args).await,
            "imds" => hangar_sim::imds::cli_main(args).await,
            other => anyhow::bail!("unknown simulator `{other}`; use github, fault-proxy or imds"),
        }
    })
}
