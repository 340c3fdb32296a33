//! The Rabin fingerprint behind rustic_core's content-defined chunker, with its tables built once
//! per polynomial.
//!
//! This crate is built as `rustic_cdc` and put in place of the crates.io crate of that name by
//! `[patch.crates-io]` in the workspace manifest. rustic_core 0.13 creates a fresh
//! `Rabin64::new_with_polynom(6, &poly)` for every file it backs up, and the published crate
//! computes two 256-entry tables each time (about 240 µs; a third of a full backup's CPU on a tree
//! of small files). Here the tables are computed once per (window size, polynomial), kept in a small
//! process-wide cache and shared through an `Arc`, so creating a hasher costs a lock, an `Arc`
//! clone and a 64-byte window.
//!
//! It offers what rustic_core 0.13 uses: [`Polynom`] and [`Polynom64`] (degree and remainder, for
//! its irreducibility test), [`RollingHash64`] (`reset_and_prefill_window`, `slide`) and
//! [`Rabin64`] (`new_with_polynom` and the public `hash`); and one addition,
//! [`Rabin64::window_cuts`], which finds the cut candidates of a whole buffer several times faster
//! than a `slide` per byte.
//!
//! This crate must never change a hash value: after any sequence of calls, [`Rabin64::hash`] equals
//! what the published `rustic_cdc` 0.3.1 computes, so chunk boundaries, and with them deduplication
//! against data already in a repository, stay exactly as they were. `tests/it` checks this against
//! the published crate byte by byte.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// A polynomial over GF(2) with degree below 64: bit `i` is the coefficient of `x^i`.
pub type Polynom64 = u64;

/// Arithmetic on polynomials over GF(2).
pub trait Polynom {
    /// The degree of the polynomial; -1 for the zero polynomial.
    fn degree(&self) -> i32;

    /// The remainder of the division by `m`.
    ///
    /// # Panics
    /// If `m` is the zero polynomial.
    #[must_use]
    fn modulo(&self, m: &Self) -> Self;
}

impl Polynom for Polynom64 {
    fn degree(&self) -> i32 {
        // ilog2 of a u64 is at most 63.
        self.checked_ilog2().map_or(-1, |d| d as i32)
    }

    fn modulo(&self, m: &Self) -> Self {
        let Some(m_degree) = m.checked_ilog2() else {
            panic!("polynomial remainder by the zero polynomial");
        };
        let mut rest = *self;
        // Cancel the leading term with a shifted copy of `m` until the rest is of lower degree.
        while let Some(degree) = rest.checked_ilog2().filter(|&d| d >= m_degree) {
            rest ^= m << (degree - m_degree);
        }
        rest
    }
}

/// A rolling hash over a window of the most recent bytes.
pub trait RollingHash64 {
    /// Starts over: the hash becomes that of at most `window size - 1` bytes taken from `iter`,
    /// as if the window had held zeros before them. Returns how many bytes were taken.
    fn reset_and_prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>;

    /// Adds `byte` to the window, dropping the oldest byte.
    fn slide(&mut self, byte: u8);
}

/// A Rabin fingerprint of the last `2^window_bits` bytes, modulo a polynomial.
///
/// The hash is the window's bytes, read as a polynomial over GF(2) (8 coefficients per byte, the
/// oldest byte highest), modulo the polynomial given to [`Rabin64::new_with_polynom`].
#[derive(Clone)]
pub struct Rabin64 {
    tables: Arc<Tables>,
    /// The bytes in the window, a ring: `pos` is where the next byte goes, so it holds the oldest.
    window: Box<[u8]>,
    pos: usize,
    /// The fingerprint of the window (or of the bytes seen since the last reset).
    pub hash: Polynom64,
}

impl Rabin64 {
    /// A hasher over a window of `2^window_size_nb_bits` bytes, modulo `mod_polynom`.
    ///
    /// # Panics
    /// If the polynomial's degree is not in 8..=56 (restic's polynomials have degree 53; within
    /// that range the arithmetic fits in 64 bits), or the window is larger than 2^24 bytes.
    #[must_use]
    pub fn new_with_polynom(window_size_nb_bits: u32, mod_polynom: &Polynom64) -> Self {
        let tables = Tables::shared(window_size_nb_bits, *mod_polynom);
        Self {
            tables,
            window: vec![0; 1 << window_size_nb_bits].into_boxed_slice(),
            pos: 0,
            hash: 0,
        }
    }

    fn next_pos(&self) -> usize {
        (self.pos + 1) & (self.window.len() - 1)
    }

    /// Appends to `out`, in increasing order, every end position `e` with `start <= e <=
    /// data.len()` and `e >= W` (W = the window size in bytes, 64 for `window_size_nb_bits` 6) such
    /// that the fingerprint of the window `data[e - W..e]` satisfies `fingerprint & mask == 0`.
    ///
    /// The fingerprint of a window is exactly the [`hash`](Self::hash) a fresh
    /// `Rabin64::new_with_polynom(bits, poly)` holds after [`slide`](RollingHash64::slide)-ing the
    /// W bytes `data[e - W..e]` into it (the initial zero window contributes nothing), so a chunker
    /// that finds its cut with this and with `slide` cuts in the same place. Does not read or
    /// change this hasher's window or hash; only its tables are used.
    ///
    /// Why: `slide` is one serial chain, each byte's hash needing the one before, and so runs at
    /// the latency of a table load and a few ALU operations per byte (about 2.5 ns), with most of
    /// the core idle. Every window's fingerprint depends only on its own W bytes, so this splits
    /// the range into four consecutive parts, starts each from a freshly hashed window, and rolls
    /// them in lockstep in one loop: the chains are independent and the core overlaps them (about
    /// 0.75 ns per byte; `examples/hasher_cost.rs`).
    pub fn window_cuts(&self, data: &[u8], start: usize, mask: u64, out: &mut Vec<usize>) {
        let window = self.window.len();
        let first = start.max(window);
        // The end positions to check are `first..=data.len()`.
        let Some(count) = (data.len() + 1).checked_sub(first) else {
            return;
        };
        // Each lane first hashes a whole window on its own. Measured, four lanes catch up with one
        // at half a window's worth of positions to one window's; from a window on they are faster.
        if count >= window.max(LANES) {
            self.tables.window_cuts::<LANES>(data, first, mask, out);
        } else if count > 0 {
            self.tables.window_cuts::<1>(data, first, mask, out);
        }
    }
}

/// How many independent hash chains [`Rabin64::window_cuts`] rolls side by side. One chain waits
/// on its own result every byte (shift, table load, XOR); with more, the core works on several
/// at once until its load and ALU ports are the limit. Measured over 32 MiB on the AMD EPYC
/// (Zen 4) build machine, ns per byte: 1 lane 1.93, 2 lanes 1.00, 3 lanes 0.77, 4 lanes 0.73,
/// 6 lanes 0.84, 8 lanes 0.87; beyond four the lanes' hashes and slice pointers no longer fit in
/// the registers and spill.
const LANES: usize = 4;

impl fmt::Debug for Rabin64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rabin64")
            .field("polynom", &format_args!("{:#x}", self.tables.polynom))
            .field("window_size", &self.window.len())
            .field("hash", &format_args!("{:#x}", self.hash))
            .finish_non_exhaustive()
    }
}

impl RollingHash64 for Rabin64 {
    fn reset_and_prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>,
    {
        // Compatibility note: like rustic_cdc, the ring keeps its position and only the slots
        // written here (and the one after them) are overwritten; rustic_core always prefills a
        // whole window, so stale bytes never reach a hash it uses.
        self.hash = 0;
        let mut taken = 0;
        for byte in iter.by_ref().take(self.window.len() - 1) {
            self.window[self.pos] = byte;
            self.pos = self.next_pos();
            self.hash = self.tables.append(self.hash, byte);
            taken += 1;
        }
        self.window[self.pos] = 0;
        taken
    }

    #[inline]
    fn slide(&mut self, byte: u8) {
        let oldest = self.window[self.pos];
        self.window[self.pos] = byte;
        self.pos = self.next_pos();
        let without_oldest = self.hash ^ self.tables.drop_oldest[usize::from(oldest)];
        self.hash = self.tables.append(without_oldest, byte);
    }
}

/// The precomputed parts of a Rabin fingerprint for one window size and polynomial.
struct Tables {
    window_bits: u32,
    polynom: Polynom64,
    /// `degree(polynom) - 8`: where the top byte of a reduced hash starts.
    top_shift: u32,
    /// `drop_oldest[b]` = `b · x^(8·(window − 1)) mod polynom`: what byte `b` contributes to the
    /// hash once it is the oldest byte of a full window; XOR takes it out.
    drop_oldest: [Polynom64; 256],
    /// `reduce[t]` = `(t · x^k mod polynom) XOR t · x^k` for `k = degree(polynom)`: XOR with it
    /// clears the byte `t` that shifting a reduced hash left by 8 pushed to degrees `k..k+8`, and
    /// adds its remainder instead.
    reduce: [Polynom64; 256],
    /// The same arithmetic for [`Rabin64::window_cuts`], on hashes kept in another form.
    rolling: Rolling,
}

/// Tables for rolling a hash kept shifted left by `shift = 64 − degree(polynom)` bits, so that its
/// top byte is the top byte of the `u64`, for [`Rabin64::window_cuts`].
///
/// Why: the plain step `append(hash ^ drop_oldest[old], new)` puts an XOR, a shift by a variable
/// amount and a mask in front of the table load on the chain from one hash to the next. In this
/// form the top byte is `hash >> 56` (one shift, no mask), the bits pushed out by `<< 8` simply
/// fall off the `u64` (so the table needs no term to cancel them), and, as everything here is
/// linear over GF(2), the removal of the oldest byte and the appending of the new one become
/// table entries XORed in beside the chain instead of in front of it:
///
/// `slide(hash, old, new) = (hash << 8) ^ reduce[hash >> 56] ^ drop_oldest[old] ^ byte[new]`
///
/// which is `append(hash ^ drop_oldest[old], new)` of [`Tables`], shifted. One step is then one
/// shift, one load and one XOR long, and fewer instructions, which is what bounds the lanes.
struct Rolling {
    /// `64 − degree(polynom)`, from 8 to 56.
    shift: u32,
    /// `reduce[t] << shift` of [`Tables`], without the bits that cancel `t` (they fall off).
    reduce: [u64; 256],
    /// `append(drop_oldest[b], 0) << shift` of [`Tables`]: taking `b` out of a full window, moved
    /// past the shift by 8 of the same step.
    drop_oldest: [u64; 256],
    /// `b << shift`: where an appended byte lands.
    byte: [u64; 256],
}

impl Rolling {
    /// From the tables of [`Tables`] for a polynomial of degree `k`.
    fn new(k: u32, reduce: &[Polynom64; 256], drop_oldest: &[Polynom64; 256]) -> Self {
        let shift = 64 - k;
        let mut rolling = Self {
            shift,
            // `<< shift` drops the `t << k` term, which ends at bit 64.
            reduce: reduce.map(|r| r << shift),
            drop_oldest: [0; 256],
            byte: std::array::from_fn(|b| (b as u64) << shift),
        };
        // `byte[0]` is 0, so `append(d, 0)` is the hash of `d`'s bytes followed by a zero byte.
        rolling.drop_oldest = drop_oldest.map(|d| rolling.append(d << shift, 0));
        rolling
    }

    /// [`Tables::append`] in this form.
    #[inline]
    fn append(&self, hash: u64, byte: u8) -> u64 {
        (hash << 8) ^ self.reduce[(hash >> 56) as usize] ^ self.byte[usize::from(byte)]
    }

    /// [`RollingHash64::slide`] in this form, for a full window whose oldest byte is `old`.
    #[inline]
    fn slide(&self, hash: u64, old: u8, new: u8) -> u64 {
        let beside = self.drop_oldest[usize::from(old)] ^ self.byte[usize::from(new)];
        ((hash << 8) ^ beside) ^ self.reduce[(hash >> 56) as usize]
    }
}

/// How many (window, polynomial) pairs the cache keeps. A worker process backs up one repository,
/// so one is the usual count; the bound only keeps a long-lived process from growing.
const CACHE_CAPACITY: usize = 16;

static CACHE: Mutex<Vec<Arc<Tables>>> = Mutex::new(Vec::new());

impl Tables {
    /// The tables for this window and polynomial, computed on first use and shared after.
    fn shared(window_bits: u32, polynom: Polynom64) -> Arc<Self> {
        // The cache holds only complete entries, so a panic elsewhere cannot leave it inconsistent.
        let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = cache
            .iter()
            .find(|t| t.window_bits == window_bits && t.polynom == polynom)
        {
            return Arc::clone(found);
        }
        let tables = Arc::new(Self::compute(window_bits, polynom));
        if cache.len() == CACHE_CAPACITY {
            let _oldest = cache.remove(0);
        }
        cache.push(Arc::clone(&tables));
        tables
    }

    fn compute(window_bits: u32, polynom: Polynom64) -> Self {
        let degree = polynom.degree();
        assert!(
            (8..=56).contains(&degree),
            "Rabin polynomial {polynom:#x} has degree {degree}; it must be between 8 and 56"
        );
        assert!(
            window_bits <= 24,
            "Rabin window of 2^{window_bits} bytes is too large"
        );
        let k = degree.unsigned_abs();
        let window = 1u64 << window_bits;

        // Both tables are linear in their index, so each is fixed by its values at the 8 single
        // bits: x^(i + 8·(window − 1)) and x^(k + i) modulo the polynomial.
        let mut drop_bits = [0; 8];
        let mut reduce_bits = [0; 8];
        let mut power: Polynom64 = 1; // x^e mod polynom, e counting up
        let mut e = 0u64;
        let drop_base = 8 * (window - 1);
        for i in 0..8u64 {
            while e < drop_base + i {
                power = times_x(power, polynom, k);
                e += 1;
            }
            drop_bits[i as usize] = power;
        }
        let mut power: Polynom64 = 1;
        for _ in 0..k {
            power = times_x(power, polynom, k);
        }
        for bit in &mut reduce_bits {
            *bit = power;
            power = times_x(power, polynom, k);
        }

        let mut drop_oldest = [0; 256];
        let mut reduce = [0; 256];
        for t in 1..256usize {
            // t = (t with its lowest bit cleared) + lowest bit.
            let rest = t & (t - 1);
            let bit = t.trailing_zeros() as usize;
            drop_oldest[t] = drop_oldest[rest] ^ drop_bits[bit];
            reduce[t] = reduce[rest] ^ reduce_bits[bit];
        }
        for (t, entry) in reduce.iter_mut().enumerate() {
            *entry ^= (t as Polynom64) << k;
        }

        Self {
            window_bits,
            polynom,
            top_shift: k - 8,
            drop_oldest,
            reduce,
            rolling: Rolling::new(k, &reduce, &drop_oldest),
        }
    }

    /// [`Rabin64::window_cuts`] with `L` lanes, for the end positions `first..=data.len()`
    /// (`first >= window`, at least `L` of them).
    ///
    /// It rolls hashes in the form of [`Rolling`]; see there for why.
    fn window_cuts<const L: usize>(
        &self,
        data: &[u8],
        first: usize,
        mask: u64,
        out: &mut Vec<usize>,
    ) {
        let window = 1usize << self.window_bits;
        let roll = &self.rolling;
        // The mask in the hashes' form; its bits at or above the degree, which no hash has, fall
        // off.
        let mask = mask << roll.shift;
        let count = data.len() + 1 - first;
        // Lane `i` checks the `lane_len` end positions from `starts[i]`; the `count % L` left over
        // at the end are the last lane's, after the lockstep loop.
        let lane_len = count / L;
        debug_assert!(first >= window && lane_len >= 1);
        let starts: [usize; L] = std::array::from_fn(|i| first + i * lane_len);

        // Each lane's first window, hashed from scratch. The slices are cut to their lengths
        // before the loops so that indexing in them needs no bounds check.
        let mut hashes = [0; L];
        let prefill: [&[u8]; L] = std::array::from_fn(|i| &data[starts[i] - window..starts[i]]);
        for k in 0..window {
            for (hash, bytes) in hashes.iter_mut().zip(prefill) {
                *hash = roll.append(*hash, bytes[k]);
            }
        }
        let mut hits: [Vec<usize>; L] = std::array::from_fn(|_| Vec::new());
        for i in 0..L {
            if hashes[i] & mask == 0 {
                hits[i].push(starts[i]);
            }
        }

        // Rolling the window ending at `e` on to `e + 1` drops `data[e - window]` and appends
        // `data[e]`; a lane takes `lane_len - 1` such steps.
        let steps = lane_len - 1;
        let oldest: [&[u8]; L] = std::array::from_fn(|i| &data[starts[i] - window..][..steps]);
        let newest: [&[u8]; L] = std::array::from_fn(|i| &data[starts[i]..][..steps]);
        for j in 0..steps {
            for i in 0..L {
                hashes[i] = roll.slide(hashes[i], oldest[i][j], newest[i][j]);
                if hashes[i] & mask == 0 {
                    push_cold(&mut hits[i], starts[i] + j + 1);
                }
            }
        }

        // The positions left over, fewer than `L`: the last lane rolls on through them.
        let mut hash = hashes[L - 1];
        for e in first + L * lane_len - 1..data.len() {
            hash = roll.slide(hash, data[e - window], data[e]);
            if hash & mask == 0 {
                hits[L - 1].push(e + 1);
            }
        }

        for lane in &hits {
            out.extend_from_slice(lane);
        }
    }

    /// The hash of the bytes behind `hash` followed by `byte` (no byte leaves the window).
    #[inline]
    fn append(&self, hash: Polynom64, byte: u8) -> Polynom64 {
        let top = (hash >> self.top_shift) & 0xff;
        ((hash << 8) | Polynom64::from(byte)) ^ self.reduce[top as usize]
    }
}

/// `hits.push(end)`, for [`Tables::window_cuts`]'s lockstep loop. Why: with the push (a call when
/// the `Vec` grows) inline in the loop, the compiler keeps the lanes' slice pointers on the stack
/// and reloads them every step; out of line and cold, it keeps them in registers and moves them
/// aside only on the rare way through here.
#[cold]
#[inline(never)]
fn push_cold(hits: &mut Vec<usize>, end: usize) {
    hits.push(end);
}

/// `p · x mod polynom`, for `p` of degree below `k = degree(polynom)`.
fn times_x(p: Polynom64, polynom: Polynom64, k: u32) -> Polynom64 {
    let shifted = p << 1;
    if shifted >> k & 1 == 1 {
        shifted ^ polynom
    } else {
        shifted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTIC_DEFAULT: Polynom64 = 0x003D_A335_8B4D_C173;

    /// Held by the tests that depend on what the process-wide cache holds: run in parallel,
    /// `cache_stays_bounded` could evict the entry another test has just created and make it fail
    /// now and then.
    static CACHE_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn hashers_for_one_polynomial_share_their_tables() {
        let _cache = CACHE_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
        let a = Rabin64::new_with_polynom(6, &RESTIC_DEFAULT);
        let b = Rabin64::new_with_polynom(6, &RESTIC_DEFAULT);
        assert!(Arc::ptr_eq(&a.tables, &b.tables));
        let other_window = Rabin64::new_with_polynom(5, &RESTIC_DEFAULT);
        assert!(!Arc::ptr_eq(&a.tables, &other_window.tables));
        let other_polynom = Rabin64::new_with_polynom(6, &(RESTIC_DEFAULT ^ 0b110));
        assert!(!Arc::ptr_eq(&a.tables, &other_polynom.tables));
    }

    #[test]
    fn cache_stays_bounded() {
        let _cache = CACHE_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
        for i in 0..(3 * CACHE_CAPACITY as u64) {
            let _ = Rabin64::new_with_polynom(6, &(RESTIC_DEFAULT ^ (i << 1)));
        }
        // `polynomial_of_too_low_degree_is_refused` panics with the cache locked, poisoning it.
        let cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(cache.len() <= CACHE_CAPACITY);
    }

    #[test]
    fn hash_of_a_full_window_is_its_remainder() {
        // Straight from the definition: the window's bytes as one polynomial, reduced.
        let data: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        let mut rabin = Rabin64::new_with_polynom(5, &RESTIC_DEFAULT);
        for (i, &byte) in data.iter().enumerate() {
            rabin.slide(byte);
            let start = (i + 1).saturating_sub(32);
            let direct = data[start..=i].iter().fold(0, |acc: Polynom64, &b| {
                ((acc << 8) | Polynom64::from(b)).modulo(&RESTIC_DEFAULT)
            });
            assert_eq!(rabin.hash, direct, "after byte {i}");
        }
    }

    #[test]
    #[should_panic(expected = "must be between 8 and 56")]
    fn polynomial_of_too_low_degree_is_refused() {
        let _ = Rabin64::new_with_polynom(6, &0x1f);
    }
}
