//! Consuming another service's feed into a local projection.

use std::time::Duration;

use callback_eventstore::{apply_batch, Checkpoint, EventStore, Projection, RecordedEvent};
use callback_kit::grpc::TracePropagation;
use callback_kit::Shutdown;
use callback_proto::v1::event_feed_client::EventFeedClient;
use callback_proto::v1::{subscribe_response::Item, SubscribeRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::convert::{checkpoint_to_proto, event_from_proto};

/// The default largest batch: small enough that a consumer applying each event with its own
/// statements (scheduling's outcomes) keeps its transactions short.
const MAX_BATCH: usize = 500;
/// How long to wait for more events before applying a partial batch.
const BATCH_LINGER: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Subscribes to a remote `EventFeed` and applies what arrives to a projection.
#[derive(Clone)]
pub struct RemoteConsumer {
    channel: Channel,
    categories: Vec<String>,
    event_types: Vec<String>,
    max_batch: usize,
}

/// Where a consumer has got to; for health reporting and tests.
#[derive(Clone)]
pub struct ConsumerProgress {
    state: watch::Receiver<Progress>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    applied: Checkpoint,
    caught_up: bool,
}

impl ConsumerProgress {
    /// The last checkpoint committed with the projection.
    pub fn checkpoint(&self) -> Checkpoint {
        self.state.borrow().applied
    }

    /// Waits until the consumer has caught up with the feed (and applied it), or the timeout.
    pub async fn wait_caught_up(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.state.wait_for(|p| p.caught_up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the committed checkpoint reaches `checkpoint`, or the timeout.
    pub async fn wait_for(&mut self, checkpoint: Checkpoint, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.state.wait_for(|p| p.applied >= checkpoint))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl RemoteConsumer {
    /// Consumes the given categories of the service behind `channel` (empty: all it owns).
    pub fn new(channel: Channel, categories: &[&str]) -> Self {
        Self {
            channel,
            categories: categories.iter().map(|c| c.to_string()).collect(),
            event_types: Vec::new(),
            max_batch: MAX_BATCH,
        }
    }

    /// The largest batch applied in one transaction (default 500). Projections that fold a
    /// batch in memory and write it once (analytics) catch up faster with larger batches.
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    pub fn with_event_types(mut self, event_types: &[&str]) -> Self {
        self.event_types = event_types.iter().map(|t| t.to_string()).collect();
        self
    }

    /// Runs the consumer until shutdown. Errors (the peer down, a projection failure) are
    /// logged and retried with backoff from the stored checkpoint, so nothing is skipped and
    /// nothing applied twice.
    pub fn spawn<P>(
        self,
        store: EventStore,
        mut projection: P,
        shutdown: Shutdown,
    ) -> (JoinHandle<()>, ConsumerProgress)
    where
        P: Projection + Send + 'static,
        P::Error: std::fmt::Display + Send,
    {
        let (progress, state) = watch::channel(Progress::default());
        let handle = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            while !shutdown.is_triggered() {
                match self
                    .session(&store, &mut projection, &progress, &shutdown)
                    .await
                {
                    Ok(()) => backoff = Duration::from_millis(50),
                    Err(reason) => {
                        tracing::warn!(consumer = projection.name(), %reason, "feed consumer interrupted, retrying");
                    }
                }
                progress.send_modify(|p| p.caught_up = false);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.wait() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        (handle, ConsumerProgress { state })
    }

    /// One connection: resume from the stored checkpoint and apply until the stream breaks.
    async fn session<P>(
        &self,
        store: &EventStore,
        projection: &mut P,
        progress: &watch::Sender<Progress>,
        shutdown: &Shutdown,
    ) -> Result<(), String>
    where
        P: Projection,
        P::Error: std::fmt::Display,
    {
        let after = store
            .load_checkpoint(projection.name())
            .await
            .map_err(|e| e.to_string())?;
        progress.send_modify(|p| p.applied = p.applied.max(after));
        let mut client = EventFeedClient::with_interceptor(self.channel.clone(), TracePropagation);
        let request = SubscribeRequest {
            after: Some(checkpoint_to_proto(after)),
            event_types: self.event_types.clone(),
            categories: self.categories.clone(),
            heartbeat_seconds: 1,
        };
        let mut stream = tokio::select! {
            response = client.subscribe(request) => response.map_err(|s| s.to_string())?.into_inner(),
            () = shutdown.wait() => return Ok(()),
        };
        tracing::info!(consumer = projection.name(), after = %after, "feed consumer connected");

        let mut batch: Vec<RecordedEvent> = Vec::new();
        let mut up_to = after;
        let mut caught_up = false;
        loop {
            // Wait without limit for the first message, then linger briefly for more.
            let wait = if batch.is_empty() {
                None
            } else {
                Some(BATCH_LINGER)
            };
            let next = async {
                match wait {
                    None => Some(stream.message().await),
                    Some(linger) => tokio::time::timeout(linger, stream.message()).await.ok(),
                }
            };
            let received = tokio::select! {
                received = next => received,
                () = shutdown.wait() => return Ok(()),
            };
            let mut flush = received.is_none() || batch.len() >= self.max_batch;
            let mut ended = None;
            match received {
                None => {}
                Some(Ok(Some(message))) => match message.item {
                    Some(Item::Event(event)) => {
                        let event = event_from_proto(event).map_err(|s| s.to_string())?;
                        up_to = up_to.max(event.checkpoint);
                        batch.push(event);
                    }
                    Some(Item::Heartbeat(cp)) => {
                        up_to = up_to.max(Checkpoint::new(cp.transaction_id, cp.position));
                        flush = true;
                    }
                    Some(Item::CaughtUp(cp)) => {
                        up_to = up_to.max(Checkpoint::new(cp.transaction_id, cp.position));
                        caught_up = true;
                        flush = true;
                    }
                    None => {}
                },
                Some(Ok(None)) => {
                    flush = true;
                    ended = Some("the feed ended the stream".to_owned());
                }
                Some(Err(status)) => {
                    flush = true;
                    ended = Some(status.to_string());
                }
            }
            if flush && (up_to > progress.borrow().applied || !batch.is_empty()) {
                apply_batch(store, projection, &batch, up_to)
                    .await
                    .map_err(|e| e.to_string())?;
                batch.clear();
                progress.send_modify(|p| {
                    p.applied = p.applied.max(up_to);
                    p.caught_up |= caught_up;
                });
            } else if flush && caught_up {
                progress.send_modify(|p| p.caught_up = true);
            }
            if let Some(reason) = ended {
                return Err(reason);
            }
        }
    }
}
