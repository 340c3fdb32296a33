//! The deployment's token-signing key (ES256, P-256) and its public half as a JWK.
//!
//! Key generation and signatures come from `rcgen` (ring) and `jsonwebtoken`; nothing here does
//! cryptography by hand. The private key lives only in its file (0600); the public key is also
//! published in the store so every node of a deployment accepts the tokens of every other.

use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public JWK (`kty`, `crv`, `x`, `y`, `kid`, `use`, `alg`).
    pub jwk: Value,
}

impl SigningKey {
    /// Reads the PKCS#8 PEM key at `path`, creating one (0600) if there is none.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        let pem = match std::fs::read_to_string(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .context("generating the token-signing key")?;
                let pem = kp.serialize_pem();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                rsvault_jobs::fsutil::write_private(path, pem.as_bytes())?;
                pem
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::from_pem(&pem).with_context(|| format!("loading the key in {}", path.display()))
    }

    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let kp = rcgen::KeyPair::from_pem(pem)?;
        anyhow::ensure!(
            kp.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256),
            "the token-signing key must be an ECDSA P-256 key (ES256)"
        );
        let raw = kp.public_key_raw();
        anyhow::ensure!(
            raw.len() == 65 && raw[0] == 4,
            "unexpected P-256 public key encoding"
        );
        let x = URL_SAFE_NO_PAD.encode(&raw[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&raw[33..65]);
        // RFC 7638 thumbprint: the required members, in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes())?;
        let decoding = DecodingKey::from_ec_components(&x, &y)?;
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"});
        Ok(Self {
            kid,
            encoding,
            decoding,
            jwk,
        })
    }

    /// A compact JWS of `claims`, with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&h, claims, &self.encoding)?)
    }
}
