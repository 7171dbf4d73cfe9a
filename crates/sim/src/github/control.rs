//! The control API under `/_sim`: fault injection, clock, counters, the job model, runner
//! registration and webhook redelivery. Not counted, not authenticated; 127.0.0.1 only.

use super::{model::Fault, view, JobSpec, Shared, SimError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hangar_core::ports::Clock;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

type S = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim/counters", get(counters))
        .route("/_sim/counters/reset", post(reset_counters))
        .route("/_sim/faults", post(add_fault).delete(clear_faults).get(list_faults))
        .route("/_sim/latency", post(set_latency))
        .route("/_sim/rate-limit/exhaust", post(exhaust))
        .route("/_sim/clock", get(clock))
        .route("/_sim/clock/advance", post(advance))
        .route("/_sim/tokens/revoke", post(revoke))
        .route("/_sim/webhook", put(set_webhook))
        .route("/_sim/jobs", get(list_jobs).post(enqueue))
        .route("/_sim/jobs/{id}", get(get_job))
        .route("/_sim/jobs/{id}/rerun", post(rerun))
        .route("/_sim/runners", get(list_runners))
        .route("/_sim/runners/register", post(register))
        .route("/_sim/runners/{id}", get(get_runner))
        .route("/_sim/runners/{id}/kill", post(kill))
        .route("/_sim/deliveries", get(list_deliveries))
        .route("/_sim/deliveries/{id}", get(get_delivery))
        .route("/_sim/deliveries/{id}/redeliver", post(redeliver))
        .with_state(shared)
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = match &self {
            SimError::NotFound(_) | SimError::UnknownOrg(_) => StatusCode::NOT_FOUND,
            SimError::Conflict(_) => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

async fn counters(State(s): S) -> Response {
    Json(s.counters()).into_response()
}

async fn reset_counters(State(s): S) -> StatusCode {
    let mut st = s.lock();
    st.counters.clear();
    st.responses.clear();
    StatusCode::NO_CONTENT
}

async fn add_fault(State(s): S, Json(f): Json<Fault>) -> Response {
    if f.count == 0 || !(400..=599).contains(&f.status) {
        return SimError::BadRequest("count must be >= 1 and status 400..=599".into()).into_response();
    }
    s.lock().faults.push(f.clone());
    (StatusCode::CREATED, Json(f)).into_response()
}

async fn clear_faults(State(s): S) -> StatusCode {
    s.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(s): S) -> Response {
    Json(s.lock().faults.clone()).into_response()
}

#[derive(Deserialize)]
struct Latency {
    endpoint: String,
    ms: u64,
}

async fn set_latency(State(s): S, Json(l): Json<Latency>) -> StatusCode {
    let mut st = s.lock();
    if l.ms == 0 {
        st.latency_ms.remove(&l.endpoint);
    } else {
        st.latency_ms.insert(l.endpoint, l.ms);
    }
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Exhaust {
    installation_id: Option<u64>,
    #[serde(default = "sixty")]
    reset_in_secs: u64,
}

fn sixty() -> u64 {
    60
}

async fn exhaust(State(s): S, Json(e): Json<Exhaust>) -> StatusCode {
    s.exhaust(e.installation_id, Duration::from_secs(e.reset_in_secs));
    StatusCode::NO_CONTENT
}

async fn clock(State(s): S) -> Response {
    Json(json!({ "now": s.clock.now(), "offset_ms": s.clock.offset().num_milliseconds() })).into_response()
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

async fn advance(State(s): S, Json(a): Json<Advance>) -> Response {
    if !a.seconds.is_finite() || a.seconds < 0.0 {
        return SimError::BadRequest("seconds must be a non-negative number".into()).into_response();
    }
    s.clock.advance(Duration::from_secs_f64(a.seconds));
    clock(State(s)).await
}

async fn revoke(State(s): S) -> StatusCode {
    s.lock().tokens.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Webhook {
    url: Option<String>,
}

async fn set_webhook(State(s): S, Json(w): Json<Webhook>) -> StatusCode {
    s.lock().webhook_url = w.url;
    StatusCode::NO_CONTENT
}

async fn list_jobs(State(s): S) -> Response {
    Json(s.lock().jobs.values().cloned().collect::<Vec<_>>()).into_response()
}

async fn enqueue(State(s): S, Json(spec): Json<JobSpec>) -> Response {
    match s.enqueue(spec) {
        Ok(j) => (StatusCode::CREATED, Json(j)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn get_job(State(s): S, Path(id): Path<u64>) -> Response {
    match s.lock().jobs.get(&id) {
        Some(j) => Json(j).into_response(),
        None => SimError::NotFound(format!("job {id}")).into_response(),
    }
}

async fn rerun(State(s): S, Path(id): Path<u64>) -> Response {
    match s.rerun(id) {
        Ok(j) => (StatusCode::CREATED, Json(j)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_runners(State(s): S) -> Response {
    Json(s.lock().runners.values().map(view).collect::<Vec<_>>()).into_response()
}

#[derive(Deserialize)]
struct Register {
    encoded_jit_config: String,
}

async fn register(State(s): S, Json(r): Json<Register>) -> Response {
    match s.register(&r.encoded_jit_config) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn get_runner(State(s): S, Path(id): Path<u64>) -> Response {
    match s.lock().runners.get(&id) {
        Some(r) => Json(view(r)).into_response(),
        None => SimError::NotFound(format!("runner {id}")).into_response(),
    }
}

async fn kill(State(s): S, Path(id): Path<u64>) -> Response {
    match s.kill(id) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_deliveries(State(s): S) -> Response {
    Json(s.lock().deliveries.clone()).into_response()
}

async fn get_delivery(State(s): S, Path(id): Path<u64>) -> Response {
    let st = s.lock();
    match st.deliveries.iter().find(|d| d.id == id) {
        Some(d) => {
            let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
            v["body"] = serde_json::from_str(&d.body).unwrap_or(Value::Null);
            Json(v).into_response()
        }
        None => SimError::NotFound(format!("delivery {id}")).into_response(),
    }
}

async fn redeliver(State(s): S, Path(id): Path<u64>) -> Response {
    match s.redeliver(id) {
        Ok(d) => (StatusCode::CREATED, Json(d)).into_response(),
        Err(e) => e.into_response(),
    }
}
