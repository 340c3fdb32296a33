//! Issue #9 item 1: nothing under the data dir is readable by other local users, whatever the
//! umask, and a data dir that was left open is tightened at start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::*;

/// Every path below `root` (itself included) whose mode gives group or others any access.
fn open_to_others(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

#[test]
fn data_dir_and_everything_in_it_are_private() {
    let env = Env::new();
    // A data dir someone created open (0755) with a world-readable file already in it.
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notes.txt"), "left here").unwrap();
    std::fs::set_permissions(
        data.join("notes.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let export = s.req("POST", &format!("{v}/backupJobsExport"), None);
    assert_eq!(export.status(), 202);

    for name in ["rsvault.db", "admin-token", "tls", "repos"] {
        assert!(data.join(name).exists(), "{name} missing");
    }
    let open = open_to_others(&data);
    assert!(open.is_empty(), "readable by others: {open:#?}");
}

#[test]
fn a_second_server_on_the_same_data_dir_exits_naming_the_lock() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsvault"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&s.data)
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rsvault.lock"), "{err}");
    assert!(err.contains(&s.child.id().to_string()), "{err}");
    // The first server is unharmed.
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
}
