//! rsvault: a self-hosted backup service that speaks the Azure Backup (Recovery Services) REST API.
//!
//! This crate owns the service: the HTTP edge and its ARM conventions (`api`, `arm`), the metadata
//! store (`store`), the domain (`model`, `job`, `policy`, `service`) and the job runner
//! (`runner`). Repository bytes are the engine crate's business: nothing here reads or writes a
//! repository except through `rsvault_engine`'s worker process.

pub mod api;
pub mod arm;
pub mod client;
pub mod config;
pub mod filter;
pub mod fsutil;
pub mod job;
pub mod maintenance;
pub mod model;
pub mod openapi;
pub mod policy;
pub mod retention;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
