//! The messages of the scale queue that only the scaler writes and reads (the webhook's are
//! [`QueueMessage`]s; the `kind` keeps them apart), and a batch's records parsed.

use chrono::{DateTime, Utc};
use hangar_core::config::CapacityType;
use hangar_core::ids::{InstallationId, InstanceId, JobId, PoolName, RepoFullName};
use hangar_core::message::{MessageError, QueueMessage, MAX_MESSAGE_BYTES};
use hangar_core::ports::OutboundMessage;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ScalerMessage {
    /// Written by the earmark planner that the counting one replaced (a short warm pool): still
    /// read, as a tick, so that messages queued before an upgrade plan their pool instead of
    /// going to the dead-letter queue.
    WarmPoolTopUp { pool: PoolName },
    /// Plan the pool again (the counting path; see [`crate::counting`]). `reconcile`: with
    /// GitHub's runners and the stored JIT configs, judging timeouts.
    Tick {
        pool: PoolName,
        #[serde(default)]
        reconcile: bool,
        /// Which quick retry of a plan that failed this is (0: not a retry).
        #[serde(default, skip_serializing_if = "is_zero")]
        retry: u32,
    },
    /// One launched instance for the provisioner (see [`Provision`]).
    Provision {
        pool: PoolName,
        instance: InstanceId,
        capacity_type: CapacityType,
        instance_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repository: Option<RepoFullName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        installation_id: Option<InstallationId>,
        launched_at_ms: i64,
    },
    /// Written by the earmark planner (an instance died holding a queued job's earmark): read
    /// as a tick, like [`ScalerMessage::WarmPoolTopUp`]. The ledger still counts the job, so
    /// the pool's plan launches for it if it still waits.
    ReplaceDead {
        pool: PoolName,
        job: JobId,
        instance: InstanceId,
        #[serde(default)]
        displaced: bool,
        #[serde(default)]
        requeues: u32,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Only ids EC2 could have issued: the id goes into tags, dedup ids and parameter names.
fn is_instance_id(id: &InstanceId) -> bool {
    id.as_str()
        .strip_prefix("i-")
        .is_some_and(|hex| !hex.is_empty() && hex.len() <= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A scaler-written message, or `None` for anything else (and for bodies over the limit).
fn parse_scaler_message(body: &str) -> Option<Inbound> {
    if body.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    Some(match serde_json::from_str(body).ok()? {
        ScalerMessage::WarmPoolTopUp { pool } => Inbound::Tick { pool, reconcile: false, retry: 0 },
        ScalerMessage::Tick { pool, reconcile, retry } => Inbound::Tick { pool, reconcile, retry },
        ScalerMessage::Provision {
            pool,
            instance,
            capacity_type,
            instance_type,
            repository,
            installation_id,
            launched_at_ms,
        } => {
            let type_ok = !instance_type.is_empty()
                && instance_type.len() <= 64
                && instance_type.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let repo_ok = repository.as_ref().is_none_or(|r| {
                r.as_str().len() <= 200
                    && r.as_str().split('/').count() == 2
                    && r.as_str().split('/').all(|p| !p.is_empty())
                    && !r.as_str().chars().any(char::is_control)
            });
            if !is_instance_id(&instance) || !type_ok || !repo_ok {
                return None;
            }
            let launched_at = DateTime::from_timestamp_millis(launched_at_ms)?;
            Inbound::Provision(Provision {
                pool,
                instance,
                capacity_type,
                instance_type,
                repository: repository.map(|r| (r, installation_id)),
                launched_at,
            })
        }
        ScalerMessage::ReplaceDead { pool, instance, .. } => {
            if !is_instance_id(&instance) {
                return None;
            }
            Inbound::Tick { pool, reconcile: false, retry: 0 }
        }
    })
}

/// One message of a batch, parsed.
#[derive(Debug, Clone)]
pub(crate) enum Inbound {
    Queue(QueueMessage),
    Tick { pool: PoolName, reconcile: bool, retry: u32 },
    Provision(Provision),
}

/// One launched instance whose JIT config the provisioner makes while it boots (the counting
/// path with a provisioning queue; see [`crate::provisioner`]). The pool's batch sends one per
/// instance right after its CreateFleet, on the standard provisioning queue, so the pool's FIFO
/// group never waits on GitHub. IAM: `sqs:SendMessage` on the provisioning queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub pool: PoolName,
    pub instance: InstanceId,
    pub capacity_type: CapacityType,
    pub instance_type: String,
    /// A repository-scoped runner's repository, with the installation its job came from.
    pub repository: Option<(RepoFullName, Option<InstallationId>)>,
    /// When CreateFleet returned it: the provisioning delay is measured from here.
    pub launched_at: DateTime<Utc>,
}

impl Provision {
    pub fn to_json(&self) -> String {
        let (repository, installation_id) = match &self.repository {
            Some((r, i)) => (Some(r.clone()), *i),
            None => (None, None),
        };
        serde_json::to_string(&ScalerMessage::Provision {
            pool: self.pool.clone(),
            instance: self.instance.clone(),
            capacity_type: self.capacity_type,
            instance_type: self.instance_type.clone(),
            repository,
            installation_id,
            launched_at_ms: self.launched_at.timestamp_millis(),
        })
        .expect("serialises")
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) message_id: String,
    pub(crate) receive_count: u32,
    pub(crate) inbound: Inbound,
}

/// A message that asks the pool's next batch to plan it again (the counting path). The FIFO
/// group serialises it with the pool's job events, so no two plans of a pool overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    pub pool: PoolName,
    /// Plan in reconcile mode: with GitHub's runners and the stored JIT configs.
    pub reconcile: bool,
    /// Which quick retry of a plan that failed this is (0: not a retry); see
    /// [`crate::counting`].
    pub retry: u32,
    /// The FIFO deduplication id: one tick per cause (an instance's state, a reconcile
    /// minute), so EventBridge's and SQS's retries send it once.
    pub dedup_id: String,
}

impl Tick {
    pub fn to_json(&self) -> String {
        serde_json::to_string(&ScalerMessage::Tick {
            pool: self.pool.clone(),
            reconcile: self.reconcile,
            retry: self.retry,
        })
        .expect("serialises")
    }

    pub fn outbound(&self) -> OutboundMessage {
        OutboundMessage {
            body: self.to_json(),
            group_id: self.pool.to_string(),
            dedup_id: self.dedup_id.clone(),
        }
    }

    /// `None` for anything but a tick (and for bodies over the queue message limit).
    pub fn parse(body: &str) -> Option<(PoolName, bool)> {
        match parse_scaler_message(body)? {
            Inbound::Tick { pool, reconcile, .. } => Some((pool, reconcile)),
            _ => None,
        }
    }
}

pub(crate) fn parse_body(body: &str) -> Result<Inbound, MessageError> {
    match parse_scaler_message(body) {
        Some(i) => Ok(i),
        None => QueueMessage::parse(body).map(Inbound::Queue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_the_earmark_planner_queued_are_read_as_ticks_of_their_pool() {
        let legacy = [
            r#"{"kind":"warm_pool_top_up","pool":"linux"}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":42,"instance":"i-0abc","requeues":0}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":42,"instance":"i-0abc","displaced":true,"requeues":3}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":7,"instance":"i-0abc"}"#,
        ];
        for body in legacy {
            match parse_body(body) {
                Ok(Inbound::Tick { pool, reconcile: false, retry: 0 }) => assert_eq!(pool.as_str(), "linux"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn hostile_legacy_bodies_are_refused() {
        let long_id = format!("i-{}", "a".repeat(40));
        let hostile = [
            r#"{"kind":"replace_dead","pool":"linux","job":7,"instance":"i-"}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":7,"instance":"i-zz"}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":7,"instance":"../../etc"}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":7,"instance":"i-0abc\n"}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":-7,"instance":"i-0abc"}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":"7","instance":"i-0abc"}"#,
            r#"{"kind":"replace_dead","pool":"linux","instance":"i-0abc"}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":7,"instance":"i-0abc","extra":1}"#,
            r#"{"kind":"replace_dead","pool":"linux","job":7,"instance":"i-0abc","displaced":"yes"}"#,
            r#"{"kind":"warm_pool_top_up"}"#,
            r#"{"kind":"warm_pool_top_up","pool":"linux","extra":1}"#,
            r#"{"kind":"replace_dead""#,
            "",
        ];
        for body in hostile {
            assert!(parse_scaler_message(body).is_none(), "{body}");
            // Refused here means the batch reports it as failed: not a webhook message either.
            assert!(parse_body(body).is_err(), "{body}");
        }
        let long = format!(r#"{{"kind":"replace_dead","pool":"linux","job":7,"instance":"{long_id}"}}"#);
        assert!(parse_scaler_message(&long).is_none());
        let padded =
            format!(r#"{{"kind":"warm_pool_top_up","pool":"linux"}}{}"#, " ".repeat(MAX_MESSAGE_BYTES));
        assert!(parse_scaler_message(&padded).is_none(), "oversized");
    }

    fn provision() -> Provision {
        Provision {
            pool: PoolName::from("linux"),
            instance: InstanceId::from("i-0abc123def4567890"),
            capacity_type: CapacityType::Spot,
            instance_type: "m7g.large".into(),
            repository: Some((RepoFullName::from("octo-org/app"), Some(InstallationId(7)))),
            launched_at: DateTime::from_timestamp_millis(1_796_309_724_595).unwrap(),
        }
    }

    #[test]
    fn a_provisioning_message_round_trips() {
        for p in [provision(), Provision { repository: None, ..provision() }] {
            match parse_body(&p.to_json()) {
                Ok(Inbound::Provision(back)) => assert_eq!(back, p),
                other => panic!("{other:?}"),
            }
        }
        assert!(!provision().to_json().contains("installation_id\":null"), "absent, not null");
    }

    #[test]
    fn hostile_provisioning_messages_are_refused() {
        let ok = provision().to_json();
        let v: serde_json::Value = serde_json::from_str(&ok).unwrap();
        let with = |k: &str, x: serde_json::Value| {
            let mut v = v.clone();
            v[k] = x;
            v.to_string()
        };
        let without = |k: &str| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove(k);
            v.to_string()
        };
        let hostile = [
            with("instance", "i-zz".into()),
            with("instance", "../../etc/passwd".into()),
            with("instance", format!("i-{}", "a".repeat(33)).into()),
            with("instance_type", "".into()),
            with("instance_type", "m5.large\nX".into()),
            with("instance_type", "x".repeat(65).into()),
            with("repository", "octo-org".into()),
            with("repository", "octo-org/app/extra".into()),
            with("repository", "/app".into()),
            with("repository", "octo-org/a\u{0}pp".into()),
            with("repository", format!("o/{}", "a".repeat(200)).into()),
            with("capacity_type", "reserved".into()),
            with("launched_at_ms", "yesterday".into()),
            with("launched_at_ms", serde_json::json!(i64::MAX)),
            with("extra", 1.into()),
            without("pool"),
            without("instance"),
            without("launched_at_ms"),
            format!("{ok}{}", " ".repeat(MAX_MESSAGE_BYTES)),
        ];
        for body in &hostile {
            assert!(parse_scaler_message(body).is_none(), "{body:.200}");
            assert!(parse_body(body).is_err(), "not a webhook message either: {body:.200}");
        }
    }
}
