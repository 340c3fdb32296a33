//! Engine integration tests: real files, real processes, temp dirs.

mod cancel;
mod common;
mod corruption;
mod disks;
mod keys;
mod master_key;
mod restic;
mod restore;
mod roundtrip;
mod safety;
mod warnings;
mod worker;
