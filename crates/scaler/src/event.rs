//! What invoked the scaler, read from the raw payload. One function receives three kinds of
//! event, so the kind is detected from the payload's shape, never guessed: anything that is not
//! exactly one of them is an [`EventError`], and not worth retrying.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use hangar_core::ids::InstanceId;
use serde_json::Value;

/// EventBridge `source` and `detail-type` of the events the scaler handles.
pub mod kinds {
    pub const SCHEDULE_SOURCE: &str = "aws.events";
    pub const SCHEDULE_DETAIL_TYPE: &str = "Scheduled Event";
    pub const EC2_SOURCE: &str = "aws.ec2";
    pub const SPOT_INTERRUPTION: &str = "EC2 Spot Instance Interruption Warning";
    pub const STATE_CHANGE: &str = "EC2 Instance State-change Notification";
    pub const SQS_SOURCE: &str = "aws:sqs";
}

/// One SQS record: what the scaler needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsRecord {
    pub message_id: String,
    /// Missing bodies read as empty, which then fails to parse as a message (a batch item
    /// failure, not a failed batch).
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on first delivery.
    pub receive_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScalerEvent {
    /// A batch from the scale queue.
    Sqs(Vec<SqsRecord>),
    /// The reconcile schedule.
    Schedule,
    /// EC2 will reclaim this spot instance in two minutes.
    SpotInterruption { instance: InstanceId },
    /// An instance changed state (`pending`, `running`, `shutting-down`, `terminated`, ...).
    StateChange { instance: InstanceId, state: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not an event the scaler handles: {0}")]
    Unknown(String),
    #[error("malformed {kind} event: {reason}")]
    Malformed { kind: &'static str, reason: String },
}

fn malformed(kind: &'static str, reason: impl Into<String>) -> EventError {
    EventError::Malformed { kind, reason: reason.into() }
}

fn instance_id(kind: &'static str, detail: &Value) -> Result<InstanceId, EventError> {
    let id = detail
        .get("instance-id")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(kind, "detail.instance-id is missing"))?;
    let hex = id.strip_prefix("i-").unwrap_or("");
    if hex.is_empty() || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(malformed(kind, "detail.instance-id is not an EC2 instance id"));
    }
    Ok(InstanceId::from(id))
}

/// Reads the payload Lambda handed over.
pub fn detect(payload: &Value) -> Result<ScalerEvent, EventError> {
    if payload.get("Records").is_some() {
        return sqs(payload);
    }
    let (Some(source), Some(detail_type)) =
        (payload.get("source").and_then(Value::as_str), payload.get("detail-type").and_then(Value::as_str))
    else {
        return Err(EventError::Unknown("neither an SQS batch nor an EventBridge event".into()));
    };
    let ev: EventBridgeEvent<Value> =
        serde_json::from_value(payload.clone()).map_err(|e| malformed("EventBridge", e.to_string()))?;
    match (source, detail_type) {
        (kinds::SCHEDULE_SOURCE, kinds::SCHEDULE_DETAIL_TYPE) => Ok(ScalerEvent::Schedule),
        (kinds::EC2_SOURCE, kinds::SPOT_INTERRUPTION) => {
            Ok(ScalerEvent::SpotInterruption { instance: instance_id("spot interruption", &ev.detail)? })
        }
        (kinds::EC2_SOURCE, kinds::STATE_CHANGE) => {
            let instance = instance_id("state change", &ev.detail)?;
            let state = ev
                .detail
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("state change", "detail.state is missing"))?;
            Ok(ScalerEvent::StateChange { instance, state: state.to_owned() })
        }
        // Names only: the payload may come from anyone who can invoke the function.
        _ => Err(EventError::Unknown(format!(
            "EventBridge event `{}` from `{}`",
            detail_type.chars().take(80).collect::<String>(),
            source.chars().take(40).collect::<String>()
        ))),
    }
}

fn sqs(payload: &Value) -> Result<ScalerEvent, EventError> {
    let ev: SqsEvent =
        serde_json::from_value(payload.clone()).map_err(|e| malformed("SQS", e.to_string()))?;
    let mut out = Vec::with_capacity(ev.records.len());
    for r in ev.records {
        if r.event_source.as_deref() != Some(kinds::SQS_SOURCE) {
            return Err(EventError::Unknown("a `Records` batch whose eventSource is not aws:sqs".into()));
        }
        // Without an id a failure could not be reported for this record alone.
        let message_id = r
            .message_id
            .filter(|m| !m.is_empty())
            .ok_or_else(|| malformed("SQS", "a record has no messageId"))?;
        let receive_count =
            r.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        out.push(SqsRecord { message_id, body: r.body.unwrap_or_default(), receive_count });
    }
    Ok(ScalerEvent::Sqs(out))
}
