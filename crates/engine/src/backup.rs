//! Backup of a directory tree or a set of disk images / block devices.
//!
//! rsvault's own archiver ([`archiver`]) drives the work on rustic_core's public API: rustic's
//! source walk and node metadata, restic's chunk boundaries, tree and index formats, with the
//! pipeline, the packer and the chunk search its own (issue #10). This file wraps the read
//! side (`ReadSource`) to add what a service needs: cancellation (entries stop, reads fail, and
//! the guarded backend refuses the snapshot), warnings collected per job (unreadable files,
//! files changed during read, skipped special files), progress with totals, and a
//! read-throughput limit.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustic_core::jiff::Timestamp;
use rustic_core::{
    Excludes, LocalSource, LocalSourceFilterOptions, LocalSourceSaveOptions, ReadSource,
    ReadSourceEntry, ReadSourceOpen, RusticResult, SnapshotOptions, StringList,
};

mod archiver;
mod chunker;
mod disk;
mod packer;

use disk::{prepare_disks, DiskSource};

use crate::repo::{concise, find_snapshot, guarded, map_err, open_with};
use crate::{
    BackupOptions, BackupOutcome, Error, JobContext, Phase, Progress, RepoConfig, Result, Source,
    Warning,
};

/// State shared between rustic_core's worker threads and the job's monitor thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set (once) when the job is cancelled; also vetoes the snapshot write.
    pub(crate) cancelled: Arc<AtomicBool>,
    /// Bytes the archiver reports processed (read and chunked, or unchanged since the parent).
    pub(crate) bytes_done: AtomicU64,
    /// Bytes read from the source so far (leads `bytes_done` while files are being chunked).
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_total: AtomicU64,
    pub(crate) files_done: AtomicU64,
    pub(crate) files_total: AtomicU64,
    pub(crate) scanned: AtomicBool,
    pub(crate) entries_done: AtomicBool,
    pub(crate) warnings: Mutex<Vec<Warning>>,
    throttle: Option<Throttle>,
}

impl Shared {
    fn warn(&self, path: impl Into<String>, reason: impl Into<String>) {
        self.warnings.lock().expect("warnings lock").push(Warning {
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn done_bytes(&self) -> u64 {
        self.bytes_done
            .load(Ordering::Relaxed)
            .max(self.bytes_read.load(Ordering::Relaxed))
    }

    fn phase(&self) -> Phase {
        let scanned = self.scanned.load(Ordering::SeqCst);
        if scanned
            && self.entries_done.load(Ordering::SeqCst)
            && self.done_bytes() >= self.bytes_total.load(Ordering::Relaxed)
        {
            Phase::Snapshotting
        } else if scanned {
            Phase::Transferring
        } else {
            Phase::Scanning
        }
    }

    fn progress(&self) -> Progress {
        Progress {
            phase: self.phase(),
            bytes_done: self.done_bytes(),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
        }
    }
}

/// Token bucket over all reads of one job.
#[derive(Debug)]
struct Throttle {
    rate: u64,
    state: Mutex<(Instant, u64)>,
}

impl Throttle {
    /// Waits until `n` more bytes may be read; returns false if cancelled while waiting.
    fn acquire(&self, n: u64, cancelled: &AtomicBool) -> bool {
        let wait = {
            let mut st = self.state.lock().expect("throttle lock");
            let now = Instant::now();
            // Credit from idle time (opening the repository, a pause) is capped at 1/4 s, so
            // the limit holds from the first byte.
            let credit = Duration::from_millis(250);
            let ahead = Duration::from_secs_f64(st.1 as f64 / self.rate as f64);
            if now.duration_since(st.0) > ahead + credit {
                st.0 = now - ahead - credit;
            }
            st.1 += n;
            let due = Duration::from_secs_f64(st.1 as f64 / self.rate as f64);
            due.saturating_sub(now.duration_since(st.0))
        };
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if cancelled.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        true
    }
}

/// A reader that stops on cancellation, honours the throttle and reports read errors and files
/// that changed while they were read.
struct GuardedReader {
    file: File,
    shared: Arc<Shared>,
    /// Path as the warning shows it (relative to the source root, or the disk path).
    display: String,
    /// Path to stat at EOF for the change check; None for block devices.
    stat_path: Option<PathBuf>,
    expected_size: u64,
    expected_mtime: Option<Timestamp>,
    read: u64,
    /// A warning was issued or the read failed: no change check at the end.
    reported: bool,
}

impl Drop for GuardedReader {
    fn drop(&mut self) {
        // The chunker may stop at the expected size without reading EOF: check here too.
        if !self.shared.is_cancelled() {
            self.check_changed();
        }
    }
}

impl Read for GuardedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.shared.is_cancelled() {
            return Err(io::Error::other("backup cancelled"));
        }
        let want = buf.len().min(1 << 20);
        match self.file.read(&mut buf[..want]) {
            Ok(0) => {
                self.check_changed();
                Ok(0)
            }
            Ok(n) => {
                // The limit is charged for what was read, not what was asked for: a large
                // buffer near the end of a file must not wait for bytes it will not get.
                if let Some(t) = &self.shared.throttle {
                    if !t.acquire(n as u64, &self.shared.cancelled) {
                        return Err(io::Error::other("backup cancelled"));
                    }
                }
                self.read += n as u64;
                self.shared
                    .bytes_read
                    .fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                if !self.reported && !self.shared.is_cancelled() {
                    self.reported = true;
                    self.shared
                        .warn(&self.display, format!("read error, not backed up: {e}"));
                }
                Err(e)
            }
        }
    }
}

impl GuardedReader {
    fn check_changed(&mut self) {
        if self.reported {
            return;
        }
        self.reported = true;
        let Some(path) = &self.stat_path else {
            return;
        };
        let now = fs::symlink_metadata(path).ok();
        let changed = self.read != self.expected_size
            || now.as_ref().is_some_and(|m| {
                m.len() != self.expected_size || mtime_of(m) != self.expected_mtime
            });
        if changed {
            self.shared.warn(
                &self.display,
                format!(
                    "file changed during read ({} bytes read, {} expected); the snapshot holds the bytes as read",
                    self.read, self.expected_size
                ),
            );
        }
    }
}

fn mtime_of(m: &fs::Metadata) -> Option<Timestamp> {
    m.modified().ok().and_then(|t| Timestamp::try_from(t).ok())
}

fn display_rel(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// Directory source

struct DirSource {
    root: PathBuf,
    inner: LocalSource,
    shared: Arc<Shared>,
}

struct DirOpen {
    abs: PathBuf,
    rel: String,
    size: u64,
    mtime: Option<Timestamp>,
    /// What the walk saw: the read must be of this inode (and device, when the walk recorded
    /// it), never of something swapped in since.
    inode: u64,
    device_id: u64,
    shared: Arc<Shared>,
}

/// Why a file is not the one the walk saw, if it is not.
const SWAPPED: &str = "not backed up: it was replaced after the directory walk (a symbolic link or another file was swapped in), and what replaced it is not read";

/// Opens `abs` for reading without following any symlink on the way (the source root is
/// canonical, so a symlink in the path can only have been swapped in) and without blocking on
/// a FIFO swapped in, and checks it is the regular file the walk saw.
fn open_walked(abs: &Path, inode: u64, device_id: u64) -> io::Result<File> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(nix::fcntl::AT_FDCWD, abs, how) {
        // Kernels before 5.6: the last component at least, and the inode check below.
        Err(nix::errno::Errno::ENOSYS) => {
            nix::fcntl::open(abs, flags, nix::sys::stat::Mode::empty())
        }
        other => other,
    };
    let file = match fd {
        Ok(fd) => File::from(fd),
        Err(nix::errno::Errno::ELOOP) => return Err(io::Error::other(SWAPPED)),
        Err(e) => return Err(e.into()),
    };
    let m = file.metadata()?;
    if !m.is_file() || m.ino() != inode || (device_id != 0 && m.dev() != device_id) {
        return Err(io::Error::other(SWAPPED));
    }
    Ok(file)
}

impl ReadSourceOpen for DirOpen {
    type Reader = GuardedReader;

    fn open(self) -> RusticResult<Self::Reader> {
        if self.shared.is_cancelled() {
            return Err(rustic_core::RusticError::new(
                rustic_core::ErrorKind::Other,
                "backup cancelled",
            ));
        }
        crate::failpoint::hit("backup.open", &self.abs.to_string_lossy());
        // Opened here rather than through rustic's `OpenFile` to keep the plain I/O error, and
        // to read only what the walk saw.
        let file = match open_walked(&self.abs, self.inode, self.device_id) {
            Ok(f) => f,
            Err(e) => {
                let reason = if e.to_string() == SWAPPED {
                    SWAPPED.to_string()
                } else {
                    format!("unreadable, not backed up: {e}")
                };
                self.shared.warn(&self.rel, reason);
                return Err(rustic_core::RusticError::with_source(
                    rustic_core::ErrorKind::InputOutput,
                    "Failed to open file `{path}`.",
                    e,
                )
                .attach_context("path", self.abs.display().to_string()));
            }
        };
        Ok(GuardedReader {
            file,
            shared: self.shared,
            display: self.rel,
            stat_path: Some(self.abs),
            expected_size: self.size,
            expected_mtime: self.mtime,
            read: 0,
            reported: false,
        })
    }
}

struct DirIter {
    inner: <LocalSource as ReadSource>::Iter,
    root: PathBuf,
    shared: Arc<Shared>,
}

impl Iterator for DirIter {
    type Item = RusticResult<ReadSourceEntry<DirOpen>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.shared.is_cancelled() {
            return None;
        }
        let Some(item) = self.inner.next() else {
            self.shared.entries_done.store(true, Ordering::SeqCst);
            return None;
        };
        Some(match item {
            Err(e) => {
                self.shared.warn(
                    self.root.display().to_string(),
                    format!("entry skipped: {}", concise(&e.to_string())),
                );
                Err(e)
            }
            Ok(ReadSourceEntry { path, node, open }) => {
                let rel = path.strip_prefix(&self.root).unwrap_or(&path).to_path_buf();
                if !node.is_dir() {
                    self.shared.files_done.fetch_add(1, Ordering::Relaxed);
                }
                let open = open.map(|_| DirOpen {
                    abs: path.clone(),
                    rel: display_rel(&rel),
                    size: node.meta.size,
                    mtime: node.meta.mtime,
                    inode: node.meta.inode,
                    device_id: node.meta.device_id,
                    shared: self.shared.clone(),
                });
                Ok(ReadSourceEntry {
                    path: rel,
                    node,
                    open,
                })
            }
        })
    }
}

/// Counts files and bytes below `dir` without following symlinks.
///
/// It runs next to the walk that feeds the archiver, on the same 2 cores, so it stats only
/// regular files, and relative to their directory (`DirEntry::metadata` is an `fstatat` on the
/// open directory): the type comes from the directory entry, and a path lookup from the root
/// for every entry cost more than the stat itself (perf, no-change backup of 30k files).
fn scan(dir: &Path, shared: &Shared) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        if shared.is_cancelled() {
            return;
        }
        let Ok(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            scan(&entry.path(), shared);
            continue;
        }
        shared.files_total.fetch_add(1, Ordering::Relaxed);
        if ft.is_file() {
            if let Ok(m) = entry.metadata() {
                shared.bytes_total.fetch_add(m.len(), Ordering::Relaxed);
            }
        }
    }
}

impl ReadSource for DirSource {
    type Open = DirOpen;
    type Iter = DirIter;

    fn size(&self) -> RusticResult<Option<u64>> {
        scan(&self.root, &self.shared);
        self.shared.scanned.store(true, Ordering::SeqCst);
        Ok(Some(self.shared.bytes_total.load(Ordering::Relaxed)))
    }

    fn entries(&self) -> Self::Iter {
        DirIter {
            inner: self.inner.entries(),
            root: self.root.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// Runs `work` while a monitor thread forwards cancellation, progress (every 250 ms) and warnings
/// between `shared` and `ctx`.
pub(crate) fn monitored<T>(
    shared: &Shared,
    ctx: &dyn JobContext,
    phase_override: Option<&(dyn Fn() -> Phase + Sync)>,
    work: impl FnOnce() -> T + Send,
) -> T
where
    T: Send,
{
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let monitor = s.spawn(|| {
            let mut forwarded = 0;
            let mut last_progress = Instant::now() - Duration::from_secs(1);
            loop {
                let finished = done.load(Ordering::SeqCst);
                if ctx.is_cancelled() {
                    shared.cancelled.store(true, Ordering::SeqCst);
                }
                let new: Vec<Warning> = {
                    let w = shared.warnings.lock().expect("warnings lock");
                    w[forwarded..].to_vec()
                };
                forwarded += new.len();
                for w in new {
                    ctx.warn(w);
                }
                if finished || last_progress.elapsed() >= Duration::from_millis(250) {
                    let mut p = shared.progress();
                    if let Some(f) = phase_override {
                        p.phase = f();
                    }
                    ctx.progress(&p);
                    last_progress = Instant::now();
                }
                if finished {
                    break;
                }
                // Woken early when the work is done: the caller waits for this thread.
                std::thread::park_timeout(Duration::from_millis(50));
            }
        });
        let out = work();
        done.store(true, Ordering::SeqCst);
        monitor.thread().unpark();
        monitor.join().expect("monitor thread");
        out
    })
}

/// Backs up `source` into the repository. See the crate docs for the layout of snapshot paths.
pub fn backup(
    repo: &RepoConfig,
    source: &Source,
    opts: &BackupOptions,
    ctx: &dyn JobContext,
) -> Result<BackupOutcome> {
    let shared = Arc::new(Shared {
        throttle: opts
            .bytes_per_second
            .filter(|r| *r > 0)
            .map(|rate| Throttle {
                rate,
                state: Mutex::new((Instant::now(), 0)),
            }),
        ..Shared::default()
    });
    if ctx.is_cancelled() {
        return Err(Error::Cancelled);
    }

    let r = open_with(repo, shared.cancelled.clone(), None)?;
    let be = guarded(repo, shared.cancelled.clone(), false)?;

    let parent = match &opts.parent {
        Some(parent) => match find_snapshot(&r, parent) {
            Ok(snap) => Some(snap),
            // The parent only saves reading; without it the backup is a full one.
            Err(Error::SnapshotNotFound(_)) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };

    let mut sopts = SnapshotOptions::default();
    sopts.host = opts.host.clone();
    for tag in &opts.tags {
        let mut l = StringList::default();
        l.add(tag.clone());
        sopts.tags.push(l);
    }
    let snap = rustic_core::repofile::SnapshotFile::from_options(&sopts).map_err(map_err)?;

    let result = match source {
        Source::Directory { path } => {
            let root = fs::canonicalize(path).map_err(|e| {
                Error::SourceUnavailable(format!("directory '{}': {e}", path.display()))
            })?;
            if !root.is_dir() {
                return Err(Error::SourceUnavailable(format!(
                    "'{}' is not a directory",
                    path.display()
                )));
            }
            let inner = LocalSource::new(
                LocalSourceSaveOptions::default(),
                &Excludes::default(),
                &LocalSourceFilterOptions::default(),
                &[&root],
            )
            .map_err(map_err)?;
            let src = DirSource {
                root: root.clone(),
                inner,
                shared: shared.clone(),
            };
            monitored(&shared, ctx, None, || {
                archiver::archive(
                    &r,
                    be,
                    &src,
                    std::slice::from_ref(&root),
                    parent.as_ref(),
                    snap,
                    &shared,
                )
            })
        }
        Source::Disks { paths } => {
            if paths.is_empty() {
                return Err(Error::SourceUnavailable("no disks given".into()));
            }
            let disks = prepare_disks(paths, &shared)?;
            let backup_paths: Vec<PathBuf> = disks.iter().map(|d| d.path.clone()).collect();
            if backup_paths.is_empty() {
                return Err(Error::SourceUnavailable(
                    "none of the given disks is a regular file or block device".into(),
                ));
            }
            let src = DiskSource {
                disks,
                shared: shared.clone(),
            };
            monitored(&shared, ctx, None, || {
                archiver::archive(&r, be, &src, &backup_paths, parent.as_ref(), snap, &shared)
            })
        }
    };

    if shared.is_cancelled() && result.is_err() {
        return Err(Error::Cancelled);
    }
    let snap = result?;
    let summary = snap.summary.clone().unwrap_or_default();
    let warnings = shared.warnings.lock().expect("warnings lock").clone();
    Ok(BackupOutcome {
        snapshot_id: snap.id.to_hex().to_string(),
        files: summary.total_files_processed,
        bytes_total: summary.total_bytes_processed,
        bytes_added: summary.data_added_packed,
        warnings,
    })
}
