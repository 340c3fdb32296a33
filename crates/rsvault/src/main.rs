//! The `rsvault` binary: the server, the engine worker, and operator commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rsvault::client::{vault_path, Client, Conn};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "rsvault",
    version,
    about = "A self-hosted backup service that speaks the Azure Backup REST API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (HTTPS, SQLite metadata, local repositories).
    Serve {
        /// Data directory (metadata, repositories, TLS material, admin token).
        #[arg(long, default_value = "./rsvault-data", env = "RSVAULT_DATA")]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443", env = "RSVAULT_LISTEN")]
        listen: SocketAddr,
        /// Configuration file (TOML). Default: DATA/rsvault.toml when present.
        #[arg(long, env = "RSVAULT_CONFIG")]
        config: Option<PathBuf>,
        /// Back up this directory as an Azure file share (repeatable; adds to the config file).
        #[arg(long, value_name = "RG/ACCOUNT/SHARE=PATH")]
        share: Vec<String>,
        /// Back up this disk image as a VM's disk (repeatable; one VM named again gets more disks).
        #[arg(long, value_name = "RG/VM=IMAGE")]
        disk: Vec<String>,
        /// Allow alternate-location restores below this directory (repeatable).
        #[arg(long, value_name = "PATH")]
        restore_root: Vec<PathBuf>,
    },
    /// Internal: run one engine request read from stdin (started by the server).
    #[command(hide = true)]
    EngineWorker {
        /// Address-space limit of this worker in MiB (0: the engine's default).
        #[arg(long, default_value_t = 0)]
        memory_mib: u64,
        /// File-creation mask (octal) for this worker: restores write with the operator's umask,
        /// repository work with the server's private one.
        #[arg(long, value_parser = parse_octal)]
        umask: Option<u32>,
        /// The server's pid: a worker whose parent is already another process exits at once.
        #[arg(long)]
        parent_pid: Option<u32>,
    },
    /// Inspect, wait for and cancel jobs of a vault.
    Job {
        #[command(subcommand)]
        cmd: JobCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run garbage collection or verification on a vault now (as tracked jobs).
    Maintenance {
        #[command(subcommand)]
        cmd: MaintenanceCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Vault keys: `rsvault vault key export --vault SUB/RG/VAULT` prints a vault's repository
    /// and key so stock `restic` can open it (the escrow; reads the data dir: its owner only).
    Vault {
        #[command(subcommand)]
        cmd: VaultCmd,
        #[command(flatten)]
        local: Local,
    },
    /// The key-encryption key: `rsvault secrets rotate` re-wraps every vault key under a new one
    /// (with the server stopped).
    Secrets {
        #[command(subcommand)]
        cmd: SecretsCmd,
        #[command(flatten)]
        local: Local,
    },
    /// Tokens: `rsvault token issue --principal-id ID` signs a bearer token for a principal (whose
    /// roles come from its role assignments); `rsvault token rotate-admin` replaces the admin
    /// token. Both read the data dir directly: its owner only.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
        #[command(flatten)]
        local: Local,
    },
    /// Retention: which recovery points each policy keeps and expires, and why.
    Retention {
        #[command(subcommand)]
        cmd: RetentionCmd,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Commands that read the data dir directly instead of calling a server.
#[derive(clap::Args)]
struct Local {
    /// Data directory.
    #[arg(
        long,
        global = true,
        default_value = "./rsvault-data",
        env = "RSVAULT_DATA"
    )]
    data: PathBuf,
    /// Configuration file (TOML). Default: DATA/rsvault.toml when present.
    #[arg(long, global = true, env = "RSVAULT_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum VaultCmd {
    Key {
        #[command(subcommand)]
        cmd: VaultKeyCmd,
    },
}

#[derive(Subcommand)]
enum VaultKeyCmd {
    /// Print `{"repository": ..., "password": ...}` for `restic -r REPOSITORY`.
    Export {
        /// SUBSCRIPTION/RESOURCEGROUP/VAULT
        #[arg(long)]
        vault: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a JWT for `--principal-id`, signed with the deployment's key.
    Issue {
        /// The principal (`oid`) the token names; role assignments name the same id.
        #[arg(long)]
        principal_id: String,
        /// Lifetime in seconds (default `[auth] default_token_seconds`, 3600).
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// Replace the admin token and print the new one (the old one stops working within seconds).
    RotateAdmin,
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Re-wrap every vault key under a new key-encryption key.
    Rotate,
}

#[derive(Subcommand)]
enum JobCmd {
    /// List jobs, newest first.
    List {
        #[arg(long)]
        vault: String,
        /// OData filter, e.g. "status eq 'InProgress' and operation eq 'Backup'".
        #[arg(long)]
        filter: Option<String>,
        /// Follow nextLink through every page.
        #[arg(long)]
        all: bool,
    },
    /// Show one job.
    Show {
        #[arg(long)]
        vault: String,
        job: String,
    },
    /// Wait until a job finishes; exits non-zero unless it Completed.
    Wait {
        #[arg(long)]
        vault: String,
        /// The job id, or the URL of an async operation that names it (`Azure-AsyncOperation`).
        job: String,
        #[arg(long, default_value_t = 3600)]
        timeout_seconds: u64,
    },
    /// Print a job's log; with -f, follow it until the job ends.
    Log {
        #[arg(long)]
        vault: String,
        job: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// Request cancellation of a running job and wait for it to stop.
    Cancel {
        #[arg(long)]
        vault: String,
        job: String,
    },
}

#[derive(Subcommand)]
enum MaintenanceCmd {
    /// Apply retention, forget expired and orphaned snapshots, prune unreferenced data.
    Gc {
        #[arg(long)]
        vault: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Restore a sample of each item's newest recovery point into scratch space and compare it.
    Drill {
        #[arg(long)]
        vault: String,
        /// Share of each item's files to restore, in percent (default: the server's setting).
        #[arg(long)]
        sample_percent: Option<u8>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Re-read and authenticate repository data.
    Verify {
        #[arg(long)]
        vault: String,
        /// Re-read only this share of the data, in percent (default: all).
        #[arg(long)]
        read_data_percent: Option<u8>,
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
enum RetentionCmd {
    /// Show which points each item's policy keeps and expires.
    Preview {
        #[arg(long)]
        vault: String,
        /// Evaluate as of this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::EngineWorker {
            memory_mib,
            umask,
            parent_pid,
        } => {
            // A worker dies with the server that started it: an orphan must never go on writing
            // into a repository that a restarted server (or another node) now owns.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The server may have died before the line above ran: then the worker has a new parent.
            if parent_pid.is_some_and(|p| p != std::os::unix::process::parent_id()) {
                anyhow::bail!("the server that started this worker is gone");
            }
            if let Some(mask) = umask {
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
            }
            if memory_mib > 0 {
                // Still single-threaded here: nothing else reads the environment concurrently.
                std::env::set_var(
                    rsvault_engine::worker::MEMORY_LIMIT_ENV,
                    memory_mib.to_string(),
                );
            }
            rsvault_engine::worker::serve_stdio()
        }
        Command::Job { cmd, conn } => job_cmd(cmd, &Client::new(&conn)?),
        Command::Vault {
            cmd: VaultCmd::Key {
                cmd: VaultKeyCmd::Export { vault },
            },
            local,
        } => {
            let mut parts = vault.splitn(3, '/');
            let (Some(sub), Some(rg), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                anyhow::bail!("--vault must be SUBSCRIPTION/RESOURCEGROUP/VAULT, not '{vault}'");
            };
            let config = rsvault::server::load_config(&local.data, local.config.as_deref())?;
            let svc = rsvault::server::open_service(&local.data, config, (PathBuf::new(), vec![]))?;
            let v = svc
                .get_vault(&rsvault_types::model::VaultRef {
                    sub: sub.into(),
                    rg: rg.into(),
                    name: name.into(),
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{}",
                json!({
                    "repository": rsvault_engine::restic_repository(
                        &svc.repo_location(&v).map_err(|e| anyhow::anyhow!(e))?
                    ),
                    "password": svc.vault_password(&v)?,
                })
            );
            Ok(())
        }
        Command::Token { cmd, local } => {
            let config = rsvault::server::load_config(&local.data, local.config.as_deref())?;
            let svc = rsvault::server::open_service(&local.data, config, (PathBuf::new(), vec![]))?;
            match cmd {
                TokenCmd::Issue {
                    principal_id,
                    expires_in,
                } => {
                    let secs = expires_in.unwrap_or(svc.config.auth.default_token_seconds);
                    anyhow::ensure!(secs > 0, "--expires-in must be > 0");
                    let key = rsvault::server::token_key(&local.data, &svc)?;
                    let issuer = rsvault_api::auth::issuer_name(&svc.config);
                    println!(
                        "{}",
                        rsvault_api::auth::issue_token(&key, &issuer, &principal_id, secs)?
                    );
                }
                TokenCmd::RotateAdmin => {
                    println!("{}", rsvault_api::auth::rotate_admin_token(&svc.store)?);
                }
            }
            Ok(())
        }
        Command::Secrets {
            cmd: SecretsCmd::Rotate,
            local,
        } => {
            let config = rsvault::server::load_config(&local.data, local.config.as_deref())?;
            let (n, id) = rsvault::server::rotate_kek(&local.data, config)?;
            println!("re-wrapped {n} vault key(s) under key-encryption key {id}");
            Ok(())
        }
        Command::Maintenance { cmd, conn } => {
            let c = Client::new(&conn)?;
            let (vault, op, body, no_wait) = match cmd {
                MaintenanceCmd::Gc { vault, no_wait } => {
                    (vault, "garbageCollection", json!({}), no_wait)
                }
                MaintenanceCmd::Drill {
                    vault,
                    sample_percent,
                    no_wait,
                } => (
                    vault,
                    "restoreDrill",
                    json!({"samplePercent": sample_percent}),
                    no_wait,
                ),
                MaintenanceCmd::Verify {
                    vault,
                    read_data_percent,
                    no_wait,
                } => (
                    vault,
                    "verify",
                    json!({"readDataPercent": read_data_percent}),
                    no_wait,
                ),
            };
            let v = vault_path(&vault)?;
            let (_, headers, _) =
                c.call("POST", &format!("{v}/rsvault/maintenance/{op}"), Some(body))?;
            let job = c.job_of(&headers)?;
            if no_wait {
                println!("{job}");
                return Ok(());
            }
            finish(
                &c,
                &c.wait_job(&v, &job, std::time::Duration::from_secs(24 * 3600))?,
            )
        }
        Command::Retention {
            cmd: RetentionCmd::Preview { vault, at },
            conn,
        } => {
            let c = Client::new(&conn)?;
            let v = vault_path(&vault)?;
            let q = at.map(|a| format!("?at={a}")).unwrap_or_default();
            let p = c.get(&format!("{v}/rsvault/retentionPreview{q}"))?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&p)?);
                return Ok(());
            }
            println!("retention as of {}", p["at"].as_str().unwrap_or(""));
            for it in p["items"].as_array().into_iter().flatten() {
                println!(
                    "\n{}  policy={}  {}",
                    it["item"].as_str().unwrap_or(""),
                    it["policy"].as_str().unwrap_or("-"),
                    it["protectionState"].as_str().unwrap_or("")
                );
                for d in it["points"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<20} {:<28} {:<6} expires {:<28} {}",
                        d["id"].as_str().unwrap_or(""),
                        d["time"].as_str().unwrap_or(""),
                        if d["keep"].as_bool() == Some(true) {
                            "KEEP"
                        } else {
                            "EXPIRE"
                        },
                        d["expiry"].as_str().unwrap_or("never"),
                        d["reason"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Command::Serve {
            data,
            listen,
            config,
            share,
            disk,
            restore_root,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "rsvault=info,warn".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let exe = std::env::current_exe()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(rsvault::server::serve(rsvault::server::ServeOptions {
                data,
                listen,
                config,
                worker: (exe, vec!["engine-worker".into()]),
                cli_sources: rsvault_jobs::config::CliSources {
                    shares: share,
                    disks: disk,
                    restore_roots: restore_root,
                },
            }))
        }
    }
}

fn finish(c: &Client, j: &serde_json::Value) -> anyhow::Result<()> {
    c.print_job(j);
    match j["properties"]["status"].as_str() {
        Some("Completed") => Ok(()),
        Some(s) => {
            for e in j["properties"]["errorDetails"]
                .as_array()
                .into_iter()
                .flatten()
            {
                eprintln!("  {}", e["errorString"].as_str().unwrap_or(""));
            }
            anyhow::bail!("job ended {s}")
        }
        None => anyhow::bail!("unexpected job body"),
    }
}

fn job_cmd(cmd: JobCmd, c: &Client) -> anyhow::Result<()> {
    match cmd {
        JobCmd::List { vault, filter, all } => {
            let v = vault_path(&vault)?;
            let mut path = format!("{v}/backupJobs");
            if let Some(f) = filter {
                let enc: String = f
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                path.push_str(&format!("?$filter={enc}"));
            }
            let mut page = c.get(&path)?;
            loop {
                for j in page["value"].as_array().into_iter().flatten() {
                    c.print_job(j);
                }
                match page.get("nextLink").and_then(|n| n.as_str()) {
                    Some(next) if all => page = c.get(next)?,
                    Some(_) => {
                        eprintln!("(more jobs: use --all)");
                        break;
                    }
                    None => break,
                }
            }
            Ok(())
        }
        JobCmd::Show { vault, job } => {
            let j = c.get(&format!("{}/backupJobs/{job}", vault_path(&vault)?))?;
            println!("{}", serde_json::to_string_pretty(&j)?);
            Ok(())
        }
        JobCmd::Wait {
            vault,
            job,
            timeout_seconds,
        } => {
            let job = if job.starts_with("https://") {
                c.job_of_operation(&job)?
            } else {
                job
            };
            let j = c.wait_job(
                &vault_path(&vault)?,
                &job,
                std::time::Duration::from_secs(timeout_seconds),
            )?;
            finish(c, &j)
        }
        JobCmd::Log { vault, job, follow } => {
            let path = format!("{}/backupJobs/{job}/rsvault/log", vault_path(&vault)?);
            let mut next = 0;
            loop {
                let page = c.get(&format!("{path}?start={next}"))?;
                let lines = page["lines"].as_array().cloned().unwrap_or_default();
                for l in &lines {
                    if c.json {
                        println!("{l}");
                    } else {
                        println!(
                            "{:>5} {} {:<7} {}",
                            l["n"],
                            l["t"].as_str().unwrap_or(""),
                            l["level"].as_str().unwrap_or(""),
                            l["msg"].as_str().unwrap_or("")
                        );
                    }
                    next = l["n"].as_i64().unwrap_or(next) + 1;
                }
                if lines.is_empty() && !(follow && page["active"] == true) {
                    return Ok(());
                }
                if lines.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
        }
        JobCmd::Cancel { vault, job } => {
            let v = vault_path(&vault)?;
            c.call("POST", &format!("{v}/backupJobs/{job}/cancel"), None)?;
            let j = c.wait_job(&v, &job, std::time::Duration::from_secs(120))?;
            c.print_job(&j);
            Ok(())
        }
    }
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal file mode mask"))
}
