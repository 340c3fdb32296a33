//! Opening repositories with their master key (issue #10 item 3): no key file is read and
//! nothing is derived from the password, so a job pays no scrypt.

use std::fs;

use rsvault_engine::worker::{run_in_worker, run_request, Request, Response};
use rsvault_engine::{Error, MasterKey, RepoConfig};

use crate::common::*;

/// `repo` opened by its master key alone: no password to fall back on.
fn by_master_key(repo: &RepoConfig, key: &MasterKey) -> RepoConfig {
    RepoConfig {
        path: repo.path.clone(),
        password: String::new(),
        master_key: Some(key.clone()),
        store: repo.store.clone(),
    }
}

fn remove_key_files(repo: &RepoConfig) {
    for entry in fs::read_dir(repo.path.join("keys")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
}

#[test]
fn master_key_opens_a_repository_without_any_key_file() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/a.txt"), b"first").unwrap();
    let first = fx.backup_dir(&src, None).snapshot_id;
    let key = rsvault_engine::master_key(&fx.repo).unwrap();
    // Without key files the password has nothing to derive from: whatever opens the repository
    // now opens it by the master key alone.
    remove_key_files(&fx.repo);
    assert!(matches!(
        rsvault_engine::snapshots(&fx.repo),
        Err(Error::WrongKey(_))
    ));
    let keyed = Fixture {
        dir: tempfile::tempdir().unwrap(),
        repo: by_master_key(&fx.repo, &key),
    };
    fs::write(src.join("b.bin"), random_bytes(1 << 20, 7)).unwrap();
    let second = keyed.backup_dir(&src, Some(&first)).snapshot_id;
    let snaps = rsvault_engine::snapshots(&keyed.repo).unwrap();
    assert_eq!(
        snaps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [first.as_str(), second.as_str()]
    );
    let t = keyed.path("t");
    keyed.restore(&second, &[], &t);
    assert_same_tree(&src, &t);
    assert!(rsvault_engine::verify(&keyed.repo, Some(100)).unwrap().ok);
    assert_eq!(rsvault_engine::master_key(&keyed.repo).unwrap(), key);
}

#[test]
fn master_key_of_another_repository_is_a_clear_error() {
    let a = Fixture::new();
    let b = Fixture::new();
    let b_key = rsvault_engine::master_key(&b.repo).unwrap();
    let err = rsvault_engine::snapshots(&by_master_key(&a.repo, &b_key)).unwrap_err();
    match &err {
        Error::WrongKey(m) => assert!(m.contains("does not decrypt this repository"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A stale key next to a password that still opens: the job runs (on the password).
    let mut stale = by_master_key(&a.repo, &b_key);
    stale.password = PASSWORD.into();
    assert!(rsvault_engine::snapshots(&stale).unwrap().is_empty());
    assert_eq!(
        rsvault_engine::master_key(&stale).unwrap(),
        rsvault_engine::master_key(&a.repo).unwrap()
    );
}

#[test]
fn malformed_master_key_is_an_error_not_a_panic() {
    let fx = Fixture::new();
    for text in [
        "",
        "{}",
        r#"{"mac":{"k":"AAAA","r":"AAAA"},"encrypt":"AAAA"}"#,
    ] {
        let repo = by_master_key(&fx.repo, &MasterKey::from_text(text));
        match rsvault_engine::snapshots(&repo) {
            Err(Error::WrongKey(m)) => assert!(m.contains("malformed"), "{text}: {m}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn master_key_stays_the_same_across_key_rotation() {
    let fx = Fixture::new();
    let key = rsvault_engine::master_key(&fx.repo).unwrap();
    let old_id = rsvault_engine::key_id(&fx.repo).unwrap();
    rsvault_engine::add_key(&fx.repo, "new key").unwrap();
    let mut rotated = fx.repo.clone();
    rotated.password = "new key".into();
    // Key management opens by the password even when a master key is given: it must know
    // which key file it opened (the current one cannot be removed).
    rotated.master_key = Some(key.clone());
    let new_id = rsvault_engine::key_id(&rotated).unwrap();
    assert_ne!(new_id, old_id);
    assert!(rsvault_engine::remove_key(&rotated, &new_id).is_err());
    rsvault_engine::remove_key(&rotated, &old_id).unwrap();
    assert_eq!(rsvault_engine::list_keys(&rotated).unwrap(), [new_id]);
    assert_eq!(rsvault_engine::master_key(&rotated).unwrap(), key);
    assert!(rsvault_engine::snapshots(&by_master_key(&fx.repo, &key))
        .unwrap()
        .is_empty());
}

#[test]
fn master_key_request_creates_the_repository_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = RepoConfig {
        path: dir.path().join("repo"),
        password: PASSWORD.into(),
        master_key: None,
        store: None,
    };
    let ctx = TestCtx::default();
    let ask = |create| Request::MasterKey {
        repo: repo.clone(),
        create,
    };
    assert!(run_request(&ask(false), &ctx).is_err());
    assert!(!repo.path.exists());
    let created = match run_in_worker(&bin(), &["worker".into()], &ask(true), &ctx).unwrap() {
        Response::MasterKey(k) => k,
        other => panic!("{other:?}"),
    };
    for create in [true, false] {
        match run_request(&ask(create), &ctx).unwrap() {
            Response::MasterKey(k) => assert_eq!(k, created),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rsvault_engine::list_keys(&repo).unwrap().len(), 1);
    assert!(rsvault_engine::snapshots(&by_master_key(&repo, &created))
        .unwrap()
        .is_empty());
    assert_eq!(format!("{created:?}"), "MasterKey(..)");
}
