//! Hangar's core: pure domain logic. No AWS, no Lambda, no HTTP; everything here is a function of
//! plain values, and the outside world is reached through the traits in [`ports`].

pub mod config;
pub mod decision;
pub mod emf;
pub mod event;
pub mod ids;
pub mod ledger;
pub mod message;
pub mod metrics;
pub mod plan;
pub mod ports;
pub mod routing;
pub mod secret;
pub mod signature;
pub mod state;
