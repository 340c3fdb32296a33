//! Who is calling: the bootstrap admin token (stored only as a SHA-256), JWTs signed by the
//! deployment's own key (`rsvault token issue`), and JWTs of external OpenID Connect issuers
//! (`[[auth.issuer]]`, e.g. Microsoft Entra ID), verified against their JWKS. Then what they may
//! do: [`rbac`]. Signature checks are `jsonwebtoken`'s; nothing here is hand-rolled crypto.

pub mod keys;
pub mod rbac;
pub mod roles;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use rsvault_jobs::config::{Config, ExternalIssuer};
use rsvault_store::Store;
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};

pub use keys::SigningKey;

/// The audience of tokens for Azure Resource Manager, which rsvault stands in for.
pub const ARM_AUDIENCE: &str = "https://management.azure.com/";
/// Every spelling ARM accepts for itself.
const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com/",
    "https://management.azure.com",
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
];

const K_AUTH: &str = "auth";
/// How long a principal's role assignments are used as read before they are read again.
const ASSIGNMENTS_FRESH: Duration = Duration::from_secs(2);
/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY: u64 = 30;
const K_JWK: &str = "jwk";

/// A principal's role assignments, shared between the cache and the requests that use them.
type Assignments = std::sync::Arc<Vec<rbac::Assignment>>;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The bootstrap admin token: every action, every scope.
    Admin,
    User(User),
}

#[derive(Debug, Clone)]
pub struct User {
    /// `oid`, else `sub`.
    pub oid: String,
    pub tid: Option<String>,
    pub issuer: String,
    /// UPN-like name for messages and the activity log (`upn`, `unique_name`, `preferred_username`).
    pub upn: Option<String>,
    pub claims: Value,
}

impl User {
    /// What ARM names the caller: the UPN for users, the object id otherwise.
    pub fn display_name(&self) -> String {
        self.upn.clone().unwrap_or_else(|| self.oid.clone())
    }
}

impl Principal {
    /// The `caller` of activity-log entries.
    pub fn caller(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::User(u) => u.display_name(),
        }
    }
    /// A stable key per caller (rate limits).
    pub fn key(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::User(u) => format!("{}|{}", u.issuer, u.oid),
        }
    }
}

/// Where an external issuer's keys come from, and what was last read.
struct External {
    cfg: ExternalIssuer,
    cache: Mutex<JwksCache>,
}

#[derive(Default)]
struct JwksCache {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    /// The file's modification time when it was read.
    mtime: Option<SystemTime>,
    fetched: Option<Instant>,
}

pub struct Auth {
    /// `iss` of the deployment's own tokens.
    pub issuer: String,
    pub key: SigningKey,
    external: Vec<External>,
    /// (checked at, SHA-256 hex of the admin token).
    admin: Mutex<Option<(Instant, Option<String>)>>,
    /// Public keys of the deployment's other nodes, by `kid`, as published in the store.
    peers: Mutex<HashMap<String, DecodingKey>>,
    /// Tokens already verified (by SHA-256), with their `exp`: a signature is checked once per
    /// token, not once per request.
    verified: Mutex<HashMap<[u8; 32], (User, i64)>>,
    /// Role assignments per principal as last read, for [`ASSIGNMENTS_FRESH`]; emptied when this
    /// node writes one (another node's writes show within that time, as ARM's own cache does).
    assignments: Mutex<HashMap<String, (Instant, Assignments)>>,
    http: Option<reqwest::Client>,
}

/// The `iss` of the deployment's tokens.
pub fn issuer_name(cfg: &Config) -> String {
    cfg.auth
        .token_issuer
        .clone()
        .or_else(|| cfg.server.public_url.clone())
        .map(|u| u.trim_end_matches('/').to_string() + "/")
        .unwrap_or_else(|| "https://rsvault.local/".into())
}

/// The file of the deployment's token-signing key.
pub fn signing_key_path(data: &Path, cfg: &Config) -> PathBuf {
    cfg.auth
        .signing_key_file
        .clone()
        .unwrap_or_else(|| data.join("token-signing-key.pem"))
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The admin token's hash from the store, if there is one.
fn stored_admin_hash(store: &Store) -> rsvault_store::Result<Option<String>> {
    let v: Option<Value> = store.read(|tx| tx.get(K_AUTH, "", "admin-token"))?;
    Ok(v.and_then(|v| v["sha256"].as_str().map(String::from)))
}

fn admin_doc(token: &str) -> Value {
    json!({"sha256": sha256_hex(token), "since": rsvault_types::arm::time(chrono::Utc::now())})
}

fn store_admin_hash(store: &Store, token: &str) -> rsvault_store::Result<()> {
    store.tx(|tx| tx.put(K_AUTH, "", "admin-token", "", &admin_doc(token)))
}

fn new_admin_token() -> String {
    format!("rsv_{}", crate::random_token())
}

/// Makes sure an admin token exists. A token kept in plain text by an older release (`legacy`)
/// is converted: its hash is stored and the file removed. Returns the token when it was created
/// now (to be shown once), else `None`.
pub fn ensure_admin_token(store: &Store, legacy: &Path) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::fs::read_to_string(legacy) {
        let t = t.trim();
        if !t.is_empty() {
            store_admin_hash(store, t)?;
        }
        std::fs::remove_file(legacy)?;
        tracing::warn!(
            file = %legacy.display(),
            "the admin token was kept in plain text; only its hash is stored now and the file is removed"
        );
        return Ok(None);
    }
    // One transaction: of nodes that start together on one store, exactly one creates it.
    let token = new_admin_token();
    let created = store.tx(|tx| {
        if tx.get::<Value>(K_AUTH, "", "admin-token")?.is_some() {
            return Ok(false);
        }
        tx.put(K_AUTH, "", "admin-token", "", &admin_doc(&token))?;
        Ok(true)
    })?;
    Ok(created.then_some(token))
}

/// Keeps (the hash of) `token` as the admin token.
pub fn adopt_admin_token(store: &Store, token: &str) -> anyhow::Result<()> {
    Ok(store_admin_hash(store, token)?)
}

/// Replaces the admin token; the old one stops working within seconds on every node.
pub fn rotate_admin_token(store: &Store) -> anyhow::Result<String> {
    let token = new_admin_token();
    store_admin_hash(store, &token)?;
    Ok(token)
}

/// Publishes the public half of `key` in the store, so every node accepts its tokens.
pub fn publish_key(store: &Store, key: &SigningKey) -> anyhow::Result<()> {
    let known: Option<Value> = store.read(|tx| tx.get(K_JWK, "", &key.kid))?;
    if known.is_none() {
        store.tx(|tx| tx.put(K_JWK, "", &key.kid, "", &key.jwk))?;
    }
    Ok(())
}

/// Signs a token for `principal_id` valid `seconds` from now.
pub fn issue_token(
    key: &SigningKey,
    issuer: &str,
    principal_id: &str,
    seconds: u64,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        !principal_id.is_empty()
            && principal_id.len() <= 256
            && !principal_id.chars().any(char::is_control),
        "the principal id must be 1 to 256 printable characters"
    );
    let now = chrono::Utc::now().timestamp();
    key.sign(&json!({
        "iss": issuer,
        "aud": ARM_AUDIENCE,
        "sub": principal_id,
        "oid": principal_id,
        "iat": now,
        "nbf": now,
        "exp": now + seconds as i64,
        "ver": "1.0",
    }))
}

/// A short-lived admin token for the operator's client, signed with the deployment's key.
pub fn issue_admin_token(key: &SigningKey, issuer: &str, seconds: u64) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    key.sign(&json!({
        "iss": issuer,
        "aud": ARM_AUDIENCE,
        "sub": "rsvault-admin",
        "oid": "rsvault-admin",
        "rsvault_admin": true,
        "iat": now,
        "nbf": now,
        "exp": now + seconds as i64,
    }))
}

fn invalid(msg: impl Into<String>) -> ArmError {
    ArmError::new(ArmCode::InvalidAuthenticationToken, msg)
}

/// The key a JWK describes, with the one algorithm it may verify.
fn jwk_key(jwk: &Jwk) -> Option<(DecodingKey, Algorithm)> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    Some((DecodingKey::from_jwk(jwk).ok()?, alg))
}

fn parse_jwks(bytes: &[u8]) -> anyhow::Result<HashMap<String, (DecodingKey, Algorithm)>> {
    let set: JwkSet = serde_json::from_slice(bytes)?;
    Ok(set
        .keys
        .iter()
        .filter_map(|k| Some((k.common.key_id.clone()?, jwk_key(k)?)))
        .collect())
}

impl Auth {
    pub fn new(cfg: &Config, key: SigningKey) -> Self {
        let needs_http = cfg.auth.issuers.iter().any(|i| i.jwks_uri.is_some());
        Self {
            issuer: issuer_name(cfg),
            key,
            external: cfg
                .auth
                .issuers
                .iter()
                .map(|c| External {
                    cfg: c.clone(),
                    cache: Mutex::new(JwksCache::default()),
                })
                .collect(),
            admin: Mutex::new(None),
            peers: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            assignments: Mutex::new(HashMap::new()),
            http: needs_http.then(|| {
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("HTTP client")
            }),
        }
    }

    /// The deployment's published public keys (JWKS).
    pub fn jwks(&self, store: &Store) -> ArmResult<Value> {
        let mut keys: Vec<Value> = store.read(|tx| tx.list(K_JWK, "", None))?;
        if !keys.iter().any(|k| k["kid"] == self.key.jwk["kid"]) {
            keys.push(self.key.jwk.clone());
        }
        Ok(json!({"keys": keys}))
    }

    fn admin_hash(&self, store: &Store) -> ArmResult<Option<String>> {
        let mut cached = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        // Re-read every few seconds: `rsvault token rotate-admin` writes the store directly.
        if let Some((at, h)) = cached.as_ref() {
            if at.elapsed() < Duration::from_secs(2) {
                return Ok(h.clone());
            }
        }
        let h = stored_admin_hash(store)?;
        *cached = Some((Instant::now(), h.clone()));
        Ok(h)
    }

    /// Authenticates the `Authorization: Bearer …` header.
    pub async fn authenticate(
        &self,
        store: &Store,
        headers: &axum::http::HeaderMap,
    ) -> ArmResult<Principal> {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = given else {
            return Err(ArmError::new(
                ArmCode::Unauthorized,
                "Authentication failed. The 'Authorization' header is missing; send 'Authorization: Bearer <token>'.",
            ));
        };
        if token.matches('.').count() != 2 {
            let want = self.admin_hash(store)?;
            let got = sha256_hex(token);
            return match want {
                Some(w) if crate::constant_time_eq(w.as_bytes(), got.as_bytes()) => {
                    Ok(Principal::Admin)
                }
                _ => Err(invalid(
                    "The access token is invalid: it is neither the admin token nor a JWT.",
                )),
            };
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .filter(|(_, exp)| now <= exp + LEEWAY as i64)
            .map(|(u, _)| u.clone());
        let user = match cached {
            Some(u) => u,
            None => {
                let u = self.verify_jwt(store, token).await?;
                if let Some(exp) = u.claims["exp"].as_i64() {
                    let mut m = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                    if m.len() >= 10_000 {
                        m.retain(|_, (_, e)| now <= *e + LEEWAY as i64);
                        if m.len() >= 10_000 {
                            m.clear();
                        }
                    }
                    m.insert(digest, (u.clone(), exp));
                }
                u
            }
        };
        // The operator's own client (`rsvault job …` with the data dir) signs its tokens with the
        // deployment's key: whoever holds that key is the admin already.
        if user.issuer == self.issuer && user.claims["rsvault_admin"] == json!(true) {
            return Ok(Principal::Admin);
        }
        Ok(Principal::User(user))
    }

    async fn verify_jwt(&self, store: &Store, token: &str) -> ArmResult<User> {
        // `alg: none` and unknown algorithms fail here: they are not `jsonwebtoken` algorithms.
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            invalid("The access token is malformed or uses an unsupported algorithm.")
        })?;
        // The issuer picks the keys; it is read before the signature is checked, and checked again
        // (as a validated claim) after.
        let unverified: Value = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("The access token payload is not JSON."))?;
        let iss = unverified["iss"].as_str().unwrap_or("").to_string();
        let kid = header
            .kid
            .clone()
            .ok_or_else(|| invalid("The access token has no 'kid' header."))?;
        let (key, alg, audiences): (DecodingKey, Algorithm, Vec<String>) = if iss == self.issuer {
            let key = self.own_key(store, &kid)?.ok_or_else(|| {
                invalid(format!(
                    "The access token was signed with an unknown key '{kid}'."
                ))
            })?;
            (
                key,
                Algorithm::ES256,
                ARM_AUDIENCES.iter().map(|s| s.to_string()).collect(),
            )
        } else if let Some(ext) = self.external.iter().find(|e| e.cfg.issuer == iss) {
            let (key, alg) = self.external_key(ext, &kid).await?.ok_or_else(|| {
                invalid(format!(
                    "The access token was signed with a key '{kid}' that issuer '{iss}' does not publish."
                ))
            })?;
            (key, alg, vec![ext.cfg.audience.clone()])
        } else {
            return Err(invalid(format!(
                "The access token is from the wrong issuer '{iss}'. It must match one of the issuers this server trusts."
            )));
        };
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY;
        v.set_audience(&audiences);
        v.set_issuer(&[&iss]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => {
                    let exp = unverified["exp"]
                        .as_i64()
                        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                        .map(|t| t.format("%m/%d/%Y %H:%M:%S").to_string())
                        .unwrap_or_default();
                    let now = chrono::Utc::now().format("%m/%d/%Y %H:%M:%S");
                    ArmError::new(
                        ArmCode::ExpiredAuthenticationToken,
                        format!("The access token expiry UTC time '{exp}' is earlier than current UTC time '{now}'."),
                    )
                }
                K::InvalidAudience => invalid(format!(
                    "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences '{}'.",
                    unverified["aud"].as_str().unwrap_or(""),
                    audiences.join("','")
                )),
                K::InvalidSignature => invalid("The access token signature is invalid."),
                K::InvalidAlgorithm => invalid(format!(
                    "The access token algorithm is not allowed for key '{kid}'; expected {alg:?}."
                )),
                K::ImmatureSignature => invalid("The access token is not valid yet (nbf)."),
                _ => invalid("The access token is invalid."),
            }
        })?;
        let c = data.claims;
        let oid = c["oid"]
            .as_str()
            .or_else(|| c["sub"].as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("The access token names no principal ('oid' or 'sub')."))?
            .to_string();
        let upn = ["upn", "unique_name", "preferred_username"]
            .iter()
            .find_map(|k| c[*k].as_str().map(String::from));
        Ok(User {
            oid,
            tid: c["tid"].as_str().map(String::from),
            issuer: iss,
            upn,
            claims: c,
        })
    }

    fn own_key(&self, store: &Store, kid: &str) -> ArmResult<Option<DecodingKey>> {
        if kid == self.key.kid {
            return Ok(Some(self.key.decoding.clone()));
        }
        if let Some(k) = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
        {
            return Ok(Some(k.clone()));
        }
        let jwk: Option<Jwk> = store.read(|tx| tx.get(K_JWK, "", kid))?;
        let key = jwk.as_ref().and_then(jwk_key).map(|(k, _)| k);
        if let Some(k) = &key {
            self.peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(kid.to_string(), k.clone());
        }
        Ok(key)
    }

    async fn external_key(
        &self,
        ext: &External,
        kid: &str,
    ) -> ArmResult<Option<(DecodingKey, Algorithm)>> {
        if let Some(path) = &ext.cfg.jwks_file {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let mut c = ext.cache.lock().unwrap_or_else(|p| p.into_inner());
            if c.mtime != mtime || c.mtime.is_none() {
                match std::fs::read(path)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| parse_jwks(&b))
                {
                    Ok(keys) => {
                        c.keys = keys;
                        c.mtime = mtime;
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), "cannot read the issuer's JWKS: {e}")
                    }
                }
            }
            return Ok(c.keys.get(kid).cloned());
        }
        let Some(uri) = &ext.cfg.jwks_uri else {
            return Ok(None);
        };
        {
            let c = ext.cache.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = c
                .fetched
                .is_some_and(|t| t.elapsed() < Duration::from_secs(24 * 3600));
            // An unknown kid means the issuer rotated: fetch again, but at most every 5 s.
            let recent = c
                .fetched
                .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
            if let Some(k) = c.keys.get(kid).filter(|_| fresh) {
                return Ok(Some(k.clone()));
            }
            if recent {
                return Ok(None);
            }
        }
        let http = self.http.as_ref().expect("client built for jwks_uri");
        let fetched = async {
            let r = http.get(uri).send().await?.error_for_status()?;
            parse_jwks(&r.bytes().await?)
        }
        .await;
        let mut c = ext.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.fetched = Some(Instant::now());
        match fetched {
            Ok(keys) => c.keys = keys,
            Err(e) => tracing::warn!(uri = %uri, "cannot fetch the issuer's JWKS: {e}"),
        }
        Ok(c.keys.get(kid).cloned())
    }

    /// The role assignments of `principal` (read at most every [`ASSIGNMENTS_FRESH`]).
    pub fn assignments_of(
        &self,
        svc: &rsvault_jobs::service::Service,
        principal: &str,
    ) -> ArmResult<Assignments> {
        let key = principal.to_ascii_lowercase();
        if let Some((at, a)) = self
            .assignments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if at.elapsed() < ASSIGNMENTS_FRESH {
                return Ok(a.clone());
            }
        }
        let a = std::sync::Arc::new(rbac::assignments_of(svc, principal)?);
        let mut m = self.assignments.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= 10_000 {
            m.clear();
        }
        m.insert(key, (Instant::now(), a.clone()));
        Ok(a)
    }

    /// Forgets every cached assignment (after this node wrote one).
    pub fn forget_assignments(&self) {
        self.assignments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// `/.well-known/openid-configuration` for the deployment's issuer.
    pub fn openid_configuration(&self, origin: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{origin}/.well-known/jwks.json"),
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["token"],
            "claims_supported": ["iss", "aud", "sub", "oid", "iat", "nbf", "exp"],
        })
    }
}

/// The `Microsoft.Authorization` and `Microsoft.Insights` routes, for the one route table.
pub fn routes() -> Vec<crate::route::Route> {
    use crate::route::{Model, Route};
    const SCOPES: [(&str, &str); 3] = [
        ("/subscriptions/{subscriptionId}", "Subscription"),
        ("/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}", "ResourceGroup"),
        ("/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.RecoveryServices/vaults/{vaultName}", "Resource"),
    ];
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let route = |method, path: String, id: String, ok: &'static [u16], model, body, query| Route {
        method,
        path: leak(path),
        operation_id: leak(id),
        ok,
        model,
        body,
        query,
    };
    let f: &'static [&'static str] = &["$filter"];
    let none: &'static [&'static str] = &[];
    let mut out = Vec::new();
    for (scope, name) in SCOPES {
        let ra = format!("{scope}/providers/Microsoft.Authorization/roleAssignments");
        let rd = format!("{scope}/providers/Microsoft.Authorization/roleDefinitions");
        out.push(route(
            "get",
            ra.clone(),
            format!("RoleAssignments_ListFor{name}"),
            &[200],
            Model::ResourceList,
            false,
            f,
        ));
        out.push(route(
            "get",
            format!("{ra}/{{roleAssignmentName}}"),
            format!("RoleAssignments_Get{name}"),
            &[200],
            Model::Resource,
            false,
            none,
        ));
        out.push(route(
            "put",
            format!("{ra}/{{roleAssignmentName}}"),
            format!("RoleAssignments_Create{name}"),
            &[200, 201],
            Model::Resource,
            true,
            none,
        ));
        out.push(route(
            "delete",
            format!("{ra}/{{roleAssignmentName}}"),
            format!("RoleAssignments_Delete{name}"),
            &[200, 204],
            Model::Resource,
            false,
            none,
        ));
        out.push(route(
            "get",
            rd.clone(),
            format!("RoleDefinitions_List{name}"),
            &[200],
            Model::ResourceList,
            false,
            f,
        ));
        out.push(route(
            "get",
            format!("{rd}/{{roleDefinitionId}}"),
            format!("RoleDefinitions_Get{name}"),
            &[200],
            Model::Object,
            false,
            none,
        ));
    }
    let rd = "/providers/Microsoft.Authorization/roleDefinitions".to_string();
    out.push(route(
        "get",
        rd.clone(),
        "RoleDefinitions_ListTenant".into(),
        &[200],
        Model::ResourceList,
        false,
        f,
    ));
    out.push(route(
        "get",
        format!("{rd}/{{roleDefinitionId}}"),
        "RoleDefinitions_GetById".into(),
        &[200],
        Model::Object,
        false,
        none,
    ));
    out.push(route(
        "get",
        "/subscriptions/{subscriptionId}/providers/Microsoft.Insights/eventtypes/management/values"
            .into(),
        "ActivityLogs_List".into(),
        &[200],
        Model::Object,
        false,
        &["$filter", "$select", "$skiptoken"],
    ));
    out.push(route(
        "get",
        "/providers/Microsoft.Insights/eventcategories".into(),
        "EventCategories_List".into(),
        &[200],
        Model::Object,
        false,
        none,
    ));
    out
}
