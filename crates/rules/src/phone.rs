//! One person, one number: phone numbers in one normal form (E.164, `+8613922223333`), so
//! `+86 139 2222 3333`, `139-2222-3333`, `008613922223333` and `13922223333` match wherever a
//! person is matched (shared contacts, do-not-call, caps, repeat complainants). Parsing follows
//! libphonenumber's metadata (the `phonenumber` crate), not hand-written rules.

/// The region a number without a country code is read in, unless the tenant says otherwise.
pub const DEFAULT_REGION: &str = "CN";

/// Why `region` is not an ISO 3166 region code libphonenumber knows, or `None` when it is.
pub fn region_problem(region: &str) -> Option<&'static str> {
    region
        .parse::<phonenumber::country::Id>()
        .is_err()
        .then_some("is not a region code libphonenumber knows (ISO 3166, e.g. CN, HK, SG)")
}

/// The E.164 form of `raw` read in `region` (for numbers without a country code), or why it is
/// not a phone number.
pub fn normalize(raw: &str, region: &str) -> Result<String, &'static str> {
    if let Some(problem) = crate::ids::phone_problem(raw) {
        return Err(problem);
    }
    let country = region
        .parse::<phonenumber::country::Id>()
        .map_err(|_| "has no known region to be read in")?;
    // `00` is the international prefix in most regions (China's too).
    let international;
    let text = match raw.trim().strip_prefix("00") {
        Some(rest) => {
            international = format!("+{rest}");
            international.as_str()
        }
        None => raw.trim(),
    };
    let number = phonenumber::parse(Some(country), text)
        .map_err(|_| "is not a phone number (it could not be read as one)")?;
    if !phonenumber::is_valid(&number) {
        return Err("is not a valid phone number for its region");
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// The normal form when `raw` has one, else its digits: for matching numbers stored before
/// they were normalised.
pub fn match_key(raw: &str, region: &str) -> String {
    normalize(raw, region).unwrap_or_else(|_| raw.chars().filter(char::is_ascii_digit).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_number_written_four_ways_is_one_number() {
        for written in [
            "+86 139 2222 3333",
            "139-2222-3333",
            "008613922223333",
            "13922223333",
        ] {
            assert_eq!(
                normalize(written, DEFAULT_REGION),
                Ok("+8613922223333".to_owned()),
                "{written}"
            );
        }
        // A Beijing landline with its area code, and a Hong Kong number read in Hong Kong.
        assert_eq!(
            normalize("010-6552 9988", "CN"),
            Ok("+861065529988".to_owned())
        );
        assert_eq!(normalize("9123 4567", "HK"), Ok("+85291234567".to_owned()));
    }

    #[test]
    fn what_is_not_a_number_is_refused() {
        assert!(normalize("call me", "CN").is_err());
        assert!(normalize("110", "CN").is_err());
        assert!(normalize("12345", "CN").is_err());
        assert!(region_problem("CN").is_none());
        assert!(region_problem("XX").is_some());
        assert_eq!(match_key("139 0000", "CN"), "1390000");
    }
}
