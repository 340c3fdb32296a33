//! Disk images and block devices as a backup source: one snapshot entry per disk, named by its
//! file name, read through the same guarded reader as files.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use rustic_core::jiff::Timestamp;
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{ReadSource, ReadSourceEntry, ReadSourceOpen, RusticResult};

use super::{mtime_of, GuardedReader, Shared};
use crate::{Error, Result};

pub(super) struct Disk {
    pub(super) path: PathBuf,
    name: String,
    node: Node,
    block_device: bool,
    /// (device, inode) of the image, or (0, device number) of a block device, as first seen.
    id: (u64, u64),
}

/// The identity a disk is checked against when it is opened: (device, inode) of an image, (0,
/// device number) of a block device.
fn disk_id(m: &fs::Metadata) -> (u64, u64) {
    if m.file_type().is_block_device() {
        (0, m.rdev())
    } else {
        (m.dev(), m.ino())
    }
}

pub(super) struct DiskSource {
    pub(super) disks: Vec<Disk>,
    pub(super) shared: Arc<Shared>,
}

pub(super) struct DiskOpen {
    path: PathBuf,
    size: u64,
    mtime: Option<Timestamp>,
    block_device: bool,
    id: (u64, u64),
    shared: Arc<Shared>,
}

impl ReadSourceOpen for DiskOpen {
    type Reader = GuardedReader;

    fn open(self) -> RusticResult<Self::Reader> {
        let display = self.path.display().to_string();
        crate::failpoint::hit("backup.open", &display);
        // Disk paths are configuration and may be symlinks (`/dev/disk/by-id/…`): followed, but
        // what they lead to must still be what was found before the backup started.
        let file = File::open(&self.path)
            .and_then(|f| {
                if disk_id(&f.metadata()?) == self.id {
                    Ok(f)
                } else {
                    Err(io::Error::other(
                        "it was replaced after the backup started, and what replaced it is not read",
                    ))
                }
            })
            .map_err(|e| {
            self.shared
                .warn(&display, format!("unreadable, not backed up: {e}"));
            rustic_core::RusticError::with_source(
                rustic_core::ErrorKind::InputOutput,
                "Failed to open disk `{path}`.",
                e,
            )
            .attach_context("path", display.clone())
        })?;
        Ok(GuardedReader {
            file,
            shared: self.shared,
            display,
            stat_path: (!self.block_device).then_some(self.path),
            expected_size: self.size,
            expected_mtime: self.mtime,
            read: 0,
            reported: false,
        })
    }
}

impl ReadSource for DiskSource {
    type Open = DiskOpen;
    type Iter = DiskIter;

    fn size(&self) -> RusticResult<Option<u64>> {
        self.shared.scanned.store(true, Ordering::SeqCst);
        Ok(Some(self.shared.bytes_total.load(Ordering::Relaxed)))
    }

    fn entries(&self) -> Self::Iter {
        let mut v = Vec::new();
        for d in &self.disks {
            v.push(Ok(ReadSourceEntry {
                path: PathBuf::from(&d.name),
                node: d.node.clone(),
                open: Some(DiskOpen {
                    path: d.path.clone(),
                    size: d.node.meta.size,
                    mtime: d.node.meta.mtime,
                    block_device: d.block_device,
                    id: d.id,
                    shared: self.shared.clone(),
                }),
            }));
        }
        self.shared
            .files_done
            .fetch_add(v.len() as u64, Ordering::Relaxed);
        DiskIter {
            inner: v.into_iter(),
            shared: self.shared.clone(),
        }
    }
}

pub(super) struct DiskIter {
    inner: std::vec::IntoIter<RusticResult<ReadSourceEntry<DiskOpen>>>,
    shared: Arc<Shared>,
}

impl Iterator for DiskIter {
    type Item = RusticResult<ReadSourceEntry<DiskOpen>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.shared.is_cancelled() {
            return None;
        }
        let next = self.inner.next();
        if next.is_none() {
            self.shared.entries_done.store(true, Ordering::SeqCst);
        }
        next
    }
}

/// Go's `os.FileMode` of a regular file with the given unix permission bits (restic's format).
fn go_mode_regular(unix_mode: u32) -> u32 {
    let mut m = unix_mode & 0o777;
    if unix_mode & 0o4000 != 0 {
        m |= 1 << 23;
    }
    if unix_mode & 0o2000 != 0 {
        m |= 1 << 22;
    }
    if unix_mode & 0o1000 != 0 {
        m |= 1 << 20;
    }
    m
}

pub(super) fn prepare_disks(paths: &[PathBuf], shared: &Shared) -> Result<Vec<Disk>> {
    let mut disks: Vec<Disk> = Vec::new();
    for path in paths {
        let m = fs::metadata(path)
            .map_err(|e| Error::SourceUnavailable(format!("disk '{}': {e}", path.display())))?;
        let ft = m.file_type();
        let block_device = ft.is_block_device();
        if !ft.is_file() && !block_device {
            shared.warn(
                path.display().to_string(),
                "skipped: not a regular file or block device",
            );
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::SourceUnavailable(format!("disk '{}': no file name", path.display()))
            })?;
        if disks.iter().any(|d| d.name == name) {
            return Err(Error::SourceUnavailable(format!(
                "two disks share the file name '{name}'"
            )));
        }
        let size = if block_device {
            File::open(path)
                .and_then(|mut f| f.seek(SeekFrom::End(0)))
                .map_err(|e| Error::SourceUnavailable(format!("disk '{}': {e}", path.display())))?
        } else {
            m.len()
        };
        let mut meta = Metadata {
            size,
            mode: Some(go_mode_regular(m.mode())),
            uid: Some(m.uid()),
            gid: Some(m.gid()),
            ..Metadata::default()
        };
        if block_device {
            // A block device's timestamps do not move when its blocks change: make sure no
            // parent snapshot ever matches, so every backup reads the device.
            meta.mtime = Timestamp::try_from(SystemTime::now()).ok();
        } else {
            meta.mtime = mtime_of(&m);
            meta.ctime = Timestamp::new(m.ctime(), m.ctime_nsec() as i32).ok();
            meta.inode = m.ino();
            meta.device_id = m.dev();
        }
        let node = Node::new_node(std::ffi::OsStr::new(&name), NodeType::File, meta);
        shared.files_total.fetch_add(1, Ordering::Relaxed);
        shared.bytes_total.fetch_add(size, Ordering::Relaxed);
        disks.push(Disk {
            path: path.clone(),
            name,
            node,
            block_device,
            id: disk_id(&m),
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}
