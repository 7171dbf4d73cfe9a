//! `hangar explain`: runs exactly the webhook Lambda's decision offline, so an operator can ask
//! "what did Hangar do with this delivery, and why?" with the payload from GitHub's delivery log.

use anyhow::Context;
use hangar_core::config::Config;
use hangar_core::decision::{Decider, WebhookRequest, DEFAULT_MAX_BODY_BYTES};
use hangar_core::secret::Secret;
use hangar_core::signature::{sign, WebhookSecrets};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The pool configuration (YAML or JSON), as stored in SSM.
    #[arg(long)]
    pub config: PathBuf,
    /// The delivery's payload, exactly as GitHub sent it.
    #[arg(long)]
    pub payload: PathBuf,
    /// The `X-GitHub-Event` header.
    #[arg(long, default_value = "workflow_job")]
    pub event: String,
    /// A file holding the webhook secret(s). With `--signature`, the signature is checked as the
    /// Lambda checks it; without, the signature step is skipped (and said so in the reason).
    #[arg(long, requires = "signature")]
    pub secret_file: Option<PathBuf>,
    /// The `X-Hub-Signature-256` header (`sha256=...`).
    #[arg(long, requires = "secret_file")]
    pub signature: Option<String>,
    /// The `X-GitHub-Delivery` header, if known.
    #[arg(long)]
    pub delivery: Option<String>,
    /// The body size limit the Lambda runs with.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
}

/// Prints the decision JSON and returns the process exit code.
pub fn run(args: ExplainArgs) -> anyhow::Result<i32> {
    let config_text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading --config {}", args.config.display()))?;
    let config =
        Config::from_yaml(&config_text).with_context(|| format!("--config {}", args.config.display()))?;
    let body = std::fs::read(&args.payload)
        .with_context(|| format!("reading --payload {}", args.payload.display()))?;

    // Without a secret the decision is explained as if the signature were valid: the secret is
    // rarely at hand when reading a delivery log, and the rest of the decision is what is asked.
    let (secrets, signature, skipped) = match (&args.secret_file, &args.signature) {
        (Some(f), Some(sig)) => {
            let raw = std::fs::read_to_string(f)
                .with_context(|| format!("reading --secret-file {}", f.display()))?;
            (WebhookSecrets::parse_list(&Secret::new(raw)), sig.clone(), false)
        }
        _ => {
            let ephemeral = "hangar-explain-unsigned";
            (WebhookSecrets::new(&[Secret::new(ephemeral)]), sign(ephemeral, &body), true)
        }
    };
    let decider = Decider::new(config, secrets, args.max_body_bytes);
    let req = WebhookRequest {
        method: "POST",
        content_type: vec!["application/json"],
        event: vec![args.event.as_str()],
        delivery: args.delivery.as_deref().into_iter().collect(),
        signature_256: vec![signature.as_str()],
        has_sha1_signature: false,
        body: &body,
    };
    let mut decision = decider.decide(&req);
    if skipped {
        decision.reason.push_str(" (signature not checked: no --secret-file/--signature given)");
    }
    println!("{}", decision.body_json());
    Ok(0)
}
