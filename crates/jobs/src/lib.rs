//! rsvault's job core: the service layer over the store (vaults, sources, protection, jobs,
//! operations), the runner that executes jobs through engine worker processes, vault maintenance
//! (retention, garbage collection, verification) and the scheduler.
//!
//! Nothing here speaks HTTP: the api crate calls in, never the other way. Module imports run one
//! way: `scheduler -> runner -> maintenance -> context -> service -> live`.

pub mod config;
pub mod context;
pub mod fsutil;
pub mod live;
pub mod maintenance;
pub mod neighbours;
pub mod policy;
pub mod retention;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod status;
