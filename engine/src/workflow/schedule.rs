//! Cron schedules declared next to their workflow: when a run starts, and with which input.
//!
//! Expressions have 5 fields (`min hour dom month dow`, crontab) or 6 (seconds first), with an
//! optional 7th (year), or an alias (`@daily`, `@hourly`, …). Day-of-week numbers follow
//! crontab in every form: 0 or 7 is Sunday, 1 is Monday; names (`MON-FRI`) work too. Each tick's
//! run receives the tick's data interval `[start, end)`: from the previous tick to this one.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One firing of a schedule, and the data interval it covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tick {
    /// The schedule's name.
    pub schedule: String,
    /// Start of the interval (the previous tick), inclusive.
    pub start: DateTime<Utc>,
    /// End of the interval (this tick), exclusive.
    pub end: DateTime<Utc>,
}

/// How a schedule fires. Built with [`ScheduleSpec::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// Unique name of the schedule (also the key of its configuration override).
    pub name: String,
    /// The cron expression.
    pub cron: String,
    /// IANA time zone the expression is read in. Default: `UTC`.
    pub timezone: String,
    /// After downtime, at most this many missed ticks are caught up (the newest ones), besides
    /// the current one; older ones are skipped. Default: 3.
    pub catch_up: u32,
}

impl ScheduleSpec {
    /// A schedule named `name` firing on `cron`, in UTC, catching up at most 3 missed ticks.
    pub fn new(name: &str, cron: &str) -> Self {
        Self {
            name: name.to_owned(),
            cron: cron.to_owned(),
            timezone: "UTC".to_owned(),
            catch_up: 3,
        }
    }

    /// Reads the expression in this IANA time zone (e.g. `America/Caracas`).
    pub fn timezone(mut self, tz: &str) -> Self {
        self.timezone = tz.to_owned();
        self
    }

    /// Catches up at most `n` missed ticks (0: skip all missed ticks).
    pub fn catch_up(mut self, n: u32) -> Self {
        self.catch_up = n;
        self
    }
}

pub(crate) type InputFn = Arc<dyn Fn(&Tick) -> Result<Value, String> + Send + Sync>;

/// A validated schedule of a workflow.
#[derive(Clone)]
pub struct Schedule {
    pub(crate) spec: ScheduleSpec,
    pub(crate) cron: cron::Schedule,
    pub(crate) tz: chrono_tz::Tz,
    pub(crate) input: InputFn,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("spec", &self.spec)
            .finish()
    }
}

impl Schedule {
    /// Validates `spec`.
    ///
    /// # Errors
    /// A message naming what is wrong with the expression or the time zone.
    pub(crate) fn new(spec: ScheduleSpec, input: InputFn) -> Result<Self, String> {
        let cron = parse_cron(&spec.cron)?;
        let tz = chrono_tz::Tz::from_str(&spec.timezone)
            .map_err(|_| format!("unknown time zone {:?}", spec.timezone))?;
        Ok(Self {
            spec,
            cron,
            tz,
            input,
        })
    }

    /// The schedule's settings.
    pub fn spec(&self) -> &ScheduleSpec {
        &self.spec
    }

    /// The same schedule with another expression, zone or catch-up (a configuration override).
    ///
    /// # Errors
    /// As [`Schedule::new`].
    pub(crate) fn with_spec(&self, spec: ScheduleSpec) -> Result<Self, String> {
        Self::new(spec, self.input.clone())
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last tick strictly before `t`.
    pub fn previous_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&t.with_timezone(&self.tz))
            .next_back()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The ticks in `(after, now]` to fire, oldest first, keeping the current tick and at most
    /// `catch_up` missed ones; also returns how many older ticks were skipped.
    pub fn due(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> (Vec<DateTime<Utc>>, usize) {
        let mut ticks = Vec::new();
        let mut t = after;
        // Bounded: a very long downtime on a per-second schedule is not replayed tick by tick.
        while let Some(next) = self.next_after(t) {
            if next > now || ticks.len() >= 100_000 {
                break;
            }
            ticks.push(next);
            t = next;
        }
        let keep = self.spec.catch_up as usize + 1;
        let skipped = ticks.len().saturating_sub(keep);
        (ticks.split_off(skipped), skipped)
    }

    /// The tick and its interval.
    pub fn tick(&self, at: DateTime<Utc>) -> Tick {
        let start = self.previous_before(at).unwrap_or(at);
        Tick {
            schedule: self.spec.name.clone(),
            start,
            end: at,
        }
    }

    /// The run input for a tick.
    ///
    /// # Errors
    /// When the input function's value does not encode.
    pub fn input(&self, tick: &Tick) -> Result<Value, String> {
        (self.input)(tick)
    }
}

/// Parses a 5-, 6- or 7-field expression or an alias, with crontab day-of-week numbers.
///
/// ```
/// let every_15 = tributary::workflow::parse_cron("*/15 * * * *").unwrap();
/// assert!(tributary::workflow::parse_cron("61 * * * *").is_err());
/// # let _ = every_15;
/// ```
///
/// # Errors
/// A message naming the problem.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let expr = expr.trim();
    let normalised = if expr.starts_with('@') {
        expr.to_owned()
    } else {
        let mut fields: Vec<String> = expr.split_whitespace().map(str::to_owned).collect();
        match fields.len() {
            5 => fields.insert(0, "0".to_owned()),
            6 | 7 => {}
            n => {
                return Err(format!(
                    "{expr:?} has {n} fields; expected 5 (crontab), 6 (with seconds) or 7 (with year)"
                ));
            }
        }
        fields[5] = crontab_weekdays(&fields[5])?;
        // `cron` wants `?` in one of the two day fields when the other is restricted; crontab
        // writes `*` there. A `*` day-of-month with a restricted weekday is the crontab meaning.
        fields.join(" ")
    };
    cron::Schedule::from_str(&normalised)
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
}

/// Translates crontab weekday numbers (0 or 7 = Sunday … 6 = Saturday) to the Quartz numbers
/// the `cron` crate reads (1 = Sunday … 7 = Saturday). Names, `*` and `?` pass unchanged.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    if field.chars().any(|c| c.is_ascii_alphabetic()) || field.starts_with('*') || field == "?" {
        return Ok(field.to_owned());
    }
    let mut days = std::collections::BTreeSet::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("bad step in day-of-week {field:?}"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = match range.split_once('-') {
            Some((a, b)) => (a, b),
            None if step > 1 => (range, "6"),
            None => (range, range),
        };
        let parse = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|n| *n <= 7)
                .ok_or_else(|| format!("bad day-of-week {field:?}: use 0-7 or names"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b || step == 0 {
            return Err(format!("bad day-of-week range {part:?}"));
        }
        days.extend((a..=b).step_by(step as usize).map(|d| d % 7 + 1));
    }
    Ok(days
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn schedule(cron: &str, tz: &str) -> Schedule {
        let spec = ScheduleSpec::new("s", cron).timezone(tz);
        Schedule::new(
            spec,
            Arc::new(|t: &Tick| Ok(serde_json::to_value(t).unwrap())),
        )
        .unwrap()
    }

    #[test]
    fn five_field_expressions_fire_on_the_minute() {
        let s = schedule("*/15 * * * *", "UTC");
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 10, 7, 30).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 11, 28, 10, 15, 0).unwrap())
        );
        let tick = s.tick(Utc.with_ymd_and_hms(2026, 11, 28, 10, 15, 0).unwrap());
        assert_eq!(
            tick.start,
            Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
        );
    }

    #[test]
    fn weekday_numbers_follow_crontab() {
        // 1-5 is Monday to Friday; 0 and 7 are Sunday.
        let s = schedule("0 6 * * 1-5", "UTC");
        let saturday = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        assert_eq!(saturday.weekday(), Weekday::Sat);
        assert_eq!(s.next_after(saturday).unwrap().weekday(), Weekday::Mon);
        for sunday in ["0 6 * * 0", "0 6 * * 7", "0 6 * * SUN"] {
            assert_eq!(
                schedule(sunday, "UTC")
                    .next_after(saturday)
                    .unwrap()
                    .weekday(),
                Weekday::Sun,
                "{sunday}"
            );
        }
        // Friday to Sunday (5-7) after Saturday noon: Sunday 06:00.
        assert_eq!(
            schedule("0 6 * * 5-7", "UTC")
                .next_after(saturday)
                .unwrap()
                .weekday(),
            Weekday::Sun
        );
    }

    #[test]
    fn six_fields_and_time_zones_are_honoured() {
        let s = schedule("30 0 9 * * *", "America/Caracas"); // 09:00:30 in Caracas = 13:00:30 UTC
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
        let next = s.next_after(t).unwrap();
        assert_eq!((next.hour(), next.minute(), next.second()), (13, 0, 30));
    }

    #[test]
    fn invalid_expressions_and_zones_are_rejected_with_the_reason() {
        assert!(parse_cron("* * *").unwrap_err().contains("3 fields"));
        assert!(parse_cron("0 6 * * 8").unwrap_err().contains("day-of-week"));
        assert!(parse_cron("99 * * * *").is_err());
        let spec = ScheduleSpec::new("s", "* * * * *").timezone("Mars/Olympus");
        assert!(
            Schedule::new(spec, Arc::new(|_| Ok(Value::Null)))
                .unwrap_err()
                .contains("Mars/Olympus")
        );
    }

    #[test]
    fn missed_ticks_beyond_the_catch_up_are_skipped() {
        let s = schedule("0 * * * *", "UTC"); // hourly, catch up 3
        let after = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 10, 30, 0).unwrap();
        let (due, skipped) = s.due(after, now);
        assert_eq!(skipped, 6);
        assert_eq!(due.first().unwrap().hour(), 7);
        assert_eq!(due.last().unwrap().hour(), 10);
        let none = Schedule::new(
            ScheduleSpec::new("s", "0 * * * *").catch_up(0),
            s.input.clone(),
        )
        .unwrap();
        assert_eq!(none.due(after, now).0.len(), 1, "only the current tick");
    }
}
