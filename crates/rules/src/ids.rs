//! The shared rules for what callers hand in: the ids they choose (tenants, sources, agents:
//! short, plain ASCII, safe in stream names, logs and URLs) and customers' phone numbers (one
//! rule everywhere, so a number one service accepts is never refused by the next).

/// Why `value` is not a valid id, or `None` when it is.
pub fn id_problem(value: &str) -> Option<&'static str> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    (!ok).then_some("must be 1-64 letters, digits, `-`, `_` or `.`")
}

/// Why `phone` is not a phone number, or `None` when it is: 5-20 digits, an optional leading
/// `+`, spaces or dashes.
pub fn phone_problem(phone: &str) -> Option<&'static str> {
    let body = phone.strip_prefix('+').unwrap_or(phone);
    let digits = body.chars().filter(char::is_ascii_digit).count();
    let allowed = body
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
    (!(allowed && (5..=20).contains(&digits)))
        .then_some("is not a phone number (5-20 digits, optional +, spaces or dashes)")
}

#[cfg(test)]
mod tests {
    use super::{id_problem, phone_problem};

    #[test]
    fn phone_numbers() {
        assert_eq!(phone_problem("+86 139-0013-9000"), None);
        assert_eq!(phone_problem("13900139000"), None);
        assert!(phone_problem("110").is_some());
        assert!(phone_problem("(010) 1234").is_some());
        assert!(phone_problem("call me").is_some());
        assert!(phone_problem("1-2+3456789").is_some());
    }

    #[test]
    fn plain_short_ids_pass() {
        assert_eq!(id_problem("ward-5_a.1"), None);
        assert!(id_problem("").is_some());
        assert!(id_problem("病区").is_some());
        assert!(id_problem("a b").is_some());
        assert!(id_problem(&"x".repeat(65)).is_some());
    }
}
