//! Job export: `POST backupJobsExport` writes the filtered job list as JSON and CSV under the data
//! dir; the result hands back a signed, expiring link that rsvault itself serves.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{ok, Req};
use rsvault_jobs::service::{Service, K_OP};
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};
use rsvault_types::job::Job;
use rsvault_types::model::{OpKind, Operation, Vault};

/// How long an export link stays valid.
const LINK_TTL_MINUTES: i64 = 60;
/// Export at most this many jobs per request (newest first).
const MAX_EXPORT: usize = 100_000;

pub fn start(
    svc: &Arc<Service>,
    r: &Req,
    vault: &Vault,
    q: rsvault_store::JobQuery,
) -> ArmResult<Response> {
    let op = Operation::new(OpKind::Export, None, None);
    svc.put_op(vault, &op)?;
    let loc = r.url(&format!(
        "{}/backupJobs/operationResults/{}",
        vault.vault.id(),
        op.id
    ));
    let (svc2, vault_key, op_id) = (svc.clone(), vault.vault.key(), op.id.clone());
    tokio::task::spawn_blocking(move || {
        let res = write_export(&svc2, &vault_key, &op_id, &q);
        let _ = svc2.store.tx(|tx| {
            if let Some(mut op) = tx.get::<Operation>(K_OP, &vault_key, &op_id)? {
                match &res {
                    Ok(n) => {
                        op.status = "Succeeded".into();
                        op.result = Some(json!({"jobs": n}));
                    }
                    Err(e) => {
                        tracing::error!("export {op_id} failed: {e:#}");
                        op.status = "Failed".into();
                        op.error = Some((
                            "BMSUserErrorExportFailed".into(),
                            "Writing the job export failed; the server log has the details.".into(),
                        ));
                    }
                }
                op.end = Some(Utc::now());
                tx.put(K_OP, &vault_key, &op_id, "", &op)?;
            }
            Ok(())
        });
    });
    let mut resp = StatusCode::ACCEPTED.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&loc) {
        h.insert("location", v);
    }
    h.insert(
        "retry-after",
        HeaderValue::from(svc.config.server.retry_after_seconds),
    );
    Ok(resp)
}

fn write_export(
    svc: &Service,
    vault_key: &str,
    op_id: &str,
    q: &rsvault_store::JobQuery,
) -> anyhow::Result<usize> {
    let mut rows = svc
        .store
        .read(|tx| tx.list_jobs(vault_key, q, MAX_EXPORT + 1))?;
    // More than the cap: export the newest MAX_EXPORT and say so in the file, never silently.
    let truncated = rows.len() > MAX_EXPORT;
    rows.truncate(MAX_EXPORT);
    let mut jobs = Vec::with_capacity(rows.len());
    let mut csv = String::from("JobId,Operation,Status,EntityFriendlyName,BackupManagementType,StartTime,EndTime,Duration\n");
    for (body, _, _) in rows {
        let job: Job = serde_json::from_str(&body)?;
        let w = job.wire();
        let p = &w["properties"];
        let cell = |v: &Value| {
            let s = v.as_str().unwrap_or("");
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            job.id,
            cell(&p["operation"]),
            cell(&p["status"]),
            cell(&p["entityFriendlyName"]),
            cell(&p["backupManagementType"]),
            cell(&p["startTime"]),
            cell(&p["endTime"]),
            cell(&p["duration"]),
        ));
        jobs.push(w);
    }
    let n = jobs.len();
    let json_text = serde_json::to_string_pretty(&json!({
        "value": jobs,
        "truncated": truncated,
        "maxJobs": MAX_EXPORT,
    }))?;
    // In the metadata store, not the data dir: any node of the deployment serves the download
    // link, whichever node ran the export (issue #11 item 5).
    svc.store.tx(|tx| {
        tx.put(
            K_EXPORT,
            "",
            &format!("{op_id}.json"),
            vault_key,
            &json_text,
        )?;
        tx.put(K_EXPORT, "", &format!("{op_id}.csv"), vault_key, &csv)
    })?;
    Ok(n)
}

/// Store documents holding export files, keyed by file name (no vault: the signed link names the
/// file only; the parent is the vault's key).
const K_EXPORT: &str = "export";

pub fn result(svc: &Service, r: &Req, vault: &Vault, op_id: &str) -> ArmResult<Response> {
    let op = svc.get_op(vault, op_id)?;
    if op.kind != OpKind::Export {
        return Err(ArmError::new(
            ArmCode::OperationNotFound,
            format!("Operation '{op_id}' is not a job export."),
        ));
    }
    let loc = r.url(&format!(
        "{}/backupJobs/operationResults/{}",
        vault.vault.id(),
        op.id
    ));
    let retry = svc.config.server.retry_after_seconds;
    match op.status.as_str() {
        "InProgress" => {
            let body = json!({
                "statusCode": "Accepted",
                "headers": {"Location": [loc], "Retry-After": [retry.to_string()]},
                "operation": {"objectType": "ExportJobsOperationResultInfo"},
            });
            let mut resp = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&loc) {
                h.insert("location", v);
            }
            h.insert("retry-after", HeaderValue::from(retry));
            Ok(resp)
        }
        "Succeeded" => {
            let expiry = Utc::now() + chrono::Duration::minutes(LINK_TTL_MINUTES);
            let (json_url, json_sas) = link(svc, &r.origin, &format!("{}.json", op.id), expiry);
            let (csv_url, csv_sas) = link(svc, &r.origin, &format!("{}.csv", op.id), expiry);
            Ok(ok(json!({
                "statusCode": "OK",
                "headers": {},
                "operation": {
                    "objectType": "ExportJobsOperationResultInfo",
                    "blobUrl": json_url,
                    "blobSasKey": json_sas,
                    "excelFileBlobUrl": csv_url,
                    "excelFileBlobSasKey": csv_sas,
                },
            })))
        }
        _ => {
            let (code, msg) = op.error.unwrap_or((
                "BMSUserErrorExportFailed".into(),
                "The export failed.".into(),
            ));
            Err(ArmError::new(ArmCode::Conflict, format!("{code}: {msg}")))
        }
    }
}

fn sign(svc: &Service, name: &str, se: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&svc.signing_key).expect("hmac takes any key length");
    mac.update(name.as_bytes());
    mac.update(b"\n");
    mac.update(se.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn link(svc: &Service, origin: &str, name: &str, expiry: DateTime<Utc>) -> (String, String) {
    let se = arm::time(expiry);
    let sig = sign(svc, name, &se);
    let se_enc =
        percent_encoding::utf8_percent_encode(&se, percent_encoding::NON_ALPHANUMERIC).to_string();
    (
        format!("{origin}/exports/{name}"),
        format!("?sv=2026-02-01&sr=b&sp=r&se={se_enc}&sig={sig}"),
    )
}

/// Serves an export file to a holder of a valid, unexpired signed link.
pub fn download(svc: &Service, name: &str, query: &HashMap<String, String>) -> ArmResult<Response> {
    let denied = |why: &str| {
        ArmError::new(
            ArmCode::Unauthorized,
            format!("The export link is not valid: {why}."),
        )
    };
    let valid_name = name.len() < 80
        && (name.ends_with(".json") || name.ends_with(".csv"))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid_name {
        return Err(ArmError::new(
            ArmCode::PathNotFound,
            format!("Export '{name}' was not found."),
        ));
    }
    let se = query
        .get("se")
        .ok_or_else(|| denied("the 'se' (expiry) parameter is missing"))?;
    let sig = query
        .get("sig")
        .ok_or_else(|| denied("the 'sig' parameter is missing"))?;
    let expected = sign(svc, name, se);
    if !super::constant_time_eq(sig.as_bytes(), expected.as_bytes()) {
        return Err(denied("the signature does not match"));
    }
    let exp = DateTime::parse_from_rfc3339(se).map_err(|_| denied("the expiry is malformed"))?;
    if exp < Utc::now() {
        return Err(denied("it has expired; request a new export"));
    }
    let bytes: String = svc
        .store
        .read(|tx| tx.get(K_EXPORT, "", name))?
        .ok_or_else(|| {
            ArmError::new(
                ArmCode::PathNotFound,
                format!("Export '{name}' was not found."),
            )
        })?;
    let ctype = if name.ends_with(".json") {
        "application/json"
    } else {
        "text/csv"
    };
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static(ctype));
    Ok(resp)
}
