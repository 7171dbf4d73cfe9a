//! `DynamoLedger` against moto_server: every order of `queued`, `in_progress` and `completed`
//! (with duplicates) gives the same outcomes and the same entries as the core's rules
//! ([`hangar_core::ledger::transition`], applied by `MemoryLedger`), plus cancels, re-runs,
//! concurrency and hostile values.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use hangar_aws::dynamo::{create_table, DynamoLedger, OPEN_INDEX};
use hangar_aws::sdk::{with_retries, RetrySettings};
use hangar_core::ids::{InstallationId, JobId, PoolName, RunId, RunnerName};
use hangar_core::ledger::{Applied, JobChange, JobEvent, JobKey, JobLedger, JobStatus, MemoryLedger};
use hangar_testsupport::moto;
use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(1);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

async fn client() -> aws_sdk_dynamodb::Client {
    let cfg = hangar_testsupport::aws_config_for(&moto().endpoint()).await;
    aws_sdk_dynamodb::Client::new(&with_retries(&cfg, &RetrySettings::fast_for_tests(3)))
}

async fn ledger() -> (DynamoLedger, aws_sdk_dynamodb::Client) {
    let c = client().await;
    let table = unique("ledger");
    create_table(&c, &table).await.expect("create table");
    (DynamoLedger::new(c.clone(), table), c)
}

fn t(s: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(1_780_000_000 + s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Queued,
    Started,
    Completed,
}

fn event(pool: &str, job: u64, attempt: u32, kind: Kind) -> JobEvent {
    let change = match kind {
        Kind::Queued => JobChange::Queued {
            created_at: t(job as i64 % 1000),
            labels: vec!["self-hosted".into(), "linux".into()],
        },
        Kind::Started => JobChange::Started {
            runner_name: Some(RunnerName::from(format!("hangar-{pool}-i-0abc{job:x}"))),
            started_at: Some(t(2000)),
        },
        Kind::Completed => JobChange::Completed {
            runner_name: Some(RunnerName::from(format!("hangar-{pool}-i-0abc{job:x}"))),
            conclusion: Some("success".into()),
            completed_at: Some(t(3000)),
        },
    };
    JobEvent {
        key: JobKey::new(JobId(job), attempt),
        pool: PoolName::from(pool),
        run_id: RunId(job.wrapping_mul(10)),
        repository: "acme/app".into(),
        installation_id: Some(InstallationId(42)),
        change,
    }
}

/// What a caller can see of an outcome: changed or not, and the status either way.
fn seen(a: &Applied) -> (bool, JobStatus) {
    match a {
        Applied::Recorded { job, .. } => (true, job.status),
        Applied::Unchanged { existing } => (false, *existing),
    }
}

fn sequences(max_len: usize) -> Vec<Vec<Kind>> {
    let kinds = [Kind::Queued, Kind::Started, Kind::Completed];
    let mut out: Vec<Vec<Kind>> = vec![vec![]];
    let mut all = Vec::new();
    for _ in 0..max_len {
        out = out.iter().flat_map(|s| kinds.iter().map(move |k| [s.clone(), vec![*k]].concat())).collect();
        all.extend(out.clone());
    }
    all
}

#[tokio::test]
async fn every_order_of_events_with_duplicates_matches_the_core_rules() {
    let (dynamo, _) = ledger().await;
    let pool = unique("pool");
    let seqs = sequences(4);
    assert_eq!(seqs.len(), 3 + 9 + 27 + 81);
    let now = t(5000);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, seq) in seqs.into_iter().enumerate() {
        let dynamo = dynamo.clone();
        let pool = pool.clone();
        tasks.spawn(async move {
            let memory = MemoryLedger::new();
            let job = 1000 + i as u64;
            for (step, kind) in seq.iter().enumerate() {
                let e = event(&pool, job, 1, *kind);
                let want = memory.apply(&e, now).await.unwrap();
                let got = dynamo.apply(&e, now).await.unwrap();
                assert_eq!(seen(&got), seen(&want), "{seq:?} step {step}");
                assert_eq!(got, want, "{seq:?} step {step}: the outcome, entry included");
            }
            let key = JobKey::new(JobId(job), 1);
            assert_eq!(
                dynamo.get(key).await.unwrap(),
                memory.get(key).await.unwrap(),
                "{seq:?}: stored entry"
            );
            (seq, memory.get(key).await.unwrap().map(|j| j.status))
        });
    }
    let mut expect_queued = Vec::new();
    let mut expect_started = 0;
    while let Some(r) = tasks.join_next().await {
        let (seq, status) = r.expect("task");
        // The rules, stated once more by hand: the entry ends at the furthest status reached,
        // and a queued entry exists only if `queued` came first of all.
        let furthest = if seq.contains(&Kind::Completed) {
            JobStatus::Done
        } else if seq.contains(&Kind::Started) {
            JobStatus::Started
        } else {
            JobStatus::Queued
        };
        assert_eq!(status, Some(furthest), "{seq:?}");
        if furthest == JobStatus::Queued {
            expect_queued.push(seq);
        }
        expect_started += usize::from(furthest == JobStatus::Started);
    }
    // Only the all-`queued` sequences leave a queued job: 1 + 1 + 1 + 1.
    assert_eq!(expect_queued.len(), 4);
    let queued = dynamo.queued(&PoolName::from(pool.as_str())).await.unwrap();
    assert_eq!(queued.len(), 4, "{queued:?}");
    assert!(queued.iter().all(|j| j.status == JobStatus::Queued));
    // The open jobs are the queued ones and the started ones (their runners are this pool's);
    // no ended job stays in the index.
    let open = dynamo.open(&PoolName::from(pool.as_str())).await.unwrap();
    let started = open.iter().filter(|j| j.status == JobStatus::Started).count();
    assert_eq!((open.len(), started), (4 + expect_started, expect_started), "{open:?}");
}

#[tokio::test]
async fn a_started_job_is_open_under_its_runners_pool_until_it_ends() {
    let (dynamo, _) = ledger().await;
    let (a, b) = (unique("a"), unique("b"));
    let (pa, pb) = (PoolName::from(a.as_str()), PoolName::from(b.as_str()));
    let now = t(5000);
    // Routed to pool A, run on pool B's runner (labels overlap).
    let mut start = event(&a, 1, 1, Kind::Started);
    start.change = JobChange::Started {
        runner_name: Some(RunnerName::from(format!("hangar-{b}-i-0abc1"))),
        started_at: Some(t(2000)),
    };
    let memory = MemoryLedger::new();
    for e in [event(&a, 1, 1, Kind::Queued), start] {
        assert_eq!(dynamo.apply(&e, now).await.unwrap(), memory.apply(&e, now).await.unwrap());
    }
    for (pool, want) in [(&pa, 0), (&pb, 1)] {
        let open = dynamo.open(pool).await.unwrap();
        assert_eq!(open, memory.open(pool).await.unwrap(), "{pool}: DynamoDB and the core agree");
        assert_eq!(open.len(), want, "{pool}: {open:?}");
        assert_eq!(dynamo.queued(pool).await.unwrap(), vec![], "{pool}: nothing queued");
    }
    // In progress before queued, with no runner's pool to go by: its own pool's.
    let mut nameless = event(&a, 2, 1, Kind::Started);
    nameless.change = JobChange::Started { runner_name: None, started_at: Some(t(2000)) };
    dynamo.apply(&nameless, now).await.unwrap();
    assert_eq!(dynamo.open(&pa).await.unwrap().len(), 1);
    // Ended: open nowhere.
    dynamo.apply(&event(&a, 1, 1, Kind::Completed), now).await.unwrap();
    dynamo.apply(&event(&a, 2, 1, Kind::Completed), now).await.unwrap();
    assert_eq!(dynamo.open(&pa).await.unwrap(), vec![]);
    assert_eq!(dynamo.open(&pb).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_cancel_while_queued_ends_the_job_and_leaves_the_index() {
    let (dynamo, c) = ledger().await;
    let pool = unique("pool");
    let now = t(10);
    dynamo.apply(&event(&pool, 1, 1, Kind::Queued), now).await.unwrap();
    dynamo.apply(&event(&pool, 2, 1, Kind::Queued), now).await.unwrap();
    let cancel = JobEvent {
        change: JobChange::Completed {
            runner_name: None,
            conclusion: Some("cancelled".into()),
            completed_at: Some(t(20)),
        },
        ..event(&pool, 1, 1, Kind::Completed)
    };
    let applied = dynamo.apply(&cancel, now).await.unwrap();
    let Applied::Recorded { from, job } = applied else { panic!("cancel must record: {applied:?}") };
    assert_eq!(from, Some(JobStatus::Queued));
    assert!(job.cancelled_while_queued(), "{job:?}");
    let stored = dynamo.get(JobKey::new(JobId(1), 1)).await.unwrap().unwrap();
    assert!(stored.cancelled_while_queued());
    assert_eq!(stored.conclusion.as_deref(), Some("cancelled"));
    let keys: Vec<_> =
        dynamo.queued(&pool.as_str().into()).await.unwrap().into_iter().map(|j| j.key).collect();
    assert_eq!(keys, vec![JobKey::new(JobId(2), 1)]);
    // The index is sparse: the ended job's item no longer carries the index key.
    let raw = c
        .query()
        .table_name(dynamo.table())
        .index_name(OPEN_INDEX)
        .key_condition_expression("open_pool = :p")
        .expression_attribute_values(":p", AttributeValue::S(pool.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.count, 1);
}

#[tokio::test]
async fn a_re_run_attempt_is_a_new_entry() {
    let (dynamo, _) = ledger().await;
    let pool = unique("pool");
    let now = t(10);
    for kind in [Kind::Queued, Kind::Started, Kind::Completed] {
        dynamo.apply(&event(&pool, 5, 1, kind), now).await.unwrap();
    }
    let again = dynamo.apply(&event(&pool, 5, 2, Kind::Queued), now).await.unwrap();
    assert!(matches!(again, Applied::Recorded { from: None, .. }), "{again:?}");
    let queued = dynamo.queued(&pool.as_str().into()).await.unwrap();
    assert_eq!(queued.iter().map(|j| j.key).collect::<Vec<_>>(), vec![JobKey::new(JobId(5), 2)]);
    assert_eq!(dynamo.get(JobKey::new(JobId(5), 1)).await.unwrap().unwrap().status, JobStatus::Done);
}

#[tokio::test]
async fn queued_jobs_come_back_oldest_first_across_pages_and_pools_do_not_mix() {
    let (dynamo, _) = ledger().await;
    let (a, b) = (unique("a"), unique("b"));
    let now = t(10);
    // 150 jobs: more than one BatchGetItem (100 keys), in an order unlike their age.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..150u64 {
        let dynamo = dynamo.clone();
        let (a, b) = (a.clone(), b.clone());
        tasks.spawn(async move {
            let job = (i * 7919) % 1000 + 1;
            let mut e = event(if i % 3 == 0 { &b } else { &a }, job, 1, Kind::Queued);
            e.change = JobChange::Queued { created_at: t((job as i64 * 31) % 997), labels: vec!["x".into()] };
            dynamo.apply(&e, now).await.unwrap()
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(r.unwrap().changed());
    }
    let qa = dynamo.queued(&a.as_str().into()).await.unwrap();
    let qb = dynamo.queued(&b.as_str().into()).await.unwrap();
    assert_eq!((qa.len(), qb.len()), (100, 50));
    assert!(qa.iter().all(|j| j.pool.as_str() == a) && qb.iter().all(|j| j.pool.as_str() == b));
    for w in qa.windows(2) {
        assert!((w[0].created_at, w[0].key) < (w[1].created_at, w[1].key), "{:?} before {:?}", w[0], w[1]);
    }
}

#[tokio::test]
async fn the_same_queued_event_applied_concurrently_records_once() {
    let (dynamo, _) = ledger().await;
    let pool = unique("pool");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let dynamo = dynamo.clone();
        let e = event(&pool, 77, 1, Kind::Queued);
        tasks.spawn(async move { dynamo.apply(&e, t(1)).await.unwrap().changed() });
    }
    let mut recorded = 0;
    while let Some(r) = tasks.join_next().await {
        recorded += r.unwrap() as u32;
    }
    assert_eq!(recorded, 1);
    assert_eq!(dynamo.queued(&pool.as_str().into()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn hostile_values_are_refused_or_reported_never_mistaken() {
    let (dynamo, c) = ledger().await;
    let pool = unique("pool");
    // A huge job id round-trips exactly.
    let huge = event(&pool, u64::MAX, u32::MAX, Kind::Queued);
    assert!(dynamo.apply(&huge, t(1)).await.unwrap().changed());
    let got = dynamo.get(JobKey::new(JobId(u64::MAX), u32::MAX)).await.unwrap().unwrap();
    assert_eq!(got.key, huge.key);
    // A missing pool is refused before any call, as a permanent error.
    let mut no_pool = event(&pool, 9, 1, Kind::Started);
    no_pool.pool = PoolName::from("");
    let err = dynamo.apply(&no_pool, t(1)).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert_eq!(dynamo.get(JobKey::new(JobId(9), 1)).await.unwrap(), None, "nothing was written");
    // Entries written by hand with an unknown status or no pool are reported, not guessed at.
    for (pk, status, with_pool) in [("10#1", "running", true), ("11#1", "queued", false)] {
        let mut put = c
            .put_item()
            .table_name(dynamo.table())
            .item("pk", AttributeValue::S(pk.into()))
            .item("status", AttributeValue::S(status.into()))
            .item("run_id", AttributeValue::N("1".into()))
            .item("repository", AttributeValue::S("acme/app".into()))
            .item("created_at", AttributeValue::S(t(0).to_rfc3339()))
            .item("expires_at", AttributeValue::N("1".into()));
        if with_pool {
            put = put.item("pool", AttributeValue::S(pool.clone()));
        }
        put.send().await.unwrap();
        let key: JobKey = pk.parse().unwrap();
        let err = dynamo.get(key).await.unwrap_err();
        assert!(!err.retryable, "{pk}: {err}");
        assert!(err.message.contains(if with_pool { "status" } else { "pool" }), "{pk}: {err}");
    }
}

#[tokio::test]
async fn recorded_launches_round_trip_drop_stale_entries_and_stay_out_of_the_queue() {
    use hangar_aws::launch_log::DynamoLaunchLog;
    use hangar_core::plan::RecordedLaunch;
    use hangar_core::ports::LaunchLog;
    let (ledger, c) = ledger().await;
    let log = DynamoLaunchLog::new(c, ledger.table());
    let pool = PoolName::from("x64");
    let other = PoolName::from("arm64");
    assert_eq!(log.recent(&pool).await.unwrap(), vec![], "no item yet");
    let l = |id: &str, s: i64| RecordedLaunch { id: id.into(), launched_at: t(s) };
    log.record(&pool, &[l("i-0b", 2), l("i-0a", 1)], &[]).await.unwrap();
    log.record(&other, &[l("i-0c", 1)], &[]).await.unwrap();
    assert_eq!(log.recent(&pool).await.unwrap(), vec![l("i-0a", 1), l("i-0b", 2)], "oldest first");
    // The next launch drops the stale entry it was given.
    log.record(&pool, &[l("i-0d", 3)], &["i-0a".into()]).await.unwrap();
    assert_eq!(log.recent(&pool).await.unwrap(), vec![l("i-0b", 2), l("i-0d", 3)]);
    assert_eq!(log.recent(&other).await.unwrap(), vec![l("i-0c", 1)], "pools apart");
    assert_eq!(ledger.queued(&pool).await.unwrap(), vec![], "a pool's launches are no queued job");
}
