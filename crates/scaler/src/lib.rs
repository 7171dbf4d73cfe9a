//! The scaler Lambda: SQS batches of scale requests and job events, the reconcile schedule, and
//! EC2 events, all through one handler ([`Scaler::handle`]) that detects the event kind from the
//! payload. Decisions are the core planner's; this crate reads state, runs the plan through the
//! ports and reports what failed.
//!
//! # Decisions
//! - **JIT configs are written right after launch.** For each new instance the scaler generates
//!   a JIT config (one GitHub call) and stores it as a SecureString keyed by instance id while
//!   the instance boots; the boot agent polls for it with backoff until a deadline. If the JIT
//!   config cannot be made or stored, the new instance is terminated at once and its message is
//!   reported failed, so SQS redelivers it and a fresh launch follows (no orphan, no lost job).
//! - **One launcher per pool at a time.** The webhook puts every message for a pool in the
//!   pool's FIFO message group, so SQS runs at most one batch per pool at a time. Reconcile does
//!   not launch: when a warm pool is short it sends a top-up message into that same group, and
//!   the batch that handles it launches. Reconcile only terminates, untags and cleans up, which
//!   can lower a pool's count but never raise it; EC2 events only tag and clean up. So the
//!   launch headroom each batch computes from a fresh describe cannot be spent twice.
//! - **Idempotent launches.** The CreateFleet token comes from the planner's key (the job ids)
//!   and the deliveries that asked (see `JobContext::launch_key`); redelivered messages whose
//!   launch went through find their job ids on instance tags and launch nothing.
//! - **Two planners, for now.** With `HANGAR_PLANNER=counting` a pool is planned from the job
//!   ledger by counts (see [`counting`]): no earmarks, no top-ups, jobs at the cap wait in the
//!   ledger, and every other trigger is a tick in the pool's FIFO group. The earmark planner
//!   described above is the default until the counting one replaces it.
//! - **Errors.** A batch reports exactly the failed message ids; other events fail with a
//!   [`ScalerError`] whose Lambda error type says `Retryable` or `Permanent`.

pub mod counting;
pub mod error;
pub mod event;
pub mod ledger;
pub mod lookup;
pub mod messages;
pub mod metrics;
pub mod provisioner;
pub mod scaler;
pub mod settings;

pub mod without_app {
    //! The scaler before the GitHub App exists. The stack must be deployed first (the App's
    //! webhook needs the stack's URL), so `github.app_id` is 0 until the operator sets it. Without
    //! an App no runner can be registered, so the scaler does nothing at all, and says so once per
    //! invocation: no error, so no Lambda retry, no dead-letter message and no alarm.

    use crate::event::{detect, EventError, ScalerEvent};
    use crate::ScalerError;
    use aws_lambda_events::event::sqs::SqsBatchResponse;
    use serde_json::{json, Value};

    /// The log line, in full, so operators can search for it.
    pub const NOT_CONFIGURED: &str =
        "GitHub App not configured (github.app_id is 0): nothing to do until GitHubAppId is set; see infra/README.md";

    /// Handles any event the scaler receives while the App is not configured. An SQS batch is
    /// acknowledged whole (no runner can be launched for its jobs, and failing it would only move
    /// it to the dead-letter queue); a reconcile or EC2 event is a no-op. Payloads that are no
    /// event the scaler knows are refused exactly as [`crate::Scaler::handle`] refuses them.
    pub fn handle(payload: &Value) -> Result<Value, ScalerError> {
        let event = detect(payload).map_err(|e| match e {
            EventError::Unknown(_) => ScalerError::permanent("UnknownEvent", e.to_string()),
            EventError::Malformed { .. } => ScalerError::permanent("InvalidEvent", e.to_string()),
        })?;
        tracing::warn!(event = kind(&event), "{NOT_CONFIGURED}");
        Ok(match event {
            ScalerEvent::Sqs(_) => {
                serde_json::to_value(SqsBatchResponse::default()).expect("batch response serialises")
            }
            _ => json!({ "github_app": "not configured" }),
        })
    }

    fn kind(event: &ScalerEvent) -> &'static str {
        match event {
            ScalerEvent::Sqs(_) => "sqs",
            ScalerEvent::Schedule => "reconcile",
            ScalerEvent::SpotInterruption { .. } => "spot-interruption",
            ScalerEvent::StateChange { .. } => "state-change",
        }
    }
}

pub use error::ScalerError;
pub use messages::{ReplaceDead, Tick, TopUp};
pub use metrics::Metrics;
pub use scaler::{Scaler, ScalerOptions, ScalerParts};
