//! `hangar config validate FILE`: the checks both Lambdas run when they load the pool
//! configuration, then the checks only an operator can act on. Wiring only: every check is the
//! core's (`hangar_core::config::check_document`).

use anyhow::Context;
use hangar_core::config::{check_document, DocumentCheck};
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Check a pool configuration before it is stored in SSM: the Lambdas' own load checks, then
    /// subnets or instance types named twice, a boot timeout above the boot agent's JIT deadline,
    /// a warm pool above max_runners, schedule windows that never apply.
    #[command(after_help = "\
Prints one line per problem on stdout, `FILE: FIELD: MESSAGE` (FIELD as in `pools[1].subnets[2]`),
or `ok: N pools` when there is none.

Exit status:
  0  no problem
  1  problems found (the Lambdas refuse the file, or an operator check objects)
  2  the file cannot be read, is not UTF-8, or is not YAML/JSON at all")]
    Validate(ValidateArgs),
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The pool configuration, YAML or JSON, as stored in the SSM parameter.
    pub file: PathBuf,
}

pub fn run(command: ConfigCommand) -> anyhow::Result<i32> {
    match command {
        ConfigCommand::Validate(args) => validate(args),
    }
}

fn validate(args: ValidateArgs) -> anyhow::Result<i32> {
    let name = args.file.display();
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {name}"))?;
    // The Lambdas read the file (or the SSM value) as UTF-8 text too.
    let text = String::from_utf8(bytes).with_context(|| format!("{name} is not UTF-8 text"))?;
    match check_document(&text) {
        DocumentCheck::NotYaml(e) => anyhow::bail!("{name} is not YAML or JSON: {e}"),
        DocumentCheck::Checked { pools, problems } if problems.is_empty() => {
            let n = pools.unwrap_or(0);
            println!("ok: {n} pool{}", if n == 1 { "" } else { "s" });
            Ok(0)
        }
        DocumentCheck::Checked { problems, .. } => {
            for p in &problems {
                // One line each, whatever a message holds.
                println!("{name}: {}", p.to_string().replace('\n', " "));
            }
            let n = problems.len();
            eprintln!("{name}: {n} problem{}", if n == 1 { "" } else { "s" });
            Ok(1)
        }
    }
}
