//! The messages of the scale queue that only the scaler writes and reads (the webhook's are
//! [`QueueMessage`]s; the `kind` keeps them apart), and a batch's records parsed.

use hangar_core::ids::{InstanceId, JobId, PoolName};
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

/// A scaler-written message, or `None` for anything else (and for bodies over the limit).
fn parse_scaler_message(body: &str) -> Option<Inbound> {
    if body.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    Some(match serde_json::from_str(body).ok()? {
        ScalerMessage::WarmPoolTopUp { pool } => Inbound::TopUp(pool),
        ScalerMessage::Tick { pool, reconcile, retry } => Inbound::Tick { pool, reconcile, retry },
        ScalerMessage::ReplaceDead { pool, job, instance, displaced, requeues } => {
            // Only ids EC2 could have issued: the id goes into a tag and a dedup id.
            let hex = instance.as_str().strip_prefix("i-")?;
            if hex.is_empty() || hex.len() > 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
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
}
