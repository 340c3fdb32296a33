use std::fs;

use rsvault_engine::{Conflict, Error, RestoreSpec};

use crate::common::*;

fn source(fx: &Fixture) -> std::path::PathBuf {
    let src = fx.path("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    fs::write(src.join("dir/a.txt"), b"a").unwrap();
    fs::write(src.join("dir/b.txt"), b"b").unwrap();
    fs::write(src.join("dir/sub/c.txt"), b"c").unwrap();
    fs::write(src.join("other/d.txt"), b"d").unwrap();
    fs::write(src.join("top.txt"), b"top").unwrap();
    src
}

fn spec(snap: &str, paths: &[&str], target: &std::path::Path, conflict: Conflict) -> RestoreSpec {
    RestoreSpec {
        snapshot_id: snap.into(),
        paths: paths.iter().map(|s| s.to_string()).collect(),
        target: target.into(),
        conflict,
    }
}

#[test]
fn item_level_restore_writes_only_the_requested_paths() {
    let fx = Fixture::new();
    let src = source(&fx);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    let out = fx.restore(&snap[..8], &["dir/a.txt", "dir/sub"], &target);
    assert_eq!(out.files, 2);
    assert_eq!(fs::read(target.join("dir/a.txt")).unwrap(), b"a");
    assert_eq!(fs::read(target.join("dir/sub/c.txt")).unwrap(), b"c");
    assert!(!target.join("dir/b.txt").exists());
    assert!(!target.join("other").exists());
    assert!(!target.join("top.txt").exists());
}

/// Paths that overlap, given in any order, restore each entry once.
#[test]
fn overlapping_paths_restore_each_entry_once() {
    let fx = Fixture::new();
    let src = source(&fx);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    let out = fx.restore(
        &snap[..8],
        &["dir/sub/c.txt", "dir", "top.txt", "dir/sub", "dir/a.txt"],
        &target,
    );
    assert_eq!(out.files, 4, "{out:?}");
    for (p, want) in [
        ("dir/a.txt", &b"a"[..]),
        ("dir/b.txt", b"b"),
        ("dir/sub/c.txt", b"c"),
        ("top.txt", b"top"),
    ] {
        assert_eq!(fs::read(target.join(p)).unwrap(), want, "{p}");
    }
    assert!(!target.join("other").exists());
}

#[test]
fn unknown_path_and_escaping_path_are_errors() {
    let fx = Fixture::new();
    let src = source(&fx);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    let ctx = TestCtx::default();
    let err = rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &["nope"], &target, Conflict::Fail),
        &ctx,
    );
    assert!(matches!(err, Err(Error::Repository(_))), "{err:?}");
    let err = rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &["../x"], &target, Conflict::Fail),
        &ctx,
    );
    assert!(matches!(err, Err(Error::Repository(_))), "{err:?}");
    let err = rsvault_engine::restore(
        &fx.repo,
        &spec("deadbeef", &[], &target, Conflict::Fail),
        &ctx,
    );
    assert!(matches!(err, Err(Error::SnapshotNotFound(_))), "{err:?}");
}

#[test]
fn conflict_fail_writes_nothing() {
    let fx = Fixture::new();
    let src = source(&fx);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    fs::create_dir_all(target.join("other")).unwrap();
    fs::write(target.join("other/d.txt"), b"mine").unwrap();
    let err = rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &[], &target, Conflict::Fail),
        &TestCtx::default(),
    );
    match err {
        Err(Error::Conflict(p)) => assert_eq!(p, "other/d.txt"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read(target.join("other/d.txt")).unwrap(), b"mine");
    assert!(
        !target.join("dir").exists(),
        "nothing may be written on a conflict"
    );
    assert!(!target.join("top.txt").exists());
}

#[test]
fn conflict_skip_keeps_existing_files_and_reports_them() {
    let fx = Fixture::new();
    let src = source(&fx);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    fs::create_dir_all(target.join("other")).unwrap();
    fs::write(target.join("other/d.txt"), b"mine").unwrap();
    let out = rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &[], &target, Conflict::Skip),
        &TestCtx::default(),
    )
    .unwrap();
    assert_eq!(out.skipped, vec!["other/d.txt".to_string()]);
    assert_eq!(fs::read(target.join("other/d.txt")).unwrap(), b"mine");
    assert_eq!(fs::read(target.join("top.txt")).unwrap(), b"top");
}

#[test]
fn conflict_overwrite_replaces_files_and_symlinks() {
    let fx = Fixture::new();
    let src = source(&fx);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    fs::create_dir_all(target.join("other")).unwrap();
    fs::write(
        target.join("other/d.txt"),
        b"a much longer existing content",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", target.join("top.txt")).unwrap();
    let out = rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &[], &target, Conflict::Overwrite),
        &TestCtx::default(),
    )
    .unwrap();
    assert!(out.skipped.is_empty());
    assert_same_tree(&src, &target);
}

#[test]
fn wrong_key_is_a_clear_error_and_writes_nothing() {
    let fx = Fixture::new();
    let src = source(&fx);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let mut bad = fx.repo.clone();
    bad.password = "wrong".into();
    let target = fx.path("t");
    let err = rsvault_engine::restore(
        &bad,
        &spec(&snap, &[], &target, Conflict::Overwrite),
        &TestCtx::default(),
    );
    assert!(matches!(err, Err(Error::WrongKey(_))), "{err:?}");
    assert!(!target.exists());
    assert!(matches!(
        rsvault_engine::snapshots(&bad),
        Err(Error::WrongKey(_))
    ));
    assert!(matches!(
        rsvault_engine::verify(&bad, Some(0)),
        Err(Error::WrongKey(_))
    ));
}

#[test]
fn disk_full_during_restore_is_an_error_not_a_panic() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), random_bytes(4 << 20, 5)).unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let mnt = fx.path("small");
    fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP disk_full_during_restore: cannot mount a tmpfs here");
        return;
    }
    let res = rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &[], &mnt, Conflict::Fail),
        &TestCtx::default(),
    );
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert!(matches!(res, Err(Error::DiskFull(_))), "{res:?}");
}

/// As root, every restored file gets its owner and group back: those the restoring user already
/// has (their change is skipped), another owner, and only another group.
#[test]
fn restore_as_root_gives_every_file_its_owner_and_group() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP restore_as_root_gives_every_file_its_owner_and_group: needs root");
        return;
    }
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let owners = [
        ("mine", me),
        ("other", (4242, 4343)),
        ("group-only", (me.0, 4343)),
        ("d/other-big", (4242, 4343)),
    ];
    for (i, (name, (uid, gid))) in owners.iter().enumerate() {
        let p = src.join(name);
        // One small file, one large enough to be written directly.
        let len = if name.ends_with("big") { 1 << 20 } else { 10 };
        fs::write(&p, random_bytes(len, i as u64)).unwrap();
        std::os::unix::fs::chown(&p, Some(*uid), Some(*gid)).unwrap();
    }
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    fx.restore(&snap[..8], &[], &target);
    for (name, want) in owners {
        let m = fs::metadata(target.join(name)).unwrap();
        assert_eq!((m.uid(), m.gid()), want, "{name}");
        assert_eq!(
            fs::read(target.join(name)).unwrap(),
            fs::read(src.join(name)).unwrap(),
            "{name}"
        );
    }
}
