//! Route table and thin handlers. Matching is on lowercased segments; names keep their spelling.

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use chrono::Utc;
use serde_json::{json, Value};

use super::{accepted, no_content, ok, Req};
use crate::filter;
use crate::items::{item, list_protected, list_recovery_points, trigger_backup};
use crate::jobs::{job_query, list_jobs};
use crate::lookup::{find_item, find_rp, only, wanted_workload};
use crate::policies::{get_policy, list_policies, policy};
pub use crate::vaults::random_secret;
use crate::vaults::{list_vaults, put_vault};
use rsvault_jobs::service::{Service, K_CONTAINER};
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};
use rsvault_types::job::{JobStatus, Work};
use rsvault_types::model::{self, OpKind, Operation, SourceInfo, Vault, VaultRef, Workload};

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
            Method::GET => Ok(ok(rsvault_jobs::soft_delete::vault_wire(
                &svc.get_vault(&v)?,
                &svc.config.retention,
            ))),
            Method::PUT | Method::PATCH => put_vault(svc, r, v),
            Method::DELETE => {
                svc.delete_vault_and_repository(&v).await?;
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
            crate::jobs::get_job(svc, &vault, job)
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
        ["rsvault", "notifications"] => {
            only(m, &[Method::GET])?;
            let list = svc.deliveries(&vault).map_err(ArmError::internal)?;
            Ok(ok(
                json!({"value": list.iter().map(|d| d.wire()).collect::<Vec<_>>()}),
            ))
        }
        ["backupjobs", job, "rsvault", "log"] => {
            only(m, &[Method::GET])?;
            crate::ops::job_log(svc, r, &vault, job)
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
        ["backupusagesummaries"] => crate::vault_config::usage_summaries(svc, r, &vault).await,
        ["backupvalidateoperation"] => crate::vault_config::validate_now(svc, r, &vault),
        ["backuptriggervalidateoperation"] => crate::vault_config::validate_trigger(svc, r, &vault),
        ["backupvalidateoperationresults", _] => {
            crate::vault_config::validate_result(svc, r, &vault, &orig[1])
        }
        ["backupvalidateoperationsstatuses", _] => {
            crate::vault_config::validate_status(svc, r, &vault, &orig[1])
        }
        ["backupconfig", "vaultconfig"] => crate::vault_config::vault_config(svc, r, &vault),
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
                .sources_in(&vault.vault.sub)
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

fn start_maintenance(svc: &Arc<Service>, r: &Req, vault: &Vault, op: &str) -> ArmResult<Response> {
    let body = r.json_or_empty()?;
    let (operation, work) = match op {
        "garbagecollection" => ("GarbageCollection", Work::GarbageCollection),
        "restoredrill" => {
            let pct = match body.get("samplePercent") {
                None | Some(Value::Null) => svc.config.maintenance.drill_sample_percent,
                Some(v) => v.as_u64().filter(|p| (1..=100).contains(p)).ok_or_else(|| {
                    ArmError::invalid("samplePercent must be an integer from 1 to 100.")
                        .with_target("samplePercent")
                })? as u8,
            };
            (
                "RestoreDrill",
                Work::RestoreDrill {
                    sample_percent: pct,
                },
            )
        }
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
                    "Unknown maintenance operation '{other}'; use garbageCollection, verify or restoreDrill."
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

// ---------------------------------------------------------------- discovery

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
        .sources_in(&vault.vault.sub)
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
    for s in &svc.sources_in(&vault.vault.sub) {
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
    svc.source_by_container(&vault.vault.sub, name).ok_or_else(|| {
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
