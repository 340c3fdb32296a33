//! Job-list speed with a large job store (issue #5): fills a fresh store with N jobs (default
//! 1,000,000) spread over a year, then times the first page (200 jobs, newest first) of the
//! queries clients send, through the same store calls and wire rendering the API uses. The store
//! is SQLite in DIR, or the (empty) PostgreSQL database `RSVAULT_STORE_URL` names.
//!
//!     cargo run --release -p rsvault --example joblist_bench -- [JOBS] [DIR]

use std::time::Instant;

use chrono::{Duration, Utc};
use rsvault_store::{JobQuery, JobRow, Store};
use rsvault_types::job::{tasks_for, Job, JobStatus, Work};
use rsvault_types::model::{VaultRef, Workload};

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    // A DIR given on the command line is kept (bench/jobapi serves it afterwards).
    let (dir, keep) = match std::env::args().nth(2) {
        Some(d) => (std::path::PathBuf::from(d), true),
        None => (
            std::env::temp_dir().join(format!("rsvault-joblist-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("rsvault.db");
    let _ = std::fs::remove_file(&db);
    let store = match std::env::var("RSVAULT_STORE_URL") {
        Ok(url) if !url.is_empty() => Store::open_url(&url)?,
        _ => Store::open(&db)?,
    };
    let vault = VaultRef {
        sub: "sub1".into(),
        rg: "rg1".into(),
        name: "v1".into(),
    };
    let now = Utc::now();
    let t0 = Instant::now();
    let mut seq = 0i64;
    for chunk in 0..n.div_ceil(10_000) {
        store.tx(|tx| {
            for i in 0..10_000.min(n - chunk * 10_000) {
                seq += 1;
                let k = chunk * 10_000 + i;
                // 1% failed, 0.5% restores, the rest completed backups; one job every ~31 s.
                let status = if k % 100 == 7 {
                    JobStatus::Failed
                } else {
                    JobStatus::Completed
                };
                let op = if k % 200 == 3 { "Restore" } else { "Backup" };
                let workload = if k % 2 == 0 {
                    Workload::Vm
                } else {
                    Workload::FileShare
                };
                let start = now - Duration::seconds(31 * (n - k) as i64);
                let mut job = Job {
                    id: uuid::Uuid::new_v4().to_string(),
                    vault: vault.clone(),
                    seq,
                    workload,
                    operation: op.into(),
                    status,
                    started: true,
                    entity_friendly_name: format!("item{}", k % 50),
                    item_key: format!("container/item{}", k % 50),
                    container_short: "iaasvmcontainerv2;rg1;vm1".into(),
                    host_name: "acct1".into(),
                    start,
                    end: Some(start + Duration::seconds(20)),
                    activity_id: uuid::Uuid::new_v4().to_string(),
                    is_user_triggered: k % 3 == 0,
                    tasks: tasks_for(workload, op),
                    property_bag: [("Backup Size".to_string(), "120 MB".to_string())].into(),
                    progress: Some(100.0),
                    eta_seconds: None,
                    errors: vec![],
                    cancel_op: None,
                    work: Work::Instant,
                    needs: String::new(),
                };
                job.finish(status);
                job.end = Some(start + Duration::seconds(20));
                tx.upsert_job(&JobRow::of(&job))?;
            }
            Ok(())
        })?;
    }
    let fill = t0.elapsed();
    let size = std::fs::metadata(&db).map_or(0, |m| m.len())
        + std::fs::metadata(dir.join("rsvault.db-wal")).map_or(0, |m| m.len());
    println!(
        "filled {n} jobs in {:.1} s ({}); SQLite file {:.0} MiB",
        fill.as_secs_f64(),
        store.kind(),
        size as f64 / 1048576.0
    );

    let key = vault.key();
    let day = |d: i64| rsvault_types::arm::time(now - Duration::days(d));
    let cases: Vec<(&str, JobQuery)> = vec![
        ("no filter", JobQuery::default()),
        ("status eq 'Failed' (1%)", JobQuery { status: Some("Failed".into()), ..Default::default() }),
        ("operation eq 'Restore' (0.5%)", JobQuery { operation: Some("Restore".into()), ..Default::default() }),
        (
            "operation eq 'Backup' and status eq 'Completed' and backupManagementType eq 'AzureIaasVM'",
            JobQuery { operation: Some("Backup".into()), status: Some("Completed".into()), bmt: Some("AzureIaasVM".into()), ..Default::default() },
        ),
        ("startTime/endTime: a week 200 days ago", JobQuery { start_from: Some(day(207)), start_to: Some(day(200)), ..Default::default() }),
        ("status eq 'InProgress' (none)", JobQuery { status: Some("InProgress".into()), ..Default::default() }),
    ];
    println!(
        "{:<90} {:>10} {:>6}",
        "first page of 200 (median of 7)", "ms", "rows"
    );
    // Where a page's time goes: the store query, parsing the stored bodies, writing each job's
    // wire JSON, assembling the page.
    let mut split = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for (name, q) in cases {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..7 {
            let t = Instant::now();
            let page = store.read(|tx| tx.list_jobs(&key, &q, 201))?;
            let t_query = t.elapsed();
            let jobs: Vec<Job> = page
                .iter()
                .take(200)
                .map(|(body, _, _)| serde_json::from_str(body))
                .collect::<Result<_, _>>()?;
            let t_parse = t.elapsed();
            // As the API renders a page: each job's wire JSON written straight from the record.
            let out: Vec<Vec<u8>> = jobs.iter().map(Job::wire_json).collect();
            let t_wire = t.elapsed();
            let mut body = b"{\"value\":[".to_vec();
            for (i, w) in out.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(w);
            }
            body.extend_from_slice(b"]}");
            std::hint::black_box(&body);
            let t_all = t.elapsed();
            times.push(t_all.as_secs_f64() * 1000.0);
            for (i, d) in [t_query, t_parse - t_query, t_wire - t_parse, t_all - t_wire]
                .into_iter()
                .enumerate()
            {
                split[i].push(d.as_secs_f64() * 1000.0);
            }
            rows = out.len();
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!("{name:<90} {:>10.2} {rows:>6}", times[times.len() / 2]);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "median split of a page over all cases: query {:.2} ms, parse {:.2} ms, wire JSON {:.2} ms, assemble {:.2} ms",
        med(&mut split[0]),
        med(&mut split[1]),
        med(&mut split[2]),
        med(&mut split[3])
    );
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
