//! Vaults: list, create or update (PUT/PATCH), with their names, SKU, tags, identity and security
//! settings checked.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{json, Value};

use crate::{ok, Req};
use rsvault_jobs::service::{Service, K_POLICY};
use rsvault_jobs::soft_delete;
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};
use rsvault_types::model::{Policy, Vault, VaultRef};

pub(crate) fn list_vaults(
    svc: &Service,
    r: &Req,
    sub: &str,
    rg: Option<&str>,
) -> ArmResult<Response> {
    let vaults = svc.list_vaults(sub, rg)?;
    // As ARM lists: only the vaults the caller may read.
    let v: Vec<Value> = vaults
        .iter()
        .filter(|v| {
            r.grants
                .allows("Microsoft.RecoveryServices/vaults/read", &v.vault.id())
        })
        .map(|v| soft_delete::vault_wire(v, &svc.config.retention))
        .collect();
    Ok(ok(json!({"value": v})))
}

pub(crate) fn put_vault(svc: &Service, r: &Req, v: VaultRef) -> ArmResult<Response> {
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
                if k == "provisioningState" {
                    continue;
                }
                if is_patch {
                    merge(&mut props[k], val);
                } else {
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
    rsvault_jobs::immutability::check_settings(existing.as_ref(), &mut props, is_patch)?;
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
    Ok((
        status,
        axum::Json(soft_delete::vault_wire(&vault, &svc.config.retention)),
    )
        .into_response())
}

/// A PATCH's properties merged into the vault's: objects key by key (so a PATCH of one security
/// setting keeps the others), anything else replaced.
fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (into, patch) => *into = patch.clone(),
    }
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
