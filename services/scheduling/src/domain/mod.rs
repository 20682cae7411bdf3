//! Pure scheduling rules: no IO, no tonic, no sqlx. Given a business fact, a policy and the
//! tenant's calendar, when is which callback due, and what comes after it.

pub mod callback;
pub mod callback_decider;
pub mod policy;
pub mod sampling;
pub mod tenant;

pub use callback::{
    CallbackError, CallbackEvent, CallbackState, Disposition, LeaseRefusal, Scheduled, Status,
    GIVEN_UP,
};
pub use callback_decider::{CallbackCommand, CallbackDecider};
pub use policy::{
    next_attempt, Anchor, BusinessFact, Channel, Filter, FilterOp, Finished, Offset, OwnerRule,
    Phase, PlannedCallback, Policy, PolicyError, RetryRule, Step, StepCalendar, Timing, Trigger,
};
pub use tenant::{
    next_allowed_attempt, validate_settings, Agent, FrequencyCaps, SettingsError, TenantSettings,
};
