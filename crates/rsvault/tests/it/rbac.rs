//! Who may do what (issue 12): signed tokens, Azure's built-in roles at Azure's scopes, the
//! activity log, rate limits and connection hygiene — through the real binary over HTTPS.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{Env, Server, SUB};

const SUB2: &str = "00000000-0000-0000-0000-000000000002";
const AUTHZ: &str = "2022-04-01";

const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const BACKUP_CONTRIBUTOR: &str = "5e467623-bb1f-42f4-a55d-6e525e11384b";
const BACKUP_OPERATOR: &str = "00c29273-979b-4161-815c-10b084fb9324";
const BACKUP_READER: &str = "a795c7a0-d4a2-40c1-ae25-d81f01202912";

/// `rsvault token issue` for `principal`, as an operator runs it.
pub fn issue(s: &Server, principal: &str, extra: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsvault"))
        .args(["token", "issue", "--principal-id", principal, "--data"])
        .arg(&s.data)
        .arg("--config")
        .arg(&s.config)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One call with `token` (None: no Authorization header): (status, body, headers).
pub fn call(
    s: &Server,
    token: Option<&str>,
    method: &str,
    path: &str,
    api: &str,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!("{}{path}{sep}api-version={api}", s.base);
    let mut rb = s.client.request(method.parse().unwrap(), &url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, r.json().unwrap_or(Value::Null), headers)
}

pub fn assign(s: &Server, token: &str, scope: &str, role: &str, principal: &str) -> (u16, Value) {
    let name = uuid::Uuid::new_v4();
    let sub = scope.split('/').nth(2).unwrap();
    let (st, body, _) = call(
        s,
        Some(token),
        "PUT",
        &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
        AUTHZ,
        Some(json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}"),
            "principalId": principal,
        }})),
    );
    (st, body)
}

fn vault_of(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{name}")
}

#[derive(Clone, Copy, Debug)]
enum Op {
    ReadVault,
    ListJobs,
    Backup,
    Restore,
    Cancel,
    WritePolicy,
    DeleteItem,
    WriteVault,
    WriteRoleAssignment,
    ReadActivityLog,
}

const OPS: [Op; 10] = [
    Op::ReadVault,
    Op::ListJobs,
    Op::Backup,
    Op::Restore,
    Op::Cancel,
    Op::WritePolicy,
    Op::DeleteItem,
    Op::WriteVault,
    Op::WriteRoleAssignment,
    Op::ReadActivityLog,
];

/// The README's table (azure-spec §12.3), for Owner, Contributor, Reader, Backup Contributor,
/// Backup Operator, Backup Reader.
fn expected(op: Op) -> [bool; 6] {
    match op {
        Op::ReadVault | Op::ListJobs => [true; 6],
        Op::Backup | Op::Restore | Op::Cancel => [true, true, false, true, true, false],
        Op::WritePolicy | Op::DeleteItem | Op::WriteVault => {
            [true, true, false, true, false, false]
        }
        Op::WriteRoleAssignment => [true, false, false, false, false, false],
        Op::ReadActivityLog => [true, true, true, false, false, false],
    }
}

fn share_item(vault: &str) -> String {
    format!("{vault}/backupFabrics/Azure/protectionContainers/StorageContainer;Storage;rg1;acct1/protectedItems/AzureFileShare;share1")
}

/// Performs `op` against `vault` (its subscription for the activity log): (status, body, the
/// resource the op targets).
fn perform(s: &Server, token: &str, op: Op, vault: &str, n: usize) -> (u16, Value, String) {
    let item = share_item(vault);
    let sub = vault.split('/').nth(2).unwrap().to_string();
    let api = crate::harness::API;
    let (method, path, apiv, body): (&str, String, &str, Option<Value>) = match op {
        Op::ReadVault => ("GET", vault.to_string(), api, None),
        Op::ListJobs => ("GET", format!("{vault}/backupJobs"), api, None),
        Op::Backup => (
            "POST",
            format!("{item}/backup"),
            api,
            Some(json!({"properties": {"objectType": "AzureFileShareBackupRequest"}})),
        ),
        Op::Restore => (
            "POST",
            format!("{item}/recoveryPoints/1/restore"),
            api,
            Some(json!({"properties": {"objectType": "AzureFileShareRestoreRequest", "recoveryType": "OriginalLocation"}})),
        ),
        Op::Cancel => (
            "POST",
            format!("{vault}/backupJobs/{}/cancel", uuid::Uuid::new_v4()),
            api,
            None,
        ),
        Op::WritePolicy => (
            "PUT",
            format!("{vault}/backupPolicies/p{n}"),
            api,
            Some(json!({"properties": {
                "backupManagementType": "AzureStorage",
                "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Daily", "scheduleRunTimes": ["2026-01-01T02:00:00Z"]},
                "retentionPolicy": {"retentionPolicyType": "LongTermRetentionPolicy", "dailySchedule": {"retentionTimes": ["2026-01-01T02:00:00Z"], "retentionDuration": {"count": 7, "durationType": "Days"}}},
                "timeZone": "UTC"}})),
        ),
        Op::DeleteItem => ("DELETE", item.clone(), api, None),
        Op::WriteVault => (
            "PUT",
            vault.to_string(),
            api,
            Some(json!({"location": "westus", "sku": {"name": "Standard"}})),
        ),
        Op::WriteRoleAssignment => (
            "PUT",
            format!(
                "{vault}/providers/Microsoft.Authorization/roleAssignments/{}",
                uuid::Uuid::new_v4()
            ),
            AUTHZ,
            Some(json!({"properties": {
                "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{READER}"),
                "principalId": format!("someone-{n}"),
            }})),
        ),
        Op::ReadActivityLog => (
            "GET",
            format!("/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values?$filter=eventTimestamp%20ge%20'2020-01-01T00:00:00Z'"),
            "2015-04-01",
            None,
        ),
    };
    let target = match op {
        Op::ReadActivityLog => format!("/subscriptions/{sub}"),
        _ => vault.to_string(),
    };
    let (st, b, _) = call(s, Some(token), method, &path, apiv, body);
    (st, b, target)
}

fn contains(scope: &str, resource: &str) -> bool {
    let (s, r) = (scope.to_ascii_lowercase(), resource.to_ascii_lowercase());
    r == s || r.starts_with(&format!("{s}/"))
}

#[test]
fn each_built_in_role_at_each_scope_allows_what_azure_allows() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let admin = s.token.clone();
    let va = s.setup_vault("va");
    s.protect(&va, &share_item(&va));
    let vb = vault_of(SUB, "rg2", "vb");
    let vc = vault_of(SUB2, "rg1", "vc");
    for v in [&vb, &vc] {
        let (st, b, _) = call(
            &s,
            Some(&admin),
            "PUT",
            v,
            crate::harness::API,
            Some(json!({"location": "westus"})),
        );
        assert_eq!(st, 201, "{b}");
    }
    let roles = [
        ("Owner", OWNER),
        ("Contributor", CONTRIBUTOR),
        ("Reader", READER),
        ("Backup Contributor", BACKUP_CONTRIBUTOR),
        ("Backup Operator", BACKUP_OPERATOR),
        ("Backup Reader", BACKUP_READER),
    ];
    let scopes = [
        format!("/subscriptions/{SUB}"),
        format!("/subscriptions/{SUB}/resourceGroups/rg1"),
        va.clone(),
    ];
    let mut n = 0;
    let mut denials = 0;
    for (ri, (role_name, role)) in roles.iter().enumerate() {
        for scope in &scopes {
            let principal = format!("p-{ri}-{}", scope.matches('/').count());
            let (st, b) = assign(&s, &admin, scope, role, &principal);
            assert_eq!(st, 201, "{b}");
            let token = issue(&s, &principal, &[]);

            for vault in [&va, &vb, &vc] {
                for op in OPS {
                    n += 1;
                    let (st, body, target) = perform(&s, &token, op, vault, n);
                    let want = expected(op)[ri] && contains(scope, &target);
                    let what = format!("{role_name} at {scope}: {op:?} on {target} -> {st} {body}");
                    assert_ne!(st, 401, "{what}");
                    assert!(st < 500, "{what}");
                    if want {
                        assert_ne!(st, 403, "{what}");
                    } else {
                        denials += 1;
                        assert_eq!(st, 403, "{what}");
                        assert_eq!(body["error"]["code"], "AuthorizationFailed", "{what}");
                        let msg = body["error"]["message"].as_str().unwrap();
                        assert!(
                            msg.starts_with(&format!("The client '{principal}' with object id '{principal}' does not have authorization to perform action '"))
                                && msg.contains(&format!("' over scope '{target}"))
                                && msg.ends_with("or the scope is invalid. If access was recently granted, please refresh your credentials."),
                            "{what}"
                        );
                    }
                }
            }

            // Lists show only what the principal may read.
            for (sub, want) in [
                (
                    SUB,
                    if scope.matches('/').count() == 2 {
                        vec!["va", "vb"]
                    } else {
                        vec!["va"]
                    },
                ),
                (SUB2, vec![]),
            ] {
                let (st, list, _) = call(
                    &s,
                    Some(&token),
                    "GET",
                    &format!("/subscriptions/{sub}/providers/Microsoft.RecoveryServices/vaults"),
                    crate::harness::API,
                    None,
                );
                assert_eq!(st, 200, "{list}");
                let mut names: Vec<&str> = list["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["name"].as_str().unwrap())
                    .collect();
                names.sort();
                assert_eq!(names, want, "{role_name} at {scope} listing {sub}");
            }
        }
    }
    assert!(
        denials > 200,
        "the matrix denies too little to mean anything: {denials}"
    );

    // The activity log has the denials and the writes, with who, what and where.
    let (st, log, _) = call(
        &s,
        Some(&admin),
        "GET",
        &format!("/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values?$filter=eventTimestamp%20ge%20'2020-01-01T00:00:00Z'%20and%20resourceGroupName%20eq%20'rg2'"),
        "2015-04-01",
        None,
    );
    assert_eq!(st, 200, "{log}");
    let events = log["value"].as_array().unwrap();
    assert_eq!(events.len(), 200, "a full first page");
    let next = log["nextLink"].as_str().expect("more than one page");
    assert!(events.iter().all(|e| e["resourceGroupName"] == "rg2"));
    let denied = events
        .iter()
        .find(|e| e["subStatus"]["value"] == "Forbidden")
        .expect("a denial is logged");
    assert_eq!(denied["status"]["value"], "Failed");
    assert!(denied["caller"].as_str().unwrap().starts_with("p-"));
    assert!(denied["authorization"]["action"]
        .as_str()
        .unwrap()
        .starts_with("Microsoft."));
    assert_eq!(denied["httpRequest"]["clientIpAddress"], "127.0.0.1");
    assert!(events
        .iter()
        .any(|e| e["eventName"]["value"] == "BeginRequest"
            && e["correlationId"] == denied["correlationId"]));
    let r = s.client.get(next).bearer_auth(&admin).send().unwrap();
    assert_eq!(r.status(), 200);
    let page2: Value = r.json().unwrap();
    assert!(!page2["value"].as_array().unwrap().is_empty());
    let first: Vec<&Value> = events.iter().map(|e| &e["eventDataId"]).collect();
    assert!(page2["value"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| !first.contains(&&e["eventDataId"])));
}

#[test]
fn role_assignments_follow_arm_rules() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let admin = s.token.clone();
    let sub = format!("/subscriptions/{SUB}");
    let rg = format!("{sub}/resourceGroups/rg1");
    let va = vault_of(SUB, "rg1", "va");
    let ra = |scope: &str, name: &str| {
        format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}")
    };

    // Create (201), repeat (200), same principal + role + scope under another name (409).
    let name = "3fc8ea1b-5b0b-4b4b-9b5b-9c0c8f7e0a11";
    let body = json!({"properties": {"roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{BACKUP_OPERATOR}"), "principalId": "op1", "principalType": "ServicePrincipal"}});
    let (st, a, _) = call(
        &s,
        Some(&admin),
        "PUT",
        &ra(&rg, name),
        AUTHZ,
        Some(body.clone()),
    );
    assert_eq!(st, 201, "{a}");
    assert_eq!(a["id"], ra(&rg, name));
    assert_eq!(a["type"], "Microsoft.Authorization/roleAssignments");
    assert_eq!(a["properties"]["scope"], rg);
    assert_eq!(a["properties"]["principalType"], "ServicePrincipal");
    assert_eq!(
        a["properties"]["roleDefinitionId"],
        format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{BACKUP_OPERATOR}")
    );
    let (st, _, _) = call(
        &s,
        Some(&admin),
        "PUT",
        &ra(&rg, name),
        AUTHZ,
        Some(body.clone()),
    );
    assert_eq!(st, 200);
    let (st, e, _) = call(
        &s,
        Some(&admin),
        "PUT",
        &ra(&rg, &uuid::Uuid::new_v4().to_string()),
        AUTHZ,
        Some(body.clone()),
    );
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["error"]["code"], "RoleAssignmentExists");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("The role assignment already exists."));
    // The same name at another scope or for another principal cannot be updated.
    let mut other = body.clone();
    other["properties"]["principalId"] = json!("op2");
    let (st, e, _) = call(&s, Some(&admin), "PUT", &ra(&rg, name), AUTHZ, Some(other));
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("RoleAssignmentUpdateNotPermitted"))
    );
    // Bad input: a name that is not a GUID, an unknown role, no principal.
    let (st, e, _) = call(
        &s,
        Some(&admin),
        "PUT",
        &ra(&rg, "not-a-guid"),
        AUTHZ,
        Some(body.clone()),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("InvalidRoleAssignmentId"))
    );
    let (st, e, _) = call(
        &s,
        Some(&admin),
        "PUT",
        &ra(&rg, &uuid::Uuid::new_v4().to_string()),
        AUTHZ,
        Some(
            json!({"properties": {"roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/11111111-2222-3333-4444-555555555555", "principalId": "x"}}),
        ),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("RoleDefinitionDoesNotExist"))
    );
    let (st, e, _) = call(
        &s,
        Some(&admin),
        "PUT",
        &ra(&rg, &uuid::Uuid::new_v4().to_string()),
        AUTHZ,
        Some(json!({"properties": {"roleDefinitionId": BACKUP_READER}})),
    );
    assert_eq!(st, 400, "{e}");
    let r = s
        .client
        .put(format!(
            "{}{}?api-version={AUTHZ}",
            s.base,
            ra(&rg, &uuid::Uuid::new_v4().to_string())
        ))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    // Assignments above, at and below scopes.
    assert_eq!(assign(&s, &admin, &sub, READER, "rd1").0, 201);
    assert_eq!(assign(&s, &admin, &va, BACKUP_READER, "br1").0, 201);
    let names = |scope: &str, filter: &str| -> Vec<String> {
        let (st, l, _) = call(
            &s,
            Some(&admin),
            "GET",
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments{filter}"),
            AUTHZ,
            None,
        );
        assert_eq!(st, 200, "{l}");
        let mut v: Vec<String> = l["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["properties"]["principalId"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&rg, ""), ["br1", "op1", "rd1"]);
    assert_eq!(names(&rg, "?$filter=atScope()"), ["op1", "rd1"]);
    assert_eq!(names(&sub, "?$filter=principalId%20eq%20'br1'"), ["br1"]);
    assert_eq!(
        names(&va, "?$filter=atScope()%20and%20assignedTo('op1')"),
        ["op1"]
    );
    let (st, _, _) = call(
        &s,
        Some(&admin),
        "GET",
        &format!("{sub}/providers/Microsoft.Authorization/roleAssignments?$filter=bogus"),
        AUTHZ,
        None,
    );
    assert_eq!(st, 400);

    // Role definitions: Azure's GUIDs, names and permissions, by id and by name.
    let (st, d, _) = call(
        &s,
        Some(&admin),
        "GET",
        &format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{BACKUP_READER}"),
        AUTHZ,
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(d["properties"]["roleName"], "Backup Reader");
    assert_eq!(d["id"], format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{BACKUP_READER}"));
    assert_eq!(
        d["properties"]["permissions"][0]["actions"]
            .as_array()
            .unwrap()
            .len(),
        64
    );
    let (st, l, _) = call(&s, Some(&admin), "GET", &format!("{sub}/providers/Microsoft.Authorization/roleDefinitions?$filter=roleName%20eq%20'Backup%20Operator'"), AUTHZ, None);
    assert_eq!(st, 200);
    assert_eq!(l["value"].as_array().unwrap().len(), 1);
    assert_eq!(l["value"][0]["name"], BACKUP_OPERATOR);
    let (st, e, _) = call(&s, Some(&admin), "GET", &format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/11111111-2222-3333-4444-555555555555"), AUTHZ, None);
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("RoleDefinitionDoesNotExist"))
    );

    // Only Owner (and User Access Administrator, and the admin) may write assignments: a
    // Contributor at the subscription cannot make itself Owner.
    assert_eq!(assign(&s, &admin, &sub, CONTRIBUTOR, "c1").0, 201);
    let c1 = issue(&s, "c1", &[]);
    let (st, e) = assign(&s, &c1, &sub, OWNER, "c1");
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (403, Some("AuthorizationFailed"))
    );
    assert_eq!(
        assign(
            &s,
            &admin,
            &rg,
            "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
            "uaa"
        )
        .0,
        201
    );
    let uaa = issue(&s, "uaa", &[]);
    assert_eq!(assign(&s, &uaa, &va, BACKUP_OPERATOR, "new-op").0, 201);
    assert_eq!(
        assign(&s, &uaa, &sub, BACKUP_OPERATOR, "new-op").0,
        403,
        "UAA at rg1 is not UAA at the subscription"
    );

    // Get and delete (200 with the body, then 204); a deleted assignment grants nothing.
    let br1 = issue(&s, "br1", &[]);
    assert_eq!(
        call(
            &s,
            Some(&br1),
            "GET",
            &format!("{va}/backupJobs"),
            crate::harness::API,
            None
        )
        .0,
        404,
        "the vault does not exist, but reading is allowed"
    );
    let (_, l, _) = call(&s, Some(&admin), "GET", &format!("{va}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'br1'"), AUTHZ, None);
    let id = l["value"][0]["id"].as_str().unwrap().to_string();
    let (st, g, _) = call(&s, Some(&admin), "GET", &id, AUTHZ, None);
    assert_eq!(
        (st, g["properties"]["principalId"].as_str()),
        (200, Some("br1"))
    );
    let (st, g, _) = call(&s, Some(&admin), "DELETE", &id, AUTHZ, None);
    assert_eq!(
        (st, g["properties"]["principalId"].as_str()),
        (200, Some("br1"))
    );
    assert_eq!(call(&s, Some(&admin), "DELETE", &id, AUTHZ, None).0, 204);
    let (st, e, _) = call(&s, Some(&admin), "GET", &id, AUTHZ, None);
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("RoleAssignmentNotFound"))
    );
    assert_eq!(
        call(
            &s,
            Some(&br1),
            "GET",
            &format!("{va}/backupJobs"),
            crate::harness::API,
            None
        )
        .0,
        403
    );
}

/// An external issuer's signing key, its JWKS and tokens.
struct Idp {
    key: rcgen::KeyPair,
    kid: String,
}

impl Idp {
    fn new(kid: &str) -> Self {
        Self {
            key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            kid: kid.into(),
        }
    }

    fn jwk(&self) -> Value {
        let raw = self.key.public_key_raw();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        let k =
            jsonwebtoken::EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&h, claims, &k).unwrap()
    }
}

const IDP: &str = "https://login.example.test/tenant-1/v2.0";

fn claims(oid: &str, exp_in: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": IDP, "aud": "https://management.azure.com/", "oid": oid, "sub": "pairwise-sub",
        "tid": "tenant-1", "upn": format!("{oid}@example.test"), "iat": now, "nbf": now - 5, "exp": now + exp_in})
}

#[test]
fn tokens_are_verified_and_bad_ones_are_401() {
    let env = Env::new();
    let idp = Idp::new("idp-key-1");
    let jwks = env.path("idp-jwks.json");
    std::fs::write(&jwks, json!({"keys": [idp.jwk()]}).to_string()).unwrap();
    let s = Server::start(
        &env,
        &format!(
            "[scheduler]\nenabled = false\n[[auth.issuer]]\nissuer = \"{IDP}\"\naudience = \"https://management.azure.com/\"\njwks_file = \"{}\"\n",
            jwks.display()
        ),
    );
    let admin = s.token.clone();
    let v = s.setup_vault("va");
    assert_eq!(
        assign(
            &s,
            &admin,
            &format!("/subscriptions/{SUB}"),
            BACKUP_READER,
            "user-1"
        )
        .0,
        201
    );
    let jobs = format!("{v}/backupJobs");
    let get = |t: Option<&str>| call(&s, t, "GET", &jobs, crate::harness::API, None);

    // The external issuer's token: principal = oid, named by its UPN in denials.
    let good = idp.sign(&claims("user-1", 600));
    assert_eq!(get(Some(&good)).0, 200);
    let (st, e, _) = call(&s, Some(&good), "DELETE", &v, crate::harness::API, None);
    assert_eq!(st, 403);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("The client 'user-1@example.test' with object id 'user-1'"));

    // The deployment's own tokens, and its discovery documents (public).
    let own = issue(&s, "user-1", &[]);
    assert_eq!(get(Some(&own)).0, 200);
    let oidc: Value = s
        .client
        .get(format!("{}/.well-known/openid-configuration", s.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let keys: Value = s
        .client
        .get(oidc["jwks_uri"].as_str().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let kid = jsonwebtoken::decode_header(&own).unwrap().kid.unwrap();
    assert!(keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["kid"] == kid.as_str()));
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(keys["keys"][0].clone()).unwrap();
    let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    val.set_audience(&["https://management.azure.com/"]);
    let verified = jsonwebtoken::decode::<Value>(
        &own,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &val,
    )
    .unwrap();
    assert_eq!(verified.claims["oid"], "user-1");
    assert_eq!(verified.claims["iss"], oidc["issuer"]);

    let code = |t: Option<&str>| {
        let (st, b, h) = get(t);
        assert!(h.contains_key("www-authenticate"));
        (st, b["error"]["code"].as_str().unwrap_or("").to_string())
    };
    let invalid = (401, "InvalidAuthenticationToken".to_string());
    assert_eq!(
        code(Some(&idp.sign(&claims("user-1", -120)))),
        (401, "ExpiredAuthenticationToken".into())
    );
    let own_expired = issue(&s, "user-1", &["--expires-in", "1"]);
    std::thread::sleep(Duration::from_secs(32)); // past the 30 s clock-skew leeway
    assert_eq!(
        code(Some(&own_expired)),
        (401, "ExpiredAuthenticationToken".into())
    );
    // A changed signature, a changed payload, another key with the same kid, an unknown kid.
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    let mut sig = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
    sig[10] ^= 1;
    parts[2] = URL_SAFE_NO_PAD.encode(&sig);
    assert_eq!(code(Some(&parts.join("."))), invalid);
    let mut forged = good.split('.').map(String::from).collect::<Vec<_>>();
    forged[1] = URL_SAFE_NO_PAD.encode(claims("admin-wannabe", 600).to_string());
    assert_eq!(code(Some(&forged.join("."))), invalid);
    assert_eq!(
        code(Some(&Idp::new("idp-key-1").sign(&claims("user-1", 600)))),
        invalid
    );
    assert_eq!(
        code(Some(&Idp::new("nobody-knows").sign(&claims("user-1", 600)))),
        invalid
    );
    // Wrong audience, unknown issuer.
    let mut c = claims("user-1", 600);
    c["aud"] = json!("https://graph.microsoft.com/");
    assert_eq!(code(Some(&idp.sign(&c))), invalid);
    let mut c = claims("user-1", 600);
    c["iss"] = json!("https://evil.example.test/");
    assert_eq!(code(Some(&idp.sign(&c))), invalid);
    // alg none, and HS256 keyed with the public key.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD
            .encode(json!({"alg": "none", "typ": "JWT", "kid": "idp-key-1"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims("user-1", 600).to_string())
    );
    assert_eq!(code(Some(&none)), invalid);
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("idp-key-1".into());
    let hs = jsonwebtoken::encode(
        &h,
        &claims("user-1", 600),
        &jsonwebtoken::EncodingKey::from_secret(idp.key.public_key_pem().as_bytes()),
    )
    .unwrap();
    assert_eq!(code(Some(&hs)), invalid);
    // Not a JWT and not the admin token; no token at all.
    assert_eq!(code(Some("rsv_0000")), invalid);
    assert_eq!(code(None), (401, "AuthenticationFailed".into()));

    // The issuer rotates its key: the new JWKS file is picked up, by kid.
    let idp2 = Idp::new("idp-key-2");
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime
    std::fs::write(&jwks, json!({"keys": [idp.jwk(), idp2.jwk()]}).to_string()).unwrap();
    assert_eq!(get(Some(&idp2.sign(&claims("user-1", 600)))).0, 200);
}

#[test]
fn the_admin_token_is_kept_only_as_a_hash_and_rotates() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let old = s.token.clone();
    assert!(!s.data.join("admin-token").exists());
    let mut stored = Vec::new();
    for f in std::fs::read_dir(&s.data).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            stored.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(
        !stored.windows(old.len()).any(|w| w == old.as_bytes()),
        "the admin token is stored in the clear"
    );
    let list = format!("/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults");
    assert_eq!(
        call(&s, Some(&old), "GET", &list, crate::harness::API, None).0,
        200
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsvault"))
        .args(["token", "rotate-admin", "--data"])
        .arg(&s.data)
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_ne!(new, old);
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&s, Some(&old), "GET", &list, crate::harness::API, None).0 != 401 {
        assert!(Instant::now() < deadline, "the old admin token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        call(&s, Some(&new), "GET", &list, crate::harness::API, None).0,
        200
    );
}

#[test]
fn callers_past_their_budget_get_429_and_slow_clients_are_cut_off() {
    let env = Env::new();
    let s = Server::start(
        &env,
        "[scheduler]\nenabled = false\n[limits]\nreads_per_minute = 5\nwrites_per_minute = 2\nheader_read_timeout_seconds = 2\nidle_timeout_seconds = 3\nmax_connections = 6\n",
    );
    let admin = s.token.clone();
    assert_eq!(
        assign(&s, &admin, &format!("/subscriptions/{SUB}"), OWNER, "busy").0,
        201
    );
    let t = issue(&s, "busy", &[]);
    let list = format!("/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults");
    for left in (0..5).rev() {
        let (st, _, h) = call(&s, Some(&t), "GET", &list, crate::harness::API, None);
        assert_eq!(st, 200);
        assert_eq!(
            h["x-ms-ratelimit-remaining-subscription-reads"],
            left.to_string().as_str()
        );
    }
    let (st, e, h) = call(&s, Some(&t), "GET", &list, crate::harness::API, None);
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (429, Some("TooManyRequests"))
    );
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    // Writes have their own budget; another subscription too; the admin has none.
    let (st, _, h) = call(
        &s,
        Some(&t),
        "PUT",
        &vault_of(SUB, "rg1", "w1"),
        crate::harness::API,
        Some(json!({"location": "westus"})),
    );
    assert_eq!(st, 201);
    assert_eq!(h["x-ms-ratelimit-remaining-subscription-writes"], "1");
    let (st, l, _) = call(
        &s,
        Some(&t),
        "GET",
        &format!("/subscriptions/{SUB2}/providers/Microsoft.RecoveryServices/vaults"),
        crate::harness::API,
        None,
    );
    assert_eq!((st, l["value"].as_array().map(Vec::len)), (200, Some(0)));
    for _ in 0..10 {
        assert_eq!(
            call(&s, Some(&admin), "GET", &list, crate::harness::API, None).0,
            200
        );
    }

    let addr = s.base.trim_start_matches("https://").to_string();
    // A client that never finishes its TLS handshake or never sends anything is closed.
    let closed_within = |mut c: std::net::TcpStream, secs: u64| {
        c.set_read_timeout(Some(Duration::from_secs(secs + 5)))
            .unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        let r = c.read(&mut buf);
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(secs + 2),
            "held open for {took:?}"
        );
        took
    };
    let silent = std::net::TcpStream::connect(&addr).unwrap();
    closed_within(silent, 2);
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01]).unwrap(); // the start of a ClientHello, then nothing
    closed_within(half, 2);

    // After the handshake: headers that never finish are cut off too, and so is a keep-alive
    // connection that stays idle.
    let mut tls = tls_to(&s, &addr);
    tls.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "partial headers held the connection for {:?}",
        t0.elapsed()
    );
    let mut tls = tls_to(&s, &addr);
    write!(
        tls,
        "GET /openapi.json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 12];
    tls.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let t0 = Instant::now();
    let _ = tls.read_to_end(&mut buf); // the rest of the answer, then the close
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_secs(2) && idle < Duration::from_secs(6),
        "idle connection closed after {idle:?}"
    );

    // Over the connection cap, a new connection is closed at once; under it, served.
    let held: Vec<_> = (0..6)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let extra = std::net::TcpStream::connect(&addr).unwrap();
    assert!(closed_within(extra, 0) < Duration::from_secs(1));
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        call(&s, Some(&admin), "GET", &list, crate::harness::API, None).0,
        200
    );
}

#[test]
fn sources_appear_only_in_their_subscriptions() {
    let env = Env::new();
    let config = env.path("rsvault.toml");
    std::fs::write(
        &config,
        format!(
            "restore_roots = [\"{root}\"]\n[scheduler]\nenabled = false\n\
             [[source]]\nkind = \"vm\"\nresource_group = \"rg1\"\nname = \"vm1\"\ndisks = [\"{disk}\"]\nsubscriptions = [\"{SUB2}\"]\n\
             [[source]]\nkind = \"fileshare\"\nresource_group = \"rg1\"\nstorage_account = \"acct1\"\nshare = \"share1\"\npath = \"{share}\"\nsubscriptions = [\"{SUB}\"]\n",
            root = env.path("restore").display(),
            disk = env.path("vms/disk0.img").display(),
            share = env.path("share").display(),
        ),
    )
    .unwrap();
    let s = Server::start_with(&env.path("data"), &config);
    let admin = s.token.clone();
    let api = crate::harness::API;
    let names = |vault: &str| -> Vec<String> {
        let (st, l, _) = call(
            &s,
            Some(&admin),
            "GET",
            &format!("{vault}/backupProtectableItems"),
            api,
            None,
        );
        assert_eq!(st, 200, "{l}");
        l["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                i["properties"]["friendlyName"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let (a, b) = (vault_of(SUB, "rg1", "va"), vault_of(SUB2, "rg1", "vb"));
    for v in [&a, &b] {
        assert_eq!(
            call(
                &s,
                Some(&admin),
                "PUT",
                v,
                api,
                Some(json!({"location": "westus"}))
            )
            .0,
            201
        );
    }
    assert_eq!(names(&a), ["share1"]);
    assert_eq!(names(&b), ["vm1"]);
    let acct = |sub: &str| {
        format!("/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1")
    };
    let vm = |sub: &str| {
        format!("/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1")
    };
    assert_eq!(
        call(&s, Some(&admin), "GET", &acct(SUB), "2023-01-01", None).0,
        200
    );
    assert_eq!(
        call(&s, Some(&admin), "GET", &acct(SUB2), "2023-01-01", None).0,
        404
    );
    assert_eq!(
        call(&s, Some(&admin), "GET", &vm(SUB2), "2023-03-01", None).0,
        200
    );
    assert_eq!(
        call(&s, Some(&admin), "GET", &vm(SUB), "2023-03-01", None).0,
        404
    );
    // The share cannot be protected from the other tenant's vault.
    let (st, e, _) = call(
        &s,
        Some(&admin),
        "PUT",
        &share_item(&b),
        api,
        Some(
            json!({"properties": {"protectedItemType": "AzureFileShareProtectedItem", "sourceResourceId": acct(SUB2), "policyId": format!("{b}/backupPolicies/none")}}),
        ),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("BMSUserErrorDataSourceObjectNotFound")),
        "{e}"
    );
}

/// A JWKS endpoint on 127.0.0.1 that serves whatever `keys` holds and counts its fetches.
fn jwks_server(
    keys: std::sync::Arc<std::sync::Mutex<Value>>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/discovery/keys", l.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = keys.lock().unwrap().to_string();
            let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    (url, hits)
}

#[test]
fn keys_of_an_issuer_come_from_its_jwks_uri_and_rotate_by_kid() {
    let env = Env::new();
    let idp = Idp::new("uri-key-1");
    let keys = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [idp.jwk()]})));
    let (url, hits) = jwks_server(keys.clone());
    let s = Server::start(
        &env,
        &format!("[scheduler]\nenabled = false\n[[auth.issuer]]\nissuer = \"{IDP}\"\naudience = \"https://management.azure.com/\"\njwks_uri = \"{url}\"\n"),
    );
    assert_eq!(
        assign(
            &s,
            &s.token,
            &format!("/subscriptions/{SUB}"),
            READER,
            "user-2"
        )
        .0,
        201
    );
    let list = format!("/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults");
    let get = |t: &str| call(&s, Some(t), "GET", &list, crate::harness::API, None).0;
    let (st, e, _) = call(
        &s,
        Some(&idp.sign(&claims("user-2", 600))),
        "GET",
        &list,
        crate::harness::API,
        None,
    );
    assert_eq!(st, 200, "{e}");
    assert_eq!(get(&idp.sign(&claims("user-2", 600))), 200);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the keys are cached"
    );
    // The issuer rolls over to a new key: a token with its kid makes rsvault fetch again.
    let idp2 = Idp::new("uri-key-2");
    *keys.lock().unwrap() = json!({"keys": [idp2.jwk()]});
    std::thread::sleep(Duration::from_secs(6)); // past the re-fetch floor
    assert_eq!(get(&idp2.sign(&claims("user-2", 600))), 200);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A kid nobody publishes is 401, and does not make rsvault hammer the issuer.
    for _ in 0..5 {
        assert_eq!(get(&Idp::new("made-up").sign(&claims("user-2", 600))), 401);
    }
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) <= 3);
}

fn self_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

fn client_trusting(cert: &std::path::Path) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn a_configured_certificate_is_served_and_reloaded_on_sighup() {
    let env = Env::new();
    let (cert, key) = self_signed(env.dir.path(), "a");
    let s = Server::start(
        &env,
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n[scheduler]\nenabled = false\n",
            cert.display(),
            key.display()
        ),
    );
    assert_eq!(
        s.fingerprint.as_deref(),
        Some(rsvault::tls::fingerprint(&cert).unwrap().as_str())
    );
    assert!(
        !s.data.join("tls/cert.pem").exists(),
        "no certificate is generated when one is configured"
    );
    let url = format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults?api-version=2026-02-01",
        s.base
    );
    let ok_with = |c: &reqwest::blocking::Client| {
        c.get(&url)
            .bearer_auth(&s.token)
            .send()
            .map(|r| r.status().as_u16())
            .ok()
    };
    let old = client_trusting(&cert);
    assert_eq!(ok_with(&old), Some(200));

    // A renewed certificate replaces the files; SIGHUP makes new connections get it.
    let (b_cert, b_key) = self_signed(env.dir.path(), "b");
    let first = env.dir.path().join("first.crt");
    std::fs::copy(&cert, &first).unwrap();
    std::fs::copy(&b_cert, &cert).unwrap();
    std::fs::copy(&b_key, &key).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let new = client_trusting(&b_cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok_with(&new) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        ok_with(&client_trusting(&first)),
        None,
        "the old certificate is still served"
    );
    // A broken pair on SIGHUP keeps the current certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ok_with(&new), Some(200));
}

#[test]
fn the_generated_certificate_is_valid_for_397_days_and_fingerprinted() {
    let env = Env::new();
    let s = Server::start(&env, "[scheduler]\nenabled = false");
    let cert = s.data.join("tls/cert.pem");
    assert_eq!(
        s.fingerprint.as_deref(),
        Some(rsvault::tls::fingerprint(&cert).unwrap().as_str())
    );
    let meta: Value =
        serde_json::from_slice(&std::fs::read(s.data.join("tls/generated.json")).unwrap()).unwrap();
    let not_after =
        chrono::DateTime::parse_from_rfc3339(meta["notAfter"].as_str().unwrap()).unwrap();
    let days = (not_after.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((396..=397).contains(&days), "{days}");
    assert!(meta["names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "127.0.0.1"));
}

/// A TLS client connection to the server, trusting its certificate.
fn tls_to(
    s: &Server,
    addr: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let pem = std::fs::read_to_string(s.data.join("tls/cert.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}
