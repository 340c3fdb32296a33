//! The neighbouring providers clients resolve before they call Recovery Services:
//! `Microsoft.Compute/virtualMachines/{vm}` and `Microsoft.Storage/storageAccounts/{account}` of
//! the configured sources (read-only), and the subscription-level
//! `Microsoft.RecoveryServices/locations/{region}/backupStatus`. Anything else under Compute,
//! Storage or ClassicStorage is a 404 `ResourceNotFound`.

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use serde_json::Value;

use crate::lookup::only;
use crate::{ok, Req};
use rsvault_jobs::service::Service;
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};

/// `…/resourceGroups/{rg}/providers/{provider}/{rest…}` for Microsoft.Compute, Microsoft.Storage
/// and Microsoft.ClassicStorage. `provider` and `rest` are lowercased; `orig` keeps the spelling.
pub fn provider(
    svc: &Arc<Service>,
    r: &Req,
    sub: &str,
    rg: &str,
    provider: &str,
    rest: &[&str],
    orig: &[String],
) -> ArmResult<Response> {
    only(&r.method, &[Method::GET])?;
    let found = match (provider, rest) {
        ("microsoft.compute", ["virtualmachines", _]) => match svc.vm_source(sub, rg, &orig[1]) {
            Some(s) => Some(svc.vm_wire(sub, &s)?),
            None => None,
        },
        ("microsoft.storage", ["storageaccounts", _]) => {
            match svc.storage_account(sub, rg, &orig[1]) {
                Some(a) => Some(svc.storage_account_wire(sub, &a)?),
                None => None,
            }
        }
        _ => None,
    };
    found.map(ok).ok_or_else(|| not_found(r, rg))
}

fn not_found(r: &Req, rg: &str) -> ArmError {
    // ARM's answer for a resource that does not exist, under any resource type.
    let ty = r.seg.get(5..).map(|s| s.join("/")).unwrap_or_default();
    ArmError::new(
        ArmCode::ResourceNotFound,
        format!(
            "The Resource '{ty}' under resource group '{rg}' was not found. rsvault serves only the virtual machines and storage accounts of its configuration."
        ),
    )
}

/// `POST /subscriptions/{sub}/providers/Microsoft.RecoveryServices/locations/{region}/backupStatus`
pub fn backup_status(svc: &Arc<Service>, r: &Req, sub: &str, region: &str) -> ArmResult<Response> {
    only(&r.method, &[Method::POST])?;
    let body = r.json()?;
    let field = |k: &str| body.get(k).and_then(Value::as_str);
    let resource_id = field("resourceId").ok_or_else(|| {
        ArmError::invalid("'resourceId' (the ARM id of the VM or storage account) is required.")
            .with_target("resourceId")
    })?;
    let resource_type = field("resourceType").unwrap_or("VM");
    Ok(ok(svc.backup_status(
        sub,
        region,
        resource_type,
        resource_id,
        field("poLogicalName"),
    )?))
}
