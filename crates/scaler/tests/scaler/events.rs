//! Event detection on the documented payloads, and what the handler answers to the rest.

use crate::common::{fixture, sqs_event, Env, Options};
use hangar_core::ids::InstanceId;
use hangar_scaler::event::{detect, EventError, ScalerEvent, SqsRecord};
use hangar_scaler::ScalerError;
use lambda_runtime::Diagnostic;
use serde_json::json;

#[test]
fn documented_payloads_are_recognised() {
    let sqs = detect(&fixture("sqs-fifo-batch.json")).unwrap();
    assert_eq!(
        sqs,
        ScalerEvent::Sqs(vec![SqsRecord {
            message_id: "11d6ee51-4cc7-4302-9e22-7cd8afdaadf5".into(),
            body: "{}".into(),
            receive_count: 1,
        }])
    );
    assert_eq!(detect(&fixture("scheduled-event.json")).unwrap(), ScalerEvent::Schedule);
    assert_eq!(
        detect(&fixture("ec2-spot-interruption-warning.json")).unwrap(),
        ScalerEvent::SpotInterruption { instance: InstanceId::from("i-1234567890abcdef0") }
    );
    assert_eq!(
        detect(&fixture("ec2-state-change-terminated.json")).unwrap(),
        ScalerEvent::StateChange {
            instance: InstanceId::from("i-1234567890abcdef0"),
            state: "terminated".into()
        }
    );
    let batch = sqs_event(&[("a", "x".into(), 3), ("b", "y".into(), 1)]);
    let ScalerEvent::Sqs(records) = detect(&batch).unwrap() else { panic!("an SQS batch") };
    assert_eq!(records.iter().map(|r| r.receive_count).collect::<Vec<_>>(), [3, 1]);
}

#[test]
fn anything_else_is_refused_by_name() {
    let mut sns = fixture("sqs-fifo-batch.json");
    sns["Records"][0]["eventSource"] = json!("aws:sns");
    assert!(matches!(detect(&sns), Err(EventError::Unknown(_))));

    let mut other = fixture("scheduled-event.json");
    other["detail-type"] = json!("Object Created");
    other["source"] = json!("aws.s3");
    let err = detect(&other).unwrap_err();
    assert!(matches!(err, EventError::Unknown(ref m) if m.contains("Object Created")), "{err}");

    for junk in [json!({}), json!([1, 2]), json!("Records"), json!({"hello": "world"})] {
        assert!(matches!(detect(&junk), Err(EventError::Unknown(_))), "{junk}");
    }

    let mut bad_id = fixture("ec2-spot-interruption-warning.json");
    bad_id["detail"]["instance-id"] = json!("i-../../etc");
    assert!(matches!(detect(&bad_id), Err(EventError::Malformed { .. })));
    let mut no_state = fixture("ec2-state-change-terminated.json");
    no_state["detail"].as_object_mut().unwrap().remove("state");
    assert!(matches!(detect(&no_state), Err(EventError::Malformed { .. })));
    let mut no_id = fixture("sqs-fifo-batch.json");
    no_id["Records"][0].as_object_mut().unwrap().remove("messageId");
    assert!(matches!(detect(&no_id), Err(EventError::Malformed { .. })));
}

#[test]
fn lambda_error_types_say_whether_a_retry_can_help() {
    let d: Diagnostic = ScalerError::retryable("Aws", "ec2:CreateFleet failed").into();
    assert_eq!(d.error_type, "Hangar.Retryable.Aws");
    assert!(d.error_message.ends_with("(retryable: true)"), "{}", d.error_message);
    let d: Diagnostic = ScalerError::permanent("UnknownEvent", "nope").into();
    assert_eq!(d.error_type, "Hangar.Permanent.UnknownEvent");
    assert!(d.error_message.ends_with("(retryable: false)"));
}

#[tokio::test]
async fn unknown_events_fail_permanently_and_empty_batches_do_nothing() {
    let env = Env::start(Options::default()).await;
    let mut other = fixture("scheduled-event.json");
    other["source"] = json!("aws.codecommit");
    let err = env.scaler.handle(other).await.unwrap_err();
    assert_eq!((err.kind, err.retryable), ("UnknownEvent", false));

    let resp = env.handle(json!({ "Records": [] })).await;
    assert_eq!(resp, json!({ "batchItemFailures": [] }));
    assert_eq!(env.aws_calls(), 0, "{:?}", env.proxy.counts());
    assert_eq!(env.sim.counters().total, 0);
}
