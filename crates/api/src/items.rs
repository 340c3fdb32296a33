//! Protected items: protect, stop, resume, delete, backup now, recovery points.

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use chrono::Utc;
use serde_json::{json, Value};

use crate::lookup::{bmt_filter, find_item, one_of, only, BMTS};
use crate::policies::get_policy;
use crate::{accepted, filter, ok, Req};
use rsvault_jobs::service::{new_job, Service};
use rsvault_jobs::soft_delete;
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};
use rsvault_types::job::Work;
use rsvault_types::model::{Item, OpKind, Operation, Vault, Workload};

pub(crate) fn item(
    svc: &Arc<Service>,
    r: &Req,
    vault: &Vault,
    container: &str,
    item_name: &str,
) -> ArmResult<Response> {
    match r.method {
        Method::GET => {
            let it = find_item(svc, vault, container, item_name)?;
            let mut expand = false;
            if let Some(f) = r.q("$filter") {
                for (k, v) in filter::parse(f, &["expand"])? {
                    if k == "expand" && v.eq_ignore_ascii_case("extendedinfo") {
                        expand = true;
                    }
                }
            }
            let ext = if expand {
                let rps = svc.recovery_points(vault, &it.key())?;
                let mut x = json!({"recoveryPointCount": rps.len(), "policyInconsistent": false});
                if let Some(o) = rps.last() {
                    x["oldestRecoveryPoint"] = json!(arm::time(o.time));
                }
                Some(x)
            } else {
                None
            };
            Ok(ok(it.wire(&vault.vault, ext)))
        }
        Method::PUT => protect(svc, r, vault, container, item_name),
        Method::DELETE => {
            let it = find_item(svc, vault, container, item_name)?;
            let soft = soft_delete::is_on(vault);
            if soft {
                soft_delete::refuse_if_soft_deleted(
                    &it,
                    "it is already deleted, and the vault's soft delete is on (disable it to delete the data now)",
                )?;
            }
            let now = Utc::now();
            rsvault_jobs::immutability::check_delete_data(
                vault,
                &svc.recovery_points(vault, &it.key())?,
                now,
            )?;
            // Soft-deleting completes at once; deleting the data is the job's work.
            let work = if soft {
                Work::Instant
            } else {
                Work::DeleteData
            };
            let job = new_job(vault, &it, "DeleteBackupData", work, true);
            let op = Operation::new(OpKind::DeleteItem, Some(job.id.clone()), Some(it.key()));
            if soft {
                soft_delete::soft_delete(svc, vault, &it.key(), job, &op, now)?;
            } else {
                svc.create_job(job, Some(&op))?;
            }
            let vid = vault.vault.id();
            Ok(accepted(
                &r.url(&format!("{vid}/backupOperationResults/{}", op.id)),
                Some(&r.url(&format!("{vid}/backupOperations/{}", op.id))),
                svc.config.server.retry_after_seconds,
            ))
        }
        _ => Err(only(&r.method, &[Method::GET, Method::PUT, Method::DELETE]).unwrap_err()),
    }
}

fn protect(
    svc: &Arc<Service>,
    r: &Req,
    vault: &Vault,
    container: &str,
    item_name: &str,
) -> ArmResult<Response> {
    let body = r.json()?;
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| {
            ArmError::invalid("'properties' (an object) is required.").with_target("properties")
        })?;
    let src = svc.source_by_item(&vault.vault.sub, container, item_name).ok_or_else(|| {
        ArmError::new(
            ArmCode::ItemNotFound,
            format!("No source named '{item_name}' in container '{container}'. Declare it in the configuration and refresh containers."),
        )
    })?;
    let item_type = props
        .get("protectedItemType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let expected: &[&str] = match src.workload {
        Workload::Vm => &[
            "Microsoft.Compute/virtualMachines",
            "Microsoft.ClassicCompute/virtualMachines",
        ],
        Workload::FileShare => &["AzureFileShareProtectedItem"],
    };
    if !expected.iter().any(|e| e.eq_ignore_ascii_case(item_type)) {
        return Err(ArmError::invalid(format!(
            "protectedItemType '{item_type}' is invalid for '{item_name}'; expected '{}'.",
            expected[0]
        ))
        .with_target("properties.protectedItemType"));
    }
    let state = props.get("protectionState").and_then(Value::as_str);
    const STATES: &[&str] = &[
        "Invalid",
        "IRPending",
        "Protected",
        "ProtectionError",
        "ProtectionStopped",
        "ProtectionPaused",
        "BackupsSuspended",
    ];
    if let Some(s) = state {
        one_of("protectionState", s, STATES).map_err(|_| {
            ArmError::invalid(format!(
                "protectionState '{s}' is invalid; allowed: {}.",
                STATES.join(", ")
            ))
            .with_target("properties.protectionState")
        })?;
    }
    let existing = svc.get_item(vault, &src.key())?;
    let rehydrate = match props.get("isRehydrate") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ArmError::invalid("isRehydrate must be a boolean.")
                .with_target("properties.isRehydrate"))
        }
    };
    if rehydrate {
        return undelete(svc, r, vault, existing, item_name);
    }
    if let Some(it) = &existing {
        soft_delete::refuse_if_soft_deleted(it, "its protection cannot be changed")?;
    }
    let stop = state.is_some_and(|s| s.eq_ignore_ascii_case("ProtectionStopped"));
    let policy_id = props
        .get("policyId")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty());
    let (operation, kind, item) = if stop {
        let mut it = existing.ok_or_else(|| {
            ArmError::new(
                ArmCode::ItemNotFound,
                format!("Item '{item_name}' is not protected; there is nothing to stop."),
            )
        })?;
        it.protection_state = "ProtectionStopped".into();
        it.policy = None;
        ("DisableBackup", OpKind::StopProtection, it)
    } else {
        let pid = policy_id.ok_or_else(|| {
            ArmError::invalid("'policyId' is required to configure protection.")
                .with_target("properties.policyId")
        })?;
        let pname = pid
            .rsplit_once('/')
            .filter(|(head, _)| head.to_ascii_lowercase().ends_with("/backuppolicies"))
            .map(|(_, n)| n)
            .ok_or_else(|| {
                ArmError::invalid(format!(
                    "policyId '{pid}' is not a backup policy id of this vault."
                ))
                .with_target("properties.policyId")
            })?;
        let pol = get_policy(svc, vault, pname)?;
        if !pol
            .backup_management_type()
            .eq_ignore_ascii_case(src.workload.bmt())
        {
            return Err(ArmError::invalid(format!(
                "Policy '{}' is for {} items; '{}' needs a {} policy.",
                pol.name,
                pol.backup_management_type(),
                item_name,
                src.workload.bmt()
            ))
            .with_target("properties.policyId"));
        }
        let mut it = existing.unwrap_or_else(|| Item {
            container: src.container.clone(),
            name: src.item.clone(),
            workload: src.workload,
            friendly_name: src.friendly_name.clone(),
            source_resource_id: src.resource_id(&vault.vault.sub),
            policy: None,
            protection_state: "IRPending".into(),
            last_backup_status: None,
            last_backup_time: None,
            last_recovery_point: None,
            health_status: "Passed".into(),
            data_id: rsvault_jobs::service::new_recovery_point_id(),
            last_snapshot: None,
            last_verified: None,
            created: Utc::now(),
            last_scheduled: None,
            stale_since: None,
            proven_restorable: None,
            soft_deleted: None,
        });
        let old = it
            .policy
            .as_deref()
            .filter(|o| !o.eq_ignore_ascii_case(&pol.name));
        // A policy in use cannot be deleted, so the item's current one is there to compare with.
        if let Some(before) = old.and_then(|o| get_policy(svc, vault, o).ok()) {
            rsvault_jobs::immutability::check_not_shortened(
                vault,
                &before.properties["retentionPolicy"],
                &pol.properties["retentionPolicy"],
                &format!(
                    "Moving '{item_name}' from policy '{}' to '{}'",
                    before.name, pol.name
                ),
            )?;
        }
        it.policy = Some(pol.name.clone());
        it.protection_state = if it.last_recovery_point.is_some() {
            "Protected"
        } else {
            "IRPending"
        }
        .into();
        ("ConfigureBackup", OpKind::ConfigureProtection, it)
    };
    let job = new_job(vault, &item, operation, Work::Instant, true);
    let op = Operation::new(kind, Some(job.id.clone()), Some(item.key())).succeeded();
    svc.put_item(vault, &item)?;
    svc.create_job(job, Some(&op))?;
    let base = item.id(&vault.vault);
    Ok(accepted(
        &r.url(&format!("{base}/operationResults/{}", op.id)),
        Some(&r.url(&format!("{base}/operationsStatus/{}", op.id))),
        svc.config.server.retry_after_seconds,
    ))
}

/// `PUT` of a protected item with `isRehydrate: true`: Azure's undelete of a soft-deleted item.
fn undelete(
    svc: &Arc<Service>,
    r: &Req,
    vault: &Vault,
    existing: Option<Item>,
    item_name: &str,
) -> ArmResult<Response> {
    let it = existing.ok_or_else(|| {
        ArmError::new(
            ArmCode::ItemNotFound,
            format!("Item '{item_name}' is not protected; there is nothing to undelete."),
        )
    })?;
    let job = new_job(vault, &it, "Undelete", Work::Instant, true);
    let op =
        Operation::new(OpKind::StopProtection, Some(job.id.clone()), Some(it.key())).succeeded();
    soft_delete::undelete(svc, vault, &it.key(), job, &op, Utc::now())?;
    let base = it.id(&vault.vault);
    Ok(accepted(
        &r.url(&format!("{base}/operationResults/{}", op.id)),
        Some(&r.url(&format!("{base}/operationsStatus/{}", op.id))),
        svc.config.server.retry_after_seconds,
    ))
}

pub(crate) fn list_protected(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
    let filters = bmt_filter(
        r,
        &[
            "backupmanagementtype",
            "itemtype",
            "policyname",
            "containername",
            "friendlyname",
            "healthstate",
            "fabricname",
            "backupenginename",
            "backupsetname",
        ],
    )?;
    // Validate before looking at items, so a bad value is a 400 even in an empty vault.
    for (k, v) in &filters {
        if k == "backupmanagementtype" {
            one_of("backupManagementType", v, BMTS)?;
        }
    }
    let mut values = Vec::new();
    'items: for it in svc.list_items(vault)? {
        for (k, v) in &filters {
            let keep = match k.as_str() {
                "backupmanagementtype" => v.eq_ignore_ascii_case(it.workload.bmt()),
                "itemtype" => {
                    let t = match it.workload {
                        Workload::Vm => "VM",
                        Workload::FileShare => "AzureFileShare",
                    };
                    v.eq_ignore_ascii_case(t)
                }
                "policyname" => it
                    .policy
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(v)),
                "containername" => {
                    it.container.eq_ignore_ascii_case(v)
                        || it
                            .container
                            .split_once(';')
                            .is_some_and(|(_, s)| s.eq_ignore_ascii_case(v))
                }
                "friendlyname" => it.friendly_name.eq_ignore_ascii_case(v),
                "healthstate" => it.health_status.eq_ignore_ascii_case(v),
                "fabricname" => v.eq_ignore_ascii_case("Azure"),
                _ => true,
            };
            if !keep {
                continue 'items;
            }
        }
        values.push(it.wire(&vault.vault, None));
    }
    Ok(ok(json!({"value": values})))
}

// ---------------------------------------------------------------- backup

pub(crate) fn trigger_backup(
    svc: &Arc<Service>,
    r: &Req,
    vault: &Vault,
    container: &str,
    item_name: &str,
) -> ArmResult<Response> {
    let it = match find_item(svc, vault, container, item_name) {
        Ok(it) => it,
        // A known source that this vault does not protect is a client error, not a missing thing.
        Err(_) if svc.source_by_item(&vault.vault.sub, container, item_name).is_some() => {
            return Err(ArmError::new(
                ArmCode::ItemNotProtected,
                format!(
                    "Item '{item_name}' is not protected in vault '{}'; configure protection with a policy before backing it up.",
                    vault.vault.name
                ),
            ))
        }
        Err(e) => return Err(e),
    };
    let body = r.json_or_empty()?;
    let props = match body.get("properties") {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(
                ArmError::invalid("'properties' must be an object (a BackupRequest).")
                    .with_target("properties"),
            )
        }
    };
    if let Some(t) = props.get("objectType") {
        let expected = match it.workload {
            Workload::Vm => "IaasVMBackupRequest",
            Workload::FileShare => "AzureFileShareBackupRequest",
        };
        if !t.as_str().is_some_and(|t| t.eq_ignore_ascii_case(expected)) {
            return Err(ArmError::invalid(format!(
                "objectType {t} is invalid for '{item_name}'; expected '{expected}'."
            ))
            .with_target("properties.objectType"));
        }
    }
    let expiry = match props.get("recoveryPointExpiryTimeInUTC") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let t = filter::parse_time("recoveryPointExpiryTimeInUTC", s).map_err(|_| {
                ArmError::invalid(format!(
                    "recoveryPointExpiryTimeInUTC '{s}' is not a valid date-time."
                ))
            })?;
            if t <= Utc::now() {
                return Err(ArmError::invalid(format!(
                    "recoveryPointExpiryTimeInUTC '{s}' is in the past."
                ))
                .with_target("properties.recoveryPointExpiryTimeInUTC"));
            }
            Some(t)
        }
        Some(_) => {
            return Err(ArmError::invalid(
                "recoveryPointExpiryTimeInUTC must be a string.",
            ))
        }
    };
    soft_delete::refuse_if_soft_deleted(&it, "it cannot be backed up")?;
    if it.protection_state == "ProtectionStopped" || it.policy.is_none() {
        return Err(ArmError::new(
            ArmCode::ItemNotProtected,
            format!("Item '{}' is not protected (protectionState {}); configure protection with a policy before backing it up.", it.name, it.protection_state),
        ));
    }
    let job = new_job(
        vault,
        &it,
        "Backup",
        Work::Backup {
            expiry,
            scheduled: false,
        },
        true,
    );
    let op = Operation::new(OpKind::Backup, Some(job.id.clone()), Some(it.key())).succeeded();
    svc.create_job(job, Some(&op))?;
    let base = it.id(&vault.vault);
    Ok(accepted(
        &r.url(&format!("{base}/operationResults/{}", op.id)),
        Some(&r.url(&format!("{base}/operationsStatus/{}", op.id))),
        svc.config.server.retry_after_seconds,
    ))
}

pub(crate) fn list_recovery_points(
    svc: &Service,
    r: &Req,
    vault: &Vault,
    container: &str,
    item_name: &str,
) -> ArmResult<Response> {
    let it = find_item(svc, vault, container, item_name)?;
    let (mut from, mut to) = (None, None);
    if let Some(f) = r.q("$filter") {
        for (k, v) in filter::parse(
            f,
            &[
                "startdate",
                "enddate",
                "restorepointquerytype",
                "extendedinfo",
                "movereadyrponly",
            ],
        )? {
            match k.as_str() {
                "startdate" => from = Some(filter::parse_time("startDate", &v)?),
                "enddate" => to = Some(filter::parse_time("endDate", &v)?),
                _ => {}
            }
        }
    }
    let item_id = it.id(&vault.vault);
    let values: Vec<Value> = svc
        .recovery_points(vault, &it.key())?
        .iter()
        .filter(|p| from.is_none_or(|f| p.time >= f) && to.is_none_or(|t| p.time <= t))
        .map(|p| p.wire(&item_id))
        .collect();
    Ok(ok(json!({"value": values})))
}
