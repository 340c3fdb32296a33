//! Contract validation: every response body the integration tests receive is checked against the
//! official Azure swagger in `tests/azure-spec/` (copied in, with its provenance) (issue 4, item 1).
//!
//! * Operation lookup: method + path (case-insensitive literals, `{param}` = one segment, the most
//!   specific template wins) in `recoveryservicesbackup/2026-02-01/bms.json` and
//!   `recoveryservices/2026-08-01/openapi.json`; a request with `api-version=2019-05-13` is first
//!   looked up in `recoveryservicesbackup/2019-05-13/bms.json` (the jobs API of the seed and the
//!   rest of that file), then in the newest files for operations the 2019 file does not have.
//! * Response schema: the one declared for the status code, else `default` for 4xx/5xx, else (the
//!   2019 file declares no error schema) the common-types `ErrorResponse` envelope that clients
//!   parse anyway. A 2xx/3xx that the operation does not declare is a violation. A declared schema
//!   with an empty or non-JSON body is a violation.
//! * Swagger 2.0 is translated into JSON Schema (draft 2020-12) for the `jsonschema` crate:
//!   - `$ref`s to local definitions and to the common-types v3 file (vendored subset in
//!     `common-types/`) become pointers into one bundle per swagger file;
//!   - polymorphism: a `$ref` to a type that has a `discriminator` (its own or inherited) and
//!     subtypes becomes a reference to a generated `<Type>.poly` schema which requires the
//!     discriminator, restricts it to the known `x-ms-discriminator-value`s (strictly) and, with
//!     `if`/`then`, applies the subtype's own schema (its `allOf` chain included) for each value;
//!     `allOf` parents (inheritance) keep the plain parent schema;
//!   - nullability as the Azure validator (oav) reads swagger: `x-nullable: true` allows null, an
//!     optional property without `x-nullable: false` may be null, a required one may not;
//!   - `readOnly`, `x-ms-*`, `discriminator`, `description`, `example` are annotations and dropped;
//!   - formats: `date-time` (RFC 3339 with a UTC designator or an offset) and `duration` (ISO 8601,
//!     fractional seconds allowed, e.g. `PT9.8782791S`) are checked by our own functions; `uuid`
//!     by the crate; the numeric width formats (`int32`, `double`, ...) are annotations;
//!   - enums: a closed enum (`modelAsString: false`, or no `x-ms-enum`) is strict; an extensible one
//!     (`modelAsString: true`) is strict for properties named `status`, `operation`, `jobType`
//!     and for discriminators, and only *reported* (printed and counted, not failed) elsewhere.
//!     `Job.status` / `Job.operation` are plain strings in the swagger; the spec's `JobStatus` /
//!     `JobOperationType` enums are applied to them (README §5: "use the enum spellings above").
//! * A response to a path that is in no swagger (rsvault extensions, unknown resource types) is
//!   counted as skipped; if it is an error its body must still be the ARM error envelope.
//!
//! Every checked response is appended to `$CARGO_TARGET_TMPDIR/contract-report.tsv`
//! (operation, method, status, outcome, reported enum values, api-version, path) so a run can be
//! summarised.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

const STRICT_ENUM_PROPERTIES: &[&str] = &["status", "operation", "jobType"];
/// `JobStatus` of the 2026-02-01 file (also the values the 2019-05-13 text documents).
const JOB_STATUS: &[&str] = &[
    "Invalid",
    "InProgress",
    "Completed",
    "Failed",
    "CompletedWithWarnings",
    "Cancelled",
    "Cancelling",
];
/// `JobOperationType` of the 2026-02-01 file.
const JOB_OPERATION: &[&str] = &[
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
    // Deliberate difference: rsvault's vault maintenance jobs (jobType VaultJob) carry their own
    // operation names, as issue #5 asks ("visible in the job list with their own operation
    // names"). `Job.operation` is a plain string in the swagger and the SDKs read it as one.
    "GarbageCollection",
    "Verify",
    "RestoreDrill",
];
const COMMON_REF: &str = "common-types/resource-management/v3/types.json";
const SOFT_ENUM: &str = "x-soft-enum";

pub fn spec_dir() -> PathBuf {
    match std::env::var_os("RSVAULT_AZURE_SPEC") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/azure-spec"),
    }
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("contract: cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Debug)]
enum Seg {
    Lit(String),
    Param,
}

struct Op {
    method: String,
    segs: Vec<Seg>,
    id: String,
    responses: Map<String, Value>,
}

pub struct Spec {
    pub name: &'static str,
    ops: Vec<Op>,
    /// Translated definitions: the file's own under their names, common types under `ct.<name>`.
    bundle: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// Translates one swagger file (plus the common types) into a JSON-schema bundle.
struct Translator<'a> {
    own: &'a Map<String, Value>,
    common: &'a Map<String, Value>,
}

#[derive(Clone, Copy, PartialEq)]
enum File {
    Own,
    Common,
}

impl Translator<'_> {
    fn defs(&self, f: File) -> &Map<String, Value> {
        match f {
            File::Own => self.own,
            File::Common => self.common,
        }
    }

    fn key(f: File, name: &str) -> String {
        match f {
            File::Own => name.to_string(),
            File::Common => format!("ct.{name}"),
        }
    }

    /// (file, definition name) a `$ref` written in file `f` points to.
    fn target(f: File, r: &str) -> (File, String) {
        let (file, ptr) = r.split_once('#').unwrap_or(("", r));
        let name = ptr
            .strip_prefix("/definitions/")
            .unwrap_or_else(|| panic!("contract: unsupported $ref {r}"))
            .to_string();
        if file.is_empty() {
            (f, name)
        } else if file.ends_with(COMMON_REF) {
            (File::Common, name)
        } else {
            panic!("contract: $ref to an unknown file: {r}")
        }
    }

    fn resolve(&self, f: File, n: &Value) -> Option<(File, Value)> {
        let r = n.get("$ref")?.as_str()?;
        let (tf, name) = Self::target(f, r);
        let v = self.defs(tf).get(&name).cloned();
        Some((
            tf,
            v.unwrap_or_else(|| panic!("contract: dangling $ref {r}")),
        ))
    }

    /// Direct subtypes of every definition (by `allOf` inheritance) of the own file.
    fn children(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (name, d) in self.own {
            for p in d["allOf"].as_array().into_iter().flatten() {
                if let Some(r) = p["$ref"].as_str() {
                    let (tf, parent) = Self::target(File::Own, r);
                    if tf == File::Own {
                        out.entry(parent).or_default().push(name.clone());
                    }
                }
            }
        }
        out
    }

    fn parents(&self, name: &str) -> Vec<String> {
        self.own[name]["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["$ref"].as_str())
            .map(|r| Self::target(File::Own, r))
            .filter(|(f, _)| *f == File::Own)
            .map(|(_, n)| n)
            .collect()
    }

    fn discriminator(&self, name: &str) -> Option<String> {
        if let Some(d) = self.own[name]["discriminator"].as_str() {
            return Some(d.to_string());
        }
        self.parents(name)
            .iter()
            .find_map(|p| self.discriminator(p))
    }

    fn disc_value(&self, name: &str) -> String {
        self.own[name]["x-ms-discriminator-value"]
            .as_str()
            .unwrap_or(name)
            .to_string()
    }

    fn enum_values(&self, f: File, n: &Value) -> Option<Value> {
        if let Some(e) = n.get("enum") {
            return Some(e.clone());
        }
        let (tf, t) = self.resolve(f, n)?;
        self.enum_values(tf, &t)
    }

    fn nullable_flag(&self, f: File, n: &Value) -> Option<bool> {
        if let Some(b) = n.get("x-nullable").and_then(Value::as_bool) {
            return Some(b);
        }
        let (_, t) = self.resolve(f, n)?;
        t.get("x-nullable").and_then(Value::as_bool)
    }

    fn bundle(&self) -> Value {
        let mut out = Map::new();
        let children = self.children();
        for (f, defs) in [(File::Own, self.own), (File::Common, self.common)] {
            for (name, d) in defs {
                let mut t = self.tr(f, d, true, Some(name));
                if f == File::Own && name == "Job" {
                    let props = t["properties"].as_object_mut().unwrap();
                    props.insert(
                        "status".into(),
                        nullable(json!({"type": "string", "enum": JOB_STATUS})),
                    );
                    props.insert(
                        "operation".into(),
                        nullable(json!({"type": "string", "enum": JOB_OPERATION})),
                    );
                }
                out.insert(Self::key(f, name), t);
            }
        }
        // Polymorphic dispatch schemas.
        for name in self.own.keys() {
            let Some(prop) = self.discriminator(name) else {
                continue;
            };
            if !children.contains_key(name) {
                continue;
            }
            let mut descendants = Vec::new();
            let mut stack = children[name].clone();
            while let Some(c) = stack.pop() {
                if descendants.contains(&c) {
                    continue;
                }
                stack.extend(children.get(&c).cloned().unwrap_or_default());
                descendants.push(c);
            }
            descendants.sort();
            let mut values = BTreeSet::new();
            if !self.own[name]["discriminator"].is_string()
                || self.own[name]["x-ms-discriminator-value"].is_string()
            {
                values.insert(self.disc_value(name));
            }
            let mut branches = Vec::new();
            for d in &descendants {
                let v = self.disc_value(d);
                values.insert(v.clone());
                branches.push(json!({
                    "if": {"required": [prop], "properties": {prop.clone(): {"const": v}}},
                    "then": {"$ref": format!("#/definitions/{d}")}
                }));
            }
            out.insert(
                format!("{name}.poly"),
                json!({
                    "$ref": format!("#/definitions/{name}"),
                    "required": [prop],
                    "properties": {prop.clone(): {"type": "string", "enum": values}},
                    "allOf": branches,
                }),
            );
        }
        Value::Object(out)
    }

    fn is_poly(&self, f: File, name: &str) -> bool {
        f == File::Own
            && self.discriminator(name).is_some()
            && self.own.values().any(|d| {
                d["allOf"].as_array().into_iter().flatten().any(|p| {
                    p["$ref"].as_str().map(|r| Self::target(File::Own, r))
                        == Some((File::Own, name.to_string()))
                })
            })
    }

    /// Translates a swagger schema node written in file `f`. `inherit`: the node is an `allOf`
    /// parent (plain schema, no polymorphic dispatch).
    fn tr(&self, f: File, n: &Value, inherit: bool, _def: Option<&str>) -> Value {
        let Some(obj) = n.as_object() else {
            return n.clone();
        };
        let mut out = Map::new();
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            let (tf, name) = Self::target(f, r);
            let key = Self::key(tf, &name);
            let key = if !inherit && self.is_poly(tf, &name) {
                format!("{key}.poly")
            } else {
                key
            };
            out.insert("$ref".into(), json!(format!("#/definitions/{key}")));
        }
        if let Some(t) = obj.get("type") {
            if t != "file" {
                out.insert("type".into(), t.clone());
            }
        }
        for k in [
            "format",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "uniqueItems",
            "pattern",
        ] {
            if let Some(v) = obj.get(k) {
                out.insert(k.into(), v.clone());
            }
        }
        if let Some(e) = obj.get("enum") {
            let soft = obj
                .get("x-ms-enum")
                .and_then(|x| x.get("modelAsString"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            out.insert(if soft { SOFT_ENUM } else { "enum" }.into(), e.clone());
        }
        let required: Vec<&str> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if obj.contains_key("required") {
            out.insert("required".into(), json!(required));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            let mut tp = Map::new();
            for (k, v) in props {
                let mut t = self.tr(f, v, false, None);
                if STRICT_ENUM_PROPERTIES.contains(&k.as_str()) {
                    if let Some(vals) = self.enum_values(f, v) {
                        t.as_object_mut().unwrap().insert("enum".into(), vals);
                    }
                }
                let may_be_null = match self.nullable_flag(f, v) {
                    Some(b) => b,
                    None => !required.contains(&k.as_str()),
                };
                tp.insert(k.clone(), if may_be_null { nullable(t) } else { t });
            }
            out.insert("properties".into(), Value::Object(tp));
        }
        if let Some(items) = obj.get("items") {
            let t = self.tr(f, items, false, None);
            let t = if self.nullable_flag(f, items) == Some(true) {
                nullable(t)
            } else {
                t
            };
            out.insert("items".into(), t);
        }
        match obj.get("additionalProperties") {
            Some(Value::Bool(b)) => {
                out.insert("additionalProperties".into(), json!(b));
            }
            Some(ap @ Value::Object(_)) => {
                let t = self.tr(f, ap, false, None);
                let t = if self.nullable_flag(f, ap) == Some(true) {
                    nullable(t)
                } else {
                    t
                };
                out.insert("additionalProperties".into(), t);
            }
            _ => {}
        }
        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            let parts: Vec<Value> = all.iter().map(|p| self.tr(f, p, true, None)).collect();
            out.insert("allOf".into(), Value::Array(parts));
        }
        Value::Object(out)
    }
}

fn nullable(t: Value) -> Value {
    json!({"if": {"type": "null"}, "else": t})
}

fn parse_path(path: &str) -> Vec<Seg> {
    path.trim_matches('/')
        .split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                Seg::Param
            } else {
                Seg::Lit(s.to_ascii_lowercase())
            }
        })
        .collect()
}

impl Spec {
    fn load(name: &'static str, rel: &str, common: &Map<String, Value>) -> Spec {
        let doc = read_json(spec_dir().join(rel));
        let own = doc["definitions"].as_object().cloned().unwrap_or_default();
        let tr = Translator { own: &own, common };
        let bundle = tr.bundle();
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let mut responses = op["responses"].as_object().cloned().unwrap_or_default();
                // Response schemas are translated like any other node of the file.
                for r in responses.values_mut() {
                    if let Some(s) = r.get("schema").cloned() {
                        r["schema"] = tr.tr(File::Own, &s, false, None);
                    }
                }
                ops.push(Op {
                    method: method.to_ascii_uppercase(),
                    segs: parse_path(path),
                    id: op["operationId"].as_str().unwrap_or("?").to_string(),
                    responses,
                });
            }
        }
        Spec {
            name,
            ops,
            bundle,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// The operation for `method` + `segs`, the most specific template first; `Err(true)` when the
    /// path is known but not for this method.
    fn find(&self, method: &str, segs: &[String]) -> Result<&Op, bool> {
        let mut best: Option<(&Op, usize)> = None;
        let mut path_known = false;
        for op in &self.ops {
            if op.segs.len() != segs.len() {
                continue;
            }
            let mut lits = 0;
            let ok = op.segs.iter().zip(segs).all(|(t, s)| match t {
                Seg::Param => !s.is_empty(),
                Seg::Lit(l) => {
                    lits += 1;
                    l == s
                }
            });
            if !ok {
                continue;
            }
            path_known = true;
            if op.method == method && best.is_none_or(|(_, b)| lits > b) {
                best = Some((op, lits));
            }
        }
        best.map(|(o, _)| o).ok_or(path_known)
    }

    /// A validator for `schema` (already translated), with the bundle attached.
    fn validator(&self, key: &str, schema: &Value) -> Arc<jsonschema::Validator> {
        let mut cache = self.validators.lock().unwrap();
        if let Some(v) = cache.get(key) {
            return v.clone();
        }
        let mut root = schema.as_object().cloned().unwrap_or_default();
        root.insert("definitions".into(), self.bundle.clone());
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .with_format("date-time", is_date_time)
            .with_format("duration", is_duration)
            .with_keyword(SOFT_ENUM, |_, value, _| {
                Ok(Box::new(SoftEnum(
                    value.as_array().cloned().unwrap_or_default(),
                )))
            })
            .build(&Value::Object(root))
            .unwrap_or_else(|e| {
                panic!(
                    "contract: schema {key} of {} does not compile: {e}",
                    self.name
                )
            });
        let v = Arc::new(v);
        cache.insert(key.to_string(), v.clone());
        v
    }
}

struct SoftEnum(Vec<Value>);

impl<'i> jsonschema::Keyword<'i> for SoftEnum {
    fn validate(&self, instance: &'i Value) -> Result<(), jsonschema::ValidationError<'i>> {
        if self.is_valid(instance) {
            Ok(())
        } else {
            Err(jsonschema::ValidationError::custom(format!(
                "{instance} is not one of the spec's extensible enum values {}",
                Value::Array(self.0.clone())
            )))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        !instance.is_string() || self.0.contains(instance)
    }
}

/// RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, a real calendar date.
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !(b[10] == b'T' || b[10] == b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    let zone_ok = match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    };
    zone_ok && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// ISO 8601 duration: `P[nY][nM][nW][nD][T[nH][nM][n[.n]S]]`, at least one component, a
/// fraction only on the last one.
pub fn is_duration(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('P') else {
        return false;
    };
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    fn parts(s: &str, units: &[u8]) -> Option<usize> {
        let b = s.as_bytes();
        let (mut i, mut n, mut next_unit, mut had_fraction) = (0, 0, 0, false);
        while i < b.len() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b',') {
                i += 1;
            }
            let num = &s[start..i];
            if num.is_empty() || i == b.len() || had_fraction {
                return None;
            }
            let (int, frac) = match num.split_once(['.', ',']) {
                Some((a, f)) => (a, Some(f)),
                None => (num, None),
            };
            if int.is_empty()
                || frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()))
            {
                return None;
            }
            had_fraction = frac.is_some();
            let pos = units[next_unit..].iter().position(|u| *u == b[i])?;
            next_unit += pos + 1;
            n += 1;
            i += 1;
        }
        Some(n)
    }
    let Some(nd) = parts(date, b"YMWD") else {
        return false;
    };
    match time {
        None => nd > 0,
        Some(t) => parts(t, b"HMS").is_some_and(|nt| nt > 0),
    }
}

struct Specs {
    bms: Spec,
    vault: Spec,
    bms2019: Spec,
    /// The ARM error envelope (common-types `ErrorResponse`), for errors without a declared schema.
    errors: Spec,
    report: Mutex<std::fs::File>,
}

fn specs() -> &'static Specs {
    static SPECS: OnceLock<Specs> = OnceLock::new();
    SPECS.get_or_init(|| {
        let common_doc = read_json(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/azure-spec/common-types/resource-management/v3/types.json"),
        );
        let common = common_doc["definitions"].as_object().cloned().unwrap();
        let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("contract-report.tsv");
        Specs {
            bms: Spec::load(
                "bms 2026-02-01",
                "recoveryservicesbackup/2026-02-01/bms.json",
                &common,
            ),
            vault: Spec::load(
                "vaults 2026-08-01",
                "recoveryservices/2026-08-01/openapi.json",
                &common,
            ),
            bms2019: Spec::load(
                "bms 2019-05-13",
                "recoveryservicesbackup/2019-05-13/bms.json",
                &common,
            ),
            errors: Spec {
                name: "common-types v3",
                ops: Vec::new(),
                bundle: Translator {
                    own: &Map::new(),
                    common: &common,
                }
                .bundle(),
                validators: Mutex::new(HashMap::new()),
            },
            report: Mutex::new(std::fs::File::create(report).unwrap()),
        }
    })
}

/// The outcome of checking one response.
#[derive(Debug)]
pub struct Checked {
    /// `spec operationId`, or `-` when the request is in no swagger.
    pub operation: String,
    /// `valid`, `no-schema`, `skipped` (not in the spec), `error-envelope` (error of a path not in
    /// the spec, checked against the ARM envelope) or `violation`.
    pub outcome: &'static str,
    pub violations: Vec<String>,
    /// Extensible-enum values outside the spec's list (reported, not failed).
    pub reports: Vec<String>,
}

fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|r| &r[r.find('/').unwrap_or(r.len())..])
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let api = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("api-version="))
        .unwrap_or("")
        .to_string();
    (path.to_string(), api)
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .to_ascii_lowercase()
}

/// Checks one response against the contract.
pub fn check(method: &str, url: &str, status: u16, body: &[u8]) -> Checked {
    let sp = specs();
    let (path, api) = split_url(url);
    let segs: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    let order: Vec<&Spec> = if api == "2019-05-13" {
        vec![&sp.bms2019, &sp.bms, &sp.vault]
    } else {
        vec![&sp.bms, &sp.vault]
    };
    let found = order
        .iter()
        .find_map(|s| s.find(method, &segs).ok().map(|o| (*s, o)));
    let mut res = Checked {
        operation: "-".into(),
        outcome: "valid",
        violations: Vec::new(),
        reports: Vec::new(),
    };
    let (spec, schema, key) = match found {
        Some((spec, op)) => {
            res.operation = format!("{} {}", spec.name, op.id);
            let code = status.to_string();
            match op.responses.get(&code) {
                Some(r) => match r.get("schema") {
                    Some(s) => (spec, s.clone(), format!("{} {code}", op.id)),
                    None => {
                        res.outcome = "no-schema";
                        return res;
                    }
                },
                None if status >= 400 => {
                    match op.responses.get("default").and_then(|r| r.get("schema")) {
                        Some(s) => (spec, s.clone(), format!("{} default", op.id)),
                        None => (
                            &sp.errors,
                            json!({"$ref": "#/definitions/ct.ErrorResponse"}),
                            "ErrorResponse".into(),
                        ),
                    }
                }
                None => {
                    let mut declared: Vec<&String> = op.responses.keys().collect();
                    declared.sort();
                    res.outcome = "violation";
                    res.violations.push(format!(
                        "status {status} is not declared (declared: {declared:?})"
                    ));
                    return res;
                }
            }
        }
        None if status >= 400 => {
            res.outcome = "error-envelope";
            (
                &sp.errors,
                json!({"$ref": "#/definitions/ct.ErrorResponse"}),
                "ErrorResponse".into(),
            )
        }
        None => {
            res.outcome = "skipped";
            return res;
        }
    };
    let instance: Value = if body.iter().all(u8::is_ascii_whitespace) {
        res.outcome = "violation";
        res.violations
            .push(format!("empty body, schema {key} declared"));
        return res;
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                res.outcome = "violation";
                res.violations
                    .push(format!("body is not JSON ({e}), schema {key} declared"));
                return res;
            }
        }
    };
    let validator = spec.validator(&key, &schema);
    for e in validator.iter_errors(&instance) {
        let soft = e.schema_path().as_str().contains(SOFT_ENUM);
        let mut msg = e.to_string();
        if msg.len() > 400 {
            let mut cut = 400;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push('…');
        }
        let pointer = e.instance_path().as_str();
        let line = format!(
            "at `{pointer}`: {msg}  [schema {}{}]",
            key,
            e.schema_path().as_str()
        );
        // A base type's property is reached through the dispatch and through the subtype's
        // `allOf` parent: report each finding once.
        let list = if soft {
            &mut res.reports
        } else {
            &mut res.violations
        };
        if !list.contains(&line) {
            list.push(line);
        }
    }
    if !res.violations.is_empty() {
        res.outcome = "violation";
    }
    res
}

/// Checks a response and panics (failing the calling test) on a violation; extensible-enum
/// values outside the spec's lists are printed.
pub fn enforce(method: &str, url: &str, status: u16, body: &[u8]) {
    let c = check(method, url, status, body);
    let (path, api) = split_url(url);
    {
        let mut f = specs().report.lock().unwrap();
        let _ = writeln!(
            f,
            "{}\t{method}\t{status}\t{}\t{}\t{api}\t{path}",
            c.operation,
            c.outcome,
            c.reports.len()
        );
    }
    for r in &c.reports {
        eprintln!(
            "contract report: {method} {path} -> {status} ({}): {r}",
            c.operation
        );
    }
    if !c.violations.is_empty() {
        panic!(
            "contract violation: {method} {path} (api-version {api}) -> {status} ({}):\n  {}\nbody: {}",
            c.operation,
            c.violations.join("\n  "),
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        );
    }
}

#[test]
fn contract_formats_and_polymorphism() {
    assert!(is_date_time("2017-08-03T05:31:07.014604Z"));
    assert!(is_date_time("2026-01-01T00:00:00+01:00"));
    assert!(!is_date_time("2026-01-01 00:00:00Z"));
    assert!(!is_date_time("2026-01-01T00:00:00"));
    assert!(!is_date_time("2026-02-30T00:00:00Z"));
    assert!(is_duration("PT9.8782791S"));
    assert!(is_duration("P1DT2H"));
    assert!(is_duration("PT0S"));
    assert!(!is_duration("PT"));
    assert!(!is_duration("P"));
    assert!(!is_duration("00:00:09.87"));
    assert!(!is_duration("PT1.5M3S"));

    let v =
        "https://h/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v";
    let job = |props: Value| {
        serde_json::to_vec(&json!({"id": "x", "name": "j", "type": "Microsoft.RecoveryServices/vaults/backupJobs", "properties": props})).unwrap()
    };
    let url = format!("{v}/backupJobs/j?api-version=2026-02-01");
    let ok = check(
        "GET",
        &url,
        200,
        &job(
            json!({"jobType": "AzureIaaSVMJob", "status": "Completed", "operation": "Backup", "duration": "PT1S", "startTime": "2026-01-01T00:00:00Z"}),
        ),
    );
    assert_eq!(ok.outcome, "valid", "{ok:?}");
    // The subtype's own properties are checked through the discriminator.
    let bad = check(
        "GET",
        &url,
        200,
        &job(json!({"jobType": "AzureIaaSVMJob", "status": "Completed", "duration": "1 second"})),
    );
    assert!(
        bad.violations
            .iter()
            .any(|v| v.contains("/properties/duration")),
        "{bad:?}"
    );
    let bad = check(
        "GET",
        &url,
        200,
        &job(json!({"jobType": "AzureStorageJob", "actionsInfo": ["Cancel"]})),
    );
    assert!(
        bad.violations
            .iter()
            .any(|v| v.contains("/properties/actionsInfo/0")),
        "{bad:?}"
    );
    let bad = check(
        "GET",
        &url,
        200,
        &job(json!({"jobType": "Job2", "status": "Done"})),
    );
    assert_eq!(bad.violations.len(), 2, "{bad:?}");
    let bad = check("GET", &url, 200, &job(json!({"status": "Completed"})));
    assert!(
        bad.violations.iter().any(|v| v.contains("jobType")),
        "{bad:?}"
    );
    // 2019-05-13 jobs use the 2019 file; errors there fall back to the ARM envelope.
    let url19 = format!("{v}/backupJobs/j?api-version=2019-05-13");
    assert!(check(
        "GET",
        &url19,
        200,
        &job(json!({"jobType": "AzureIaaSVMJob"}))
    )
    .operation
    .contains("2019-05-13"));
    let e = check(
        "GET",
        &url19,
        404,
        br#"{"error":{"code":"X","message":"m","target":null,"details":null}}"#,
    );
    assert_eq!(e.outcome, "valid", "{e:?}");
    let e = check("GET", &url19, 404, br#"{"error":{"code":5}}"#);
    assert_eq!(e.outcome, "violation", "{e:?}");
    // Undeclared success codes are violations; unknown paths are skipped.
    assert_eq!(
        check(
            "POST",
            &format!("{v}/backupJobs/j/cancel?api-version=2026-02-01"),
            200,
            b""
        )
        .outcome,
        "violation"
    );
    assert_eq!(
        check(
            "GET",
            &format!("{v}/backupWidgets?api-version=2026-02-01"),
            200,
            b"{}"
        )
        .outcome,
        "skipped"
    );
    // Operation status: strict status enum.
    let op = format!("{v}/backupOperations/o?api-version=2026-02-01");
    assert_eq!(check("GET", &op, 200, br#"{"id":"o","name":"o","status":"Succeeded","properties":{"objectType":"OperationStatusJobExtendedInfo","jobId":"j"}}"#).outcome, "valid");
    assert_eq!(
        check(
            "GET",
            &op,
            200,
            br#"{"id":"o","name":"o","status":"Completed"}"#
        )
        .outcome,
        "violation"
    );
    // Extensible enums elsewhere are reported, not failed.
    let item = format!(
        "{v}/backupFabrics/Azure/protectionContainers/c/protectedItems/i?api-version=2026-02-01"
    );
    let body = |state: &str| {
        serde_json::to_vec(&json!({"id": "x", "name": "i", "properties": {"protectedItemType": "AzureFileShareProtectedItem", "protectionState": state, "friendlyName": "s"}})).unwrap()
    };
    let c = check("GET", &item, 200, &body("Sleeping"));
    assert_eq!(c.outcome, "valid", "{c:?}");
    assert!(
        c.reports
            .iter()
            .any(|r| r.contains("/properties/protectionState")),
        "{c:?}"
    );
    assert!(check("GET", &item, 200, &body("Protected"))
        .reports
        .is_empty());
}
