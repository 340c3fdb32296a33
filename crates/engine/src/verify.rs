//! Repository verification: rustic_core's `check` (structure, and pack data re-read and
//! authenticated, all or a sample), then a walk of every snapshot's trees that turns damaged or
//! missing packs and blobs into the snapshots and files they break.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use rustic_core::repofile::{BlobType, SnapshotFile};
use rustic_core::{
    BlobId, CheckOptions, DataId, IndexedFullStatus, ReadSubsetOption, Repository, TreeId,
};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustic_core::{ProgressBars, ProgressType, RusticProgress};

use crate::backup::{monitored, Shared};
use crate::repo::{concise, open, open_with};
use crate::{JobContext, Phase, RepoConfig, Result, VerifyReport};

/// The pack a check finding is about: rustic_core does not export its finding types, so the
/// id is taken from the message, whose pack findings all read "pack <id>" with the id shortened
/// to its first 8 hex digits (rustic's `Display`); compared below with the same short form.
fn damaged_pack(msg: &str) -> Option<String> {
    let mut rest = msg;
    while let Some(i) = rest.find("pack ") {
        let cand = &rest[i + 5..];
        let hex: String = cand.chars().take_while(char::is_ascii_hexdigit).collect();
        if hex.len() >= 8 {
            return Some(hex[..8].to_string());
        }
        rest = cand;
    }
    None
}

/// Verifies the repository. `read_data_percent`: `None` re-reads and authenticates every pack,
/// `Some(p)` a random p% sample of them (`Some(0)`: structure only, no pack data read).
///
/// A repository that cannot be opened (wrong key, no config) is an `Err`; damage found inside
/// it is reported in the [`VerifyReport`].
pub fn verify(repo: &RepoConfig, read_data_percent: Option<u8>) -> Result<VerifyReport> {
    check_and_walk(open(repo)?, read_data_percent, &|check| check())
}

/// [`verify`], reporting progress through `ctx` while pack data is read (phase `Verifying`,
/// bytes of the packs to read as the total).
pub fn verify_reporting(
    repo: &RepoConfig,
    read_data_percent: Option<u8>,
    ctx: &dyn JobContext,
) -> Result<VerifyReport> {
    let shared = Arc::new(Shared::default());
    let bars: Arc<dyn ProgressBars> = Arc::new(PackBytes(shared.clone()));
    let r = open_with(repo, Arc::new(AtomicBool::new(false)), Some(bars))?;
    check_and_walk(r, read_data_percent, &|check| {
        monitored(&shared, ctx, Some(&|| Phase::Verifying), check)
    })
}

/// Forwards rustic's byte progress (the pack data `check` reads) into the job's counters.
#[derive(Debug)]
struct PackBytes(Arc<Shared>);

#[derive(Debug)]
struct PackCounter(Arc<Shared>);

impl RusticProgress for PackCounter {
    fn is_hidden(&self) -> bool {
        false
    }
    fn set_length(&self, len: u64) {
        self.0.bytes_total.store(len, Ordering::Relaxed);
    }
    fn set_title(&self, _title: &str) {}
    fn inc(&self, inc: u64) {
        self.0.bytes_done.fetch_add(inc, Ordering::Relaxed);
    }
    fn finish(&self) {}
}

impl ProgressBars for PackBytes {
    fn progress(&self, progress_type: ProgressType, _prefix: &str) -> rustic_core::Progress {
        match progress_type {
            ProgressType::Bytes => rustic_core::Progress::new(PackCounter(self.0.clone())),
            _ => rustic_core::Progress::hidden(),
        }
    }
}

type CheckResult = std::thread::Result<rustic_core::RusticResult<rustic_core::CheckResults>>;

fn check_and_walk(
    r: Repository<rustic_core::OpenStatus>,
    read_data_percent: Option<u8>,
    around: &dyn Fn(&mut (dyn FnMut() -> CheckResult + Send)) -> CheckResult,
) -> Result<VerifyReport> {
    let mut opts = CheckOptions::default();
    match read_data_percent {
        None => opts.read_data = true,
        Some(0) => {}
        Some(p) => {
            opts.read_data = true;
            opts.read_data_subset = if p >= 100 {
                ReadSubsetOption::All
            } else {
                ReadSubsetOption::Percentage(f64::from(p))
            };
        }
    }

    let mut report = VerifyReport::default();
    let mut damaged_packs: HashSet<String> = HashSet::new();
    let mut check = || catch_unwind(AssertUnwindSafe(|| r.check(opts)));
    match around(&mut check) {
        Ok(Ok(results)) => {
            for (level, err) in &results.0 {
                if format!("{level:?}") == "Error" {
                    let msg = concise(&err.to_string());
                    if let Some(id) = damaged_pack(&msg) {
                        damaged_packs.insert(id);
                    }
                    report.errors.push(msg);
                }
            }
        }
        Ok(Err(e)) => report.errors.push(concise(&format!("check failed: {e}"))),
        Err(_) => report
            .errors
            .push("check failed: rustic_core panicked while checking".into()),
    }

    if !report.errors.is_empty() {
        match r.to_indexed() {
            Ok(r) => {
                let snaps = match r.get_all_snapshots() {
                    Ok(s) => s,
                    Err(e) => {
                        report
                            .errors
                            .push(concise(&format!("snapshots unreadable: {e}")));
                        Vec::new()
                    }
                };
                let mut walker = Walker {
                    r: &r,
                    damaged_packs: &damaged_packs,
                    memo: HashMap::new(),
                    blobs: HashMap::new(),
                };
                let mut damaged_snaps = BTreeSet::new();
                let mut damaged_files = BTreeSet::new();
                for snap in &snaps {
                    let found = walker.tree(snap.tree);
                    if !found.is_empty() {
                        damaged_snaps.insert(snap.id.to_hex().to_string());
                        for f in found {
                            let f = if f.is_empty() { "/".to_string() } else { f };
                            damaged_files.insert(format!("{}:{f}", short(snap)));
                        }
                    }
                }
                report.damaged_snapshots = damaged_snaps.into_iter().collect();
                report.damaged_files = damaged_files.into_iter().collect();
            }
            Err(e) => report
                .errors
                .push(format!("index unreadable, damaged snapshots unknown: {e}")),
        }
    }
    report.ok = report.errors.is_empty();
    Ok(report)
}

fn short(snap: &SnapshotFile) -> String {
    snap.id.to_hex().to_string()
}

struct Walker<'a> {
    r: &'a Repository<IndexedFullStatus>,
    damaged_packs: &'a HashSet<String>,
    /// Damaged paths (relative to the tree) per tree id: snapshots share most of their trees.
    memo: HashMap<TreeId, Vec<String>>,
    blobs: HashMap<DataId, bool>,
}

impl Walker<'_> {
    /// A blob is damaged if the index lacks it, or if it lies in a damaged pack and cannot be
    /// read back and authenticated (one flipped byte breaks one blob, not the whole pack).
    fn blob_damaged(&mut self, id: DataId) -> bool {
        if let Some(b) = self.blobs.get(&id) {
            return *b;
        }
        let bad = match self.r.get_index_entry(&id) {
            Err(_) => true,
            Ok(ie) => {
                self.damaged_packs.contains(&ie.pack.to_string())
                    && self
                        .r
                        .get_blob_cached(&BlobId::from(id), BlobType::Data)
                        .is_err()
            }
        };
        self.blobs.insert(id, bad);
        bad
    }

    fn tree(&mut self, id: TreeId) -> Vec<String> {
        if let Some(v) = self.memo.get(&id) {
            return v.clone();
        }
        let mut out = Vec::new();
        match self.r.get_tree(&id) {
            // An unreadable directory is reported as itself (an empty relative path).
            Err(_) => out.push(String::new()),
            Ok(tree) => {
                for node in &tree.nodes {
                    let name = node.name().to_string_lossy().into_owned();
                    if node.is_dir() {
                        match node.subtree {
                            Some(sub) => {
                                for p in self.tree(sub) {
                                    out.push(format!("{name}/{p}"));
                                }
                            }
                            None => out.push(format!("{name}/")),
                        }
                    } else if node.is_file() {
                        let bad = node
                            .content
                            .iter()
                            .flatten()
                            .any(|blob| self.blob_damaged(*blob));
                        if bad {
                            out.push(name);
                        }
                    }
                }
            }
        }
        self.memo.insert(id, out.clone());
        out
    }
}
