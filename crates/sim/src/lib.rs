//! The local cloud Hangar's tests and `make demo` run against: real servers on 127.0.0.1.
//!
//! - [`github`]: GitHub REST API simulator with a job model that sends signed webhooks.
//! - [`fault_proxy`]: an HTTP proxy in front of moto_server that injects AWS errors and latency.
//! - [`imds`]: an EC2 instance metadata service (IMDSv2) for the boot agent's tests.
//! - [`instances`]: runner instances: boot, read the JIT parameter, run one job, terminate.
//! - [`trace`]: workload traces replayed by `hangar demo`.
//! - [`bound`]: the queue wait an ideal scaler would have had on a trace (the demo's bound).

pub mod bound;
pub mod fault_proxy;
pub mod github;
pub mod imds;
pub mod instances;
pub mod relay;
pub mod trace;
