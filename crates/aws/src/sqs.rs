//! The scale queue on SQS FIFO.

use async_trait::async_trait;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use hangar_core::ports::{OutboundMessage, PortError, ScaleQueue};

/// Sends scale requests and job-state events to an SQS FIFO queue. IAM: `sqs:SendMessage` on
/// the queue (and `kms:GenerateDataKey` if the queue uses a customer-managed key).
#[derive(Clone, Debug)]
pub struct SqsScaleQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsScaleQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

const OP: &str = "sqs:SendMessage";

#[async_trait]
impl ScaleQueue for SqsScaleQueue {
    async fn send(&self, msg: &OutboundMessage) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&msg.body)
            .message_group_id(&msg.group_id)
            .message_deduplication_id(&msg.dedup_id)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

fn classify<E, R>(err: SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().map(str::to_owned);
            let msg = e.message().unwrap_or("no message").to_owned();
            // Throttling and server faults are worth a retry; a missing queue or a denied call is not.
            let retryable = matches!(
                code.as_deref(),
                Some("ThrottlingException" | "RequestThrottled" | "ServiceUnavailable" | "InternalError" | "KmsThrottled")
            );
            PortError { operation: OP, retryable, code, message: msg }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            PortError::retryable(OP, None, format!("{err:?}").chars().take(300).collect::<String>())
        }
        _ => PortError::permanent(OP, None, format!("{err:?}").chars().take(300).collect::<String>()),
    }
}
