//! The job list: `$filter`, paging and skip tokens.

use std::sync::{Arc, LazyLock};

use axum::response::Response;
use chrono::DateTime;

use crate::lookup::{one_of, BMTS};
use crate::{filter, ok_json_bytes, Req};
use rsvault_jobs::service::Service;
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};
use rsvault_types::job::{Job, JobStatus};
use rsvault_types::model::Vault;

const JOB_FIELDS: &[&str] = &[
    "status",
    "backupmanagementtype",
    "operation",
    "jobid",
    "starttime",
    "endtime",
];
const JOB_OPERATIONS: &[&str] = &[
    "Invalid",
    "Register",
    "UnRegister",
    "ConfigureBackup",
    "Backup",
    "Restore",
    "DisableBackup",
    "DeleteBackupData",
    "CrossRegionRestore",
    "Undelete",
    "UpdateCustomerManagedKey",
    // rsvault's vault maintenance jobs carry their own operation names (issue #5); they are in
    // the job list, so they can be filtered on.
    "GarbageCollection",
    "Verify",
    "RestoreDrill",
];
pub fn job_query(f: Option<&str>) -> ArmResult<rsvault_store::JobQuery> {
    let mut q = rsvault_store::JobQuery::default();
    let Some(f) = f else { return Ok(q) };
    let statuses: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let (mut from, mut to) = (None, None);
    for (k, v) in filter::parse(f, JOB_FIELDS)? {
        match k.as_str() {
            "status" => q.status = Some(one_of("status", &v, &statuses)?),
            "operation" => q.operation = Some(one_of("operation", &v, JOB_OPERATIONS)?),
            "backupmanagementtype" => q.bmt = Some(one_of("backupManagementType", &v, BMTS)?),
            "jobid" => q.job_id = Some(v.to_ascii_lowercase()),
            "starttime" => from = Some(filter::parse_time("startTime", &v)?),
            "endtime" => to = Some(filter::parse_time("endTime", &v)?),
            _ => unreachable!("fields are checked by the parser"),
        }
    }
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return Err(ArmError::new(
                ArmCode::InvalidFilter,
                "Invalid $filter: startTime is after endTime.",
            )
            .with_target("$filter"));
        }
    }
    q.start_from = from.map(arm::time);
    q.start_to = to.map(arm::time);
    Ok(q)
}

/// `GET {vault}/backupJobs/{id}`
pub(crate) fn get_job(svc: &Service, vault: &Vault, id: &str) -> ArmResult<Response> {
    let body = svc.get_job_body(vault, id)?;
    Ok(ok_json_bytes(wire_of(&body)?.to_vec()))
}

pub(crate) fn list_jobs(svc: &Service, r: &Req, vault: &Vault) -> ArmResult<Response> {
    let mut q = job_query(r.q("$filter"))?;
    if let Some(tok) = r.q("$skiptoken") {
        q.after = Some(decode_skip_token(tok)?);
    }
    let page = svc.config.server.page_size;
    let mut rows = svc
        .store
        .read(|tx| tx.list_jobs(&vault.vault.key(), &q, page + 1))?;
    let more = rows.len() > page;
    rows.truncate(page);
    // Written as text, job by job: a page is 200 jobs, and building `Value` trees for them cost
    // more than the query (see BENCHMARKS.md, "Job API").
    let mut out = Vec::with_capacity(rows.len() * 1536 + 512);
    out.extend_from_slice(b"{\"value\":[");
    for (i, (body, _, _)) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&wire_of(body)?);
    }
    out.push(b']');
    if more {
        if let Some((_, t, s)) = rows.last() {
            let token = encode_skip_token(t, *s);
            let mut url = r.url(&format!("{}/backupJobs", vault.vault.id()));
            if let Some(f) = r.q("$filter") {
                url.push_str("&$filter=");
                url.push_str(&percent_encoding::utf8_percent_encode(f, QUERY_SET).to_string());
            }
            url.push_str("&$skipToken=");
            url.push_str(&token);
            out.extend_from_slice(b",\"nextLink\":");
            out.extend_from_slice(&serde_json::to_vec(&url).map_err(ArmError::internal)?);
        }
    }
    out.push(b'}');
    Ok(ok_json_bytes(out))
}

/// Bytes of stored bodies and wire JSON the cache of finished jobs holds (a job is ~1.5 KB of
/// each: some 10,000 jobs, the first pages of many vaults).
const FINISHED_CACHE_BYTES: u64 = 32 << 20;

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<String, Arc<[u8]>> for Weight {
    fn weight(&self, body: &String, wire: &Arc<[u8]>) -> u64 {
        (body.len() + wire.len()) as u64
    }
}

/// The wire JSON of finished jobs, keyed by their stored body. Once a job has ended its wire
/// form is a pure function of that body (nothing in it depends on the time any more), so an
/// entry can never be stale, whichever node wrote the job; a body that changes is another key.
static FINISHED: LazyLock<quick_cache::sync::Cache<String, Arc<[u8]>, Weight>> =
    LazyLock::new(|| quick_cache::sync::Cache::with_weighter(10_000, FINISHED_CACHE_BYTES, Weight));

/// A stored job body's wire JSON: from the cache when the job has ended, else rendered.
pub(crate) fn wire_of(body: &str) -> ArmResult<Arc<[u8]>> {
    if let Some(w) = FINISHED.get(body) {
        return Ok(w);
    }
    let job: Job = serde_json::from_str(body).map_err(ArmError::internal)?;
    let wire: Arc<[u8]> = job.wire_json().into();
    if job.wire_is_final() {
        FINISHED.insert(body.to_string(), wire.clone());
    }
    Ok(wire)
}

const QUERY_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode_skip_token(start: &str, seq: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{start}|{seq}"))
}

fn decode_skip_token(tok: &str) -> ArmResult<(String, i64)> {
    use base64::Engine;
    let bad = || {
        ArmError::new(ArmCode::InvalidSkipToken, format!("The $skipToken '{tok}' is invalid; use the nextLink returned by the previous page."))
            .with_target("$skipToken")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok.trim())
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let (t, seq) = s.split_once('|').ok_or_else(bad)?;
    DateTime::parse_from_rfc3339(t).map_err(|_| bad())?;
    Ok((t.to_string(), seq.parse().map_err(|_| bad())?))
}
