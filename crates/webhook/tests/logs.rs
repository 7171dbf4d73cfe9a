//! Invariant 1, in its own test binary: `tracing` caches callsite interest process-wide, so a
//! scoped subscriber only sees every event when no other test runs beside it.

mod common;

use common::*;
use hangar_aws::reexports::sqs;
use hangar_aws::sqs::SqsScaleQueue;
use hangar_core::secret::Secret;
use hangar_core::signature::sign;
use hangar_testsupport::{aws_config_for, moto};
use hangar_webhook::App;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Invariant 1: the secret, the signature and the body never reach a log line, at any level,
/// from our code or the SDK's, on success, refusal and failure.
#[test]
fn logs_never_contain_secret_signature_or_body() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let body = queued_body();
    let signature = sign(SECRET, body.as_bytes());
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (app, _, _) = app_with_queue("webhook-logs").await;
            assert_eq!(app.handle(apigw_event(&body, false, |_| {})).await.status().as_u16(), 202);
            let bad = apigw_event(&body, false, |ev| {
                ev["headers"]["x-hub-signature-256"] = json!(sign("wrong", b"x"))
            });
            assert_eq!(app.handle(bad).await.status().as_u16(), 401);
            let sdk = aws_config_for(&moto().endpoint()).await;
            let gone =
                SqsScaleQueue::new(sqs::Client::new(&sdk), format!("{}/1/missing.fifo", moto().endpoint()));
            let failing = App::from_parts(config(), &Secret::new(SECRET), None, Arc::new(gone), "T");
            assert_eq!(failing.handle(apigw_event(&body, false, |_| {})).await.status().as_u16(), 503);
        });
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("decided") && logs.contains("refused") && logs.contains("enqueue failed"),
        "{logs}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let head_sha = v["workflow_job"]["head_sha"].as_str().unwrap();
    let hex = &signature["sha256=".len()..];
    for (what, needle) in [("secret", SECRET), ("signature", hex), ("body (head_sha)", head_sha)] {
        assert!(!logs.contains(needle), "the {what} leaked into the logs");
    }
}
