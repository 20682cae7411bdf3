//! Aggregates as pure functions, and a harness to test them without a database.
//!
//! An aggregate's state is a fold of its events ([`Decider::evolve`]); a command is decided
//! on the state into new events or a refusal ([`Decider::decide`]). Tests read
//! `given(events).when(command).then(events)`, in the style of disintegrate's `TestHarness`.

use std::fmt::Debug;

/// A pure aggregate: state from events, events from a command.
pub trait Decider {
    type State;
    type Event;
    type Command;
    type Error;

    /// The state after `event` (`None` before the first event).
    fn evolve(state: Option<Self::State>, event: &Self::Event) -> Option<Self::State>;

    /// The events `command` leads to in `state`, or why it is refused.
    fn decide(
        state: Option<&Self::State>,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// The state the events fold to.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Option<Self::State>
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(None, Self::evolve)
    }
}

/// `TestHarness::<D>::given(history).when(command).then(expected)`.
pub struct TestHarness<D: Decider> {
    history: Vec<D::Event>,
}

impl<D: Decider> TestHarness<D> {
    pub fn given(history: impl IntoIterator<Item = D::Event>) -> Self {
        Self {
            history: history.into_iter().collect(),
        }
    }

    pub fn when(self, command: D::Command) -> Decided<D> {
        let state = D::fold(&self.history);
        let result = D::decide(state.as_ref(), &command);
        Decided {
            history: self.history,
            result,
        }
    }
}

/// The outcome of a command on the given history.
pub struct Decided<D: Decider> {
    history: Vec<D::Event>,
    result: Result<Vec<D::Event>, D::Error>,
}

impl<D: Decider> Decided<D>
where
    D::Event: Debug + PartialEq,
    D::Error: Debug + PartialEq,
{
    /// Asserts the command led to exactly `expected`, and that the events fold onto the history
    /// (evolve accepts them); returns the state after them.
    pub fn then(self, expected: impl IntoIterator<Item = D::Event>) -> Option<D::State> {
        let expected: Vec<D::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "the command led to other events");
                let all = self.history.iter().chain(events.iter());
                D::fold(all)
            }
            Err(error) => panic!("the command was refused: {error:?}; expected {expected:?}"),
        }
    }

    /// Asserts the command was refused with `expected`.
    pub fn then_err(self, expected: D::Error) {
        match self.result {
            Ok(events) => {
                panic!("the command led to {events:?}; expected the refusal {expected:?}")
            }
            Err(error) => assert_eq!(error, expected, "the command was refused otherwise"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that may not go below zero.
    struct Counter;

    #[derive(Debug, PartialEq)]
    enum Event {
        Added(u32),
        Taken(u32),
    }

    impl Decider for Counter {
        type State = u32;
        type Event = Event;
        type Command = i64;
        type Error = &'static str;

        fn evolve(state: Option<u32>, event: &Event) -> Option<u32> {
            let n = state.unwrap_or(0);
            Some(match event {
                Event::Added(k) => n + k,
                Event::Taken(k) => n - k,
            })
        }

        fn decide(state: Option<&u32>, command: &i64) -> Result<Vec<Event>, &'static str> {
            let n = i64::from(state.copied().unwrap_or(0));
            match *command {
                k if k >= 0 => Ok(vec![Event::Added(k as u32)]),
                k if n + k >= 0 => Ok(vec![Event::Taken((-k) as u32)]),
                _ => Err("below zero"),
            }
        }
    }

    #[test]
    fn given_when_then() {
        let state = TestHarness::<Counter>::given([Event::Added(2)])
            .when(-2)
            .then([Event::Taken(2)]);
        assert_eq!(state, Some(0));
        TestHarness::<Counter>::given([Event::Added(1)])
            .when(-2)
            .then_err("below zero");
    }

    #[test]
    #[should_panic(expected = "other events")]
    fn a_wrong_expectation_fails() {
        TestHarness::<Counter>::given([])
            .when(1)
            .then([Event::Added(2)]);
    }
}
