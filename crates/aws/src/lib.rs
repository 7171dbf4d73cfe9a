//! AWS adapters for the core's ports. One place ([`sdk`]) builds the SDK configuration.

pub mod sdk;
pub mod sqs;
