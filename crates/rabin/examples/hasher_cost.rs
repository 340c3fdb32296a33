//! What a hasher costs to create and per byte, ours and the published crate's (BENCHMARKS.md).
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
}
