//! Blobs as restic's format stores them: `nonce (16) | AES-256-CTR ciphertext | Poly1305-AES MAC
//! (16)` under the repository's master key, zstd-compressed inside when the index gives an
//! uncompressed length. rustic_core 0.13 keeps its encrypting backend crate-private, so rsvault
//! seals and opens blobs itself ([`Cipher`]) with the same AEAD crate rustic_core
//! uses: restores read runs of blobs straight from packs, and backups write their own packs.

use std::num::NonZeroU32;

use aes256ctr_poly1305aes::aead::AeadInPlace;
use aes256ctr_poly1305aes::{Aes256CtrPoly1305Aes, Key, Nonce, Tag};
use rustic_core::repofile::MasterKey;
use rustic_core::BlobId;

/// Seals and opens repository data with the master key; decodes and checks blobs read raw from
/// packs.
pub(crate) struct Cipher(Aes256CtrPoly1305Aes);

impl Cipher {
    /// A decoder with the repository's master key: 32 bytes of AES key, then the 16-byte `k`
    /// and `r` of Poly1305-AES (restic's key layout).
    pub(crate) fn new(key: &MasterKey) -> Result<Self, String> {
        let (aes, k, r) = (&key.encrypt, &key.mac.k, &key.mac.r);
        if aes.len() != 32 || k.len() != 16 || r.len() != 16 {
            return Err(format!(
                "the repository's master key has an unexpected shape ({}/{}/{} bytes)",
                aes.len(),
                k.len(),
                r.len()
            ));
        }
        let mut bytes = Key::default();
        bytes[..32].copy_from_slice(aes);
        bytes[32..48].copy_from_slice(k);
        bytes[48..].copy_from_slice(r);
        Ok(Self(Aes256CtrPoly1305Aes::new(&bytes)))
    }

    /// Appends `nonce | ciphertext | MAC` of `plain` to `out`, with a fresh random nonce (as
    /// restic and rustic_core seal every blob and file).
    pub(crate) fn seal_into(&self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut nonce = Nonce::default();
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
        out.reserve(plain.len() + 32);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .0
            .encrypt_in_place_detached(&nonce, &[], &mut out[start..])
            .map_err(|e| format!("encryption failed: {e}"))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// The content of blob `id` from `raw`, its bytes in the pack, decoded in `scratch` at an
    /// address `phase` bytes past a page boundary (modulo [`PAGE`]): a restore passes the
    /// content's offset in its file, so the file's whole pages in it are page-aligned in memory
    /// and can be written directly from there. `Err`: why it cannot be trusted.
    pub(crate) fn decode<'s>(
        &self,
        scratch: &'s mut Scratch,
        id: &BlobId,
        raw: &[u8],
        uncompressed: Option<NonZeroU32>,
        phase: u64,
    ) -> Result<&'s [u8], String> {
        long_enough(id, raw)?;
        let (nonce, rest) = raw.split_at(16);
        let (ciphertext, tag) = rest.split_at(rest.len() - 16);
        let Scratch {
            zstd,
            cipher,
            plain,
        } = scratch;
        let phase = (phase % PAGE as u64) as usize;
        // Decrypted where the content ends up if it is stored uncompressed.
        let cipher = at_phase(
            cipher,
            ciphertext.len(),
            if uncompressed.is_some() { 0 } else { phase },
        );
        cipher.copy_from_slice(ciphertext);
        self.decrypt(id, nonce, cipher, tag)?;
        match uncompressed {
            Some(len) => decompress(zstd, plain, id, cipher, len, phase),
            None => checked(id, cipher),
        }
    }

    /// [`Cipher::decode`] of a blob whose bytes in `raw` may be overwritten: a compressed blob
    /// is decrypted where it lies, which saves copying it (an uncompressed one is still decrypted
    /// into `scratch`, at its phase).
    pub(crate) fn decode_in_place<'s>(
        &self,
        scratch: &'s mut Scratch,
        id: &BlobId,
        raw: &mut [u8],
        uncompressed: Option<NonZeroU32>,
        phase: u64,
    ) -> Result<&'s [u8], String> {
        let Some(len) = uncompressed else {
            return self.decode(scratch, id, raw, None, phase);
        };
        long_enough(id, raw)?;
        let (nonce, rest) = raw.split_at_mut(16);
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - 16);
        self.decrypt(id, nonce, ciphertext, tag)?;
        let phase = (phase % PAGE as u64) as usize;
        decompress(
            &mut scratch.zstd,
            &mut scratch.plain,
            id,
            ciphertext,
            len,
            phase,
        )
    }

    fn decrypt(
        &self,
        id: &BlobId,
        nonce: &[u8],
        data: &mut [u8],
        tag: &[u8],
    ) -> Result<(), String> {
        self.0
            .decrypt_in_place_detached(Nonce::from_slice(nonce), &[], data, Tag::from_slice(tag))
            .map_err(|_| {
                format!("blob {id} fails its authentication check (its bytes in the pack were changed or damaged)")
            })
    }
}

/// Whether `raw` can be a sealed blob: nonce (16 bytes), ciphertext, MAC (16 bytes).
fn long_enough(id: &BlobId, raw: &[u8]) -> Result<(), String> {
    if raw.len() < 32 {
        return Err(format!(
            "blob {id} is {} bytes long in its pack, too short to be encrypted data",
            raw.len()
        ));
    }
    Ok(())
}

/// The decrypted `compressed` content, decompressed into `plain` at `phase` and checked.
fn decompress<'s>(
    zstd: &mut zstd::bulk::Decompressor<'static>,
    plain: &'s mut Vec<u8>,
    id: &BlobId,
    compressed: &[u8],
    len: NonZeroU32,
    phase: usize,
) -> Result<&'s [u8], String> {
    let len = len.get() as usize;
    let plain = at_phase(plain, len, phase);
    // A blob that decompresses to more than its index says fails here too (the buffer is
    // exactly that long).
    let n = zstd.decompress_to_buffer(compressed, plain).map_err(|e| {
        format!("blob {id} does not decompress to the {len} bytes its index says: {e}")
    })?;
    if n != len {
        return Err(format!(
            "blob {id} decompresses to {n} bytes where the index says {len}"
        ));
    }
    checked(id, plain)
}

/// `data`, if it is the content blob `id` names.
fn checked<'d>(id: &BlobId, data: &'d [u8]) -> Result<&'d [u8], String> {
    if !id.blob_matches_reader(data.len() as u64, &mut &data[..]) {
        return Err(format!("blob {id}'s content does not match its id"));
    }
    Ok(data)
}

/// The alignment [`Cipher::decode`] places content at: a memory page, the unit of direct I/O.
pub(crate) const PAGE: usize = 4096;

/// `len` bytes of `buf` (grown as needed) starting `phase` bytes past a page boundary.
fn at_phase(buf: &mut Vec<u8>, len: usize, phase: usize) -> &mut [u8] {
    if buf.len() < len + PAGE {
        buf.resize(len + PAGE, 0);
    }
    let start = (phase + PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
    &mut buf[start..start + len]
}

/// One writer thread's decoding state, reused from blob to blob: a zstd context (creating one
/// per blob was 5% of a restore's CPU) and the buffers the blob is decrypted and decompressed
/// into.
pub(crate) struct Scratch {
    zstd: zstd::bulk::Decompressor<'static>,
    cipher: Vec<u8>,
    plain: Vec<u8>,
}

impl Scratch {
    pub(crate) fn new() -> Result<Self, String> {
        Ok(Self {
            zstd: zstd::bulk::Decompressor::new()
                .map_err(|e| format!("cannot create a zstd context: {e}"))?,
            cipher: Vec::new(),
            plain: Vec::new(),
        })
    }
}
