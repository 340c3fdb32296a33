use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

#[test]
fn job_list_filters_and_pages_newest_first() {
    let env = Env::new();
    let s = Server::start(&env, "page_size = 2");
    let v = s.setup_vault("v1");
    let share = s.share_item(&v);
    let vm = s.vm_item(&v);
    s.protect(&v, &share);
    s.protect(&v, &vm);
    let b1 = s.backup(&share);
    s.wait_job(&v, &b1);
    let b2 = s.backup(&vm);
    s.wait_job(&v, &b2);

    // 2 ConfigureBackup + 2 Backup jobs, 2 per page.
    let mut all = Vec::new();
    let mut page = s.get(&format!("{v}/backupJobs"));
    loop {
        let vals = page["value"].as_array().unwrap();
        assert!(vals.len() <= 2);
        all.extend(vals.iter().cloned());
        match page.get("nextLink").and_then(Value::as_str) {
            Some(next) => {
                assert!(
                    next.starts_with("https://")
                        && next.contains("api-version=")
                        && next.contains("skipToken="),
                    "{next}"
                );
                page = s.get(next);
            }
            None => break,
        }
    }
    assert_eq!(all.len(), 4);
    let starts: Vec<&str> = all
        .iter()
        .map(|j| j["properties"]["startTime"].as_str().unwrap())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(starts, sorted, "newest first");
    assert_eq!(all[0]["name"], b2.as_str());

    let only_backups = s.get(&format!(
        "{v}/backupJobs?$filter=operation%20eq%20'Backup'%20and%20status%20eq%20'Completed'"
    ));
    let mut n = only_backups["value"].as_array().unwrap().len();
    if let Some(next) = only_backups.get("nextLink").and_then(Value::as_str) {
        assert!(next.contains("filter="), "{next}");
        n += s.get(next)["value"].as_array().unwrap().len();
    }
    assert_eq!(n, 2);
    let vm_only = s.get(&format!("{v}/backupJobs?$filter=backupManagementType%20eq%20'AzureIaasVM'%20and%20operation%20eq%20'Backup'"));
    assert_eq!(vm_only["value"].as_array().unwrap().len(), 1);
    assert_eq!(
        vm_only["value"][0]["properties"]["jobType"],
        "AzureIaaSVMJob"
    );

    // The Azure CLI's time spelling, as a window on start time.
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %I:%M:%S %p").to_string();
    let f = format!(
        "startTime eq '{}' and endTime eq '{}'",
        fmt(now - chrono::Duration::hours(1)),
        fmt(now + chrono::Duration::hours(1))
    );
    let url = format!("{v}/backupJobs?$filter={}", urlencode(&f));
    assert_eq!(s.get(&url)["value"].as_array().unwrap().len(), 2);
    let f = format!(
        "startTime eq '{}' and endTime eq '{}'",
        fmt(now - chrono::Duration::days(3)),
        fmt(now - chrono::Duration::days(2))
    );
    assert_eq!(
        s.get(&format!("{v}/backupJobs?$filter={}", urlencode(&f)))["value"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let by_id = s.get(&format!("{v}/backupJobs?$filter=jobId%20eq%20'{b1}'"));
    assert_eq!(by_id["value"][0]["name"], b1.as_str());
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn cancel_stops_a_running_backup_without_a_recovery_point() {
    let env = Env::new();
    // 64 MiB of incompressible data read at 4 MiB/s: the backup runs long enough to cancel.
    let big: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2246822519).rotate_left(13) >> 5) as u8)
        .collect();
    std::fs::write(env.path("share/huge.bin"), &big).unwrap();
    let s = Server::start(&env, "[limits]\nbackup_bytes_per_second = 4194304");
    let (v, item) = s.protected_share("v1");
    let job = s.backup(&item);

    // Wait until it really runs and reports progress.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = s.get(&format!("{v}/backupJobs/{job}"));
        assert_eq!(j["properties"]["status"], "InProgress", "{j}");
        assert_eq!(j["properties"]["actionsInfo"], json!(["Cancellable"]));
        if j["properties"]["extendedInfo"]["propertyBag"]
            .get("Bytes Done")
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no progress reported: {j}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = s.req("POST", &format!("{v}/backupJobs/{job}/cancel"), None);
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.contains(&format!("/backupJobs/{job}/operationResults/")),
        "{loc}"
    );
    let t0 = Instant::now();
    let done = s.wait_job(&v, &job);
    assert_eq!(done["properties"]["status"], "Cancelled", "{done}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "cancel took {:?}",
        t0.elapsed()
    );
    assert_eq!(done["properties"]["actionsInfo"], json!([]));
    let res = s.req("GET", &loc, None);
    assert!(
        res.status() == 204 || res.status() == 200,
        "{}",
        res.status()
    );
    assert!(
        s.recovery_points(&item).is_empty(),
        "a cancelled backup left a recovery point"
    );

    // Cancelling a finished job is a client error that says why.
    let r = s.req("POST", &format!("{v}/backupJobs/{job}/cancel"), None);
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Cancelled"),
        "{body}"
    );
}

#[test]
fn export_writes_a_signed_json_listing() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let v = s.setup_vault("v1");
    s.protect(&v, &s.share_item(&v));
    let r = s.req(
        "POST",
        &format!("{v}/backupJobsExport?$filter=operation%20eq%20'ConfigureBackup'"),
        None,
    );
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.contains("/backupJobs/operationResults/"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        let r = s.req("GET", &loc, None);
        let code = r.status().as_u16();
        let body: Value = r.json().unwrap();
        assert_eq!(
            body["operation"]["objectType"],
            "ExportJobsOperationResultInfo"
        );
        if code == 200 {
            break body;
        }
        assert_eq!(code, 202);
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    };
    let url = format!(
        "{}{}",
        result["operation"]["blobUrl"].as_str().unwrap(),
        result["operation"]["blobSasKey"].as_str().unwrap()
    );
    let exported: Value = s.client.get(&url).send().unwrap().json().unwrap();
    assert_eq!(exported["truncated"], false);
    let jobs = exported["value"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["properties"]["operation"], "ConfigureBackup");
    // A tampered signature is refused.
    let r = s.client.get(url.replace("sig=", "sig=0")).send().unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn jobs_past_the_node_cap_wait_queued_and_say_why() {
    let env = Env::new();
    let s = Server::start(
        &env,
        "[limits]\nbackup_bytes_per_second = 2097152\n[runner]\nmax_concurrent_jobs = 1",
    );
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761).rotate_left(5) >> 3) as u8)
        .collect();
    std::fs::write(env.path("share/big.bin"), &big).unwrap();
    let (v, share) = s.protected_share("v1");
    let vm = s.vm_item(&v);
    s.protect(&v, &vm);

    let first = s.backup(&share);
    let second = s.backup(&vm);
    // The dispatcher writes why a job waits on its next pass (at most a second away).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let j = loop {
        let j = s.get(&format!("{v}/backupJobs/{second}"));
        let said = j["properties"]["extendedInfo"]["propertyBag"]
            .get("Queued")
            .is_some();
        if said || std::time::Instant::now() > deadline {
            break j;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(j["properties"]["status"], "InProgress");
    let queued = j["properties"]["extendedInfo"]["propertyBag"]["Queued"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(queued.contains("runner slot"), "{j}");
    assert_eq!(
        s.get(&format!("{v}/backupJobs/{first}"))["properties"]["status"],
        "InProgress"
    );

    assert_eq!(s.wait_job(&v, &first)["properties"]["status"], "Completed");
    let done = s.wait_job(&v, &second);
    assert_eq!(done["properties"]["status"], "Completed", "{done}");
    assert!(
        done["properties"]["extendedInfo"]["propertyBag"]
            .get("Queued")
            .is_none(),
        "{done}"
    );
}
