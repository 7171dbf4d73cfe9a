//! The webhook's hot path on a real `queued` delivery (GitHub's own example, compacted as GitHub
//! sends it, 11.4 KB): SHA-256 alone as the floor, signature verification, and the full decision
//! (verify, parse, route, metric line). `make bench` prints the table and writes JSON.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hangar_core::config::Config;
use hangar_core::decision::{Decider, WebhookRequest, DEFAULT_MAX_BODY_BYTES};
use hangar_core::emf;
use hangar_core::secret::Secret;
use hangar_core::signature::{sign, WebhookSecrets};
use sha2::{Digest, Sha256};
use std::hint::black_box;

const SECRET: &str = "bench-webhook-secret";

fn payload() -> Vec<u8> {
    let dir = hangar_bench::fixtures_dir();
    let raw = std::fs::read_to_string(dir.join("octokit/workflow_job/06-queued.json"))
        .expect("run tools/setup.sh first (make bench does)");
    // Compacted as GitHub sends it: 11.4 KB, a little above the ~8 KB the target names.
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    serde_json::to_vec(&v).unwrap()
}

fn config() -> Config {
    let dir = hangar_bench::fixtures_dir();
    let mut c =
        Config::from_yaml(&std::fs::read_to_string(dir.join("config/examples.yaml")).unwrap()).unwrap();
    for p in &mut c.pools {
        p.allow_public_repositories = true;
    }
    c
}

fn bench(c: &mut Criterion) {
    let body = payload();
    let sig = sign(SECRET, &body);
    let secrets = WebhookSecrets::new(&[Secret::new(SECRET)]);
    let decider = Decider::new(config(), secrets.clone(), DEFAULT_MAX_BODY_BYTES);
    let req = WebhookRequest {
        method: "POST",
        content_type: vec!["application/json"],
        event: vec!["workflow_job"],
        delivery: vec!["72d3162e-cc78-11e3-81ab-4c9367dc0958"],
        signature_256: vec![&sig],
        has_sha1_signature: false,
        body: &body,
    };
    // The decision must really enqueue, or the benchmark measures an early exit.
    let d = decider.decide(&req);
    assert_eq!(d.status, 202, "{}", d.reason);
    assert!(d.message.is_some());

    let mut g = c.benchmark_group("webhook");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("sha256_floor", |b| b.iter(|| Sha256::digest(black_box(&body))));
    g.bench_function("verify_signature", |b| {
        b.iter(|| secrets.verify(black_box(&body), Some(black_box(&sig))).unwrap())
    });
    g.bench_function("full_decision", |b| {
        b.iter(|| {
            let d = decider.decide(black_box(&req));
            let msg = d.message.as_ref().unwrap().to_json();
            let lines: usize = d.metrics.iter().map(|m| emf::render("Hangar", m, 0).len()).sum();
            black_box((msg, lines))
        })
    });
    g.bench_function("parse_only", |b| {
        b.iter(|| hangar_core::event::WorkflowJobEvent::parse(black_box(&body)).unwrap())
    });
    let metric = d.metrics[0].clone();
    g.bench_function("emf_line_only", |b| b.iter(|| emf::render("Hangar", black_box(&metric), 0)));
    g.finish();
    eprintln!("payload: {} bytes", body.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
