//! The one rule for the ids callers choose (tenants, sources, agents): short, plain ASCII, so
//! they are safe in stream names, logs and URLs.

/// Why `value` is not a valid id, or `None` when it is.
pub fn id_problem(value: &str) -> Option<&'static str> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    (!ok).then_some("must be 1-64 letters, digits, `-`, `_` or `.`")
}

#[cfg(test)]
mod tests {
    use super::id_problem;

    #[test]
    fn plain_short_ids_pass() {
        assert_eq!(id_problem("ward-5_a.1"), None);
        assert!(id_problem("").is_some());
        assert!(id_problem("病区").is_some());
        assert!(id_problem("a b").is_some());
        assert!(id_problem(&"x".repeat(65)).is_some());
    }
}
