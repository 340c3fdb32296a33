//! The engine's view of a job (cancel flag, throttled progress, collected warnings) and the call
//! that runs one engine request in a worker process. Shared by the runner and maintenance.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rsvault_engine::{JobContext, Progress, Warning};
use rsvault_types::job::JobError;
use rsvault_types::model::Vault;

use crate::service::Service;

pub(crate) enum Outcome {
    Done {
        warnings: Vec<Warning>,
    },
    /// Completed; these findings make it `CompletedWithWarnings`.
    Warned(Vec<JobError>),
    Cancelled,
}

/// The engine's view of the job: cancellation flag, throttled progress, collected warnings.
pub(crate) struct Ctx {
    pub(crate) svc: Arc<Service>,
    pub(crate) job_id: String,
    /// The attempt this node runs the job as: the fence of its writes.
    pub(crate) attempt: i64,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) last_write: Mutex<Option<Instant>>,
    pub(crate) started: Instant,
    pub(crate) warnings: Mutex<Vec<Warning>>,
    /// The last "all bytes done" progress written, (phase, bytes): each is written once, however
    /// soon it follows the one before, so a short phase never stays at its start.
    pub(crate) last_complete: Mutex<Option<(String, u64)>>,
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
        // Persist at most once a second: the job row is what every node and client reads. A
        // phase's last step (all bytes done) always gets through.
        let complete = (p.bytes_total > 0 && p.bytes_done >= p.bytes_total)
            .then(|| (format!("{:?}", p.phase), p.bytes_done));
        let first_complete = complete.is_some() && {
            let mut c = self.last_complete.lock().unwrap_or_else(|e| e.into_inner());
            let new = *c != complete;
            *c = complete.clone();
            new
        };
        if !first_complete && last.is_some_and(|t| t.elapsed().as_millis() < 1000) {
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
        let mut new_phase = false;
        let _ = self
            .svc
            .update_running_job(&self.job_id, self.attempt, |j| {
                if j.status.is_terminal() {
                    return;
                }
                new_phase = j.property_bag.get("Phase") != Some(&phase);
                j.progress = Some((pct * 100.0).round() / 100.0);
                j.eta_seconds = eta;
                j.property_bag.insert("Phase".into(), phase.clone());
                j.property_bag
                    .insert("Files Done".into(), p.files_done.to_string());
                j.property_bag
                    .insert("Bytes Done".into(), p.bytes_done.to_string());
                // Azure's storage and vault job shapes have no progress fields: every job says
                // it in its property bag too.
                j.property_bag
                    .insert("Bytes Total".into(), p.bytes_total.to_string());
                j.property_bag.insert(
                    "Progress Percentage".into(),
                    format!("{:.2}", (pct * 100.0).round() / 100.0),
                );
                match eta {
                    Some(s) => j.property_bag.insert(
                        "Estimated Remaining Duration".into(),
                        rsvault_types::arm::duration(chrono::Duration::seconds(s)),
                    ),
                    None => j.property_bag.remove("Estimated Remaining Duration"),
                };
                // "Take Snapshot" ends when the engine starts moving data.
                if j.operation == "Backup" && matches!(p.phase, rsvault_engine::Phase::Transferring)
                {
                    if j.tasks.first().is_some_and(|t| t.status == "InProgress") {
                        j.complete_task(0);
                        j.start_task(1);
                    }
                    if let Some(t) = j.tasks.get_mut(1) {
                        t.progress = Some((pct * 100.0).round() / 100.0);
                    }
                }
            });
        if new_phase {
            self.svc.log_job(
                &self.job_id,
                crate::joblog::Level::Info,
                &format!(
                    "Phase {phase}: {} files, {} of {} bytes.",
                    p.files_done, p.bytes_done, p.bytes_total
                ),
            );
        }
    }

    fn warn(&self, warning: Warning) {
        self.svc.log_job(
            &self.job_id,
            crate::joblog::Level::Warning,
            &format!("Skipped {}: {}", warning.path, warning.reason),
        );
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
    let (program, mut args) = svc.runner.worker.clone();
    if matches!(
        request,
        rsvault_engine::worker::Request::Restore { .. }
            | rsvault_engine::worker::Request::RestoreScoped { .. }
    ) {
        args.extend(["--umask".into(), format!("{:o}", svc.runner.restore_umask)]);
    }
    let ctx = ctx.clone();
    async move {
        tokio::task::spawn_blocking(move || {
            rsvault_engine::worker::run_in_worker(&program, &args, &request, ctx.as_ref())
        })
        .await
        .map_err(|e| rsvault_engine::Error::Worker(format!("engine task failed: {e}")))?
    }
}

/// The engine's view of a vault's repository, its keys unwrapped for the worker's pipe only:
/// the password, and the master key when one is stored (the worker then opens the repository
/// without deriving a key from the password).
pub(crate) fn repo_config(
    svc: &Service,
    vault: &Vault,
) -> Result<rsvault_engine::RepoConfig, rsvault_engine::Error> {
    Ok(rsvault_engine::RepoConfig {
        path: svc.repo_dir(vault),
        password: svc
            .vault_password(vault)
            .map_err(|e| rsvault_engine::Error::WrongKey(format!("{e:#}")))?,
        master_key: svc
            .vault_master_key(vault)
            .map(rsvault_engine::MasterKey::from_text),
    })
}

/// [`repo_config`], with the master key derived first if the vault has none stored yet: one
/// scrypt per vault (in a worker of its own, then stored wrapped), not one per engine call.
/// `create`: create the repository if it does not exist (a first backup; the new repository's
/// key costs no derivation at all). Without it a missing repository is left to the caller.
pub(crate) async fn keyed_repo_config(
    ctx: &Arc<Ctx>,
    vault: &Vault,
    create: bool,
) -> Result<rsvault_engine::RepoConfig, rsvault_engine::Error> {
    use rsvault_engine::worker::{Request, Response};
    let svc = &ctx.svc;
    let mut repo = repo_config(svc, vault)?;
    let exists = repo.path.join("config").exists();
    if (exists && repo.master_key.is_some()) || (!exists && !create) {
        return Ok(repo);
    }
    let request = Request::MasterKey {
        repo: repo.clone(),
        create,
    };
    match engine_call(svc, ctx, request).await? {
        Response::MasterKey(key) => {
            if let Err(e) = svc.store_master_key(vault, key.as_str()) {
                // Only a cache of what the password opens: the next job derives it again.
                tracing::warn!(vault = %vault.vault.key(), "storing the master key: {e}");
            }
            repo.master_key = Some(key);
            Ok(repo)
        }
        other => Err(rsvault_engine::Error::Worker(format!(
            "unexpected worker answer {other:?}"
        ))),
    }
}
