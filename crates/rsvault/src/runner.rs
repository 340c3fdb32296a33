//! The job runner: runs backup, restore and delete-data jobs in the background, one at a time
//! per protected item, reports progress, honours cancellation and resolves interrupted jobs.
//!
//! Which operations may overlap on one vault:
//!
//! | running \ new | backup (other item) | backup (same item) | restore | delete data |
//! |---|---|---|---|---|
//! | backup        | yes (repository format allows concurrent writers) | queued (item lock) | yes (reads only) | queued (vault write lock) |
//! | restore       | yes | yes | yes | queued (vault write lock) |
//! | delete data   | queued | queued | queued | queued |
//!
//! Backups and restores hold the vault's lock shared; deleting data (forget + prune) holds it
//! exclusively, so prune never runs next to a backup of the same repository.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use rsvault_engine::{JobContext, Progress, Warning};

use crate::job::{codes, Job, JobError, JobStatus, Work};
use crate::model::{Item, Operation, RecoveryPoint, SourceInfo, Vault, Workload};
use crate::service::Service;

/// Per-job live state shared with the engine thread.
struct Live {
    cancel: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Locks {
    items: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    vaults: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
}

impl Locks {
    fn item(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.items.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.to_string()).or_default().clone()
    }
    fn vault(&self, key: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut m = self.vaults.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.to_string()).or_default().clone()
    }
}

pub struct Runner {
    live: Mutex<HashMap<String, Live>>,
    locks: Locks,
    /// The program and arguments that start an engine worker process.
    pub worker: (PathBuf, Vec<String>),
}

impl Runner {
    pub fn new(worker: (PathBuf, Vec<String>)) -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            locks: Locks::default(),
            worker,
        }
    }

    /// Signals a running job's engine work to stop. Returns whether the job was running here.
    pub fn signal_cancel(&self, job_id: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get(job_id) {
            Some(l) => {
                l.cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
}

/// Starts a job in the background.
pub fn spawn(svc: Arc<Service>, job_id: String) {
    tokio::spawn(async move {
        if let Err(e) = run(svc.clone(), &job_id).await {
            tracing::error!(job = %job_id, "job runner error: {e:#}");
            // The job must not stay InProgress: record the failure.
            let _ = svc.update_job(&job_id, |j| {
                if !j.status.is_terminal() {
                    j.errors.push(JobError {
                        code: codes::ENGINE,
                        title: "Internal error".into(),
                        message: format!("The job failed: {e}"),
                        recommendations: vec![
                            "Retry the operation; if it fails again, check the server log.".into(),
                        ],
                    });
                    j.finish(JobStatus::Failed);
                }
            });
        }
    });
}

async fn run(svc: Arc<Service>, job_id: &str) -> anyhow::Result<()> {
    let job = svc
        .get_job_any(job_id)?
        .ok_or_else(|| anyhow::anyhow!("job {job_id} vanished"))?;
    let vault_key = job.vault.key();
    let vault_lock = svc.runner.locks.vault(&vault_key);
    let item_lock = svc
        .runner
        .locks
        .item(&format!("{vault_key}|{}", job.item_key));
    let exclusive = job.work.is_exclusive();

    // Queue: one job per item at a time; delete-data excludes everything in the vault.
    let _item_guard = item_lock.lock().await;
    let (_r, _w);
    if exclusive {
        _w = Some(vault_lock.write().await);
        _r = None;
    } else {
        _r = Some(vault_lock.read().await);
        _w = None;
    }

    let cancel = Arc::new(AtomicBool::new(false));
    svc.runner
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            job_id.to_string(),
            Live {
                cancel: cancel.clone(),
            },
        );
    let _live_guard = LiveGuard {
        svc: svc.clone(),
        id: job_id.to_string(),
    };

    // Cancelled while queued: nothing ran, nothing to undo.
    let mut job = svc.update_job(job_id, |j| {
        if j.status == JobStatus::Cancelling {
            j.finish(JobStatus::Cancelled);
        } else if !j.status.is_terminal() {
            j.started = true;
            j.start_task(0);
        }
    })?;
    if job.status.is_terminal() {
        svc.finish_cancel_op(&job);
        return Ok(());
    }

    let vault: Vault = svc
        .get_vault_by_key(&vault_key)?
        .ok_or_else(|| anyhow::anyhow!("vault of job {job_id} no longer exists"))?;
    let ctx = Arc::new(Ctx {
        svc: svc.clone(),
        job_id: job_id.to_string(),
        cancel,
        last_write: Mutex::new(None),
        started: Instant::now(),
        warnings: Mutex::new(Vec::new()),
    });

    let outcome = match job.work.clone() {
        Work::Instant => Ok(Outcome::Done { warnings: vec![] }),
        Work::Backup { expiry, scheduled } => {
            backup(&svc, &vault, &job, ctx.clone(), expiry, scheduled).await
        }
        Work::Restore {
            snapshot_id,
            paths,
            target,
            conflict,
            ..
        } => {
            restore(
                &svc,
                &vault,
                ctx.clone(),
                snapshot_id,
                paths,
                target,
                conflict,
            )
            .await
        }
        Work::DeleteData => delete_data(&svc, &vault, &job, ctx.clone()).await,
        Work::GarbageCollection => {
            crate::maintenance::garbage_collect(&svc, &vault, &job, ctx.clone()).await
        }
        Work::Verify { read_data_percent } => {
            crate::maintenance::verify(&svc, &vault, &job, ctx.clone(), read_data_percent).await
        }
    };

    job = svc.update_job(job_id, |j| match &outcome {
        Ok(Outcome::Done { warnings }) => {
            for w in warnings {
                j.errors.push(JobError {
                    code: codes::WARNING_FILE,
                    title: "File skipped".into(),
                    message: format!("{}: {}", w.path, w.reason),
                    recommendations: vec![
                        "Check that the file is readable and not changing during backup.".into(),
                    ],
                });
            }
            j.finish(if warnings.is_empty() {
                JobStatus::Completed
            } else {
                JobStatus::CompletedWithWarnings
            });
        }
        Ok(Outcome::Warned(errors)) => {
            j.errors.extend(errors.iter().cloned());
            j.finish(if errors.is_empty() {
                JobStatus::Completed
            } else {
                JobStatus::CompletedWithWarnings
            });
        }
        Ok(Outcome::Cancelled) => j.finish(JobStatus::Cancelled),
        Err(e) => {
            let (code, title, rec) = classify(e);
            j.errors.push(JobError {
                code,
                title: title.into(),
                message: e.to_string(),
                recommendations: vec![rec.into()],
            });
            j.finish(if j.status == JobStatus::Cancelling {
                JobStatus::Cancelled
            } else {
                JobStatus::Failed
            });
        }
    })?;
    svc.after_job(&job)?;
    svc.finish_cancel_op(&job);
    Ok(())
}

fn classify(e: &rsvault_engine::Error) -> (i32, &'static str, &'static str) {
    use rsvault_engine::Error as E;
    match e {
        E::Cancelled => (codes::ENGINE, "Cancelled", "No action needed."),
        E::WrongKey(_) => (
            codes::REPOSITORY,
            "Vault key rejected",
            "Check the vault's repository key.",
        ),
        E::SnapshotNotFound(_) => (
            codes::REPOSITORY,
            "Recovery point data missing",
            "Run verification on the vault.",
        ),
        E::SourceUnavailable(_) => (
            codes::SOURCE,
            "Source unavailable",
            "Check that the source paths in the configuration exist and are readable.",
        ),
        E::Conflict(_) => (
            codes::CONFLICT,
            "Restore target conflict",
            "Choose copyOptions Overwrite or Skip, or another target.",
        ),
        E::DiskFull(_) => (
            codes::DISK_FULL,
            "Target disk full",
            "Free space on the restore target and retry.",
        ),
        E::Repository(_) => (
            codes::REPOSITORY,
            "Repository error",
            "Run verification on the vault.",
        ),
        E::Worker(_) => (
            codes::ENGINE,
            "Engine worker failed",
            "Retry; if it fails again, check the server log.",
        ),
    }
}

pub(crate) enum Outcome {
    Done {
        warnings: Vec<Warning>,
    },
    /// Completed; these findings make it `CompletedWithWarnings`.
    Warned(Vec<JobError>),
    Cancelled,
}

struct LiveGuard {
    svc: Arc<Service>,
    id: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.svc
            .runner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The engine's view of the job: cancellation flag, throttled progress, collected warnings.
pub(crate) struct Ctx {
    svc: Arc<Service>,
    pub(crate) job_id: String,
    cancel: Arc<AtomicBool>,
    last_write: Mutex<Option<Instant>>,
    started: Instant,
    pub(crate) warnings: Mutex<Vec<Warning>>,
}

impl Ctx {
    pub(crate) fn is_cancelled_now(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

impl JobContext for Ctx {
    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    fn progress(&self, p: &Progress) {
        let mut last = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        // Persist at most once a second: the job row is what every node and client reads.
        if last.is_some_and(|t| t.elapsed().as_millis() < 1000) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        let pct = if p.bytes_total > 0 {
            (p.bytes_done as f64 / p.bytes_total as f64 * 100.0).clamp(0.0, 99.9)
        } else {
            0.0
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if p.bytes_done > 0 && p.bytes_total > p.bytes_done {
            Some(
                ((p.bytes_total - p.bytes_done) as f64 * elapsed / p.bytes_done as f64).ceil()
                    as i64,
            )
        } else {
            None
        };
        let phase = format!("{:?}", p.phase);
        let _ = self.svc.update_job(&self.job_id, |j| {
            if j.status.is_terminal() {
                return;
            }
            j.progress = Some((pct * 100.0).round() / 100.0);
            j.eta_seconds = eta;
            j.property_bag.insert("Phase".into(), phase.clone());
            j.property_bag
                .insert("Files Done".into(), p.files_done.to_string());
            j.property_bag
                .insert("Bytes Done".into(), p.bytes_done.to_string());
            // "Take Snapshot" ends when the engine starts moving data.
            if j.operation == "Backup" && matches!(p.phase, rsvault_engine::Phase::Transferring) {
                if j.tasks.first().is_some_and(|t| t.status == "InProgress") {
                    j.complete_task(0);
                    j.start_task(1);
                }
                if let Some(t) = j.tasks.get_mut(1) {
                    t.progress = Some((pct * 100.0).round() / 100.0);
                }
            }
        });
    }

    fn warn(&self, warning: Warning) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(warning);
    }
}

pub(crate) fn engine_call(
    svc: &Service,
    ctx: &Arc<Ctx>,
    request: rsvault_engine::worker::Request,
) -> impl std::future::Future<Output = Result<rsvault_engine::worker::Response, rsvault_engine::Error>>
{
    let (program, args) = svc.runner.worker.clone();
    let ctx = ctx.clone();
    async move {
        tokio::task::spawn_blocking(move || {
            rsvault_engine::worker::run_in_worker(&program, &args, &request, ctx.as_ref())
        })
        .await
        .map_err(|e| rsvault_engine::Error::Worker(format!("engine task failed: {e}")))?
    }
}

pub(crate) fn repo_config(svc: &Service, vault: &Vault) -> rsvault_engine::RepoConfig {
    rsvault_engine::RepoConfig {
        path: svc.repo_dir(vault),
        password: vault.password.clone(),
    }
}

async fn backup(
    svc: &Arc<Service>,
    vault: &Vault,
    job: &Job,
    ctx: Arc<Ctx>,
    expiry: Option<chrono::DateTime<Utc>>,
    scheduled: bool,
) -> Result<Outcome, rsvault_engine::Error> {
    use rsvault_engine::worker::{Request, Response};
    let item: Item = svc
        .get_item(vault, &job.item_key)
        .map_err(|e| rsvault_engine::Error::Repository(e.to_string()))?
        .ok_or_else(|| {
            rsvault_engine::Error::SourceUnavailable("the protected item no longer exists".into())
        })?;
    let source: SourceInfo = svc.source_for(&item).ok_or_else(|| {
        rsvault_engine::Error::SourceUnavailable(format!(
            "the source of '{}' is no longer in the configuration",
            item.friendly_name
        ))
    })?;
    let engine_source = match source.workload {
        Workload::Vm => rsvault_engine::Source::Disks {
            paths: source.paths.clone(),
        },
        Workload::FileShare => rsvault_engine::Source::Directory {
            path: source.paths[0].clone(),
        },
    };
    let limit = svc.config.limits.backup_bytes_per_second;
    let opts = rsvault_engine::BackupOptions {
        parent: item.last_snapshot.clone(),
        tags: vec![
            format!("rsvault-job={}", job.id),
            format!("rsvault-item={}", item.key()),
        ],
        host: Some(source.host_name.clone()),
        bytes_per_second: (limit > 0).then_some(limit),
    };
    let repo = repo_config(svc, vault);
    if !repo.path.join("config").exists() {
        // First backup into this vault: create its repository (idempotent if another job raced us).
        engine_call(svc, &ctx, Request::Init { repo: repo.clone() }).await?;
    }
    let t0 = Instant::now();
    let resp = engine_call(
        svc,
        &ctx,
        Request::Backup {
            repo,
            source: engine_source,
            options: opts,
        },
    )
    .await;
    let out = match resp {
        Ok(Response::Backup(out)) => out,
        Ok(other) => {
            return Err(rsvault_engine::Error::Worker(format!(
                "unexpected worker answer {other:?}"
            )))
        }
        Err(rsvault_engine::Error::Cancelled) => return Ok(Outcome::Cancelled),
        Err(e) => return Err(e),
    };
    if ctx.is_cancelled() {
        // The snapshot was written before the cancel landed: the job still says Cancelled, so
        // the snapshot must not survive as an unlisted point.
        let _ = engine_call(
            svc,
            &ctx,
            Request::Forget {
                repo: repo_config(svc, vault),
                ids: vec![out.snapshot_id.clone()],
            },
        )
        .await;
        return Ok(Outcome::Cancelled);
    }
    let now = Utc::now();
    let rp = RecoveryPoint {
        id: crate::service::new_recovery_point_id(),
        item_key: item.key(),
        workload: item.workload,
        snapshot_id: out.snapshot_id.clone(),
        time: now,
        expiry,
        bytes: out.bytes_total,
        files: out.files,
        scheduled,
        damaged: false,
    };
    let elapsed = t0.elapsed().as_secs_f64().max(0.001);
    svc.record_backup(vault, &job.id, &item, rp, |j| {
        let bag = &mut j.property_bag;
        bag.remove("Phase");
        bag.remove("Files Done");
        bag.remove("Bytes Done");
        match item.workload {
            Workload::Vm => bag.insert("VM Name".into(), item.friendly_name.clone()),
            Workload::FileShare => bag.insert("File Share Name".into(), item.friendly_name.clone()),
        };
        bag.insert(
            "Backup Size".into(),
            format!("{} MB", out.bytes_total.div_ceil(1 << 20)),
        );
        bag.insert(
            "Data Transferred".into(),
            format!("{} MB", out.bytes_added.div_ceil(1 << 20)),
        );
        bag.insert("Files".into(), out.files.to_string());
        bag.insert(
            "Throughput".into(),
            format!("{:.1} MB/s", out.bytes_total as f64 / elapsed / 1_048_576.0),
        );
        bag.insert(
            "Recovery Point Expiry Time".into(),
            expiry
                .map(crate::arm::time)
                .unwrap_or_else(|| "Retained per policy".into()),
        );
    })
    .map_err(|e| rsvault_engine::Error::Repository(e.to_string()))?;
    let mut warnings = out.warnings;
    for w in ctx
        .warnings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    Ok(Outcome::Done { warnings })
}

async fn restore(
    svc: &Arc<Service>,
    vault: &Vault,
    ctx: Arc<Ctx>,
    snapshot_id: String,
    paths: Vec<String>,
    target: PathBuf,
    conflict: rsvault_engine::Conflict,
) -> Result<Outcome, rsvault_engine::Error> {
    use rsvault_engine::worker::{Request, Response};
    let spec = rsvault_engine::RestoreSpec {
        snapshot_id,
        paths,
        target,
        conflict,
    };
    let resp = engine_call(
        svc,
        &ctx,
        Request::Restore {
            repo: repo_config(svc, vault),
            spec,
        },
    )
    .await;
    match resp {
        Ok(Response::Restore(out)) => {
            let _ = svc.update_job(&ctx.job_id, |j| {
                j.property_bag.remove("Phase");
                j.property_bag.remove("Files Done");
                j.property_bag.remove("Bytes Done");
                j.property_bag
                    .insert("Files Restored".into(), out.files.to_string());
                j.property_bag.insert(
                    "Restored Size".into(),
                    format!("{} MB", out.bytes.div_ceil(1 << 20)),
                );
                j.property_bag
                    .insert("Files Skipped".into(), out.skipped.len().to_string());
            });
            let mut warnings = out.warnings;
            warnings.extend(
                ctx.warnings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain(..),
            );
            Ok(Outcome::Done { warnings })
        }
        Ok(other) => Err(rsvault_engine::Error::Worker(format!(
            "unexpected worker answer {other:?}"
        ))),
        Err(rsvault_engine::Error::Cancelled) => Ok(Outcome::Cancelled),
        Err(e) => Err(e),
    }
}

async fn delete_data(
    svc: &Arc<Service>,
    vault: &Vault,
    job: &Job,
    ctx: Arc<Ctx>,
) -> Result<Outcome, rsvault_engine::Error> {
    use rsvault_engine::worker::Request;
    let points = svc
        .recovery_points(vault, &job.item_key)
        .map_err(|e| rsvault_engine::Error::Repository(e.to_string()))?;
    let ids: Vec<String> = points.iter().map(|p| p.snapshot_id.clone()).collect();
    if !ids.is_empty() {
        engine_call(
            svc,
            &ctx,
            Request::Forget {
                repo: repo_config(svc, vault),
                ids,
            },
        )
        .await?;
        engine_call(
            svc,
            &ctx,
            Request::Prune {
                repo: repo_config(svc, vault),
            },
        )
        .await?;
    }
    svc.remove_item_data(vault, &job.item_key)
        .map_err(|e| rsvault_engine::Error::Repository(e.to_string()))?;
    let _ = svc.update_job(&job.id, |j| {
        j.property_bag
            .insert("Recovery Points Deleted".into(), points.len().to_string());
    });
    Ok(Outcome::Done { warnings: vec![] })
}

/// Marks an operation finished after the job it tracks ended (cancel operations).
pub fn finish_op(op: &mut Operation, ok: bool) {
    op.status = if ok { "Succeeded" } else { "Failed" }.into();
    op.end = Some(Utc::now());
}
