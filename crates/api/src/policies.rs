//! Backup policies: get, list, create or update, delete.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

use crate::lookup::{one_of, only, BMTS};
use crate::{filter, ok, Req};
use rsvault_jobs::service::{Service, K_POLICY};
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};
use rsvault_types::model::{Policy, Vault};

pub(crate) fn get_policy(svc: &Service, vault: &Vault, name: &str) -> ArmResult<Policy> {
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

pub(crate) fn list_policies(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
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

pub(crate) fn policy(svc: &Service, r: &Req, vault: &Vault, name: &str) -> ArmResult<Response> {
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
                rsvault_jobs::immutability::check_not_shortened(
                    vault,
                    &e.properties["retentionPolicy"],
                    &props["retentionPolicy"],
                    &format!("Changing policy '{}'", e.name),
                )?;
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
