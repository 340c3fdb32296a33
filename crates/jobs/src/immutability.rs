//! Immutable vaults, as Azure's: while a vault's `securitySettings.immutabilitySettings.state` is
//! `Unlocked` or `Locked`, nothing may shorten how long its recovery points are kept (deleting an
//! item's backup data before its points expire, reducing a policy's retention, moving an item to
//! a policy that keeps less); `Locked` cannot be turned back. Security settings rsvault cannot
//! honour are refused rather than stored and echoed as if they were on.

use chrono::{DateTime, Utc};
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};
use rsvault_types::model::{RecoveryPoint, Vault};
use serde_json::Value;

const STATES: &[&str] = &["Disabled", "Unlocked", "Locked"];

/// The vault's immutability state: `Disabled`, `Unlocked` or `Locked`.
pub fn state(props: &Value) -> &str {
    props
        .pointer("/securitySettings/immutabilitySettings/state")
        .and_then(Value::as_str)
        .unwrap_or("Disabled")
}

/// Whether the vault's retention may not be shortened.
pub fn is_on(vault: &Vault) -> bool {
    state(&vault.properties) != "Disabled"
}

/// Checks the security settings of a vault's new properties against its current ones, and
/// spells the states as Azure does. Settings a request leaves out keep their current values.
/// Refuses unknown states and leaving `Locked`; soft delete is checked by
/// [`crate::soft_delete::check_settings`].
pub fn check_settings(existing: Option<&Vault>, props: &mut Value, patch: bool) -> ArmResult<()> {
    match props.get("securitySettings") {
        None | Some(Value::Null | Value::Object(_)) => {}
        Some(other) => {
            return Err(ArmError::invalid(format!(
                "securitySettings must be an object, not {other}."
            ))
            .with_target("properties.securitySettings"))
        }
    }
    let target = "properties.securitySettings.immutabilitySettings.state";
    let before = existing.map_or("Disabled", |v| state(&v.properties));
    match props.pointer_mut("/securitySettings/immutabilitySettings/state") {
        Some(s) if !s.is_null() => {
            let asked = s.as_str().unwrap_or_default().to_string();
            let canonical = STATES
                .iter()
                .find(|k| k.eq_ignore_ascii_case(&asked))
                .ok_or_else(|| {
                    ArmError::invalid(format!(
                        "Immutability state '{asked}' is invalid; allowed: {}.",
                        STATES.join(", ")
                    ))
                    .with_target(target)
                })?;
            *s = Value::String(canonical.to_string());
        }
        _ if before != "Disabled" => {
            if !props.get("securitySettings").is_some_and(Value::is_object) {
                props["securitySettings"] = serde_json::json!({});
            }
            let s = &mut props["securitySettings"];
            if !s.get("immutabilitySettings").is_some_and(Value::is_object) {
                s["immutabilitySettings"] = serde_json::json!({});
            }
            s["immutabilitySettings"]["state"] = Value::String(before.to_string());
        }
        _ => {}
    }
    if before == "Locked" && state(props) != "Locked" {
        return Err(ArmError::new(
            ArmCode::ImmutabilityLocked,
            "The vault's immutability is Locked and cannot be changed: a locked vault stays immutable.",
        )
        .with_target(target));
    }
    crate::soft_delete::check_settings(existing, props, patch)
}

/// How long each retention rule of a `retentionPolicy` keeps points, in days (months as 31,
/// years as 366, so no rule is ever under-counted): `simple`, `daily`, `weekly`, `monthly`,
/// `yearly`.
pub fn retention_days(retention: &Value) -> Vec<(&'static str, i64)> {
    let days = |d: &Value| -> Option<i64> {
        let count = d.get("count")?.as_i64()?;
        let per = match d.get("durationType")?.as_str()? {
            "Days" => 1,
            "Weeks" => 7,
            "Months" => 31,
            "Years" => 366,
            _ => return None,
        };
        Some(count * per)
    };
    let mut out = Vec::new();
    if let Some(d) = retention.get("retentionDuration").and_then(days) {
        out.push(("simple", d));
    }
    for (rule, key) in [
        ("daily", "dailySchedule"),
        ("weekly", "weeklySchedule"),
        ("monthly", "monthlySchedule"),
        ("yearly", "yearlySchedule"),
    ] {
        if let Some(d) = retention
            .get(key)
            .and_then(|s| s.get("retentionDuration"))
            .and_then(days)
        {
            out.push((rule, d));
        }
    }
    out
}

/// Refuses, on an immutable vault, a retention that keeps any rule's points for less time than
/// `before` did (or drops a rule). `what` names the change for the message.
pub fn check_not_shortened(
    vault: &Vault,
    before: &Value,
    after: &Value,
    what: &str,
) -> ArmResult<()> {
    if !is_on(vault) {
        return Ok(());
    }
    let after = retention_days(after);
    for (rule, old) in retention_days(before) {
        let new = after.iter().find(|(r, _)| *r == rule).map(|(_, d)| *d);
        if new.is_none_or(|n| n < old) {
            return Err(ArmError::new(
                ArmCode::ImmutableVault,
                format!(
                    "{what} would keep {rule} recovery points for {} instead of {old} days; the vault is immutable ({}), so retention can only grow.",
                    new.map_or("no time".to_string(), |n| format!("{n} days")),
                    state(&vault.properties)
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses, on an immutable vault, deleting backup data that has recovery points not yet
/// expired (a point without an expiry is kept until its policy's retention ends it).
pub fn check_delete_data(
    vault: &Vault,
    points: &[RecoveryPoint],
    now: DateTime<Utc>,
) -> ArmResult<()> {
    if !is_on(vault) {
        return Ok(());
    }
    let live = points
        .iter()
        .filter(|p| p.expiry.is_none_or(|e| e > now))
        .count();
    if live > 0 {
        return Err(ArmError::new(
            ArmCode::ImmutableVault,
            format!(
                "The item has {live} recovery point(s) that have not expired; the vault is immutable ({}), so its backup data cannot be deleted before they expire.",
                state(&vault.properties)
            ),
        ));
    }
    Ok(())
}
