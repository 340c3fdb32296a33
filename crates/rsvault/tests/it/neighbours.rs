//! What `az backup` resolves around Recovery Services (issue #14): the Compute and Storage
//! resources of the configured sources, the vault settings it reads, backup status, usage
//! summaries, restore validation, and the route table as the dispatcher's gate.

use serde_json::{json, Value};

use crate::harness::*;

fn rg_path(provider_path: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/{provider_path}")
}

fn error_code(r: reqwest::blocking::Response, status: u16) -> String {
    assert_eq!(r.status(), status);
    let body: Value = r.json().unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A server with a second restore root named as storage account `staging1`, and vm1 placed in
/// `eastus2` by its configuration.
fn start_with_restore_account(env: &Env) -> Server {
    let staging = env.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let root = env.path("restore");
    let text = env
        .config("[scheduler]\nenabled = false")
        .replacen(
            &format!("restore_roots = [\"{}\"]", root.display()),
            &format!(
                "restore_roots = [\"{}\", \"{}\"]",
                root.display(),
                staging.display()
            ),
            1,
        )
        .replacen(
            "name = \"vm1\"\n",
            "name = \"vm1\"\nlocation = \"East US 2\"\n",
            1,
        );
    let text = format!(
        "{text}\n[[restore_account]]\nresource_group = \"rg2\"\nname = \"staging1\"\nroot = \"{}\"\n",
        staging.display()
    );
    let config = env.path("rsvault.toml");
    std::fs::write(&config, text).unwrap();
    Server::start_with(&env.path("data"), &config)
}

#[test]
fn configured_vms_and_storage_accounts_are_served_and_nothing_else() {
    let env = Env::new();
    let s = start_with_restore_account(&env);
    let vm = s.get(&rg_path("Microsoft.Compute/virtualMachines/VM1"));
    assert_eq!(vm["name"], "vm1");
    assert_eq!(vm["type"], "Microsoft.Compute/virtualMachines");
    assert_eq!(
        vm["location"], "eastus2",
        "the configured location, normalised"
    );
    assert_eq!(
        vm["id"],
        rg_path("Microsoft.Compute/virtualMachines/vm1"),
        "{vm}"
    );
    let os = &vm["properties"]["storageProfile"]["osDisk"];
    assert_eq!(os["diskSizeGB"], 1, "{vm}");
    assert_eq!(os["createOption"], "Attach");
    assert_eq!(
        vm["properties"]["storageProfile"]["dataDisks"],
        json!([]),
        "{vm}"
    );
    let again = s.get(&rg_path("Microsoft.Compute/virtualMachines/vm1"));
    assert_eq!(again["properties"]["vmId"], vm["properties"]["vmId"]);

    // Before any vault the share's account has no configured location: the fallback region;
    // afterwards, the region of the first vault.
    let acct = s.get(&rg_path("Microsoft.Storage/storageAccounts/acct1"));
    assert_eq!(acct["location"], "westus");
    assert_eq!(acct["type"], "Microsoft.Storage/storageAccounts");
    let r = s.req(
        "PUT",
        &s.vault("first"),
        Some(json!({"location": "northeurope"})),
    );
    assert_eq!(r.status(), 201);
    let acct = s.get(&rg_path("Microsoft.Storage/storageAccounts/acct1"));
    assert_eq!(acct["location"], "northeurope");
    assert_eq!(acct["properties"]["primaryLocation"], "northeurope");
    let staging = s.get(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg2/providers/Microsoft.Storage/storageAccounts/staging1"
    ));
    assert_eq!(staging["name"], "staging1");

    for path in [
        rg_path("Microsoft.Compute/virtualMachines/nosuchvm"),
        rg_path("Microsoft.Compute/disks/vm1_disk0"),
        rg_path("Microsoft.Storage/storageAccounts/nosuch"),
        rg_path("Microsoft.Storage/storageAccounts/acct1/fileServices/default/shares/share1"),
        rg_path("Microsoft.ClassicStorage/storageAccounts/acct1"),
        // az's generic resource lookup spells an empty resource type as `//`.
        rg_path("Microsoft.ClassicStorage/storageAccounts//acct1"),
        format!(
            "/subscriptions/{SUB}/resourceGroups/other/providers/Microsoft.Compute/virtualMachines/vm1"
        ),
    ] {
        let r = s.req("GET", &path, None);
        assert_eq!(error_code(r, 404), "ResourceNotFound", "{path}");
    }
    // The exact requests `az backup restore …` makes to resolve an account (custom_afs.py,
    // _get_storage_account_id): ClassicStorage first, then Storage, at their old api-versions.
    let classic = format!(
        "{}{}?api-version=2015-12-01",
        s.base,
        rg_path("Microsoft.ClassicStorage/storageAccounts//acct1")
    );
    assert_eq!(
        error_code(s.req("GET", &classic, None), 404),
        "ResourceNotFound"
    );
    let storage = format!(
        "{}{}?api-version=2016-01-01",
        s.base,
        rg_path("Microsoft.Storage/storageAccounts//acct1")
    );
    let r = s.req("GET", &storage, None);
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["name"], "acct1");
    // Recovery Services keeps its own oldest version.
    let old = format!("{}{}?api-version=2016-01-01", s.base, s.vault("first"));
    assert_eq!(
        error_code(s.req("GET", &old, None), 400),
        "InvalidApiVersionParameter"
    );
    let r = s.req(
        "PUT",
        &rg_path("Microsoft.Compute/virtualMachines/vm1"),
        Some(json!({})),
    );
    assert_eq!(r.status(), 405, "read-only");
}

#[test]
fn a_new_vault_has_what_az_expects() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let v = s.setup_vault("v1");
    let p = s.get(&format!("{v}/backupPolicies/DefaultPolicy"));
    assert_eq!(p["properties"]["backupManagementType"], "AzureIaasVM");
    assert_eq!(
        p["properties"]["retentionPolicy"]["dailySchedule"]["retentionDuration"],
        json!({"count": 30, "durationType": "Days"})
    );
    let names: Vec<Value> = s.get(&format!("{v}/backupPolicies"))["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert!(names.contains(&json!("DefaultPolicy")), "{names:?}");

    let enc = s.get(&format!(
        "{v}/backupEncryptionConfigs/backupResourceEncryptionConfig"
    ));
    assert_eq!(
        enc["properties"]["encryptionAtRestType"],
        "MicrosoftManaged"
    );

    let cfg_path = format!("{v}/backupstorageconfig/vaultstorageconfig");
    let cfg = s.get(&cfg_path);
    assert_eq!(cfg["properties"]["storageType"], "LocallyRedundant");
    assert_eq!(cfg["properties"]["crossRegionRestoreFlag"], false);
    let r = s.req(
        "PUT",
        &cfg_path,
        Some(json!({"properties": {"storageType": "LocallyRedundant", "crossRegionRestoreFlag": false}})),
    );
    assert_eq!(r.status(), 200);
    let r = s.req(
        "PATCH",
        &cfg_path,
        Some(json!({"properties": {"storageType": "LocallyRedundant"}})),
    );
    assert_eq!(r.status(), 204);
    for refused in [
        json!({"properties": {"storageType": "GeoRedundant"}}),
        json!({"properties": {"crossRegionRestoreFlag": true}}),
    ] {
        let r = s.req("PATCH", &cfg_path, Some(refused.clone()));
        assert_eq!(error_code(r, 400), "BMSUserErrorInvalidInput", "{refused}");
    }
}

#[test]
fn backup_status_and_usage_follow_protection_and_data() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let v = s.setup_vault("v1");
    let status_url = format!(
        "/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/locations/westus/backupStatus"
    );
    let vm_id = rg_path("Microsoft.Compute/virtualMachines/vm1");
    let ask = |region_url: &str| {
        let r = s.req(
            "POST",
            region_url,
            Some(json!({"resourceType": "VM", "resourceId": vm_id})),
        );
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()
    };
    assert_eq!(ask(&status_url)["protectionStatus"], "NotProtected");
    let usage = |f: &str| s.get(&format!("{v}/backupUsageSummaries{f}"))["value"].clone();
    let count = |u: &Value, name: &str, unit: &str| {
        u.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"]["value"] == name && x["unit"] == unit)
            .map(|x| x["currentValue"].as_i64().unwrap())
            .unwrap_or(-1)
    };
    assert_eq!(count(&usage(""), "AzureIaasVM", "Count"), 0);

    let item = s.vm_item(&v);
    s.protect(&v, &item);
    let st = ask(&status_url);
    assert_eq!(st["protectionStatus"], "Protected", "{st}");
    assert_eq!(st["vaultId"], v);
    assert_eq!(st["policyName"], "vmpol");
    assert_eq!(st["protectedItemName"], "VM;iaasvmcontainerv2;rg1;vm1");
    // Another region has no vault protecting it.
    let elsewhere = ask(&status_url.replace("westus", "eastus"));
    assert_eq!(elsewhere["protectionStatus"], "NotProtected");

    let before = count(&usage(""), "StorageUsage", "Bytes");
    s.backup_completed(&v, &item);
    let u = usage("?$filter=type eq 'BackupProtectedItemCountSummary'");
    assert_eq!(count(&u, "AzureIaasVM", "Count"), 1, "{u}");
    assert_eq!(count(&u, "AzureStorage", "Count"), 0, "{u}");
    assert_eq!(count(&u, "StorageUsage", "Bytes"), -1, "filtered out: {u}");
    let after = count(&usage(""), "StorageUsage", "Bytes");
    assert!(after > before && after > 0, "{before} -> {after}");
    let r = s.req(
        "GET",
        &format!("{v}/backupUsageSummaries?$filter=type eq 'Bogus'"),
        None,
    );
    assert_eq!(error_code(r, 400), "BMSUserErrorInvalidFilter");
}

#[test]
fn restore_validation_runs_the_planner_without_writing() {
    let env = Env::new();
    let s = start_with_restore_account(&env);
    let v = s.setup_vault("v1");
    let item = s.vm_item(&v);
    s.protect(&v, &item);
    s.backup_completed(&v, &item);
    let rp = s.recovery_points(&item)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let staging = format!(
        "/subscriptions/{SUB}/resourceGroups/rg2/providers/Microsoft.Storage/storageAccounts/staging1"
    );
    let request = |account: &str| {
        json!({"id": format!("{item}/recoveryPoints/{rp}"), "properties": {
            "objectType": "ValidateIaasVMRestoreOperationRequest",
            "restoreRequest": {"objectType": "IaasVMRestoreRequest", "recoveryType": "RestoreDisks",
                "recoveryPointId": rp, "sourceResourceId": rg_path("Microsoft.Compute/virtualMachines/vm1"),
                "storageAccountId": account, "region": "westus"}}})
    };
    let results = |body: Value| {
        let r = s.req("POST", &format!("{v}/backupValidateOperation"), Some(body));
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()["validateOperationResponse"]["validationResults"].clone()
    };
    assert_eq!(results(request(&staging)), json!([]));
    let acct1 = rg_path("Microsoft.Storage/storageAccounts/acct1");
    assert_eq!(
        results(request(&acct1)),
        json!([]),
        "file-share accounts stage too"
    );
    let bad = results(request(&rg_path(
        "Microsoft.Storage/storageAccounts/nosuch",
    )));
    assert_eq!(bad[0]["code"], "BMSUserErrorInvalidRestoreTarget", "{bad}");
    assert!(
        std::fs::read_dir(env.path("staging"))
            .unwrap()
            .next()
            .is_none(),
        "validation wrote nothing"
    );

    // The same check as an operation, with its result and status.
    let r = s.req(
        "POST",
        &format!("{v}/backupTriggerValidateOperation"),
        Some(request(&rg_path(
            "Microsoft.Storage/storageAccounts/nosuch",
        ))),
    );
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let status = r.headers()["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(s.get(&status)["status"], "Succeeded");
    let res = s.get(&loc);
    assert_eq!(
        res["validateOperationResponse"]["validationResults"][0]["code"],
        "BMSUserErrorInvalidRestoreTarget",
        "{res}"
    );

    // A real restore staged in the restore account lands below its root.
    let r = s.req(
        "POST",
        &format!("{item}/recoveryPoints/{rp}/restore"),
        Some(json!({"properties": {
        "objectType": "IaasVMRestoreRequest", "recoveryType": "RestoreDisks", "recoveryPointId": rp,
        "sourceResourceId": rg_path("Microsoft.Compute/virtualMachines/vm1"), "storageAccountId": staging,
        "region": "westus"}})),
    );
    let job = s.accepted_job(&v, r);
    assert_eq!(job["properties"]["status"], "Completed", "{job}");
    let target = env
        .path("staging")
        .join(format!("restores/vm1-{rp}/disk0.img"));
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(env.path("vms/disk0.img")).unwrap(),
        "restored disk differs"
    );
}

#[test]
fn routes_outside_the_openapi_document_are_not_served() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let v = s.setup_vault("v1");
    let doc: Value = s
        .client
        .get(format!("{}/openapi.json", s.base))
        .bearer_auth(&s.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    // The routes issue #14 found served but undocumented are now listed.
    for (suffix, method) in [
        ("/protectionContainers/{containerName}/inquire", "post"),
        ("/backupFabrics/{fabricName}/protectableContainers", "get"),
        (
            "/backupFabrics/{fabricName}/protectionContainers/{containerName}",
            "delete",
        ),
        (
            "/protectionContainers/{containerName}/operationResults/{operationId}",
            "get",
        ),
        (
            "/protectionContainers/{containerName}/operationsStatus/{operationId}",
            "get",
        ),
        ("/vaults/{vaultName}/operationStatus/{operationId}", "get"),
        ("/vaults/{vaultName}/operationResults/{operationId}", "get"),
        (
            "/backupPolicies/{policyName}/operationResults/{operationId}",
            "get",
        ),
        (
            "/backupPolicies/{policyName}/operations/{operationId}",
            "get",
        ),
        ("/backupconfig/vaultconfig", "get"),
        ("/backupResourceGuardProxies", "get"),
    ] {
        assert!(
            paths
                .iter()
                .any(|(p, ops)| p.ends_with(suffix) && ops.get(method).is_some()),
            "{method} …{suffix} is served but not in the document"
        );
    }
    // Near misses of documented routes are not answered by any handler.
    for (method, path) in [
        ("GET", format!("{v}/backupJobs/x/y")),
        ("GET", format!("{v}/backupconfig/vaultconfig/extra")),
        ("GET", format!("{v}/backupPolicies/fspol/operationsStatus/x")),
        ("POST", format!("{v}/rsvault/maintenance")),
        ("GET", format!("/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/locations/westus/backupStatus/x")),
    ] {
        let r = s.req(method, &path, None);
        assert_eq!(error_code(r, 404), "InvalidResourceType", "{method} {path}");
    }
    let r = s.req("DELETE", &format!("{v}/backupJobs"), None);
    assert_eq!(error_code(r, 405), "MethodNotAllowed");
}
