//! rsvault's storage engine.
//!
//! Owns everything that touches repository bytes: initialising a vault repository, backing up a
//! source (a directory tree or a set of disk images), listing/forgetting snapshots, restoring,
//! verifying and pruning. Repositories use the restic repository format (v2) through
//! `rustic_core`, so every vault stays readable by the stock `restic` binary.
//!
//! This crate must never: speak HTTP, touch SQL, or let a `rustic_core` type cross its public
//! interface. Work here is blocking; callers in async code run it through a worker process
//! ([`worker`]) or `spawn_blocking`.
//!
//! # Layout of snapshots
//! - [`Source::Directory`]: the snapshot's `paths` is the (canonical) source directory and its
//!   tree holds the directory's *contents* (like `restic backup .`), so `dir/a.txt` in the source
//!   is `dir/a.txt` in the snapshot and restores to `target/dir/a.txt`.
//! - [`Source::Disks`]: each image or block device is a file named after its file name
//!   (`/var/lib/vm/disk0.img` → `disk0.img`); `paths` lists the given paths. Block devices are read
//!   as a byte stream and always re-read (their mtime says nothing about their blocks).
//!
//! # What rsvault adds to rustic_core
//! - Backups run rsvault's own archiver on rustic_core's public API (`backup/archiver.rs`):
//!   rustic's source walk, node metadata, tree JSON and restic's chunk boundaries, with batches
//!   handed to a pool of two threads per core, large files cut on every core, each thread
//!   sealing its own blobs, and packs and index files written by rsvault (issue #10).
//! - Cancellation ([`JobContext::is_cancelled`], polled every 50 ms): the source stops yielding
//!   entries, reads fail, and the repository backend refuses the snapshot write, so a cancelled
//!   backup never commits a snapshot. Restores check before every blob.
//! - Warnings: unreadable files, files changed during read and skipped special files are
//!   collected from the read path itself (not from logs) and returned with the outcome.
//! - Restore is rsvault's own writer over rustic_core's trees and blobs: bounded memory (4
//!   threads, one blob each, plus rustic's 32 MB blob cache), sparse output, no panics on I/O
//!   errors (`Error::DiskFull`), damaged files named instead of written wrong.
//! - Restores are confined at write time: every create, chmod, chown and utime is relative to
//!   a directory opened without following symlinks below the opened restore root
//!   ([`RestoreScope`]), so a symlink swapped in at any moment is an error, never followed.
//!   Each file is written under a temporary name in its directory, synced, given its metadata
//!   and renamed over the original: a crash, a full disk or a cancel leaves the original.
//!   Alternate-location restores never recreate setuid/setgid bits, device nodes or FIFOs.
//! - Backups open each file without following symlinks and check that it is the file the walk
//!   saw (device and inode); anything else swapped in is a warning, never read.
//! - Small repository files (snapshots, indexes, keys) are written via temp file + rename, so a
//!   killed worker leaves at most orphan packs, which `check` tolerates and [`prune`] removes.
//!
//! Hard links within the restored set are restored as links; extended attributes are stored by
//! the backup but not restored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod backup;
mod codec;
mod confine;
mod drill;
pub mod failpoint;
pub mod objstore;
mod packsync;
mod repo;
mod restore;
mod verify;
pub mod worker;

pub use backup::backup;
pub use drill::{drill, DrillReport, DrillSpec, RANGED_ABOVE_BYTES as DRILL_RANGED_ABOVE_BYTES};
pub use objstore::ObjectStore;
pub use repo::{
    add_key, destroy, exists, forget, init, key_id, list_keys, master_key, open_or_init,
    open_or_init_master_key, probe, prune, remove_key, restic_repository, size, snapshot,
    snapshots,
};
pub use restore::{restore, restore_scoped};
pub use verify::{verify, verify_reporting};

/// Whether `data` is all zero bytes (compared in 8-byte words, several times faster than bytes
/// for multi-MiB buffers).
pub(crate) fn is_zero(data: &[u8]) -> bool {
    let words = data.chunks_exact(8);
    let tail = words.remainder();
    words
        .into_iter()
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
        && tail.iter().all(|b| *b == 0)
}

/// Where a repository lives and how to open it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Local directory of the repository, or with [`RepoConfig::store`] its key prefix in the
    /// object store (`PREFIX/SUB/RG/VAULT`).
    pub path: PathBuf,
    /// The vault key (restic password). Opens the repository through one of its key files, which
    /// costs a scrypt derivation (N=2^17: ~0.4 s of CPU and 128 MiB) per open.
    pub password: String,
    /// The repository's master key ([`master_key`]): when present, the repository is opened with
    /// it directly, without reading a key file or deriving anything from the password. If it
    /// does not decrypt the repository (stale: the repository was replaced), the password is
    /// tried instead; with an empty password that is [`Error::WrongKey`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<MasterKey>,
    /// The object store holding the repository (S3, Azure Blob); `None`: local disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<ObjectStore>,
}

/// A repository's master key: the encryption and MAC keys every key file of the repository wraps
/// (restic's decrypted key-file payload, `{"mac":{"k":..,"r":..},"encrypt":..}`). Opaque to
/// callers, who store it as a secret (it opens the repository like the password does) and hand
/// it back in [`RepoConfig::master_key`]. Adding, rotating or removing key files does not change
/// it; only a new repository has a new one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MasterKey(String);

impl MasterKey {
    /// Takes a master key back from its stored text ([`MasterKey::as_str`]).
    pub fn from_text(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The key as text (JSON), for storing it wrapped.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// What to back up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A directory tree (an Azure-Files-like share).
    Directory { path: PathBuf },
    /// A set of disk images or block devices (an Azure-VM-like item).
    Disks { paths: Vec<PathBuf> },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackupOptions {
    /// Snapshot id of the item's previous snapshot; unchanged files are not re-read.
    pub parent: Option<String>,
    /// Tags written on the snapshot (rsvault uses them to record vault/item ids).
    pub tags: Vec<String>,
    /// Host name written on the snapshot.
    pub host: Option<String>,
    /// Read-throughput limit in bytes per second (None: unlimited).
    pub bytes_per_second: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Scanning,
    Snapshotting,
    Transferring,
    Restoring,
    Verifying,
    Pruning,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupOutcome {
    pub snapshot_id: String,
    pub files: u64,
    pub bytes_total: u64,
    pub bytes_added: u64,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub time: chrono::DateTime<chrono::Utc>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
    pub files: u64,
    pub bytes_total: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Conflict {
    #[default]
    Overwrite,
    Skip,
    Fail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreSpec {
    pub snapshot_id: String,
    /// Paths inside the snapshot to restore (relative to the source root, e.g. `dir/a.txt`, or a
    /// disk image's file name for a VM). Empty: the whole snapshot.
    pub paths: Vec<String>,
    /// Directory to restore into. Files land at `target/<path relative to the source root>`.
    pub target: PathBuf,
    pub conflict: Conflict,
}

/// Where a restore may write and what it may recreate there (issue #9). Separate from
/// [`RestoreSpec`] so that callers written before it keep building; [`restore`] (and
/// [`worker::Request::Restore`]) use the default: confined to the target itself, alternate
/// location.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreScope {
    /// The directory the restore may never write outside of (a configured restore root, or the
    /// share's own directory); `RestoreSpec::target` must be this directory or below it. It is
    /// opened once, following symlinks (it is configuration); everything below it, the rest of
    /// the target included, is reached without following any symlink, whatever is swapped in
    /// while the job runs. `None`: the target's parent directory, or its deepest existing
    /// ancestor when it does not exist yet (so a swap of anything from there down is caught).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// The restore writes back where the data was backed up from (`OriginalLocation`): setuid
    /// and setgid bits, device nodes and FIFOs are recreated. Otherwise they never are; each one
    /// left out is a warning.
    #[serde(default)]
    pub original_location: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreOutcome {
    pub files: u64,
    pub bytes: u64,
    pub skipped: Vec<String>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct VerifyReport {
    pub ok: bool,
    pub damaged_snapshots: Vec<String>,
    pub damaged_files: Vec<String>,
    pub errors: Vec<String>,
}

/// What the engine sees of the job it runs for. Checked at file and chunk boundaries.
pub trait JobContext: Send + Sync {
    fn is_cancelled(&self) -> bool;
    fn progress(&self, progress: &Progress);
    fn warn(&self, warning: Warning);
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the operation was cancelled")]
    Cancelled,
    #[error("wrong vault key: {0}")]
    WrongKey(String),
    #[error("snapshot '{0}' not found")]
    SnapshotNotFound(String),
    #[error("source unavailable: {0}")]
    SourceUnavailable(String),
    #[error("restore target conflict: '{0}' already exists")]
    Conflict(String),
    #[error("no space left on the target device: {0}")]
    DiskFull(String),
    #[error("repository error: {0}")]
    Repository(String),
    #[error("engine worker failed: {0}")]
    Worker(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
