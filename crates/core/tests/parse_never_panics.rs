//! Property tests: no input makes the parsers or the decision panic, and only a correctly
//! signed delivery can ever produce a queue message.

use hangar_core::config::Config;
use hangar_core::decision::{Decider, WebhookRequest, DEFAULT_MAX_BODY_BYTES};
use hangar_core::event::WorkflowJobEvent;
use hangar_core::message::QueueMessage;
use hangar_core::secret::Secret;
use hangar_core::signature::{sign, WebhookSecrets};
use proptest::prelude::*;

const CONFIG: &str = r#"
organization: octo-org
pools:
  - name: linux
    labels: [self-hosted, linux]
    instance_types: [m7i.large]
    subnets: [subnet-a]
    max_runners: 5
    allow_public_repositories: true
"#;

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("queued"),
            Just("in_progress"),
            Just("completed"),
            Just("2021-06-15T19:22:27Z"),
            Just("self-hosted")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("action".to_owned()),
                    Just("workflow_job".to_owned()),
                    Just("repository".to_owned()),
                    Just("id".to_owned()),
                    Just("labels".to_owned()),
                    Just("run_id".to_owned()),
                    Just("created_at".to_owned()),
                    Just("full_name".to_owned()),
                    Just("private".to_owned()),
                    Just("owner".to_owned()),
                    Just("login".to_owned()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = WorkflowJobEvent::parse(&bytes);
        let _ = QueueMessage::parse(&String::from_utf8_lossy(&bytes));
        let _ = Config::from_yaml(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_never_panics_and_unsigned_never_enqueues(v in arb_json(), sig in "[a-f0-9=sha]{0,80}") {
        let body = v.to_string();
        let _ = WorkflowJobEvent::parse(body.as_bytes());
        let d = Decider::new(
            Config::from_yaml(CONFIG).unwrap(),
            WebhookSecrets::new(&[Secret::new("s")]),
            DEFAULT_MAX_BODY_BYTES,
        );
        let req = WebhookRequest {
            method: "POST",
            content_type: vec!["application/json"],
            event: vec!["workflow_job"],
            signature_256: vec![&sig],
            body: body.as_bytes(),
            ..Default::default()
        };
        let dec = d.decide(&req);
        prop_assert!(dec.message.is_none() || sig == sign("s", body.as_bytes()));
        // Correctly signed: any outcome but a panic or a 5xx.
        let good = sign("s", body.as_bytes());
        let req = WebhookRequest { signature_256: vec![&good], ..req };
        let dec = d.decide(&req);
        prop_assert!(dec.status < 500);
    }
}
