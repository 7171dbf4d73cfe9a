//! Shared by the webhook's test binaries.
#![allow(dead_code)]

use base64::Engine;
use hangar_aws::reexports::sqs;
use hangar_aws::sqs::SqsScaleQueue;
use hangar_core::config::Config;
use hangar_core::secret::Secret;
pub use hangar_core::signature::sign;
use hangar_testsupport::{aws_config_for, fixtures_dir, moto, octokit_examples};
use hangar_webhook::App;
use serde_json::{json, Value};
use std::sync::Arc;

pub const SECRET: &str = "webhook-secret-9f8e7d6c5b4a";

pub fn config() -> Config {
    let mut c =
        Config::from_yaml(&std::fs::read_to_string(fixtures_dir().join("config/examples.yaml")).unwrap())
            .unwrap();
    c.pools[0].allow_public_repositories = true;
    c
}

pub fn queued_body() -> String {
    octokit_examples("workflow_job").into_iter().find(|(f, _)| f == "06-queued.json").unwrap().1
}

/// An API Gateway v2 event carrying `body`, as API Gateway would hand it to the function.
pub fn apigw_event(body: &str, base64: bool, edit: impl FnOnce(&mut Value)) -> lambda_http::Request {
    let mut ev: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("apigw/http-api-v2-github-webhook.json")).unwrap(),
    )
    .unwrap();
    ev["headers"]["x-hub-signature-256"] = json!(sign(SECRET, body.as_bytes()));
    ev["headers"]["content-length"] = json!(body.len().to_string());
    if base64 {
        ev["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
        ev["isBase64Encoded"] = json!(true);
    } else {
        ev["body"] = json!(body);
    }
    edit(&mut ev);
    lambda_http::request::from_str(&ev.to_string()).expect("a valid API Gateway v2 event")
}

pub async fn fifo_queue(client: &sqs::Client, name: &str) -> String {
    client
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(sqs::types::QueueAttributeName::FifoQueue, "true")
        .attributes(sqs::types::QueueAttributeName::ContentBasedDeduplication, "false")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

pub async fn drain(client: &sqs::Client, url: &str) -> Vec<sqs::types::Message> {
    let mut all = vec![];
    for _ in 0..3 {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .message_system_attribute_names(sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let msgs = out.messages.unwrap_or_default();
        for m in &msgs {
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        all.extend(msgs);
    }
    all
}

pub async fn app_with_queue(queue_name: &str) -> (App, sqs::Client, String) {
    let sdk = aws_config_for(&moto().endpoint()).await;
    let client = sqs::Client::new(&sdk);
    let url = fifo_queue(&client, queue_name).await;
    let queue = SqsScaleQueue::new(client.clone(), url.clone());
    let app = App::from_parts(config(), &Secret::new(SECRET), None, Arc::new(queue), "HangarTest");
    (app, client, url)
}

pub async fn body_json(resp: lambda_http::Response<lambda_http::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let v: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
    (status, v)
}
