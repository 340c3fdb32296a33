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

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use rsvault_engine::JobContext;
use rsvault_types::job::{codes, Conflict, Job, JobError, Work};
use rsvault_types::model::{Item, RecoveryPoint, SourceInfo, Vault, Workload};

use crate::context::{engine_call, keyed_repo_config, repo_config, Ctx, Outcome};
use crate::service::Service;
use crate::state::{transition, Event, State};

/// The node's job loop: claims what the store's queue lets this node run, renews the leases of
/// its running jobs, passes on cancel requests made through any node, and (on the elected node)
/// reaps the jobs of nodes that went silent. Wakes when a job is queued here, else once a second,
/// so a cancel made through another node is seen within 2 s.
pub async fn dispatch(svc: Arc<Service>) {
    if !svc.runner.start_dispatching() {
        tracing::error!("the job dispatcher was started twice");
        return;
    }
    // A third of the lease, so one missed renewal is survivable; at most 10 s, so a silent
    // node's jobs end within lease_seconds + 15 s (the reaper runs on the same beat).
    let renew_every =
        std::time::Duration::from_secs((svc.config.runner.lease_seconds / 3).clamp(1, 10));
    let mut last_renew = Instant::now();
    loop {
        loop {
            match svc.claim_next() {
                Ok(Some((job, attempt))) => spawn(svc.clone(), job, attempt),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("claiming a job: {e}");
                    break;
                }
            }
        }
        if let Err(e) = svc.explain_queued() {
            tracing::warn!("describing queued jobs: {e}");
        }
        // Leases and the reaper need a write each; a third of the lease is often enough for both.
        if last_renew.elapsed() >= renew_every {
            last_renew = Instant::now();
            if let Err(e) = svc.renew_leases() {
                tracing::error!("renewing job leases: {e}");
            }
            if let Err(e) = svc.node_heartbeat() {
                tracing::error!("recording this node's heartbeat: {e}");
            }
            if let Err(e) = svc.reap_expired() {
                tracing::error!("reaping expired job leases: {e}");
            }
        }
        if let Err(e) = svc.poll_cancel_requests() {
            tracing::warn!("reading cancel requests: {e}");
        }
        tokio::select! {
            _ = svc.runner.wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Runs a claimed job in the background. The job's own task runs inside a second one, so that a
/// panic anywhere in it ends the job `Failed` at once instead of leaving it `InProgress`.
fn spawn(svc: Arc<Service>, job: Job, attempt: i64) {
    tokio::spawn(async move {
        let job_id = job.id.clone();
        let task = tokio::spawn({
            let svc = svc.clone();
            async move { run(svc, job, attempt).await }
        });
        let result = match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(anyhow::anyhow!("the job's task panicked")),
            Err(e) => Err(anyhow::anyhow!("the job's task ended: {e}")),
        };
        if let Err(e) = result {
            tracing::error!(job = %job_id, "job runner error: {e:#}");
            // The job must not stay InProgress: record the failure (if this node still holds it).
            let failed = svc.update_running_job(&job_id, attempt, |j| {
                if !State::of(j).is_terminal() {
                    j.errors.push(JobError {
                        code: codes::ENGINE,
                        title: "Internal error".into(),
                        message: format!("The job failed: {e}"),
                        recommendations: vec![
                            "Retry the operation; if it fails again, check the server log.".into(),
                        ],
                    });
                    let _ = transition(j, Event::Fail);
                }
            });
            if let Ok(job) = failed {
                let _ = svc.after_job(&job);
                svc.finish_cancel_op(&job);
            }
        }
        // A slot is free: claim the next job now rather than at the next tick.
        svc.runner.wake.notify_one();
    });
}

async fn run(svc: Arc<Service>, job: Job, attempt: i64) -> anyhow::Result<()> {
    let job_id = job.id.as_str();
    let vault_key = job.vault.key();
    let cancel = svc.runner.register(job_id);
    let _live_guard = LiveGuard {
        svc: svc.clone(),
        id: job_id.to_string(),
    };
    crate::failpoint::hit("job.started");
    if job.status.is_terminal() {
        // Cancelled while queued: the claim ended it, nothing ran.
        svc.finish_cancel_op(&job);
        return Ok(());
    }

    svc.log_job(
        job_id,
        crate::joblog::Level::Info,
        &format!(
            "{} started on node '{}' (attempt {attempt}).",
            job.operation, svc.node_id
        ),
    );
    let vault: Vault = svc
        .get_vault_by_key(&vault_key)?
        .ok_or_else(|| anyhow::anyhow!("vault of job {job_id} no longer exists"))?;
    let ctx = Arc::new(Ctx {
        svc: svc.clone(),
        job_id: job_id.to_string(),
        attempt,
        cancel,
        last_write: Mutex::new(None),
        started: Instant::now(),
        warnings: Mutex::new(Vec::new()),
        last_complete: Mutex::new(None),
    });

    let outcome = match job.work.clone() {
        Work::Instant => Ok(Outcome::Done { warnings: vec![] }),
        Work::Backup { expiry, scheduled } => {
            backup(&svc, &vault, &job, ctx.clone(), expiry, scheduled).await
        }
        work @ Work::Restore { .. } => restore(&svc, &vault, ctx.clone(), work).await,
        Work::DeleteData => delete_data(&svc, &vault, &job, ctx.clone()).await,
        Work::GarbageCollection => {
            crate::maintenance::garbage_collect(&svc, &vault, &job, ctx.clone()).await
        }
        Work::RestoreDrill { sample_percent } => {
            crate::maintenance::restore_drill(&svc, &vault, &job, ctx.clone(), sample_percent).await
        }
        Work::Verify { read_data_percent } => {
            crate::maintenance::verify(&svc, &vault, &job, ctx.clone(), read_data_percent).await
        }
    };

    let job = svc.update_running_job(job_id, attempt, |j| {
        if State::of(j).is_terminal() {
            // Ended elsewhere (e.g. failed by a restart's recovery): the first end stands.
            return;
        }
        let event = match &outcome {
            Ok(Outcome::Done { warnings }) => {
                for w in warnings {
                    j.errors.push(JobError {
                        code: codes::WARNING_FILE,
                        title: "File skipped".into(),
                        message: format!("{}: {}", w.path, w.reason),
                        recommendations: vec![
                            "Check that the file is readable and not changing during backup."
                                .into(),
                        ],
                    });
                }
                Event::Succeed {
                    warnings: !warnings.is_empty(),
                }
            }
            Ok(Outcome::Warned(errors)) => {
                j.errors.extend(errors.iter().cloned());
                Event::Succeed {
                    warnings: !errors.is_empty(),
                }
            }
            Ok(Outcome::Cancelled) => Event::Stopped,
            Err(e) => {
                let (code, title, rec) = classify(e);
                j.errors.push(JobError {
                    code,
                    title: title.into(),
                    message: e.to_string(),
                    recommendations: vec![rec.into()],
                });
                Event::Fail
            }
        };
        if let Err(e) = transition(j, event) {
            tracing::error!(job = %j.id, "{e}");
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
    let source: SourceInfo = svc.local_source_for(&item).ok_or_else(|| {
        rsvault_engine::Error::SourceUnavailable(format!(
            "the source of '{}' is not in the configuration of node {}",
            item.friendly_name, svc.node_id
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
    // The first backup into this vault creates its repository (idempotent if another job raced
    // us); every job opens it by its master key.
    let repo = keyed_repo_config(&ctx, vault, true).await?;
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
                repo: repo_config(svc, vault)?,
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
    crate::failpoint::hit("backup.before_record");
    svc.record_backup(vault, &job.id, ctx.attempt, &item, rp, |j| {
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
                .map(rsvault_types::arm::time)
                .unwrap_or_else(|| "Retained per policy".into()),
        );
    })
    .map_err(|e| rsvault_engine::Error::Repository(e.to_string()))?;
    crate::failpoint::hit("backup.after_record");
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
    work: Work,
) -> Result<Outcome, rsvault_engine::Error> {
    use rsvault_engine::worker::{Request, Response};
    let Work::Restore {
        snapshot_id,
        paths,
        target,
        conflict,
        recovery_type,
        ..
    } = work
    else {
        unreachable!("restore() is called with restore work only");
    };
    // The engine writes only below `root`, reached from one opened handle without following
    // symlinks, whatever is swapped in after the request was accepted. An original-location
    // restore is confined to the source itself (the share, or the VM's disk folder); an
    // alternate one to the configured restore root that holds its target.
    let original_location = recovery_type.eq_ignore_ascii_case("OriginalLocation");
    let root = if original_location {
        Some(target.clone())
    } else {
        let canonical = |p: &std::path::Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        svc.config
            .restore_roots
            .iter()
            .find(|r| target.starts_with(r) || target.starts_with(canonical(r)))
            .cloned()
    };
    let scope = rsvault_engine::RestoreScope {
        root,
        original_location,
    };
    let spec = rsvault_engine::RestoreSpec {
        snapshot_id,
        paths,
        target,
        conflict: match conflict {
            Conflict::Overwrite => rsvault_engine::Conflict::Overwrite,
            Conflict::Skip => rsvault_engine::Conflict::Skip,
            Conflict::Fail => rsvault_engine::Conflict::Fail,
        },
    };
    let resp = engine_call(
        svc,
        &ctx,
        Request::RestoreScoped {
            repo: keyed_repo_config(&ctx, vault, false).await?,
            spec,
            scope,
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
    if job.property_bag.contains_key(crate::soft_delete::BAG_PURGE) {
        let item = svc
            .get_item(vault, &job.item_key)
            .map_err(|e| rsvault_engine::Error::Repository(e.to_string()))?;
        if !crate::soft_delete::purge_allowed(item.as_ref(), Utc::now()) {
            // Undeleted after the purge was queued: its data stays.
            let _ = svc.update_job(&job.id, |j| {
                j.property_bag.insert(
                    "Purge Skipped".into(),
                    "the item is no longer soft-deleted".into(),
                );
            });
            return Ok(Outcome::Done { warnings: vec![] });
        }
    }
    let points = svc
        .recovery_points(vault, &job.item_key)
        .map_err(|e| rsvault_engine::Error::Repository(e.to_string()))?;
    let ids: Vec<String> = points.iter().map(|p| p.snapshot_id.clone()).collect();
    if !ids.is_empty() {
        engine_call(
            svc,
            &ctx,
            Request::Forget {
                repo: repo_config(svc, vault)?,
                ids,
            },
        )
        .await?;
        engine_call(
            svc,
            &ctx,
            Request::Prune {
                repo: repo_config(svc, vault)?,
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

/// Removes a job from the node's live set however its task ends.
struct LiveGuard {
    svc: Arc<Service>,
    id: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.svc.runner.unregister(&self.id);
    }
}
