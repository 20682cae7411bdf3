//! The pure rules of complaint routing: classification and routing ([`rules`]), SLA clocks in
//! working time ([`clock`]) and a complaint's life as events ([`complaint`]). No IO here.

#[cfg(test)]
mod classification_properties;
pub mod clock;
pub mod complaint;
pub mod rules;

pub use clock::SlaClock;
pub use complaint::{
    file, group_topic, holder, targets_for, Action, ActionError, CallbackPurpose, ClockName,
    ComplaintEvent, ComplaintState, Context, Customer, Intake, Level, Status, Targets,
};
pub use rules::{Class, ClassRules, Origin, RoutingRules, RulesError};
