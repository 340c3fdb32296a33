//! Restic's content-defined chunks, found on every core.
//!
//! The boundaries are exactly rustic_core's (and restic's) for the repository's polynomial, so
//! deduplication against what is already stored is unchanged: a chunk of a file starting at `s`
//! ends at the first length `n` in `min..max` where the Rabin fingerprint the chunker holds has
//! its low bits clear (`chunk_size - 1`), else at `max`, else at the end of the file. After a cut
//! rustic_core refills its 64-byte window from the 63 bytes before `s + min` and slides on from
//! there, so for the first 64 lengths the fingerprint is not that of the 64 bytes before the cut
//! (it skips one byte); from `min + 64` on it is. Hence:
//!
//! - the fingerprint of every 64-byte window of the file is searched once, in pieces on every
//!   core ([`Rabin64::window_cuts`]: it depends only on the window, not on where chunks start),
//! - a serial pass picks each cut: the first 64 lengths with rustic_core's own hasher (the same
//!   `reset_and_prefill_window` and `slide` calls, so the same values), then the first
//!   candidate window, then `max`,
//! - the chunks are hashed and sealed on every core: a large file's each as a task of its own,
//!   while its next block is read and cut, so no core waits at a block's end.
//!
//! A file is read in blocks of [`BLOCK`] bytes, so memory stays bounded whatever its size: one
//! block per file, and [`EXTRA_BLOCKS`] more shared by the large files of a backup.

use std::collections::VecDeque;
use std::io::Read;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use rayon::prelude::*;
use rustic_cdc::{Rabin64, RollingHash64};
use rustic_core::repofile::{BlobType, ConfigFile};
use rustic_core::{DataId, Id};
use sha2::{Digest, Sha256};

use super::packer::{lock, with_sealer, Packs};
use super::Shared;
use crate::repo::map_err;
use crate::{is_zero, Error, Result};

/// Bytes of a file held at once (at least `max` more than a chunk start, so a cut can always be
/// decided).
const BLOCK: usize = 16 << 20;
/// The Rabin window: 2^6 bytes, as restic.
const WINDOW_BITS: u32 = 6;
const WINDOW: usize = 1 << WINDOW_BITS;
/// New bytes searched for candidates in one piece (pieces run in parallel).
const SCAN_PIECE: usize = 1 << 20;
/// Zero runs are found in aligned blocks of this size.
const ZERO_PAGE: usize = 4096;
/// Blocks in flight beyond one per large file, shared by the backup's large files: while a
/// block's chunks are sealed, the next one is read and cut.
const EXTRA_BLOCKS: usize = 2;

/// Reads into `buf` until it holds `block` bytes (at least one more byte is asked for); true
/// at the end of `r`.
fn fill(r: &mut impl Read, buf: &mut Vec<u8>, block: usize) -> Result<bool> {
    let want = block.saturating_sub(buf.len()).max(1);
    let got = r
        .take(want as u64)
        .read_to_end(buf)
        .map_err(|e| Error::SourceUnavailable(format!("read failed: {e}")))?;
    Ok(got < want)
}

/// Candidate window ends: a single one, or every end of a run of zeros.
type Cands = std::ops::RangeInclusive<usize>;

pub(super) struct Chunker {
    rabin: Rabin64,
    min: usize,
    max: usize,
    mask: u64,
    /// Bytes read at once: [`BLOCK`] (smaller in tests, for many block junctions).
    block: usize,
    /// Of the [`EXTRA_BLOCKS`], those no file holds.
    extra: AtomicUsize,
    /// Block buffers of large files done, for the next (a new one is faulted in page by page).
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Chunker {
    pub(super) fn new(config: &ConfigFile) -> Result<Self> {
        if !matches!(config.chunker(), rustic_core::repofile::Chunker::Rabin) {
            return Err(Error::Repository(
                "the repository uses fixed-size chunks, which rsvault does not write".into(),
            ));
        }
        let poly = config.poly().map_err(map_err)?;
        let (size, min, max) = (
            config.chunk_size(),
            config.chunk_min_size(),
            config.chunk_max_size(),
        );
        if !size.is_power_of_two() || min < WINDOW || min > size || max < size || max > BLOCK / 2 {
            return Err(Error::Repository(format!(
                "unsupported chunk sizes in the repository's config: {min} / {size} / {max}"
            )));
        }
        Ok(Self::with(
            Rabin64::new_with_polynom(WINDOW_BITS, &poly),
            min,
            size,
            max,
        ))
    }

    fn with(rabin: Rabin64, min: usize, size: usize, max: usize) -> Self {
        Self {
            rabin,
            min,
            max,
            mask: size as u64 - 1,
            block: BLOCK,
            extra: AtomicUsize::new(EXTRA_BLOCKS),
            spare: Mutex::default(),
        }
    }

    /// Reads all of `r`, stores every chunk not stored yet, and returns the chunks' ids in
    /// order and the bytes read.
    ///
    /// A file of one block seals its chunks on every core, then returns. A larger file hands
    /// each chunk to the pool as a task of its own and reads and cuts the next block while
    /// they run: no core waits at a block's end for its last, largest chunk.
    pub(super) fn store(
        &self,
        r: impl Read,
        size_hint: u64,
        packs: &Packs,
        shared: &Shared,
    ) -> Result<(Vec<DataId>, u64)> {
        if size_hint < self.block as u64 {
            return self.store_in_place(r, size_hint, packs, shared);
        }
        let mut held = 0;
        let mut sealing = VecDeque::new();
        // Each chunk's id, in order, once its task is done.
        let results: Mutex<Vec<Option<Result<DataId>>>> = Mutex::default();
        let mut total = 0;
        let failed = AtomicBool::new(false);
        // Signalled when a task lets go of its block.
        let released = (Mutex::new(()), Condvar::new());
        let cut = rayon::in_place_scope(|scope| {
            let each = |block: &Arc<Vec<u8>>, ranges: &[Range<usize>]| {
                if failed.load(Ordering::Relaxed) || shared.is_cancelled() {
                    // After a failed task its error, found in `results`, is returned instead of
                    // this one; after a cancel, this is the error.
                    return Err(Error::Cancelled);
                }
                let base = {
                    let mut results = lock(&results);
                    let base = results.len();
                    results.resize_with(base + ranges.len(), || None);
                    base
                };
                total += ranges.iter().map(|r| r.len() as u64).sum::<u64>();
                for (i, range) in ranges.iter().cloned().enumerate() {
                    let block = Arc::clone(block);
                    let (results, failed, released) = (&results, &failed, &released);
                    scope.spawn(move |_| {
                        let got = seal_chunk(&block[range], packs, shared);
                        drop(block);
                        if got.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        lock(results)[base + i] = Some(got);
                        let _guard = lock(&released.0);
                        released.1.notify_all();
                    });
                }
                Ok(())
            };
            // A block in flight back, once its tasks are done (running this thread's own
            // pending tasks meanwhile).
            let wait = |mut block: Arc<Vec<u8>>| loop {
                match Arc::try_unwrap(block) {
                    Ok(buf) => return buf,
                    Err(b) => block = b,
                }
                if matches!(rayon::yield_local(), Some(rayon::Yield::Executed)) {
                    continue;
                }
                let guard = lock(&released.0);
                match Arc::try_unwrap(block) {
                    Ok(buf) => return buf,
                    Err(b) => block = b,
                }
                drop(released.1.wait(guard));
            };
            self.cut_all(r, size_hint, Some(&mut held), &mut sealing, each, wait)
        });
        // Every task is done: the blocks are free again.
        {
            let mut spare = lock(&self.spare);
            for block in sealing {
                if let Ok(buf) = Arc::try_unwrap(block) {
                    if spare.len() <= EXTRA_BLOCKS && buf.capacity() > self.block {
                        spare.push(buf);
                    }
                }
            }
        }
        _ = self.extra.fetch_add(held, Ordering::Relaxed);
        let mut ids = Vec::new();
        for got in results.into_inner().unwrap_or_else(PoisonError::into_inner) {
            match got {
                Some(id) => ids.push(id?),
                None => {
                    return Err(Error::Repository(
                        "a chunk of a file was never sealed".into(),
                    ))
                }
            }
        }
        cut?;
        Ok((ids, total))
    }

    /// [`store`](Self::store) for a file of one block: its chunks sealed on every core, one
    /// block at a time.
    fn store_in_place(
        &self,
        r: impl Read,
        size_hint: u64,
        packs: &Packs,
        shared: &Shared,
    ) -> Result<(Vec<DataId>, u64)> {
        let mut ids = Vec::new();
        let mut total = 0u64;
        let each = |block: &Arc<Vec<u8>>, ranges: &[Range<usize>]| {
            let stored: Vec<Result<DataId>> = ranges
                .par_iter()
                .map(|range| seal_chunk(&block[range.clone()], packs, shared))
                .collect();
            for (id, range) in stored.into_iter().zip(ranges) {
                ids.push(id?);
                total += range.len() as u64;
            }
            Ok(())
        };
        self.cut_all(r, size_hint, None, &mut VecDeque::new(), each, in_hand)?;
        Ok((ids, total))
    }

    /// Reads all of `r` and hands its chunks to `each`, a block's worth at a time, in order:
    /// the block and the chunks' ranges in it. `each` may keep the block (a clone of the
    /// `Arc`) while it works; the block stays in `sealing` until `wait` gets it back for
    /// the next block. Blocks in flight at once: one, plus, with `held`, the extra ones it
    /// counts, taken from [`EXTRA_BLOCKS`] (the caller gives them back); without, `each` must
    /// be done with a block when it returns.
    fn cut_all(
        &self,
        mut r: impl Read,
        size_hint: u64,
        mut held: Option<&mut usize>,
        sealing: &mut VecDeque<Arc<Vec<u8>>>,
        mut each: impl FnMut(&Arc<Vec<u8>>, &[Range<usize>]) -> Result<()>,
        wait: impl Fn(Arc<Vec<u8>>) -> Vec<u8>,
    ) -> Result<()> {
        let first = usize::try_from(size_hint)
            .unwrap_or(self.block)
            .min(self.block);
        let mut buf = if first < self.block {
            Vec::with_capacity(first + 1)
        } else {
            self.block_buffer()
        };
        let mut cands: Vec<Cands> = Vec::new();
        let mut scanned = 0usize;
        let mut eof = false;
        let mut ranges = Vec::new();
        loop {
            if !eof {
                eof = fill(&mut r, &mut buf, self.block)?;
            }
            self.scan(&buf, scanned, &mut cands);
            scanned = buf.len() + 1;

            ranges.clear();
            let mut s = 0;
            let mut ci = 0;
            while let Some(e) = self.next_cut(&buf, s, eof, &cands, &mut ci) {
                ranges.push(s..e);
                s = e;
            }
            let block = Arc::new(buf);
            if !ranges.is_empty() {
                each(&block, &ranges)?;
            }
            if eof {
                sealing.push_back(block);
                return Ok(());
            }
            // The next block starts with the bytes not cut yet: in a buffer of its own while
            // one is allowed, else in the oldest block once its chunks are done.
            let another = match held.as_deref_mut() {
                Some(held) => sealing.len() < *held || self.take_extra(held),
                None => false,
            };
            buf = if another {
                let mut next = self.block_buffer();
                next.extend_from_slice(&block[s..]);
                sealing.push_back(block);
                next
            } else if let Some(oldest) = sealing.pop_front() {
                let mut next = wait(oldest);
                next.clear();
                next.extend_from_slice(&block[s..]);
                sealing.push_back(block);
                next
            } else {
                let mut next = wait(block);
                next.drain(..s);
                next
            };
            cands.retain(|c| *c.end() > s);
            for c in &mut cands {
                *c = (*c.start()).max(s + 1) - s..=*c.end() - s;
            }
            scanned -= s;
        }
    }

    /// Takes one of the [`EXTRA_BLOCKS`] if one is free.
    fn take_extra(&self, held: &mut usize) -> bool {
        let took = self
            .extra
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        *held += usize::from(took);
        took
    }

    /// An empty buffer for a whole block: a spare one (still holding an earlier block's
    /// bytes), or a new one.
    fn block_buffer(&self) -> Vec<u8> {
        let mut buf = lock(&self.spare)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.block + 1));
        buf.clear();
        buf
    }

    /// Appends the candidate window ends in `from..=buf.len()`, searched in parallel pieces.
    fn scan(&self, buf: &[u8], from: usize, cands: &mut Vec<Cands>) {
        let from = from.max(WINDOW);
        if from > buf.len() {
            return;
        }
        let starts: Vec<usize> = (from..=buf.len()).step_by(SCAN_PIECE).collect();
        let found: Vec<Vec<Cands>> = starts
            .par_iter()
            .map(|&a| self.scan_piece(buf, a, (a + SCAN_PIECE - 1).min(buf.len())))
            .collect();
        for f in found {
            cands.extend(f);
        }
    }

    /// The candidates among window ends `a..=b`. Runs of zeros are not searched: every window
    /// inside one has the fingerprint 0, so each of its ends is a candidate, and a sparse disk
    /// image would otherwise list hundreds of millions of them.
    fn scan_piece(&self, buf: &[u8], a: usize, b: usize) -> Vec<Cands> {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        let mut searched = |from: usize, to: usize, out: &mut Vec<Cands>| {
            // Window ends from..=to.
            if from <= to {
                ends.clear();
                self.rabin
                    .window_cuts(&buf[..to], from, self.mask, &mut ends);
                out.extend(ends.iter().map(|&e| e..=e));
            }
        };
        let mut next = a;
        // Zero runs are looked for in whole aligned pages (holes and preallocated space are).
        let mut page = a.next_multiple_of(ZERO_PAGE);
        while page + ZERO_PAGE <= b {
            if !is_zero(&buf[page..page + ZERO_PAGE]) {
                page += ZERO_PAGE;
                continue;
            }
            let mut end = page + ZERO_PAGE;
            while end + ZERO_PAGE <= b && is_zero(&buf[end..end + ZERO_PAGE]) {
                end += ZERO_PAGE;
            }
            // Windows wholly inside the run end at page + 64 ..= end.
            searched(next, page + WINDOW - 1, &mut out);
            out.push(page + WINDOW..=end);
            next = end + 1;
            page = end + ZERO_PAGE;
            page -= page % ZERO_PAGE;
        }
        searched(next, b, &mut out);
        out
    }

    /// The end of the chunk starting at `s`, or `None` if deciding it needs more bytes (or
    /// nothing is left). `cands`: candidate window ends, sorted; `ci` moves forward only.
    fn next_cut(
        &self,
        buf: &[u8],
        s: usize,
        eof: bool,
        cands: &[Cands],
        ci: &mut usize,
    ) -> Option<usize> {
        let n = buf.len();
        let more = |at_end: usize| if eof { Some(at_end) } else { None };
        if s >= n {
            return None;
        }
        if s + self.min >= n {
            return more(n);
        }
        // The first 64 lengths: rustic_core's hasher, call for call.
        let mut rabin = self.rabin.clone();
        _ = rabin.reset_and_prefill_window(
            &mut buf[s + self.min - WINDOW..s + self.min].iter().copied(),
        );
        for k in 0..WINDOW {
            let len = self.min + k;
            if len >= self.max {
                return Some(s + self.max);
            }
            if rabin.hash & self.mask == 0 {
                return Some(s + len);
            }
            if s + len == n {
                return more(n);
            }
            rabin.slide(buf[s + len]);
        }
        // From here on the fingerprint is the window's.
        let from = s + self.min + WINDOW;
        let limit = s + self.max;
        while cands.get(*ci).is_some_and(|c| *c.end() < from) {
            *ci += 1;
        }
        match cands.get(*ci).map(|c| (*c.start()).max(from)) {
            Some(e) if e < limit => Some(e),
            _ if limit <= n => Some(limit),
            _ => more(n),
        }
    }
}

/// Hashes `chunk` and stores it unless it is stored already.
fn seal_chunk(chunk: &[u8], packs: &Packs, shared: &Shared) -> Result<DataId> {
    let id = Id::new(Sha256::digest(chunk).into());
    if packs.claim(&id) {
        with_sealer(packs.level(), |s| packs.add(s, BlobType::Data, id, chunk))?;
    }
    _ = shared
        .bytes_done
        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    Ok(DataId::from(id))
}

/// A block whose chunks were all handled in place: nothing else holds it.
fn in_hand(block: Arc<Vec<u8>>) -> Vec<u8> {
    Arc::try_unwrap(block).unwrap_or_else(|b| b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rustic_core's chunker loop (`chunker/rabin.rs`), restated over a slice: the reference
    /// the parallel search must agree with, cut for cut.
    fn reference(data: &[u8], poly: u64, min: usize, size: usize, max: usize) -> Vec<usize> {
        let mask = size as u64 - 1;
        let mut rabin = Rabin64::new_with_polynom(WINDOW_BITS, &poly);
        let mut cuts = Vec::new();
        let mut s = 0;
        while s < data.len() {
            if data.len() - s <= min {
                cuts.push(data.len());
                break;
            }
            _ = rabin.reset_and_prefill_window(&mut data[s + min - 64..s + min].iter().copied());
            let mut len = min;
            loop {
                if len >= max || rabin.hash & mask == 0 || s + len == data.len() {
                    break;
                }
                rabin.slide(data[s + len]);
                len += 1;
            }
            cuts.push(s + len);
            s += len;
        }
        cuts
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn ours(data: &[u8], c: &Chunker) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut at = 0;
        c.cut_all(
            data,
            data.len() as u64,
            None,
            &mut VecDeque::new(),
            |_, ranges| {
                for r in ranges {
                    at += r.len();
                    cuts.push(at);
                }
                Ok(())
            },
            in_hand,
        )
        .unwrap();
        cuts
    }

    /// [`ours`] with every block kept in flight until the chunker takes it back, as the
    /// pool's tasks keep it: the bytes a block's chunks are cut from, and the bytes carried
    /// into the next block, must come from the right buffer whichever one is reused.
    fn ours_in_flight(data: &[u8], c: &Chunker, extra: usize) -> Vec<usize> {
        c.extra.store(extra, Ordering::Relaxed);
        let kept = std::cell::RefCell::new(Vec::<Arc<Vec<u8>>>::new());
        let mut cuts = Vec::new();
        let mut at = 0;
        let mut held = 0;
        let mut sealing = VecDeque::new();
        c.cut_all(
            data,
            data.len() as u64,
            Some(&mut held),
            &mut sealing,
            |block, ranges| {
                assert_eq!(ranges[0].start, 0, "a block starts with its first chunk");
                for r in ranges {
                    assert_eq!(&block[r.clone()], &data[at..at + r.len()]);
                    at += r.len();
                    cuts.push(at);
                }
                kept.borrow_mut().push(Arc::clone(block));
                Ok(())
            },
            |block| {
                kept.borrow_mut().retain(|k| !Arc::ptr_eq(k, &block));
                Arc::try_unwrap(block).expect("only the chunker holds a block it takes back")
            },
        )
        .unwrap();
        assert_eq!(at, data.len());
        assert!(held <= extra);
        assert_eq!(c.extra.load(Ordering::Relaxed), extra - held);
        assert_eq!(
            sealing.len(),
            held + 1,
            "every block in flight is handed back"
        );
        cuts
    }

    #[test]
    fn cuts_are_rustic_cores_for_every_length_and_across_blocks() {
        // Small sizes so a test file spans many chunks and several blocks.
        for poly in [0x003D_A335_8B4D_C173_u64, 0x002E_2D4E_1F6B_8799] {
            for (min, size, max) in [(128, 256, 1024), (512, 4096, 8192), (100, 128, 129)] {
                let c = Chunker::with(
                    Rabin64::new_with_polynom(WINDOW_BITS, &poly),
                    min,
                    size,
                    max,
                );
                for len in [
                    0,
                    1,
                    63,
                    64,
                    127,
                    128,
                    129,
                    1000,
                    4096,
                    100_000,
                    BLOCK + 12_345,
                ] {
                    let data = noise(len, poly ^ len as u64);
                    assert_eq!(
                        ours(&data, &c),
                        reference(&data, poly, min, size, max),
                        "poly {poly:#x}, sizes {min}/{size}/{max}, length {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn cuts_next_to_a_block_junction_are_found() {
        // Blocks of 1-8 KiB. At each junction the bytes not cut yet are kept and the next block
        // is read after them; a window end there that is never searched would move a cut. With
        // a candidate every ~64 window ends, thousands of junctions (random data, and a zero run
        // across several blocks) catch even one window end missed per junction.
        let poly = 0x003D_A335_8B4D_C173_u64;
        for (min, size, max) in [(64, 64, 256), (100, 128, 1024), (512, 1024, 2048)] {
            let mut c = Chunker::with(
                Rabin64::new_with_polynom(WINDOW_BITS, &poly),
                min,
                size,
                max,
            );
            c.block = 4 * max;
            let mut data = noise(2_000_003, 5);
            data.extend(vec![0u8; 20_000]);
            data.extend(noise(30_011, 6));
            let want = reference(&data, poly, min, size, max);
            assert_eq!(ours(&data, &c), want, "sizes {min}/{size}/{max}");
            // Blocks kept in flight: the last one and the one before it reused.
            for extra in 0..=EXTRA_BLOCKS {
                assert_eq!(
                    ours_in_flight(&data, &c, extra),
                    want,
                    "sizes {min}/{size}/{max}, {extra} extra blocks"
                );
            }
        }
    }

    #[test]
    fn zeros_and_repeats_cut_as_rustic_core_does() {
        let poly = 0x003D_A335_8B4D_C173_u64;
        let c = Chunker::with(
            Rabin64::new_with_polynom(WINDOW_BITS, &poly),
            512,
            1024,
            4096,
        );
        let mut data = vec![0u8; 50_000];
        data.extend(b"abc".repeat(20_000));
        data.extend(noise(30_000, 9));
        assert_eq!(ours(&data, &c), reference(&data, poly, 512, 1024, 4096));
    }

    #[test]
    fn a_sparse_image_cuts_as_rustic_core_does_with_restics_sizes() {
        // Holes at and off page boundaries, longer than a block and shorter than a window.
        let poly = 0x003D_A335_8B4D_C173_u64;
        let c = Chunker::with(
            Rabin64::new_with_polynom(WINDOW_BITS, &poly),
            512 << 10,
            1 << 20,
            8 << 20,
        );
        let mut data = noise(3_000_001, 1);
        data.extend(vec![0u8; BLOCK + 40_000]);
        data.extend(noise(1_234_567, 2));
        data.extend(vec![0u8; 5_000]);
        data.extend(noise(700_000, 3));
        data.extend(vec![0u8; 9_000_000]);
        data.push(1);
        data.extend(vec![0u8; 63]);
        data.extend(noise(2_000_000, 4));
        let cuts = ours(&data, &c);
        assert_eq!(cuts, reference(&data, poly, 512 << 10, 1 << 20, 8 << 20));
        assert!(cuts.len() > 20, "{cuts:?}");
        for extra in 0..=EXTRA_BLOCKS {
            assert_eq!(
                ours_in_flight(&data, &c, extra),
                cuts,
                "{extra} extra blocks"
            );
        }
    }
}
