//! Checks a policy before it is published, naming the field at fault.

use super::*;

pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The bounds of every number in a policy (documented in `docs/POLICIES.md`): generous for any
/// real plan, and small enough that no date arithmetic on them can overflow.
pub const MAX_OFFSET_MONTHS: u32 = 120;
pub const MAX_OFFSET_DAYS: i32 = 3660;
pub const MAX_OFFSET_HOURS: u32 = 8784;
pub const MAX_WORKING_HOURS: u32 = 2000;
pub const MAX_PERIOD_DAYS: u32 = 3660;
pub const MAX_PERIOD_MONTHS: u32 = 120;
pub const MAX_UNTIL_DAYS: u32 = 18_300;
pub const MAX_UNTIL_MONTHS: u32 = 600;
pub const MAX_WINDOW_DAYS: u32 = 366;
pub const MAX_POOL_AFTER_HOURS: u32 = 8760;
pub const MAX_SPACING_MINUTES: u32 = 43_200;

/// `value` of `field` must be at most `max`.
fn at_most<T: PartialOrd + std::fmt::Display>(
    field: impl Into<String>,
    value: T,
    max: T,
) -> Result<(), PolicyError> {
    if value > max {
        return Err(invalid(
            field,
            format!("must be at most {max}, got {value}"),
        ));
    }
    Ok(())
}

fn validate_offset(offset: &Offset, field: &str) -> Result<(), PolicyError> {
    at_most(format!("{field}.months"), offset.months, MAX_OFFSET_MONTHS)?;
    at_most(
        format!("{field}.days"),
        offset.days.unsigned_abs(),
        MAX_OFFSET_DAYS.unsigned_abs(),
    )?;
    at_most(format!("{field}.hours"), offset.hours, MAX_OFFSET_HOURS)?;
    at_most(
        format!("{field}.working_hours"),
        offset.working_hours,
        MAX_WORKING_HOURS,
    )
}

pub(super) fn validate_numbers(
    step: &Step,
    at: &dyn Fn(&str) -> String,
) -> Result<(), PolicyError> {
    if let Some(hours) = step.give_up_after_hours {
        at_most(at("give_up_after_hours"), hours, MAX_OFFSET_HOURS)?;
    }
    if let OwnerRule::SubjectOwner {
        pool_after_hours, ..
    } = &step.owner
    {
        at_most(
            at("owner.pool_after_hours"),
            *pool_after_hours,
            MAX_POOL_AFTER_HOURS,
        )?;
    }
    at_most(
        at("retry.default_spacing_minutes"),
        step.retry.default_spacing_minutes,
        MAX_SPACING_MINUTES,
    )?;
    for (disposition, minutes) in &step.retry.spacing_minutes {
        at_most(
            at(&format!("retry.spacing_minutes.{disposition}")),
            *minutes,
            MAX_SPACING_MINUTES,
        )?;
    }
    match &step.timing {
        Timing::Window {
            earliest, latest, ..
        } => {
            validate_offset(earliest, &at("timing.earliest"))?;
            validate_offset(latest, &at("timing.latest"))?;
        }
        Timing::Cadence {
            phases,
            window_days,
            ..
        } => {
            at_most(at("timing.window_days"), *window_days, MAX_WINDOW_DAYS)?;
            for (i, phase) in phases.iter().enumerate() {
                let field = |name: &str| at(&format!("timing.phases[{i}].{name}"));
                if let Some(days) = phase.every_days {
                    at_most(field("every_days"), days, MAX_PERIOD_DAYS)?;
                }
                if let Some(months) = phase.every_months {
                    at_most(field("every_months"), months, MAX_PERIOD_MONTHS)?;
                }
                if let Some(days) = phase.until_days {
                    at_most(field("until_days"), days, MAX_UNTIL_DAYS)?;
                }
                if let Some(months) = phase.until_months {
                    at_most(field("until_months"), months, MAX_UNTIL_MONTHS)?;
                }
            }
        }
        Timing::Growing {
            intervals_days,
            window_days,
            ..
        } => {
            at_most(at("timing.window_days"), *window_days, MAX_WINDOW_DAYS)?;
            for (i, days) in intervals_days.iter().enumerate() {
                at_most(
                    at(&format!("timing.intervals_days[{i}]")),
                    *days,
                    MAX_PERIOD_DAYS,
                )?;
            }
        }
        Timing::Holidays { .. } => {}
    }
    Ok(())
}

pub(super) fn validate_timing(timing: &Timing, field: &str) -> Result<(), PolicyError> {
    match timing {
        Timing::Window {
            anchor,
            earliest,
            latest,
        } => {
            validate_anchor(anchor, field)?;
            let minutes = |o: &Offset, bound: Bound| {
                let day_minutes = match (o.at, bound) {
                    (Some(at), _) => i64::from(at.minutes()),
                    // An exact hour bound counts from the anchor's time (taken as 0 here).
                    (None, _) if o.hours > 0 => 0,
                    (None, Bound::Earliest) => 0,
                    (None, Bound::Latest) => 24 * 60,
                };
                i64::from(o.months) * 31 * 1440
                    + i64::from(o.days) * 1440
                    + i64::from(o.hours) * 60
                    + day_minutes
            };
            if minutes(latest, Bound::Latest) <= minutes(earliest, Bound::Earliest) {
                return Err(invalid(
                    format!("{field}.latest"),
                    "the window ends before it starts",
                ));
            }
        }
        Timing::Cadence { anchor, phases, .. } => {
            validate_anchor(anchor, field)?;
            if phases.is_empty() {
                return Err(invalid(
                    format!("{field}.phases"),
                    "at least one phase is required",
                ));
            }
            for (i, phase) in phases.iter().enumerate() {
                let at = format!("{field}.phases[{i}]");
                match (phase.every_days, phase.every_months) {
                    (Some(d), None) if d > 0 => {}
                    (None, Some(m)) if m > 0 => {}
                    _ => {
                        return Err(invalid(
                            at,
                            "give exactly one of every_days or every_months, above 0",
                        ))
                    }
                }
                let ends = [
                    phase.until_days.is_some(),
                    phase.until_months.is_some(),
                    phase.until_attribute.is_some(),
                ]
                .iter()
                .filter(|e| **e)
                .count();
                if ends > 1 {
                    return Err(invalid(
                        at,
                        "give at most one of until_days, until_months, until_attribute",
                    ));
                }
                if ends == 0 {
                    return Err(invalid(
                        at,
                        "the cadence has no stop: give until_days, until_months or until_attribute",
                    ));
                }
            }
        }
        Timing::Growing {
            anchor,
            intervals_days,
            max_occurrences,
            ..
        } => {
            validate_anchor(anchor, field)?;
            if intervals_days.is_empty() || intervals_days.contains(&0) {
                return Err(invalid(
                    format!("{field}.intervals_days"),
                    "give at least one interval, each above 0",
                ));
            }
            if !(1..=MAX_OCCURRENCES).contains(max_occurrences) {
                return Err(invalid(
                    format!("{field}.max_occurrences"),
                    format!("the stop must be 1 to {MAX_OCCURRENCES}"),
                ));
            }
        }
        Timing::Holidays {
            anchor,
            max_occurrences,
        } => {
            validate_anchor(anchor, field)?;
            if !(1..=MAX_OCCURRENCES).contains(max_occurrences) {
                return Err(invalid(
                    format!("{field}.max_occurrences"),
                    format!("the stop must be 1 to {MAX_OCCURRENCES}"),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn validate_anchor(anchor: &Anchor, field: &str) -> Result<(), PolicyError> {
    if let Anchor::Attribute(name) = anchor {
        if name.trim().is_empty() {
            return Err(invalid(
                format!("{field}.anchor.attribute"),
                "must not be empty",
            ));
        }
    }
    Ok(())
}

impl Policy {
    /// Checks that the policy can be satisfied; every error names the field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let id_ok = !self.policy_id.is_empty()
            && self.policy_id.len() <= 64
            && self
                .policy_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !id_ok {
            return Err(invalid(
                "policy_id",
                "must be 1-64 letters, digits, `-` or `_`",
            ));
        }
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if self.trigger.event_type.trim().is_empty() {
            return Err(invalid("trigger.event_type", "must not be empty"));
        }
        for (i, filter) in self.trigger.filters.iter().enumerate() {
            if filter.attribute.is_empty() {
                return Err(invalid(
                    format!("trigger.filters[{i}].attribute"),
                    "must not be empty",
                ));
            }
        }
        if self.steps.is_empty() {
            return Err(invalid("steps", "at least one step is required"));
        }
        let mut names = HashSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = |field: &str| format!("steps[{i}].{field}");
            if step.name.trim().is_empty() || !names.insert(step.name.as_str()) {
                return Err(invalid(
                    at("name"),
                    "must be non-empty and unique in the policy",
                ));
            }
            if !(step.sample_rate > 0.0 && step.sample_rate <= 1.0) {
                return Err(invalid(
                    at("sample_rate"),
                    "must be greater than 0 and at most 1",
                ));
            }
            if step.priority > 9 {
                return Err(invalid(at("priority"), "must be 0 (most urgent) to 9"));
            }
            if !(1..=20).contains(&step.retry.max_attempts) {
                return Err(invalid(at("retry.max_attempts"), "must be 1 to 20"));
            }
            match &step.owner {
                OwnerRule::SubjectOwner { fallback_pool, .. }
                    if fallback_pool.trim().is_empty() =>
                {
                    return Err(invalid(at("owner.fallback_pool"), "must not be empty"));
                }
                OwnerRule::Pool { pool } if pool.trim().is_empty() => {
                    return Err(invalid(at("owner.pool"), "must not be empty"));
                }
                _ => {}
            }
            if i == 0 && *step.timing.anchor() == Anchor::PreviousStepEnd {
                return Err(invalid(
                    at("timing.anchor"),
                    "the first step has no previous step",
                ));
            }
            validate_numbers(step, &at)?;
            validate_timing(&step.timing, &at("timing"))?;
        }
        Ok(())
    }
}
