//! Issue #5: schedules with an injected clock, two schedulers on one store, garbage collection
//! next to a running backup, verification finding damage, job-history retention.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use crate::harness::*;

pub fn in_process_service(s: &Server) -> std::sync::Arc<rsvault_jobs::service::Service> {
    // Each in-process service stands for a node of its own.
    static NODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut config = rsvault_jobs::config::Config::load(&s.config).unwrap();
    let n = NODES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    config.node.id = Some(format!("in-process-{n}"));
    let svc = rsvault::server::open_service(
        &s.data,
        config,
        (
            env!("CARGO_BIN_EXE_rsvault").into(),
            vec!["engine-worker".into()],
        ),
    )
    .unwrap();
    // Jobs the scheduler creates run through this service's own dispatcher (call from inside
    // a runtime).
    tokio::spawn(rsvault_jobs::runner::dispatch(svc.clone()));
    svc
}

fn backup_jobs(s: &Server, v: &str, user: bool) -> Vec<Value> {
    let all = s.get(&format!("{v}/backupJobs?$filter=operation%20eq%20'Backup'"));
    all["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["properties"]["isUserTriggered"] == json!(user))
        .cloned()
        .collect()
}

#[test]
fn two_schedulers_never_double_run_and_missed_runs_run_once() {
    let env = Env::new();
    // Garbage collection every 48 hours, not the default 24: the first tick below (03:00 the next
    // day) is up to 27 hours after the vault is made, so with 24 a run between 00:00 and 03:00
    // UTC found the young vault's first collection already due.
    let s = Server::start(
        &env,
        "[scheduler]\nenabled = false\n[maintenance]\ngc_interval_hours = 48",
    );
    let v = s.setup_vault("v1"); // policies run daily at 02:00 UTC
    let item = s.share_item(&v);
    s.protect(&v, &item);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let a = in_process_service(&s);
    let b = in_process_service(&s);

    let today = Utc::now().date_naive();
    let next_day_3am =
        Utc.from_utc_datetime(&(today + chrono::Days::new(1)).and_hms_opt(3, 0, 0).unwrap());
    let ra = rsvault_jobs::scheduler::tick(&a, next_day_3am).unwrap();
    let rb = rsvault_jobs::scheduler::tick(&b, next_day_3am).unwrap();
    assert!(
        ra.leader && !rb.leader,
        "one scheduler leads: {ra:?} {rb:?}"
    );
    assert_eq!(ra.backups_started, 1);
    assert_eq!(
        ra.maintenance_started, 0,
        "a vault younger than the GC interval needs none"
    );
    // Even once the lease has expired and the other node takes over, the slot is not re-run.
    let later = next_day_3am + chrono::Duration::hours(1);
    let rb = rsvault_jobs::scheduler::tick(&b, later).unwrap();
    assert!(rb.leader);
    assert_eq!(rb.backups_started, 0);
    let scheduled = backup_jobs(&s, &v, false);
    assert_eq!(scheduled.len(), 1);
    let job = scheduled[0]["name"].as_str().unwrap().to_string();
    assert_eq!(s.wait_job(&v, &job)["properties"]["status"], "Completed");
    // Every job of the vault finished before the next tick.
    for j in s.get(&format!("{v}/backupJobs"))["value"]
        .as_array()
        .unwrap()
    {
        s.wait_job(&v, j["name"].as_str().unwrap());
    }

    // Down for four days: one catch-up run, not four.
    let after_outage = next_day_3am + chrono::Duration::days(4);
    let r = rsvault_jobs::scheduler::tick(&b, after_outage).unwrap();
    assert_eq!(r.backups_started, 1);
    assert_eq!(
        r.maintenance_started,
        1,
        "garbage collection (every 48 hours) is due, verification (weekly) is not: {}",
        s.get(&format!("{v}/backupJobs"))
    );
    assert_eq!(
        rsvault_jobs::scheduler::tick(&b, after_outage + chrono::Duration::minutes(1))
            .unwrap()
            .backups_started,
        0
    );
    let scheduled = backup_jobs(&s, &v, false);
    assert_eq!(scheduled.len(), 2);
    for j in &scheduled {
        s.wait_job(&v, j["name"].as_str().unwrap());
    }
    let rps = s.recovery_points(&item);
    assert_eq!(rps.len(), 2);

    // Job history retention: 200 days on, finished jobs are deleted (in batches).
    let old: Vec<String> = scheduled
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    let r = rsvault_jobs::scheduler::tick(&b, after_outage + chrono::Duration::days(200)).unwrap();
    assert!(r.jobs_deleted >= 3, "{r:?}");
    for id in old {
        assert_eq!(
            s.req("GET", &format!("{v}/backupJobs/{id}"), None).status(),
            404,
            "job {id} outlived history retention"
        );
    }
}

#[test]
fn gc_next_to_a_running_backup_keeps_what_the_backup_references() {
    let env = Env::new();
    let s = Server::start(
        &env,
        "[scheduler]\nenabled = false\n[limits]\nbackup_bytes_per_second = 4194304",
    );
    let (v, item) = s.protected_share("v1");

    // A first point that expires in two seconds.
    let expiry = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let r = s.req("POST", &format!("{item}/backup"), Some(json!({"properties": {"objectType": "AzureFileShareBackupRequest", "recoveryPointExpiryTimeInUTC": expiry}})));
    assert_eq!(s.accepted_job(&v, r)["properties"]["status"], "Completed");

    // A second, slow backup; garbage collection is requested while it runs.
    let big: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761).rotate_left(11) >> 2) as u8)
        .collect();
    std::fs::write(env.path("share/new.bin"), &big).unwrap();
    let second = s.backup(&item);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get(&format!("{v}/backupJobs/{second}"))["properties"]["extendedInfo"]["propertyBag"]
        .get("Bytes Done")
        .is_none()
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = s.req(
        "POST",
        &format!("{v}/rsvault/maintenance/garbageCollection"),
        None,
    );
    assert_eq!(r.status(), 202);
    let gc = s.job_of_operation(r.headers()["azure-asyncoperation"].to_str().unwrap());
    let gc_job = s.wait_job(&v, &gc);
    assert_eq!(gc_job["properties"]["status"], "Completed", "{gc_job}");
    assert_eq!(gc_job["properties"]["jobType"], "VaultJob");
    assert_eq!(gc_job["properties"]["operation"], "GarbageCollection");
    let backup_job = s.wait_job(&v, &second);
    assert_eq!(backup_job["properties"]["status"], "Completed");
    // The GC waited for the backup (it needs the vault exclusively).
    assert!(
        gc_job["properties"]["endTime"].as_str().unwrap()
            >= backup_job["properties"]["endTime"].as_str().unwrap()
    );
    assert_eq!(
        gc_job["properties"]["extendedInfo"]["propertyBag"]["Recovery Points Expired"],
        "1"
    );

    let rps = s.recovery_points(&item);
    assert_eq!(rps.len(), 1, "the expired point is gone, the new one stays");
    let rp = rps[0]["name"].as_str().unwrap();
    let r = s.req("POST", &format!("{item}/recoveryPoints/{rp}/restore"), Some(json!({"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore", "targetDetails": {"name": "after-gc"}}})));
    let job = s.job_of_operation(r.headers()["azure-asyncoperation"].to_str().unwrap());
    assert_eq!(s.wait_job(&v, &job)["properties"]["status"], "Completed");
    assert_same_tree(&env.path("share"), &env.path("restore/after-gc"));

    // Full verification of what is left passes.
    let r = s.req(
        "POST",
        &format!("{v}/rsvault/maintenance/verify"),
        Some(json!({"readDataPercent": 100})),
    );
    let vj = s.wait_job(
        &v,
        &s.job_of_operation(r.headers()["azure-asyncoperation"].to_str().unwrap()),
    );
    assert_eq!(vj["properties"]["status"], "Completed", "{vj}");
    let it = s.get(&item);
    assert!(it["properties"]["lastVerifiedTime"].is_string(), "{it}");
}

#[test]
fn verification_names_damage_and_flags_the_item() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);

    // Flip a byte in every data pack of the vault's repository.
    let mut packs = Vec::new();
    let repos = s.data.join("repos");
    collect_files(&repos, &mut packs);
    // repos/<sub>/<rg>/<vault>/data/<xx>/<pack>
    let packs: Vec<_> = packs
        .into_iter()
        .filter(|p| {
            p.strip_prefix(&repos)
                .unwrap()
                .iter()
                .nth(3)
                .is_some_and(|c| c == "data")
        })
        .collect();
    assert!(!packs.is_empty());
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        std::fs::write(p, b).unwrap();
    }
    let r = s.req(
        "POST",
        &format!("{v}/rsvault/maintenance/verify"),
        Some(json!({"readDataPercent": 100})),
    );
    assert_eq!(r.status(), 202);
    let job = s.wait_job(
        &v,
        &s.job_of_operation(r.headers()["azure-asyncoperation"].to_str().unwrap()),
    );
    assert_eq!(
        job["properties"]["status"], "CompletedWithWarnings",
        "{job}"
    );
    let errors = job["properties"]["errorDetails"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["errorString"]
            .as_str()
            .unwrap()
            .contains("failed verification")),
        "{job}"
    );
    let it = s.get(&item);
    assert_eq!(it["properties"]["healthStatus"], "ActionRequired", "{it}");
}

pub(crate) fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn retention_preview_explains_each_point() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let p = s.get(&format!("{v}/rsvault/retentionPreview"));
    let pts = p["items"][0]["points"].as_array().unwrap();
    assert_eq!(pts.len(), 1);
    assert_eq!(pts[0]["keep"], true);
    assert!(
        pts[0]["reason"].as_str().unwrap().contains("on-demand"),
        "{p}"
    );
    // A year later the on-demand default has passed, but it is the item's last point.
    let later = (Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let p = s.get(&format!(
        "{v}/rsvault/retentionPreview?at={}",
        crate::jobs::urlencode(&later)
    ));
    let d = &p["items"][0]["points"][0];
    assert_eq!(d["keep"], true);
    assert!(d["reason"].as_str().unwrap().contains("newest"), "{p}");

    // The CLI shows the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsvault"))
        .args([
            "retention",
            "preview",
            "--vault",
            &v,
            "--url",
            &s.base,
            "--data",
        ])
        .arg(&s.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("AzureFileShare;share1") && text.contains("KEEP"),
        "{text}"
    );
}
