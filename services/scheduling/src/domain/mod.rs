//! Pure scheduling rules: no IO, no tonic, no sqlx. Given a business fact, a policy and the
//! tenant's calendar, when is which callback due, and what comes after it.

pub mod policy;
pub mod sampling;

pub use policy::{
    Anchor, BusinessFact, Channel, Filter, FilterOp, Finished, Offset, OwnerRule, Phase,
    PlannedCallback, Policy, PolicyError, RetryRule, Step, StepCalendar, Timing, Trigger,
};
