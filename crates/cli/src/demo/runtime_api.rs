//! The Lambda runtime API as Lambda serves it, in front of the one `cargo lambda watch` serves,
//! for a function whose handler reads its invocation's deadline (the provisioner).
//!
//! `cargo lambda watch` (1.9) differs from Lambda in two ways that matter there:
//! - The `Lambda-Runtime-Deadline-Ms` it hands out with an invocation is not a time (it sent
//!   `600000` whatever its `--timeout`), where Lambda sends "the date that the function times
//!   out in Unix time milliseconds"
//!   (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html#runtimes-api-next). Read as
//!   a date it is in 1970: a handler that stops its work before the deadline has no time at all
//!   (every provisioning failed at once with `DeadlineExceeded` before this was here).
//! - It answers an idle `/next` with 408 after its `--timeout`, on which `lambda_runtime`
//!   panics and the environment is gone; Lambda holds `/next` until an event comes.
//!
//! So this forwards every request unchanged, except that it asks `/next` again after a 408 and
//! sets an invocation's deadline to when it is handed over plus the function's timeout (the
//! watch's `--timeout`, which also ends the invocation there).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DEADLINE: &str = "lambda-runtime-deadline-ms";
/// Invocation events and responses are at most 6 MB in Lambda.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Not forwarded: they describe one hop.
const HOP_BY_HOP: [&str; 5] = ["connection", "keep-alive", "transfer-encoding", "content-length", "host"];

struct Shared {
    http: reqwest::Client,
    /// The watch's runtime API, e.g. `http://127.0.0.1:9000/.rt`.
    upstream: String,
    timeout: Duration,
}

/// The front's address (for `AWS_LAMBDA_RUNTIME_API`, as `http://127.0.0.1:PORT`) and its
/// server task, which ends when aborted.
pub async fn start(
    upstream: String,
    timeout: Duration,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let shared = Arc::new(Shared { http: reqwest::Client::builder().build()?, upstream, timeout });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(forward).with_state(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "runtime API front stopped");
        }
    });
    Ok((format!("http://{addr}"), task))
}

/// The deadline of an invocation handed over now.
pub fn deadline_ms(now: SystemTime, timeout: Duration) -> u64 {
    (now.duration_since(UNIX_EPOCH).unwrap_or_default() + timeout).as_millis() as u64
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")).into_response(),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let next = parts.uri.path().ends_with("/runtime/invocation/next");
    loop {
        let url = format!("{}{path}", shared.upstream);
        let mut up = shared.http.request(parts.method.clone(), &url).body(body.clone());
        for (k, v) in &parts.headers {
            if !HOP_BY_HOP.contains(&k.as_str()) {
                up = up.header(k, v);
            }
        }
        let resp = match up.send().await {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_GATEWAY, format!("runtime API {url}: {e}")).into_response(),
        };
        let status = resp.status();
        if next && status == StatusCode::REQUEST_TIMEOUT {
            continue;
        }
        let mut headers = HeaderMap::new();
        for (k, v) in resp.headers() {
            if !HOP_BY_HOP.contains(&k.as_str()) {
                headers.append(k.clone(), v.clone());
            }
        }
        if next && status.is_success() {
            let at = deadline_ms(SystemTime::now(), shared.timeout);
            headers.insert(DEADLINE, HeaderValue::from(at));
        }
        let bytes: Bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return (StatusCode::BAD_GATEWAY, format!("runtime API body: {e}")).into_response(),
        };
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        return out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_hand_over_plus_the_timeout_in_unix_milliseconds() {
        let now = UNIX_EPOCH + Duration::from_millis(1_796_328_134_868);
        assert_eq!(deadline_ms(now, Duration::from_secs(30)), 1_796_328_164_868);
    }
}
