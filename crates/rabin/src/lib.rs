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
//! It offers only what rustic_core 0.13 uses: [`Polynom`] and [`Polynom64`] (degree and remainder,
//! for its irreducibility test), [`RollingHash64`] (`reset_and_prefill_window`, `slide`) and
//! [`Rabin64`] (`new_with_polynom` and the public `hash`).
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
}

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
        }
    }

    /// The hash of the bytes behind `hash` followed by `byte` (no byte leaves the window).
    #[inline]
    fn append(&self, hash: Polynom64, byte: u8) -> Polynom64 {
        let top = (hash >> self.top_shift) & 0xff;
        ((hash << 8) | Polynom64::from(byte)) ^ self.reduce[top as usize]
    }
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

    #[test]
    fn hashers_for_one_polynomial_share_their_tables() {
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
        for i in 0..(3 * CACHE_CAPACITY as u64) {
            let _ = Rabin64::new_with_polynom(6, &(RESTIC_DEFAULT ^ (i << 1)));
        }
        assert!(CACHE.lock().unwrap().len() <= CACHE_CAPACITY);
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
