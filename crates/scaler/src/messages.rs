//! The messages of the scale queue that only the scaler writes and reads (the webhook's are
//! [`QueueMessage`]s; the `kind` keeps them apart), and a batch's records parsed.

use chrono::{DateTime, Utc};
use hangar_core::config::CapacityType;
use hangar_core::ids::{InstallationId, InstanceId, JobId, PoolName, RepoFullName};
use hangar_core::message::{MessageError, QueueMessage, MAX_MESSAGE_BYTES};
use hangar_core::planner::DeadClaim;
use hangar_core::ports::OutboundMessage;
use serde::{Deserialize, Serialize};

/// The message reconcile puts in a pool's FIFO group when the warm pool is short. Only the
/// scaler writes and reads it; the webhook's messages are [`QueueMessage`]s, and the `kind`
/// keeps the two apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    pub pool: PoolName,
}

/// The message that asks the pool's next batch to replace an instance that died holding a
/// queued job's earmark (see [`planner`]'s module docs). The state-change handler sends it when
/// the instance goes, and reconcile as a backstop; both put it in the pool's FIFO group, behind
/// any start or completion its runner reported, so the batch sees those first. A batch sends
/// one (`displaced`) for a job whose earmark another job took while the pool was full. IAM:
/// `sqs:SendMessage` on the scale queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceDead {
    pub pool: PoolName,
    pub claim: DeadClaim,
    /// Times put back because the pool was at `max_runners`, as for a `ScaleUp`.
    pub requeues: u32,
}

impl ReplaceDead {
    pub fn to_json(&self) -> String {
        serde_json::to_string(&ScalerMessage::ReplaceDead {
            pool: self.pool.clone(),
            job: self.claim.job,
            instance: self.claim.instance.clone(),
            displaced: self.claim.displaced,
            requeues: self.requeues,
        })
        .expect("serialises")
    }

    pub fn outbound(&self) -> OutboundMessage {
        let kind = if self.claim.displaced { "displaced" } else { "replace" };
        let mut dedup_id = format!("{kind}-{}-{}", self.claim.instance, self.claim.job);
        if self.requeues > 0 {
            dedup_id.push_str(&format!("-r{}", self.requeues));
        }
        OutboundMessage { body: self.to_json(), group_id: self.pool.to_string(), dedup_id }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ScalerMessage {
    WarmPoolTopUp {
        pool: PoolName,
    },
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
    ReplaceDead {
        pool: PoolName,
        job: JobId,
        instance: InstanceId,
        // Written only when true, so a reader from before the flag still parses dead claims.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
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
        ScalerMessage::WarmPoolTopUp { pool } => Inbound::TopUp(pool),
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
        ScalerMessage::ReplaceDead { pool, job, instance, displaced, requeues } => {
            if !is_instance_id(&instance) {
                return None;
            }
            Inbound::Replace(ReplaceDead { pool, claim: DeadClaim { job, instance, displaced }, requeues })
        }
    })
}

impl TopUp {
    pub fn to_json(&self) -> String {
        serde_json::to_string(&ScalerMessage::WarmPoolTopUp { pool: self.pool.clone() }).expect("serialises")
    }

    /// `None` for anything but a top-up (and for bodies over the queue message limit).
    pub fn parse(body: &str) -> Option<Self> {
        match parse_scaler_message(body)? {
            Inbound::TopUp(pool) => Some(TopUp { pool }),
            _ => None,
        }
    }
}

/// One message of a batch, parsed.
#[derive(Debug, Clone)]
pub(crate) enum Inbound {
    Queue(QueueMessage),
    TopUp(PoolName),
    Replace(ReplaceDead),
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

    fn replace(job: u64, instance: &str) -> ReplaceDead {
        ReplaceDead {
            pool: PoolName::from("linux"),
            claim: DeadClaim { job: JobId(job), instance: InstanceId::from(instance), displaced: false },
            requeues: 0,
        }
    }

    #[test]
    fn replace_dead_round_trips_with_a_stable_dedup_id() {
        let r = replace(42, "i-0abc123def4567890");
        let out = r.outbound();
        assert_eq!(out.group_id, "linux");
        assert_eq!(out.dedup_id, "replace-i-0abc123def4567890-42");
        match parse_scaler_message(&out.body) {
            Some(Inbound::Replace(back)) => assert_eq!(back, r),
            other => panic!("{other:?}"),
        }
        let again = ReplaceDead { requeues: 3, ..r };
        assert_eq!(again.outbound().dedup_id, "replace-i-0abc123def4567890-42-r3");
        assert!(TopUp::parse(&out.body).is_none(), "a replacement is not a top-up");
    }

    #[test]
    fn a_displaced_claim_round_trips_and_never_shares_a_dead_claims_dedup_id() {
        let dead = replace(42, "i-0abc");
        let displaced =
            ReplaceDead { claim: DeadClaim { displaced: true, ..dead.claim.clone() }, ..dead.clone() };
        let out = displaced.outbound();
        assert_eq!(out.dedup_id, "displaced-i-0abc-42");
        assert_ne!(out.dedup_id, dead.outbound().dedup_id);
        match parse_scaler_message(&out.body) {
            Some(Inbound::Replace(back)) => assert_eq!(back, displaced),
            other => panic!("{other:?}"),
        }
        // A message from before the flag existed reads as a dead instance's claim.
        let old = r#"{"kind":"replace_dead","pool":"linux","job":42,"instance":"i-0abc","requeues":0}"#;
        match parse_scaler_message(old) {
            Some(Inbound::Replace(back)) => assert_eq!(back, dead),
            other => panic!("{other:?}"),
        }
        let hostile =
            r#"{"kind":"replace_dead","pool":"linux","job":42,"instance":"i-0abc","displaced":"yes"}"#;
        assert!(parse_scaler_message(hostile).is_none());
    }

    #[test]
    fn hostile_replace_dead_bodies_are_refused() {
        let ok = r#"{"kind":"replace_dead","pool":"linux","job":7,"instance":"i-0abc"}"#;
        assert!(matches!(parse_scaler_message(ok), Some(Inbound::Replace(_))), "requeues defaults to 0");
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
            r#"{"kind":"replace_dead","pool":"linux","job":7,"instance":"i-0abc","requeues":-1}"#,
            r#"{"kind":"replace_dead""#,
            "",
        ];
        for body in hostile {
            assert!(parse_scaler_message(body).is_none(), "{body}");
        }
        let long = format!(r#"{{"kind":"replace_dead","pool":"linux","job":7,"instance":"{long_id}"}}"#);
        assert!(parse_scaler_message(&long).is_none());
        let padded = format!(
            r#"{{"kind":"replace_dead","pool":"linux","job":7,"instance":"i-0abc"}}{}"#,
            " ".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(parse_scaler_message(&padded).is_none(), "oversized");
        // Refused here means the batch reports it as failed: it is not a webhook message either.
        assert!(parse_body(hostile[0]).is_err());
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
