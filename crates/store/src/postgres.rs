//! The PostgreSQL backend: one database that every node of a deployment shares.
//!
//! Write transactions take one transaction-scoped advisory lock first, so writers run one at a
//! time across all nodes, exactly as SQLite's `BEGIN IMMEDIATE` makes them run within one: every
//! read-check-write rule (the claim's admission rules, one active job per item, schedule slots)
//! holds without each caller reasoning about concurrent writers. Reads run in `REPEATABLE READ`
//! read-only snapshots and never wait for the lock.
//!
//! The client is the synchronous `postgres` crate. Called from a worker thread of the server's
//! (multi-threaded) tokio runtime, a transaction runs inside `block_in_place`, so the runtime
//! keeps serving other requests on its other threads meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};

use crate::{Error, JobQuery, JobRow, LogLine, MetaTx, QueuedReason, Result};

/// Numbered, forward-only migrations; `rsvault_migrations` records which have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_initial.sql"),
    include_str!("../migrations/postgres/0002_job_log.sql"),
    include_str!("../migrations/postgres/0003_activity_log.sql"),
];

/// Advisory lock keys (arbitrary constants, private to rsvault's database).
const WRITER_LOCK: i64 = 0x7273_7661_756c_7401; // "rsvault" + 1
const MIGRATION_LOCK: i64 = 0x7273_7661_756c_7402;

/// Connections per node.
const POOL: usize = 8;

pub struct Postgres {
    config: postgres::Config,
    pool: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
}

struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// Set while a transaction is open; a connection found with it set (its user panicked) is
    /// dropped rather than reused.
    in_tx: bool,
}

impl Postgres {
    /// Connects, creating the schema where the database has none and running the migrations it
    /// has not seen (one node at a time).
    pub fn open(url: &str) -> Result<Self> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| Error::Url(crate::redact(url), e.to_string()))?;
        let store = Self {
            config,
            pool: (0..POOL).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        off_runtime(|| store.migrate())?;
        Ok(store)
    }

    fn connect(&self) -> Result<Conn> {
        let mut client = self.config.connect(NoTls)?;
        client.batch_execute("SET application_name = 'rsvault'")?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
            in_tx: false,
        })
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.connect()?;
        let c = &mut conn.client;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let result = (|| -> Result<()> {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS rsvault_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )?;
            let done: i32 = c
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM rsvault_migrations",
                    &[],
                )?
                .get(0);
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
                let mut t = c.transaction()?;
                t.batch_execute(sql)?;
                t.execute(
                    "INSERT INTO rsvault_migrations(version) VALUES ($1)",
                    &[&(i as i32 + 1)],
                )?;
                t.commit()?;
            }
            Ok(())
        })();
        c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
        result
    }

    /// A pooled connection: a free one if there is one, else the next in turn once it is free.
    fn conn(&self) -> Result<MutexGuard<'_, Option<Conn>>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.pool.len();
        let mut guard = (0..n)
            .find_map(|i| self.pool[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.pool[start % n]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            });
        if guard
            .as_ref()
            .is_some_and(|c| c.in_tx || c.client.is_closed())
        {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        Ok(guard)
    }

    fn run<T>(&self, begin: &str, f: impl FnOnce(&PgTx<'_>) -> Result<T>) -> Result<T> {
        off_runtime(|| {
            let mut guard = self.conn()?;
            let conn = guard.as_mut().expect("connected above");
            conn.in_tx = true;
            if let Err(e) = conn.client.batch_execute(begin) {
                // A connection that broke between uses: drop it; the caller's retry reconnects.
                *guard = None;
                return Err(e.into());
            }
            let out = f(&PgTx::new(&mut *conn, None));
            let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
            match conn.client.batch_execute(end) {
                Ok(()) => conn.in_tx = false,
                Err(e) => {
                    *guard = None;
                    return Err(e.into());
                }
            }
            out
        })
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&PgTx<'_>) -> Result<T>) -> Result<T> {
        self.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", f)
    }

    /// A read of one statement, run without `BEGIN`/`COMMIT`: one statement is its own snapshot,
    /// so it answers as [`Postgres::read`] would in one round trip instead of three. A second
    /// statement in `f`, or a write, is an error.
    pub(crate) fn read_one<T>(&self, f: impl FnOnce(&PgTx<'_>) -> Result<T>) -> Result<T> {
        off_runtime(|| {
            let mut guard = self.conn()?;
            let conn = guard.as_mut().expect("connected above");
            let out = f(&PgTx::new(&mut *conn, Some(1)));
            if conn.client.is_closed() {
                *guard = None;
            }
            out
        })
    }

    pub(crate) fn tx<T>(&self, f: impl FnOnce(&PgTx<'_>) -> Result<T>) -> Result<T> {
        self.run(
            &format!("BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})"),
            f,
        )
    }

    /// [`Postgres::tx`] committed with `synchronous_commit=on`, whatever the server's setting.
    pub(crate) fn tx_durable<T>(&self, f: impl FnOnce(&PgTx<'_>) -> Result<T>) -> Result<T> {
        self.run(
            &format!(
                "BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_advisory_xact_lock({WRITER_LOCK})"
            ),
            f,
        )
    }

    /// PostgreSQL's MVCC reclaims dead rows by itself (autovacuum), and an rsvault database on
    /// PostgreSQL never held plain-text secrets: nothing to do.
    pub fn compact(&self) -> Result<()> {
        Ok(())
    }
}

impl Drop for Postgres {
    /// A `postgres::Client` closes its connection by blocking on its own runtime, which panics
    /// on a thread that drives async tasks: close the pool on a plain thread.
    fn drop(&mut self) {
        let pool = std::mem::take(&mut self.pool);
        let _ = std::thread::spawn(move || drop(pool)).join();
    }
}

/// Runs blocking database work without stalling the async runtime: inside `block_in_place` on a
/// runtime worker thread, directly anywhere else.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub(crate) struct PgTx<'a> {
    conn: std::cell::RefCell<&'a mut Conn>,
    /// Statements `f` may still run outside a transaction ([`Postgres::read_one`]); `None` inside
    /// one.
    budget: std::cell::Cell<Option<u32>>,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl<'a> PgTx<'a> {
    fn new(conn: &'a mut Conn, budget: Option<u32>) -> Self {
        Self {
            conn: std::cell::RefCell::new(conn),
            budget: std::cell::Cell::new(budget),
        }
    }

    /// Counts a statement against a transaction-less read's budget.
    fn spend(&self, write: bool) -> Result<()> {
        match self.budget.get() {
            None => Ok(()),
            Some(n) if n > 0 && !write => {
                self.budget.set(Some(n - 1));
                Ok(())
            }
            Some(_) => Err(Error::Internal(
                "a one-statement read ran a second statement or a write".into(),
            )),
        }
    }

    fn statement(&self, sql: &str) -> Result<Statement> {
        let mut conn = self.conn.borrow_mut();
        if let Some(s) = conn.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = conn.client.prepare(sql)?;
        conn.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<postgres::Row>> {
        self.spend(false)?;
        let s = self.statement(sql)?;
        Ok(self.conn.borrow_mut().client.query(&s, params)?)
    }

    fn query_opt(&self, sql: &str, params: &Params<'_>) -> Result<Option<postgres::Row>> {
        self.spend(false)?;
        let s = self.statement(sql)?;
        Ok(self.conn.borrow_mut().client.query_opt(&s, params)?)
    }

    fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.spend(true)?;
        let s = self.statement(sql)?;
        Ok(self.conn.borrow_mut().client.execute(&s, params)?)
    }

    fn strings(&self, sql: &str, params: &Params<'_>) -> Result<Vec<String>> {
        Ok(self.query(sql, params)?.iter().map(|r| r.get(0)).collect())
    }

    fn count_of(&self, sql: &str, params: &Params<'_>) -> Result<i64> {
        Ok(self.query_opt(sql, params)?.map(|r| r.get(0)).unwrap_or(0))
    }
}

impl MetaTx for PgTx<'_> {
    fn doc(&self, kind: &str, vault: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .query_opt(
                "SELECT body FROM docs WHERE kind = $1 AND vault = $2 AND key = $3",
                &[&kind, &vault, &key],
            )?
            .map(|r| r.get(0)))
    }

    fn put_doc(&self, kind: &str, vault: &str, key: &str, parent: &str, body: &str) -> Result<()> {
        self.execute(
            "INSERT INTO docs(kind, vault, key, parent, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(kind, vault, key) DO UPDATE SET parent = excluded.parent, body = excluded.body",
            &[&kind, &vault, &key, &parent, &body],
        )?;
        Ok(())
    }

    fn delete(&self, kind: &str, vault: &str, key: &str) -> Result<bool> {
        Ok(self.execute(
            "DELETE FROM docs WHERE kind = $1 AND vault = $2 AND key = $3",
            &[&kind, &vault, &key],
        )? > 0)
    }

    fn docs(&self, kind: &str, vault: &str, parent: Option<&str>) -> Result<Vec<String>> {
        self.strings(
            "SELECT body FROM docs WHERE kind = $1 AND vault = $2 AND ($3::text IS NULL OR parent = $3)
             ORDER BY key",
            &[&kind, &vault, &parent],
        )
    }

    fn docs_with_vault_prefix(&self, kind: &str, prefix: &str) -> Result<Vec<String>> {
        self.strings(
            "SELECT body FROM docs WHERE kind = $1 AND starts_with(vault, $2)
             ORDER BY vault, key",
            &[&kind, &prefix],
        )
    }

    fn count(&self, kind: &str, vault: &str, parent: Option<&str>) -> Result<i64> {
        self.count_of(
            "SELECT count(*) FROM docs WHERE kind = $1 AND vault = $2 AND ($3::text IS NULL OR parent = $3)",
            &[&kind, &vault, &parent],
        )
    }

    fn delete_all(&self, kind: &str, vault: &str, parent: Option<&str>) -> Result<usize> {
        Ok(self.execute(
            "DELETE FROM docs WHERE kind = $1 AND vault = $2 AND ($3::text IS NULL OR parent = $3)",
            &[&kind, &vault, &parent],
        )? as usize)
    }

    fn vault_keys(&self) -> Result<Vec<String>> {
        self.strings(
            "SELECT vault FROM docs WHERE kind = 'vault' ORDER BY vault",
            &[],
        )
    }

    fn next_job_seq(&self) -> Result<i64> {
        self.count_of("SELECT nextval('job_seq')", &[])
    }

    fn upsert_job(&self, j: &JobRow) -> Result<()> {
        self.execute(
            "INSERT INTO jobs(id, vault, seq, status, operation, bmt, start_time, item, body, queue, exclusive, needs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, operation = excluded.operation,
                 bmt = excluded.bmt, start_time = excluded.start_time, item = excluded.item, body = excluded.body,
                 queue = excluded.queue, exclusive = excluded.exclusive, needs = excluded.needs",
            &[
                &j.id, &j.vault, &j.seq, &j.status, &j.operation, &j.bmt, &j.start_time, &j.item,
                &j.body, &j.queue, &j.exclusive, &j.needs,
            ],
        )?;
        Ok(())
    }

    fn jobs_by_id(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .query_opt("SELECT body FROM jobs WHERE id = $1", &[&id])?
            .map(|r| r.get(0)))
    }

    fn get_job_body(&self, vault: &str, id: &str) -> Result<Option<String>> {
        Ok(self
            .query_opt(
                "SELECT body FROM jobs WHERE vault = $1 AND id = $2",
                &[&vault, &id],
            )?
            .map(|r| r.get(0)))
    }

    fn list_jobs(
        &self,
        vault: &str,
        q: &JobQuery,
        limit: usize,
    ) -> Result<Vec<(String, String, i64)>> {
        let (sql, args) = crate::list_jobs_sql(vault, q, limit, |n| format!("${n}"));
        let args: Vec<Box<dyn ToSql + Sync>> = args
            .into_iter()
            .map(|a| -> Box<dyn ToSql + Sync> {
                match a {
                    crate::Arg::Text(t) => Box::new(t),
                    crate::Arg::Int(i) => Box::new(i),
                }
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        Ok(self
            .query(&sql, &params)?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn jobs_with_status(&self, statuses: &[&str]) -> Result<Vec<String>> {
        let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
        self.strings(
            "SELECT body FROM jobs WHERE status = ANY($1) ORDER BY seq",
            &[&statuses],
        )
    }

    fn item_has_job(
        &self,
        vault: &str,
        item: &str,
        statuses: &[&str],
        except: &str,
    ) -> Result<bool> {
        let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
        Ok(self.count_of(
            "SELECT count(*) FROM jobs WHERE vault = $1 AND item = $2 AND status = ANY($3) AND id <> $4",
            &[&vault, &item, &statuses, &except],
        )? > 0)
    }

    fn active_jobs_in_vault(&self, vault: &str) -> Result<i64> {
        self.count_of(
            "SELECT count(*) FROM jobs WHERE vault = $1 AND status IN ('InProgress', 'Cancelling')",
            &[&vault],
        )
    }

    fn delete_finished_jobs_before(&self, cutoff: &str, batch: usize) -> Result<usize> {
        Ok(self.execute(
            "DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs WHERE start_time < $1
                  AND status IN ('Completed', 'CompletedWithWarnings', 'Failed', 'Cancelled')
                LIMIT $2)",
            &[&cutoff, &(batch as i64)],
        )? as usize)
    }

    fn delete_jobs_of_vault(&self, vault: &str) -> Result<usize> {
        Ok(self.execute("DELETE FROM jobs WHERE vault = $1", &[&vault])? as usize)
    }

    fn acquire_lease(&self, name: &str, owner: &str, now: &str, until: &str) -> Result<bool> {
        Ok(self.execute(
            "INSERT INTO leases(name, owner, until) VALUES ($1, $2, $4)
             ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, until = excluded.until
             WHERE leases.owner = excluded.owner OR leases.until < $3",
            &[&name, &owner, &now, &until],
        )? > 0)
    }

    fn claim_slot(&self, vault: &str, item: &str, slot: &str, job_id: &str) -> Result<bool> {
        Ok(self.execute(
            "INSERT INTO schedule_runs(vault, item, slot, job_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&vault, &item, &slot, &job_id],
        )? > 0)
    }

    fn claimable_job(&self, owner: &str, max_running: usize) -> Result<Option<(String, i64)>> {
        let running = self.count_of(
            "SELECT count(*) FROM jobs WHERE queue = 'running' AND lease_owner = $1",
            &[&owner],
        )?;
        if running >= max_running as i64 {
            return Ok(None);
        }
        Ok(self
            .query_opt(
                // The queued jobs in order behind a fence (OFFSET 0), so the plan walks them
                // oldest first and stops at the first admissible one, even while the table's
                // statistics are stale (a burst of 1,000 scheduled jobs before autovacuum
                // analyzes them would otherwise test every queued job, ~20 ms per claim).
                "SELECT q.body, q.attempt
                 FROM (SELECT * FROM jobs WHERE queue = 'queued' ORDER BY seq OFFSET 0) q
                 WHERE NOT EXISTS (SELECT 1 FROM jobs r WHERE r.queue = 'running' AND r.vault = q.vault
                       AND (r.item = q.item OR r.exclusive OR q.exclusive))
                   AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.queue = 'queued' AND e.vault = q.vault
                       AND e.seq < q.seq AND (e.item = q.item OR e.exclusive OR q.exclusive))
                   AND (q.needs = '' OR EXISTS (SELECT 1 FROM node_offers o WHERE o.offer = q.needs AND o.node = $1))
                 LIMIT 1",
                &[&owner],
            )?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn queued_reasons(
        &self,
        limit: usize,
        live_since: &str,
    ) -> Result<Vec<(String, QueuedReason)>> {
        Ok(self
            .query(
                "SELECT q.id,
                    EXISTS (SELECT 1 FROM jobs r WHERE r.vault = q.vault AND r.item = q.item AND r.seq < q.seq
                            AND r.queue IN ('running', 'queued')),
                    EXISTS (SELECT 1 FROM jobs r WHERE r.vault = q.vault AND r.seq < q.seq
                            AND r.queue IN ('running', 'queued') AND (r.exclusive OR q.exclusive)),
                    q.needs <> '' AND NOT EXISTS (SELECT 1 FROM node_offers o JOIN nodes n ON n.id = o.node
                            WHERE o.offer = q.needs AND n.last_seen >= $2)
                 FROM jobs q WHERE q.queue = 'queued' ORDER BY q.seq LIMIT $1",
                &[&(limit as i64), &live_since],
            )?
            .iter()
            .map(|r| (r.get(0), crate::reason(r.get(1), r.get(2), r.get(3))))
            .collect())
    }

    fn register_node(&self, id: &str, sources: &str, offers: &[String], now: &str) -> Result<()> {
        self.execute(
            "INSERT INTO nodes(id, sources, last_seen) VALUES ($1, $2, $3)
             ON CONFLICT(id) DO UPDATE SET sources = excluded.sources, last_seen = excluded.last_seen",
            &[&id, &sources, &now],
        )?;
        self.execute("DELETE FROM node_offers WHERE node = $1", &[&id])?;
        self.execute(
            "INSERT INTO node_offers(node, offer) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            &[&id, &offers],
        )?;
        Ok(())
    }

    fn node_seen(&self, id: &str, now: &str) -> Result<()> {
        self.execute(
            "UPDATE nodes SET last_seen = $2 WHERE id = $1",
            &[&id, &now],
        )?;
        Ok(())
    }

    fn live_nodes(&self, since: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .query(
                "SELECT id, sources FROM nodes WHERE last_seen >= $1 ORDER BY id",
                &[&since],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn set_lease(&self, id: &str, owner: &str, until: &str, attempt: i64) -> Result<()> {
        self.execute(
            "UPDATE jobs SET lease_owner = $2, lease_expires_at = $3, attempt = $4 WHERE id = $1",
            &[&id, &owner, &until, &attempt],
        )?;
        Ok(())
    }

    fn renew_leases(&self, owner: &str, until: &str) -> Result<usize> {
        Ok(self.execute(
            "UPDATE jobs SET lease_expires_at = $2 WHERE queue = 'running' AND lease_owner = $1",
            &[&owner, &until],
        )? as usize)
    }

    fn holds_job(&self, id: &str, owner: &str, attempt: i64) -> Result<bool> {
        Ok(self.count_of(
            "SELECT count(*) FROM jobs WHERE id = $1 AND queue = 'running' AND lease_owner = $2
               AND attempt = $3",
            &[&id, &owner, &attempt],
        )? > 0)
    }

    fn expired_leases(&self, now: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .query(
                "SELECT body, coalesce(lease_owner, '') FROM jobs
                 WHERE queue = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < $1)",
                &[&now],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn cancel_requests_of(&self, owner: &str) -> Result<Vec<String>> {
        self.strings(
            "SELECT id FROM jobs WHERE queue = 'running' AND lease_owner = $1 AND status = 'Cancelling'",
            &[&owner],
        )
    }

    fn insert_activity(&self, id: &str, sub: &str, ts: &str, body: &str) -> Result<()> {
        self.execute(
            "INSERT INTO activity(id, sub, ts, body) VALUES ($1, $2, $3, $4)",
            &[&id, &sub, &ts, &body],
        )?;
        Ok(())
    }

    fn list_activity(
        &self,
        sub: &str,
        from: &str,
        to: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>> {
        let (ats, aid) = after.unwrap_or(("", ""));
        Ok(self
            .query(
                "SELECT ts, id, body FROM activity WHERE sub = $1 AND ts >= $2 AND ts <= $3
                 AND ($4 = '' OR ts < $4 OR (ts = $4 AND id < $5))
                 ORDER BY ts DESC, id DESC LIMIT $6",
                &[&sub, &from, &to, &ats, &aid, &(limit as i64)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn delete_activity_before(&self, cutoff: &str, batch: usize) -> Result<usize> {
        Ok(self.execute(
            "DELETE FROM activity WHERE id IN (SELECT id FROM activity WHERE ts < $1 LIMIT $2)",
            &[&cutoff, &(batch as i64)],
        )? as usize)
    }

    fn count_queue(&self, queue: &str) -> Result<i64> {
        self.count_of("SELECT count(*) FROM jobs WHERE queue = $1", &[&queue])
    }

    fn append_job_log(
        &self,
        job_id: &str,
        t: &str,
        level: &str,
        msg: &str,
        head: i64,
        tail: i64,
    ) -> Result<i64> {
        let n = self.count_of(
            "SELECT coalesce(max(n), -1) + 1 FROM job_log WHERE job_id = $1",
            &[&job_id],
        )?;
        self.execute(
            "INSERT INTO job_log(job_id, n, t, level, msg) VALUES ($1, $2, $3, $4, $5)",
            &[&job_id, &n, &t, &level, &msg],
        )?;
        if n - tail >= head {
            self.execute(
                "DELETE FROM job_log WHERE job_id = $1 AND n = $2",
                &[&job_id, &(n - tail)],
            )?;
        }
        Ok(n)
    }

    fn job_log(&self, job_id: &str, start: i64, limit: i64) -> Result<(Vec<LogLine>, i64)> {
        let lines = self
            .query(
                "SELECT n, t, level, msg FROM job_log WHERE job_id = $1 AND n >= $2 ORDER BY n LIMIT $3",
                &[&job_id, &start, &limit],
            )?
            .iter()
            .map(|r| LogLine {
                n: r.get(0),
                t: r.get(1),
                level: r.get(2),
                msg: r.get(3),
            })
            .collect();
        let total = self.count_of(
            "SELECT coalesce(max(n), -1) + 1 FROM job_log WHERE job_id = $1",
            &[&job_id],
        )?;
        Ok((lines, total))
    }

    fn delete_orphan_job_logs(&self) -> Result<usize> {
        Ok(self.execute(
            "DELETE FROM job_log WHERE job_id NOT IN (SELECT id FROM jobs)",
            &[],
        )? as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a server that does not wait for WAL flushes (the test cluster runs with
    /// `synchronous_commit=off`), a durable transaction still does; others keep the setting.
    #[test]
    fn durable_transactions_wait_for_the_flush_whatever_the_server_setting() {
        let cluster = rsvault_testpg::Cluster::start();
        let store = Postgres::open(&cluster.create_db("durable")).unwrap();
        let setting = |t: &PgTx<'_>| -> Result<String> {
            Ok(t.query("SHOW synchronous_commit", &[])?[0].get(0))
        };
        assert_eq!(store.tx(|t| setting(t)).unwrap(), "off");
        assert_eq!(store.tx_durable(|t| setting(t)).unwrap(), "on");
        assert_eq!(store.tx(|t| setting(t)).unwrap(), "off");
    }
}
