//! Named points where a test can run code in the middle of engine work (a symlink swap between
//! a backup's walk and its read, or during a restore), deterministically instead of by timing.
//!
//! Not for production use: with no hook set, a hit costs one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A hook gets the point's argument (a path) and runs on the engine thread that hit it.
pub type Hook = Arc<dyn Fn(&str) + Send + Sync>;

static ANY: AtomicBool = AtomicBool::new(false);
static HOOKS: Mutex<Vec<(String, Hook)>> = Mutex::new(Vec::new());

/// Adds a hook to the point `name`. Hooks are process-wide: a test filters on its own paths.
/// Points: `backup.open` (absolute path, before a backup opens a file the walk found),
/// `restore.open` (target path joined with the entry, before a restore opens a file to write),
/// `restore.settle` (the target path, before a batch of written files is synced and renamed into
/// place), `backup.pack` (the backend's location, `/` and the pack's id, before a backup writes a pack).
pub fn add(name: &str, hook: Hook) {
    HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name.to_string(), hook));
    ANY.store(true, Ordering::SeqCst);
}

/// Whether any hook is set: a caller whose argument costs something to build checks first.
pub(crate) fn armed() -> bool {
    ANY.load(Ordering::Relaxed)
}

pub(crate) fn hit(name: &str, arg: &str) {
    if !armed() {
        return;
    }
    let hooks: Vec<Hook> = HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, h)| h.clone())
        .collect();
    for h in hooks {
        h(arg);
    }
}
