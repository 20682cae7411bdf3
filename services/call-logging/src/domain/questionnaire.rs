//! Questionnaires (scripts): versioned item lists. A published version never changes; a new
//! version is a new event. Answers are validated against the exact version the call used.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

pub use callback_contracts::call_logging::{Condition, Item, ItemKind, Questionnaire};

/// A problem with a questionnaire or with answers, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct AnswerError {
    pub field: String,
    pub reason: String,
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> AnswerError {
    AnswerError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The rules of a questionnaire (its shape is the published contract).
pub trait QuestionnaireRules {
    /// Checks a questionnaire before it is published.
    fn validate(&self) -> Result<(), AnswerError>;

    /// Checks answers (item id -> value) against this exact version: every answer fits its
    /// item's kind, required items that were asked are answered, and items not asked (their
    /// condition is false) are not answered.
    fn check_answers(&self, answers: &BTreeMap<String, Value>) -> Result<(), AnswerError>;
}

impl QuestionnaireRules for Questionnaire {
    fn validate(&self) -> Result<(), AnswerError> {
        if self.questionnaire_id.is_empty() || self.questionnaire_id.len() > 64 {
            return Err(error("questionnaire_id", "must be 1-64 characters"));
        }
        if self.items.is_empty() {
            return Err(error("items", "at least one item is required"));
        }
        let mut earlier = HashSet::new();
        for (i, item) in self.items.iter().enumerate() {
            if item.id.is_empty() || !earlier.insert(item.id.as_str()) {
                return Err(error(
                    format!("items[{i}].id"),
                    "must be non-empty and unique",
                ));
            }
            match &item.kind {
                ItemKind::SingleChoice { options } | ItemKind::MultipleChoice { options }
                    if options.len() < 2 =>
                {
                    return Err(error(
                        format!("items[{i}].kind.options"),
                        "give at least two options",
                    ));
                }
                ItemKind::FreeText { max_chars } if *max_chars == 0 || *max_chars > 4000 => {
                    return Err(error(
                        format!("items[{i}].kind.max_chars"),
                        "must be 1 to 4000",
                    ));
                }
                _ => {}
            }
            if let Some(condition) = &item.ask_if {
                // Only earlier items: a condition on a later one could never be evaluated in order.
                let known = self.items[..i].iter().any(|e| e.id == condition.item);
                if !known {
                    return Err(error(
                        format!("items[{i}].ask_if.item"),
                        "must name an earlier item",
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_answers(&self, answers: &BTreeMap<String, Value>) -> Result<(), AnswerError> {
        for id in answers.keys() {
            if !self.items.iter().any(|item| &item.id == id) {
                return Err(error(
                    format!("answers.{id}"),
                    "is not an item of this questionnaire version",
                ));
            }
        }
        for item in &self.items {
            let field = format!("answers.{}", item.id);
            let asked = match &item.ask_if {
                None => true,
                Some(condition) => answers.get(&condition.item) == Some(&condition.equals),
            };
            let answer = answers.get(&item.id);
            match (asked, answer) {
                (false, Some(_)) => {
                    return Err(error(field, "was not to be asked (its condition is false)"))
                }
                (true, None) if item.required => return Err(error(field, "is required")),
                (_, None) => {}
                (true, Some(value)) => {
                    check_kind(&item.kind, value).map_err(|reason| error(field, reason))?
                }
            }
        }
        Ok(())
    }
}

fn check_kind(kind: &ItemKind, value: &Value) -> Result<(), String> {
    // `as_i64` is `None` for fractions, so 4.5 is refused.
    let in_range = |low: i64, high: i64| match value.as_i64() {
        Some(n) if (low..=high).contains(&n) => Ok(()),
        _ => Err(format!("must be a whole number from {low} to {high}")),
    };
    match kind {
        ItemKind::Rating => in_range(1, 5),
        ItemKind::Recommend => in_range(0, 10),
        ItemKind::YesNo => value
            .is_boolean()
            .then_some(())
            .ok_or_else(|| "must be true or false".to_owned()),
        ItemKind::SingleChoice { options } => match value.as_str() {
            Some(choice) if options.iter().any(|o| o == choice) => Ok(()),
            _ => Err(format!("must be one of: {}", options.join(", "))),
        },
        ItemKind::MultipleChoice { options } => match value.as_array() {
            Some(choices)
                if choices
                    .iter()
                    .all(|c| c.as_str().is_some_and(|c| options.iter().any(|o| o == c)))
                    && choices.iter().collect::<HashSet<_>>().len() == choices.len() =>
            {
                Ok(())
            }
            _ => Err(format!(
                "must be a list of distinct options from: {}",
                options.join(", ")
            )),
        },
        ItemKind::FreeText { max_chars } => match value.as_str() {
            Some(text) if text.chars().count() <= *max_chars => Ok(()),
            Some(_) => Err(format!("is longer than {max_chars} characters")),
            None => Err("must be text".to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn discharge_survey() -> Questionnaire {
        serde_json::from_value(json!({
            "questionnaire_id": "discharge-v3", "title": "出院回访",
            "items": [
                {"id": "recovered", "text": "恢复情况好吗", "kind": {"type": "yes_no"}, "required": true},
                {"id": "problem", "text": "有什么不适", "kind": {"type": "free_text", "max_chars": 200},
                 "required": true, "ask_if": {"item": "recovered", "equals": false}},
                {"id": "nursing", "text": "护理服务满意度", "kind": {"type": "rating"}, "required": true},
                {"id": "recommend", "text": "推荐意愿", "kind": {"type": "recommend"}},
                {"id": "channel", "text": "如何得知本院", "kind": {"type": "single_choice", "options": ["friend", "online", "other"]}},
                {"id": "improve", "text": "改进建议", "kind": {"type": "multiple_choice", "options": ["food", "parking", "waiting"]}}
            ]
        }))
        .unwrap()
    }

    fn answers(value: serde_json::Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn valid_answers_pass_and_each_fault_names_the_item() {
        let q = discharge_survey();
        q.validate().unwrap();
        q.check_answers(&answers(json!({"recovered": true, "nursing": 5, "recommend": 9, "improve": ["food", "parking"]}))).unwrap();
        q.check_answers(&answers(
            json!({"recovered": false, "problem": "头晕", "nursing": 3}),
        ))
        .unwrap();

        let fault = |a: serde_json::Value| q.check_answers(&answers(a)).unwrap_err().field;
        assert_eq!(
            fault(json!({"recovered": true})),
            "answers.nursing",
            "required"
        );
        assert_eq!(
            fault(json!({"recovered": false, "nursing": 4})),
            "answers.problem",
            "required when asked"
        );
        assert_eq!(
            fault(json!({"recovered": true, "problem": "x", "nursing": 4})),
            "answers.problem",
            "not asked"
        );
        assert_eq!(
            fault(json!({"recovered": true, "nursing": 6})),
            "answers.nursing",
            "rating range"
        );
        assert_eq!(
            fault(json!({"recovered": true, "nursing": 4.5})),
            "answers.nursing",
            "whole numbers"
        );
        assert_eq!(
            fault(json!({"recovered": true, "nursing": 4, "recommend": 11})),
            "answers.recommend"
        );
        assert_eq!(
            fault(json!({"recovered": "yes", "nursing": 4})),
            "answers.recovered"
        );
        assert_eq!(
            fault(json!({"recovered": true, "nursing": 4, "channel": "tv"})),
            "answers.channel"
        );
        assert_eq!(
            fault(json!({"recovered": true, "nursing": 4, "improve": ["food", "food"]})),
            "answers.improve"
        );
        assert_eq!(
            fault(json!({"recovered": true, "nursing": 4, "extra": 1})),
            "answers.extra"
        );
    }

    #[test]
    fn invalid_questionnaires_are_refused() {
        let mut q = discharge_survey();
        q.items[1].ask_if = Some(Condition {
            item: "nursing".into(),
            equals: json!(1),
        });
        assert_eq!(q.validate().unwrap_err().field, "items[1].ask_if.item");
        let mut q = discharge_survey();
        q.items[2].id = "recovered".into();
        assert_eq!(q.validate().unwrap_err().field, "items[2].id");
        let mut q = discharge_survey();
        q.items[4].kind = ItemKind::SingleChoice {
            options: vec!["only".into()],
        };
        assert_eq!(q.validate().unwrap_err().field, "items[4].kind.options");
    }
}
