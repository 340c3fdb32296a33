//! `rsvault-engine`: the engine's worker process and a small CLI over the engine (tests and the
//! benchmark use it). Every command prints its result as JSON on stdout; warnings go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand, ValueEnum};
use rsvault_engine::worker::{run_request, Request};
use rsvault_engine::{
    BackupOptions, Conflict, JobContext, MasterKey, Progress, RepoConfig, RestoreScope,
    RestoreSpec, Source, Warning,
};

#[derive(Parser)]
#[command(name = "rsvault-engine", about = "rsvault's storage engine")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct RepoArgs {
    /// Repository directory, or a restic-style object store (`s3:http://HOST:PORT/BUCKET/PREFIX`
    /// with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, `azure:CONTAINER:/PREFIX` with
    /// AZURE_ACCOUNT_NAME / AZURE_ACCOUNT_KEY / AZURE_ENDPOINT).
    #[arg(long)]
    repo: PathBuf,
    /// File holding the vault key (a trailing newline is ignored).
    #[arg(long, required_unless_present = "master_key_file")]
    password_file: Option<PathBuf>,
    /// File holding the repository's master key (as `master-key` prints it): opens the
    /// repository without deriving a key from the password.
    #[arg(long)]
    master_key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConflictArg {
    Overwrite,
    Skip,
    Fail,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve one request over stdin/stdout (the service's worker child).
    Worker,
    /// Create the repository, or open it if it exists.
    Init {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Print the repository's master key (derived from the password once; creates the
    /// repository if missing).
    MasterKey {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Back up a directory (--dir) or disk images / block devices (--disk, repeatable).
    Backup {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, conflicts_with = "disk")]
        dir: Option<PathBuf>,
        #[arg(long)]
        disk: Vec<PathBuf>,
        #[arg(long)]
        parent: Option<String>,
        #[arg(long)]
        tag: Vec<String>,
        #[arg(long)]
        host: Option<String>,
        /// Read limit in bytes per second.
        #[arg(long)]
        limit: Option<u64>,
        /// Print progress lines (JSON) on stderr.
        #[arg(long)]
        progress: bool,
    },
    /// List snapshots.
    Snapshots {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Restore a snapshot (or --path subsets of it) into --target.
    Restore {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        snapshot: String,
        #[arg(long)]
        target: PathBuf,
        #[arg(long)]
        path: Vec<String>,
        #[arg(long, value_enum, default_value = "overwrite")]
        conflict: ConflictArg,
        /// Directory the restore may never write outside of (default: the target's parent).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Restoring where the data came from: recreate setuid/setgid bits and device nodes.
        #[arg(long)]
        original_location: bool,
        #[arg(long)]
        progress: bool,
    },
    /// Remove snapshots (data stays until prune).
    Forget {
        #[command(flatten)]
        repo: RepoArgs,
        ids: Vec<String>,
    },
    /// Verify the repository; --read-data-percent 0 checks structure only.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        read_data_percent: Option<u8>,
    },
    /// Remove unreferenced data.
    Prune {
        #[command(flatten)]
        repo: RepoArgs,
    },
}

struct CliCtx {
    progress: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

impl JobContext for CliCtx {
    fn is_cancelled(&self) -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }
    fn progress(&self, progress: &Progress) {
        if self.progress {
            eprintln!("{}", serde_json::to_string(progress).unwrap_or_default());
        }
    }
    fn warn(&self, warning: Warning) {
        eprintln!("warning: {}: {}", warning.path, warning.reason);
    }
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
}

fn repo_config(a: RepoArgs) -> anyhow::Result<RepoConfig> {
    let remote = match a.repo.to_str() {
        Some(s) => rsvault_engine::objstore::from_restic_repository(s, |k| std::env::var(k).ok())?,
        None => None,
    };
    let (path, store) = match remote {
        Some((store, prefix)) => (PathBuf::from(prefix), Some(store)),
        None => (a.repo, None),
    };
    Ok(RepoConfig {
        path,
        store,
        password: match &a.password_file {
            Some(p) => read_secret(p)?,
            None => String::new(),
        },
        master_key: match &a.master_key_file {
            Some(p) => Some(MasterKey::from_text(read_secret(p)?)),
            None => None,
        },
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut show_progress = false;
    let request = match cli.cmd {
        Cmd::Worker => {
            return match rsvault_engine::worker::serve_stdio() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("worker: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::Init { repo } => repo_config(repo).map(|repo| Request::Init { repo }),
        Cmd::MasterKey { repo } => {
            repo_config(repo).map(|repo| Request::MasterKey { repo, create: true })
        }
        Cmd::Backup {
            repo,
            dir,
            disk,
            parent,
            tag,
            host,
            limit,
            progress,
        } => {
            show_progress = progress;
            repo_config(repo).map(|repo| Request::Backup {
                repo,
                source: match dir {
                    Some(path) => Source::Directory { path },
                    None => Source::Disks { paths: disk },
                },
                options: BackupOptions {
                    parent,
                    tags: tag,
                    host,
                    bytes_per_second: limit,
                },
            })
        }
        Cmd::Snapshots { repo } => repo_config(repo).map(|repo| Request::Snapshots { repo }),
        Cmd::Restore {
            repo,
            snapshot,
            target,
            path,
            conflict,
            root,
            original_location,
            progress,
        } => {
            show_progress = progress;
            repo_config(repo).map(|repo| Request::RestoreScoped {
                repo,
                scope: RestoreScope {
                    root,
                    original_location,
                },
                spec: RestoreSpec {
                    snapshot_id: snapshot,
                    paths: path,
                    target,
                    conflict: match conflict {
                        ConflictArg::Overwrite => Conflict::Overwrite,
                        ConflictArg::Skip => Conflict::Skip,
                        ConflictArg::Fail => Conflict::Fail,
                    },
                },
            })
        }
        Cmd::Forget { repo, ids } => repo_config(repo).map(|repo| Request::Forget { repo, ids }),
        Cmd::Verify {
            repo,
            read_data_percent,
        } => repo_config(repo).map(|repo| Request::Verify {
            repo,
            read_data_percent,
        }),
        Cmd::Prune { repo } => repo_config(repo).map(|repo| Request::Prune { repo }),
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let ctx = CliCtx {
        progress: show_progress,
    };
    match run_request(&request, &ctx) {
        Ok(response) => {
            println!(
                "{}",
                serde_json::to_string(&response)
                    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
