//! A tenant's working calendar: time zone, calling windows on working days, holidays, and
//! extra working days (China moves working days around public holidays: 调休).
//!
//! Everything here is a pure function of the calendar. Instants are UTC; windows are resolved
//! for each local date in the tenant's time zone, so daylight-saving gaps and overlaps are
//! handled in one place ([`Calendar::windows_on`]). Scheduling uses it for "first allowed call
//! time" and "N working days"; complaint routing for SLA clocks in working time.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How far ahead searches look before giving up (a calendar with no working day in two
/// years is treated as unsatisfiable).
const SEARCH_DAYS: i64 = 2 * 366;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error(
        "calendar.time_zone: unknown time zone `{0}` (use an IANA name such as Asia/Shanghai)"
    )]
    UnknownTimeZone(String),
    #[error("calendar.windows: at least one calling window is required")]
    NoWindows,
    #[error("calendar.windows[{index}]: {reason}")]
    InvalidWindow { index: usize, reason: String },
    #[error("calendar.working_weekdays: at least one weekday or extra working day is required")]
    NoWorkingDays,
    #[error("calendar: date {0} is both a holiday and an extra working day")]
    Contradiction(NaiveDate),
}

/// A local time of day with minute precision; `24:00` is allowed as a window end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    pub const MIDNIGHT: TimeOfDay = TimeOfDay(0);
    pub const END_OF_DAY: TimeOfDay = TimeOfDay(24 * 60);

    pub fn new(hour: u16, minute: u16) -> Option<TimeOfDay> {
        let minutes = hour.checked_mul(60)?.checked_add(minute)?;
        (minute < 60 && minutes <= 24 * 60).then_some(TimeOfDay(minutes))
    }

    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (h, m) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not HH:MM"))?;
        let (h, m) = (h.parse::<u16>(), m.parse::<u16>());
        match (h, m) {
            (Ok(h), Ok(m)) => TimeOfDay::new(h, m)
                .ok_or_else(|| format!("`{s}` is not a time from 00:00 to 24:00")),
            _ => Err(format!("`{s}` is not HH:MM")),
        }
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A daily calling window `[start, end)` in local time, e.g. 08:00-12:00.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

impl Window {
    pub fn new(start: TimeOfDay, end: TimeOfDay) -> Window {
        Window { start, end }
    }
}

/// A calendar as a tenant publishes it (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarSpec {
    pub time_zone: String,
    pub windows: Vec<Window>,
    /// Working weekdays when no holiday or extra working day says otherwise; Monday-Friday
    /// when absent.
    #[serde(default = "default_weekdays")]
    pub working_weekdays: Vec<Weekday>,
    #[serde(default)]
    pub holidays: Vec<NaiveDate>,
    /// Days that are working days although their weekday is not (调休).
    #[serde(default)]
    pub extra_working_days: Vec<NaiveDate>,
}

fn default_weekdays() -> Vec<Weekday> {
    vec![
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ]
}

/// A validated calendar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calendar {
    tz: Tz,
    windows: Vec<Window>,
    weekdays: [bool; 7],
    holidays: BTreeSet<NaiveDate>,
    extra_working_days: BTreeSet<NaiveDate>,
}

impl Calendar {
    pub fn new(spec: &CalendarSpec) -> Result<Calendar, CalendarError> {
        let tz: Tz = spec
            .time_zone
            .parse()
            .map_err(|_| CalendarError::UnknownTimeZone(spec.time_zone.clone()))?;
        if spec.windows.is_empty() {
            return Err(CalendarError::NoWindows);
        }
        let mut windows = spec.windows.clone();
        for (index, window) in windows.iter().enumerate() {
            if window.end <= window.start {
                return Err(CalendarError::InvalidWindow {
                    index,
                    reason: format!(
                        "ends at {} before it starts at {}",
                        window.end, window.start
                    ),
                });
            }
            if window.start == TimeOfDay::END_OF_DAY {
                return Err(CalendarError::InvalidWindow {
                    index,
                    reason: "cannot start at 24:00".into(),
                });
            }
        }
        windows.sort_by_key(|w| w.start);
        for (index, pair) in windows.windows(2).enumerate() {
            if pair[1].start < pair[0].end {
                return Err(CalendarError::InvalidWindow {
                    index: index + 1,
                    reason: format!("overlaps the window ending at {}", pair[0].end),
                });
            }
        }
        let mut weekdays = [false; 7];
        for day in &spec.working_weekdays {
            weekdays[day.num_days_from_monday() as usize] = true;
        }
        let holidays: BTreeSet<NaiveDate> = spec.holidays.iter().copied().collect();
        let extra: BTreeSet<NaiveDate> = spec.extra_working_days.iter().copied().collect();
        if let Some(date) = holidays.intersection(&extra).next() {
            return Err(CalendarError::Contradiction(*date));
        }
        if !weekdays.contains(&true) && extra.is_empty() {
            return Err(CalendarError::NoWorkingDays);
        }
        Ok(Calendar {
            tz,
            windows,
            weekdays,
            holidays,
            extra_working_days: extra,
        })
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The local date of an instant in the tenant's time zone.
    pub fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// Extra working days win over weekdays; holidays win over weekdays.
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        if self.extra_working_days.contains(&date) {
            return true;
        }
        if self.holidays.contains(&date) {
            return false;
        }
        self.weekdays[date.weekday().num_days_from_monday() as usize]
    }

    /// The instant a local wall-clock time on `date` means. In a DST gap the wall-clock time
    /// does not exist: the first instant after the gap is used. In an overlap, the earlier.
    pub fn resolve(&self, date: NaiveDate, time: TimeOfDay) -> DateTime<Utc> {
        let (date, minutes) = if time == TimeOfDay::END_OF_DAY {
            (date.succ_opt().unwrap_or(date), 0)
        } else {
            (date, time.minutes())
        };
        resolve_local(
            self.tz,
            NaiveDateTime::new(date, NaiveTime::MIN) + Duration::minutes(i64::from(minutes)),
        )
    }

    /// The calling windows of a local date as UTC intervals `[start, end)`; empty on a
    /// non-working day. A window collapsed by a DST change is skipped.
    pub fn windows_on(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.is_working_day(date) {
            return Vec::new();
        }
        self.windows
            .iter()
            .map(|w| (self.resolve(date, w.start), self.resolve(date, w.end)))
            .filter(|(start, end)| start < end)
            .collect()
    }

    /// True when `t` lies inside a calling window of a working day.
    pub fn is_allowed(&self, t: DateTime<Utc>) -> bool {
        self.windows_around(t)
            .any(|(start, end)| start <= t && t < end)
    }

    /// Windows of the local dates around `t` (a window may belong to the previous local date
    /// only when it ends at midnight, so the day before is checked too).
    fn windows_around(
        &self,
        t: DateTime<Utc>,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let date = self.local_date(t);
        [date.pred_opt(), Some(date)]
            .into_iter()
            .flatten()
            .flat_map(|d| self.windows_on(d))
    }

    /// The first instant at or after `t` when a call is allowed; `None` when the calendar
    /// allows none within two years.
    pub fn next_allowed(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = self.local_date(t).pred_opt()?;
        for offset in 0..SEARCH_DAYS {
            let date = first + Duration::days(offset);
            for (start, end) in self.windows_on(date) {
                if end > t {
                    return Some(start.max(t));
                }
            }
        }
        None
    }

    /// The `n`th working day after `date` (`n = 0` is `date` itself).
    pub fn add_working_days(&self, date: NaiveDate, n: u32) -> Option<NaiveDate> {
        let mut remaining = n;
        let mut day = date;
        let mut searched = 0;
        while remaining > 0 {
            day = day.succ_opt()?;
            searched += 1;
            if searched > SEARCH_DAYS * (i64::from(n) + 1) {
                return None;
            }
            if self.is_working_day(day) {
                remaining -= 1;
            }
        }
        Some(day)
    }

    /// Working time (inside calling windows of working days) in `[from, to)`.
    pub fn working_time_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        if to <= from {
            return Duration::zero();
        }
        let mut total = Duration::zero();
        let mut date = self
            .local_date(from)
            .pred_opt()
            .unwrap_or(self.local_date(from));
        let last = self.local_date(to);
        while date <= last {
            for (start, end) in self.windows_on(date) {
                let (s, e) = (start.max(from), end.min(to));
                if s < e {
                    total += e - s;
                }
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        total
    }

    /// The instant when `amount` of working time has elapsed after `from`; `None` only when
    /// the calendar has no working time at all for two years.
    pub fn add_working_time(&self, from: DateTime<Utc>, amount: Duration) -> Option<DateTime<Utc>> {
        if amount <= Duration::zero() {
            return Some(from);
        }
        let mut remaining = amount;
        let mut date = self.local_date(from).pred_opt()?;
        let mut days_without_time = 0;
        while days_without_time <= SEARCH_DAYS {
            days_without_time += 1;
            for (start, end) in self.windows_on(date) {
                if end <= from {
                    continue;
                }
                days_without_time = 0;
                let start = start.max(from);
                let available = end - start;
                if remaining <= available {
                    return Some(start + remaining);
                }
                remaining -= available;
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// The first holiday strictly after `date`.
    pub fn next_holiday(&self, date: NaiveDate) -> Option<NaiveDate> {
        self.holidays.range(date.succ_opt()?..).next().copied()
    }

    /// The same calendar with every day a working day (same windows and time zone), for calls
    /// that are made on weekends and holidays too.
    pub fn every_day(&self) -> Calendar {
        Calendar {
            tz: self.tz,
            windows: self.windows.clone(),
            weekdays: [true; 7],
            holidays: BTreeSet::new(),
            extra_working_days: BTreeSet::new(),
        }
    }

    /// The start of the local day after `date`'s, as an instant (the end of `date`).
    pub fn end_of_day(&self, date: NaiveDate) -> DateTime<Utc> {
        self.resolve(date, TimeOfDay::END_OF_DAY)
    }
}

/// The instant a local wall-clock time means in `tz`. In a DST gap the wall-clock time does not
/// exist: the first instant after the gap is used. In an overlap, the earlier.
pub fn resolve_local(tz: Tz, mut local: NaiveDateTime) -> DateTime<Utc> {
    // Gaps are at most a day (Samoa skipped 30 December 2011); step forward to their end.
    for _ in 0..(25 * 60) {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earlier, _) => return earlier.with_timezone(&Utc),
            LocalResult::None => local += Duration::minutes(1),
        }
    }
    Utc.from_utc_datetime(&local)
}

/// The instant a local date begins in `tz` (see [`resolve_local`] for days that begin in a
/// DST gap or overlap).
pub fn start_of_local_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    resolve_local(tz, NaiveDateTime::new(date, NaiveTime::MIN))
}
