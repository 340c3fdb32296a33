use rustic_cdc::{Polynom, Polynom64, Rabin64};
use rustic_cdc_upstream::Rabin64 as UpstreamRabin64;

use crate::data::{cut_points, Fingerprint, Rng, Sizes, RESTIC_DEFAULT, RESTIC_SIZES};

/// Random calls — prefills of any length, including shorter than the window, and slides over
/// random and low-entropy bytes — leave both hashers with the same hash after every call.
fn assert_same_trace(window_bits: u32, polynom: Polynom64, rng: &mut Rng) {
    let mut ours = Rabin64::new_with_polynom(window_bits, &polynom);
    let mut theirs = UpstreamRabin64::new_with_polynom(window_bits, &polynom);
    let context = format!("window 2^{window_bits}, polynomial {polynom:#x}");
    for round in 0..40 {
        let prefill_len = rng.below(80) as usize;
        let prefill = rng.bytes(prefill_len);
        assert_eq!(
            ours.prefill(&prefill),
            theirs.prefill(&prefill),
            "{context}"
        );
        assert_eq!(
            ours.hash(),
            theirs.hash(),
            "{context}: prefill in round {round}"
        );
        let slides_len = rng.below(3000) as usize;
        let slides = rng.mixed_bytes(slides_len);
        for (i, &byte) in slides.iter().enumerate() {
            ours.slide(byte);
            theirs.slide(byte);
            assert_eq!(
                ours.hash(),
                theirs.hash(),
                "{context}: round {round}, byte {i}"
            );
        }
    }
}

#[test]
fn hash_matches_upstream_after_every_call_for_restic_polynomials() {
    let mut rng = Rng::new(1);
    assert_same_trace(6, RESTIC_DEFAULT, &mut rng);
    for _ in 0..30 {
        let polynom = rng.polynom53();
        assert_same_trace(6, polynom, &mut rng);
    }
}

#[test]
fn hash_matches_upstream_for_other_windows_and_degrees() {
    let mut rng = Rng::new(2);
    for window_bits in 0..=9 {
        assert_same_trace(window_bits, rng.polynom53(), &mut rng);
    }
    for degree in 8..=56 {
        let polynom = (rng.next_u64() & ((1 << degree) - 1)) | (1 << degree);
        assert_same_trace(6, polynom, &mut rng);
    }
}

#[test]
fn boundaries_match_upstream_with_restic_chunk_sizes() {
    let mut rng = Rng::new(3);
    for file in 0..6 {
        let polynom = if file == 0 {
            RESTIC_DEFAULT
        } else {
            rng.polynom53()
        };
        let len = rng.below(40 << 20) as usize;
        let data = if file % 2 == 0 {
            rng.bytes(len)
        } else {
            rng.mixed_bytes(len)
        };
        let ours = cut_points(
            &mut Rabin64::new_with_polynom(6, &polynom),
            &data,
            RESTIC_SIZES,
        );
        let theirs = cut_points(
            &mut UpstreamRabin64::new_with_polynom(6, &polynom),
            &data,
            RESTIC_SIZES,
        );
        assert_eq!(ours, theirs, "file {file}, polynomial {polynom:#x}");
    }
}

#[test]
fn boundaries_match_upstream_with_small_chunks() {
    // Small chunks give thousands of boundaries per MiB, so every path of the chunker runs often.
    let sizes = Sizes {
        min: 1 << 10,
        avg: 4 << 10,
        max: 16 << 10,
    };
    let mut rng = Rng::new(4);
    for _ in 0..8 {
        let polynom = rng.polynom53();
        let data = rng.mixed_bytes(4 << 20);
        let ours = cut_points(&mut Rabin64::new_with_polynom(6, &polynom), &data, sizes);
        let theirs = cut_points(
            &mut UpstreamRabin64::new_with_polynom(6, &polynom),
            &data,
            sizes,
        );
        assert!(ours.len() > 300, "only {} chunks", ours.len());
        assert_eq!(ours, theirs, "polynomial {polynom:#x}");
    }
}

#[test]
fn polynomial_arithmetic_matches_upstream() {
    let mut rng = Rng::new(5);
    assert_eq!(Polynom::degree(&0u64), -1);
    for _ in 0..20_000 {
        let p = rng.next_u64() >> rng.below(64);
        let m = (rng.next_u64() >> rng.below(64)).max(1);
        assert_eq!(
            Polynom::degree(&p),
            rustic_cdc_upstream::Polynom::degree(&p)
        );
        assert_eq!(
            Polynom::modulo(&p, &m),
            rustic_cdc_upstream::Polynom::modulo(&p, &m),
            "{p:#x} mod {m:#x}"
        );
    }
}
