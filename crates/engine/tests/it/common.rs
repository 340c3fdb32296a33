use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rsvault_engine::{
    BackupOptions, BackupOutcome, Conflict, JobContext, Progress, RepoConfig, RestoreOutcome,
    RestoreSpec, Source, Warning,
};

pub const PASSWORD: &str = "correct horse battery staple";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rsvault-engine"))
}

/// A job context that records everything and cancels on demand.
#[derive(Default)]
pub struct TestCtx {
    pub cancel: AtomicBool,
    /// Cancel as soon as this many bytes are reported done (0: never).
    pub cancel_after_bytes: AtomicU64,
    pub cancelled_at: Mutex<Option<Instant>>,
    /// Cancel at the first progress report.
    pub cancel_on_progress: AtomicBool,
    pub progress: Mutex<Vec<Progress>>,
    pub warnings: Mutex<Vec<Warning>>,
}

impl TestCtx {
    pub fn cancel_now(&self) {
        *self.cancelled_at.lock().unwrap() = Some(Instant::now());
        self.cancel.store(true, Ordering::SeqCst);
    }
    pub fn warnings(&self) -> Vec<Warning> {
        self.warnings.lock().unwrap().clone()
    }
}

impl JobContext for TestCtx {
    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
    fn progress(&self, p: &Progress) {
        let limit = self.cancel_after_bytes.load(Ordering::SeqCst);
        let first = self.cancel_on_progress.load(Ordering::SeqCst);
        if (first || (limit > 0 && p.bytes_done >= limit)) && !self.is_cancelled() {
            self.cancel_now();
        }
        self.progress.lock().unwrap().push(p.clone());
    }
    fn warn(&self, w: Warning) {
        self.warnings.lock().unwrap().push(w);
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub repo: RepoConfig,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoConfig {
            path: dir.path().join("repo"),
            password: PASSWORD.into(),
            master_key: None,
            store: None,
        };
        rsvault_engine::init(&repo).unwrap();
        Self { dir, repo }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn backup_dir(&self, src: &Path, parent: Option<&str>) -> BackupOutcome {
        let ctx = TestCtx::default();
        rsvault_engine::backup(
            &self.repo,
            &Source::Directory { path: src.into() },
            &BackupOptions {
                parent: parent.map(str::to_owned),
                ..BackupOptions::default()
            },
            &ctx,
        )
        .unwrap()
    }
    pub fn restore(&self, snap: &str, paths: &[&str], target: &Path) -> RestoreOutcome {
        rsvault_engine::restore(
            &self.repo,
            &RestoreSpec {
                snapshot_id: snap.into(),
                paths: paths.iter().map(|s| s.to_string()).collect(),
                target: target.into(),
                conflict: Conflict::Fail,
            },
            &TestCtx::default(),
        )
        .unwrap()
    }
    /// A restore as into the place the data came from: setuid bits and FIFOs come back.
    pub fn restore_original(&self, snap: &str, target: &Path) -> RestoreOutcome {
        rsvault_engine::restore_scoped(
            &self.repo,
            &RestoreSpec {
                snapshot_id: snap.into(),
                paths: vec![],
                target: target.into(),
                conflict: Conflict::Fail,
            },
            &rsvault_engine::RestoreScope {
                root: None,
                original_location: true,
            },
            &TestCtx::default(),
        )
        .unwrap()
    }
    pub fn repo_size(&self) -> u64 {
        du(&self.repo.path)
    }
}

pub fn du(p: &Path) -> u64 {
    let mut total = 0;
    for e in walk(p) {
        let m = fs::symlink_metadata(&e).unwrap();
        if m.is_file() {
            total += m.len();
        }
    }
    total
}

pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        out.push(e.clone());
        if fs::symlink_metadata(&e).unwrap().is_dir() {
            out.extend(walk(&e));
        }
    }
    out.sort();
    out
}

/// Everything a restore must reproduce, per relative path.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    Dir {
        mode: u32,
        mtime: i64,
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        content: Vec<u8>,
    },
    Symlink {
        target: PathBuf,
        mtime: i64,
    },
    Fifo {
        mode: u32,
    },
}

pub fn snapshot_of(root: &Path) -> BTreeMap<OsString, Item> {
    let mut map = BTreeMap::new();
    for p in walk(root) {
        let rel = p.strip_prefix(root).unwrap().as_os_str().to_owned();
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let mode = m.permissions().mode() & 0o7777;
        let item = if ft.is_dir() {
            Item::Dir {
                mode,
                mtime: m.mtime(),
            }
        } else if ft.is_symlink() {
            Item::Symlink {
                target: fs::read_link(&p).unwrap(),
                mtime: m.mtime(),
            }
        } else if ft.is_file() {
            Item::File {
                mode,
                mtime: (m.mtime(), m.mtime_nsec()),
                content: fs::read(&p).unwrap(),
            }
        } else {
            Item::Fifo { mode }
        };
        map.insert(rel, item);
    }
    map
}

pub fn assert_same_tree(a: &Path, b: &Path) {
    let sa = snapshot_of(a);
    let sb = snapshot_of(b);
    let ka: Vec<_> = sa.keys().collect();
    let kb: Vec<_> = sb.keys().collect();
    assert_eq!(ka, kb, "different entries");
    for (k, va) in &sa {
        assert!(va == &sb[k], "entry {k:?} differs");
    }
}

pub fn set_mtime(p: &Path, secs: i64, nsecs: i64) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, nsecs);
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible, reproducible, fast.
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

pub fn allocated(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}
