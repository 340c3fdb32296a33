//! What a restore reads from the packs, and how: the blobs it needs grouped by pack, each run of
//! nearby needed blobs read with one ranged read (as restic does), and every blob decrypted,
//! decompressed and checked against its id before a byte of it is written.
//!
//! Rules:
//! - A run is one range of one pack: needed blobs whose gaps (blobs not needed) are at most
//!   [`MAX_GAP`], at most [`MAX_READ`] bytes in all, unless a single blob is larger. A read in
//!   flight therefore holds at most `max(MAX_READ, largest blob)` bytes.
//! - A blob needed several times (in one file or in many) is read and decoded once and written
//!   to every place it goes.
//! - Runs come in the order their packs are first needed (files in path order, blobs in file
//!   order), so files complete roughly in that order.
//! - Decoding is restic's format: `nonce (16) | AES-256-CTR ciphertext | Poly1305-AES MAC (16)`,
//!   zstd-compressed inside when the index gives an uncompressed length. rustic_core 0.13 keeps
//!   its decrypting backend crate-private, so the MAC check and decryption use the same AEAD
//!   crate rustic_core does, with the repository's master key ([`Cipher`]); the content is then
//!   checked against the blob's id with rustic_core's own hash check. Any mismatch is an error
//!   naming the pack and blob: wrong bytes are never returned.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::num::NonZeroU32;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustic_core::repofile::PackId;
use rustic_core::{BlobId, FileType, WriteBackend};

pub(super) use crate::codec::{Cipher, Scratch};

/// Most bytes one ranged read asks for (a single larger blob is read alone).
pub(super) const MAX_READ: u32 = 4 << 20;
/// Largest run of unneeded bytes a read spans rather than split in two (restic's and rustic's
/// hole size): reading it costs less than another request.
pub(super) const MAX_GAP: u32 = 256 << 10;

/// Where a restore reads packs from: a local repository's directory (ranged reads of the pack
/// files themselves), or else the repository's backend (an object store).
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub(super) root: Option<&'a Path>,
    pub(super) be: &'a dyn WriteBackend,
}

/// One thread's reads of pack ranges (the runs of the contents, and the trees), into one buffer
/// kept from read to read; from a local repository, the pack read last stays open. The
/// backend's `read_partial` opened the pack and allocated and zeroed a new buffer for every
/// read (fresh memory for every byte restored); this buffer grows to the largest read and stays.
#[derive(Default)]
pub(super) struct Reads {
    pack: Option<(PackId, File)>,
    buf: Vec<u8>,
}

impl Reads {
    /// `length` bytes at `offset` of `pack`, in this reader's buffer (where they may be
    /// decrypted in place), or why they could not be read.
    pub(super) fn read(
        &mut self,
        from: Source<'_>,
        pack: &PackId,
        offset: u32,
        length: u32,
    ) -> Result<&mut [u8], String> {
        let failed = |e: &dyn std::fmt::Display| {
            format!(
                "pack {pack}: reading {length} bytes at {offset} failed: {}",
                crate::repo::concise(&e.to_string())
            )
        };
        let truncated = |got: &str| {
            format!(
                "pack {pack}: {length} bytes at {offset} were asked for, {got} (truncated pack?)"
            )
        };
        let len = length as usize;
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let buf = &mut self.buf[..len];
        match from.root {
            Some(root) => {
                if self.pack.as_ref().is_none_or(|(id, _)| id != pack) {
                    let file = File::open(crate::packsync::pack_path(root, pack))
                        .map_err(|e| failed(&e))?;
                    self.pack = Some((*pack, file));
                }
                let (_, file) = self.pack.as_ref().expect("opened");
                file.read_exact_at(buf, u64::from(offset))
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => truncated("the pack ends before them"),
                        _ => failed(&e),
                    })?;
            }
            None => {
                let raw = from
                    .be
                    .read_partial(FileType::Pack, pack, false, offset, length)
                    .map_err(|e| failed(&e))?;
                if raw.len() != len {
                    return Err(truncated(&format!("{} came back", raw.len())));
                }
                buf.copy_from_slice(&raw);
            }
        }
        Ok(buf)
    }
}

/// A place a blob goes: a file being restored and the offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) file: usize,
    pub(super) offset: u64,
}

/// Where a blob lies in its pack (from the index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) offset: u32,
    /// Bytes in the pack: nonce, ciphertext and MAC.
    pub(super) length: u32,
    /// `Some`: the content is zstd-compressed and this long once decompressed.
    pub(super) uncompressed: Option<NonZeroU32>,
}

/// A blob to restore and every place it goes.
#[derive(Debug)]
pub(super) struct Need {
    pub(super) id: BlobId,
    pub(super) at: Location,
    pub(super) targets: Vec<Target>,
}

/// One ranged read: `length` bytes of `pack` from `offset`, holding `needs` (indices into the
/// plan's needs, sorted by offset).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) pack: PackId,
    pub(super) offset: u32,
    pub(super) length: u32,
    pub(super) needs: Range<usize>,
}

/// Collects the blobs a restore needs, then groups them into [`Run`]s.
#[derive(Default)]
pub(super) struct Planner {
    /// Each pack's rank: the order in which packs are first needed.
    ranks: HashMap<PackId, usize>,
    packs: Vec<PackId>,
    /// Blobs seen so far: their index in `needs`.
    seen: HashMap<BlobId, usize>,
    needs: Vec<(usize, Need)>,
}

impl Planner {
    /// Records that blob `id`, at `at` in `pack`, goes to `target`.
    pub(super) fn add(&mut self, id: BlobId, pack: PackId, at: Location, target: Target) {
        if let Some(&i) = self.seen.get(&id) {
            self.needs[i].1.targets.push(target);
            return;
        }
        let next = self.packs.len();
        let rank = *self.ranks.entry(pack).or_insert(next);
        if rank == next {
            self.packs.push(pack);
        }
        self.seen.insert(id, self.needs.len());
        self.needs.push((
            rank,
            Need {
                id,
                at,
                targets: vec![target],
            },
        ));
    }

    /// The needs, sorted by pack rank and offset, and the runs that read them.
    pub(super) fn finish(self) -> (Vec<Need>, Vec<Run>) {
        let Self {
            packs, mut needs, ..
        } = self;
        needs.sort_by_key(|(rank, n)| (*rank, n.at.offset));
        let mut runs: Vec<Run> = Vec::new();
        for (i, (rank, n)) in needs.iter().enumerate() {
            let pack = packs[*rank];
            let end = n.at.offset + n.at.length;
            if let Some(run) = runs.last_mut() {
                let run_end = run.offset + run.length;
                if run.pack == pack
                    && n.at.offset <= run_end + MAX_GAP
                    && end.max(run_end) - run.offset <= MAX_READ
                {
                    run.length = end.max(run_end) - run.offset;
                    run.needs.end = i + 1;
                    continue;
                }
            }
            runs.push(Run {
                pack,
                offset: n.at.offset,
                length: n.at.length,
                needs: i..i + 1,
            });
        }
        (needs.into_iter().map(|(_, n)| n).collect(), runs)
    }
}

/// `runs` reordered so that `ways` writers, taking them in turn, each work through their own
/// part of the restore: the runs of the first `ways`-th of it, then of the second, and so on,
/// interleaved. In pack order, the writers all took neighbouring runs, which mostly belong to
/// one large file: its writers then waited for each other on the file's inode lock (each direct
/// write holds it until the device has the data; the `fallocate` and the buffered writes at
/// blob edges need it alone). Apart, they mostly write different files, and each writer's next
/// file is mostly in the directory of its last one.
pub(super) fn spread(runs: Vec<Run>, ways: usize) -> Vec<Run> {
    if ways < 2 || runs.len() <= ways {
        return runs;
    }
    let part = runs.len().div_ceil(ways);
    let mut slots: Vec<Option<Run>> = runs.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(slots.len());
    for i in 0..part {
        for j in 0..ways {
            if let Some(run) = slots.get_mut(j * part + i).and_then(Option::take) {
                out.push(run);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes256ctr_poly1305aes::aead::AeadInPlace;
    use aes256ctr_poly1305aes::{Aes256CtrPoly1305Aes, Key};
    use rustic_core::repofile::MasterKey;
    use rustic_core::Id;

    fn id(n: u8) -> BlobId {
        BlobId::from(Id::new([n; 32]))
    }

    fn pack(n: u8) -> PackId {
        PackId::from(Id::new([n; 32]))
    }

    fn at(offset: u32, length: u32) -> Location {
        Location {
            offset,
            length,
            uncompressed: None,
        }
    }

    fn t(file: usize, offset: u64) -> Target {
        Target { file, offset }
    }

    fn key() -> MasterKey {
        serde_json::from_value(serde_json::json!({
            "mac": {"k": "AAECAwQFBgcICQoLDA0ODw==", "r": "EBESExQVFhcYGRobHB0eHw=="},
            "encrypt": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
        }))
        .unwrap()
    }

    /// `content` as a pack holds it: its id, and nonce | ciphertext | MAC of `stored`.
    fn sealed(content: &[u8], stored: &[u8]) -> (BlobId, Vec<u8>) {
        use aes256ctr_poly1305aes::aead::generic_array::GenericArray;
        use sha2::Digest;
        let id = BlobId::from(Id::new(sha2::Sha256::digest(content).into()));
        // key() in restic's layout: encrypt, then k, then r.
        let k: Key = (32u8..64).chain(0..32).collect();
        let nonce = GenericArray::from([7u8; 16]);
        let mut data = stored.to_vec();
        let tag = Aes256CtrPoly1305Aes::new(&k)
            .encrypt_in_place_detached(&nonce, &[], &mut data)
            .unwrap();
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&data);
        raw.extend_from_slice(&tag);
        (id, raw)
    }

    #[test]
    fn a_sealed_blob_decodes_to_its_content_plain_or_compressed() {
        let d = Cipher::new(&key()).unwrap();
        let content = b"restic blob content, restic blob content, restic blob content".repeat(50);
        let (id, raw) = sealed(&content, &content);
        let packed = zstd::bulk::compress(&content, 3).unwrap();
        let (zid, zraw) = sealed(&content, &packed);
        let len = NonZeroU32::new(content.len() as u32);
        let short = b"a shorter blob".to_vec();
        let (sid, sraw) = sealed(&short, &zstd::bulk::compress(&short, 3).unwrap());
        let slen = NonZeroU32::new(short.len() as u32);
        // One scratch, as a writer thread keeps it: nothing of one blob shows in the next.
        let mut scratch = Scratch::new().unwrap();
        // At every phase, stored plain or compressed, the content lands `phase` bytes past a
        // page boundary (what lets a restore write it directly).
        for phase in [0u64, 1, 777, 4095, 4096 + 5] {
            for (id, raw, len, want) in [
                (&id, &raw, None, &content[..]),
                (&zid, &zraw, len, &content[..]),
                (&sid, &sraw, slen, &short[..]),
            ] {
                let got = d.decode(&mut scratch, id, raw, len, phase).unwrap();
                assert_eq!(got, want);
                assert_eq!(got.as_ptr() as u64 % 4096, phase % 4096);
                // The same, decrypted where the bytes lie, as a restore decodes what it read.
                let mut read = raw.clone();
                let got = d
                    .decode_in_place(&mut scratch, id, &mut read, len, phase)
                    .unwrap();
                assert_eq!(got, want);
                assert_eq!(got.as_ptr() as u64 % 4096, phase % 4096);
            }
        }
    }

    #[test]
    fn a_changed_byte_a_wrong_id_or_a_wrong_length_is_refused() {
        let d = Cipher::new(&key()).unwrap();
        let content = b"some content".repeat(10);
        let (id, raw) = sealed(&content, &content);
        let packed = zstd::bulk::compress(&content, 3).unwrap();
        let (zid, zraw) = sealed(&content, &packed);
        let zlen = NonZeroU32::new(content.len() as u32);
        for (id, raw, len) in [(&id, &raw, None), (&zid, &zraw, zlen)] {
            for i in [0, 16, raw.len() / 2, raw.len() - 1] {
                let mut bad = raw.clone();
                bad[i] ^= 1;
                let e = d
                    .decode(&mut Scratch::new().unwrap(), id, &bad, len, 0)
                    .unwrap_err();
                assert!(e.contains("authentication"), "{e}");
                let e = d
                    .decode_in_place(&mut Scratch::new().unwrap(), id, &mut bad, len, 0)
                    .unwrap_err();
                assert!(e.contains("authentication"), "{e}");
            }
        }
        let e = d
            .decode_in_place(
                &mut Scratch::new().unwrap(),
                &zid,
                &mut zraw[..20].to_vec(),
                zlen,
                0,
            )
            .unwrap_err();
        assert!(e.contains("too short"), "{e}");
        let e = d
            .decode(&mut Scratch::new().unwrap(), &id, &raw[..20], None, 0)
            .unwrap_err();
        assert!(e.contains("too short"), "{e}");
        let (other, _) = sealed(b"other content", b"other content");
        let e = d
            .decode(&mut Scratch::new().unwrap(), &other, &raw, None, 0)
            .unwrap_err();
        assert!(e.contains("does not match its id"), "{e}");
        let packed = zstd::bulk::compress(&content, 3).unwrap();
        let (id, raw) = sealed(&content, &packed);
        let e = d
            .decode(
                &mut Scratch::new().unwrap(),
                &id,
                &raw,
                NonZeroU32::new(content.len() as u32 - 1),
                0,
            )
            .unwrap_err();
        assert!(e.contains("decompress"), "{e}");
    }

    #[test]
    fn spread_runs_interleave_the_parts_of_the_restore_and_lose_none() {
        let runs = |n: u32| -> Vec<Run> {
            (0..n)
                .map(|i| Run {
                    pack: pack(1),
                    offset: i,
                    length: 1,
                    needs: 0..0,
                })
                .collect()
        };
        let order = |v: Vec<Run>| v.iter().map(|r| r.offset).collect::<Vec<_>>();
        // Ten runs, four writers: parts of three runs (the last one short).
        assert_eq!(order(spread(runs(10), 4)), [0, 3, 6, 9, 1, 4, 7, 2, 5, 8]);
        assert_eq!(order(spread(runs(8), 2)), [0, 4, 1, 5, 2, 6, 3, 7]);
        // Nothing to spread.
        assert_eq!(order(spread(runs(3), 4)), [0, 1, 2]);
        assert_eq!(order(spread(runs(5), 1)), [0, 1, 2, 3, 4]);
        for (n, ways) in [(1000, 4), (1001, 8), (17, 16)] {
            let mut got = order(spread(runs(n), ways));
            got.sort_unstable();
            assert_eq!(got, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn neighbouring_blobs_of_a_pack_are_one_read_and_packs_keep_their_first_need_order() {
        let mut p = Planner::default();
        p.add(id(1), pack(9), at(1000, 100), t(0, 0));
        p.add(id(2), pack(5), at(0, 50), t(1, 0));
        // Before blob 1 in its pack, needed after it: the run still starts at the lowest offset.
        p.add(id(3), pack(9), at(0, 1000), t(2, 0));
        p.add(id(4), pack(9), at(1100, 10), t(2, 1000));
        let (needs, runs) = p.finish();
        assert_eq!(
            runs,
            vec![
                Run {
                    pack: pack(9),
                    offset: 0,
                    length: 1110,
                    needs: 0..3
                },
                Run {
                    pack: pack(5),
                    offset: 0,
                    length: 50,
                    needs: 3..4
                },
            ]
        );
        let order: Vec<BlobId> = needs.iter().map(|n| n.id).collect();
        assert_eq!(order, vec![id(3), id(1), id(4), id(2)]);
    }

    #[test]
    fn a_blob_needed_twice_is_read_once_and_goes_to_both_places() {
        let mut p = Planner::default();
        p.add(id(1), pack(1), at(0, 100), t(0, 0));
        p.add(id(1), pack(1), at(0, 100), t(0, 68));
        p.add(id(1), pack(1), at(0, 100), t(3, 0));
        let (needs, runs) = p.finish();
        assert_eq!(runs.len(), 1);
        assert_eq!(needs.len(), 1);
        assert_eq!(needs[0].targets, vec![t(0, 0), t(0, 68), t(3, 0)]);
    }

    #[test]
    fn a_small_gap_is_read_through_and_a_large_one_splits_the_read() {
        let mut p = Planner::default();
        p.add(id(1), pack(1), at(0, 100), t(0, 0));
        // An unneeded blob of MAX_GAP bytes in between: spanned.
        p.add(id(2), pack(1), at(100 + MAX_GAP, 100), t(0, 68));
        // One byte more: a new read.
        let third = 200 + 2 * MAX_GAP + 1;
        p.add(id(3), pack(1), at(third, 100), t(0, 136));
        let (_, runs) = p.finish();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].offset, runs[0].length), (0, 200 + MAX_GAP));
        assert_eq!(runs[0].needs, 0..2);
        assert_eq!((runs[1].offset, runs[1].length), (third, 100));
    }

    #[test]
    fn reads_stop_at_max_read_and_a_larger_blob_is_read_alone() {
        let mut p = Planner::default();
        let blob = MAX_READ / 4;
        for i in 0..6u32 {
            p.add(id(i as u8), pack(1), at(i * blob, blob), t(0, u64::from(i)));
        }
        p.add(id(50), pack(1), at(6 * blob, 3 * MAX_READ), t(1, 0));
        p.add(id(51), pack(1), at(6 * blob + 3 * MAX_READ, 10), t(1, 1));
        let (_, runs) = p.finish();
        let shape: Vec<(u32, u32, Range<usize>)> = runs
            .iter()
            .map(|r| (r.offset, r.length, r.needs.clone()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, MAX_READ, 0..4),
                (4 * blob, 2 * blob, 4..6),
                (6 * blob, 3 * MAX_READ, 6..7),
                (6 * blob + 3 * MAX_READ, 10, 7..8),
            ]
        );
        assert!(runs
            .iter()
            .all(|r| r.length <= MAX_READ || r.needs.len() == 1));
    }
}
