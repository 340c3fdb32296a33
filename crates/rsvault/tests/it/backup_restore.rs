use serde_json::{json, Value};

use crate::harness::*;

const ACCT1: &str =
    "/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1";

fn restore(s: &Server, item: &str, rp: &str, props: Value) -> String {
    let r = s.req(
        "POST",
        &format!("{item}/recoveryPoints/{rp}/restore"),
        Some(json!({"properties": props})),
    );
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    let op = r.headers()["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    s.job_of_operation(&op)
}

#[test]
fn file_share_backup_and_restores_are_identical() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");

    let job_id = s.backup(&item);
    let job = s.wait_job(&v, &job_id);
    let p = &job["properties"];
    assert_eq!(p["status"], "Completed", "{job}");
    assert_eq!(p["jobType"], "AzureStorageJob");
    assert_eq!(p["operation"], "Backup");
    assert_eq!(p["entityFriendlyName"], "share1");
    assert!(p["endTime"].is_string() && p["duration"].as_str().unwrap().starts_with("PT"));
    assert_eq!(p["actionsInfo"], json!([]));
    assert_eq!(
        p["extendedInfo"]["propertyBag"]["File Share Name"],
        "share1"
    );
    let tasks = p["extendedInfo"]["tasksList"].as_array().unwrap();
    assert!(
        tasks.iter().all(|t| t["status"] == "Completed"),
        "{tasks:?}"
    );

    let it = s.get(&format!("{item}?$filter=expand%20eq%20'extendedinfo'"));
    assert_eq!(it["properties"]["lastBackupStatus"], "Completed");
    assert_eq!(it["properties"]["protectionState"], "Protected");
    assert_eq!(it["properties"]["extendedInfo"]["recoveryPointCount"], 1);

    let rps = s.recovery_points(&item);
    assert_eq!(rps.len(), 1);
    let rp = rps[0]["name"].as_str().unwrap().to_string();
    assert!(rp.chars().all(|c| c.is_ascii_digit()), "decimal id: {rp}");
    assert_eq!(
        s.get(&format!("{item}/recoveryPoints/{rp}"))["properties"]["objectType"],
        "AzureFileShareRecoveryPoint"
    );

    // Full share to an alternate folder below the restore root.
    let j = restore(
        &s,
        &item,
        &rp,
        json!({
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore",
        "sourceResourceId": "x", "targetDetails": {"name": "full", "targetResourceId": ACCT1}}),
    );
    let done = s.wait_job(&v, &j);
    assert_eq!(done["properties"]["status"], "Completed", "{done}");
    assert_eq!(done["properties"]["operation"], "Restore");
    assert_same_tree(&env.path("share"), &env.path("restore/full"));

    // Item level: one file, into a sub folder.
    let j = restore(
        &s,
        &item,
        &rp,
        json!({
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "copyOptions": "FailOnConflict", "restoreRequestType": "ItemLevelRestore",
        "restoreFileSpecs": [{"path": "sub/deeper/note.md", "fileSpecType": "File", "targetFolderPath": "picked"}],
        "targetDetails": {"name": "ilr"}}),
    );
    assert_eq!(s.wait_job(&v, &j)["properties"]["status"], "Completed");
    let got = std::fs::read(env.path("restore/ilr/picked/sub/deeper/note.md")).unwrap();
    assert_eq!(got, b"# note\n");
    assert!(!env.path("restore/ilr/picked/a.txt").exists());

    // FailOnConflict against what is now there fails the job, truthfully.
    let j = restore(
        &s,
        &item,
        &rp,
        json!({
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "copyOptions": "FailOnConflict", "restoreRequestType": "FullShareRestore",
        "targetDetails": {"name": "full"}}),
    );
    let failed = s.wait_job(&v, &j);
    assert_eq!(failed["properties"]["status"], "Failed", "{failed}");
    assert!(
        failed["properties"]["errorDetails"][0]["errorString"]
            .as_str()
            .unwrap()
            .contains("exists"),
        "{failed}"
    );

    // Original location with Overwrite puts back a changed file.
    std::fs::write(env.path("share/a.txt"), b"changed").unwrap();
    let j = restore(
        &s,
        &item,
        &rp,
        json!({
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "OriginalLocation",
        "copyOptions": "Overwrite", "restoreRequestType": "ItemLevelRestore",
        "restoreFileSpecs": [{"path": "a.txt", "fileSpecType": "File"}]}),
    );
    assert_eq!(s.wait_job(&v, &j)["properties"]["status"], "Completed");
    assert_eq!(
        std::fs::read(env.path("share/a.txt")).unwrap(),
        b"hello rsvault\n"
    );

    // Targets that escape the restore roots are refused before anything runs.
    for name in ["../escape", "/etc", "a/../../b"] {
        let r = s.req("POST", &format!("{item}/recoveryPoints/{rp}/restore"), Some(json!({"properties": {
            "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
            "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore", "targetDetails": {"name": name}}})));
        assert_eq!(r.status(), 400, "{name}");
        let body: Value = r.json().unwrap();
        assert_eq!(
            body["error"]["code"], "BMSUserErrorInvalidRestoreTarget",
            "{name}: {body}"
        );
    }
    std::os::unix::fs::symlink("/tmp", env.path("restore/sneaky")).unwrap();
    let r = s.req("POST", &format!("{item}/recoveryPoints/{rp}/restore"), Some(json!({"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore", "targetDetails": {"name": "sneaky/x"}}})));
    assert_eq!(r.status(), 400);
}

#[test]
fn vm_disk_images_restore_byte_identical_and_cheap_zeros() {
    let env = Env::new();
    let s = Server::start(&env, "worker_memory_mib = 1024");
    let v = s.setup_vault("v1");
    let item = s.vm_item(&v);
    s.protect(&v, &item);
    let job = s.wait_job(&v, &s.backup(&item));
    let p = &job["properties"];
    assert_eq!(p["status"], "Completed", "{job}");
    assert_eq!(p["jobType"], "AzureIaaSVMJob");
    assert_eq!(p["extendedInfo"]["propertyBag"]["VM Name"], "vm1");
    assert_eq!(p["extendedInfo"]["progressPercentage"], 100.0);
    let names: Vec<&str> = p["extendedInfo"]["tasksList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Take Snapshot", "Transfer data to vault"]);

    // 16 MiB image with ~1.5 MiB of data: the repository must not hold the zeros.
    let repo_bytes: u64 = walk_size(&s.data.join("repos"));
    assert!(
        repo_bytes < 6 << 20,
        "repository holds {repo_bytes} bytes for a mostly-zero image"
    );

    let rp = s.recovery_points(&item)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.req(
        "POST",
        &format!("{item}/recoveryPoints/{rp}/restore"),
        Some(json!({"properties": {
        "objectType": "IaasVMRestoreRequest", "recoveryType": "RestoreDisks", "recoveryPointId": rp,
        "sourceResourceId": "x", "storageAccountId": ACCT1, "region": "westus"}})),
    );
    let job = s.accepted_job(&v, r);
    assert_eq!(job["properties"]["status"], "Completed", "{job}");
    let target = job["properties"]["extendedInfo"]["propertyBag"]["Target Path"]
        .as_str()
        .unwrap();
    let restored = std::path::Path::new(target).join("disk0.img");
    assert!(
        std::fs::read(&restored).unwrap() == std::fs::read(env.path("vms/disk0.img")).unwrap(),
        "disk bytes differ"
    );
}

fn walk_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                walk_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

#[test]
fn delete_backup_data_removes_points_and_item() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    // With the vault's soft delete off (it is on by default: see soft_delete.rs).
    let r = s.req(
        "PATCH",
        &v,
        Some(json!({"properties": {"securitySettings": {"softDeleteSettings": {"softDeleteState": "Disabled"}}}})),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = s.req("DELETE", &item, None);
    assert_eq!(r.status(), 202);
    let op = r.headers()["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(op.contains("/backupOperations/"));
    let job_id = s.job_of_operation(&op);
    let job = s.wait_job(&v, &job_id);
    assert_eq!(job["properties"]["operation"], "DeleteBackupData");
    assert_eq!(job["properties"]["status"], "Completed", "{job}");
    assert_eq!(s.req("GET", &item, None).status(), 404);
    assert_eq!(s.req("DELETE", &v, None).status(), 204);
}

/// Issue #9: a restore queued behind a running backup, whose target folder is swapped for a
/// symlink after the request was accepted, must not write outside the restore root.
#[test]
fn a_target_swapped_for_a_symlink_while_queued_is_not_followed() {
    let env = Env::new();
    let s = Server::start(&env, "[limits]\nbackup_bytes_per_second = 2097152");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let rp = s.recovery_points(&item)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // A slow second backup holds the item; the restore waits behind it.
    let big: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761).rotate_left(3) >> 2) as u8)
        .collect();
    std::fs::write(env.path("share/big.bin"), &big).unwrap();
    let slow = s.backup(&item);
    std::fs::create_dir_all(env.path("restore/t1")).unwrap();
    let j = restore(
        &s,
        &item,
        &rp,
        json!({
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore",
        "targetDetails": {"name": "t1"}}),
    );
    assert_eq!(
        s.get(&format!("{v}/backupJobs/{j}"))["properties"]["status"],
        "InProgress"
    );
    // Swapped after acceptance: the target now points outside every restore root.
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::remove_dir(env.path("restore/t1")).unwrap();
    std::os::unix::fs::symlink(&outside, env.path("restore/t1")).unwrap();

    assert_eq!(s.wait_job(&v, &slow)["properties"]["status"], "Completed");
    let done = s.wait_job(&v, &j);
    assert_eq!(done["properties"]["status"], "Failed", "{done}");
    let written: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(
        written.is_empty(),
        "the restore wrote outside its root: {written:?}"
    );
}
