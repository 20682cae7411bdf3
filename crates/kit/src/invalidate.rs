//! Keeping in-process caches honest across instances: every instance follows the log's
//! categories its cache is built from (a tenant's settings, say) and drops an entry when an event
//! of it arrives, whichever instance wrote it. The subscription starts at the beginning of the
//! category (a few events per tenant) and reconnects after errors; a cache's time limit stays
//! as the fallback should the subscription lag.

use std::time::Duration;

use callback_eventstore::{Checkpoint, EventStore, Filter, RecordedEvent, SubscriptionItem};
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

/// Calls `changed` with every event of `categories`, as it is committed, until `shutdown`.
pub fn spawn<F>(
    store: EventStore,
    categories: &'static [&'static str],
    shutdown: Shutdown,
    changed: F,
) -> JoinHandle<()>
where
    F: Fn(&RecordedEvent) + Send + 'static,
{
    tokio::spawn(async move {
        let mut after = Checkpoint::START;
        while !shutdown.is_triggered() {
            let mut subscription =
                store.subscribe(after, Filter::categories(categories.iter().copied()));
            loop {
                let item = tokio::select! {
                    item = subscription.next() => item,
                    () = shutdown.wait() => return,
                };
                match item {
                    Ok(SubscriptionItem::Event(event)) => {
                        after = after.max(event.checkpoint);
                        changed(&event);
                    }
                    Ok(SubscriptionItem::CaughtUp(_)) => {}
                    Err(error) => {
                        tracing::warn!(%error, "cache invalidation feed interrupted; resubscribing");
                        break;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.wait() => return,
            }
        }
    })
}

/// The tenant an event belongs to (its metadata), if it says.
pub fn tenant_of(event: &RecordedEvent) -> Option<String> {
    event.metadata().ok().and_then(|m| m.tenant_id)
}
