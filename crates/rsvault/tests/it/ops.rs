//! Issue #13, the operator's view: quick-start flags and the README's quick start, health and
//! readiness, Prometheus metrics (checked by `promtool`), job logs (pages, the event stream, the
//! CLI) and staleness.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::harness::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `promtool ARGS` with `stdin`; fails the test when promtool is missing (CI installs it:
/// a metrics test that skips itself would pass without checking anything).
fn promtool(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (apt-get install prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn rsvault(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rsvault"))
        .args(args)
        .output()
        .unwrap()
}

/// `rsvault serve` with `args` until it exits (it must, quickly): its exit status and stderr.
fn serve_fails(data: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rsvault"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn get_text(s: &Server, path: &str, token: bool) -> (u16, String) {
    let mut rb = s.client.get(format!("{}{path}", s.base));
    if token {
        rb = rb.bearer_auth(&s.token);
    }
    let r = rb.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn readme_quick_start_runs_as_written() {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/quickstart.sh"))
        .arg(env!("CARGO_BIN_EXE_rsvault"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("restored: demo/restores/first"), "{stdout}");
}

#[test]
fn serve_flags_add_sources_and_restore_roots_without_a_config_file() {
    let env = Env::new();
    let share = format!("rg1/acct1/share1={}", env.path("share").display());
    let disk = format!("rg1/vm1={}", env.path("vms/disk0.img").display());
    let root = env.path("restore");
    let s = Server::start_with_args(
        &env.path("data"),
        &[
            "--share".as_ref(),
            share.as_ref(),
            "--disk".as_ref(),
            disk.as_ref(),
            "--restore-root".as_ref(),
            root.as_os_str(),
        ],
        &[],
    );
    let vm = s.get(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
    ));
    assert_eq!(vm["name"], "vm1", "{vm}");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let rp = s.recovery_points(&item)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.req(
        "POST",
        &format!("{item}/recoveryPoints/{rp}/restore"),
        Some(json!({"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore",
        "targetDetails": {"name": "back"}}})),
    );
    let job = s.accepted_job(&v, r);
    assert_eq!(job["properties"]["status"], "Completed", "{job}");
    assert_same_tree(&env.path("share"), &root.join("back"));
}

#[test]
fn serve_flags_merge_with_the_config_file_and_refuse_what_is_ambiguous() {
    let env = Env::new();
    let config = env.path("rsvault.toml");
    std::fs::write(&config, env.config("")).unwrap();
    let other = env.path("other");
    std::fs::create_dir_all(&other).unwrap();
    let share2 = format!("rg2/acct2/share2={}", other.display());
    let data = env.path("data");
    let s = Server::start_with_args(
        &data,
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--share".as_ref(),
            share2.as_ref(),
        ],
        &[],
    );
    let v = s.setup_vault("v1");
    let r = s.req(
        "POST",
        &format!("{v}/backupFabrics/Azure/refreshContainers?$filter=backupManagementType%20eq%20'AzureStorage'"),
        None,
    );
    assert_eq!(r.status(), 202);
    let items = s.get(&format!(
        "{v}/backupProtectableItems?$filter=backupManagementType%20eq%20'AzureStorage'"
    ));
    let names: Vec<&str> = items["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["properties"]["friendlyName"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"share1") && names.contains(&"share2"),
        "{items}"
    );
    drop(s);

    let cfg = config.to_str().unwrap();
    let again = format!("rg1/acct1/share1={}", other.display());
    let err = serve_fails(&data, &["--config", cfg, "--share", &again]);
    assert!(
        err.contains("share 'acct1/share1' is declared twice"),
        "{err}"
    );
    let err = serve_fails(
        &data,
        &[
            "--config",
            cfg,
            "--disk",
            &format!("rg1/vm1={}", other.display()),
        ],
    );
    assert!(
        err.contains("VM 'rg1/vm1' is already in the config file"),
        "{err}"
    );
    let err = serve_fails(&data, &["--share", "acct1/share1"]);
    assert!(
        err.contains("must be RESOURCE_GROUP/ACCOUNT/SHARE=PATH"),
        "{err}"
    );
    let err = serve_fails(&data, &["--share", "rg1/Bad_Account/s=/tmp"]);
    assert!(err.contains("3-24 lowercase letters and digits"), "{err}");
}

#[test]
fn health_needs_no_token_and_readiness_follows_the_repository_location() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let (code, body) = get_text(&s, "/healthz", false);
    assert_eq!((code, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (code, body) = get_text(&s, "/readyz", false);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["checks"], json!({"store": "ok", "repository": "ok"}));

    let repos = s.data.join("repos");
    let moved = s.data.join("repos-away");
    std::fs::rename(&repos, &moved).unwrap();
    let (code, body) = get_text(&s, "/readyz", false);
    assert_eq!(code, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["checks"]["store"], "ok");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("repository: the repository location") && reason.ends_with("is missing"),
        "{v}"
    );
    // Still alive while not ready.
    assert_eq!(get_text(&s, "/healthz", false).0, 200);

    std::fs::rename(&moved, &repos).unwrap();
    assert_eq!(get_text(&s, "/readyz", false).0, 200);
    // Everything else still wants the token.
    assert_eq!(get_text(&s, "/openapi.json", false).0, 401);
}

/// The value of the sample `name{labels}` in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_jobs_and_items_and_pass_promtool() {
    let env = Env::new();
    let s = Server::start(&env, "");
    let (code, body) = get_text(&s, "/metrics", false);
    assert_eq!(code, 401, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"].is_string());

    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    // A backup whose share has gone fails.
    std::fs::rename(env.path("share"), env.path("share-away")).unwrap();
    let failed = s.wait_job(&v, &s.backup(&item));
    assert_eq!(failed["properties"]["status"], "Failed", "{failed}");
    std::fs::rename(env.path("share-away"), env.path("share")).unwrap();

    let r = s
        .client
        .get(format!("{}/metrics", s.base))
        .bearer_auth(&s.token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().unwrap();
    let check = promtool(&["check", "metrics"], &text);
    assert!(
        check.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    for (series, value) in [
        (
            r#"rsvault_jobs_total{operation="Backup",status="Completed"}"#,
            1.0,
        ),
        (
            r#"rsvault_jobs_total{operation="Backup",status="Failed"}"#,
            1.0,
        ),
        (
            r#"rsvault_job_duration_seconds_count{operation="Backup"}"#,
            2.0,
        ),
        ("rsvault_jobs_running", 0.0),
        ("rsvault_jobs_queued", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
    }
    let vault = format!("{SUB}/rg1/v1");
    let it = "StorageContainer;Storage;rg1;acct1/AzureFileShare;share1";
    let last = sample(
        &text,
        &format!(r#"rsvault_protected_item_last_success_timestamp_seconds{{item="{it}",vault="{vault}"}}"#),
    )
    .unwrap_or_else(|| panic!("no last-success sample:\n{text}"));
    let rp_time = chrono::DateTime::parse_from_rfc3339(
        s.recovery_points(&item)[0]["properties"]["recoveryPointTime"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(
        (last - rp_time.timestamp_millis() as f64 / 1000.0).abs() < 1.0,
        "{last} vs {rp_time}"
    );
    let size = sample(
        &text,
        &format!(r#"rsvault_repository_size_bytes{{vault="{vault}"}}"#),
    )
    .unwrap();
    let usage = s.get(&format!(
        "{v}/backupUsageSummaries?$filter=type%20eq%20'BackupStorageUsageSummary'"
    ));
    assert_eq!(
        Some(size),
        usage["value"][0]["currentValue"].as_f64(),
        "{usage}"
    );
    assert!(size > 100_000.0, "the repository holds the share: {size}");
    assert_eq!(
        sample(
            &text,
            &format!(r#"rsvault_protected_item_stale{{item="{it}",vault="{vault}"}}"#)
        ),
        Some(0.0)
    );
    let ok_gets = sample(
        &text,
        r#"rsvault_http_requests_total{method="GET",status="200"}"#,
    )
    .unwrap();
    assert!(ok_gets >= 3.0, "{text}");
    assert!(
        sample(
            &text,
            r#"rsvault_http_requests_total{method="GET",status="401"}"#
        ) >= Some(1.0)
    );
}

#[test]
fn public_metrics_need_no_token() {
    let env = Env::new();
    let s = Server::start(&env, "[metrics]\npublic = true");
    let (code, text) = get_text(&s, "/metrics", false);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("# TYPE rsvault_jobs_running gauge"), "{text}");
    // Public metrics open nothing else.
    assert_eq!(get_text(&s, "/openapi.json", false).0, 401);
}

#[test]
fn example_alert_rules_pass_promtool() {
    let rules = repo_root().join("contrib/prometheus/rsvault-alerts.yml");
    let check = promtool(&["check", "rules", rules.to_str().unwrap()], "");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The rules' own unit tests: each alert fires on the series it is about, and only then.
    let tests = repo_root().join("contrib/prometheus/rsvault-alerts.test.yml");
    let run = promtool(&["test", "rules", tests.to_str().unwrap()], "");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

fn log(s: &Server, v: &str, job: &str, query: &str) -> Value {
    s.get(&format!("{v}/backupJobs/{job}/rsvault/log{query}"))
}

#[test]
fn a_job_log_streams_while_the_backup_runs_and_pages_after() {
    let env = Env::new();
    // About 3 s for the 3 MB share: the stream is open while the job runs.
    let s = Server::start(&env, "[limits]\nbackup_bytes_per_second = 1000000");
    let (v, item) = s.protected_share("v1");
    std::fs::write(env.path("share/unreadable"), b"secret").unwrap();
    std::fs::set_permissions(
        env.path("share/unreadable"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let job = s.backup(&item);
    let resp = s
        .client
        .get(s.url(&format!("{v}/backupJobs/{job}/rsvault/log")))
        .bearer_auth(&s.token)
        .header("accept", "text/event-stream")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut ids = Vec::new();
    let mut msgs = Vec::new();
    let mut saw_active = false;
    let mut ended = false;
    for line in BufReader::new(resp).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("id: ") {
            ids.push(id.parse::<i64>().unwrap());
        } else if let Some(d) = line.strip_prefix("data: ") {
            let d: Value = serde_json::from_str(d).unwrap();
            if let Some(m) = d["msg"].as_str() {
                msgs.push(m.to_string());
                if !ended && m.starts_with("Phase") {
                    // Lines arrive while the job is still running.
                    saw_active |= s.get(&format!("{v}/backupJobs/{job}"))["properties"]["status"]
                        == "InProgress";
                }
            }
        } else if line == "event: end" {
            ended = true;
        }
    }
    assert!(ended, "the stream ended without an end event: {msgs:?}");
    // Root reads any file: the skipped-file warning is only there for other users.
    let root = nix::unistd::Uid::effective().is_root();
    assert!(saw_active, "no line arrived while the job ran: {msgs:?}");
    assert_eq!(ids, (0..ids.len() as i64).collect::<Vec<_>>(), "{msgs:?}");
    assert!(msgs[0].starts_with("Backup started on node"), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.starts_with("Phase Transferring")),
        "{msgs:?}"
    );
    assert!(
        root || msgs
            .iter()
            .any(|m| m.starts_with("Skipped ") && m.contains("unreadable")),
        "{msgs:?}"
    );
    let end = if root {
        "Job ended Completed."
    } else {
        "Job ended CompletedWithWarnings."
    };
    assert_eq!(msgs.last().map(String::as_str), Some(end), "{msgs:?}");

    // A reconnecting EventSource resumes after the last line it saw; an ended job's stream ends.
    let resumed = s
        .client
        .get(s.url(&format!("{v}/backupJobs/{job}/rsvault/log")))
        .bearer_auth(&s.token)
        .header("accept", "text/event-stream")
        .header("last-event-id", "1")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let resumed_ids: Vec<i64> = resumed
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
        .collect();
    assert_eq!(resumed_ids, ids[2..].to_vec(), "{resumed}");
    assert!(
        resumed.ends_with(&format!(
            "event: end\ndata: {{\"total\":{}}}\n\n",
            ids.len()
        )),
        "{resumed}"
    );

    // The same lines as JSON pages.
    let all = log(&s, &v, &job, "");
    assert_eq!(all["active"], false);
    assert_eq!(all["total"], json!(ids.len()));
    let lines = all["lines"].as_array().unwrap();
    assert_eq!(lines.len(), ids.len());
    assert_eq!(lines[0]["n"], 0);
    assert_eq!(lines[0]["level"], "info");
    assert!(lines[0]["t"].as_str().unwrap().ends_with('Z'));
    let page = log(&s, &v, &job, "?start=1&limit=2");
    let got: Vec<&Value> = page["lines"].as_array().unwrap().iter().collect();
    assert_eq!(got, lines[1..3].iter().collect::<Vec<_>>());
    assert_eq!(
        log(&s, &v, &job, &format!("?start={}", ids.len()))["lines"],
        json!([])
    );

    // Bad ranges and unknown jobs: ARM errors.
    for q in ["?start=-1", "?limit=0", "?limit=1001", "?start=x"] {
        let r = s.req("GET", &format!("{v}/backupJobs/{job}/rsvault/log{q}"), None);
        assert_eq!(r.status(), 400, "{q}");
        assert!(r.json::<Value>().unwrap()["error"]["message"].is_string());
    }
    let r = s.req(
        "GET",
        &format!("{v}/backupJobs/00000000-0000-0000-0000-000000000000/rsvault/log"),
        None,
    );
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "BMSUserErrorJobNotFound"
    );

    // The CLI prints the same lines.
    let data = s.data.to_str().unwrap();
    let vault = format!("{SUB}/rg1/v1");
    let out = rsvault(&[
        "job", "log", "--url", &s.base, "--data", data, "--vault", &vault, &job,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), ids.len(), "{text}");
    assert!(text.lines().last().unwrap().ends_with(end), "{text}");
}

#[test]
fn cli_job_log_follows_a_running_job_to_its_end() {
    let env = Env::new();
    let s = Server::start(&env, "[limits]\nbackup_bytes_per_second = 1000000");
    let (v, item) = s.protected_share("v1");
    let job = s.backup(&item);
    let vault = format!("{SUB}/rg1/v1");
    let out = rsvault(&[
        "job",
        "log",
        "-f",
        "--url",
        &s.base,
        "--data",
        s.data.to_str().unwrap(),
        "--vault",
        &vault,
        &job,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // -f returns only once the job has ended, with its last line.
    assert!(text.trim_end().ends_with("Job ended Completed."), "{text}");
    assert_eq!(
        s.get(&format!("{v}/backupJobs/{job}"))["properties"]["status"],
        "Completed"
    );
}

#[test]
fn an_item_without_a_recent_backup_turns_stale_until_the_next_one() {
    let env = Env::new();
    let (url, seen) = receiver(vec![]);
    let s = Server::start(
        &env,
        &format!("[scheduler]\nenabled = false\n[[notify.webhook]]\nurl = \"{url}\"\nevents = [\"item.stale\"]"),
    );
    let (v, item) = s.protected_share("v1"); // the policy runs daily at 02:00 UTC
    s.backup_completed(&v, &item);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    // Not a scheduler of its own: the policy runs it would start are not this test's business.
    let svc = crate::policies::in_process_service(&s);
    let last = chrono::DateTime::parse_from_rfc3339(
        s.get(&item)["properties"]["lastRecoveryPoint"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
    .with_timezone(&chrono::Utc);

    // The policy runs these ticks start fail (the share is gone), as missed runs would.
    std::fs::rename(env.path("share"), env.path("share-away")).unwrap();
    // 36 h later: within 1.5 × 24 h + 1 h.
    let r = rsvault_jobs::scheduler::tick(&svc, last + chrono::Duration::hours(36)).unwrap();
    assert_eq!((r.backups_started, r.items_stale), (1, 0));
    assert!(s.get(&item)["properties"].get("healthDetails").is_none());

    // A 02:00 slot falls between the two ticks when the backup above ran between 12:00 and 14:00
    // UTC: its run starts (and fails) too.
    let (t1, t2) = (
        last + chrono::Duration::hours(36),
        last + chrono::Duration::hours(38),
    );
    let slots = [t1.date_naive(), t2.date_naive()]
        .iter()
        .map(|d| d.and_hms_opt(2, 0, 0).unwrap().and_utc())
        .filter(|slot| t1 < *slot && *slot <= t2)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let r = rsvault_jobs::scheduler::tick(&svc, t2).unwrap();
    assert_eq!((r.backups_started, r.items_stale), (slots, 1));
    let p = s.get(&item)["properties"].clone();
    assert_eq!(p["healthStatus"], "ActionRequired", "{p}");
    let since = rsvault_types::arm::time(last + chrono::Duration::hours(37));
    let detail = p["healthDetails"][0]["message"].as_str().unwrap();
    assert!(detail.contains(&format!("stale since {since}")), "{detail}");
    let (_, text) = get_text(&s, "/metrics", true);
    assert!(text.contains(&format!(
        "rsvault_protected_item_stale{{item=\"StorageContainer;Storage;rg1;acct1/AzureFileShare;share1\",vault=\"{SUB}/rg1/v1\"}} 1"
    )), "{text}");

    // item.stale fires once per episode: a later pass that finds it still stale says nothing.
    let r = rsvault_jobs::scheduler::tick(&svc, last + chrono::Duration::hours(40)).unwrap();
    assert_eq!(r.items_stale, 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no item.stale event");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let events = seen.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        !events[0].0.contains_key("x-rsvault-signature"),
        "no secret, no signature"
    );
    let ev: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(ev["type"], "rsvault.item.stale");
    assert_eq!(ev["subject"], json!(item));
    assert_eq!(ev["data"]["properties"]["healthStatus"], "ActionRequired");

    // The next successful backup ends the episode.
    let running = s.get(&format!(
        "{v}/backupJobs?$filter=status%20eq%20'InProgress'"
    ));
    for j in running["value"].as_array().unwrap() {
        s.wait_job(&v, j["name"].as_str().unwrap());
    }
    std::fs::rename(env.path("share-away"), env.path("share")).unwrap();
    s.backup_completed(&v, &item);
    let p = s.get(&item)["properties"].clone();
    assert_eq!(p["healthStatus"], "Passed", "{p}");
    assert!(p.get("healthDetails").is_none(), "{p}");
}

#[test]
fn a_failed_scheduled_backup_is_retried_with_backoff_as_linked_jobs() {
    let env = Env::new();
    let s = Server::start(
        &env,
        "[scheduler]\nenabled = false\nretries = 2\nretry_delay_seconds = 60",
    );
    let (v, _item) = s.protected_share("v1"); // the policy runs daily at 02:00 UTC
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let svc = crate::policies::in_process_service(&s);
    // Protected for days already, so today's slot is one to run now (with the real clock: the
    // retry delays count from when attempts really ended).
    let vault = svc
        .get_vault(&rsvault_types::model::VaultRef {
            sub: SUB.into(),
            rg: "rg1".into(),
            name: "v1".into(),
        })
        .unwrap();
    let mut it = svc.list_items(&vault).unwrap().remove(0);
    it.created -= chrono::Duration::days(3);
    svc.put_item(&vault, &it).unwrap();
    std::fs::rename(env.path("share"), env.path("share-away")).unwrap();

    let tick = |at: chrono::DateTime<chrono::Utc>| rsvault_jobs::scheduler::tick(&svc, at).unwrap();
    let r = tick(chrono::Utc::now());
    assert_eq!((r.backups_started, r.retries_started), (1, 0));
    let jobs = |status: &str| -> Vec<Value> {
        s.get(&format!("{v}/backupJobs?$filter=operation%20eq%20'Backup'"))["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| status.is_empty() || j["properties"]["status"] == status)
            .cloned()
            .collect()
    };
    let first = jobs("")[0]["name"].as_str().unwrap().to_string();
    let j1 = s.wait_job(&v, &first);
    assert_eq!(j1["properties"]["status"], "Failed", "{j1}");
    let bag = &j1["properties"]["extendedInfo"]["propertyBag"];
    assert_eq!(bag["Policy"], "fspol", "{bag}");
    let slot = bag["Schedule Slot"].as_str().unwrap().to_string();
    let end = |j: &Value| {
        chrono::DateTime::parse_from_rfc3339(j["properties"]["endTime"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };

    // Retry 1: 60 s after the first attempt ended, not before.
    assert_eq!(
        tick(end(&j1) + chrono::Duration::seconds(50)).retries_started,
        0
    );
    assert_eq!(
        tick(end(&j1) + chrono::Duration::seconds(61)).retries_started,
        1
    );
    // Two schedulers (or two passes) never start it twice.
    assert_eq!(
        tick(end(&j1) + chrono::Duration::seconds(62)).retries_started,
        0
    );
    let r1 = jobs("")[0].clone();
    let r1_id = r1["name"].as_str().unwrap().to_string();
    let r1 = s.wait_job(&v, &r1_id);
    assert_eq!(r1["properties"]["status"], "Failed", "{r1}");
    assert_eq!(r1["properties"]["isUserTriggered"], false);
    let bag = &r1["properties"]["extendedInfo"]["propertyBag"];
    assert_eq!(
        (
            &bag["Retry"],
            &bag["Retry Of"],
            &bag["Schedule Slot"],
            &bag["Policy"]
        ),
        (&json!("1"), &json!(first), &json!(slot), &json!("fspol")),
        "{bag}"
    );

    // Retry 2 waits twice as long.
    assert_eq!(
        tick(end(&r1) + chrono::Duration::seconds(100)).retries_started,
        0
    );
    assert_eq!(
        tick(end(&r1) + chrono::Duration::seconds(121)).retries_started,
        1
    );
    let r2_id = jobs("")[0]["name"].as_str().unwrap().to_string();
    let r2 = s.wait_job(&v, &r2_id);
    assert_eq!(
        r2["properties"]["extendedInfo"]["propertyBag"]["Retry"],
        "2"
    );
    assert_eq!(
        r2["properties"]["extendedInfo"]["propertyBag"]["Retry Of"],
        json!(first)
    );
    // Then no more: two retries were configured.
    assert_eq!(
        tick(end(&r2) + chrono::Duration::hours(2)).retries_started,
        0
    );
    assert_eq!(jobs("Failed").len(), 3);

    // The first job's log says where its retries went; each retry's log says what it retries.
    let log1 = s.get(&format!("{v}/backupJobs/{first}/rsvault/log"));
    let msgs: Vec<&str> = log1["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["msg"].as_str().unwrap())
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("Retry 1 of 2")
                && m.ends_with(&format!("starts as job {r1_id}."))),
        "{msgs:?}"
    );
    let log2 = s.get(&format!("{v}/backupJobs/{r2_id}/rsvault/log"));
    assert!(
        log2["lines"][0]["msg"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Retry 2 of 2 of the scheduled backup {first}")),
        "{log2}"
    );
}

#[test]
fn job_wait_on_a_terminal_draws_a_progress_bar_with_an_eta() {
    let env = Env::new();
    let s = Server::start(&env, "[limits]\nbackup_bytes_per_second = 1000000");
    let (v, item) = s.protected_share("v1");
    let job = s.backup(&item);
    // `script` runs the command on a pseudo-terminal and copies what it wrote.
    let cmd = format!(
        "{} job wait --url {} --data {} --vault {SUB}/rg1/v1 {job}",
        env!("CARGO_BIN_EXE_rsvault"),
        s.base,
        s.data.display()
    );
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .output()
        .expect("script (util-linux) runs a command on a terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let redraws: Vec<&str> = text
        .split('\r')
        .filter(|l| l.starts_with(&format!("{job}: [")))
        .collect();
    assert!(redraws.len() >= 2, "{text:?}");
    assert!(
        redraws
            .iter()
            .any(|l| l.contains('#') && l.contains(" ETA ") && l.contains("Transferring")),
        "{text:?}"
    );
    assert!(text.contains("Completed"), "{text:?}");
    assert_eq!(
        s.get(&format!("{v}/backupJobs/{job}"))["properties"]["status"],
        "Completed"
    );
}

/// What a webhook receiver got: each request's headers (names lower case) and body.
type Received =
    std::sync::Arc<std::sync::Mutex<Vec<(std::collections::HashMap<String, String>, String)>>>;

/// A webhook receiver: records each request's headers and body, answers them with `statuses` in
/// turn (then 200).
fn receiver(statuses: Vec<u16>) -> (String, Received) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let mut conn = conn.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = conn.read(&mut chunk).unwrap();
                assert!(n > 0, "connection closed mid-request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let headers: std::collections::HashMap<String, String> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect();
            let len: usize = headers["content-length"].parse().unwrap();
            while buf.len() < head_end + len {
                let n = conn.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
            log.lock().unwrap().push((headers, body));
            let status = statuses.get(i).copied().unwrap_or(200);
            write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
        }
    });
    (url, seen)
}

#[test]
fn a_failed_job_is_posted_signed_to_the_webhook_and_retried_after_a_500() {
    use hmac::Mac;
    let env = Env::new();
    let (url, seen) = receiver(vec![500]);
    let secret = env.path("webhook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let s = Server::start(
        &env,
        &format!(
            "[notify]\nretry_seconds = 1\n[[notify.webhook]]\nurl = \"{url}\"\nevents = [\"job.failed\"]\nsecret_file = \"{}\"",
            secret.display()
        ),
    );
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item); // no event: it is not subscribed to
    std::fs::rename(env.path("share"), env.path("share-away")).unwrap();
    let job = s.backup(&item);
    assert_eq!(s.wait_job(&v, &job)["properties"]["status"], "Failed");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no retry arrived");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        2,
        "one event, sent until answered 2xx: {seen:?}"
    );
    assert_eq!(seen[0].1, seen[1].1, "a retry sends the same event");
    for (headers, body) in &seen {
        assert_eq!(
            headers["content-type"],
            "application/cloudevents+json; charset=utf-8"
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(headers["x-rsvault-signature"], format!("sha256={hex}"));
    }
    let ev: Value = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["type"], "rsvault.job.failed");
    assert_eq!(ev["source"], json!(v));
    assert_eq!(ev["subject"], json!(job));
    assert!(ev["id"].is_string() && ev["time"].is_string());
    assert_eq!(ev["data"]["name"], json!(job));
    assert_eq!(ev["data"]["properties"]["status"], "Failed");

    // Each delivery and its attempts are recorded.
    let list = s.get(&format!("{v}/rsvault/notifications"));
    let d = &list["value"].as_array().unwrap()[..];
    assert_eq!(d.len(), 1, "{list}");
    assert_eq!(
        (&d[0]["event"], &d[0]["state"], &d[0]["id"]),
        (&json!("job.failed"), &json!("delivered"), &ev["id"])
    );
    let statuses: Vec<&Value> = d[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(200)]);

    // Finished deliveries go with job history ([jobs] history_days, 180 by default).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let svc = crate::policies::in_process_service(&s);
    rsvault_jobs::scheduler::tick(&svc, chrono::Utc::now() + chrono::Duration::days(179)).unwrap();
    let ids = |l: Value| -> Vec<Value> {
        l["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].clone())
            .collect()
    };
    assert!(ids(s.get(&format!("{v}/rsvault/notifications"))).contains(&ev["id"]));
    rsvault_jobs::scheduler::tick(&svc, chrono::Utc::now() + chrono::Duration::days(181)).unwrap();
    assert!(!ids(s.get(&format!("{v}/rsvault/notifications"))).contains(&ev["id"]));
}

#[test]
fn a_restore_drill_proves_an_item_restorable_and_names_it_when_a_pack_is_corrupt() {
    let env = Env::new();
    let (url, seen) = receiver(vec![]);
    let s = Server::start(
        &env,
        &format!("[scheduler]\nenabled = false\n[[notify.webhook]]\nurl = \"{url}\"\nevents = [\"drill.failed\"]"),
    );
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);

    let r = s.req(
        "POST",
        &format!("{v}/rsvault/maintenance/restoreDrill"),
        Some(json!({"samplePercent": 0})),
    );
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["target"],
        "samplePercent"
    );
    let r = s.req(
        "POST",
        &format!("{v}/rsvault/maintenance/restoreDrill"),
        Some(json!({"samplePercent": 100})),
    );
    let job = s.accepted_job(&v, r);
    let p = &job["properties"];
    assert_eq!(
        (&p["status"], &p["operation"], &p["jobType"]),
        (
            &json!("Completed"),
            &json!("RestoreDrill"),
            &json!("VaultJob")
        ),
        "{job}"
    );
    assert_eq!(
        p["extendedInfo"]["propertyBag"]["Items Proven Restorable"], "1",
        "{job}"
    );
    let proven = s.get(&item)["properties"]["lastProvenRestorableTime"]
        .as_str()
        .unwrap()
        .to_string();
    let log = s.log_messages(&v, &job);
    // Every file of the share (a.txt, empty, sub/big.bin, sub/deeper/note.md; not the link).
    assert!(
        log.iter().any(|m| m.starts_with("share1: 4 files,")),
        "{log:?}"
    );
    let drills = s.data.join("drills");
    assert!(
        !drills.exists() || std::fs::read_dir(&drills).unwrap().next().is_none(),
        "scratch space left behind"
    );

    // Damage every data pack: the next drill names the item, and says so to the webhook.
    let mut packs = Vec::new();
    crate::policies::collect_files(&s.data.join("repos"), &mut packs);
    let packs: Vec<_> = packs
        .into_iter()
        .filter(|p| {
            p.parent()
                .and_then(|d| d.parent())
                .is_some_and(|d| d.ends_with("data"))
        })
        .collect();
    assert!(!packs.is_empty());
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        std::fs::write(p, b).unwrap();
    }
    let out = rsvault(&[
        "maintenance",
        "drill",
        "--url",
        &s.base,
        "--data",
        s.data.to_str().unwrap(),
        "--vault",
        &format!("{SUB}/rg1/v1"),
        "--sample-percent",
        "100",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a failed drill is a failing command: {stderr}"
    );
    assert!(
        stderr.contains("job ended CompletedWithWarnings"),
        "{stderr}"
    );
    assert!(
        stderr.contains("share1") && stderr.contains("did not restore as recorded"),
        "{stderr}"
    );
    assert_eq!(
        s.get(&item)["properties"]["lastProvenRestorableTime"],
        json!(proven)
    );
    assert!(
        !drills.exists() || std::fs::read_dir(&drills).unwrap().next().is_none(),
        "scratch space left behind"
    );

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no drill.failed event"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let ev: Value = serde_json::from_str(&seen.lock().unwrap()[0].1).unwrap();
    assert_eq!(ev["type"], "rsvault.drill.failed");
    assert_eq!(ev["data"]["properties"]["status"], "CompletedWithWarnings");
}

#[test]
fn verification_reports_its_progress_like_a_backup() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let (v, item) = s.protected_share("v1");
    s.backup_completed(&v, &item);
    let r = s.req(
        "POST",
        &format!("{v}/rsvault/maintenance/verify"),
        Some(json!({"readDataPercent": 100})),
    );
    let job = s.accepted_job(&v, r);
    assert_eq!(job["properties"]["status"], "Completed", "{job}");
    let bag = &job["properties"]["extendedInfo"]["propertyBag"];
    assert_eq!(bag["Phase"], "Verifying", "{bag}");
    let total: u64 = bag["Bytes Total"].as_str().unwrap().parse().unwrap();
    let done: u64 = bag["Bytes Done"].as_str().unwrap().parse().unwrap();
    // Every pack was read: the repository's data, not nothing.
    assert!(total > 100_000 && done == total, "{bag}");
    assert!(bag["Progress Percentage"].as_str().is_some(), "{bag}");
    let log = s.log_messages(&v, &job);
    assert!(
        log.iter().any(|m| m.starts_with("Phase Verifying")),
        "{log:?}"
    );
}

#[test]
fn a_restore_drill_proves_a_vm_disk_image_restorable() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let v = s.setup_vault("v1");
    let item = s.vm_item(&v);
    s.protect(&v, &item);
    s.backup_completed(&v, &item);
    let drill = |percent: u8| {
        let r = s.req(
            "POST",
            &format!("{v}/rsvault/maintenance/restoreDrill"),
            Some(json!({"samplePercent": percent})),
        );
        let job = s.accepted_job(&v, r);
        assert_eq!(job["properties"]["status"], "Completed", "{job}");
        s.log_messages(&v, &job)
    };
    // The one 16 MiB image, every range of it (a 100% sample), compared chunk by chunk.
    let line = format!(
        "vm1: 1 files, {} bytes restored and identical to the snapshot (1 large files checked by a sample of their ranges).",
        16 << 20
    );
    let log = drill(100);
    assert!(log.contains(&line), "{log:?}");
    assert!(s.get(&item)["properties"]["lastProvenRestorableTime"].is_string());

    // A quarter of its ranges: some of the image, not all of it.
    let log = drill(25);
    let bytes: Vec<u64> = log
        .iter()
        .filter_map(|m| m.strip_prefix("vm1: 1 files, "))
        .filter_map(|m| m.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        bytes.len() == 1 && bytes[0] > 0 && bytes[0] < 16 << 20,
        "{log:?}"
    );
}
