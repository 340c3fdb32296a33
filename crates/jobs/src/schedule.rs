//! When a policy's backups run: `schedulePolicy` (daily / weekly run times, hourly windows) in the
//! policy's `timeZone`. Pure: no IO, no clock — callers pass `now`.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Frequency {
    Daily {
        times: Vec<NaiveTime>,
    },
    Weekly {
        days: Vec<Weekday>,
        times: Vec<NaiveTime>,
    },
    /// Every `interval` hours inside a daily window starting at `start`, `window` hours long.
    Hourly {
        interval: u32,
        start: NaiveTime,
        window: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub frequency: Frequency,
    pub tz: Tz,
}

/// Maps the Windows time-zone names Azure uses (and IANA names) to a zone.
pub fn parse_tz(name: Option<&str>) -> Result<Tz, String> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(Tz::UTC);
    };
    const WINDOWS: &[(&str, &str)] = &[
        ("UTC", "UTC"),
        ("Coordinated Universal Time", "UTC"),
        ("GMT Standard Time", "Europe/London"),
        ("Greenwich Standard Time", "Atlantic/Reykjavik"),
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("Central Europe Standard Time", "Europe/Budapest"),
        ("Romance Standard Time", "Europe/Paris"),
        ("Central European Standard Time", "Europe/Warsaw"),
        ("E. Europe Standard Time", "Europe/Chisinau"),
        ("FLE Standard Time", "Europe/Kiev"),
        ("Russian Standard Time", "Europe/Moscow"),
        ("Pacific Standard Time", "America/Los_Angeles"),
        ("Mountain Standard Time", "America/Denver"),
        ("Central Standard Time", "America/Chicago"),
        ("Eastern Standard Time", "America/New_York"),
        ("Atlantic Standard Time", "America/Halifax"),
        ("Alaskan Standard Time", "America/Anchorage"),
        ("Hawaiian Standard Time", "Pacific/Honolulu"),
        ("E. South America Standard Time", "America/Sao_Paulo"),
        ("India Standard Time", "Asia/Kolkata"),
        ("China Standard Time", "Asia/Shanghai"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("Korea Standard Time", "Asia/Seoul"),
        ("Singapore Standard Time", "Asia/Singapore"),
        ("AUS Eastern Standard Time", "Australia/Sydney"),
        ("New Zealand Standard Time", "Pacific/Auckland"),
        ("South Africa Standard Time", "Africa/Johannesburg"),
        ("Arabian Standard Time", "Asia/Dubai"),
    ];
    if let Some((_, iana)) = WINDOWS.iter().find(|(w, _)| w.eq_ignore_ascii_case(name)) {
        return iana.parse().map_err(|e| format!("{e}"));
    }
    name.parse::<Tz>().map_err(|_| {
        format!("timeZone '{name}' is not known; use a Windows zone name such as 'Pacific Standard Time' or an IANA name such as 'Europe/Berlin'")
    })
}

fn time_of(v: &Value) -> Result<NaiveTime, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{v} is not a date-time"))?;
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.naive_utc())
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| format!("'{s}' is not a date-time"))?;
    // Azure sends run times as date-times; only the time of day counts, in the policy's zone.
    Ok(NaiveTime::from_hms_opt(t.hour(), t.minute(), 0).expect("valid time"))
}

fn weekday(v: &Value) -> Result<Weekday, String> {
    v.as_str()
        .and_then(|s| s.parse::<Weekday>().ok())
        .ok_or_else(|| format!("{v} is not a day of the week"))
}

fn times(v: Option<&Value>) -> Result<Vec<NaiveTime>, String> {
    let mut out: Vec<NaiveTime> = v
        .and_then(Value::as_array)
        .map(|a| a.iter().map(time_of).collect::<Result<_, _>>())
        .transpose()?
        .unwrap_or_default();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err("scheduleRunTimes is empty".into());
    }
    Ok(out)
}

impl Schedule {
    /// Reads a policy's `properties` (schedulePolicy + timeZone).
    pub fn from_policy(props: &Value) -> Result<Self, String> {
        let tz = parse_tz(props.get("timeZone").and_then(Value::as_str))?;
        let sp = props.get("schedulePolicy").ok_or("no schedulePolicy")?;
        let freq = sp
            .get("scheduleRunFrequency")
            .and_then(Value::as_str)
            .unwrap_or("");
        let v2 =
            sp.get("schedulePolicyType").and_then(Value::as_str) == Some("SimpleSchedulePolicyV2");
        let frequency = match (freq, v2) {
            ("Daily", false) => Frequency::Daily {
                times: times(sp.get("scheduleRunTimes"))?,
            },
            ("Daily", true) => Frequency::Daily {
                times: times(sp.pointer("/dailySchedule/scheduleRunTimes"))?,
            },
            ("Weekly", _) => {
                let (days, t) = if v2 {
                    (
                        sp.pointer("/weeklySchedule/scheduleRunDays"),
                        sp.pointer("/weeklySchedule/scheduleRunTimes"),
                    )
                } else {
                    (sp.get("scheduleRunDays"), sp.get("scheduleRunTimes"))
                };
                let days: Vec<Weekday> = days
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(weekday).collect::<Result<_, _>>())
                    .transpose()?
                    .unwrap_or_default();
                if days.is_empty() {
                    return Err("a weekly schedule needs scheduleRunDays".into());
                }
                Frequency::Weekly {
                    days,
                    times: times(t)?,
                }
            }
            ("Hourly", _) => {
                let h = sp
                    .get("hourlySchedule")
                    .ok_or("an hourly schedule needs hourlySchedule")?;
                let interval = h.get("interval").and_then(Value::as_u64).unwrap_or(4) as u32;
                if ![4, 6, 8, 12].contains(&interval) {
                    return Err(format!(
                        "hourlySchedule.interval {interval} is invalid; allowed: 4, 6, 8, 12"
                    ));
                }
                let start = h
                    .get("scheduleWindowStartTime")
                    .map(time_of)
                    .transpose()?
                    .unwrap_or(NaiveTime::MIN);
                let window = h
                    .get("scheduleWindowDuration")
                    .and_then(Value::as_u64)
                    .unwrap_or(24) as u32;
                if !(1..=24).contains(&window) {
                    return Err(format!(
                        "hourlySchedule.scheduleWindowDuration {window} is invalid; allowed 1..=24"
                    ));
                }
                Frequency::Hourly {
                    interval,
                    start,
                    window,
                }
            }
            (other, _) => return Err(format!("scheduleRunFrequency '{other}' is not supported")),
        };
        Ok(Self { frequency, tz })
    }

    /// Scheduled instants on local calendar day `d`, in UTC.
    fn slots_on(&self, d: NaiveDate) -> Vec<DateTime<Utc>> {
        let local_times: Vec<NaiveTime> = match &self.frequency {
            Frequency::Daily { times } => times.clone(),
            Frequency::Weekly { days, times } => {
                if days.contains(&d.weekday()) {
                    times.clone()
                } else {
                    vec![]
                }
            }
            Frequency::Hourly {
                interval,
                start,
                window,
            } => (0..*window)
                .step_by(*interval as usize)
                .filter_map(|h| {
                    let secs = start.num_seconds_from_midnight() + h * 3600;
                    (secs < 86_400)
                        .then(|| NaiveTime::from_num_seconds_from_midnight_opt(secs, 0))
                        .flatten()
                })
                .collect(),
        };
        local_times
            .into_iter()
            // A time skipped by a DST jump does not run that day; an ambiguous one runs once.
            .filter_map(|t| self.tz.from_local_datetime(&d.and_time(t)).earliest())
            .map(|t| t.with_timezone(&Utc))
            .collect()
    }

    /// The most recent scheduled instant at or before `now`.
    pub fn latest_slot(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = now.with_timezone(&self.tz).date_naive();
        (0..8)
            .filter_map(|back| today.checked_sub_signed(Duration::days(back)))
            .flat_map(|d| self.slots_on(d))
            .filter(|t| *t <= now)
            .max()
    }

    /// The next scheduled instant strictly after `now`.
    pub fn next_slot(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = now.with_timezone(&self.tz).date_naive();
        (0..8)
            .filter_map(|fwd| today.checked_add_signed(Duration::days(fwd)))
            .flat_map(|d| self.slots_on(d))
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn daily_in_a_time_zone() {
        let s = Schedule::from_policy(&json!({
            "timeZone": "Pacific Standard Time",
            "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Daily", "scheduleRunTimes": ["2018-01-24T02:00:00Z"]}
        }))
        .unwrap();
        // 02:00 in Los Angeles in winter is 10:00 UTC.
        assert_eq!(
            s.latest_slot(at("2026-01-10T12:00:00Z")),
            Some(at("2026-01-10T10:00:00Z"))
        );
        assert_eq!(
            s.latest_slot(at("2026-01-10T09:59:00Z")),
            Some(at("2026-01-09T10:00:00Z"))
        );
        // Summer time: 09:00 UTC.
        assert_eq!(
            s.next_slot(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T09:00:00Z"))
        );
    }

    #[test]
    fn weekly_and_hourly() {
        let w = Schedule::from_policy(&json!({
            "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Weekly",
                "scheduleRunDays": ["Sunday", "Wednesday"], "scheduleRunTimes": ["2018-01-24T23:30:00Z"]}
        }))
        .unwrap();
        // 2026-11-28 is a Saturday: the last run was Wednesday the 25th.
        assert_eq!(
            w.latest_slot(at("2026-11-28T12:00:00Z")),
            Some(at("2026-11-25T23:30:00Z"))
        );
        assert_eq!(
            w.next_slot(at("2026-11-28T12:00:00Z")),
            Some(at("2026-11-29T23:30:00Z"))
        );
        let h = Schedule::from_policy(&json!({
            "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicyV2", "scheduleRunFrequency": "Hourly",
                "hourlySchedule": {"interval": 4, "scheduleWindowStartTime": "2018-01-24T08:00:00Z", "scheduleWindowDuration": 12}}
        }))
        .unwrap();
        assert_eq!(
            h.latest_slot(at("2026-11-28T13:00:00Z")),
            Some(at("2026-11-28T12:00:00Z"))
        );
        assert_eq!(
            h.latest_slot(at("2026-11-28T23:00:00Z")),
            Some(at("2026-11-28T16:00:00Z"))
        );
        assert_eq!(
            h.latest_slot(at("2026-11-28T07:00:00Z")),
            Some(at("2026-11-27T16:00:00Z"))
        );
    }

    #[test]
    fn unknown_zone_is_an_error() {
        assert!(parse_tz(Some("Mars Standard Time")).is_err());
        assert_eq!(
            parse_tz(Some("Europe/Berlin")).unwrap(),
            chrono_tz::Europe::Berlin
        );
    }
}
