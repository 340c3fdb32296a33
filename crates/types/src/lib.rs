//! rsvault's types: the Azure Backup shapes on the wire (vaults, policies, items, recovery points,
//! operations, jobs), the ARM error table, and the time and duration spellings ARM uses.
//!
//! This crate owns data and its rendering only: it does no IO, no SQL and no HTTP, so every other
//! crate can depend on it.

pub mod arm;
pub mod job;
pub mod model;
