//! One suite, three backends (issue #11): every test here runs against local disk, S3
//! (`moto_server`) and Azure Blob (Azurite), each emulator started by the test process.

use std::fs;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rsvault_engine::{BackupOptions, Error, RepoConfig, Source};

use crate::common::*;
use crate::emulator::{Emulator, Kind, Proxy};

/// One emulator per kind for the whole test process (tests use their own prefixes).
pub(crate) fn shared(kind: Kind) -> Option<&'static Emulator> {
    static S3: OnceLock<Option<Emulator>> = OnceLock::new();
    static AZ: OnceLock<Option<Emulator>> = OnceLock::new();
    match kind {
        Kind::S3 => S3.get_or_init(|| Emulator::start(Kind::S3)).as_ref(),
        Kind::Azblob => AZ.get_or_init(|| Emulator::start(Kind::Azblob)).as_ref(),
    }
}

/// A fixture whose repository is on `kind`'s emulator (`None`: local disk); `None` when the
/// emulator is not installed (see `emulator::binary`).
pub(crate) fn fixture(kind: Option<Kind>) -> Option<Fixture> {
    let Some(kind) = kind else {
        return Some(Fixture::new());
    };
    let emu = shared(kind)?;
    Some(on_store(emu, &crate::emulator::unique_prefix("repo")))
}

fn on_store(emu: &Emulator, prefix: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = RepoConfig {
        path: format!("base/{prefix}").into(),
        password: PASSWORD.into(),
        master_key: None,
        store: Some(emu.store()),
    };
    rsvault_engine::init(&repo).unwrap();
    Fixture { dir, repo }
}

/// Runs each named `fn(Fixture)` of the calling module (which must have `fixture` in scope) as
/// a test per backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test] fn $name() { if let Some(fx) = super::fixture(None) { super::$name(fx) } })*
        }
        mod s3 {
            $(#[test] fn $name() {
                if let Some(fx) = super::fixture(Some(crate::emulator::Kind::S3)) { super::$name(fx) }
            })*
        }
        mod azblob {
            $(#[test] fn $name() {
                if let Some(fx) = super::fixture(Some(crate::emulator::Kind::Azblob)) { super::$name(fx) }
            })*
        }
    };
}

pub(crate) use on_every_backend;

on_every_backend!(
    roundtrip_incremental_forget_and_prune,
    disk_images_round_trip,
    cancelled_backup_writes_no_snapshot,
    keys_and_master_key_open_the_repository,
    existence_size_and_destroy,
    concurrent_initialisations_agree_on_one_repository,
);

fn tree(fx: &Fixture) -> std::path::PathBuf {
    let src = fx.path("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::write(src.join("dir/a.txt"), b"hello object store").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("dir/sub/big.bin"), random_bytes(3 << 20, 7)).unwrap();
    std::os::unix::fs::symlink("dir/a.txt", src.join("link")).unwrap();
    src
}

fn roundtrip_incremental_forget_and_prune(fx: Fixture) {
    let src = tree(&fx);
    let first = fx.backup_dir(&src, None);
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let t1 = fx.path("t1");
    fx.restore(&first.snapshot_id, &[], &t1);
    assert_same_tree(&src, &t1);

    // One small change: the incremental backup adds far less than the tree.
    fs::write(src.join("dir/a.txt"), b"changed").unwrap();
    fs::write(src.join("new.bin"), random_bytes(100_000, 9)).unwrap();
    let second = fx.backup_dir(&src, Some(&first.snapshot_id));
    assert!(
        second.bytes_added < 1 << 20,
        "added {} bytes",
        second.bytes_added
    );
    let t2 = fx.path("t2");
    fx.restore(&second.snapshot_id, &[], &t2);
    assert_same_tree(&src, &t2);
    // Item-level restore.
    let t3 = fx.path("t3");
    fx.restore(&second.snapshot_id, &["dir/sub/big.bin"], &t3);
    assert_eq!(
        fs::read(t3.join("dir/sub/big.bin")).unwrap(),
        random_bytes(3 << 20, 7)
    );

    let snaps = rsvault_engine::snapshots(&fx.repo).unwrap();
    assert_eq!(snaps.len(), 2);
    rsvault_engine::forget(&fx.repo, std::slice::from_ref(&first.snapshot_id)).unwrap();
    rsvault_engine::prune(&fx.repo).unwrap();
    let report = rsvault_engine::verify(&fx.repo, Some(100)).unwrap();
    assert!(report.ok, "{report:?}");
    let t4 = fx.path("t4");
    fx.restore(&second.snapshot_id, &[], &t4);
    assert_same_tree(&src, &t4);
}

fn disk_images_round_trip(fx: Fixture) {
    let img = fx.path("disk0.img");
    let mut bytes = vec![0u8; 8 << 20];
    bytes[1 << 20..(1 << 20) + 500_000].copy_from_slice(&random_bytes(500_000, 4));
    fs::write(&img, &bytes).unwrap();
    let out = rsvault_engine::backup(
        &fx.repo,
        &Source::Disks {
            paths: vec![img.clone()],
        },
        &BackupOptions::default(),
        &TestCtx::default(),
    )
    .unwrap();
    let t = fx.path("t");
    fx.restore(&out.snapshot_id, &[], &t);
    assert_eq!(fs::read(t.join("disk0.img")).unwrap(), bytes);
}

fn cancelled_backup_writes_no_snapshot(fx: Fixture) {
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("f{i}")), random_bytes(4 << 20, i + 30)).unwrap();
    }
    let ctx = TestCtx::default();
    ctx.cancel_after_bytes
        .store(3 << 20, std::sync::atomic::Ordering::SeqCst);
    let res = rsvault_engine::backup(
        &fx.repo,
        &Source::Directory { path: src.clone() },
        &BackupOptions {
            bytes_per_second: Some(8 << 20),
            ..BackupOptions::default()
        },
        &ctx,
    );
    assert!(
        matches!(res, Err(Error::Cancelled)),
        "{:?}",
        res.map(|o| o.snapshot_id)
    );
    assert!(rsvault_engine::snapshots(&fx.repo).unwrap().is_empty());
    assert!(rsvault_engine::verify(&fx.repo, None).unwrap().ok);
    let out = fx.backup_dir(&src, None);
    rsvault_engine::prune(&fx.repo).unwrap();
    let t = fx.path("t");
    fx.restore(&out.snapshot_id, &[], &t);
    assert_same_tree(&src, &t);
}

fn keys_and_master_key_open_the_repository(fx: Fixture) {
    let key = rsvault_engine::master_key(&fx.repo).unwrap();
    let new_id = rsvault_engine::add_key(&fx.repo, "second password").unwrap();
    assert_eq!(rsvault_engine::list_keys(&fx.repo).unwrap().len(), 2);
    let second = RepoConfig {
        password: "second password".into(),
        ..fx.repo.clone()
    };
    assert_eq!(rsvault_engine::key_id(&second).unwrap(), new_id);
    let old_id = rsvault_engine::key_id(&fx.repo).unwrap();
    rsvault_engine::remove_key(&second, &old_id).unwrap();
    assert!(matches!(
        rsvault_engine::snapshots(&fx.repo),
        Err(Error::WrongKey(_))
    ));
    // The master key still opens it, without any password.
    let by_key = RepoConfig {
        password: String::new(),
        master_key: Some(key),
        ..fx.repo.clone()
    };
    assert!(rsvault_engine::snapshots(&by_key).unwrap().is_empty());
}

fn existence_size_and_destroy(fx: Fixture) {
    assert!(rsvault_engine::exists(&fx.repo).unwrap());
    let empty = rsvault_engine::size(&fx.repo).unwrap();
    assert!(empty > 0);
    let src = tree(&fx);
    fx.backup_dir(&src, None);
    assert!(rsvault_engine::size(&fx.repo).unwrap() > empty + (3 << 20) / 2);
    // A repository beside it is untouched by destroying this one.
    let beside = RepoConfig {
        path: format!("{}-beside", fx.repo.path.display()).into(),
        ..fx.repo.clone()
    };
    assert!(!rsvault_engine::exists(&beside).unwrap());
    rsvault_engine::init(&beside).unwrap();
    rsvault_engine::destroy(&fx.repo).unwrap();
    assert!(!rsvault_engine::exists(&fx.repo).unwrap());
    assert_eq!(rsvault_engine::size(&fx.repo).unwrap(), 0);
    assert!(matches!(
        rsvault_engine::snapshots(&fx.repo),
        Err(Error::Repository(m)) if m.contains("no repository")
    ));
    assert!(rsvault_engine::exists(&beside).unwrap());
    rsvault_engine::destroy(&fx.repo).unwrap();
}

fn concurrent_initialisations_agree_on_one_repository(fx: Fixture) {
    let repo = RepoConfig {
        path: format!("{}-race", fx.repo.path.display()).into(),
        ..fx.repo.clone()
    };
    let keys: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| rsvault_engine::open_or_init_master_key(&repo)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let keys: Vec<_> = keys.into_iter().map(|k| k.unwrap()).collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
    // Exactly one key file: the losers removed theirs.
    assert_eq!(rsvault_engine::list_keys(&repo).unwrap().len(), 1);
}

#[test]
fn restic_lists_and_restores_an_s3_repository() {
    if Command::new("restic").arg("version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "restic is missing in CI: .ci/run installs it"
        );
        eprintln!("SKIP restic on S3: restic is not installed");
        return;
    }
    let Some(fx) = fixture(Some(Kind::S3)) else {
        return;
    };
    let src = tree(&fx);
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let pw = fx.path("pw");
    fs::write(&pw, PASSWORD).unwrap();
    let r = rsvault_engine::restic_repository(&fx.repo);
    assert!(r.starts_with("s3:http://127.0.0.1:"), "{r}");
    let restic = |args: &[&str]| {
        let out = Command::new("restic")
            .arg("-r")
            .arg(&r)
            .arg("--password-file")
            .arg(&pw)
            .args(args)
            .arg("--no-cache")
            .env("AWS_ACCESS_KEY_ID", crate::emulator::S3_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", crate::emulator::S3_SECRET)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restic {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let v: serde_json::Value = serde_json::from_slice(&restic(&["snapshots", "--json"])).unwrap();
    assert_eq!(v[0]["id"], snap);
    let t = fx.path("t");
    restic(&["restore", &snap, "--target", t.to_str().unwrap()]);
    assert_same_tree(&src, &t);
    restic(&["check", "--read-data"]);
}

fn eight_files(fx: &Fixture) -> std::path::PathBuf {
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        // Even seeds: xorshift uses `seed | 1`, so neighbouring seeds would repeat a file.
        fs::write(
            src.join(format!("f{i}")),
            random_bytes(6 << 20, 100 + 2 * i),
        )
        .unwrap();
    }
    src
}

/// Starts a throttled backup of `src` in a thread; returns once it has read `bytes`.
fn backup_until(
    fx: &Fixture,
    src: &std::path::Path,
    bytes: u64,
) -> std::thread::JoinHandle<rsvault_engine::Result<rsvault_engine::BackupOutcome>> {
    let ctx = Arc::new(TestCtx::default());
    let (repo, source) = (fx.repo.clone(), src.to_path_buf());
    let c = ctx.clone();
    let backup = std::thread::spawn(move || {
        rsvault_engine::backup(
            &repo,
            &Source::Directory { path: source },
            &BackupOptions {
                bytes_per_second: Some(8 << 20),
                ..BackupOptions::default()
            },
            c.as_ref(),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctx
        .progress
        .lock()
        .unwrap()
        .last()
        .is_none_or(|p| p.bytes_done < bytes)
    {
        assert!(Instant::now() < deadline, "the backup made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    backup
}

fn assert_fails_in_bound(
    kind: Kind,
    backup: std::thread::JoinHandle<rsvault_engine::Result<rsvault_engine::BackupOutcome>>,
) {
    let since = Instant::now();
    let res = backup.join().unwrap();
    let took = since.elapsed();
    let bound = rsvault_engine::objstore::worst_case_failure();
    match res {
        Err(Error::Repository(m)) => assert!(
            m.contains("Writing") || m.contains("Reading") || m.contains("Listing"),
            "the error does not say what failed: {m}"
        ),
        other => panic!("{:?}", other.map(|o| o.snapshot_id)),
    }
    assert!(took < bound, "failed after {took:?}, bound {bound:?}");
    eprintln!("{kind:?}: the backup failed {took:?} after the store went away (bound {bound:?})");
}

/// The emulator process dies in the middle of a backup: the backup fails with an error that
/// says what failed, within the bound the retries promise.
#[test]
fn s3_killed_mid_backup_fails_the_backup_in_bounded_time() {
    let Some(emu) = Emulator::start(Kind::S3) else {
        return;
    };
    let fx = on_store(&emu, "killed");
    let src = eight_files(&fx);
    let backup = backup_until(&fx, &src, 12 << 20);
    emu.kill9();
    assert_fails_in_bound(Kind::S3, backup);
}

/// The store becomes unreachable in the middle of a backup (every connection dropped, new ones
/// refused): the backup fails in bounded time; once the store is back the next backup succeeds
/// and prune removes what the failed one uploaded.
fn outage_mid_backup_then_recovery(kind: Kind) {
    let Some(emu) = Emulator::start(kind) else {
        return;
    };
    let proxy = Proxy::start(emu.port);
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture {
        dir,
        repo: RepoConfig {
            path: "base/outage".into(),
            password: PASSWORD.into(),
            master_key: None,
            store: Some(proxy.store(&emu)),
        },
    };
    rsvault_engine::init(&fx.repo).unwrap();
    let src = eight_files(&fx);
    // Data packs are up to 32 MiB: cut once one of them is in the store (its upload runs
    // alongside the reads, so bytes read alone do not say it has finished).
    let backup = backup_until(&fx, &src, 32 << 20);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rsvault_engine::size(&fx.repo).unwrap() < 8 << 20 {
        assert!(Instant::now() < deadline, "no pack reached the store");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.cut();
    assert_fails_in_bound(kind, backup);
    proxy.restore();
    let orphans = rsvault_engine::size(&fx.repo).unwrap();
    let out = fx.backup_dir(&src, None);
    let with_orphans = rsvault_engine::size(&fx.repo).unwrap();
    rsvault_engine::prune(&fx.repo).unwrap();
    let after = rsvault_engine::size(&fx.repo).unwrap();
    let report = rsvault_engine::verify(&fx.repo, Some(100)).unwrap();
    assert!(report.ok, "{report:?}");
    // 48 MiB of random bytes: after prune the repository holds them once.
    let data = 48u64 << 20;
    eprintln!("{kind:?}: left by the failed backup {orphans} B; after the next one {with_orphans} B; after prune {after} B");
    // What prune removes: the failed backup's packs (on Azure Blob a pack cut off mid-upload
    // stays uncommitted blocks, invisible until the next backup writes the same pack) and
    // anything else no snapshot references.
    assert!(
        with_orphans > after + (8 << 20),
        "prune removed too little: {with_orphans} -> {after}"
    );
    assert!(
        after > data && after < data + (1 << 20),
        "prune left {after} bytes"
    );
    let t = fx.path("t");
    fx.restore(&out.snapshot_id, &[], &t);
    assert_same_tree(&src, &t);
}

#[test]
fn s3_outage_mid_backup_fails_it_and_the_next_backup_and_prune_recover() {
    outage_mid_backup_then_recovery(Kind::S3);
}

#[test]
fn azblob_outage_mid_backup_fails_it_and_the_next_backup_and_prune_recover() {
    outage_mid_backup_then_recovery(Kind::Azblob);
}

/// Throttling answers (503) are retried: the backup completes.
fn throttled_requests_are_retried(kind: Kind) {
    let Some(emu) = shared(kind) else {
        return;
    };
    let proxy = Proxy::start(emu.port);
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture {
        dir,
        repo: RepoConfig {
            path: crate::emulator::unique_prefix("throttled").into(),
            password: PASSWORD.into(),
            master_key: None,
            store: Some(proxy.store(emu)),
        },
    };
    rsvault_engine::init(&fx.repo).unwrap();
    let src = tree(&fx);
    proxy.fail_next(3);
    let out = fx.backup_dir(&src, None);
    assert_eq!(proxy.failed.load(std::sync::atomic::Ordering::SeqCst), 3);
    proxy.fail_next(2);
    let t = fx.path("t");
    fx.restore(&out.snapshot_id, &[], &t);
    assert_same_tree(&src, &t);
    assert_eq!(proxy.failed.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[test]
fn s3_throttling_is_retried() {
    throttled_requests_are_retried(Kind::S3);
}

#[test]
fn azblob_throttling_is_retried() {
    throttled_requests_are_retried(Kind::Azblob);
}
