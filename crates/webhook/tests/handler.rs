//! The webhook handler on real API Gateway HTTP API v2 events, against SQS FIFO on moto_server.

mod common;

use common::*;
use hangar_aws::reexports::sqs;
use hangar_aws::sqs::SqsScaleQueue;
use hangar_core::message::QueueMessage;
use hangar_core::secret::Secret;
use hangar_testsupport::{aws_config_for, moto, octokit_examples};
use hangar_webhook::App;
use serde_json::{json, Value};
use std::sync::Arc;

#[tokio::test]
async fn three_deliveries_of_one_job_make_exactly_one_fifo_message() {
    let (app, client, url) = app_with_queue("webhook-dedup").await;
    let body = queued_body();
    // The original delivery, GitHub's redelivery (same delivery id), and a base64-encoded copy.
    for base64 in [false, false, true] {
        let (status, v) = body_json(app.handle(apigw_event(&body, base64, |_| {})).await).await;
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["action"], "enqueue");
        assert_eq!(v["pool"], "k8s");
    }
    let msgs = drain(&client, &url).await;
    assert_eq!(msgs.len(), 1, "FIFO deduplication keeps one scale request per job");
    let m = &msgs[0];
    let parsed = QueueMessage::parse(m.body().unwrap()).unwrap();
    let QueueMessage::ScaleUp(job) = &parsed else { panic!("{parsed:?}") };
    assert_eq!(job.pool.as_str(), "k8s");
    let attrs = m.attributes().unwrap();
    assert_eq!(attrs[&sqs::types::MessageSystemAttributeName::MessageGroupId], "k8s");
    assert_eq!(
        attrs[&sqs::types::MessageSystemAttributeName::MessageDeduplicationId],
        format!("{}-1-queued", job.job_id)
    );
}

#[tokio::test]
async fn a_second_queued_with_a_new_delivery_id_is_still_one_message() {
    let (app, client, url) = app_with_queue("webhook-second-queued").await;
    let body = queued_body();
    for delivery in ["d-1", "d-2"] {
        let resp = app
            .handle(apigw_event(&body, false, |ev| ev["headers"]["x-github-delivery"] = json!(delivery)))
            .await;
        assert_eq!(resp.status().as_u16(), 202);
    }
    assert_eq!(drain(&client, &url).await.len(), 1);
}

#[tokio::test]
async fn state_events_are_enqueued_for_the_scaler() {
    let (app, client, url) = app_with_queue("webhook-states").await;
    let mut v: Value = serde_json::from_str(&queued_body()).unwrap();
    v["workflow_job"]["runner_name"] = json!("hangar-k8s-i-0abc");
    v["action"] = json!("in_progress");
    v["workflow_job"]["started_at"] = json!("2022-12-15T00:00:05Z");
    let started = v.to_string();
    v["action"] = json!("completed");
    v["workflow_job"]["conclusion"] = json!("success");
    v["workflow_job"]["completed_at"] = json!("2022-12-15T00:01:05Z");
    let completed = v.to_string();
    for b in [&started, &completed] {
        assert_eq!(app.handle(apigw_event(b, false, |_| {})).await.status().as_u16(), 202);
    }
    let kinds: Vec<String> = drain(&client, &url)
        .await
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(m.body().unwrap()).unwrap()["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["job_started", "job_completed"], "FIFO keeps the order within the pool");
}

#[tokio::test]
async fn sqs_refusing_the_send_is_a_503_not_a_silent_2xx() {
    let sdk = aws_config_for(&moto().endpoint()).await;
    let missing = format!("{}/123456789012/does-not-exist.fifo", moto().endpoint());
    let queue = SqsScaleQueue::new(sqs::Client::new(&sdk), missing);
    let app = App::from_parts(config(), &Secret::new(SECRET), None, Arc::new(queue), "HangarTest");
    let (status, v) = body_json(app.handle(apigw_event(&queued_body(), false, |_| {})).await).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["action"], "reject");
    assert!(v["reason"].as_str().unwrap().contains("could not enqueue"), "{v}");
}

#[tokio::test]
async fn api_gateway_edge_cases() {
    let (app, client, url) = app_with_queue("webhook-edges").await;
    let body = queued_body();
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit, u16)> = vec![
        ("GET", Box::new(|ev| ev["requestContext"]["http"]["method"] = json!("GET")), 405),
        (
            "repeated event header joined by API Gateway",
            Box::new(|ev| ev["headers"]["x-github-event"] = json!("workflow_job,workflow_job")),
            400,
        ),
        (
            "repeated signature joined by API Gateway",
            Box::new(|ev| {
                let s = ev["headers"]["x-hub-signature-256"].as_str().unwrap().to_owned();
                ev["headers"]["x-hub-signature-256"] = json!(format!("{s},{s}"));
            }),
            401,
        ),
        (
            "no signature",
            Box::new(|ev| {
                ev["headers"].as_object_mut().unwrap().remove("x-hub-signature-256");
            }),
            401,
        ),
        (
            "SHA-1 signature only",
            Box::new(|ev| {
                let h = ev["headers"].as_object_mut().unwrap();
                h.remove("x-hub-signature-256");
                h.insert("x-hub-signature".into(), json!("sha1=d03207e4b030cf234e3447bac4d93add4c6643d8"));
            }),
            401,
        ),
        (
            "form content type",
            Box::new(|ev| ev["headers"]["content-type"] = json!("application/x-www-form-urlencoded")),
            415,
        ),
        ("push event", Box::new(|ev| ev["headers"]["x-github-event"] = json!("push")), 202),
    ];
    for (name, edit, want) in cases {
        let (status, v) = body_json(app.handle(apigw_event(&body, false, edit)).await).await;
        assert_eq!(status, want, "{name}: {v}");
    }
    let ping = octokit_examples("ping").remove(0).1;
    let (status, v) = body_json(
        app.handle(apigw_event(&ping, true, |ev| ev["headers"]["x-github-event"] = json!("ping"))).await,
    )
    .await;
    assert_eq!((status, v["reason"].as_str()), (200, Some("pong")));
    let oversized = " ".repeat(70 * 1024);
    let (status, _) = body_json(app.handle(apigw_event(&oversized, false, |_| {})).await).await;
    assert_eq!(status, 413);
    assert!(drain(&client, &url).await.is_empty(), "nothing refused may reach the queue");
}
