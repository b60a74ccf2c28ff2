//! Alertmanager's time intervals (`time_intervals`, `mute_time_intervals`):
//! times of day, weekdays, days of the month (negative from the end),
//! months and years, parsed and checked as Alertmanager 0.25 does, and
//! `contains(t)` for routes that mute or are active only in them.
//! `location` may be `UTC` or `Local`; another zone is accepted if the
//! system's zoneinfo has it, and evaluated in local time (noted by `mlmon
//! check`).

use chrono::{DateTime, Datelike, Local, TimeZone, Timelike, Utc};
use serde::Deserialize;
use serde_yaml::Value;

use crate::model::Timestamp;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawInterval {
    times: Vec<RawTimes>,
    weekdays: Vec<Value>,
    days_of_month: Vec<Value>,
    months: Vec<Value>,
    years: Vec<Value>,
    location: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimes {
    start_time: String,
    end_time: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Zone {
    Utc,
    Local,
}

/// One entry of a named time interval.
#[derive(Debug, Clone)]
pub struct TimeInterval {
    /// Minutes of the day, end exclusive.
    times: Vec<(u32, u32)>,
    /// 0 = Sunday.
    weekdays: Vec<(u32, u32)>,
    days_of_month: Vec<(i32, i32)>,
    months: Vec<(u32, u32)>,
    years: Vec<(i32, i32)>,
    zone: Zone,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// `a` or `a:b`, each side read by `member`.
fn range<T: Copy>(s: &str, member: impl Fn(&str) -> Result<T, String>) -> Result<(T, T), String> {
    let s = s.to_lowercase();
    match s.split_once(':') {
        Some((a, b)) if !b.contains(':') => Ok((member(a)?, member(b)?)),
        Some(_) => Err(format!("couldn't parse range {s}, invalid format")),
        None => {
            let v = member(&s)?;
            Ok((v, v))
        }
    }
}

fn minutes(s: &str) -> Result<u32, String> {
    let valid = s == "24:00"
        || (s.len() == 5
            && s.as_bytes()[2] == b':'
            && s[..2].parse::<u32>().is_ok_and(|h| h < 24)
            && s[3..].parse::<u32>().is_ok_and(|m| m < 60)
            && s[..2]
                .chars()
                .chain(s[3..].chars())
                .all(|c| c.is_ascii_digit()));
    if !valid {
        return Err(format!("couldn't parse timestamp {s}, invalid format"));
    }
    Ok(s[..2].parse::<u32>().unwrap_or(0) * 60 + s[3..].parse::<u32>().unwrap_or(0))
}

impl TimeInterval {
    /// Checks an interval as Alertmanager does; the first problem found.
    pub(super) fn parse(raw: &RawInterval) -> Result<(TimeInterval, Option<String>), String> {
        let mut times = Vec::new();
        for t in &raw.times {
            if t.start_time.is_empty() || t.end_time.is_empty() {
                return Err("both start and end times must be provided".into());
            }
            let (a, b) = (minutes(&t.start_time)?, minutes(&t.end_time)?);
            if a >= b {
                return Err("start time cannot be equal or greater than end time".into());
            }
            times.push((a, b));
        }
        let mut weekdays = Vec::new();
        for w in &raw.weekdays {
            let s = text(w);
            let (a, b) = range(&s, |x| {
                WEEKDAYS
                    .iter()
                    .position(|d| *d == x)
                    .map(|i| i as u32)
                    .ok_or_else(|| format!("{x} is not a valid weekday"))
            })?;
            if a > b {
                return Err("start day cannot be before end day".into());
            }
            weekdays.push((a, b));
        }
        let mut days_of_month = Vec::new();
        for d in &raw.days_of_month {
            let s = text(d);
            let (a, b) = range(&s, |x| {
                x.parse::<i32>()
                    .map_err(|_| format!("strconv.Atoi: parsing {x:?}: invalid syntax"))
            })?;
            for v in [a, b] {
                if v == 0 || !(-31..=31).contains(&v) {
                    return Err(format!("{v} is not a valid day of the month: out of range"));
                }
            }
            if a < 0 && b > 0 {
                return Err("end day must be negative if start day is negative".into());
            }
            let (ca, cb) = (
                if a < 0 { 28 + a } else { a },
                if b < 0 { 28 + b } else { b },
            );
            if ca > cb {
                return Err(format!("end day {b} is always before start day {a}"));
            }
            days_of_month.push((a, b));
        }
        let mut months = Vec::new();
        for m in &raw.months {
            let s = text(m);
            let (a, b) = range(&s, |x| {
                MONTHS
                    .iter()
                    .position(|n| *n == x)
                    .map(|i| i as u32 + 1)
                    .or_else(|| x.parse::<u32>().ok())
                    .ok_or_else(|| format!("{x} is not a valid month"))
            })?;
            if a > b {
                return Err(format!("end month {b} is before start month {a}"));
            }
            months.push((a, b));
        }
        let mut years = Vec::new();
        for y in &raw.years {
            let s = text(y);
            let (a, b) = range(&s, |x| {
                x.parse::<i32>()
                    .map_err(|_| format!("strconv.Atoi: parsing {x:?}: invalid syntax"))
            })?;
            if a > b {
                return Err(format!("end year {b} is before start year {a}"));
            }
            years.push((a, b));
        }
        let (zone, note) = match raw.location.as_deref() {
            None | Some("UTC") | Some("") => (Zone::Utc, None),
            Some("Local") => (Zone::Local, None),
            Some(name) => {
                let known = name.split('/').all(|p| !p.is_empty() && p != "..")
                    && std::path::Path::new("/usr/share/zoneinfo")
                        .join(name)
                        .is_file();
                if !known {
                    return Err(format!("unknown time zone {name}"));
                }
                (
                    Zone::Local,
                    Some(format!(
                        "location {name:?} is evaluated in this machine's local time zone"
                    )),
                )
            }
        };
        Ok((
            TimeInterval {
                times,
                weekdays,
                days_of_month,
                months,
                years,
                zone,
            },
            note,
        ))
    }

    /// Whether `t` falls in this interval (Alertmanager's `ContainsTime`).
    pub fn contains(&self, t: Timestamp) -> bool {
        match self.zone {
            Zone::Utc => Utc
                .timestamp_millis_opt(t)
                .single()
                .is_some_and(|d| self.contains_in(d)),
            Zone::Local => Local
                .timestamp_millis_opt(t)
                .single()
                .is_some_and(|d| self.contains_in(d)),
        }
    }

    fn contains_in<Z: TimeZone>(&self, d: DateTime<Z>) -> bool {
        let minute = d.hour() * 60 + d.minute();
        if !self.times.is_empty() && !self.times.iter().any(|(a, b)| minute >= *a && minute < *b) {
            return false;
        }
        if !self.days_of_month.is_empty() {
            let (y, m) = (d.year(), d.month());
            let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let days = chrono::NaiveDate::from_ymd_opt(next.0, next.1, 1)
                .and_then(|n| n.pred_opt())
                .map_or(31, |l| l.day() as i32);
            let day = d.day() as i32;
            let inside = self.days_of_month.iter().any(|(a, b)| {
                let begin = if *a < 0 { days + a + 1 } else { *a };
                let end = if *b < 0 { days + b + 1 } else { *b };
                begin <= days && day >= begin.clamp(-days, days) && day <= end.clamp(-days, days)
            });
            if !inside {
                return false;
            }
        }
        if !self.months.is_empty()
            && !self
                .months
                .iter()
                .any(|(a, b)| d.month() >= *a && d.month() <= *b)
        {
            return false;
        }
        let wd = d.weekday().num_days_from_sunday();
        if !self.weekdays.is_empty() && !self.weekdays.iter().any(|(a, b)| wd >= *a && wd <= *b) {
            return false;
        }
        if !self.years.is_empty()
            && !self
                .years
                .iter()
                .any(|(a, b)| d.year() >= *a && d.year() <= *b)
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<TimeInterval, String> {
        let raw: RawInterval = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        TimeInterval::parse(&raw).map(|(t, _)| t)
    }

    #[test]
    fn intervals_parse_and_contain_as_alertmanagers() {
        let nights = parse(
            "times: [{start_time: '22:00', end_time: '24:00'}]\nweekdays: ['monday:friday']\n",
        )
        .unwrap();
        // 2026-11-27 is a Friday.
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        assert!(nights.contains(at("2026-11-27T23:30:00Z")));
        assert!(!nights.contains(at("2026-11-27T21:59:00Z")));
        assert!(!nights.contains(at("2026-11-28T23:00:00Z")), "Saturday");
        let month_end =
            parse("days_of_month: ['-3:-1']\nmonths: ['november']\nyears: ['2026']\n").unwrap();
        assert!(month_end.contains(at("2026-11-29T12:00:00Z")));
        assert!(!month_end.contains(at("2026-11-27T12:00:00Z")));
        for (bad, why) in [
            ("weekdays: ['funday']", "not a valid weekday"),
            (
                "weekdays: ['friday:monday']",
                "start day cannot be before end day",
            ),
            (
                "times: [{start_time: '25:00', end_time: '26:00'}]",
                "invalid format",
            ),
            (
                "times: [{start_time: '10:00', end_time: '09:00'}]",
                "cannot be equal or greater",
            ),
            ("days_of_month: ['0']", "out of range"),
            ("days_of_month: ['-1:5']", "must be negative"),
            ("months: ['march:january']", "before start month"),
            ("location: 'Mars/Olympus'", "unknown time zone"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
