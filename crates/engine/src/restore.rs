//! Restore of a whole snapshot or a subset of its paths into a target directory.
//!
//! rustic_core's own restore unwraps I/O errors (a full disk panics), cannot be cancelled and
//! queues every pack read at once (1–1.6 GiB peak). rsvault uses rustic_core to read trees and
//! the index, and reads and writes the contents itself: the blobs grouped by pack and read a run
//! of nearby blobs at a time ([`packs`]: one request per run on an object store, not one per
//! blob), a fixed number of threads each holding at most one run ([`contents`]), pre-sized
//! sparse files whose zero pages are never written and whose long stretches go straight to the
//! device ([`direct`]), a cancel check per blob, and errors instead of panics. Directories and
//! files are created first-come by the threads that write them, so the contents start as soon
//! as the directories exist.
//!
//! Rules (issue #9):
//! - Every write is relative to the target directory opened once below the opened root
//!   ([`RestoreScope`]) and reached without following symlinks ([`crate::confine`]); a symlink
//!   found where a directory should be fails the job, and a target moved or replaced while the
//!   job ran fails it too, naming where the files went.
//! - A file is written under a temporary name in its own directory and given its owner, mode
//!   and times through its descriptor; written files wait in batches, and a batch is renamed
//!   over whatever had their names only after one `syncfs` put it on disk
//!   ([`writer::Writer::finish_file`]): an original is never truncated or deleted before its
//!   replacement is complete on disk. A
//!   cancel, an error, a full disk or damaged repository data removes the temporary files; a
//!   crash leaves at most `.rsvault-restore-PID-I-N.tmp` files next to intact originals, and the
//!   next restore into that directory removes those whose process is gone
//!   ([`writer::remove_stale_temps`]).
//! - A disk image restored in place over a block device (original location only) is written
//!   into the device, never unlinked.
//! - Alternate locations get no setuid/setgid bits, device nodes or FIFOs; each left out is a
//!   warning.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustic_core::repofile::{Node, NodeType};
use rustic_core::{BlobId, IndexedFullStatus, Repository};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

use crate::backup::{monitored, Shared};
use crate::confine::{self, is_escape, Beneath};
use crate::repo::{find_snapshot, map_err, open};
use crate::{
    Conflict, Error, JobContext, Phase, RepoConfig, RestoreOutcome, RestoreScope, RestoreSpec,
    Result, Warning,
};

mod contents;
mod direct;
mod listing;
mod packs;
mod writer;
use writer::*;

/// Writer threads. Two cores, but reads and writes block: a few more threads keep both busy.
const THREADS: usize = 4;
/// Writer threads on an object store, where each read is a request that mostly waits on the
/// network: more requests in flight. Each holds at most one run (`packs::MAX_READ`, or one
/// larger blob) and one decoded blob, which bounds the memory they use together.
const OBJECT_STORE_THREADS: usize = 8;
/// Cap on per-file warnings about an interrupted restore; the rest are summarised.
const MAX_LISTED: usize = 200;

struct Entry {
    rel: PathBuf,
    node: Node,
}

struct FileJob {
    entry: usize,
    size: u64,
    /// Places in the file still to be written (or given up for damage): the writer that
    /// brings it to zero completes the file.
    remaining: AtomicUsize,
    started: AtomicBool,
    damaged: AtomicBool,
    /// A block device written in place: its device and inode (a reopen that finds anything
    /// else is refused). `None`: the file is written to a temporary file.
    in_place: Option<(u64, u64)>,
    /// Its content is at most one blob, exactly its size: the one write (or none) gives the
    /// temporary file its length, which is then not set when it is created (a file whose last
    /// page is zeros, left a hole, gets it set after the write: [`contents`]).
    sized_by_write: bool,
    /// The temporary file, created by the first writer that needs it
    /// ([`Writer::open_for_writing`]): its name in the file's directory, and its device and inode.
    /// `None`: its creation failed (the job's error says why).
    temp: std::sync::OnceLock<Option<Temp>>,
    /// Renamed over its final name (or synced in place), or removed: nothing left to clean up.
    settled: AtomicBool,
}

/// A temporary file: its name in its directory, its device and inode, and its owner and group
/// as created.
type Temp = (OsString, (u64, u64), (u32, u32));

impl FileJob {
    /// The temporary file's name, once created.
    fn tmp(&self) -> Option<&OsStr> {
        match self.temp.get() {
            Some(Some((name, _, _))) => Some(name),
            _ => None,
        }
    }

    /// Owner and group of the temporary file, once created.
    fn owner(&self) -> Option<(u32, u32)> {
        match self.temp.get() {
            Some(Some((_, _, owner))) => Some(*owner),
            _ => None,
        }
    }

    /// Device and inode of what is written, once there is something.
    fn id(&self) -> Option<(u64, u64)> {
        match self.temp.get() {
            Some(Some((_, id, _))) => Some(*id),
            _ => self.in_place,
        }
    }
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
        _ if is_escape(e) => Error::Repository(format!(
            "restore target '{}': a symbolic link or other non-directory was found where a directory was expected (swapped in after the restore was requested?); it was not followed and nothing was written through it: {e}",
            path.display()
        )),
        _ => Error::Repository(format!("restore target '{}': {e}", path.display())),
    }
}

fn nix_io(e: Errno) -> io::Error {
    io::Error::from(e)
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

/// Restores `spec` from the repository with the default [`RestoreScope`]: confined to the
/// target itself, as an alternate location.
pub fn restore(
    repo: &RepoConfig,
    spec: &RestoreSpec,
    ctx: &dyn JobContext,
) -> Result<RestoreOutcome> {
    restore_scoped(repo, spec, &RestoreScope::default(), ctx)
}

/// The root to open and the target's path below it.
fn split_target(spec: &RestoreSpec, scope: &RestoreScope) -> Result<(PathBuf, PathBuf)> {
    let target = &spec.target;
    let (root, rel) = match &scope.root {
        Some(root) => {
            let rel = target.strip_prefix(root).map_err(|_| {
                Error::Repository(format!(
                    "restore target '{}' is not below the restore root '{}'",
                    target.display(),
                    root.display()
                ))
            })?;
            (root.clone(), rel.to_path_buf())
        }
        // The deepest existing ancestor: what is missing below it is created without
        // following symlinks, like the target itself.
        None => {
            let mut root = target.clone();
            let mut rel = PathBuf::new();
            while let (Some(parent), Some(name)) = (root.parent(), root.file_name()) {
                rel = Path::new(name).join(&rel);
                root = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                };
                if std::fs::symlink_metadata(&root).is_ok() {
                    break;
                }
            }
            (root, rel)
        }
    };
    Ok((root, confined(&rel)?))
}

/// Restores `spec` from the repository, writing only below `scope.root`. Conflicts are
/// resolved before anything is written (`Conflict::Fail` writes nothing). On cancellation the
/// files not restored are reported as warnings through `ctx` and the result is
/// `Error::Cancelled`.
pub fn restore_scoped(
    repo: &RepoConfig,
    spec: &RestoreSpec,
    scope: &RestoreScope,
    ctx: &dyn JobContext,
) -> Result<RestoreOutcome> {
    if ctx.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let (open_root, target_rel) = split_target(spec, scope)?;
    let r = open(repo)?;
    let snap = find_snapshot(&r, &spec.snapshot_id)?;
    let r = r.to_indexed().map_err(map_err)?;
    let decoder = packs::Cipher::new(&r.key()).map_err(Error::Repository)?;
    let be = crate::repo::pack_backend(repo)?;
    let packs = packs::Source {
        root: repo.store.is_none().then_some(repo.path.as_path()),
        be: be.as_ref(),
    };
    let trees = listing::Trees {
        r: &r,
        decoder: &decoder,
        packs,
    };

    // 1. Collect the entries to restore, sorted by their path below the target, each path once.
    // Collected straight into the one vector they are used from (not a map first: with a million
    // entries, a map and a vector of them together were most of a restore's memory).
    let mut entries: Vec<Entry> = Vec::new();
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
                entries.push(Entry {
                    rel: root.clone(),
                    node: node.clone(),
                });
            }
            if let Some(tree) = node.subtree {
                entries.extend(trees.below(ctx, tree, root)?);
            }
        } else {
            entries.push(Entry {
                rel: root.clone(),
                node,
            });
        }
    }
    // A tree listing comes sorted already; several (possibly overlapping) paths may not. Stable,
    // so of two listings of one path the first is kept.
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    entries.dedup_by(|later, first| later.rel == first.rel);
    entries.shrink_to_fit();

    // 2. Conflicts, before anything is written. Nothing is created yet: a target that does
    // not exist has no conflicts.
    let shown = &spec.target;
    // A configured root that does not exist yet is created like any configuration directory.
    if scope.root.is_some() {
        std::fs::create_dir_all(&open_root).map_err(|e| io_error(&open_root, &e))?;
    }
    let existing_target =
        Beneath::open(&open_root, &target_rel, false).map_err(|e| io_error(shown, &e))?;
    let lstat = |rel: &Path| -> Result<Option<FileStat>> {
        let Some(t) = &existing_target else {
            return Ok(None);
        };
        match t.lstat(rel) {
            Ok(st) => Ok(st),
            // An ancestor is not a directory: it is an entry (or an ancestor) of its own, whose
            // conflict is decided there.
            Err(e) if is_escape(&e) => Ok(None),
            Err(e) => Err(io_error(&shown.join(rel), &e)),
        }
    };
    let mut skipped = Vec::new();
    let mut skip = vec![false; entries.len()];
    let mut replace = vec![false; entries.len()];
    // What is in the way of a replaced entry: (is a directory, is a block device).
    let mut in_the_way: Vec<Option<(bool, bool)>> = vec![None; entries.len()];
    for anc in &ancestors {
        if let Some(st) = lstat(anc)? {
            if !confine::is_dir(&st) {
                return Err(Error::Conflict(anc.display().to_string()));
            }
        }
    }
    for (i, e) in entries.iter().enumerate() {
        let Some(st) = lstat(&e.rel)? else {
            continue;
        };
        if e.node.is_dir() && confine::is_dir(&st) {
            continue;
        }
        match spec.conflict {
            Conflict::Fail => return Err(Error::Conflict(e.rel.display().to_string())),
            Conflict::Skip => {
                skip[i] = true;
                skipped.push(e.rel.to_string_lossy().into_owned());
            }
            Conflict::Overwrite => {
                replace[i] = true;
                in_the_way[i] = Some((confine::is_dir(&st), confine::is_block_device(&st)));
            }
        }
    }
    drop(existing_target);
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

    // 3. The target, directories, and a temporary file per file.
    let target = Beneath::open(&open_root, &target_rel, true)
        .map_err(|e| io_error(shown, &e))?
        .expect("created");
    let target_id = stat_id(&fstat(target.fd()).map_err(|e| io_error(shown, &nix_io(e)))?);
    for anc in ancestors.iter().rev() {
        target
            .walk(anc, true)
            .map_err(|e| io_error(&shown.join(anc), &e))?;
    }
    let w = Writer {
        target: &target,
        shown,
        scope,
        is_root: nix::unistd::geteuid().is_root(),
        pending: Mutex::default(),
    };
    let mut parents = ParentCache::default();
    let first_damage = std::sync::OnceLock::new();
    let shared = Arc::new(Shared::default());
    // Directories already cleared of the temporary files of killed restores (issue #9), or
    // created by this restore.
    let mut swept: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    // Block devices written in place, by entry: their device and inode.
    let mut in_place = std::collections::HashMap::new();
    let mut make_dirs = || -> Result<()> {
        for (i, e) in entries.iter().enumerate() {
            if skip[i] {
                continue;
            }
            if i % 256 == 0 && ctx.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let parent = e.rel.parent().unwrap_or(Path::new(""));
            let device = e.node.is_file()
                && scope.original_location
                && in_the_way[i].is_some_and(|(_, blockdev)| blockdev)
                && !hardlink_to.contains_key(&i);
            // Other files are created by the writers.
            if !e.node.is_dir() && !device && swept.contains(parent) {
                continue;
            }
            let path = shown.join(&e.rel);
            let (dir, name) = parents
                .get(&target, &e.rel)
                .map_err(|err| io_error(&path, &err))?;
            if !swept.contains(parent) {
                swept.insert(parent.to_path_buf());
                match remove_stale_temps(dir) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        dir = %shown.join(parent).display(),
                        "removed {n} temporary file(s) left by an interrupted restore"
                    ),
                    // Best effort: a leftover costs space, not correctness.
                    Err(err) => tracing::warn!(
                        dir = %shown.join(parent).display(),
                        "could not look for temporary files left by an interrupted restore: {err}"
                    ),
                }
            }
            match e.node.node_type {
                NodeType::Dir => {
                    if replace[i] {
                        // A non-directory in the way: the one replacement that cannot wait for
                        // the new content, which is the directory's children.
                        confine::remove_all(dir, name).map_err(|err| io_error(&path, &err))?;
                    }
                    match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
                        // New and empty: nothing of an interrupted restore to look for.
                        Ok(()) => {
                            swept.insert(e.rel.clone());
                        }
                        Err(Errno::EEXIST) => {}
                        Err(err) => return Err(io_error(&path, &nix_io(err))),
                    }
                }
                NodeType::File if device => {
                    // A block device written in place: opened now, to know it by its inode.
                    let fd = openat(
                        dir,
                        name,
                        OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|err| io_error(&path, &nix_io(err)))?;
                    let st = fstat(&fd).map_err(|err| io_error(&path, &nix_io(err)))?;
                    in_place.insert(i, stat_id(&st));
                }
                _ => {}
            }
        }
        Ok(())
    };
    // The directories are made while the files' blobs are looked up, on another core.
    let (dirs_made, planned) = std::thread::scope(|s| {
        let planning = s.spawn(|| {
            contents::plan(
                &r,
                &entries,
                |i| !skip[i] && !hardlink_to.contains_key(&i),
                ctx,
                &first_damage,
                &shared,
            )
        });
        let made = make_dirs();
        (made, planning.join())
    });
    let (mut files, planner) = match (dirs_made, planned) {
        (Ok(()), Ok(Ok(planned))) => planned,
        (Err(err), _) | (_, Ok(Err(err))) => return Err(err),
        (_, Err(panic)) => std::panic::resume_unwind(panic),
    };
    for f in &mut files {
        f.in_place = in_place.get(&f.entry).copied();
    }
    let setup = (|| -> Result<()> {
        // Files with nothing to write are complete now, on every core: empty ones created (as
        // the writers create files), those whose data is missing never created. A failure leaves
        // what was created to `clean_up`, like any other.
        let done: Vec<Result<Option<Pending>>> = {
            use rayon::prelude::*;
            files
                .par_iter()
                .enumerate()
                .filter(|(_, job)| job.remaining.load(Ordering::SeqCst) == 0)
                .map_init(ParentCache::default, |dirs, (file_idx, job)| {
                    let entry = &entries[job.entry];
                    let full = if job.damaged.load(Ordering::SeqCst) {
                        w.discard(entry, job);
                        None
                    } else {
                        let f = w.open_for_writing(entry, job, dirs)?;
                        w.finish_file(
                            file_idx,
                            &entries,
                            &files,
                            &f,
                            in_the_way[job.entry],
                            &shared,
                        )?
                    };
                    shared.files_done.fetch_add(1, Ordering::Relaxed);
                    Ok(full)
                })
                .collect()
        };
        for full in done {
            if let Some(batch) = full? {
                w.settle(batch, &entries, &files)?;
            }
        }
        Ok(())
    })();
    if let Err(err) = setup {
        w.clean_up(&entries, &files);
        return Err(err);
    }
    drop(parents);

    // 4. Contents, in parallel, a run of blobs of one pack at a time.
    let (needs, runs) = planner.finish();
    let threads = if repo.store.is_some() {
        OBJECT_STORE_THREADS
    } else {
        THREADS
    };
    let runs = packs::spread(runs, threads);
    let (to_settle, batches) = std::sync::mpsc::sync_channel(1);
    let work = contents::Contents {
        packs,
        decoder: &decoder,
        w: &w,
        entries: &entries,
        in_the_way: &in_the_way,
        files: &files,
        needs: &needs,
        runs: &runs,
        next: AtomicUsize::new(0),
        settler: Mutex::new(Some(to_settle)),
        shared: &shared,
        fatal: Mutex::new(None),
        first_damage: &first_damage,
        direct: direct::DirectIo::new(true),
    };
    let phase = || Phase::Restoring;
    let outcome = monitored(&shared, ctx, Some(&phase), || {
        std::thread::scope(|s| {
            let settler = s.spawn(|| work.settle(batches));
            let writers: Vec<_> = (0..threads).map(|_| s.spawn(|| work.work())).collect();
            for h in writers {
                if let Err(panic) = h.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            // The last sender: the settler ends once it has settled what was sent.
            drop(work.settler.lock().expect("settler").take());
            if let Err(panic) = settler.join() {
                std::panic::resume_unwind(panic);
            }
        });
        if let Some(err) = work.fatal.lock().expect("fatal lock").take() {
            return Err(err);
        }
        if shared.cancelled.load(Ordering::SeqCst) {
            let incomplete: Vec<&FileJob> = files
                .iter()
                .filter(|f| !f.settled.load(Ordering::SeqCst))
                .collect();
            for f in incomplete.iter().take(MAX_LISTED) {
                let rel = entries[f.entry].rel.to_string_lossy().into_owned();
                let reason = if f.started.load(Ordering::SeqCst) {
                    "not restored (incomplete): the restore was cancelled while writing it; an existing file of that name was left as it was"
                } else {
                    "not restored (incomplete): the restore was cancelled before it was written; an existing file of that name was left as it was"
                };
                shared.warnings.lock().expect("warnings").push(Warning {
                    path: rel,
                    reason: reason.into(),
                });
            }
            if incomplete.len() > MAX_LISTED {
                shared.warnings.lock().expect("warnings").push(Warning {
                    path: shown.display().to_string(),
                    reason: format!(
                        "{} further files are incomplete (not restored): the restore was cancelled",
                        incomplete.len() - MAX_LISTED
                    ),
                });
            }
            return Err(Error::Cancelled);
        }
        w.settle_pending(&entries, &files)
    });
    if let Err(err) = outcome {
        w.clean_up(&entries, &files);
        return Err(err);
    }

    // Files whose data is damaged were never renamed into place.
    let damaged: Vec<String> = files
        .iter()
        .filter(|f| f.damaged.load(Ordering::SeqCst))
        .map(|f| entries[f.entry].rel.to_string_lossy().into_owned())
        .collect();

    // 5. Hard links, symlinks, special files, then directory metadata (deepest first).
    let mut warnings = shared.warnings.lock().expect("warnings").clone();
    let forwarded = warnings.len();
    let damaged_set: std::collections::HashSet<&str> = damaged.iter().map(String::as_str).collect();
    let mut parents = ParentCache::default();
    for (i, e) in entries.iter().enumerate() {
        if skip[i] || damaged_set.contains(e.rel.to_string_lossy().as_ref()) {
            continue;
        }
        if matches!(e.node.node_type, NodeType::Dir)
            || (e.node.is_file() && !hardlink_to.contains_key(&i))
        {
            continue;
        }
        if i % 256 == 0 && ctx.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let path = shown.join(&e.rel);
        let (dir, name) = parents
            .get(&target, &e.rel)
            .map_err(|err| io_error(&path, &err))?;
        let made = if let Some(&canonical) = hardlink_to.get(&i) {
            let canonical_rel = &entries[canonical].rel;
            if damaged_set.contains(canonical_rel.to_string_lossy().as_ref()) {
                Err(io::Error::other("the linked file's data is damaged"))
            } else {
                w.link(canonical_rel, dir, name, i, in_the_way[i])
            }
            .map_err(|err| ("could not create the hard link", err))
        } else {
            w.special(dir, name, &e.node, i, in_the_way[i], &mut warnings, &e.rel)
                .map_err(|err| ("could not create", err))
        };
        match made {
            Ok(true) => {
                if !hardlink_to.contains_key(&i) {
                    w.set_metadata_at(dir, name, &e.node, &e.rel, &mut warnings);
                }
            }
            Ok(false) => {}
            Err((_, err)) if is_escape(&err) => return Err(io_error(&path, &err)),
            Err((what, err)) => warnings.push(Warning {
                path: e.rel.to_string_lossy().into_owned(),
                reason: if what.ends_with("create") {
                    format!("{what} {:?}: {err}", kind(&e.node))
                } else {
                    format!("{what}: {err}")
                },
            }),
        }
    }
    drop(parents);
    for (i, e) in entries.iter().enumerate().rev() {
        if !skip[i] && e.node.is_dir() {
            let path = shown.join(&e.rel);
            let fd = target.dir(&e.rel).map_err(|err| io_error(&path, &err))?;
            w.set_metadata_fd(&fd, &e.node, &e.rel, None, &mut warnings);
        }
    }
    for w in warnings.iter().skip(forwarded) {
        ctx.warn(w.clone());
    }

    // The target must still be where the request put it: if it was moved or replaced while the
    // job ran, the files went to the directory opened at the start, wherever that is now.
    let still = Beneath::open(&open_root, &target_rel, false)
        .ok()
        .flatten()
        .and_then(|t| fstat(t.fd()).ok())
        .map(|st| stat_id(&st));
    if still != Some(target_id) {
        return Err(Error::Repository(format!(
            "restore target '{}' was moved or replaced while the restore ran; the files were written to the directory that was there when it started, not through what replaced it",
            shown.display()
        )));
    }

    if !damaged.is_empty() {
        return Err(Error::Repository(format!(
            "{} file(s) could not be restored because their repository data is damaged or missing (not written; an existing file of that name was left as it was): {}; first problem: {}",
            damaged.len(),
            damaged.join(", "),
            first_damage.get().map_or("unknown", String::as_str)
        )));
    }

    Ok(RestoreOutcome {
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.size).sum(),
        skipped,
        warnings,
    })
}
