//! Rules every service shares, with no IO: time through a [`Clock`] (so tests and demos run on
//! simulated time), the ids and phone numbers callers hand in ([`ids`]), masking personal data
//! for readers without a need for it ([`privacy`]), bounds on hostile input ([`input`]), and the given/when/then harness for pure
//! deciders ([`decider`]).

pub mod access;
pub mod clock;
pub mod decider;
pub mod ids;
pub mod input;
pub mod phone;
pub mod privacy;

pub use clock::{Clock, ManualClock, SystemClock};
pub use decider::{Decider, TestHarness};
