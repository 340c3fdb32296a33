//! rsvault's archiver: what rustic_core's `Repository::archive` did, on its public API, laid out
//! for two cores (issue #10).
//!
//! - A walker thread reads the source's entries in tree order, groups them into directories
//!   ([`Trees`], as rustic_core's tree iterator does), matches each against the parent snapshot
//!   ([`Parent`], rustic_core's rules) and hands them over in batches of up to [`BATCH_FILES`]
//!   entries or [`BATCH_BYTES`] to read: one hand-off per batch, not three per blob.
//! - A rayon pool of two threads per core reads, chunks, hashes and seals the batches' files,
//!   several batches at once, one task per file; a large file is itself split, its cut
//!   candidates searched and its chunks sealed on every core ([`super::chunker`]), so one big
//!   changed file no longer runs on one.
//! - Then, in order, it builds each directory's tree, seals the trees, and at the end writes
//!   the last packs, the index and the snapshot ([`super::packer`]).
//!
//! What it keeps from rustic_core, so snapshots and repositories stay exactly as before: the
//! source's nodes (rustic_core's `LocalSource` or ours), restic's chunk boundaries for the
//! repository's polynomial (`rustic_cdc`), the tree JSON (`Tree::serialize`), the rules for an
//! unchanged file, and how entries that fail are skipped (the file is left out of the snapshot
//! and the source reports why).

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};

use rayon::prelude::*;
use rustic_core::repofile::{
    BlobType, FileType, Metadata, Node, NodeType, SnapshotFile, SnapshotSummary, Tree,
};
use rustic_core::{
    Id, ReadSource, ReadSourceEntry, ReadSourceOpen, Repository, TreeId, WriteBackend,
};

use super::chunker::Chunker;
use super::packer::{Known, Packs, Sealer};
use super::Shared;
use crate::codec::{Cipher, Scratch};
use crate::repo::map_err;
use crate::{Error, Result};

/// Most entries in one batch handed from the walker to the workers.
const BATCH_FILES: usize = 512;
/// Most bytes to read in one batch (a larger file is a batch of its own).
const BATCH_BYTES: u64 = 32 << 20;

/// How an entry compares with the parent snapshot (rustic_core's `ParentResult`).
#[derive(Clone, Debug)]
enum Parent<T> {
    Matched(T),
    NotFound,
    NotMatched,
}

/// One step of the walk, in tree order.
enum Step<O> {
    /// A directory starts: its path in the snapshot, its node, its tree in the parent.
    Enter(PathBuf, Node, Parent<TreeId>),
    /// The directory entered last ends.
    Leave,
    /// A file or another non-directory entry. `open`: the file must be read.
    Entry {
        node: Node,
        parent: Parent<()>,
        open: Option<O>,
        /// Bytes processed (the file's size when it was read or matched).
        size: u64,
        /// False when reading it failed: it is left out.
        ok: bool,
    },
}

/// Batches being read at once.
const IN_FLIGHT: usize = 3;

/// A counting semaphore: at most `n` batches in flight.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn take(&self) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
    }

    fn give(&self) {
        *self.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.freed.notify_one();
    }
}

/// Builds the trees of read batches in the order they were walked. On a failure it sets
/// `failed` (no further batch is started) and returns it.
fn build_in_order<O>(
    mut builder: Builder,
    done: mpsc::Receiver<(usize, Result<()>, Vec<Step<O>>)>,
    packs: &Packs,
    failed: &AtomicBool,
) -> Result<Builder> {
    let mut waiting = std::collections::BTreeMap::new();
    let mut next = 0;
    let result = (|| {
        for (seq, read, batch) in done {
            read?;
            _ = waiting.insert(seq, batch);
            while let Some(batch) = waiting.remove(&next) {
                for step in batch {
                    builder.add(step, packs)?;
                }
                next += 1;
            }
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(Error::Repository(
                "a batch of the backup was never read".into(),
            ))
        }
    })();
    match result {
        Ok(()) => Ok(builder),
        Err(e) => {
            failed.store(true, Ordering::SeqCst);
            Err(e)
        }
    }
}

/// Backs up `src` into the repository and saves the snapshot; returns it.
#[allow(clippy::too_many_arguments)]
pub(super) fn archive<R, S>(
    repo: &Repository<S>,
    be: Arc<dyn WriteBackend>,
    src: &R,
    backup_paths: &[PathBuf],
    parent_snap: Option<&SnapshotFile>,
    mut snap: SnapshotFile,
    shared: &Shared,
) -> Result<SnapshotFile>
where
    S: rustic_core::Open,
    R: ReadSource + Sync,
    R::Open: Send,
    R::Iter: Send,
{
    let mut summary = snap.summary.take().unwrap_or_default();
    summary.backup_start = rustic_core::jiff::Zoned::now();
    let paths: Vec<String> = backup_paths
        .iter()
        .map(|p| {
            p.to_str().map(str::to_string).ok_or_else(|| {
                Error::SourceUnavailable(format!("'{}' is not valid UTF-8", p.display()))
            })
        })
        .collect::<Result<_>>()?;
    let mut list = rustic_core::StringList::default();
    for p in paths {
        list.add(p);
    }
    snap.paths = list;
    if let Some(p) = parent_snap {
        snap.parent = Some(p.id);
        snap.parents = vec![p.id];
    }

    let mut known = Known::load(repo)?;
    let cipher = Cipher::new(&repo.key()).map_err(Error::Repository)?;
    let config = repo.config();
    let chunker = Chunker::new(config)?;
    let mut stored = std::mem::take(&mut known.data);
    stored.extend(known.trees.keys().copied());
    stored.sort_unstable();
    let packs = Packs::new(be.clone(), cipher, config, &known, stored)?;
    let trees = TreeReader {
        be,
        cipher: Cipher::new(&repo.key()).map_err(Error::Repository)?,
        at: std::mem::take(&mut known.trees),
    };
    let parent_tree = parent_snap.map(|p| p.tree);

    let builder = Builder {
        stack: Vec::new(),
        tree: Tree::default(),
        summary,
        sealer: Sealer::new(packs.level())?,
    };
    let failed = AtomicBool::new(false);
    // Two threads per core: a thread waiting for a read from disk leaves its core to another
    // (cold cache, 30k files: 9.8 s with one per core, 8.5–8.9 s with two; warm, no difference).
    let threads = 2 * std::thread::available_parallelism().map_or(2, usize::from);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("archive-{i}"))
        .build()
        .map_err(|e| Error::Repository(format!("cannot start the archiver's threads: {e}")))?;
    let mut builder = std::thread::scope(|s| -> Result<Builder> {
        let sizer = s.spawn(|| {
            // Totals for progress; the source counts them (and says when it is done).
            _ = src.size();
        });
        let (tx, rx) = mpsc::sync_channel::<Vec<Step<R::Open>>>(2);
        let walker = {
            let (trees, packs) = (&trees, &packs);
            s.spawn(move || walk(src, parent_tree, trees, packs, shared, &tx))
        };
        // Batches are read on the pool, several at once, and built into trees in order on a
        // thread of their own: no core waits for the slowest file of a batch or for the trees.
        let (done_tx, done_rx) = mpsc::channel::<(usize, Result<()>, Vec<Step<R::Open>>)>();
        let build = {
            let (packs, failed) = (&packs, &failed);
            s.spawn(move || build_in_order(builder, done_rx, packs, failed))
        };
        let slots = Slots::new(IN_FLIGHT);
        pool.in_place_scope(|pool| {
            for (seq, mut batch) in rx.into_iter().enumerate() {
                if failed.load(Ordering::SeqCst) {
                    break;
                }
                slots.take();
                let (done_tx, slots) = (done_tx.clone(), &slots);
                let (chunker, packs) = (&chunker, &packs);
                pool.spawn(move |_| {
                    let read = read_batch(&mut batch, chunker, packs, shared);
                    // The builder only goes away after a failure, which it reports itself.
                    _ = done_tx.send((seq, read, batch));
                    slots.give();
                });
            }
        });
        drop(done_tx);
        let builder = build
            .join()
            .map_err(|_| Error::Repository("the tree builder panicked".into()))??;
        walker
            .join()
            .map_err(|_| Error::Repository("the walker thread panicked".into()))??;
        sizer
            .join()
            .map_err(|_| Error::Repository("the size scan panicked".into()))?;
        Ok(builder)
    })?;
    if shared.is_cancelled() {
        return Err(Error::Cancelled);
    }

    let root_parent = parent_tree.map_or(Parent::NotFound, Parent::Matched);
    let root = std::mem::take(&mut builder.tree);
    let id = builder.save_tree(root, &root_parent, &packs)?;
    let (data, tree) = packs.finish()?;
    let mut summary = builder.summary;
    summary.data_blobs += data.blobs;
    summary.data_added_files += data.bytes;
    summary.data_added_files_packed += data.packed;
    summary.tree_blobs += tree.blobs;
    summary.data_added_trees += tree.bytes;
    summary.data_added_trees_packed += tree.packed;
    summary.data_added += data.bytes + tree.bytes;
    summary.data_added_packed += data.packed + tree.packed;
    finalize(&mut summary, &snap.time);
    snap.tree = id;
    snap.summary = Some(summary);
    let id = packs.save_file(FileType::Snapshot, &snap)?;
    snap.id = id.into();
    Ok(snap)
}

/// Sets the end time and durations (rustic_core's `SnapshotSummary::finalize`, crate-private).
fn finalize(summary: &mut SnapshotSummary, snap_time: &rustic_core::jiff::Zoned) {
    let end = rustic_core::jiff::Zoned::now();
    let secs = |from: &rustic_core::jiff::Zoned| {
        end.since(from)
            .and_then(|span| span.total(rustic_core::jiff::Unit::Second))
            .unwrap_or_default()
    };
    summary.backup_duration = secs(&summary.backup_start);
    summary.total_duration = secs(snap_time);
    summary.backup_end = end;
}

// ---------------------------------------------------------------------------------------------
// Walking: directories, the parent, batches

/// Reads tree blobs of earlier snapshots straight from their packs.
struct TreeReader {
    be: Arc<dyn WriteBackend>,
    cipher: Cipher,
    at: std::collections::HashMap<
        Id,
        super::packer::TreeAt,
        std::hash::BuildHasherDefault<super::packer::IdHasher>,
    >,
}

impl TreeReader {
    fn read(&self, id: TreeId, scratch: &mut Scratch) -> Result<Tree> {
        let at = self
            .at
            .get(&*id)
            .ok_or_else(|| Error::Repository(format!("tree {id} is not in the index")))?;
        let raw = self
            .be
            .read_partial(FileType::Pack, &at.pack, false, at.offset, at.length)
            .map_err(map_err)?;
        let json = self
            .cipher
            .decode(scratch, &(*id).into(), &raw, at.uncompressed, 0)
            .map_err(|e| Error::Repository(format!("tree {id}: {e}")))?;
        serde_json::from_slice(json)
            .map_err(|e| Error::Repository(format!("tree {id} is not a tree: {e}")))
    }
}

/// The parent snapshot's trees along the directory being walked (rustic_core's `Parent`, with
/// one parent).
struct ParentTrees<'a> {
    reader: &'a TreeReader,
    scratch: Scratch,
    /// The parent's tree of the current directory and how far its (sorted) nodes were passed.
    tree: Option<(Tree, usize)>,
    stack: Vec<Option<(Tree, usize)>>,
}

impl ParentTrees<'_> {
    fn load(&mut self, id: TreeId) -> Option<(Tree, usize)> {
        match self.reader.read(id, &mut self.scratch) {
            Ok(t) => Some((t, 0)),
            Err(e) => {
                tracing::warn!("ignoring parent tree {id}: {e}");
                None
            }
        }
    }

    /// The parent's node named `name`, if any: nodes come sorted, and so do the names asked.
    fn node(&mut self, name: &std::ffi::OsStr) -> Option<&Node> {
        let (tree, idx) = self.tree.as_mut()?;
        while let Some(n) = tree.nodes.get(*idx) {
            match (*n.name()).cmp(name) {
                std::cmp::Ordering::Less => *idx += 1,
                std::cmp::Ordering::Equal => return tree.nodes.get(*idx),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }

    /// rustic_core's test for an unchanged entry (its defaults: ctime compared, inode not).
    fn compare(&mut self, node: &Node) -> Parent<&Node> {
        let Some(p) = self.node(&node.name()) else {
            return Parent::NotFound;
        };
        let (pm, m) = (&p.meta, &node.meta);
        let ctime = pm.ctime.zip(m.ctime).is_none_or(|(x, y)| x == y);
        if p.node_type == node.node_type && pm.size == m.size && pm.mtime == m.mtime && ctime {
            Parent::Matched(p)
        } else {
            Parent::NotMatched
        }
    }

    fn enter(&mut self, node: &Node) -> Parent<TreeId> {
        let result = match self.compare(node) {
            Parent::Matched(p) => p.subtree.map_or(Parent::NotMatched, Parent::Matched),
            Parent::NotFound => Parent::NotFound,
            Parent::NotMatched => Parent::NotMatched,
        };
        let sub = self.node(&node.name()).and_then(|p| p.subtree);
        let next = sub.and_then(|id| self.load(id));
        self.stack.push(std::mem::replace(&mut self.tree, next));
        result
    }

    fn leave(&mut self) {
        self.tree = self.stack.pop().flatten();
    }
}

/// The walk: source entries → directory steps, matched against the parent, sent in batches.
fn walk<R: ReadSource>(
    src: &R,
    parent_tree: Option<TreeId>,
    reader: &TreeReader,
    packs: &Packs,
    shared: &Shared,
    tx: &mpsc::SyncSender<Vec<Step<R::Open>>>,
) -> Result<()> {
    let mut parent = ParentTrees {
        reader,
        scratch: Scratch::new().map_err(Error::Repository)?,
        tree: None,
        stack: Vec::new(),
    };
    if let Some(id) = parent_tree {
        parent.tree = parent.load(id);
    }
    let mut batch = Vec::new();
    let mut batch_bytes = 0u64;
    let mut dirs = Trees::default();
    let send = |batch: &mut Vec<Step<R::Open>>, bytes: &mut u64| -> bool {
        *bytes = 0;
        tx.send(std::mem::take(batch)).is_ok()
    };
    for item in src.entries() {
        let Ok(ReadSourceEntry {
            path,
            node,
            mut open,
        }) = item
        else {
            // The source reported it (as rustic_core's archiver, the entry is skipped).
            continue;
        };
        let dir = if node.is_dir() {
            path
        } else {
            match path.parent() {
                Some(p) => p.to_path_buf(),
                None => continue,
            }
        };
        for step in dirs.steps(&dir, node) {
            match step {
                TreeStep::Leave => {
                    parent.leave();
                    batch.push(Step::Leave);
                }
                TreeStep::Enter(path, node) => {
                    let p = parent.enter(&node);
                    batch.push(Step::Enter(path, node, p));
                }
                TreeStep::Item(mut node) => {
                    let size = node.meta.size;
                    let (p, open) = match parent.compare(&node) {
                        Parent::Matched(p) => {
                            let content = p.content.clone();
                            if content.iter().flatten().all(|id| packs.has(id)) {
                                node.content = content;
                                (Parent::Matched(()), None)
                            } else {
                                tracing::warn!(
                                    "missing blobs in index for unchanged file {}; re-reading it",
                                    node.name().to_string_lossy()
                                );
                                (Parent::NotFound, open.take())
                            }
                        }
                        other => {
                            let p = match other {
                                Parent::NotMatched => Parent::NotMatched,
                                _ => Parent::NotFound,
                            };
                            (p, open.take())
                        }
                    };
                    let open = if node.node_type == NodeType::File {
                        open
                    } else {
                        None
                    };
                    if open.is_some() {
                        batch_bytes += size;
                    } else if matches!(p, Parent::Matched(())) {
                        shared.bytes_done.fetch_add(size, Ordering::Relaxed);
                    }
                    // rustic_core's counts: a matched entry its size, a file read what was
                    // read (set when it is), anything else nothing.
                    let matched = matches!(p, Parent::Matched(()));
                    let needs_read = node.node_type == NodeType::File && !matched;
                    batch.push(Step::Entry {
                        ok: !(needs_read && open.is_none()),
                        node,
                        parent: p,
                        open,
                        size: if matched { size } else { 0 },
                    });
                }
            }
        }
        if (batch.len() >= BATCH_FILES || batch_bytes >= BATCH_BYTES)
            && !send(&mut batch, &mut batch_bytes)
        {
            return Ok(());
        }
    }
    for _ in dirs.finish() {
        parent.leave();
        batch.push(Step::Leave);
    }
    if !batch.is_empty() {
        _ = send(&mut batch, &mut batch_bytes);
    }
    Ok(())
}

/// What [`Trees`] makes of one entry.
enum TreeStep {
    Enter(PathBuf, Node),
    Leave,
    Item(Node),
}

/// Turns entries in tree order into directory steps: rustic_core's `TreeIterator` (a directory
/// the source did not list, such as the parents of a backup path, gets a plain 0755 node).
#[derive(Default)]
struct Trees {
    path: PathBuf,
}

impl Trees {
    /// The steps for an entry in directory `dir` (for a directory: its own path).
    fn steps(&mut self, dir: &Path, node: Node) -> Vec<TreeStep> {
        let mut out = Vec::new();
        while !dir.starts_with(&self.path) {
            if !self.pop() {
                break;
            }
            out.push(TreeStep::Leave);
        }
        let missing: Vec<Component<'_>> = dir
            .strip_prefix(&self.path)
            .map(|m| m.components().collect())
            .unwrap_or_default();
        let mut node = Some(node);
        for comp in missing {
            self.path.push(comp);
            let Component::Normal(name) = comp else {
                continue;
            };
            if node.as_ref().is_some_and(|n| n.is_dir()) && self.path == dir {
                out.push(TreeStep::Enter(
                    self.path.clone(),
                    node.take().expect("node"),
                ));
                return out;
            }
            let meta = Metadata {
                mode: Some(0o755),
                ..Default::default()
            };
            out.push(TreeStep::Enter(
                self.path.clone(),
                Node::new_node(name, NodeType::Dir, meta),
            ));
        }
        if let Some(node) = node {
            out.push(TreeStep::Item(node));
        }
        out
    }

    /// Leaves the innermost directory; false at the top.
    fn pop(&mut self) -> bool {
        let mut comps = self.path.components();
        loop {
            match comps.next_back() {
                Some(Component::Normal(_) | Component::Prefix(_)) => {
                    self.path = comps.collect();
                    return true;
                }
                Some(_) => {}
                None => return false,
            }
        }
    }

    /// Leaves every directory still open.
    fn finish(&mut self) -> Vec<()> {
        let mut out = Vec::new();
        while self.pop() {
            out.push(());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a batch

/// Reads, chunks and seals the files of a batch that need it, on every core.
///
/// A file the source cannot read is left out (the source has said why, as a warning of the
/// job); anything else that fails, such as writing a pack, fails the backup: a snapshot must
/// never lack a file because the repository refused its bytes.
fn read_batch<O: ReadSourceOpen + Send>(
    batch: &mut [Step<O>],
    chunker: &Chunker,
    packs: &Packs,
    shared: &Shared,
) -> Result<()> {
    batch.par_iter_mut().try_for_each(|step| {
        let Step::Entry {
            node,
            open,
            size,
            ok,
            ..
        } = step
        else {
            return Ok(());
        };
        let Some(open) = open.take() else {
            return Ok(());
        };
        if shared.is_cancelled() {
            *ok = false;
            return Ok(());
        }
        let reader = match open.open() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("ignoring error: {}", e.display_log());
                *ok = false;
                return Ok(());
            }
        };
        match chunker.store(reader, node.meta.size, packs, shared) {
            Ok((ids, total)) => {
                node.content = Some(ids);
                *size = total;
                Ok(())
            }
            Err(Error::SourceUnavailable(e)) => {
                tracing::warn!(
                    "ignoring error reading {}: {e}",
                    node.name().to_string_lossy()
                );
                *ok = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Building trees

/// rustic_core's `TreeArchiver`: the directories being built and the summary's counts.
struct Builder {
    stack: Vec<(PathBuf, Node, Parent<TreeId>, Tree)>,
    tree: Tree,
    summary: SnapshotSummary,
    sealer: Sealer,
}

impl Builder {
    fn add<O>(&mut self, step: Step<O>, packs: &Packs) -> Result<()> {
        match step {
            Step::Enter(path, node, parent) => {
                let tree = std::mem::take(&mut self.tree);
                self.stack.push((path, node, parent, tree));
            }
            Step::Leave => {
                let (_, mut node, parent, outer) = self
                    .stack
                    .pop()
                    .ok_or_else(|| Error::Repository("the tree stack is empty".into()))?;
                let tree = std::mem::replace(&mut self.tree, outer);
                node.subtree = Some(self.save_tree(tree, &parent, packs)?);
                self.tree.nodes.push(node);
            }
            Step::Entry {
                node,
                parent,
                size,
                ok,
                ..
            } => {
                if !ok {
                    return Ok(());
                }
                let s = &mut self.summary;
                match parent {
                    Parent::Matched(()) => s.files_unmodified += 1,
                    Parent::NotMatched => s.files_changed += 1,
                    Parent::NotFound => s.files_new += 1,
                }
                s.total_files_processed += 1;
                s.total_bytes_processed += size;
                self.tree.nodes.push(node);
            }
        }
        Ok(())
    }

    /// Serializes `tree` (as rustic_core does, byte for byte), stores it if it is new, and
    /// counts it.
    fn save_tree(&mut self, tree: Tree, parent: &Parent<TreeId>, packs: &Packs) -> Result<TreeId> {
        let (bytes, id) = tree
            .serialize()
            .map_err(|e| Error::Repository(format!("cannot serialize a tree: {e}")))?;
        let s = &mut self.summary;
        s.total_dirs_processed += 1;
        s.total_dirsize_processed += bytes.len() as u64;
        match parent {
            Parent::Matched(p) if *p == id => {
                s.dirs_unmodified += 1;
                return Ok(id);
            }
            Parent::NotFound => s.dirs_new += 1,
            _ => s.dirs_changed += 1,
        }
        if packs.claim(&id) {
            packs.add(&mut self.sealer, BlobType::Tree, *id, &bytes)?;
        }
        Ok(id)
    }
}
