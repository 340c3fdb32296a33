//! Engine integration tests: real files, real processes, temp dirs.

mod backends;
mod bulk;
mod cancel;
mod common;
mod corruption;
mod disks;
mod drill;
mod emulator;
mod keys;
mod master_key;
mod restic;
mod restore;
mod roundtrip;
mod safety;
mod warnings;
mod worker;
