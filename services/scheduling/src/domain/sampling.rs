//! Deterministic sampling ("call 5% of outpatients"): the same fact, policy and step are
//! always in or out of the sample, so a rebuild from the log picks exactly the same ones.

/// FNV-1a, 64 bit: tiny and stable across Rust versions and platforms (the standard library's
/// hasher is neither guaranteed).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// True when the item identified by `key` falls inside a sample of `rate` (0..=1).
pub fn in_sample(rate: f64, key: &[&str]) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    // The top 53 bits as a fraction in [0, 1).
    let fraction = (fnv1a(key) >> 11) as f64 / (1u64 << 53) as f64;
    fraction < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_close_to_the_rate() {
        let picked = (0..20_000)
            .filter(|i| in_sample(0.05, &["hospital", "outpatient-survey", &i.to_string()]))
            .count();
        assert!(
            (800..1200).contains(&picked),
            "picked {picked} of 20000 at 5%"
        );
        for i in 0..100 {
            let key = i.to_string();
            assert_eq!(in_sample(0.3, &["t", &key]), in_sample(0.3, &["t", &key]));
        }
        assert!(in_sample(1.0, &["any"]));
        assert!(!in_sample(0.0, &["any"]));
        // Part boundaries matter: ("ab", "c") and ("a", "bc") are different keys.
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }
}
