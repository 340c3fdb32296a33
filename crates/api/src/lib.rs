//! The HTTP edge: one dispatcher that owns ARM conventions (auth, api-version, case-insensitive
//! and percent-decoded paths, body limits, request ids, ARM error bodies) and routes to thin
//! handlers in the submodules.

pub mod activity;
pub mod auth;
pub mod export;
pub mod filter;
pub mod handlers;
pub mod items;
pub mod jobs;
pub mod limits;
pub mod lookup;
pub mod openapi;
pub mod ops;
pub mod policies;
pub mod resources;
pub mod restore;
pub mod route;
pub mod vault_config;
pub mod vaults;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use serde_json::Value;

use rsvault_jobs::config::ServerConfig;
use rsvault_jobs::service::Service;
use rsvault_types::arm::{self, ArmCode, ArmError, ArmResult};

#[derive(Clone)]
pub struct AppState {
    pub svc: Arc<Service>,
    pub auth: Arc<auth::Auth>,
    pub limits: Arc<limits::RateLimiter>,
}

pub fn router(state: AppState) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

/// Everything a handler needs to know about the request, already validated.
pub struct Req {
    pub method: Method,
    /// Percent-decoded path segments, original spelling.
    pub seg: Vec<String>,
    /// Query parameters, keys lowercased, values decoded.
    pub query: HashMap<String, String>,
    pub api_version: String,
    pub origin: String,
    pub body: Bytes,
    /// The request path as sent (still percent-encoded).
    pub path: String,
    /// What the caller may do (vault lists show only what it may read).
    pub grants: auth::rbac::Grants,
    pub headers: HeaderMap,
}

impl Req {
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// Absolute URL for `path` (starting with `/`) carrying the caller's api-version.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}?api-version={}", self.origin, path, self.api_version)
    }

    /// The absolute URL of this request's path, without a query.
    pub fn url_path(&self) -> String {
        format!("{}{}", self.origin, self.path)
    }

    /// The body as a JSON object; an empty body is an error.
    pub fn json(&self) -> ArmResult<Value> {
        if self.body.is_empty() {
            return Err(ArmError::new(
                ArmCode::InvalidJson,
                "The request body is empty; a JSON object is required.",
            ));
        }
        let v: Value = serde_json::from_slice(&self.body).map_err(|e| {
            ArmError::new(
                ArmCode::InvalidJson,
                format!("The request body is not valid JSON: {e}."),
            )
        })?;
        if !v.is_object() {
            return Err(ArmError::new(
                ArmCode::InvalidJson,
                "The request body must be a JSON object.",
            ));
        }
        Ok(v)
    }

    /// The body as a JSON object, or `{}` when there is none.
    pub fn json_or_empty(&self) -> ArmResult<Value> {
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            Ok(Value::Object(Default::default()))
        } else {
            self.json()
        }
    }
}

/// What the edge learnt about a request on its way through [`handle`], for the answer's headers
/// and the activity log.
#[derive(Default)]
struct Trace {
    audit: Option<activity::Audit>,
    budget: Option<limits::Budget>,
}

async fn dispatch(State(app): State<AppState>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_id = req.headers().get("x-ms-client-request-id").cloned();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client_ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let started = chrono::Utc::now();
    let mut trace = Trace::default();
    let fut = std::panic::AssertUnwindSafe(handle(&app, req, &mut trace));
    let mut resp = match fut.catch_unwind().await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error_response(e),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            error_response(ArmError::internal(format!(
                "handler panicked on {method} {path}: {msg}"
            )))
        }
    };
    tracing::info!(%method, %path, status = resp.status().as_u16(), request_id = %request_id);
    if let Some(mut a) = trace.audit.take() {
        // Every write and action, and every denial (reads included), goes to the activity log.
        if method != Method::GET || resp.status() == StatusCode::FORBIDDEN {
            a.client_ip = client_ip;
            a.client_request_id = client_id
                .as_ref()
                .and_then(|c| c.to_str().ok())
                .map(String::from);
            a.correlation_id = request_id.clone();
            a.started = started;
            let svc = app.svc.clone();
            let status = resp.status();
            // The store's writer is synchronous: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || activity::record(&svc, &a, status)).await;
        }
    }
    app.svc
        .metrics
        .http_request(method.as_str(), resp.status().as_u16());
    let h = resp.headers_mut();
    if let Some(b) = &trace.budget {
        h.insert(b.header, HeaderValue::from(b.remaining));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-ms-request-id", v.clone());
        h.insert("x-ms-correlation-request-id", v);
    }
    if let Some(c) = client_id {
        h.insert("x-ms-client-request-id", c);
    }
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the oversized body was never read: the connection cannot be reused.
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
    }
    resp
}

async fn handle(app: &AppState, req: Request, trace: &mut Trace) -> ArmResult<Response> {
    let (parts, body) = req.into_parts();
    let seg: Vec<String> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let query = parse_query(parts.uri.query().unwrap_or(""));

    // Export downloads authenticate with their signed link, not the bearer token.
    if seg.len() == 2 && seg[0] == "exports" && parts.method == Method::GET {
        return export::download(&app.svc, &seg[1], &query);
    }
    // Cloud metadata is public in Azure too: `az cloud register` discovers endpoints from it.
    if seg.len() == 2
        && seg[0].eq_ignore_ascii_case("metadata")
        && seg[1].eq_ignore_ascii_case("endpoints")
    {
        return Ok(
            axum::Json(cloud_metadata(&origin(&app.svc.config.server, &parts))).into_response(),
        );
    }
    if let Some(r) = ops::public(&app.svc, &parts.method, &seg).await {
        return Ok(r);
    }
    // The deployment's token issuer is public, as every OpenID Connect issuer is.
    if seg.len() == 2 && seg[0] == ".well-known" && parts.method == Method::GET {
        match seg[1].as_str() {
            "openid-configuration" => {
                let o = origin(&app.svc.config.server, &parts);
                return Ok(ok(app.auth.openid_configuration(&o)));
            }
            "jwks.json" => return Ok(ok(app.auth.jwks(&app.svc.store)?)),
            _ => {}
        }
    }
    let principal = app
        .auth
        .authenticate(&app.svc.store, &parts.headers)
        .await?;
    if let Some(r) = ops::authenticated(&app.svc, &parts.method, &seg) {
        return Ok(r);
    }
    if seg.len() == 1 && seg[0].eq_ignore_ascii_case("openapi.json") && parts.method == Method::GET
    {
        return Ok(axum::Json(openapi::document()).into_response());
    }
    let sub = match seg.as_slice() {
        [s, id, ..] if s.eq_ignore_ascii_case("subscriptions") => id.clone(),
        _ => String::new(),
    };
    let oldest = if is_neighbour(&seg) || is_outside_backup(&seg) {
        arm::OLDEST_NEIGHBOUR_API_VERSION
    } else {
        arm::OLDEST_API_VERSION
    };
    let api_version =
        arm::check_api_version_since(query.get("api-version").map(String::as_str), oldest)?;
    // Read before the route, authorization and budget answers, so the connection stays usable.
    let limit = app.svc.config.server.max_body_bytes;
    let body = read_body(body, limit).await?;
    // The bootstrap admin is the operator, not a tenant: it has no budget.
    if !matches!(principal, auth::Principal::Admin) {
        let write = parts.method != Method::GET && parts.method != Method::HEAD;
        let l = &app.svc.config.limits;
        let limit = if write {
            l.writes_per_minute
        } else {
            l.reads_per_minute
        };
        let b = app.limits.count(&principal.key(), &sub, write, limit);
        let over = b.retry_after;
        trace.budget = Some(b);
        if let Some(secs) = over {
            let mut r = error_response(limits::throttled(write, &sub, limit, secs));
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
            return Ok(r);
        }
    }
    // The route table is the gate: nothing outside the OpenAPI document reaches a handler.
    let route = match openapi::find(openapi::table(), parts.method.as_str(), &seg) {
        openapi::Found::Route(r) => r,
        openapi::Found::OtherMethods(m) => {
            return Err(ArmError::new(
                ArmCode::MethodNotAllowed,
                format!(
                    "The method {} is not allowed here; use {}.",
                    parts.method,
                    m.iter()
                        .map(|x| x.to_ascii_uppercase())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ))
        }
        openapi::Found::NotFound => return Err(unrouted(&seg, &api_version)),
    };
    // Every route's ARM action, checked against the caller's role assignments before any
    // handler runs. Vault lists are filtered instead, as ARM filters them.
    let action = openapi::action(route);
    let scope = openapi::scope(route, &seg);
    let grants = auth::rbac::Grants::load(&app.auth, &app.svc, &principal)?;
    let is_list = matches!(
        route.operation_id,
        "Vaults_ListBySubscriptionId" | "Vaults_ListByResourceGroup"
    );
    let allowed = is_list || grants.allows(&action, &scope);
    // Reads that are allowed are not logged (as in Azure); everything else is.
    if parts.method != Method::GET || !allowed {
        trace.audit = Some(activity::Audit {
            principal: principal.clone(),
            action: action.clone(),
            scope: scope.clone(),
            method: parts.method.clone(),
            client_ip: None,
            client_request_id: None,
            correlation_id: String::new(),
            started: chrono::Utc::now(),
            role: grants.granting_role(&action, &scope),
        });
    }
    if !allowed {
        return Err(auth::rbac::denied(&principal, &action, &scope));
    }
    let origin = origin(&app.svc.config.server, &parts);
    let r = Req {
        method: parts.method,
        seg,
        query,
        api_version,
        origin,
        body,
        path: parts.uri.path().to_string(),
        grants,
        headers: parts.headers,
    };
    let op = route.operation_id;
    if op.starts_with("RoleAssignments_") || op.starts_with("RoleDefinitions_") {
        let out = auth::roles::route(&app.svc, &r, &principal);
        if r.method != Method::GET {
            app.auth.forget_assignments();
        }
        return out;
    }
    match op {
        "ActivityLogs_List" => return activity::list(&app.svc, &r, &sub),
        "EventCategories_List" => return Ok(activity::categories()),
        _ => {}
    }
    handlers::route(&app.svc, &r).await
}

/// A path under a provider other than Recovery Services' (authorization, the activity log),
/// whose api-versions are older than the backup API's.
fn is_outside_backup(seg: &[String]) -> bool {
    seg.iter().any(|s| {
        s.eq_ignore_ascii_case("microsoft.authorization")
            || s.eq_ignore_ascii_case("microsoft.insights")
    })
}

/// A path under the Compute, Storage or ClassicStorage providers of a resource group.
fn is_neighbour(seg: &[String]) -> bool {
    seg.len() > 5
        && seg[0].eq_ignore_ascii_case("subscriptions")
        && seg[2].eq_ignore_ascii_case("resourcegroups")
        && seg[4].eq_ignore_ascii_case("providers")
        && [
            "microsoft.compute",
            "microsoft.storage",
            "microsoft.classicstorage",
        ]
        .iter()
        .any(|p| seg[5].eq_ignore_ascii_case(p))
}

/// The answer for a path outside the route table: ARM's 404 for a resource that does not exist
/// under the neighbouring providers rsvault resolves, `InvalidResourceType` elsewhere.
fn unrouted(seg: &[String], api_version: &str) -> ArmError {
    if is_neighbour(seg) {
        return ArmError::new(
            ArmCode::ResourceNotFound,
            format!(
                "The Resource '{}' under resource group '{}' was not found. rsvault serves only the virtual machines and storage accounts of its configuration.",
                seg[5..].join("/"),
                seg[3]
            ),
        );
    }
    ArmError::new(
        ArmCode::PathNotFound,
        format!(
            "No resource type matches the path '/{}' for api version '{api_version}'.",
            seg.join("/")
        ),
    )
}

/// Reads the body up to `limit` bytes. A larger body is drained (up to a cap) before the 413 is
/// sent, so the client reads the answer instead of a connection reset mid-upload.
async fn read_body(body: axum::body::Body, limit: usize) -> ArmResult<Bytes> {
    use futures_util::StreamExt;
    const DRAIN_CAP: usize = 64 << 20;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ArmError::new(
                ArmCode::InvalidJson,
                format!("The request body could not be read: {e}."),
            )
        })?;
        seen += chunk.len();
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else if seen > DRAIN_CAP {
            break;
        }
    }
    if seen > limit {
        return Err(ArmError::new(
            ArmCode::BodyTooLarge,
            format!("The request body is larger than the limit of {limit} bytes."),
        ));
    }
    Ok(Bytes::from(buf))
}

/// The ARM cloud metadata document (`GET /metadata/endpoints`), pointing every endpoint a backup
/// client needs at this server.
fn cloud_metadata(origin: &str) -> Value {
    let base = format!("{origin}/");
    serde_json::json!({
        "name": "rsvault",
        "resourceManager": base,
        "portal": base,
        "authentication": {
            "loginEndpoint": base,
            "audiences": [base],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "suffixes": {},
    })
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn parse_query(q: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(dec(k).to_ascii_lowercase(), dec(v));
    }
    out
}

/// 200 with a JSON body.
pub fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// 200 with a JSON body that is already serialized.
pub fn ok_json_bytes(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// 202 with `Location`, optional `Azure-AsyncOperation`, and `Retry-After`.
pub fn accepted(location: &str, async_op: Option<&str>, retry_after: u64) -> Response {
    let mut r = StatusCode::ACCEPTED.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert("location", v);
    }
    if let Some(a) = async_op.and_then(|a| HeaderValue::from_str(a).ok()) {
        h.insert("azure-asyncoperation", a);
    }
    h.insert("retry-after", HeaderValue::from(retry_after));
    r
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// 32 random bytes as hex: tokens and repository keys.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The ARM error body with its status (and `WWW-Authenticate` on 401).
pub fn error_response(e: ArmError) -> Response {
    let mut resp = (e.code.status(), axum::Json(e.body())).into_response();
    if e.code.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Bearer realm=\"rsvault\""),
        );
    }
    resp
}

/// The request's origin (`https://host:port`) for absolute URLs: the configured public URL, else
/// the request's authority (HTTP/2 `:authority`, or HTTP/1.1 `Host`, port included). A client
/// controls `X-Forwarded-Host`, so it counts only where the operator says a proxy sets it.
pub fn origin(cfg: &ServerConfig, parts: &axum::http::request::Parts) -> String {
    if let Some(u) = &cfg.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let header = |name| parts.headers.get(name).and_then(|h| h.to_str().ok());
    let forwarded = if cfg.trust_forwarded_host {
        header("x-forwarded-host")
    } else {
        None
    };
    let host = forwarded
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .or_else(|| header("host"))
        .unwrap_or("127.0.0.1");
    format!("https://{host}")
}
