//! Cron expressions of function schedules: the standard 5 fields (minute hour day-of-month
//! month day-of-week, UTC), or 6 with a leading seconds field (an extension, for tests and
//! sub-minute schedules). Each field takes `*`, numbers, `a-b` ranges, `/n` steps and `,`
//! lists; day-of-week 0 and 7 are Sunday. As in cron, when both day fields are restricted a
//! day matches either.

use chrono::{Datelike, Timelike};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

fn field(spec: &str, min: u32, max: u32, name: &str) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| format!("bad step in {name} field {part:?}"))?),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = a.parse::<u32>().map_err(|_| format!("bad {name} {a:?}"))?;
            let b = b.parse::<u32>().map_err(|_| format!("bad {name} {b:?}"))?;
            (a, b)
        } else {
            let v = range.parse::<u32>().map_err(|_| format!("bad {name} {range:?}"))?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{name} must be within {min}-{max}: {part:?}"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, spec != "*"))
}

impl Schedule {
    /// Parses a 5- or 6-field expression.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let f: Vec<&str> = expr.split_whitespace().collect();
        let (sec, rest) = match f.len() {
            5 => ("0", &f[..]),
            6 => (f[0], &f[1..]),
            _ => return Err("a schedule has 5 fields (minute hour day month weekday), or 6 with seconds first".into()),
        };
        let (seconds, _) = field(sec, 0, 59, "second")?;
        let (minutes, _) = field(rest[0], 0, 59, "minute")?;
        let (hours, _) = field(rest[1], 0, 23, "hour")?;
        let (days, days_restricted) = field(rest[2], 1, 31, "day of month")?;
        let (months, _) = field(rest[3], 1, 12, "month")?;
        let (mut weekdays, weekdays_restricted) = field(rest[4], 0, 7, "day of week")?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Schedule { seconds, minutes, hours, days, months, weekdays, days_restricted, weekdays_restricted })
    }

    /// True when the schedule fires at this second (UTC).
    pub fn matches(&self, t: chrono::DateTime<chrono::Utc>) -> bool {
        let has = |bits: u64, v: u32| bits & (1 << v) != 0;
        let day = has(self.days, t.day());
        let weekday = has(self.weekdays, t.weekday().num_days_from_sunday());
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            _ => day && weekday,
        };
        has(self.seconds, t.second()) && has(self.minutes, t.minute()) && has(self.hours, t.hour()) && has(self.months, t.month()) && day_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        let s = Schedule::parse("*/15 9-17 * * 1-5").unwrap();
        assert!(s.matches(at(2026, 11, 23, 9, 30, 0))); // a Monday
        assert!(!s.matches(at(2026, 11, 23, 9, 30, 1)));
        assert!(!s.matches(at(2026, 11, 23, 9, 31, 0)));
        assert!(!s.matches(at(2026, 11, 22, 9, 30, 0))); // a Sunday
        assert!(!s.matches(at(2026, 11, 23, 18, 0, 0)));
    }

    #[test]
    fn six_fields_have_seconds_and_sunday_is_0_or_7() {
        let s = Schedule::parse("*/2 * * * * 7").unwrap();
        assert!(s.matches(at(2026, 11, 22, 1, 2, 4)));
        assert!(!s.matches(at(2026, 11, 22, 1, 2, 5)));
        assert!(!s.matches(at(2026, 11, 23, 1, 2, 4)));
    }

    #[test]
    fn restricted_day_fields_match_either() {
        let s = Schedule::parse("0 0 1 * 1").unwrap();
        assert!(s.matches(at(2026, 12, 1, 0, 0, 0))); // the 1st (a Tuesday)
        assert!(s.matches(at(2026, 11, 23, 0, 0, 0))); // a Monday
        assert!(!s.matches(at(2026, 11, 24, 0, 0, 0)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "*/0 * * * *", "a * * * *", "5-1 * * * *", "* * * * * * *"] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?}");
        }
    }
}
