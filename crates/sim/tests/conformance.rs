//! Conformance: the simulator's REST responses against the pinned `@octokit/openapi`
//! description, and its `workflow_job` webhooks against `@octokit/webhooks-schemas`, with the
//! `jsonschema` validator. Negative tests show a schema mismatch fails.

mod github_support;

use github_support::*;
use hangar_sim::github::{GithubSim, JobSpec};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The REST operations Hangar uses: (OpenAPI path, method).
const OPERATIONS: &[(&str, &str)] = &[
    ("/app/installations/{installation_id}/access_tokens", "post"),
    ("/orgs/{org}/installation", "get"),
    ("/repos/{owner}/{repo}/installation", "get"),
    ("/orgs/{org}/actions/runner-groups", "get"),
    ("/orgs/{org}/actions/runners/generate-jitconfig", "post"),
    ("/repos/{owner}/{repo}/actions/runners/generate-jitconfig", "post"),
    ("/orgs/{org}/actions/runners", "get"),
    ("/repos/{owner}/{repo}/actions/runners", "get"),
    ("/orgs/{org}/actions/runners/{runner_id}", "get"),
    ("/orgs/{org}/actions/runners/{runner_id}", "delete"),
    ("/repos/{owner}/{repo}/actions/runners/{runner_id}", "get"),
    ("/repos/{owner}/{repo}/actions/jobs/{job_id}", "get"),
    ("/repos/{owner}/{repo}/actions/jobs/{job_id}/rerun", "post"),
];

struct Spec {
    /// (path, method, status) -> JSON Schema of the response body (`None`: no body).
    responses: HashMap<(String, String, u16), Option<Value>>,
    basic_error: Value,
}

/// OpenAPI 3.0 `nullable: true` -> JSON Schema `null` in the type (or an `anyOf` with null).
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(to_json_schema).collect()),
        Value::Object(m) => {
            let mut out: Map<String, Value> = m.iter().map(|(k, v)| (k.clone(), to_json_schema(v))).collect();
            if out.get("nullable") == Some(&Value::Bool(true)) {
                out.remove("nullable");
                match out.get("type").cloned() {
                    Some(Value::String(t)) => {
                        out.insert("type".into(), json!([t, "null"]));
                        if let Some(Value::Array(e)) = out.get_mut("enum") {
                            e.push(Value::Null);
                        }
                    }
                    _ => return json!({ "anyOf": [Value::Object(out), { "type": "null" }] }),
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The 73 MB description, parsed once per test binary and reduced to what is used.
fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = hangar_testsupport::npm_package_dir("@octokit/openapi")
            .join("generated/api.github.com.deref.json");
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc: Value = serde_json::from_slice(&text).expect("OpenAPI JSON");
        let mut responses = HashMap::new();
        for (p, m) in OPERATIONS {
            let op = &doc["paths"][p][m];
            assert!(op.is_object(), "{m} {p} is not in the OpenAPI description");
            for (status, resp) in op["responses"].as_object().unwrap() {
                let schema = resp["content"]["application/json"]["schema"].clone();
                let schema = (!schema.is_null()).then(|| to_json_schema(&schema));
                responses.insert((p.to_string(), m.to_string(), status.parse().unwrap()), schema);
            }
        }
        // The dereferenced file inlines components; GitHub's `basic-error` is the 404 body.
        let basic_error = to_json_schema(
            &doc["paths"][OPERATIONS[0].0]["post"]["responses"]["404"]["content"]["application/json"]
                ["schema"],
        );
        assert!(basic_error.is_object());
        Spec { responses, basic_error }
    })
}

fn errors(schema: &Value, instance: &Value) -> Vec<String> {
    let v = jsonschema::validator_for(schema).expect("valid schema");
    v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// Validates one response; statuses the description does not list (401, rate limits) are
/// checked against GitHub's `basic-error`. Returns whether the status is documented.
fn check(path: &str, method: &str, r: &Reply) -> bool {
    let key = (path.to_owned(), method.to_owned(), r.status);
    let documented = spec().responses.contains_key(&key);
    let schema = match spec().responses.get(&key) {
        Some(Some(s)) => s,
        Some(None) => {
            assert!(r.body.is_null(), "{method} {path} {}: the description has no body", r.status);
            return true;
        }
        None => &spec().basic_error,
    };
    let errs = errors(schema, &r.body);
    assert!(
        errs.is_empty(),
        "{method} {path} {} does not match the description: {errs:#?}\n{:#}",
        r.status,
        r.body
    );
    if r.status < 400 {
        assert!(r.headers.contains_key("x-ratelimit-remaining"), "{method} {path}: rate-limit headers");
    }
    documented
}

#[tokio::test]
async fn rest_responses_match_the_openapi_description() {
    let s = GithubSim::start(config()).await.unwrap();
    let b = s.base_url();
    let jwt = good_jwt(&s);
    let tok = format!("{b}/app/installations/1/access_tokens");
    let r = call(Method::POST, &tok, Some(&jwt), None).await;
    assert!(check(OPERATIONS[0].0, "post", &r) && r.status == 201);
    let t = r.body["token"].as_str().unwrap().to_owned();
    let r = call(Method::POST, &format!("{b}/app/installations/77/access_tokens"), Some(&jwt), None).await;
    assert!(check(OPERATIONS[0].0, "post", &r) && r.status == 404);
    let r = call(Method::POST, &tok, Some("bad"), None).await;
    assert!(check(OPERATIONS[0].0, "post", &r) && r.status == 401);

    let r = call(Method::GET, &format!("{b}/orgs/octo-org/installation"), Some(&jwt), None).await;
    assert!(check(OPERATIONS[1].0, "get", &r) && r.status == 200);
    let r = call(Method::GET, &format!("{b}/repos/octo-org/app/installation"), Some(&jwt), None).await;
    assert!(check(OPERATIONS[2].0, "get", &r) && r.status == 200);
    let r = call(Method::GET, &format!("{b}/repos/nope/app/installation"), Some(&jwt), None).await;
    assert!(check(OPERATIONS[2].0, "get", &r) && r.status == 404);
    let r = call(Method::GET, &format!("{b}/orgs/octo-org/actions/runner-groups"), Some(&t), None).await;
    assert!(check(OPERATIONS[3].0, "get", &r) && r.status == 200);

    let jit_org = OPERATIONS[4].0;
    let r = jit(&s, &t, "conf-1", &["gpu"], 2).await;
    assert!(check(jit_org, "post", &r) && r.status == 201);
    let r1 = r.body["runner"]["id"].as_u64().unwrap();
    let enc = r.body["encoded_jit_config"].as_str().unwrap().to_owned();
    let r = jit(&s, &t, "conf-1", &["gpu"], 2).await;
    assert!(check(jit_org, "post", &r) && r.status == 409);
    let r = jit(&s, &t, "conf-2", &["gpu"], 99).await;
    assert!(check(jit_org, "post", &r) && r.status == 422);
    let body = json!({ "name": "x", "runner_group_id": 1, "labels": ["x"] });
    let r = call(
        Method::POST,
        &format!("{b}/orgs/nope/actions/runners/generate-jitconfig"),
        Some(&t),
        Some(body.clone()),
    )
    .await;
    assert!(check(jit_org, "post", &r) && r.status == 404);
    let r = call(
        Method::POST,
        &format!("{b}/repos/octo-org/app/actions/runners/generate-jitconfig"),
        Some(&t),
        Some(body),
    )
    .await;
    assert!(check(OPERATIONS[5].0, "post", &r) && r.status == 201);
    let repo_runner = r.body["runner"]["id"].as_u64().unwrap();

    // A busy runner and a queued, a running and a completed job.
    let running = s.enqueue_job(JobSpec::new("octo-org/app", &["gpu"]).duration_ms(60_000)).unwrap();
    s.register_runner(&enc).unwrap();
    let queued = s.enqueue_job(JobSpec::new("octo-org/app", &["nothing-has-this"])).unwrap();
    let done = s.enqueue_job(JobSpec::new("octo-org/app", &["self-hosted"]).duration_ms(0)).unwrap();
    let r = jit(&s, &t, "conf-3", &["z"], 1).await;
    s.register_runner(r.body["encoded_jit_config"].as_str().unwrap()).unwrap();
    eventually("job completes", || s.job(done.id).unwrap().conclusion.is_some()).await;
    assert_eq!(jit(&s, &t, "conf-offline", &["z"], 1).await.status, 201);

    let r = call(Method::GET, &format!("{b}/orgs/octo-org/actions/runners?per_page=1"), Some(&t), None).await;
    assert!(check(OPERATIONS[6].0, "get", &r) && r.status == 200);
    assert!(r.headers.get("link").unwrap().to_str().unwrap().contains("rel=\"next\""));
    let r = call(Method::GET, &format!("{b}/orgs/octo-org/actions/runners"), Some(&t), None).await;
    assert!(
        check(OPERATIONS[6].0, "get", &r)
            && r.body["runners"].as_array().unwrap().iter().any(|x| x["busy"] == true)
    );
    let r = call(Method::GET, &format!("{b}/repos/octo-org/app/actions/runners"), Some(&t), None).await;
    assert!(check(OPERATIONS[7].0, "get", &r) && r.body["total_count"] == 1);
    let r = call(Method::GET, &format!("{b}/orgs/octo-org/actions/runners/{r1}"), Some(&t), None).await;
    assert!(check(OPERATIONS[8].0, "get", &r) && r.status == 200);
    let r = call(Method::DELETE, &format!("{b}/orgs/octo-org/actions/runners/{r1}"), Some(&t), None).await;
    assert!(check(OPERATIONS[9].0, "delete", &r) && r.status == 422, "busy runner");
    let r =
        call(Method::GET, &format!("{b}/repos/octo-org/app/actions/runners/{repo_runner}"), Some(&t), None)
            .await;
    assert!(check(OPERATIONS[10].0, "get", &r) && r.status == 200);

    for j in [&running, &queued, &done] {
        let r =
            call(Method::GET, &format!("{b}/repos/octo-org/app/actions/jobs/{}", j.id), Some(&t), None).await;
        assert!(check(OPERATIONS[11].0, "get", &r) && r.status == 200);
    }
    let rerun = OPERATIONS[12].0;
    let r =
        call(Method::POST, &format!("{b}/repos/octo-org/app/actions/jobs/{}/rerun", done.id), Some(&t), None)
            .await;
    assert!(check(rerun, "post", &r) && r.status == 201);
    let r = call(
        Method::POST,
        &format!("{b}/repos/octo-org/app/actions/jobs/{}/rerun", running.id),
        Some(&t),
        None,
    )
    .await;
    assert!(check(rerun, "post", &r) && r.status == 403);

    // Limits answer with GitHub's error shape too.
    s.exhaust_rate_limit(None, std::time::Duration::from_secs(60));
    let r = jit(&s, &t, "conf-4", &["z"], 1).await;
    assert!(r.status == 403 && !check(jit_org, "post", &r), "403 is not listed for generate-jitconfig");
    let r = call(Method::DELETE, &format!("{b}/orgs/octo-org/actions/runners/{repo_runner}"), Some(&t), None)
        .await;
    assert_eq!(r.status, 403);
    check(OPERATIONS[9].0, "delete", &r);
}

#[tokio::test]
async fn a_response_that_breaks_the_description_fails() {
    let s = GithubSim::start(config()).await.unwrap();
    let t = token(&s).await;
    let good = jit(&s, &t, "neg", &["x"], 1).await;
    let schema = spec().responses[&(OPERATIONS[4].0.to_owned(), "post".to_owned(), 201)].clone().unwrap();
    assert!(errors(&schema, &good.body).is_empty());

    let mut busy_text = good.body.clone();
    busy_text["runner"]["busy"] = json!("no");
    assert!(!errors(&schema, &busy_text).is_empty(), "wrong type");
    let mut no_config = good.body.clone();
    no_config.as_object_mut().unwrap().remove("encoded_jit_config");
    assert!(!errors(&schema, &no_config).is_empty(), "missing required field");

    let job = s.enqueue_job(JobSpec::new("octo-org/app", &["x"])).unwrap();
    let r = call(
        Method::GET,
        &format!("{}/repos/octo-org/app/actions/jobs/{}", s.base_url(), job.id),
        Some(&t),
        None,
    )
    .await;
    let job_schema = spec().responses[&(OPERATIONS[11].0.to_owned(), "get".to_owned(), 200)].clone().unwrap();
    assert!(errors(&job_schema, &r.body).is_empty());
    let mut bad = r.body.clone();
    bad["conclusion"] = json!("exploded");
    assert!(!errors(&job_schema, &bad).is_empty(), "nullable enum keeps its values");
    let mut null_id = r.body.clone();
    null_id["id"] = Value::Null;
    assert!(!errors(&job_schema, &null_id).is_empty(), "non-nullable stays non-nullable");
}

/// The `workflow_job` event of one action, from `@octokit/webhooks-schemas`.
fn webhook_schema(action: &str) -> Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        let p = hangar_testsupport::npm_package_dir("@octokit/webhooks-schemas").join("schema.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap()).expect("schema.json")
    });
    let name = format!("workflow_job${action}");
    assert!(doc["definitions"].get(&name).is_some(), "{name} not in the schema");
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": doc["definitions"],
        "allOf": [{ "$ref": format!("#/definitions/{name}") }],
    })
}

#[tokio::test]
async fn workflow_job_webhooks_match_the_published_schema() {
    let s = GithubSim::start(config()).await.unwrap();
    let t = token(&s).await;
    let ok = s.enqueue_job(JobSpec::new("octo-org/app", &["a"]).duration_ms(0)).unwrap();
    runner(&s, &t, "w1", &["a"]).await;
    let lost = s.enqueue_job(JobSpec::new("octo-org/app", &["b"]).duration_ms(60_000)).unwrap();
    let r = runner(&s, &t, "w2", &["b"]).await;
    s.kill_runner(r).unwrap();
    let mut cancelled = JobSpec::new("octo-org/app", &["c"]).duration_ms(0);
    cancelled.conclusion = "cancelled".into();
    let c = s.enqueue_job(cancelled).unwrap();
    runner(&s, &t, "w3", &["c"]).await;
    eventually("jobs complete", || {
        [ok.id, lost.id, c.id].iter().all(|id| s.job(*id).unwrap().conclusion.is_some())
    })
    .await;

    let deliveries = s.deliveries();
    let mut seen = HashMap::<String, usize>::new();
    for d in &deliveries {
        let body: Value = serde_json::from_str(&s.delivery_body(d.id).unwrap()).unwrap();
        let errs = errors(&webhook_schema(&d.action), &body);
        assert!(errs.is_empty(), "{} delivery {} does not match: {errs:#?}", d.action, d.id);
        *seen.entry(d.action.clone()).or_default() += 1;
    }
    assert_eq!(seen.get("queued"), Some(&3), "{seen:?}");
    assert_eq!(seen.get("in_progress"), Some(&3), "{seen:?}");
    assert_eq!(seen.get("completed"), Some(&3), "{seen:?}");

    // Negative: the same payloads, broken, fail.
    let completed = deliveries.iter().find(|d| d.action == "completed").unwrap();
    let good: Value = serde_json::from_str(&s.delivery_body(completed.id).unwrap()).unwrap();
    let schema = webhook_schema("completed");
    let mut no_attempt = good.clone();
    no_attempt["workflow_job"].as_object_mut().unwrap().remove("run_attempt");
    assert!(!errors(&schema, &no_attempt).is_empty(), "missing required field");
    let mut extra = good.clone();
    extra["surprise"] = json!(1);
    assert!(!errors(&schema, &extra).is_empty(), "unknown top-level property");
    let mut null_conclusion = good.clone();
    null_conclusion["workflow_job"]["conclusion"] = Value::Null;
    assert!(!errors(&schema, &null_conclusion).is_empty(), "a completed job has a conclusion");
    assert!(!errors(&webhook_schema("queued"), &good).is_empty(), "a completed payload is not a queued one");
}
