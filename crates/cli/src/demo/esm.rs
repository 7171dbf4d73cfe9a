//! What Lambda's SQS event source mappings and the EventBridge schedule do in AWS: poll a queue,
//! hand batches of up to 10 messages to the function in the SQS event shape, delete what
//! succeeded, leave `batchItemFailures` to reappear after the visibility timeout (see
//! [`deletable`]), and send the scaler a `Scheduled Event` every reconcile period.
//! - A FIFO queue (its name ends in `.fifo`: the scale queue): one batch per message group at a
//!   time, in order; after a failed message, the rest of its group stays too.
//! - A standard queue (the provisioning queue): no groups, any number of batches in flight up to
//!   the mapping's concurrency, and exactly the failed messages stay.

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EsmStats {
    pub batches: u64,
    pub messages: u64,
    pub deleted: u64,
    pub item_failures: u64,
    pub failed_invocations: u64,
    pub reconciles: u64,
    pub failed_reconciles: u64,
    pub ec2_events: u64,
}

pub struct Invoker {
    http: reqwest::Client,
    url: String,
    pub inflight: AtomicUsize,
    /// The function's reserved concurrency: one permit per execution environment. An
    /// invocation waits for one before it is handed over, as Lambda queues an asynchronous
    /// event (or its event source mapping backs off) while every execution is busy, so the
    /// time an invocation runs is counted from when an environment takes it, not from when it
    /// was sent (`cargo lambda watch` would queue it and count its wait against the timeout).
    slots: Arc<Semaphore>,
    /// The function's timeout: a failed invocation that ran this long timed out.
    function_timeout: Duration,
    /// Invocations that failed after running for the function's timeout. Unlike Lambda,
    /// `cargo lambda watch` does not end the handler, which may go on working while its batch
    /// is redelivered; the report counts these so a run shows whether that happened. (Ending the
    /// processes instead leaves `cargo lambda watch` handing later invocations to the dead
    /// ones' polls.)
    pub timeouts: AtomicU64,
}

impl Invoker {
    /// `base` is the `cargo lambda watch` address; the function is `_` (the one function it
    /// serves with `--only-lambda-apis`). `function_timeout` is the `--timeout` it was given;
    /// `concurrency`, its execution environments.
    pub fn new(base: &str, function_timeout: Duration, concurrency: usize) -> anyhow::Result<Self> {
        Ok(Invoker {
            http: reqwest::Client::builder().timeout(function_timeout + Duration::from_secs(5)).build()?,
            url: format!("{base}/2015-03-31/functions/_/invocations"),
            inflight: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            function_timeout,
            timeouts: AtomicU64::new(0),
        })
    }

    /// One synchronous invocation, once an execution environment is free; `Err` for a function
    /// error, a timeout or a dead runtime.
    pub async fn invoke(&self, payload: &Value) -> Result<Value, String> {
        let slot = self.slot().await?;
        self.invoke_in(slot, payload).await
    }

    /// A free execution environment, held until the invocation handed to it ends. The event
    /// source mapping takes one before it receives a batch, as Lambda's poller scales with the
    /// function's free concurrency, so messages are not made invisible while they wait.
    pub async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        Arc::clone(&self.slots).acquire_owned().await.map_err(|e| format!("invoke: {e}"))
    }

    /// [`Invoker::invoke`] in an environment already taken ([`Invoker::slot`]).
    pub async fn invoke_in(
        &self,
        _slot: tokio::sync::OwnedSemaphorePermit,
        payload: &Value,
    ) -> Result<Value, String> {
        let started = std::time::Instant::now();
        let out = self.invoke_once(payload).await;
        if out.is_err() && started.elapsed() >= self.function_timeout {
            self.timeouts.fetch_add(1, Ordering::SeqCst);
        }
        out
    }

    async fn invoke_once(&self, payload: &Value) -> Result<Value, String> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let res = self.http.post(&self.url).json(payload).send().await;
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        let resp = res.map_err(|e| format!("invoke: {e}"))?;
        let status = resp.status();
        let function_error = resp.headers().contains_key("x-amz-function-error");
        let body = resp.bytes().await.map_err(|e| format!("invoke body: {e}"))?;
        let v: Value =
            if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
        if !status.is_success() || function_error || v.get("errorType").is_some() {
            let msg = v.get("errorMessage").and_then(Value::as_str).unwrap_or("");
            return Err(format!("function error (HTTP {}): {msg}", status.as_u16()));
        }
        Ok(v)
    }
}

pub struct Esm {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub invoker: Arc<Invoker>,
    pub batch_concurrency: usize,
    /// How long a message that failed (or sat behind a failed one) stays invisible.
    pub visibility_timeout: i32,
    /// How long a received message stays invisible while its batch runs: longer than an
    /// invocation may take, as AWS requires of a Lambda's queue. With less, a slow batch's
    /// messages reappear mid-invocation, are received again under new receipt handles, and
    /// the batch's deletes no longer match them.
    pub inflight_visibility: i32,
    pub stats: Mutex<EsmStats>,
    /// A FIFO queue: message groups, one batch per group in flight, order kept.
    fifo: bool,
    /// FIFO: the message groups of the batches in flight.
    groups: Mutex<HashSet<String>>,
    /// Batches handed to the function and not finished yet.
    in_flight: AtomicUsize,
}

impl Esm {
    /// A mapping on the queue at `queue_url`; a FIFO queue if its name ends in `.fifo` (SQS
    /// requires that of FIFO queues, and only of them).
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: String,
        invoker: Arc<Invoker>,
        batch_concurrency: usize,
        visibility_timeout: i32,
        inflight_visibility: i32,
    ) -> Self {
        Esm {
            fifo: queue_url.ends_with(".fifo"),
            sqs,
            queue_url,
            invoker,
            batch_concurrency: batch_concurrency.max(1),
            visibility_timeout,
            inflight_visibility: inflight_visibility.max(visibility_timeout),
            stats: Mutex::new(EsmStats::default()),
            groups: Mutex::new(HashSet::new()),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Batches handed to the function and not finished yet.
    pub fn batches_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> EsmStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn bump(&self, f: impl FnOnce(&mut EsmStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn queue_arn(&self) -> String {
        let name = self.queue_url.rsplit('/').next().unwrap_or("queue");
        format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
    }

    fn record(&self, m: &Message) -> Value {
        let mut attrs = serde_json::Map::new();
        if let Some(a) = m.attributes() {
            for (k, v) in a {
                attrs.insert(k.as_str().to_owned(), Value::String(v.clone()));
            }
        }
        json!({
            "messageId": m.message_id().unwrap_or_default(),
            "receiptHandle": m.receipt_handle().unwrap_or_default(),
            "body": m.body().unwrap_or_default(),
            "attributes": attrs,
            "messageAttributes": {},
            "md5OfBody": m.md5_of_body().unwrap_or_default(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn(),
            "awsRegion": REGION,
        })
    }

    fn group_of(m: &Message) -> String {
        m.attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned()
            .unwrap_or_default()
    }

    /// Polls until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.batch_concurrency));
        loop {
            if *stop.borrow() {
                return;
            }
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
            let slot = tokio::select! {
                s = self.invoker.slot() => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
                _ = stop.changed() => return,
            };
            let recv = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(self.inflight_visibility)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send();
            let out = tokio::select! {
                r = recv => r,
                _ = stop.changed() => return,
            };
            let msgs = match out {
                Ok(o) => o.messages().to_vec(),
                Err(e) => {
                    tracing::warn!(error = ?e, "esm: ReceiveMessage failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if msgs.is_empty() {
                continue;
            }
            // One batch per message group in flight, as Lambda does for FIFO queues; moto
            // should not hand out a busy group, this makes sure. A standard queue has no
            // groups: every batch received goes, up to the mapping's concurrency (the permits).
            let (mine, busy): (Vec<Message>, Vec<Message>) = if self.fifo {
                let mut g = self.groups.lock().unwrap_or_else(|e| e.into_inner());
                let batch_groups: HashSet<String> = msgs.iter().map(Self::group_of).collect();
                let free: HashSet<String> =
                    batch_groups.iter().filter(|x| !g.contains(*x)).cloned().collect();
                g.extend(free.iter().cloned());
                msgs.into_iter().partition(|m| free.contains(&Self::group_of(m)))
            } else {
                (msgs, Vec::new())
            };
            self.set_visibility(&busy.iter().collect::<Vec<_>>(), 0).await;
            if mine.is_empty() {
                continue;
            }
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                me.handle_batch(slot, mine).await;
                drop(permit);
            });
        }
    }

    /// Messages whose work was not done reappear after the (short, demo) visibility timeout
    /// rather than the in-flight one.
    async fn retry_later(&self, msgs: &[&Message]) {
        self.set_visibility(msgs, self.visibility_timeout).await;
    }

    async fn set_visibility(&self, msgs: &[&Message], secs: i32) {
        for m in msgs {
            if let Some(h) = m.receipt_handle() {
                let _ = self
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(h)
                    .visibility_timeout(secs)
                    .send()
                    .await;
            }
        }
    }

    async fn handle_batch(&self, slot: tokio::sync::OwnedSemaphorePermit, msgs: Vec<Message>) {
        let groups: HashSet<String> = msgs.iter().map(Self::group_of).collect();
        let event = json!({ "Records": msgs.iter().map(|m| self.record(m)).collect::<Vec<_>>() });
        self.bump(|s| {
            s.batches += 1;
            s.messages += msgs.len() as u64;
        });
        let result = self.invoker.invoke_in(slot, &event).await;
        let to_delete: Vec<&Message> = match &result {
            Err(e) => {
                tracing::info!(error = %e, messages = msgs.len(), "esm: batch failed; messages reappear after the visibility timeout");
                self.bump(|s| s.failed_invocations += 1);
                self.retry_later(&msgs.iter().collect::<Vec<_>>()).await;
                Vec::new()
            }
            Ok(v) => {
                let failed: HashSet<String> = v
                    .get("batchItemFailures")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| {
                                f.get("itemIdentifier").and_then(Value::as_str).map(str::to_owned)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.bump(|s| s.item_failures += failed.len() as u64);
                let batch: Vec<(&str, String)> =
                    msgs.iter().map(|m| (m.message_id().unwrap_or_default(), Self::group_of(m))).collect();
                let batch: Vec<(&str, &str)> = batch.iter().map(|(id, g)| (*id, g.as_str())).collect();
                let delete = deletable(self.fifo, &batch, &failed);
                let (mut keep, mut retry) = (Vec::new(), Vec::new());
                for (m, d) in msgs.iter().zip(delete) {
                    if d {
                        keep.push(m);
                    } else {
                        retry.push(m);
                    }
                }
                self.retry_later(&retry).await;
                keep
            }
        };
        if !to_delete.is_empty() {
            let entries: Vec<DeleteMessageBatchRequestEntry> = to_delete
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .ok()
                })
                .collect();
            match self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(o) => {
                    let n = o.successful().len() as u64;
                    self.bump(|s| s.deleted += n);
                }
                Err(e) => tracing::warn!(error = ?e, "esm: DeleteMessageBatch failed"),
            }
        }
        if self.fifo {
            let mut g = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            for x in groups {
                g.remove(&x);
            }
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which messages of a batch the mapping deletes, in the batch's order (`true`: delete), once
/// the function has answered with `failed`, the ids of its `batchItemFailures`; the others
/// reappear after the visibility timeout. `batch` is each message's (id, message group).
///
/// With `ReportBatchItemFailures`, Lambda makes "only the failed messages visible again"
/// (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html, "Implementing
/// partial batch responses"): on a standard queue, every message not reported is deleted, and
/// exactly the reported ones stay. For a FIFO queue the same page asks the function to stop at
/// its first failure and report it with everything after it, to keep the queue's order; the
/// emulator holds any function to that: after a failed message, nothing later in its message
/// group is deleted, reported or not.
pub fn deletable(fifo: bool, batch: &[(&str, &str)], failed: &HashSet<String>) -> Vec<bool> {
    let mut blocked: HashSet<&str> = HashSet::new();
    batch
        .iter()
        .map(|&(id, group)| {
            if failed.contains(id) {
                if fifo {
                    blocked.insert(group);
                }
                false
            } else {
                !blocked.contains(group)
            }
        })
        .collect()
}

/// Whether any of `mappings` has batches in flight or its queue holds messages (visible or in
/// flight), asking them in order and stopping at the first that has.
pub async fn any_busy(mappings: &[&Esm]) -> bool {
    for m in mappings {
        if m.batches_in_flight() > 0
            || super::stack::queue_depth(&m.sqs, &m.queue_url).await.unwrap_or(u64::MAX) > 0
        {
            return true;
        }
    }
    false
}

/// An EventBridge `Scheduled Event`, as the reconcile rule sends it.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": REGION,
        "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/hangar-demo-reconcile")],
        "detail": {}
    })
}

/// An `EC2 Instance State-change Notification`, as the template's EventBridge rule forwards it.
pub fn state_change_event(instance_id: &str, state: &str) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": REGION,
        "resources": [format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}")],
        "detail": { "instance-id": instance_id, "state": state }
    })
}

/// Sends the reconcile schedule every `period` until `stop`; a reconcile still running when the
/// next is due is not overlapped (the next one supersedes it anyway).
pub async fn schedule(esm: Arc<Esm>, period: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        esm.bump(|s| s.reconciles += 1);
        if let Err(e) = esm.invoker.invoke(&scheduled_event()).await {
            tracing::info!(error = %e, "esm: reconcile invocation failed");
            esm.bump(|s| s.failed_reconciles += 1);
        }
    }
}

/// Forwards EC2 state changes seen in moto to the scaler as EventBridge would, asynchronously
/// and at most once per instance: only `terminated`, the one state the stack's rule matches
/// (`infra/template.yaml`, `ScalerInstanceStateChange`: `detail.state: [terminated]`).
pub async fn ec2_events(
    esm: Arc<Esm>,
    mut obs: watch::Receiver<Arc<hangar_sim::instances::Observation>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::select! {
            r = obs.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let snapshot = obs.borrow_and_update().clone();
        for i in &snapshot.instances {
            if i.state != "terminated" {
                continue;
            }
            if last.get(&i.id) == Some(&i.state) {
                continue;
            }
            last.insert(i.id.clone(), i.state.clone());
            let ev = state_change_event(&i.id, &i.state);
            let me = Arc::clone(&esm);
            me.bump(|s| s.ec2_events += 1);
            tokio::spawn(async move {
                if let Err(e) = me.invoker.invoke(&ev).await {
                    tracing::debug!(error = %e, "esm: EC2 event invocation failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::deletable;
    use std::collections::HashSet;

    fn failed(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    // (id, group): two groups interleaved, as a FIFO batch may hold them.
    const BATCH: [(&str, &str); 5] = [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b"), ("a3", "a")];

    #[test]
    fn a_standard_queue_keeps_exactly_the_reported_failures() {
        assert_eq!(deletable(false, &BATCH, &failed(&["a1"])), [false, true, true, true, true]);
        assert_eq!(deletable(false, &BATCH, &failed(&["b1", "a3"])), [true, false, true, true, false]);
        // Groups mean nothing on a standard queue (its messages have none: all "").
        let plain = [("m1", ""), ("m2", ""), ("m3", "")];
        assert_eq!(deletable(false, &plain, &failed(&["m1"])), [false, true, true]);
    }

    #[test]
    fn a_fifo_queue_keeps_the_rest_of_a_failed_messages_group() {
        // a1 failed: a2 and a3 stay though reported as done; group b is not held up.
        assert_eq!(deletable(true, &BATCH, &failed(&["a1"])), [false, true, false, true, false]);
        // b2 failed: only what follows it in b (nothing); a's messages go.
        assert_eq!(deletable(true, &BATCH, &failed(&["b2"])), [true, true, true, false, true]);
        // Messages before the failure in its group go.
        assert_eq!(deletable(true, &BATCH, &failed(&["a2"])), [true, true, false, true, false]);
    }

    #[test]
    fn no_failures_deletes_everything_on_either_kind() {
        for fifo in [false, true] {
            assert_eq!(deletable(fifo, &BATCH, &failed(&[])), [true; 5]);
        }
    }
}
