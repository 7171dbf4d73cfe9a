//! `hangar explain` as an operator runs it: the real binary, real files.

use hangar_core::signature::sign;
use hangar_testsupport::{fixtures_dir, workspace_root};
use serde_json::Value;
use std::process::Command;

fn hangar(args: &[&str]) -> (i32, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_hangar")).args(args).current_dir(workspace_root()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn explains_the_readme_example() {
    let (code, out, err) = hangar(&[
        "explain",
        "--config",
        "fixtures/config/examples.yaml",
        "--payload",
        "fixtures/octokit/workflow_job/06-queued.json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["action"], "ignore");
    assert_eq!(v["pool"], "k8s");
    assert!(v["reason"].as_str().unwrap().contains("public"), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 4, "exactly status, action, pool, reason: {v}");
}

#[test]
fn checks_the_signature_when_given_one() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let payload = fixtures_dir().join("octokit/workflow_job/06-queued.json");
    let good = sign("s3cret", &std::fs::read(&payload).unwrap());
    let args = |sig: &str| {
        vec![
            "explain".to_owned(),
            "--config".into(),
            "fixtures/config/examples.yaml".into(),
            "--payload".into(),
            payload.to_string_lossy().into_owned(),
            "--secret-file".into(),
            secret.to_string_lossy().into_owned(),
            "--signature".into(),
            sig.to_owned(),
        ]
    };
    let run = |sig: &str| {
        let a = args(sig);
        hangar(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, out, _) = run(&good);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((code, v["status"].as_u64()), (0, Some(200)));
    let (code, out, _) = run(&sign("other", b"x"));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((code, v["status"].as_u64(), v["action"].as_str()), (0, Some(401), Some("reject")));
}

#[test]
fn unreadable_input_is_a_clear_error_and_exit_2() {
    let (code, out, err) = hangar(&["explain", "--config", "nope.yaml", "--payload", "x.json"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("nope.yaml"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "organization: o\npools: []\n").unwrap();
    let (code, _, err) = hangar(&[
        "explain",
        "--config",
        bad.to_str().unwrap(),
        "--payload",
        "fixtures/octokit/ping/00-ping.json",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("pools"), "{err}");
    let (code, _, err) = hangar(&["explain", "--config", "fixtures/config/examples.yaml"]);
    assert_eq!(code, 2, "missing --payload is a usage error: {err}");
}

#[test]
fn malformed_payload_is_explained_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("trunc.json");
    std::fs::write(&p, "{\"action\": \"queued\", \"workflow_job\": {").unwrap();
    let (code, out, _) =
        hangar(&["explain", "--config", "fixtures/config/examples.yaml", "--payload", p.to_str().unwrap()]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((code, v["status"].as_u64(), v["action"].as_str()), (0, Some(400), Some("reject")));
}
