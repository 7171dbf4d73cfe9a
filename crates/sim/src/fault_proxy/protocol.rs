//! Which AWS call a request is, and what an AWS error looks like on the wire for its protocol.

use super::form;
use http::{HeaderMap, HeaderValue, StatusCode};

/// The wire protocol of a call, which decides the error body the SDK will parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// EC2's query protocol: form body, `<Response><Errors><Error>` errors.
    Ec2Query,
    /// The other query-protocol services: `<ErrorResponse><Error>` errors.
    Query,
    /// `x-amz-target` JSON (SSM 1.1, SQS 1.0). SQS is "query compatible": its SDK takes the
    /// error code from the `x-amzn-query-error` header.
    Json { content_type: String, query_compatible: bool },
    /// Not recognisably AWS (e.g. moto's own `/moto-api`).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Signing name from the SigV4 credential scope (`ec2`, `ssm`, `sqs`), when present.
    pub service: Option<String>,
    /// The API action (`CreateFleet`, `PutParameter`, `SendMessage`).
    pub action: Option<String>,
    pub protocol: Protocol,
    /// The decoded form body, for query-protocol calls.
    pub form: Vec<(String, String)>,
}

/// `Credential=AKID/20260101/us-east-1/ec2/aws4_request` → `ec2`.
fn signing_service(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let scope = cred.split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_owned)
}

pub fn identify(path_and_query: &str, headers: &HeaderMap, body: &[u8]) -> Call {
    let service = signing_service(headers);
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (prefix, action) = target.rsplit_once('.').unwrap_or(("", target));
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/x-amz-json-1.1")
            .to_owned();
        let service = service.or_else(|| match prefix {
            "AmazonSSM" => Some("ssm".into()),
            "AmazonSQS" => Some("sqs".into()),
            _ => None,
        });
        let query_compatible = service.as_deref() == Some("sqs") || prefix == "AmazonSQS";
        return Call {
            service,
            action: Some(action.to_owned()),
            protocol: Protocol::Json { content_type, query_compatible },
            form: Vec::new(),
        };
    }
    let is_form = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let mut pairs = if is_form { form::decode(body) } else { Vec::new() };
    if form::get(&pairs, "Action").is_none() {
        if let Some((_, q)) = path_and_query.split_once('?') {
            let from_query = form::decode(q.as_bytes());
            if form::get(&from_query, "Action").is_some() {
                pairs = from_query;
            }
        }
    }
    match form::get(&pairs, "Action").map(str::to_owned) {
        Some(action) => {
            let protocol =
                if service.as_deref() == Some("ec2") { Protocol::Ec2Query } else { Protocol::Query };
            Call { service, action: Some(action), protocol, form: pairs }
        }
        None => Call { service, action: None, protocol: Protocol::Other, form: pairs },
    }
}

pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The message AWS sends for well-known codes, so logs in tests look like logs in AWS.
pub fn default_message(code: &str) -> String {
    match code {
        "RequestLimitExceeded" => "Request limit exceeded.".into(),
        "InsufficientInstanceCapacity" => {
            "We currently do not have sufficient capacity in the Availability Zone you requested.".into()
        }
        "ThrottlingException" | "Throttling" => "Rate exceeded".into(),
        "RequestThrottled" => "Request is throttled.".into(),
        "InternalError" | "InternalServerError" => "An internal error has occurred".into(),
        other => format!("{other} (injected by the Hangar fault proxy)"),
    }
}

/// A complete error response for `call` with `code`/`status`.
pub fn error_response(
    call: &Call,
    code: &str,
    status: u16,
    message: &str,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let request_id = uuid::Uuid::new_v4().to_string();
    let fault = if status.is_server_error() { "Receiver" } else { "Sender" };
    let mut headers = HeaderMap::new();
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    let body = match &call.protocol {
        Protocol::Json { content_type, query_compatible } => {
            headers.insert(http::header::CONTENT_TYPE, hv(content_type));
            headers.insert("x-amzn-requestid", hv(&request_id));
            let type_name = if *query_compatible {
                headers.insert("x-amzn-query-error", hv(&format!("{code};{fault}")));
                format!("com.amazonaws.{}#{code}", call.service.as_deref().unwrap_or("sqs"))
            } else {
                code.to_owned()
            };
            serde_json::json!({ "__type": type_name, "message": message }).to_string().into_bytes()
        }
        Protocol::Ec2Query | Protocol::Other => {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
                xml_escape(code),
                xml_escape(message)
            )
            .into_bytes()
        }
        Protocol::Query => {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
            format!(
                "<?xml version=\"1.0\"?><ErrorResponse><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message><Detail/></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                xml_escape(code),
                xml_escape(message)
            )
            .into_bytes()
        }
    };
    (status, headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const AUTH_EC2: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00";

    #[test]
    fn ec2_query_call_is_identified_from_form_and_scope() {
        let h =
            headers(&[("authorization", AUTH_EC2), ("content-type", "application/x-www-form-urlencoded")]);
        let c = identify("/", &h, b"Action=CreateFleet&Version=2016-11-15");
        assert_eq!(c.action.as_deref(), Some("CreateFleet"));
        assert_eq!(c.service.as_deref(), Some("ec2"));
        assert_eq!(c.protocol, Protocol::Ec2Query);
    }

    #[test]
    fn json_calls_are_identified_from_target() {
        let h = headers(&[
            ("x-amz-target", "AmazonSQS.SendMessage"),
            ("content-type", "application/x-amz-json-1.0"),
        ]);
        let c = identify("/", &h, b"{}");
        assert_eq!(c.action.as_deref(), Some("SendMessage"));
        assert!(matches!(c.protocol, Protocol::Json { query_compatible: true, .. }));
        let h = headers(&[("x-amz-target", "AmazonSSM.PutParameter")]);
        let c = identify("/", &h, b"{}");
        assert_eq!((c.service.as_deref(), c.action.as_deref()), (Some("ssm"), Some("PutParameter")));
        assert!(matches!(c.protocol, Protocol::Json { query_compatible: false, .. }));
    }

    #[test]
    fn unknown_requests_have_no_action() {
        let c = identify("/moto-api/reset", &HeaderMap::new(), b"");
        assert_eq!(c.action, None);
        assert_eq!(c.protocol, Protocol::Other);
    }

    #[test]
    fn ec2_error_body_escapes_and_names_the_code() {
        let h =
            headers(&[("authorization", AUTH_EC2), ("content-type", "application/x-www-form-urlencoded")]);
        let c = identify("/", &h, b"Action=RunInstances");
        let (status, _, body) = error_response(&c, "RequestLimitExceeded", 503, "a<b");
        assert_eq!(status, 503);
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains("<Code>RequestLimitExceeded</Code>"), "{body}");
        assert!(body.contains("<Message>a&lt;b</Message>"), "{body}");
    }
}
