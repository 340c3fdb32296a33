//! Pack files of a local repository, written at once and made durable in the background.
//!
//! rustic_core hands finished pack files to one writer thread with a queue of one, and the local
//! backend `fsync`s each before returning: while a pack is being flushed, the packer cannot hand
//! over the next one, the compressors stall behind it and the file readers behind them. Here a
//! pack is written and its `fsync` is left to a background thread, so the pipeline goes on.
//!
//! The rule that keeps a crash harmless: nothing that names a pack is written before that pack
//! is durable. Before an index, a snapshot, a key or the config is written, [`PackSync::settle`]
//! waits for every pending flush and fails if one failed; a crash before that loses only packs no
//! index refers to (orphans, as a killed backup leaves anyway, which prune reclaims).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use rustic_core::{BytesList, Id};

/// Packs written but not yet flushed, at most: beyond this, writing waits for a flush (the
/// kernel's dirty-page limits bound the memory anyway; this bounds what a settle waits for).
const MAX_PENDING: usize = 8;

#[derive(Debug, Default)]
struct State {
    pending: usize,
    /// The first flush that failed, reported by the next settle (and every one after it).
    failed: Option<String>,
}

#[derive(Debug)]
pub(crate) struct PackSync {
    root: PathBuf,
    state: Arc<(Mutex<State>, Condvar)>,
    /// Started with the first pack; the thread ends when this is dropped.
    flusher: Mutex<Option<SyncSender<(File, PathBuf)>>>,
}

impl PackSync {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            state: Arc::default(),
            flusher: Mutex::new(None),
        }
    }

    /// Writes pack `id` ([`pack_path`]) and queues its flush.
    pub(crate) fn write_pack(&self, id: &Id, content: BytesList) -> io::Result<()> {
        let path = pack_path(&self.root, id);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = File::create(&path)?;
        for part in content.into_vec() {
            file.write_all(&part)?;
        }
        {
            let (lock, cv) = &*self.state;
            let mut st = lock.lock().unwrap_or_else(PoisonError::into_inner);
            while st.pending >= MAX_PENDING {
                st = cv.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            st.pending += 1;
        }
        let sender = self.sender();
        if let Err(e) = sender.send((file, path)) {
            // The flusher is gone (it cannot be while `self` lives): flush here instead.
            let (file, path) = e.0;
            flush(&self.state, &file, &path);
        }
        Ok(())
    }

    /// Waits until every pack written so far is durable; fails if any flush failed.
    pub(crate) fn settle(&self) -> io::Result<()> {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while st.pending > 0 {
            st = cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        match &st.failed {
            Some(why) => Err(io::Error::other(why.clone())),
            None => Ok(()),
        }
    }

    fn sender(&self) -> SyncSender<(File, PathBuf)> {
        let mut flusher = self.flusher.lock().unwrap_or_else(PoisonError::into_inner);
        flusher
            .get_or_insert_with(|| {
                let (tx, rx) = sync_channel::<(File, PathBuf)>(MAX_PENDING);
                let state = self.state.clone();
                std::thread::spawn(move || {
                    for (file, path) in rx {
                        flush(&state, &file, &path);
                    }
                });
                tx
            })
            .clone()
    }
}

/// Where a local repository at `root` keeps pack `id`: the local backend's layout,
/// `data/<2 hex>/<id>`.
pub(crate) fn pack_path(root: &Path, id: &Id) -> PathBuf {
    let hex = id.to_hex();
    root.join("data").join(&hex[0..2]).join(hex.as_str())
}

fn flush(state: &(Mutex<State>, Condvar), file: &File, path: &Path) {
    let result = file.sync_all();
    let (lock, cv) = state;
    let mut st = lock.lock().unwrap_or_else(PoisonError::into_inner);
    st.pending -= 1;
    if let Err(e) = result {
        st.failed
            .get_or_insert_with(|| format!("flushing pack '{}' to disk: {e}", path.display()));
    }
    cv.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_waits_for_every_pack_and_packs_land_where_the_local_backend_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let sync = PackSync::new(dir.path().to_path_buf());
        let mut ids = Vec::new();
        for i in 0..(3 * MAX_PENDING as u8) {
            let id = Id::random();
            let content = BytesList::from(vec![i; 1000]);
            sync.write_pack(&id, content).unwrap();
            ids.push(id);
        }
        sync.settle().unwrap();
        assert_eq!(sync.state.0.lock().unwrap().pending, 0);
        for (i, id) in ids.iter().enumerate() {
            let hex = id.to_hex();
            let got =
                fs::read(dir.path().join("data").join(&hex[0..2]).join(hex.as_str())).unwrap();
            assert_eq!(got, vec![i as u8; 1000]);
        }
    }

    #[test]
    fn a_failed_flush_fails_every_later_settle() {
        let dir = tempfile::tempdir().unwrap();
        let sync = PackSync::new(dir.path().to_path_buf());
        sync.state.0.lock().unwrap().failed = Some("disk gone".into());
        assert!(sync.settle().is_err());
        assert!(sync.settle().is_err());
    }
}
