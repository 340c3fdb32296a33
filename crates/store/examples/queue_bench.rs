//! Queue throughput (issue #8): no-op jobs claimed and finished per second by 1, 2 and 3 nodes on
//! one PostgreSQL store (a throwaway cluster, with PostgreSQL's durable defaults and again without
//! fsync), and by one node on SQLite (WAL, synchronous=NORMAL) for reference.
//!
//! Each node is a thread with its own `Store` (its own connections, as a separate process would
//! have) running what a node's dispatcher does per job: one transaction that claims the oldest
//! admissible job (`claimable_job`, the admission rules included) and marks it running under a
//! lease, then one that records it finished. The engine is left out: this measures the queue.
//!
//!     cargo run --release -p rsvault-store --example queue_bench -- [JOBS] [RUNS]

use std::sync::Arc;
use std::time::Instant;

use rsvault_store::{JobRow, Store};

fn job(i: usize) -> JobRow {
    let id = format!("job-{i:06}");
    JobRow {
        body: format!(r#"{{"id":"{id}","status":"InProgress","work":{{"type":"Backup"}}}}"#),
        id,
        vault: format!("sub/rg/v{}", i % 10),
        seq: i as i64 + 1,
        status: "InProgress".into(),
        operation: "Backup".into(),
        bmt: "AzureStorage".into(),
        start_time: "2026-01-01T00:00:00Z".into(),
        item: format!("item{}", i % 100),
        queue: "queued",
        exclusive: false,
        needs: String::new(),
    }
}

fn fill(store: &Store, jobs: usize) {
    store
        .tx(|t| {
            for i in 0..jobs {
                t.upsert_job(&job(i))?;
            }
            Ok(())
        })
        .unwrap();
}

/// Runs `nodes` dispatchers until the queue is empty; returns jobs per second.
fn drain(open: &(dyn Fn() -> Store + Sync), nodes: usize, jobs: usize) -> f64 {
    let stores: Vec<Arc<Store>> = (0..nodes).map(|_| Arc::new(open())).collect();
    let t0 = Instant::now();
    let done: usize = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| {
                s.spawn(move || {
                    let owner = format!("node-{n}");
                    let mut mine = 0;
                    let mut idle = 0;
                    loop {
                        let claimed = store
                            .tx(|t| {
                                let Some((body, attempt)) = t.claimable_job(&owner, 8)? else {
                                    return Ok(None);
                                };
                                let v: serde_json::Value = serde_json::from_str(&body)?;
                                let i: usize = v["id"].as_str().unwrap()[4..].parse().unwrap();
                                let mut row = job(i);
                                row.queue = "running";
                                t.upsert_job(&row)?;
                                t.set_lease(&row.id, &owner, "2099-01-01T00:00:00Z", attempt + 1)?;
                                Ok(Some(row))
                            })
                            .unwrap();
                        let Some(mut row) = claimed else {
                            // Other nodes may still hold jobs whose items block the rest.
                            idle += 1;
                            if idle > 50 {
                                return mine;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            continue;
                        };
                        idle = 0;
                        row.queue = "done";
                        row.status = "Completed".into();
                        store.tx(|t| t.upsert_job(&row)).unwrap();
                        mine += 1;
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(done, jobs, "every job ran exactly once");
    // The idle tail (50 polls of 2 ms) is not queue work.
    jobs as f64 / (t0.elapsed().as_secs_f64() - 0.1).max(0.001)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let jobs: usize = std::env::args().nth(1).map_or(2000, |s| s.parse().unwrap());
    let runs: usize = std::env::args().nth(2).map_or(3, |s| s.parse().unwrap());
    println!(
        "queue throughput: {jobs} no-op jobs over 100 items in 10 vaults, median of {runs} runs"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut rates = Vec::new();
    for r in 0..runs {
        let path = dir.path().join(format!("q{r}.db"));
        let store = Store::open(&path).unwrap();
        fill(&store, jobs);
        drop(store);
        rates.push(drain(&|| Store::open(&path).unwrap(), 1, jobs));
    }
    println!("sqlite      1 node : {:>7.0} jobs/s", median(rates));

    // PostgreSQL's defaults (every commit waits for its WAL flush), then the same cluster
    // settings without fsync, to show what limits the first.
    for (label, pg) in [
        ("durable", rsvault_testpg::Cluster::start_durable()),
        ("no fsync", rsvault_testpg::Cluster::start()),
    ] {
        for nodes in 1..=3 {
            let mut rates = Vec::new();
            for r in 0..runs {
                let url = pg.create_db(&format!("q{nodes}_{r}"));
                let store = Store::open_url(&url).unwrap();
                fill(&store, jobs);
                drop(store);
                rates.push(drain(&|| Store::open_url(&url).unwrap(), nodes, jobs));
            }
            println!(
                "postgresql ({label}) {nodes} node{}: {:>7.0} jobs/s",
                if nodes == 1 { " " } else { "s" },
                median(rates)
            );
        }
    }
}
