use std::fs;
use std::process::Command;

use crate::common::*;

/// Whether restic is installed (the tests here skip without it, saying so).
fn have_restic() -> bool {
    let ok = Command::new("restic").arg("version").output().is_ok();
    if !ok {
        eprintln!("SKIP restic compatibility: restic is not installed");
    }
    ok
}

/// Runs restic on the fixture's repository (from `dir`) and returns its stdout; fails the test
/// with restic's stderr if restic fails.
fn restic(fx: &Fixture, dir: Option<&std::path::Path>, args: &[&str]) -> Vec<u8> {
    let pw = fx.path("pw");
    fs::write(&pw, PASSWORD).unwrap();
    let mut cmd = Command::new("restic");
    cmd.arg("-r")
        .arg(&fx.repo.path)
        .arg("--password-file")
        .arg(&pw)
        .args(args)
        .arg("--no-cache");
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "restic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn restic_lists_and_restores_what_the_engine_wrote() {
    if !have_restic() {
        return;
    }
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/a.txt"), b"hello restic").unwrap();
    fs::write(src.join("big.bin"), random_bytes(2 << 20, 3)).unwrap();
    // Past three data packs (32 MB each, the repository default): the buffers of packs already
    // written are reused for the next ones, and restic's `check --read-data` below hashes
    // every pack.
    for i in 0..4u64 {
        fs::write(
            src.join(format!("dir/large-{i}.bin")),
            random_bytes(26 << 20, 20 + i),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("dir/a.txt", src.join("link")).unwrap();
    let snap = fx.backup_dir(&src, None).snapshot_id;
    let out = restic(&fx, None, &["snapshots", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["id"], snap);
    let t = fx.path("t");
    restic(
        &fx,
        None,
        &["restore", &snap, "--target", &t.to_string_lossy()],
    );
    assert_same_tree(&src, &t);
    restic(&fx, None, &["check", "--read-data"]);
}

/// rsvault cuts files itself (on every core, `backup/chunker.rs`): its chunks must be restic's,
/// or deduplication against what restic, rustic or an older rsvault stored would silently stop.
/// restic, backing up the same tree after rsvault with its own chunker, must find every data
/// chunk already stored — across a 16 MiB read block, a hole longer than one and short runs of
/// zeros, as a sparse disk image has them.
#[test]
fn restic_finds_every_chunk_the_engine_cut_already_stored() {
    if !have_restic() {
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
    // A file left out (with a warning) would also make restic store new chunks: say so first.
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let out = restic(&fx, Some(&src), &["backup", "--json", "--force", "."]);
    let summary = String::from_utf8_lossy(&out)
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
