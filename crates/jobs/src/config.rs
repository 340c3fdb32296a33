//! The TOML configuration: sources on this host, restore roots, limits and server knobs.

use std::path::{Path, PathBuf};

use rsvault_types::model::{SourceInfo, Workload};
use serde::Deserialize;

/// Event names as configured in `events` (the CloudEvents `type` is `rsvault.` + the name).
pub const EVENTS: &[&str] = &[
    "job.failed",
    "job.completed_with_warnings",
    "item.stale",
    "drill.failed",
];

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The only directories restores may write below.
    #[serde(default)]
    pub restore_roots: Vec<PathBuf>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    #[serde(default)]
    pub jobs: JobsConfig,
    #[serde(default)]
    pub runner: RunnerConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub secrets: SecretsConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub store: StoreConfig,
    /// Where vault repositories live (a directory, S3 or Azure Blob); every node of a
    /// deployment must reach the same place.
    #[serde(default)]
    pub repository: crate::repository::RepositoryConfig,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Restore roots named as storage accounts, so clients that take a storage account (`az
    /// backup restore restore-disks --storage-account`) can name one.
    #[serde(default, rename = "restore_account")]
    pub restore_accounts: Vec<RestoreAccount>,
}

/// A restore root served as `Microsoft.Storage/storageAccounts/{name}` in `resource_group`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestoreAccount {
    pub resource_group: String,
    pub name: String,
    /// One of `restore_roots`: what a restore staged in this account writes below.
    pub root: PathBuf,
    /// Azure region reported for the account (default: that of the first vault created).
    #[serde(default)]
    pub location: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// Jobs this node runs at once (0 = the number of CPUs); further jobs wait queued.
    pub max_concurrent_jobs: usize,
    /// A node silent this long loses its running jobs (they end `Failed`, naming it).
    pub lease_seconds: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_jobs: 0,
            lease_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// The key-encryption key that wraps every vault key (default `DATA/master.key`; every
    /// node of a deployment names the same file). `RSVAULT_MASTER_KEY` overrides it.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// `[[notify.webhook]]`: receivers of CloudEvents.
    pub webhook: Vec<WebhookConfig>,
    /// Seconds before a failed delivery is tried again; doubling each time, at most an hour.
    pub retry_seconds: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            webhook: vec![],
            retry_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The events sent here (default: all of `EVENTS`).
    #[serde(default)]
    pub events: Vec<String>,
    /// A file holding the HMAC key of `X-Rsvault-Signature` (no header without one).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` without a token (for a scraper on a trusted network).
    pub public: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://USER@HOST:PORT/DBNAME` for a store that several nodes share (default: SQLite
    /// at `DATA/rsvault.db`). `RSVAULT_STORE_URL` overrides it.
    pub url: Option<String>,
}

/// The environment variable that names the store (over `[store] url`).
pub const STORE_URL_ENV: &str = "RSVAULT_STORE_URL";

impl StoreConfig {
    /// The store URL in effect: the environment's, else the config's; `None` = embedded SQLite.
    pub fn effective_url(&self) -> Option<String> {
        std::env::var(STORE_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| self.url.clone())
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's name in leases and in jobs' `Node` (default: host name and listen port).
    pub id: Option<String>,
}

impl RunnerConfig {
    /// The effective cap: the configured one, or one job per CPU.
    pub fn max_concurrent_jobs(&self) -> usize {
        match self.max_concurrent_jobs {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Run policy schedules, maintenance and job-history retention on this node.
    pub enabled: bool,
    /// Seconds between scheduler passes.
    pub tick_seconds: u64,
    /// Times a failed scheduled backup is tried again, each as a job of its own.
    pub retries: u32,
    /// Seconds before the first retry; each further retry waits twice as long as the one before.
    pub retry_delay_seconds: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_seconds: 30,
            retries: 2,
            retry_delay_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Hours between garbage-collection jobs per vault (0 = only on demand).
    pub gc_interval_hours: u64,
    /// Hours between verification jobs per vault (0 = only on demand).
    pub verify_interval_hours: u64,
    /// Share of pack data scheduled verification re-reads, in percent (1..=100).
    pub verify_read_data_percent: u8,
    /// Hours between restore drills per vault (0 = only on demand).
    pub drill_interval_hours: u64,
    /// Share of each item's files a drill restores and compares, in percent (1..=100).
    pub drill_sample_percent: u8,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            gc_interval_hours: 24,
            verify_interval_hours: 168,
            verify_read_data_percent: 10,
            drill_interval_hours: 168,
            drill_sample_percent: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Finished jobs older than this many days are deleted.
    pub history_days: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self { history_days: 180 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `Retry-After` seconds on 202 answers.
    pub retry_after_seconds: u64,
    /// Job list page size (at most 200).
    pub page_size: usize,
    /// Maximum request body in bytes.
    pub max_body_bytes: usize,
    /// Address-space limit of each engine worker process, in MiB (0 = the engine default).
    pub worker_memory_mib: u64,
    /// The base of every absolute URL handed out (`Location`, `Azure-AsyncOperation`,
    /// `nextLink`), e.g. `https://backup.example.com`. Unset: the request's own authority.
    pub public_url: Option<String>,
    /// Build absolute URLs from `X-Forwarded-Host` (only behind a proxy that sets it).
    pub trust_forwarded_host: bool,
    /// A certificate chain (PEM) to serve instead of the generated one; reloaded on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            retry_after_seconds: 5,
            page_size: 200,
            max_body_bytes: 4 << 20,
            worker_memory_mib: 0,
            public_url: None,
            trust_forwarded_host: false,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Per-job read throughput limit for backups, bytes per second (0 = unlimited).
    pub backup_bytes_per_second: u64,
    /// Reads (GET) per caller and subscription per minute; past it, 429 (0 = unlimited).
    pub reads_per_minute: u32,
    /// Writes and actions per caller and subscription per minute (0 = unlimited).
    pub writes_per_minute: u32,
    /// Seconds a new connection may take for its TLS handshake, and then for its first request's
    /// headers.
    pub header_read_timeout_seconds: u64,
    /// Seconds a connection may stay idle (no bytes), and may take for a later request's headers.
    pub idle_timeout_seconds: u64,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            backup_bytes_per_second: 0,
            // ARM's own budgets per principal and subscription are 12,000 reads and 1,200 writes
            // an hour; a minute of those at once is generous for any script.
            reads_per_minute: 12_000,
            writes_per_minute: 1_200,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            max_connections: 1024,
        }
    }
}

/// Who may call: the deployment's own token issuer and external OpenID Connect issuers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The `iss` of tokens `rsvault token issue` signs (default: `server.public_url`, else
    /// `https://rsvault.local/`).
    pub token_issuer: Option<String>,
    /// The ES256 key those tokens are signed with (default `DATA/token-signing-key.pem`,
    /// created 0600 on first use; every node of a deployment names the same file).
    pub signing_key_file: Option<PathBuf>,
    /// Lifetime of issued tokens when `--expires-in` is not given.
    pub default_token_seconds: u64,
    /// `[[auth.issuer]]`: external issuers (e.g. Microsoft Entra ID) whose tokens are accepted.
    #[serde(rename = "issuer")]
    pub issuers: Vec<ExternalIssuer>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_issuer: None,
            signing_key_file: None,
            default_token_seconds: 3600,
            issuers: Vec::new(),
        }
    }
}

/// `[[auth.issuer]]`: an OpenID Connect issuer and where its signing keys are published.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuer {
    /// The exact `iss` of its tokens, e.g. `https://login.microsoftonline.com/{tenant}/v2.0`.
    pub issuer: String,
    /// The `aud` its tokens must carry (e.g. `https://management.azure.com/`).
    pub audience: String,
    /// A JWKS document on disk (re-read when it changes).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (HTTPS), fetched on first use and again for an unknown `kid`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

/// `[retention]`: how deleted backup data is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days a soft-deleted item's backup data is kept before it is purged, for vaults that do
    /// not set their own `softDeleteRetentionPeriodInDays`. A fraction of a day is allowed (tests
    /// shorten the period this way).
    pub soft_delete_days: f64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            soft_delete_days: 14.0,
        }
    }
}

/// `[audit]`: the activity log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days activity-log entries are kept.
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    Vm {
        resource_group: String,
        name: String,
        disks: Vec<PathBuf>,
        /// Azure region of the VM (default: that of the first vault created).
        #[serde(default)]
        location: Option<String>,
        /// The subscriptions the VM appears in (default: every subscription).
        #[serde(default)]
        subscriptions: Vec<String>,
    },
    Fileshare {
        resource_group: String,
        storage_account: String,
        share: String,
        path: PathBuf,
        /// Azure region of the storage account (default: that of the first vault created).
        #[serde(default)]
        location: Option<String>,
        /// The subscriptions the share appears in (default: every subscription).
        #[serde(default)]
        subscriptions: Vec<String>,
    },
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let cfg: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.repository.validate()?;
        anyhow::ensure!(
            (3..=3600).contains(&self.runner.lease_seconds),
            "runner.lease_seconds must be between 3 and 3600"
        );
        if let Some(id) = &self.node.id {
            anyhow::ensure!(
                !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control),
                "node.id must be 1 to 128 printable characters"
            );
        }
        if let Some(u) = &self.server.public_url {
            anyhow::ensure!(
                (u.starts_with("https://") || u.starts_with("http://"))
                    && u.len() > "https://".len()
                    && !u.contains(['?', '#', ' ']),
                "server.public_url '{u}' must be an absolute http(s) URL without query or fragment"
            );
        }
        anyhow::ensure!(
            self.retention.soft_delete_days.is_finite()
                && self.retention.soft_delete_days > 0.0
                && self.retention.soft_delete_days <= 180.0,
            "retention.soft_delete_days must be more than 0 and at most 180"
        );
        anyhow::ensure!(
            (1..=200).contains(&self.server.page_size),
            "server.page_size must be between 1 and 200"
        );
        anyhow::ensure!(
            self.server.retry_after_seconds > 0,
            "server.retry_after_seconds must be > 0"
        );
        anyhow::ensure!(
            self.scheduler.tick_seconds > 0,
            "scheduler.tick_seconds must be > 0"
        );
        anyhow::ensure!(
            self.scheduler.retries <= 10,
            "scheduler.retries must be at most 10"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.maintenance.verify_read_data_percent),
            "maintenance.verify_read_data_percent must be between 1 and 100"
        );
        for i in &self.auth.issuers {
            anyhow::ensure!(
                i.jwks_file.is_some() != i.jwks_uri.is_some(),
                "auth.issuer '{}' needs exactly one of jwks_file and jwks_uri",
                i.issuer
            );
            if let Some(u) = &i.jwks_uri {
                // Plain HTTP only on this host (a local identity provider, tests).
                let local = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
                    .iter()
                    .any(|p| u.starts_with(p));
                anyhow::ensure!(
                    u.starts_with("https://") || local,
                    "auth.issuer '{}' jwks_uri must be https (or http on 127.0.0.1/localhost)",
                    i.issuer
                );
            }
        }
        anyhow::ensure!(
            self.server.tls_cert.is_some() == self.server.tls_key.is_some(),
            "server.tls_cert and server.tls_key go together"
        );
        anyhow::ensure!(
            self.auth.default_token_seconds > 0,
            "auth.default_token_seconds must be > 0"
        );
        anyhow::ensure!(
            self.limits.header_read_timeout_seconds > 0 && self.limits.idle_timeout_seconds > 0,
            "limits.header_read_timeout_seconds and limits.idle_timeout_seconds must be > 0"
        );
        anyhow::ensure!(
            self.limits.max_connections > 0,
            "limits.max_connections must be > 0"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.maintenance.drill_sample_percent),
            "maintenance.drill_sample_percent must be between 1 and 100"
        );
        for h in &self.notify.webhook {
            anyhow::ensure!(
                h.url.starts_with("https://") || h.url.starts_with("http://"),
                "notify.webhook url '{}' must be an http(s) URL",
                h.url
            );
            for e in &h.events {
                anyhow::ensure!(
                    EVENTS.contains(&e.as_str()),
                    "notify.webhook event '{e}' is not one of {}",
                    EVENTS.join(", ")
                );
            }
        }
        for root in &self.restore_roots {
            anyhow::ensure!(
                root.is_absolute(),
                "restore root {} must be absolute",
                root.display()
            );
        }
        for a in &self.restore_accounts {
            anyhow::ensure!(
                self.restore_roots.contains(&a.root),
                "restore_account '{}' root {} is not one of restore_roots",
                a.name,
                a.root.display()
            );
            anyhow::ensure!(
                is_storage_account_name(&a.name),
                "restore_account name '{}' must be 3-24 lowercase letters and digits, as in Azure",
                a.name
            );
        }
        for s in &self.sources {
            let (SourceConfig::Vm { subscriptions, .. }
            | SourceConfig::Fileshare { subscriptions, .. }) = s;
            anyhow::ensure!(
                subscriptions
                    .iter()
                    .all(|x| !x.trim().is_empty() && !x.contains('/')),
                "source subscriptions must be subscription ids"
            );
            match s {
                SourceConfig::Vm { disks, name, .. } => {
                    anyhow::ensure!(!disks.is_empty(), "vm source '{name}' lists no disks")
                }
                SourceConfig::Fileshare { path, share, .. } => anyhow::ensure!(
                    path.is_absolute(),
                    "fileshare '{share}' path {} must be absolute",
                    path.display()
                ),
            }
        }
        Ok(())
    }
}

/// Sources and restore roots given on the command line (`rsvault serve --share … --disk …
/// --restore-root …`), added to those of the config file.
#[derive(Debug, Clone, Default)]
pub struct CliSources {
    /// `RG/ACCOUNT/SHARE=PATH`
    pub shares: Vec<String>,
    /// `RG/VM=IMAGE`; naming one VM again adds a disk to it.
    pub disks: Vec<String>,
    pub restore_roots: Vec<PathBuf>,
}

impl Config {
    /// Adds the command line's sources and restore roots (relative paths are taken from the
    /// current directory), then validates the whole. A name the config file already declares is
    /// an error, not an override: two definitions of one source would be ambiguous.
    pub fn add_cli_sources(&mut self, cli: &CliSources) -> anyhow::Result<()> {
        fn split(flag: &str, v: &str, parts: usize) -> anyhow::Result<(Vec<String>, PathBuf)> {
            let (names, path) = v.split_once('=').unwrap_or((v, ""));
            let names: Vec<String> = names.split('/').map(str::to_string).collect();
            anyhow::ensure!(
                names.len() == parts && names.iter().all(|n| !n.is_empty()) && !path.is_empty(),
                "--{flag} '{v}' must be {}=PATH",
                if parts == 3 {
                    "RESOURCE_GROUP/ACCOUNT/SHARE"
                } else {
                    "RESOURCE_GROUP/VM"
                }
            );
            Ok((names, std::path::absolute(path)?))
        }
        let mut cli_vms = 0;
        for d in &cli.disks {
            let (n, disk) = split("disk", d, 2)?;
            let len = self.sources.len();
            let existing = self
                .sources
                .iter_mut()
                .enumerate()
                .find_map(|(i, s)| match s {
                    SourceConfig::Vm {
                        resource_group,
                        name,
                        disks,
                        ..
                    } if resource_group.eq_ignore_ascii_case(&n[0])
                        && name.eq_ignore_ascii_case(&n[1]) =>
                    {
                        Some((i, disks))
                    }
                    _ => None,
                });
            match existing {
                // Only a VM this command line declared takes more disks.
                Some((i, disks)) if i >= len - cli_vms => disks.push(disk),
                Some(_) => anyhow::bail!(
                    "--disk '{d}': VM '{}/{}' is already in the config file",
                    n[0],
                    n[1]
                ),
                None => {
                    self.sources.push(SourceConfig::Vm {
                        resource_group: n[0].clone(),
                        name: n[1].clone(),
                        disks: vec![disk],
                        location: None,
                        subscriptions: Vec::new(),
                    });
                    cli_vms += 1;
                }
            }
        }
        for sh in &cli.shares {
            let (n, path) = split("share", sh, 3)?;
            let taken = self.sources.iter().any(|s| {
                matches!(s, SourceConfig::Fileshare { storage_account, share, .. }
                    if storage_account.eq_ignore_ascii_case(&n[1]) && share.eq_ignore_ascii_case(&n[2]))
            });
            anyhow::ensure!(
                !taken,
                "--share '{sh}': share '{}/{}' is declared twice",
                n[1],
                n[2]
            );
            anyhow::ensure!(
                is_storage_account_name(&n[1]),
                "--share '{sh}': account '{}' must be 3-24 lowercase letters and digits, as in Azure",
                n[1]
            );
            self.sources.push(SourceConfig::Fileshare {
                resource_group: n[0].clone(),
                storage_account: n[1].clone(),
                share: n[2].clone(),
                path,
                location: None,
                subscriptions: Vec::new(),
            });
        }
        for r in &cli.restore_roots {
            let r = std::path::absolute(r)?;
            if !self.restore_roots.contains(&r) {
                self.restore_roots.push(r);
            }
        }
        self.validate()
    }
}

/// A configured source with its Azure names.
pub fn source_info(s: &SourceConfig) -> SourceInfo {
    match s {
        SourceConfig::Vm {
            resource_group,
            name,
            disks,
            location,
            subscriptions,
        } => SourceInfo {
            workload: Workload::Vm,
            container: format!("IaasVMContainer;iaasvmcontainerv2;{resource_group};{name}"),
            item: format!("VM;iaasvmcontainerv2;{resource_group};{name}"),
            friendly_name: name.clone(),
            rg: resource_group.clone(),
            host_name: name.clone(),
            paths: disks.clone(),
            location: location.clone(),
            subscriptions: subscriptions.clone(),
        },
        SourceConfig::Fileshare {
            resource_group,
            storage_account,
            share,
            path,
            location,
            subscriptions,
        } => SourceInfo {
            workload: Workload::FileShare,
            container: format!("StorageContainer;Storage;{resource_group};{storage_account}"),
            item: format!("AzureFileShare;{share}"),
            friendly_name: share.clone(),
            rg: resource_group.clone(),
            host_name: storage_account.clone(),
            paths: vec![path.clone()],
            location: location.clone(),
            subscriptions: subscriptions.clone(),
        },
    }
}

/// Azure's storage account name rule: 3 to 24 lowercase letters and digits.
pub fn is_storage_account_name(n: &str) -> bool {
    (3..=24).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}
