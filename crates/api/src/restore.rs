//! Restore requests: validated and resolved to a confined target before anything is queued.

use std::path::{Component, Path, PathBuf};

use std::sync::Arc;

use axum::response::Response;
use serde_json::Value;

use crate::lookup::{find_item, find_rp};
use crate::{accepted, Req};
use rsvault_jobs::service::{new_job, Service};
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};
use rsvault_types::job::Work;
use rsvault_types::model::{self, Item, OpKind, Operation, SourceInfo, Vault, Workload};

pub fn trigger(
    svc: &Arc<Service>,
    r: &Req,
    vault: &Vault,
    container: &str,
    item_name: &str,
    rp_id: &str,
) -> ArmResult<Response> {
    let it = find_item(svc, vault, container, item_name)?;
    let rp = find_rp(svc, vault, &it, rp_id)?;
    let body = r.json()?;
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| {
            ArmError::invalid("'properties' (an object) is required.").with_target("properties")
        })?;
    let (paths, target, conflict, rtype) = plan(svc, vault, &it, &rp, props)?;
    let mut job = new_job(
        vault,
        &it,
        "Restore",
        Work::Restore {
            recovery_point: rp.id.clone(),
            snapshot_id: rp.snapshot_id.clone(),
            paths,
            target: target.clone(),
            conflict,
            recovery_type: rtype.clone(),
        },
        true,
    );
    if let Some(root) = svc.restore_root_of(&target) {
        // Only a node with this restore root may run it.
        job.needs = format!("root:{}", root.display());
    }
    job.property_bag
        .insert("Target Path".into(), target.display().to_string());
    job.property_bag.insert("Recovery Type".into(), rtype);
    job.property_bag
        .insert("Recovery Point Time".into(), arm::time(rp.time));
    job.property_bag
        .insert("Recovery Point Id".into(), rp.id.clone());
    let op = Operation::new(OpKind::Restore, Some(job.id.clone()), Some(it.key())).succeeded();
    svc.create_job(job, Some(&op))?;
    let base = it.id(&vault.vault);
    Ok(accepted(
        &r.url(&format!("{base}/operationResults/{}", op.id)),
        Some(&r.url(&format!("{base}/operationsStatus/{}", op.id))),
        svc.config.server.retry_after_seconds,
    ))
}

/// The restore planner: every check a restore request must pass, and where it would write.
/// Writes nothing, so validation operations run it too.
pub fn plan(
    svc: &Service,
    vault: &Vault,
    it: &Item,
    rp: &model::RecoveryPoint,
    props: &Value,
) -> ArmResult<Plan> {
    rsvault_jobs::soft_delete::refuse_if_soft_deleted(it, "it cannot be restored")?;
    let src = svc.source_for(&vault.vault.sub, it).ok_or_else(|| {
        ArmError::invalid(format!(
            "The source of '{}' is no longer in the configuration.",
            it.friendly_name
        ))
    })?;
    let object_type = props
        .get("objectType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let recovery_type = props
        .get("recoveryType")
        .and_then(Value::as_str)
        .unwrap_or("");
    match it.workload {
        Workload::Vm => {
            expect_type(
                object_type,
                &[
                    "IaasVMRestoreRequest",
                    "IaasVMRestoreWithRehydrationRequest",
                ],
            )?;
            vm_plan(svc, props, recovery_type, &src, rp)
        }
        Workload::FileShare => {
            expect_type(object_type, &["AzureFileShareRestoreRequest"])?;
            share_plan(svc, props, recovery_type, &src)
        }
    }
}

pub type Plan = (Vec<String>, PathBuf, rsvault_types::job::Conflict, String);

fn expect_type(t: &str, allowed: &[&str]) -> ArmResult<()> {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(t)) {
        Ok(())
    } else {
        Err(ArmError::invalid(format!(
            "objectType '{t}' is invalid here; expected '{}'.",
            allowed[0]
        ))
        .with_target("properties.objectType"))
    }
}

fn vm_plan(
    svc: &Service,
    p: &Value,
    rt: &str,
    src: &SourceInfo,
    rp: &model::RecoveryPoint,
) -> ArmResult<Plan> {
    let names: Vec<String> = src
        .paths
        .iter()
        .map(|d| {
            d.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let disks: Vec<String> = match p.get("restoreDiskLunList") {
        None | Some(Value::Null) => names.clone(),
        Some(Value::Array(luns)) if !luns.is_empty() => {
            let mut out = Vec::new();
            for l in luns {
                let i = l.as_u64().filter(|i| (*i as usize) < names.len()).ok_or_else(|| {
                    ArmError::invalid(format!("restoreDiskLunList entry {l} is not a disk of this VM (it has {} disks).", names.len()))
                        .with_target("properties.restoreDiskLunList")
                })?;
                out.push(names[i as usize].clone());
            }
            out
        }
        Some(Value::Array(_)) => names.clone(),
        Some(_) => {
            return Err(ArmError::invalid(
                "restoreDiskLunList must be an array of integers.",
            ))
        }
    };
    match rt.to_ascii_lowercase().as_str() {
        "originallocation" => {
            let parents: Vec<&Path> = src.paths.iter().filter_map(|d| d.parent()).collect();
            let first = parents.first().copied().ok_or_else(|| ArmError::invalid("The VM has no disks."))?;
            if parents.iter().any(|p| *p != first) {
                return Err(ArmError::invalid(
                    "OriginalLocation restore needs all of the VM's disks in one directory; use RestoreDisks instead.",
                ));
            }
            Ok((disks, first.to_path_buf(), rsvault_types::job::Conflict::Overwrite, "OriginalLocation".into()))
        }
        "alternatelocation" | "restoredisks" => {
            // The staging account: any storage account rsvault serves; a restore account
            // stands for its own root, any other for the first root.
            let account = p.get("storageAccountId").and_then(Value::as_str).or_else(|| {
                p.pointer("/identityBasedRestoreDetails/targetStorageAccountId")
                    .and_then(Value::as_str)
            });
            let root = svc.restore_root_for(account)?;
            let rg = p
                .get("targetResourceGroupId")
                .and_then(Value::as_str)
                .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
                .unwrap_or("restores")
                .to_string();
            let rel = format!("{rg}/{}-{}", src.friendly_name, rp.id);
            let target = confined_in(svc, root, &rel)?;
            let kind = if rt.eq_ignore_ascii_case("restoredisks") { "RestoreDisks" } else { "AlternateLocation" };
            Ok((disks, target, rsvault_types::job::Conflict::Fail, kind.into()))
        }
        _ => Err(ArmError::invalid(format!(
            "recoveryType '{rt}' is invalid for a VM; allowed: OriginalLocation, AlternateLocation, RestoreDisks."
        ))
        .with_target("properties.recoveryType")),
    }
}

fn share_plan(svc: &Service, p: &Value, rt: &str, src: &SourceInfo) -> ArmResult<Plan> {
    let copy = p
        .get("copyOptions")
        .and_then(Value::as_str)
        .unwrap_or("Overwrite");
    let conflict = match copy.to_ascii_lowercase().as_str() {
        "overwrite" => rsvault_types::job::Conflict::Overwrite,
        "skip" => rsvault_types::job::Conflict::Skip,
        "failonconflict" => rsvault_types::job::Conflict::Fail,
        _ => {
            return Err(ArmError::invalid(format!(
                "copyOptions '{copy}' is not supported; use Overwrite, Skip or FailOnConflict."
            ))
            .with_target("properties.copyOptions"))
        }
    };
    let req_type = p
        .get("restoreRequestType")
        .and_then(Value::as_str)
        .unwrap_or("FullShareRestore");
    let specs = match p.get("restoreFileSpecs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ArmError::invalid(
            "restoreFileSpecs must be a list of {path, fileSpecType, targetFolderPath} objects.",
        )
        .with_target("properties.restoreFileSpecs")),
    };
    let mut paths = Vec::new();
    let mut folder: Option<String> = None;
    let item_level = match req_type.to_ascii_lowercase().as_str() {
        "fullsharerestore" => false,
        "itemlevelrestore" => true,
        _ => {
            return Err(ArmError::invalid(format!(
                "restoreRequestType '{req_type}' is invalid; allowed: FullShareRestore, ItemLevelRestore."
            ))
            .with_target("properties.restoreRequestType"))
        }
    };
    if item_level && specs.is_empty() {
        return Err(ArmError::invalid(
            "ItemLevelRestore needs at least one restoreFileSpecs entry.",
        )
        .with_target("properties.restoreFileSpecs"));
    }
    // A full-share restore may carry one spec too, for its targetFolderPath (az CLI's
    // `restore-azurefileshare --target-folder`).
    for s in &specs {
        if item_level {
            let path = s.get("path").and_then(Value::as_str).ok_or_else(|| {
                ArmError::invalid("Each restoreFileSpecs entry needs a 'path'.")
                    .with_target("properties.restoreFileSpecs")
            })?;
            paths.push(relative_clean(path, "restoreFileSpecs.path")?);
        }
        if let Some(f) = s
            .get("targetFolderPath")
            .and_then(Value::as_str)
            .filter(|f| !f.trim().is_empty())
        {
            let f = relative_clean(f, "restoreFileSpecs.targetFolderPath")?;
            if folder.as_ref().is_some_and(|x| x != &f) {
                return Err(ArmError::invalid(
                    "All restoreFileSpecs of one request must share one targetFolderPath.",
                ));
            }
            folder = Some(f);
        }
    }
    match rt.to_ascii_lowercase().as_str() {
        "originallocation" => {
            if folder.is_some() {
                return Err(ArmError::invalid("targetFolderPath is only allowed with AlternateLocation."));
            }
            Ok((paths, src.paths[0].clone(), conflict, "OriginalLocation".into()))
        }
        "alternatelocation" => {
            let name = p
                .get("targetDetails")
                .and_then(|t| t.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ArmError::invalid("AlternateLocation needs targetDetails.name (the target share or folder).")
                        .with_target("properties.targetDetails.name")
                })?;
            let root = svc.restore_root_for(
                p.pointer("/targetDetails/targetResourceId").and_then(Value::as_str),
            )?;
            let mut rel = name.to_string();
            if let Some(f) = folder {
                rel = format!("{}/{f}", rel.trim_end_matches('/'));
            }
            Ok((paths, confined_in(svc, root, &rel)?, conflict, "AlternateLocation".into()))
        }
        _ => Err(ArmError::invalid(format!(
            "recoveryType '{rt}' is invalid for a file share; allowed: OriginalLocation, AlternateLocation."
        ))
        .with_target("properties.recoveryType")),
    }
}

/// A relative path with no `..`, no root, no empty name; `/` separated.
fn relative_clean(p: &str, field: &str) -> ArmResult<String> {
    let trimmed = p.trim_start_matches(['/', '\\']).replace('\\', "/");
    let path = Path::new(&trimmed);
    let ok = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !ok || p.contains('\0') {
        return Err(ArmError::new(
            ArmCode::RestoreTargetInvalid,
            format!("{field} '{p}' is invalid: it must stay inside the share (no '..')."),
        )
        .with_target(field.to_string()));
    }
    Ok(trimmed.trim_end_matches('/').to_string())
}

/// Resolves `rel` (relative to the first restore root, or absolute below any root) and checks
/// that no existing ancestor escapes the root through a symlink.
/// A relative `rel` is taken below `root` (one of the restore roots; the first when `None`).
pub fn confined_in(svc: &Service, root: Option<PathBuf>, rel: &str) -> ArmResult<PathBuf> {
    let roots = &svc.config.restore_roots;
    if roots.is_empty() {
        return Err(ArmError::new(
            ArmCode::RestoreTargetInvalid,
            "No restore_roots are configured, so alternate-location restores are disabled.",
        ));
    }
    let bad = |why: &str| {
        ArmError::new(
            ArmCode::RestoreTargetInvalid,
            format!("Restore target '{rel}' is invalid: {why}."),
        )
        .with_target("properties.targetDetails")
    };
    let p = Path::new(rel);
    if p.components().any(|c| matches!(c, Component::ParentDir)) || rel.contains('\0') {
        return Err(bad("'..' is not allowed"));
    }
    let (root, target) = if p.is_absolute() {
        let root = roots
            .iter()
            .find(|r| p.starts_with(r))
            .ok_or_else(|| bad("it is outside the configured restore roots"))?;
        (root.clone(), p.to_path_buf())
    } else {
        let base = root.unwrap_or_else(|| roots[0].clone());
        (base.clone(), base.join(p))
    };
    // Walk up to the deepest existing ancestor; its real path must stay under the root.
    let real_root = std::fs::canonicalize(&root).unwrap_or(root.clone());
    let mut probe = target.clone();
    loop {
        if let Ok(real) = std::fs::canonicalize(&probe) {
            if !real.starts_with(&real_root) {
                return Err(bad("it escapes the restore root through a symbolic link"));
            }
            break;
        }
        if !probe.pop() {
            break;
        }
    }
    Ok(target)
}
