//! Three `rsvault serve` processes on one PostgreSQL store and one repository location (issue #8):
//! each its own data dir and port, one deployment. The PostgreSQL cluster is a throwaway one the
//! test starts (`rsvault-testpg`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const SHARES: usize = 6;

struct Deployment {
    _pg: rsvault_testpg::Cluster,
    env: Env,
    nodes: Vec<Server>,
}

/// Extra config of node `id`: the shared store, key, repository location, and six shares.
fn node_config(env: &Env, url: &str, id: &str, extra: &str) -> String {
    let mut c = format!(
        "[runner]\nlease_seconds = 3\nmax_concurrent_jobs = 2\n[node]\nid = \"{id}\"\n\
         [store]\nurl = \"{url}\"\n[secrets]\nkey_file = \"{key}\"\n\
         [repository]\nlocation = \"{repos}\"\n{extra}\n",
        key = env.path("shared/master.key").display(),
        repos = env.path("shared/repos").display(),
    );
    for i in 2..=SHARES {
        c.push_str(&format!(
            "[[source]]\nkind = \"fileshare\"\nresource_group = \"rg1\"\nstorage_account = \"acct1\"\n\
             share = \"share{i}\"\npath = \"{}\"\n",
            env.path(&format!("share{i}")).display()
        ));
    }
    env.config(&c)
}

fn start_node(env: &Env, url: &str, id: &str, extra: &str) -> Server {
    let data = env.path(&format!("data-{id}"));
    let config = env.path(&format!("{id}.toml"));
    std::fs::write(&config, node_config(env, url, id, extra)).unwrap();
    Server::start_with(&data, &config)
}

fn deployment(extra: &str) -> Deployment {
    let pg = rsvault_testpg::Cluster::start();
    let url = pg.create_db("rsvault");
    let env = Env::new();
    std::fs::create_dir_all(env.path("shared")).unwrap();
    for i in 2..=SHARES {
        let dir = env.path(&format!("share{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file.txt"), format!("share {i}\n")).unwrap();
    }
    // All three start at once, racing to create the key file, the schema and the admin token.
    let nodes = std::thread::scope(|s| {
        let started: Vec<_> = ["node-a", "node-b", "node-c"]
            .iter()
            .map(|id| s.spawn(|| start_node(&env, &url, id, extra)))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    Deployment {
        _pg: pg,
        env,
        nodes,
    }
}

fn share_item(vault: &str, i: usize) -> String {
    format!("{vault}/backupFabrics/Azure/protectionContainers/StorageContainer;Storage;rg1;acct1/protectedItems/AzureFileShare;share{i}")
}

fn node_of(job: &Value) -> String {
    job["properties"]["extendedInfo"]["propertyBag"]["Node"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Pids of engine workers started by the server process `parent`.
fn workers_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_worker = args.iter().any(|a| a == "engine-worker");
        let of_parent = args
            .windows(2)
            .any(|w| w[0] == "--parent-pid" && w[1] == parent.to_string());
        if is_worker && of_parent {
            out.push(pid);
        }
    }
    out
}

#[test]
fn three_nodes_share_one_postgresql_store() {
    let d = deployment("");
    let [a, b, c] = [&d.nodes[0], &d.nodes[1], &d.nodes[2]];

    // One deployment: one admin token, which every node accepts; any node answers any request.
    assert_eq!(a.token, b.token);
    assert_eq!(a.token, c.token);
    let v = a.setup_vault("v1");
    assert_eq!(b.get(&v)["name"], "v1");
    let items: Vec<String> = (1..=SHARES).map(|i| share_item(&v, i)).collect();
    for (i, item) in items.iter().enumerate() {
        d.nodes[i % 3].protect(&v, item);
    }
    // Discovery merges the sources of the live nodes (all have the same six shares here).
    let containers = c.get(&format!(
        "{v}/backupProtectableItems?$filter=backupManagementType eq 'AzureStorage'"
    ));
    assert!(
        containers["value"].as_array().unwrap().len() >= SHARES,
        "{containers}"
    );

    // 30 backups over 6 items, each triggered through a different node than the last.
    let mut jobs = Vec::new();
    for round in 0..5 {
        for (i, item) in items.iter().enumerate() {
            jobs.push(d.nodes[(round + i) % 3].backup(item));
        }
    }
    let mut ran_on = std::collections::BTreeMap::<String, usize>::new();
    let mut points = std::collections::BTreeSet::new();
    for (n, job) in jobs.iter().enumerate() {
        let j = d.nodes[n % 3].wait_job(&v, job);
        assert_eq!(j["properties"]["status"], "Completed", "{j}");
        *ran_on.entry(node_of(&j)).or_default() += 1;
        let rp = j["properties"]["extendedInfo"]["propertyBag"]["Recovery Point Id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            points.insert(rp),
            "two jobs recorded one recovery point: {j}"
        );
    }
    assert!(ran_on.len() >= 2, "every job ran on one node: {ran_on:?}");
    assert!(ran_on.keys().all(|n| n.starts_with("node-")), "{ran_on:?}");
    // Each run exactly once: five recovery points per item, the same seen from every node.
    for item in &items {
        for node in [a, b, c] {
            assert_eq!(
                node.recovery_points(item).len(),
                5,
                "{item} via {}",
                node.base
            );
        }
    }
    // The job list is the same whichever node answers.
    let listed = |s: &Server| -> Vec<String> {
        s.get(&format!("{v}/backupJobs?$filter=operation eq 'Backup'"))["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(a).len(), 30);
    assert_eq!(listed(a), listed(c));
    assert_nothing_in_progress(a, &v);
}

/// A share whose backup takes ~10 s (20 MiB at 2 MiB/s): (item, job) once it moves bytes.
fn slow_backup(d: &Deployment, v: &str, through: &Server) -> (String, String) {
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761).rotate_left(9) >> 3) as u8)
        .collect();
    std::fs::write(d.env.path("share/big.bin"), &big).unwrap();
    let item = share_item(v, 1);
    through.protect(v, &item);
    let job = through.backup(&item);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = through.get(&format!("{v}/backupJobs/{job}"));
        if j["properties"]["extendedInfo"]["propertyBag"]
            .get("Bytes Done")
            .is_some()
        {
            return (item, job);
        }
        assert!(Instant::now() < deadline, "never started: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn index_of(node: &str) -> usize {
    ["node-a", "node-b", "node-c"]
        .iter()
        .position(|n| *n == node)
        .unwrap_or_else(|| panic!("unknown node {node}"))
}

#[test]
fn a_cancel_through_one_node_stops_a_job_on_another() {
    let d = deployment("[limits]\nbackup_bytes_per_second = 2097152");
    let v = d.nodes[0].setup_vault("v1");
    let (_, job) = slow_backup(&d, &v, &d.nodes[0]);
    let running = d.nodes[0].get(&format!("{v}/backupJobs/{job}"));
    let runner = index_of(&node_of(&running));
    let other = &d.nodes[(runner + 1) % 3];
    let r = other.req("POST", &format!("{v}/backupJobs/{job}/cancel"), None);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    let asked = Instant::now();
    let j = loop {
        let j = other.get(&format!("{v}/backupJobs/{job}"));
        let s = j["properties"]["status"].as_str().unwrap().to_string();
        if s != "InProgress" && s != "Cancelling" {
            break j;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "cancel not honoured: {j}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(j["properties"]["status"], "Cancelled", "{j}");
    assert_nothing_in_progress(other, &v);
}

#[test]
fn a_killed_nodes_job_fails_naming_it_and_the_item_backs_up_elsewhere() {
    let lease = 3;
    let mut d = deployment("[limits]\nbackup_bytes_per_second = 2097152");
    let v = d.nodes[0].setup_vault("v1");
    let (item, job) = slow_backup(&d, &v, &d.nodes[1]);
    let running = d.nodes[1].get(&format!("{v}/backupJobs/{job}"));
    let node = node_of(&running);
    let victim = index_of(&node);
    let pid = d.nodes[victim].child.id();
    let workers = workers_of(pid);
    assert!(!workers.is_empty(), "no engine worker runs the backup");
    d.nodes[victim].kill9();
    let killed = Instant::now();
    let survivor = &d.nodes[(victim + 1) % 3];

    let j = loop {
        let j = survivor.get(&format!("{v}/backupJobs/{job}"));
        if j["properties"]["status"] != "InProgress" && j["properties"]["status"] != "Cancelling" {
            break j;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(lease + 15),
            "not failed within lease + 15 s: {j}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(j["properties"]["status"], "Failed", "{j}");
    assert!(j.to_string().contains(&node), "the error names {node}: {j}");
    // The killed node's engine worker died with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !workers
        .iter()
        .all(|w| !Path::new(&format!("/proc/{w}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "orphan engine worker {workers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // No recovery point from it; the next backup of the item completes on a live node.
    assert!(survivor.recovery_points(&item).is_empty());
    std::fs::remove_file(d.env.path("share/big.bin")).unwrap();
    let next = survivor.backup(&item);
    let j = survivor.wait_job(&v, &next);
    assert_eq!(j["properties"]["status"], "Completed", "{j}");
    assert_ne!(node_of(&j), node);
    assert_eq!(survivor.recovery_points(&item).len(), 1);
    assert_nothing_in_progress(survivor, &v);
}

fn assert_nothing_in_progress(s: &Server, v: &str) {
    let all = s.get(&format!("{v}/backupJobs"))["value"]
        .as_array()
        .unwrap()
        .clone();
    let stuck: Vec<&Value> = all
        .iter()
        .filter(|j| {
            ["InProgress", "Cancelling"].contains(&j["properties"]["status"].as_str().unwrap())
        })
        .collect();
    assert!(stuck.is_empty(), "{stuck:?}");
}

#[test]
fn schedulers_of_several_nodes_never_double_run_a_slot() {
    use chrono::TimeZone;
    // Garbage collection every 48 hours: the tick at 03:00 the next day is up to 27 hours after
    // the vault is made, and a collection started then (runs between 00:00 and 03:00 UTC, with
    // the default 24) could still be running at the check that nothing is.
    let d = deployment("[scheduler]\nenabled = false\n[maintenance]\ngc_interval_hours = 48");
    let v = d.nodes[0].setup_vault("v1"); // policies run daily at 02:00 UTC
    let items: Vec<String> = (1..=3).map(|i| share_item(&v, i)).collect();
    for item in &items {
        d.nodes[1].protect(&v, item);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    // Three schedulers (each its own node) on the deployment's store, all ticking at once.
    let schedulers: Vec<_> = (0..3)
        .map(|i| crate::policies::in_process_service(&d.nodes[i]))
        .collect();
    let today = chrono::Utc::now().date_naive();
    let at = chrono::Utc
        .from_utc_datetime(&(today + chrono::Days::new(1)).and_hms_opt(3, 0, 0).unwrap());
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = schedulers
            .iter()
            .map(|svc| s.spawn(move || rsvault_jobs::scheduler::tick(svc, at).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        reports.iter().filter(|r| r.leader).count(),
        1,
        "{reports:?}"
    );
    assert_eq!(reports.iter().map(|r| r.backups_started).sum::<usize>(), 3);
    // After the lease lapses another node leads, and the slot is not run again.
    let later = at + chrono::Duration::hours(1);
    let again: usize = schedulers
        .iter()
        .map(|svc| {
            rsvault_jobs::scheduler::tick(svc, later)
                .unwrap()
                .backups_started
        })
        .sum();
    assert_eq!(again, 0);
    let scheduled = d.nodes[2].get(&format!("{v}/backupJobs?$filter=operation eq 'Backup'"));
    let jobs = scheduled["value"].as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{scheduled}");
    for j in jobs {
        let done = d.nodes[0].wait_job(&v, j["name"].as_str().unwrap());
        assert_eq!(done["properties"]["status"], "Completed", "{done}");
    }
    assert_nothing_in_progress(&d.nodes[0], &v);
}
