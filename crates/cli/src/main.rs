//! `hangar`: operator tooling. Wiring only; every decision is the core's.

mod demo;
// `hangar explain` is the lead's (crates/cli/src/explain.rs).
mod explain;
mod status;
mod validate;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hangar", version, about = "Hangar: ephemeral self-hosted GitHub Actions runners on AWS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the webhook's decision offline on a delivery and print it as JSON.
    Explain(explain::ExplainArgs),
    /// Run the local cloud (moto, cargo lambda, GitHub and runner simulators) on a workload trace.
    Demo(demo::DemoArgs),
    /// Per pool: queued jobs, the oldest one's wait, idle / busy / pending runners, target, cap.
    Status(status::StatusArgs),
    /// Work with pool configuration files (`hangar config validate FILE`).
    #[command(subcommand)]
    Config(validate::ConfigCommand),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, and usage errors with exit 2.
            e.exit();
        }
    };
    let result = match cli.command {
        Command::Explain(args) => explain::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Config(command) => validate::run(command),
        Command::Status(args) => status::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hangar: error: {e:#}");
            std::process::exit(2);
        }
    }
}
