//! Route table and thin handlers. Matching is on lowercased segments; names keep their spelling.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{accepted, no_content, ok, Req};
use crate::filter;
use crate::lookup::{find_item, find_rp, only};
use rsvault_jobs::service::{new_job, Service, K_CONTAINER, K_POLICY};
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};
use rsvault_types::job::{Job, JobStatus, Work};
use rsvault_types::model::{
    self, Item, OpKind, Operation, Policy, SourceInfo, Vault, VaultRef, Workload,
};

pub async fn route(svc: &Arc<Service>, r: &Req) -> ArmResult<Response> {
    let l: Vec<String> = r.seg.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    let s = &r.seg;
    let m = &r.method;
    match l.as_slice() {
        ["subscriptions", _, "providers", "microsoft.recoveryservices", "vaults"] => {
            only(m, &[Method::GET])?;
            list_vaults(svc, r, &s[1], None)
        }
        ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.recoveryservices", "vaults"] =>
        {
            only(m, &[Method::GET])?;
            list_vaults(svc, r, &s[1], Some(&s[3]))
        }
        ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.recoveryservices", "vaults", _, rest @ ..] =>
        {
            let v = VaultRef {
                sub: s[1].clone(),
                rg: s[3].clone(),
                name: s[7].clone(),
            };
            vault_routes(svc, r, v, rest, &s[8..]).await
        }
        ["subscriptions", _, "providers", "microsoft.recoveryservices", "locations", _, "backupstatus"] => {
            crate::resources::backup_status(svc, r, &s[1], &s[5])
        }
        ["subscriptions", _, "resourcegroups", _, "providers", p @ ("microsoft.compute" | "microsoft.storage" | "microsoft.classicstorage"), rest @ ..] => {
            crate::resources::provider(svc, r, &s[1], &s[3], p, rest, &s[6..])
        }
        _ => Err(not_found_path(r)),
    }
}

fn not_found_path(r: &Req) -> ArmError {
    ArmError::new(
        ArmCode::PathNotFound,
        format!(
            "No resource type matches the path '/{}' for api version '{}'.",
            r.seg.join("/"),
            r.api_version
        ),
    )
}

async fn vault_routes(
    svc: &Arc<Service>,
    r: &Req,
    v: VaultRef,
    rest: &[&str],
    orig: &[String],
) -> ArmResult<Response> {
    let m = &r.method;
    if rest.is_empty() {
        return match *m {
            Method::GET => Ok(ok(svc.get_vault(&v)?.wire())),
            Method::PUT | Method::PATCH => put_vault(svc, r, v),
            Method::DELETE => {
                svc.delete_vault(&v)?;
                Ok(no_content())
            }
            _ => Err(only(
                m,
                &[Method::GET, Method::PUT, Method::PATCH, Method::DELETE],
            )
            .unwrap_err()),
        };
    }
    let vault = svc.get_vault(&v)?;
    let vid = vault.vault.id();
    match rest {
        ["backupjobs"] => {
            only(m, &[Method::GET])?;
            list_jobs(svc, r, &vault)
        }
        ["backupjobs", "operationresults", op] => {
            only(m, &[Method::GET])?;
            super::export::result(svc, r, &vault, op)
        }
        ["backupjobs", job] => {
            only(m, &[Method::GET])?;
            Ok(ok(svc.get_job(&vault, job)?.wire()))
        }
        ["backupjobs", job, "cancel"] => {
            only(m, &[Method::POST])?;
            let op = svc.request_cancel(&vault, job)?;
            let jid = svc.get_job(&vault, job)?.id;
            let loc = r.url(&format!(
                "{vid}/backupJobs/{jid}/operationResults/{}",
                op.id
            ));
            Ok(accepted(&loc, None, svc.config.server.retry_after_seconds))
        }
        ["backupjobs", _job, "operationresults", op] => {
            only(m, &[Method::GET])?;
            let op = op_view(svc, &vault, op)?;
            op_result(svc, r, &op, None)
        }
        ["backupjobsexport"] => {
            only(m, &[Method::POST])?;
            super::export::start(svc, r, &vault, job_query(r.q("$filter"))?)
        }
        ["backupoperations", op] | ["operationstatus", op] => {
            only(m, &[Method::GET])?;
            Ok(ok(op_view(svc, &vault, op)?.wire()))
        }
        ["backupoperationresults", op] | ["operationresults", op] => {
            only(m, &[Method::GET])?;
            let op = op_view(svc, &vault, op)?;
            op_result(svc, r, &op, None)
        }
        ["backuppolicies"] => {
            only(m, &[Method::GET])?;
            list_policies(svc, r, &vault)
        }
        ["backuppolicies", _] => policy(svc, r, &vault, &orig[1]),
        ["backuppolicies", _, "operationresults", _] => {
            only(m, &[Method::GET])?;
            let p = get_policy(svc, &vault, &orig[1])?;
            let n = svc.protected_count(&vault, &p.name)?;
            Ok(ok(p.wire(&vault.vault, n)))
        }
        ["backuppolicies", _, "operations", op] => {
            only(m, &[Method::GET])?;
            Ok(ok(op_view(svc, &vault, op)?.wire()))
        }
        ["backupprotectableitems"] => {
            only(m, &[Method::GET])?;
            list_protectable(svc, r, &vault)
        }
        ["backupprotecteditems"] => {
            only(m, &[Method::GET])?;
            list_protected(svc, r, &vault)
        }
        ["backupprotectioncontainers"] => {
            only(m, &[Method::GET])?;
            list_containers(svc, r, &vault)
        }
        ["backupfabrics", fabric, tail @ ..] => {
            if *fabric != "azure" {
                return Err(ArmError::new(
                    ArmCode::ResourceNotFound,
                    format!(
                        "Fabric '{}' was not found; rsvault serves the 'Azure' fabric.",
                        orig[1]
                    ),
                ));
            }
            fabric_routes(svc, r, &vault, tail, &orig[2..]).await
        }
        ["backupresourceguardproxies"] => {
            // rsvault has no resource guards (multi-user authorization): the list is empty.
            only(m, &[Method::GET])?;
            Ok(ok(json!({"value": []})))
        }
        // rsvault extensions (not part of Azure's API).
        ["rsvault", "maintenance", op] => {
            only(m, &[Method::POST])?;
            start_maintenance(svc, r, &vault, op)
        }
        ["rsvault", "retentionpreview"] => {
            only(m, &[Method::GET])?;
            let at = match r.q("at") {
                Some(t) => filter::parse_time("at", t)?,
                None => Utc::now(),
            };
            let items = rsvault_jobs::maintenance::preview(svc, &vault, at)?;
            Ok(ok(
                json!({"vault": vault.vault.id(), "at": arm::time(at), "items": items}),
            ))
        }
        ["backupencryptionconfigs", "backupresourceencryptionconfig"] => {
            crate::vault_config::encryption(r, &vault)
        }
        ["backupstorageconfig", "vaultstorageconfig"] => {
            crate::vault_config::storage_config(r, &vault)
        }
        ["backupusagesummaries"] => crate::vault_config::usage_summaries(svc, r, &vault),
        ["backupvalidateoperation"] => crate::vault_config::validate_now(svc, r, &vault),
        ["backuptriggervalidateoperation"] => crate::vault_config::validate_trigger(svc, r, &vault),
        ["backupvalidateoperationresults", _] => {
            crate::vault_config::validate_result(svc, r, &vault, &orig[1])
        }
        ["backupvalidateoperationsstatuses", _] => {
            crate::vault_config::validate_status(svc, r, &vault, &orig[1])
        }
        ["backupconfig", "vaultconfig"] => {
            // Read-only: rsvault has neither soft delete nor enhanced security, so there is
            // nothing a PUT/PATCH could change, and it says so rather than echo a setting.
            only(m, &[Method::GET])?;
            Ok(ok(json!({
                "id": format!("{vid}/backupconfig/vaultconfig"),
                "name": "vaultconfig",
                "type": "Microsoft.RecoveryServices/vaults/backupconfig",
                "properties": {"enhancedSecurityState": "Disabled", "softDeleteFeatureState": "Disabled"},
            })))
        }
        _ => Err(not_found_path(r)),
    }
}

async fn fabric_routes(
    svc: &Arc<Service>,
    r: &Req,
    vault: &Vault,
    rest: &[&str],
    orig: &[String],
) -> ArmResult<Response> {
    let m = &r.method;
    let vid = vault.vault.id();
    let retry = svc.config.server.retry_after_seconds;
    match rest {
        ["refreshcontainers"] => {
            only(m, &[Method::POST])?;
            if let Some(f) = r.q("$filter") {
                filter::parse(f, &["backupmanagementtype"])?;
            }
            // Sources come from the configuration, so discovery is immediate.
            let op = Operation::new(OpKind::Refresh, None, None).succeeded();
            svc.put_op(vault, &op)?;
            let loc = r.url(&format!(
                "{vid}/backupFabrics/Azure/operationResults/{}",
                op.id
            ));
            Ok(accepted(&loc, None, retry))
        }
        ["operationresults", op] => {
            only(m, &[Method::GET])?;
            let op = op_view(svc, vault, op)?;
            if op.status == "InProgress" {
                let loc = r.url(&format!(
                    "{vid}/backupFabrics/Azure/operationResults/{}",
                    op.id
                ));
                Ok(accepted(&loc, None, retry))
            } else {
                Ok(no_content())
            }
        }
        ["protectableContainers"] | ["protectablecontainers"] => {
            only(m, &[Method::GET])?;
            let values: Vec<Value> = svc
                .sources
                .iter()
                .filter(|s| s.workload == Workload::FileShare)
                .filter({
                    // One container per storage account, however many shares it has.
                    let mut seen = std::collections::HashSet::new();
                    move |s| seen.insert(s.container.to_ascii_lowercase())
                })
                .map(|s| {
                    json!({
                        "id": format!("{vid}/backupFabrics/Azure/protectableContainers/{}", s.container),
                        "name": s.container,
                        "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectableContainers",
                        "properties": {
                            "protectableContainerType": "StorageContainer",
                            "backupManagementType": "AzureStorage",
                            "friendlyName": s.host_name,
                            "healthStatus": "Healthy",
                            "containerId": s.resource_id(&vault.vault.sub),
                        }
                    })
                })
                .collect();
            Ok(ok(json!({"value": values})))
        }
        ["protectioncontainers", _] => container(svc, r, vault, &orig[1]),
        ["protectioncontainers", _, "inquire"] => {
            only(m, &[Method::POST])?;
            // Shares are discovered from the configuration: inquiry finishes at once.
            let src = container_source(svc, vault, &orig[1])?;
            let op = Operation::new(OpKind::Refresh, None, None).succeeded();
            svc.put_op(vault, &op)?;
            let base = format!(
                "{vid}/backupFabrics/Azure/protectionContainers/{}",
                src.container
            );
            Ok(accepted(
                &r.url(&format!("{base}/operationResults/{}", op.id)),
                Some(&r.url(&format!("{base}/operationsStatus/{}", op.id))),
                retry,
            ))
        }
        ["protectioncontainers", _, "operationresults", _]
        | ["protectioncontainers", _, "operationsstatus", _] => {
            only(m, &[Method::GET])?;
            let op = op_view(svc, vault, rest[3])?;
            if rest[2] == "operationsstatus" {
                return Ok(ok(op.wire()));
            }
            let src = container_source(svc, vault, &orig[1])?;
            let n = items_in_container(svc, vault, &src.container)?;
            Ok(ok(model::container_wire(&vault.vault, &src, true, n)))
        }
        ["protectioncontainers", _, "protecteditems", _] => item(svc, r, vault, &orig[1], &orig[3]),
        ["protectioncontainers", _, "protecteditems", _, "operationresults", op] => {
            only(m, &[Method::GET])?;
            let op = op_view(svc, vault, op)?;
            op_result(svc, r, &op, Some((vault, &orig[1], &orig[3])))
        }
        ["protectioncontainers", _, "protecteditems", _, "operationsstatus", op] => {
            only(m, &[Method::GET])?;
            Ok(ok(op_view(svc, vault, op)?.wire()))
        }
        ["protectioncontainers", _, "protecteditems", _, "backup"] => {
            only(m, &[Method::POST])?;
            trigger_backup(svc, r, vault, &orig[1], &orig[3])
        }
        ["protectioncontainers", _, "protecteditems", _, "recoverypoints"] => {
            only(m, &[Method::GET])?;
            list_recovery_points(svc, r, vault, &orig[1], &orig[3])
        }
        ["protectioncontainers", _, "protecteditems", _, "recoverypoints", _] => {
            only(m, &[Method::GET])?;
            let it = find_item(svc, vault, &orig[1], &orig[3])?;
            let rp = find_rp(svc, vault, &it, &orig[5])?;
            Ok(ok(rp.wire(&it.id(&vault.vault))))
        }
        ["protectioncontainers", _, "protecteditems", _, "recoverypoints", _, "restore"] => {
            only(m, &[Method::POST])?;
            crate::restore::trigger(svc, r, vault, &orig[1], &orig[3], &orig[5])
        }
        _ => Err(not_found_path(r)),
    }
}

// ---------------------------------------------------------------- vaults

fn list_vaults(svc: &Service, _r: &Req, sub: &str, rg: Option<&str>) -> ArmResult<Response> {
    let vaults = svc.list_vaults(sub, rg)?;
    let v: Vec<Value> = vaults.iter().map(Vault::wire).collect();
    Ok(ok(json!({"value": v})))
}

fn put_vault(svc: &Service, r: &Req, v: VaultRef) -> ArmResult<Response> {
    arm::check_name("vault", &v.name)?;
    check_scope_name("resource group", &v.rg)?;
    check_scope_name("subscription", &v.sub)?;
    let body = r.json()?;
    let existing = svc.get_vault_by_key(&v.key())?;
    let is_patch = r.method == Method::PATCH;
    if is_patch && existing.is_none() {
        return Err(svc.get_vault(&v).unwrap_err());
    }
    let location = match body.get("location") {
        Some(Value::String(l)) if !l.trim().is_empty() => l.to_ascii_lowercase().replace(' ', ""),
        Some(_) => {
            return Err(
                ArmError::invalid("'location' must be a non-empty string.").with_target("location")
            )
        }
        None => match &existing {
            Some(e) => e.location.clone(),
            None => {
                return Err(ArmError::invalid("'location' is required.").with_target("location"))
            }
        },
    };
    let sku = match body.get("sku") {
        None => existing
            .as_ref()
            .map(|e| e.sku.clone())
            .unwrap_or(json!({"name": "RS0", "tier": "Standard"})),
        Some(s) => match s.get("name").and_then(Value::as_str) {
            Some("Standard") | Some("RS0") => json!({"name": "RS0", "tier": "Standard"}),
            Some(other) => {
                return Err(ArmError::invalid(format!(
                    "sku.name '{other}' is invalid; allowed: Standard, RS0."
                ))
                .with_target("sku.name"))
            }
            None => return Err(ArmError::invalid("sku.name is required.").with_target("sku.name")),
        },
    };
    let tags = match body.get("tags") {
        None | Some(Value::Null) => existing
            .as_ref()
            .map(|e| e.tags.clone())
            .unwrap_or(json!({})),
        Some(t @ Value::Object(map)) if map.values().all(Value::is_string) => t.clone(),
        Some(_) => {
            return Err(
                ArmError::invalid("'tags' must be an object of strings.").with_target("tags")
            )
        }
    };
    let mut props = existing
        .as_ref()
        .map(|e| e.properties.clone())
        .unwrap_or_else(|| json!({"publicNetworkAccess": "Enabled"}));
    match body.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => {
            for (k, val) in p {
                if k != "provisioningState" {
                    props[k] = val.clone();
                }
            }
        }
        Some(_) => {
            return Err(
                ArmError::invalid("'properties' must be an object.").with_target("properties")
            )
        }
    }
    props["provisioningState"] = json!("Succeeded");
    let identity = match body.get("identity") {
        None | Some(Value::Null) => existing.as_ref().and_then(|e| e.identity.clone()),
        Some(i) => {
            let t = i.get("type").and_then(Value::as_str).unwrap_or("None");
            let mut i = i.clone();
            if t.contains("SystemAssigned") {
                i["principalId"] = json!(uuid::Uuid::new_v4().to_string());
                i["tenantId"] = json!("00000000-0000-0000-0000-000000000000");
            }
            Some(i)
        }
    };
    let now = Utc::now();
    let wrapped_key = match &existing {
        Some(e) => e.wrapped_key.clone(),
        None => svc.new_vault_key(&v, &random_secret()),
    };
    let vault = Vault {
        vault: existing.as_ref().map(|e| e.vault.clone()).unwrap_or(v),
        location,
        tags,
        sku,
        identity,
        properties: props,
        etag: existing
            .as_ref()
            .map(|e| e.etag.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
        wrapped_key,
        wrapped_master_key: existing
            .as_ref()
            .map(|e| e.wrapped_master_key.clone())
            .unwrap_or_default(),
        legacy_password: existing.as_ref().and_then(|e| e.legacy_password.clone()),
        created: existing.as_ref().map(|e| e.created).unwrap_or(now),
    };
    svc.put_vault(&vault)?;
    if existing.is_none() {
        // Every new vault comes with Azure's DefaultPolicy.
        let name = rsvault_jobs::policy::DEFAULT_POLICY;
        let p = Policy {
            name: name.to_string(),
            properties: rsvault_jobs::policy::validate(Some(
                &rsvault_jobs::policy::default_vm_policy(now),
            ))?,
            created: now,
        };
        svc.store.tx(|tx| {
            tx.put(
                K_POLICY,
                &vault.vault.key(),
                &name.to_ascii_lowercase(),
                "",
                &p,
            )
        })?;
    }
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(vault.wire())).into_response())
}

fn check_scope_name(kind: &str, name: &str) -> ArmResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 90
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.()".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ArmError::new(
            ArmCode::InvalidResourceName,
            format!("The {kind} name '{name}' is invalid."),
        ))
    }
}

pub fn random_secret() -> String {
    super::random_token()
}

// ---------------------------------------------------------------- maintenance

fn start_maintenance(svc: &Arc<Service>, r: &Req, vault: &Vault, op: &str) -> ArmResult<Response> {
    let body = r.json_or_empty()?;
    let (operation, work) = match op {
        "garbagecollection" => ("GarbageCollection", Work::GarbageCollection),
        "verify" => {
            let pct =
                match body.get("readDataPercent") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_u64().filter(|p| (1..=100).contains(p)).ok_or_else(
                        || {
                            ArmError::invalid("readDataPercent must be an integer from 1 to 100.")
                                .with_target("readDataPercent")
                        },
                    )? as u8),
                };
            (
                "Verify",
                Work::Verify {
                    read_data_percent: pct,
                },
            )
        }
        other => {
            return Err(ArmError::new(
                ArmCode::PathNotFound,
                format!(
                    "Unknown maintenance operation '{other}'; use garbageCollection or verify."
                ),
            ))
        }
    };
    let job = svc.maintenance_job(vault, operation, work, true);
    let o = Operation::new(OpKind::Backup, Some(job.id.clone()), None).succeeded();
    svc.create_job(job, Some(&o))?;
    let vid = vault.vault.id();
    Ok(accepted(
        &r.url(&format!("{vid}/backupOperationResults/{}", o.id)),
        Some(&r.url(&format!("{vid}/backupOperations/{}", o.id))),
        svc.config.server.retry_after_seconds,
    ))
}

// ---------------------------------------------------------------- operations

/// An operation as the caller should see it: cancel and delete operations follow their job.
fn op_view(svc: &Service, vault: &Vault, id: &str) -> ArmResult<Operation> {
    let mut op = svc.get_op(vault, id)?;
    if matches!(op.kind, OpKind::Cancel | OpKind::DeleteItem) && op.status == "InProgress" {
        if let Some(jid) = &op.job_id {
            let job = svc.get_job(vault, jid)?;
            if job.status.is_terminal() {
                let ok = match op.kind {
                    OpKind::Cancel => job.status == JobStatus::Cancelled,
                    _ => matches!(
                        job.status,
                        JobStatus::Completed | JobStatus::CompletedWithWarnings
                    ),
                };
                op.status = if ok { "Succeeded" } else { "Failed" }.into();
                op.end = job.end;
                if !ok {
                    op.error = Some((
                        "BMSUserErrorJobFailed".into(),
                        format!("Job '{}' ended {}.", job.id, job.status.as_str()),
                    ));
                }
            }
        }
    }
    Ok(op)
}

/// `operationResults`: 202 while running, then 200 with the resource (protected item PUT) or 204.
fn op_result(
    svc: &Service,
    r: &Req,
    op: &Operation,
    item: Option<(&Vault, &str, &str)>,
) -> ArmResult<Response> {
    if op.status == "InProgress" {
        let loc = format!("{}{}", r.origin, current_path(r));
        return Ok(accepted(&loc, None, svc.config.server.retry_after_seconds));
    }
    if op.status == "Failed" {
        let (code, msg) = op.error.clone().unwrap_or((
            "BMSUserErrorOperationFailed".into(),
            "The operation failed.".into(),
        ));
        return Err(ArmError::new(ArmCode::Conflict, format!("{code}: {msg}")));
    }
    if let (Some((vault, c, i)), OpKind::ConfigureProtection | OpKind::StopProtection) =
        (item, op.kind)
    {
        if let Ok(it) = find_item(svc, vault, c, i) {
            return Ok(ok(it.wire(&vault.vault, None)));
        }
    }
    Ok(no_content())
}

fn current_path(r: &Req) -> String {
    format!("/{}?api-version={}", r.seg.join("/"), r.api_version)
}

// ---------------------------------------------------------------- jobs

const JOB_FIELDS: &[&str] = &[
    "status",
    "backupmanagementtype",
    "operation",
    "jobid",
    "starttime",
    "endtime",
];
const JOB_OPERATIONS: &[&str] = &[
    "Invalid",
    "Register",
    "UnRegister",
    "ConfigureBackup",
    "Backup",
    "Restore",
    "DisableBackup",
    "DeleteBackupData",
    "CrossRegionRestore",
    "Undelete",
    "UpdateCustomerManagedKey",
    // rsvault's vault maintenance jobs carry their own operation names (issue #5); they are in
    // the job list, so they can be filtered on.
    "GarbageCollection",
    "Verify",
];
pub const BMTS: &[&str] = &[
    "Invalid",
    "AzureIaasVM",
    "MAB",
    "DPM",
    "AzureBackupServer",
    "AzureSql",
    "AzureStorage",
    "AzureWorkload",
    "DefaultBackup",
];

fn one_of(field: &str, v: &str, allowed: &[&str]) -> ArmResult<String> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(v))
        .map(|a| a.to_string())
        .ok_or_else(|| {
            ArmError::new(
                ArmCode::InvalidFilter,
                format!(
                    "Invalid {field} '{v}' in $filter; allowed: {}.",
                    allowed.join(", ")
                ),
            )
            .with_target("$filter")
        })
}

pub fn job_query(f: Option<&str>) -> ArmResult<rsvault_store::JobQuery> {
    let mut q = rsvault_store::JobQuery::default();
    let Some(f) = f else { return Ok(q) };
    let statuses: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let (mut from, mut to) = (None, None);
    for (k, v) in filter::parse(f, JOB_FIELDS)? {
        match k.as_str() {
            "status" => q.status = Some(one_of("status", &v, &statuses)?),
            "operation" => q.operation = Some(one_of("operation", &v, JOB_OPERATIONS)?),
            "backupmanagementtype" => q.bmt = Some(one_of("backupManagementType", &v, BMTS)?),
            "jobid" => q.job_id = Some(v.to_ascii_lowercase()),
            "starttime" => from = Some(filter::parse_time("startTime", &v)?),
            "endtime" => to = Some(filter::parse_time("endTime", &v)?),
            _ => unreachable!("fields are checked by the parser"),
        }
    }
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return Err(ArmError::new(
                ArmCode::InvalidFilter,
                "Invalid $filter: startTime is after endTime.",
            )
            .with_target("$filter"));
        }
    }
    q.start_from = from.map(arm::time);
    q.start_to = to.map(arm::time);
    Ok(q)
}

fn list_jobs(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
    let mut q = job_query(r.q("$filter"))?;
    if let Some(tok) = r.q("$skiptoken") {
        q.after = Some(decode_skip_token(tok)?);
    }
    let page = svc.config.server.page_size;
    let mut rows = svc
        .store
        .read(|tx| tx.list_jobs(&vault.vault.key(), &q, page + 1))?;
    let more = rows.len() > page;
    rows.truncate(page);
    let mut values = Vec::with_capacity(rows.len());
    for (body, _, _) in &rows {
        let job: Job = serde_json::from_str(body).map_err(ArmError::internal)?;
        values.push(job.wire());
    }
    let mut out = json!({"value": values});
    if more {
        if let Some((_, t, s)) = rows.last() {
            let token = encode_skip_token(t, *s);
            let mut url = r.url(&format!("{}/backupJobs", vault.vault.id()));
            if let Some(f) = r.q("$filter") {
                url.push_str("&$filter=");
                url.push_str(&percent_encoding::utf8_percent_encode(f, QUERY_SET).to_string());
            }
            url.push_str("&$skipToken=");
            url.push_str(&token);
            out["nextLink"] = json!(url);
        }
    }
    Ok(ok(out))
}

const QUERY_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode_skip_token(start: &str, seq: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{start}|{seq}"))
}

fn decode_skip_token(tok: &str) -> ArmResult<(String, i64)> {
    use base64::Engine;
    let bad = || {
        ArmError::new(ArmCode::InvalidSkipToken, format!("The $skipToken '{tok}' is invalid; use the nextLink returned by the previous page."))
            .with_target("$skipToken")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok.trim())
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let (t, seq) = s.split_once('|').ok_or_else(bad)?;
    DateTime::parse_from_rfc3339(t).map_err(|_| bad())?;
    Ok((t.to_string(), seq.parse().map_err(|_| bad())?))
}

// ---------------------------------------------------------------- policies

fn get_policy(svc: &Service, vault: &Vault, name: &str) -> ArmResult<Policy> {
    svc.store
        .read(|tx| tx.get::<Policy>(K_POLICY, &vault.vault.key(), &name.to_ascii_lowercase()))?
        .ok_or_else(|| {
            ArmError::new(
                ArmCode::PolicyNotFound,
                format!(
                    "Backup policy '{name}' was not found in vault '{}'.",
                    vault.vault.name
                ),
            )
        })
}

fn list_policies(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
    let mut bmt = None;
    if let Some(f) = r.q("$filter") {
        for (k, v) in filter::parse(f, &["backupmanagementtype", "fabricname", "workloadtype"])? {
            if k == "backupmanagementtype" {
                bmt = Some(one_of("backupManagementType", &v, BMTS)?);
            }
        }
    }
    let policies: Vec<Policy> = svc
        .store
        .read(|tx| tx.list(K_POLICY, &vault.vault.key(), None))?;
    let mut values = Vec::new();
    for p in policies {
        if bmt
            .as_deref()
            .is_some_and(|b| !b.eq_ignore_ascii_case(p.backup_management_type()))
        {
            continue;
        }
        let n = svc.protected_count(vault, &p.name)?;
        values.push(p.wire(&vault.vault, n));
    }
    Ok(ok(json!({"value": values})))
}

fn policy(svc: &Service, r: &Req, vault: &Vault, name: &str) -> ArmResult<Response> {
    match r.method {
        Method::GET => {
            let p = get_policy(svc, vault, name)?;
            let n = svc.protected_count(vault, &p.name)?;
            Ok(ok(p.wire(&vault.vault, n)))
        }
        Method::PUT => {
            arm::check_name("policy", name)?;
            let body = r.json()?;
            let props = rsvault_jobs::policy::validate(body.get("properties"))?;
            let key = name.to_ascii_lowercase();
            let existing: Option<Policy> = svc
                .store
                .read(|tx| tx.get(K_POLICY, &vault.vault.key(), &key))?;
            if let Some(e) = &existing {
                if e.backup_management_type()
                    != props["backupManagementType"].as_str().unwrap_or("")
                {
                    return Err(ArmError::invalid(format!(
                        "Policy '{name}' is a {} policy; its backupManagementType cannot change.",
                        e.backup_management_type()
                    )));
                }
            }
            let p = Policy {
                name: existing
                    .as_ref()
                    .map(|e| e.name.clone())
                    .unwrap_or_else(|| name.to_string()),
                properties: props,
                created: existing
                    .as_ref()
                    .map(|e| e.created)
                    .unwrap_or_else(Utc::now),
            };
            svc.store
                .tx(|tx| tx.put(K_POLICY, &vault.vault.key(), &key, "", &p))?;
            let n = svc.protected_count(vault, &p.name)?;
            Ok(ok(p.wire(&vault.vault, n)))
        }
        Method::DELETE => {
            let p = get_policy(svc, vault, name)?;
            let n = svc.protected_count(vault, &p.name)?;
            if n > 0 {
                return Err(ArmError::new(
                    ArmCode::PolicyInUse,
                    format!("Policy '{}' protects {n} item(s); move them to another policy or stop their protection first.", p.name),
                ));
            }
            svc.store
                .tx(|tx| tx.delete(K_POLICY, &vault.vault.key(), &p.name.to_ascii_lowercase()))?;
            Ok(StatusCode::OK.into_response())
        }
        _ => Err(only(&r.method, &[Method::GET, Method::PUT, Method::DELETE]).unwrap_err()),
    }
}

// ---------------------------------------------------------------- discovery

fn bmt_filter(r: &Req, allowed: &[&str]) -> ArmResult<Vec<(String, String)>> {
    match r.q("$filter") {
        Some(f) => filter::parse(f, allowed),
        None => Ok(vec![]),
    }
}

fn workload_of_bmt(v: &str) -> ArmResult<Option<Workload>> {
    match one_of("backupManagementType", v, BMTS)?.as_str() {
        "AzureIaasVM" => Ok(Some(Workload::Vm)),
        "AzureStorage" => Ok(Some(Workload::FileShare)),
        _ => Ok(None),
    }
}

/// The `backupManagementType` a discovery list is filtered to: `None` when unfiltered,
/// `Some(None)` for a valid type rsvault has no sources of.
fn wanted_workload(r: &Req, allowed: &[&str]) -> ArmResult<Option<Option<Workload>>> {
    let mut want = None;
    for (k, v) in bmt_filter(r, allowed)? {
        if k == "backupmanagementtype" {
            want = Some(workload_of_bmt(&v)?);
        }
    }
    Ok(want)
}

fn list_protectable(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
    let want = wanted_workload(
        r,
        &[
            "backupmanagementtype",
            "workloadtype",
            "protectableitemtype",
            "friendlyname",
            "status",
        ],
    )?;
    let items = svc.list_items(vault)?;
    let values: Vec<Value> = svc
        .sources
        .iter()
        .filter(|s| want.is_none_or(|w| w == Some(s.workload)))
        .map(|s| {
            let protected = items.iter().any(|i| {
                i.key() == s.key()
                    && matches!(i.protection_state.as_str(), "Protected" | "IRPending")
            });
            model::protectable_wire(&vault.vault, s, protected)
        })
        .collect();
    Ok(ok(json!({"value": values})))
}

fn items_in_container(svc: &Service, vault: &Vault, container: &str) -> ArmResult<i64> {
    let c = container.to_ascii_lowercase();
    Ok(svc
        .list_items(vault)?
        .iter()
        .filter(|i| i.container.to_ascii_lowercase() == c)
        .count() as i64)
}

fn list_containers(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
    let want = wanted_workload(
        r,
        &[
            "backupmanagementtype",
            "containertype",
            "backupenginename",
            "fabricname",
            "status",
            "friendlyname",
        ],
    )?;
    let items = svc.list_items(vault)?;
    let registered: Vec<Value> = svc
        .store
        .read(|tx| tx.list(K_CONTAINER, &vault.vault.key(), None))?;
    let mut values = Vec::new();
    for s in &svc.sources {
        if want.is_some_and(|w| w != Some(s.workload)) {
            continue;
        }
        let n = items
            .iter()
            .filter(|i| i.container.eq_ignore_ascii_case(&s.container))
            .count() as i64;
        let is_registered = registered.iter().any(|c| {
            c["name"]
                .as_str()
                .is_some_and(|x| x.eq_ignore_ascii_case(&s.container))
        });
        // A VM container exists once the VM is protected; a storage container once registered.
        let listed = match s.workload {
            Workload::Vm => n > 0,
            Workload::FileShare => is_registered || n > 0,
        };
        if listed
            && !values
                .iter()
                .any(|v: &Value| v["name"] == json!(s.container))
        {
            values.push(model::container_wire(&vault.vault, s, true, n));
        }
    }
    Ok(ok(json!({"value": values})))
}

fn container_source(svc: &Service, vault: &Vault, name: &str) -> ArmResult<SourceInfo> {
    svc.source_by_container(name).cloned().ok_or_else(|| {
        ArmError::new(
            ArmCode::ContainerNotFound,
            format!(
                "Container '{name}' was not found in vault '{}'. Declare the source in the configuration and refresh containers.",
                vault.vault.name
            ),
        )
    })
}

fn container(svc: &Service, r: &Req, vault: &Vault, name: &str) -> ArmResult<Response> {
    let src = container_source(svc, vault, name)?;
    let key = src.container.to_ascii_lowercase();
    match r.method {
        Method::GET => {
            let n = items_in_container(svc, vault, &src.container)?;
            Ok(ok(model::container_wire(&vault.vault, &src, true, n)))
        }
        Method::PUT => {
            let body = r.json()?;
            let p = body.get("properties").cloned().unwrap_or(json!({}));
            if let Some(t) = p.get("containerType").and_then(Value::as_str) {
                let expected = match src.workload {
                    Workload::Vm => "Microsoft.Compute/virtualMachines",
                    Workload::FileShare => "StorageContainer",
                };
                if !t.eq_ignore_ascii_case(expected) && !t.eq_ignore_ascii_case("IaasVMContainer") {
                    return Err(ArmError::invalid(format!(
                        "containerType '{t}' does not match container '{name}'; expected '{expected}'."
                    ))
                    .with_target("properties.containerType"));
                }
            }
            let doc = json!({"name": src.container});
            svc.store
                .tx(|tx| tx.put(K_CONTAINER, &vault.vault.key(), &key, "", &doc))?;
            // Registration is immediate, but clients (az backup) track it as Azure answers it:
            // 202 with a Location whose result is the container.
            let op = Operation::new(OpKind::Refresh, None, None).succeeded();
            svc.put_op(vault, &op)?;
            let base = format!(
                "{}/backupFabrics/Azure/protectionContainers/{}",
                vault.vault.id(),
                src.container
            );
            // The 202 carries the container too: `az backup protection enable-for-azurefileshare`
            // deserializes the initial response's body (polling=False), then follows Location.
            let n = items_in_container(svc, vault, &src.container)?;
            let body = serde_json::to_vec(&model::container_wire(&vault.vault, &src, true, n))
                .map_err(ArmError::internal)?;
            let mut resp = accepted(
                &r.url(&format!("{base}/operationResults/{}", op.id)),
                Some(&r.url(&format!("{base}/operationsStatus/{}", op.id))),
                svc.config.server.retry_after_seconds,
            );
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            *resp.body_mut() = axum::body::Body::from(body);
            Ok(resp)
        }
        Method::DELETE => {
            if items_in_container(svc, vault, &src.container)? > 0 {
                return Err(ArmError::invalid(format!(
                    "Container '{name}' still has protected items; delete their backup data first."
                )));
            }
            svc.store
                .tx(|tx| tx.delete(K_CONTAINER, &vault.vault.key(), &key))?;
            Ok(no_content())
        }
        _ => Err(only(&r.method, &[Method::GET, Method::PUT, Method::DELETE]).unwrap_err()),
    }
}

// ---------------------------------------------------------------- protected items

fn item(
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
            let op_kind = OpKind::DeleteItem;
            let job = new_job(vault, &it, "DeleteBackupData", Work::DeleteData, true);
            let op = Operation::new(op_kind, Some(job.id.clone()), Some(it.key()));
            svc.create_job(job, Some(&op))?;
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
    let src = svc.source_by_item(container, item_name).cloned().ok_or_else(|| {
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
        });
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

fn list_protected(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
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

fn trigger_backup(
    svc: &Arc<Service>,
    r: &Req,
    vault: &Vault,
    container: &str,
    item_name: &str,
) -> ArmResult<Response> {
    let it = match find_item(svc, vault, container, item_name) {
        Ok(it) => it,
        // A known source that this vault does not protect is a client error, not a missing thing.
        Err(_) if svc.source_by_item(container, item_name).is_some() => {
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

fn list_recovery_points(
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
