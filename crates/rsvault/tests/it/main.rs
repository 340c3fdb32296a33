//! Integration tests: the real `rsvault` binary on an ephemeral port, a temp data dir with a real
//! SQLite store and real repositories, real sources on disk, HTTPS with the generated certificate.

mod contract;
mod harness;

mod api_rules;
mod backup_restore;
mod cluster;
mod data_dir;
mod examples;
mod immutability;
mod jobs;
mod neighbours;
mod nodes;
mod ops;
mod policies;
mod rbac;
mod restart;
mod soft_delete;
