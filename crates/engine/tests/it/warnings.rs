use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use rsvault_engine::{BackupOptions, Source};

use crate::common::*;

/// Tests run as root, which reads any file: the backup runs as `nobody` through `setpriv`, so a
/// mode-000 file is really unreadable to the engine.
#[test]
fn unreadable_file_ends_as_a_warning_not_a_failure() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok.txt"), b"fine").unwrap();
    fs::write(src.join("secret.txt"), b"no").unwrap();
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(fx.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    Command::new("chown")
        .args(["-R", "nobody"])
        .arg(&fx.repo.path)
        .status()
        .unwrap();
    let pw = fx.path("pw");
    fs::write(&pw, PASSWORD).unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg("backup")
        .arg("--repo")
        .arg(&fx.repo.path)
        .arg("--password-file")
        .arg(&pw)
        .arg("--dir")
        .arg(&src)
        .env("HOME", "/nonexistent")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP unreadable_file: setpriv unavailable: {e}");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = v["value"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{v}");
    assert_eq!(warnings[0]["path"], "secret.txt");
    assert!(warnings[0]["reason"]
        .as_str()
        .unwrap()
        .contains("unreadable"));
    assert!(stderr.contains("secret.txt"));
    assert_eq!(v["value"]["files"], 1);
}

#[test]
fn file_changed_during_read_is_a_warning() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    let growing = src.join("growing.log");
    fs::write(&growing, random_bytes(2 << 20, 1)).unwrap();
    let ctx = TestCtx::default();
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            // The throttled read takes ~3 s; append once it has started.
            while !ctx
                .progress
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.bytes_done > 0)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut f = fs::OpenOptions::new().append(true).open(&growing).unwrap();
            f.write_all(b"more lines\n").unwrap();
        });
        rsvault_engine::backup(
            &fx.repo,
            &Source::Directory { path: src.clone() },
            &BackupOptions {
                bytes_per_second: Some(1 << 20),
                ..BackupOptions::default()
            },
            &ctx,
        )
        .unwrap()
    });
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert_eq!(out.warnings[0].path, "growing.log");
    assert!(out.warnings[0].reason.contains("changed during read"));
    assert_eq!(ctx.warnings(), out.warnings);
}

#[test]
fn special_file_given_as_disk_is_skipped_with_a_warning() {
    let fx = Fixture::new();
    let fifo = fx.path("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let img = fx.path("disk.img");
    fs::write(&img, random_bytes(100_000, 2)).unwrap();
    let ctx = TestCtx::default();
    let out = rsvault_engine::backup(
        &fx.repo,
        &Source::Disks {
            paths: vec![fifo.clone(), img],
        },
        &BackupOptions::default(),
        &ctx,
    )
    .unwrap();
    assert_eq!(out.files, 1);
    assert_eq!(out.warnings.len(), 1);
    assert_eq!(out.warnings[0].path, fifo.display().to_string());
    assert_eq!(ctx.warnings(), out.warnings);
}

#[test]
fn progress_is_reported_with_totals() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join(format!("f{i}")), random_bytes(1 << 20, i)).unwrap();
    }
    let ctx = TestCtx::default();
    rsvault_engine::backup(
        &fx.repo,
        &Source::Directory { path: src },
        &BackupOptions {
            bytes_per_second: Some(2 << 20),
            ..BackupOptions::default()
        },
        &ctx,
    )
    .unwrap();
    let p = ctx.progress.lock().unwrap().clone();
    // ~1.5 s of work at 4 reports per second.
    assert!(p.len() >= 4, "{p:?}");
    let last = p.last().unwrap();
    assert_eq!((last.files_total, last.bytes_total), (3, 3 << 20));
    assert_eq!((last.files_done, last.bytes_done), (3, 3 << 20));
    assert!(p
        .iter()
        .any(|x| x.phase == rsvault_engine::Phase::Transferring));
}
