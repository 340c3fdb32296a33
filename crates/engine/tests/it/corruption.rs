use std::fs;
use std::path::PathBuf;

use rsvault_engine::{Conflict, Error, RestoreSpec};

use crate::common::*;

/// Data packs sorted by size, largest first.
fn packs(fx: &Fixture) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(&fx.repo.path.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    v
}

fn setup() -> (Fixture, String) {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/big.bin"), random_bytes(3 << 20, 1)).unwrap();
    fs::write(src.join("small.txt"), b"small").unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;
    (fx, snap)
}

fn restore_all(
    fx: &Fixture,
    snap: &str,
) -> (
    PathBuf,
    rsvault_engine::Result<rsvault_engine::RestoreOutcome>,
) {
    let t = fx.path("t");
    let res = rsvault_engine::restore(
        &fx.repo,
        &RestoreSpec {
            snapshot_id: snap.into(),
            paths: vec![],
            target: t.clone(),
            conflict: Conflict::Overwrite,
        },
        &TestCtx::default(),
    );
    (t, res)
}

#[test]
fn flipped_byte_in_a_pack_is_named_by_verify_and_never_restored_silently() {
    let (fx, snap) = setup();
    let pack = packs(&fx)[0].clone();
    let mut data = fs::read(&pack).unwrap();
    data[1000] ^= 0x55;
    fs::write(&pack, data).unwrap();
    let report = rsvault_engine::verify(&fx.repo, None).unwrap();
    assert!(!report.ok);
    assert_eq!(report.damaged_snapshots, vec![snap.clone()]);
    assert!(
        report
            .damaged_files
            .iter()
            .any(|f| f.ends_with(":d/big.bin")),
        "{report:?}"
    );
    assert!(
        !report
            .damaged_files
            .iter()
            .any(|f| f.ends_with("small.txt")),
        "{report:?}"
    );
    let (t, res) = restore_all(&fx, &snap);
    match res {
        Err(Error::Repository(m)) => assert!(m.contains("d/big.bin"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        !t.join("d/big.bin").exists(),
        "damaged file must not be left with wrong bytes"
    );
}

#[test]
fn truncated_or_deleted_pack_is_named_by_verify() {
    let (fx, snap) = setup();
    let pack = packs(&fx)[0].clone();
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let report = rsvault_engine::verify(&fx.repo, Some(0)).unwrap();
    assert!(!report.ok);
    assert!(
        report
            .damaged_files
            .iter()
            .any(|f| f.ends_with(":d/big.bin")),
        "{report:?}"
    );
    fs::remove_file(&pack).unwrap();
    let report = rsvault_engine::verify(&fx.repo, Some(0)).unwrap();
    assert!(!report.ok);
    assert_eq!(report.damaged_snapshots, vec![snap.clone()]);
    assert!(
        report
            .damaged_files
            .iter()
            .any(|f| f.ends_with(":d/big.bin")),
        "{report:?}"
    );
    let (t, res) = restore_all(&fx, &snap);
    assert!(matches!(res, Err(Error::Repository(_))), "{res:?}");
    assert!(!t.join("d/big.bin").exists());
}

#[test]
fn clean_repository_verifies_ok_with_sampling() {
    let (fx, _) = setup();
    for p in [None, Some(0), Some(50), Some(100)] {
        let r = rsvault_engine::verify(&fx.repo, p).unwrap();
        assert!(r.ok, "{p:?}: {r:?}");
        assert!(r.damaged_files.is_empty());
    }
}

/// The restore reads and checks the snapshot's trees itself: a damaged or truncated tree pack
/// fails the restore, naming the tree, before anything is created at the target.
#[test]
fn a_damaged_or_truncated_tree_pack_fails_the_restore_before_anything_is_written() {
    let (fx, snap) = setup();
    // The trees are in their own pack, the smallest.
    let pack = packs(&fx).last().unwrap().clone();
    let clean = fs::read(&pack).unwrap();
    let mut data = clean.clone();
    data[20] ^= 0x55;
    fs::write(&pack, &data).unwrap();
    let (t, res) = restore_all(&fx, &snap);
    match res {
        Err(Error::Repository(m)) => {
            assert!(m.contains("tree") && m.contains("authentication"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !t.exists(),
        "nothing may be created for a restore whose trees are damaged"
    );
    fs::write(&pack, &clean[..10]).unwrap();
    let (t, res) = restore_all(&fx, &snap);
    match res {
        Err(Error::Repository(m)) => assert!(m.contains("truncated pack"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!t.exists());
}
