//! A tenant's settings, published as JSON: calendar, departments, agents and pools.

use callback_calendar::{Calendar, CalendarError};

pub use callback_contracts::scheduling::{Agent, FrequencyCaps, TenantSettings};

/// When the next attempt on a subject may be made under `caps`, given the subject's attempts
/// (oldest first) in the last seven days before `now`; `None` when it may be made now.
pub fn next_allowed_attempt(
    caps: &FrequencyCaps,
    attempts: &[chrono::DateTime<chrono::Utc>],
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut free_at: Option<chrono::DateTime<chrono::Utc>> = None;
    for (cap, window) in [
        (caps.per_day, chrono::Duration::days(1)),
        (caps.per_week, chrono::Duration::days(7)),
    ] {
        let Some(cap) = cap else { continue };
        let in_window: Vec<_> = attempts
            .iter()
            .filter(|t| **t > now - window && **t <= now)
            .collect();
        if cap > 0 && in_window.len() as u32 >= cap {
            // The window frees when enough of the oldest attempts in it have aged out.
            let index = in_window.len() - cap as usize;
            let frees = *in_window[index] + window;
            free_at = Some(free_at.map_or(frees, |f| f.max(frees)));
        }
    }
    free_at
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// Validates the settings and builds the calendar.
pub fn validate_settings(settings: &TenantSettings) -> Result<Calendar, SettingsError> {
    {
        let calendar = Calendar::new(&settings.calendar)?;
        let invalid = |field: String, reason: &str| SettingsError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if settings.max_leases_per_agent.is_some_and(|n| n > 10_000) {
            return Err(invalid(
                "max_leases_per_agent".into(),
                "must be 0 (no limit) to 10000 callbacks",
            ));
        }
        if let Some(problem) = settings
            .phone_region
            .as_deref()
            .and_then(callback_rules::phone::region_problem)
        {
            return Err(invalid("phone_region".into(), problem));
        }
        for (field, cap) in [
            ("frequency_caps.per_day", settings.frequency_caps.per_day),
            ("frequency_caps.per_week", settings.frequency_caps.per_week),
        ] {
            if cap.is_some_and(|n| !(1..=100).contains(&n)) {
                return Err(invalid(field.into(), "must be 1-100 attempts"));
            }
        }
        for (i, agent) in settings.agents.iter().enumerate() {
            if agent.agent_id.trim().is_empty() {
                return Err(invalid(
                    format!("agents[{i}].agent_id"),
                    "must not be empty",
                ));
            }
            if settings.agents[..i]
                .iter()
                .any(|a| a.agent_id == agent.agent_id)
            {
                return Err(invalid(format!("agents[{i}].agent_id"), "appears twice"));
            }
            for pool in &agent.pools {
                if !settings.pools.contains(pool) {
                    return Err(invalid(
                        format!("agents[{i}].pools"),
                        "names a pool not in `pools`",
                    ));
                }
            }
            for department in &agent.departments {
                if !settings.departments.contains(department) {
                    return Err(invalid(
                        format!("agents[{i}].departments"),
                        "names a department not in `departments`",
                    ));
                }
            }
        }
        Ok(calendar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn caps_defer_until_the_oldest_attempt_ages_out() {
        let caps = FrequencyCaps {
            per_day: Some(1),
            per_week: Some(3),
        };
        let t0 = Utc.with_ymd_and_hms(2026, 9, 7, 9, 0, 0).unwrap();
        assert_eq!(next_allowed_attempt(&caps, &[], t0), None);
        // One attempt at 09:00: the next may be made 24 hours later.
        assert_eq!(
            next_allowed_attempt(&caps, &[t0], t0 + Duration::hours(3)),
            Some(t0 + Duration::days(1))
        );
        assert_eq!(
            next_allowed_attempt(&caps, &[t0], t0 + Duration::days(1)),
            None
        );
        // Three attempts on three days: the week is full until the first ages out.
        let week = [t0, t0 + Duration::days(1), t0 + Duration::days(2)];
        assert_eq!(
            next_allowed_attempt(&caps, &week, t0 + Duration::days(4)),
            Some(t0 + Duration::days(7))
        );
        assert_eq!(
            next_allowed_attempt(&FrequencyCaps::default(), &week, t0 + Duration::days(2)),
            None
        );
    }
}
