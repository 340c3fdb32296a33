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

    for name in ["rsvault.db", "token-signing-key.pem", "tls", "repos"] {
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

/// `rsvault vault key export` for vault `v1`: (repository, password).
fn export_key(s: &Server) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsvault"))
        .args(["vault", "key", "export", "--vault"])
        .arg(format!("{SUB}/rg1/v1"))
        .arg("--data")
        .arg(&s.data)
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["repository"].as_str().unwrap().to_string(),
        v["password"].as_str().unwrap().to_string(),
    )
}

/// Every file under `root` that contains `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if meta.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// `restic snapshots` on an exported vault: how many snapshots it lists.
fn restic_snapshots(repo: &str, password: &str) -> usize {
    let out = std::process::Command::new("restic")
        .args(["--no-cache", "--json", "-r", repo, "snapshots"])
        .env("RESTIC_PASSWORD", password)
        .output()
        .expect("restic is installed (apt-get install restic)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().len()
}

#[test]
fn vault_keys_are_never_stored_in_plain_text_and_the_export_opens_with_restic() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let (repo, password) = export_key(&s);
    assert!(password.len() >= 20);
    let hits = files_containing(&s.data, password.as_bytes());
    assert!(
        hits.is_empty(),
        "the vault key is in plain text in {hits:?}"
    );
    assert!(s.data.join("master.key").exists());
    assert_eq!(restic_snapshots(&repo, &password), 1);
}

#[test]
fn rotating_the_key_encryption_key_keeps_every_vault_readable() {
    let env = Env::new();
    let mut s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let (_, password) = export_key(&s);
    let rotate = |s: &Server| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rsvault"))
            .args(["secrets", "rotate", "--data"])
            .arg(&s.data)
            .arg("--config")
            .arg(&s.config)
            .output()
            .unwrap()
    };
    // Not while a server uses the data dir.
    let out = rotate(&s);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rsvault.lock"));

    let old_kek = std::fs::read(s.data.join("master.key")).unwrap();
    s.kill9();
    let out = rotate(&s);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(std::fs::read(s.data.join("master.key")).unwrap(), old_kek);
    let (data, config) = (s.data.clone(), s.config.clone());
    drop(s);
    let s2 = Server::start_with(&data, &config);
    let (repo, same) = export_key(&s2);
    assert_eq!(same, password, "the vault key itself is unchanged");
    s2.backup_completed(&v, &item);
    assert_eq!(restic_snapshots(&repo, &password), 2);
}

#[test]
fn a_plain_text_key_from_an_older_store_is_wrapped_at_start() {
    let env = Env::new();
    let mut s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let (_, password) = export_key(&s);
    s.kill9();
    // Put the vault back the way releases before key wrapping stored it.
    {
        let store = rsvault_store::Store::open(&s.data.join("rsvault.db")).unwrap();
        let key = format!("{SUB}/rg1/v1").to_ascii_lowercase();
        store
            .tx(|tx| {
                let mut vault: rsvault_types::model::Vault =
                    tx.get(rsvault_jobs::service::K_VAULT, &key, "")?.unwrap();
                vault.wrapped_key.clear();
                vault.legacy_password = Some(password.clone());
                tx.put(rsvault_jobs::service::K_VAULT, &key, "", "", &vault)
            })
            .unwrap();
    }
    let (data, config) = (s.data.clone(), s.config.clone());
    drop(s);
    let s2 = Server::start_with(&data, &config);
    let hits = files_containing(&s2.data, password.as_bytes());
    assert!(hits.is_empty(), "still in plain text in {hits:?}");
    assert_eq!(export_key(&s2).1, password);
    s2.backup_completed(&v, &item);
}

/// The vault as the store holds it (read next to a running server: the store is in WAL mode).
fn stored_vault(data: &Path) -> rsvault_types::model::Vault {
    let store = rsvault_store::Store::open(&data.join("rsvault.db")).unwrap();
    let key = format!("{SUB}/rg1/v1").to_ascii_lowercase();
    store
        .tx(|tx| tx.get(rsvault_jobs::service::K_VAULT, &key, ""))
        .unwrap()
        .unwrap()
}

#[test]
fn jobs_open_the_repository_by_its_wrapped_master_key() {
    let env = Env::new();
    let mut s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let (repo, password) = export_key(&s);
    s.kill9();
    let wrapped = stored_vault(&s.data).wrapped_master_key;
    assert!(wrapped.starts_with("kek1:"), "{wrapped:?}");
    // Only wrapped: the key's AES part is nowhere in the data dir in plain text.
    let master_key = rsvault_engine::master_key(&rsvault_engine::RepoConfig {
        path: repo.clone().into(),
        password: password.clone(),
        master_key: None,
        store: None,
    })
    .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(master_key.as_str()).unwrap();
    let aes = parsed["encrypt"].as_str().unwrap();
    let hits = files_containing(&s.data, aes.as_bytes());
    assert!(hits.is_empty(), "the master key in plain text in {hits:?}");

    // A vault stored before master keys were kept: its next job derives and stores the key.
    {
        let store = rsvault_store::Store::open(&s.data.join("rsvault.db")).unwrap();
        let key = format!("{SUB}/rg1/v1").to_ascii_lowercase();
        store
            .tx(|tx| {
                let mut vault: rsvault_types::model::Vault =
                    tx.get(rsvault_jobs::service::K_VAULT, &key, "")?.unwrap();
                vault.wrapped_master_key.clear();
                tx.put(rsvault_jobs::service::K_VAULT, &key, "", "", &vault)
            })
            .unwrap();
    }
    let (data, config) = (s.data.clone(), s.config.clone());
    drop(s);
    let s2 = Server::start_with(&data, &config);
    s2.backup_completed(&v, &item);
    assert!(stored_vault(&data).wrapped_master_key.starts_with("kek1:"));

    // Jobs no longer need a key file (nor derive anything from the password): with every key
    // file gone, backups still complete.
    for entry in std::fs::read_dir(Path::new(&repo).join("keys")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    s2.backup_completed(&v, &item);
}
