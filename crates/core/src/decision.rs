//! The webhook's whole decision, as a pure function: request in, HTTP status, queue message and
//! metrics out. The Lambda and `hangar explain` run exactly this code.

use crate::config::Config;
use crate::event::{WorkflowJobAction, WorkflowJobEvent};
use crate::ids::{DeliveryId, JobId, PoolName};
use crate::message::{JobCompleted, JobRef, JobStarted, QueueMessage};
use crate::metrics::{names, MetricRecord};
use crate::routing::{RouteRefusal, Router};
use crate::signature::{SignatureError, WebhookSecrets};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// GitHub caps webhook payloads at 25 MB; a `workflow_job` is a few KB. Anything near the limit
/// is not a real delivery, and refusing it before the HMAC bounds the work per request.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// An HTTP request as the webhook sees it. Header values are lists because a proxy may repeat a
/// header; every header Hangar reads must appear exactly once.
#[derive(Debug, Clone, Default)]
pub struct WebhookRequest<'a> {
    pub method: &'a str,
    pub content_type: Vec<&'a str>,
    pub event: Vec<&'a str>,
    pub delivery: Vec<&'a str>,
    pub signature_256: Vec<&'a str>,
    /// Present only to explain a 401 precisely: GitHub's legacy SHA-1 header is never accepted.
    pub has_sha1_signature: bool,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Enqueue,
    Ignore,
    Reject,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: u16,
    pub action: Action,
    pub pool: Option<PoolName>,
    pub reason: String,
    pub job_id: Option<JobId>,
    pub message: Option<QueueMessage>,
    pub metrics: Vec<MetricRecord>,
}

/// The JSON body GitHub's delivery log shows, and `hangar explain` prints.
#[derive(Debug, Serialize)]
pub struct DecisionBody<'a> {
    pub status: u16,
    pub action: Action,
    pub pool: Option<&'a str>,
    pub reason: &'a str,
}

impl Decision {
    fn new(status: u16, action: Action, reason: impl Into<String>) -> Self {
        Self {
            status,
            action,
            pool: None,
            reason: reason.into(),
            job_id: None,
            message: None,
            metrics: vec![],
        }
    }

    fn reject(status: u16, code: &'static str, reason: impl Into<String>) -> Self {
        let mut d = Self::new(status, Action::Reject, reason);
        d.metrics.push(MetricRecord::count(names::WEBHOOK_REJECTED, None, 1.0).with("Reason", code));
        d
    }

    fn ignore(status: u16, code: &'static str, reason: impl Into<String>) -> Self {
        let mut d = Self::new(status, Action::Ignore, reason);
        d.metrics.push(MetricRecord::count(names::WEBHOOK_IGNORED, None, 1.0).with("Reason", code));
        d
    }

    pub fn body(&self) -> DecisionBody<'_> {
        DecisionBody {
            status: self.status,
            action: self.action,
            pool: self.pool.as_ref().map(|p| p.as_str()),
            reason: &self.reason,
        }
    }

    pub fn body_json(&self) -> String {
        serde_json::to_string(&self.body()).expect("decision body serialises")
    }
}

/// Everything the decision needs, built once per cold start.
#[derive(Debug, Clone)]
pub struct Decider {
    config: Config,
    router: Router,
    secrets: WebhookSecrets,
    max_body_bytes: usize,
}

fn single<'a>(values: &[&'a str], name: &str) -> Result<Option<&'a str>, String> {
    match values {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(format!("header {name} appears {} times", values.len())),
    }
}

impl Decider {
    pub fn new(config: Config, secrets: WebhookSecrets, max_body_bytes: usize) -> Self {
        let router = Router::new(&config);
        Self { config, router, secrets, max_body_bytes }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn decide(&self, req: &WebhookRequest<'_>) -> Decision {
        if !req.method.eq_ignore_ascii_case("POST") {
            return Decision::reject(
                405,
                "method",
                format!("method {} not allowed; GitHub POSTs", req.method),
            );
        }
        if req.body.len() > self.max_body_bytes {
            return Decision::reject(
                413,
                "too-large",
                format!("body is {} bytes, over the {}-byte limit", req.body.len(), self.max_body_bytes),
            );
        }
        let sig = match single(&req.signature_256, "X-Hub-Signature-256") {
            Ok(s) => s,
            Err(e) => return Decision::reject(401, "signature", e),
        };
        if let Err(e) = self.secrets.verify(req.body, sig) {
            let reason = match (e, req.has_sha1_signature) {
                (SignatureError::Missing, true) => {
                    "only X-Hub-Signature (SHA-1) was sent; X-Hub-Signature-256 is required".to_owned()
                }
                _ => e.to_string(),
            };
            return Decision::reject(401, "signature", reason);
        }
        let event = match single(&req.event, "X-GitHub-Event") {
            Ok(Some(e)) => e,
            Ok(None) => return Decision::reject(400, "event-header", "missing X-GitHub-Event header"),
            Err(e) => return Decision::reject(400, "event-header", e),
        };
        if event == "ping" {
            return Decision::new(200, Action::Ignore, "pong");
        }
        match single(&req.content_type, "Content-Type") {
            Ok(Some(ct)) if is_json(ct) => {}
            Ok(Some(ct)) => {
                return Decision::reject(
                    415,
                    "content-type",
                    format!(
                        "content type `{ct}` is not application/json; set the webhook's content type to JSON"
                    ),
                )
            }
            Ok(None) => {
                return Decision::reject(
                    415,
                    "content-type",
                    "missing Content-Type; expected application/json",
                )
            }
            Err(e) => return Decision::reject(415, "content-type", e),
        }
        if event != "workflow_job" {
            return Decision::ignore(202, "event", format!("ignored: event `{event}` is not workflow_job"));
        }
        let delivery = single(&req.delivery, "X-GitHub-Delivery").ok().flatten().map(DeliveryId::from);
        let ev = match WorkflowJobEvent::parse(req.body) {
            Ok(ev) => ev,
            Err(e) => return Decision::reject(400, "malformed", e.to_string()),
        };
        self.decide_job(ev, delivery)
    }

    fn decide_job(&self, ev: WorkflowJobEvent, delivery: Option<DeliveryId>) -> Decision {
        let job_id = ev.workflow_job.id;
        let mut d = match ev.action {
            WorkflowJobAction::Queued => self.decide_queued(&ev, delivery),
            WorkflowJobAction::InProgress | WorkflowJobAction::Completed => self.decide_state(&ev),
            WorkflowJobAction::Waiting => Decision::ignore(
                200,
                "waiting",
                "ignored: job is waiting for approval; Hangar scales when it is queued",
            ),
            WorkflowJobAction::Other(ref a) => {
                Decision::ignore(202, "action", format!("ignored: unknown workflow_job action `{a}`"))
            }
        };
        d.job_id = Some(job_id);
        d
    }

    fn decide_queued(&self, ev: &WorkflowJobEvent, delivery: Option<DeliveryId>) -> Decision {
        let pool = match self.router.route_event(&self.config, ev) {
            Ok(p) => p,
            Err(refusal) => return refused(&refusal),
        };
        let job = &ev.workflow_job;
        let msg = QueueMessage::ScaleUp(JobRef {
            pool: pool.name.clone(),
            job_id: job.id,
            run_id: job.run_id,
            run_attempt: job.run_attempt,
            repository: ev.repository.full_name.clone(),
            installation_id: ev.installation.map(|i| i.id),
            labels: job.labels.clone(),
            created_at: job.created_at,
            delivery_id: delivery,
        });
        let mut d =
            Decision::new(202, Action::Enqueue, format!("queued job {} for pool {}", job.id, pool.name));
        d.metrics.push(MetricRecord::count(names::JOBS_QUEUED, Some(&pool.name), 1.0));
        d.pool = Some(pool.name.clone());
        d.message = Some(msg);
        d
    }

    /// `in_progress` / `completed`: the scaler needs these for Hangar's own runners (found by the
    /// runner name, which encodes pool and instance), and the metrics are useful for any job that
    /// routes to a pool. Repository policy does not apply: it gates launches, not bookkeeping.
    fn decide_state(&self, ev: &WorkflowJobEvent) -> Decision {
        let job = &ev.workflow_job;
        let by_runner = job.runner_name.as_ref().and_then(|n| n.pool()).and_then(|p| self.config.pool(&p));
        let pool = match by_runner {
            Some(p) => p,
            None => match self.router.route(&job.labels) {
                Ok(i) => &self.config.pools[i],
                Err(refusal) => return refused(&refusal),
            },
        };
        let name = &pool.name;
        let mut metrics = Vec::with_capacity(2);
        let msg = if ev.action == WorkflowJobAction::InProgress {
            metrics.push(MetricRecord::count(names::JOBS_STARTED, Some(name), 1.0));
            if let Some(ms) = millis_between(job.created_at, job.started_at) {
                metrics.push(MetricRecord::millis(names::QUEUE_WAIT_MS, Some(name), ms));
            }
            QueueMessage::JobStarted(JobStarted {
                pool: name.clone(),
                job_id: job.id,
                run_id: job.run_id,
                run_attempt: job.run_attempt,
                repository: ev.repository.full_name.clone(),
                installation_id: ev.installation.map(|i| i.id),
                runner_name: job.runner_name.clone(),
                started_at: job.started_at,
            })
        } else {
            metrics.push(
                MetricRecord::count(names::JOBS_COMPLETED, Some(name), 1.0)
                    .with("Conclusion", job.conclusion.clone().unwrap_or_else(|| "unknown".into())),
            );
            if let Some(ms) = millis_between(job.started_at, job.completed_at) {
                metrics.push(MetricRecord::millis(names::JOB_DURATION_MS, Some(name), ms));
            }
            QueueMessage::JobCompleted(JobCompleted {
                pool: name.clone(),
                job_id: job.id,
                run_id: job.run_id,
                run_attempt: job.run_attempt,
                repository: ev.repository.full_name.clone(),
                installation_id: ev.installation.map(|i| i.id),
                runner_name: job.runner_name.clone(),
                conclusion: job.conclusion.clone(),
                completed_at: job.completed_at,
            })
        };
        let mut d = Decision::new(
            202,
            Action::Enqueue,
            format!("job {} {} in pool {}", job.id, ev.action.as_str(), name),
        );
        d.pool = Some(name.clone());
        d.metrics = metrics;
        d.message = Some(msg);
        d
    }
}

fn refused(r: &RouteRefusal) -> Decision {
    // 200, not 4xx: the delivery was fine, the job is simply not ours, and a 4xx would make
    // GitHub's delivery log look broken.
    let mut d = Decision::ignore(200, r.code(), format!("ignored: {r}"));
    if let RouteRefusal::PublicRepository(p) | RouteRefusal::RepositoryNotAllowed(p) = r {
        d.pool = Some(PoolName::from(p.as_str()));
    }
    d
}

fn is_json(ct: &str) -> bool {
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
}

fn millis_between(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<f64> {
    let ms = (to? - from?).num_milliseconds();
    (ms >= 0).then_some(ms as f64)
}
