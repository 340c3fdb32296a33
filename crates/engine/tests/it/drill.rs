//! Restore drills (issue #13 item 9): small files restored through the restore path, large files
//! (disk images) checked by a sample of their ranges, corruption named either way.

use std::fs;
use std::path::PathBuf;

use rsvault_engine::{DrillReport, DrillSpec};

use crate::common::*;

const BIG: usize = 6 << 20;

fn setup() -> (Fixture, String) {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/disk.img"), random_bytes(BIG, 7)).unwrap();
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    fs::write(src.join("d/b.txt"), b"bravo").unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;
    (fx, snap)
}

fn drill(fx: &Fixture, snap: &str, percent: u8, seed: u64) -> DrillReport {
    let spec = DrillSpec {
        snapshot_id: snap.into(),
        scratch: fx.path(&format!("scratch-{seed}")),
        sample_percent: percent,
        seed,
        ranged_above_bytes: 1 << 20,
    };
    let report = rsvault_engine::drill(&fx.repo, &spec, &TestCtx::default()).unwrap();
    assert!(!spec.scratch.exists(), "scratch space left behind");
    report
}

#[test]
fn large_files_are_checked_by_a_sample_of_their_ranges() {
    let (fx, snap) = setup();
    let whole = drill(&fx, &snap, 100, 1);
    assert!(whole.mismatches.is_empty(), "{:?}", whole.mismatches);
    assert_eq!((whole.files, whole.ranged_files), (3, 1));
    assert_eq!(
        whole.bytes,
        BIG as u64 + 10,
        "every range and every small file"
    );

    // A third of the ranges (and one of the two small files): less than the image, more than nothing;
    // another seed picks other ranges.
    let third = drill(&fx, &snap, 34, 2);
    assert!(third.mismatches.is_empty(), "{:?}", third.mismatches);
    assert_eq!((third.files, third.ranged_files), (2, 1));
    assert!(
        third.bytes > 5 && third.bytes < BIG as u64,
        "{}",
        third.bytes
    );
    let other = drill(&fx, &snap, 34, 3);
    assert!(other.mismatches.is_empty());
}

#[test]
fn a_damaged_range_of_a_large_file_is_named() {
    let (fx, snap) = setup();
    let mut packs: Vec<PathBuf> = walk(&fx.repo.path.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    packs.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    // The largest pack holds the image's chunks.
    let mut data = fs::read(&packs[0]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    fs::write(&packs[0], data).unwrap();
    let report = drill(&fx, &snap, 100, 4);
    assert!(
        report
            .mismatches
            .iter()
            .any(|m| m.starts_with("d/disk.img: ")),
        "{:?}",
        report.mismatches
    );
}
