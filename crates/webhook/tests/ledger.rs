//! The webhook records each job event in the job ledger (DynamoDB on moto) as it arrives, while
//! it queues the message; a ledger it cannot write to still lets the delivery through.

mod common;

use common::*;
use hangar_aws::dynamo::{create_table, DynamoLedger};
use hangar_aws::reexports::dynamodb;
use hangar_core::ledger::{JobKey, JobLedger, JobStatus};
use hangar_testsupport::{aws_config_for, moto};
use serde_json::{json, Value};
use std::sync::Arc;

async fn ledger(table: &str, create: bool) -> DynamoLedger {
    let ddb = dynamodb::Client::new(&aws_config_for(&moto().endpoint()).await);
    if create {
        create_table(&ddb, table).await.expect("table");
    }
    DynamoLedger::new(ddb, table)
}

fn key_of(body: &str) -> JobKey {
    let v: Value = serde_json::from_str(body).unwrap();
    let job = v["workflow_job"]["id"].as_u64().unwrap();
    let attempt = v["workflow_job"]["run_attempt"].as_u64().unwrap_or(1) as u32;
    JobKey::new(hangar_core::ids::JobId(job), attempt)
}

#[tokio::test]
async fn each_job_event_is_in_the_ledger_by_the_time_its_delivery_is_answered() {
    let (app, client, url) = app_with_queue("webhook-ledger").await;
    let table = format!("webhook-ledger-{}", std::process::id());
    let app = app.with_ledger(Arc::new(ledger(&table, true).await));
    let queued = queued_body();
    let key = key_of(&queued);
    let read = ledger(&table, false).await;

    assert_eq!(app.handle(apigw_event(&queued, false, |_| {})).await.status().as_u16(), 202);
    let entry = read.get(key).await.unwrap().expect("recorded");
    assert_eq!(entry.status, JobStatus::Queued);
    assert_eq!(entry.pool.as_str(), "k8s");

    let mut v: Value = serde_json::from_str(&queued).unwrap();
    v["action"] = json!("in_progress");
    v["workflow_job"]["runner_name"] = json!("hangar-k8s-i-0abc");
    v["workflow_job"]["started_at"] = json!("2022-12-15T00:00:05Z");
    assert_eq!(app.handle(apigw_event(&v.to_string(), false, |_| {})).await.status().as_u16(), 202);
    let entry = read.get(key).await.unwrap().expect("recorded");
    assert_eq!(entry.status, JobStatus::Started);
    assert_eq!(entry.runner_name.as_ref().map(|r| r.as_str()), Some("hangar-k8s-i-0abc"));

    // A late redelivery of `queued` is queued again (the scaler decides what it means) but
    // never revives the started job.
    let resp = app
        .handle(apigw_event(&queued, false, |ev| ev["headers"]["x-github-delivery"] = json!("late")))
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(read.get(key).await.unwrap().unwrap().status, JobStatus::Started);
    assert_eq!(drain(&client, &url).await.len(), 2, "queued and started; the late copy is deduplicated");
}

#[tokio::test]
async fn a_ledger_that_cannot_be_written_still_lets_the_delivery_through() {
    let (app, client, url) = app_with_queue("webhook-ledger-missing").await;
    // A table that does not exist: every write fails (ResourceNotFoundException).
    let app = app.with_ledger(Arc::new(ledger("no-such-ledger-table", false).await));
    let (status, v) = body_json(app.handle(apigw_event(&queued_body(), false, |_| {})).await).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["action"], "enqueue");
    assert_eq!(drain(&client, &url).await.len(), 1, "the scaler gets the event and records it");
}
