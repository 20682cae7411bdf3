//! Catch-up then live subscriptions over the global order.
//!
//! A subscription pulls pages from the log at its consumer's pace; nothing is pushed into a
//! buffer on its behalf, so a slow consumer simply falls behind and catches up from the log
//! instead of being dropped or overflowing anything.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::model::ReadPage;
use crate::model::{Checkpoint, Filter, RecordedEvent};
use crate::store::EventStore;

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionItem {
    Event(RecordedEvent),
    /// Everything committed before the subscription started has been delivered (and
    /// everything visible since); live events follow. Yielded once per transition from
    /// catching up to live.
    CaughtUp(Checkpoint),
}

pub struct Subscription {
    store: EventStore,
    filter: Filter,
    buffer: VecDeque<RecordedEvent>,
    /// Where the next page read starts.
    read_from: Checkpoint,
    /// Everything up to here has been yielded (or filtered out).
    delivered: Checkpoint,
    live: bool,
    /// The first announcement of being caught up waits until the horizon passed every
    /// transaction that had begun before the first read: reaching the horizon while an older
    /// transaction is still open (anywhere on the server) is not having read everything.
    caught_up_target: Option<u64>,
    caught_up_pending: bool,
    announce_caught_up: bool,
    wake: Option<watch::Receiver<u64>>,
    page_size: usize,
    poll_interval: Duration,
    /// Re-read delay after a wake-up that found nothing new (an older transaction may still
    /// be open); grows to `poll_interval`.
    retry_delay: Duration,
    /// While catching up, the next page is read in the background as the consumer works
    /// through the current one, so database and consumer work overlap.
    prefetch: Option<(Checkpoint, JoinHandle<Result<ReadPage>>)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some((_, handle)) = self.prefetch.take() {
            handle.abort();
        }
    }
}

const FIRST_RETRY: Duration = Duration::from_millis(2);

impl Subscription {
    pub(crate) fn new(store: EventStore, after: Checkpoint, filter: Filter) -> Self {
        Self {
            store,
            filter,
            buffer: VecDeque::new(),
            read_from: after,
            delivered: after,
            live: false,
            caught_up_target: None,
            caught_up_pending: false,
            announce_caught_up: false,
            wake: None,
            page_size: 5000,
            poll_interval: Duration::from_millis(500),
            retry_delay: FIRST_RETRY,
            prefetch: None,
        }
    }

    /// Events per page read (default 5000; pages are streamed, so larger pages overlap more).
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The fallback poll when no notification arrives (default 500 ms).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Everything up to this checkpoint has been yielded or filtered out; safe to store.
    pub fn checkpoint(&self) -> Checkpoint {
        self.delivered
    }

    /// True once caught up and following live appends.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The next item. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<SubscriptionItem> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.delivered = if self.buffer.is_empty() {
                    self.read_from
                } else {
                    event.checkpoint
                };
                return Ok(SubscriptionItem::Event(event));
            }
            if self.announce_caught_up {
                self.announce_caught_up = false;
                return Ok(SubscriptionItem::CaughtUp(self.delivered));
            }
            if self.live {
                self.wait_for_news().await;
            }
            self.read_page().await?;
        }
    }

    async fn read_page(&mut self) -> Result<()> {
        if self.caught_up_target.is_none() {
            self.caught_up_target = Some(self.store.next_transaction_id().await? as u64);
        }
        let page = match self.prefetch.take() {
            Some((from, handle)) if from == self.read_from => handle
                .await
                .map_err(|e| Error::Background(e.to_string()))??,
            stale => {
                if let Some((_, handle)) = stale {
                    handle.abort();
                }
                self.store
                    .read_all(self.read_from, &self.filter, self.page_size)
                    .await?
            }
        };
        // No await below this line: the state changes all at once (cancel safety).
        let found_new = !page.events.is_empty();
        self.read_from = page.checkpoint;
        self.buffer.extend(page.events);
        if self.buffer.is_empty() {
            self.delivered = self.read_from;
        }
        let target = self.caught_up_target.unwrap_or(0);
        if page.reached_horizon {
            if !self.live {
                self.live = true;
                self.caught_up_pending = true;
            }
            if self.caught_up_pending && page.horizon >= target {
                self.caught_up_pending = false;
                self.announce_caught_up = true;
            }
        } else {
            // Behind by at least a page: catch up before announcing live again.
            self.live = false;
            let store = self.store.clone();
            let (from, filter, limit) = (self.read_from, self.filter.clone(), self.page_size);
            let handle = tokio::spawn(async move { store.read_all(from, &filter, limit).await });
            self.prefetch = Some((from, handle));
        }
        if found_new {
            self.retry_delay = FIRST_RETRY;
        } else {
            self.retry_delay = (self.retry_delay * 2).min(self.poll_interval);
        }
        Ok(())
    }

    async fn wait_for_news(&mut self) {
        let poll_interval = self.poll_interval;
        let retry_delay = self.retry_delay;
        let wake = self
            .wake
            .get_or_insert_with(|| self.store.notifier().watch());
        if retry_delay < poll_interval {
            // Woken recently but found nothing: an older transaction may still hide the
            // new events. Look again after the retry delay at the latest, or sooner when
            // another commit is announced (it may be the one that ends the hiding
            // transaction): sleeping through announcements made the delay grow to hundreds
            // of milliseconds on a busy log whose other categories kept it committing. At
            // most one read per `FIRST_RETRY`, as a read per commit would cost more than it
            // finds.
            tokio::time::sleep(FIRST_RETRY).await;
            let rest = retry_delay.saturating_sub(FIRST_RETRY);
            let _ = tokio::time::timeout(rest, wake.changed()).await;
            wake.borrow_and_update();
            return;
        }
        let _ = tokio::time::timeout(poll_interval, wake.changed()).await;
        wake.borrow_and_update();
        self.retry_delay = FIRST_RETRY;
    }
}
