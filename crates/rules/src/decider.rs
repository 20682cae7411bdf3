//! Aggregates as pure functions, and a harness to test them without a database.
//!
//! An aggregate's state is a fold of its events ([`Decider::evolve`]); a command is decided
//! on the state into new events or a refusal ([`Decider::decide`]). Both may read a context
//! that is not the aggregate's own (the tenant's calendar, the routing rules in force). Tests
//! read `on(context).given(events).when(command).then(events)`, in the style of
//! disintegrate's `TestHarness`.

use std::fmt::Debug;

/// A pure aggregate: state from events, events from a command.
pub trait Decider {
    /// What decisions and folds read besides the aggregate's own events.
    type Context;
    type State;
    type Event;
    type Command;
    type Error;

    /// The state after `event` (`None` before the first event).
    fn evolve(
        context: &Self::Context,
        state: Option<Self::State>,
        event: &Self::Event,
    ) -> Option<Self::State>;

    /// The events `command` leads to in `state`, or why it is refused.
    fn decide(
        context: &Self::Context,
        state: Option<&Self::State>,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// The state the events fold to.
    fn fold<'a>(
        context: &Self::Context,
        events: impl IntoIterator<Item = &'a Self::Event>,
    ) -> Option<Self::State>
    where
        Self::Event: 'a,
    {
        events
            .into_iter()
            .fold(None, |state, event| Self::evolve(context, state, event))
    }
}

/// `TestHarness::<D>::on(context).given(history).when(command).then(expected)`.
pub struct TestHarness<D: Decider> {
    context: D::Context,
    history: Vec<D::Event>,
}

impl<D: Decider> TestHarness<D> {
    pub fn on(context: D::Context) -> Self {
        Self {
            context,
            history: Vec::new(),
        }
    }

    pub fn given(mut self, history: impl IntoIterator<Item = D::Event>) -> Self {
        self.history.extend(history);
        self
    }

    pub fn when(self, command: D::Command) -> Decided<D> {
        let state = D::fold(&self.context, &self.history);
        let result = D::decide(&self.context, state.as_ref(), &command);
        Decided {
            context: self.context,
            history: self.history,
            result,
        }
    }
}

/// The outcome of a command on the given history.
pub struct Decided<D: Decider> {
    context: D::Context,
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
                D::fold(&self.context, all)
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
        type Context = ();
        type State = u32;
        type Event = Event;
        type Command = i64;
        type Error = &'static str;

        fn evolve(_: &(), state: Option<u32>, event: &Event) -> Option<u32> {
            let n = state.unwrap_or(0);
            Some(match event {
                Event::Added(k) => n + k,
                Event::Taken(k) => n - k,
            })
        }

        fn decide(_: &(), state: Option<&u32>, command: &i64) -> Result<Vec<Event>, &'static str> {
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
        let state = TestHarness::<Counter>::on(())
            .given([Event::Added(2)])
            .when(-2)
            .then([Event::Taken(2)]);
        assert_eq!(state, Some(0));
        TestHarness::<Counter>::on(())
            .given([Event::Added(1)])
            .when(-2)
            .then_err("below zero");
    }

    #[test]
    #[should_panic(expected = "other events")]
    fn a_wrong_expectation_fails() {
        TestHarness::<Counter>::on(())
            .when(1)
            .then([Event::Added(2)]);
    }
}
