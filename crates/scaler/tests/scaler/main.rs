//! The scaler Lambda's handler against moto (through the fault proxy) and the GitHub simulator,
//! fed the event payloads Lambda delivers (fixtures under `tests/fixtures`).

mod common;
mod concurrency;
mod counting;
mod events;
mod ledger;
mod provisioning;
mod reconcile;
mod scale_up;
mod spot;
