//! `GET /openapi.json`: an OpenAPI 3.0 description of what rsvault serves, generated from the
//! route table below. The same table gates the dispatcher: a request whose path and method are
//! not in it is answered 404/405 before any handler runs ([`find`]), so the server cannot serve a
//! route the document does not list; and a test sends every listed operation, so the document
//! cannot list a route the server does not answer.

use serde_json::{json, Map, Value};

pub use crate::route::{Model, Route};

const V: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.RecoveryServices/vaults/{vaultName}";
const RG: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers";
const CONTAINER: &str = "/backupFabrics/{fabricName}/protectionContainers/{containerName}";
const ITEM: &str = "/backupFabrics/{fabricName}/protectionContainers/{containerName}/protectedItems/{protectedItemName}";

macro_rules! r {
    ($m:literal, $p:expr, $id:literal, $ok:expr, $model:ident, $body:literal, $q:expr) => {
        Route {
            method: $m,
            path: $p,
            operation_id: $id,
            ok: $ok,
            model: Model::$model,
            body: $body,
            query: $q,
        }
    };
}

pub fn routes() -> Vec<Route> {
    let f: &[&str] = &["$filter"];
    let fs: &[&str] = &["$filter", "$skipToken"];
    let none: &[&str] = &[];
    let v = |s: &str| format!("{V}{s}");
    let it = |s: &str| format!("{V}{ITEM}{s}");
    let c = |s: &str| format!("{V}{CONTAINER}{s}");
    let rg = |s: &str| format!("{RG}{s}");
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut table = vec![
        r!("get", "/subscriptions/{subscriptionId}/providers/Microsoft.RecoveryServices/vaults", "Vaults_ListBySubscriptionId", &[200], VaultList, false, none),
        r!("get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.RecoveryServices/vaults", "Vaults_ListByResourceGroup", &[200], VaultList, false, none),
        r!("get", V, "Vaults_Get", &[200], Vault, false, none),
        r!("put", V, "Vaults_CreateOrUpdate", &[200, 201], Vault, true, none),
        r!("patch", V, "Vaults_Update", &[200], Vault, true, none),
        r!("delete", V, "Vaults_Delete", &[204], None, false, none),
        r!("get", leak(v("/backupJobs")), "BackupJobs_List", &[200], JobList, false, fs),
        r!("get", leak(v("/backupJobs/{jobName}")), "JobDetails_Get", &[200], Job, false, none),
        r!("post", leak(v("/backupJobs/{jobName}/cancel")), "JobCancellations_Trigger", &[202], None, false, none),
        r!("get", leak(v("/backupJobs/{jobName}/operationResults/{operationId}")), "JobOperationResults_Get", &[200, 202, 204], None, false, none),
        r!("post", leak(v("/backupJobsExport")), "Jobs_Export", &[202], None, false, f),
        r!("get", leak(v("/backupJobs/operationResults/{operationId}")), "ExportJobsOperationResults_Get", &[200, 202], ExportResult, false, none),
        r!("get", leak(v("/backupOperations/{operationId}")), "BackupOperationStatuses_Get", &[200], OperationStatus, false, none),
        r!("get", leak(v("/backupOperationResults/{operationId}")), "BackupOperationResults_Get", &[200, 202, 204], None, false, none),
        r!("get", leak(v("/operationStatus/{operationId}")), "Vaults_OperationStatus_Get", &[200], OperationStatus, false, none),
        r!("get", leak(v("/operationResults/{operationId}")), "Vaults_OperationResults_Get", &[200, 202, 204], None, false, none),
        r!("get", leak(v("/backupconfig/vaultconfig")), "BackupResourceVaultConfigs_Get", &[200], Resource, false, none),
        r!("put", leak(v("/backupconfig/vaultconfig")), "BackupResourceVaultConfigs_Put", &[200], Resource, true, none),
        r!("patch", leak(v("/backupconfig/vaultconfig")), "BackupResourceVaultConfigs_Update", &[200], Resource, true, none),
        r!("get", leak(v("/backupResourceGuardProxies")), "ResourceGuardProxies_Get", &[200], ResourceList, false, none),
        r!("get", leak(v("/backupEncryptionConfigs/backupResourceEncryptionConfig")), "BackupResourceEncryptionConfigs_Get", &[200], Resource, false, none),
        r!("get", leak(v("/backupstorageconfig/vaultstorageconfig")), "BackupResourceStorageConfigsNonCRR_Get", &[200], Resource, false, none),
        r!("put", leak(v("/backupstorageconfig/vaultstorageconfig")), "BackupResourceStorageConfigsNonCRR_Update", &[200], Resource, true, none),
        r!("patch", leak(v("/backupstorageconfig/vaultstorageconfig")), "BackupResourceStorageConfigsNonCRR_Patch", &[204], None, true, none),
        r!("get", leak(v("/backupUsageSummaries")), "BackupUsageSummaries_List", &[200], Object, false, f),
        r!("post", leak(v("/backupValidateOperation")), "Operation_Validate", &[200], Object, true, none),
        r!("post", leak(v("/backupTriggerValidateOperation")), "ValidateOperation_Trigger", &[202], None, true, none),
        r!("get", leak(v("/backupValidateOperationResults/{operationId}")), "ValidateOperationResults_Get", &[200], Object, false, none),
        r!("get", leak(v("/backupValidateOperationsStatuses/{operationId}")), "ValidateOperationStatuses_Get", &[200], OperationStatus, false, none),
        r!("post", "/subscriptions/{subscriptionId}/providers/Microsoft.RecoveryServices/locations/{azureRegion}/backupStatus", "BackupStatus_Get", &[200], Object, true, none),
        r!("get", leak(rg("/Microsoft.Compute/virtualMachines/{vmName}")), "VirtualMachines_Get", &[200], Object, false, none),
        r!("get", leak(rg("/Microsoft.Storage/storageAccounts/{accountName}")), "StorageAccounts_GetProperties", &[200], Object, false, none),
        r!("get", leak(v("/backupPolicies")), "BackupPolicies_List", &[200], ResourceList, false, f),
        r!("get", leak(v("/backupPolicies/{policyName}")), "ProtectionPolicies_Get", &[200], Resource, false, none),
        r!("get", leak(v("/backupPolicies/{policyName}/operationResults/{operationId}")), "ProtectionPolicyOperationResults_Get", &[200], Resource, false, none),
        r!("get", leak(v("/backupPolicies/{policyName}/operations/{operationId}")), "ProtectionPolicyOperationStatuses_Get", &[200], OperationStatus, false, none),
        r!("put", leak(v("/backupPolicies/{policyName}")), "ProtectionPolicies_CreateOrUpdate", &[200], Resource, true, none),
        r!("delete", leak(v("/backupPolicies/{policyName}")), "ProtectionPolicies_Delete", &[200], None, false, none),
        r!("get", leak(v("/backupProtectableItems")), "BackupProtectableItems_List", &[200], ResourceList, false, fs),
        r!("get", leak(v("/backupProtectedItems")), "BackupProtectedItems_List", &[200], ResourceList, false, fs),
        r!("get", leak(v("/backupProtectionContainers")), "BackupProtectionContainers_List", &[200], ResourceList, false, f),
        r!("post", leak(v("/backupFabrics/{fabricName}/refreshContainers")), "ProtectionContainers_Refresh", &[202], None, false, f),
        r!("get", leak(v("/backupFabrics/{fabricName}/operationResults/{operationId}")), "ProtectionContainerRefreshOperationResults_Get", &[202, 204], None, false, none),
        r!("get", leak(v("/backupFabrics/{fabricName}/protectionContainers/{containerName}")), "ProtectionContainers_Get", &[200], Resource, false, none),
        r!("put", leak(v("/backupFabrics/{fabricName}/protectionContainers/{containerName}")), "ProtectionContainers_Register", &[202], Resource, true, none),
        r!("delete", leak(c("")), "ProtectionContainers_Unregister", &[204], None, false, none),
        r!("post", leak(c("/inquire")), "ProtectionContainers_Inquire", &[202], None, false, f),
        r!("get", leak(c("/operationResults/{operationId}")), "ProtectionContainerOperationResults_Get", &[200], Resource, false, none),
        r!("get", leak(c("/operationsStatus/{operationId}")), "ProtectionContainerOperationStatuses_Get", &[200], OperationStatus, false, none),
        r!("get", leak(v("/backupFabrics/{fabricName}/protectableContainers")), "ProtectableContainers_List", &[200], ResourceList, false, f),
        r!("get", leak(it("")), "ProtectedItems_Get", &[200], Resource, false, f),
        r!("put", leak(it("")), "ProtectedItems_CreateOrUpdate", &[202], None, true, none),
        r!("delete", leak(it("")), "ProtectedItems_Delete", &[202], None, false, none),
        r!("get", leak(it("/operationResults/{operationId}")), "ProtectedItemOperationResults_Get", &[200, 202, 204], None, false, none),
        r!("get", leak(it("/operationsStatus/{operationId}")), "ProtectedItemOperationStatuses_Get", &[200], OperationStatus, false, none),
        r!("post", leak(it("/backup")), "Backups_Trigger", &[202], None, true, none),
        r!("get", leak(it("/recoveryPoints")), "RecoveryPoints_List", &[200], ResourceList, false, f),
        r!("get", leak(it("/recoveryPoints/{recoveryPointId}")), "RecoveryPoints_Get", &[200], Resource, false, none),
        r!("post", leak(it("/recoveryPoints/{recoveryPointId}/restore")), "Restores_Trigger", &[202], None, true, none),
        r!("post", leak(v("/rsvault/maintenance/{maintenanceOperation}")), "Rsvault_Maintenance", &[202], None, true, none),
        r!("get", leak(v("/rsvault/retentionPreview")), "Rsvault_RetentionPreview", &[200], Object, false, none),
        r!("get", leak(v("/rsvault/notifications")), "Rsvault_Notifications", &[200], Object, false, none),
        r!("get", leak(v("/backupJobs/{jobName}/rsvault/log")), "Rsvault_JobLog", &[200], Object, false, &["start", "limit"]),
    ];
    table.extend(crate::auth::routes());
    table
}

/// The ARM action a route performs (Azure's RBAC rule: the resource types of the path after its
/// last provider namespace, names dropped, then `read` / `write` / `delete`, or `{name}/action`
/// for a POST), except where Azure names the operation otherwise.
pub fn action(r: &Route) -> String {
    let fixed = match r.operation_id {
        "BackupEncryptionConfigs_Get" => {
            Some("Microsoft.RecoveryServices/Vaults/backupEncryptionConfigs/read")
        }
        "BackupResourceVaultConfigs_Get" => {
            Some("Microsoft.RecoveryServices/Vaults/backupconfig/read")
        }
        "BackupResourceStorageConfigsNonCRR_Get" => {
            Some("Microsoft.RecoveryServices/Vaults/backupstorageconfig/read")
        }
        "BackupResourceStorageConfigsNonCRR_Update"
        | "BackupResourceStorageConfigsNonCRR_Patch" => {
            Some("Microsoft.RecoveryServices/Vaults/backupstorageconfig/write")
        }
        "Rsvault_RetentionPreview" => Some("Microsoft.RecoveryServices/Vaults/backupPolicies/read"),
        // A job's log is part of the job; the vault's notifications are its monitoring feed.
        "Rsvault_JobLog" => Some("Microsoft.RecoveryServices/Vaults/backupJobs/read"),
        "Rsvault_Notifications" => {
            Some("Microsoft.RecoveryServices/Vaults/monitoringConfigurations/read")
        }
        "ActivityLogs_List" => Some("Microsoft.Insights/eventtypes/values/read"),
        _ => None,
    };
    if let Some(a) = fixed {
        return a.to_string();
    }
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    let start = segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))
        .map_or(0, |i| i + 1);
    let mut parts: Vec<&str> = segs[start..]
        .iter()
        .copied()
        .filter(|s| !s.starts_with('{'))
        .collect();
    match r.method {
        "get" => parts.push("read"),
        "put" | "patch" => parts.push("write"),
        "delete" => parts.push("delete"),
        _ => parts.push("action"),
    }
    parts.join("/")
}

/// The resource a request to route `r` at path `seg` acts on: the path, less the action name of
/// a POST (ARM's authorization scope).
pub fn scope(r: &Route, seg: &[String]) -> String {
    let tpl_last_is_literal = r
        .path
        .rsplit('/')
        .next()
        .is_some_and(|s| !s.starts_with('{'));
    let n = if r.method == "post" && tpl_last_is_literal && seg.len() > 1 {
        seg.len() - 1
    } else {
        seg.len()
    };
    format!("/{}", seg[..n].join("/"))
}

/// What the route table says about a request path.
pub enum Found<'a> {
    Route(&'a Route),
    /// The path is served, with other methods.
    OtherMethods(Vec<&'static str>),
    NotFound,
}

/// Finds the route of `method` and `seg` (percent-decoded path segments): literal segments compare
/// case-insensitively, `{…}` matches any one segment.
pub fn find<'a>(table: &'a [Route], method: &str, seg: &[String]) -> Found<'a> {
    let mut methods = Vec::new();
    for r in table {
        let tpl: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
        let same = tpl.len() == seg.len()
            && tpl.iter().zip(seg).all(|(t, s)| {
                (t.starts_with('{') && t.ends_with('}')) || t.eq_ignore_ascii_case(s)
            });
        if same {
            if r.method.eq_ignore_ascii_case(method) {
                return Found::Route(r);
            }
            methods.push(r.method);
        }
    }
    if methods.is_empty() {
        Found::NotFound
    } else {
        Found::OtherMethods(methods)
    }
}

/// The route table, built once.
pub fn table() -> &'static [Route] {
    static TABLE: std::sync::OnceLock<Vec<Route>> = std::sync::OnceLock::new();
    TABLE.get_or_init(routes)
}

fn schemas() -> Value {
    let error = json!({"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "target": {"type": "string", "nullable": true}}}}});
    let resource = json!({"type": "object", "required": ["id", "name", "type", "properties"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"}, "properties": {"type": "object"}}});
    let job_status = [
        "InProgress",
        "Completed",
        "CompletedWithWarnings",
        "Failed",
        "Cancelling",
        "Cancelled",
    ];
    let job = json!({"type": "object", "required": ["id", "name", "type", "properties"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string", "enum": ["Microsoft.RecoveryServices/vaults/backupJobs"]},
        "properties": {"type": "object", "required": ["jobType", "status", "operation", "startTime"], "properties": {
            "jobType": {"type": "string", "enum": ["AzureIaaSVMJob", "AzureStorageJob", "VaultJob"]},
            "status": {"type": "string", "enum": job_status},
            "operation": {"type": "string"},
            "startTime": {"type": "string", "format": "date-time"},
            "endTime": {"type": "string", "format": "date-time"},
            "duration": {"type": "string"},
            "actionsInfo": {"type": "array", "items": {"type": "string", "enum": ["Cancellable"]}}}}}});
    let list = |item: &str| {
        json!({"type": "object", "required": ["value"], "properties": {
        "value": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "nextLink": {"type": "string"}}})
    };
    json!({
        "Error": error,
        "Resource": resource,
        "ResourceList": list("Resource"),
        "Vault": {"type": "object", "required": ["id", "name", "type", "location", "properties"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"}, "location": {"type": "string"},
            "etag": {"type": "string"}, "properties": {"type": "object"}, "sku": {"type": "object"}, "tags": {"type": "object"}}},
        "VaultList": list("Vault"),
        "Job": job,
        "JobList": list("Job"),
        "OperationStatus": {"type": "object", "required": ["id", "name", "status"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "status": {"type": "string", "enum": ["InProgress", "Succeeded", "Failed", "Canceled"]},
            "startTime": {"type": "string", "format": "date-time"}, "endTime": {"type": "string", "format": "date-time"}}},
        "ExportResult": {"type": "object", "required": ["operation"], "properties": {"operation": {"type": "object",
            "required": ["objectType"], "properties": {"objectType": {"type": "string", "enum": ["ExportJobsOperationResultInfo"]}}}}},
        "Object": {"type": "object"},
    })
}

fn model_name(m: Model) -> Option<&'static str> {
    match m {
        Model::None => None,
        Model::Vault => Some("Vault"),
        Model::VaultList => Some("VaultList"),
        Model::Job => Some("Job"),
        Model::JobList => Some("JobList"),
        Model::OperationStatus => Some("OperationStatus"),
        Model::Resource => Some("Resource"),
        Model::ResourceList => Some("ResourceList"),
        Model::ExportResult => Some("ExportResult"),
        Model::Object => Some("Object"),
    }
}

pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in routes() {
        let mut params = vec![
            json!({"name": "api-version", "in": "query", "required": true,
            "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}(-[A-Za-z0-9]+)?$"}, "example": "2026-02-01"}),
        ];
        for seg in r.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}));
            }
        }
        for q in r.query {
            params.push(
                json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}),
            );
        }
        let mut responses = Map::new();
        for code in r.ok {
            let mut resp = json!({"description": "success"});
            if let Some(m) = model_name(r.model)
                .filter(|_| {
                    *code != 202 || matches!(r.model, Model::ExportResult | Model::Resource)
                })
                .filter(|_| *code != 204)
            {
                resp["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{m}")}}});
            }
            responses.insert(code.to_string(), resp);
        }
        responses.insert(
            "default".into(),
            json!({"description": "ARM error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
        let mut op = json!({"operationId": r.operation_id, "parameters": params, "responses": responses,
            "x-ms-action": action(&r)});
        if r.body {
            op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "rsvault", "version": env!("CARGO_PKG_VERSION"),
            "description": "The Azure Backup (Recovery Services) operations rsvault serves, plus rsvault extensions under /rsvault/."},
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas()},
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn every_route_finds_itself_and_nothing_else_matches() {
        let t = table();
        for r in t {
            match find(t, r.method, &segs(r.path)) {
                Found::Route(x) => assert_eq!(x.operation_id, r.operation_id, "{}", r.path),
                _ => panic!("{} {} does not find itself", r.method, r.path),
            }
            let longer = format!("{}/no-such/thing", r.path);
            assert!(
                matches!(find(t, r.method, &segs(&longer)), Found::NotFound),
                "{longer}"
            );
        }
        let vault = segs(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v",
        );
        assert!(matches!(find(t, "post", &vault), Found::OtherMethods(m) if m.contains(&"get")));
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut ids: Vec<&str> = table().iter().map(|r| r.operation_id).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
