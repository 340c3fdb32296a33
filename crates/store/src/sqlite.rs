//! The SQLite backend: one file in WAL mode, one writer connection (`BEGIN IMMEDIATE`) and a
//! few read-only connections that read next to it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::{JobQuery, JobRow, LogLine, MetaTx, QueuedReason, Result};

/// Numbered, forward-only migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_initial.sql"),
    include_str!("../migrations/sqlite/0002_job_queue.sql"),
    include_str!("../migrations/sqlite/0003_nodes.sql"),
    include_str!("../migrations/sqlite/0004_job_log.sql"),
    include_str!("../migrations/sqlite/0005_activity_log.sql"),
];

pub struct Sqlite {
    /// The one writer: every transaction that writes goes through it (`BEGIN IMMEDIATE`).
    conn: Mutex<Connection>,
    /// Read-only connections for reads (WAL lets them run next to the writer and each other).
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
}

/// Read-only connections per store.
const READERS: usize = 4;

/// Prepared statements each connection keeps: every fixed statement of this file, plus the
/// job-list variants in use.
const STATEMENTS: usize = 128;

impl Sqlite {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        migrate(&conn)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(10))?;
            r.set_prepared_statement_cache_capacity(STATEMENTS);
            readers.push(Mutex::new(r));
        }
        Ok(Self {
            conn: Mutex::new(conn),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Rewrites the database so that no free page or journal keeps data that was overwritten
    /// (after secrets were moved out of it).
    pub fn compact(&self) -> Result<()> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    /// Runs the reads in `f` on a read-only connection, in one snapshot (a deferred transaction),
    /// without waiting for the writer. A write in `f` fails.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&SqliteTx<'_>) -> Result<T>) -> Result<T> {
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A free reader if there is one, else wait for the next in turn.
        let mut conn = (0..self.readers.len())
            .find_map(|i| {
                self.readers[(start + i) % self.readers.len()]
                    .try_lock()
                    .ok()
            })
            .unwrap_or_else(|| {
                self.readers[start % self.readers.len()]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            });
        let t = conn.transaction()?;
        let out = f(&SqliteTx(&t))?;
        t.finish()?;
        Ok(out)
    }

    /// Runs `f` in one immediate transaction: all of its writes land, or none.
    pub(crate) fn tx<T>(&self, f: impl FnOnce(&SqliteTx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Self::immediate(&mut conn, f)
    }

    fn immediate<T>(
        conn: &mut Connection,
        f: impl FnOnce(&SqliteTx<'_>) -> Result<T>,
    ) -> Result<T> {
        let t = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&SqliteTx(&t))?;
        t.commit()?;
        Ok(out)
    }

    /// [`Sqlite::tx`] with the WAL synced at commit (`synchronous=FULL`); the connection goes
    /// back to `NORMAL` (synced at checkpoints) afterwards.
    pub(crate) fn tx_durable<T>(&self, f: impl FnOnce(&SqliteTx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.pragma_update(None, "synchronous", "FULL")?;
        let out = Self::immediate(&mut conn, f);
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        out
    }
}

/// Runs the migrations this database has not seen, each in its own transaction.
fn migrate(conn: &Connection) -> Result<()> {
    let done: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}\nPRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
    }
    Ok(())
}

pub(crate) struct SqliteTx<'a>(&'a rusqlite::Transaction<'a>);

impl SqliteTx<'_> {
    /// Executes a statement from the connection's cache of prepared statements (SQLite parses
    /// each text once per connection, not once per call).
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.0.prepare_cached(sql)?.execute(p)
    }

    /// The first row of a cached statement.
    fn row<T>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.0.prepare_cached(sql)?.query_row(p, f)
    }
}

impl MetaTx for SqliteTx<'_> {
    fn doc(&self, kind: &str, vault: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT body FROM docs WHERE kind = ?1 AND vault = ?2 AND key = ?3")?
            .query_row(params![kind, vault, key], |r| r.get(0))
            .optional()?)
    }

    fn put_doc(&self, kind: &str, vault: &str, key: &str, parent: &str, body: &str) -> Result<()> {
        self.0.prepare_cached(
            "INSERT INTO docs(kind, vault, key, parent, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(kind, vault, key) DO UPDATE SET parent = excluded.parent, body = excluded.body",
        )?
        .execute(params![kind, vault, key, parent, body])?;
        Ok(())
    }

    fn delete(&self, kind: &str, vault: &str, key: &str) -> Result<bool> {
        let n = self.exec(
            "DELETE FROM docs WHERE kind = ?1 AND vault = ?2 AND key = ?3",
            params![kind, vault, key],
        )?;
        Ok(n > 0)
    }

    fn docs(&self, kind: &str, vault: &str, parent: Option<&str>) -> Result<Vec<String>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT body FROM docs WHERE kind = ?1 AND vault = ?2 AND (?3 IS NULL OR parent = ?3) ORDER BY key",
        )?;
        let rows = stmt.query_map(params![kind, vault, parent], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    fn docs_with_vault_prefix(&self, kind: &str, prefix: &str) -> Result<Vec<String>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT body FROM docs WHERE kind = ?1 AND substr(vault, 1, length(?2)) = ?2 ORDER BY vault, key",
        )?;
        let rows = stmt.query_map(params![kind, prefix], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    fn count(&self, kind: &str, vault: &str, parent: Option<&str>) -> Result<i64> {
        Ok(self.row(
            "SELECT count(*) FROM docs WHERE kind = ?1 AND vault = ?2 AND (?3 IS NULL OR parent = ?3)",
            params![kind, vault, parent],
            |r| r.get(0),
        )?)
    }

    fn delete_all(&self, kind: &str, vault: &str, parent: Option<&str>) -> Result<usize> {
        Ok(self.exec(
            "DELETE FROM docs WHERE kind = ?1 AND vault = ?2 AND (?3 IS NULL OR parent = ?3)",
            params![kind, vault, parent],
        )?)
    }

    fn next_job_seq(&self) -> Result<i64> {
        Ok(
            self.row("SELECT coalesce(max(seq), 0) + 1 FROM jobs", [], |r| {
                r.get(0)
            })?,
        )
    }

    fn upsert_job(&self, j: &JobRow) -> Result<()> {
        self.exec(
            "INSERT INTO jobs(id, vault, seq, status, operation, bmt, start_time, item, body, queue, exclusive, needs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, operation = excluded.operation,
                 bmt = excluded.bmt, start_time = excluded.start_time, item = excluded.item, body = excluded.body,
                 queue = excluded.queue, exclusive = excluded.exclusive, needs = excluded.needs",
            params![j.id, j.vault, j.seq, j.status, j.operation, j.bmt, j.start_time, j.item, j.body, j.queue, j.exclusive, j.needs],
        )?;
        Ok(())
    }

    fn jobs_by_id(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .row("SELECT body FROM jobs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn get_job_body(&self, vault: &str, id: &str) -> Result<Option<String>> {
        Ok(self
            .row(
                "SELECT body FROM jobs WHERE vault = ?1 AND id = ?2",
                params![vault, id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn list_jobs(
        &self,
        vault: &str,
        q: &JobQuery,
        limit: usize,
    ) -> Result<Vec<(String, String, i64)>> {
        let (sql, args) = crate::list_jobs_sql(vault, q, limit, |n| format!("?{n}"));
        let args = args.into_iter().map(|a| match a {
            crate::Arg::Text(t) => rusqlite::types::Value::from(t),
            crate::Arg::Int(i) => rusqlite::types::Value::from(i),
        });
        let mut stmt = self.0.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    fn jobs_with_status(&self, statuses: &[&str]) -> Result<Vec<String>> {
        let marks = vec!["?"; statuses.len()].join(", ");
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT body FROM jobs WHERE status IN ({marks}) ORDER BY seq"
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(statuses), |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    fn item_has_job(
        &self,
        vault: &str,
        item: &str,
        statuses: &[&str],
        except: &str,
    ) -> Result<bool> {
        let mut stmt = self.0.prepare_cached(
            "SELECT count(*) FROM jobs WHERE vault = ?1 AND item = ?2 AND status = ?3 AND id <> ?4",
        )?;
        for s in statuses {
            let n: i64 = stmt.query_row(params![vault, item, s, except], |r| r.get(0))?;
            if n > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn acquire_lease(&self, name: &str, owner: &str, now: &str, until: &str) -> Result<bool> {
        let n = self.exec(
            "INSERT INTO leases(name, owner, until) VALUES (?1, ?2, ?4)
             ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, until = excluded.until
             WHERE leases.owner = excluded.owner OR leases.until < ?3",
            params![name, owner, now, until],
        )?;
        Ok(n > 0)
    }

    fn claim_slot(&self, vault: &str, item: &str, slot: &str, job_id: &str) -> Result<bool> {
        let n = self.exec(
            "INSERT OR IGNORE INTO schedule_runs(vault, item, slot, job_id) VALUES (?1, ?2, ?3, ?4)",
            params![vault, item, slot, job_id],
        )?;
        Ok(n > 0)
    }

    fn delete_finished_jobs_before(&self, cutoff: &str, batch: usize) -> Result<usize> {
        Ok(self.exec(
            "DELETE FROM jobs WHERE rowid IN (
                SELECT rowid FROM jobs WHERE start_time < ?1
                  AND status IN ('Completed', 'CompletedWithWarnings', 'Failed', 'Cancelled')
                LIMIT ?2)",
            params![cutoff, batch as i64],
        )?)
    }

    fn vault_keys(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT vault FROM docs WHERE kind = 'vault' ORDER BY vault")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    fn active_jobs_in_vault(&self, vault: &str) -> Result<i64> {
        Ok(self.row(
            "SELECT count(*) FROM jobs WHERE vault = ?1 AND status IN ('InProgress', 'Cancelling')",
            params![vault],
            |r| r.get(0),
        )?)
    }

    fn claimable_job(&self, owner: &str, max_running: usize) -> Result<Option<(String, i64)>> {
        let running: i64 = self.row(
            "SELECT count(*) FROM jobs WHERE queue = 'running' AND lease_owner = ?1",
            params![owner],
            |r| r.get(0),
        )?;
        if running >= max_running as i64 {
            return Ok(None);
        }
        Ok(self.row(
                "SELECT q.body, q.attempt FROM jobs q WHERE q.queue = 'queued'
                   AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.queue = 'running' AND r.vault = q.vault
                       AND (r.item = q.item OR r.exclusive = 1 OR q.exclusive = 1))
                   AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.queue = 'queued' AND e.vault = q.vault
                       AND e.seq < q.seq AND (e.item = q.item OR e.exclusive = 1 OR q.exclusive = 1))
                   AND (q.needs = '' OR EXISTS (SELECT 1 FROM node_offers o WHERE o.offer = q.needs AND o.node = ?1))
                 ORDER BY q.seq LIMIT 1",
                params![owner],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn queued_reasons(
        &self,
        limit: usize,
        live_since: &str,
    ) -> Result<Vec<(String, QueuedReason)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT q.id,
                EXISTS (SELECT 1 FROM jobs r WHERE r.vault = q.vault AND r.item = q.item AND r.seq < q.seq
                        AND r.queue IN ('running', 'queued')),
                EXISTS (SELECT 1 FROM jobs r WHERE r.vault = q.vault AND r.seq < q.seq
                        AND r.queue IN ('running', 'queued') AND (r.exclusive = 1 OR q.exclusive = 1)),
                q.needs <> '' AND NOT EXISTS (SELECT 1 FROM node_offers o JOIN nodes n ON n.id = o.node
                        WHERE o.offer = q.needs AND n.last_seen >= ?2)
             FROM jobs q WHERE q.queue = 'queued' ORDER BY q.seq LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64, live_since], |r| {
            Ok((r.get(0)?, crate::reason(r.get(1)?, r.get(2)?, r.get(3)?)))
        })?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    fn set_lease(&self, id: &str, owner: &str, until: &str, attempt: i64) -> Result<()> {
        self.exec(
            "UPDATE jobs SET lease_owner = ?2, lease_expires_at = ?3, attempt = ?4 WHERE id = ?1",
            params![id, owner, until, attempt],
        )?;
        Ok(())
    }

    fn renew_leases(&self, owner: &str, until: &str) -> Result<usize> {
        Ok(self.exec(
            "UPDATE jobs SET lease_expires_at = ?2 WHERE queue = 'running' AND lease_owner = ?1",
            params![owner, until],
        )?)
    }

    fn holds_job(&self, id: &str, owner: &str, attempt: i64) -> Result<bool> {
        let n: i64 = self.row(
            "SELECT count(*) FROM jobs WHERE id = ?1 AND queue = 'running' AND lease_owner = ?2
               AND attempt = ?3",
            params![id, owner, attempt],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn expired_leases(&self, now: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT body, coalesce(lease_owner, '') FROM jobs
             WHERE queue = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < ?1)",
        )?;
        let rows = stmt.query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    fn cancel_requests_of(&self, owner: &str) -> Result<Vec<String>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id FROM jobs WHERE queue = 'running' AND lease_owner = ?1 AND status = 'Cancelling'",
        )?;
        let rows = stmt.query_map(params![owner], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    fn register_node(&self, id: &str, sources: &str, offers: &[String], now: &str) -> Result<()> {
        self.exec(
            "INSERT INTO nodes(id, sources, last_seen) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET sources = excluded.sources, last_seen = excluded.last_seen",
            params![id, sources, now],
        )?;
        self.0
            .execute("DELETE FROM node_offers WHERE node = ?1", params![id])?;
        let mut stmt = self
            .0
            .prepare_cached("INSERT OR IGNORE INTO node_offers(node, offer) VALUES (?1, ?2)")?;
        for o in offers {
            stmt.execute(params![id, o])?;
        }
        Ok(())
    }

    fn node_seen(&self, id: &str, now: &str) -> Result<()> {
        self.exec(
            "UPDATE nodes SET last_seen = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    fn live_nodes(&self, since: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT id, sources FROM nodes WHERE last_seen >= ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![since], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    fn delete_jobs_of_vault(&self, vault: &str) -> Result<usize> {
        Ok(self.exec("DELETE FROM jobs WHERE vault = ?1", params![vault])?)
    }

    fn insert_activity(&self, id: &str, sub: &str, ts: &str, body: &str) -> Result<()> {
        self.exec(
            "INSERT INTO activity(id, sub, ts, body) VALUES (?1, ?2, ?3, ?4)",
            params![id, sub, ts, body],
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
        let mut stmt = self.0.prepare_cached(
            "SELECT ts, id, body FROM activity WHERE sub = ?1 AND ts >= ?2 AND ts <= ?3
             AND (?4 = '' OR ts < ?4 OR (ts = ?4 AND id < ?5))
             ORDER BY ts DESC, id DESC LIMIT ?6",
        )?;
        let rows = stmt.query_map(params![sub, from, to, ats, aid, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_activity_before(&self, cutoff: &str, batch: usize) -> Result<usize> {
        Ok(self.exec(
            "DELETE FROM activity WHERE id IN (SELECT id FROM activity WHERE ts < ?1 LIMIT ?2)",
            params![cutoff, batch as i64],
        )?)
    }

    fn count_queue(&self, queue: &str) -> Result<i64> {
        Ok(self.row(
            "SELECT count(*) FROM jobs WHERE queue = ?1",
            params![queue],
            |r| r.get(0),
        )?)
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
        let n: i64 = self.row(
            "SELECT coalesce(max(n), -1) + 1 FROM job_log WHERE job_id = ?1",
            params![job_id],
            |r| r.get(0),
        )?;
        self.exec(
            "INSERT INTO job_log(job_id, n, t, level, msg) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![job_id, n, t, level, msg],
        )?;
        if n - tail >= head {
            self.exec(
                "DELETE FROM job_log WHERE job_id = ?1 AND n = ?2",
                params![job_id, n - tail],
            )?;
        }
        Ok(n)
    }

    fn job_log(&self, job_id: &str, start: i64, limit: i64) -> Result<(Vec<LogLine>, i64)> {
        let mut stmt = self.0.prepare_cached(
            "SELECT n, t, level, msg FROM job_log WHERE job_id = ?1 AND n >= ?2 ORDER BY n LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![job_id, start, limit], |r| {
            Ok(LogLine {
                n: r.get(0)?,
                t: r.get(1)?,
                level: r.get(2)?,
                msg: r.get(3)?,
            })
        })?;
        let lines = rows.collect::<rusqlite::Result<_>>()?;
        let total: i64 = self.row(
            "SELECT coalesce(max(n), -1) + 1 FROM job_log WHERE job_id = ?1",
            params![job_id],
            |r| r.get(0),
        )?;
        Ok((lines, total))
    }

    fn delete_orphan_job_logs(&self) -> Result<usize> {
        Ok(self.exec(
            "DELETE FROM job_log WHERE job_id NOT IN (SELECT id FROM jobs)",
            [],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before numbered migrations (schema 0001, user_version 0) with a
    /// finished, a queued and a running job opens, and its jobs land in the right queue state.
    #[test]
    fn a_database_from_before_migrations_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            for (id, seq, status, started, work) in [
                ("done", 1, "Completed", true, "Backup"),
                ("waiting", 2, "InProgress", false, "DeleteData"),
                ("running", 3, "Cancelling", true, "Backup"),
            ] {
                let body = format!(r#"{{"started":{started},"work":{{"type":"{work}"}}}}"#);
                conn.execute(
                    "INSERT INTO jobs(id, vault, seq, status, operation, bmt, start_time, item, body)
                     VALUES (?1, 'v', ?2, ?3, 'Backup', 'AzureStorage', '2026-01-01T00:00:00Z', 'i', ?4)",
                    params![id, seq, status, body],
                )
                .unwrap();
            }
        }
        let store = Sqlite::open(&path).unwrap();
        let conn = store.conn.lock().unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mut stmt = conn
            .prepare("SELECT id, queue, exclusive FROM jobs ORDER BY seq")
            .unwrap();
        let rows: Vec<(String, String, bool)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("done".into(), "done".into(), false),
                ("waiting".into(), "queued".into(), true),
                ("running".into(), "running".into(), false),
            ]
        );
        drop(stmt);
        drop(conn);
        // Opening again runs nothing twice.
        drop(store);
        Sqlite::open(&path).unwrap();
    }

    /// A durable transaction commits with the WAL synced, and leaves the writer as it was.
    #[test]
    fn durable_transactions_sync_at_commit_and_only_they() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("d.db")).unwrap();
        let level = |t: &SqliteTx<'_>| -> Result<i64> {
            Ok(t.0.pragma_query_value(None, "synchronous", |r| r.get(0))?)
        };
        // 1 = NORMAL, 2 = FULL
        assert_eq!(store.tx(|t| level(t)).unwrap(), 1);
        assert_eq!(store.tx_durable(|t| level(t)).unwrap(), 2);
        assert_eq!(store.tx(|t| level(t)).unwrap(), 1);
        let failed: Result<()> = store.tx_durable(|_| Err(crate::Error::Missing("x".into())));
        assert!(failed.is_err());
        assert_eq!(store.tx(|t| level(t)).unwrap(), 1);
    }
}
