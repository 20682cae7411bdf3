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
