//! Three scaler environments at once against one pool: a batch and two reconcile schedules.
//! The schedule never launches (it queues a reconcile tick into the pool's FIFO group), so
//! however they interleave, the pool stays within `max_runners`.

use crate::common::{fixture, scale_up, sqs_event, Env, Options};
use hangar_scaler::Tick;

#[tokio::test]
async fn a_batch_and_reconcile_at_once_never_exceed_max_runners() {
    let env = Env::start(Options { max_runners: 4, warm: 3, ..Options::default() }).await;
    let p = env.pool_name();
    let (other, _) = env.second_scaler().await;
    let (third, _) = env.second_scaler().await;
    // Slow launches: every invocation has described the pool before any launch lands, which is
    // the interleaving that takes a pool past its cap if two of them may launch.
    env.proxy.inject(hangar_sim::fault_proxy::Fault::latency(
        "CreateFleet",
        std::time::Duration::from_millis(400),
    ));
    for round in 0..3u64 {
        let records: Vec<(String, String, u32)> =
            (0..6).map(|k| (format!("m-{round}-{k}"), scale_up(&p, 1000 + round * 10 + k), 1)).collect();
        let refs: Vec<(&str, String, u32)> =
            records.iter().map(|(a, b, c)| (a.as_str(), b.clone(), *c)).collect();
        let (batch, rec_a, rec_b) = tokio::join!(
            env.scaler.handle(sqs_event(&refs)),
            other.handle(fixture("scheduled-event.json")),
            third.handle(fixture("scheduled-event.json")),
        );
        batch.expect("batch handled");
        rec_a.expect("reconcile");
        rec_b.expect("reconcile");
        let live = env.live().await.len();
        assert!(live <= 4, "round {round}: {live} instances for max_runners 4");

        // The ticks the schedules queued run as batches for the pool after the first one; the
        // jobs the full pool had no room for wait in the ledger, not in the queue.
        let queued = env.drain_queue().await;
        assert!(!queued.is_empty(), "round {round}: the schedules ticked the pool");
        for (id, body, n) in &queued {
            assert!(
                matches!(Tick::parse(body), Some((ref q, true)) if *q == p),
                "only reconcile ticks: {body}"
            );
            env.batch(&[(id.as_str(), body.clone(), *n)]).await;
        }
        let live = env.live().await.len();
        assert!(live <= 4, "round {round}, after the ticks: {live}");
        // The next minute: the schedule's ticks are one per pool per minute (deduplicated).
        env.sim.advance_clock(std::time::Duration::from_secs(60));
    }
    assert_eq!(env.live().await.len(), 4, "the pool did fill up to its cap");
    assert_eq!(env.proxy.count("RunInstances"), 0);
}
