//! The webhook decision on GitHub's own example payloads and on hostile input.

use hangar_core::config::Config;
use hangar_core::decision::{Action, Decider, Decision, WebhookRequest, DEFAULT_MAX_BODY_BYTES};
use hangar_core::message::QueueMessage;
use hangar_core::secret::Secret;
use hangar_core::signature::{sign, WebhookSecrets};
use hangar_testsupport::{fixtures_dir, octokit_examples};
use serde_json::{json, Value};

const SECRET: &str = "test-webhook-secret";
const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

fn examples_config() -> Config {
    Config::from_yaml(&std::fs::read_to_string(fixtures_dir().join("config/examples.yaml")).unwrap()).unwrap()
}

fn decider_for(config: Config) -> Decider {
    Decider::new(config, WebhookSecrets::new(&[Secret::new(SECRET)]), DEFAULT_MAX_BODY_BYTES)
}

fn signed<'a>(event: &'a str, body: &'a [u8], sig: &'a str) -> WebhookRequest<'a> {
    WebhookRequest {
        method: "POST",
        content_type: vec!["application/json"],
        event: vec![event],
        delivery: vec![DELIVERY],
        signature_256: vec![sig],
        has_sha1_signature: false,
        body,
    }
}

fn decide_body(d: &Decider, event: &str, body: &[u8]) -> Decision {
    let sig = sign(SECRET, body);
    d.decide(&signed(event, body, &sig))
}

/// A config whose organisation is the example's, so each example is judged on labels and policy.
fn config_for_org(org: &str, allow_public: bool) -> Config {
    let mut c = examples_config();
    c.organization = org.to_owned();
    for p in &mut c.pools {
        p.allow_public_repositories = allow_public;
    }
    c
}

fn org_of(v: &Value) -> String {
    v["organization"]["login"].as_str().or(v["repository"]["owner"]["login"].as_str()).unwrap().to_owned()
}

fn example(name: &str) -> String {
    octokit_examples("workflow_job").into_iter().find(|(f, _)| f == name).unwrap().1
}

type Outcome = (u16, Action, Option<&'static str>);

#[test]
fn every_github_workflow_job_example_is_parsed_and_routed() {
    let examples = octokit_examples("workflow_job");
    assert_eq!(examples.len(), 8, "the pinned webhooks-examples package has 8 workflow_job examples");
    // (file, decision with public repositories refused, decision with them allowed)
    let ignore: Outcome = (200, Action::Ignore, None);
    let expected: &[(&str, Outcome, Outcome)] = &[
        ("00-in_progress.json", (202, Action::Enqueue, Some("gpu")), (202, Action::Enqueue, Some("gpu"))),
        ("01-completed.json", ignore, ignore),
        ("02-completed.json", ignore, ignore),
        ("03-in_progress.json", ignore, ignore),
        ("04-in_progress.json", ignore, ignore),
        ("05-queued.json", ignore, ignore),
        ("06-queued.json", (200, Action::Ignore, Some("k8s")), (202, Action::Enqueue, Some("k8s"))),
        ("07-waiting.json", ignore, ignore),
    ];
    for ((file, body), (want_file, strict, open)) in examples.iter().zip(expected) {
        assert_eq!(file, want_file);
        let v: Value = serde_json::from_str(body).unwrap();
        for (allow_public, (status, action, pool)) in [(false, strict), (true, open)] {
            let d = decide_body(
                &decider_for(config_for_org(&org_of(&v), allow_public)),
                "workflow_job",
                body.as_bytes(),
            );
            assert_eq!(
                (d.status, d.action, d.pool.as_ref().map(|p| p.as_str())),
                (*status, *action, *pool),
                "{file} allow_public={allow_public}: {}",
                d.reason
            );
            assert_eq!(d.job_id.map(|j| j.0), v["workflow_job"]["id"].as_u64(), "{file}");
            assert_eq!(d.message.is_some(), d.action == Action::Enqueue, "{file}");
        }
    }
}

#[test]
fn queued_example_becomes_a_scale_request_with_every_field() {
    let body = example("06-queued.json");
    let d = decide_body(&decider_for(config_for_org("lineville", true)), "workflow_job", body.as_bytes());
    let Some(QueueMessage::ScaleUp(job)) = &d.message else { panic!("{d:?}") };
    assert_eq!(job.pool.as_str(), "k8s");
    assert_eq!(job.repository.as_str(), "lineville/elastic-machines-testing");
    assert_eq!(job.installation_id.map(|i| i.0), Some(23154469));
    assert_eq!(job.labels, vec!["self-hosted", "k8s"]);
    assert_eq!(job.delivery_id.as_ref().map(|x| x.as_str()), Some(DELIVERY));
    let m = d.message.as_ref().unwrap();
    assert_eq!(m.group_id(), "k8s");
    assert_eq!(m.dedup_id(), format!("{}-1-queued", job.job_id));
    assert_eq!(QueueMessage::parse(&m.to_json()).unwrap(), *m, "round-trips through the queue");
    assert_eq!(d.metrics.iter().map(|m| m.name).collect::<Vec<_>>(), ["JobsQueued"]);
    // A copy an older scaler put back on the queue at the cap carried `requeues`: it reads as
    // the same job, with the same deduplication id (the ledger makes a second copy a no-op).
    let mut old: Value = serde_json::from_str(&m.to_json()).unwrap();
    old["requeues"] = json!(3);
    let back = QueueMessage::parse(&old.to_string()).unwrap();
    assert_eq!(back, *m);
    assert_eq!(back.dedup_id(), m.dedup_id());
}

#[test]
fn public_repositories_are_refused_by_default_and_say_why() {
    let body = example("06-queued.json");
    let d = decide_body(&decider_for(config_for_org("lineville", false)), "workflow_job", body.as_bytes());
    assert!(d.reason.contains("public"), "{}", d.reason);
    assert!(d.message.is_none());
}

#[test]
fn in_progress_emits_queue_wait_and_completed_emits_duration() {
    let body = example("00-in_progress.json");
    let d = decide_body(&decider_for(config_for_org("octo-org", false)), "workflow_job", body.as_bytes());
    // GitHub's own in_progress example has no created_at, so no queue wait can be computed.
    let names: Vec<_> = d.metrics.iter().map(|m| m.name).collect();
    assert_eq!(names, ["JobsStarted"]);
    let mut v: Value = serde_json::from_str(&body).unwrap();
    v["workflow_job"]["created_at"] = json!("2021-06-15T19:22:20Z");
    let with_created = v.to_string();
    let d =
        decide_body(&decider_for(config_for_org("octo-org", false)), "workflow_job", with_created.as_bytes());
    let wait: Vec<_> = d.metrics.iter().map(|m| (m.name, m.value)).collect();
    assert_eq!(wait, [("JobsStarted", 1.0), ("QueueWaitMs", 7000.0)]);
    v["action"] = json!("completed");
    v["workflow_job"]["status"] = json!("completed");
    v["workflow_job"]["conclusion"] = json!("success");
    v["workflow_job"]["completed_at"] = json!("2021-06-15T19:23:01Z");
    let body = v.to_string();
    let d = decide_body(&decider_for(config_for_org("octo-org", false)), "workflow_job", body.as_bytes());
    let names: Vec<_> = d.metrics.iter().map(|m| m.name).collect();
    assert_eq!(names, ["JobsCompleted", "JobDurationMs"]);
    assert!(matches!(d.message, Some(QueueMessage::JobCompleted(_))));
}

#[test]
fn our_runner_name_routes_state_events_to_its_pool_even_without_matching_labels() {
    let mut v: Value = serde_json::from_str(&example("03-in_progress.json")).unwrap();
    v["workflow_job"]["runner_name"] = json!("hangar-k8s-i-0123456789abcdef0");
    let d = decide_body(
        &decider_for(config_for_org("Codertocat", false)),
        "workflow_job",
        v.to_string().as_bytes(),
    );
    assert_eq!(
        (d.status, d.action, d.pool.as_ref().map(|p| p.as_str())),
        (202, Action::Enqueue, Some("k8s"))
    );
}

#[test]
fn ping_examples_get_200() {
    for (file, body) in octokit_examples("ping") {
        let d = decide_body(&decider_for(examples_config()), "ping", body.as_bytes());
        assert_eq!((d.status, d.action), (200, Action::Ignore), "{file}");
    }
}

/// Hostile and malformed bodies: each row changes a valid, correctly signed `queued` delivery and
/// names the status it must get. Only a 202 enqueue may carry a queue message.
#[test]
fn hostile_bodies_table() {
    let base = example("06-queued.json");
    let d = decider_for(config_for_org("lineville", true));
    let base_v: Value = serde_json::from_str(&base).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base_v.clone();
        f(&mut v);
        v.to_string()
    };
    let raw_job = |job_id: &str| base.replacen(&base_v["workflow_job"]["id"].to_string(), job_id, 1);
    let many_labels: Vec<String> = (0..150).map(|i| format!("label-{i}")).collect();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let remove = |path: &'static [&'static str]| {
        with(&move |v: &mut Value| {
            let mut at = v;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at.as_object_mut().unwrap().remove(path[path.len() - 1]);
        })
    };

    let cases: Vec<(&str, String, u16)> = vec![
        ("valid", base.clone(), 202),
        ("truncated body", base[..base.len() / 2].to_owned(), 400),
        ("empty body", String::new(), 400),
        ("json array", "[]".into(), 400),
        ("json null", "null".into(), 400),
        ("10,000-deep nesting", deep, 400),
        ("form-encoded payload", format!("payload={}", base_v), 400),
        (
            "150 labels parse and route nowhere",
            with(&|v| v["workflow_job"]["labels"] = json!(many_labels)),
            200,
        ),
        ("300 labels refused", with(&|v| v["workflow_job"]["labels"] = json!(vec!["x"; 300])), 400),
        (
            "label over 1 KiB",
            with(&|v| v["workflow_job"]["labels"] = json!(["self-hosted", "k".repeat(2000)])),
            400,
        ),
        (
            "unicode labels",
            with(&|v| v["workflow_job"]["labels"] = json!(["self-hosted", "k8s", "日本語", "🚀"])),
            200,
        ),
        (
            "upper-case labels still match",
            with(&|v| v["workflow_job"]["labels"] = json!(["SELF-HOSTED", "K8S"])),
            202,
        ),
        ("job id 1e30", raw_job("1e30"), 400),
        ("job id 2^64", raw_job("18446744073709551616"), 400),
        ("job id negative", raw_job("-5"), 400),
        ("job id as string", with(&|v| v["workflow_job"]["id"] = json!("123")), 400),
        ("job id u64::MAX accepted", raw_job("18446744073709551615"), 202),
        ("null labels", with(&|v| v["workflow_job"]["labels"] = Value::Null), 400),
        ("null repository", with(&|v| v["repository"] = Value::Null), 400),
        ("null installation is fine", with(&|v| v["installation"] = Value::Null), 202),
        ("missing workflow_job", remove(&["workflow_job"]), 400),
        ("missing created_at is tolerated", remove(&["workflow_job", "created_at"]), 202),
        ("missing run_id", remove(&["workflow_job", "run_id"]), 400),
        ("missing repository.private", remove(&["repository", "private"]), 400),
        ("unparseable date", with(&|v| v["workflow_job"]["created_at"] = json!("yesterday")), 400),
        ("unknown action", with(&|v| v["action"] = json!("teleported")), 202),
        ("private flag as string", with(&|v| v["repository"]["private"] = json!("false")), 400),
        ("foreign organisation", with(&|v| v["organization"] = json!({"login": "evil-org"})), 200),
        ("duplicate key is refused, not last-wins", base.replacen('{', "{\"action\":\"completed\",", 1), 400),
    ];
    for (name, body, want) in &cases {
        let dec = decide_body(&d, "workflow_job", body.as_bytes());
        assert_eq!(dec.status, *want, "{name}: {}", dec.reason);
        assert_eq!(dec.message.is_some(), dec.action == Action::Enqueue, "{name}");
        if dec.status >= 400 {
            assert_eq!(dec.action, Action::Reject, "{name}");
            assert!(!dec.reason.is_empty(), "{name}");
        }
    }
    // Over the size limit: refused before the HMAC is computed.
    let big = vec![b' '; DEFAULT_MAX_BODY_BYTES + 1];
    let dec = decide_body(&d, "workflow_job", &big);
    assert_eq!((dec.status, dec.action), (413, Action::Reject));
}

#[derive(Clone)]
struct HeaderCase {
    name: &'static str,
    method: &'static str,
    content_type: Vec<&'static str>,
    event: Vec<&'static str>,
    signatures: Vec<String>,
    sha1: bool,
    want: u16,
}

/// Hostile headers on a valid body.
#[test]
fn hostile_headers_table() {
    let base = example("06-queued.json");
    let body = base.as_bytes();
    let d = decider_for(config_for_org("lineville", true));
    let good = sign(SECRET, body);
    let ok = HeaderCase {
        name: "valid",
        method: "POST",
        content_type: vec!["application/json"],
        event: vec!["workflow_job"],
        signatures: vec![good.clone()],
        sha1: false,
        want: 202,
    };
    let case = |name, f: &dyn Fn(&mut HeaderCase)| {
        let mut c = ok.clone();
        c.name = name;
        f(&mut c);
        c
    };
    let cases = vec![
        case("valid", &|_| {}),
        case("no signature", &|c| {
            c.signatures.clear();
            c.want = 401
        }),
        case("only SHA-1 signature", &|c| {
            c.signatures.clear();
            c.sha1 = true;
            c.want = 401
        }),
        case("valid signature over a different body", &|c| {
            c.signatures = vec![sign(SECRET, b"{}")];
            c.want = 401
        }),
        case("signature made with another secret", &|c| {
            c.signatures = vec![sign("other", body)];
            c.want = 401
        }),
        case("SHA-1 value in the SHA-256 header", &|c| {
            c.signatures = vec!["sha1=d03207e4b030cf234e3447bac4d93add4c6643d8".into()];
            c.want = 401
        }),
        case("two signatures joined by a proxy", &|c| {
            c.signatures = vec![format!("{good},{good}")];
            c.want = 401
        }),
        case("signature header repeated", &|c| {
            c.signatures = vec![good.clone(), good.clone()];
            c.want = 401
        }),
        case("GET", &|c| {
            c.method = "GET";
            c.want = 405
        }),
        case("PUT", &|c| {
            c.method = "PUT";
            c.want = 405
        }),
        case("form content type", &|c| {
            c.content_type = vec!["application/x-www-form-urlencoded"];
            c.want = 415
        }),
        case("missing content type", &|c| {
            c.content_type.clear();
            c.want = 415
        }),
        case("content type repeated", &|c| {
            c.content_type = vec!["application/json"; 2];
            c.want = 415
        }),
        case("json with charset", &|c| c.content_type = vec!["application/json; charset=utf-8"]),
        case("missing event header", &|c| {
            c.event.clear();
            c.want = 400
        }),
        case("event header repeated", &|c| {
            c.event = vec!["workflow_job"; 2];
            c.want = 400
        }),
        case("another event", &|c| c.event = vec!["push"]),
    ];
    for c in &cases {
        let req = WebhookRequest {
            method: c.method,
            content_type: c.content_type.clone(),
            event: c.event.clone(),
            delivery: vec![DELIVERY],
            signature_256: c.signatures.iter().map(String::as_str).collect(),
            has_sha1_signature: c.sha1,
            body,
        };
        let dec = d.decide(&req);
        assert_eq!(dec.status, c.want, "{}: {}", c.name, dec.reason);
        assert_eq!(dec.message.is_some(), dec.action == Action::Enqueue, "{}", c.name);
        if c.sha1 {
            assert!(dec.reason.contains("SHA-1"), "{}", dec.reason);
        }
    }
}

#[test]
fn decision_body_is_the_documented_json() {
    let body = example("06-queued.json");
    let dec = decide_body(&decider_for(config_for_org("lineville", true)), "workflow_job", body.as_bytes());
    let v: Value = serde_json::from_str(&dec.body_json()).unwrap();
    assert_eq!(v, json!({"status": 202, "action": "enqueue", "pool": "k8s", "reason": dec.reason}));
}
