use rustic_cdc::Rabin64;

use crate::data::{cut_points, Rng, RESTIC_DEFAULT, RESTIC_SIZES};

// Boundaries as rustic_core 0.13 with the published rustic_cdc 0.3.1 cut them (recorded once, with
// `rustic_cdc_upstream` in place of `rustic_cdc` below), so a change shows even without the
// reference crate.

#[test]
fn boundaries_of_random_data_with_restic_default_polynomial_are_pinned() {
    let data = Rng::new(20_261_128).bytes(24 << 20);
    let cuts = cut_points(
        &mut Rabin64::new_with_polynom(6, &RESTIC_DEFAULT),
        &data,
        RESTIC_SIZES,
    );
    assert_eq!(cuts, RANDOM_DATA);
}

#[test]
fn boundaries_of_mixed_data_with_restic_default_polynomial_are_pinned() {
    let data = Rng::new(10).mixed_bytes(40 << 20);
    let cuts = cut_points(
        &mut Rabin64::new_with_polynom(6, &RESTIC_DEFAULT),
        &data,
        RESTIC_SIZES,
    );
    assert_eq!(cuts, MIXED_DATA);
}

const RANDOM_DATA: &[usize] = &[
    873226, 1909125, 2882785, 4852943, 7594812, 8480834, 10042991, 10837369, 12384549, 13281396,
    16525868, 17491561, 18465294, 20286815, 20852009, 23056069, 25165824,
];

const MIXED_DATA: &[usize] = &[
    1081682, 1951762, 3273093, 4318257, 4876805, 6216927, 7658439, 9156277, 12355809, 13691392,
    17907187, 18431475, 18955763, 19480051, 21349570, 21873858, 22398146, 22922434, 24557936,
    25218976, 28871750, 29531685, 31568666, 32352791, 32926127, 33450415, 33974703, 38252532,
    38776820, 39301108, 41936114, 41943040,
];
