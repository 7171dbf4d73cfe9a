//! The webhook Lambda, minus `main`: translate an API Gateway HTTP API request into the core's
//! [`WebhookRequest`], run the core's decision, enqueue, answer, and emit metrics.

use hangar_core::config::Config;
use hangar_core::decision::{Action, Decider, Decision, WebhookRequest, DEFAULT_MAX_BODY_BYTES};
use hangar_core::emf;
use hangar_core::ledger::{JobEvent, JobLedger};
use hangar_core::ports::{OutboundMessage, ScaleQueue};
use hangar_core::secret::Secret;
use hangar_core::signature::WebhookSecrets;
use lambda_http::http::{HeaderMap, StatusCode};
use lambda_http::{Body, Request, Response};
use std::io::Write;
use std::sync::Arc;
use tracing::{error, info, warn};

pub mod settings;

/// Counted when the webhook could not record a job event in the ledger (the scaler records it
/// when it takes the message off the queue, so nothing is lost; its plans just learn later).
pub const LEDGER_WRITE_FAILURES: &str = "WebhookLedgerWriteFailures";

pub struct App {
    decider: Decider,
    queue: Arc<dyn ScaleQueue>,
    namespace: String,
    ledger: Option<Arc<dyn JobLedger>>,
}

impl App {
    pub fn new(decider: Decider, queue: Arc<dyn ScaleQueue>, namespace: impl Into<String>) -> Self {
        Self { decider, queue, namespace: namespace.into(), ledger: None }
    }

    /// Records each job event in the job ledger as it arrives, as it is queued: the pool's
    /// plans then count a job as started as soon as GitHub says so, not once the scaler reaches
    /// its message behind the pool's earlier ones in the FIFO group (a short job could start,
    /// end and lose its instance meanwhile, and still count as queued with no runner). The
    /// write is a conditional one, so the scaler recording the same event again changes
    /// nothing. IAM: `dynamodb:PutItem`, `dynamodb:UpdateItem`, `dynamodb:GetItem` on the table.
    pub fn with_ledger(mut self, ledger: Arc<dyn JobLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Builds the app from already loaded configuration and secrets.
    pub fn from_parts(
        config: Config,
        secrets: &Secret,
        max_body_bytes: Option<usize>,
        queue: Arc<dyn ScaleQueue>,
        namespace: impl Into<String>,
    ) -> Self {
        let decider = Decider::new(
            config,
            WebhookSecrets::parse_list(secrets),
            max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        );
        Self::new(decider, queue, namespace)
    }

    /// Records a job event in the ledger, if the app has one.
    async fn record(
        &self,
        msg: &hangar_core::message::QueueMessage,
    ) -> Result<(), hangar_core::ports::PortError> {
        match &self.ledger {
            Some(ledger) => ledger.apply(&JobEvent::from_message(msg), chrono::Utc::now()).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Handles one delivery. Never fails: every outcome is an HTTP answer GitHub's delivery log
    /// can show, and an SQS failure is a 503 so the delivery is visibly failed and can be redelivered.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let headers = req.headers();
        let content_type = header_values(headers, "content-type");
        let event = header_values(headers, "x-github-event");
        let delivery = header_values(headers, "x-github-delivery");
        let signature_256 = header_values(headers, "x-hub-signature-256");
        let wreq = WebhookRequest {
            method: req.method().as_str(),
            content_type,
            event,
            delivery,
            signature_256,
            has_sha1_signature: headers.contains_key("x-hub-signature"),
            body: req.body().as_ref(),
        };
        let mut decision = self.decider.decide(&wreq);
        let delivery_id = wreq.delivery.first().copied().unwrap_or("-");
        let event_name = wreq.event.first().copied().unwrap_or("-");
        if let Some(msg) = decision.message.take() {
            let out =
                OutboundMessage { body: msg.to_json(), group_id: msg.group_id(), dedup_id: msg.dedup_id() };
            // The ledger write and the send at once: neither waits on the other, so the ledger
            // adds no latency to the delivery's answer beyond the slower of the two.
            let (recorded, sent) = tokio::join!(self.record(&msg), self.queue.send(&out));
            if let Err(e) = recorded {
                // Best effort: the message carries the event to the scaler, which records it
                // too, so a failed write here delays what a plan knows, and loses nothing.
                warn!(delivery = delivery_id, job_id = %msg.job_id(), pool = %msg.pool(), code = e.code.as_deref().unwrap_or(""), retryable = e.retryable, "ledger write failed; the scaler records the event");
                decision.metrics.push(hangar_core::metrics::MetricRecord::count(
                    LEDGER_WRITE_FAILURES,
                    None,
                    1.0,
                ));
            }
            if let Err(e) = sent {
                error!(
                    delivery = delivery_id,
                    job_id = %msg.job_id(),
                    pool = %msg.pool(),
                    error = %e,
                    retryable = e.retryable,
                    "enqueue failed"
                );
                decision = Decision {
                    status: 503,
                    action: Action::Reject,
                    reason: format!("could not enqueue: {}", e.code.as_deref().unwrap_or("queue error")),
                    message: None,
                    metrics: vec![hangar_core::metrics::MetricRecord::count(
                        hangar_core::metrics::names::WEBHOOK_REJECTED,
                        None,
                        1.0,
                    )
                    .with("Reason", "enqueue-failed")],
                    ..decision
                };
            }
        }
        let job = decision.job_id.map(|j| j.to_string());
        let pool = decision.pool.as_ref().map(|p| p.as_str()).unwrap_or("-");
        if decision.status >= 400 {
            warn!(delivery = delivery_id, event = event_name, status = decision.status, reason = %decision.reason, "refused");
        } else {
            info!(
                delivery = delivery_id,
                event = event_name,
                job_id = job.as_deref().unwrap_or("-"),
                pool,
                status = decision.status,
                action = ?decision.action,
                reason = %decision.reason,
                "decided"
            );
        }
        self.emit_metrics(&decision);
        Response::builder()
            .status(StatusCode::from_u16(decision.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json")
            .body(Body::Text(decision.body_json()))
            .expect("static response parts are valid")
    }

    fn emit_metrics(&self, d: &Decision) {
        if d.metrics.is_empty() {
            return;
        }
        let now = chrono_now_ms();
        let mut out = std::io::stdout().lock();
        for m in &d.metrics {
            // A failed write to stdout only loses a metric; the answer to GitHub matters more.
            let _ = writeln!(out, "{}", emf::render(&self.namespace, m, now));
        }
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Every value of a header, with values that a proxy joined by commas (API Gateway joins
/// repeated headers) split apart again, so a repeated header is seen as repeated.
fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}invalid").split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}
