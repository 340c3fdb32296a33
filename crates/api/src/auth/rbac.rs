//! Azure RBAC as ARM evaluates it: built-in role definitions (Azure's GUIDs and action lists),
//! role assignments at subscription, resource-group and vault scope, and the check "does any
//! assignment whose scope contains the resource grant the action" (wildcards, NotActions
//! subtract, case-insensitive).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use rsvault_jobs::service::Service;
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};

use super::Principal;

/// A role definition: Azure's built-ins, verbatim.
pub struct RoleDef {
    pub guid: String,
    pub body: Value,
    actions: Vec<String>,
    not_actions: Vec<String>,
}

impl RoleDef {
    pub fn name(&self) -> &str {
        self.body["properties"]["roleName"].as_str().unwrap_or("")
    }

    /// `Actions − NotActions` of this role allows `action` (compared ignoring case).
    pub fn allows(&self, action: &str) -> bool {
        let a = action.to_ascii_lowercase();
        self.actions.iter().any(|p| glob(p, &a)) && !self.not_actions.iter().any(|p| glob(p, &a))
    }

    /// The definition as RoleDefinitions_Get answers it, its `id` in the form of `scope_sub`
    /// (`/subscriptions/{sub}/providers/…`, as clients compare it) or the tenant form.
    pub fn wire(&self, scope_sub: Option<&str>) -> Value {
        let mut b = self.body.clone();
        b["id"] = json!(role_definition_id(scope_sub, &self.guid));
        b
    }
}

pub fn role_definition_id(sub: Option<&str>, guid: &str) -> String {
    match sub {
        Some(s) => {
            format!("/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{guid}")
        }
        None => format!("/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
    }
}

/// User Access Administrator is not in the backup roles file; its permissions as Microsoft Learn
/// publishes them ("Lets you manage user access to Azure resources").
const USER_ACCESS_ADMINISTRATOR: &str = r#"{"id": "/providers/Microsoft.Authorization/roleDefinitions/18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", "name": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", "type": "Microsoft.Authorization/roleDefinitions", "properties": {"roleName": "User Access Administrator", "type": "BuiltInRole", "description": "Lets you manage user access to Azure resources.", "assignableScopes": ["/"], "permissions": [{"actions": ["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"], "notActions": [], "dataActions": [], "notDataActions": []}]}}"#;

/// The built-in roles rsvault knows.
pub fn roles() -> &'static [RoleDef] {
    static ROLES: OnceLock<Vec<RoleDef>> = OnceLock::new();
    ROLES.get_or_init(|| {
        let file: Value = serde_json::from_str(include_str!("builtin-roles.json"))
            .expect("builtin-roles.json is JSON");
        let mut bodies: Vec<Value> = file["value"].as_array().cloned().unwrap_or_default();
        bodies.push(serde_json::from_str(USER_ACCESS_ADMINISTRATOR).expect("UAA is JSON"));
        bodies
            .into_iter()
            .map(|body| {
                let perms = body["properties"]["permissions"].as_array().cloned();
                let collect = |k: &str| -> Vec<String> {
                    perms
                        .iter()
                        .flatten()
                        .flat_map(|p| p[k].as_array().cloned().unwrap_or_default())
                        .filter_map(|a| a.as_str().map(str::to_ascii_lowercase))
                        .collect()
                };
                RoleDef {
                    guid: body["name"].as_str().unwrap_or("").to_ascii_lowercase(),
                    actions: collect("actions"),
                    not_actions: collect("notActions"),
                    body,
                }
            })
            .collect()
    })
}

/// The role whose GUID ends `id` (any of the id forms clients send, or a bare GUID).
pub fn role_by_id(id: &str) -> Option<&'static RoleDef> {
    let guid = id.trim_end_matches('/').rsplit('/').next()?;
    roles().iter().find(|r| r.guid.eq_ignore_ascii_case(guid))
}

/// ARM's action patterns: `*` matches any run of characters, `/` included. Both sides lowercase.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A role assignment as stored (docs kind [`K_ASSIGNMENT`], key = name, parent = principal).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub name: String,
    /// `/subscriptions/…`, as the client spelled it, without a trailing slash.
    pub scope: String,
    /// The role's GUID, lowercase.
    pub role: String,
    pub principal_id: String,
    pub principal_type: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub condition_version: Option<String>,
    pub created_on: String,
    pub updated_on: String,
    pub created_by: String,
    pub updated_by: String,
}

pub const K_ASSIGNMENT: &str = "roleAssignment";

impl Assignment {
    pub fn id(&self) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}",
            self.scope, self.name
        )
    }

    pub fn wire(&self) -> Value {
        let sub = scope_subscription(&self.scope);
        json!({
            "id": self.id(),
            "name": self.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": role_definition_id(sub.as_deref(), &self.role),
                "principalId": self.principal_id,
                "principalType": self.principal_type,
                "scope": self.scope,
                "description": self.description,
                "condition": self.condition,
                "conditionVersion": self.condition_version,
                "createdOn": self.created_on,
                "updatedOn": self.updated_on,
                "createdBy": self.created_by,
                "updatedBy": self.updated_by,
                "delegatedManagedIdentityResourceId": null,
            }
        })
    }

    /// This assignment applies to `resource` (its scope is the resource or one of its parents).
    pub fn covers(&self, resource: &str) -> bool {
        scope_contains(&self.scope, resource)
    }
}

/// The subscription id of a scope (`/subscriptions/{sub}/…`).
pub fn scope_subscription(scope: &str) -> Option<String> {
    let mut it = scope.split('/').filter(|s| !s.is_empty());
    match (it.next(), it.next()) {
        (Some(k), Some(s)) if k.eq_ignore_ascii_case("subscriptions") => Some(s.to_string()),
        _ => None,
    }
}

/// `scope` is `resource` or one of its ancestors (ARM ids compare ignoring case).
pub fn scope_contains(scope: &str, resource: &str) -> bool {
    let s = scope.trim_end_matches('/').to_ascii_lowercase();
    let r = resource.trim_end_matches('/').to_ascii_lowercase();
    s.is_empty() || r == s || (r.starts_with(&s) && r.as_bytes()[s.len()] == b'/')
}

/// Every assignment of `principal` (none for the admin, who needs none).
pub fn assignments_of(svc: &Service, principal_id: &str) -> ArmResult<Vec<Assignment>> {
    Ok(svc
        .store
        .read_one(|tx| tx.list(K_ASSIGNMENT, "", Some(&principal_id.to_ascii_lowercase())))?)
}

pub fn all_assignments(svc: &Service) -> ArmResult<Vec<Assignment>> {
    Ok(svc.store.read(|tx| tx.list(K_ASSIGNMENT, "", None))?)
}

/// What a caller may do: its assignments, as of this request.
pub struct Grants {
    admin: bool,
    assignments: std::sync::Arc<Vec<Assignment>>,
}

impl Grants {
    pub fn load(auth: &super::Auth, svc: &Service, p: &Principal) -> ArmResult<Self> {
        Ok(match p {
            Principal::Admin => Self {
                admin: true,
                assignments: Default::default(),
            },
            Principal::User(u) => Self {
                admin: false,
                assignments: auth.assignments_of(svc, &u.oid)?,
            },
        })
    }

    /// Some assignment whose scope contains `resource` grants `action`.
    pub fn allows(&self, action: &str, resource: &str) -> bool {
        self.admin
            || self.assignments.iter().any(|a| {
                a.covers(resource) && role_by_id(&a.role).is_some_and(|r| r.allows(action))
            })
    }

    /// The role names that granted `action` on `resource` (for the activity log).
    pub fn granting_role(&self, action: &str, resource: &str) -> Option<String> {
        self.assignments
            .iter()
            .filter(|a| a.covers(resource))
            .filter_map(|a| role_by_id(&a.role))
            .find(|r| r.allows(action))
            .map(|r| r.name().to_string())
    }
}

/// 403 `AuthorizationFailed`, worded as ARM words it.
pub fn denied(p: &Principal, action: &str, scope: &str) -> ArmError {
    let (display, oid) = match p {
        Principal::Admin => ("admin".to_string(), "admin".to_string()),
        Principal::User(u) => (u.display_name(), u.oid.clone()),
    };
    ArmError::new(
        ArmCode::AuthorizationFailed,
        format!(
            "The client '{display}' with object id '{oid}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> &'static RoleDef {
        roles().iter().find(|r| r.name() == name).unwrap()
    }

    const V: &str = "Microsoft.RecoveryServices/Vaults";

    #[test]
    fn the_readme_table_holds() {
        let item = format!("{V}/backupFabrics/protectionContainers/protectedItems");
        // (action, Owner, Contributor, Reader, Backup Contributor, Backup Operator, Backup Reader)
        let table: Vec<(String, [bool; 6])> = vec![
            (format!("{V}/read"), [true; 6]),
            (
                format!("{V}/write"),
                [true, true, false, true, false, false],
            ),
            (
                format!("{V}/delete"),
                [true, true, false, false, false, false],
            ),
            (format!("{V}/backupJobs/read"), [true; 6]),
            (
                format!("{V}/backupJobs/cancel/action"),
                [true, true, false, true, true, false],
            ),
            (
                format!("{V}/backupJobsExport/action"),
                [true, true, false, true, true, true],
            ),
            (
                format!("{item}/backup/action"),
                [true, true, false, true, true, false],
            ),
            (
                format!("{item}/recoveryPoints/restore/action"),
                [true, true, false, true, true, false],
            ),
            (
                format!("{item}/write"),
                [true, true, false, true, true, false],
            ),
            (
                format!("{item}/delete"),
                [true, true, false, true, false, false],
            ),
            (
                format!("{V}/backupPolicies/write"),
                [true, true, false, true, false, false],
            ),
            (format!("{V}/backupOperations/read"), [true; 6]),
            (
                "Microsoft.Authorization/roleAssignments/write".into(),
                [true, false, false, false, false, false],
            ),
            (
                "Microsoft.Authorization/roleAssignments/read".into(),
                [true; 6],
            ),
            (
                "Microsoft.Insights/eventtypes/values/read".into(),
                [true, true, true, false, false, false],
            ),
        ];
        let names = [
            "Owner",
            "Contributor",
            "Reader",
            "Backup Contributor",
            "Backup Operator",
            "Backup Reader",
        ];
        for (action, expect) in table {
            for (name, want) in names.iter().zip(expect) {
                // Case must not matter, in either direction.
                assert_eq!(role(name).allows(&action), want, "{name} {action}");
                assert_eq!(
                    role(name).allows(&action.to_ascii_uppercase()),
                    want,
                    "{name} {action}"
                );
            }
        }
        assert!(role("User Access Administrator")
            .allows("Microsoft.Authorization/roleAssignments/write"));
        assert!(!role("User Access Administrator").allows(&format!("{V}/write")));
    }

    #[test]
    fn wildcards_span_slashes_and_scopes_nest() {
        assert!(glob("*", "a/b/c"));
        assert!(glob("*/read", "microsoft.x/y/z/read"));
        assert!(!glob("*/read", "microsoft.x/y/z/write"));
        assert!(glob(
            "microsoft.authorization/*/read",
            "microsoft.authorization/roleassignments/read"
        ));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxcyyb"));
        assert!(!glob("ab*ba", "aba"));
        assert!(scope_contains(
            "/subscriptions/S",
            "/subscriptions/s/resourceGroups/rg"
        ));
        assert!(!scope_contains(
            "/subscriptions/s",
            "/subscriptions/s2/resourceGroups/rg"
        ));
        assert!(!scope_contains(
            "/subscriptions/s/resourceGroups/rg",
            "/subscriptions/s"
        ));
        assert!(role_by_id("/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/A795C7A0-D4A2-40C1-AE25-D81F01202912").is_some());
    }
}
