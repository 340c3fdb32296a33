//! TLS material: a configured certificate, or a self-signed one generated on first start.

use std::path::Path;

use anyhow::Context;

/// Returns (cert PEM path, key PEM path), generating a self-signed pair under `dir` if absent.
pub fn ensure_self_signed(dir: &Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names).context("generating certificate")?;
    rsvault_jobs::fsutil::write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
    rsvault_jobs::fsutil::write_atomic(&cert, generated.cert.pem().as_bytes())?;
    Ok((cert, key))
}
