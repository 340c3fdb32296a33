//! The restore's write side: every create, chmod, chown, utimes, link and device node made
//! relative to an opened directory without following symlinks, files written under a temporary
//! name and renamed over the original.

use super::*;

pub(super) fn stat_id(st: &FileStat) -> (u64, u64) {
    #[allow(clippy::useless_conversion)]
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

/// The parent directory of the last entry, reopened only when the entry's parent changes
/// (entries come sorted, so mostly it does not).
#[derive(Default)]
pub(super) struct ParentCache {
    pub(super) last: Option<(PathBuf, OwnedFd)>,
}

impl ParentCache {
    pub(super) fn get<'a>(
        &mut self,
        target: &Beneath,
        rel: &'a Path,
    ) -> io::Result<(&OwnedFd, &'a OsStr)> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::other("an entry without a name"))?;
        if self.last.as_ref().is_none_or(|(p, _)| p != parent) {
            let fd = target.dir(parent)?;
            self.last = Some((parent.to_path_buf(), fd));
        }
        Ok((&self.last.as_ref().expect("set").1, name))
    }
}

pub(super) fn temp_name(i: usize, attempt: u32) -> OsString {
    OsString::from(format!(
        ".rsvault-restore-{}-{i}-{attempt}.tmp",
        std::process::id()
    ))
}

/// The process id in `name` if it is one of [`temp_name`]'s names, exactly:
/// `.rsvault-restore-PID-I-ATTEMPT.tmp`, all three decimal.
pub(super) fn temp_name_pid(name: &[u8]) -> Option<i32> {
    let middle = name
        .strip_prefix(b".rsvault-restore-")?
        .strip_suffix(b".tmp")?;
    let mut parts = middle.split(|b| *b == b'-');
    let pid = parts.next()?;
    let numbers = [pid, parts.next()?, parts.next()?];
    if parts.next().is_some()
        || numbers
            .iter()
            .any(|p| p.is_empty() || p.len() > 20 || !p.iter().all(u8::is_ascii_digit))
    {
        return None;
    }
    std::str::from_utf8(pid)
        .ok()?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Removes from `dir` what restores killed before they could clean up left there: names of
/// [`temp_name`]'s exact pattern whose process no longer exists. A live process's names are
/// left alone (another restore may be writing into the same directory; a pid reused since only
/// delays the removal to a later restore). `unlinkat` removes the name itself, never what a
/// symlink points to, and never a directory. Returns how many were removed.
pub(super) fn remove_stale_temps(dir: &OwnedFd) -> io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    let mut listing = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_io)?;
    let stale: Vec<OsString> = listing
        .iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type() != Some(nix::dir::Type::Directory))
        .filter_map(|e| {
            let name = e.file_name().to_bytes();
            let pid = temp_name_pid(name)?;
            let gone =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(Errno::ESRCH);
            gone.then(|| OsStr::from_bytes(name).to_owned())
        })
        .collect();
    let mut removed = 0;
    for name in stale {
        match nix::unistd::unlinkat(
            dir,
            name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) => removed += 1,
            // Gone already, or a directory after all: nothing of ours to remove.
            Err(Errno::ENOENT | Errno::EISDIR | Errno::EPERM) => {}
            Err(e) => return Err(nix_io(e)),
        }
    }
    Ok(removed)
}

/// Creates a new temporary file in `dir` (never an existing name, never through a symlink).
pub(super) fn create_temp(dir: &OwnedFd, i: usize) -> io::Result<(OsString, File)> {
    for attempt in 0..16 {
        let name = temp_name(i, attempt);
        match openat(
            dir,
            name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => return Ok((name, File::from(fd))),
            // Left by an earlier worker with the same pid that crashed.
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free temporary name"))
}

/// Completed files wait in a batch for their rename until this many are waiting, or this many
/// bytes: then one `syncfs` makes the whole batch durable and they are renamed into place. One
/// file system sync per batch instead of one `fsync` per file, which dominated restores of many
/// small files, with the same guarantee: nothing is renamed over a name before its content is on
/// disk.
const SETTLE_FILES: usize = 2048;
const SETTLE_BYTES: u64 = 256 << 20;

/// Files written, given their metadata and closed, not yet renamed into place.
#[derive(Default)]
pub(super) struct Pending {
    files: Vec<(usize, Option<(bool, bool)>)>,
    bytes: u64,
}

/// The write side of one restore: everything relative to `target`.
pub(super) struct Writer<'a> {
    pub(super) target: &'a Beneath,
    pub(super) shown: &'a Path,
    pub(super) scope: &'a RestoreScope,
    pub(super) is_root: bool,
    pub(super) pending: Mutex<Pending>,
}

impl Writer<'_> {
    /// Opens the file `job` writes (its temporary file, or the device in place) for writing,
    /// without following symlinks, and checks it is still the one created.
    pub(super) fn reopen(
        &self,
        entry: &Entry,
        job: &FileJob,
        dirs: &mut ParentCache,
    ) -> Result<File> {
        self.reopen_with(entry, job, OFlag::empty(), dirs)
            .map_err(|e| self.error(entry, e))
    }

    /// [`Writer::reopen`] with `extra` open flags; a replaced file is an [`Error`] inside the
    /// `io::Error` ([`Writer::error`] takes it out).
    pub(super) fn reopen_with(
        &self,
        entry: &Entry,
        job: &FileJob,
        extra: OFlag,
        dirs: &mut ParentCache,
    ) -> io::Result<File> {
        if crate::failpoint::armed() {
            crate::failpoint::hit(
                "restore.open",
                &self.shown.join(&entry.rel).to_string_lossy(),
            );
        }
        let (dir, name) = dirs.get(self.target, &entry.rel)?;
        let name = match (job.in_place, job.tmp()) {
            (Some(_), _) => name,
            (None, Some(tmp)) => tmp,
            (None, None) => return Err(io::Error::other("the temporary file was not created")),
        };
        let fd = openat(
            dir,
            name,
            OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra,
            Mode::empty(),
        )
        .map_err(nix_io)?;
        let st = fstat(&fd).map_err(nix_io)?;
        if Some(stat_id(&st)) != job.id() {
            return Err(io::Error::other(Error::Repository(format!(
                "restore target '{}': the file being written was replaced by another one during the restore; it was not written to",
                self.shown.join(&entry.rel).display()
            ))));
        }
        Ok(File::from(fd))
    }

    /// The file `job` writes, opened for writing. Its temporary file is created by the first
    /// caller (pre-sized, so pages never written stay holes, unless its one write sizes it:
    /// [`FileJob::sized_by_write`]) and reopened by the others; a block device written in place
    /// is reopened. `dirs`: the caller's last directory, kept open for its next file.
    pub(super) fn open_for_writing(
        &self,
        entry: &Entry,
        job: &FileJob,
        dirs: &mut ParentCache,
    ) -> Result<File> {
        if job.in_place.is_some() {
            return self.reopen(entry, job, dirs);
        }
        let mut made = None;
        let mut failed = None;
        let temp = job.temp.get_or_init(|| {
            let created = (|| {
                let (dir, _) = dirs.get(self.target, &entry.rel)?;
                let (tmp, f) = create_temp(dir, job.entry)?;
                let sized = if job.sized_by_write {
                    Ok(())
                } else {
                    f.set_len(job.size)
                };
                match sized.and_then(|()| fstat(&f).map_err(nix_io)) {
                    Ok(st) => Ok((tmp, stat_id(&st), (st.st_uid, st.st_gid), f)),
                    Err(e) => {
                        let _ = nix::unistd::unlinkat(
                            dir,
                            tmp.as_os_str(),
                            nix::unistd::UnlinkatFlags::NoRemoveDir,
                        );
                        Err(e)
                    }
                }
            })();
            match created {
                Ok((tmp, id, owner, f)) => {
                    made = Some(f);
                    Some((tmp, id, owner))
                }
                Err(e) => {
                    failed = Some(io_error(&self.shown.join(&entry.rel), &e));
                    None
                }
            }
        });
        match (made, failed, temp) {
            (Some(f), _, _) => Ok(f),
            (_, Some(e), _) => Err(e),
            (_, _, Some(_)) => self.reopen(entry, job, dirs),
            (_, _, None) => Err(Error::Repository(format!(
                "restore target '{}': its temporary file could not be created",
                self.shown.join(&entry.rel).display()
            ))),
        }
    }

    /// Gives up a file whose data is damaged or missing: its temporary file, if one was
    /// created, is removed; nothing is renamed over its name.
    pub(super) fn discard(&self, entry: &Entry, job: &FileJob) {
        if let (Some(tmp), Ok((dir, _))) = (job.tmp(), self.target.parent(&entry.rel)) {
            let _ = nix::unistd::unlinkat(&dir, tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        job.settled.store(true, Ordering::SeqCst);
    }

    /// The job's error for an I/O error on `entry`.
    pub(super) fn error(&self, entry: &Entry, e: io::Error) -> Error {
        match e.downcast::<Error>() {
            Ok(e) => e,
            Err(e) => io_error(&self.shown.join(&entry.rel), &e),
        }
    }

    /// Completes a file whose segments are all written: its metadata through the descriptor,
    /// then it joins the batch of files waiting to be renamed over their originals once they are
    /// on disk ([`Writer::settle`]). Returns the batch when this file filled it: the caller
    /// settles it. Damaged files are removed instead; a device written in place is synced.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_file(
        &self,
        file_idx: usize,
        entries: &[Entry],
        files: &[FileJob],
        file: &File,
        in_the_way: Option<(bool, bool)>,
        shared: &Shared,
    ) -> Result<Option<Pending>> {
        let job = &files[file_idx];
        let entry = &entries[job.entry];
        let path = self.shown.join(&entry.rel);
        if job.in_place.is_some() {
            // In place (a block device): its metadata is the device's, not the image's.
            file.sync_all().map_err(|e| io_error(&path, &e))?;
            job.settled.store(true, Ordering::SeqCst);
            return Ok(None);
        }
        if job.damaged.load(Ordering::SeqCst) {
            self.discard(entry, job);
            return Ok(None);
        }
        let mut warnings = Vec::new();
        self.set_metadata_fd(file, &entry.node, &entry.rel, job.owner(), &mut warnings);
        if !warnings.is_empty() {
            shared.warnings.lock().expect("warnings").extend(warnings);
        }
        let mut p = self.pending.lock().expect("pending");
        p.files.push((file_idx, in_the_way));
        p.bytes += job.size;
        Ok((p.files.len() >= SETTLE_FILES || p.bytes >= SETTLE_BYTES)
            .then(|| std::mem::take(&mut *p)))
    }

    /// Settles every file still waiting (the end of the contents phase).
    pub(super) fn settle_pending(&self, entries: &[Entry], files: &[FileJob]) -> Result<()> {
        let batch = std::mem::take(&mut *self.pending.lock().expect("pending"));
        self.settle(batch, entries, files)
    }

    /// Makes a batch durable (one `syncfs` per file system its files are on: a target can hold
    /// mount points) and renames each file into place.
    pub(super) fn settle(
        &self,
        batch: Pending,
        entries: &[Entry],
        files: &[FileJob],
    ) -> Result<()> {
        if batch.files.is_empty() {
            return Ok(());
        }
        crate::failpoint::hit("restore.settle", &self.shown.to_string_lossy());
        let mut batch = batch;
        // In path order: one directory opened per directory, not one per file (files complete
        // in whatever order the writers finish them).
        batch
            .files
            .sort_unstable_by_key(|(idx, _)| files[*idx].entry);
        let mut synced: Vec<u64> = Vec::new();
        for (idx, _) in &batch.files {
            let job = &files[*idx];
            let dev = job.id().expect("a file waiting to settle was created").0;
            if synced.contains(&dev) {
                continue;
            }
            let rel = &entries[job.entry].rel;
            let path = self.shown.join(rel);
            let (dir, _) = self.target.parent(rel).map_err(|e| io_error(&path, &e))?;
            nix::unistd::syncfs(&dir).map_err(|e| io_error(&path, &nix_io(e)))?;
            synced.push(dev);
        }
        let mut parents = ParentCache::default();
        for (idx, in_the_way) in batch.files {
            let job = &files[idx];
            let rel = &entries[job.entry].rel;
            let path = self.shown.join(rel);
            let tmp = job.tmp().expect("only temporary files wait");
            let (dir, name) = parents
                .get(self.target, rel)
                .map_err(|e| io_error(&path, &e))?;
            self.rename_into_place(dir, tmp, name, in_the_way)
                .map_err(|e| io_error(&path, &e))?;
            job.settled.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Renames `tmp` over `name` in `dir`; a directory in the way goes first (a rename cannot
    /// replace it), and only now that its replacement is complete.
    pub(super) fn rename_into_place(
        &self,
        dir: &OwnedFd,
        tmp: &OsStr,
        name: &OsStr,
        in_the_way: Option<(bool, bool)>,
    ) -> io::Result<()> {
        if in_the_way.is_some_and(|(is_dir, _)| is_dir) {
            match confine::remove_all(dir, name) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        renameat(dir, tmp, dir, name).map_err(nix_io)
    }

    /// Removes the temporary files of every file not renamed into place.
    pub(super) fn clean_up(&self, entries: &[Entry], files: &[FileJob]) {
        for f in files {
            if f.settled.load(Ordering::SeqCst) {
                continue;
            }
            self.discard(&entries[f.entry], f);
        }
    }

    /// Makes `name` a hard link to the restored `canonical`. `Ok(true)`: created.
    pub(super) fn link(
        &self,
        canonical: &Path,
        dir: &OwnedFd,
        name: &OsStr,
        i: usize,
        in_the_way: Option<(bool, bool)>,
    ) -> io::Result<bool> {
        let (cdir, cname) = self.target.parent(canonical)?;
        self.create_then_place(dir, name, i, in_the_way, |at| {
            nix::unistd::linkat(&cdir, cname, dir, at, AtFlags::empty()).map_err(nix_io)
        })?;
        Ok(true)
    }

    /// Creates `name` with `make` (which gets the name to create): directly when nothing is in
    /// the way, else under a temporary name renamed over what is there.
    pub(super) fn create_then_place(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        i: usize,
        in_the_way: Option<(bool, bool)>,
        make: impl Fn(&OsStr) -> io::Result<()>,
    ) -> io::Result<()> {
        if in_the_way.is_none() {
            return make(name);
        }
        let mut attempt = 0;
        let tmp = loop {
            let tmp = temp_name(i, attempt);
            match make(&tmp) {
                Ok(()) => break tmp,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && attempt < 16 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        self.rename_into_place(dir, &tmp, name, in_the_way)
            .inspect_err(|_| {
                let _ = nix::unistd::unlinkat(
                    dir,
                    tmp.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            })
    }

    /// Creates a symlink or special file. `Ok(false)`: left out on purpose (a warning says so).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn special(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        node: &Node,
        i: usize,
        in_the_way: Option<(bool, bool)>,
        warnings: &mut Vec<Warning>,
        rel: &Path,
    ) -> io::Result<bool> {
        let perm = Mode::from_bits_truncate(0o600);
        let (kind_flag, dev) = match &node.node_type {
            NodeType::Symlink { .. } => {
                let link = node.node_type.to_link();
                self.create_then_place(dir, name, i, in_the_way, |at| {
                    nix::unistd::symlinkat(link, dir, at).map_err(nix_io)
                })?;
                return Ok(true);
            }
            NodeType::Fifo => (SFlag::S_IFIFO, 0),
            NodeType::Socket => (SFlag::S_IFSOCK, 0),
            NodeType::Dev { device } => (SFlag::S_IFBLK, *device),
            NodeType::Chardev { device } => (SFlag::S_IFCHR, *device),
            NodeType::Dir | NodeType::File => return Ok(false),
        };
        if !self.scope.original_location
            && matches!(
                node.node_type,
                NodeType::Fifo | NodeType::Dev { .. } | NodeType::Chardev { .. }
            )
        {
            warnings.push(Warning {
                path: rel.to_string_lossy().into_owned(),
                reason: format!(
                    "{} not restored: device nodes and FIFOs are recreated only by an original-location restore",
                    kind(node)
                ),
            });
            return Ok(false);
        }
        self.create_then_place(dir, name, i, in_the_way, |at| {
            nix::sys::stat::mknodat(dir, at, kind_flag, perm, dev).map_err(nix_io)
        })?;
        Ok(true)
    }

    /// The mode to set: setuid/setgid bits only in the original location.
    pub(super) fn mode_for(
        &self,
        node: &Node,
        rel: &Path,
        warnings: &mut Vec<Warning>,
    ) -> Option<Mode> {
        let mut mode = unix_perm_from_go(node.meta.mode?);
        if !self.scope.original_location && mode & 0o6000 != 0 {
            mode &= !0o6000;
            warnings.push(Warning {
                path: rel.to_string_lossy().into_owned(),
                reason: "setuid/setgid bits not restored: an alternate-location restore never recreates them".into(),
            });
        }
        Some(Mode::from_bits_truncate(mode))
    }

    /// Owner (as root), mode and times through an open descriptor: nothing to follow.
    pub(super) fn set_metadata_fd(
        &self,
        fd: &impl AsFd,
        node: &Node,
        rel: &Path,
        owner: Option<(u32, u32)>,
        warnings: &mut Vec<Warning>,
    ) {
        let mut fail = |what: &str, e: &dyn std::fmt::Display| {
            warnings.push(Warning {
                path: rel.to_string_lossy().into_owned(),
                reason: format!("could not restore {what}: {e}"),
            });
        };
        let meta = &node.meta;
        // `owner`: what the file has now, when known (a file this restore created): a restore
        // as root of files its own user owns need not change them, one call per file fewer.
        let unchanged = owner.is_some_and(|(uid, gid)| {
            meta.uid.is_none_or(|u| u == uid) && meta.gid.is_none_or(|g| g == gid)
        });
        if self.is_root && !unchanged {
            // Before the mode: a change of owner clears setuid/setgid bits.
            if let Err(e) = nix::unistd::fchown(
                fd,
                meta.uid.map(nix::unistd::Uid::from_raw),
                meta.gid.map(nix::unistd::Gid::from_raw),
            ) {
                fail("ownership", &e);
            }
        }
        let mut mode_warnings = Vec::new();
        if let Some(mode) = self.mode_for(node, rel, &mut mode_warnings) {
            if let Err(e) = nix::sys::stat::fchmod(fd, mode) {
                fail("permissions", &e);
            }
        }
        if let Some((atime, mtime)) = times(node) {
            if let Err(e) = nix::sys::stat::futimens(fd, &atime, &mtime) {
                fail("times", &e);
            }
        }
        warnings.extend(mode_warnings);
    }

    /// Owner, mode and times of a symlink or special file by name, never following a symlink.
    pub(super) fn set_metadata_at(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        node: &Node,
        rel: &Path,
        warnings: &mut Vec<Warning>,
    ) {
        let mut fail = |what: &str, e: &dyn std::fmt::Display| {
            warnings.push(Warning {
                path: rel.to_string_lossy().into_owned(),
                reason: format!("could not restore {what}: {e}"),
            });
        };
        let meta = &node.meta;
        if self.is_root {
            if let Err(e) = nix::unistd::fchownat(
                dir,
                name,
                meta.uid.map(nix::unistd::Uid::from_raw),
                meta.gid.map(nix::unistd::Gid::from_raw),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                fail("ownership", &e);
            }
        }
        let mut mode_warnings = Vec::new();
        if !node.is_symlink() {
            if let Some(mode) = self.mode_for(node, rel, &mut mode_warnings) {
                // With AT_SYMLINK_NOFOLLOW a symlink swapped in is refused, not followed.
                if let Err(e) = nix::sys::stat::fchmodat(
                    dir,
                    name,
                    mode,
                    nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                ) {
                    fail("permissions", &e);
                }
            }
        }
        if let Some((atime, mtime)) = times(node) {
            if let Err(e) = nix::sys::stat::utimensat(
                dir,
                name,
                &atime,
                &mtime,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            ) {
                fail("times", &e);
            }
        }
        warnings.extend(mode_warnings);
    }
}

pub(super) fn times(node: &Node) -> Option<(nix::sys::time::TimeSpec, nix::sys::time::TimeSpec)> {
    use nix::sys::time::TimeSpec;
    let ts = |t: rustic_core::jiff::Timestamp| {
        TimeSpec::new(t.as_second(), i64::from(t.subsec_nanosecond()))
    };
    let mtime = node.meta.mtime?;
    Some((ts(node.meta.atime.unwrap_or(mtime)), ts(mtime)))
}

pub(super) fn kind(node: &Node) -> &'static str {
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
