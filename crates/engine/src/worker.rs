//! Engine work in a child process, so that a panic, an abort or an out-of-memory kill costs one
//! job and never the service.
//!
//! Protocol (JSON lines):
//! - parent → child stdin: one [`Request`] line, then optionally a line `cancel`. EOF on stdin
//!   (the parent died) also cancels.
//! - child → parent stdout: any number of `{"type":"progress","progress":{..}}` and
//!   `{"type":"warning","warning":{..}}` lines, then exactly one
//!   `{"type":"result","response":{..}}` or `{"type":"error","error":{"kind":..,"message":..}}`.
//! - child stderr: free-form diagnostics; the parent keeps the tail for crash reports.
//!
//! The child bounds its own address space (`RLIMIT_AS`, [`MEMORY_LIMIT_ENV`], default
//! [`DEFAULT_MEMORY_LIMIT`]); an allocation beyond it aborts the child, which the parent reports
//! as `Error::Worker`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{
    BackupOptions, BackupOutcome, Error, JobContext, MasterKey, Progress, RepoConfig,
    RestoreOutcome, RestoreScope, RestoreSpec, Result, SnapshotInfo, Source, VerifyReport, Warning,
};

/// Environment variable with the child's address-space limit in MiB (`0`: unlimited).
pub const MEMORY_LIMIT_ENV: &str = "RSVAULT_WORKER_MEMORY_MIB";
/// Default address-space limit of a worker, MiB. Address space, not RSS: glibc arenas and
/// thread stacks reserve far more than they touch; measured restores stay below 512 MiB RSS.
pub const DEFAULT_MEMORY_LIMIT: u64 = 4096;
/// How long a worker may take to stop after `cancel` before it is killed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Open-or-init: idempotent.
    Init {
        repo: RepoConfig,
    },
    /// The repository's master key, for later requests' [`RepoConfig::master_key`] (one
    /// password derivation now instead of one per request). With `create`, open-or-init
    /// (idempotent, like `Init`); without, a missing repository is an error.
    MasterKey {
        repo: RepoConfig,
        #[serde(default)]
        create: bool,
    },
    Backup {
        repo: RepoConfig,
        source: Source,
        #[serde(default)]
        options: BackupOptions,
    },
    /// A restore with the default [`RestoreScope`] (confined to the target, alternate location).
    Restore {
        repo: RepoConfig,
        spec: RestoreSpec,
    },
    /// A restore confined to `scope.root`; `scope.original_location` allows setuid/setgid bits
    /// and device nodes.
    RestoreScoped {
        repo: RepoConfig,
        spec: RestoreSpec,
        scope: RestoreScope,
    },
    Snapshots {
        repo: RepoConfig,
    },
    Forget {
        repo: RepoConfig,
        ids: Vec<String>,
    },
    Verify {
        repo: RepoConfig,
        read_data_percent: Option<u8>,
    },
    Prune {
        repo: RepoConfig,
    },
    AddKey {
        repo: RepoConfig,
        new_password: String,
    },
    RemoveKey {
        repo: RepoConfig,
        key_id: String,
    },
    /// Whether the repository exists (an unreachable store is an error).
    Exists {
        repo: RepoConfig,
    },
    /// Delete the repository and everything in it.
    Destroy {
        repo: RepoConfig,
    },
    /// Bytes the repository occupies.
    Size {
        repo: RepoConfig,
    },
    /// Whether the repository location answers and takes writes.
    Probe {
        repo: RepoConfig,
    },
    /// A restore drill: a sample restored into scratch space and compared with the snapshot.
    Drill {
        repo: RepoConfig,
        spec: crate::DrillSpec,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub enum Response {
    Init,
    MasterKey(MasterKey),
    Backup(BackupOutcome),
    Restore(RestoreOutcome),
    Snapshots(Vec<SnapshotInfo>),
    Forget,
    Verify(VerifyReport),
    Prune,
    AddKey(String),
    RemoveKey,
    Exists(bool),
    Destroy,
    Size(u64),
    Probe,
    Drill(crate::DrillReport),
}

/// [`Error`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub kind: String,
    pub message: String,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        let (kind, message) = match e {
            Error::Cancelled => ("cancelled", String::new()),
            Error::WrongKey(m) => ("wrong_key", m.clone()),
            Error::SnapshotNotFound(m) => ("snapshot_not_found", m.clone()),
            Error::SourceUnavailable(m) => ("source_unavailable", m.clone()),
            Error::Conflict(m) => ("conflict", m.clone()),
            Error::DiskFull(m) => ("disk_full", m.clone()),
            Error::Repository(m) => ("repository", m.clone()),
            Error::Worker(m) => ("worker", m.clone()),
        };
        Self {
            kind: kind.into(),
            message,
        }
    }
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Self {
        match w.kind.as_str() {
            "cancelled" => Error::Cancelled,
            "wrong_key" => Error::WrongKey(w.message),
            "snapshot_not_found" => Error::SnapshotNotFound(w.message),
            "source_unavailable" => Error::SourceUnavailable(w.message),
            "conflict" => Error::Conflict(w.message),
            "disk_full" => Error::DiskFull(w.message),
            "repository" => Error::Repository(w.message),
            _ => Error::Worker(w.message),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Progress { progress: Progress },
    Warning { warning: Warning },
    Result { response: Response },
    Error { error: WireError },
}

/// Runs one request in-process. The worker child uses this; so can a caller that accepts the
/// risk (tests, the CLI).
pub fn run_request(request: &Request, ctx: &dyn JobContext) -> Result<Response> {
    Ok(match request {
        Request::Init { repo } => {
            crate::open_or_init(repo)?;
            Response::Init
        }
        Request::MasterKey { repo, create } => Response::MasterKey(if *create {
            crate::open_or_init_master_key(repo)?
        } else {
            crate::master_key(repo)?
        }),
        Request::Backup {
            repo,
            source,
            options,
        } => Response::Backup(crate::backup(repo, source, options, ctx)?),
        Request::Restore { repo, spec } => Response::Restore(crate::restore(repo, spec, ctx)?),
        Request::RestoreScoped { repo, spec, scope } => {
            Response::Restore(crate::restore_scoped(repo, spec, scope, ctx)?)
        }
        Request::Snapshots { repo } => Response::Snapshots(crate::snapshots(repo)?),
        Request::Forget { repo, ids } => {
            crate::forget(repo, ids)?;
            Response::Forget
        }
        Request::Verify {
            repo,
            read_data_percent,
        } => Response::Verify(crate::verify_reporting(repo, *read_data_percent, ctx)?),
        Request::Prune { repo } => {
            crate::prune(repo)?;
            Response::Prune
        }
        Request::AddKey { repo, new_password } => {
            Response::AddKey(crate::add_key(repo, new_password)?)
        }
        Request::RemoveKey { repo, key_id } => {
            crate::remove_key(repo, key_id)?;
            Response::RemoveKey
        }
        Request::Exists { repo } => Response::Exists(crate::exists(repo)?),
        Request::Destroy { repo } => {
            crate::destroy(repo)?;
            Response::Destroy
        }
        Request::Size { repo } => Response::Size(crate::size(repo)?),
        Request::Probe { repo } => {
            crate::probe(repo)?;
            Response::Probe
        }
        Request::Drill { repo, spec } => Response::Drill(crate::drill(repo, spec, ctx)?),
    })
}

struct StdioCtx {
    cancelled: Arc<AtomicBool>,
    out: Mutex<std::io::Stdout>,
}

impl StdioCtx {
    fn send(&self, line: &Line) {
        if let Ok(s) = serde_json::to_string(line) {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            // A parent that went away is noticed through stdin EOF (cancel).
            let _ = writeln!(out, "{s}");
            let _ = out.flush();
        }
    }
}

impl JobContext for StdioCtx {
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
    fn progress(&self, progress: &Progress) {
        self.send(&Line::Progress {
            progress: progress.clone(),
        });
    }
    fn warn(&self, warning: Warning) {
        self.send(&Line::Warning { warning });
    }
}

fn limit_memory() -> anyhow::Result<()> {
    let mib = match std::env::var(MEMORY_LIMIT_ENV) {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|e| anyhow::anyhow!("{MEMORY_LIMIT_ENV}={v:?}: {e}"))?,
        Err(_) => DEFAULT_MEMORY_LIMIT,
    };
    if mib > 0 {
        let bytes = mib.saturating_mul(1 << 20);
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, bytes, bytes)?;
    }
    Ok(())
}

/// The child side: read one request from stdin, run it, stream progress and warnings, write the
/// result. Call it from the binary's `worker` subcommand.
pub fn serve_stdio() -> anyhow::Result<()> {
    limit_memory()?;
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin.lock().read_line(&mut first)?;
    let ctx = Arc::new(StdioCtx {
        cancelled: Arc::new(AtomicBool::new(false)),
        out: Mutex::new(std::io::stdout()),
    });
    let request: Request = match serde_json::from_str(first.trim()) {
        Ok(r) => r,
        Err(e) => {
            ctx.send(&Line::Error {
                error: WireError {
                    kind: "worker".into(),
                    message: format!("malformed request: {e}"),
                },
            });
            return Ok(());
        }
    };
    let cancelled = ctx.cancelled.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.trim() == "cancel" => break,
                Ok(_) => {}
            }
        }
        cancelled.store(true, Ordering::SeqCst);
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_request(&request, ctx.as_ref())
    }));
    let line = match result {
        Ok(Ok(response)) => Line::Result { response },
        Ok(Err(e)) => Line::Error {
            error: WireError::from(&e),
        },
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Line::Error {
                error: WireError {
                    kind: "worker".into(),
                    message: format!("engine panicked: {msg}"),
                },
            }
        }
    };
    ctx.send(&line);
    Ok(())
}

/// The parent side: runs `request` in `program args...` (the service passes its own executable
/// and `["engine-worker"]`), forwarding progress and warnings to `ctx`. When `ctx` is cancelled
/// the child is asked to stop and killed if it has not exited [`CANCEL_GRACE`] later. A child
/// that crashes, panics or is killed (e.g. out of memory) yields `Error::Worker`.
pub fn run_in_worker(
    program: &Path,
    args: &[String],
    request: &Request,
    ctx: &dyn JobContext,
) -> Result<Response> {
    let mut cmd = Command::new(program);
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // glibc reserves 64 MiB of address space per malloc arena and creates up to 8 per core:
        // under RLIMIT_AS that reservation, not real use, would exhaust a many-core host.
        cmd.env("MALLOC_ARENA_MAX", "4");
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Worker(format!("cannot start '{}': {e}", program.display())))?;
    let result = supervise(&mut child, request, ctx);
    if result.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    result
}

fn supervise(child: &mut Child, request: &Request, ctx: &dyn JobContext) -> Result<Response> {
    let mut stdin: Option<ChildStdin> = child.stdin.take();
    let line = serde_json::to_string(request)
        .map_err(|e| Error::Worker(format!("cannot encode request: {e}")))?;
    if let Some(s) = stdin.as_mut() {
        // A child that died at once is reported below from its exit status.
        let _ = writeln!(s, "{line}").and_then(|()| s.flush());
    }

    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<Line>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(msg) = serde_json::from_str::<Line>(&line) {
                if tx.send(msg).is_err() {
                    break;
                }
            }
        }
    });
    let stderr_tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    let stderr_thread = {
        let tail = stderr_tail.clone();
        let mut stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.extend_from_slice(&buf[..n]);
                let excess = t.len().saturating_sub(4096);
                t.drain(..excess);
            }
        })
    };

    let mut outcome: Option<Result<Response>> = None;
    let mut cancel_sent: Option<Instant> = None;
    let mut killed = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Line::Progress { progress }) => ctx.progress(&progress),
            Ok(Line::Warning { warning }) => ctx.warn(warning),
            Ok(Line::Result { response }) => outcome = Some(Ok(response)),
            Ok(Line::Error { error }) => outcome = Some(Err(error.into())),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if cancel_sent.is_none() && ctx.is_cancelled() {
            if let Some(s) = stdin.as_mut() {
                let _ = writeln!(s, "cancel").and_then(|()| s.flush());
            }
            cancel_sent = Some(Instant::now());
        }
        if !killed && cancel_sent.is_some_and(|t| t.elapsed() > CANCEL_GRACE) {
            let _ = child.kill();
            killed = true;
        }
    }
    drop(stdin);
    let _ = reader.join();
    let status = child
        .wait()
        .map_err(|e| Error::Worker(format!("waiting for the worker: {e}")))?;
    let _ = stderr_thread.join();
    if let Some(outcome) = outcome {
        return outcome;
    }
    if killed {
        // Killed after the grace period of a cancel: what the caller asked for.
        return Err(Error::Cancelled);
    }
    let tail = String::from_utf8_lossy(&stderr_tail.lock().unwrap_or_else(|e| e.into_inner()))
        .trim()
        .to_string();
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (_, Some(9)) => "was killed (signal 9; out of memory?)".to_string(),
        (_, Some(6)) => "aborted (signal 6; out of memory or a panic while panicking?)".to_string(),
        (_, Some(sig)) => format!("died from signal {sig}"),
        (Some(code), _) => format!("exited with code {code} without a result"),
        (None, None) => "ended without a result".to_string(),
    };
    Err(Error::Worker(if tail.is_empty() {
        format!("the engine worker {how}")
    } else {
        format!("the engine worker {how}: {tail}")
    }))
}
