//! The scaler Lambda: SQS batches of scale requests and job events, the reconcile schedule, and
//! EC2 events, all through one handler ([`Scaler::handle`]) that detects the event kind from the
//! payload. Decisions are the core planner's; this crate reads state, runs the plan through the
//! ports and reports what failed.
//!
//! # Decisions
//! - **Counting, not binding.** A pool is planned from the job ledger (its queued jobs) and what
//!   EC2 lists, by [`hangar_core::plan::plan_pool`]: `need = queued + warm target`, and the
//!   shortfall below the cap is launched. No job is bound to an instance, so whichever runner
//!   GitHub hands whichever job, the counts stay right. See [`counting`].
//! - **One plan per pool at a time.** Every trigger for a pool is a message in the pool's FIFO
//!   group: its job events (the webhook's), and a tick when reconcile runs, an instance goes or
//!   is interrupted, or a plan is retried. SQS runs one batch per group at a time, so no two
//!   plans of a pool overlap, and no interleaving of invocations can spend the same headroom
//!   twice.
//! - **At the cap, jobs wait in the ledger.** Their messages are acknowledged; the next trigger
//!   (a job ending, an instance going) plans again. Nothing goes round the queue.
//! - **The hot path never waits on GitHub.** A batch records its events, plans and issues one
//!   CreateFleet for the whole shortfall; the JIT configs are the provisioner's, one message per
//!   instance on a standard queue ([`provisioner`]).
//! - **Idempotent launches.** The CreateFleet token is the plan's, stable for the same
//!   shortfall, and launches are recorded so that a `DescribeInstances` that lags never causes
//!   a second one.
//! - **Errors.** A batch reports exactly the failed message ids (and, by Lambda's FIFO rule,
//!   every message after a failed one in its group); other events fail with a [`ScalerError`]
//!   whose Lambda error type says `Retryable` or `Permanent`.

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
pub use messages::Tick;
pub use metrics::Metrics;
pub use scaler::{Scaler, ScalerOptions, ScalerParts};
