//! Restore drills: prove that a snapshot restores, by restoring a sample of its files through the
//! ordinary restore path into scratch space and comparing what was written, chunk by chunk, with
//! the content hashes the snapshot records (restic data blob ids are the SHA-256 of the chunk's
//! plaintext). Large files (disk images) are not restored whole: a sample of their ranges (chunks,
//! at the same share) is read from the repository, written at its offset into a scratch file, read
//! back and compared. The scratch space is removed afterwards, whatever the outcome.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustic_core::repofile::{BlobType, Node};
use rustic_core::{BlobId, LsOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::repo::{find_snapshot, map_err, open};
use crate::{Conflict, Error, JobContext, RepoConfig, RestoreScope, RestoreSpec, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillSpec {
    pub snapshot_id: String,
    /// An empty or missing directory the drill may fill and removes afterwards.
    pub scratch: PathBuf,
    /// Share of the snapshot's files to restore, in percent (at least one file).
    pub sample_percent: u8,
    /// Chooses the sample: drills with different seeds look at different files.
    pub seed: u64,
    /// Files larger than this are checked by a sample of their ranges rather than restored whole
    /// (every such file is checked); smaller ones are sampled by count.
    #[serde(default = "default_ranged_above")]
    pub ranged_above_bytes: u64,
}

/// Disk images and other files above 64 MiB are checked by ranges.
pub const RANGED_ABOVE_BYTES: u64 = 64 << 20;

fn default_ranged_above() -> u64 {
    RANGED_ABOVE_BYTES
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrillReport {
    /// Files restored and compared.
    pub files: u64,
    /// Bytes compared.
    pub bytes: u64,
    /// Of `files`, the large ones checked by a sample of their ranges.
    #[serde(default)]
    pub ranged_files: u64,
    /// What did not restore as recorded (empty: proven restorable).
    pub mismatches: Vec<String>,
}

/// A cheap, stable mix of `seed`, a path and a chunk index: the sample is the files (or a file's
/// chunks) with the smallest ones.
fn rank(seed: u64, path: &Path, chunk: usize) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(path.as_os_str().as_encoded_bytes());
    h.update((chunk as u64).to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// How many of `n` things a `percent` sample takes (at least one of a non-empty set).
fn share(n: usize, percent: u8) -> usize {
    (n * usize::from(percent.clamp(1, 100)))
        .div_ceil(100)
        .max(1)
}

pub fn drill(repo: &RepoConfig, spec: &DrillSpec, ctx: &dyn JobContext) -> Result<DrillReport> {
    let result = run(repo, spec, ctx);
    // Scratch space never outlives the drill.
    if spec.scratch.exists() {
        std::fs::remove_dir_all(&spec.scratch).map_err(|e| {
            Error::Repository(format!(
                "removing the drill's scratch space {}: {e}",
                spec.scratch.display()
            ))
        })?;
    }
    result
}

fn run(repo: &RepoConfig, spec: &DrillSpec, ctx: &dyn JobContext) -> Result<DrillReport> {
    let r = open(repo)?;
    let snap = find_snapshot(&r, &spec.snapshot_id)?;
    let r = r.to_indexed().map_err(map_err)?;
    let root = r
        .node_from_path(snap.tree, Path::new(""))
        .map_err(map_err)?;
    let mut files: Vec<(PathBuf, Node)> = Vec::new();
    for item in r.ls(&root, &LsOptions::default()).map_err(map_err)? {
        let (path, node) = item.map_err(map_err)?;
        if node.is_file() {
            files.push((path, node));
        }
    }
    let (ranged, mut files): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|(_, n)| n.meta.size > spec.ranged_above_bytes);
    let mut report = DrillReport::default();
    if files.is_empty() && ranged.is_empty() {
        return Ok(report);
    }
    std::fs::create_dir_all(&spec.scratch).map_err(|e| {
        Error::Repository(format!(
            "creating the drill's scratch space {}: {e}",
            spec.scratch.display()
        ))
    })?;
    for (path, node) in &ranged {
        check_ranges(&r, spec, path, node, &mut report, ctx)?;
    }
    if files.is_empty() {
        return Ok(report);
    }
    let want = share(files.len(), spec.sample_percent);
    files.sort_by_key(|(p, _)| rank(spec.seed, p, 0));
    files.truncate(want);
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let target = spec.scratch.join("restore");
    let restore = RestoreSpec {
        snapshot_id: snap.id.to_hex().to_string(),
        paths: files
            .iter()
            .map(|(p, _)| p.to_string_lossy().into_owned())
            .collect(),
        target: target.clone(),
        conflict: Conflict::Overwrite,
    };
    let scope = RestoreScope {
        root: Some(spec.scratch.clone()),
        original_location: false,
    };
    if let Err(e) = crate::restore_scoped(repo, &restore, &scope, ctx) {
        if matches!(e, Error::Cancelled) {
            return Err(e);
        }
        report.mismatches.push(format!("the restore failed: {e}"));
        return Ok(report);
    }
    for (path, node) in &files {
        if ctx.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let name = path.display();
        let mut f = match std::fs::File::open(target.join(path)) {
            Ok(f) => f,
            Err(e) => {
                report
                    .mismatches
                    .push(format!("{name}: not restored ({e})"));
                continue;
            }
        };
        let mut offset = 0u64;
        let mut buf = Vec::new();
        let mut bad = None;
        for blob in node.content.iter().flatten() {
            let len = r.get_index_entry(blob).map_err(map_err)?.data_length() as usize;
            buf.resize(len, 0);
            if let Err(e) = f.read_exact(&mut buf) {
                bad = Some(format!(
                    "{name}: shorter than recorded at byte {offset} ({e})"
                ));
                break;
            }
            if hex(&Sha256::digest(&buf)) != blob.to_hex().to_string() {
                bad = Some(format!(
                    "{name}: the {len} bytes at offset {offset} differ from the snapshot"
                ));
                break;
            }
            offset += len as u64;
        }
        if bad.is_none() && (offset != node.meta.size || f.read(&mut [0u8; 1]).unwrap_or(0) > 0) {
            bad = Some(format!(
                "{name}: {offset} bytes restored match, the snapshot records {}",
                node.meta.size
            ));
        }
        report.files += 1;
        report.bytes += offset;
        report.mismatches.extend(bad);
    }
    Ok(report)
}

/// Checks a sample of a large file's chunks: each is read from the repository, written at its
/// offset into a scratch file, read back and compared with its content hash.
fn check_ranges<S: rustic_core::IndexedFull>(
    r: &rustic_core::Repository<S>,
    spec: &DrillSpec,
    path: &Path,
    node: &Node,
    report: &mut DrillReport,
    ctx: &dyn JobContext,
) -> Result<()> {
    let name = path.display();
    let content = node.content.as_deref().unwrap_or_default();
    let mut offsets = Vec::with_capacity(content.len());
    let mut end = 0u64;
    for blob in content {
        offsets.push(end);
        end += u64::from(r.get_index_entry(blob).map_err(map_err)?.data_length());
    }
    if end != node.meta.size {
        report.mismatches.push(format!(
            "{name}: its chunks add up to {end} bytes, the snapshot records {}",
            node.meta.size
        ));
    }
    let mut chosen: Vec<usize> = (0..content.len()).collect();
    chosen.sort_by_key(|&i| rank(spec.seed, path, i));
    chosen.truncate(share(content.len(), spec.sample_percent));
    chosen.sort_unstable();
    let scratch = spec.scratch.join(format!("range-{}", report.files));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&scratch)
        .map_err(|e| Error::Repository(format!("creating {}: {e}", scratch.display())))?;
    let mut back = Vec::new();
    for i in chosen {
        if ctx.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let offset = offsets[i];
        let data = match r.get_blob_cached(&BlobId::from(content[i]), BlobType::Data) {
            Ok(d) => d,
            Err(e) => {
                report.mismatches.push(format!(
                    "{name}: the range at offset {offset} does not restore ({e})"
                ));
                continue;
            }
        };
        back.resize(data.len(), 0);
        let written = file
            .write_all_at(&data, offset)
            .and_then(|()| file.read_exact_at(&mut back, offset));
        if let Err(e) = written {
            return Err(Error::Repository(format!(
                "writing the drill's scratch file {}: {e}",
                scratch.display()
            )));
        }
        if hex(&Sha256::digest(&back)) != content[i].to_hex().to_string() {
            report.mismatches.push(format!(
                "{name}: the {} bytes at offset {offset} differ from the snapshot",
                data.len()
            ));
        }
        report.bytes += data.len() as u64;
    }
    drop(file);
    let _ = std::fs::remove_file(&scratch);
    report.files += 1;
    report.ranged_files += 1;
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
