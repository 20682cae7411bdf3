//! Pure call-logging rules: questionnaires and the validation of an attempt's answers.

pub mod honesty;
pub mod privacy;
pub mod questionnaire;

pub use questionnaire::{
    AnswerError, Condition, Item, ItemKind, Questionnaire, QuestionnaireRules,
};
