//! Restore of a whole snapshot or a subset of its paths into a target directory.
//!
//! rustic_core's own restore unwraps I/O errors (a full disk panics), cannot be cancelled and
//! queues every pack read at once (1–1.6 GiB peak). rsvault uses rustic_core only to read trees
//! and blobs, and writes files itself: a fixed number of threads, each holding at most one blob,
//! pre-sized sparse files whose zero blobs are never written, a cancel check per blob, and
//! errors instead of panics.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustic_core::repofile::{BlobType, Node, NodeType};
use rustic_core::{BlobId, IndexedFullStatus, LsOptions, Repository};

use crate::backup::{monitored, Shared};
use crate::repo::{find_snapshot, map_err, open};
use crate::{
    Conflict, Error, JobContext, Phase, RepoConfig, RestoreOutcome, RestoreSpec, Result, Warning,
};

/// Blobs per unit of work: big files are written by several threads at once.
const BLOBS_PER_SEGMENT: usize = 16;
/// Writer threads. Two cores, but reads and writes block: a few more threads keep both busy.
const THREADS: usize = 4;
/// Cap on per-file warnings about an interrupted restore; the rest are summarised.
const MAX_LISTED: usize = 200;

struct Entry {
    rel: PathBuf,
    node: Node,
}

struct FileJob {
    entry: usize,
    size: u64,
    remaining: AtomicUsize,
    started: AtomicBool,
    damaged: AtomicBool,
}

struct Segment {
    file: usize,
    first_blob: usize,
    offset: u64,
}

/// Checks that a path taken from a request or a repository stays below the target.
fn confined(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Repository(format!(
                    "path '{}' leaves the restore target",
                    p.display()
                )))
            }
        }
    }
    Ok(out)
}

fn io_error(path: &Path, e: &io::Error) -> Error {
    match e.raw_os_error() {
        Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => {
            Error::DiskFull(format!("writing '{}': {e}", path.display()))
        }
        _ => Error::Repository(format!("restore target '{}': {e}", path.display())),
    }
}

fn unix_perm_from_go(go: u32) -> u32 {
    let mut m = go & 0o777;
    if go & (1 << 23) != 0 {
        m |= 0o4000;
    }
    if go & (1 << 22) != 0 {
        m |= 0o2000;
    }
    if go & (1 << 20) != 0 {
        m |= 0o1000;
    }
    m
}

fn is_zero(data: &[u8]) -> bool {
    // Comparing 8-byte words is several times faster than bytes for multi-MiB blobs.
    let words = data.chunks_exact(8);
    let tail = words.remainder();
    words
        .into_iter()
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
        && tail.iter().all(|b| *b == 0)
}

/// Restores `spec` from the repository. Conflicts are resolved before anything is written
/// (`Conflict::Fail` writes nothing). On cancellation the incomplete files are reported as
/// warnings through `ctx` and the result is `Error::Cancelled`.
pub fn restore(
    repo: &RepoConfig,
    spec: &RestoreSpec,
    ctx: &dyn JobContext,
) -> Result<RestoreOutcome> {
    if ctx.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let r = open(repo)?;
    let snap = find_snapshot(&r, &spec.snapshot_id)?;
    let r = r.to_indexed().map_err(map_err)?;

    // 1. Collect the entries to restore, keyed by their path below the target.
    let mut entries: BTreeMap<PathBuf, Node> = BTreeMap::new();
    let roots: Vec<PathBuf> = if spec.paths.is_empty() {
        vec![PathBuf::new()]
    } else {
        spec.paths
            .iter()
            .map(|p| confined(Path::new(p)))
            .collect::<Result<_>>()?
    };
    let mut ancestors: Vec<PathBuf> = Vec::new();
    for root in &roots {
        if ctx.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let node = r.node_from_path(snap.tree, root).map_err(|e| {
            Error::Repository(format!(
                "path '{}' is not in snapshot {}: {}",
                root.display(),
                snap.id,
                crate::repo::concise(&e.to_string())
            ))
        })?;
        let mut a = root.parent();
        while let Some(p) = a {
            if !p.as_os_str().is_empty() {
                ancestors.push(p.to_path_buf());
            }
            a = p.parent();
        }
        if node.is_dir() {
            if !root.as_os_str().is_empty() {
                entries.insert(root.clone(), node.clone());
            }
            for (k, item) in r
                .ls(&node, &LsOptions::default())
                .map_err(map_err)?
                .enumerate()
            {
                if k % 1024 == 0 && ctx.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let (sub, n) = item.map_err(map_err)?;
                let rel = confined(&root.join(sub))?;
                if !rel.as_os_str().is_empty() {
                    entries.insert(rel, n);
                }
            }
        } else {
            entries.insert(root.clone(), node);
        }
    }
    let entries: Vec<Entry> = entries
        .into_iter()
        .map(|(rel, node)| Entry { rel, node })
        .collect();

    // 2. Conflicts, before anything is written.
    let target = &spec.target;
    let mut skipped = Vec::new();
    let mut skip = vec![false; entries.len()];
    let mut replace = vec![false; entries.len()];
    for anc in &ancestors {
        if let Ok(m) = fs::symlink_metadata(target.join(anc)) {
            if !m.is_dir() {
                return Err(Error::Conflict(anc.display().to_string()));
            }
        }
    }
    for (i, e) in entries.iter().enumerate() {
        let Ok(m) = fs::symlink_metadata(target.join(&e.rel)) else {
            continue;
        };
        if e.node.is_dir() && m.is_dir() {
            continue;
        }
        match spec.conflict {
            Conflict::Fail => return Err(Error::Conflict(e.rel.display().to_string())),
            Conflict::Skip => {
                skip[i] = true;
                skipped.push(e.rel.to_string_lossy().into_owned());
            }
            Conflict::Overwrite => replace[i] = true,
        }
    }
    // Children of a skipped non-directory entry cannot be restored either.
    for i in 0..entries.len() {
        if skip[i] && entries[i].node.is_dir() {
            let base = entries[i].rel.clone();
            for j in i + 1..entries.len() {
                if entries[j].rel.starts_with(&base) {
                    skip[j] = true;
                }
            }
        }
    }

    // Hard links: the first restored member of a group (same device and inode in the snapshot)
    // gets the contents, the others become links to it.
    let mut hardlink_to: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    {
        let mut first: std::collections::HashMap<(u64, u64), usize> =
            std::collections::HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let m = &e.node.meta;
            if skip[i] || !e.node.is_file() || m.links < 2 || m.inode == 0 || m.device_id == 0 {
                continue;
            }
            match first.entry((m.device_id, m.inode)) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    hardlink_to.insert(i, *o.get());
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
        }
    }

    // 3. Directories and file placeholders.
    fs::create_dir_all(target).map_err(|e| io_error(target, &e))?;
    for anc in ancestors.iter().rev() {
        fs::create_dir_all(target.join(anc)).map_err(|e| io_error(&target.join(anc), &e))?;
    }
    let mut files: Vec<FileJob> = Vec::new();
    let mut segments: Vec<Segment> = Vec::new();
    let shared = Arc::new(Shared::default());
    for (i, e) in entries.iter().enumerate() {
        if skip[i] {
            continue;
        }
        let path = target.join(&e.rel);
        if replace[i] {
            let m = fs::symlink_metadata(&path).map_err(|err| io_error(&path, &err))?;
            if m.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .map_err(|err| io_error(&path, &err))?;
        }
        match e.node.node_type {
            NodeType::Dir => match fs::create_dir(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(io_error(&path, &err)),
            },
            NodeType::File if hardlink_to.contains_key(&i) => {
                // Linked to its group's first restored member after the contents are written.
            }
            NodeType::File => {
                let f = File::create(&path).map_err(|err| io_error(&path, &err))?;
                f.set_len(e.node.meta.size)
                    .map_err(|err| io_error(&path, &err))?;
                let content = e.node.content.as_deref().unwrap_or(&[]);
                let file_idx = files.len();
                let mut offset = 0;
                let mut n_seg = 0;
                for (k, chunk) in content.chunks(BLOBS_PER_SEGMENT).enumerate() {
                    segments.push(Segment {
                        file: file_idx,
                        first_blob: k * BLOBS_PER_SEGMENT,
                        offset,
                    });
                    n_seg += 1;
                    for id in chunk {
                        let ie = r.get_index_entry(id).map_err(map_err);
                        offset += ie.map_or(0, |ie| u64::from(ie.location.data_length()));
                    }
                }
                files.push(FileJob {
                    entry: i,
                    size: e.node.meta.size,
                    remaining: AtomicUsize::new(n_seg),
                    started: AtomicBool::new(false),
                    damaged: AtomicBool::new(false),
                });
                shared.files_total.fetch_add(1, Ordering::Relaxed);
                if n_seg == 0 {
                    // Empty files are complete once created.
                    shared.files_done.fetch_add(1, Ordering::Relaxed);
                }
                shared
                    .bytes_total
                    .fetch_add(e.node.meta.size, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    // 4. Contents, in parallel.
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    let bytes_written = AtomicU64::new(0);
    let phase = || Phase::Restoring;
    let outcome = monitored(&shared, ctx, Some(&phase), || {
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    write_segments(
                        &r,
                        &entries,
                        &files,
                        &segments,
                        target,
                        &next,
                        &shared,
                        &fatal,
                        &bytes_written,
                    )
                });
            }
        });
        if let Some(err) = fatal.lock().expect("fatal lock").take() {
            return Err(err);
        }
        if shared.cancelled.load(Ordering::SeqCst) {
            let incomplete: Vec<&FileJob> = files
                .iter()
                .filter(|f| f.remaining.load(Ordering::SeqCst) > 0)
                .collect();
            for f in incomplete.iter().take(MAX_LISTED) {
                let rel = entries[f.entry].rel.to_string_lossy().into_owned();
                let reason = if f.started.load(Ordering::SeqCst) {
                    "incomplete: the restore was cancelled while writing it"
                } else {
                    "incomplete: the restore was cancelled before it was written (empty placeholder)"
                };
                shared.warnings.lock().expect("warnings").push(Warning {
                    path: rel,
                    reason: reason.into(),
                });
            }
            if incomplete.len() > MAX_LISTED {
                shared.warnings.lock().expect("warnings").push(Warning {
                    path: target.display().to_string(),
                    reason: format!(
                        "{} further files are incomplete: the restore was cancelled",
                        incomplete.len() - MAX_LISTED
                    ),
                });
            }
            return Err(Error::Cancelled);
        }
        Ok(())
    });
    outcome?;

    // Files whose data is damaged are removed rather than left with wrong bytes.
    let damaged: Vec<String> = files
        .iter()
        .filter(|f| f.damaged.load(Ordering::SeqCst))
        .map(|f| {
            let rel = &entries[f.entry].rel;
            let _ = fs::remove_file(target.join(rel));
            rel.to_string_lossy().into_owned()
        })
        .collect();

    // 5. Symlinks, special files, then metadata (directories last, deepest first).
    let mut warnings = shared.warnings.lock().expect("warnings").clone();
    let is_root = nix::unistd::geteuid().is_root();
    let damaged_set: std::collections::HashSet<&str> = damaged.iter().map(String::as_str).collect();
    for (i, e) in entries.iter().enumerate() {
        if skip[i] || damaged_set.contains(e.rel.to_string_lossy().as_ref()) {
            continue;
        }
        let path = target.join(&e.rel);
        if let Some(&canonical) = hardlink_to.get(&i) {
            let canonical_rel = &entries[canonical].rel;
            let res = if damaged_set.contains(canonical_rel.to_string_lossy().as_ref()) {
                Err(io::Error::other("the linked file's data is damaged"))
            } else {
                fs::hard_link(target.join(canonical_rel), &path)
            };
            if let Err(err) = res {
                warnings.push(Warning {
                    path: e.rel.to_string_lossy().into_owned(),
                    reason: format!("could not create the hard link: {err}"),
                });
            }
            continue;
        }
        if let Err(err) = create_special(&path, &e.node) {
            warnings.push(Warning {
                path: e.rel.to_string_lossy().into_owned(),
                reason: format!("could not create {:?}: {err}", kind(&e.node)),
            });
            continue;
        }
        if !e.node.is_dir() {
            set_metadata(&path, &e.node, is_root, &e.rel, &mut warnings);
        }
    }
    for (i, e) in entries.iter().enumerate().rev() {
        if !skip[i] && e.node.is_dir() {
            set_metadata(
                &target.join(&e.rel),
                &e.node,
                is_root,
                &e.rel,
                &mut warnings,
            );
        }
    }
    for w in warnings
        .iter()
        .skip(shared.warnings.lock().expect("warnings").len())
    {
        ctx.warn(w.clone());
    }

    if !damaged.is_empty() {
        return Err(Error::Repository(format!(
            "{} file(s) could not be restored because their repository data is damaged or missing (removed from the target): {}",
            damaged.len(),
            damaged.join(", ")
        )));
    }

    Ok(RestoreOutcome {
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.size).sum(),
        skipped,
        warnings,
    })
}

fn kind(node: &Node) -> &'static str {
    match node.node_type {
        NodeType::Symlink { .. } => "symlink",
        NodeType::Fifo => "fifo",
        NodeType::Socket => "socket",
        NodeType::Dev { .. } => "block device",
        NodeType::Chardev { .. } => "character device",
        NodeType::Dir => "directory",
        NodeType::File => "file",
    }
}

#[allow(clippy::too_many_arguments)]
fn write_segments(
    r: &Repository<IndexedFullStatus>,
    entries: &[Entry],
    files: &[FileJob],
    segments: &[Segment],
    target: &Path,
    next: &AtomicUsize,
    shared: &Shared,
    fatal: &Mutex<Option<Error>>,
    bytes_written: &AtomicU64,
) {
    let mut open: Option<(usize, File)> = None;
    loop {
        if shared.cancelled.load(Ordering::SeqCst) {
            return;
        }
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(seg) = segments.get(i) else {
            return;
        };
        let job = &files[seg.file];
        if job.damaged.load(Ordering::SeqCst) {
            job.remaining.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        job.started.store(true, Ordering::SeqCst);
        let entry = &entries[job.entry];
        let path = target.join(&entry.rel);
        if open.as_ref().is_none_or(|(f, _)| *f != seg.file) {
            match OpenOptions::new().write(true).open(&path) {
                Ok(f) => open = Some((seg.file, f)),
                Err(e) => {
                    set_fatal(fatal, shared, io_error(&path, &e));
                    return;
                }
            }
        }
        let file = &open.as_ref().expect("open file").1;
        let content = entry.node.content.as_deref().unwrap_or(&[]);
        let end = (seg.first_blob + BLOBS_PER_SEGMENT).min(content.len());
        let mut offset = seg.offset;
        for id in &content[seg.first_blob..end] {
            if shared.cancelled.load(Ordering::SeqCst) {
                return;
            }
            let data = match r.get_blob_cached(&BlobId::from(*id), BlobType::Data) {
                Ok(d) => d,
                Err(_) => {
                    job.damaged.store(true, Ordering::SeqCst);
                    break;
                }
            };
            if let Err(e) = write_sparse(file, &data, offset) {
                set_fatal(fatal, shared, io_error(&path, &e));
                return;
            }
            offset += data.len() as u64;
            bytes_written.fetch_add(data.len() as u64, Ordering::Relaxed);
            shared
                .bytes_done
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if job.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.files_done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes `data` at `offset`, leaving file-system blocks that would be all zeros unwritten: the
/// file was pre-sized with `set_len`, so they stay holes.
fn write_sparse(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    const BLOCK: u64 = 4096;
    if is_zero(data) {
        return Ok(());
    }
    let end = offset + data.len() as u64;
    let mut run_start: Option<u64> = None;
    let mut pos = offset;
    while pos < end {
        // Blocks are aligned to the file, not to the blob.
        let block_end = ((pos / BLOCK) + 1) * BLOCK;
        let stop = block_end.min(end);
        let slice = &data[(pos - offset) as usize..(stop - offset) as usize];
        if is_zero(slice) {
            if let Some(start) = run_start.take() {
                file.write_all_at(
                    &data[(start - offset) as usize..(pos - offset) as usize],
                    start,
                )?;
            }
        } else if run_start.is_none() {
            run_start = Some(pos);
        }
        pos = stop;
    }
    if let Some(start) = run_start {
        file.write_all_at(&data[(start - offset) as usize..], start)?;
    }
    Ok(())
}

fn set_fatal(fatal: &Mutex<Option<Error>>, shared: &Shared, err: Error) {
    let mut f = fatal.lock().expect("fatal lock");
    if f.is_none() {
        *f = Some(err);
    }
    // Stop the other writers; the error, not `Cancelled`, is what the caller sees.
    shared.cancelled.store(true, Ordering::SeqCst);
}

fn create_special(path: &Path, node: &Node) -> io::Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    let perm = Mode::from_bits_truncate(0o600);
    let res = match &node.node_type {
        NodeType::Symlink { .. } => {
            return std::os::unix::fs::symlink(node.node_type.to_link(), path);
        }
        NodeType::Fifo => mknod(path, SFlag::S_IFIFO, perm, 0),
        NodeType::Socket => mknod(path, SFlag::S_IFSOCK, perm, 0),
        NodeType::Dev { device } => mknod(path, SFlag::S_IFBLK, perm, *device),
        NodeType::Chardev { device } => mknod(path, SFlag::S_IFCHR, perm, *device),
        NodeType::Dir | NodeType::File => return Ok(()),
    };
    res.map_err(io::Error::from)
}

fn set_metadata(path: &Path, node: &Node, is_root: bool, rel: &Path, warnings: &mut Vec<Warning>) {
    let mut fail = |what: &str, e: &dyn std::fmt::Display| {
        warnings.push(Warning {
            path: rel.to_string_lossy().into_owned(),
            reason: format!("could not restore {what}: {e}"),
        });
    };
    let meta = &node.meta;
    if is_root {
        if let Err(e) = std::os::unix::fs::lchown(path, meta.uid, meta.gid) {
            fail("ownership", &e);
        }
    }
    if !node.is_symlink() {
        if let Some(mode) = meta.mode {
            let perm = fs::Permissions::from_mode(unix_perm_from_go(mode));
            if let Err(e) = fs::set_permissions(path, perm) {
                fail("permissions", &e);
            }
        }
    }
    if let Some(mtime) = meta.mtime {
        use nix::sys::stat::{utimensat, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let ts = |t: rustic_core::jiff::Timestamp| {
            TimeSpec::new(t.as_second(), i64::from(t.subsec_nanosecond()))
        };
        let atime = meta.atime.unwrap_or(mtime);
        if let Err(e) = utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &ts(atime),
            &ts(mtime),
            UtimensatFlags::NoFollowSymlink,
        ) {
            fail("times", &e);
        }
    }
}
