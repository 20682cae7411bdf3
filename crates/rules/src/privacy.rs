//! Masking personal data for readers without a need for it (PIPL).

/// Keeps the first three and last four digits of a phone number: `139****9000`; a number in
/// international form keeps its country code too: `+86 139****9000`. Short numbers keep only
/// their last two digits.
pub fn mask_phone(number: &str) -> String {
    if number.trim_start().starts_with('+') {
        if let Ok(parsed) = phonenumber::parse(None, number) {
            let national = parsed.national().value().to_string();
            return format!("+{} {}", parsed.code().value(), mask_digits(&national));
        }
    }
    mask_digits(number)
}

fn mask_digits(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    match digits.len() {
        0 => String::new(),
        n if n >= 8 => {
            let head: String = digits[..3].iter().collect();
            let tail: String = digits[n - 4..].iter().collect();
            format!("{head}{}{tail}", "*".repeat(n - 7))
        }
        n => {
            let tail: String = digits[n.saturating_sub(2)..].iter().collect();
            format!("{}{tail}", "*".repeat(n.saturating_sub(2)))
        }
    }
}

/// Keeps a name's first character: `张**`.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.trim().chars();
    match chars.next() {
        None => String::new(),
        Some(first) => format!("{first}{}", "*".repeat(chars.count().max(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::{mask_name, mask_phone};

    #[test]
    fn names_keep_their_first_character() {
        assert_eq!(mask_name("张三丰"), "张**");
        assert_eq!(mask_name("Li"), "L*");
        assert_eq!(mask_name("X"), "X*");
        assert_eq!(mask_name(" "), "");
    }

    #[test]
    fn numbers_are_masked_in_the_middle() {
        assert_eq!(mask_phone("13900139000"), "139****9000");
        assert_eq!(mask_phone("+86 139-0013-9000"), "+86 139****9000");
        assert_eq!(mask_phone("+8613900139000"), "+86 139****9000");
        assert_eq!(mask_phone("12345"), "***45");
        assert_eq!(mask_phone(""), "");
    }
}
