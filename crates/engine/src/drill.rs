//! Restore drills: prove that a snapshot restores, by restoring a sample of its files through the
//! ordinary restore path into scratch space and comparing what was written, chunk by chunk, with
//! the content hashes the snapshot records (restic data blob ids are the SHA-256 of the chunk's
//! plaintext). The scratch space is removed afterwards, whatever the outcome.

use std::io::Read;
use std::path::{Path, PathBuf};

use rustic_core::repofile::Node;
use rustic_core::LsOptions;
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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrillReport {
    /// Files restored and compared.
    pub files: u64,
    /// Bytes compared.
    pub bytes: u64,
    /// What did not restore as recorded (empty: proven restorable).
    pub mismatches: Vec<String>,
}

/// A cheap, stable mix of `seed` and a path: the sample is the files with the smallest ones.
fn rank(seed: u64, path: &Path) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(path.as_os_str().as_encoded_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
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
    if files.is_empty() {
        return Ok(DrillReport::default());
    }
    let want = (files.len() * usize::from(spec.sample_percent.clamp(1, 100))).div_ceil(100);
    files.sort_by_key(|(p, _)| rank(spec.seed, p));
    files.truncate(want.max(1));
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let target = spec.scratch.join("restore");
    std::fs::create_dir_all(&spec.scratch).map_err(|e| {
        Error::Repository(format!(
            "creating the drill's scratch space {}: {e}",
            spec.scratch.display()
        ))
    })?;
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
    let mut report = DrillReport::default();
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
