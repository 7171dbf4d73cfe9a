//! Turning SDK errors into [`PortError`]s, once, at the edge.
//!
//! Each adapter first asks the operation's typed error (`is_parameter_not_found()`,
//! `is_request_throttled()`, …) where the service models its errors. EC2 models none (every EC2
//! error is "unhandled" with a code), so for EC2 the code is the only signal; the lists below
//! are the codes EC2 documents as throttling or server-side.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use hangar_core::ports::PortError;

/// Codes meaning "slow down": the SDK already retried them with backoff; the caller may try
/// again later (e.g. let SQS redeliver).
pub const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "TooManyUpdates",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "KMS.ThrottlingException",
];

/// Server-side or capacity conditions that a later attempt may not meet.
pub const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
];

/// Is this code worth trying again later?
pub fn code_is_retryable(code: &str) -> bool {
    THROTTLING_CODES.contains(&code) || TRANSIENT_CODES.contains(&code)
}

/// Error messages from AWS are short and carry no secrets; dispatch errors can be long chains.
fn short(s: impl AsRef<str>) -> String {
    let s = s.as_ref();
    if s.len() <= 300 {
        return s.to_owned();
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Classifies `err` for `operation`. `typed` inspects the modelled error and returns
/// `Some(retryable)` when it recognises it; `None` falls back to the code and HTTP status.
pub fn classify<E>(
    operation: &'static str,
    err: SdkError<E, HttpResponse>,
    typed: impl FnOnce(&E) -> Option<bool>,
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().map(str::to_owned);
            let message = short(e.message().unwrap_or("no message"));
            let status = se.raw().status().as_u16();
            let retryable = typed(e).unwrap_or_else(|| {
                code.as_deref().is_some_and(code_is_retryable) || status >= 500 || status == 429
            });
            tracing::debug!(
                operation,
                code = code.as_deref().unwrap_or(""),
                status,
                retryable,
                "aws call failed"
            );
            PortError { operation, retryable, code, message }
        }
        // Nothing reached the service, or the answer was lost: safe to try again (calls that
        // create things carry idempotency tokens for exactly this case).
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            PortError::retryable(operation, None, short(DisplayErrorContext(&err).to_string()))
        }
        _ => PortError::permanent(operation, None, short(DisplayErrorContext(&err).to_string())),
    }
}
