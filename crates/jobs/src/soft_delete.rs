//! Soft delete, as Azure's: stop protection with delete data does not delete anything at once.
//! The item moves to soft-deleted (`isScheduledForDeferredDelete`), keeps its recovery points
//! (listed, never touched by garbage collection) and its repository data for the vault's
//! soft-delete period; a `PUT` of the item with `properties.isRehydrate: true` undeletes it (it is
//! then stopped with data retained, and can be resumed and restored); when the period ends, the
//! scheduler queues a `DeleteBackupData` job that purges the data. A vault with soft-deleted items
//! cannot be deleted.
//!
//! Every vault has it on (`Enabled`) unless its `securitySettings.softDeleteSettings` turn it
//! off; `AlwaysON` cannot be turned off. The period is the vault's own
//! `softDeleteRetentionPeriodInDays` (14 to 180, as Azure) or `[retention] soft_delete_days`.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rsvault_store::JobRow;
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};
use rsvault_types::job::{Job, Work};
use rsvault_types::model::{Item, Operation, SoftDeleted, Vault};
use serde_json::{json, Value};

use crate::config::RetentionConfig;
use crate::service::{new_job, Service, K_ITEM, K_OP};

const STATES: &[&str] = &["Enabled", "Disabled", "AlwaysON"];
const DAYS: std::ops::RangeInclusive<i64> = 14..=180;
const TARGET: &str = "properties.securitySettings.softDeleteSettings";

/// Property-bag key of a purge job: the purge time it was queued for.
pub const BAG_PURGE: &str = "Soft Delete Purge Time";

/// The vault's soft delete state: `Enabled` (the default), `Disabled` or `AlwaysON`.
pub fn state(props: &Value) -> &str {
    props
        .pointer("/securitySettings/softDeleteSettings/softDeleteState")
        .and_then(Value::as_str)
        .unwrap_or("Enabled")
}

/// Whether deleting an item's backup data soft-deletes it.
pub fn is_on(vault: &Vault) -> bool {
    state(&vault.properties) != "Disabled"
}

fn own_days(props: &Value) -> Option<i64> {
    props
        .pointer("/securitySettings/softDeleteSettings/softDeleteRetentionPeriodInDays")
        .and_then(Value::as_i64)
}

/// How long a soft-deleted item of the vault is kept.
pub fn period(vault: &Vault, cfg: &RetentionConfig) -> Duration {
    match own_days(&vault.properties) {
        Some(d) => Duration::days(d),
        None => Duration::milliseconds((cfg.soft_delete_days * 86_400_000.0).round() as i64),
    }
}

/// The vault's soft delete settings as clients read them: state, period in whole days (a
/// fractional configured period is rounded up) and enhanced security (never on: rsvault has no
/// hybrid workloads it would protect).
pub fn settings_wire(vault: &Vault, cfg: &RetentionConfig) -> Value {
    let days = own_days(&vault.properties).unwrap_or(cfg.soft_delete_days.ceil() as i64);
    json!({
        "softDeleteState": state(&vault.properties),
        "softDeleteRetentionPeriodInDays": days,
        "enhancedSecurityState": "Disabled",
    })
}

/// A vault as clients read it, its soft delete settings filled in.
pub fn vault_wire(vault: &Vault, cfg: &RetentionConfig) -> Value {
    let mut w = vault.wire();
    let security = &mut w["properties"]["securitySettings"];
    // (a vault stored before securitySettings had to be an object keeps what it was given)
    if security.is_null() || security.is_object() {
        security["softDeleteSettings"] = settings_wire(vault, cfg);
    }
    w
}

/// Checks the soft delete settings of a vault's new properties against its current ones and
/// spells the state as Azure does (`AlwaysOn`, as `az backup vault create` sends it, is
/// `AlwaysON`). Settings a request leaves out keep their current values. Refuses unknown states,
/// a period outside 14–180 days and leaving `AlwaysON`. Enhanced security (for hybrid workloads
/// rsvault does not have) cannot be honoured: a PATCH asking for it is refused, a PUT (`az backup
/// vault create` sends `AlwaysOn` by default) has it discarded.
pub fn check_settings(existing: Option<&Vault>, props: &mut Value, patch: bool) -> ArmResult<()> {
    let before = existing.map(|v| &v.properties);
    let sd = props
        .pointer_mut("/securitySettings/softDeleteSettings")
        .filter(|v| !v.is_null());
    let mut sd = match sd {
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(
                ArmError::invalid("softDeleteSettings must be an object.").with_target(TARGET)
            )
        }
        None => Default::default(),
    };
    match sd.get("softDeleteState").filter(|v| !v.is_null()) {
        Some(v) => {
            let asked = v.as_str().unwrap_or_default();
            let canonical = STATES
                .iter()
                .find(|k| k.eq_ignore_ascii_case(asked))
                .ok_or_else(|| {
                    ArmError::invalid(format!(
                        "Soft delete state {v} is invalid; allowed: {}.",
                        STATES.join(", ")
                    ))
                    .with_target(format!("{TARGET}.softDeleteState"))
                })?;
            sd.insert("softDeleteState".into(), json!(canonical));
        }
        None => {
            if let Some(b) = before.map(state) {
                sd.insert("softDeleteState".into(), json!(b));
            }
        }
    }
    match sd
        .get("softDeleteRetentionPeriodInDays")
        .filter(|v| !v.is_null())
    {
        Some(v) => {
            if !v.as_i64().is_some_and(|d| DAYS.contains(&d)) {
                return Err(ArmError::invalid(format!(
                    "softDeleteRetentionPeriodInDays {v} is invalid: a whole number of days from {} to {}.",
                    DAYS.start(),
                    DAYS.end()
                ))
                .with_target(format!("{TARGET}.softDeleteRetentionPeriodInDays")));
            }
        }
        None => {
            sd.remove("softDeleteRetentionPeriodInDays");
            if let Some(d) = before.and_then(own_days) {
                sd.insert("softDeleteRetentionPeriodInDays".into(), json!(d));
            }
        }
    }
    let enhanced = sd
        .remove("enhancedSecurityState")
        .filter(|v| !v.is_null())
        .map(|v| v.as_str().unwrap_or_default().to_string());
    if let Some(e) = enhanced.filter(|e| !e.eq_ignore_ascii_case("Disabled")) {
        if patch {
            return Err(ArmError::invalid(format!(
                "Enhanced security state '{e}' cannot be honoured: it protects hybrid (MARS/DPM) backups, which rsvault does not have; only Disabled is accepted."
            ))
            .with_target(format!("{TARGET}.enhancedSecurityState")));
        }
    }
    if before.map(state) == Some("AlwaysON")
        && sd.get("softDeleteState").and_then(Value::as_str) != Some("AlwaysON")
    {
        return Err(ArmError::new(
            ArmCode::SoftDeleteAlwaysOn,
            "The vault's soft delete is AlwaysON and cannot be changed: deleted backup data is always kept for the soft-delete period.",
        )
        .with_target(format!("{TARGET}.softDeleteState")));
    }
    if sd.is_empty() {
        if let Some(s) = props
            .get_mut("securitySettings")
            .and_then(Value::as_object_mut)
        {
            s.remove("softDeleteSettings");
        }
    } else {
        if !props.get("securitySettings").is_some_and(Value::is_object) {
            props["securitySettings"] = json!({});
        }
        props["securitySettings"]["softDeleteSettings"] = Value::Object(sd);
    }
    Ok(())
}

fn soft_deleted_error(it: &Item, sd: SoftDeleted, what: &str) -> ArmError {
    ArmError::new(
        ArmCode::ItemSoftDeleted,
        format!(
            "Item '{}' is soft-deleted (its backup data is purged at {}); {what}. Undelete it first: PUT the protected item with properties.isRehydrate = true.",
            it.name,
            arm::time(sd.purge_at)
        ),
    )
}

/// Refuses an operation (`what`, e.g. "it cannot be restored") on a soft-deleted item.
pub fn refuse_if_soft_deleted(it: &Item, what: &str) -> ArmResult<()> {
    match it.soft_deleted {
        Some(sd) => Err(soft_deleted_error(it, sd, what)),
        None => Ok(()),
    }
}

/// Writes `job` (and `op`) and the item `change` makes, in one transaction. `change` sees the
/// item as stored now, so a backup recorded meanwhile is never overwritten.
fn change_item(
    svc: &Service,
    vault: &Vault,
    item_key: &str,
    mut job: Job,
    op: &Operation,
    change: impl FnOnce(&mut Item) -> ArmResult<()>,
) -> ArmResult<Item> {
    let key = vault.vault.key();
    let not_found = || {
        ArmError::new(
            ArmCode::ItemNotFound,
            format!("Protected item '{item_key}' does not exist."),
        )
    };
    svc.store.tx(|tx| {
        let Some(mut it) = tx.get::<Item>(K_ITEM, &key, item_key)? else {
            return Ok(Err(not_found()));
        };
        if let Err(e) = change(&mut it) {
            return Ok(Err(e));
        }
        let parent = it.policy.clone().unwrap_or_default().to_ascii_lowercase();
        tx.put(K_ITEM, &key, item_key, &parent, &it)?;
        job.seq = tx.next_job_seq()?;
        tx.upsert_job(&JobRow::of(&job))?;
        tx.put(K_OP, &key, &op.id, "", op)?;
        Ok(Ok(it))
    })?
}

/// Soft-deletes an item: stopped, no policy, its data kept until `now` + the vault's period.
/// `job` is the (completed) `DeleteBackupData` job that reports it.
pub fn soft_delete(
    svc: &Service,
    vault: &Vault,
    item_key: &str,
    mut job: Job,
    op: &Operation,
    now: DateTime<Utc>,
) -> ArmResult<Item> {
    let purge_at = now + period(vault, &svc.config.retention);
    job.property_bag
        .insert("Soft Deleted".into(), "true".into());
    job.property_bag
        .insert("Purge Time".into(), arm::time(purge_at));
    change_item(svc, vault, item_key, job, op, |it| {
        if let Some(sd) = it.soft_deleted {
            return Err(soft_deleted_error(it, sd, "it is already deleted"));
        }
        it.protection_state = "ProtectionStopped".into();
        it.policy = None;
        it.stale_since = None;
        it.soft_deleted = Some(SoftDeleted { at: now, purge_at });
        Ok(())
    })
}

/// Undeletes a soft-deleted item before its purge: it is then stopped with its data retained.
/// `job` is the (completed) `Undelete` job that reports it.
pub fn undelete(
    svc: &Service,
    vault: &Vault,
    item_key: &str,
    job: Job,
    op: &Operation,
    now: DateTime<Utc>,
) -> ArmResult<Item> {
    change_item(svc, vault, item_key, job, op, |it| match it.soft_deleted {
        Some(sd) if sd.purge_at > now => {
            it.soft_deleted = None;
            it.protection_state = "ProtectionStopped".into();
            it.policy = None;
            Ok(())
        }
        other => Err(not_undeletable(it, other)),
    })
}

/// Why `it` cannot be undeleted: it is not soft-deleted, or its period (`sd`) has ended.
fn not_undeletable(it: &Item, sd: Option<SoftDeleted>) -> ArmError {
    let why = match sd {
        None => format!(
            "Item '{}' is not soft-deleted; isRehydrate undeletes soft-deleted items only.",
            it.name
        ),
        Some(sd) => format!(
            "Item '{}' can no longer be undeleted: its soft-delete period ended at {} and its data is being purged.",
            it.name,
            arm::time(sd.purge_at)
        ),
    };
    ArmError::new(ArmCode::ItemNotSoftDeleted, why).with_target("properties.isRehydrate")
}

/// Queues a purge (`DeleteBackupData`) for every soft-deleted item of `vault` whose period has
/// ended and that has no job queued or running. A purge that fails is queued again on a later
/// pass. Returns how many were queued.
pub fn purge_runs(svc: &Arc<Service>, vault: &Vault, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let key = vault.vault.key();
    let items: Vec<Item> = svc.store.read(|tx| tx.list(K_ITEM, &key, None))?;
    let mut queued = 0;
    for it in items {
        let Some(sd) = it.soft_deleted.filter(|sd| sd.purge_at <= now) else {
            continue;
        };
        let mut job = new_job(vault, &it, "DeleteBackupData", Work::DeleteData, false);
        job.property_bag
            .insert(BAG_PURGE.into(), arm::time(sd.purge_at));
        let item_key = it.key();
        let created = svc.store.tx(|tx| {
            if tx.item_has_job(&key, &item_key, &["InProgress", "Cancelling"], "")? {
                return Ok(false);
            }
            job.seq = tx.next_job_seq()?;
            tx.upsert_job(&JobRow::of(&job))?;
            Ok(true)
        })?;
        if created {
            queued += 1;
        }
    }
    if queued > 0 {
        svc.runner.notify_queued();
    }
    Ok(queued)
}

/// Whether a purge job may still delete its item's data: the item is still soft-deleted and its
/// period has ended (an item undeleted since the job was queued keeps its data).
pub fn purge_allowed(item: Option<&Item>, now: DateTime<Utc>) -> bool {
    item.and_then(|it| it.soft_deleted)
        .is_some_and(|sd| sd.purge_at <= now)
}
