//! Immutable vaults (issue #9 item 7): while immutability is Unlocked or Locked, nothing that
//! shortens retention is accepted, each refusal with its code; Locked stays Locked; settings
//! rsvault cannot honour are refused, never echoed.

use serde_json::{json, Value};

use crate::harness::*;

fn share_policy(days: i64) -> Value {
    json!({"properties": {
        "backupManagementType": "AzureStorage",
        "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Daily", "scheduleRunTimes": ["2026-01-01T02:00:00Z"]},
        "retentionPolicy": {"retentionPolicyType": "LongTermRetentionPolicy", "dailySchedule": {"retentionTimes": ["2026-01-01T02:00:00Z"], "retentionDuration": {"count": days, "durationType": "Days"}}},
        "timeZone": "UTC"
    }})
}

fn set_state(s: &Server, v: &str, state: &str) -> reqwest::blocking::Response {
    s.req(
        "PATCH",
        v,
        Some(
            json!({"properties": {"securitySettings": {"immutabilitySettings": {"state": state}}}}),
        ),
    )
}

fn refused(r: reqwest::blocking::Response, code: &str) {
    let status = r.status();
    let body: Value = r.json().unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
}

#[test]
fn an_immutable_vault_refuses_whatever_shortens_retention() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1"); // fspol keeps daily points 30 days
    s.backup_completed(&v, &item);

    let r = set_state(&s, &v, "unlocked");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let got = s.get(&v);
    assert_eq!(
        got["properties"]["securitySettings"]["immutabilitySettings"]["state"],
        "Unlocked"
    );
    const CODE: &str = "UserErrorImmutableVaultOperationNotAllowed";
    // Deleting the item's backup data before its points expire.
    refused(s.req("DELETE", &item, None), CODE);
    // Reducing the policy's retention; growing it is fine.
    refused(
        s.req(
            "PUT",
            &format!("{v}/backupPolicies/fspol"),
            Some(share_policy(10)),
        ),
        CODE,
    );
    let r = s.req(
        "PUT",
        &format!("{v}/backupPolicies/fspol"),
        Some(share_policy(60)),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    // Moving the item to a policy that keeps less.
    let r = s.req(
        "PUT",
        &format!("{v}/backupPolicies/short"),
        Some(share_policy(5)),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let src = format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1"
    );
    refused(
        s.req(
            "PUT",
            &item,
            Some(json!({"properties": {"protectedItemType": "AzureFileShareProtectedItem", "sourceResourceId": src, "policyId": format!("{v}/backupPolicies/short")}})),
        ),
        CODE,
    );
    // The refusals changed nothing: the point is there, the item on its policy.
    assert_eq!(s.recovery_points(&item).len(), 1);
    assert!(s.get(&item)["properties"]["policyId"]
        .as_str()
        .unwrap()
        .ends_with("/fspol"));

    // Locked is for good.
    let r = set_state(&s, &v, "Locked");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    for back in ["Disabled", "Unlocked"] {
        refused(
            set_state(&s, &v, back),
            "UserErrorImmutabilityLockedCannotBeChanged",
        );
    }
    refused(s.req("DELETE", &item, None), CODE);
    assert_eq!(
        s.get(&v)["properties"]["securitySettings"]["immutabilitySettings"]["state"],
        "Locked"
    );
}

#[test]
fn security_settings_rsvault_cannot_honour_are_refused_not_echoed() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let v = s.setup_vault("v1");
    refused(set_state(&s, &v, "Frozen"), "BMSUserErrorInvalidInput");
    // Enhanced security protects hybrid (MARS/DPM) backups, which rsvault does not have.
    refused(
        s.req(
            "PATCH",
            &v,
            Some(json!({"properties": {"securitySettings": {"softDeleteSettings": {"enhancedSecurityState": "AlwaysON"}}}})),
        ),
        "BMSUserErrorInvalidInput",
    );
    let got = s.get(&v);
    assert_eq!(
        got["properties"]["securitySettings"]["softDeleteSettings"]["enhancedSecurityState"],
        "Disabled",
        "{got}"
    );
    // A whole vault PUT with it on (what `az backup vault create` sends by default) is accepted
    // with it left out, as Azure does where the feature is not available.
    let r = s.req(
        "PUT",
        &s.vault("v2"),
        Some(json!({"location": "westus", "sku": {"name": "Standard"}, "properties": {"securitySettings": {
            "softDeleteSettings": {"softDeleteState": "Disabled", "enhancedSecurityState": "AlwaysOn", "softDeleteRetentionPeriodInDays": 14},
            "immutabilitySettings": {"state": "Unlocked"}}}})),
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let got = s.get(&s.vault("v2"));
    assert_eq!(
        got["properties"]["securitySettings"]["softDeleteSettings"]["enhancedSecurityState"],
        "Disabled",
        "{got}"
    );
    assert_eq!(
        got["properties"]["securitySettings"]["immutabilitySettings"]["state"],
        "Unlocked"
    );
    // A vault without immutability deletes backup data as before.
    let item = s.share_item(&v);
    s.protect(&v, &item);
    s.backup_completed(&v, &item);
    assert_eq!(s.req("DELETE", &item, None).status(), 202);
}
