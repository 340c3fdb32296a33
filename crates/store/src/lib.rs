//! The metadata store. All SQL lives here; no other crate names a table.
//!
//! Resources that are read whole (vaults, policies, containers, protected items, recovery points,
//! operations, exports) are JSON documents keyed by (kind, vault, key). Jobs have their own table
//! with indexed columns because they are filtered, paged and queued.
//!
//! Two backends answer the same operations ([`MetaTx`]): SQLite (one file in WAL mode, the
//! embedded default for one node) and PostgreSQL (one database that several nodes share). Callers
//! compose operations into transactions with [`Store::tx`] (all writes land or none, one writer at
//! a time) and [`Store::read`] (one consistent snapshot, never waiting for the writer).

use rsvault_types::arm;
use rsvault_types::job::Job;
use serde::de::DeserializeOwned;
use serde::Serialize;

mod postgres;
mod sqlite;

pub use postgres::Postgres;
pub use sqlite::Sqlite;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("stored document is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} does not exist")]
    Missing(String),
    #[error("job {0} is no longer held by this node (its lease expired and it was ended)")]
    Fenced(String),
    #[error("store URL {0:?} is not understood: {1}")]
    Url(String, String),
    #[error("store misuse: {0}")]
    Internal(String),
}

impl From<Error> for rsvault_types::arm::ArmError {
    fn from(e: Error) -> Self {
        rsvault_types::arm::ArmError::internal(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One row of the jobs table, as the store sees it.
pub struct JobRow {
    pub id: String,
    pub vault: String,
    pub seq: i64,
    pub status: String,
    pub operation: String,
    pub bmt: String,
    pub start_time: String,
    pub item: String,
    pub body: String,
    /// Queue position: `queued`, `running` or `done`.
    pub queue: &'static str,
    /// Needs the vault to itself.
    pub exclusive: bool,
    /// What the claiming node must offer ('' = any node).
    pub needs: String,
}

impl JobRow {
    /// The row that stores `job`: its indexed columns and its JSON body.
    pub fn of(job: &Job) -> Self {
        Self {
            id: job.id.clone(),
            vault: job.vault.key(),
            seq: job.seq,
            status: job.status.as_str().into(),
            operation: job.operation.clone(),
            bmt: job.bmt().into(),
            start_time: arm::time(job.start),
            item: job.item_key.clone(),
            body: serde_json::to_string(job).expect("job serializes"),
            queue: if job.status.is_terminal() {
                "done"
            } else if job.started {
                "running"
            } else {
                "queued"
            },
            exclusive: job.work.is_exclusive(),
            needs: job.needs.clone(),
        }
    }
}

/// Filter for job listings. Times are RFC 3339 strings comparable as text (all UTC, same format).
#[derive(Debug, Default, Clone)]
pub struct JobQuery {
    pub status: Option<String>,
    pub operation: Option<String>,
    pub bmt: Option<String>,
    pub job_id: Option<String>,
    pub start_from: Option<String>,
    pub start_to: Option<String>,
    /// Continue after this (start_time, seq) position.
    pub after: Option<(String, i64)>,
}

/// Why a queued job waits: another job of its `item`, an exclusive job of its `vault`, a live
/// `node` that has what it needs, or a free runner `slot` (nothing else holds it).
pub type QueuedReason = &'static str;

/// The reason for a queued job from what blocks it, most specific first.
fn reason(item: bool, vault: bool, node: bool) -> QueuedReason {
    if item {
        "item"
    } else if vault {
        "vault"
    } else if node {
        "node"
    } else {
        "slot"
    }
}

/// An argument of a built query.
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// The job listing's SQL for `q`, with placeholders spelled by `mark(n)` (`?n` for SQLite, `$n`
/// for PostgreSQL), and its arguments. It names only the predicates that are present (values
/// already in their canonical spelling), so both planners can use the `(vault, status|operation,
/// start_time, seq)` indexes and a rare status is found without scanning a vault's history.
pub(crate) fn list_jobs_sql(
    vault: &str,
    q: &JobQuery,
    limit: usize,
    mark: fn(usize) -> String,
) -> (String, Vec<Arg>) {
    let mut sql = format!(
        "SELECT body, start_time, seq FROM jobs WHERE vault = {}",
        mark(1)
    );
    let mut args = vec![Arg::Text(vault.to_string())];
    let mut push = |sql: &mut String, clause: &str, v: Arg| {
        args.push(v);
        sql.push_str(&clause.replace('?', &mark(args.len())));
    };
    for (col, v) in [
        ("status", &q.status),
        ("operation", &q.operation),
        ("bmt", &q.bmt),
        ("id", &q.job_id),
    ] {
        if let Some(v) = v {
            push(&mut sql, &format!(" AND {col} = ?"), Arg::Text(v.clone()));
        }
    }
    if let Some(t) = &q.start_from {
        push(&mut sql, " AND start_time >= ?", Arg::Text(t.clone()));
    }
    if let Some(t) = &q.start_to {
        push(&mut sql, " AND start_time <= ?", Arg::Text(t.clone()));
    }
    if let Some((t, seq)) = &q.after {
        args.push(Arg::Text(t.clone()));
        args.push(Arg::Int(*seq));
        let (a, b) = (mark(args.len() - 1), mark(args.len()));
        sql.push_str(&format!(
            " AND (start_time < {a} OR (start_time = {a} AND seq < {b}))"
        ));
    }
    args.push(Arg::Int(limit as i64));
    sql.push_str(&format!(
        " ORDER BY start_time DESC, seq DESC LIMIT {}",
        mark(args.len())
    ));
    (sql, args)
}

/// What one transaction can do, whatever the backend. Documents travel as JSON text; [`Tx`]
/// adds the typed accessors.
pub trait MetaTx {
    /// The JSON body of one document.
    fn doc(&self, kind: &str, vault: &str, key: &str) -> Result<Option<String>>;
    /// Creates or replaces one document.
    fn put_doc(&self, kind: &str, vault: &str, key: &str, parent: &str, body: &str) -> Result<()>;
    /// Deletes one document; whether it existed.
    fn delete(&self, kind: &str, vault: &str, key: &str) -> Result<bool>;
    /// Documents of `kind` in `vault` (optionally under `parent`), ordered by key.
    fn docs(&self, kind: &str, vault: &str, parent: Option<&str>) -> Result<Vec<String>>;
    /// Documents of `kind` whose vault key starts with `prefix`, ordered by vault and key.
    fn docs_with_vault_prefix(&self, kind: &str, prefix: &str) -> Result<Vec<String>>;
    fn count(&self, kind: &str, vault: &str, parent: Option<&str>) -> Result<i64>;
    fn delete_all(&self, kind: &str, vault: &str, parent: Option<&str>) -> Result<usize>;
    /// All vault keys that have a vault document.
    fn vault_keys(&self) -> Result<Vec<String>>;

    /// The sequence number of the next job (strictly greater than every job's so far).
    fn next_job_seq(&self) -> Result<i64>;
    fn upsert_job(&self, j: &JobRow) -> Result<()>;
    fn jobs_by_id(&self, id: &str) -> Result<Option<String>>;
    fn get_job_body(&self, vault: &str, id: &str) -> Result<Option<String>>;
    /// Job bodies matching `q`, newest first, at most `limit`, with each row's paging position
    /// (start time, seq).
    fn list_jobs(
        &self,
        vault: &str,
        q: &JobQuery,
        limit: usize,
    ) -> Result<Vec<(String, String, i64)>>;
    /// Bodies of jobs in any of `statuses` (all vaults), oldest first.
    fn jobs_with_status(&self, statuses: &[&str]) -> Result<Vec<String>>;
    /// Whether `item` in `vault` has a job in one of `statuses` other than `except`.
    fn item_has_job(
        &self,
        vault: &str,
        item: &str,
        statuses: &[&str],
        except: &str,
    ) -> Result<bool>;
    /// Jobs of `vault` that are queued, running or cancelling.
    fn active_jobs_in_vault(&self, vault: &str) -> Result<i64>;
    /// Deletes up to `batch` finished jobs that started before `cutoff`. Returns how many.
    fn delete_finished_jobs_before(&self, cutoff: &str, batch: usize) -> Result<usize>;
    fn delete_jobs_of_vault(&self, vault: &str) -> Result<usize>;

    /// Takes or renews the named lease for `owner` until `until` if it is free, expired or
    /// already ours. Returns whether `owner` holds it now.
    fn acquire_lease(&self, name: &str, owner: &str, now: &str, until: &str) -> Result<bool>;
    /// Claims one schedule slot of an item; false when someone already ran it.
    fn claim_slot(&self, vault: &str, item: &str, slot: &str, job_id: &str) -> Result<bool>;

    /// The oldest queued job this node may start now, with its attempt count: none of its item's
    /// or an exclusive job of its vault running, no older queued job of its item or older
    /// exclusive job of its vault waiting (first come, first served), `owner` running fewer
    /// than `max_running` jobs, and offering what the job needs (see [`MetaTx::register_node`]).
    fn claimable_job(&self, owner: &str, max_running: usize) -> Result<Option<(String, i64)>>;
    /// Why each of the first `limit` queued jobs waits; a node seen at or after `live_since`
    /// counts as live.
    fn queued_reasons(&self, limit: usize, live_since: &str)
        -> Result<Vec<(String, QueuedReason)>>;

    /// Records node `id` as live at `now`, with what it offers to jobs (`item:…`, `root:…`) and
    /// its sources (JSON, served to clients by every node).
    fn register_node(&self, id: &str, sources: &str, offers: &[String], now: &str) -> Result<()>;
    /// Marks node `id` live at `now` (its heartbeat).
    fn node_seen(&self, id: &str, now: &str) -> Result<()>;
    /// Nodes seen at or after `since`: (id, sources JSON), by id.
    fn live_nodes(&self, since: &str) -> Result<Vec<(String, String)>>;
    /// Records that `owner` runs job `id` as attempt `attempt` until `until`.
    fn set_lease(&self, id: &str, owner: &str, until: &str, attempt: i64) -> Result<()>;
    /// Extends the leases of every job `owner` runs. Returns how many.
    fn renew_leases(&self, owner: &str, until: &str) -> Result<usize>;
    /// Whether `owner` still runs job `id` as attempt `attempt` (the fence of every write a
    /// running job makes).
    fn holds_job(&self, id: &str, owner: &str, attempt: i64) -> Result<bool>;
    /// Running jobs whose lease expired before `now`: (body, lease owner).
    fn expired_leases(&self, now: &str) -> Result<Vec<(String, String)>>;
    /// Ids of the jobs `owner` runs that a client asked to cancel.
    fn cancel_requests_of(&self, owner: &str) -> Result<Vec<String>>;

    /// Records one activity-log event (`sub` lowercase, `ts` fixed-width RFC 3339 UTC).
    fn insert_activity(&self, id: &str, sub: &str, ts: &str, body: &str) -> Result<()>;
    /// Activity events of `sub` with `from <= ts <= to`, newest first, after the (ts, id)
    /// position `after` when given, at most `limit`: (ts, id, body).
    fn list_activity(
        &self,
        sub: &str,
        from: &str,
        to: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>>;
    /// Deletes up to `batch` activity events older than `cutoff`. Returns how many.
    fn delete_activity_before(&self, cutoff: &str, batch: usize) -> Result<usize>;

    // ---- issue #13: queue gauges and job logs ----

    /// Jobs whose queue state is `queue` (`queued`, `running` or `done`).
    fn count_queue(&self, queue: &str) -> Result<i64>;
    /// Appends a line to a job's log and returns its number. The log keeps its first `head`
    /// lines and its newest `tail` ones: a longer log loses lines from between the two.
    fn append_job_log(
        &self,
        job_id: &str,
        t: &str,
        level: &str,
        msg: &str,
        head: i64,
        tail: i64,
    ) -> Result<i64>;
    /// Up to `limit` lines of a job's log numbered `start` or later, and the number of lines
    /// ever written to it.
    fn job_log(&self, job_id: &str, start: i64, limit: i64) -> Result<(Vec<LogLine>, i64)>;
    /// Deletes the logs of jobs that no longer exist (after history retention or a vault delete).
    fn delete_orphan_job_logs(&self) -> Result<usize>;
}

/// One line of a job's log, as `GET …/backupJobs/{id}/rsvault/log` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogLine {
    pub n: i64,
    /// RFC 3339 UTC.
    pub t: String,
    /// `info`, `warning` or `error`.
    pub level: String,
    pub msg: String,
}

/// One transaction: the backend's operations plus typed document accessors.
pub struct Tx<'a>(&'a dyn MetaTx);

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = dyn MetaTx + 'a;
    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl Tx<'_> {
    pub fn get<T: DeserializeOwned>(
        &self,
        kind: &str,
        vault: &str,
        key: &str,
    ) -> Result<Option<T>> {
        self.0
            .doc(kind, vault, key)?
            .map(|b| serde_json::from_str(&b))
            .transpose()
            .map_err(Into::into)
    }

    pub fn put<T: Serialize>(
        &self,
        kind: &str,
        vault: &str,
        key: &str,
        parent: &str,
        doc: &T,
    ) -> Result<()> {
        self.0
            .put_doc(kind, vault, key, parent, &serde_json::to_string(doc)?)
    }

    /// Documents of `kind` in `vault` (optionally under `parent`), ordered by key.
    pub fn list<T: DeserializeOwned>(
        &self,
        kind: &str,
        vault: &str,
        parent: Option<&str>,
    ) -> Result<Vec<T>> {
        parse_all(self.0.docs(kind, vault, parent)?)
    }

    /// Documents of `kind` whose vault key starts with `prefix` (vault listings by scope).
    pub fn list_prefix<T: DeserializeOwned>(&self, kind: &str, prefix: &str) -> Result<Vec<T>> {
        parse_all(self.0.docs_with_vault_prefix(kind, prefix)?)
    }
}

fn parse_all<T: DeserializeOwned>(bodies: Vec<String>) -> Result<Vec<T>> {
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).map_err(Into::into))
        .collect()
}

/// The store of one deployment: an embedded SQLite file or a shared PostgreSQL database.
pub enum Store {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

impl Store {
    /// Opens (creating and migrating where needed) the SQLite store at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Ok(Self::Sqlite(Sqlite::open(path)?))
    }

    /// Opens the store a URL names: `postgres://…` / `postgresql://…`, or `sqlite:PATH`.
    pub fn open_url(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(Postgres::open(url)?))
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            Self::open(std::path::Path::new(path.trim_start_matches("//")))
        } else {
            Err(Error::Url(
                redact(url),
                "expected postgres://USER@HOST:PORT/DBNAME or sqlite:PATH".into(),
            ))
        }
    }

    /// Which backend this is, for logs and readiness: `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Whether several nodes may share this store (PostgreSQL) or it belongs to one (SQLite).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Runs the reads in `f` in one consistent snapshot, without waiting for the writer. A write
    /// in `f` fails.
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        match self {
            Self::Sqlite(s) => s.read(|t| f(&Tx(t))),
            Self::Postgres(p) => p.read(|t| f(&Tx(t))),
        }
    }

    /// [`Store::read`] for an `f` that runs exactly one statement (one `MetaTx` call that is a
    /// single query, such as `get` or `get_job_body`). On PostgreSQL it runs without a
    /// transaction, in one round trip instead of three (a statement is its own snapshot); a
    /// second statement or a write in `f` is an error there. On SQLite it is [`Store::read`].
    pub fn read_one<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        match self {
            Self::Sqlite(s) => s.read(|t| f(&Tx(t))),
            Self::Postgres(p) => p.read_one(|t| f(&Tx(t))),
        }
    }

    /// Runs `f` in one transaction: all of its writes land, or none, and no other writer (of any
    /// node) runs in between.
    pub fn tx<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        match self {
            Self::Sqlite(s) => s.tx(|t| f(&Tx(t))),
            Self::Postgres(p) => p.tx(|t| f(&Tx(t))),
        }
    }

    /// [`Store::tx`], committed durably whatever the store's everyday setting: the commit is on
    /// stable storage before this returns (SQLite `synchronous=FULL` for this transaction,
    /// PostgreSQL `synchronous_commit=on`). For writes a power cut must not undo once a client
    /// may have been told about them, such as a recovery point.
    pub fn tx_durable<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        match self {
            Self::Sqlite(s) => s.tx_durable(|t| f(&Tx(t))),
            Self::Postgres(p) => p.tx_durable(|t| f(&Tx(t))),
        }
    }

    /// Rewrites the storage so that no free page or journal keeps data that was overwritten
    /// (after secrets were moved out of it).
    pub fn compact(&self) -> Result<()> {
        match self {
            Self::Sqlite(s) => s.compact(),
            Self::Postgres(p) => p.compact(),
        }
    }
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            super::redact("postgres://bob:s3cret@db:5432/rsvault"),
            "postgres://bob:***@db:5432/rsvault"
        );
        assert_eq!(
            super::redact("postgres://bob@db:5432/rsvault"),
            "postgres://bob@db:5432/rsvault"
        );
    }
}
