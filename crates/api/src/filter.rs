//! OData `$filter` as Azure Backup uses it: `field eq 'value'` clauses joined by `and`.

use chrono::{DateTime, NaiveDateTime, Utc};

use rsvault_types::arm::{ArmCode, ArmError, ArmResult};

/// Parses `a eq 'x' and b eq 'y'` into lowercase field names and raw values. Field names are
/// checked against `allowed` (lowercase).
pub fn parse(filter: &str, allowed: &[&str]) -> ArmResult<Vec<(String, String)>> {
    let bad = |why: String| {
        ArmError::new(
            ArmCode::InvalidFilter,
            format!("Invalid $filter '{filter}': {why}"),
        )
        .with_target("$filter")
    };
    let mut out = Vec::new();
    let mut rest = filter.trim();
    if rest.is_empty() {
        return Ok(out);
    }
    loop {
        let (field, after) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `field eq 'value'`".into()))?;
        let after = after.trim_start();
        let after = after
            .strip_prefix("eq")
            .filter(|a| a.starts_with(char::is_whitespace))
            .ok_or_else(|| bad(format!("only 'eq' is supported after '{field}'")))?
            .trim_start();
        let value_and_rest = after
            .strip_prefix('\'')
            .ok_or_else(|| bad(format!("the value of '{field}' must be in single quotes")))?;
        // '' inside a literal is an escaped quote.
        let mut value = String::new();
        let mut chars = value_and_rest.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if matches!(chars.peek(), Some((_, '\''))) {
                    value.push('\'');
                    chars.next();
                } else {
                    end = Some(i + 1);
                    break;
                }
            } else {
                value.push(c);
            }
        }
        let end = end.ok_or_else(|| bad(format!("unterminated value for '{field}'")))?;
        let field_lc = field.to_ascii_lowercase();
        if !allowed.contains(&field_lc.as_str()) {
            return Err(bad(format!(
                "unknown field '{field}'; allowed: {}",
                allowed.join(", ")
            )));
        }
        if out.iter().any(|(f, _)| f == &field_lc) {
            return Err(bad(format!("field '{field}' appears twice")));
        }
        out.push((field_lc, value));
        rest = value_and_rest[end..].trim_start();
        if rest.is_empty() {
            return Ok(out);
        }
        let (kw, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if !kw.eq_ignore_ascii_case("and") {
            return Err(bad(format!("expected 'and' between clauses, found '{kw}'")));
        }
        rest = tail.trim_start();
    }
}

/// Parses the job filter time literal `yyyy-MM-dd hh:mm:ss AM` (12-hour clock, UTC; hour `00` and
/// `12` both mean midnight with AM), or ISO 8601 / RFC 3339.
pub fn parse_time(field: &str, v: &str) -> ArmResult<DateTime<Utc>> {
    let s = v.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Some((clock, ampm)) = s.rsplit_once(' ') {
        let pm = match ampm.to_ascii_uppercase().as_str() {
            "AM" => Some(false),
            "PM" => Some(true),
            _ => None,
        };
        if let (Some(pm), Ok(t)) = (
            pm,
            NaiveDateTime::parse_from_str(clock, "%Y-%m-%d %H:%M:%S"),
        ) {
            use chrono::Timelike;
            let h = t.hour();
            if h <= 12 {
                let h24 = match (h, pm) {
                    (12, false) => 0,
                    (12, true) => 12,
                    (h, false) => h,
                    (h, true) => h + 12,
                };
                if let Some(t) = t.with_hour(h24) {
                    return Ok(t.and_utc());
                }
            }
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(ArmError::new(
        ArmCode::InvalidFilter,
        format!(
            "Invalid {field} '{v}' in $filter: use 'yyyy-MM-dd hh:mm:ss AM' (UTC) or ISO 8601, \
             e.g. '2026-01-31 01:30:00 PM' or '2026-01-31T13:30:00Z'."
        ),
    )
    .with_target("$filter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &[&str] = &[
        "status",
        "backupmanagementtype",
        "operation",
        "jobid",
        "starttime",
        "endtime",
    ];

    #[test]
    fn parses_azure_cli_filter() {
        let f = "backupManagementType eq 'AzureIaasVM' and endTime eq '2017-11-29 00:00:00 AM' and \
                 operation eq 'Backup' and startTime eq '2016-01-01 00:00:00 AM' and status eq 'InProgress'";
        let p = parse(f, JOB).unwrap();
        assert_eq!(p.len(), 5);
        assert_eq!(p[0], ("backupmanagementtype".into(), "AzureIaasVM".into()));
    }

    #[test]
    fn rejects_bad_filters() {
        for f in [
            "status ne 'x'",
            "status eq x",
            "status eq 'x",
            "foo eq 'x'",
            "status eq 'a' or operation eq 'b'",
            "status eq 'a' and status eq 'b'",
        ] {
            assert!(parse(f, JOB).is_err(), "{f}");
        }
    }

    #[test]
    fn times_in_both_spellings() {
        let t = |s| parse_time("startTime", s).unwrap().to_rfc3339();
        assert_eq!(t("2016-01-01 00:00:00 AM"), "2016-01-01T00:00:00+00:00");
        assert_eq!(t("2016-01-01 12:00:00 AM"), "2016-01-01T00:00:00+00:00");
        assert_eq!(t("2016-01-01 01:30:00 PM"), "2016-01-01T13:30:00+00:00");
        assert_eq!(t("2016-01-01 12:15:00 PM"), "2016-01-01T12:15:00+00:00");
        assert_eq!(t("2016-01-01T13:30:00Z"), "2016-01-01T13:30:00+00:00");
        assert!(parse_time("startTime", "yesterday").is_err());
        assert!(parse_time("startTime", "2016-01-01 13:00:00 PM").is_err());
    }
}
