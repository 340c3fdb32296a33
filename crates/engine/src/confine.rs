//! Writes confined below an opened directory (issue #9).
//!
//! A restore target is checked by the API when the request arrives, but the job runs later and
//! anyone who can write below the restore root can swap a directory for a symbolic link in
//! between, or while the job runs. So the restore never uses a path from `/` again once it has
//! started: it opens the root once, and every later operation is relative to a directory
//! descriptor reached from it one component at a time with `O_NOFOLLOW | O_DIRECTORY`, and ends
//! in an `*at` call that does not follow a symlink either (`openat(O_NOFOLLOW)`, `mkdirat`,
//! `mknodat`, `symlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`, `fchownat` / `utimensat` /
//! `fchmodat` with `AT_SYMLINK_NOFOLLOW`, or `f*` calls on a descriptor already open).
//! A symlink met on the way is an error ([`is_escape`]), never followed.
//!
//! What this cannot stop: a directory that is *moved* (renamed) elsewhere while the restore holds
//! it keeps receiving files at its new place. Moving it needs write access to the destination
//! too, so that only reaches places the mover could write anyway.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Flags of every directory open below the root.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Whether an error means that a symlink (or a non-directory) stood where a directory was
/// expected: a swap, to be reported as such and never worked around.
pub(crate) fn is_escape(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == libc::ELOOP || c == libc::ENOTDIR)
}

/// A directory opened without following symlinks below an opened root.
#[derive(Debug)]
pub(crate) struct Beneath {
    fd: OwnedFd,
}

impl Beneath {
    /// Opens `root` (following symlinks: it is the administrator's configuration, checked when
    /// the request arrived), then `rel` below it without following any, creating missing
    /// directories when `create` is set.
    /// `Ok(None)`: `rel` does not exist and `create` is not set.
    pub(crate) fn open(root: &Path, rel: &Path, create: bool) -> io::Result<Option<Self>> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Self { fd }.walk(rel, create)
    }

    /// The directory `rel` below this one, reached without following symlinks and created
    /// (mode 0777 less the umask, as `mkdir -p`) where missing if `create` is set. `Ok(None)`:
    /// it does not exist.
    pub(crate) fn walk(&self, rel: &Path, create: bool) -> io::Result<Option<Self>> {
        let mut fd = self.fd.try_clone()?;
        for c in components(rel)? {
            fd = match openat(&fd, c, dir_flags(), Mode::empty()) {
                Ok(next) => next,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&fd, c, Mode::from_bits_truncate(0o777)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    openat(&fd, c, dir_flags(), Mode::empty())?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        }
        Ok(Some(Self { fd }))
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The directory `rel` below this one, reached without following symlinks.
    pub(crate) fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let parts = components(rel)?;
        if let Some(fd) = self.dir_in_one_call(rel) {
            return Ok(fd);
        }
        let mut cur: Option<OwnedFd> = None;
        for c in parts {
            let next = match &cur {
                Some(d) => openat(d, c, dir_flags(), Mode::empty()),
                None => openat(&self.fd, c, dir_flags(), Mode::empty()),
            }
            .map_err(io::Error::from)?;
            cur = Some(next);
        }
        match cur {
            Some(d) => Ok(d),
            None => self.fd.try_clone(),
        }
    }

    /// [`Beneath::dir`] in one `openat2` system call where the kernel has it, with the walk's
    /// rules: no symlink followed anywhere on the way (`RESOLVE_NO_SYMLINKS`) and nothing reached
    /// outside this directory (`RESOLVE_BENEATH`). A restore reopens a file's directory for
    /// every file it writes, and the walk cost one `openat` and one `close` per component (most
    /// of a restore's system calls). `None`: not opened this way (no `openat2` here, a
    /// concurrent rename, or an error, whose exact kind the walk then reports).
    fn dir_in_one_call(&self, rel: &Path) -> Option<OwnedFd> {
        use nix::fcntl::{openat2, OpenHow, ResolveFlag};
        use std::sync::atomic::{AtomicBool, Ordering};
        /// `openat2` is missing (before Linux 5.6) or refused by a sandbox's filter.
        static MISSING: AtomicBool = AtomicBool::new(false);
        if MISSING.load(Ordering::Relaxed) || rel.as_os_str().is_empty() {
            return None;
        }
        let how = OpenHow::new()
            .flags(dir_flags())
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match openat2(&self.fd, rel, how) {
            Ok(fd) => Some(fd),
            Err(Errno::ENOSYS | Errno::EPERM) => {
                // EPERM is a seccomp filter's answer, or a real refusal: the walk tells which.
                if self.walk(rel, false).is_ok_and(|d| d.is_some()) {
                    MISSING.store(true, Ordering::Relaxed);
                }
                None
            }
            Err(_) => None,
        }
    }

    /// The parent directory of `rel` and `rel`'s last component.
    pub(crate) fn parent<'a>(&self, rel: &'a Path) -> io::Result<(OwnedFd, &'a OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::other(format!("'{}' has no file name", rel.display())))?;
        let dir = self.dir(rel.parent().unwrap_or(Path::new("")))?;
        Ok((dir, name))
    }

    /// `lstat` of `rel`. `Ok(None)` when it does not exist; an ancestor that is not a directory
    /// is an error ([`is_escape`]).
    pub(crate) fn lstat(&self, rel: &Path) -> io::Result<Option<FileStat>> {
        let (dir, name) = match self.parent(rel) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The normal components of `rel`; anything else (`..`, a root) is refused.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::other(format!(
                "'{}' leaves the restore target",
                rel.display()
            ))),
        })
        .collect()
}

/// Whether `st` is a directory.
pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Whether `st` is a block device.
pub(crate) fn is_block_device(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFBLK
}

/// Removes `name` in `dir`, a whole tree if it is a directory, without following symlinks.
pub(crate) fn remove_all(dir: &impl AsFd, name: &OsStr) -> io::Result<()> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if !is_dir(&st) {
        return Ok(unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?);
    }
    let sub = openat(dir, name, dir_flags(), Mode::empty())?;
    let names: Vec<PathBuf> = {
        let mut d = nix::dir::Dir::from_fd(sub.try_clone()?)?;
        d.iter()
            .filter_map(|e| e.ok())
            .map(|e| {
                use std::os::unix::ffi::OsStrExt;
                PathBuf::from(OsStr::from_bytes(e.file_name().to_bytes()))
            })
            .filter(|n| n.as_os_str() != "." && n.as_os_str() != "..")
            .collect()
    };
    for n in names {
        remove_all(&sub, n.as_os_str())?;
    }
    Ok(unlinkat(dir, name, UnlinkatFlags::RemoveDir)?)
}
