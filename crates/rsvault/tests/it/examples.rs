//! Example replay (issue 4, item 2): every example in `tests/azure-spec/**/examples/` for an
//! operation rsvault implements is replayed against the real server, adapted to the test data
//! (vm `rg1/vm1`, file share `rg1/acct1/share1`, vault `v1`, policy `testPolicy1`), with the
//! example's own api-version. Checked per example:
//! * the status code is one of the example's responses;
//! * `Location`, `Azure-AsyncOperation`, `Retry-After` are present when the example's response of
//!   that status has them; the URLs are absolute https URLs carrying an api-version, Retry-After is
//!   a positive integer;
//! * shape: every property path of the example's body of that status is present in ours with the
//!   same JSON type (`null` in the example only asks for presence; arrays: each example element is
//!   compared with the closest of ours; extra properties are fine).
//!
//! A table (example → result) is printed; any mismatch not in [`ALLOWED`] fails the test. The
//! responses also go through the contract hook of `Server::req`.

use std::collections::HashMap;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::harness::*;

/// Deliberate differences: (example file suffix, mismatch prefix, reason).
const ALLOWED: &[(&str, &str, &str)] = &[
    // Test data, not the server: `tags` is a free-form map and the examples' vaults carry user
    // tags (`TestUpdatedKey`, `Love`) that the replayed vaults do not have.
    ("PUTVault.json", "body `/tags/", TAGS),
    ("GETVault.json", "body `/tags/", TAGS),
    ("ListResources.json", "body `/value/*/tags/", TAGS),
    ("ListBySubscriptionIds.json", "body `/value/*/tags/", TAGS),
    // Vault features rsvault does not have: private endpoints, secure score / BCDR level, cost
    // management, cross-region redundancy, soft-delete / immutability / MUA security settings,
    // Azure Monitor alert settings. All optional in VaultProperties; clients read them as absent.
    (
        "GETVault.json",
        "body `/properties/bcdrSecurityLevel`",
        VAULT_FEATURES,
    ),
    (
        "GETVault.json",
        "body `/properties/costManagementSettings`",
        VAULT_FEATURES,
    ),
    (
        "GETVault.json",
        "body `/properties/monitoringSettings`",
        VAULT_FEATURES,
    ),
    (
        "GETVault.json",
        "body `/properties/privateEndpoint",
        VAULT_FEATURES,
    ),
    (
        "GETVault.json",
        "body `/properties/redundancySettings`",
        VAULT_FEATURES,
    ),
    (
        "GETVault.json",
        "body `/properties/secureScore`",
        VAULT_FEATURES,
    ),
    (
        "GETVault.json",
        "body `/properties/securitySettings`",
        VAULT_FEATURES,
    ),
    // The example vault has immutability, multi-user authorization and source scanning set;
    // a vault reports the settings it was given (soft delete is always reported).
    (
        "GETVault.json",
        "body `/properties/securitySettings/immutabilitySettings`",
        VAULT_FEATURES,
    ),
    (
        "GETVault.json",
        "body `/properties/securitySettings/multiUserAuthorization`",
        VAULT_FEATURES,
    ),
    (
        "GETVault.json",
        "body `/properties/securitySettings/sourceScanConfiguration`",
        VAULT_FEATURES,
    ),
    // Azure VM metadata that a disk-image source has no equivalent for (VM size, zones, OS and
    // security type, extended location, private disk access, archive-tier move readiness).
    (
        "RecoveryPoints_Get.json",
        "body `/properties/virtualMachineSize`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_Get.json",
        "body `/properties/zones`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_Get.json",
        "body `/properties/isPrivateAccessEnabledOnAnyDisk`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_Get.json",
        "body `/properties/recoveryPointMoveReadinessInfo`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_List.json",
        "body `/value/*/properties/virtualMachineSize`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_List.json",
        "body `/value/*/properties/zones`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_List.json",
        "body `/value/*/properties/isPrivateAccessEnabledOnAnyDisk`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_List.json",
        "body `/value/*/properties/recoveryPointMoveReadinessInfo`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_List.json",
        "body `/value/*/properties/extendedLocation`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_List.json",
        "body `/value/*/properties/osType`",
        VM_METADATA,
    ),
    (
        "RecoveryPoints_List.json",
        "body `/value/*/properties/securityType`",
        VM_METADATA,
    ),
    // Tier details: rsvault has one tier (the vault repository) and no archive move, so the
    // per-tier `extendedInfo` (archive move metadata) is empty and omitted.
    (
        "RecoveryPoints_List.json",
        "body `/value/*/properties/recoveryPointTierDetails/*/extendedInfo`",
        "single tier, no archive-move metadata",
    ),
    // `scheduleWeeklyFrequency` only means something for Weekly schedules; Azure emits 0 for
    // Daily ones, rsvault omits it (optional int; clients read absent as unset).
    (
        "ProtectionPolicies_CreateOrUpdate_Simple.json",
        "body `/properties/schedulePolicy/scheduleWeeklyFrequency`",
        WEEKLY,
    ),
    (
        "ProtectionPolicies_Get.json",
        "body `/properties/schedulePolicy/scheduleWeeklyFrequency`",
        WEEKLY,
    ),
    (
        "ProtectionPolicyOperationResults_Get.json",
        "body `/properties/schedulePolicy/scheduleWeeklyFrequency`",
        WEEKLY,
    ),
    (
        "BackupPolicies_List.json",
        "body `/value/*/properties/schedulePolicy/scheduleWeeklyFrequency`",
        WEEKLY,
    ),
    // Policy PUT/DELETE complete synchronously in rsvault (200/204), so there is no policy
    // operation with `OperationStatusJobsExtendedInfo {jobIds, failedJobsError}`; the replay polls
    // a backup operation id through the policy path and gets `OperationStatusJobExtendedInfo`.
    (
        "ProtectionPolicyOperationStatuses_Get.json",
        "body `/properties/jobIds`",
        SYNC_POLICY,
    ),
    (
        "ProtectionPolicyOperationStatuses_Get.json",
        "body `/properties/failedJobsError`",
        SYNC_POLICY,
    ),
    // rsvault pages only job lists (`server.page_size`); a recovery point list always comes in
    // one page, so the example's `nextLink` (a second page) has no counterpart. Clients follow
    // `nextLink` only when present. (Azure pages at 200; rsvault would return more than 200
    // points at once.)
    (
        "RecoveryPoints_List.json",
        "body `/nextLink`",
        "recovery point lists are not paged",
    ),
];
const TAGS: &str = "test data: the example's vault has user tags, ours has none";
const VAULT_FEATURES: &str = "Azure vault feature rsvault does not have (optional property)";
const VM_METADATA: &str = "Azure VM metadata with no equivalent for a disk-image source";
const WEEKLY: &str = "meaningful only for Weekly schedules; omitted for Daily";
const SYNC_POLICY: &str = "policy updates are synchronous; no policy operation exists";

/// Examples of operations rsvault does not implement: (file suffix, reason).
const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    (
        "Dpm/BackupEngines_List.json",
        "backup engines are DPM/MABS servers; rsvault has none and does not serve backupEngines",
    ),
    (
        "recoveryservices/2025-01-01/examples/GetOperationResult.json",
        "vault PUT/PATCH/DELETE complete synchronously in rsvault (200/201/204), so no vault operation id ever exists to poll",
    ),
    (
        "recoveryservices/2025-01-01/examples/GetOperationStatus.json",
        "vault PUT/PATCH/DELETE complete synchronously in rsvault (200/201/204), so no vault operation id ever exists to poll",
    ),
];

/// Providers whose API is an open issue, not yet served: (folder prefix, reason). Their examples
/// are listed as such, so the report says what is missing instead of failing on it.
const NOT_YET: &[(&str, &str)] = &[
    (
        "authorization/",
        "role assignments and role definitions are issue #12, not served yet",
    ),
    ("monitor/", "the activity log is issue #12, not served yet"),
];

/// Replay order: each step is a file stem; all versions of that example run at that step.
const ORDER: &[&str] = &[
    "PUTVault",
    "GETVault",
    "ListResources",
    "ListBySubscriptionIds",
    "RefreshContainers",
    "RefreshContainers_OperationResults",
    "BackupProtectableItems_List",
    "ProtectionContainers_Register",
    "ProtectionPolicies_CreateOrUpdate_Simple",
    "ProtectionPolicies_Get",
    "BackupPolicies_List",
    "ConfigureProtection",
    "ProtectedItemOperationStatus",
    "TriggerBackup_Post",
    "ProtectedItemOperationResults",
    "Compute_ProtectedItem_Get",
    "ClassicCompute_ProtectedItem_Get",
    "BackupProtectedItems_List",
    "GetJobDetails",
    "ListJobs",
    "ListJobsWithAllSupportedFilters",
    "ListJobsWithStartTimeAndEndTimeFilters",
    "RecoveryPoints_List",
    "RecoveryPoints_Get",
    "TriggerRestore_ALR",
    "TriggerRestore_RestoreDisks",
    "TriggerRestore_ALR_IaasVMRestoreRequest",
    "TriggerRestore_RestoreDisks_IaasVMRestoreRequest",
    "TriggerRestore_ALR_IaasVMRestoreRequest_IdentityBasedRestoreDetails",
    "ProtectionPolicyOperationResults_Get",
    "ProtectionPolicyOperationStatuses_Get",
    "TriggerCancelJob",
    "CancelJobOperationResult",
    "TriggerExportJobs",
    "ExportJobsOperationResult",
    "StopProtection",
    "ProtectedItem_Delete",
    "ProtectedItem_Delete_OperationResult",
    "ProtectionPolicies_Delete",
    "DeleteVault",
];

struct Ex {
    rel: String,
    stem: String,
    doc: Value,
}

fn examples() -> Vec<Ex> {
    let root = crate::contract::spec_dir();
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json")
                && p.components().any(|c| c.as_os_str() == "examples")
            {
                let rel = p.strip_prefix(&root).unwrap().display().to_string();
                let stem = p.file_stem().unwrap().to_string_lossy().to_string();
                let doc: Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                out.push(Ex { rel, stem, doc });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

/// Test-data state shared by the steps.
struct Ctx<'a> {
    s: &'a Server,
    v: String,
    vm: String,
    share: String,
    /// Last URL of a kind ("refresh", "cfg-loc", "cfg-aao", "cancel", "export", "delete", ...).
    urls: HashMap<&'static str, String>,
    rp: String,
    backup_job: String,
    backup_op: String,
}

struct Request {
    method: &'static str,
    path: String,
    filter: Option<String>,
    body: Option<Value>,
}

fn vm_id() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
    )
}

fn acct_id() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1"
    )
}

fn op_id(url: &str) -> String {
    let path = url.split('?').next().unwrap();
    path.rsplit('/').next().unwrap().to_string()
}

/// The example's request body with its resource ids replaced by the test data's.
fn adapt_body(ctx: &Ctx, body: &Value, source: &str) -> Value {
    let mut b = body.clone();
    if let Some(p) = b.get_mut("properties").and_then(Value::as_object_mut) {
        for (k, v) in p.iter_mut() {
            match k.as_str() {
                "sourceResourceId" => *v = json!(source),
                "policyId" => *v = json!(format!("{}/backupPolicies/vmpol", ctx.v)),
                "recoveryPointId" => *v = json!(ctx.rp),
                "friendlyName" => *v = json!("acct1"),
                // The staging account must be one rsvault serves (issue #14).
                "storageAccountId" => *v = json!(acct_id()),
                _ => {}
            }
        }
        if let Some(d) = p
            .get_mut("identityBasedRestoreDetails")
            .and_then(Value::as_object_mut)
        {
            if d.contains_key("targetStorageAccountId") {
                d.insert("targetStorageAccountId".into(), json!(acct_id()));
            }
        }
    }
    b
}

/// Job filters: the example's time window (2016–2017) becomes the last day, and a status the
/// finished test jobs cannot have becomes `Completed`.
fn adapt_filter(f: &str) -> String {
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %I:%M:%S %p").to_string();
    let mut out = Vec::new();
    for clause in f.split(" and ") {
        let c = clause.trim();
        let key = c.split_whitespace().next().unwrap_or("");
        out.push(match key {
            "startTime" => format!("startTime eq '{}'", fmt(now - chrono::Duration::days(1))),
            "endTime" => format!("endTime eq '{}'", fmt(now + chrono::Duration::days(1))),
            "status" => "status eq 'Completed'".to_string(),
            _ => c.to_string(),
        });
    }
    out.join(" and ")
}

fn request(ctx: &mut Ctx, ex: &Ex) -> Request {
    let params = &ex.doc["parameters"];
    let v = ctx.v.clone();
    let vm = ctx.vm.clone();
    let filter = params["$filter"].as_str().map(str::to_string);
    let get = |path: String| Request {
        method: "GET",
        path,
        filter: filter.clone(),
        body: None,
    };
    let exvault = ctx.s.vault("exvault");
    match ex.stem.as_str() {
        "PUTVault" => Request {
            method: "PUT",
            path: exvault,
            filter: None,
            body: Some(params["vault"].clone()),
        },
        "GETVault" => get(exvault),
        "DeleteVault" => Request {
            method: "DELETE",
            path: exvault,
            filter: None,
            body: None,
        },
        "ListResources" => get(format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.RecoveryServices/vaults"
        )),
        "ListBySubscriptionIds" => get(format!(
            "/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults"
        )),
        "GetOperationStatus" => get(format!(
            "{v}/operationStatus/{}",
            op_id(&ctx.urls["delete"])
        )),
        "GetOperationResult" => get(format!(
            "{v}/operationResults/{}",
            op_id(&ctx.urls["delete"])
        )),
        "RefreshContainers" => Request {
            method: "POST",
            path: format!("{v}/backupFabrics/Azure/refreshContainers"),
            filter,
            body: None,
        },
        "RefreshContainers_OperationResults" => get(format!(
            "{v}/backupFabrics/Azure/operationResults/{}",
            op_id(&ctx.urls["refresh"])
        )),
        "BackupProtectableItems_List" => get(format!("{v}/backupProtectableItems")),
        "ProtectionContainers_Register" => Request {
            method: "PUT",
            path: format!(
                "{v}/backupFabrics/Azure/protectionContainers/StorageContainer;Storage;rg1;acct1"
            ),
            filter: None,
            body: Some(adapt_body(ctx, &params["parameters"], &acct_id())),
        },
        "ProtectionPolicies_CreateOrUpdate_Simple" => Request {
            method: "PUT",
            path: format!("{v}/backupPolicies/testPolicy1"),
            filter: None,
            body: Some(params["parameters"].clone()),
        },
        "ProtectionPolicies_Get" => get(format!("{v}/backupPolicies/testPolicy1")),
        "ProtectionPolicies_Delete" => Request {
            method: "DELETE",
            path: format!("{v}/backupPolicies/testPolicy1"),
            filter: None,
            body: None,
        },
        "BackupPolicies_List" => get(format!("{v}/backupPolicies")),
        "ProtectionPolicyOperationResults_Get" => get(format!(
            "{v}/backupPolicies/testPolicy1/operationResults/{}",
            ctx.backup_op
        )),
        "ProtectionPolicyOperationStatuses_Get" => get(format!(
            "{v}/backupPolicies/testPolicy1/operations/{}",
            ctx.backup_op
        )),
        "ConfigureProtection" | "StopProtection" => Request {
            method: "PUT",
            path: vm,
            filter: None,
            body: Some(adapt_body(ctx, &params["parameters"], &vm_id())),
        },
        "ProtectedItemOperationResults" => get(format!(
            "{vm}/operationResults/{}",
            op_id(&ctx.urls["cfg-loc"])
        )),
        "ProtectedItemOperationStatus" => get(format!(
            "{vm}/operationsStatus/{}",
            op_id(&ctx.urls["cfg-aao"])
        )),
        "Compute_ProtectedItem_Get" | "ClassicCompute_ProtectedItem_Get" => get(vm),
        "BackupProtectedItems_List" => get(format!("{v}/backupProtectedItems")),
        "ProtectedItem_Delete" => {
            if ctx.urls.contains_key("delete") {
                // The previous version's replay (soft-)deleted it: undelete it and protect it
                // again.
                let r = ctx.s.req(
                    "PUT",
                    &vm,
                    Some(json!({"properties": {
                        "protectedItemType": "Microsoft.Compute/virtualMachines",
                        "protectionState": "ProtectionStopped", "isRehydrate": true}})),
                );
                assert_eq!(r.status(), 202, "{}", r.text().unwrap());
                ctx.s.protect(&v, &vm);
            }
            Request {
                method: "DELETE",
                path: vm,
                filter: None,
                body: None,
            }
        }
        "ProtectedItem_Delete_OperationResult" => get(format!(
            "{v}/backupOperationResults/{}",
            op_id(&ctx.urls["delete"])
        )),
        "TriggerBackup_Post" => Request {
            method: "POST",
            path: format!("{vm}/backup"),
            filter: None,
            body: Some(params["parameters"].clone()),
        },
        "GetJobDetails" => get(format!("{v}/backupJobs/{}", ctx.backup_job)),
        "ListJobs"
        | "ListJobsWithAllSupportedFilters"
        | "ListJobsWithStartTimeAndEndTimeFilters" => Request {
            method: "GET",
            path: format!("{v}/backupJobs"),
            filter: filter.as_deref().map(adapt_filter),
            body: None,
        },
        "RecoveryPoints_List" => get(format!("{vm}/recoveryPoints")),
        "RecoveryPoints_Get" => get(format!("{vm}/recoveryPoints/{}", ctx.rp)),
        s if s.starts_with("TriggerRestore_") => Request {
            method: "POST",
            path: format!("{vm}/recoveryPoints/{}/restore", ctx.rp),
            filter: None,
            body: Some(adapt_body(ctx, &params["parameters"], &vm_id())),
        },
        "TriggerCancelJob" => {
            // A running job to cancel: a rate-limited backup of the share.
            let job = ctx.s.backup(&ctx.share);
            Request {
                method: "POST",
                path: format!("{v}/backupJobs/{job}/cancel"),
                filter: None,
                body: None,
            }
        }
        "CancelJobOperationResult" => {
            get(ctx.urls["cancel"].split('?').next().unwrap().to_string())
        }
        "TriggerExportJobs" => Request {
            method: "POST",
            path: format!("{v}/backupJobsExport"),
            filter,
            body: None,
        },
        "ExportJobsOperationResult" => get(format!(
            "{v}/backupJobs/operationResults/{}",
            op_id(&ctx.urls["export"])
        )),
        other => panic!("no replay for example {other}"),
    }
}

/// What a step leaves for later steps.
fn after(ctx: &mut Ctx, ex: &Ex, headers: &reqwest::header::HeaderMap) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match ex.stem.as_str() {
        "RefreshContainers" => {
            if let Some(l) = h("location") {
                ctx.urls.insert("refresh", l);
            }
        }
        "ConfigureProtection" => {
            if let (Some(l), Some(a)) = (h("location"), h("azure-asyncoperation")) {
                ctx.urls.insert("cfg-loc", l);
                ctx.s.job_of_operation(&a);
                ctx.urls.insert("cfg-aao", a);
            }
        }
        "TriggerBackup_Post" => {
            if let Some(a) = h("azure-asyncoperation") {
                let job = ctx.s.job_of_operation(&a);
                let done = ctx.s.wait_job(&ctx.v, &job);
                assert_eq!(done["properties"]["status"], "Completed", "{done}");
                if ctx.backup_op.is_empty() {
                    // Two more recovery points, so recovery point lists have a second page.
                    for _ in 0..2 {
                        let j = ctx.s.backup(&ctx.vm);
                        ctx.s.wait_job(&ctx.v, &j);
                    }
                }
                ctx.backup_op = op_id(&a);
                ctx.backup_job = job;
                ctx.rp = ctx.s.recovery_points(&ctx.vm)[0]["name"]
                    .as_str()
                    .unwrap()
                    .to_string();
            }
        }
        s if s.starts_with("TriggerRestore_") => {
            if let Some(a) = h("azure-asyncoperation") {
                let job = ctx.s.job_of_operation(&a);
                ctx.s.wait_job(&ctx.v, &job);
            }
        }
        "TriggerCancelJob" => {
            if let Some(l) = h("location") {
                ctx.urls.insert("cancel", l);
            }
        }
        "TriggerExportJobs" => {
            if let Some(l) = h("location") {
                ctx.urls.insert("export", l);
            }
        }
        "ProtectedItem_Delete" => {
            if let Some(l) = h("location") {
                ctx.urls.insert("delete", l);
            }
            if let Some(a) = h("azure-asyncoperation") {
                let job = ctx.s.job_of_operation(&a);
                ctx.s.wait_job(&ctx.v, &job);
            }
        }
        "StopProtection" => {
            if let Some(a) = h("azure-asyncoperation") {
                ctx.s.job_of_operation(&a);
            }
        }
        _ => {}
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Property paths of `ex` missing from `ours` or of another JSON type.
fn shape(ex: &Value, ours: &Value, at: &str, out: &mut Vec<String>) {
    if ex.is_null() {
        return;
    }
    if json_type(ex) != json_type(ours) {
        out.push(format!(
            "body `{at}`: {} in ours, {} in the example",
            json_type(ours),
            json_type(ex)
        ));
        return;
    }
    match (ex, ours) {
        (Value::Object(e), Value::Object(o)) => {
            for (k, ev) in e {
                let p = format!("{at}/{k}");
                match o.get(k) {
                    None => out.push(format!("body `{p}`: missing")),
                    Some(ov) => shape(ev, ov, &p, out),
                }
            }
        }
        (Value::Array(e), Value::Array(o)) => {
            let p = format!("{at}/*");
            if !e.is_empty() && o.is_empty() {
                out.push(format!(
                    "body `{at}`: empty array, the example has elements"
                ));
                return;
            }
            for ev in e {
                let best = o
                    .iter()
                    .map(|ov| {
                        let mut m = Vec::new();
                        shape(ev, ov, &p, &mut m);
                        m
                    })
                    .min_by_key(Vec::len)
                    .unwrap_or_default();
                for m in best {
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
            }
        }
        _ => {}
    }
}

fn is_async_url(u: &str) -> bool {
    u.starts_with("https://") && u.contains("api-version=")
}

/// Replays one example; returns the mismatches.
fn replay(ctx: &mut Ctx, ex: &Ex) -> Vec<String> {
    let api = ex.doc["parameters"]["api-version"]
        .as_str()
        .expect("example has an api-version")
        .to_string();
    let req = request(ctx, ex);
    let mut url = if req.path.starts_with("https://") {
        req.path.clone()
    } else {
        format!("{}{}", ctx.s.base, req.path)
    };
    url.push_str(&format!("?api-version={api}"));
    if let Some(f) = &req.filter {
        url.push_str(&format!(
            "&$filter={}",
            utf8_percent_encode(f, NON_ALPHANUMERIC)
        ));
    }
    let r = ctx.s.req(req.method, &url, req.body.clone());
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap_or_default();
    let mut mismatches = Vec::new();
    let responses = ex.doc["responses"].as_object().unwrap();
    match responses.get(&status.to_string()) {
        None => {
            let mut codes: Vec<&String> = responses.keys().collect();
            codes.sort();
            mismatches.push(format!(
                "status {status}, the example has {codes:?}: {}",
                &text[..text.len().min(300)]
            ));
        }
        Some(exr) => {
            for (name, _) in exr["headers"].as_object().into_iter().flatten() {
                let lname = name.to_ascii_lowercase();
                if !["location", "azure-asyncoperation", "retry-after"].contains(&lname.as_str()) {
                    continue;
                }
                match headers.get(&lname).and_then(|v| v.to_str().ok()) {
                    None => mismatches.push(format!("header {name}: missing")),
                    Some(val) if lname == "retry-after" => {
                        if !val.parse::<u64>().is_ok_and(|n| n > 0) {
                            mismatches
                                .push(format!("header {name}: `{val}` is not a positive integer"));
                        }
                    }
                    Some(val) => {
                        if !is_async_url(val) {
                            mismatches.push(format!(
                                "header {name}: `{val}` is not an absolute https URL with an api-version"
                            ));
                        }
                    }
                }
            }
            if let Some(eb) = exr.get("body") {
                match serde_json::from_str::<Value>(&text) {
                    Ok(ours) => shape(eb, &ours, "", &mut mismatches),
                    Err(_) => mismatches.push(format!(
                        "body: not JSON (`{}`)",
                        &text[..text.len().min(200)]
                    )),
                }
            }
        }
    }
    after(ctx, ex, &headers);
    mismatches
}

#[test]
fn examples_replay() {
    let env = Env::new();
    // Large enough, and rate-limited, so a share backup is still running when it is cancelled;
    // two items per page so that lists have a `nextLink` as several examples show.
    let big: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2246822519).rotate_left(13) >> 5) as u8)
        .collect();
    std::fs::write(env.path("share/huge.bin"), &big).unwrap();
    let s = Server::start(
        &env,
        "page_size = 2\n[limits]\nbackup_bytes_per_second = 8388608",
    );
    let v = s.setup_vault("v1");
    let share = s.share_item(&v);
    s.protect(&v, &share);
    let mut ctx = Ctx {
        s: &s,
        vm: s.vm_item(&v),
        share,
        v,
        urls: HashMap::new(),
        rp: String::new(),
        backup_job: String::new(),
        backup_op: String::new(),
    };

    let all = examples();
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    for ex in &all {
        if let Some((_, why)) = NOT_YET.iter().find(|(f, _)| ex.rel.starts_with(f)) {
            rows.push((ex.rel.clone(), format!("not replayed yet: {why}")));
        } else if let Some((_, why)) = NOT_IMPLEMENTED.iter().find(|(f, _)| ex.rel.ends_with(f)) {
            rows.push((ex.rel.clone(), format!("not replayed: {why}")));
        } else if !ORDER.contains(&ex.stem.as_str()) {
            failures.push(format!("{}: no replay step for this example", ex.rel));
            rows.push((ex.rel.clone(), "FAIL: no replay step".into()));
        }
    }
    for step in ORDER {
        for ex in all.iter().filter(|e| e.stem == *step) {
            if NOT_IMPLEMENTED.iter().any(|(f, _)| ex.rel.ends_with(f)) {
                continue;
            }
            // A contract violation (the hook panics) becomes this example's failure.
            let mism = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                replay(&mut ctx, ex)
            })) {
                Ok(m) => m,
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    vec![format!(
                        "panic: {}",
                        msg.lines().take(3).collect::<Vec<_>>().join(" | ")
                    )]
                }
            };
            let (mut allowed, mut bad) = (Vec::new(), Vec::new());
            for m in mism {
                match ALLOWED
                    .iter()
                    .find(|(f, p, _)| ex.rel.ends_with(f) && m.starts_with(p))
                {
                    Some((_, _, why)) => allowed.push(format!("{m} (allowed: {why})")),
                    None => bad.push(m),
                }
            }
            let result = if !bad.is_empty() {
                failures.extend(bad.iter().map(|m| format!("{}: {m}", ex.rel)));
                format!("FAIL: {}", bad.join("; "))
            } else if !allowed.is_empty() {
                format!("ok with allowed differences: {}", allowed.join("; "))
            } else {
                "ok".into()
            };
            rows.push((ex.rel.clone(), result));
        }
    }
    rows.sort();
    let width = rows.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
    println!("{:width$}  result", "example");
    for (f, r) in &rows {
        println!("{f:width$}  {r}");
    }
    let replayed = rows
        .iter()
        .filter(|(_, r)| !r.starts_with("not replayed"))
        .count();
    println!(
        "{} examples, {replayed} replayed, {} mismatches",
        rows.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "example replay mismatches:\n{}",
        failures.join("\n")
    );
}
