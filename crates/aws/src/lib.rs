//! AWS adapters for the core's ports. One place ([`sdk`]) builds the SDK configuration.
//!
//! - [`ec2::Ec2Fleet`]: runner instances through CreateFleet `instant`, pool state from tags.
//! - [`ssm::SsmJitStore`], [`ssm::SsmConfigSource`]: JIT configs and configuration/secrets.
//! - [`sqs::SqsScaleQueue`], [`sqs::SqsPoller`]: the scale queue.
//! - [`error`]: SDK errors classified into [`hangar_core::ports::PortError`].

pub mod dynamo;
pub mod ec2;
pub mod error;
pub mod launch_log;
pub mod sdk;
pub mod settings;
pub mod sqs;
pub mod ssm;

/// The SDK crates, re-exported so binaries build clients without their own SDK dependency.
pub mod reexports {
    pub use aws_sdk_dynamodb as dynamodb;
    pub use aws_sdk_ec2 as ec2;
    pub use aws_sdk_sqs as sqs;
    pub use aws_sdk_ssm as ssm;
}
