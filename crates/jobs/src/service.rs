//! The service layer: vaults, sources, protection, jobs and operations over the store, shared by
//! the HTTP handlers and the runner. Handlers translate wire input into calls here.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use crate::config::Config;
use rsvault_store::{self as store, JobRow, Store};
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};
use rsvault_types::job::{codes, tasks_for, Job, JobError, JobStatus, Work};
use rsvault_types::model::{Item, OpKind, Operation, RecoveryPoint, SourceInfo, Vault, VaultRef};

use crate::live::Runner;
use crate::state::{transition, Event, State};

mod keys;

pub const K_VAULT: &str = "vault";
pub const K_POLICY: &str = "policy";
pub const K_CONTAINER: &str = "container";
pub const K_ITEM: &str = "item";
pub const K_RP: &str = "rp";
pub const K_OP: &str = "op";
pub use crate::secrets::{shared_secret, ADMIN_TOKEN, EXPORT_SIGNING_KEY, K_SECRET};

pub struct Service {
    pub store: Store,
    pub config: Config,
    pub data_dir: PathBuf,
    pub runner: Runner,
    /// This node's sources (from its config).
    pub sources: Vec<SourceInfo>,
    /// The sources of the deployment's other live nodes (refreshed on the lease beat; empty on
    /// an embedded store).
    pub peer_sources: std::sync::RwLock<Vec<SourceInfo>>,
    /// Secret for signing export links.
    pub signing_key: Vec<u8>,
    /// The key-encryption key that wraps every vault's repository key.
    pub kek: crate::secrets::Kek,
    /// This process's identity for leases.
    pub node_id: String,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
    /// The last readiness probe of an object-store repository location.
    pub ready_probe: crate::recent::Recent<Result<(), String>>,
}

/// The property-bag key that names the node that ran a job.
pub const NODE_KEY: &str = "Node";

/// The property-bag key that names the recovery point a backup job recorded.
pub const RECOVERY_POINT_KEY: &str = "Recovery Point Id";

/// Ends a started job whose runner stopped before it finished, truthfully: `Completed` when its
/// recovery point was already recorded (only the last step was cut off), `Cancelled` when a cancel
/// was pending, else `Failed` with `why` and the assurance that earlier points are unaffected.
pub fn interrupt(j: &mut Job, why: &str) {
    if j.property_bag.contains_key(RECOVERY_POINT_KEY) {
        j.property_bag.insert(
            "Note".into(),
            format!("{why} Its recovery point had been recorded, so the job was completed."),
        );
        let _ = transition(j, Event::Succeed { warnings: false });
    } else if matches!(State::of(j), State::Cancelling { .. }) {
        let _ = transition(j, Event::Interrupt);
    } else {
        j.errors.push(JobError {
            code: codes::INTERRUPTED,
            title: "Job interrupted".into(),
            message: format!(
                "{why} No recovery point was created by it; earlier recovery points are unaffected."
            ),
            recommendations: vec!["Trigger the operation again.".into()],
        });
        let _ = transition(j, Event::Interrupt);
    }
}

/// A decimal recovery point id, increasing with time.
pub fn new_recovery_point_id() -> String {
    let micros = Utc::now().timestamp_micros().max(0) as u64;
    let salt: u64 = rand::random::<u64>() % 1000;
    (micros / 10 * 1000 + salt).to_string()
}

impl Service {
    /// Where repositories live, credentials resolved (read again on every call, so a rotated
    /// key file is used by the next job).
    pub fn repositories(&self) -> Result<crate::repository::Repositories, String> {
        self.config
            .repository
            .resolve(&self.data_dir, |k| std::env::var(k).ok())
            .map_err(|e| format!("{e:#}"))
    }

    /// The engine's view of `vault`'s repository, without its keys: `PREFIX/<sub>/<rg>/<vault>`
    /// in the configured location. A vault created before repositories were named so keeps its
    /// directory (`LOCATION/<created>-<etag>`).
    pub fn repo_location(&self, vault: &Vault) -> Result<rsvault_engine::RepoConfig, String> {
        let repos = self.repositories()?;
        let (path, store) = match &repos {
            crate::repository::Repositories::Directory(root) => {
                let legacy = root.join(format!(
                    "{}-{}",
                    vault.created.timestamp_micros(),
                    &vault.etag
                ));
                if legacy.join("config").is_file() {
                    (legacy, None)
                } else {
                    repos.for_vault(&vault.vault)
                }
            }
            _ => repos.for_vault(&vault.vault),
        };
        Ok(rsvault_engine::RepoConfig {
            path,
            password: String::new(),
            master_key: None,
            store,
        })
    }

    /// Runs one engine request that belongs to no job (deleting a vault's data, measuring it)
    /// in a worker process.
    pub async fn engine_request(
        &self,
        request: rsvault_engine::worker::Request,
    ) -> Result<rsvault_engine::worker::Response, rsvault_engine::Error> {
        self.engine_request_within(request, None).await
    }

    /// [`Service::engine_request`] with a time limit: past it the worker is told to stop (and
    /// killed after the grace period), and the answer is [`rsvault_engine::Error::Cancelled`].
    pub async fn engine_request_within(
        &self,
        request: rsvault_engine::worker::Request,
        limit: Option<std::time::Duration>,
    ) -> Result<rsvault_engine::worker::Response, rsvault_engine::Error> {
        struct NoJob(Option<std::time::Instant>);
        impl rsvault_engine::JobContext for NoJob {
            fn is_cancelled(&self) -> bool {
                self.0.is_some_and(|d| std::time::Instant::now() >= d)
            }
            fn progress(&self, _: &rsvault_engine::Progress) {}
            fn warn(&self, _: rsvault_engine::Warning) {}
        }
        let (program, args) = self.runner.worker.clone();
        let ctx = NoJob(limit.map(|l| std::time::Instant::now() + l));
        tokio::task::spawn_blocking(move || {
            rsvault_engine::worker::run_in_worker(&program, &args, &request, &ctx)
        })
        .await
        .map_err(|e| rsvault_engine::Error::Worker(format!("engine task failed: {e}")))?
    }

    /// Bytes in `vault`'s repository (0 before its first backup).
    pub async fn repository_bytes(&self, vault: &Vault) -> Result<u64, rsvault_engine::Error> {
        let repo = self
            .repo_location(vault)
            .map_err(rsvault_engine::Error::Repository)?;
        match self
            .engine_request(rsvault_engine::worker::Request::Size { repo })
            .await?
        {
            rsvault_engine::worker::Response::Size(n) => Ok(n),
            other => Err(rsvault_engine::Error::Worker(format!(
                "unexpected worker answer {other:?}"
            ))),
        }
    }

    /// [`Service::delete_vault`], then its repository: a vault can only be deleted empty, but
    /// its repository may still hold the data of deleted items.
    pub async fn delete_vault_and_repository(&self, v: &VaultRef) -> ArmResult<bool> {
        let Some(vault) = self.get_vault_by_key(&v.key())? else {
            return Ok(false);
        };
        if !self.delete_vault(v)? {
            return Ok(false);
        }
        let destroyed = match self.repo_location(&vault) {
            Ok(repo) => self
                .engine_request(rsvault_engine::worker::Request::Destroy { repo })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = destroyed {
            tracing::warn!(vault = %v.key(), "could not delete the vault's repository: {e}");
        }
        Ok(true)
    }

    // ---- vaults ----

    pub fn get_vault(&self, v: &VaultRef) -> ArmResult<Vault> {
        self.get_vault_by_key(&v.key())?.ok_or_else(|| {
            ArmError::new(
                ArmCode::ResourceNotFound,
                format!(
                    "The Resource 'Microsoft.RecoveryServices/vaults/{}' under resource group '{}' was not found.",
                    v.name, v.rg
                ),
            )
        })
    }

    pub fn get_vault_by_key(&self, key: &str) -> Result<Option<Vault>, store::Error> {
        self.store.read_one(|tx| tx.get(K_VAULT, key, ""))
    }

    pub fn put_vault(&self, vault: &Vault) -> ArmResult<()> {
        Ok(self
            .store
            .tx(|tx| tx.put(K_VAULT, &vault.vault.key(), "", "", vault))?)
    }

    pub fn list_vaults(&self, sub: &str, rg: Option<&str>) -> ArmResult<Vec<Vault>> {
        let prefix = match rg {
            Some(rg) => format!("{sub}/{rg}/"),
            None => format!("{sub}/"),
        }
        .to_ascii_lowercase();
        Ok(self.store.read(|tx| tx.list_prefix(K_VAULT, &prefix))?)
    }

    /// Deletes the vault's records; [`Service::delete_vault_and_repository`] also deletes its
    /// repository.
    pub fn delete_vault(&self, v: &VaultRef) -> ArmResult<bool> {
        let key = v.key();
        if self.get_vault_by_key(&key)?.is_none() {
            return Ok(false);
        }
        let refused = self.store.tx(|tx| {
            let items: Vec<Item> = tx.list(K_ITEM, &key, None)?;
            if let Some(purge) = items.iter().filter_map(|i| i.soft_deleted).map(|s| s.purge_at).max() {
                return Ok(Some(format!(
                    "it has soft-deleted items, whose backup data is kept until {} (the last purge). Undelete them and delete their data with the vault's soft delete Disabled, or wait for the purge",
                    rsvault_types::arm::time(purge)
                )));
            }
            if !items.is_empty() {
                return Ok(Some("it still has protected items. Stop protection and delete their backup data first".into()));
            }
            if tx.active_jobs_in_vault(&key)? > 0 {
                return Ok(Some("jobs are still running in it. Wait for them or cancel them first".into()));
            }
            for kind in [K_POLICY, K_CONTAINER, K_RP, K_OP] {
                tx.delete_all(kind, &key, None)?;
            }
            tx.delete_jobs_of_vault(&key)?;
            tx.delete_orphan_job_logs()?;
            tx.delete(K_VAULT, &key, "")?;
            Ok(None)
        })?;
        if let Some(why) = refused {
            return Err(ArmError::new(
                ArmCode::VaultNotEmpty,
                format!("Vault '{}' cannot be deleted because {why}.", v.name),
            ));
        }
        Ok(true)
    }

    // ---- items ----

    pub fn get_item(&self, vault: &Vault, item_key: &str) -> Result<Option<Item>, store::Error> {
        self.store
            .read(|tx| tx.get(K_ITEM, &vault.vault.key(), item_key))
    }

    pub fn put_item(&self, vault: &Vault, item: &Item) -> ArmResult<()> {
        let parent = item.policy.clone().unwrap_or_default().to_ascii_lowercase();
        Ok(self
            .store
            .tx(|tx| tx.put(K_ITEM, &vault.vault.key(), &item.key(), &parent, item))?)
    }

    pub fn list_items(&self, vault: &Vault) -> ArmResult<Vec<Item>> {
        Ok(self
            .store
            .read(|tx| tx.list(K_ITEM, &vault.vault.key(), None))?)
    }

    pub fn recovery_points(
        &self,
        vault: &Vault,
        item_key: &str,
    ) -> Result<Vec<RecoveryPoint>, store::Error> {
        let mut v: Vec<RecoveryPoint> = self
            .store
            .read(|tx| tx.list(K_RP, &vault.vault.key(), Some(item_key)))?;
        v.sort_by_key(|p| std::cmp::Reverse(p.time));
        Ok(v)
    }

    pub fn remove_item_data(&self, vault: &Vault, item_key: &str) -> Result<(), store::Error> {
        let key = vault.vault.key();
        self.store.tx(|tx| {
            tx.delete_all(K_RP, &key, Some(item_key))?;
            tx.delete(K_ITEM, &key, item_key)?;
            Ok(())
        })
    }

    /// Records a finished backup: the recovery point, the item's last-backup fields and the job's
    /// property bag, in one transaction.
    pub fn record_backup(
        &self,
        vault: &Vault,
        job_id: &str,
        attempt: i64,
        item: &Item,
        rp: RecoveryPoint,
        bag: impl FnOnce(&mut Job),
    ) -> Result<(), store::Error> {
        let key = vault.vault.key();
        let mut rp = rp;
        // Durable before the job can say Completed: a power cut must not leave a snapshot that
        // garbage collection would then forget as an orphan (issue #9 item 8).
        self.store.tx_durable(|tx| {
            // A job this node no longer holds (reaped as lost) must not gain a point: its job
            // already says it made none. The snapshot stays unreferenced until garbage collection.
            if !tx.holds_job(job_id, &self.node_id, attempt)? {
                return Err(store::Error::Fenced(job_id.to_string()));
            }
            // Ids are time-based; never let two points share one (that would overwrite a point).
            while tx.get::<RecoveryPoint>(K_RP, &key, &rp.id)?.is_some() {
                rp.id = (rp.id.parse::<u64>().unwrap_or(0) + 1).to_string();
            }
            tx.put(K_RP, &key, &rp.id, &rp.item_key, &rp)?;
            if let Some(mut it) = tx.get::<Item>(K_ITEM, &key, &item.key())? {
                it.last_snapshot = Some(rp.snapshot_id.clone());
                it.last_recovery_point = Some(rp.time);
                if it.protection_state == "IRPending" {
                    it.protection_state = "Protected".into();
                }
                let parent = it.policy.clone().unwrap_or_default().to_ascii_lowercase();
                tx.put(K_ITEM, &key, &it.key(), &parent, &it)?;
            }
            if let Some(body) = tx.get_job_body(&key, job_id)? {
                let mut job: Job = serde_json::from_str(&body)?;
                // Written with the point, in one transaction: a restart that finds it knows the
                // point exists even if the job never got to finish.
                job.property_bag
                    .insert(RECOVERY_POINT_KEY.into(), rp.id.clone());
                bag(&mut job);
                tx.upsert_job(&JobRow::of(&job))?;
            }
            Ok(())
        })
    }

    /// After a job ends: backups update the item's last-backup status and time.
    pub fn after_job(&self, job: &Job) -> Result<(), store::Error> {
        self.metrics.job_ended(job);
        self.log_job_end(job);
        self.notify_job(job);
        if job.operation != "Backup" {
            return Ok(());
        }
        let key = job.vault.key();
        self.store.tx(|tx| {
            if let Some(mut it) = tx.get::<Item>(K_ITEM, &key, &job.item_key)? {
                it.last_backup_status = Some(job.status.as_str().to_string());
                it.last_backup_time = Some(job.start);
                it.health_status = match job.status {
                    JobStatus::Failed => "ActionRequired",
                    JobStatus::CompletedWithWarnings => "ActionSuggested",
                    _ => "Passed",
                }
                .into();
                if matches!(
                    job.status,
                    JobStatus::Completed | JobStatus::CompletedWithWarnings
                ) {
                    it.stale_since = None;
                }
                let parent = it.policy.clone().unwrap_or_default().to_ascii_lowercase();
                tx.put(K_ITEM, &key, &it.key(), &parent, &it)?;
            }
            Ok(())
        })
    }

    // ---- jobs ----

    pub fn get_job_any(&self, id: &str) -> Result<Option<Job>, store::Error> {
        let bodies = self.store.read_one(|tx| tx.jobs_by_id(id))?;
        bodies
            .map(|b| serde_json::from_str(&b))
            .transpose()
            .map_err(Into::into)
    }

    pub fn get_job(&self, vault: &Vault, id: &str) -> ArmResult<Job> {
        serde_json::from_str(&self.get_job_body(vault, id)?).map_err(ArmError::internal)
    }

    /// A job of `vault` as stored (one statement: one round trip on PostgreSQL).
    pub fn get_job_body(&self, vault: &Vault, id: &str) -> ArmResult<String> {
        self.store
            .read_one(|tx| tx.get_job_body(&vault.vault.key(), &id.to_ascii_lowercase()))?
            .ok_or_else(|| {
                ArmError::new(
                    ArmCode::JobNotFound,
                    format!("Job '{id}' was not found in vault '{}'.", vault.vault.name),
                )
            })
    }

    /// Applies `f` to a job in one transaction and returns the new state.
    pub fn update_job(&self, id: &str, f: impl FnOnce(&mut Job)) -> Result<Job, store::Error> {
        self.store.tx(|tx| {
            let body = tx
                .jobs_by_id(id)?
                .ok_or_else(|| store::Error::Missing(format!("job {id}")))?;
            let mut job: Job = serde_json::from_str(&body)?;
            f(&mut job);
            tx.upsert_job(&JobRow::of(&job))?;
            Ok(job)
        })
    }

    /// Like [`Service::update_job`] for a job this node runs as `attempt`: the write lands only
    /// while the node still holds the job (a reaped job is never written by its old runner).
    pub fn update_running_job(
        &self,
        id: &str,
        attempt: i64,
        f: impl FnOnce(&mut Job),
    ) -> Result<Job, store::Error> {
        self.store.tx(|tx| {
            if !tx.holds_job(id, &self.node_id, attempt)? {
                return Err(store::Error::Fenced(id.to_string()));
            }
            let body = tx
                .jobs_by_id(id)?
                .ok_or_else(|| store::Error::Missing(format!("job {id}")))?;
            let mut job: Job = serde_json::from_str(&body)?;
            f(&mut job);
            tx.upsert_job(&JobRow::of(&job))?;
            Ok(job)
        })
    }

    /// Creates a job (and its operation, when given) atomically, then starts it unless it is
    /// an instant job.
    pub fn create_job(self: &Arc<Self>, mut job: Job, op: Option<&Operation>) -> ArmResult<Job> {
        let key = job.vault.key();
        self.store.tx(|tx| {
            job.seq = tx.next_job_seq()?;
            tx.upsert_job(&JobRow::of(&job))?;
            if let Some(op) = op {
                tx.put(K_OP, &key, &op.id, "", op)?;
            }
            Ok(())
        })?;
        if !matches!(job.work, Work::Instant) {
            self.runner.notify_queued();
        }
        Ok(job)
    }

    /// Records a cancel request. Returns the cancel operation (the same one when asked twice).
    pub fn request_cancel(&self, vault: &Vault, job_id: &str) -> ArmResult<Operation> {
        let job = self.get_job(vault, job_id)?;
        if job.status == JobStatus::Cancelling {
            if let Some(op) = job
                .cancel_op
                .as_deref()
                .and_then(|o| self.get_op(vault, o).ok())
            {
                return Ok(op);
            }
        }
        if !job.is_cancellable() {
            return Err(ArmError::new(
                ArmCode::NotCancellable,
                format!(
                    "Job '{}' is {}; only InProgress backup, restore and delete jobs can be cancelled.",
                    job.id,
                    job.status.as_str()
                ),
            ));
        }
        let op = Operation::new(OpKind::Cancel, Some(job.id.clone()), None);
        let key = vault.vault.key();
        let op_id = op.id.clone();
        let moved = self.store.tx(|tx| {
            let Some(body) = tx.get_job_body(&key, &job.id)? else {
                return Ok(false);
            };
            let mut j: Job = serde_json::from_str(&body)?;
            if !matches!(State::of(&j), State::Queued | State::Running)
                || transition(&mut j, Event::RequestCancel).is_err()
            {
                return Ok(false);
            }
            j.cancel_op = Some(op_id.clone());
            tx.upsert_job(&JobRow::of(&j))?;
            tx.put(K_OP, &key, &op.id, "", &op)?;
            Ok(true)
        })?;
        if !moved {
            return Err(ArmError::new(
                ArmCode::NotCancellable,
                format!("Job '{}' finished before it could be cancelled.", job.id),
            ));
        }
        self.runner.signal_cancel(&job.id);
        Ok(op)
    }

    pub fn finish_cancel_op(&self, job: &Job) {
        let Some(op_id) = &job.cancel_op else { return };
        let key = job.vault.key();
        let res = self.store.tx(|tx| {
            if let Some(mut op) = tx.get::<Operation>(K_OP, &key, op_id)? {
                finish_op(&mut op, job.status == JobStatus::Cancelled);
                if job.status != JobStatus::Cancelled {
                    op.error = Some((
                        "BMSUserErrorJobNotCancellable".into(),
                        format!(
                            "Job '{}' ended {} before the cancellation took effect.",
                            job.id,
                            job.status.as_str()
                        ),
                    ));
                }
                tx.put(K_OP, &key, op_id, "", &op)?;
            }
            Ok(())
        });
        if let Err(e) = res {
            tracing::error!("recording cancel operation {op_id}: {e}");
        }
    }

    // ---- operations ----

    pub fn put_op(&self, vault: &Vault, op: &Operation) -> ArmResult<()> {
        Ok(self
            .store
            .tx(|tx| tx.put(K_OP, &vault.vault.key(), &op.id, "", op))?)
    }

    pub fn get_op(&self, vault: &Vault, id: &str) -> ArmResult<Operation> {
        self.store
            .read(|tx| tx.get::<Operation>(K_OP, &vault.vault.key(), &id.to_ascii_lowercase()))?
            .ok_or_else(|| {
                ArmError::new(
                    ArmCode::OperationNotFound,
                    format!("Operation '{id}' was not found."),
                )
            })
    }

    /// Resolves jobs left running by a previous process on this data dir (its lock says that
    /// process is gone): started ones end as [`interrupt`] says; queued ones stay queued for the
    /// dispatcher. Returns (ended, still queued).
    pub fn recover_interrupted(self: &Arc<Self>) -> anyhow::Result<(usize, usize)> {
        let bodies = self
            .store
            .read(|tx| tx.jobs_with_status(&["InProgress", "Cancelling"]))?;
        let (mut ended, mut queued) = (0, 0);
        for b in bodies {
            let job: Job = serde_json::from_str(&b)?;
            if !job.started {
                queued += 1;
                continue;
            }
            // On a shared store other nodes' running jobs are theirs: the reaper ends them if
            // their node's lease lapses. Only this node's own are known to be interrupted.
            let ran_here = job.property_bag.get(NODE_KEY) == Some(&self.node_id);
            if self.store.is_shared() && !ran_here {
                continue;
            }
            let j = self.update_job(&job.id, |j| {
                interrupt(
                    j,
                    "The job was interrupted because the rsvault server stopped while it was running.",
                )
            })?;
            self.after_job(&j)?;
            self.finish_cancel_op(&j);
            ended += 1;
        }
        self.runner.notify_queued();
        Ok((ended, queued))
    }

    /// A vault-wide maintenance job (not yet stored).
    pub fn maintenance_job(&self, vault: &Vault, operation: &str, work: Work, user: bool) -> Job {
        let now = Utc::now();
        Job {
            id: uuid::Uuid::new_v4().to_string(),
            vault: vault.vault.clone(),
            seq: 0,
            workload: rsvault_types::model::Workload::FileShare,
            operation: operation.into(),
            status: JobStatus::InProgress,
            started: false,
            entity_friendly_name: vault.vault.name.clone(),
            item_key: String::new(),
            container_short: String::new(),
            host_name: String::new(),
            start: now,
            end: None,
            activity_id: uuid::Uuid::new_v4().to_string(),
            is_user_triggered: user,
            tasks: rsvault_types::job::tasks_for(
                rsvault_types::model::Workload::FileShare,
                operation,
            ),
            property_bag: Default::default(),
            progress: None,
            eta_seconds: None,
            errors: vec![],
            cancel_op: None,
            work,
            needs: String::new(),
        }
    }

    pub fn protected_count(&self, vault: &Vault, policy: &str) -> ArmResult<i64> {
        Ok(self.store.tx(|tx| {
            tx.count(
                K_ITEM,
                &vault.vault.key(),
                Some(&policy.to_ascii_lowercase()),
            )
        })?)
    }
}

/// Container names compare case-insensitively, and `iaasvmcontainer;` is accepted for
/// `IaasVMContainer;`.
pub fn normalize_container(c: &str) -> String {
    c.to_ascii_lowercase()
}

pub fn normalize_item(i: &str) -> String {
    i.to_ascii_lowercase()
}

/// A job for an item, not yet stored. Instant jobs are born finished.
pub fn new_job(vault: &Vault, it: &Item, operation: &str, work: Work, user: bool) -> Job {
    let short = it
        .container
        .split_once(';')
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    let host = it.container.rsplit(';').next().unwrap_or("").to_string();
    let instant = matches!(work, Work::Instant);
    let now = Utc::now();
    let mut job = Job {
        id: uuid::Uuid::new_v4().to_string(),
        vault: vault.vault.clone(),
        seq: 0,
        workload: it.workload,
        operation: operation.into(),
        status: JobStatus::InProgress,
        started: false,
        entity_friendly_name: it.friendly_name.clone(),
        item_key: it.key(),
        container_short: short,
        host_name: host,
        start: now,
        end: None,
        activity_id: uuid::Uuid::new_v4().to_string(),
        is_user_triggered: user,
        tasks: tasks_for(it.workload, operation),
        property_bag: Default::default(),
        progress: None,
        eta_seconds: None,
        errors: vec![],
        cancel_op: None,
        work,
        needs: String::new(),
    };
    if matches!(job.work, Work::Backup { .. } | Work::Restore { .. }) {
        // A restore below a restore root overrides this (see `api::restore`).
        job.needs = format!("item:{}", job.item_key);
    }
    if instant {
        let _ = transition(&mut job, Event::Start);
        let _ = transition(&mut job, Event::Succeed { warnings: false });
    }
    job
}

/// Marks an operation finished after the job it tracks ended (cancel operations).
pub fn finish_op(op: &mut Operation, ok: bool) {
    op.status = if ok { "Succeeded" } else { "Failed" }.into();
    op.end = Some(Utc::now());
}
