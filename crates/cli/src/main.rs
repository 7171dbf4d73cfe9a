//! `hangar`: operator tooling. Wiring only; every decision is the core's.

mod explain;

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
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hangar: error: {e:#}");
            std::process::exit(2);
        }
    }
}
