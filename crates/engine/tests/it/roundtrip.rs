use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use proptest::prelude::*;

use crate::common::*;

fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("dir/a.txt"), b"hello\n").unwrap();
    fs::write(root.join("large.bin"), random_bytes(6 << 20, 7)).unwrap();
    // Deep path.
    let mut deep = root.to_path_buf();
    for i in 0..40 {
        deep.push(format!("level-{i:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("deep.txt"), b"deep").unwrap();
    // Odd and non-UTF-8 names.
    fs::write(root.join(OsStr::from_bytes(b"caf\xe9 \xff.bin")), b"latin1").unwrap();
    fs::write(root.join("sp ace, comma;\"quote\"\n"), b"odd").unwrap();
    // Symlinks, one dangling.
    symlink("dir/a.txt", root.join("link")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    // A file with holes: data at 0, at 5 MiB and at the end.
    let f = fs::File::create(root.join("holes.img")).unwrap();
    f.set_len(16 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random_bytes(4096, 3), 0).unwrap();
    f.write_all_at(&random_bytes(8192, 4), 5 << 20).unwrap();
    f.write_all_at(b"end", (16 << 20) - 3).unwrap();
    // Files of one blob whose last pages are zeros (left holes, so their one write does not
    // reach their length), one of nothing but zeros, one whose last byte is a zero.
    let mut tail = random_bytes(100, 5);
    tail.resize(100 + 8192, 0);
    fs::write(root.join("zero-tail.bin"), &tail).unwrap();
    fs::write(root.join("zeros.bin"), vec![0u8; 12 << 10]).unwrap();
    fs::write(root.join("last-byte-zero.bin"), b"abc\0").unwrap();
    // A hard link.
    fs::hard_link(root.join("dir/a.txt"), root.join("hard.txt")).unwrap();
    // FIFO.
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    // Modes.
    fs::set_permissions(root.join("dir/a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(root.join("large.bin"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(root.join("dir/sub"), fs::Permissions::from_mode(0o1750)).unwrap();
    // Mtimes, with nanoseconds.
    set_mtime(&root.join("dir/a.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("link"), 1_500_000_000, 0);
    set_mtime(&root.join("dir/sub"), 1_400_000_000, 0);
    set_mtime(&root.join("dir"), 1_300_000_000, 0);
}

#[test]
fn tree_round_trip_is_byte_and_metadata_identical() {
    let fx = Fixture::new();
    let src = fx.path("src");
    build_tree(&src);
    let out = fx.backup_dir(&src, None);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(out.snapshot_id.len(), 64);
    let target = fx.path("target");
    let ctx = TestCtx::default();
    // Setuid bits and the FIFO come back only in an original-location restore.
    let res = rsvault_engine::restore_scoped(
        &fx.repo,
        &rsvault_engine::RestoreSpec {
            snapshot_id: out.snapshot_id.clone(),
            paths: vec![],
            target: target.clone(),
            conflict: rsvault_engine::Conflict::Fail,
        },
        &rsvault_engine::RestoreScope {
            root: None,
            original_location: true,
        },
        &ctx,
    )
    .unwrap();
    assert!(res.warnings.is_empty(), "{:?}", res.warnings);
    let last = ctx.progress.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.phase, rsvault_engine::Phase::Restoring);
    assert_eq!(
        (last.files_done, last.bytes_done),
        (last.files_total, last.bytes_total)
    );
    assert_eq!(last.files_total, res.files);
    assert_same_tree(&src, &target);
    // Hard links stay links.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(target.join("hard.txt")).unwrap().ino(),
        fs::metadata(target.join("dir/a.txt")).unwrap().ino()
    );
    // Holes stay holes.
    assert!(allocated(&target.join("holes.img")) < 1 << 20);
}

/// Files larger than a read block (16 MiB) are cut while their chunks are sealed on the pool,
/// in block buffers a backup reuses from file to file. More such files than batches in flight,
/// so later files are read into buffers earlier ones left: each must restore as it was.
#[test]
fn files_of_several_blocks_restore_identically_one_after_another() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5u64 {
        // Each a batch of its own, two blocks and a bit.
        let len = (33 << 20) + 4097 * i as usize;
        fs::write(
            src.join(format!("large-{i}.bin")),
            random_bytes(len, 40 + i),
        )
        .unwrap();
    }
    let out = fx.backup_dir(&src, None);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let target = fx.path("target");
    let res = fx.restore(&out.snapshot_id, &[], &target);
    assert!(res.warnings.is_empty(), "{:?}", res.warnings);
    assert_same_tree(&src, &target);
}

#[test]
fn backing_up_twice_adds_nothing() {
    let fx = Fixture::new();
    let src = fx.path("src");
    build_tree(&src);
    let first = fx.backup_dir(&src, None);
    assert!(first.bytes_added > 6 << 20);
    let size = fx.repo_size();
    let second = fx.backup_dir(&src, Some(&first.snapshot_id));
    assert_eq!(second.bytes_added, 0);
    assert_eq!(second.files, first.files);
    // Only the new snapshot file (and an empty-ish index) may have been written.
    assert!(
        fx.repo_size() - size < 4096,
        "repo grew by {}",
        fx.repo_size() - size
    );
    // And without naming the parent it finds the same data.
    let third = fx.backup_dir(&src, None);
    assert_eq!(third.bytes_added, 0);
}

#[test]
fn incremental_backup_with_parent_stores_only_the_change() {
    let fx = Fixture::new();
    let src = fx.path("src");
    build_tree(&src);
    let first = fx.backup_dir(&src, None);
    fs::write(src.join("dir/new.txt"), random_bytes(100_000, 9)).unwrap();
    fs::remove_file(src.join("empty")).unwrap();
    let second = fx.backup_dir(&src, Some(&first.snapshot_id));
    assert!(second.bytes_added < 200_000, "added {}", second.bytes_added);
    let t1 = fx.path("t1");
    let t2 = fx.path("t2");
    // Restore both: the first snapshot is unaffected by the second.
    fx.restore(&first.snapshot_id, &[], &t1);
    fx.restore_original(&second.snapshot_id, &t2);
    assert!(t1.join("empty").exists() && !t1.join("dir/new.txt").exists());
    assert_same_tree(&src, &t2);
    let snaps = rsvault_engine::snapshots(&fx.repo).unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1].id, second.snapshot_id);
    assert_eq!(
        snaps[0].paths,
        vec![fs::canonicalize(&src).unwrap().display().to_string()]
    );
}

#[derive(Debug, Clone)]
enum Gen {
    File(Vec<u8>, u32, bool),
    Dir(Vec<(Vec<u8>, Gen)>),
    Link(Vec<u8>),
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    // Any bytes except '/' and NUL, not "." or "..".
    proptest::collection::vec(1u8..=255, 1..12).prop_map(|mut v| {
        for b in &mut v {
            if *b == b'/' {
                *b = b'_';
            }
        }
        if v == b"." || v == b".." {
            v.push(b'x');
        }
        v
    })
}

fn gen() -> impl Strategy<Value = Gen> {
    let leaf = prop_oneof![
        (
            prop_oneof![
                Just(Vec::new()),
                proptest::collection::vec(any::<u8>(), 0..3000),
                (1usize..2).prop_map(|m| random_bytes(m << 20, m as u64)),
            ],
            prop_oneof![Just(0o644u32), Just(0o600), Just(0o755)],
            any::<bool>()
        )
            .prop_map(|(d, m, h)| Gen::File(d, m, h)),
        name().prop_map(Gen::Link),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        proptest::collection::vec((name(), inner), 0..5).prop_map(Gen::Dir)
    })
}

fn materialise(path: &Path, g: &Gen) {
    match g {
        Gen::File(data, mode, hole) => {
            let f = fs::File::create(path).unwrap();
            use std::os::unix::fs::FileExt;
            let off = if *hole { 3 << 20 } else { 0 };
            f.write_all_at(data, off).unwrap();
            if *hole {
                f.set_len(off + data.len() as u64 + (1 << 20)).unwrap();
            }
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
            set_mtime(path, 1_234_567_890, 42);
        }
        Gen::Link(t) => symlink(OsStr::from_bytes(t), path).unwrap(),
        Gen::Dir(children) => {
            fs::create_dir(path).unwrap();
            for (n, c) in children {
                let p = path.join(OsStr::from_bytes(n));
                if fs::symlink_metadata(&p).is_err() {
                    materialise(&p, c);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(children in proptest::collection::vec((name(), gen()), 1..6)) {
        let fx = Fixture::new();
        let src = fx.path("src");
        materialise(&src, &Gen::Dir(children));
        let out = fx.backup_dir(&src, None);
        prop_assert!(out.warnings.is_empty());
        let target = fx.path("target");
        fx.restore(&out.snapshot_id, &[], &target);
        // Directory mtimes moved while the tree was built; compare after pinning them.
        for p in walk(&src).into_iter().rev() {
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                set_mtime(&p, 1, 0);
                set_mtime(&target.join(p.strip_prefix(&src).unwrap()), 1, 0);
            }
        }
        assert_same_tree(&src, &target);
        let again = fx.backup_dir(&src, None);
        // Only the directory mtimes changed: no file data is added.
        prop_assert!(again.bytes_added < 64 * 1024);
    }
}

#[test]
fn unchanged_files_are_not_re_read_with_a_parent() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), random_bytes(16 << 20, 5)).unwrap();
    let first = fx.backup_dir(&src, None);
    // At 1 MiB/s a re-read would take 16 s.
    let start = std::time::Instant::now();
    let second = rsvault_engine::backup(
        &fx.repo,
        &rsvault_engine::Source::Directory { path: src.clone() },
        &rsvault_engine::BackupOptions {
            parent: Some(first.snapshot_id.clone()),
            bytes_per_second: Some(1 << 20),
            ..Default::default()
        },
        &TestCtx::default(),
    )
    .unwrap();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(second.bytes_added, 0);
    assert_eq!(second.bytes_total, 16 << 20);
}
