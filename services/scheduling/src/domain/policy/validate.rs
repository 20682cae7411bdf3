//! Checks a policy before it is published, naming the field at fault.

use super::*;

pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        reason: reason.into(),
    }
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
            validate_timing(&step.timing, &at("timing"))?;
        }
        Ok(())
    }
}
