//! The error a scaler invocation ends with, and how Lambda sees it.
//!
//! SQS batches never end in an error: failures are per message, in `batchItemFailures`.
//! EventBridge events (schedule, EC2) are invoked asynchronously, and Lambda retries an
//! asynchronous invocation that fails; whether that retry can help is in the error itself:
//! the Lambda `errorType` is `Hangar.Retryable.<kind>` or `Hangar.Permanent.<kind>`, and the
//! message ends with `(retryable: true|false)`, so alarms and log filters can tell them apart.

use hangar_core::ports::PortError;
use lambda_runtime::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message} (retryable: {retryable})")]
pub struct ScalerError {
    /// A short, stable name: `UnknownEvent`, `InvalidEvent`, `Aws`, `Github`, `Reconcile`.
    pub kind: &'static str,
    /// Trying the same event again later may succeed (throttling, 5xx, timeouts).
    pub retryable: bool,
    pub message: String,
}

impl ScalerError {
    pub fn permanent(kind: &'static str, message: impl Into<String>) -> Self {
        Self { kind, retryable: false, message: message.into() }
    }

    pub fn retryable(kind: &'static str, message: impl Into<String>) -> Self {
        Self { kind, retryable: true, message: message.into() }
    }

    /// The Lambda `errorType`.
    pub fn error_type(&self) -> String {
        let class = if self.retryable { "Retryable" } else { "Permanent" };
        format!("Hangar.{class}.{}", self.kind)
    }
}

impl From<PortError> for ScalerError {
    fn from(e: PortError) -> Self {
        let kind = if e.operation.starts_with("github:") { "Github" } else { "Aws" };
        Self { kind, retryable: e.retryable, message: e.to_string() }
    }
}

impl From<ScalerError> for Diagnostic {
    fn from(e: ScalerError) -> Self {
        Diagnostic { error_type: e.error_type(), error_message: e.to_string() }
    }
}
