//! The scheduler: policy runs, maintenance on its interval, and job-history retention. One node
//! at a time acts (a lease in the store); each schedule slot of an item is claimed with a unique
//! row, so even overlapping schedulers never run a slot twice. A slot missed while the server was
//! down runs once: only the most recent slot is ever considered.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::service::{Service, K_ITEM, K_POLICY, K_VAULT};
use rsvault_types::job::{JobStatus, Work};
use rsvault_types::model::{Item, Policy, Vault};

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub leader: bool,
    pub backups_started: usize,
    pub maintenance_started: usize,
    pub jobs_deleted: usize,
    /// Protected items whose last successful backup is older than their policy allows.
    pub items_stale: usize,
    /// Retries of failed scheduled backups started.
    pub retries_started: usize,
    /// Purges of soft-deleted items whose period ended.
    pub purges_queued: usize,
}

/// Property-bag keys of scheduled backups: the policy and the slot that started them, and for a
/// retry its number and the job it retries (the slot's first job).
pub const BAG_POLICY: &str = "Policy";
pub const BAG_SLOT: &str = "Schedule Slot";
pub const BAG_RETRY: &str = "Retry";
pub const BAG_RETRY_OF: &str = "Retry Of";

const HISTORY_BATCH: usize = 1000;

/// Runs scheduler passes until the process ends.
pub async fn run(svc: Arc<Service>) {
    let every = std::time::Duration::from_secs(svc.config.scheduler.tick_seconds);
    loop {
        match tick(&svc, Utc::now()) {
            Ok(r)
                if r.backups_started + r.maintenance_started + r.jobs_deleted + r.purges_queued
                    > 0 =>
            {
                tracing::info!(?r, "scheduler pass")
            }
            Ok(_) => {}
            Err(e) => tracing::error!("scheduler pass failed: {e:#}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// One scheduler pass as of `now` (injected, so tests can simulate time).
pub fn tick(svc: &Arc<Service>, now: DateTime<Utc>) -> anyhow::Result<TickReport> {
    let mut report = TickReport::default();
    let lease_for = Duration::seconds(3 * svc.config.scheduler.tick_seconds as i64);
    report.leader = svc.store.tx(|tx| {
        tx.acquire_lease(
            "scheduler",
            &svc.node_id,
            &rsvault_types::arm::time(now),
            &rsvault_types::arm::time(now + lease_for),
        )
    })?;
    if !report.leader {
        return Ok(report);
    }
    for vault_key in svc.store.read(|tx| tx.vault_keys())? {
        let Some(vault) = svc
            .store
            .read(|tx| tx.get::<Vault>(K_VAULT, &vault_key, ""))?
        else {
            continue;
        };
        report.backups_started += policy_runs(svc, &vault, now)?;
        report.maintenance_started += maintenance_runs(svc, &vault, now)?;
        report.items_stale += staleness(svc, &vault, now)?;
        report.retries_started += retries(svc, &vault, now)?;
        report.purges_queued += crate::soft_delete::purge_runs(svc, &vault, now)?;
    }
    let days = svc.config.jobs.history_days as i64;
    let cutoff = rsvault_types::arm::time(now - Duration::days(days));
    report.jobs_deleted = svc
        .store
        .tx(|tx| tx.delete_finished_jobs_before(&cutoff, HISTORY_BATCH))?;
    if report.jobs_deleted > 0 {
        svc.store.tx(|tx| tx.delete_orphan_job_logs())?;
    }
    svc.prune_deliveries(now - Duration::days(days))?;
    Ok(report)
}

fn policy_runs(svc: &Arc<Service>, vault: &Vault, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let key = vault.vault.key();
    let items: Vec<Item> = svc.store.read(|tx| tx.list(K_ITEM, &key, None))?;
    let mut started = 0;
    for mut it in items {
        if !matches!(it.protection_state.as_str(), "Protected" | "IRPending") {
            continue;
        }
        let Some(pname) = it.policy.clone() else {
            continue;
        };
        let Some(policy) = svc
            .store
            .read(|tx| tx.get::<Policy>(K_POLICY, &key, &pname.to_ascii_lowercase()))?
        else {
            continue;
        };
        let schedule = match crate::schedule::Schedule::from_policy(&policy.properties) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(policy = %pname, "policy schedule cannot run: {e}");
                continue;
            }
        };
        let Some(slot) = schedule.latest_slot(now) else {
            continue;
        };
        // Slots before protection began, or already handled, are not runs.
        if slot <= it.created || it.last_scheduled.is_some_and(|l| slot <= l) {
            continue;
        }
        let slot_s = rsvault_types::arm::time(slot);
        let mut job = crate::service::new_job(
            vault,
            &it,
            "Backup",
            Work::Backup {
                expiry: None,
                scheduled: true,
            },
            false,
        );
        job.property_bag.insert(BAG_POLICY.into(), pname.clone());
        job.property_bag.insert(BAG_SLOT.into(), slot_s.clone());
        let item_key = it.key();
        let job_id = job.id.clone();
        let claimed = svc
            .store
            .tx(|tx| tx.claim_slot(&key, &item_key, &slot_s, &job_id))?;
        it.last_scheduled = Some(slot);
        svc.put_item(vault, &it)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if claimed {
            svc.create_job(job, None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            started += 1;
        }
    }
    Ok(started)
}

/// Marks items stale (or no longer stale) as of `now`; returns how many are stale. Each item is
/// read and written in one transaction, so a backup recorded meanwhile is never overwritten.
fn staleness(svc: &Arc<Service>, vault: &Vault, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let key = vault.vault.key();
    let items: Vec<Item> = svc.store.read(|tx| tx.list(K_ITEM, &key, None))?;
    let mut stale = 0;
    for it in items {
        let schedule = it
            .policy
            .as_ref()
            .filter(|_| matches!(it.protection_state.as_str(), "Protected" | "IRPending"))
            .and_then(|p| {
                svc.store
                    .read(|tx| tx.get::<Policy>(K_POLICY, &key, &p.to_ascii_lowercase()))
                    .ok()
                    .flatten()
            })
            .and_then(|p| crate::schedule::Schedule::from_policy(&p.properties).ok());
        let since = it.last_recovery_point.unwrap_or(it.created);
        let now_stale = schedule.and_then(|s| crate::staleness::stale_since(&s, since, now));
        stale += usize::from(now_stale.is_some());
        if now_stale == it.stale_since {
            continue;
        }
        let begun = svc.store.tx(|tx| {
            if let Some(mut cur) = tx.get::<Item>(K_ITEM, &key, &it.key())? {
                // A backup recorded since the read above decides by itself.
                if cur.last_recovery_point == it.last_recovery_point {
                    let begun = cur.stale_since.is_none() && now_stale.is_some();
                    cur.stale_since = now_stale;
                    let parent = cur.policy.clone().unwrap_or_default().to_ascii_lowercase();
                    tx.put(K_ITEM, &key, &cur.key(), &parent, &cur)?;
                    return Ok(begun.then_some(cur));
                }
            }
            Ok(None)
        })?;
        // Once per episode: only the pass that marks the item stale says so.
        if let Some(cur) = begun {
            tracing::warn!(vault = %key, item = %cur.name, since = ?cur.stale_since, "item is stale: no successful backup within 1.5 times its policy's interval");
            svc.notify_item_stale(vault, &cur);
        }
    }
    Ok(stale)
}

/// Starts the retries that are due: a scheduled backup of the item's current slot that failed,
/// with no successful backup since the slot, retried `[scheduler] retries` times at most, the n-th
/// retry `retry_delay_seconds × 2^(n-1)` after the previous attempt ended. Each retry is claimed
/// like a slot (`SLOT#retryN`), so two schedulers never start the same one.
fn retries(svc: &Arc<Service>, vault: &Vault, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let cfg = &svc.config.scheduler;
    if cfg.retries == 0 {
        return Ok(0);
    }
    let key = vault.vault.key();
    let q = rsvault_store::JobQuery {
        status: Some("Failed".into()),
        operation: Some("Backup".into()),
        start_from: Some(rsvault_types::arm::time(now - Duration::days(8))),
        ..Default::default()
    };
    let failed = svc.store.read(|tx| tx.list_jobs(&key, &q, 200))?;
    let mut started = 0;
    for (body, _, _) in failed {
        let j: rsvault_types::job::Job = serde_json::from_str(&body)?;
        let (Some(slot_s), Some(end)) = (j.property_bag.get(BAG_SLOT), j.end) else {
            continue;
        };
        let done: u32 = j
            .property_bag
            .get(BAG_RETRY)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let delay = Duration::seconds(cfg.retry_delay_seconds as i64) * 2i32.pow(done.min(20));
        if done >= cfg.retries || end + delay > now {
            continue;
        }
        let Ok(slot) = DateTime::parse_from_rfc3339(slot_s) else {
            continue;
        };
        let Some(it) = svc.get_item(vault, &j.item_key)? else {
            continue;
        };
        // Only the item's current slot, while it is protected and has no newer point.
        if it.last_scheduled != Some(slot.with_timezone(&Utc))
            || !matches!(it.protection_state.as_str(), "Protected" | "IRPending")
            || it
                .last_recovery_point
                .is_some_and(|t| t >= slot.with_timezone(&Utc))
        {
            continue;
        }
        let first = j
            .property_bag
            .get(BAG_RETRY_OF)
            .cloned()
            .unwrap_or_else(|| j.id.clone());
        let n = done + 1;
        let mut job = crate::service::new_job(
            vault,
            &it,
            "Backup",
            Work::Backup {
                expiry: None,
                scheduled: true,
            },
            false,
        );
        for k in [BAG_POLICY, BAG_SLOT] {
            if let Some(v) = j.property_bag.get(k) {
                job.property_bag.insert(k.into(), v.clone());
            }
        }
        job.property_bag.insert(BAG_RETRY.into(), n.to_string());
        job.property_bag.insert(BAG_RETRY_OF.into(), first.clone());
        let claim = format!("{slot_s}#retry{n}");
        let job_id = job.id.clone();
        let item_key = it.key();
        if !svc
            .store
            .tx(|tx| tx.claim_slot(&key, &item_key, &claim, &job_id))?
        {
            continue;
        }
        // Logged before the job is queued, so its log opens with what it is.
        let retry = format!(
            "Retry {n} of {} of the scheduled backup {first} (slot {slot_s})",
            cfg.retries
        );
        svc.log_job(
            &j.id,
            crate::joblog::Level::Info,
            &format!("{retry} starts as job {job_id}."),
        );
        svc.log_job(
            &job_id,
            crate::joblog::Level::Info,
            &format!("{retry}, after job {} failed.", j.id),
        );
        svc.create_job(job, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        started += 1;
    }
    Ok(started)
}

fn maintenance_runs(
    svc: &Arc<Service>,
    vault: &Vault,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let m = &svc.config.maintenance;
    let mut started = 0;
    for (interval, op) in [
        (m.gc_interval_hours, "GarbageCollection"),
        (m.verify_interval_hours, "Verify"),
        (m.drill_interval_hours, "RestoreDrill"),
    ] {
        if interval == 0 {
            continue;
        }
        // Due when the last job of this kind started longer ago than the interval; a vault that
        // never had one counts from its creation (a new, empty vault needs no maintenance yet).
        let q = rsvault_store::JobQuery {
            operation: Some(op.into()),
            ..Default::default()
        };
        let last = svc
            .store
            .read(|tx| tx.list_jobs(&vault.vault.key(), &q, 1))?;
        let due = match last.first() {
            None => vault.created + Duration::hours(interval as i64) <= now,
            Some((body, _, _)) => {
                let j: rsvault_types::job::Job = serde_json::from_str(body)?;
                !matches!(j.status, JobStatus::InProgress | JobStatus::Cancelling)
                    && j.start + Duration::hours(interval as i64) <= now
            }
        };
        if !due {
            continue;
        }
        let slot = rsvault_types::arm::time(
            now - Duration::seconds(now.timestamp() % (interval as i64 * 3600)),
        );
        let work = match op {
            "Verify" => Work::Verify {
                read_data_percent: Some(m.verify_read_data_percent),
            },
            "RestoreDrill" => Work::RestoreDrill {
                sample_percent: m.drill_sample_percent,
            },
            _ => Work::GarbageCollection,
        };
        let job = svc.maintenance_job(vault, op, work, false);
        let claimed = svc
            .store
            .tx(|tx| tx.claim_slot(&vault.vault.key(), op, &slot, &job.id))?;
        if claimed {
            svc.create_job(job, None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            started += 1;
        }
    }
    Ok(started)
}
