//! Writing a restored file's contents: pages of zeros are left as holes, and long aligned
//! stretches go straight to the device (`O_DIRECT`) instead of through the page cache.
//!
//! Why direct: a restore writes data nobody reads back soon, and copying it into the page cache
//! was the largest single cost of a restore (the kernel's copy into fresh page-cache pages was
//! 26% of a restore's CPU samples; on a VM that hands freed memory back to its host, every
//! fresh page is also a fault). A direct write copies nothing and leaves the page cache to the
//! host's own work. What is written directly is still made durable by the batch's `syncfs`
//! before anything is renamed into place (it flushes the device's cache), as buffered data is.
//!
//! Rules that keep the two kinds of write apart: a direct write covers whole file-system pages
//! ([`PAGE`]) that no buffered write of this file touches (the partial pages at a blob's edges,
//! shared with its neighbours, are always buffered), and only stretches of at least
//! [`DIRECT_MIN`] go direct (a direct write waits for the device, which costs more than copying
//! a few pages). A file system that refuses direct I/O (`EINVAL`) switches it off for the rest of
//! the restore; the write is then made through the page cache.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::is_zero;

/// The unit of holes, and the alignment of every direct write (a page: direct writes never
/// share a page with buffered ones).
pub(super) const PAGE: u64 = crate::codec::PAGE as u64;
/// Shortest aligned stretch written directly.
pub(super) const DIRECT_MIN: u64 = 64 << 10;

/// Whether this restore still writes directly.
pub(super) struct DirectIo(AtomicBool);

impl DirectIo {
    pub(super) fn new(enabled: bool) -> Self {
        Self(AtomicBool::new(enabled))
    }

    pub(super) fn enabled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The file system refused a direct open or write: everything from now on is buffered.
    pub(super) fn refused(&self, e: &io::Error) -> bool {
        let refused = e.raw_os_error() == Some(libc::EINVAL);
        if refused && self.0.swap(false, Ordering::Relaxed) {
            tracing::debug!(
                "the restore target refuses direct I/O ({e}); writing through the page cache"
            );
        }
        refused
    }
}

/// A thread's page-aligned copy of what it writes directly, for content that is not already
/// page-aligned in memory (blobs are decoded aligned for the first place they go:
/// [`crate::codec::Cipher::decode`]).
#[derive(Default)]
pub(super) struct Staging(Vec<u8>);

impl Staging {
    fn aligned<'d>(&'d mut self, data: &'d [u8]) -> &'d [u8] {
        if (data.as_ptr() as u64).is_multiple_of(PAGE) {
            return data;
        }
        let need = data.len() + PAGE as usize;
        if self.0.len() < need {
            self.0 = vec![0; need];
        }
        let at = self.0.as_ptr().align_offset(PAGE as usize);
        let out = &mut self.0[at..at + data.len()];
        out.copy_from_slice(data);
        out
    }
}

/// Writes `data` at `offset` of a new file that was pre-sized with `set_len`: pages that would
/// be all zeros stay unwritten (holes); aligned stretches of at least [`DIRECT_MIN`] are written
/// through the descriptor `direct` opens (on first use; kept in `opened`), the rest through
/// `file`.
pub(super) fn write_new(
    file: &File,
    mut direct: impl FnMut() -> io::Result<File>,
    opened: &mut Option<File>,
    io: &DirectIo,
    staging: &mut Staging,
    data: &[u8],
    offset: u64,
) -> io::Result<()> {
    if is_zero(data) {
        return Ok(());
    }
    let mut put = |start: u64, end: u64| -> io::Result<()> {
        let slice = |a: u64, b: u64| &data[(a - offset) as usize..(b - offset) as usize];
        let (a, b) = (start.div_ceil(PAGE) * PAGE, end / PAGE * PAGE);
        if io.enabled() && b > a && b - a >= DIRECT_MIN {
            if opened.is_none() {
                *opened = match direct() {
                    Ok(f) => Some(f),
                    Err(e) if io.refused(&e) => None,
                    Err(e) => return Err(e),
                };
            }
            if let Some(d) = opened.as_ref() {
                reserve(d, a, b)?;
                match d.write_all_at(staging.aligned(slice(a, b)), a) {
                    Ok(()) => {
                        file.write_all_at(slice(start, a), start)?;
                        return file.write_all_at(slice(b, end), b);
                    }
                    Err(e) if io.refused(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        file.write_all_at(slice(start, end), start)
    };
    let end = offset + data.len() as u64;
    let mut run: Option<u64> = None;
    let mut pos = offset;
    while pos < end {
        // Pages are aligned to the file, not to the blob.
        let stop = (pos / PAGE + 1) * PAGE;
        let stop = stop.min(end);
        if is_zero(&data[(pos - offset) as usize..(stop - offset) as usize]) {
            if let Some(start) = run.take() {
                put(start, pos)?;
            }
        } else if run.is_none() {
            run = Some(pos);
        }
        pos = stop;
    }
    match run {
        Some(start) => put(start, end),
        None => Ok(()),
    }
}

/// Allocates `[a, b)` of `file` before it is written directly. A direct write into a hole holds
/// the file's inode lock exclusively until the device has the data, so writers of one large
/// file waited for each other's writes; into allocated (unwritten) blocks, aligned and inside
/// the file's size, it runs under a shared lock. Only what is about to be written is allocated:
/// holes stay holes. A file system without `fallocate` just does without.
fn reserve(file: &File, a: u64, b: u64) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    match fallocate(file, FallocateFlags::empty(), a as i64, (b - a) as i64) {
        Ok(()) | Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    /// Writes `blobs` (offset, bytes) into a pre-sized file the way a restore does, with direct
    /// I/O allowed or not; returns the file's bytes, the ranges of it that hold data (the rest
    /// are holes), and whether direct I/O was used.
    fn restore(
        blobs: &[(u64, Vec<u8>)],
        size: u64,
        allow_direct: bool,
        placed: bool,
    ) -> (Vec<u8>, Vec<(u64, u64)>, u64, bool) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        let file = File::create(&path).expect("create");
        file.set_len(size).expect("size");
        let io = DirectIo::new(allow_direct);
        let mut staging = Staging::default();
        let mut opened = None;
        let mut used = false;
        for (offset, bytes) in blobs {
            let holder: Vec<u8>;
            // `placed`: the content sits in memory at its file offset's phase, as a decoded
            // blob does (written straight from there); otherwise wherever the heap put it
            // (copied to the staging buffer first).
            let bytes: &[u8] = if placed {
                let mut buf = vec![0u8; bytes.len() + 2 * PAGE as usize];
                let phase = (*offset % PAGE) as usize;
                let start =
                    (phase + PAGE as usize - buf.as_ptr() as usize % PAGE as usize) % PAGE as usize;
                buf[start..start + bytes.len()].copy_from_slice(bytes);
                holder = buf;
                &holder[start..start + bytes.len()]
            } else {
                bytes
            };
            write_new(
                &file,
                || {
                    used = true;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_DIRECT)
                        .open(&path)
                },
                &mut opened,
                &io,
                &mut staging,
                bytes,
                *offset,
            )
            .expect("write");
        }
        drop(opened);
        file.sync_all().expect("sync");
        let direct_taken = used && io.enabled();
        (
            std::fs::read(&path).expect("read back"),
            data_ranges(&file, size),
            std::fs::metadata(&path).expect("stat").blocks(),
            direct_taken,
        )
    }

    /// The ranges of `file` that hold data (`SEEK_DATA` / `SEEK_HOLE`).
    fn data_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
        use nix::unistd::{lseek, Whence};
        let mut out = Vec::new();
        let mut pos = 0i64;
        while (pos as u64) < size {
            let Ok(start) = lseek(file, pos, Whence::SeekData) else {
                break;
            };
            let end = lseek(file, start, Whence::SeekHole).expect("seek hole");
            out.push((start as u64, end as u64));
            pos = end;
        }
        out
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    #[test]
    fn direct_and_buffered_writes_give_the_same_file_with_the_same_holes() {
        // Blobs at unaligned offsets, one of them with a long run of zeros in the middle, one all
        // zeros, one short: edges shared with neighbours, stretches long enough to go direct,
        // and pages that must stay holes.
        let mut with_hole = pattern(300_000, 7);
        with_hole[70_000..200_000].fill(0);
        let blobs = vec![
            (0u64, pattern(1_000, 1)),
            (1_000, pattern(200_001, 2)),
            (201_001, with_hole),
            (501_001, vec![0; 90_000]),
            (591_001, pattern(70_000, 3)),
            (661_001, pattern(10, 4)),
        ];
        let size = 661_011 + 1_000_000;
        let mut expected = vec![0u8; size as usize];
        for (offset, bytes) in &blobs {
            expected[*offset as usize..*offset as usize + bytes.len()].copy_from_slice(bytes);
        }
        let (buffered, buffered_data, buffered_blocks, _) = restore(&blobs, size, false, false);
        assert!(buffered == expected, "buffered writes restored other bytes");
        let mut direct_taken = true;
        for placed in [false, true] {
            let (direct, direct_data, direct_blocks, taken) = restore(&blobs, size, true, placed);
            assert!(
                direct == expected,
                "direct writes restored other bytes ({placed})"
            );
            assert_eq!(
                direct_data, buffered_data,
                "the same pages must hold data (holes kept) either way ({placed})"
            );
            // Allocated but unwritten blocks read as holes: allocation is checked as well (at
            // most two more blocks, for the extent tree that unwritten extents can need).
            assert!(
                direct_blocks <= buffered_blocks + 16,
                "{direct_blocks} sectors allocated against {buffered_blocks} ({placed})"
            );
            direct_taken &= taken;
        }
        // The zeros (130 000 + 90 000 + the 1 000 000 past the last blob) are holes.
        assert!(
            buffered_data.iter().map(|(a, b)| b - a).sum::<u64>() < size - 1_000_000 - 200_000,
            "{buffered_data:?}"
        );
        // This test is about the direct path: where the file system takes direct I/O, it must
        // have been taken (a target that refuses it is the fallback, `allow_direct` false).
        let dir = tempfile::tempdir().expect("temp dir");
        let probe = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("probe"));
        if probe.is_ok() {
            assert!(direct_taken, "direct I/O is available but was not used");
        }
    }
}
