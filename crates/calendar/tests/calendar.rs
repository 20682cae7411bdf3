#![allow(clippy::unwrap_used)]

use callback_calendar::{Calendar, CalendarError, CalendarSpec, TimeOfDay, Window};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc, Weekday};
use proptest::prelude::*;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn window(a: &str, b: &str) -> Window {
    Window::new(a.parse().unwrap(), b.parse().unwrap())
}

fn local(cal: &Calendar, y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    cal.time_zone()
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

/// A hospital in Shanghai: 08:00-12:00 and 13:30-17:30; National Day 2026 is Oct 1-7 with
/// Sunday Sep 27 and Saturday Oct 10 worked instead (调休).
fn hospital() -> Calendar {
    Calendar::new(&CalendarSpec {
        time_zone: "Asia/Shanghai".into(),
        windows: vec![window("08:00", "12:00"), window("13:30", "17:30")],
        working_weekdays: vec![
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ],
        holidays: (1..=7).map(|d| date(2026, 10, d)).collect(),
        extra_working_days: vec![date(2026, 9, 27), date(2026, 10, 10)],
    })
    .unwrap()
}

#[test]
fn next_allowed_skips_the_lunch_break_evenings_holidays_and_uses_adjusted_days() {
    let cal = hospital();
    // Lunch break: wait for 13:30.
    assert_eq!(
        cal.next_allowed(local(&cal, 2026, 9, 22, 12, 15)),
        Some(local(&cal, 2026, 9, 22, 13, 30))
    );
    // Inside a window: now.
    let t = local(&cal, 2026, 9, 22, 9, 7);
    assert_eq!(cal.next_allowed(t), Some(t));
    // Saturday Sep 26 evening: Sunday Sep 27 is a working day (调休).
    assert_eq!(
        cal.next_allowed(local(&cal, 2026, 9, 26, 18, 0)),
        Some(local(&cal, 2026, 9, 27, 8, 0))
    );
    // Sep 30 after hours: the holiday week is skipped, Thursday Oct 8.
    assert_eq!(
        cal.next_allowed(local(&cal, 2026, 9, 30, 17, 30)),
        Some(local(&cal, 2026, 10, 8, 8, 0))
    );
    assert!(!cal.is_working_day(date(2026, 10, 3)));
    assert!(cal.is_working_day(date(2026, 10, 10)));
}

#[test]
fn working_days_count_across_a_holiday_that_spans_a_weekend() {
    let cal = hospital();
    // From Wed Sep 30: Oct 8 (Thu), 9 (Fri), 10 (Sat, worked), 12 (Mon).
    assert_eq!(
        cal.add_working_days(date(2026, 9, 30), 1),
        Some(date(2026, 10, 8))
    );
    assert_eq!(
        cal.add_working_days(date(2026, 9, 30), 3),
        Some(date(2026, 10, 10))
    );
    assert_eq!(
        cal.add_working_days(date(2026, 9, 30), 4),
        Some(date(2026, 10, 12))
    );
    assert_eq!(
        cal.add_working_days(date(2026, 9, 30), 0),
        Some(date(2026, 9, 30))
    );
}

#[test]
fn working_time_clocks_stop_outside_windows() {
    let cal = hospital();
    // 24 working hours from Friday Sep 25 16:00: 1.5 h on Friday, none on Saturday, 8 h on
    // Sunday Sep 27 (worked, 调休), 8 h Monday, then Tuesday 4 h in the morning and 2.5 h
    // after the lunch break: Tuesday 16:00.
    let from = local(&cal, 2026, 9, 25, 16, 0);
    let due = cal.add_working_time(from, Duration::hours(24)).unwrap();
    assert_eq!(due, local(&cal, 2026, 9, 29, 16, 0));
    assert_eq!(cal.working_time_between(from, due), Duration::hours(24));
}

#[test]
fn daylight_saving_gaps_and_midnight_windows() {
    let cal = Calendar::new(&CalendarSpec {
        time_zone: "America/New_York".into(),
        windows: vec![window("01:30", "03:30"), window("20:00", "24:00")],
        working_weekdays: vec![Weekday::Sun, Weekday::Mon],
        holidays: vec![],
        extra_working_days: vec![],
    })
    .unwrap();
    // 2026-03-08 (Sunday): clocks jump from 02:00 to 03:00, so 01:30-03:30 lasts one hour.
    let windows = cal.windows_on(date(2026, 3, 8));
    assert_eq!(windows[0].1 - windows[0].0, Duration::hours(1));
    // The midnight window runs to the start of Monday.
    let late = local(&cal, 2026, 3, 8, 23, 59);
    assert!(cal.is_allowed(late));
    assert!(!cal.is_allowed(late + Duration::minutes(1)));
    // 2026-11-01 (Sunday): 01:00-02:00 happens twice; the window is three hours long.
    let windows = cal.windows_on(date(2026, 11, 1));
    assert_eq!(windows[0].1 - windows[0].0, Duration::hours(3));
}

#[test]
fn invalid_calendars_name_the_problem() {
    let base = CalendarSpec {
        time_zone: "Asia/Shanghai".into(),
        windows: vec![window("08:00", "12:00")],
        working_weekdays: vec![Weekday::Mon],
        holidays: vec![],
        extra_working_days: vec![],
    };
    let bad_tz = CalendarSpec {
        time_zone: "Mars/Olympus".into(),
        ..base.clone()
    };
    assert_eq!(
        Calendar::new(&bad_tz),
        Err(CalendarError::UnknownTimeZone("Mars/Olympus".into()))
    );
    let empty = CalendarSpec {
        windows: vec![],
        ..base.clone()
    };
    assert_eq!(Calendar::new(&empty), Err(CalendarError::NoWindows));
    let inverted = CalendarSpec {
        windows: vec![window("12:00", "08:00")],
        ..base.clone()
    };
    assert!(matches!(
        Calendar::new(&inverted),
        Err(CalendarError::InvalidWindow { index: 0, .. })
    ));
    let overlapping = CalendarSpec {
        windows: vec![window("08:00", "12:00"), window("11:00", "13:00")],
        ..base.clone()
    };
    assert!(matches!(
        Calendar::new(&overlapping),
        Err(CalendarError::InvalidWindow { index: 1, .. })
    ));
    let no_days = CalendarSpec {
        working_weekdays: vec![],
        ..base.clone()
    };
    assert_eq!(Calendar::new(&no_days), Err(CalendarError::NoWorkingDays));
    let both = CalendarSpec {
        holidays: vec![date(2026, 1, 5)],
        extra_working_days: vec![date(2026, 1, 5)],
        ..base
    };
    assert_eq!(
        Calendar::new(&both),
        Err(CalendarError::Contradiction(date(2026, 1, 5)))
    );
    assert!("24:01".parse::<TimeOfDay>().is_err());
    assert!("7".parse::<TimeOfDay>().is_err());
}

#[test]
fn a_calendar_round_trips_through_json() {
    let json = r#"{"time_zone":"Asia/Shanghai","windows":[{"start":"08:00","end":"12:00"},{"start":"13:30","end":"17:30"}],
                   "holidays":["2026-10-01"],"extra_working_days":["2026-09-27"]}"#;
    let spec: CalendarSpec = serde_json::from_str(json).unwrap();
    assert_eq!(spec.working_weekdays.len(), 5, "Monday-Friday by default");
    let back: CalendarSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(spec, back);
}

// ---- properties ----

const ZONES: [&str; 4] = [
    "Asia/Shanghai",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
];

fn calendar_strategy() -> impl Strategy<Value = Calendar> {
    spec_and_calendar().prop_map(|(_, calendar)| calendar)
}

fn spec_and_calendar() -> impl Strategy<Value = (CalendarSpec, Calendar)> {
    let zone = prop::sample::select(ZONES.to_vec());
    // 2-6 sorted distinct boundaries in 15-minute steps, paired into windows; may end at 24:00.
    let windows = prop::collection::btree_set(0u16..=96, 2..=6).prop_map(|set| {
        let points: Vec<u16> = set.into_iter().collect();
        points
            .chunks_exact(2)
            .map(|p| Window::new(minutes(p[0] * 15), minutes(p[1] * 15)))
            .collect::<Vec<_>>()
    });
    let weekdays = prop::collection::btree_set(0u8..7, 1..=7);
    // Holiday runs (possibly spanning weekends) and scattered extra working days in 2026-2027.
    let holidays = prop::collection::vec((0i64..700, 1i64..10), 0..6);
    let extras = prop::collection::vec(0i64..700, 0..6);
    (zone, windows, weekdays, holidays, extras).prop_filter_map(
        "valid calendar",
        |(zone, windows, weekdays, holidays, extras)| {
            let origin = date(2026, 1, 1);
            let holidays: Vec<NaiveDate> = holidays
                .iter()
                .flat_map(|(start, len)| (0..*len).map(move |i| origin + Duration::days(start + i)))
                .collect();
            let extras: Vec<NaiveDate> = extras
                .iter()
                .map(|d| origin + Duration::days(*d))
                .filter(|d| !holidays.contains(d))
                .collect();
            let spec = CalendarSpec {
                time_zone: zone.to_owned(),
                windows,
                working_weekdays: weekdays
                    .into_iter()
                    .map(|d| Weekday::try_from(d).unwrap())
                    .collect(),
                holidays,
                extra_working_days: extras,
            };
            Calendar::new(&spec).ok().map(|calendar| (spec, calendar))
        },
    )
}

fn minutes(m: u16) -> TimeOfDay {
    TimeOfDay::new(m / 60, m % 60).unwrap()
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // Any minute of 2026 and 2027, plus a few seconds so non-minute instants appear too.
    (0i64..(730 * 24 * 60), 0i64..60).prop_map(|(m, s)| {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
            + Duration::minutes(m)
            + Duration::seconds(s)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn next_allowed_is_allowed_and_nothing_earlier_is(cal in calendar_strategy(), t in instant()) {
        let next = cal.next_allowed(t).expect("a valid calendar always has a next window");
        prop_assert!(next >= t);
        prop_assert!(cal.is_allowed(next));
        prop_assert_eq!(cal.working_time_between(t, next), Duration::zero());
        prop_assert_eq!(cal.is_allowed(t), next == t);
    }

    #[test]
    fn adding_working_time_is_measured_back_exactly(cal in calendar_strategy(), t in instant(), hours in 0i64..200, mins in 0i64..60) {
        let amount = Duration::hours(hours) + Duration::minutes(mins);
        let due = cal.add_working_time(t, amount).expect("reachable");
        prop_assert!(due >= t);
        prop_assert_eq!(cal.working_time_between(t, due), amount);
    }

    #[test]
    fn adding_working_days_lands_on_the_nth_working_day(cal in calendar_strategy(), start in 0i64..700, n in 1u32..30) {
        let from = date(2026, 1, 1) + Duration::days(start);
        let to = cal.add_working_days(from, n).expect("reachable");
        prop_assert!(cal.is_working_day(to));
        let mut counted = 0;
        let mut d = from;
        while d < to {
            d = d.succ_opt().unwrap();
            if cal.is_working_day(d) { counted += 1; }
        }
        prop_assert_eq!(counted, n);
    }

    #[test]
    fn extra_days_beat_holidays_beat_weekdays((spec, cal) in spec_and_calendar(), day in 0i64..700) {
        let d = date(2026, 1, 1) + Duration::days(day);
        let expected = if spec.extra_working_days.contains(&d) {
            true
        } else if spec.holidays.contains(&d) {
            false
        } else {
            spec.working_weekdays.contains(&chrono::Datelike::weekday(&d))
        };
        prop_assert_eq!(cal.is_working_day(d), expected);
        let windows = cal.windows_on(d);
        if !expected {
            prop_assert!(windows.is_empty());
        }
        for (s, e) in &windows {
            prop_assert!(s < e);
            prop_assert_eq!(cal.local_date(*s), d, "a window starts on its own local date");
        }
    }
}
