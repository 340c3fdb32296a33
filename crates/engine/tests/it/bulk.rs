//! Restores read pack ranges in bulk (issue #11): the blobs a restore needs are grouped by pack
//! and each run of nearby blobs is read with one request, then decoded and written blob by
//! blob. These tests build the layouts that path has to get right, on every backend.

use std::fs;
use std::path::Path;

use rsvault_engine::{Conflict, Error, RestoreSpec};

use crate::backends::{fixture, on_every_backend};
use crate::common::*;

on_every_backend!(
    small_files_sharing_packs_restore_byte_exact,
    a_file_spread_over_packs_by_two_backups_restores_byte_exact,
    blobs_not_needed_between_needed_ones_are_not_restored,
);

/// `n` small files of 100 B to 20 KiB, every seventh a copy of an earlier one (one blob, two
/// places), and a file that holds the same 3 MiB twice (one blob, two places in one file).
fn small_files(root: &Path, n: u64) {
    fs::create_dir_all(root.join("many")).unwrap();
    for i in 0..n {
        let content = if i % 7 == 6 {
            fs::read(root.join(format!("many/f{:03}", i - 3))).unwrap()
        } else {
            random_bytes(100 + (i as usize * 7919) % 20_000, 1000 + 2 * i)
        };
        fs::write(root.join(format!("many/f{i:03}")), content).unwrap();
    }
    let half = random_bytes(3 << 20, 77);
    fs::write(root.join("twice.bin"), [half.as_slice(), &half].concat()).unwrap();
}

fn small_files_sharing_packs_restore_byte_exact(fx: Fixture) {
    let src = fx.path("src");
    small_files(&src, 300);
    let out = fx.backup_dir(&src, None);
    let t = fx.path("t");
    let res = fx.restore(&out.snapshot_id, &[], &t);
    assert_eq!(res.files, 301);
    assert!(res.warnings.is_empty(), "{:?}", res.warnings);
    assert_same_tree(&src, &t);
}

/// A 12 MiB file backed up, changed in three places and backed up again: the second snapshot's
/// file takes most blobs from the first backup's pack and a few from the second's, interleaved,
/// and is larger than one read (`packs::MAX_READ`).
fn a_file_spread_over_packs_by_two_backups_restores_byte_exact(fx: Fixture) {
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut big = random_bytes(12 << 20, 5);
    fs::write(src.join("big.bin"), &big).unwrap();
    let first = fx.backup_dir(&src, None);
    for (k, at) in [2usize << 20, 6 << 20, 10 << 20].into_iter().enumerate() {
        big[at..at + 65536].copy_from_slice(&random_bytes(65536, 50 + 2 * k as u64));
    }
    fs::write(src.join("big.bin"), &big).unwrap();
    let second = fx.backup_dir(&src, Some(&first.snapshot_id));
    // How much is new depends on where the repository's own chunker polynomial cuts the file;
    // anything short of all of it leaves the file spread over both packs.
    assert!(
        second.bytes_added < 12 << 20,
        "the second backup re-stored the file ({} bytes added): nothing to spread",
        second.bytes_added
    );
    let t = fx.path("t2");
    fx.restore(&second.snapshot_id, &[], &t);
    assert_eq!(fs::read(t.join("big.bin")).unwrap(), big);
    let t = fx.path("t1");
    fx.restore(&first.snapshot_id, &[], &t);
    assert_eq!(
        fs::read(t.join("big.bin")).unwrap(),
        random_bytes(12 << 20, 5)
    );
}

/// An item-level restore of every other small file: the blobs of the files left out lie between
/// the needed ones in the pack and are read over, never written anywhere.
fn blobs_not_needed_between_needed_ones_are_not_restored(fx: Fixture) {
    let src = fx.path("src");
    small_files(&src, 40);
    let out = fx.backup_dir(&src, None);
    let wanted: Vec<String> = (0..40)
        .step_by(2)
        .map(|i| format!("many/f{i:03}"))
        .collect();
    let paths: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let t = fx.path("t");
    let res = fx.restore(&out.snapshot_id, &paths, &t);
    assert_eq!(res.files, 20);
    let mut restored: Vec<String> = fs::read_dir(t.join("many"))
        .unwrap()
        .map(|e| format!("many/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    restored.sort();
    assert_eq!(restored, wanted);
    for p in &wanted {
        assert_eq!(
            fs::read(t.join(p)).unwrap(),
            fs::read(src.join(p)).unwrap(),
            "{p}"
        );
    }
}

/// One byte changed inside a pack whose blobs are all read with one request: the file that
/// blob belongs to is not written (the job fails naming it and why), every other file of the
/// same read is restored byte for byte, and no temporary file is left.
#[test]
fn a_damaged_blob_inside_a_bulk_read_fails_its_file_only() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..60u64 {
        fs::write(
            src.join(format!("f{i:02}")),
            random_bytes(4096, 300 + 2 * i),
        )
        .unwrap();
    }
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let mut packs: Vec<_> = walk(&fx.repo.path.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    packs.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    // The data pack: 60 blobs of ~4 KiB, then its header; a third in is inside a blob.
    let mut data = fs::read(&packs[0]).unwrap();
    assert!(data.len() > 60 * 4096, "{} bytes", data.len());
    let at = data.len() / 3;
    data[at] ^= 0x40;
    fs::write(&packs[0], data).unwrap();

    let t = fx.path("t");
    let res = rsvault_engine::restore(
        &fx.repo,
        &RestoreSpec {
            snapshot_id: snap,
            paths: vec![],
            target: t.clone(),
            conflict: Conflict::Fail,
        },
        &TestCtx::default(),
    );
    let msg = match res {
        Err(Error::Repository(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(msg.contains("1 file(s)"), "{msg}");
    assert!(msg.contains("authentication"), "{msg}");
    let missing: Vec<String> = (0..60)
        .map(|i| format!("f{i:02}"))
        .filter(|n| !t.join(n).exists())
        .collect();
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(msg.contains(&missing[0]), "{msg}");
    for i in 0..60u64 {
        let name = format!("f{i:02}");
        if name != missing[0] {
            assert_eq!(
                fs::read(t.join(&name)).unwrap(),
                random_bytes(4096, 300 + 2 * i),
                "{name}"
            );
        }
    }
    let left: Vec<_> = walk(&t)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".rsvault-restore-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// What the bulk path is for: restoring 200 small files from S3 reads their pack with a handful
/// of ranged GETs, not one per file. Counted in the emulator's request log.
#[test]
fn s3_restore_of_small_files_reads_packs_with_few_requests() {
    let Some(fx) = fixture(Some(crate::emulator::Kind::S3)) else {
        return;
    };
    let emu = crate::backends::shared(crate::emulator::Kind::S3).expect("started");
    let src = fx.path("src");
    small_files(&src, 200);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let pack_gets = || {
        let log = fs::read_to_string(emu.dir.join("moto.log")).unwrap_or_default();
        // No opening quote: werkzeug wraps request lines whose status is not 200 (a ranged
        // GET answers 206) in ANSI colour codes.
        let needle = format!(
            "GET /{}/{}/data/",
            crate::emulator::BUCKET,
            fx.repo.path.display()
        );
        log.lines().filter(|l| l.contains(&needle)).count()
    };
    let before = pack_gets();
    let t = fx.path("t");
    fx.restore(&snap, &[], &t);
    assert_same_tree(&src, &t);
    let during = pack_gets() - before;
    eprintln!("S3 restore of 201 files: {during} GETs of pack ranges (trees included)");
    assert!(during > 0, "no GET counted: has moto's log format changed?");
    assert!(
        during <= 20,
        "{during} GETs of pack ranges for 201 files in one directory"
    );
}
