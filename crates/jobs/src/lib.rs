//! rsvault's job core: the service layer over the store (vaults, sources, protection, jobs,
//! operations), the runner that executes jobs through engine worker processes, vault maintenance
//! (retention, garbage collection, verification) and the scheduler.
//!
//! Nothing here speaks HTTP: the api crate calls in, never the other way. Module imports run one
//! way: `scheduler -> runner -> {maintenance, queue} -> context -> service -> {live, state}`; every job
//! status change goes through `state::transition`. `neighbours` (the Compute and Storage resources
//! of the configuration) and `status` (backup status, usage summaries) are read-only views over
//! `service` that nothing else in the crate imports.

pub mod config;
pub mod context;
pub mod failpoint;
pub mod fsutil;
pub mod live;
pub mod maintenance;
pub mod neighbours;
pub mod policy;
pub mod queue;
pub mod repository;
pub mod retention;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod secrets;
pub mod service;
pub mod state;
pub mod status;
