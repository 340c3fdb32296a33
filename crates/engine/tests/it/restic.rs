use std::fs;
use std::process::Command;

use crate::common::*;

#[test]
fn restic_lists_and_restores_what_the_engine_wrote() {
    if Command::new("restic").arg("version").output().is_err() {
        eprintln!("SKIP restic compatibility: restic is not installed");
        return;
    }
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/a.txt"), b"hello restic").unwrap();
    fs::write(src.join("big.bin"), random_bytes(2 << 20, 3)).unwrap();
    std::os::unix::fs::symlink("dir/a.txt", src.join("link")).unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let pw = fx.path("pw");
    fs::write(&pw, PASSWORD).unwrap();
    let out = Command::new("restic")
        .arg("-r")
        .arg(&fx.repo.path)
        .arg("--password-file")
        .arg(&pw)
        .args(["snapshots", "--json", "--no-cache"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], snap);
    let t = fx.path("t");
    let out = Command::new("restic")
        .arg("-r")
        .arg(&fx.repo.path)
        .arg("--password-file")
        .arg(&pw)
        .args(["restore", &snap, "--no-cache", "--target"])
        .arg(&t)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &t);
    let out = Command::new("restic")
        .arg("-r")
        .arg(&fx.repo.path)
        .arg("--password-file")
        .arg(&pw)
        .args(["check", "--read-data", "--no-cache"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
