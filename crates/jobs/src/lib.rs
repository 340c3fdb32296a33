//! rsvault's job core: the service layer over the store (vaults, sources, protection, jobs,
//! operations), the runner that executes jobs through engine worker processes, vault maintenance
//! (retention, garbage collection, verification) and the scheduler.
//!
//! Nothing here serves HTTP: the api crate calls in, never the other way (`notify` only sends
//! webhooks out). Module imports run one
//! way: `scheduler -> runner -> {maintenance, queue} -> context -> service -> {live, state}`; every job
//! status change goes through `state::transition`. `neighbours` (the Compute and Storage resources
//! of the configuration) and `status` (backup status, usage summaries) are read-only views over
//! `service` that nothing else in the crate imports. The operator's view (issue #13) adds methods
//! to `Service` from modules of their own: `joblog` (each job's log), `metrics` (Prometheus),
//! `readiness`, `notify` (webhooks), `staleness` (pure rules the scheduler applies).

pub mod config;
pub mod context;
pub mod failpoint;
pub mod fsutil;
pub mod immutability;
pub mod joblog;
pub mod live;
pub mod maintenance;
pub mod metrics;
pub mod neighbours;
pub mod nodes;
pub mod notify;
pub mod policy;
pub mod queue;
pub mod readiness;
pub mod recent;
pub mod repository;
pub mod retention;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod scrape;
pub mod secrets;
pub mod service;
pub mod soft_delete;
pub mod staleness;
pub mod state;
pub mod status;
