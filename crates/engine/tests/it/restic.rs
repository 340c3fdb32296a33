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

/// rsvault cuts files itself (on every core, `backup/chunker.rs`): its chunks must be restic's,
/// or deduplication against what restic, rustic or an older rsvault stored would silently stop.
/// restic, backing up the same tree after rsvault with its own chunker, must find every data
/// chunk already stored — across a 16 MiB read block, a hole longer than one and short runs of
/// zeros, as a sparse disk image has them.
#[test]
fn restic_finds_every_chunk_the_engine_cut_already_stored() {
    if Command::new("restic").arg("version").output().is_err() {
        eprintln!("SKIP restic compatibility: restic is not installed");
        return;
    }
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("small")).unwrap();
    let mut image = random_bytes(9 << 20, 11);
    image.extend(vec![0u8; 17 << 20]);
    image.extend(random_bytes(3 << 20, 12));
    image.extend(vec![0u8; 5000]);
    image.extend(random_bytes((6 << 20) + 12_345, 13));
    fs::write(src.join("disk.img"), &image).unwrap();
    fs::write(src.join("medium.bin"), random_bytes(1_500_000, 14)).unwrap();
    for i in 0..50u64 {
        fs::write(
            src.join(format!("small/{i}.txt")),
            random_bytes(100 * i as usize, i),
        )
        .unwrap();
    }
    let outcome = fx.backup_dir(&src, None);
    assert!(outcome.bytes_added > 0);
    let pw = fx.path("pw");
    fs::write(&pw, PASSWORD).unwrap();
    let out = Command::new("restic")
        .arg("-r")
        .arg(&fx.repo.path)
        .arg("--password-file")
        .arg(&pw)
        .args(["backup", "--json", "--no-cache", "--force", "."])
        .current_dir(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .expect("restic printed a summary");
    assert_eq!(summary["total_files_processed"], 52, "{summary}");
    assert_eq!(
        summary["data_blobs"], 0,
        "restic stored new chunks: {summary}"
    );
}
