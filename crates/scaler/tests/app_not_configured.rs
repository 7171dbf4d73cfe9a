//! The scaler deployed before the GitHub App exists (`github.app_id: 0`, the stack's default):
//! it loads without a key, and every event it gets is answered with one "GitHub App not
//! configured" log line and nothing else: no error (so no retry, dead letter or alarm), an SQS
//! batch acknowledged whole. Once an id is set, the key is required again.

#[path = "scaler/common.rs"]
mod common;

use common::{fixture, sqs_event, unique};
use hangar_aws::reexports::ssm;
use hangar_aws::ssm::SsmConfigSource;
use hangar_scaler::settings::{env, Settings};
use hangar_scaler::without_app::{self, NOT_CONFIGURED};
use hangar_testsupport::fixtures_dir;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// An SSM client that is never called (the configuration comes from a file): any call would
/// fail, since nothing listens on its endpoint.
fn unused_ssm() -> SsmConfigSource {
    let conf = ssm::Config::builder()
        .behavior_version(ssm::config::BehaviorVersion::latest())
        .region(ssm::config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    SsmConfigSource::new(ssm::Client::from_conf(conf))
}

fn config_file(dir: &std::path::Path, app_id: u64) -> std::path::PathBuf {
    let path = dir.join(format!("{}.yaml", unique("config")));
    std::fs::write(
        &path,
        format!(
            "organization: octo-org\ngithub:\n  app_id: {app_id}\npools:\n  - name: default\n    labels: [self-hosted]\n    instance_types: [m7g.large]\n    subnets: [subnet-0a]\n    max_runners: 2\n"
        ),
    )
    .unwrap();
    path
}

/// One test, because the settings come from process-wide environment variables.
#[tokio::test]
async fn settings_without_an_app_id_load_without_a_key_and_with_one_require_it() {
    let dir = std::env::temp_dir().join(unique("hangar-app-not-configured"));
    std::fs::create_dir_all(&dir).unwrap();
    for v in [
        env::APP_KEY_PARAMETER,
        env::APP_KEY_FILE,
        env::GITHUB_APP_ID,
        env::CONFIG_PARAMETER,
        env::LEDGER_TABLE,
    ] {
        std::env::remove_var(v);
    }
    std::env::set_var(env::QUEUE_URL, "http://127.0.0.1:9/queue.fifo");
    std::env::set_var(env::CONFIG_FILE, config_file(&dir, 0));

    // Every plan counts the ledger's jobs: without its table the scaler does not start.
    let e = Settings::load(&unused_ssm()).await.unwrap_err();
    assert!(e.to_string().contains("HANGAR_LEDGER_TABLE"), "{e}");
    std::env::set_var(env::LEDGER_TABLE, "hangar-jobs");

    // app_id 0 and no key anywhere: not configured, not an error.
    let s = Settings::load(&unused_ssm()).await.expect("app_id 0 is a state, not an error");
    assert!(!s.app_configured());
    assert!(s.app_key.is_none());

    // The stack's GitHubAppId "0" overrides nothing.
    std::env::set_var(env::GITHUB_APP_ID, "0");
    assert!(!Settings::load(&unused_ssm()).await.unwrap().app_configured());

    // An id set (here by the stack's variable) and still no key: the error it always was.
    std::env::set_var(env::GITHUB_APP_ID, "4242");
    let e = Settings::load(&unused_ssm()).await.unwrap_err();
    assert!(e.to_string().contains("HANGAR_GITHUB_APP_KEY"), "{e}");

    // Id and key: configured, with the stack's id over the config's 0.
    std::env::set_var(env::APP_KEY_FILE, fixtures_dir().join("keys/test-only-github-app.private-key.pem"));
    let s = Settings::load(&unused_ssm()).await.unwrap();
    assert!(s.app_configured());
    assert_eq!(s.config.github.app_id, 4242);

    std::env::set_var(env::GITHUB_APP_ID, "not-a-number");
    assert!(Settings::load(&unused_ssm()).await.is_err());

    for v in [env::APP_KEY_FILE, env::GITHUB_APP_ID, env::CONFIG_FILE, env::QUEUE_URL] {
        std::env::remove_var(v);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Collects what the handler logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

#[test]
fn every_event_gets_one_not_configured_line_and_no_error() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let reconcile = without_app::handle(&fixture("scheduled-event.json")).expect("a reconcile is no error");
    assert_eq!(reconcile, json!({ "github_app": "not configured" }));
    let log = out.take();
    assert_eq!(log.matches(NOT_CONFIGURED).count(), 1, "one line per reconcile:\n{log}");
    assert_eq!(log.lines().count(), 1, "and nothing else:\n{log}");
    assert!(NOT_CONFIGURED.starts_with("GitHub App not configured"));

    // A batch (jobs queued through an organisation webhook before the App exists) is
    // acknowledged whole: failing it would only land it in the dead-letter queue.
    let batch = sqs_event(&[("m-1", r#"{"kind":"scale_up"}"#.into(), 1), ("m-2", "not json".into(), 1)]);
    let resp = without_app::handle(&batch).expect("a batch is no error");
    assert_eq!(resp, json!({ "batchItemFailures": [] }));
    assert_eq!(out.take().matches(NOT_CONFIGURED).count(), 1);

    let mut state = fixture("ec2-state-change-terminated.json");
    state["detail"]["state"] = json!("terminated");
    assert!(without_app::handle(&state).is_ok());
    assert!(without_app::handle(&fixture("ec2-spot-interruption-warning.json")).is_ok());
    assert_eq!(out.take().matches(NOT_CONFIGURED).count(), 2);

    // What is no scaler event at all is still refused, as the configured scaler refuses it.
    let e = without_app::handle(&json!({ "hello": "world" })).unwrap_err();
    assert_eq!(e.kind, "UnknownEvent");
    assert!(!e.retryable);
}
