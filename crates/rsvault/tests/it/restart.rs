use std::time::{Duration, Instant};

use crate::harness::*;

/// Pids of the `rsvault engine-worker` children of process `parent`.
fn engine_workers_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: state, ppid, ...
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains("engine-worker") {
            out.push(pid);
        }
    }
    out
}

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
    let workers = engine_workers_of(s1.child.id());
    assert!(!workers.is_empty(), "the backup runs in an engine worker");
    let mut s1 = s1;
    s1.kill9();
    drop(s1);
    // The worker dies with its server: no orphan goes on writing into the repository.
    let deadline = Instant::now() + Duration::from_secs(5);
    while workers
        .iter()
        .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "engine worker(s) {workers:?} outlived their server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

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
    assert_eq!(s2.accepted_job(&v, r)["properties"]["status"], "Completed");
    assert_same_tree(&env.path("share"), &env.path("restore/after-crash"));
    let third = s2.backup(&item);
    assert_eq!(s2.wait_job(&v, &third)["properties"]["status"], "Completed");
    assert_eq!(s2.recovery_points(&item).len(), 2);
}

/// A server with vault `v1` and its share protected, started with `failpoints` set.
fn protected_under(env: &Env, failpoints: &str) -> (Server, String, String) {
    let config = env.path("rsvault.toml");
    std::fs::write(&config, env.config("")).unwrap();
    let s = Server::start_with_env(
        &env.path("data"),
        &config,
        &[("RSVAULT_FAILPOINTS", failpoints)],
    );
    let (v, item) = s.protected_share("v1");
    (s, v, item)
}

#[test]
fn a_panicking_job_task_ends_failed_at_once_and_the_server_stays_up() {
    let env = Env::new();
    let (s, v, item) = protected_under(&env, "job.started=panic");
    let j = s.wait_job(&v, &s.backup(&item));
    assert_eq!(j["properties"]["status"], "Failed", "{j}");
    let msg = j["properties"]["errorDetails"][0]["errorString"]
        .as_str()
        .unwrap();
    assert!(msg.contains("panicked"), "{msg}");
    assert!(s.recovery_points(&item).is_empty());
    // The item's lock was released by the unwinding task: the next job is not stuck behind it.
    let next = s.backup(&item);
    assert_eq!(s.wait_job(&v, &next)["properties"]["status"], "Failed");
}

/// Kills the server at `failpoint` during a backup, restarts it without failpoints and returns
/// the job as the new server tells it, with the recovery point count.
fn crash_at(failpoint: &str) -> (serde_json::Value, usize) {
    let env = Env::new();
    let (mut s, v, item) = protected_under(&env, &format!("{failpoint}=abort"));
    // The process may die before it answers: the job is found through the list afterwards.
    let _ = s
        .client
        .post(s.url(&format!("{item}/backup")))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"properties": {"objectType": "AzureFileShareBackupRequest"}}))
        .send();
    s.wait_exit(60);
    let (data, config) = (s.data.clone(), s.config.clone());
    drop(s);
    let s2 = Server::start_with(&data, &config);
    let jobs = s2.get(&format!("{v}/backupJobs?$filter=operation eq 'Backup'"));
    let jobs = jobs["value"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let j = jobs[0].clone();
    let points = s2.recovery_points(&item).len();
    // Whatever the crash left, the next backup of the item works.
    let next = s2.backup(&item);
    assert_eq!(s2.wait_job(&v, &next)["properties"]["status"], "Completed");
    assert_eq!(s2.recovery_points(&item).len(), points + 1);
    (j, points)
}
#[test]
fn crash_after_the_job_started_fails_it_truthfully() {
    let (j, points) = crash_at("job.started");
    assert_eq!(j["properties"]["status"], "Failed", "{j}");
    let msg = j["properties"]["errorDetails"][0]["errorString"]
        .as_str()
        .unwrap();
    assert!(msg.contains("interrupted"), "{msg}");
    assert_eq!(points, 0);
}

#[test]
fn crash_before_the_recovery_point_is_recorded_fails_truthfully() {
    let (j, points) = crash_at("backup.before_record");
    assert_eq!(j["properties"]["status"], "Failed", "{j}");
    assert_eq!(
        points, 0,
        "no point is listed for a job that says it made none"
    );
}

#[test]
fn crash_after_the_recovery_point_is_recorded_keeps_it_and_completes_the_job() {
    let (j, points) = crash_at("backup.after_record");
    assert_eq!(j["properties"]["status"], "Completed", "{j}");
    assert_eq!(points, 1);
    let bag = &j["properties"]["extendedInfo"]["propertyBag"];
    assert!(bag["Recovery Point Id"].is_string(), "{bag}");
}
