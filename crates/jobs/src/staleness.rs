//! Staleness: an item whose last successful backup is older than 1.5 times its policy's interval,
//! plus an hour, needs attention even though no job failed (its schedule may have stopped, the
//! server may have been down, every run may have been cancelled). Pure: no IO, no clock.
//!
//! The interval is the longest gap between consecutive slots of the policy's schedule over a
//! week and a day (so a weekly Monday/Tuesday policy allows 6 days, an hourly one with a window
//! its overnight gap). An item never backed up counts from when its protection began.

use chrono::{DateTime, Duration, Utc};

use crate::schedule::Schedule;

/// The longest gap between consecutive scheduled runs around `now`.
pub fn interval(schedule: &Schedule, now: DateTime<Utc>) -> Option<Duration> {
    let mut t = schedule.latest_slot(now - Duration::days(8))?;
    let mut longest = Duration::zero();
    while t < now {
        let next = schedule.next_slot(t)?;
        longest = longest.max(next - t);
        t = next;
    }
    (longest > Duration::zero()).then_some(longest)
}

/// When an item whose last success (or start of protection) was `since` becomes stale.
pub fn deadline(since: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    since + interval * 3 / 2 + Duration::hours(1)
}

/// `Some(stale since)` when the item is stale at `now`.
pub fn stale_since(
    schedule: &Schedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let d = deadline(since, interval(schedule, now)?);
    (d <= now).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn schedule(p: serde_json::Value) -> Schedule {
        Schedule::from_policy(&json!({"schedulePolicy": p, "timeZone": "UTC"})).unwrap()
    }

    #[test]
    fn a_daily_policy_allows_37_hours() {
        let s = schedule(json!({"schedulePolicyType": "SimpleSchedulePolicy",
            "scheduleRunFrequency": "Daily", "scheduleRunTimes": ["2026-01-01T02:00:00Z"]}));
        let last = Utc.with_ymd_and_hms(2026, 3, 1, 2, 5, 0).unwrap();
        assert_eq!(interval(&s, last), Some(Duration::hours(24)));
        let edge = last + Duration::hours(37);
        assert_eq!(stale_since(&s, last, edge - Duration::seconds(1)), None);
        assert_eq!(stale_since(&s, last, edge), Some(edge));
        assert_eq!(stale_since(&s, last, edge + Duration::days(3)), Some(edge));
    }

    #[test]
    fn a_weekly_policy_counts_its_longest_gap() {
        let s = schedule(json!({"schedulePolicyType": "SimpleSchedulePolicy",
            "scheduleRunFrequency": "Weekly", "scheduleRunDays": ["Monday", "Tuesday"],
            "scheduleRunTimes": ["2026-01-01T02:00:00Z"]}));
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0).unwrap();
        assert_eq!(interval(&s, now), Some(Duration::days(6)));
        let last = now - Duration::days(9) - Duration::hours(1);
        assert_eq!(
            stale_since(&s, last, now),
            Some(last + Duration::hours(6 * 36 + 1))
        );
        assert_eq!(stale_since(&s, now - Duration::days(8), now), None);
    }

    #[test]
    fn an_hourly_window_counts_its_overnight_gap() {
        let s = schedule(json!({"schedulePolicyType": "SimpleSchedulePolicyV2",
            "scheduleRunFrequency": "Hourly",
            "hourlySchedule": {"interval": 4, "scheduleWindowStartTime": "2026-01-01T08:00:00Z",
                "scheduleWindowDuration": 12}}));
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0).unwrap();
        // Slots 08, 12, 16 (every 4 h in a 12 h window from 08:00): 16:00 to 08:00 is longest.
        assert_eq!(interval(&s, now), Some(Duration::hours(16)));
    }
}
