//! `hangar status`: per pool, the queued jobs (from the job ledger), the oldest one's age, the
//! idle, busy and pending runners (from EC2), the warm target, and whether the pool is at its
//! cap. Read with the operator's own AWS credentials (the default chain); nothing is written.
//!
//! IAM for the operator: `dynamodb:Query` on the ledger's `open-by-pool` index,
//! `dynamodb:BatchGetItem` on the table, `kms:Decrypt` on the stack's key (the table is
//! encrypted with it), `ec2:DescribeInstances`, and `ssm:GetParameter` on the configuration
//! parameter when `--config-parameter` is used (infra/README.md has the policy).

use anyhow::{bail, Context, Result};
use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use hangar_aws::dynamo::DynamoLedger;
use hangar_aws::ec2::Ec2Fleet;
use hangar_aws::reexports::{dynamodb, ec2, ssm};
use hangar_aws::ssm::SsmConfigSource;
use hangar_core::config::Config;
use hangar_core::ledger::{split_open, JobLedger};
use hangar_core::plan::{pool_status, PoolStatus, PoolView};
use hangar_core::ports::Fleet;
use std::path::PathBuf;

/// Env var naming the ledger table, as the Lambdas read it.
pub const LEDGER_TABLE_ENV: &str = "HANGAR_LEDGER_TABLE";

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The pool configuration file (YAML or JSON).
    #[arg(long, conflicts_with = "config_parameter")]
    pub config: Option<PathBuf>,
    /// The SSM parameter holding the pool configuration (the stack's `PoolConfigParameterName`
    /// output).
    #[arg(long)]
    pub config_parameter: Option<String>,
    /// The job ledger's DynamoDB table (default: $HANGAR_LEDGER_TABLE).
    #[arg(long)]
    pub table: Option<String>,
    /// Only this pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Print JSON (one array of pools) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(status(args))
}

async fn status(args: StatusArgs) -> Result<i32> {
    let table = args
        .table
        .clone()
        .or_else(|| std::env::var(LEDGER_TABLE_ENV).ok().filter(|t| !t.is_empty()))
        .context(
            "no ledger table: pass --table or set HANGAR_LEDGER_TABLE (the stack's JobLedgerTable output)",
        )?;
    let sdk = hangar_aws::sdk::load_config_from_env().await;
    let config = load_config(&args, &sdk).await?;
    let pools: Vec<_> =
        config.pools.iter().filter(|p| args.pool.as_deref().is_none_or(|n| p.name.as_str() == n)).collect();
    if pools.is_empty() {
        bail!("no pool named `{}` in the configuration", args.pool.as_deref().unwrap_or_default());
    }
    let ledger = DynamoLedger::new(dynamodb::Client::new(&sdk), table);
    let fleet = Ec2Fleet::new(ec2::Client::new(&sdk));
    let now = chrono::Utc::now();
    let mut rows = Vec::with_capacity(pools.len());
    for pool in pools {
        // Instances first, then the ledger, as the scaler reads them.
        let instances = fleet
            .describe_pool(&pool.name)
            .await
            .with_context(|| format!("describing pool {}", pool.name))?;
        let (queued, running) = split_open(
            ledger
                .open(&pool.name)
                .await
                .with_context(|| format!("reading the ledger for pool {}", pool.name))?,
        );
        let mut view = PoolView::batch(pool, now, &queued, &instances);
        view.running = &running;
        rows.push(pool_status(&view));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{}", render(&rows));
    }
    Ok(0)
}

async fn load_config(args: &StatusArgs, sdk: &aws_config::SdkConfig) -> Result<Config> {
    let text = match (&args.config, &args.config_parameter) {
        (Some(path), _) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, Some(name)) => SsmConfigSource::new(ssm::Client::new(sdk))
            .get(name)
            .await
            .with_context(|| format!("reading SSM parameter {name}"))?
            .expose()
            .to_owned(),
        (None, None) => bail!("pass --config FILE or --config-parameter NAME"),
    };
    Ok(Config::from_yaml(&text)?)
}

/// The table an operator reads.
pub fn render(rows: &[PoolStatus]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "pool",
        "queued",
        "oldest wait",
        "idle",
        "busy",
        "pending",
        "target",
        "runners / max",
        "at max",
    ]);
    for r in rows {
        let at_max = if r.at_max { format!("yes ({} waiting)", r.waiting_for_capacity) } else { "no".into() };
        t.add_row([
            r.pool.to_string(),
            r.queued.to_string(),
            format!("{:.0} s", r.oldest_queued_age_secs),
            r.idle.to_string(),
            r.busy.to_string(),
            r.pending.to_string(),
            r.target.to_string(),
            format!("{} / {}", r.runners, r.max_runners),
            at_max,
        ]);
    }
    t.to_string()
}
