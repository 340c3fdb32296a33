//! Test data and a chunker that cuts exactly as rustic_core 0.13's Rabin `ChunkIter` does.

use rustic_cdc::{Polynom64, Rabin64, RollingHash64};
use rustic_cdc_upstream::{Rabin64 as UpstreamRabin64, RollingHash64 as _};

/// restic's (and rustic_cdc's) default polynomial.
pub const RESTIC_DEFAULT: Polynom64 = 0x003D_A335_8B4D_C173;

/// SplitMix64: deterministic, seedable, and enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Random bytes with stretches of zeros and of a short repeated pattern, which hit the
    /// maximum chunk size and the hash's behaviour on low-entropy input.
    pub fn mixed_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let run = (self.below(3 << 20) as usize + 1).min(len - out.len());
            match self.below(4) {
                0 => out.resize(out.len() + run, 0),
                1 => {
                    let pattern_len = 1 + self.below(100) as usize;
                    let pattern = self.bytes(pattern_len);
                    out.extend(pattern.iter().cycle().take(run));
                }
                _ => out.extend(self.bytes(run)),
            }
        }
        out
    }

    /// A random polynomial of degree 53 with the constant term set, as rustic_core draws them
    /// (before its irreducibility test, which the hash does not need).
    pub fn polynom53(&mut self) -> Polynom64 {
        (self.next_u64() & ((1 << 54) - 1)) | (1 << 53) | 1
    }
}

/// The part of both crates' API that rustic_core's chunker uses.
pub trait Fingerprint {
    fn prefill(&mut self, bytes: &[u8]) -> usize;
    fn slide(&mut self, byte: u8);
    fn hash(&self) -> Polynom64;
}

impl Fingerprint for Rabin64 {
    fn prefill(&mut self, bytes: &[u8]) -> usize {
        self.reset_and_prefill_window(&mut bytes.iter().copied())
    }
    fn slide(&mut self, byte: u8) {
        RollingHash64::slide(self, byte);
    }
    fn hash(&self) -> Polynom64 {
        self.hash
    }
}

impl Fingerprint for UpstreamRabin64 {
    fn prefill(&mut self, bytes: &[u8]) -> usize {
        self.reset_and_prefill_window(&mut bytes.iter().copied())
    }
    fn slide(&mut self, byte: u8) {
        rustic_cdc_upstream::RollingHash64::slide(self, byte);
    }
    fn hash(&self) -> Polynom64 {
        self.hash
    }
}

/// Chunk sizes as in a repository config: `avg` a power of two, `min <= avg <= max`, `min >= 64`.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

/// restic's (and rustic_core's) defaults: 512 KiB, 1 MiB, 8 MiB.
pub const RESTIC_SIZES: Sizes = Sizes {
    min: 512 << 10,
    avg: 1 << 20,
    max: 8 << 20,
};

/// The end offset of every chunk of `data`, cut the way rustic_core 0.13's `ChunkIter` cuts one
/// file: take `min` bytes, prefill the hash from the last 64 of them, then test the hash before
/// each further byte until it matches `avg - 1`, the chunk reaches `max`, or the data ends.
pub fn cut_points(hasher: &mut impl Fingerprint, data: &[u8], sizes: Sizes) -> Vec<usize> {
    let mask = sizes.avg as u64 - 1;
    let mut cuts = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let mut end = start + sizes.min;
        if end > data.len() {
            cuts.push(data.len());
            break;
        }
        let _ = hasher.prefill(&data[end - 64..end]);
        while end - start < sizes.max && hasher.hash() & mask != 0 && end < data.len() {
            hasher.slide(data[end]);
            end += 1;
        }
        cuts.push(end);
        start = end;
    }
    cuts
}
