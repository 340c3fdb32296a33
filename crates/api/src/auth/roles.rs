//! `Microsoft.Authorization` (api-version 2022-04-01): role assignments at subscription,
//! resource-group and vault scope, and the built-in role definitions.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::rbac::{self, Assignment, K_ASSIGNMENT};
use super::Principal;
use crate::{no_content, ok, Req};
use rsvault_jobs::service::Service;
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};

/// Handles a path `{scope}/providers/Microsoft.Authorization/{roleAssignments|roleDefinitions}[/{name}]`.
pub fn route(svc: &Service, r: &Req, who: &Principal) -> ArmResult<Response> {
    let i = r
        .seg
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("microsoft.authorization"))
        .filter(|i| *i > 0)
        .ok_or_else(|| ArmError::new(ArmCode::PathNotFound, "Not an authorization path."))?;
    let scope = format!("/{}", r.seg[..i - 1].join("/"));
    let tail: Vec<&str> = r.seg[i + 1..].iter().map(String::as_str).collect();
    let kind = tail[0].to_ascii_lowercase();
    match (kind.as_str(), tail.get(1), &r.method) {
        ("roleassignments", None, &Method::GET) => list_assignments(svc, r, &scope),
        ("roleassignments", Some(name), &Method::GET) => {
            let a = find(svc, &scope, name)?.ok_or_else(|| {
                ArmError::new(
                    ArmCode::RoleAssignmentNotFound,
                    format!("The role assignment '{name}' is not found."),
                )
            })?;
            Ok(ok(a.wire()))
        }
        ("roleassignments", Some(name), &Method::PUT) => put_assignment(svc, r, who, &scope, name),
        ("roleassignments", Some(name), &Method::DELETE) => match find(svc, &scope, name)? {
            None => Ok(no_content()),
            Some(a) => {
                svc.store
                    .tx(|tx| tx.delete(K_ASSIGNMENT, "", &a.name.to_ascii_lowercase()))?;
                Ok(ok(a.wire()))
            }
        },
        ("roledefinitions", None, &Method::GET) => list_definitions(r, &scope),
        ("roledefinitions", Some(id), &Method::GET) => {
            let def = rbac::role_by_id(id).ok_or_else(|| unknown_role(id))?;
            Ok(ok(def.wire(rbac::scope_subscription(&scope).as_deref())))
        }
        _ => Err(ArmError::new(
            ArmCode::MethodNotAllowed,
            format!("The method {} is not allowed here.", r.method),
        )),
    }
}

fn unknown_role(id: &str) -> ArmError {
    let guid = id.rsplit('/').next().unwrap_or(id);
    ArmError::new(
        ArmCode::RoleDefinitionDoesNotExist,
        format!("The specified role definition with ID '{guid}' does not exist."),
    )
}

/// The assignment `name` if it lives at `scope` (ARM ids compare ignoring case).
fn find(svc: &Service, scope: &str, name: &str) -> ArmResult<Option<Assignment>> {
    let a: Option<Assignment> = svc
        .store
        .read(|tx| tx.get(K_ASSIGNMENT, "", &name.to_ascii_lowercase()))?;
    Ok(a.filter(|a| a.scope.eq_ignore_ascii_case(scope.trim_end_matches('/'))))
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

fn put_assignment(
    svc: &Service,
    r: &Req,
    who: &Principal,
    scope: &str,
    name: &str,
) -> ArmResult<Response> {
    if !is_guid(name) {
        return Err(ArmError::new(
            ArmCode::InvalidRoleAssignmentId,
            format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
        ));
    }
    let body = r.json()?;
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| ArmError::invalid("'properties' is required.").with_target("properties"))?;
    let text = |k: &str| -> ArmResult<Option<String>> {
        match props.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(
                ArmError::invalid(format!("'properties.{k}' must be a string."))
                    .with_target(format!("properties.{k}")),
            ),
        }
    };
    let role_id = text("roleDefinitionId")?.ok_or_else(|| {
        ArmError::invalid("'properties.roleDefinitionId' is required.")
            .with_target("properties.roleDefinitionId")
    })?;
    let principal = text("principalId")?
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| {
            ArmError::invalid("'properties.principalId' is required.")
                .with_target("properties.principalId")
        })?;
    if principal.len() > 256 || principal.chars().any(char::is_control) {
        return Err(ArmError::invalid(
            "'properties.principalId' must be 1 to 256 printable characters.",
        )
        .with_target("properties.principalId"));
    }
    let principal_type = text("principalType")?.unwrap_or_else(|| "User".into());
    if ![
        "User",
        "Group",
        "ServicePrincipal",
        "ForeignGroup",
        "Device",
    ]
    .iter()
    .any(|t| t.eq_ignore_ascii_case(&principal_type))
    {
        return Err(ArmError::invalid(format!(
            "principalType '{principal_type}' is invalid; allowed: User, Group, ServicePrincipal, ForeignGroup, Device."
        ))
        .with_target("properties.principalType"));
    }
    let role = rbac::role_by_id(&role_id).ok_or_else(|| unknown_role(&role_id))?;
    let scope = scope.trim_end_matches('/').to_string();
    let now = arm::time(chrono::Utc::now());
    let by = match who {
        Principal::Admin => "admin".to_string(),
        Principal::User(u) => u.oid.clone(),
    };
    let key = name.to_ascii_lowercase();
    let created = svc.store.tx(|tx| {
        let existing: Option<Assignment> = tx.get(K_ASSIGNMENT, "", &key)?;
        if let Some(e) = &existing {
            if !e.scope.eq_ignore_ascii_case(&scope) || !e.principal_id.eq_ignore_ascii_case(&principal) {
                return Ok(Err(ArmError::new(
                    ArmCode::RoleAssignmentUpdateNotPermitted,
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                )));
            }
        }
        let same: Vec<Assignment> =
            tx.list(K_ASSIGNMENT, "", Some(&principal.to_ascii_lowercase()))?;
        if let Some(d) = same.iter().find(|a| {
            !a.name.eq_ignore_ascii_case(name)
                && a.scope.eq_ignore_ascii_case(&scope)
                && a.role == role.guid
        }) {
            return Ok(Err(ArmError::new(
                ArmCode::RoleAssignmentExists,
                format!(
                    "The role assignment already exists. The ID of the existing role assignment is {}.",
                    d.name.replace('-', "")
                ),
            )));
        }
        let a = Assignment {
            name: name.to_string(),
            scope: scope.clone(),
            role: role.guid.clone(),
            principal_id: principal.clone(),
            principal_type: principal_type.clone(),
            description: text("description").ok().flatten(),
            condition: text("condition").ok().flatten(),
            condition_version: text("conditionVersion").ok().flatten(),
            created_on: existing.as_ref().map_or(now.clone(), |e| e.created_on.clone()),
            updated_on: now.clone(),
            created_by: existing.as_ref().map_or(by.clone(), |e| e.created_by.clone()),
            updated_by: by.clone(),
        };
        tx.put(K_ASSIGNMENT, "", &key, &principal.to_ascii_lowercase(), &a)?;
        Ok(Ok((a, existing.is_none())))
    })??;
    let (a, new) = created;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(a.wire())).into_response())
}

/// `$filter` of RoleAssignments_List*: `atScope()`, `principalId eq '…'`, `assignedTo('…')`,
/// joined by `and`.
struct AssignmentFilter {
    at_scope: bool,
    principal: Option<String>,
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('\'').trim_matches('"')
}

fn assignment_filter(f: Option<&str>) -> ArmResult<AssignmentFilter> {
    let mut out = AssignmentFilter {
        at_scope: false,
        principal: None,
    };
    let Some(f) = f.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(out);
    };
    let lower = f.to_ascii_lowercase();
    let mut rest = f;
    let mut rest_l = lower.as_str();
    loop {
        let (clause, clause_l, next, next_l) = match rest_l.find(" and ") {
            Some(i) => (&rest[..i], &rest_l[..i], &rest[i + 5..], &rest_l[i + 5..]),
            None => (rest, rest_l, "", ""),
        };
        let c = clause.trim();
        let cl = clause_l.trim();
        if cl.replace(' ', "") == "atscope()" {
            out.at_scope = true;
        } else if let Some(v) = cl.strip_prefix("principalid eq ") {
            let _ = v;
            out.principal = Some(unquote(&c["principalid eq ".len()..]).to_string());
        } else if cl.starts_with("assignedto(") && cl.ends_with(')') {
            out.principal = Some(unquote(&c["assignedto(".len()..c.len() - 1]).to_string());
        } else {
            return Err(ArmError::new(
                ArmCode::InvalidFilter,
                format!("The filter clause '{c}' is not supported; use atScope(), principalId eq '{{id}}' or assignedTo('{{id}}'), joined by 'and'."),
            )
            .with_target("$filter"));
        }
        if next.is_empty() {
            break;
        }
        rest = next;
        rest_l = next_l;
    }
    Ok(out)
}

fn list_assignments(svc: &Service, r: &Req, scope: &str) -> ArmResult<Response> {
    let f = assignment_filter(r.q("$filter"))?;
    let all = match &f.principal {
        Some(p) => rbac::assignments_of(svc, p)?,
        None => rbac::all_assignments(svc)?,
    };
    let value: Vec<Value> = all
        .iter()
        .filter(|a| {
            // Above or at the scope (inherited); below it unless atScope().
            rbac::scope_contains(&a.scope, scope)
                || (!f.at_scope && rbac::scope_contains(scope, &a.scope))
        })
        .map(Assignment::wire)
        .collect();
    Ok(ok(json!({"value": value})))
}

fn list_definitions(r: &Req, scope: &str) -> ArmResult<Response> {
    let mut name = None;
    let mut ty = None;
    if let Some(f) = r.q("$filter").map(str::trim).filter(|f| !f.is_empty()) {
        for clause in f.split(" and ") {
            let c = clause.trim();
            let cl = c.to_ascii_lowercase();
            if let Some(v) = cl.strip_prefix("rolename eq ") {
                let _ = v;
                name = Some(unquote(&c["rolename eq ".len()..]).to_string());
            } else if cl.strip_prefix("type eq ").is_some() {
                ty = Some(unquote(&c["type eq ".len()..]).to_string());
            } else if cl.replace(' ', "") != "atscopeandbelow()" {
                return Err(ArmError::new(
                    ArmCode::InvalidFilter,
                    format!("The filter clause '{c}' is not supported; use roleName eq '…' or type eq '…'."),
                )
                .with_target("$filter"));
            }
        }
    }
    let sub = rbac::scope_subscription(scope);
    let value: Vec<Value> = rbac::roles()
        .iter()
        .filter(|d| {
            name.as_ref()
                .is_none_or(|n| d.name().eq_ignore_ascii_case(n))
        })
        .filter(|d| {
            ty.as_ref().is_none_or(|t| {
                d.body["properties"]["type"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(t))
            })
        })
        .map(|d| d.wire(sub.as_deref()))
        .collect();
    Ok(ok(json!({"value": value})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_filters_parse_as_clients_send_them() {
        let f = assignment_filter(Some("atScope() and assignedTo('abc')")).unwrap();
        assert!(f.at_scope);
        assert_eq!(f.principal.as_deref(), Some("abc"));
        let f = assignment_filter(Some("principalId eq 'X-Y'")).unwrap();
        assert!(!f.at_scope);
        assert_eq!(f.principal.as_deref(), Some("X-Y"));
        assert!(assignment_filter(Some("roleName eq 'x'")).is_err());
    }
}
