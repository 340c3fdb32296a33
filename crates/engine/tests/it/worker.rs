use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rsvault_engine::worker::{run_in_worker, Request, Response};
use rsvault_engine::{BackupOptions, Error, RestoreSpec, Source};

use crate::common::*;

fn args() -> Vec<String> {
    vec!["worker".into()]
}

#[test]
fn worker_runs_a_backup_and_restore_and_forwards_progress() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(2 << 20, 1)).unwrap();
    let ctx = TestCtx::default();
    let req = Request::Backup {
        repo: fx.repo.clone(),
        source: Source::Directory { path: src.clone() },
        options: BackupOptions::default(),
    };
    let snap = match run_in_worker(&bin(), &args(), &req, &ctx).unwrap() {
        Response::Backup(o) => o.snapshot_id,
        other => panic!("{other:?}"),
    };
    assert!(!ctx.progress.lock().unwrap().is_empty());
    let t = fx.path("t");
    let req = Request::Restore {
        repo: fx.repo.clone(),
        spec: RestoreSpec {
            snapshot_id: snap,
            paths: vec![],
            target: t.clone(),
            conflict: Default::default(),
        },
    };
    assert!(matches!(
        run_in_worker(&bin(), &args(), &req, &ctx).unwrap(),
        Response::Restore(_)
    ));
    assert_same_tree(&src, &t);
    let mut bad = fx.repo.clone();
    bad.password = "nope".into();
    let err = run_in_worker(&bin(), &args(), &Request::Snapshots { repo: bad }, &ctx);
    assert!(matches!(err, Err(Error::WrongKey(_))), "{err:?}");
}

#[test]
fn worker_cancel_stops_the_child_and_writes_no_snapshot() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(8 << 20, 1)).unwrap();
    let ctx = TestCtx::default();
    ctx.cancel_after_bytes
        .store(1 << 20, std::sync::atomic::Ordering::SeqCst);
    let req = Request::Backup {
        repo: fx.repo.clone(),
        source: Source::Directory { path: src },
        options: BackupOptions {
            bytes_per_second: Some(2 << 20),
            ..BackupOptions::default()
        },
    };
    let res = run_in_worker(&bin(), &args(), &req, &ctx);
    let at = ctx.cancelled_at.lock().unwrap().unwrap();
    assert!(matches!(res, Err(Error::Cancelled)), "{res:?}");
    assert!(
        at.elapsed() < Duration::from_millis(1500),
        "{:?}",
        at.elapsed()
    );
    assert!(rsvault_engine::snapshots(&fx.repo).unwrap().is_empty());
}

#[test]
fn crashed_or_out_of_memory_worker_is_a_worker_error() {
    let fx = Fixture::new();
    let ctx = TestCtx::default();
    let req = Request::Snapshots {
        repo: fx.repo.clone(),
    };
    let err = run_in_worker(&PathBuf::from("/bin/false"), &[], &req, &ctx);
    assert!(matches!(err, Err(Error::Worker(_))), "{err:?}");
    // 16 MiB of address space cannot even start the job's threads.
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(1 << 20, 1)).unwrap();
    let req = Request::Backup {
        repo: fx.repo.clone(),
        source: Source::Directory { path: src },
        options: BackupOptions::default(),
    };
    let args = vec![
        format!("{}=16", rsvault_engine::worker::MEMORY_LIMIT_ENV),
        bin().display().to_string(),
        "worker".into(),
    ];
    let err = run_in_worker(&PathBuf::from("/usr/bin/env"), &args, &req, &ctx);
    assert!(matches!(err, Err(Error::Worker(_))), "{err:?}");
}

#[test]
fn kill_9_mid_backup_leaves_earlier_snapshots_restorable() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("first"), random_bytes(1 << 20, 1)).unwrap();
    let first = fx.backup_dir(&src, None);
    let t1 = fx.path("t1");
    fx.restore(&first.snapshot_id, &[], &t1);
    for i in 0..4 {
        fs::write(src.join(format!("more{i}")), random_bytes(4 << 20, i + 2)).unwrap();
    }
    // Kills at different points of the same backup.
    for delay_ms in [300u64, 1200] {
        let mut child = Command::new(bin())
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let req = Request::Backup {
            repo: fx.repo.clone(),
            source: Source::Directory { path: src.clone() },
            options: BackupOptions {
                bytes_per_second: Some(8 << 20),
                ..BackupOptions::default()
            },
        };
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(&req).unwrap()).unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first_line = lines.next().unwrap().unwrap();
        assert!(first_line.contains("progress"), "{first_line}");
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(delay_ms).saturating_sub(start.elapsed()));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let snaps = rsvault_engine::snapshots(&fx.repo).unwrap();
        assert_eq!(snaps.len(), 1, "a killed backup must not leave a snapshot");
        let report = rsvault_engine::verify(&fx.repo, Some(0)).unwrap();
        assert!(report.ok, "{report:?}");
        let t = fx.path(&format!("t-{delay_ms}"));
        fx.restore(&first.snapshot_id, &[], &t);
        assert_same_tree(&t1, &t);
    }
    let next = fx.backup_dir(&src, Some(&first.snapshot_id));
    let before = fx.repo_size();
    rsvault_engine::prune(&fx.repo).unwrap();
    // The killed backups' orphan packs are gone.
    assert!(
        fx.repo_size() < before,
        "prune reclaimed nothing ({before} bytes)"
    );
    assert!(rsvault_engine::verify(&fx.repo, None).unwrap().ok);
    let t = fx.path("t-next");
    fx.restore(&next.snapshot_id, &[], &t);
    assert_same_tree(&src, &t);
}
