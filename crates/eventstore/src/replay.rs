//! Reading the whole log from the start, page by page: what every rebuild of a read model
//! does, in one place.

use crate::model::{Checkpoint, Filter, RecordedEvent};
use crate::store::EventStore;
use crate::Result;

/// Events per page of a replay.
const PAGE: usize = 5000;

/// The events matching a filter in the global order, from the first, up to at least every
/// event committed before the replay started.
pub struct Replay<'a> {
    store: &'a EventStore,
    filter: Filter,
    after: Checkpoint,
    done: bool,
}

impl EventStore {
    /// A replay of every event matching `filter`, for rebuilding a read model.
    ///
    /// Waits first until every transaction begun before the call has ended
    /// ([`EventStore::wait_for_horizon`]), so the replay sees everything committed before it
    /// started, never a part of it. Call it before the rebuild opens its own writing
    /// transaction, and let an error abort the rebuild: nothing partial is committed then.
    pub async fn replay(&self, filter: Filter) -> Result<Replay<'_>> {
        self.wait_for_horizon().await?;
        Ok(Replay {
            store: self,
            filter,
            after: Checkpoint::START,
            done: false,
        })
    }
}

impl Replay<'_> {
    /// The next page, or `None` once the horizon was reached.
    pub async fn next_page(&mut self) -> Result<Option<Vec<RecordedEvent>>> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.read_all(self.after, &self.filter, PAGE).await?;
        self.after = page.checkpoint;
        self.done = page.reached_horizon;
        Ok(Some(page.events))
    }
}
