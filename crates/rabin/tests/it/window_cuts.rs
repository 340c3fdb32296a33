//! `Rabin64::window_cuts` against the plain definition: a fresh hasher, slid byte by byte, with its
//! hash tested at every end position.

use rustic_cdc::{Polynom64, Rabin64, RollingHash64};
use rustic_cdc_upstream::Rabin64 as UpstreamRabin64;

use crate::data::{Rng, RESTIC_DEFAULT};

/// `hashes[e]`: the hash of a fresh hasher after sliding in `data[..e]`, which for `e >= window` is
/// the fingerprint of `data[e - window..e]` (the zeros it started with drop out unseen).
fn sliding_hashes(window_bits: u32, polynom: Polynom64, data: &[u8]) -> Vec<Polynom64> {
    let mut rabin = Rabin64::new_with_polynom(window_bits, &polynom);
    let mut hashes = Vec::with_capacity(data.len() + 1);
    hashes.push(rabin.hash);
    for &byte in data {
        rabin.slide(byte);
        hashes.push(rabin.hash);
    }
    hashes
}

/// What `window_cuts` must return, read off `sliding_hashes`.
fn expected_cuts(hashes: &[Polynom64], window_bits: u32, start: usize, mask: u64) -> Vec<usize> {
    (start.max(1 << window_bits)..hashes.len())
        .filter(|&e| hashes[e] & mask == 0)
        .collect()
}

fn window_cuts(rabin: &Rabin64, data: &[u8], start: usize, mask: u64) -> Vec<usize> {
    let mut out = Vec::new();
    rabin.window_cuts(data, start, mask, &mut out);
    out
}

/// Compares every (start, mask) pair on one buffer; returns how many cuts were compared, so that
/// callers can check the comparison was not vacuous.
fn assert_cuts_match(
    window_bits: u32,
    polynom: Polynom64,
    data: &[u8],
    starts: &[usize],
    masks: &[u64],
) -> usize {
    let rabin = Rabin64::new_with_polynom(window_bits, &polynom);
    let hashes = sliding_hashes(window_bits, polynom, data);
    let mut compared = 0;
    for &start in starts {
        for &mask in masks {
            let expected = expected_cuts(&hashes, window_bits, start, mask);
            let got = window_cuts(&rabin, data, start, mask);
            assert!(
                got == expected,
                "window 2^{window_bits}, polynomial {polynom:#x}, length {}, start {start}, \
                 mask {mask:#x}: {} cuts, expected {}; first difference at index {:?}",
                data.len(),
                got.len(),
                expected.len(),
                got.iter().zip(&expected).position(|(g, e)| g != e)
            );
            compared += expected.len();
        }
    }
    compared
}

#[test]
fn window_cuts_match_sliding_hasher_for_many_lengths_starts_and_masks() {
    let mut rng = Rng::new(7);
    let polynoms = [RESTIC_DEFAULT, rng.polynom53(), rng.polynom53()];
    let masks = [0, 0xff, 0xfff, (1 << 20) - 1];
    let mut compared = 0;
    for len in [0, 1, 63, 64, 65, 100, 1000, 4096 + 7, (1 << 20) + 3] {
        let data = rng.bytes(len);
        let starts = [0, 10, 64, 65, len / 3, len.saturating_sub(1), len, len + 1];
        for &polynom in &polynoms {
            compared += assert_cuts_match(6, polynom, &data, &starts, &masks);
        }
    }
    // Mask 0xff alone finds about 4096 cuts per MiB, per polynomial and start.
    assert!(compared > 50_000, "only {compared} cuts compared");
}

#[test]
fn window_cuts_match_at_every_short_length() {
    // Every length up to a few windows per lane: the single-lane path, the switch to several
    // lanes, and every remainder of positions over the lane count.
    let mut rng = Rng::new(8);
    let polynom = rng.polynom53();
    let data = rng.bytes(800);
    for len in 0..=data.len() {
        assert_cuts_match(
            6,
            polynom,
            &data[..len],
            &[0, 1, 64, 65, 100, 300],
            &[0, 0x3],
        );
    }
}

#[test]
fn window_cuts_match_for_other_window_sizes_and_degrees() {
    // `window_cuts` keeps its hashes shifted by `64 - degree`; every degree the crate accepts must
    // come out the same, and so must masks with bits above the degree, which no hash has.
    let mut rng = Rng::new(9);
    let masks = [0, 0xf, 0xfff, u64::MAX, (1 << 60) | 0xff];
    for window_bits in 0..=10 {
        let polynom = rng.polynom53();
        for _ in 0..8 {
            let len = rng.below(20_000) as usize;
            let data = rng.bytes(len);
            let starts = [0, rng.below(len as u64 + 2) as usize, len];
            assert_cuts_match(window_bits, polynom, &data, &starts, &masks);
        }
    }
    for degree in 8..=56 {
        let polynom = (rng.next_u64() & ((1 << degree) - 1)) | (1 << degree);
        let data = rng.bytes(5_000);
        assert_cuts_match(6, polynom, &data, &[0, 100], &masks);
    }
}

#[test]
fn window_cuts_on_low_entropy_data_match_upstream_hasher() {
    // Zero runs hash to zero, so they are a cut candidate at every position; repeated patterns
    // give periodic hashes. The reference here is the published crate's hasher.
    let mut rng = Rng::new(10);
    for _ in 0..3 {
        let polynom = rng.polynom53();
        let data = rng.mixed_bytes(6 << 20);
        let mut upstream = UpstreamRabin64::new_with_polynom(6, &polynom);
        let mut hashes = vec![upstream.hash];
        for &byte in &data {
            rustic_cdc_upstream::RollingHash64::slide(&mut upstream, byte);
            hashes.push(upstream.hash);
        }
        let rabin = Rabin64::new_with_polynom(6, &polynom);
        for mask in [0xfff, (1 << 20) - 1] {
            for start in [0, 12_345] {
                assert_eq!(
                    window_cuts(&rabin, &data, start, mask),
                    expected_cuts(&hashes, 6, start, mask),
                    "polynomial {polynom:#x}, start {start}, mask {mask:#x}"
                );
            }
        }
    }
}

#[test]
fn window_cuts_appends_and_leaves_the_hasher_alone() {
    let mut rng = Rng::new(11);
    let data = rng.bytes(10_000);
    let mut rabin = Rabin64::new_with_polynom(6, &RESTIC_DEFAULT);
    let _ = rabin.reset_and_prefill_window(&mut data[..63].iter().copied());
    for &byte in &data[63..500] {
        rabin.slide(byte);
    }
    let untouched = rabin.clone();

    let mut out = vec![usize::MAX];
    rabin.window_cuts(&data, 0, 0xff, &mut out);
    assert_eq!(out[0], usize::MAX, "existing contents kept");
    assert_eq!(
        out[1..],
        expected_cuts(&sliding_hashes(6, RESTIC_DEFAULT, &data), 6, 0, 0xff)
    );
    rabin.window_cuts(&data, data.len() + 100, 0, &mut out);
    rabin.window_cuts(&[], 0, 0, &mut out);
    assert_eq!(
        out.len(),
        1 + expected_cuts(&sliding_hashes(6, RESTIC_DEFAULT, &data), 6, 0, 0xff).len()
    );

    // Same hash, and the same window: sliding on gives the same hashes as the untouched clone.
    let mut untouched = untouched;
    assert_eq!(rabin.hash, untouched.hash);
    for &byte in &data[500..700] {
        rabin.slide(byte);
        untouched.slide(byte);
        assert_eq!(rabin.hash, untouched.hash);
    }
}
