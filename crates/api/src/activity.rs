//! The activity log, the Azure Monitor way: every write, every action and every denial is
//! recorded (a `BeginRequest` and an `EndRequest` event sharing the correlation id) and read with
//! `GET /subscriptions/{s}/providers/Microsoft.Insights/eventtypes/management/values`
//! (api-version 2015-04-01), newest first, paged, kept `[audit] retention_days`.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{json, Map, Value};

use crate::auth::Principal;
use crate::{ok, Req};
use rsvault_jobs::service::Service;
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};

/// What the edge knows about a request once it has been authorized (or denied).
pub struct Audit {
    pub principal: Principal,
    pub action: String,
    /// The target resource id.
    pub scope: String,
    pub method: Method,
    pub client_ip: Option<String>,
    pub client_request_id: Option<String>,
    pub correlation_id: String,
    pub started: DateTime<Utc>,
    /// The role that granted the action (none for the admin or a denial).
    pub role: Option<String>,
}

/// `2026-12-06T05:50:49.1234567Z`: fixed width, so it sorts as text.
pub fn ticks_time(t: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

fn lv(v: &str) -> Value {
    json!({"value": v, "localizedValue": v})
}

fn seg_after(scope: &str, key: &str) -> Option<String> {
    let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    segs.iter()
        .position(|s| s.eq_ignore_ascii_case(key))
        .and_then(|i| segs.get(i + 1))
        .map(|s| s.to_string())
}

/// Writes the request's BeginRequest and EndRequest events. Failing to record is logged, not
/// turned into a failed request.
pub fn record(svc: &Service, a: &Audit, status: StatusCode) {
    let Some(sub) = seg_after(&a.scope, "subscriptions") else {
        return;
    };
    let rg = seg_after(&a.scope, "resourceGroups");
    let provider = a.action.split('/').next().unwrap_or("").to_string();
    let resource_type = {
        let parts: Vec<&str> = a.action.split('/').collect();
        let cut = if a.action.to_ascii_lowercase().ends_with("/action") {
            2
        } else {
            1
        };
        parts[..parts.len().saturating_sub(cut)].join("/")
    };
    let (claims, tenant) = match &a.principal {
        Principal::Admin => (json!({}), None),
        Principal::User(u) => (u.claims.clone(), u.tid.clone()),
    };
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("").replace(' ', "");
    let outcome = if code >= 400 {
        "Failed"
    } else if code == 202 {
        "Accepted"
    } else {
        "Succeeded"
    };
    let end = Utc::now();
    let mut events = Vec::new();
    for (name, local, st, t) in [
        ("BeginRequest", "Begin request", "Started", a.started),
        ("EndRequest", "End request", outcome, end),
    ] {
        let id = uuid::Uuid::new_v4().to_string();
        let ts = ticks_time(t);
        // .NET ticks: 100 ns since 0001-01-01.
        let ticks = (t.timestamp() as i128 + 62_135_596_800) * 10_000_000
            + (t.timestamp_subsec_nanos() / 100) as i128;
        let mut authorization = json!({"action": a.action, "scope": a.scope});
        if let Some(r) = &a.role {
            authorization["role"] = json!(r);
        }
        let mut ev = json!({
            "authorization": authorization,
            "caller": a.principal.caller(),
            "channels": "Operation",
            "claims": claims,
            "correlationId": a.correlation_id,
            "description": "",
            "eventDataId": id,
            "eventName": {"value": name, "localizedValue": local},
            "category": {"value": "Administrative", "localizedValue": "Administrative"},
            "httpRequest": {
                "clientRequestId": a.client_request_id,
                "clientIpAddress": a.client_ip,
                "method": a.method.as_str(),
            },
            "id": format!("{}/events/{id}/ticks/{ticks}", a.scope),
            "level": if st == "Failed" { "Error" } else { "Informational" },
            "resourceGroupName": rg,
            "resourceProviderName": lv(&provider),
            "resourceType": lv(&resource_type),
            "resourceId": a.scope,
            "operationId": a.correlation_id,
            "operationName": lv(&a.action),
            "properties": {},
            "status": lv(st),
            "subStatus": {"value": "", "localizedValue": ""},
            "eventTimestamp": ts,
            "submissionTimestamp": ticks_time(end),
            "subscriptionId": sub,
            "tenantId": tenant,
        });
        if name == "EndRequest" {
            ev["properties"] = json!({"statusCode": reason});
            ev["subStatus"] = json!({"value": reason, "localizedValue": format!("{} (HTTP Status Code: {code})", status.canonical_reason().unwrap_or(""))});
        }
        events.push((id, ts, ev));
    }
    let sub_l = sub.to_ascii_lowercase();
    let res = svc.store.tx(|tx| {
        for (id, ts, ev) in &events {
            tx.insert_activity(id, &sub_l, ts, &ev.to_string())?;
        }
        Ok(())
    });
    if let Err(e) = res {
        tracing::error!("cannot record activity-log events: {e}");
    }
}

/// Deletes events past the retention, a batch at a time. Returns how many went.
pub fn purge(svc: &Service) -> usize {
    let days = svc.config.audit.retention_days as i64;
    let cutoff = ticks_time(Utc::now() - chrono::Duration::days(days));
    let mut total = 0;
    loop {
        match svc.store.tx(|tx| tx.delete_activity_before(&cutoff, 1000)) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) => {
                tracing::error!("cannot purge the activity log: {e}");
                return total;
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> ArmError {
    ArmError::new(ArmCode::InvalidFilter, msg).with_target("$filter")
}

fn parse_time(v: &str) -> ArmResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, f) {
            return Ok(t.and_utc());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(v, f) {
            return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
        }
    }
    Err(bad(format!("'{v}' is not an ISO 8601 time.")))
}

#[derive(Default)]
struct Filter {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// (event field, wanted value, lowercase)
    eq: Vec<(&'static str, String)>,
}

fn parse_filter(f: &str) -> ArmResult<Filter> {
    let mut out = Filter::default();
    let lower = f.to_ascii_lowercase();
    let mut start = 0;
    let mut clauses = Vec::new();
    while let Some(i) = lower[start..].find(" and ") {
        clauses.push(&f[start..start + i]);
        start += i + 5;
    }
    clauses.push(&f[start..]);
    for c in clauses {
        let parts: Vec<&str> = c.trim().splitn(3, ' ').collect();
        let [field, op, value] = parts[..] else {
            return Err(bad(format!(
                "The clause '{}' is not 'field op value'.",
                c.trim()
            )));
        };
        let value = value
            .trim()
            .trim_matches('\'')
            .trim_matches('"')
            .to_string();
        match (field.to_ascii_lowercase().as_str(), op.to_ascii_lowercase().as_str()) {
            ("eventtimestamp", "ge") => out.from = Some(parse_time(&value)?),
            ("eventtimestamp", "le") => out.to = Some(parse_time(&value)?),
            ("resourcegroupname", "eq") => out.eq.push(("resourceGroupName", value.to_ascii_lowercase())),
            ("resourceuri" | "resourceid", "eq") => out.eq.push(("resourceId", value.to_ascii_lowercase())),
            ("resourceprovider", "eq") => out.eq.push(("resourceProviderName", value.to_ascii_lowercase())),
            ("correlationid", "eq") => out.eq.push(("correlationId", value.to_ascii_lowercase())),
            ("caller", "eq") => out.eq.push(("caller", value.to_ascii_lowercase())),
            ("status", "eq") => out.eq.push(("status", value.to_ascii_lowercase())),
            _ => {
                return Err(bad(format!(
                    "The clause '{}' is not supported; use eventTimestamp ge/le and resourceGroupName, resourceUri, resourceProvider, correlationId, caller or status eq.",
                    c.trim()
                )))
            }
        }
    }
    if out.from.is_none() {
        return Err(bad("The $filter must bound eventTimestamp: eventTimestamp ge '<start>' and eventTimestamp le '<end>'."));
    }
    Ok(out)
}

fn matches(ev: &Value, f: &Filter) -> bool {
    f.eq.iter().all(|(field, want)| {
        let v = &ev[*field];
        let got = v.get("value").unwrap_or(v).as_str().unwrap_or("");
        got.eq_ignore_ascii_case(want)
    })
}

const PAGE: usize = 200;

/// ActivityLogs_List.
pub fn list(svc: &Service, r: &Req, sub: &str) -> ArmResult<Response> {
    let raw = r
        .q("$filter")
        .filter(|f| !f.trim().is_empty())
        .ok_or_else(|| bad("The $filter parameter is required."))?;
    let f = parse_filter(raw)?;
    let from = ticks_time(f.from.expect("checked"));
    let to = ticks_time(f.to.unwrap_or_else(Utc::now));
    let mut after: Option<(String, String)> = match r.q("$skiptoken") {
        None => None,
        Some(t) => {
            let d = URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    s.split_once('|')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                })
                .ok_or_else(|| {
                    ArmError::new(ArmCode::InvalidSkipToken, "The $skiptoken is not valid.")
                        .with_target("$skiptoken")
                })?;
            Some(d)
        }
    };
    let select: Option<Vec<String>> = r.q("$select").map(|s| {
        s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let sub_l = sub.to_ascii_lowercase();
    let mut value = Vec::new();
    let mut more = false;
    // Scan in batches: filters other than the time window apply to the decoded events.
    'scan: loop {
        let batch = svc.store.read(|tx| {
            tx.list_activity(
                &sub_l,
                &from,
                &to,
                after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                500,
            )
        })?;
        let n = batch.len();
        for (ts, id, body) in batch {
            if value.len() == PAGE {
                more = true;
                break 'scan;
            }
            after = Some((ts, id));
            let ev: Value = serde_json::from_str(&body).map_err(ArmError::internal)?;
            if matches(&ev, &f) {
                value.push(match &select {
                    None => ev,
                    Some(keys) => Value::Object(
                        keys.iter()
                            .filter_map(|k| ev.get(k).map(|v| (k.clone(), v.clone())))
                            .collect::<Map<_, _>>(),
                    ),
                });
            }
        }
        if n < 500 {
            break;
        }
    }
    let mut out = json!({"value": value});
    if more {
        if let Some((ts, id)) = after {
            let token = URL_SAFE_NO_PAD.encode(format!("{ts}|{id}"));
            let enc = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            let mut link = format!(
                "{}?api-version={}&$filter={}&$skiptoken={token}",
                r.url_path(),
                r.api_version,
                enc(raw)
            );
            if let Some(s) = r.q("$select") {
                link.push_str(&format!("&$select={}", enc(s)));
            }
            out["nextLink"] = json!(link);
        }
    }
    Ok(ok(out))
}

/// `GET /providers/microsoft.insights/eventcategories`.
pub fn categories() -> Response {
    let v: Vec<Value> = [
        "Administrative",
        "Security",
        "ServiceHealth",
        "Alert",
        "Recommendation",
        "Policy",
    ]
    .iter()
    .map(|c| lv(c))
    .collect();
    ok(json!({"value": v}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_as_az_and_the_sdk_send_them() {
        let f = parse_filter("eventTimestamp ge '2026-05-01T10:00:00Z' and eventTimestamp le '2026-05-01T11:00:00.5Z' and resourceGroupName eq 'RG1'").unwrap();
        assert!(f.from.is_some() && f.to.is_some());
        assert_eq!(f.eq, vec![("resourceGroupName", "rg1".to_string())]);
        let f = parse_filter("eventTimestamp ge 2026-05-01T10:00:00Z and eventTimestamp le 2026-05-01T11:00:00Z and caller eq 'x'").unwrap();
        assert_eq!(f.eq.len(), 1);
        assert!(parse_filter("resourceGroupName eq 'x'").is_err());
        assert!(parse_filter("eventTimestamp ge 'yesterday'").is_err());
        assert!(ticks_time(Utc::now()).len() == 28);
    }
}
