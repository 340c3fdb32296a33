//! Restores that cannot be turned against the host, atomic overwrites, and backups that read
//! only what they walked (issue #9). Run as root here, like the service: the attacks matter
//! most then.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rsvault_engine::worker::{run_in_worker, Request};
use rsvault_engine::{Conflict, Error, RestoreOutcome, RestoreScope, RestoreSpec};

use crate::common::*;

fn spec(snap: &str, target: &Path, conflict: Conflict) -> RestoreSpec {
    RestoreSpec {
        snapshot_id: snap.into(),
        paths: vec![],
        target: target.into(),
        conflict,
    }
}

fn scoped(
    fx: &Fixture,
    spec: &RestoreSpec,
    scope: &RestoreScope,
) -> rsvault_engine::Result<RestoreOutcome> {
    rsvault_engine::restore_scoped(&fx.repo, spec, scope, &TestCtx::default())
}

/// A directory outside the restore root with a file for every name the restore writes, each
/// holding `victim`: whatever the restore writes through a symlink lands on one of them.
fn victims(dir: &Path, names: &[String]) {
    fs::create_dir_all(dir).unwrap();
    for n in names {
        fs::write(dir.join(n), b"victim").unwrap();
    }
}

fn assert_untouched(dir: &Path, names: &[String]) {
    let mut found: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(found, want, "the restore created files outside its root");
    for n in names {
        assert_eq!(
            fs::read(dir.join(n)).unwrap(),
            b"victim",
            "the restore wrote outside its root, into {n}"
        );
        let mode = fs::metadata(dir.join(n)).unwrap().permissions().mode();
        assert_eq!(mode & 0o7000, 0, "{n} got mode {mode:o}");
    }
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".rsvault-restore-"))
        .collect()
}

/// `sub/` with `n` files of 64 KiB plus a setuid file: enough for the writers to be busy when
/// a swap happens.
fn many_files(fx: &Fixture, n: usize) -> (PathBuf, Vec<String>) {
    let src = fx.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("f{i:03}");
        fs::write(
            src.join("sub").join(&name),
            random_bytes(64 << 10, i as u64 + 1),
        )
        .unwrap();
        names.push(name);
    }
    fs::write(src.join("sub/suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("sub/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    names.push("suid".into());
    (src, names)
}

#[test]
fn target_swapped_for_a_symlink_before_the_worker_opens_it_writes_nothing_outside() {
    // The queued-restore attack: the API checked `roots/t`, then it became a symlink to a
    // directory the attacker wants written.
    let fx = Fixture::new();
    let (src, names) = many_files(&fx, 4);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let roots = fx.path("roots");
    fs::create_dir_all(&roots).unwrap();
    let outside = fx.path("outside");
    victims(&outside.join("sub"), &names);
    symlink(&outside, roots.join("t")).unwrap();
    let req = Request::RestoreScoped {
        repo: fx.repo.clone(),
        spec: spec(&snap, &roots.join("t"), Conflict::Overwrite),
        scope: RestoreScope {
            root: Some(roots.clone()),
            original_location: false,
        },
    };
    let res = run_in_worker(&bin(), &["worker".into()], &req, &TestCtx::default());
    assert!(
        matches!(&res, Err(Error::Repository(m)) if m.contains("symbolic link")),
        "{res:?}"
    );
    assert_untouched(&outside.join("sub"), &names);
    // The default scope (no root given) catches the same swap of the target itself.
    let res = rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &roots.join("t"), Conflict::Overwrite),
        &TestCtx::default(),
    );
    assert!(matches!(res, Err(Error::Repository(_))), "{res:?}");
    assert_untouched(&outside.join("sub"), &names);
}

#[test]
fn parent_directory_swapped_for_a_symlink_before_the_restore_writes_nothing_outside() {
    let fx = Fixture::new();
    let (src, names) = many_files(&fx, 4);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let roots = fx.path("roots");
    fs::create_dir_all(&roots).unwrap();
    let outside = fx.path("outside");
    victims(&outside.join("deeper/sub"), &names);
    // The request named roots/rg/deeper; `rg` is now a symlink out of the root.
    symlink(&outside, roots.join("rg")).unwrap();
    let res = scoped(
        &fx,
        &spec(&snap, &roots.join("rg/deeper"), Conflict::Overwrite),
        &RestoreScope {
            root: Some(roots.clone()),
            original_location: false,
        },
    );
    assert!(matches!(res, Err(Error::Repository(_))), "{res:?}");
    assert_untouched(&outside.join("deeper/sub"), &names);
}

/// Runs a restore of `many_files` into `roots/t` and calls `swap(target)` once, when the first
/// file of `sub/` is about to be opened for writing.
fn restore_with_swap(
    swap: fn(&Path, &Path),
) -> (Fixture, rsvault_engine::Result<RestoreOutcome>, Vec<String>) {
    let fx = Fixture::new();
    let (src, names) = many_files(&fx, 60);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let roots = fx.path("roots");
    let target = roots.join("t");
    fs::create_dir_all(&target).unwrap();
    let outside = fx.path("outside");
    victims(&outside, &names);
    let fired = Arc::new(AtomicBool::new(false));
    {
        let target = target.clone();
        let outside = outside.clone();
        let fired = fired.clone();
        rsvault_engine::failpoint::add(
            "restore.open",
            Arc::new(move |p: &str| {
                if p.starts_with(&*target.to_string_lossy()) && !fired.swap(true, Ordering::SeqCst)
                {
                    swap(&target, &outside);
                }
            }),
        );
    }
    let res = scoped(
        &fx,
        &spec(&snap, &target, Conflict::Overwrite),
        &RestoreScope {
            root: Some(roots),
            original_location: false,
        },
    );
    assert!(fired.load(Ordering::SeqCst), "the swap never ran");
    assert_untouched(&outside, &names);
    (fx, res, names)
}

#[test]
fn directory_swapped_for_a_symlink_mid_restore_writes_nothing_outside() {
    let (_fx, res, _) = restore_with_swap(|target, outside| {
        fs::rename(target.join("sub"), target.join("sub.moved")).unwrap();
        symlink(outside, target.join("sub")).unwrap();
    });
    // Restores write from several threads: one may meet the symlink, or the moment between the
    // rename and the symlink (no such directory). Either way the job fails and nothing outside
    // was written (checked in restore_with_swap).
    assert!(
        matches!(&res, Err(Error::Repository(m))
            if m.contains("symbolic link") || m.contains("No such file or directory")),
        "{res:?}"
    );
}

#[test]
fn target_swapped_for_a_symlink_mid_restore_writes_nothing_outside_and_fails() {
    let (fx, res, names) = restore_with_swap(|target, outside| {
        fs::rename(target, target.with_extension("moved")).unwrap();
        symlink(outside, target).unwrap();
    });
    assert!(
        matches!(&res, Err(Error::Repository(m)) if m.contains("moved or replaced")),
        "{res:?}"
    );
    // The files went to the directory opened at the start, now at its new name.
    let moved = fx.path("roots/t.moved/sub");
    for n in &names {
        assert!(moved.join(n).is_file(), "{n} missing in the moved target");
    }
}

#[test]
fn alternate_location_never_recreates_setuid_bits_or_device_nodes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP alternate_location_never_recreates_setuid: needs root for mknod");
        return;
    }
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("suid"), b"x").unwrap();
    fs::set_permissions(src.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(src.join("sgid"), b"y").unwrap();
    fs::set_permissions(src.join("sgid"), fs::Permissions::from_mode(0o2711)).unwrap();
    fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o2775)).unwrap();
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    // A copy of /dev/null (1,3) and of a disk (8,0).
    mknod(
        &src.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &src.join("sda"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(8, 0),
    )
    .unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;

    let alt = fx.path("roots/alt");
    let ctx = TestCtx::default();
    let out = rsvault_engine::restore_scoped(
        &fx.repo,
        &spec(&snap, &alt, Conflict::Fail),
        &RestoreScope {
            root: Some(fx.path("roots")),
            original_location: false,
        },
        &ctx,
    )
    .unwrap();
    let mode = |p: &str| fs::symlink_metadata(alt.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o711);
    assert_eq!(mode("d"), 0o775);
    for p in ["null", "sda", "fifo"] {
        assert!(
            fs::symlink_metadata(alt.join(p)).is_err(),
            "{p} was recreated"
        );
    }
    let mut warned: Vec<&str> = out.warnings.iter().map(|w| w.path.as_str()).collect();
    warned.sort();
    assert_eq!(
        warned,
        ["d", "fifo", "null", "sda", "sgid", "suid"],
        "{:?}",
        out.warnings
    );
    // The job's context got them too (they end as CompletedWithWarnings).
    assert_eq!(
        ctx.warnings().len(),
        out.warnings.len(),
        "{:?}",
        ctx.warnings()
    );

    // An original-location restore keeps them.
    let orig = fx.path("orig");
    let out = scoped(
        &fx,
        &spec(&snap, &orig, Conflict::Fail),
        &RestoreScope {
            root: None,
            original_location: true,
        },
    )
    .unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let m = |p: &str| fs::symlink_metadata(orig.join(p)).unwrap();
    assert_eq!(m("suid").mode() & 0o7777, 0o4755);
    assert_eq!(m("sgid").mode() & 0o7777, 0o2711);
    assert!(m("null").file_type().is_char_device());
    assert_eq!(m("null").rdev(), makedev(1, 3));
    assert!(m("sda").file_type().is_block_device());
    assert!(m("fifo").file_type().is_fifo());
}

#[test]
fn overwrite_never_writes_through_the_original_inode() {
    // The hard-link trick: a file in the target that is also linked from outside. Truncating
    // and rewriting it in place would write outside the root.
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"restored").unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    fs::create_dir_all(&target).unwrap();
    fs::write(fx.path("outside.txt"), b"victim").unwrap();
    fs::hard_link(fx.path("outside.txt"), target.join("a.txt")).unwrap();
    rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &target, Conflict::Overwrite),
        &TestCtx::default(),
    )
    .unwrap();
    assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"restored");
    assert_eq!(fs::read(fx.path("outside.txt")).unwrap(), b"victim");
    assert!(temp_files(&target).is_empty(), "{:?}", temp_files(&target));
}

#[test]
fn disk_full_during_an_overwrite_restore_leaves_the_original_intact() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), random_bytes(3 << 20, 9)).unwrap();
    fs::write(src.join("small.txt"), b"new small").unwrap();
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
        eprintln!("SKIP disk_full_during_an_overwrite_restore: cannot mount a tmpfs here");
        return;
    }
    let original = random_bytes(300 << 10, 77);
    fs::write(mnt.join("big.bin"), &original).unwrap();
    fs::write(mnt.join("small.txt"), b"old small").unwrap();
    let res = rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &mnt, Conflict::Overwrite),
        &TestCtx::default(),
    );
    let big = fs::read(mnt.join("big.bin"));
    let left = temp_files(&mnt);
    let free = nix::sys::statvfs::statvfs(&mnt).map(|s| s.blocks_free());
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert!(matches!(res, Err(Error::DiskFull(_))), "{res:?}");
    assert!(big.unwrap() == original, "the original was changed");
    assert!(left.is_empty(), "temporary files left: {left:?}");
    assert!(free.unwrap() > 0, "the failed restore still fills the disk");
}

#[test]
fn symlink_swapped_in_after_the_backup_walk_is_a_warning_not_a_read() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"public a").unwrap();
    fs::write(src.join("b.txt"), b"public b").unwrap();
    fs::write(src.join("c.txt"), b"public c").unwrap();
    fs::write(fx.path("secret"), b"SECRET").unwrap();
    fs::write(fx.path("other"), b"OTHER FILE").unwrap();
    // Files are read in parallel, in no fixed order: the first file about to be opened (under a
    // lock that holds every other opener back until the swap is done) stays as it was, and the
    // other two are swapped: one for a symlink to a file the backup must not read, one by
    // renaming another regular file over it.
    let swapped: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    {
        let src = src.clone();
        let secret = fx.path("secret");
        let other = fx.path("other");
        let swapped = swapped.clone();
        rsvault_engine::failpoint::add(
            "backup.open",
            Arc::new(move |p: &str| {
                let mut done = swapped.lock().unwrap();
                let Some(first) = Path::new(p).strip_prefix(&src).ok() else {
                    return;
                };
                if !done.is_empty() {
                    return;
                }
                let first = first.to_string_lossy().to_string();
                let rest: Vec<String> = ["a.txt", "b.txt", "c.txt"]
                    .iter()
                    .filter(|n| **n != first)
                    .map(|n| n.to_string())
                    .collect();
                fs::remove_file(src.join(&rest[0])).unwrap();
                symlink(&secret, src.join(&rest[0])).unwrap();
                fs::rename(&other, src.join(&rest[1])).unwrap();
                *done = rest;
            }),
        );
    }
    let ctx = TestCtx::default();
    let out = rsvault_engine::backup(
        &fx.repo,
        &rsvault_engine::Source::Directory { path: src.clone() },
        &Default::default(),
        &ctx,
    )
    .unwrap();
    let mut warned: Vec<&str> = out.warnings.iter().map(|w| w.path.as_str()).collect();
    warned.sort();
    warned.dedup();
    let swapped = swapped.lock().unwrap().clone();
    // The walk streams next to the readers: a swapped file the walk had not reached yet is
    // simply backed up as what it now is (the symlink as a symlink). One it had reached must be
    // a warning. Either way a warning names only a swapped file, and nothing swapped in is read.
    assert!(
        warned.iter().all(|w| swapped.iter().any(|s| s == w)),
        "{:?}",
        out.warnings
    );
    assert!(
        out.warnings
            .iter()
            .all(|w| w.reason.contains("replaced after the directory walk")),
        "{:?}",
        out.warnings
    );
    let t = fx.path("t");
    fx.restore(&out.snapshot_id, &[], &t);
    let kept = ["a.txt", "b.txt", "c.txt"]
        .into_iter()
        .find(|n| !swapped.iter().any(|s| s == n))
        .unwrap();
    assert_eq!(
        fs::read(t.join(kept)).unwrap(),
        format!("public {}", &kept[..1]).as_bytes()
    );
    for p in walk(&t) {
        // (`fs::read` of a restored symlink would follow it to wherever it points now.)
        if fs::symlink_metadata(&p).unwrap().file_type().is_symlink() {
            continue;
        }
        let data = fs::read(&p).unwrap();
        assert!(
            !data.windows(6).any(|w| w == b"SECRET"),
            "{} holds the file a symlink pointed to",
            p.display()
        );
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if data.starts_with(b"OTHER") {
            assert!(
                !warned.contains(&name.as_str()),
                "{name} was warned about and still read"
            );
        }
    }
}

#[test]
fn overwrite_replaces_types_in_the_way_and_leaves_no_temporary_files() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("was_file")).unwrap();
    fs::write(src.join("was_file/x"), b"x").unwrap();
    fs::write(src.join("was_dir"), b"now a file").unwrap();
    symlink("was_dir", src.join("link")).unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    fs::create_dir_all(target.join("was_dir/deep")).unwrap();
    fs::write(target.join("was_dir/deep/old"), b"old").unwrap();
    fs::write(target.join("was_file"), b"old file").unwrap();
    fs::write(target.join("link"), b"old regular file").unwrap();
    let res = rsvault_engine::restore_scoped(
        &fx.repo,
        &spec(&snap, &target, Conflict::Overwrite),
        &RestoreScope {
            root: None,
            original_location: true,
        },
        &TestCtx::default(),
    )
    .unwrap();
    assert!(res.warnings.is_empty(), "{:?}", res.warnings);
    assert_same_tree(&src, &target);
    assert!(temp_files(&target).is_empty());
}

#[test]
fn a_scope_without_fields_is_the_default_scope() {
    let line = r#"{"op":"restore_scoped","repo":{"path":"/r","password":"p"},"spec":{"snapshot_id":"s","paths":[],"target":"/t","conflict":"fail"},"scope":{}}"#;
    let req: Request = serde_json::from_str(line).unwrap();
    assert!(
        matches!(req, Request::RestoreScoped { scope, .. } if scope == RestoreScope::default())
    );
}

/// kill -9 of the engine worker at many moments of an `Overwrite` restore of a large, modified
/// file: the file is always either its old content or the restored one, byte for byte, never
/// zero-filled or cut short (issue #9 item 4).
#[test]
fn kill_9_during_an_overwrite_restore_leaves_each_file_old_or_new() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    let restored = random_bytes(48 << 20, 21);
    fs::write(src.join("big.bin"), &restored).unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let target = fx.path("t");
    fs::create_dir_all(&target).unwrap();
    let modified = random_bytes(40 << 20, 22);
    let (mut old, mut new) = (0, 0);
    // Fixed moments, then longer ones until a kill comes after the rename too (a loaded machine
    // restores slowly).
    let mut delays = vec![0u64, 2, 5, 10, 20, 30, 50, 80, 120, 200, 300, 500, 800];
    let mut i = 0;
    while i < delays.len() {
        let delay_ms = delays[i];
        i += 1;
        fs::write(target.join("big.bin"), &modified).unwrap();
        let req = Request::Restore {
            repo: fx.repo.clone(),
            spec: spec(&snap, &target, Conflict::Overwrite),
        };
        let mut child = Command::new(bin())
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(&req).unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        drop(stdin);
        let now = fs::read(target.join("big.bin")).unwrap();
        if now == modified {
            old += 1;
        } else if now == restored {
            new += 1;
        } else {
            panic!(
                "after a kill at {delay_ms} ms the file is neither old nor new ({} bytes)",
                now.len()
            );
        }
        if i == delays.len() && new == 0 && delay_ms < 20_000 {
            delays.push(delay_ms * 2);
        }
    }
    // The kills landed both before and after the rename (else the test proved nothing).
    assert!(old > 0 && new > 0, "old {old}, new {new}");

    // The temporary files killed workers leave do not linger (issue #9): the next restore into
    // the directory removes them. Make sure there is one, from a worker killed while it had one.
    let mut tries = 0;
    while temp_files(&target).is_empty() {
        tries += 1;
        assert!(tries <= 20, "no killed worker left a temporary file");
        fs::write(target.join("big.bin"), &modified).unwrap();
        let req = Request::Restore {
            repo: fx.repo.clone(),
            spec: spec(&snap, &target, Conflict::Overwrite),
        };
        let mut child = Command::new(bin())
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(&req).unwrap()).unwrap();
        while temp_files(&target).is_empty() && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        drop(stdin);
    }
    let left = temp_files(&target);
    eprintln!("temporary files left by the kills: {left:?}");
    let again = rsvault_engine::restore(
        &fx.repo,
        &spec(&snap, &target, Conflict::Overwrite),
        &TestCtx::default(),
    )
    .unwrap();
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(fs::read(target.join("big.bin")).unwrap(), restored);
    assert!(
        temp_files(&target).is_empty(),
        "left after a complete restore: {:?} (before it: {left:?})",
        temp_files(&target)
    );
}

/// What a restore removes before it writes into a directory: names of the exact temporary
/// pattern whose process is gone, as names (a symlink is removed, never followed), and nothing
/// else: not a live process's, not a directory, not a near miss, not in a directory the
/// restore does not write into (issue #9).
#[test]
fn stale_temporary_files_of_dead_restores_are_removed_and_nothing_else() {
    use std::process::Command;
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/x.txt"), b"x").unwrap();
    fs::write(src.join("top.txt"), b"top").unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;

    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let mut alive = Command::new("sleep").arg("600").spawn().unwrap();
    let live = alive.id();
    let t = fx.path("t");
    let outside = fx.path("outside");
    fs::create_dir_all(t.join("d")).unwrap();
    fs::create_dir_all(t.join("other")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let removed = [
        format!("d/.rsvault-restore-{dead}-0-0.tmp"),
        format!(".rsvault-restore-{dead}-12-3.tmp"),
        format!(".rsvault-restore-{dead}-4-0.tmp"),
    ];
    fs::write(t.join(&removed[0]), b"partial").unwrap();
    fs::write(t.join(&removed[1]), b"partial").unwrap();
    symlink(outside.join("secret"), t.join(&removed[2])).unwrap();
    let kept_files = [
        format!(".rsvault-restore-{live}-0-0.tmp"),
        format!(".rsvault-restore-{dead}-0-0.tmp.keep"),
        format!(".rsvault-restore-{dead}-x-0.tmp"),
        format!(".rsvault-restore-{dead}-0.tmp"),
        format!("rsvault-restore-{dead}-0-0.tmp"),
        format!("other/.rsvault-restore-{dead}-0-0.tmp"),
    ];
    for k in &kept_files {
        fs::write(t.join(k), b"keep").unwrap();
    }
    let kept_dir = format!(".rsvault-restore-{dead}-9-9.tmp");
    fs::create_dir_all(t.join(&kept_dir)).unwrap();
    fs::write(t.join(&kept_dir).join("inside"), b"keep").unwrap();

    let res = fx.restore(&snap, &[], &t);
    let _ = alive.kill();
    let _ = alive.wait();
    assert!(res.warnings.is_empty(), "{:?}", res.warnings);
    let restored = snapshot_of(&src)
        .into_keys()
        .map(|k| k.to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    for p in &restored {
        assert!(t.join(p).symlink_metadata().is_ok(), "{p} not restored");
    }
    for r in &removed {
        assert!(t.join(r).symlink_metadata().is_err(), "{r} was not removed");
    }
    for k in &kept_files {
        assert_eq!(fs::read(t.join(k)).unwrap(), b"keep", "{k}");
    }
    assert_eq!(fs::read(t.join(&kept_dir).join("inside")).unwrap(), b"keep");
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");
}

/// Written files are renamed over their originals in batches, each only after one `syncfs` made
/// the batch durable: whenever a batch is about to settle, every name still holds either its
/// original or its complete replacement (never nothing, never a partial file), and the earlier
/// batches are all in place.
#[test]
fn overwrite_renames_files_in_batches_only_after_they_are_written() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    let n = 2_500; // more than one batch of 2 048
    let name = |i: usize| format!("f{i:04}");
    for i in 0..n {
        fs::write(src.join(name(i)), format!("new {i}")).unwrap();
    }
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let roots = fx.path("roots");
    let target = roots.join("t");
    fs::create_dir_all(&target).unwrap();
    for i in 0..n {
        fs::write(target.join(name(i)), b"old").unwrap();
    }
    // (originals, replacements) found at each settle
    let seen: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    {
        let (target, seen) = (target.clone(), seen.clone());
        rsvault_engine::failpoint::add(
            "restore.settle",
            Arc::new(move |p: &str| {
                if p != target.to_string_lossy() {
                    return;
                }
                let (mut old, mut new) = (0, 0);
                for i in 0..n {
                    match fs::read(target.join(name(i))) {
                        Ok(b) if b == b"old" => old += 1,
                        Ok(b) if b == format!("new {i}").as_bytes() => new += 1,
                        other => panic!("{}: {other:?} at a settle", name(i)),
                    }
                }
                seen.lock().unwrap().push((old, new));
            }),
        );
    }
    let out = scoped(
        &fx,
        &spec(&snap, &target, Conflict::Overwrite),
        &RestoreScope {
            root: Some(roots),
            original_location: false,
        },
    )
    .unwrap();
    assert_eq!(out.files as usize, n, "{out:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0],
        (n, 0),
        "nothing is renamed before the first batch is synced"
    );
    assert_eq!(
        seen[1],
        (n - 2048, 2048),
        "the first batch, and only it, is in place"
    );
    for i in 0..n {
        assert_eq!(
            fs::read(target.join(name(i))).unwrap(),
            format!("new {i}").as_bytes()
        );
    }
    let left: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|f| f.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// A pack the repository refuses in the middle of a backup fails the backup: it must not leave
/// the file whose bytes were refused out of a snapshot that otherwise looks complete.
#[test]
fn a_pack_write_failing_mid_backup_fails_it_and_commits_no_snapshot() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    // More than one data pack (32 MiB) of new data, so a pack is written while files are read.
    fs::write(src.join("a.bin"), random_bytes(48 << 20, 21)).unwrap();
    fs::write(src.join("b.txt"), b"small").unwrap();
    let data = fx.repo.path.join("data");
    let writes = Arc::new(Mutex::new(0));
    {
        let (data, writes) = (data.clone(), writes.clone());
        let repo = fx.repo.path.to_string_lossy().into_owned();
        rsvault_engine::failpoint::add(
            "backup.pack",
            Arc::new(move |p: &str| {
                if !p.contains(&repo) {
                    return;
                }
                let mut n = writes.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    // Even root cannot write a pack below a plain file.
                    fs::rename(&data, data.with_extension("moved")).unwrap();
                    fs::write(&data, b"not a directory").unwrap();
                } else if data.is_file() {
                    // The repository recovers for any later pack: a backup that went on after
                    // the first failure would commit a snapshot without a.bin.
                    fs::remove_file(&data).unwrap();
                    fs::rename(data.with_extension("moved"), &data).unwrap();
                }
            }),
        );
    }
    let res = rsvault_engine::backup(
        &fx.repo,
        &rsvault_engine::Source::Directory { path: src.clone() },
        &rsvault_engine::BackupOptions::default(),
        &TestCtx::default(),
    );
    assert!(*writes.lock().unwrap() >= 1, "no pack was written");
    assert!(matches!(&res, Err(Error::Repository(_))), "{res:?}");
    let snapshots = fs::read_dir(fx.repo.path.join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 0, "a snapshot was written");
}
