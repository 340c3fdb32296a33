use rsvault_engine::Error;

use crate::common::*;

#[test]
fn key_rotation_replaces_the_old_key() {
    let fx = Fixture::new();
    let old_id = rsvault_engine::key_id(&fx.repo).unwrap();
    let new_id = rsvault_engine::add_key(&fx.repo, "new key").unwrap();
    let mut new_repo = fx.repo.clone();
    new_repo.password = "new key".into();
    assert_eq!(rsvault_engine::key_id(&new_repo).unwrap(), new_id);
    assert_eq!(rsvault_engine::list_keys(&new_repo).unwrap().len(), 2);
    rsvault_engine::remove_key(&new_repo, &old_id).unwrap();
    assert!(matches!(
        rsvault_engine::snapshots(&fx.repo),
        Err(Error::WrongKey(_))
    ));
    assert!(rsvault_engine::snapshots(&new_repo).unwrap().is_empty());
    // open_or_init is idempotent, init is not.
    rsvault_engine::open_or_init(&new_repo).unwrap();
    assert!(rsvault_engine::init(&new_repo).is_err());
}

#[test]
fn racing_open_or_init_creates_one_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = rsvault_engine::RepoConfig {
        path: dir.path().join("vault/repo"),
        password: PASSWORD.into(),
        master_key: None,
        store: None,
    };
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| rsvault_engine::open_or_init(&repo).unwrap());
        }
    });
    assert_eq!(rsvault_engine::list_keys(&repo).unwrap().len(), 1);
    assert!(rsvault_engine::verify(&repo, None).unwrap().ok);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("vault"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("repo")]);
}
