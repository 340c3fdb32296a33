//! Shared by the handler modules: the method check and the lookups of an item and a recovery
//! point that answer with Azure's not-found codes.

use axum::http::Method;

use crate::{filter, Req};
use rsvault_jobs::service::Service;
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};
use rsvault_types::model::{self, Item, Vault, Workload};

pub(crate) fn only(m: &Method, allowed: &[Method]) -> ArmResult<()> {
    if allowed.contains(m) {
        Ok(())
    } else {
        let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        Err(ArmError::new(
            ArmCode::MethodNotAllowed,
            format!(
                "The method {m} is not allowed here; use {}.",
                names.join(" or ")
            ),
        ))
    }
}

pub fn find_item(svc: &Service, vault: &Vault, container: &str, item: &str) -> ArmResult<Item> {
    let key = model::item_key(container, item);
    svc.get_item(vault, &key)?.ok_or_else(|| {
        ArmError::new(
            ArmCode::ItemNotFound,
            format!("Item '{item}' in container '{container}' is not protected in vault '{}' (it may have been deleted).", vault.vault.name),
        )
    })
}

pub(crate) fn find_rp(
    svc: &Service,
    vault: &Vault,
    it: &Item,
    rp: &str,
) -> ArmResult<model::RecoveryPoint> {
    svc.recovery_points(vault, &it.key())?
        .into_iter()
        .find(|p| p.id == rp)
        .ok_or_else(|| {
            ArmError::new(
                ArmCode::RecoveryPointNotFound,
                format!("Recovery point '{rp}' of item '{}' was not found.", it.name),
            )
        })
}

pub fn bmt_filter(r: &Req, allowed: &[&str]) -> ArmResult<Vec<(String, String)>> {
    match r.q("$filter") {
        Some(f) => filter::parse(f, allowed),
        None => Ok(vec![]),
    }
}

pub fn workload_of_bmt(v: &str) -> ArmResult<Option<Workload>> {
    match one_of("backupManagementType", v, BMTS)?.as_str() {
        "AzureIaasVM" => Ok(Some(Workload::Vm)),
        "AzureStorage" => Ok(Some(Workload::FileShare)),
        _ => Ok(None),
    }
}

/// The `backupManagementType` a discovery list is filtered to: `None` when unfiltered,
/// `Some(None)` for a valid type rsvault has no sources of.
pub fn wanted_workload(r: &Req, allowed: &[&str]) -> ArmResult<Option<Option<Workload>>> {
    let mut want = None;
    for (k, v) in bmt_filter(r, allowed)? {
        if k == "backupmanagementtype" {
            want = Some(workload_of_bmt(&v)?);
        }
    }
    Ok(want)
}

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

pub fn one_of(field: &str, v: &str, allowed: &[&str]) -> ArmResult<String> {
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
