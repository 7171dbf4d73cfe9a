//! The provisioner: JIT configs for launched instances, from the standard provisioning queue.
//!
//! On the counting path with a provisioning queue (`HANGAR_PROVISION_QUEUE_URL`), a pool's
//! batch issues one CreateFleet for its shortfall and sends one [`Provision`] message per
//! launched instance ([`Scaler::send_provisions`]); it never waits on GitHub, so GitHub's rate
//! limits never hold the pool's FIFO group and a completion is planned at once. The provisioner
//! function (the same binary, on its own SQS event source) makes each instance's JIT config,
//! concurrently, while the instances boot ([`Scaler::provision_batch`]).
//!
//! Failure is bounded and needs nothing special, because the job ledger still counts every
//! queued job: whatever happens to an instance here, the pool's next plan sees the shortfall.
//! - A failure a retry can mend (throttling, a 5xx, a rate-limit wait longer than the
//!   invocation has left) is reported as a batch item failure, and SQS redelivers the message
//!   after its visibility timeout, up to [`MAX_PROVISION_RECEIVES`] receives.
//! - Past that, or on a failure no retry mends, the instance is terminated at once; its state
//!   change ticks the pool, whose plan launches again.
//! - A message that is lost (or dead-lettered) leaves an instance with no config, which
//!   reconcile terminates at the pool's boot timeout.
//! - Every wait is bounded by the invocation's deadline, so no invocation times out: what is
//!   left goes back to the queue.

use crate::messages::{Inbound, Item, Provision};
use crate::Scaler;
use futures::stream::{self, StreamExt};
use hangar_core::config::PoolConfig;
use hangar_core::metrics::{names, MetricRecord};
use hangar_core::ports::{LaunchedInstance, PortError};
use std::time::Duration;
use tokio::time::Instant;

/// Receives of one provisioning message before its instance is given up on: the stack's
/// `ProvisionQueue` redrive `maxReceiveCount`, so the give-up (terminate at once) comes on the
/// last receive, before SQS would move the message to the dead-letter queue. With the stack's
/// 180 s visibility timeout that spans about six minutes, within a runner's JIT deadline.
pub const MAX_PROVISION_RECEIVES: u32 = 3;

/// Left of the invocation for answering: the batch response must reach Lambda before the
/// deadline, or every message of the batch is retried and the invocation counts as timed out.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1500);

/// Provisioning messages handled at once in one invocation: one SQS batch (10).
const PROVISION_CONCURRENCY: usize = 10;

/// Time left of an invocation, from the `lambda-runtime-deadline-ms` Lambda sends. A deadline
/// that is not in the future at the start of an invocation never comes from Lambda; `cargo
/// lambda watch` (the local runtime) sends a fixed `600000`, i.e. 1970. Then `fallback` (the
/// function's timeout, `HANGAR_FUNCTION_TIMEOUT_SECS`) is used, or no bound at all.
pub fn time_left(
    deadline: std::time::SystemTime,
    now: std::time::SystemTime,
    fallback: Option<Duration>,
) -> Option<Duration> {
    match deadline.duration_since(now) {
        Ok(left) if !left.is_zero() => Some(left),
        _ => fallback,
    }
}

impl Scaler {
    /// Sends one provisioning message per launched instance; returns the instances whose message
    /// could not be sent, with why. IAM: `sqs:SendMessage` on the provisioning queue.
    pub(crate) async fn send_provisions(
        &self,
        queue: &dyn hangar_core::ports::ProvisionQueue,
        pool: &PoolConfig,
        work: &[(LaunchedInstance, Option<Provision>)],
    ) -> Vec<(LaunchedInstance, PortError)> {
        let bodies: Vec<String> =
            work.iter().filter_map(|(_, p)| p.as_ref().map(Provision::to_json)).collect();
        let sent: Vec<&LaunchedInstance> = work.iter().filter(|(_, p)| p.is_some()).map(|(i, _)| i).collect();
        let failed = queue.send(&bodies).await;
        if !failed.is_empty() {
            tracing::warn!(pool = %pool.name, failed = failed.len(), "provisioning messages not sent");
        }
        failed.into_iter().filter_map(|(i, e)| sent.get(i).map(|inst| ((*inst).clone(), e))).collect()
    }

    /// Handles a batch's provisioning messages; returns the ids of those to redeliver. A message
    /// is acknowledged once its instance has its config, or has been given up on (terminated).
    /// IAM: `ssm:PutParameter`, `ssm:AddTagsToResource`, `ec2:TerminateInstances`; GitHub
    /// "Self-hosted runners: write".
    pub(crate) async fn provision_batch(&self, items: Vec<Item>, deadline: Option<Instant>) -> Vec<String> {
        let results: Vec<Option<String>> = stream::iter(items)
            .map(|item| async move {
                let Inbound::Provision(p) = &item.inbound else { return None };
                let pool = self.p.config.pool(&p.pool)?;
                let redeliver = self.provision_one(pool, p, item.receive_count, deadline).await;
                redeliver.then_some(item.message_id)
            })
            .buffer_unordered(PROVISION_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().flatten().collect()
    }

    /// `true`: redeliver the message.
    async fn provision_one(
        &self,
        pool: &PoolConfig,
        p: &Provision,
        receive_count: u32,
        deadline: Option<Instant>,
    ) -> bool {
        let inst = LaunchedInstance {
            id: p.instance.clone(),
            capacity_type: p.capacity_type,
            instance_type: p.instance_type.clone(),
            subnet: None,
        };
        let repo = p.repository.as_ref().map(|(r, i)| (r, *i));
        let work = self.provision(pool, &inst, repo);
        let result = match deadline {
            None => work.await,
            Some(d) => {
                let budget = d.saturating_duration_since(Instant::now()).saturating_sub(DEADLINE_MARGIN);
                // Dropping the call mid-wait is safe: a rate-limit or backoff wait holds no
                // request. Should it land after GitHub made the runner, the redelivery gets a
                // 409, the instance never gets its config, and reconcile reaps it at the boot
                // timeout (the ledger still counts the job).
                tokio::time::timeout(budget, work).await.unwrap_or_else(|_| {
                    Err(PortError::retryable(
                        "scaler:provision",
                        Some("DeadlineExceeded".into()),
                        "the invocation's deadline came first",
                    ))
                })
            }
        };
        let now = self.p.clock.now();
        match result {
            Ok(()) => {
                let delay = (now - p.launched_at).num_milliseconds().max(0) as f64;
                self.p
                    .metrics
                    .emit(&[MetricRecord::millis(names::PROVISION_DELAY_MS, Some(&pool.name), delay)], now);
                false
            }
            Err(e) if e.retryable && receive_count < MAX_PROVISION_RECEIVES => {
                tracing::info!(pool = %pool.name, instance = %p.instance, receive_count, code = e.code.as_deref().unwrap_or(""), "no JIT config yet; the message comes back");
                true
            }
            Err(e) => {
                tracing::warn!(pool = %pool.name, instance = %p.instance, receive_count, code = e.code.as_deref().unwrap_or(""), error = %e, "no JIT config; terminating the new instance");
                let m = MetricRecord::count(names::PROVISION_FAILURES, Some(&pool.name), 1.0)
                    .with("ErrorCode", e.code.clone().unwrap_or_else(|| "Error".into()));
                self.p.metrics.emit(&[m], now);
                if let Err(t) = self.p.fleet.terminate(std::slice::from_ref(&p.instance)).await {
                    tracing::warn!(instance = %p.instance, code = t.code.as_deref().unwrap_or(""), "could not terminate the unprovisioned instance; reconcile's boot timeout will");
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn time_left_trusts_a_future_deadline_and_falls_back_on_a_past_one() {
        let now = UNIX_EPOCH + Duration::from_secs(1_796_329_161);
        let fallback = Some(Duration::from_secs(30));
        assert_eq!(time_left(now + Duration::from_secs(12), now, fallback), Some(Duration::from_secs(12)));
        assert_eq!(time_left(now + Duration::from_secs(12), now, None), Some(Duration::from_secs(12)));
        // cargo lambda watch's `lambda-runtime-deadline-ms: 600000`.
        let watch = UNIX_EPOCH + Duration::from_millis(600_000);
        assert_eq!(time_left(watch, now, fallback), fallback);
        assert_eq!(time_left(watch, now, None), None);
        assert_eq!(time_left(now, now, fallback), fallback, "no time at all at the start is no deadline");
    }
}
