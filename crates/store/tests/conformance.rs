//! The store's conformance suite, written once and run against both backends: SQLite (a file in a
//! temp dir) and PostgreSQL (a throwaway cluster started by the test; see `rsvault-testpg`).
//!
//! Each case gets a fresh, empty store. The PostgreSQL run also opens a second `Store` on the same
//! database where a case is about two nodes.

use std::sync::Arc;

use rsvault_store::{JobQuery, JobRow, Store};

type Case = fn(&dyn Fn() -> (Store, Store));

const CASES: &[(&str, Case)] = &[
    ("documents", documents),
    ("documents_sort_byte_by_byte", documents_sort_byte_by_byte),
    (
        "a_failed_transaction_writes_nothing",
        a_failed_transaction_writes_nothing,
    ),
    ("reads_cannot_write", reads_cannot_write),
    ("one_statement_reads", one_statement_reads),
    ("job_rows_and_listing", job_rows_and_listing),
    ("job_housekeeping", job_housekeeping),
    ("leases_and_slots", leases_and_slots),
    (
        "claim_follows_the_admission_rules",
        claim_follows_the_admission_rules,
    ),
    (
        "running_jobs_leases_and_fences",
        running_jobs_leases_and_fences,
    ),
    (
        "writers_of_two_nodes_never_interleave",
        writers_of_two_nodes_never_interleave,
    ),
    (
        "job_sequence_grows_across_nodes",
        job_sequence_grows_across_nodes,
    ),
    (
        "job_logs_are_bounded_paged_and_go_with_their_jobs",
        job_logs_are_bounded_paged_and_go_with_their_jobs,
    ),
    (
        "jobs_go_to_nodes_that_offer_what_they_need",
        jobs_go_to_nodes_that_offer_what_they_need,
    ),
    (
        "activity_log_pages_and_expires",
        activity_log_pages_and_expires,
    ),
];

#[test]
fn sqlite() {
    for (name, case) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsvault.db");
        eprintln!("sqlite: {name}");
        case(&|| (Store::open(&path).unwrap(), Store::open(&path).unwrap()));
    }
}

#[test]
fn postgres() {
    let cluster = rsvault_testpg::Cluster::start();
    for (i, (name, case)) in CASES.iter().enumerate() {
        let url = cluster.create_db(&format!("case{i}"));
        eprintln!("postgres: {name}");
        case(&|| {
            (
                Store::open_url(&url).unwrap(),
                Store::open_url(&url).unwrap(),
            )
        });
    }
}

/// Opening the same PostgreSQL database from several nodes at once migrates it once.
#[test]
fn postgres_nodes_that_start_together_migrate_once() {
    let cluster = rsvault_testpg::Cluster::start();
    let url = cluster.create_db("together");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || Store::open_url(&url).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM rsvault_migrations", &[])
        .unwrap()
        .get(0);
    // Once each: one row per migration file.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(n, files as i64);
}

#[test]
fn a_store_url_that_is_not_understood_is_an_error_that_hides_the_password() {
    let err = Store::open_url("mysql://bob:hunter2@db/x")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("mysql://bob:***@db/x"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

fn documents(open: &dyn Fn() -> (Store, Store)) {
    let (s, _) = open();
    s.tx(|t| {
        t.put("item", "v1", "b", "c1", &serde_json::json!({"n": 2}))?;
        t.put("item", "v1", "a", "c1", &serde_json::json!({"n": 1}))?;
        t.put("item", "v1", "c", "c2", &serde_json::json!({"n": 3}))?;
        t.put("item", "v2", "a", "c1", &serde_json::json!({"n": 4}))?;
        t.put("vault", "v1", "", "", &serde_json::json!({"v": 1}))?;
        t.put("vault", "v2", "", "", &serde_json::json!({"v": 2}))?;
        t.put("vault", "w1", "", "", &serde_json::json!({"v": 3}))
    })
    .unwrap();
    s.read(|t| {
        let one: Option<serde_json::Value> = t.get("item", "v1", "a")?;
        assert_eq!(one, Some(serde_json::json!({"n": 1})));
        assert_eq!(t.get::<serde_json::Value>("item", "v1", "zz")?, None);
        let all: Vec<serde_json::Value> = t.list("item", "v1", None)?;
        assert_eq!(
            all.iter()
                .map(|d| d["n"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let under: Vec<serde_json::Value> = t.list("item", "v1", Some("c1"))?;
        assert_eq!(under.len(), 2);
        assert_eq!(t.count("item", "v1", None)?, 3);
        assert_eq!(t.count("item", "v1", Some("c2"))?, 1);
        let vs: Vec<serde_json::Value> = t.list_prefix("vault", "v")?;
        assert_eq!(
            vs.iter()
                .map(|d| d["v"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(t.vault_keys()?, ["v1", "v2", "w1"]);
        Ok(())
    })
    .unwrap();
    // Replace keeps one document and takes the new parent.
    s.tx(|t| t.put("item", "v1", "a", "c2", &serde_json::json!({"n": 10})))
        .unwrap();
    s.read(|t| {
        assert_eq!(t.count("item", "v1", Some("c2"))?, 2);
        assert_eq!(t.count("item", "v1", None)?, 3);
        Ok(())
    })
    .unwrap();
    let (gone, missing, n) = s
        .tx(|t| {
            Ok((
                t.delete("item", "v1", "a")?,
                t.delete("item", "v1", "a")?,
                t.delete_all("item", "v1", Some("c1"))?,
            ))
        })
        .unwrap();
    assert!(gone && !missing);
    assert_eq!(n, 1);
    assert_eq!(s.tx(|t| t.delete_all("item", "v1", None)).unwrap(), 1);
    assert_eq!(s.read(|t| t.count("item", "v2", None)).unwrap(), 1);
}

fn documents_sort_byte_by_byte(open: &dyn Fn() -> (Store, Store)) {
    let (s, _) = open();
    let keys = ["b", "B", "a-b", "a_b", "ab", "A", "é", "z"];
    s.tx(|t| {
        for k in keys {
            t.put("point", "v", k, "", &k)?;
        }
        Ok(())
    })
    .unwrap();
    let got: Vec<String> = s.read(|t| t.list("point", "v", None)).unwrap();
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    want.sort(); // Rust compares strings byte by byte, as SQLite does.
    assert_eq!(got, want);
}

fn a_failed_transaction_writes_nothing(open: &dyn Fn() -> (Store, Store)) {
    let (s, _) = open();
    let r: rsvault_store::Result<()> = s.tx(|t| {
        t.put("vault", "v", "", "", &1)?;
        t.upsert_job(&row("j1", "v", 1, "InProgress", "i", "queued", false, 1))?;
        Err(rsvault_store::Error::Missing("something".into()))
    });
    assert!(r.is_err());
    s.read(|t| {
        assert_eq!(t.get::<i32>("vault", "v", "")?, None);
        assert_eq!(t.jobs_by_id("j1")?, None);
        Ok(())
    })
    .unwrap();
    // The store is usable after the rollback.
    s.tx(|t| t.put("vault", "v", "", "", &2)).unwrap();
    assert_eq!(s.read(|t| t.get::<i32>("vault", "v", "")).unwrap(), Some(2));
}

fn reads_cannot_write(open: &dyn Fn() -> (Store, Store)) {
    let (s, _) = open();
    assert!(s.read(|t| t.put("vault", "v", "", "", &1)).is_err());
    assert_eq!(s.read(|t| t.get::<i32>("vault", "v", "")).unwrap(), None);
    // The connection that refused the write still serves.
    for _ in 0..20 {
        s.read(|t| t.count("vault", "v", None)).unwrap();
    }
}

/// `read_one` answers as `read` does; it cannot write, and on PostgreSQL (where it runs without a
/// transaction) a second statement is refused rather than run outside the snapshot.
fn one_statement_reads(open: &dyn Fn() -> (Store, Store)) {
    let (s, other) = open();
    assert_eq!(
        s.read_one(|t| t.get::<i32>("vault", "v", "")).unwrap(),
        None
    );
    other.tx(|t| t.put("vault", "v", "", "", &7)).unwrap();
    assert_eq!(
        s.read_one(|t| t.get::<i32>("vault", "v", "")).unwrap(),
        Some(7)
    );
    assert!(s.read_one(|t| t.put("vault", "v", "", "", &8)).is_err());
    if matches!(s, Store::Postgres(_)) {
        let second = s.read_one(|t| {
            t.get::<i32>("vault", "v", "")?;
            t.get::<i32>("vault", "w", "")
        });
        assert!(second.is_err(), "{second:?}");
    }
    // The connections that refused still serve, and nothing was written.
    for _ in 0..20 {
        assert_eq!(
            s.read_one(|t| t.get::<i32>("vault", "v", "")).unwrap(),
            Some(7)
        );
    }
    assert_eq!(s.read(|t| t.get::<i32>("vault", "v", "")).unwrap(), Some(7));
}

#[allow(clippy::too_many_arguments)]
fn row(
    id: &str,
    vault: &str,
    seq: i64,
    status: &str,
    item: &str,
    queue: &'static str,
    exclusive: bool,
    day: u32,
) -> JobRow {
    JobRow {
        id: id.into(),
        vault: vault.into(),
        seq,
        status: status.into(),
        operation: if exclusive {
            "GarbageCollection"
        } else {
            "Backup"
        }
        .into(),
        bmt: "AzureStorage".into(),
        start_time: format!("2026-01-{day:02}T00:00:00Z"),
        item: item.into(),
        body: format!(r#"{{"id":"{id}"}}"#),
        queue,
        exclusive,
        needs: String::new(),
    }
}

fn ids(rows: &[(String, String, i64)]) -> Vec<String> {
    rows.iter()
        .map(|(b, _, _)| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn job_rows_and_listing(open: &dyn Fn() -> (Store, Store)) {
    let (s, _) = open();
    s.tx(|t| {
        t.upsert_job(&row("a", "v", 1, "Completed", "i1", "done", false, 1))?;
        t.upsert_job(&row("b", "v", 2, "Failed", "i2", "done", false, 2))?;
        t.upsert_job(&row("c", "v", 3, "Completed", "i1", "done", false, 2))?;
        t.upsert_job(&row("d", "v", 4, "InProgress", "i1", "running", false, 3))?;
        t.upsert_job(&row("e", "w", 5, "InProgress", "i1", "queued", false, 3))
    })
    .unwrap();
    s.read(|t| {
        assert!(t.jobs_by_id("c")?.unwrap().contains("\"c\""));
        assert!(t.get_job_body("v", "c")?.is_some());
        assert!(t.get_job_body("w", "c")?.is_none());
        let all = t.list_jobs("v", &JobQuery::default(), 10)?;
        assert_eq!(ids(&all), ["d", "c", "b", "a"]);
        // Paging continues after the last row's (start time, seq), ties broken by seq.
        let first = t.list_jobs("v", &JobQuery::default(), 2)?;
        assert_eq!(ids(&first), ["d", "c"]);
        let (_, at, seq) = first.last().unwrap().clone();
        assert_eq!(at, "2026-01-02T00:00:00Z");
        let next = t.list_jobs(
            "v",
            &JobQuery {
                after: Some((at, seq)),
                ..Default::default()
            },
            2,
        )?;
        assert_eq!(ids(&next), ["b", "a"]);
        let q = |status: Option<&str>, from: Option<u32>, to: Option<u32>| JobQuery {
            status: status.map(Into::into),
            start_from: from.map(|d| format!("2026-01-{d:02}T00:00:00Z")),
            start_to: to.map(|d| format!("2026-01-{d:02}T00:00:00Z")),
            ..Default::default()
        };
        assert_eq!(
            ids(&t.list_jobs("v", &q(Some("Completed"), None, None), 10)?),
            ["c", "a"]
        );
        assert_eq!(
            ids(&t.list_jobs("v", &q(None, Some(2), Some(2)), 10)?),
            ["c", "b"]
        );
        assert_eq!(
            ids(&t.list_jobs("v", &q(Some("Cancelled"), None, None), 10)?),
            Vec::<String>::new()
        );
        let by_id = JobQuery {
            job_id: Some("b".into()),
            operation: Some("Backup".into()),
            bmt: Some("AzureStorage".into()),
            ..Default::default()
        };
        assert_eq!(ids(&t.list_jobs("v", &by_id, 10)?), ["b"]);
        let with = t.jobs_with_status(&["InProgress", "Failed"])?;
        assert_eq!(with.len(), 3);
        let oldest_first = ["b", "d", "e"].map(|id| format!("{{\"id\":\"{id}\"}}"));
        assert_eq!(with, oldest_first);
        assert!(t.item_has_job("v", "i1", &["InProgress"], "")?);
        assert!(!t.item_has_job("v", "i1", &["InProgress"], "d")?);
        assert!(!t.item_has_job("v", "i2", &["InProgress", "Cancelling"], "")?);
        assert_eq!(t.active_jobs_in_vault("v")?, 1);
        assert_eq!(t.active_jobs_in_vault("w")?, 1);
        Ok(())
    })
    .unwrap();
    // An upsert replaces the row in place.
    s.tx(|t| t.upsert_job(&row("d", "v", 4, "Completed", "i1", "done", false, 3)))
        .unwrap();
    assert_eq!(s.read(|t| t.active_jobs_in_vault("v")).unwrap(), 0);
    assert_eq!(
        s.read(|t| t.list_jobs("v", &JobQuery::default(), 10))
            .unwrap()
            .len(),
        4
    );
}

fn job_housekeeping(open: &dyn Fn() -> (Store, Store)) {
    let (s, _) = open();
    s.tx(|t| {
        for i in 1..=5 {
            t.upsert_job(&row(
                &format!("old{i}"),
                "v",
                i,
                "Completed",
                "i",
                "done",
                false,
                1,
            ))?;
        }
        t.upsert_job(&row(
            "oldrunning",
            "v",
            6,
            "InProgress",
            "i",
            "running",
            false,
            1,
        ))?;
        t.upsert_job(&row("new", "v", 7, "Failed", "i", "done", false, 9))?;
        t.upsert_job(&row("other", "w", 8, "Failed", "i", "done", false, 9))
    })
    .unwrap();
    let cutoff = "2026-01-05T00:00:00Z";
    assert_eq!(
        s.tx(|t| t.delete_finished_jobs_before(cutoff, 3)).unwrap(),
        3
    );
    assert_eq!(
        s.tx(|t| t.delete_finished_jobs_before(cutoff, 3)).unwrap(),
        2
    );
    assert_eq!(
        s.tx(|t| t.delete_finished_jobs_before(cutoff, 3)).unwrap(),
        0
    );
    assert!(s.read(|t| t.jobs_by_id("oldrunning")).unwrap().is_some());
    assert_eq!(s.tx(|t| t.delete_jobs_of_vault("v")).unwrap(), 2);
    assert!(s.read(|t| t.jobs_by_id("other")).unwrap().is_some());
}

fn leases_and_slots(open: &dyn Fn() -> (Store, Store)) {
    let (a, b) = open();
    let t0 = "2026-01-01T00:00:00Z";
    let t1 = "2026-01-01T00:00:30Z";
    let t2 = "2026-01-01T00:01:00Z";
    assert!(a
        .tx(|t| t.acquire_lease("scheduler", "node-a", t0, t1))
        .unwrap());
    // Another node cannot take a live lease; its holder renews it.
    assert!(!b
        .tx(|t| t.acquire_lease("scheduler", "node-b", t0, t1))
        .unwrap());
    assert!(a
        .tx(|t| t.acquire_lease("scheduler", "node-a", t0, t2))
        .unwrap());
    // Once it expired, another node takes it.
    assert!(!b
        .tx(|t| t.acquire_lease("scheduler", "node-b", t1, t2))
        .unwrap());
    assert!(b
        .tx(|t| t.acquire_lease(
            "scheduler",
            "node-b",
            "2026-01-01T00:01:01Z",
            "2026-01-01T00:02:00Z"
        ))
        .unwrap());
    assert!(!a
        .tx(|t| t.acquire_lease("scheduler", "node-a", t2, t2))
        .unwrap());
    // A schedule slot runs once, whichever node claims it.
    assert!(a
        .tx(|t| t.claim_slot("v", "i", "2026-01-01T02:00", "j1"))
        .unwrap());
    assert!(!b
        .tx(|t| t.claim_slot("v", "i", "2026-01-01T02:00", "j2"))
        .unwrap());
    assert!(b
        .tx(|t| t.claim_slot("v", "i", "2026-01-02T02:00", "j3"))
        .unwrap());
}

fn claimed(s: &Store, owner: &str, max: usize) -> Option<String> {
    s.tx(|t| {
        let Some((body, attempt)) = t.claimable_job(owner, max)? else {
            return Ok(None);
        };
        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        t.set_lease(&id, owner, "2026-01-01T00:00:30Z", attempt + 1)?;
        Ok(Some(id))
    })
    .unwrap()
}

fn claim_follows_the_admission_rules(open: &dyn Fn() -> (Store, Store)) {
    let (a, b) = open();
    a.tx(|t| {
        t.upsert_job(&row("j1", "v", 1, "InProgress", "i1", "queued", false, 1))?;
        t.upsert_job(&row("j2", "v", 2, "InProgress", "i1", "queued", false, 1))?;
        t.upsert_job(&row("j3", "v", 3, "InProgress", "i2", "queued", false, 1))?;
        t.upsert_job(&row("gc", "v", 4, "InProgress", "", "queued", true, 1))?;
        t.upsert_job(&row("j5", "v", 5, "InProgress", "i3", "queued", false, 1))?;
        t.upsert_job(&row("w1", "w", 6, "InProgress", "i1", "queued", false, 1))
    })
    .unwrap();
    let reasons = a
        .read(|t| t.queued_reasons(10, "2026-01-01T00:00:00Z"))
        .unwrap();
    assert_eq!(
        reasons
            .iter()
            .map(|(id, why)| format!("{id}:{why}"))
            .collect::<Vec<_>>(),
        ["j1:slot", "j2:item", "j3:slot", "gc:vault", "j5:vault", "w1:slot"]
    );
    // Claim, then mark the row running as the runner does.
    let start = |s: &Store, owner: &str, max: usize| -> Option<String> {
        let id = claimed(s, owner, max)?;
        mark(s, &id, "running");
        Some(id)
    };
    assert_eq!(start(&a, "node-a", 8).as_deref(), Some("j1"));
    // j2 waits for j1 (same item); j3 is free; node b takes it.
    assert_eq!(start(&b, "node-b", 8).as_deref(), Some("j3"));
    // gc needs the vault to itself and j5 is behind it (first come, first served); w1 is free.
    assert_eq!(start(&a, "node-a", 2).as_deref(), Some("w1"));
    // node-a runs two jobs: at its limit of 2, it claims nothing more.
    assert_eq!(start(&a, "node-a", 2), None);
    assert_eq!(start(&b, "node-b", 8), None);
    mark(&a, "j1", "done");
    // j2 (item i1) is next for its item; gc still waits for j3 and j2.
    assert_eq!(start(&b, "node-b", 8).as_deref(), Some("j2"));
    assert_eq!(start(&b, "node-b", 8), None);
    mark(&a, "j2", "done");
    mark(&a, "j3", "done");
    assert_eq!(start(&b, "node-b", 8).as_deref(), Some("gc"));
    assert_eq!(
        start(&a, "node-a", 8),
        None,
        "nothing runs next to an exclusive job"
    );
    mark(&a, "gc", "done");
    assert_eq!(start(&a, "node-a", 8).as_deref(), Some("j5"));
}

/// Moves job `id` to queue position `queue` (as the runner does with the job's new status).
fn mark(s: &Store, id: &str, queue: &'static str) {
    s.tx(|t| {
        let vault = ["v", "w"]
            .into_iter()
            .find(|v| t.get_job_body(v, id).ok().flatten().is_some())
            .unwrap();
        let q = JobQuery {
            job_id: Some(id.into()),
            ..Default::default()
        };
        let (_, start, seq) = t.list_jobs(vault, &q, 1)?.remove(0);
        let item = match id {
            "j1" | "j2" | "w1" => "i1",
            "j3" => "i2",
            "j5" | "n3" => "i3",
            "n1" => "i1",
            _ => "",
        };
        let mut r = row(
            id,
            vault,
            seq,
            if queue == "done" {
                "Completed"
            } else {
                "InProgress"
            },
            item,
            queue,
            id == "gc",
            1,
        );
        r.start_time = start;
        t.upsert_job(&r)
    })
    .unwrap();
}

fn running_jobs_leases_and_fences(open: &dyn Fn() -> (Store, Store)) {
    let (a, b) = open();
    a.tx(|t| {
        t.upsert_job(&row("r1", "v", 1, "InProgress", "i1", "running", false, 1))?;
        t.upsert_job(&row("r2", "v", 2, "Cancelling", "i2", "running", false, 1))?;
        t.upsert_job(&row("r3", "v", 3, "InProgress", "i3", "running", false, 1))?;
        t.set_lease("r1", "node-a", "2026-01-01T00:00:30Z", 1)?;
        t.set_lease("r2", "node-a", "2026-01-01T00:00:30Z", 1)?;
        t.set_lease("r3", "node-b", "2026-01-01T00:00:10Z", 2)
    })
    .unwrap();
    b.read(|t| {
        assert!(t.holds_job("r1", "node-a", 1)?);
        assert!(
            !t.holds_job("r1", "node-a", 2)?,
            "an older attempt is fenced"
        );
        assert!(!t.holds_job("r1", "node-b", 1)?);
        assert_eq!(t.cancel_requests_of("node-a")?, ["r2"]);
        assert!(t.cancel_requests_of("node-b")?.is_empty());
        let expired = t.expired_leases("2026-01-01T00:00:20Z")?;
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1, "node-b");
        Ok(())
    })
    .unwrap();
    assert_eq!(
        a.tx(|t| t.renew_leases("node-a", "2026-01-01T00:01:00Z"))
            .unwrap(),
        2
    );
    let expired = b
        .read(|t| t.expired_leases("2026-01-01T00:00:40Z"))
        .unwrap();
    assert_eq!(
        expired.iter().map(|(_, o)| o.as_str()).collect::<Vec<_>>(),
        ["node-b"]
    );
}

/// Two nodes doing read-check-write on one document at once lose no update: writers of
/// different `Store`s (different nodes) run one at a time.
fn writers_of_two_nodes_never_interleave(open: &dyn Fn() -> (Store, Store)) {
    let (a, b) = open();
    a.tx(|t| t.put("counter", "v", "n", "", &0i64)).unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let threads: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                for _ in 0..50 {
                    s.tx(|t| {
                        let n: i64 = t.get("counter", "v", "n")?.unwrap();
                        std::thread::yield_now();
                        t.put("counter", "v", "n", "", &(n + 1))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        b.read(|t| t.get::<i64>("counter", "v", "n")).unwrap(),
        Some(200)
    );
}

fn job_sequence_grows_across_nodes(open: &dyn Fn() -> (Store, Store)) {
    let (a, b) = open();
    let mut last = 0;
    for i in 0..10 {
        let s = if i % 2 == 0 { &a } else { &b };
        let n = s
            .tx(|t| {
                let n = t.next_job_seq()?;
                t.upsert_job(&row(
                    &format!("s{i}"),
                    "v",
                    n,
                    "Completed",
                    "i",
                    "done",
                    false,
                    1,
                ))?;
                Ok(n)
            })
            .unwrap();
        assert!(n > last, "{n} after {last}");
        last = n;
    }
}

fn job_logs_are_bounded_paged_and_go_with_their_jobs(open: &dyn Fn() -> (Store, Store)) {
    let (s, _) = open();
    s.tx(|t| {
        t.upsert_job(&row("a", "v", 1, "InProgress", "i", "running", false, 1))?;
        t.upsert_job(&row("b", "v", 2, "InProgress", "j", "queued", false, 1))?;
        t.upsert_job(&row("c", "v", 3, "InProgress", "k", "queued", false, 1))
    })
    .unwrap();
    let counts = s
        .read(|t| {
            Ok((
                t.count_queue("queued")?,
                t.count_queue("running")?,
                t.count_queue("done")?,
            ))
        })
        .unwrap();
    assert_eq!(counts, (2, 1, 0));

    // 12 lines into a log that keeps the first 3 and the newest 5.
    for i in 0..12 {
        let n = s
            .tx(|t| {
                t.append_job_log(
                    "a",
                    "2026-01-01T00:00:00Z",
                    "info",
                    &format!("line {i}"),
                    3,
                    5,
                )
            })
            .unwrap();
        assert_eq!(n, i);
    }
    s.tx(|t| {
        t.append_job_log("b", "2026-01-01T00:00:01Z", "error", "other job", 3, 5)
            .map(|_| ())
    })
    .unwrap();
    let (lines, total) = s.read(|t| t.job_log("a", 0, 100)).unwrap();
    assert_eq!(total, 12);
    let kept: Vec<i64> = lines.iter().map(|l| l.n).collect();
    assert_eq!(kept, [0, 1, 2, 7, 8, 9, 10, 11]);
    assert_eq!(lines[3].msg, "line 7");
    assert_eq!(
        (lines[0].t.as_str(), lines[0].level.as_str()),
        ("2026-01-01T00:00:00Z", "info")
    );
    let (page, _) = s.read(|t| t.job_log("a", 2, 2)).unwrap();
    assert_eq!(page.iter().map(|l| l.n).collect::<Vec<_>>(), [2, 7]);
    assert_eq!(s.read(|t| t.job_log("a", 12, 10)).unwrap(), (vec![], 12));
    assert_eq!(s.read(|t| t.job_log("none", 0, 10)).unwrap(), (vec![], 0));

    // Logs go when their jobs have gone, and only then.
    assert_eq!(s.tx(|t| t.delete_orphan_job_logs()).unwrap(), 0);
    s.tx(|t| t.delete_jobs_of_vault("v").map(|_| ())).unwrap();
    assert_eq!(s.tx(|t| t.delete_orphan_job_logs()).unwrap(), 9);
    assert_eq!(s.read(|t| t.job_log("b", 0, 10)).unwrap(), (vec![], 0));
}

fn jobs_go_to_nodes_that_offer_what_they_need(open: &dyn Fn() -> (Store, Store)) {
    let (a, b) = open();
    let t0 = "2026-01-01T00:00:00Z";
    a.tx(|t| {
        t.register_node(
            "node-a",
            r#"[{"a":1}]"#,
            &["item:i1".into(), "root:/r".into()],
            t0,
        )
    })
    .unwrap();
    b.tx(|t| t.register_node("node-b", "[]", &[], t0)).unwrap();
    a.tx(|t| {
        let mut j = row("n1", "v", 1, "InProgress", "i1", "queued", false, 1);
        j.needs = "item:i1".into();
        t.upsert_job(&j)?;
        let mut j = row("n2", "v", 2, "InProgress", "i2", "queued", false, 1);
        j.needs = "item:i2".into();
        t.upsert_job(&j)?;
        t.upsert_job(&row("n3", "v", 3, "InProgress", "i3", "queued", false, 1))
    })
    .unwrap();
    let reasons = b.read(|t| t.queued_reasons(10, t0)).unwrap();
    assert_eq!(
        reasons
            .iter()
            .map(|(id, why)| format!("{id}:{why}"))
            .collect::<Vec<_>>(),
        ["n1:slot", "n2:node", "n3:slot"]
    );
    // node-b offers nothing: it gets only the job that needs nothing.
    assert_eq!(claimed(&b, "node-b", 8).as_deref(), Some("n3"));
    mark(&b, "n3", "running");
    assert_eq!(claimed(&b, "node-b", 8), None);
    assert_eq!(claimed(&a, "node-a", 8).as_deref(), Some("n1"));
    mark(&a, "n1", "running");
    // A node that re-registers replaces its offers; one not seen since `since` is not live.
    b.tx(|t| {
        t.register_node(
            "node-b",
            r#"[{"b":2}]"#,
            &["item:i2".into()],
            "2026-01-01T00:01:00Z",
        )
    })
    .unwrap();
    assert_eq!(claimed(&b, "node-b", 8).as_deref(), Some("n2"));
    let live = a.read(|t| t.live_nodes("2026-01-01T00:00:30Z")).unwrap();
    assert_eq!(live, [("node-b".to_string(), r#"[{"b":2}]"#.to_string())]);
    a.tx(|t| t.node_seen("node-a", "2026-01-01T00:02:00Z"))
        .unwrap();
    let live = a.read(|t| t.live_nodes("2026-01-01T00:00:30Z")).unwrap();
    assert_eq!(live.len(), 2);
}

fn activity_log_pages_and_expires(open: &dyn Fn() -> (Store, Store)) {
    let (s, _) = open();
    let t = |m: u32| format!("2026-05-01T10:{m:02}:00.0000000Z");
    s.tx(|tx| {
        for m in 0..6 {
            tx.insert_activity(&format!("e{m}"), "sub1", &t(m), &format!("{{\"m\":{m}}}"))?;
        }
        tx.insert_activity("other", "sub2", &t(3), "{}")
    })
    .unwrap();
    let page = |after: Option<(&str, &str)>, limit| {
        s.read(|tx| tx.list_activity("sub1", &t(1), &t(4), after, limit))
            .unwrap()
            .into_iter()
            .map(|(_, id, _)| id)
            .collect::<Vec<_>>()
    };
    // Newest first, inside the window, one subscription; then on from the last position.
    assert_eq!(page(None, 2), ["e4", "e3"]);
    let t3 = t(3);
    assert_eq!(page(Some((&t3, "e3")), 10), ["e2", "e1"]);
    let n = s.tx(|tx| tx.delete_activity_before(&t(2), 1)).unwrap();
    assert_eq!(n, 1);
    let n = s.tx(|tx| tx.delete_activity_before(&t(2), 100)).unwrap();
    assert_eq!(n, 1);
    assert_eq!(page(None, 10), ["e4", "e3", "e2"]);
}
