//! Pure call-logging rules: an attempt as a decider, questionnaires and the validation of an
//! attempt's answers, honesty checks.

pub mod attempt;
pub mod honesty;
pub mod privacy;
pub mod questionnaire;

pub use questionnaire::{
    AnswerError, Condition, Item, ItemKind, Questionnaire, QuestionnaireRules,
};
