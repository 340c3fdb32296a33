//! TLS material: a configured certificate (`[server] tls_cert` / `tls_key`, reloaded on SIGHUP), or
//! a self-signed one generated on first start — valid 397 days, renewed a month before it expires,
//! with the listen address among its names — and the certificate's SHA-256 fingerprint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use chrono::Datelike;
use serde_json::json;
use sha2::{Digest, Sha256};

use rsvault_jobs::config::ServerConfig;

/// Returns (cert PEM path, key PEM path): the configured pair, else the generated one.
pub fn material(
    data: &Path,
    cfg: &ServerConfig,
    listen: SocketAddr,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Ok((c.clone(), k.clone())),
        _ => ensure_self_signed(&data.join("tls"), listen),
    }
}

/// The names a generated certificate carries: loopback, and the listen address when it is a
/// specific one (with the host name when the server listens on every address).
fn names_for(listen: SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ip = listen.ip();
    if ip.is_unspecified() {
        if let Some(h) = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
        {
            names.push(h);
        }
    } else if !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names
}

/// Returns (cert PEM path, key PEM path), generating a self-signed pair under `dir` if there is
/// none, if it expires within 30 days, or if it does not name the listen address.
pub fn ensure_self_signed(dir: &Path, listen: SocketAddr) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let meta_path = dir.join("generated.json");
    let names = names_for(listen);
    if cert.exists() && key.exists() {
        // What an earlier start generated (a certificate without this record predates it and
        // named the loopback addresses, valid for decades).
        let meta: serde_json::Value = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"names": ["localhost", "127.0.0.1", "::1"]}));
        let has = |n: &String| {
            meta["names"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == n.as_str()))
        };
        let fresh = meta["notAfter"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_none_or(|t| t > chrono::Utc::now() + chrono::Duration::days(30));
        if fresh && names.iter().all(has) {
            return Ok((cert, key));
        }
        tracing::warn!(
            "renewing the generated TLS certificate (expiring, or a new listen address)"
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut params = rcgen::CertificateParams::new(names.clone()).context("certificate names")?;
    let ymd = |t: chrono::DateTime<chrono::Utc>| {
        rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8)
    };
    let now = chrono::Utc::now();
    // 397 days: the longest validity clients accept for a server certificate.
    let not_after = now + chrono::Duration::days(397);
    params.not_before = ymd(now - chrono::Duration::days(1));
    params.not_after = ymd(not_after);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rsvault");
    let key_pair = rcgen::KeyPair::generate().context("generating the TLS key")?;
    let generated = params
        .self_signed(&key_pair)
        .context("generating certificate")?;
    rsvault_jobs::fsutil::write_private(&key, key_pair.serialize_pem().as_bytes())?;
    rsvault_jobs::fsutil::write_atomic(&cert, generated.pem().as_bytes())?;
    let meta = json!({"names": names, "notAfter": rsvault_types::arm::time(not_after)});
    rsvault_jobs::fsutil::write_atomic(&meta_path, meta.to_string().as_bytes())?;
    Ok((cert, key))
}

/// The SHA-256 fingerprint of the first certificate in a PEM file, as `AB:CD:…`.
pub fn fingerprint(cert_pem: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(cert_pem)
        .with_context(|| format!("reading {}", cert_pem.display()))?;
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .with_context(|| format!("{} holds no PEM certificate", cert_pem.display()))?;
    anyhow::ensure!(
        !der.is_empty(),
        "{} holds no PEM certificate",
        cert_pem.display()
    );
    Ok(Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}
