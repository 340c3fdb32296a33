use serde_json::{json, Value};

use crate::harness::*;

fn error_code(r: reqwest::blocking::Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status);
    assert!(r.headers().contains_key("x-ms-request-id"));
    assert!(
        !r.headers().contains_key("retry-after"),
        "no Retry-After on a final 4xx"
    );
    let v: Value = r.json().expect("ARM error body is JSON");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v["error"]["code"].as_str().unwrap().to_string()
}

#[test]
fn requests_are_authenticated_and_versioned() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let v = s.vault("v1");

    let r = s.client.get(s.url(&v)).send().unwrap();
    assert_eq!(error_code(r, 401), "AuthenticationFailed");
    let r = s.client.get(s.url(&v)).bearer_auth("wrong").send().unwrap();
    assert_eq!(error_code(r, 401), "InvalidAuthenticationToken");

    let r = s
        .client
        .get(format!("{}{v}", s.base))
        .bearer_auth(&s.token)
        .send()
        .unwrap();
    assert_eq!(error_code(r, 400), "MissingApiVersionParameter");
    let r = s
        .client
        .get(format!("{}{v}?api-version=banana", s.base))
        .bearer_auth(&s.token)
        .send()
        .unwrap();
    assert_eq!(error_code(r, 400), "InvalidApiVersionParameter");

    let r = s
        .client
        .get(s.url(&v))
        .bearer_auth(&s.token)
        .header("x-ms-client-request-id", "abc-123")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-ms-client-request-id"], "abc-123");
    assert_eq!(error_code(r, 404), "ResourceNotFound");
}

#[test]
fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let v = s.setup_vault("v1");

    // Malformed JSON, wrong types, bad names.
    let r = s
        .client
        .put(s.url(&s.vault("v2")))
        .bearer_auth(&s.token)
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(error_code(r, 400), "InvalidRequestContent");
    assert_eq!(
        s.req("GET", &s.vault("v2"), None).status(),
        404,
        "nothing was written"
    );
    let r = s.req(
        "PUT",
        &s.vault("bad%20name!"),
        Some(json!({"location": "westus"})),
    );
    assert_eq!(error_code(r, 400), "InvalidResourceName");
    let r = s.req("PUT", &format!("{v}/backupPolicies/p1"), Some(json!({"properties": {"backupManagementType": "AzureIaasVM", "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Sometimes"}}})));
    assert_eq!(error_code(r, 400), "BMSUserErrorInvalidInput");
    assert_eq!(
        s.req("GET", &format!("{v}/backupPolicies/p1"), None)
            .status(),
        404
    );

    // Unknown things are 404 with an ARM code.
    assert_eq!(
        error_code(
            s.req(
                "GET",
                &format!("{v}/backupJobs/00000000-0000-0000-0000-000000000000"),
                None
            ),
            404
        ),
        "BMSUserErrorJobNotFound"
    );
    assert_eq!(
        error_code(s.req("GET", &s.share_item(&v), None), 404),
        "BMSUserErrorDataSourceObjectNotFound"
    );
    assert_eq!(
        error_code(s.req("GET", &format!("{v}/backupWidgets"), None), 404),
        "InvalidResourceType"
    );

    // Bad filters and skip tokens.
    let r = s.req(
        "GET",
        &format!("{v}/backupJobs?$filter=status%20eq%20'Sleeping'"),
        None,
    );
    assert_eq!(error_code(r, 400), "BMSUserErrorInvalidFilter");
    let r = s.req(
        "GET",
        &format!("{v}/backupJobs?$filter=status%20ne%20'Completed'"),
        None,
    );
    assert_eq!(error_code(r, 400), "BMSUserErrorInvalidFilter");
    let r = s.req(
        "GET",
        &format!("{v}/backupJobs?$skipToken=%%%garbage"),
        None,
    );
    assert_eq!(error_code(r, 400), "BMSUserErrorInvalidSkipToken");

    // Backup of an item that is not protected.
    let r = s.req(
        "POST",
        &format!("{}/backup", s.share_item(&v)),
        Some(json!({"properties": {"objectType": "AzureFileShareBackupRequest"}})),
    );
    assert_eq!(error_code(r, 400), "BMSUserErrorItemNotProtected");
    s.protect(&v, &s.share_item(&v));
    let r = s.req("PUT", &s.share_item(&v), Some(json!({"properties": {"protectedItemType": "AzureFileShareProtectedItem", "protectionState": "ProtectionStopped"}})));
    assert_eq!(r.status(), 202);
    let r = s.req(
        "POST",
        &format!("{}/backup", s.share_item(&v)),
        Some(json!({"properties": {"objectType": "AzureFileShareBackupRequest"}})),
    );
    assert_eq!(error_code(r, 400), "BMSUserErrorItemNotProtected");
    let r = s.req(
        "POST",
        &format!("{}/backup", s.share_item(&v)),
        Some(json!({"properties": {"objectType": "IaasVMBackupRequest"}})),
    );
    assert_eq!(error_code(r, 400), "BMSUserErrorInvalidInput");

    // Oversized body.
    let big = "x".repeat(5 << 20);
    let r = s
        .client
        .put(s.url(&s.vault("v3")))
        .bearer_auth(&s.token)
        .body(big)
        .send()
        .unwrap();
    assert_eq!(error_code(r, 413), "RequestEntityTooLarge");

    // A vault with protected items cannot be deleted.
    let r = s.req("DELETE", &v, None);
    assert_eq!(error_code(r, 409), "ServiceResourceNotEmpty");
    assert_eq!(s.req("GET", &v, None).status(), 200);
}

#[test]
fn paths_are_case_insensitive_and_percent_decoded() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let v = s.setup_vault("CaseVault");
    let lower = v
        .to_ascii_lowercase()
        .replace("/subscriptions/", "/Subscriptions/");
    let got = s.get(&lower);
    assert_eq!(got["name"], "CaseVault");
    s.protect(&v, &s.vm_item(&v));
    let encoded = s
        .vm_item(&v)
        .replace(';', "%3B")
        .to_ascii_uppercase()
        .replace("/SUBSCRIPTIONS/", "/subscriptions/")
        .replace("API-VERSION", "api-version");
    let item = s.get(&encoded);
    assert_eq!(item["properties"]["protectionState"], "IRPending");
    // Protected before its first backup is still protected in discovery.
    let pi = s.get(&format!(
        "{v}/backupProtectableItems?$filter=backupManagementType%20eq%20'AzureIaasVM'"
    ));
    assert_eq!(
        pi["value"][0]["properties"]["protectionState"], "Protected",
        "{pi}"
    );
    // A bad filter value is refused even where no item would be compared with it.
    let r = s.req(
        "GET",
        &format!(
            "{}/backupProtectedItems?$filter=backupManagementType%20eq%20'Nope'",
            s.setup_vault("empty")
        ),
        None,
    );
    assert_eq!(r.status(), 400);
    assert_eq!(item["properties"]["friendlyName"], "vm1");
}

#[test]
fn vaults_list_by_group_and_subscription() {
    let env = Env::new();
    let s = Server::start(&env, "");
    s.setup_vault("a1");
    s.setup_vault("a2");
    let by_sub = s.get(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults"
    ));
    assert_eq!(by_sub["value"].as_array().unwrap().len(), 2);
    let by_rg = s.get(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.RecoveryServices/vaults"
    ));
    assert_eq!(by_rg["value"].as_array().unwrap().len(), 2);
    let other = s.get(&format!(
        "/subscriptions/{SUB}/resourceGroups/other/providers/Microsoft.RecoveryServices/vaults"
    ));
    assert_eq!(other["value"].as_array().unwrap().len(), 0);
    let v = s.get(&s.vault("a1"));
    assert_eq!(v["sku"]["name"], "RS0");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    assert_eq!(s.req("DELETE", &s.vault("a1"), None).status(), 204);
    assert_eq!(s.req("GET", &s.vault("a1"), None).status(), 404);
}

#[test]
fn every_route_in_the_openapi_document_is_served() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let v = s.setup_vault("v1");
    let doc = s
        .client
        .get(format!("{}/openapi.json", s.base))
        .bearer_auth(&s.token)
        .send()
        .unwrap();
    assert_eq!(doc.status(), 200);
    let doc: Value = doc.json().unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 25);
    let _ = v;
    for (template, ops) in paths {
        let path = template
            .replace("{subscriptionId}", SUB)
            .replace("{resourceGroupName}", "rg1")
            .replace("{vaultName}", "v1")
            .replace("{fabricName}", "Azure")
            .replace("{containerName}", "StorageContainer;Storage;rg1;acct1")
            .replace("{protectedItemName}", "AzureFileShare;share1")
            .replace("{policyName}", "fspol")
            .replace("{jobName}", "00000000-0000-0000-0000-000000000009")
            .replace("{operationId}", "00000000-0000-0000-0000-000000000009")
            .replace("{recoveryPointId}", "1")
            .replace("{maintenanceOperation}", "garbageCollection");
        for method in ops.as_object().unwrap().keys() {
            if method == "delete" && !path.contains("backupPolicies") {
                continue; // deleting the vault or item would change later answers; both are tested elsewhere
            }
            let r = s.req(
                &method.to_uppercase(),
                &path,
                if method == "get" || method == "delete" {
                    None
                } else {
                    Some(json!({}))
                },
            );
            let status = r.status().as_u16();
            let body: Value = r.json().unwrap_or(Value::Null);
            assert!(status < 500, "{method} {template}: {status} {body}");
            assert_ne!(status, 405, "{method} {template}: {body}");
            assert!(
                !(status == 404 && body["error"]["code"] == "InvalidResourceType"),
                "{method} {template} is in the OpenAPI document but not routed: {body}"
            );
        }
    }
}

#[test]
fn cloud_metadata_is_public_and_points_here() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let r = s
        .client
        .get(format!(
            "{}/metadata/endpoints?api-version=2022-09-01",
            s.base
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().unwrap();
    assert_eq!(m["resourceManager"], format!("{}/", s.base));
    assert_eq!(m["authentication"]["audiences"][0], format!("{}/", s.base));
}

#[test]
fn wire_defects_found_as_a_new_user_are_fixed() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");

    // (b) api-versions older than the first published one are refused.
    let r = s
        .client
        .get(format!("{}{v}?api-version=1999-01-01", s.base))
        .bearer_auth(&s.token)
        .send()
        .unwrap();
    assert_eq!(error_code(r, 400), "InvalidApiVersionParameter");

    // (d) the operations the server emits can be filtered on.
    for op in ["Verify", "GarbageCollection"] {
        let r = s.req(
            "GET",
            &format!("{v}/backupJobs?$filter=operation eq '{op}'"),
            None,
        );
        assert_eq!(r.status(), 200, "{op}: {}", r.text().unwrap());
    }

    // (e) moveReadyRPOnly is an accepted recovery-point filter field.
    let r = s.req(
        "GET",
        &format!("{item}/recoveryPoints?$filter=moveReadyRPOnly eq 'true'"),
        None,
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());

    // (c) restoreFileSpecs must be a list, and nothing is queued when it is not.
    s.backup_completed(&v, &item);
    let rp = s.recovery_points(&item)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let jobs_before = s.get(&format!("{v}/backupJobs"))["value"]
        .as_array()
        .unwrap()
        .len();
    let r = s.req(
        "POST",
        &format!("{item}/recoveryPoints/{rp}/restore"),
        Some(json!({"properties": {
            "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
            "copyOptions": "Overwrite", "restoreRequestType": "ItemLevelRestore",
            "restoreFileSpecs": "a.txt", "targetDetails": {"name": "ilr"}}})),
    );
    assert_eq!(error_code(r, 400), "BMSUserErrorInvalidInput");
    let jobs_after = s.get(&format!("{v}/backupJobs"))["value"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(jobs_before, jobs_after, "a refused restore queued a job");
}

#[test]
fn absolute_urls_keep_the_port_over_http2() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");
    let cert = std::fs::read(s.data.join("tls/cert.pem")).unwrap();
    let h2 = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .post(s.url(&format!("{item}/backup")))
        .bearer_auth(&s.token)
        .json(&json!({"properties": {"objectType": "AzureFileShareBackupRequest"}}))
        .send()
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 202);
    for h in ["location", "azure-asyncoperation"] {
        let url = r.headers()[h].to_str().unwrap();
        assert!(
            url.starts_with(&s.base),
            "{h} {url} lost the origin {}",
            s.base
        );
    }
    // A client-set X-Forwarded-Host is not trusted unless configured.
    let r = s
        .client
        .post(s.url(&format!("{item}/backup")))
        .bearer_auth(&s.token)
        .header("x-forwarded-host", "evil.example")
        .json(&json!({"properties": {"objectType": "AzureFileShareBackupRequest"}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(loc.starts_with(&s.base), "{loc}");
    let _ = v;
}

#[test]
fn public_url_is_the_base_of_every_link() {
    let env = Env::new();
    let s = Server::start(&env, "public_url = \"https://backup.example.com:9443/\"");
    let (_v, item) = s.protected_share("v1");
    let r = s.req(
        "POST",
        &format!("{item}/backup"),
        Some(json!({"properties": {"objectType": "AzureFileShareBackupRequest"}})),
    );
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with("https://backup.example.com:9443/subscriptions/"),
        "{loc}"
    );
}
