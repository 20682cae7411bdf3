//! Shared rules for hostile or careless input: how much of a refused value an error may echo,
//! and which times are plausible at all.

use chrono::{DateTime, Duration, TimeZone, Utc};

/// At most this many characters of a caller's value appear in an error message: a status
/// message travels in gRPC metadata, and echoing a megabyte back breaks the caller's client.
pub const ECHO_CHARS: usize = 32;

/// A caller's value as an error message may show it: quoted and escaped, cut after
/// [`ECHO_CHARS`] characters with its full size said.
pub fn excerpt(value: &str) -> String {
    let mut chars = value.chars();
    let shown: String = chars.by_ref().take(ECHO_CHARS).collect();
    if chars.next().is_none() {
        format!("{shown:?}")
    } else {
        format!("{shown:?}... ({} bytes)", value.len())
    }
}

/// The largest JSON document a client may publish (a policy, settings, routing rules, a
/// questionnaire): far above any real one, far below the event log's limit.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// A JSON document a client publishes (`policy_json`, `settings_json` ...) read as `T`; a
/// problem names the field and the JSON path within it (`policy_json.steps[1].timing.latest.days:
/// invalid type: string "7", expected u32`), never echoing more than a prefix of the input.
pub fn parse_document<T: serde::de::DeserializeOwned>(
    field: &str,
    json: &str,
) -> Result<T, (String, String)> {
    if json.len() > MAX_DOCUMENT_BYTES {
        return Err((
            field.to_owned(),
            format!(
                "is {} bytes, over the limit of {MAX_DOCUMENT_BYTES} bytes",
                json.len()
            ),
        ));
    }
    let mut reader = serde_json::Deserializer::from_str(json);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut reader);
    let value = parsed.map_err(|error| {
        let path = error.path().to_string();
        // `.` is the root; `?` a place the parser could not name (a syntax error).
        let at = if path.is_empty() || path == "." || path == "?" {
            field.to_owned()
        } else {
            format!("{field}.{path}")
        };
        (at, shorten(&error.into_inner().to_string()))
    })?;
    reader
        .end()
        .map_err(|error| (field.to_owned(), shorten(&error.to_string())))?;
    Ok(value)
}

/// A parser's message, at most 200 characters (it may quote the input).
fn shorten(message: &str) -> String {
    if message.chars().count() <= 200 {
        message.to_owned()
    } else {
        format!("{}...", message.chars().take(200).collect::<String>())
    }
}

/// The earliest time the product accepts for anything that happened (a discharge, a call):
/// earlier dates are a client's default value or a typing error, not a fact.
pub fn earliest_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid constant date")
}

/// How far ahead of now a time may lie (clocks of other systems drift, appointments are
/// planned ahead, but not by years).
pub const MAX_AHEAD_DAYS: i64 = 730;

/// Why `at` is not a plausible time (before 2000, or more than two years after `now`), or
/// `None` when it is.
pub fn time_problem(at: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    let latest = now
        .checked_add_signed(Duration::days(MAX_AHEAD_DAYS))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if at < earliest_time() {
        Some(format!("{at} is before 2000-01-01, not a plausible time"))
    } else if at > latest {
        Some(format!(
            "{at} is more than {MAX_AHEAD_DAYS} days ahead of now, not a plausible time"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        steps: Vec<Step>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Step {
        days: u32,
    }

    #[test]
    fn document_errors_name_the_json_path() {
        let (field, reason) =
            parse_document::<Doc>("policy_json", r#"{"steps": [{"days": 1}, {"days": "7"}]}"#)
                .unwrap_err();
        assert_eq!(field, "policy_json.steps[1].days");
        assert!(reason.contains("expected u32"), "{reason}");
        let (field, _) = parse_document::<Doc>("policy_json", "{").unwrap_err();
        assert_eq!(field, "policy_json");
        let (field, _) = parse_document::<Doc>("policy_json", r#"{"steps": []} x"#).unwrap_err();
        assert_eq!(field, "policy_json");
        assert!(parse_document::<Doc>("policy_json", r#"{"steps": [{"days": 3}]}"#).is_ok());
        let huge = format!(
            r#"{{"steps": [], "x": "{}"}}"#,
            "y".repeat(MAX_DOCUMENT_BYTES)
        );
        let (field, reason) = parse_document::<Doc>("policy_json", &huge).unwrap_err();
        assert_eq!(field, "policy_json");
        assert!(reason.contains("over the limit"), "{reason}");
    }

    #[test]
    fn long_values_are_cut_and_their_size_said() {
        assert_eq!(excerpt("ward-5"), "\"ward-5\"");
        let long = "x".repeat(1_000_000);
        let shown = excerpt(&long);
        assert!(shown.len() < 64, "{shown}");
        assert!(shown.ends_with("(1000000 bytes)"));
        assert_eq!(excerpt("a\0b"), "\"a\\0b\"");
    }

    #[test]
    fn times_before_2000_or_two_years_ahead_are_implausible() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        assert!(time_problem(now, now).is_none());
        assert!(time_problem(earliest_time(), now).is_none());
        assert!(time_problem(Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(), now).is_some());
        assert!(time_problem(Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap(), now).is_some());
        assert!(time_problem(now + Duration::days(700), now).is_none());
        assert!(time_problem(DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MAX_UTC).is_none());
    }
}
