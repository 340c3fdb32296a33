use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn kill_9_mid_backup_fails_the_job_truthfully_and_keeps_earlier_points() {
    let env = Env::new();
    let s1 = Server::start(&env, "[limits]\nbackup_bytes_per_second = 4194304");
    let v = s1.setup_vault("v1");
    let item = s1.share_item(&v);
    s1.protect(&v, &item);
    let first = s1.backup(&item);
    assert_eq!(s1.wait_job(&v, &first)["properties"]["status"], "Completed");
    let rp = s1.recovery_points(&item)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // A second backup with much more data, killed mid-flight.
    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761).rotate_left(7) >> 3) as u8)
        .collect();
    std::fs::write(env.path("share/later.bin"), &big).unwrap();
    let second = s1.backup(&item);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = s1.get(&format!("{v}/backupJobs/{second}"));
        if j["properties"]["extendedInfo"]["propertyBag"]
            .get("Bytes Done")
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (data, config) = (s1.data.clone(), s1.config.clone());
    let mut s1 = s1;
    s1.kill9();
    drop(s1);

    std::fs::remove_file(env.path("share/later.bin")).unwrap();
    let s2 = Server::start_with(&data, &config);
    let j = s2.get(&format!("{v}/backupJobs/{second}"));
    assert_eq!(j["properties"]["status"], "Failed", "{j}");
    let msg = j["properties"]["errorDetails"][0]["errorString"]
        .as_str()
        .unwrap();
    assert!(msg.contains("interrupted"), "{msg}");
    assert_eq!(s2.recovery_points(&item).len(), 1);

    // The earlier point restores identically and the next backup succeeds.
    let r = s2.req("POST", &format!("{item}/recoveryPoints/{rp}/restore"), Some(serde_json::json!({"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore", "targetDetails": {"name": "after-crash"}}})));
    assert_eq!(r.status(), 202);
    let job = s2.job_of_operation(r.headers()["azure-asyncoperation"].to_str().unwrap());
    assert_eq!(s2.wait_job(&v, &job)["properties"]["status"], "Completed");
    assert_same_tree(&env.path("share"), &env.path("restore/after-crash"));
    let third = s2.backup(&item);
    assert_eq!(s2.wait_job(&v, &third)["properties"]["status"], "Completed");
    assert_eq!(s2.recovery_points(&item).len(), 2);
}
