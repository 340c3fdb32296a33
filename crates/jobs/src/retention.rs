//! Which recovery points a policy keeps, and until when. Pure: callers pass the points, the policy
//! and `now`; the same function drives garbage collection and `rsvault retention preview`.
//!
//! Rules, in order:
//! 1. An item whose protection is stopped with data retained keeps every point forever.
//! 2. A point with an explicit `recoveryPointExpiryTimeInUTC` expires then.
//! 3. An on-demand point without one keeps Azure's default of 30 days.
//! 4. A scheduled point expires at the latest end of the retention rules that select it:
//!    daily (every scheduled point), weekly (points on `daysOfTheWeek`, or the last of each week),
//!    monthly / yearly (the weekday-of-week or day-of-month form, or the first point of the month),
//!    or the simple `retentionDuration` for file-share policies.
//! 5. The newest point of an item that is still protected never expires: the last good copy
//!    survives whatever the policy says.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct PointIn {
    pub id: String,
    pub time: DateTime<Utc>,
    pub scheduled: bool,
    pub explicit_expiry: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    /// `None`: kept forever.
    pub expiry: Option<DateTime<Utc>>,
    pub keep: bool,
    pub reason: String,
}

/// Protection state of the item the points belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    Protected,
    StoppedRetainData,
}

const ON_DEMAND_DAYS: i64 = 30;

fn add(t: DateTime<Utc>, count: i64, unit: &str) -> DateTime<Utc> {
    let count = count.max(0);
    match unit {
        "Days" => t + Duration::days(count),
        "Weeks" => t + Duration::weeks(count),
        "Months" => t
            .checked_add_months(Months::new(count as u32))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
        "Years" => t
            .checked_add_months(Months::new(count as u32 * 12))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
        _ => t,
    }
}

fn duration_of(rule: &Value) -> Option<(i64, String)> {
    let d = rule.get("retentionDuration")?;
    Some((
        d.get("count")?.as_i64()?,
        d.get("durationType")?.as_str()?.to_string(),
    ))
}

fn weekdays(v: Option<&Value>) -> Vec<Weekday> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|d| d.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn week_of_month(d: NaiveDate) -> &'static str {
    let last = d
        .checked_add_signed(Duration::days(7))
        .is_none_or(|n| n.month() != d.month());
    match (d.day() - 1) / 7 {
        _ if last && (d.day() - 1) / 7 >= 3 => "Last",
        0 => "First",
        1 => "Second",
        2 => "Third",
        3 => "Fourth",
        _ => "Last",
    }
}

/// Whether a point taken on local date `d` is selected by a monthly/yearly rule's day format.
/// `first_of_period` is used when the rule names no days.
fn selected_by_days(rule: &Value, d: NaiveDate, first_of_period: bool) -> bool {
    match rule
        .get("retentionScheduleFormatType")
        .and_then(Value::as_str)
    {
        Some("Weekly") => {
            let w = rule.get("retentionScheduleWeekly");
            let days = weekdays(w.and_then(|w| w.get("daysOfTheWeek")));
            let weeks: Vec<&str> = w
                .and_then(|w| w.get("weeksOfTheMonth"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let wom = week_of_month(d);
            let week_ok = weeks.is_empty()
                || weeks.contains(&wom)
                || (weeks.contains(&"Fourth") && wom == "Last" && (d.day() - 1) / 7 == 3);
            (days.is_empty() || days.contains(&d.weekday())) && week_ok
        }
        Some("Daily") => {
            let dates = rule
                .pointer("/retentionScheduleDaily/daysOfTheMonth")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let is_last_day = d.succ_opt().is_none_or(|n| n.month() != d.month());
            dates.iter().any(|x| {
                x.get("isLast").and_then(Value::as_bool) == Some(true) && is_last_day
                    || x.get("date").and_then(Value::as_u64) == Some(d.day() as u64)
            })
        }
        _ => first_of_period,
    }
}

/// Evaluates every point of one item. `retention` is the policy's `retentionPolicy` (None when
/// the item has no policy).
pub fn evaluate(
    retention: Option<&Value>,
    tz: Tz,
    points: &[PointIn],
    protection: Protection,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut sorted: Vec<&PointIn> = points.iter().collect();
    sorted.sort_by_key(|p| p.time);
    let newest = sorted.last().map(|p| p.id.clone());
    let local = |p: &PointIn| p.time.with_timezone(&tz).date_naive();
    let scheduled: Vec<&PointIn> = sorted.iter().copied().filter(|p| p.scheduled).collect();
    // The last scheduled point of each ISO week, the first of each month and of each year.
    let last_of_week = |p: &PointIn| {
        let wk = local(p).iso_week();
        !scheduled
            .iter()
            .any(|q| q.time > p.time && local(q).iso_week() == wk)
    };
    let first_of_month = |p: &PointIn| {
        let d = local(p);
        !scheduled.iter().any(|q| {
            q.time < p.time && local(q).year() == d.year() && local(q).month() == d.month()
        })
    };
    let first_of_year = |p: &PointIn| {
        let d = local(p);
        !scheduled
            .iter()
            .any(|q| q.time < p.time && local(q).year() == d.year())
    };

    sorted
        .iter()
        .map(|p| {
            let (expiry, reason) = if protection == Protection::StoppedRetainData {
                (
                    None,
                    "protection stopped with data retained: kept until deleted".to_string(),
                )
            } else if let Some(e) = p.explicit_expiry {
                (
                    Some(e),
                    "on-demand backup with recoveryPointExpiryTimeInUTC".to_string(),
                )
            } else if !p.scheduled {
                (
                    Some(p.time + Duration::days(ON_DEMAND_DAYS)),
                    format!("on-demand backup: default {ON_DEMAND_DAYS}-day retention"),
                )
            } else {
                scheduled_expiry(
                    retention,
                    p,
                    local(p),
                    last_of_week(p),
                    first_of_month(p),
                    first_of_year(p),
                )
            };
            let mut keep = expiry.is_none_or(|e| e > now);
            let mut reason = reason;
            if !keep
                && protection == Protection::Protected
                && newest.as_deref() == Some(p.id.as_str())
            {
                keep = true;
                reason = format!("{reason}; kept as the newest recovery point of a protected item");
            }
            Decision {
                id: p.id.clone(),
                time: p.time,
                expiry,
                keep,
                reason,
            }
        })
        .collect()
}

fn scheduled_expiry(
    retention: Option<&Value>,
    p: &PointIn,
    d: NaiveDate,
    last_of_week: bool,
    first_of_month: bool,
    first_of_year: bool,
) -> (Option<DateTime<Utc>>, String) {
    let Some(r) = retention else {
        return (
            Some(p.time + Duration::days(ON_DEMAND_DAYS)),
            "no policy: default 30-day retention".into(),
        );
    };
    if r.get("retentionPolicyType").and_then(Value::as_str) == Some("SimpleRetentionPolicy") {
        return match duration_of(r) {
            Some((n, u)) => (
                Some(add(p.time, n, &u)),
                format!("simple retention: {n} {u}"),
            ),
            None => (Some(p.time), "simple retention without a duration".into()),
        };
    }
    let mut best: Option<(DateTime<Utc>, String)> = None;
    let mut consider = |name: &str, rule: Option<&Value>, selected: bool| {
        if let (Some(rule), true) = (rule.filter(|r| !r.is_null()), selected) {
            if let Some((n, u)) = duration_of(rule) {
                let e = add(p.time, n, &u);
                if best.as_ref().is_none_or(|(b, _)| e > *b) {
                    best = Some((e, format!("{name} retention: {n} {u}")));
                }
            }
        }
    };
    consider("daily", r.get("dailySchedule"), true);
    let weekly = r.get("weeklySchedule");
    let wdays = weekdays(weekly.and_then(|w| w.get("daysOfTheWeek")));
    consider(
        "weekly",
        weekly,
        if wdays.is_empty() {
            last_of_week
        } else {
            wdays.contains(&d.weekday())
        },
    );
    let monthly = r.get("monthlySchedule");
    consider(
        "monthly",
        monthly,
        monthly.is_some_and(|m| selected_by_days(m, d, first_of_month)),
    );
    let yearly = r.get("yearlySchedule");
    let month_ok = |y: &Value| {
        let months: Vec<&str> = y
            .get("monthsOfYear")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let name = chrono::Month::try_from(d.month() as u8)
            .map(|m| m.name())
            .unwrap_or("");
        months.is_empty() || months.contains(&name)
    };
    consider(
        "yearly",
        yearly,
        yearly.is_some_and(|y| {
            month_ok(y)
                && selected_by_days(
                    y,
                    d,
                    if y.get("monthsOfYear").is_some() {
                        first_of_month
                    } else {
                        first_of_year
                    },
                )
        }),
    );
    match best {
        Some((e, why)) => (Some(e), why),
        None => (Some(p.time), "no retention rule selects this point".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(2, 0, 0)
            .unwrap()
            .and_utc()
    }

    fn gfs() -> Value {
        json!({
            "retentionPolicyType": "LongTermRetentionPolicy",
            "dailySchedule": {"retentionDuration": {"count": 7, "durationType": "Days"}},
            "weeklySchedule": {"daysOfTheWeek": ["Sunday"], "retentionDuration": {"count": 4, "durationType": "Weeks"}},
            "monthlySchedule": {"retentionScheduleFormatType": "Weekly",
                "retentionScheduleWeekly": {"daysOfTheWeek": ["Sunday"], "weeksOfTheMonth": ["First"]},
                "retentionDuration": {"count": 3, "durationType": "Months"}},
            "yearlySchedule": {"retentionScheduleFormatType": "Weekly", "monthsOfYear": ["January"],
                "retentionScheduleWeekly": {"daysOfTheWeek": ["Sunday"], "weeksOfTheMonth": ["First"]},
                "retentionDuration": {"count": 2, "durationType": "Years"}}
        })
    }

    /// A simulated year of daily scheduled backups, evaluated as the garbage collector would each
    /// day (dropping what expired), keeps exactly the GFS set.
    #[test]
    fn a_year_of_daily_runs_keeps_exactly_the_gfs_set() {
        let policy = gfs();
        let mut kept: Vec<PointIn> = Vec::new();
        let mut t = day(2025, 1, 1);
        let end = day(2025, 12, 31);
        while t <= end {
            kept.push(PointIn {
                id: t.date_naive().to_string(),
                time: t,
                scheduled: true,
                explicit_expiry: None,
            });
            let decisions = evaluate(
                Some(&policy),
                Tz::UTC,
                &kept,
                Protection::Protected,
                t + Duration::hours(1),
            );
            kept.retain(|p| decisions.iter().any(|d| d.id == p.id && d.keep));
            t += Duration::days(1);
        }
        let mut ids: Vec<String> = kept.iter().map(|p| p.id.clone()).collect();
        ids.sort();
        let expected = [
            // yearly: first Sunday of January (kept 2 years)
            "2025-01-05",
            // monthly: first Sundays within 3 months of 2025-12-31 03:00
            "2025-10-05",
            "2025-11-02",
            "2025-12-07",
            // weekly: Sundays within 4 weeks
            "2025-12-14",
            "2025-12-21",
            "2025-12-28",
            // daily: the last 7 days (12-25 expires exactly at 2026-01-01 02:00, after now)
            "2025-12-25",
            "2025-12-26",
            "2025-12-27",
            "2025-12-29",
            "2025-12-30",
            "2025-12-31",
        ];
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(ids, expected);
    }

    #[test]
    fn policy_change_reevaluates_and_last_point_survives() {
        let short = json!({"retentionPolicyType": "SimpleRetentionPolicy", "retentionDuration": {"count": 1, "durationType": "Days"}});
        let pts: Vec<PointIn> = (0..5)
            .map(|i| PointIn {
                id: format!("p{i}"),
                time: day(2026, 1, 1 + i),
                scheduled: true,
                explicit_expiry: None,
            })
            .collect();
        let now = day(2026, 3, 1);
        let d = evaluate(Some(&short), Tz::UTC, &pts, Protection::Protected, now);
        assert_eq!(
            d.iter()
                .filter(|d| d.keep)
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>(),
            ["p4"],
            "only the last good point"
        );
        assert!(d[4].reason.contains("newest"));
        let long = json!({"retentionPolicyType": "SimpleRetentionPolicy", "retentionDuration": {"count": 1, "durationType": "Years"}});
        assert!(
            evaluate(Some(&long), Tz::UTC, &pts, Protection::Protected, now)
                .iter()
                .all(|d| d.keep)
        );
        assert!(evaluate(
            Some(&short),
            Tz::UTC,
            &pts,
            Protection::StoppedRetainData,
            now
        )
        .iter()
        .all(|d| d.keep && d.expiry.is_none()));
    }

    #[test]
    fn on_demand_points_use_their_expiry() {
        let pts = vec![
            PointIn {
                id: "a".into(),
                time: day(2026, 1, 1),
                scheduled: false,
                explicit_expiry: Some(day(2026, 1, 3)),
            },
            PointIn {
                id: "b".into(),
                time: day(2026, 1, 2),
                scheduled: false,
                explicit_expiry: None,
            },
            PointIn {
                id: "c".into(),
                time: day(2026, 1, 3),
                scheduled: false,
                explicit_expiry: Some(day(2027, 1, 1)),
            },
        ];
        let d = evaluate(None, Tz::UTC, &pts, Protection::Protected, day(2026, 1, 10));
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [false, true, true]
        );
        let d = evaluate(None, Tz::UTC, &pts, Protection::Protected, day(2026, 2, 10));
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [false, false, true]
        );
    }
}
