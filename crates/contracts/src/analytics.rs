//! Events of the analytics service.
//!
//! Category: `analytics_settings` ([`AnalyticsSettingsPublished`]).

use serde::{Deserialize, Serialize};

use crate::single_event;

pub const ANALYTICS_SETTINGS: &str = "analytics_settings";
/// Reserved for spot-check decisions; registered to analytics, no events yet.
pub const SPOT_CHECK: &str = "spot_check";
/// Every category analytics owns and serves on its feed.
pub const CATEGORIES: &[&str] = &[ANALYTICS_SETTINGS, SPOT_CHECK];

/// A new version of a tenant's analytics settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsSettingsPublished {
    pub tenant_id: String,
    pub settings: AnalyticsSettings,
}
single_event!(AnalyticsSettingsPublished, ANALYTICS_SETTINGS);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSettings {
    /// Below this many observations a rate or mean is marked "too few".
    #[serde(default = "default_min_sample")]
    pub min_sample: u64,
    /// Share of reached callbacks re-checked per department and month (e.g. 0.2).
    #[serde(default = "default_spot_check_rate")]
    pub spot_check_rate: f64,
    /// Supervisors who re-check; never the agent who made the call.
    #[serde(default)]
    pub reviewers: Vec<String>,
    /// Households, patients or customers served, for the valid-complaint rate per mille.
    #[serde(default)]
    pub population: Option<u64>,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        AnalyticsSettings {
            min_sample: default_min_sample(),
            spot_check_rate: default_spot_check_rate(),
            reviewers: Vec::new(),
            population: None,
        }
    }
}

fn default_min_sample() -> u64 {
    30
}

fn default_spot_check_rate() -> f64 {
    0.2
}
