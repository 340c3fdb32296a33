//! Writing the files' contents: a fixed number of threads, each taking the next [`Run`], reading
//! it with one ranged read, decoding its blobs one at a time and writing each to every place it
//! goes. The thread that handles a file's last blob completes it while the file is still open
//! (gives it its metadata and adds it to the batch that is synced and renamed into place
//! together): completing it elsewhere cost a second open of the file, and as every thread
//! completes the files of the runs it reads, completions are spread as the runs are.
//!
//! Memory: a thread holds one run's bytes ([`packs::MAX_READ`], or one larger blob) and one
//! decoded blob. A blob that cannot be read or decoded damages the files it belongs to (they are
//! never renamed into place); the other blobs of its run are still written.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::OnceLock;

use super::direct::{self, DirectIo, Staging};
use super::packs::{self, Cipher, Need, Reads, Run, Target};
use super::*;

/// What the writer threads share.
pub(super) struct Contents<'a> {
    pub(super) packs: packs::Source<'a>,
    pub(super) decoder: &'a Cipher,
    pub(super) w: &'a Writer<'a>,
    pub(super) entries: &'a [Entry],
    pub(super) in_the_way: &'a [Option<(bool, bool)>],
    pub(super) files: &'a [FileJob],
    pub(super) needs: &'a [Need],
    pub(super) runs: &'a [Run],
    /// The next run to take.
    pub(super) next: AtomicUsize,
    /// Full batches of completed files go to the settler thread ([`Contents::settle`]), so no
    /// writer waits for a `syncfs`. `None` once the writers are done.
    pub(super) settler: Mutex<Option<SyncSender<Pending>>>,
    pub(super) shared: &'a Shared,
    pub(super) fatal: Mutex<Option<Error>>,
    /// Why the first damaged file is damaged, for the job's error.
    pub(super) first_damage: &'a OnceLock<String>,
    /// Whether long stretches of new files are written directly ([`direct`]).
    pub(super) direct: DirectIo,
}

/// The file a thread last wrote to, kept open while its next targets are in the same file: its
/// descriptor, and its direct-I/O descriptor once one was needed.
type OpenFile = Option<(usize, File, Option<File>)>;

/// What a writer thread keeps from one write to the next.
#[derive(Default)]
struct Thread {
    open: OpenFile,
    /// The directory of the file it last opened: most files of a run are in the same one.
    dirs: ParentCache,
    staging: Staging,
    reads: Reads,
}

impl Contents<'_> {
    /// One writer thread: works until no run is left, the job is cancelled, or an error stops
    /// every writer.
    pub(super) fn work(&self) {
        let mut th = Thread::default();
        let mut scratch = match packs::Scratch::new() {
            Ok(s) => s,
            Err(e) => {
                set_fatal(&self.fatal, self.shared, Error::Repository(e));
                return;
            }
        };
        while let Some(run) = self.next_run() {
            if let Err(e) = self.run(run, &mut th, &mut scratch) {
                set_fatal(&self.fatal, self.shared, e);
                return;
            }
        }
    }

    fn next_run(&self) -> Option<&Run> {
        if self.shared.cancelled.load(Ordering::SeqCst) {
            return None;
        }
        self.runs.get(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn run(&self, run: &Run, th: &mut Thread, scratch: &mut packs::Scratch) -> Result<()> {
        let Thread {
            open,
            dirs,
            staging,
            reads,
        } = th;
        let needs = &self.needs[run.needs.clone()];
        let wanted = |n: &Need| {
            n.targets
                .iter()
                .any(|t| !self.files[t.file].damaged.load(Ordering::SeqCst))
        };
        let mut raw = if needs.iter().any(wanted) {
            reads.read(self.packs, &run.pack, run.offset, run.length)
        } else {
            Err(String::new())
        };
        for need in needs {
            if self.shared.cancelled.load(Ordering::SeqCst) {
                return Ok(());
            }
            let data = if wanted(need) {
                match &mut raw {
                    Ok(raw) => {
                        let start = (need.at.offset - run.offset) as usize;
                        self.decoder
                            .decode_in_place(
                                scratch,
                                &need.id,
                                // Each need of a run is its own stretch of the read.
                                &mut raw[start..start + need.at.length as usize],
                                need.at.uncompressed,
                                // Aligned for the first place it goes (a blob repeated
                                // elsewhere at another phase is copied for its direct writes).
                                need.targets.first().map_or(0, |t| t.offset),
                            )
                            .map_err(|e| format!("pack {}: {e}", run.pack))
                    }
                    Err(reason) => Err(reason.clone()),
                }
            } else {
                Err(String::new())
            };
            for t in &need.targets {
                match &data {
                    Ok(data) => self.write(t, data, open, dirs, staging)?,
                    Err(reason) => self.damage(t.file, reason),
                }
                if self.files[t.file].remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                    // Every writer is done with the file.
                    self.complete(t.file, open, dirs)?;
                }
            }
        }
        Ok(())
    }

    fn damage(&self, file: usize, reason: &str) {
        let job = &self.files[file];
        if !reason.is_empty() && !job.damaged.load(Ordering::SeqCst) {
            let _ = self.first_damage.set(format!(
                "{}: {reason}",
                self.entries[job.entry].rel.display()
            ));
        }
        job.damaged.store(true, Ordering::SeqCst);
    }

    fn write(
        &self,
        t: &Target,
        data: &[u8],
        open: &mut OpenFile,
        dirs: &mut ParentCache,
        staging: &mut Staging,
    ) -> Result<()> {
        let job = &self.files[t.file];
        if job.damaged.load(Ordering::SeqCst) {
            return Ok(());
        }
        job.started.store(true, Ordering::SeqCst);
        let entry = &self.entries[job.entry];
        self.open(t.file, open, dirs)?;
        let (_, file, direct_fd) = open.as_mut().expect("opened");
        let res = if job.in_place.is_none() {
            direct::write_new(
                file,
                || self.w.reopen_with(entry, job, OFlag::O_DIRECT, dirs),
                direct_fd,
                &self.direct,
                staging,
                data,
                t.offset,
            )
            .and_then(|()| {
                // Its one write left its last page a hole (a page of zeros), so the length is
                // still short of the file's.
                if job.sized_by_write && data.last() == Some(&0) {
                    file.set_len(job.size)?;
                }
                Ok(())
            })
        } else {
            // A device written in place has old blocks where the image has zeros.
            file.write_all_at(data, t.offset)
        };
        res.map_err(|e| self.w.error(entry, e))?;
        self.shared
            .bytes_done
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn open<'o>(
        &self,
        file: usize,
        open: &'o mut OpenFile,
        dirs: &mut ParentCache,
    ) -> Result<&'o File> {
        if open.as_ref().is_none_or(|(f, _, _)| *f != file) {
            let job = &self.files[file];
            let f = self
                .w
                .open_for_writing(&self.entries[job.entry], job, dirs)?;
            *open = Some((file, f, None));
        }
        Ok(&open.as_ref().expect("open file").1)
    }

    fn complete(&self, file: usize, open: &mut OpenFile, dirs: &mut ParentCache) -> Result<()> {
        let job = &self.files[file];
        if job.damaged.load(Ordering::SeqCst) && job.in_place.is_none() {
            // Never renamed into place; possibly never even created.
            self.w.discard(&self.entries[job.entry], job);
            if open.as_ref().is_some_and(|(f, _, _)| *f == file) {
                *open = None;
            }
            self.shared.files_done.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let f = self.open(file, open, dirs)?;
        let full = self.w.finish_file(
            file,
            self.entries,
            self.files,
            f,
            self.in_the_way[job.entry],
            self.shared,
        )?;
        if let Some(batch) = full {
            let to_settle = self.settler.lock().expect("settler").clone();
            // Blocks while the settler is one batch behind (memory stays bounded); a settler
            // that stopped on an error has set the job's error already.
            if let Some(tx) = to_settle {
                let _ = tx.send(batch);
            }
        }
        *open = None;
        self.shared.files_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Contents<'_> {
    /// The settler thread: makes each full batch durable and renames its files into place
    /// ([`Writer::settle`]) while the writers go on; stops settling on a cancel or an error (the
    /// files of the batches left are removed with every other unsettled one).
    pub(super) fn settle(&self, batches: Receiver<Pending>) {
        for batch in batches {
            if self.shared.cancelled.load(Ordering::SeqCst) {
                continue;
            }
            if let Err(e) = self.w.settle(batch, self.entries, self.files) {
                set_fatal(&self.fatal, self.shared, e);
            }
        }
    }
}

fn set_fatal(fatal: &Mutex<Option<Error>>, shared: &Shared, err: Error) {
    let mut f = fatal.lock().expect("fatal lock");
    if f.is_none() {
        *f = Some(err);
    }
    // Stop the other writers; the error, not `Cancelled`, is what the caller sees.
    shared.cancelled.store(true, Ordering::SeqCst);
}

/// Every file whose content is written (`wanted(i)` for entry `i`), planned: its job, in entry
/// order, and its blobs in the planner. A file whose blobs are not all in the index is planned
/// as damaged (never written); the first such one says why in `first_damage`.
pub(super) fn plan(
    r: &Repository<IndexedFullStatus>,
    entries: &[Entry],
    wanted: impl Fn(usize) -> bool,
    ctx: &dyn JobContext,
    first_damage: &OnceLock<String>,
    shared: &Shared,
) -> Result<(Vec<FileJob>, packs::Planner)> {
    let mut files = Vec::new();
    let mut planner = packs::Planner::default();
    for (i, e) in entries.iter().enumerate() {
        if !e.node.is_file() || !wanted(i) {
            continue;
        }
        if i % 256 == 0 && ctx.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let content = e.node.content.as_deref().unwrap_or(&[]);
        let planned = plan_file(r, &mut planner, files.len(), content);
        if let Err(reason) = &planned {
            let _ = first_damage.set(format!("{}: {reason}", e.rel.display()));
        }
        let (blobs, length) = *planned.as_ref().unwrap_or(&(0, 0));
        files.push(FileJob {
            entry: i,
            size: e.node.meta.size,
            remaining: AtomicUsize::new(blobs),
            started: AtomicBool::new(false),
            damaged: AtomicBool::new(planned.is_err()),
            // Known once the directories are made.
            in_place: None,
            sized_by_write: blobs <= 1 && length == e.node.meta.size,
            // Created by the writer that first needs it, while others write.
            temp: OnceLock::new(),
            settled: AtomicBool::new(false),
        });
        shared.files_total.fetch_add(1, Ordering::Relaxed);
        shared
            .bytes_total
            .fetch_add(e.node.meta.size, Ordering::Relaxed);
    }
    Ok((files, planner))
}

/// The blobs of one file's content, planned: how many there are and their total length. `Err`
/// names the first blob the index does not have (the file cannot be restored).
fn plan_file(
    r: &Repository<IndexedFullStatus>,
    planner: &mut packs::Planner,
    file: usize,
    content: &[rustic_core::DataId],
) -> std::result::Result<(usize, u64), String> {
    let mut located = Vec::with_capacity(content.len());
    for id in content {
        let ie = r
            .get_index_entry(id)
            .map_err(|_| format!("blob {id} is not in the repository's index"))?;
        let at = packs::Location {
            offset: ie.location.offset,
            length: ie.location.length,
            uncompressed: ie.location.uncompressed_length,
        };
        located.push((BlobId::from(*id), ie.pack, at, ie.data_length()));
    }
    let mut offset = 0;
    for &(id, pack, at, len) in &located {
        planner.add(id, pack, at, Target { file, offset });
        offset += u64::from(len);
    }
    Ok((located.len(), offset))
}
