//! Date arithmetic of policies: offsets from an anchor, the windows of repeating steps, the
//! dates of a cadence and anchors read from a fact's attributes. Every operation is checked:
//! a result past the calendar's range is `None` (no callback), never a panic.

use super::*;

#[derive(Clone, Copy)]
pub(super) enum Bound {
    Earliest,
    Latest,
}

pub(super) fn resolve_offset(
    calendar: &Calendar,
    base: DateTime<Utc>,
    offset: &Offset,
    bound: Bound,
) -> Option<DateTime<Utc>> {
    let base_date = calendar.local_date(base);
    let mut date = base_date.checked_add_months(Months::new(offset.months))?;
    if offset.working_days && offset.days > 0 {
        date = calendar.add_working_days(date, offset.days.unsigned_abs())?;
    } else {
        date = date.checked_add_signed(Duration::days(i64::from(offset.days)))?;
    }
    let from_anchor = offset.months == 0 && offset.days == 0 && offset.at.is_none();
    // Hour bounds are exact: "latest 24 hours" is 24 hours after the anchor (on the day the
    // months and days lead to, at the anchor's time). Only day bounds round to the day.
    let exact_hours = offset.at.is_none() && offset.hours > 0;
    let instant = match (offset.at, bound) {
        (None, _) if exact_hours => {
            base.checked_add_signed(Duration::days((date - base_date).num_days()))?
        }
        (None, _) if offset.working_hours > 0 && from_anchor => base,
        (Some(at), _) => calendar.resolve(date, at),
        (None, Bound::Earliest) if date == base_date => base,
        (None, Bound::Earliest) => calendar.resolve(date, TimeOfDay::MIDNIGHT),
        (None, Bound::Latest) => calendar.end_of_day(date),
    };
    let instant = instant.checked_add_signed(Duration::hours(i64::from(offset.hours)))?;
    if offset.working_hours == 0 {
        return Some(instant);
    }
    calendar.add_working_time(instant, Duration::hours(i64::from(offset.working_hours)))
}

/// The due window of a repeating step's occurrence on `date`: from the start of that day
/// until the end of `window_days` later (`None` past the calendar's range).
pub(super) fn occurrence_window(
    calendar: &Calendar,
    date: NaiveDate,
    window_days: u32,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let last = date.checked_add_signed(Duration::days(i64::from(window_days)))?;
    Some((
        calendar.resolve(date, TimeOfDay::MIDNIGHT),
        calendar.end_of_day(last),
    ))
}

/// The local date of a cadence's `occurrence`th callback, or `None` after its stop.
pub(super) fn cadence_date(
    calendar: &Calendar,
    fact: &BusinessFact,
    base: DateTime<Utc>,
    phases: &[Phase],
    occurrence: u32,
) -> Option<NaiveDate> {
    let start = calendar.local_date(base);
    let (mut months, mut days) = (0u32, 0u32);
    let mut produced = 0;
    for phase in phases {
        let end = phase_end(calendar, fact, start, phase)?;
        loop {
            let (next_months, next_days) = (
                months.checked_add(phase.every_months.unwrap_or(0))?,
                days.checked_add(phase.every_days.unwrap_or(0))?,
            );
            let date = start
                .checked_add_months(Months::new(next_months))?
                .checked_add_signed(Duration::days(i64::from(next_days)))?;
            if date > end {
                break;
            }
            (months, days) = (next_months, next_days);
            produced += 1;
            if produced == occurrence {
                return Some(date);
            }
            if produced >= MAX_OCCURRENCES {
                return None;
            }
        }
    }
    None
}

fn phase_end(
    calendar: &Calendar,
    fact: &BusinessFact,
    start: NaiveDate,
    phase: &Phase,
) -> Option<NaiveDate> {
    if let Some(months) = phase.until_months {
        return start.checked_add_months(Months::new(months));
    }
    if let Some(days) = phase.until_days {
        return start.checked_add_signed(Duration::days(i64::from(days)));
    }
    let name = phase.until_attribute.as_ref()?;
    attribute_instant(fact.attributes.get(name)?, calendar).map(|t| calendar.local_date(t))
}

/// An attribute holding an RFC 3339 date-time, or a date (meaning its local midnight), in the
/// years 1900 to 2200 (a warranty end, an appointment); anything else is not a usable anchor.
pub(super) fn attribute_instant(value: &Value, calendar: &Calendar) -> Option<DateTime<Utc>> {
    use chrono::Datelike;
    let text = value.as_str()?;
    let instant = match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => {
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
            if !(1900..=2200).contains(&date.year()) {
                return None;
            }
            calendar.resolve(date, TimeOfDay::MIDNIGHT)
        }
    };
    (1900..=2200).contains(&instant.year()).then_some(instant)
}
