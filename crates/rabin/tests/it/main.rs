//! The patched chunker against the published `rustic_cdc` 0.3.1: same hash after every call, same
//! chunk boundaries, and boundaries pinned for restic's default polynomial; and `window_cuts`
//! against the hasher it must agree with.

mod data;
mod pinned;
mod upstream;
mod window_cuts;

/// The lock file must resolve rustic_core's `rustic_cdc` to this crate: with the published crate
/// also in the graph (as the tests' reference), a lock file merged from elsewhere could quietly keep
/// rustic_core on it and bring the per-file table rebuild back.
#[test]
fn lock_file_gives_rustic_core_this_crate() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
        .expect("workspace Cargo.lock");
    let rustic_core = lock
        .split("[[package]]")
        .find(|block| block.contains("name = \"rustic_core\""))
        .expect("rustic_core in Cargo.lock");
    let ours = format!("\"rustic_cdc {}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        rustic_core.contains(&ours),
        "rustic_core does not depend on {ours} in Cargo.lock: {rustic_core}"
    );
}
