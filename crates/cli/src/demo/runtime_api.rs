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

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use hangar_sim::relay::{bad_gateway, read_body, respond, Relay};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DEADLINE: &str = "lambda-runtime-deadline-ms";

struct Shared {
    /// The watch's runtime API, e.g. `http://127.0.0.1:9000/.rt`.
    relay: Relay,
    timeout: Duration,
}

/// The front's address (for `AWS_LAMBDA_RUNTIME_API`, as `http://127.0.0.1:PORT`) and its
/// server task, which ends when aborted.
pub async fn start(
    upstream: String,
    timeout: Duration,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    // No client timeout: the watch holds an idle `/next` open until its own `--timeout`.
    let http = reqwest::Client::builder().no_proxy().build()?;
    let shared = Arc::new(Shared { relay: Relay::new(upstream, http), timeout });
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
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let next = parts.uri.path().ends_with("/runtime/invocation/next");
    loop {
        let (status, mut headers, bytes) =
            match shared.relay.forward(&parts.method, path, &parts.headers, body.clone()).await {
                Ok(answer) => answer,
                Err(e) => return bad_gateway(e),
            };
        match status {
            StatusCode::REQUEST_TIMEOUT if next => continue,
            s if next && s.is_success() => {
                let at = deadline_ms(SystemTime::now(), shared.timeout);
                headers.insert(DEADLINE, HeaderValue::from(at));
            }
            _ => {}
        }
        return respond(status, headers, bytes);
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
