//! The operator's endpoints (issue #13): `GET /healthz` and `GET /readyz` (no token),
//! `GET /metrics` (Prometheus text; a token, or none with `[metrics] public = true`), and each
//! job's log, `GET {vault}/backupJobs/{id}/rsvault/log`, as JSON pages or a `text/event-stream`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::{ok, Req};
use rsvault_jobs::service::Service;
use rsvault_types::arm::{ArmError, ArmResult};
use rsvault_types::model::Vault;

/// The endpoints answered before authentication: health always, metrics when public.
pub async fn public(svc: &Service, method: &Method, seg: &[String]) -> Option<Response> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    if seg.first().is_some_and(|s| s == "ui") {
        return Some(ui(seg.get(1).map(String::as_str).unwrap_or("")));
    }
    if seg.len() != 1 {
        return None;
    }
    match seg[0].as_str() {
        "healthz" => Some(ok(json!({"status": "ok"}))),
        "readyz" => Some(readyz(svc).await),
        "metrics" if svc.config.metrics.public => Some(metrics(svc)),
        _ => None,
    }
}

/// `GET /metrics` with a valid token (when the endpoint is not public).
pub fn authenticated(svc: &Service, method: &Method, seg: &[String]) -> Option<Response> {
    (matches!(*method, Method::GET | Method::HEAD) && seg.len() == 1 && seg[0] == "metrics")
        .then(|| metrics(svc))
}

/// The dashboard (`/ui/`): static files built into the binary, no token needed to load them
/// (the page asks for one and sends it with each API call). Nothing is loaded from elsewhere.
fn ui(file: &str) -> Response {
    let (ty, body): (&str, &str) = match file {
        "" | "index.html" => ("text/html; charset=utf-8", include_str!("../ui/index.html")),
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../ui/app.js"),
        ),
        "app.css" => ("text/css; charset=utf-8", include_str!("../ui/app.css")),
        other => {
            return crate::error_response(ArmError::new(
                rsvault_types::arm::ArmCode::PathNotFound,
                format!("The dashboard has no file '{other}'."),
            ))
        }
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(ty)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn readyz(svc: &Service) -> Response {
    let checks = svc.readiness().await;
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    let body = json!({
        "status": if failed.is_empty() { "ready" } else { "unavailable" },
        "checks": checks.iter().map(|(name, r)| (name.to_string(), json!(match r {
            Ok(()) => "ok".to_string(),
            Err(e) => e.clone(),
        }))).collect::<serde_json::Map<_, _>>(),
    });
    if failed.is_empty() {
        return ok(body);
    }
    let mut body = body;
    body["reason"] = json!(failed.join("; "));
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

fn metrics(svc: &Service) -> Response {
    match svc.metrics_text() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(rsvault_jobs::metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(e) => crate::error_response(ArmError::internal(format!("rendering metrics: {e:#}"))),
    }
}

fn number(r: &Req, key: &str, default: i64) -> ArmResult<i64> {
    match r.q(key) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| {
            ArmError::invalid(format!("'{key}' must be an integer, not '{s}'.")).with_target(key)
        }),
    }
}

/// `GET {vault}/backupJobs/{id}/rsvault/log?start=N&limit=M`: `{"lines":[{"n","t","level","msg"}],
/// "total","active"}`; with `Accept: text/event-stream`, the lines from `start` on as events (`id`
/// the line number, `data` the line's JSON) until the job has ended, then an `end` event.
pub fn job_log(svc: &Arc<Service>, r: &Req, vault: &Vault, job: &str) -> ArmResult<Response> {
    let headers = &r.headers;
    let start = number(r, "start", 0)?;
    let limit = number(r, "limit", rsvault_jobs::joblog::MAX_LIMIT)?;
    let page = svc.job_log(vault, job, start, limit)?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if !wants_stream {
        return Ok(ok(json!({
            "lines": page.lines,
            "total": page.total,
            "active": page.active,
        })));
    }
    // `Last-Event-ID` (an EventSource reconnecting) resumes after the last line it saw.
    let start = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .map_or(start, |n| n + 1);
    let state = Stream {
        svc: svc.clone(),
        vault: vault.clone(),
        job: job.to_string(),
        next: start,
        ended: false,
    };
    let body = futures_util::stream::unfold(state, |mut s| async move {
        if s.ended {
            return None;
        }
        let mut idle = 0u32;
        loop {
            let page =
                match s
                    .svc
                    .job_log(&s.vault, &s.job, s.next, rsvault_jobs::joblog::MAX_LIMIT)
                {
                    Ok(p) => p,
                    Err(e) => {
                        s.ended = true;
                        let ev = format!("event: error\ndata: {}\n\n", json!(e.body()));
                        return Some((Ok::<_, std::convert::Infallible>(ev), s));
                    }
                };
            if let Some(last) = page.lines.last() {
                s.next = last.n + 1;
                let text: String = page
                    .lines
                    .iter()
                    .map(|l| format!("id: {}\ndata: {}\n\n", l.n, json!(l)))
                    .collect();
                return Some((Ok(text), s));
            }
            if !page.active {
                s.ended = true;
                let ev = format!("event: end\ndata: {}\n\n", json!({"total": page.total}));
                return Some((Ok(ev), s));
            }
            idle += 1;
            // A comment now and then keeps proxies from closing a quiet stream.
            if idle.is_multiple_of(30) {
                return Some((Ok(": waiting\n\n".to_string()), s));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut resp = Response::new(axum::body::Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    Ok(resp)
}

struct Stream {
    svc: Arc<Service>,
    vault: Vault,
    job: String,
    next: i64,
    ended: bool,
}
