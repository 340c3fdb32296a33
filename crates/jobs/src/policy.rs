//! Backup policy validation: schedule and retention, as Azure defines them for VM and file-share
//! policies. Everything the scheduler and retention will need is stored as sent.

use serde_json::{json, Value};

use rsvault_types::arm::{ArmError, ArmResult};

fn bad(target: &str, msg: impl Into<String>) -> ArmError {
    ArmError::invalid(msg).with_target(format!("properties.{target}"))
}

fn time_list(v: &Value, target: &str) -> ArmResult<()> {
    let arr = v
        .as_array()
        .ok_or_else(|| bad(target, format!("{target} must be an array of date-times.")))?;
    for t in arr {
        let s = t.as_str().unwrap_or("");
        if chrono::DateTime::parse_from_rfc3339(s).is_err()
            && chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_err()
        {
            return Err(bad(
                target,
                format!("{target} entry {t} is not a date-time such as '2026-01-24T02:00:00Z'."),
            ));
        }
    }
    Ok(())
}

fn one_of(v: Option<&Value>, target: &str, allowed: &[&str]) -> ArmResult<String> {
    let s = v.and_then(Value::as_str).unwrap_or("");
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(s))
        .map(|a| a.to_string())
        .ok_or_else(|| {
            bad(
                target,
                format!(
                    "{target} '{s}' is invalid; allowed: {}.",
                    allowed.join(", ")
                ),
            )
        })
}

fn duration(v: Option<&Value>, target: &str) -> ArmResult<()> {
    let v = v.ok_or_else(|| bad(target, format!("{target} is required.")))?;
    let count = v.get("count").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=9999).contains(&count) {
        return Err(bad(
            target,
            format!("{target}.count must be between 1 and 9999."),
        ));
    }
    one_of(
        v.get("durationType"),
        &format!("{target}.durationType"),
        &["Days", "Weeks", "Months", "Years"],
    )?;
    Ok(())
}

/// Validates policy `properties` and returns them normalised (discriminators spelled as Azure does).
pub fn validate(props: Option<&Value>) -> ArmResult<Value> {
    let p = props.filter(|p| p.is_object()).ok_or_else(|| {
        ArmError::invalid("'properties' (an object) is required.").with_target("properties")
    })?;
    let mut out = p.clone();
    let bmt = one_of(
        p.get("backupManagementType"),
        "backupManagementType",
        &["AzureIaasVM", "AzureStorage"],
    )?;
    out["backupManagementType"] = json!(bmt);
    if bmt == "AzureStorage" {
        out["workLoadType"] = json!("AzureFileShare");
    }
    let sched = p
        .get("schedulePolicy")
        .ok_or_else(|| bad("schedulePolicy", "schedulePolicy is required."))?;
    let st = one_of(
        sched.get("schedulePolicyType"),
        "schedulePolicy.schedulePolicyType",
        &["SimpleSchedulePolicy", "SimpleSchedulePolicyV2"],
    )?;
    out["schedulePolicy"]["schedulePolicyType"] = json!(st);
    let freq = one_of(
        sched.get("scheduleRunFrequency"),
        "schedulePolicy.scheduleRunFrequency",
        &["Daily", "Weekly", "Hourly"],
    )?;
    out["schedulePolicy"]["scheduleRunFrequency"] = json!(freq);
    if st == "SimpleSchedulePolicy" {
        if freq != "Hourly" {
            time_list(
                sched.get("scheduleRunTimes").unwrap_or(&Value::Null),
                "schedulePolicy.scheduleRunTimes",
            )?;
        }
        if freq == "Weekly" {
            let days = sched
                .get("scheduleRunDays")
                .and_then(Value::as_array)
                .filter(|d| !d.is_empty());
            let days = days.ok_or_else(|| {
                bad(
                    "schedulePolicy.scheduleRunDays",
                    "A weekly schedule needs scheduleRunDays.",
                )
            })?;
            for d in days {
                one_of(
                    Some(d),
                    "schedulePolicy.scheduleRunDays",
                    &[
                        "Sunday",
                        "Monday",
                        "Tuesday",
                        "Wednesday",
                        "Thursday",
                        "Friday",
                        "Saturday",
                    ],
                )?;
            }
        }
    }
    let ret = p
        .get("retentionPolicy")
        .ok_or_else(|| bad("retentionPolicy", "retentionPolicy is required."))?;
    let rt = one_of(
        ret.get("retentionPolicyType"),
        "retentionPolicy.retentionPolicyType",
        &["LongTermRetentionPolicy", "SimpleRetentionPolicy"],
    )?;
    out["retentionPolicy"]["retentionPolicyType"] = json!(rt);
    if rt == "SimpleRetentionPolicy" {
        duration(
            ret.get("retentionDuration"),
            "retentionPolicy.retentionDuration",
        )?;
    } else {
        let mut any = false;
        for k in [
            "dailySchedule",
            "weeklySchedule",
            "monthlySchedule",
            "yearlySchedule",
        ] {
            if let Some(s) = ret.get(k).filter(|s| !s.is_null()) {
                any = true;
                duration(
                    s.get("retentionDuration"),
                    &format!("retentionPolicy.{k}.retentionDuration"),
                )?;
                if let Some(t) = s.get("retentionTimes") {
                    time_list(t, &format!("retentionPolicy.{k}.retentionTimes"))?;
                }
            }
        }
        if !any {
            return Err(bad("retentionPolicy", "A LongTermRetentionPolicy needs at least one of dailySchedule, weeklySchedule, monthlySchedule, yearlySchedule."));
        }
    }
    if let Some(tz) = p.get("timeZone") {
        if !tz.is_string() {
            return Err(bad(
                "timeZone",
                "timeZone must be a string such as 'UTC' or 'Pacific Standard Time'.",
            ));
        }
    }
    if let Some(obj) = out.as_object_mut() {
        obj.remove("protectedItemsCount");
    }
    // A policy the scheduler could not run is refused now, not silently skipped later.
    crate::schedule::Schedule::from_policy(&out)
        .map_err(|e| bad("schedulePolicy", format!("The schedule cannot run: {e}.")))?;
    Ok(out)
}

/// The name of the policy every new vault gets, as in Azure.
pub const DEFAULT_POLICY: &str = "DefaultPolicy";

/// Azure's `DefaultPolicy`: an Azure VM policy, daily at the half hour after `now`'s hour (UTC),
/// each point kept 30 days, two days of instant restore.
pub fn default_vm_policy(now: chrono::DateTime<chrono::Utc>) -> Value {
    use chrono::Timelike;
    let at = now
        .date_naive()
        .and_hms_opt(now.hour(), 30, 0)
        .unwrap_or_default()
        .and_utc();
    let at = rsvault_types::arm::time(at);
    json!({
        "backupManagementType": "AzureIaasVM",
        "instantRpRetentionRangeInDays": 2,
        "policyType": "V1",
        "timeZone": "UTC",
        "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Daily",
            "scheduleRunTimes": [at], "scheduleWeeklyFrequency": 0},
        "retentionPolicy": {"retentionPolicyType": "LongTermRetentionPolicy",
            "dailySchedule": {"retentionTimes": [at], "retentionDuration": {"count": 30, "durationType": "Days"}}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_a_valid_daily_vm_policy() {
        let p = validate(Some(&default_vm_policy(chrono::Utc::now()))).unwrap();
        assert_eq!(p["backupManagementType"], "AzureIaasVM");
        assert_eq!(p["schedulePolicy"]["scheduleRunFrequency"], "Daily");
        assert_eq!(
            p["retentionPolicy"]["dailySchedule"]["retentionDuration"]["count"],
            30
        );
    }

    fn daily(tz: &str) -> Value {
        json!({
            "backupManagementType": "AzureStorage",
            "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Daily", "scheduleRunTimes": ["2026-01-01T02:00:00Z"]},
            "retentionPolicy": {"retentionPolicyType": "SimpleRetentionPolicy", "retentionDuration": {"count": 30, "durationType": "Days"}},
            "timeZone": tz
        })
    }

    #[test]
    fn policies_that_cannot_run_are_refused() {
        assert!(validate(Some(&daily("Pacific Standard Time"))).is_ok());
        let e = validate(Some(&daily("Mars Standard Time"))).unwrap_err();
        assert!(e.message.contains("Mars Standard Time"), "{}", e.message);
        let mut weekly = daily("UTC");
        weekly["schedulePolicy"]["scheduleRunFrequency"] = json!("Weekly");
        assert!(validate(Some(&weekly)).is_err(), "weekly without days");
        let mut no_retention = daily("UTC");
        no_retention["retentionPolicy"] = json!({"retentionPolicyType": "LongTermRetentionPolicy"});
        assert!(validate(Some(&no_retention)).is_err());
    }
}
