//! The operator's client: `rsvault job …`, `rsvault maintenance …`, `rsvault retention preview`.
//! Thin HTTPS calls to a running server, authenticated with a token signed by its data dir's key.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

pub const API_VERSION: &str = "2026-02-01";

#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// Server URL.
    #[arg(
        long,
        default_value = "https://127.0.0.1:8443",
        env = "RSVAULT_URL",
        global = true
    )]
    pub url: String,
    /// Data directory of the server (its admin token and certificate are read from here).
    #[arg(
        long,
        default_value = "./rsvault-data",
        env = "RSVAULT_DATA",
        global = true
    )]
    pub data: PathBuf,
    /// Bearer token (default: a short-lived token signed with the deployment's key in DATA: the
    /// admin's, or `--principal-id`'s).
    #[arg(long, env = "RSVAULT_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The principal the default token names (it needs a role assignment).
    #[arg(long, env = "RSVAULT_PRINCIPAL_ID", global = true)]
    pub principal_id: Option<String>,
    /// Print raw JSON.
    #[arg(long, global = true, value_parser = ["json", "table"], default_value = "table")]
    pub output: String,
}

pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
    pub json: bool,
}

/// Accepts a vault ARM id or `SUBSCRIPTION/RESOURCE_GROUP/VAULT`.
pub fn vault_path(v: &str) -> anyhow::Result<String> {
    if v.starts_with('/') {
        return Ok(v.trim_end_matches('/').to_string());
    }
    match v.split('/').collect::<Vec<_>>().as_slice() {
        [sub, rg, name] => Ok(format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{name}"
        )),
        _ => bail!("--vault takes a vault id (/subscriptions/…/vaults/NAME) or SUBSCRIPTION/RESOURCE_GROUP/VAULT"),
    }
}

impl Client {
    pub fn new(c: &Conn) -> anyhow::Result<Self> {
        let token = match &c.token {
            Some(t) => t.clone(),
            None => {
                let config = crate::server::load_config(&c.data, None)?;
                let key = rsvault_api::auth::SigningKey::load_or_create(
                    &rsvault_api::auth::signing_key_path(&c.data, &config),
                )
                .context("reading the token-signing key of DATA (or pass --token)")?;
                let issuer = rsvault_api::auth::issuer_name(&config);
                match &c.principal_id {
                    Some(p) => rsvault_api::auth::issue_token(&key, &issuer, p, 600)?,
                    None => rsvault_api::auth::issue_admin_token(&key, &issuer, 600)?,
                }
            }
        };
        let mut b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
        let cert = c.data.join("tls/cert.pem");
        if let Ok(pem) = std::fs::read(&cert) {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Self {
            http: b.build()?,
            base: c.url.trim_end_matches('/').to_string(),
            token,
            json: c.output == "json",
        })
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Value)> {
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{}{path}{sep}api-version={API_VERSION}", self.base)
        };
        let mut rb = self
            .http
            .request(method.parse()?, &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text()?;
        let v: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            let code = v["error"]["code"].as_str().unwrap_or("");
            let msg = v["error"]["message"].as_str().unwrap_or("");
            bail!("{status} {code}: {msg}");
        }
        Ok((status, headers, v))
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call("GET", path, None)?.2)
    }

    /// Follows an async operation to its job id.
    pub fn job_of(&self, headers: &reqwest::header::HeaderMap) -> anyhow::Result<String> {
        let op = headers
            .get("azure-asyncoperation")
            .and_then(|h| h.to_str().ok())
            .context("the server sent no Azure-AsyncOperation header")?
            .to_string();
        self.job_of_operation(&op)
    }

    /// Follows an async operation's URL (its `Azure-AsyncOperation`) to its job id.
    pub fn job_of_operation(&self, op: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.get(op)?;
            if s["status"] != "InProgress" {
                return s["properties"]["jobId"]
                    .as_str()
                    .map(String::from)
                    .context("the operation names no job");
            }
            if Instant::now() > deadline {
                bail!("operation {op} did not finish");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn print_job(&self, j: &Value) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(j).unwrap_or_default());
            return;
        }
        let p = &j["properties"];
        println!(
            "{:<36}  {:<18} {:<22} {:<14} {:<26} {}",
            j["name"].as_str().unwrap_or(""),
            p["operation"].as_str().unwrap_or(""),
            p["status"].as_str().unwrap_or(""),
            p["entityFriendlyName"].as_str().unwrap_or(""),
            p["startTime"].as_str().unwrap_or(""),
            p["extendedInfo"]["progressPercentage"]
                .as_f64()
                .map(|x| format!("{x:.1}%"))
                .unwrap_or_default(),
        );
    }

    /// Polls a job until it is finished, showing its progress: a bar with the ETA redrawn in
    /// place on a terminal, else a line per change.
    pub fn wait_job(&self, vault: &str, job: &str, timeout: Duration) -> anyhow::Result<Value> {
        use std::io::{IsTerminal, Write};
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        let bar = std::io::stderr().is_terminal() && !self.json;
        loop {
            let j = self.get(&format!("{vault}/backupJobs/{job}"))?;
            let status = j["properties"]["status"].as_str().unwrap_or("").to_string();
            if !matches!(status.as_str(), "InProgress" | "Cancelling") {
                if bar && !last.is_empty() {
                    eprintln!();
                }
                return Ok(j);
            }
            let ext = &j["properties"]["extendedInfo"];
            let bag = &ext["propertyBag"];
            let pct = ext["progressPercentage"].as_f64().or_else(|| {
                bag["Progress Percentage"]
                    .as_str()
                    .and_then(|p| p.parse().ok())
            });
            let eta = ext["estimatedRemainingDuration"]
                .as_str()
                .or_else(|| bag["Estimated Remaining Duration"].as_str())
                .map(|d| format!(" ETA {}", d.trim_start_matches("PT").to_ascii_lowercase()))
                .unwrap_or_default();
            let phase = bag["Phase"].as_str().unwrap_or("");
            let line = format!(
                "{status} {}{eta} {phase}",
                pct.map(|p| format!("{p:.1}%")).unwrap_or_default()
            );
            if bar {
                let filled = (pct.unwrap_or(0.0) / 100.0 * 30.0).round() as usize;
                eprint!(
                    "\r{job}: [{}{}] {line}\x1b[K",
                    "#".repeat(filled.min(30)),
                    "-".repeat(30 - filled.min(30))
                );
                let _ = std::io::stderr().flush();
                last = line;
            } else if line != last && !self.json {
                eprintln!("{job}: {line}");
                last = line;
            }
            if Instant::now() > deadline {
                bail!("job {job} is still {status} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
