//! What a hasher costs to create and per byte, ours and the published crate's (BENCHMARKS.md), and
//! what finding cut candidates costs per byte with `slide` and with `window_cuts`.
//! A measurement, not a check: `cargo run --release -p rustic_cdc@0.3.2 --example hasher_cost`

use std::hint::black_box;
use std::time::Instant;

use rustic_cdc::Rabin64;
use rustic_cdc_upstream::Rabin64 as UpstreamRabin64;

#[path = "../tests/it/data.rs"]
#[allow(dead_code)]
mod data;

use data::{Fingerprint, Rng, RESTIC_DEFAULT};

fn main() {
    fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed().as_secs_f64() / f64::from(n)
    }
    fn per_byte(hasher: &mut impl Fingerprint, data: &[u8]) -> f64 {
        let start = Instant::now();
        for &byte in data {
            hasher.slide(byte);
        }
        let _ = black_box(hasher.hash());
        start.elapsed().as_secs_f64() / data.len() as f64
    }
    let ours = per_call(20_000, || {
        let _ = black_box(Rabin64::new_with_polynom(6, black_box(&RESTIC_DEFAULT)));
    });
    let theirs = per_call(2_000, || {
        let _ = black_box(UpstreamRabin64::new_with_polynom(
            6,
            black_box(&RESTIC_DEFAULT),
        ));
    });
    let data = Rng::new(6).bytes(64 << 20);
    let slide_ours = per_byte(&mut Rabin64::new_with_polynom(6, &RESTIC_DEFAULT), &data);
    let slide_theirs = per_byte(
        &mut UpstreamRabin64::new_with_polynom(6, &RESTIC_DEFAULT),
        &data,
    );
    println!(
        "new_with_polynom: ours {:.0} ns, published {:.1} us; slide: ours {:.2} ns/byte, published {:.2} ns/byte",
        ours * 1e9,
        theirs * 1e6,
        slide_ours * 1e9,
        slide_theirs * 1e9
    );

    // Cut candidates over 256 MiB with rustic_core's mask for 1 MiB chunks: a slide per byte with
    // the hash tested after each, as a chunker does, against one call of `window_cuts`. Best of
    // three runs each, to leave out page faults and frequency changes. The slide loop is slower per
    // byte than the plain `slide` above: here the compiler keeps the hasher in memory, so each
    // byte's hash is stored and loaded again on the chain.
    let data = Rng::new(7).bytes(256 << 20);
    let mask = (1 << 20) - 1;
    let (slide_time, by_slide) = best_of_3(|| cuts_by_slide(black_box(&data), black_box(mask)));
    let rabin = Rabin64::new_with_polynom(6, &RESTIC_DEFAULT);
    let (lanes_time, by_lanes) = best_of_3(|| {
        let mut out = Vec::new();
        rabin.window_cuts(black_box(&data), 0, black_box(mask), &mut out);
        out
    });
    assert_eq!(by_slide, by_lanes, "window_cuts disagrees with slide");
    let bytes = data.len() as f64;
    println!(
        "cut candidates over 256 MiB ({} found): slide loop {:.2} ns/byte, window_cuts {:.2} ns/byte ({:.1}x)",
        by_slide.len(),
        slide_time / bytes * 1e9,
        lanes_time / bytes * 1e9,
        slide_time / lanes_time
    );
}

/// The end positions from 64 on whose window's hash has the `mask` bits clear, slide by slide.
#[inline(never)]
fn cuts_by_slide(data: &[u8], mask: u64) -> Vec<usize> {
    let mut rabin = Rabin64::new_with_polynom(6, &RESTIC_DEFAULT);
    let mut cuts = Vec::new();
    for (i, &byte) in data.iter().enumerate() {
        rabin.slide(byte);
        if rabin.hash & mask == 0 && i >= 63 {
            cuts.push(i + 1);
        }
    }
    cuts
}

/// The shortest of three runs of `f`, in seconds, and its result.
fn best_of_3(mut f: impl FnMut() -> Vec<usize>) -> (f64, Vec<usize>) {
    let mut best = f64::INFINITY;
    let mut result = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        result = black_box(f());
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, result)
}
