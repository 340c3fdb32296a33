//! Vault repository keys at rest: never stored in plain text. Each key is wrapped (XChaCha20-
//! Poly1305, a random nonce per wrap, the vault's store key as associated data) with the
//! deployment's key-encryption key (KEK), which lives outside the store: `[secrets] key_file`
//! (default `DATA/master.key`, 0600, created on first start) or `RSVAULT_MASTER_KEY` (base64 of
//! 32 bytes). Every node of a deployment names the same key file.
//!
//! Wrapped form: `kek1:<kek id>:<base64(nonce || ciphertext)>`, where the id (the first bytes
//! of the KEK's SHA-256) tells which KEK wrapped it, so a rotation cut short is recoverable.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

/// The environment variable that supplies the KEK instead of the key file.
pub const MASTER_KEY_ENV: &str = "RSVAULT_MASTER_KEY";
const PREFIX: &str = "kek1";

#[derive(Clone)]
pub struct Kek {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.id)
    }
}

impl Kek {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        let id = Sha256::digest(key)[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self { key, id }
    }

    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    /// Which KEK this is (safe to print and to store next to what it wrapped).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Parses the key file's or the environment's text: base64 of 32 bytes.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let bytes = B64
            .decode(text.trim())
            .context("the master key is not base64")?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the master key must be 32 bytes"))?;
        Ok(Self::from_bytes(key))
    }

    pub fn encode(&self) -> String {
        B64.encode(self.key)
    }

    /// The deployment's KEK: `RSVAULT_MASTER_KEY` if set, else `path` (created 0600 if missing).
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return Self::parse(&text).with_context(|| format!("reading {MASTER_KEY_ENV}"));
        }
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kek = Self::generate();
                if !crate::fsutil::create_private(path, kek.encode().as_bytes())? {
                    // Another node of the deployment created it first: use theirs.
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    return Self::parse(&text)
                        .with_context(|| format!("reading {}", path.display()));
                }
                tracing::warn!(
                    key_file = %path.display(),
                    "created the key-encryption key: without it (or a `rsvault vault key export` of each vault) the backups cannot be read; keep a copy somewhere safe"
                );
                Ok(kek)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Wraps `secret` for the vault stored under `context`.
    pub fn wrap(&self, secret: &str, context: &str) -> String {
        let nonce: [u8; 24] = rand::random();
        let ct = XChaCha20Poly1305::new((&self.key).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("encryption of a short key cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("{PREFIX}:{}:{}", self.id, B64.encode(blob))
    }

    /// Unwraps what [`Kek::wrap`] made for `context`.
    pub fn unwrap(&self, wrapped: &str, context: &str) -> anyhow::Result<String> {
        let (id, blob) = parse_wrapped(wrapped)?;
        anyhow::ensure!(
            id == self.id,
            "this vault key was wrapped with key-encryption key {id}, not {} (the configured one)",
            self.id
        );
        let blob = B64.decode(blob).context("a wrapped vault key is damaged")?;
        anyhow::ensure!(blob.len() > 24, "a wrapped vault key is damaged");
        let (nonce, ct) = blob.split_at(24);
        let plain = XChaCha20Poly1305::new((&self.key).into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "a wrapped vault key does not open with the key-encryption key {}",
                    self.id
                )
            })?;
        String::from_utf8(plain).context("a wrapped vault key is damaged")
    }
}

/// The KEK id a wrapped key names, and its payload.
pub fn parse_wrapped(wrapped: &str) -> anyhow::Result<(&str, &str)> {
    let mut parts = wrapped.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(PREFIX), Some(id), Some(blob)) => Ok((id, blob)),
        _ => anyhow::bail!("a vault key is not in wrapped form"),
    }
}

/// Where a rotation writes the new KEK before the store is re-wrapped.
pub fn pending_path(key_file: &Path) -> PathBuf {
    let mut p = key_file.as_os_str().to_owned();
    p.push(".new");
    PathBuf::from(p)
}

/// Secrets every node of a deployment shares, wrapped by the KEK (vault "" , key = the name).
pub const K_SECRET: &str = "secret";
/// The key that signs export download links (`blobSasKey`), shared so any node serves any link.
pub const EXPORT_SIGNING_KEY: &str = "export-signing-key";
/// The bootstrap admin bearer token, shared so every node accepts it.
pub const ADMIN_TOKEN: &str = "admin-token";

/// One shared secret as stored: its name (also the AEAD context) and its wrapped value.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SharedSecret {
    pub(crate) name: String,
    pub(crate) wrapped: String,
}

/// The secret every node shares under `name`: the stored one, or `fresh()` stored now when there
/// is none (the first node to get there wins; the others read its value).
pub fn shared_secret(
    store: &rsvault_store::Store,
    kek: &Kek,
    name: &str,
    fresh: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    let wrapped = store.tx(|tx| {
        if let Some(s) = tx.get::<SharedSecret>(K_SECRET, "", name)? {
            return Ok(s.wrapped);
        }
        let wrapped = kek.wrap(&fresh(), name);
        tx.put(
            K_SECRET,
            "",
            name,
            "",
            &SharedSecret {
                name: name.into(),
                wrapped: wrapped.clone(),
            },
        )?;
        Ok(wrapped)
    })?;
    kek.unwrap(&wrapped, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_with_their_kek_and_context() {
        let kek = Kek::generate();
        let w = kek.wrap("hunter2", "sub/rg/v1");
        assert!(!w.contains("hunter2"));
        assert_eq!(kek.unwrap(&w, "sub/rg/v1").unwrap(), "hunter2");
        assert!(kek.unwrap(&w, "sub/rg/v2").is_err(), "bound to its vault");
        assert!(Kek::generate().unwrap(&w, "sub/rg/v1").is_err());
        let mut damaged = w.clone();
        damaged.pop();
        damaged.push(if w.ends_with('A') { 'B' } else { 'A' });
        assert!(kek.unwrap(&damaged, "sub/rg/v1").is_err());
        assert_eq!(Kek::parse(&kek.encode()).unwrap().id(), kek.id());
    }
}
