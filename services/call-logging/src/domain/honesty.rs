//! Honesty checks (弄虚作假): facts that make a logged call suspect. Pure: given an attempt and
//! what is known about it, which flags, with which evidence.

pub use callback_contracts::call_logging::HonestyFlag as Flag;
use chrono::{DateTime, Utc};

/// Below this many seconds of talk, a "reached" call is suspect.
pub const SHORT_REACHED_SECONDS: i64 = 10;

/// How late a call's telephony record may arrive behind the records of later calls before the
/// call counts as having none.
pub const TELEPHONY_TOLERANCE_MINUTES: i64 = 30;

/// The attempt as the checks see it.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptFacts {
    pub disposition: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
}

/// A telephony call detail record matched to the attempt by call id.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    pub call_id: String,
    pub network_result: String,
    pub billable_seconds: i64,
}

/// Flags for a "reached" attempt: too short (by the agent's times, or by the billed seconds
/// once the record is known), or contradicted by the network (NOANSWER, BUSY or FAILED).
pub fn check_attempt(attempt: &AttemptFacts, record: Option<&CallRecord>) -> Vec<Flag> {
    if attempt.disposition != "reached" {
        return Vec::new();
    }
    let mut flags = Vec::new();
    let reported = (attempt.ended_at - attempt.started_at).num_seconds();
    let talk = record.map_or(reported, |r| r.billable_seconds.min(reported));
    if talk < SHORT_REACHED_SECONDS {
        flags.push(Flag::ShortReached {
            talk_seconds: talk,
            threshold_seconds: SHORT_REACHED_SECONDS,
            billable_seconds: record.map(|r| r.billable_seconds),
        });
    }
    if let Some(record) = record {
        if record.network_result != "ANSWER" {
            flags.push(Flag::NetworkContradiction {
                call_id: record.call_id.clone(),
                network_result: record.network_result.clone(),
                disposition: attempt.disposition.clone(),
            });
        }
    }
    flags
}

/// Whether a "reached" phone call ending at `ended_at` should have its telephony record by now:
/// the tenant's records have arrived for calls started after it ended, beyond the tolerance.
pub fn record_overdue(ended_at: DateTime<Utc>, records_until: Option<DateTime<Utc>>) -> bool {
    records_until.is_some_and(|until| {
        until > ended_at + chrono::Duration::minutes(TELEPHONY_TOLERANCE_MINUTES)
    })
}

/// The flag for a "reached" phone call without a matching telephony record although the
/// records of later calls have arrived.
pub fn missing_record(telephony_call_id: &str, records_until: DateTime<Utc>) -> Flag {
    Flag::NoTelephonyRecord {
        telephony_call_id: telephony_call_id.to_owned(),
        records_until,
        tolerance_minutes: TELEPHONY_TOLERANCE_MINUTES,
    }
}

/// The flag for a phone call started outside the tenant's calling windows.
pub fn outside_window(
    calendar: &callback_calendar::Calendar,
    started_at: DateTime<Utc>,
) -> Option<Flag> {
    (!calendar.is_allowed(started_at)).then(|| Flag::OutsideCallingWindow {
        started_at,
        next_allowed: calendar.next_allowed(started_at),
    })
}

/// The flag for an agent whose attempt overlaps another of their own.
pub fn overlapping(
    other_attempt_id: &str,
    other_start: DateTime<Utc>,
    other_end: DateTime<Utc>,
) -> Flag {
    Flag::OverlappingCalls {
        other_attempt_id: other_attempt_id.to_owned(),
        other_started_at: other_start,
        other_ended_at: other_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_record_is_overdue_once_later_calls_records_have_arrived_beyond_the_tolerance() {
        let end = DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        assert!(!record_overdue(end, None));
        assert!(!record_overdue(end, Some(end + Duration::minutes(30))));
        assert!(record_overdue(end, Some(end + Duration::minutes(31))));
        let flag = missing_record("cdr-1", end);
        assert_eq!(flag.kind(), "no_telephony_record");
        assert_eq!(flag.evidence()["telephony_call_id"], "cdr-1");
    }

    fn attempt(disposition: &str, seconds: i64) -> AttemptFacts {
        let start = DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        AttemptFacts {
            disposition: disposition.into(),
            started_at: start,
            ended_at: start + Duration::seconds(seconds),
        }
    }

    fn record(result: &str, billable: i64) -> CallRecord {
        CallRecord {
            call_id: "c1".into(),
            network_result: result.into(),
            billable_seconds: billable,
        }
    }

    #[test]
    fn suspect_reached_calls_are_flagged_with_evidence() {
        let kinds = |flags: Vec<Flag>| flags.into_iter().map(|f| f.kind()).collect::<Vec<_>>();
        assert!(check_attempt(&attempt("reached", 95), None).is_empty());
        assert_eq!(
            kinds(check_attempt(&attempt("reached", 3), None)),
            ["short_reached"]
        );
        // The agent reported 95 s but the network billed 4 s.
        assert_eq!(
            kinds(check_attempt(
                &attempt("reached", 95),
                Some(&record("ANSWER", 4))
            )),
            ["short_reached"]
        );
        assert_eq!(
            kinds(check_attempt(
                &attempt("reached", 95),
                Some(&record("NOANSWER", 0))
            )),
            ["short_reached", "network_contradiction"]
        );
        assert!(check_attempt(&attempt("no_answer", 2), Some(&record("NOANSWER", 0))).is_empty());
        let flag = &check_attempt(&attempt("reached", 3), None)[0];
        assert_eq!(flag.evidence()["talk_seconds"], 3);
    }
}
