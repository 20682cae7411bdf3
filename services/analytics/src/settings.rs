//! A tenant's analytics settings (published as JSON, stored as events) and the spot-check
//! sample (抽查), a pure function of the data so a rebuild picks the same callbacks and
//! reviewers.

use uuid::Uuid;

pub use callback_contracts::analytics::AnalyticsSettings;

/// Checks a settings document, naming the field at fault.
pub fn validate_settings(settings: &AnalyticsSettings) -> Result<(), (String, String)> {
    if !(0.0..=1.0).contains(&settings.spot_check_rate) {
        return Err(("spot_check_rate".into(), "must be between 0 and 1".into()));
    }
    if settings.population == Some(0) {
        return Err(("population".into(), "must be at least 1".into()));
    }
    if let Some(i) = settings.reviewers.iter().position(|r| r.trim().is_empty()) {
        return Err((format!("reviewers[{i}]"), "must not be empty".into()));
    }
    Ok(())
}

/// FNV-1a, 64 bit, then MurmurHash3's finaliser so that inputs differing only in their last
/// characters still spread over the whole range: stable across versions and platforms (unlike
/// std's hasher).
fn fnv1a(text: &str) -> u64 {
    let mut h = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Whether a reached callback is in the month's re-check sample: a deterministic draw from
/// (tenant, month, callback), so every rebuild and every reader picks the same ones.
pub fn in_spot_check(tenant_id: &str, month: &str, callback_id: Uuid, rate: f64) -> bool {
    let draw = fnv1a(&format!("{tenant_id}\n{month}\n{callback_id}")) as f64 / u64::MAX as f64;
    draw < rate
}

/// The reviewer of a sampled callback: drawn from the reviewers other than the agent who made
/// the call; `None` when there is no such reviewer.
pub fn reviewer_for(callback_id: Uuid, agent_id: &str, reviewers: &[String]) -> Option<String> {
    let eligible: Vec<&String> = reviewers.iter().filter(|r| *r != agent_id).collect();
    if eligible.is_empty() {
        return None;
    }
    let pick = fnv1a(&format!("reviewer\n{callback_id}")) % eligible.len() as u64;
    Some(eligible[pick as usize].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_deterministic_and_near_the_rate() {
        let ids: Vec<Uuid> = (0..10_000u128).map(Uuid::from_u128).collect();
        let sampled = |rate: f64| {
            ids.iter()
                .filter(|id| in_spot_check("t", "2026-09", **id, rate))
                .count()
        };
        let n = sampled(0.2);
        assert!((1_800..=2_200).contains(&n), "{n} of 10,000 at 20%");
        assert_eq!(sampled(0.2), n);
        assert_eq!(sampled(0.0), 0);
        assert_eq!(sampled(1.0), 10_000);
    }

    #[test]
    fn the_agent_never_reviews_their_own_call() {
        let reviewers = vec!["sup-1".to_owned(), "sup-2".to_owned()];
        for i in 0..1_000u128 {
            let id = Uuid::from_u128(i);
            assert_eq!(
                reviewer_for(id, "sup-1", &reviewers).as_deref(),
                Some("sup-2")
            );
        }
        assert_eq!(reviewer_for(Uuid::nil(), "sup-1", &reviewers[..1]), None);
    }

    #[test]
    fn settings_are_checked() {
        let bad = AnalyticsSettings {
            spot_check_rate: 1.5,
            ..AnalyticsSettings::default()
        };
        assert_eq!(validate_settings(&bad).unwrap_err().0, "spot_check_rate");
        let bad = AnalyticsSettings {
            reviewers: vec![" ".into()],
            ..AnalyticsSettings::default()
        };
        assert_eq!(validate_settings(&bad).unwrap_err().0, "reviewers[0]");
    }
}
