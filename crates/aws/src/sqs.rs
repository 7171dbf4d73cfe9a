//! The scale queue on SQS FIFO: sending (webhook), and receiving / deleting / extending
//! visibility (the local demo's poller, and any scaler path that drains the queue itself; in AWS
//! the Lambda event source mapping receives and deletes).

use crate::error::classify;
use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};
use hangar_core::ports::{OutboundMessage, PortError, ProvisionQueue, ScaleQueue};
use std::collections::HashMap;

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
            .map_err(|e| {
                classify("sqs:SendMessage", e, |e| {
                    if e.is_request_throttled() || e.is_kms_throttled() {
                        Some(true)
                    } else if e.is_queue_does_not_exist()
                        || e.is_invalid_message_contents()
                        || e.is_invalid_address()
                        || e.is_invalid_security()
                        || e.is_unsupported_operation()
                        || e.is_kms_access_denied()
                        || e.is_kms_disabled()
                        || e.is_kms_not_found()
                        || e.is_kms_invalid_key_usage()
                        || e.is_kms_invalid_state()
                        || e.is_kms_opt_in_required()
                    {
                        Some(false)
                    } else {
                        None
                    }
                })
            })
    }
}

/// Sends provisioning work to an SQS standard queue, ten messages per `SendMessageBatch`.
/// IAM: `sqs:SendMessage` on the queue (and `kms:GenerateDataKey` with a customer-managed key).
#[derive(Clone, Debug)]
pub struct SqsProvisionQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsProvisionQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

#[async_trait]
impl ProvisionQueue for SqsProvisionQueue {
    async fn send(&self, bodies: &[String]) -> Vec<(usize, PortError)> {
        const OP: &str = "sqs:SendMessageBatch";
        let mut failed = Vec::new();
        for (c, chunk) in bodies.chunks(SQS_BATCH).enumerate() {
            let base = c * SQS_BATCH;
            // Entry ids are indexes into `chunk`, so a refused entry maps back to its body.
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(b).build()
                })
                .collect();
            let entries = match entries {
                Ok(e) => e,
                Err(e) => {
                    let err = PortError::permanent(OP, None, e.to_string());
                    failed.extend((0..chunk.len()).map(|i| (base + i, err.clone())));
                    continue;
                }
            };
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            match out {
                Ok(o) => {
                    for f in o.failed() {
                        let Some(i) = f.id().parse::<usize>().ok().filter(|&i| i < chunk.len()) else {
                            continue;
                        };
                        // SQS: `SenderFault` says the entry itself is at fault; otherwise a
                        // retry may succeed.
                        let err = PortError {
                            operation: OP,
                            retryable: !f.sender_fault(),
                            code: Some(f.code().to_owned()),
                            message: f.message().unwrap_or("refused").to_owned(),
                        };
                        failed.push((base + i, err));
                    }
                }
                Err(e) => {
                    let err = classify(OP, e, |e| {
                        if e.is_request_throttled() || e.is_kms_throttled() {
                            Some(true)
                        } else if e.is_queue_does_not_exist()
                            || e.is_invalid_address()
                            || e.is_invalid_security()
                            || e.is_unsupported_operation()
                            || e.is_batch_request_too_long()
                            || e.is_kms_access_denied()
                            || e.is_kms_disabled()
                            || e.is_kms_not_found()
                            || e.is_kms_invalid_key_usage()
                            || e.is_kms_invalid_state()
                            || e.is_kms_opt_in_required()
                        {
                            Some(false)
                        } else {
                            None
                        }
                    });
                    failed.extend((0..chunk.len()).map(|i| (base + i, err.clone())));
                }
            }
        }
        failed
    }
}

/// One received message with the system attributes the scaler uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    /// 1 on first delivery; grows with every redelivery.
    pub receive_count: u32,
    /// All system attributes by name (`SentTimestamp`, `SequenceNumber`, …).
    pub attributes: HashMap<String, String>,
}

/// Receives, deletes and extends messages on one queue.
///
/// IAM: `sqs:ReceiveMessage`, `sqs:DeleteMessage`, `sqs:ChangeMessageVisibility` on the queue
/// (`kms:Decrypt` with a customer-managed key).
#[derive(Clone, Debug)]
pub struct SqsPoller {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

/// SQS's batch APIs take at most 10 entries.
const SQS_BATCH: usize = 10;

impl SqsPoller {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Up to `max` (1–10) messages, long-polling up to `wait_secs` (0–20). `visibility_secs`
    /// overrides the queue's visibility timeout for these messages.
    pub async fn receive(
        &self,
        max: u32,
        wait_secs: u32,
        visibility_secs: Option<u32>,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        const OP: &str = "sqs:ReceiveMessage";
        if !(1..=10).contains(&max) || wait_secs > 20 {
            return Err(PortError::permanent(
                OP,
                Some("InvalidParameterValue".into()),
                format!("max must be 1-10 and wait 0-20 s (got {max}, {wait_secs})"),
            ));
        }
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(wait_secs as i32)
            .set_visibility_timeout(visibility_secs.map(|v| v as i32))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| {
                classify(OP, e, |e| {
                    if e.is_request_throttled() || e.is_kms_throttled() || e.is_over_limit() {
                        Some(true)
                    } else if e.is_queue_does_not_exist() || e.is_invalid_address() || e.is_invalid_security()
                    {
                        Some(false)
                    } else {
                        None
                    }
                })
            })?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let attrs: HashMap<String, String> = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect())
                    .unwrap_or_default();
                Some(ReceivedMessage {
                    message_id: m.message_id()?.to_owned(),
                    receipt_handle: m.receipt_handle()?.to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    group_id: attrs.get("MessageGroupId").cloned(),
                    dedup_id: attrs.get("MessageDeduplicationId").cloned(),
                    receive_count: attrs
                        .get("ApproximateReceiveCount")
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1),
                    attributes: attrs,
                })
            })
            .collect())
    }

    /// Deletes messages by receipt handle, 10 per call. Returns the ids of entries SQS
    /// refused (e.g. an expired receipt handle); those messages will be redelivered.
    pub async fn delete_batch(&self, messages: &[(&str, &str)]) -> Result<Vec<String>, PortError> {
        const OP: &str = "sqs:DeleteMessageBatch";
        let mut failed = Vec::new();
        for chunk in messages.chunks(SQS_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (_, handle))| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*handle)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PortError::permanent(OP, None, e.to_string()))?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    classify(OP, e, |e| {
                        if e.is_request_throttled() {
                            Some(true)
                        } else if e.is_queue_does_not_exist()
                            || e.is_invalid_address()
                            || e.is_invalid_security()
                        {
                            Some(false)
                        } else {
                            None
                        }
                    })
                })?;
            for f in out.failed() {
                // Entry ids are our indexes into `chunk`, so the caller gets its own ids back.
                if let Some((id, _)) = f.id().parse::<usize>().ok().and_then(|i| chunk.get(i)) {
                    tracing::warn!(message_id = %id, code = f.code(), "delete refused");
                    failed.push((*id).to_owned());
                }
            }
        }
        Ok(failed)
    }

    /// Sets one message's remaining visibility (0 makes it visible again at once, for a
    /// retry sooner than the queue's timeout).
    pub async fn change_visibility(&self, receipt_handle: &str, secs: u32) -> Result<(), PortError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                classify("sqs:ChangeMessageVisibility", e, |e| {
                    if e.is_request_throttled() {
                        Some(true)
                    } else if e.is_message_not_inflight()
                        || e.is_receipt_handle_is_invalid()
                        || e.is_queue_does_not_exist()
                    {
                        Some(false)
                    } else {
                        None
                    }
                })
            })
    }

    /// Several visibility changes, 10 per call; returns the ids SQS refused.
    /// IAM: `sqs:ChangeMessageVisibility`.
    pub async fn change_visibility_batch(
        &self,
        messages: &[(&str, &str)],
        secs: u32,
    ) -> Result<Vec<String>, PortError> {
        const OP: &str = "sqs:ChangeMessageVisibilityBatch";
        let mut failed = Vec::new();
        for chunk in messages.chunks(SQS_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (_, handle))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*handle)
                        .visibility_timeout(secs as i32)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PortError::permanent(OP, None, e.to_string()))?;
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| classify(OP, e, |e| e.is_request_throttled().then_some(true)))?;
            for f in out.failed() {
                if let Some((id, _)) = f.id().parse::<usize>().ok().and_then(|i| chunk.get(i)) {
                    failed.push((*id).to_owned());
                }
            }
        }
        Ok(failed)
    }
}
