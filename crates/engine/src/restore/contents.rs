//! Writing the files' contents: a fixed number of threads, each taking the next [`Run`], reading
//! it with one ranged read, decoding its blobs one at a time and writing each to every place it
//! goes. A file whose last blob is written is queued to be completed (given its metadata and
//! added to the batch that is synced and renamed into place together), and every thread takes
//! completions before new runs: one run can hold the blobs of thousands of small files, and their
//! completions would otherwise all fall to the one thread that read it.
//!
//! Memory: a thread holds one run's bytes ([`packs::MAX_READ`], or one larger blob) and one
//! decoded blob. A blob that cannot be read or decoded damages the files it belongs to (they are
//! never renamed into place); the other blobs of its run are still written.

use std::sync::{Condvar, OnceLock};
use std::time::Duration;

use rustic_core::{FileType, WriteBackend};

use super::packs::{self, Cipher, Need, Run, Target};
use super::*;

/// What the writer threads share.
pub(super) struct Contents<'a> {
    pub(super) be: &'a dyn WriteBackend,
    pub(super) decoder: &'a Cipher,
    pub(super) w: &'a Writer<'a>,
    pub(super) entries: &'a [Entry],
    pub(super) in_the_way: &'a [Option<(bool, bool)>],
    pub(super) files: &'a [FileJob],
    pub(super) needs: &'a [Need],
    pub(super) runs: &'a [Run],
    /// What is left to do.
    pub(super) queue: Mutex<Queue>,
    pub(super) queued: Condvar,
    pub(super) shared: &'a Shared,
    pub(super) fatal: Mutex<Option<Error>>,
    /// Why the first damaged file is damaged, for the job's error.
    pub(super) first_damage: &'a OnceLock<String>,
}

#[derive(Default)]
pub(super) struct Queue {
    /// Files whose every target is handled, to be completed.
    complete: Vec<usize>,
    /// The next run to take.
    next: usize,
    /// Runs being worked on (which may queue files to complete).
    running: usize,
}

/// The file a thread last wrote to, kept open while its next targets are in the same file.
type OpenFile = Option<(usize, File)>;

enum Task<'r> {
    Complete(usize),
    Run(&'r Run),
}

impl Contents<'_> {
    /// One writer thread: works until there is nothing left to complete and no run left or
    /// being worked on, the job is cancelled, or an error stops every writer.
    pub(super) fn work(&self) {
        let mut open: OpenFile = None;
        let mut scratch = match packs::Scratch::new() {
            Ok(s) => s,
            Err(e) => {
                set_fatal(&self.fatal, self.shared, Error::Repository(e));
                self.queued.notify_all();
                return;
            }
        };
        while let Some(task) = self.next_task() {
            let res = match task {
                Task::Complete(file) => self.complete(file, &mut open),
                Task::Run(run) => {
                    let res = self.run(run, &mut open, &mut scratch);
                    self.queue.lock().expect("queue").running -= 1;
                    self.queued.notify_all();
                    res
                }
            };
            if let Err(e) = res {
                set_fatal(&self.fatal, self.shared, e);
                self.queued.notify_all();
                return;
            }
        }
    }

    fn next_task(&self) -> Option<Task<'_>> {
        let mut q = self.queue.lock().expect("queue");
        loop {
            if self.shared.cancelled.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(file) = q.complete.pop() {
                return Some(Task::Complete(file));
            }
            if let Some(run) = self.runs.get(q.next) {
                q.next += 1;
                q.running += 1;
                return Some(Task::Run(run));
            }
            if q.running == 0 {
                return None;
            }
            // A cancel sets a flag nobody notifies about: look again now and then.
            q = self
                .queued
                .wait_timeout(q, Duration::from_millis(100))
                .expect("queue")
                .0;
        }
    }

    fn run(&self, run: &Run, open: &mut OpenFile, scratch: &mut packs::Scratch) -> Result<()> {
        let needs = &self.needs[run.needs.clone()];
        let wanted = |n: &Need| {
            n.targets
                .iter()
                .any(|t| !self.files[t.file].damaged.load(Ordering::SeqCst))
        };
        let raw = if needs.iter().any(wanted) {
            self.read(run)
        } else {
            Err(String::new())
        };
        for need in needs {
            if self.shared.cancelled.load(Ordering::SeqCst) {
                return Ok(());
            }
            let data = if wanted(need) {
                raw.as_ref().map_err(Clone::clone).and_then(|raw| {
                    let start = (need.at.offset - run.offset) as usize;
                    let bytes = &raw[start..start + need.at.length as usize];
                    self.decoder
                        .decode(scratch, &need.id, bytes, need.at.uncompressed)
                        .map_err(|e| format!("pack {}: {e}", run.pack))
                })
            } else {
                Err(String::new())
            };
            for t in &need.targets {
                match &data {
                    Ok(data) => self.write(t, data, open)?,
                    Err(reason) => self.damage(t.file, reason),
                }
                self.target_done(t.file);
            }
        }
        Ok(())
    }

    /// The run's bytes, or why they could not be read.
    fn read(&self, run: &Run) -> std::result::Result<Bytes, String> {
        let raw = self
            .be
            .read_partial(FileType::Pack, &run.pack, false, run.offset, run.length)
            .map_err(|e| {
                format!(
                    "pack {}: reading {} bytes at {} failed: {}",
                    run.pack,
                    run.length,
                    run.offset,
                    crate::repo::concise(&e.to_string())
                )
            })?;
        if raw.len() != run.length as usize {
            return Err(format!(
                "pack {}: {} bytes at {} were asked for, {} came back (truncated pack?)",
                run.pack,
                run.length,
                run.offset,
                raw.len()
            ));
        }
        Ok(raw)
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

    fn write(&self, t: &Target, data: &[u8], open: &mut OpenFile) -> Result<()> {
        let job = &self.files[t.file];
        if job.damaged.load(Ordering::SeqCst) {
            return Ok(());
        }
        job.started.store(true, Ordering::SeqCst);
        let entry = &self.entries[job.entry];
        let file = self.open(t.file, open)?;
        // A device written in place has old blocks where the image has zeros.
        let res = if job.tmp.is_some() {
            write_sparse(file, data, t.offset)
        } else {
            file.write_all_at(data, t.offset)
        };
        res.map_err(|e| io_error(&self.w.shown.join(&entry.rel), &e))?;
        self.shared
            .bytes_done
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn open<'o>(&self, file: usize, open: &'o mut OpenFile) -> Result<&'o File> {
        if open.as_ref().is_none_or(|(f, _)| *f != file) {
            let job = &self.files[file];
            *open = Some((file, self.w.reopen(&self.entries[job.entry], job)?));
        }
        Ok(&open.as_ref().expect("open file").1)
    }

    /// Counts one target of `file` as handled; after the last one (every writer is done with
    /// the file) it is queued to be completed.
    fn target_done(&self, file: usize) {
        if self.files[file].remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.queue.lock().expect("queue").complete.push(file);
            self.queued.notify_one();
        }
    }

    fn complete(&self, file: usize, open: &mut OpenFile) -> Result<()> {
        let job = &self.files[file];
        let f = self.open(file, open)?;
        self.w.finish_file(
            file,
            self.entries,
            self.files,
            f,
            self.in_the_way[job.entry],
            self.shared,
        )?;
        *open = None;
        self.shared.files_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
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

/// The blobs of one file's content, planned: `Err` names the first blob the index does not
/// have (the file cannot be restored).
pub(super) fn plan_file(
    r: &Repository<IndexedFullStatus>,
    planner: &mut packs::Planner,
    file: usize,
    content: &[rustic_core::DataId],
) -> std::result::Result<usize, String> {
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
    Ok(located.len())
}
