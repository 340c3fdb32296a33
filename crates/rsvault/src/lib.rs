//! rsvault: a self-hosted backup service that speaks the Azure Backup (Recovery Services) REST API.
//!
//! This crate is the `rsvault` binary's library: the wiring of `rsvault serve` (data dir, store,
//! admin token, TLS, the runner and the scheduler, the HTTPS listener) and the operator's client
//! commands. The layers it wires live in their own crates, each importing only the ones below it:
//! `rsvault-api` (the HTTP edge) -> `rsvault-jobs` (service, runner, maintenance, scheduler) ->
//! `rsvault-engine` (repository bytes) and `rsvault-store` (all SQL) -> `rsvault-types`.

pub mod client;
pub mod conn;
pub mod server;
pub mod tls;
