//! The archiver's write side: blobs sealed and gathered into packs, packs written, then the
//! index files that name them, all in restic's repository format (v2), so restic and rustic
//! read what rsvault writes.
//!
//! rustic_core 0.13 keeps its packer crate-private, and its pipeline costs a zstd context and
//! three thread hand-offs per blob (BENCHMARKS.md, issue #10). Here each worker thread seals its
//! own blobs with its own contexts ([`Sealer`]) and only appends the sealed bytes to the open
//! pack under a lock; the thread that fills a pack writes it.
//!
//! Order on disk, which is what makes a crash harmless: a pack is written before any index
//! names it, and the backend settles every pack before it writes an index or a snapshot
//! (`packsync`), so a crash leaves at most packs nothing names.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use rustic_core::repofile::{BlobType, ConfigFile, FileType, IndexFile, PackId};
use rustic_core::{BlobId, Id, WriteBackend};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::codec::{Cipher, Scratch};
use crate::repo::map_err;
use crate::{Error, Result};

/// Blob ids are SHA-256 digests: their first 8 bytes are already a good hash.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // An `Id` hashes as its 32 bytes (array `Hash` writes them in one call).
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }
}

pub(super) type IdSet = HashSet<Id, BuildHasherDefault<IdHasher>>;

/// Where a tree blob lies: its pack and its place in it.
#[derive(Clone, Copy, Debug)]
pub(super) struct TreeAt {
    pub(super) pack: PackId,
    pub(super) offset: u32,
    pub(super) length: u32,
    pub(super) uncompressed: Option<NonZeroU32>,
}

/// What the repository's index says, as far as a backup needs it.
#[derive(Default)]
pub(super) struct Known {
    /// Data blobs already stored, sorted (a million ids take 32 MB this way, three times that
    /// in a hash set).
    pub(super) data: Vec<Id>,
    /// Tree blobs already stored, and where (parent trees are read from there).
    pub(super) trees: HashMap<Id, TreeAt, BuildHasherDefault<IdHasher>>,
    /// Bytes of data blobs in the repository (it sizes new packs, as rustic_core's does).
    pub(super) data_bytes: u64,
    pub(super) tree_bytes: u64,
}

impl Known {
    /// Reads every index file. Packs an index marks for deletion do not count: a blob only there
    /// is about to disappear.
    pub(super) fn load<S: rustic_core::Open>(repo: &rustic_core::Repository<S>) -> Result<Self> {
        let mut known = Self::default();
        for item in repo.stream_files::<IndexFile>().map_err(map_err)? {
            let (_, file) = item.map_err(map_err)?;
            for pack in file.packs {
                for blob in pack.blobs {
                    let loc = blob.location;
                    match blob.tpe {
                        BlobType::Data => {
                            known.data_bytes += u64::from(loc.length);
                            known.data.push(*blob.id);
                        }
                        BlobType::Tree => {
                            known.tree_bytes += u64::from(loc.length);
                            _ = known.trees.insert(
                                *blob.id,
                                TreeAt {
                                    pack: pack.id,
                                    offset: loc.offset,
                                    length: loc.length,
                                    uncompressed: loc.uncompressed_length,
                                },
                            );
                        }
                    }
                }
            }
        }
        known.data.sort_unstable();
        known.data.dedup();
        Ok(known)
    }
}

/// One worker thread's sealing state, reused from blob to blob.
pub(super) struct Sealer {
    zstd: zstd::bulk::Compressor<'static>,
    packed: Vec<u8>,
    sealed: Vec<u8>,
    check: Scratch,
}

impl Sealer {
    pub(super) fn new(level: Option<i32>) -> Result<Self> {
        let zstd = zstd::bulk::Compressor::new(level.unwrap_or(0))
            .map_err(|e| Error::Repository(format!("cannot create a zstd context: {e}")))?;
        Ok(Self {
            zstd,
            packed: Vec::new(),
            sealed: Vec::new(),
            check: Scratch::new().map_err(Error::Repository)?,
        })
    }
}

thread_local! {
    /// Each pool thread's sealing state (zstd contexts, buffers), made on first use.
    static SEALER: RefCell<Option<(Option<i32>, Sealer)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's sealer for compression `level`.
pub(super) fn with_sealer<T>(
    level: Option<i32>,
    f: impl FnOnce(&mut Sealer) -> Result<T>,
) -> Result<T> {
    SEALER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, Sealer::new(level)?));
        }
        let (_, sealer) = slot.as_mut().expect("sealer");
        f(sealer)
    })
}

/// Counts for the snapshot's summary.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Added {
    pub(super) blobs: u64,
    /// Bytes before compression and encryption.
    pub(super) bytes: u64,
    /// Bytes in the packs.
    pub(super) packed: u64,
}

/// A blob in a pack, as the pack's header and the index describe it.
#[derive(Debug, Serialize)]
struct Blob {
    id: Id,
    #[serde(rename = "type")]
    tpe: BlobType,
    offset: u32,
    length: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    uncompressed_length: Option<NonZeroU32>,
}

/// A pack as an index file lists it (restic's format; rustic_core's own index types cannot be
/// built outside it).
#[derive(Debug, Serialize)]
struct Pack {
    id: PackId,
    size: u32,
    blobs: Vec<Blob>,
}

#[derive(Debug, Serialize)]
struct Index {
    packs: Vec<Pack>,
}

/// The pack being filled for one blob type.
#[derive(Default)]
struct Open {
    bytes: Vec<u8>,
    blobs: Vec<Blob>,
    added: Added,
}

/// Packs being written for one backup.
pub(super) struct Packs {
    be: Arc<dyn WriteBackend>,
    cipher: Cipher,
    /// zstd level; `None`: a version 1 repository, blobs stored uncompressed.
    level: Option<i32>,
    /// Decrypt and decompress every sealed blob and compare it with what was given (rustic's
    /// `extra_verify`, on unless the repository's config turns it off).
    verify: bool,
    data: Mutex<Open>,
    tree: Mutex<Open>,
    data_target: u32,
    tree_target: u32,
    /// Blobs stored before this backup, sorted.
    stored: Vec<Id>,
    /// Blobs claimed by this backup: each is sealed once.
    seen: Mutex<IdSet>,
    /// Packs written, for the next index file.
    written: Mutex<Vec<Pack>>,
    totals: Mutex<(Added, Added)>,
    /// Buffers of packs already written, for the next packs.
    spare: Arc<Spare>,
}

/// Pack buffers the backend is done with, kept for the next packs. A new buffer of a pack's
/// size is mapped and zeroed by the kernel page by page as blobs are appended to it, under the
/// pack's lock: 8% of a full backup's CPU went to those page faults, and the threads waiting
/// for the lock left cores idle.
#[derive(Default)]
struct Spare(Mutex<Vec<Vec<u8>>>);

/// Most spare buffers kept: packs being written at once (one per pool thread at most) are
/// what returns them.
const SPARE_PACKS: usize = 2;

impl Spare {
    /// An empty buffer with room for `need` bytes.
    fn take(&self, need: usize) -> Vec<u8> {
        let mut buf = lock(&self.0).pop().unwrap_or_default();
        buf.reserve(need);
        buf
    }
}

/// A written pack's bytes, handed to the backend; back to [`Spare`] when it drops them.
struct Lent {
    buf: Vec<u8>,
    spare: Arc<Spare>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut spare = lock(&self.spare.0);
        if spare.len() < SPARE_PACKS {
            spare.push(buf);
        }
    }
}

/// Blobs named by one index file. Written as packs accumulate, as rustic_core's indexer does, so
/// a backup of a million small files never holds (or serializes) its whole index at once, and
/// the packs of a backup that is interrupted later are already named.
const INDEX_BLOBS: usize = 50_000;

/// Largest pack target; offsets in a pack are 32-bit.
const MAX_PACK: u32 = 1 << 31;

/// rustic_core's pack size: grows with the square root of what the repository already holds.
fn target_size(config: &ConfigFile, tpe: BlobType, current: u64) -> u32 {
    let (default, grow, limit) = config.packsize(tpe);
    let size = u64::from(default) + u64::from(grow) * current.isqrt();
    u32::try_from(size)
        .unwrap_or(u32::MAX)
        .min(limit)
        .min(MAX_PACK)
}

impl Packs {
    pub(super) fn new(
        be: Arc<dyn WriteBackend>,
        cipher: Cipher,
        config: &ConfigFile,
        known: &Known,
        stored: Vec<Id>,
    ) -> Result<Self> {
        Ok(Self {
            be,
            cipher,
            level: config.zstd().map_err(map_err)?,
            verify: config.extra_verify(),
            data: Mutex::default(),
            tree: Mutex::default(),
            data_target: target_size(config, BlobType::Data, known.data_bytes),
            tree_target: target_size(config, BlobType::Tree, known.tree_bytes),
            stored,
            seen: Mutex::default(),
            written: Mutex::default(),
            totals: Mutex::default(),
            spare: Arc::default(),
        })
    }

    pub(super) fn level(&self) -> Option<i32> {
        self.level
    }

    /// Whether blob `id` is stored, or claimed by this backup.
    pub(super) fn has(&self, id: &Id) -> bool {
        self.stored.binary_search(id).is_ok() || lock(&self.seen).contains(id)
    }

    /// Claims `id` for this backup: true if no blob of that id is stored or being stored yet,
    /// and the caller must then [`add`](Self::add) it.
    pub(super) fn claim(&self, id: &Id) -> bool {
        self.stored.binary_search(id).is_err() && lock(&self.seen).insert(*id)
    }

    /// Seals `data` (blob `id`, claimed by the caller) and appends it to the open pack of its
    /// type; writes the pack if that filled it.
    pub(super) fn add(&self, s: &mut Sealer, tpe: BlobType, id: Id, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len())
            .map_err(|_| Error::Repository(format!("blob {id} is larger than 4 GiB")))?;
        let Sealer {
            zstd,
            packed,
            sealed,
            check,
        } = s;
        let uncompressed = match self.level {
            Some(_) => {
                packed.clear();
                packed.reserve(zstd::zstd_safe::compress_bound(data.len()));
                zstd.compress_to_buffer(data, packed)
                    .map_err(|e| Error::Repository(format!("zstd failed on blob {id}: {e}")))?;
                NonZeroU32::new(len)
            }
            None => None,
        };
        sealed.clear();
        let plain: &[u8] = if uncompressed.is_some() { packed } else { data };
        self.cipher
            .seal_into(plain, sealed)
            .map_err(Error::Repository)?;
        if self.verify {
            let back = self
                .cipher
                .decode(check, &BlobId::from(id), sealed, uncompressed, 0)
                .map_err(|e| Error::Repository(format!("a sealed blob does not read back: {e}")))?;
            if back != data {
                return Err(Error::Repository(format!(
                    "blob {id} reads back different from what was sealed"
                )));
            }
        }
        let stored = u32::try_from(sealed.len())
            .map_err(|_| Error::Repository(format!("blob {id} is larger than 4 GiB")))?;
        let (slot, target) = match tpe {
            BlobType::Data => (&self.data, self.data_target),
            BlobType::Tree => (&self.tree, self.tree_target),
        };
        let full = {
            let mut open = lock(slot);
            if open.bytes.capacity() == 0 {
                // Room for a whole pack up front: growing by doubling would hold twice a pack.
                open.bytes = self.spare.take(target as usize + sealed.len());
            }
            let offset = u32::try_from(open.bytes.len()).unwrap_or(u32::MAX);
            open.bytes.extend_from_slice(sealed);
            open.blobs.push(Blob {
                id,
                tpe,
                offset,
                length: stored,
                uncompressed_length: uncompressed,
            });
            open.added.blobs += 1;
            open.added.bytes += u64::from(len);
            open.added.packed += u64::from(stored);
            (open.bytes.len() >= target as usize).then(|| std::mem::take(&mut *open))
        };
        match full {
            Some(pack) => self.write_pack(tpe, pack),
            None => Ok(()),
        }
    }

    /// Appends the pack's header (sealed) and its length, names the pack by its hash and
    /// writes it.
    fn write_pack(&self, tpe: BlobType, mut pack: Open) -> Result<()> {
        let mut header = Vec::with_capacity(pack.blobs.len() * 41);
        for b in &pack.blobs {
            let kind: u8 = match (tpe, b.uncompressed_length.is_some()) {
                (BlobType::Data, false) => 0,
                (BlobType::Tree, false) => 1,
                (BlobType::Data, true) => 2,
                (BlobType::Tree, true) => 3,
            };
            header.push(kind);
            header.extend_from_slice(&b.length.to_le_bytes());
            if let Some(n) = b.uncompressed_length {
                header.extend_from_slice(&n.get().to_le_bytes());
            }
            header.extend_from_slice(&raw(&b.id));
        }
        let before = pack.bytes.len();
        self.cipher
            .seal_into(&header, &mut pack.bytes)
            .map_err(Error::Repository)?;
        let header_len = u32::try_from(pack.bytes.len() - before).unwrap_or(u32::MAX);
        pack.bytes.extend_from_slice(&header_len.to_le_bytes());
        let size = u32::try_from(pack.bytes.len())
            .map_err(|_| Error::Repository("a pack grew beyond 4 GiB".into()))?;
        let id = Id::new(Sha256::digest(&pack.bytes).into());
        crate::failpoint::hit(
            "backup.pack",
            &format!("{}/{}", self.be.location(), id.to_hex().as_str()),
        );
        self.be
            .write_bytes(
                FileType::Pack,
                &id,
                false,
                bytes::Bytes::from_owner(Lent {
                    buf: pack.bytes,
                    spare: Arc::clone(&self.spare),
                })
                .into(),
            )
            .map_err(map_err)?;
        {
            let mut totals = lock(&self.totals);
            let t = match tpe {
                BlobType::Data => &mut totals.0,
                BlobType::Tree => &mut totals.1,
            };
            t.blobs += pack.added.blobs;
            t.bytes += pack.added.bytes;
            t.packed += pack.added.packed;
        }
        let full = {
            let mut written = lock(&self.written);
            written.push(Pack {
                id: PackId::from(id),
                size,
                blobs: pack.blobs,
            });
            (written.iter().map(|p| p.blobs.len()).sum::<usize>() >= INDEX_BLOBS)
                .then(|| std::mem::take(&mut *written))
        };
        match full {
            Some(packs) => self.save_file(FileType::Index, &Index { packs }).map(drop),
            None => Ok(()),
        }
    }

    /// Writes the packs still open, then an index file naming the packs no index names yet. Returns
    /// what was added: (data, trees).
    pub(super) fn finish(&self) -> Result<(Added, Added)> {
        for tpe in [BlobType::Data, BlobType::Tree] {
            let slot = match tpe {
                BlobType::Data => &self.data,
                BlobType::Tree => &self.tree,
            };
            let pack = std::mem::take(&mut *lock(slot));
            if !pack.blobs.is_empty() {
                self.write_pack(tpe, pack)?;
            }
        }
        let packs = std::mem::take(&mut *lock(&self.written));
        if !packs.is_empty() {
            _ = self.save_file(FileType::Index, &Index { packs })?;
        }
        Ok(*lock(&self.totals))
    }

    /// Writes a JSON repository file (index, snapshot) as restic does: compressed behind a
    /// version byte 2 in a version 2 repository, sealed, named by the hash of its bytes.
    pub(super) fn save_file(&self, tpe: FileType, value: &impl Serialize) -> Result<Id> {
        let json = serde_json::to_vec(value)
            .map_err(|e| Error::Repository(format!("cannot serialize a {tpe:?} file: {e}")))?;
        let plain = match self.level {
            Some(level) => {
                let mut out = vec![2u8];
                out.extend_from_slice(&zstd::bulk::compress(&json, level).map_err(|e| {
                    Error::Repository(format!("zstd failed on a {tpe:?} file: {e}"))
                })?);
                out
            }
            None => json,
        };
        let mut sealed = Vec::new();
        self.cipher
            .seal_into(&plain, &mut sealed)
            .map_err(Error::Repository)?;
        let id = Id::new(Sha256::digest(&sealed).into());
        self.be
            .write_bytes(tpe, &id, true, sealed.into())
            .map_err(map_err)?;
        Ok(id)
    }
}

/// The 32 bytes of an id (rustic_core's `Id` shows them only as hex).
fn raw(id: &Id) -> [u8; 32] {
    let hex = id.to_hex();
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.as_str().as_bytes().chunks_exact(2)) {
        let digit = |c: u8| match c {
            b'0'..=b'9' => c - b'0',
            _ => (c | 0x20) - b'a' + 10,
        };
        *o = digit(pair[0]) << 4 | digit(pair[1]);
    }
    out
}

/// Locks `m`, poisoned or not.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
