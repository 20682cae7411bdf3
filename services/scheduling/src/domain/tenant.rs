//! A tenant's settings, published as JSON: calendar, departments, agents and pools.

use callback_calendar::{Calendar, CalendarError, CalendarSpec};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub calendar: CalendarSpec,
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default)]
    pub agents: Vec<Agent>,
    /// Do not harass: the most call attempts one person gets across all policies.
    #[serde(default)]
    pub frequency_caps: FrequencyCaps,
}

/// Rolling limits on call attempts per person (subject) across all policies of a tenant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCaps {
    /// At most this many attempts in any 24 hours.
    #[serde(default)]
    pub per_day: Option<u32>,
    /// At most this many attempts in any 7 days.
    #[serde(default)]
    pub per_week: Option<u32>,
}

impl FrequencyCaps {
    /// When the next attempt may be made, given the subject's attempts (oldest first) in the
    /// last seven days before `now`; `None` when it may be made now.
    pub fn next_allowed_attempt(
        &self,
        attempts: &[chrono::DateTime<chrono::Utc>],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let mut free_at: Option<chrono::DateTime<chrono::Utc>> = None;
        for (cap, window) in [
            (self.per_day, chrono::Duration::days(1)),
            (self.per_week, chrono::Duration::days(7)),
        ] {
            let Some(cap) = cap else { continue };
            let in_window: Vec<_> = attempts
                .iter()
                .filter(|t| **t > now - window && **t <= now)
                .collect();
            if in_window.len() as u32 >= cap {
                // The window frees when enough of the oldest attempts in it have aged out.
                let index = in_window.len() - cap as usize;
                let frees = *in_window[index] + window;
                free_at = Some(free_at.map_or(frees, |f| f.max(frees)));
            }
        }
        free_at
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub agent_id: String,
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default)]
    pub pools: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl TenantSettings {
    /// Validates the settings and builds the calendar.
    pub fn validate(&self) -> Result<Calendar, SettingsError> {
        let calendar = Calendar::new(&self.calendar)?;
        let invalid = |field: String, reason: &str| SettingsError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        for (i, agent) in self.agents.iter().enumerate() {
            if agent.agent_id.trim().is_empty() {
                return Err(invalid(
                    format!("agents[{i}].agent_id"),
                    "must not be empty",
                ));
            }
            if self.agents[..i]
                .iter()
                .any(|a| a.agent_id == agent.agent_id)
            {
                return Err(invalid(format!("agents[{i}].agent_id"), "appears twice"));
            }
            for pool in &agent.pools {
                if !self.pools.contains(pool) {
                    return Err(invalid(
                        format!("agents[{i}].pools"),
                        "names a pool not in `pools`",
                    ));
                }
            }
            for department in &agent.departments {
                if !self.departments.contains(department) {
                    return Err(invalid(
                        format!("agents[{i}].departments"),
                        "names a department not in `departments`",
                    ));
                }
            }
        }
        Ok(calendar)
    }

    pub fn agent(&self, agent_id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.agent_id == agent_id)
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
        assert_eq!(caps.next_allowed_attempt(&[], t0), None);
        // One attempt at 09:00: the next may be made 24 hours later.
        assert_eq!(
            caps.next_allowed_attempt(&[t0], t0 + Duration::hours(3)),
            Some(t0 + Duration::days(1))
        );
        assert_eq!(
            caps.next_allowed_attempt(&[t0], t0 + Duration::days(1)),
            None
        );
        // Three attempts on three days: the week is full until the first ages out.
        let week = [t0, t0 + Duration::days(1), t0 + Duration::days(2)];
        assert_eq!(
            caps.next_allowed_attempt(&week, t0 + Duration::days(4)),
            Some(t0 + Duration::days(7))
        );
        assert_eq!(
            FrequencyCaps::default().next_allowed_attempt(&week, t0 + Duration::days(2)),
            None
        );
    }
}
