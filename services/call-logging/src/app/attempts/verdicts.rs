//! What scheduling's lease verdicts mean for a reported attempt.

use super::*;

pub(super) fn lease_claim(pending: &PendingAttempt) -> LeaseClaim {
    LeaseClaim {
        callback_id: pending.callback_id,
        agent_id: pending.report.agent_id.clone(),
        lease_id: pending.lease_id,
    }
}

/// The statuses of a callback that has ended.
const ENDED: [&str; 4] = ["completed", "lost", "cancelled", "skipped"];

/// Whether scheduling's verdict lets the attempt be recorded: under the agent's live lease
/// (with the callback's subject and department), or for a callback that has already ended (a
/// report that came too late, kept on record with its status; the subject is then unknown).
/// A reached call on a callback whose step asks a questionnaire answers it or says why not.
pub(super) fn lease_held<'v>(
    pending: &PendingAttempt,
    verdict: Option<&'v LeaseVerdict>,
) -> Result<(&'v str, &'v str, Option<&'v str>), Error> {
    match verdict {
        Some(LeaseVerdict::Held {
            questionnaire_id, ..
        }) if !questionnaire_id.is_empty()
            && pending.report.disposition == "reached"
            && pending.report.answers.is_empty()
            && pending.report.survey_declined.is_empty() =>
        {
            Err(Error::InvalidArgument {
                field: "survey_declined".into(),
                reason: format!(
                    "the callback asks questionnaire {} and nothing was answered: send \
                     answers_json, or say here why there is no survey",
                    callback_rules::input::excerpt(questionnaire_id)
                ),
            })
        }
        Some(LeaseVerdict::Held {
            subject_id,
            department,
            ..
        }) => Ok((subject_id, department, None)),
        Some(LeaseVerdict::NotClaimed { status }) if ENDED.contains(&status.as_str()) => {
            Ok(("", "", Some(status)))
        }
        None | Some(LeaseVerdict::NotFound) => Err(Error::NotFound(format!(
            "callback `{}` not found",
            pending.callback_id
        ))),
        Some(LeaseVerdict::NotClaimed { status }) => Err(Error::FailedPrecondition(format!(
            "the callback is {status}, not claimed"
        ))),
        Some(LeaseVerdict::NotHeld) => Err(Error::PermissionDenied(
            "agent_id: this agent does not hold the callback's lease".into(),
        )),
    }
}
