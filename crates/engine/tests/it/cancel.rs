use std::fs;
use std::time::{Duration, Instant};

use rsvault_engine::{BackupOptions, Conflict, Error, RestoreSpec, Source};

use crate::common::*;

#[test]
fn cancelled_backup_stops_within_a_second_and_writes_no_snapshot() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("f{i}")), random_bytes(4 << 20, i + 10)).unwrap();
    }
    let ctx = TestCtx::default();
    // Throttled to 8 MiB/s: the whole backup would take about 2 s.
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
    let stopped = Instant::now();
    assert!(
        matches!(res, Err(Error::Cancelled)),
        "{:?}",
        res.map(|o| o.snapshot_id)
    );
    let at = ctx
        .cancelled_at
        .lock()
        .unwrap()
        .expect("cancel was requested");
    assert!(
        stopped - at < Duration::from_secs(1),
        "took {:?} after cancel",
        stopped - at
    );
    assert!(rsvault_engine::snapshots(&fx.repo).unwrap().is_empty());
    let report = rsvault_engine::verify(&fx.repo, None).unwrap();
    assert!(report.ok, "{report:?}");
    // The next backup succeeds and prune cleans up.
    let out = fx.backup_dir(&src, None);
    rsvault_engine::prune(&fx.repo).unwrap();
    let t = fx.path("t");
    fx.restore(&out.snapshot_id, &[], &t);
    assert_same_tree(&src, &t);
    assert!(rsvault_engine::verify(&fx.repo, None).unwrap().ok);
}

#[test]
fn cancelled_restore_stops_within_a_second_and_names_incomplete_files() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join(format!("f{i}")), random_bytes(8 << 20, i + 20)).unwrap();
    }
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let ctx = TestCtx::default();
    ctx.cancel_on_progress
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let target = fx.path("t");
    let res = rsvault_engine::restore(
        &fx.repo,
        &RestoreSpec {
            snapshot_id: snap,
            paths: vec![],
            target: target.clone(),
            conflict: Conflict::Fail,
        },
        &ctx,
    );
    let stopped = Instant::now();
    if let Ok(out) = &res {
        // The machine restored 24 MiB faster than one progress tick: nothing to cancel.
        eprintln!("restore finished before the cancel: {out:?}");
        return;
    }
    assert!(matches!(res, Err(Error::Cancelled)), "{res:?}");
    let at = ctx.cancelled_at.lock().unwrap().unwrap();
    assert!(stopped - at < Duration::from_secs(1));
    // A file in flight when the cancel lands is named incomplete; a cancel seen between two
    // files leaves none in flight. Either way no temporary file is left behind.
    let w = ctx.warnings();
    assert!(w.iter().all(|w| w.reason.contains("incomplete")), "{w:?}");
    let leftovers: Vec<_> = fs::read_dir(&target)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".rsvault-restore")),
        "{leftovers:?}"
    );
}
