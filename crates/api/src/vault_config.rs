//! Vault settings and questions clients ask of a vault: `backupEncryptionConfigs`,
//! `backupstorageconfig/vaultstorageconfig`, `backupUsageSummaries`, and restore validation
//! (`backupValidateOperation`, `backupTriggerValidateOperation` and their results).

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::lookup::{find_item, find_rp, only};
use crate::restore;
use crate::{accepted, filter, ok, Req};
use rsvault_jobs::service::Service;
use rsvault_jobs::soft_delete;
use rsvault_jobs::status::USAGE_KINDS;
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};
use rsvault_types::model::{OpKind, Operation, Vault, Workload};

/// `GET {vault}/backupEncryptionConfigs/backupResourceEncryptionConfig`: platform-managed keys,
/// since rsvault encrypts every repository with its own vault key.
pub fn encryption(r: &Req, vault: &Vault) -> ArmResult<Response> {
    only(&r.method, &[Method::GET])?;
    Ok(ok(json!({
        "id": format!("{}/backupEncryptionConfigs/backupResourceEncryptionConfig", vault.vault.id()),
        "name": "backupResourceEncryptionConfig",
        "type": "Microsoft.RecoveryServices/vaults/backupEncryptionConfigs",
        "location": vault.location,
        "properties": {
            "encryptionAtRestType": "MicrosoftManaged",
            "infrastructureEncryptionState": "Disabled",
            "lastUpdateStatus": "NotEnabled",
        },
    })))
}

fn storage_config_wire(vault: &Vault) -> Value {
    json!({
        "id": format!("{}/backupstorageconfig/vaultstorageconfig", vault.vault.id()),
        "name": "vaultstorageconfig",
        "type": "Microsoft.RecoveryServices/vaults/backupstorageconfig",
        "location": vault.location,
        "properties": {
            "storageModelType": "LocallyRedundant",
            "storageType": "LocallyRedundant",
            "storageTypeState": "Unlocked",
            "crossRegionRestoreFlag": false,
            "dedupState": "Disabled",
            "xcoolState": "Disabled",
        },
    })
}

/// `{vault}/backupstorageconfig/vaultstorageconfig`: one local repository per vault is locally
/// redundant storage without cross-region restore; a PUT/PATCH may confirm that, and anything
/// else is refused rather than stored and ignored.
pub fn storage_config(r: &Req, vault: &Vault) -> ArmResult<Response> {
    match r.method {
        Method::GET => Ok(ok(storage_config_wire(vault))),
        Method::PUT | Method::PATCH => {
            let body = r.json()?;
            let props = body.get("properties").cloned().unwrap_or(json!({}));
            for key in ["storageModelType", "storageType"] {
                match props.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(t)) if t.eq_ignore_ascii_case("LocallyRedundant") => {}
                    Some(other) => {
                        return Err(ArmError::invalid(format!(
                            "{key} {other} cannot be honoured: a vault's repository is one copy in the configured repository location (a directory, S3 or Azure Blob, whose own redundancy rsvault does not control), so only LocallyRedundant is supported."
                        ))
                        .with_target(format!("properties.{key}")))
                    }
                }
            }
            match props.get("crossRegionRestoreFlag") {
                None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                Some(other) => {
                    return Err(ArmError::invalid(format!(
                        "crossRegionRestoreFlag {other} cannot be honoured: rsvault has no secondary region."
                    ))
                    .with_target("properties.crossRegionRestoreFlag"))
                }
            }
            for key in ["dedupState", "xcoolState"] {
                match props.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(t)) if t.eq_ignore_ascii_case("Disabled") => {}
                    Some(other) => {
                        return Err(ArmError::invalid(format!(
                            "{key} {other} cannot be honoured; only Disabled is supported."
                        ))
                        .with_target(format!("properties.{key}")))
                    }
                }
            }
            if r.method == Method::PATCH {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Ok(ok(storage_config_wire(vault)))
            }
        }
        _ => Err(only(&r.method, &[Method::GET, Method::PUT, Method::PATCH]).unwrap_err()),
    }
}

fn vault_config_wire(svc: &Service, vault: &Vault) -> Value {
    let sd = soft_delete::settings_wire(vault, &svc.config.retention);
    json!({
        "id": format!("{}/backupconfig/vaultconfig", vault.vault.id()),
        "name": "vaultconfig",
        "type": "Microsoft.RecoveryServices/vaults/backupconfig",
        "properties": {
            "storageModelType": "LocallyRedundant",
            "storageType": "LocallyRedundant",
            "storageTypeState": "Unlocked",
            "enhancedSecurityState": "Disabled",
            "softDeleteFeatureState": sd["softDeleteState"],
            "softDeleteRetentionPeriodInDays": sd["softDeleteRetentionPeriodInDays"],
            "isSoftDeleteFeatureStateEditable": sd["softDeleteState"] != "AlwaysON",
        },
    })
}

/// `{vault}/backupconfig/vaultconfig` (what `az backup vault backup-properties show|set` use):
/// the vault's soft delete state and period, changed with the same rules as the vault's
/// `securitySettings.softDeleteSettings` (which it reads and writes).
pub fn vault_config(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
    only(&r.method, &[Method::GET, Method::PUT, Method::PATCH])?;
    match r.method {
        Method::GET => Ok(ok(vault_config_wire(svc, vault))),
        _ => {
            let body = r.json()?;
            let props = match body.get("properties") {
                None | Some(Value::Null) => json!({}),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => {
                    return Err(ArmError::invalid("'properties' must be an object.")
                        .with_target("properties"))
                }
            };
            for key in ["storageModelType", "storageType"] {
                match props.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(t))
                        if t.eq_ignore_ascii_case("LocallyRedundant")
                            || t.eq_ignore_ascii_case("Invalid") => {}
                    Some(other) => {
                        return Err(ArmError::invalid(format!(
                            "{key} {other} cannot be honoured; only LocallyRedundant is supported (see backupstorageconfig)."
                        ))
                        .with_target(format!("properties.{key}")))
                    }
                }
            }
            let mut settings = serde_json::Map::new();
            for (from, to) in [
                ("softDeleteFeatureState", "softDeleteState"),
                (
                    "softDeleteRetentionPeriodInDays",
                    "softDeleteRetentionPeriodInDays",
                ),
                ("enhancedSecurityState", "enhancedSecurityState"),
            ] {
                if let Some(v) = props.get(from).filter(|v| !v.is_null()) {
                    settings.insert(to.into(), v.clone());
                }
            }
            let mut new_props = vault.properties.clone();
            if !new_props
                .get("securitySettings")
                .is_some_and(Value::is_object)
            {
                new_props["securitySettings"] = json!({});
            }
            new_props["securitySettings"]["softDeleteSettings"] = Value::Object(settings);
            rsvault_jobs::immutability::check_settings(Some(vault), &mut new_props, true).map_err(
                |e| {
                    rename_target(
                        e,
                        "properties.securitySettings.softDeleteSettings",
                        "properties",
                    )
                },
            )?;
            let mut updated = vault.clone();
            updated.properties = new_props;
            svc.put_vault(&updated)?;
            Ok(ok(vault_config_wire(svc, &updated)))
        }
    }
}

/// An error about a vault's soft delete settings, pointed at vaultconfig's field names.
fn rename_target(mut e: ArmError, from: &str, to: &str) -> ArmError {
    if let Some(t) = e.target.take() {
        let t = t
            .replace(from, to)
            .replace(".softDeleteState", ".softDeleteFeatureState");
        e = e.with_target(t);
    }
    e
}

/// `GET {vault}/backupUsageSummaries[?$filter=type eq '…']`
pub async fn usage_summaries(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
    only(&r.method, &[Method::GET])?;
    let mut kind = None;
    if let Some(f) = r.q("$filter") {
        for (k, v) in filter::parse(f, &["type"])? {
            if k == "type" {
                let known = USAGE_KINDS.iter().find(|u| u.eq_ignore_ascii_case(&v));
                kind = Some(*known.ok_or_else(|| {
                    ArmError::new(
                        ArmCode::InvalidFilter,
                        format!(
                            "Invalid type '{v}' in $filter; allowed: {}.",
                            USAGE_KINDS.join(", ")
                        ),
                    )
                    .with_target("$filter")
                })?);
            }
        }
    }
    let repo_bytes = if kind.is_none_or(|k| k == USAGE_KINDS[2]) {
        svc.repository_bytes(vault)
            .await
            .map_err(|e| ArmError::internal(format!("measuring the vault's repository: {e}")))?
    } else {
        0
    };
    Ok(ok(svc.usage_summaries(vault, kind, repo_bytes)?))
}

/// Runs the restore planner on a validation request: `ValidateOperationRequestResource`
/// (`{id, properties: {objectType, restoreRequest}}`), or the bare `ValidateOperationRequest` older
/// api-versions send. The result is a `ValidateOperationsResponse`; a request that would fail
/// becomes a validation result, not an error.
fn validate(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Value> {
    let body = r.json()?;
    let req = match body.get("properties") {
        Some(p) if p.get("objectType").is_some() => p.clone(),
        _ => body.clone(),
    };
    let t = req.get("objectType").and_then(Value::as_str).unwrap_or("");
    if ![
        "ValidateRestoreOperationRequest",
        "ValidateIaasVMRestoreOperationRequest",
    ]
    .iter()
    .any(|x| x.eq_ignore_ascii_case(t))
    {
        return Err(ArmError::invalid(format!(
            "objectType '{t}' is not supported; use ValidateIaasVMRestoreOperationRequest or ValidateRestoreOperationRequest."
        ))
        .with_target("properties.objectType"));
    }
    let restore = req
        .get("restoreRequest")
        .filter(|x| x.is_object())
        .ok_or_else(|| {
            ArmError::invalid("'restoreRequest' (an object) is required.")
                .with_target("properties.restoreRequest")
        })?;
    let results = match check_restore(svc, vault, body.get("id"), restore) {
        Ok(()) => vec![],
        Err(e) => vec![json!({"code": e.code.as_str(), "message": e.message})],
    };
    Ok(json!({"validateOperationResponse": {"validationResults": results}}))
}

/// Finds the item and recovery point of a restore request and plans it, writing nothing. The
/// recovery point comes from the resource `id` (a recovery point's ARM id) when it is one, else
/// from `sourceResourceId` and `recoveryPointId` (a share without a point id: its newest point).
fn check_restore(svc: &Service, vault: &Vault, id: Option<&Value>, req: &Value) -> ArmResult<()> {
    let by_id = id.and_then(Value::as_str).and_then(|id| {
        let seg: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
        let at = |k: &str| {
            seg.iter()
                .position(|s| s.eq_ignore_ascii_case(k))
                .and_then(|i| seg.get(i + 1))
                .map(|s| s.to_string())
        };
        Some((
            at("protectionContainers")?,
            at("protectedItems")?,
            at("recoveryPoints")?,
        ))
    });
    let (item, rp) = match by_id {
        Some((c, i, rp)) => {
            let it = find_item(svc, vault, &c, &i)?;
            let rp = find_rp(svc, vault, &it, &rp)?;
            (it, rp)
        }
        None => {
            let source = req
                .get("sourceResourceId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let workload = if req
                .get("objectType")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("IaasVM"))
            {
                Workload::Vm
            } else {
                Workload::FileShare
            };
            let mut candidates: Vec<_> = svc
                .list_items(vault)?
                .into_iter()
                .filter(|i| {
                    i.workload == workload && i.source_resource_id.eq_ignore_ascii_case(source)
                })
                .collect();
            if candidates.len() != 1 {
                return Err(ArmError::new(
                    ArmCode::ItemNotFound,
                    format!(
                        "sourceResourceId '{source}' names {} protected items of this vault; give the recovery point's ARM id as 'id'.",
                        candidates.len()
                    ),
                ));
            }
            let it = candidates.remove(0);
            let rp = match req.get("recoveryPointId").and_then(Value::as_str) {
                Some(p) => find_rp(svc, vault, &it, p)?,
                None => svc
                    .recovery_points(vault, &it.key())?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        ArmError::new(
                            ArmCode::RecoveryPointNotFound,
                            format!("Item '{}' has no recovery points.", it.friendly_name),
                        )
                    })?,
            };
            (it, rp)
        }
    };
    restore::plan(svc, vault, &item, &rp, req).map(|_| ())
}

/// `POST {vault}/backupValidateOperation`: the validation, answered at once.
pub fn validate_now(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
    only(&r.method, &[Method::POST])?;
    Ok(ok(validate(svc, r, vault)?))
}

/// `POST {vault}/backupTriggerValidateOperation`: the same validation as an operation, its
/// result at `backupValidateOperationResults/{id}`.
pub fn validate_trigger(svc: &Arc<Service>, r: &Req, vault: &Vault) -> ArmResult<Response> {
    only(&r.method, &[Method::POST])?;
    let result = validate(svc, r, vault)?;
    let mut op = Operation::new(OpKind::Validate, None, None).succeeded();
    op.result = Some(result);
    svc.put_op(vault, &op)?;
    let vid = vault.vault.id();
    Ok(accepted(
        &r.url(&format!("{vid}/backupValidateOperationResults/{}", op.id)),
        Some(&r.url(&format!("{vid}/backupValidateOperationsStatuses/{}", op.id))),
        svc.config.server.retry_after_seconds,
    ))
}

fn validate_op(svc: &Service, vault: &Vault, id: &str) -> ArmResult<Operation> {
    let op = svc.get_op(vault, id)?;
    if op.kind != OpKind::Validate {
        return Err(ArmError::new(
            ArmCode::OperationNotFound,
            format!("Operation '{id}' is not a validation."),
        ));
    }
    Ok(op)
}

/// `GET {vault}/backupValidateOperationResults/{id}`
pub fn validate_result(svc: &Service, r: &Req, vault: &Vault, id: &str) -> ArmResult<Response> {
    only(&r.method, &[Method::GET])?;
    let op = validate_op(svc, vault, id)?;
    Ok(ok(op.result.unwrap_or(json!({}))))
}

/// `GET {vault}/backupValidateOperationsStatuses/{id}`
pub fn validate_status(svc: &Service, r: &Req, vault: &Vault, id: &str) -> ArmResult<Response> {
    only(&r.method, &[Method::GET])?;
    let op = validate_op(svc, vault, id)?;
    let mut w = op.wire();
    if let Some(o) = w.as_object_mut() {
        o.remove("properties");
    }
    Ok(ok(w))
}
