//! Issue #9 item 6: soft delete, as Azure's. Deleting an item's backup data soft-deletes it
//! (points kept and listed, nothing readable lost), `isRehydrate` undeletes it, the purge removes
//! the data after the period, and a vault with soft-deleted items cannot be deleted.

use std::time::{Duration, Instant};

use reqwest::blocking::Response;
use serde_json::{json, Value};

use crate::harness::*;

const ACCT1: &str =
    "/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1";

fn refused(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 20),
        "{body}"
    );
    body
}

/// DELETE of the item, through the operation to its job; returns the finished job.
fn delete_item(s: &Server, v: &str, item: &str) -> Value {
    let job = s.accepted_job(v, s.req("DELETE", item, None));
    assert_eq!(job["properties"]["operation"], "DeleteBackupData", "{job}");
    assert_eq!(job["properties"]["status"], "Completed", "{job}");
    job
}

fn undelete(s: &Server, item: &str) -> Response {
    s.req(
        "PUT",
        item,
        Some(json!({"properties": {
            "protectedItemType": "AzureFileShareProtectedItem",
            "protectionState": "ProtectionStopped", "policyId": "", "isRehydrate": true}})),
    )
}

fn restore_full(s: &Server, item: &str, rp: &str, name: &str) -> Response {
    s.req(
        "POST",
        &format!("{item}/recoveryPoints/{rp}/restore"),
        Some(json!({"properties": {
            "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
            "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore",
            "sourceResourceId": "x", "targetDetails": {"name": name, "targetResourceId": ACCT1}}})),
    )
}

fn snapshot_files(s: &Server) -> usize {
    fn walk(p: &std::path::Path, n: &mut usize) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|f| f == "snapshots") {
                    *n += std::fs::read_dir(&path).unwrap().count();
                } else {
                    walk(&path, n);
                }
            }
        }
    }
    let mut n = 0;
    walk(&s.data.join("repos"), &mut n);
    n
}

#[test]
fn soft_delete_then_undelete_then_restore_is_identical() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let rp = s.recovery_points(&item)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // On by default, as Azure: the vault and its vaultconfig say so.
    let vault = s.get(&v);
    let sd = &vault["properties"]["securitySettings"]["softDeleteSettings"];
    assert_eq!(sd["softDeleteState"], "Enabled", "{vault}");
    assert_eq!(sd["softDeleteRetentionPeriodInDays"], 14, "{vault}");
    let cfg = s.get(&format!("{v}/backupconfig/vaultconfig"));
    assert_eq!(
        cfg["properties"]["softDeleteFeatureState"], "Enabled",
        "{cfg}"
    );
    assert_eq!(cfg["properties"]["softDeleteRetentionPeriodInDays"], 14);

    let job = delete_item(&s, &v, &item);
    assert_eq!(
        job["properties"]["extendedInfo"]["propertyBag"]["Soft Deleted"], "true",
        "{job}"
    );
    let it = s.get(&item);
    let p = &it["properties"];
    assert_eq!(p["isScheduledForDeferredDelete"], true, "{it}");
    assert_eq!(p["protectionState"], "ProtectionStopped");
    assert!(p.get("policyId").is_none(), "{it}");
    assert!(p["deferredDeleteTimeInUTC"].is_string(), "{it}");
    let left = p["deferredDeleteTimeRemaining"].as_str().unwrap();
    assert!(
        left.starts_with("13.23:") || left.starts_with("14.00:"),
        "{left}"
    );
    assert_eq!(p["isDeferredDeleteScheduleUpcoming"], false);
    assert_eq!(p["softDeleteRetentionPeriodInDays"], 14);
    // Listed with its points, which stay.
    let listed = s.get(&format!("{v}/backupProtectedItems"));
    assert_eq!(listed["value"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(s.recovery_points(&item).len(), 1);

    // Nothing but undelete works on it.
    let code = "UserErrorOperationNotAllowedOnSoftDeletedItem";
    refused(s.req("DELETE", &item, None), 400, code);
    refused(
        s.req(
            "POST",
            &format!("{item}/backup"),
            Some(json!({"properties": {"objectType": "AzureFileShareBackupRequest"}})),
        ),
        400,
        code,
    );
    refused(restore_full(&s, &item, &rp, "early"), 400, code);
    assert!(!env.path("restore/early").exists());
    refused(
        s.req(
            "PUT",
            &item,
            Some(
                json!({"properties": {"protectedItemType": "AzureFileShareProtectedItem",
                "policyId": format!("{v}/backupPolicies/fspol")}}),
            ),
        ),
        400,
        code,
    );
    // The vault cannot go while it holds soft-deleted data.
    let body = refused(s.req("DELETE", &v, None), 409, "ServiceResourceNotEmpty");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("soft-deleted"),
        "{body}"
    );

    // Garbage collection keeps every point of a soft-deleted item.
    let r = s.req(
        "POST",
        &format!("{v}/rsvault/maintenance/garbageCollection"),
        None,
    );
    assert_eq!(s.accepted_job(&v, r)["properties"]["status"], "Completed");
    assert_eq!(s.recovery_points(&item).len(), 1);
    assert_eq!(snapshot_files(&s), 1);

    // Undelete (Azure's way), then restore: identical.
    let job = s.accepted_job(&v, undelete(&s, &item));
    assert_eq!(job["properties"]["operation"], "Undelete", "{job}");
    assert_eq!(job["properties"]["status"], "Completed", "{job}");
    let it = s.get(&item);
    assert_eq!(
        it["properties"]["isScheduledForDeferredDelete"], false,
        "{it}"
    );
    assert_eq!(it["properties"]["protectionState"], "ProtectionStopped");
    assert!(it["properties"].get("deferredDeleteTimeInUTC").is_none());
    refused(undelete(&s, &item), 400, "UserErrorItemNotSoftDeleted");
    let done = s.accepted_job(&v, restore_full(&s, &item, &rp, "back"));
    assert_eq!(done["properties"]["status"], "Completed", "{done}");
    assert_same_tree(&env.path("share"), &env.path("restore/back"));

    // Resumed, it backs up again.
    s.protect(&v, &item);
    assert_eq!(s.get(&item)["properties"]["protectionState"], "Protected");
    s.backup_completed(&v, &item);
    assert_eq!(s.recovery_points(&item).len(), 2);
}

#[test]
fn the_purge_removes_the_data_after_the_period() {
    let env = Env::new();
    // 0.00005 days is 4.3 s.
    let s = Server::start(
        &env,
        "[retention]\nsoft_delete_days = 0.00005\n[scheduler]\ntick_seconds = 1",
    );
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    assert_eq!(snapshot_files(&s), 1);
    delete_item(&s, &v, &item);
    assert_eq!(
        s.get(&item)["properties"]["isScheduledForDeferredDelete"],
        true
    );
    assert_eq!(snapshot_files(&s), 1, "nothing deleted at once");

    let deadline = Instant::now() + Duration::from_secs(60);
    let purge = loop {
        let jobs = s.get(&format!(
            "{v}/backupJobs?$filter=operation eq 'DeleteBackupData'"
        ));
        let purge = jobs["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| {
                j["properties"]["extendedInfo"]["propertyBag"]
                    .get("Soft Delete Purge Time")
                    .is_some()
            })
            .cloned();
        if let Some(p) = purge {
            break s.wait_job(&v, p["name"].as_str().unwrap());
        }
        assert!(Instant::now() < deadline, "no purge job: {jobs}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(purge["properties"]["status"], "Completed", "{purge}");
    assert_eq!(purge["properties"]["isUserTriggered"], false);
    assert_eq!(s.req("GET", &item, None).status(), 404);
    assert_eq!(snapshot_files(&s), 0, "the purge forgot the snapshot");
    // After the period, undelete is too late and the vault may go.
    assert_eq!(undelete(&s, &item).status(), 404);
    assert_eq!(s.req("DELETE", &v, None).status(), 204);
}

#[test]
fn vault_soft_delete_settings_follow_azure_rules() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let (v, item) = s.protected_share("v1");
    let patch = |sd: Value| {
        s.req(
            "PATCH",
            &v,
            Some(json!({"properties": {"securitySettings": {"softDeleteSettings": sd}}})),
        )
    };
    // Bad input is a 400 naming the field, never stored.
    for (sd, target) in [
        (json!({"softDeleteState": "Sometimes"}), "softDeleteState"),
        (json!({"softDeleteState": 3}), "softDeleteState"),
        (
            json!({"softDeleteRetentionPeriodInDays": 7}),
            "softDeleteRetentionPeriodInDays",
        ),
        (
            json!({"softDeleteRetentionPeriodInDays": "14"}),
            "softDeleteRetentionPeriodInDays",
        ),
        (
            json!({"softDeleteRetentionPeriodInDays": 181}),
            "softDeleteRetentionPeriodInDays",
        ),
        (
            json!({"enhancedSecurityState": "Enabled"}),
            "enhancedSecurityState",
        ),
        (json!("on"), "softDeleteSettings"),
    ] {
        let body = refused(patch(sd.clone()), 400, "BMSUserErrorInvalidInput");
        assert!(
            body["error"]["target"].as_str().unwrap().ends_with(target),
            "{sd}: {body}"
        );
    }
    let body = refused(
        s.req(
            "PATCH",
            &v,
            Some(json!({"properties": {"securitySettings": 5}})),
        ),
        400,
        "BMSUserErrorInvalidInput",
    );
    assert_eq!(
        body["error"]["target"], "properties.securitySettings",
        "{body}"
    );
    let sd = |s: &Server| s.get(&v)["properties"]["securitySettings"]["softDeleteSettings"].clone();
    assert_eq!(sd(&s)["softDeleteState"], "Enabled");

    // A longer period, kept by a PATCH of another security setting.
    assert_eq!(
        patch(json!({"softDeleteRetentionPeriodInDays": 30})).status(),
        200
    );
    let r = s.req(
        "PATCH",
        &v,
        Some(json!({"properties": {"securitySettings": {"immutabilitySettings": {"state": "Disabled"}}}})),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert_eq!(sd(&s)["softDeleteRetentionPeriodInDays"], 30);

    // Disabled: deleting backup data deletes it at once.
    let cfg = format!("{v}/backupconfig/vaultconfig");
    let r = s.req(
        "PATCH",
        &cfg,
        Some(json!({"properties": {"softDeleteFeatureState": "Disabled", "enhancedSecurityState": "Disabled"}})),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert_eq!(sd(&s)["softDeleteState"], "Disabled");
    assert_eq!(sd(&s)["softDeleteRetentionPeriodInDays"], 30);
    s.backup_completed(&v, &item);
    let job = delete_item(&s, &v, &item);
    assert!(job["properties"]["extendedInfo"]["propertyBag"]
        .get("Soft Deleted")
        .is_none());
    assert_eq!(s.req("GET", &item, None).status(), 404);
    assert_eq!(snapshot_files(&s), 0);

    // AlwaysON (as az spells it) sticks: it cannot be turned off, by either resource.
    assert_eq!(patch(json!({"softDeleteState": "AlwaysOn"})).status(), 200);
    assert_eq!(sd(&s)["softDeleteState"], "AlwaysON");
    let code = "UserErrorSoftDeleteAlwaysOnCannotBeChanged";
    refused(patch(json!({"softDeleteState": "Enabled"})), 400, code);
    refused(
        s.req(
            "PATCH",
            &cfg,
            Some(json!({"properties": {"softDeleteFeatureState": "Disabled"}})),
        ),
        400,
        code,
    );
    let got = s.get(&cfg);
    assert_eq!(
        got["properties"]["softDeleteFeatureState"], "AlwaysON",
        "{got}"
    );
    assert_eq!(got["properties"]["isSoftDeleteFeatureStateEditable"], false);

    // A new vault created the way `az backup vault create` does it.
    let r = s.req(
        "PUT",
        &s.vault("v2"),
        Some(json!({"location": "westus", "sku": {"name": "Standard"}, "properties": {"securitySettings": {
            "softDeleteSettings": {"softDeleteState": "AlwaysOn", "enhancedSecurityState": "AlwaysOn", "softDeleteRetentionPeriodInDays": 14}}}})),
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let got: Value = r.json().unwrap();
    let sd2 = &got["properties"]["securitySettings"]["softDeleteSettings"];
    assert_eq!(sd2["softDeleteState"], "AlwaysON", "{got}");
    assert_eq!(sd2["enhancedSecurityState"], "Disabled", "{got}");

    // isRehydrate must be a boolean, and only undeletes what is soft-deleted.
    let v2 = s.vault("v2");
    let item2 = s.share_item(&v2);
    let r = s.req("PUT", &item2, Some(json!({"properties": {"protectedItemType": "AzureFileShareProtectedItem", "isRehydrate": "yes"}})));
    refused(r, 400, "BMSUserErrorInvalidInput");
}
