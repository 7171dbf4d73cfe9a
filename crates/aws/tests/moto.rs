//! The adapters against moto_server (one per test binary), directly and through the fault
//! proxy where moto cannot produce the behaviour (per-override CreateFleet errors, throttling,
//! ClientToken idempotency).

mod common;

use common::{ec2_client, instance_tags, network, pool, sqs_client, ssm_client, unique};
use hangar_aws::ec2::Ec2Fleet;
use hangar_aws::sqs::{SqsPoller, SqsProvisionQueue, SqsScaleQueue};
use hangar_aws::ssm::{SsmConfigSource, SsmJitStore};
use hangar_core::config::CapacityType;
use hangar_core::ids::{InstanceId, JobId, PoolName};
use hangar_core::ports::{
    Fleet, JitStore, LaunchReason, LaunchRequest, OutboundMessage, ProvisionQueue, ScaleQueue,
};
use hangar_core::secret::Secret;
use hangar_core::state::{Ec2State, Lifecycle};
use hangar_sim::fault_proxy::{Fault, FaultProxy};
use hangar_testsupport::moto;
use std::collections::HashSet;

fn request(pool: hangar_core::config::PoolConfig, count: u32, key: &str) -> LaunchRequest {
    LaunchRequest { pool, count, reason: LaunchReason::Job, idempotency_key: key.into() }
}

/// Instances that still count toward the cap (describe_pool also lists terminated ones).
fn live(seen: &[hangar_core::state::ObservedInstance]) -> Vec<InstanceId> {
    seen.iter().filter(|o| o.ec2_state.counts_toward_cap()).map(|o| o.id.clone()).collect()
}

#[tokio::test]
async fn spot_launch_sets_tags_at_launch_and_describe_reads_them_back() {
    let ec2 = ec2_client(&moto().endpoint(), 3).await;
    let net = network(&ec2).await;
    let name = unique("spot");
    let fleet = Ec2Fleet::new(ec2.clone());
    let out = fleet.launch(&request(pool(&name, &net, "spot", true), 3, &unique("k"))).await.unwrap();
    assert_eq!(out.launched.len(), 3, "{out:?}");
    assert_eq!(out.calls, 1);
    assert!(out.failures.is_empty());
    assert!(out.launched.iter().all(|i| i.capacity_type == CapacityType::Spot));

    let tags = instance_tags(&ec2, out.launched[0].id.as_str()).await;
    assert_eq!(tags.get("hangar:pool").map(String::as_str), Some(name.as_str()));
    assert_eq!(tags.get("hangar:lifecycle").map(String::as_str), Some("pending"));
    assert_eq!(tags.get("hangar:launch-reason").map(String::as_str), Some("job"));
    assert_eq!(tags.get("hangar:managed-by").map(String::as_str), Some("hangar"));

    let seen = fleet.describe_pool(&PoolName::from(name.as_str())).await.unwrap();
    let launched: HashSet<_> = out.launched.iter().map(|i| i.id.clone()).collect();
    assert_eq!(seen.iter().map(|o| o.id.clone()).collect::<HashSet<_>>(), launched);
    for o in &seen {
        assert_eq!(o.lifecycle, Lifecycle::Pending);
        assert_eq!(o.capacity_type, CapacityType::Spot, "InstanceLifecycle=spot must read back");
        assert!(matches!(o.ec2_state, Ec2State::Pending | Ec2State::Running));
        assert!(["m5.large", "c5.large"].contains(&o.instance_type.as_str()));
        assert!(!o.interrupted);
        assert_eq!(o.job_id, None);
    }
}

#[tokio::test]
async fn on_demand_pool_by_template_name_and_pools_do_not_mix() {
    let ec2 = ec2_client(&moto().endpoint(), 3).await;
    let net = network(&ec2).await;
    let (a, b) = (unique("od-a"), unique("od-b"));
    let mut pa = pool(&a, &net, "on-demand", false);
    pa.launch_template = Some(net.launch_template_name.clone());
    let fleet = Ec2Fleet::new(ec2.clone());
    let out = fleet
        .launch(&LaunchRequest { reason: LaunchReason::WarmPool, ..request(pa, 2, &unique("k")) })
        .await
        .unwrap();
    assert_eq!(out.launched.len(), 2);
    assert!(out.launched.iter().all(|i| i.capacity_type == CapacityType::OnDemand));
    fleet.launch(&request(pool(&b, &net, "spot", true), 1, &unique("k"))).await.unwrap();

    let seen_a = fleet.describe_pool(&PoolName::from(a.as_str())).await.unwrap();
    assert_eq!(seen_a.len(), 2);
    assert!(seen_a.iter().all(|o| o.capacity_type == CapacityType::OnDemand && o.pool.as_str() == a));
    let tags = instance_tags(&ec2, seen_a[0].id.as_str()).await;
    assert_eq!(tags.get("hangar:launch-reason").map(String::as_str), Some("warm-pool"));
    assert_eq!(fleet.describe_pool(&PoolName::from(b.as_str())).await.unwrap().len(), 1);
}

#[tokio::test]
async fn lifecycle_tags_interruption_stop_start_and_idempotent_terminate() {
    let ec2 = ec2_client(&moto().endpoint(), 3).await;
    let net = network(&ec2).await;
    let name = unique("life");
    let pool_name = PoolName::from(name.as_str());
    let fleet = Ec2Fleet::new(ec2.clone());
    let out = fleet.launch(&request(pool(&name, &net, "on-demand", false), 3, &unique("k"))).await.unwrap();
    let ids: Vec<InstanceId> = out.launched.iter().map(|i| i.id.clone()).collect();

    fleet.set_lifecycle(&ids[0], Lifecycle::Busy, Some(JobId(4242))).await.unwrap();
    fleet.mark_interrupted(&ids[0]).await.unwrap();
    fleet.set_lifecycle(&ids[1], Lifecycle::Idle, None).await.unwrap();
    fleet.stop(&ids[2..]).await.unwrap();
    let seen = fleet.describe_pool(&pool_name).await.unwrap();
    let by_id = |id: &InstanceId| seen.iter().find(|o| &o.id == id).unwrap().clone();
    assert_eq!(
        (by_id(&ids[0]).lifecycle, by_id(&ids[0]).job_id, by_id(&ids[0]).interrupted),
        (Lifecycle::Busy, Some(JobId(4242)), true)
    );
    assert_eq!((by_id(&ids[1]).lifecycle, by_id(&ids[1]).job_id), (Lifecycle::Idle, None));
    assert!(
        matches!(by_id(&ids[2]).ec2_state, Ec2State::Stopped | Ec2State::Stopping),
        "stopped instances still count"
    );
    fleet.start(&ids[2..]).await.unwrap();
    let restarted = fleet.describe_pool(&pool_name).await.unwrap();
    assert!(matches!(
        restarted.iter().find(|o| o.id == ids[2]).unwrap().ec2_state,
        Ec2State::Pending | Ec2State::Running
    ));

    // An id EC2 does not know (already gone) does not block the others.
    let mut with_ghost = ids[..2].to_vec();
    with_ghost.push(InstanceId::from("i-0123456789abcdef0"));
    fleet.terminate(&with_ghost).await.unwrap();
    let left = fleet.describe_pool(&pool_name).await.unwrap();
    assert_eq!(live(&left), vec![ids[2].clone()]);
    // Terminated instances stay listed with their tags while EC2 lists them.
    let gone = left.iter().find(|o| o.id == ids[0]).expect("terminated instance still listed");
    assert_eq!(
        (gone.ec2_state, gone.job_id, gone.interrupted),
        (Ec2State::Terminated, Some(JobId(4242)), true)
    );
    // Terminating again (a retried reconcile) is fine.
    fleet.terminate(&ids).await.unwrap();
    assert!(live(&fleet.describe_pool(&pool_name).await.unwrap()).is_empty());
}

#[tokio::test]
async fn launches_carry_no_job_and_a_busy_tag_names_the_job_until_cleared() {
    let ec2 = ec2_client(&moto().endpoint(), 3).await;
    let net = network(&ec2).await;
    let name = unique("jobs");
    let fleet = Ec2Fleet::new(ec2.clone());
    let p = pool(&name, &net, "spot", true);

    let two = fleet.launch(&request(p, 2, &unique("k"))).await.unwrap();
    for i in &two.launched {
        let tags = instance_tags(&ec2, i.id.as_str()).await;
        assert_eq!(tags.get("hangar:job-id"), None, "no job is bound to a launch");
        assert_eq!(tags.get("hangar:lifecycle").map(String::as_str), Some("pending"));
    }

    // The job that started on it names it busy; clearing the job keeps the lifecycle.
    fleet.set_lifecycle(&two.launched[0].id, Lifecycle::Busy, Some(JobId(21))).await.unwrap();
    let seen = fleet.describe_pool(&PoolName::from(name.as_str())).await.unwrap();
    let busy = seen.iter().find(|o| o.id == two.launched[0].id).unwrap();
    assert_eq!((busy.lifecycle, busy.job_id), (Lifecycle::Busy, Some(JobId(21))));
    fleet.set_lifecycle(&two.launched[0].id, Lifecycle::Idle, None).await.unwrap();
    let seen = fleet.describe_pool(&PoolName::from(name.as_str())).await.unwrap();
    let cleared = seen.iter().find(|o| o.id == two.launched[0].id).unwrap();
    assert_eq!((cleared.lifecycle, cleared.job_id), (Lifecycle::Idle, None));
    assert_eq!(seen.iter().find(|o| o.id == two.launched[1].id).unwrap().job_id, None);
}

#[tokio::test]
async fn spot_capacity_error_on_one_type_is_filled_by_the_other_type() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let ec2 = ec2_client(&proxy.endpoint(), 3).await;
    let net = network(&ec2).await;
    let name = unique("ice-type");
    proxy.inject(Fault::spot_capacity(&["m5.large"]));
    let fleet = Ec2Fleet::new(ec2.clone());
    let out = fleet.launch(&request(pool(&name, &net, "spot", true), 2, &unique("k"))).await.unwrap();
    assert_eq!(out.launched.len(), 2, "{out:?}");
    assert!(out
        .launched
        .iter()
        .all(|i| i.instance_type == "c5.large" && i.capacity_type == CapacityType::Spot));
    // One error per m5.large override (two subnets), as EC2 reports each capacity pool.
    assert_eq!(out.failures.len(), 2);
    assert!(out.failures.iter().all(|f| f.code == "InsufficientInstanceCapacity"
        && f.instance_type.as_deref() == Some("m5.large")
        && f.capacity_type == CapacityType::Spot));
    assert_eq!(out.calls, 1);
    assert_eq!(proxy.count("CreateFleet"), 1);
}

#[tokio::test]
async fn spot_exhausted_everywhere_falls_back_to_on_demand_or_stops_when_not_allowed() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let ec2 = ec2_client(&proxy.endpoint(), 3).await;
    let net = network(&ec2).await;
    proxy.inject(Fault::all_spot_exhausted());
    let fleet = Ec2Fleet::new(ec2.clone());

    let name = unique("ice-all");
    let out = fleet.launch(&request(pool(&name, &net, "spot", true), 3, &unique("k"))).await.unwrap();
    assert_eq!(out.calls, 2, "{out:?}");
    assert_eq!(out.launched.len(), 3);
    assert!(out.launched.iter().all(|i| i.capacity_type == CapacityType::OnDemand));
    assert_eq!(out.failures.len(), 4, "2 types x 2 subnets of spot");
    let seen = fleet.describe_pool(&PoolName::from(name.as_str())).await.unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|o| o.capacity_type == CapacityType::OnDemand));

    let strict = unique("ice-strict");
    let out = fleet.launch(&request(pool(&strict, &net, "spot", false), 3, &unique("k"))).await.unwrap();
    assert_eq!((out.launched.len(), out.calls, out.failures.len()), (0, 1, 4));
    assert!(fleet.describe_pool(&PoolName::from(strict.as_str())).await.unwrap().is_empty());
    assert_eq!(proxy.count("CreateFleet"), 3);
}

#[tokio::test]
async fn request_limit_exceeded_is_retried_by_the_sdk_and_bounded() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let ec2 = ec2_client(&proxy.endpoint(), 3).await;
    let net = network(&ec2).await;
    let fleet = Ec2Fleet::new(ec2.clone());

    proxy.inject(Fault::error("CreateFleet", "RequestLimitExceeded", 503, 2));
    let out =
        fleet.launch(&request(pool(&unique("thr"), &net, "spot", true), 1, &unique("k"))).await.unwrap();
    assert_eq!(out.launched.len(), 1);
    assert_eq!(out.calls, 1, "SDK retries are one logical call");
    assert_eq!(proxy.count("CreateFleet"), 3, "two throttled attempts, then success");

    proxy.reset();
    proxy.inject(Fault::error("CreateFleet", "RequestLimitExceeded", 503, 10));
    let name = unique("thr-fail");
    let err = fleet.launch(&request(pool(&name, &net, "spot", true), 1, &unique("k"))).await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("RequestLimitExceeded"));
    assert!(err.retryable);
    assert_eq!(proxy.count("CreateFleet"), 3, "max_attempts bounds the retries");
    assert!(fleet.describe_pool(&PoolName::from(name.as_str())).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_replayed_launch_returns_the_first_instances_through_client_tokens() {
    let proxy = FaultProxy::start(moto().endpoint()).await.unwrap();
    let ec2 = ec2_client(&proxy.endpoint(), 3).await;
    let net = network(&ec2).await;
    let fleet = Ec2Fleet::new(ec2.clone());
    let name = unique("replay");
    let req = request(pool(&name, &net, "spot", true), 2, "sqs-msg-1,sqs-msg-2");
    let first = fleet.launch(&req).await.unwrap();
    let second = fleet.launch(&req).await.unwrap();
    assert_eq!(first.launched, second.launched);
    assert_eq!(fleet.describe_pool(&PoolName::from(name.as_str())).await.unwrap().len(), 2);
    // A different request key is a different launch.
    let third = fleet.launch(&LaunchRequest { idempotency_key: "sqs-msg-3".into(), ..req }).await.unwrap();
    assert_eq!(third.launched.len(), 2);
    assert_eq!(fleet.describe_pool(&PoolName::from(name.as_str())).await.unwrap().len(), 4);
}

#[tokio::test]
async fn jit_store_puts_lists_overwrites_and_deletes() {
    let ssm = ssm_client(&moto().endpoint()).await;
    let prefix = format!("/{}/jit", unique("hangar"));
    let arn_prefix = "arn:aws:ec2:us-east-1:123456789012:instance/";
    let store = SsmJitStore::with_prefix(ssm.clone(), &prefix).unwrap().with_instance_arn_prefix(arn_prefix);
    let pool = PoolName::from("linux-x64");
    let ids: Vec<InstanceId> = (0..12).map(|i| InstanceId::from(format!("i-{i:017x}"))).collect();
    for id in &ids {
        store.put(id, &pool, &Secret::new(format!("jit-{id}"))).await.unwrap();
    }
    // Not ours: a sibling path and a nested one.
    ssm.put_parameter()
        .name(format!("{prefix}-other/i-0"))
        .value("x")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    ssm.put_parameter()
        .name(format!("{prefix}/nested/i-1"))
        .value("x")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();

    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 12, "more than one DescribeParameters page (moto pages by 10)");
    assert_eq!(
        listed.iter().map(|s| s.instance_id.clone()).collect::<HashSet<_>>(),
        ids.iter().cloned().collect()
    );
    assert!(listed.iter().all(|s| s.pool.as_ref() == Some(&pool) && s.created_at.is_some()));

    let name = store.parameter_name(&ids[0]);
    let got = ssm.get_parameter().name(&name).with_decryption(true).send().await.unwrap();
    let p = got.parameter().unwrap();
    assert_eq!(p.r#type(), Some(&aws_sdk_ssm::types::ParameterType::SecureString));
    assert_eq!(p.value(), Some(format!("jit-{}", ids[0]).as_str()));

    // A second put for the same instance overwrites and keeps the tags.
    store.put(&ids[0], &pool, &Secret::new("jit-new")).await.unwrap();
    let config = SsmConfigSource::new(ssm.clone());
    assert_eq!(config.get(&name).await.unwrap().expose(), "jit-new");
    let tags = ssm
        .list_tags_for_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(&name)
        .send()
        .await
        .unwrap();
    let tags: std::collections::BTreeMap<_, _> =
        tags.tag_list().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect();
    assert_eq!(tags.get("hangar:instance-id"), Some(&ids[0].to_string()));
    assert_eq!(tags.get("hangar:pool"), Some(&"linux-x64".to_owned()));
    // The runner role's IAM condition compares this tag with `${ec2:SourceInstanceARN}`.
    assert_eq!(tags.get("hangar:instance-arn"), Some(&format!("{arn_prefix}{}", ids[0])));

    store.delete(&ids[0]).await.unwrap();
    store.delete(&ids[0]).await.unwrap();
    store.delete_many(&ids[1..4]).await.unwrap();
    assert_eq!(store.list().await.unwrap().len(), 8);
    let missing = config.get(&name).await.unwrap_err();
    assert_eq!((missing.code.as_deref(), missing.retryable), (Some("ParameterNotFound"), false));
}

#[tokio::test]
async fn jit_store_refuses_bad_input_without_calling_aws() {
    let ssm = ssm_client(&moto().endpoint()).await;
    for bad in ["", "/", "hangar/jit", "/hangar/jit/", "/hangar//jit", "/hangar jit"] {
        assert!(SsmJitStore::with_prefix(ssm.clone(), bad).is_err(), "{bad:?}");
    }
    let store = SsmJitStore::new(ssm);
    for bad in ["i-", "../i-1", "i-1/../../x", "not-an-id"] {
        let e = store.put(&InstanceId::from(bad), &PoolName::from("p"), &Secret::new("x")).await.unwrap_err();
        assert_eq!(e.code.as_deref(), Some("InvalidInstanceId"), "{bad}");
    }
}

#[tokio::test]
async fn config_source_reads_several_parameters_decrypted() {
    let ssm = ssm_client(&moto().endpoint()).await;
    let base = format!("/{}", unique("cfg"));
    let names: Vec<String> = (0..12).map(|i| format!("{base}/p{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        ssm.put_parameter()
            .name(n)
            .value(format!("v{i}"))
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    }
    let src = SsmConfigSource::new(ssm);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let got = src.get_many(&refs).await.unwrap();
    assert_eq!(
        got.iter().map(|s| s.expose().to_owned()).collect::<Vec<_>>(),
        (0..12).map(|i| format!("v{i}")).collect::<Vec<_>>()
    );
    let missing = format!("{base}/absent");
    let e = src.get_many(&[refs[0], &missing]).await.unwrap_err();
    assert!(e.message.contains("absent"), "{e}");
}

#[tokio::test]
async fn sqs_send_receive_extend_and_delete() {
    let sqs = sqs_client(&moto().endpoint()).await;
    let q = sqs
        .create_queue()
        .queue_name(format!("{}.fifo", unique("scale")))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap();
    let url = q.queue_url().unwrap().to_owned();
    let queue = SqsScaleQueue::new(sqs.clone(), &url);
    for i in 0..3 {
        queue
            .send(&OutboundMessage {
                body: format!("{{\"n\":{i}}}"),
                group_id: "pool-a".into(),
                dedup_id: format!("d{i}"),
            })
            .await
            .unwrap();
    }
    let poller = SqsPoller::new(sqs.clone(), &url);
    let got = poller.receive(10, 0, Some(30)).await.unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|m| m.group_id.as_deref() == Some("pool-a") && m.receive_count == 1));
    assert_eq!(got[0].dedup_id.as_deref(), Some("d0"));

    let done: Vec<(&str, &str)> =
        got[1..].iter().map(|m| (m.message_id.as_str(), m.receipt_handle.as_str())).collect();
    assert!(poller.delete_batch(&done).await.unwrap().is_empty());
    // Hand the first back at once: it comes again with a higher receive count (FIFO holds a
    // group while any of its messages is in flight, hence the deletes first).
    poller.change_visibility(&got[0].receipt_handle, 0).await.unwrap();
    let again = poller.receive(10, 0, Some(30)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].message_id.as_str(), again[0].receive_count), (got[0].message_id.as_str(), 2));
    let last = [(again[0].message_id.as_str(), again[0].receipt_handle.as_str())];
    assert!(poller.delete_batch(&last).await.unwrap().is_empty());
    poller.change_visibility_batch(&[], 0).await.unwrap();
    assert!(poller.receive(10, 0, Some(0)).await.unwrap().is_empty());
    assert!(poller.receive(11, 0, None).await.is_err(), "out-of-range max is refused");

    let missing = SqsScaleQueue::new(sqs, format!("{}/000000000000/{}", moto().endpoint(), unique("nope")));
    let e = missing
        .send(&OutboundMessage { body: "{}".into(), group_id: "g".into(), dedup_id: "d".into() })
        .await
        .unwrap_err();
    assert!(!e.retryable, "{e}");
}

#[tokio::test]
async fn provision_queue_sends_in_batches_of_ten_and_names_what_it_could_not_send() {
    let sqs = sqs_client(&moto().endpoint()).await;
    let url = sqs
        .create_queue()
        .queue_name(unique("provision"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let queue = SqsProvisionQueue::new(sqs.clone(), &url);
    // 23 bodies: three SendMessageBatch calls (SQS takes at most 10 entries).
    let mut bodies: Vec<String> = (0..23).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert!(queue.send(&bodies).await.is_empty());
    let poller = SqsPoller::new(sqs.clone(), &url);
    let mut seen = HashSet::new();
    for _ in 0..10 {
        let got = poller.receive(10, 0, Some(30)).await.unwrap();
        if got.is_empty() {
            break;
        }
        seen.extend(got.into_iter().map(|m| m.body));
    }
    assert_eq!(seen, bodies.iter().cloned().collect::<HashSet<_>>(), "each body sent once");

    // A body over SQS's 1 MiB limit (raised from 256 KiB in August 2025) fails its own batch call; the other batches still go,
    // and the caller learns exactly which bodies were not sent, as not worth retrying.
    bodies[12] = "x".repeat(1024 * 1024 + 1);
    let failed = queue.send(&bodies).await;
    let idx: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
    assert!(idx.contains(&12), "{failed:?}");
    assert!(idx.iter().all(|i| (10..20).contains(i)), "only the oversized body's batch: {idx:?}");
    assert!(failed.iter().all(|(_, e)| !e.retryable), "{failed:?}");

    let missing =
        SqsProvisionQueue::new(sqs, format!("{}/000000000000/{}", moto().endpoint(), unique("nope")));
    let failed = missing.send(&bodies[..3]).await;
    assert_eq!(failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(failed.iter().all(|(_, e)| !e.retryable && e.operation == "sqs:SendMessageBatch"), "{failed:?}");
}
