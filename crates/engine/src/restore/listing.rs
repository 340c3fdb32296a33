//! The entries of a snapshot below a directory, listed with the trees loaded on every core.
//!
//! rustic_core's `Repository::ls` loads one tree after another (its own note: "not parallel at
//! the moment"), and a restore waited for the whole listing before it wrote anything: for the
//! benchmark's 30 177 files in 2 545 directories, the longest serial step left. Trees are read
//! and decoded here as the contents are ([`Trees`]): `Repository::get_tree` created a zstd
//! context and fresh buffers for every tree, a third of the listing's time.

use std::cell::RefCell;
use std::path::Path;

use rayon::prelude::*;
use rustic_core::repofile::Node;
use rustic_core::{BlobId, IndexedFullStatus, Repository, TreeId};

use super::packs::{self, Cipher, Reads, Scratch};
use super::{confined, Entry};
use crate::repo::map_err;
use crate::{Error, JobContext, Result};

/// Reads trees from the repository's packs as the contents are read ([`Reads`]), each decoded
/// and checked against its id.
pub(super) struct Trees<'a> {
    pub(super) r: &'a Repository<IndexedFullStatus>,
    pub(super) decoder: &'a Cipher,
    pub(super) packs: packs::Source<'a>,
}

/// A tree as stored: its nodes (`null` in some writers' empty trees).
#[derive(serde::Deserialize)]
struct Tree {
    nodes: Option<Vec<Node>>,
}

thread_local! {
    /// The thread's decoding state and reads, kept from tree to tree.
    static SCRATCH: RefCell<Option<(Scratch, Reads)>> = const { RefCell::new(None) };
}

impl Trees<'_> {
    /// The nodes of tree `id`.
    fn load(&self, id: &TreeId) -> Result<Vec<Node>> {
        let ie = self.r.get_index_entry(id).map_err(map_err)?;
        let failed = |what: String| Error::Repository(format!("tree {id}: {what}"));
        SCRATCH.with_borrow_mut(|slot| {
            if slot.is_none() {
                *slot = Some((Scratch::new().map_err(&failed)?, Reads::default()));
            }
            let (scratch, reads) = slot.as_mut().expect("set");
            let (offset, length) = (ie.location.offset, ie.location.length);
            let buf = reads
                .read(self.packs, &ie.pack, offset, length)
                .map_err(&failed)?;
            let blob = BlobId::from(*id);
            let json = self
                .decoder
                .decode_in_place(scratch, &blob, buf, ie.location.uncompressed_length, 0)
                .map_err(&failed)?;
            let tree: Tree =
                serde_json::from_slice(json).map_err(|e| failed(format!("not a tree: {e}")))?;
            Ok(tree.nodes.unwrap_or_default())
        })
    }

    /// Every entry below the tree `tree` of the directory at `base`, in the order
    /// `Repository::ls` gives them (depth first, each tree in its own order), each with its path
    /// below the restore target.
    pub(super) fn below(
        &self,
        ctx: &dyn JobContext,
        tree: TreeId,
        base: &Path,
    ) -> Result<Vec<Entry>> {
        if ctx.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let nodes = self.load(&tree)?;
        let parts: Vec<Result<Vec<Entry>>> = nodes
            .into_par_iter()
            .map(|node| {
                let rel = confined(&base.join(node.name()))?;
                let sub = node.subtree.filter(|_| node.is_dir());
                let mut out = Vec::new();
                if !rel.as_os_str().is_empty() {
                    out.push(Entry {
                        rel: rel.clone(),
                        node,
                    });
                }
                if let Some(id) = sub {
                    out.extend(self.below(ctx, id, &rel)?);
                }
                Ok(out)
            })
            .collect();
        let mut entries = Vec::new();
        for part in parts {
            entries.extend(part?);
        }
        Ok(entries)
    }
}
