//! Forwarding a request to an upstream server unchanged, for the local cloud's fronts: the AWS
//! fault proxy in front of moto, and the demo's Lambda runtime-API front in front of
//! `cargo lambda watch`. Each front decides what to change; this carries the rest across.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode};

/// The largest request body a front reads. Above anything the local cloud carries: Lambda's
/// invocation payloads are at most 6 MB, and moto's requests from Hangar are far smaller.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Headers that describe one hop (RFC 9110 §7.6.1), so a relay sets its own.
const HOP_BY_HOP: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

fn forwardable(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str()) && !name.as_str().starts_with("proxy-")
}

/// An upstream server (`http://HOST:PORT[/prefix]`) and the client that reaches it.
#[derive(Debug, Clone)]
pub struct Relay {
    upstream: String,
    http: reqwest::Client,
}

/// An upstream's answer, its hop-by-hop headers dropped.
pub type Answer = (StatusCode, HeaderMap, Bytes);

impl Relay {
    pub fn new(upstream: impl Into<String>, http: reqwest::Client) -> Self {
        Self { upstream: upstream.into(), http }
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Sends `method path_and_query` with `headers` and `body` to the upstream. The error is a
    /// message for a 502.
    pub async fn forward(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Answer, String> {
        let url = format!("{}{}", self.upstream, path_and_query);
        let mut req = self.http.request(method.clone(), &url).body(body);
        for (k, v) in headers {
            if forwardable(k) {
                req = req.header(k, v);
            }
        }
        let resp = req.send().await.map_err(|e| format!("upstream {url}: {e}"))?;
        let status = resp.status();
        let mut out = HeaderMap::new();
        for (k, v) in resp.headers() {
            if forwardable(k) {
                out.append(k.clone(), v.clone());
            }
        }
        let bytes = resp.bytes().await.map_err(|e| format!("upstream body: {e}"))?;
        Ok((status, out, bytes))
    }
}

/// A request's body, up to [`MAX_BODY`]; a larger one is answered 413.
pub async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")).into_response())
}

pub fn respond(status: StatusCode, headers: HeaderMap, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

pub fn bad_gateway(msg: String) -> Response {
    (StatusCode::BAD_GATEWAY, msg).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_proxy_headers_stay_behind() {
        for h in ["host", "content-length", "transfer-encoding", "proxy-authorization"] {
            assert!(!forwardable(&HeaderName::from_static(h)), "{h}");
        }
        for h in ["authorization", "x-amz-target", "lambda-runtime-aws-request-id"] {
            assert!(forwardable(&HeaderName::from_static(h)), "{h}");
        }
    }
}
