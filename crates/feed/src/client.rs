//! Consuming another service's feed into a local projection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use callback_eventstore::{
    apply_batch, BatchProjection, Checkpoint, EventStore, Pipeline, Projection, RecordedEvent,
};
use callback_kit::exclusive::{self, Lease};
use callback_kit::grpc::{traced, ServiceChannel};
use callback_kit::Shutdown;
use callback_proto::v1::event_feed_client::EventFeedClient;
use callback_proto::v1::{subscribe_response::Item, SubscribeRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    channel: ServiceChannel,
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
    pub fn new(channel: impl Into<ServiceChannel>, categories: &[&str]) -> Self {
        Self {
            channel: channel.into(),
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

    /// Runs the consumer until shutdown, applying each batch before receiving more. Errors
    /// (the peer down, a projection failure) are logged and retried with backoff from the
    /// stored checkpoint, so nothing is skipped and nothing applied twice.
    pub fn spawn<P>(
        self,
        store: EventStore,
        projection: P,
        shutdown: Shutdown,
    ) -> (JoinHandle<()>, ConsumerProgress)
    where
        P: Projection + Send + 'static,
        P::Error: std::fmt::Display + Send,
    {
        let immediate = Immediate {
            store: store.clone(),
            projection,
            committed: Checkpoint::START,
        };
        self.run(store, immediate, shutdown)
    }

    /// Like [`RemoteConsumer::spawn`] for a projection that folds each batch and writes it
    /// once: while catching up (full batches), the next batch is received and folded while
    /// the previous one is written; once live, each batch is committed before the next.
    pub fn spawn_batched<P>(
        self,
        store: EventStore,
        projection: P,
        shutdown: Shutdown,
    ) -> (JoinHandle<()>, ConsumerProgress)
    where
        P: BatchProjection,
        P::Error: std::fmt::Display,
    {
        let pipelined = Pipelined {
            projection: Arc::new(projection),
            pipeline: None,
        };
        self.run(store, pipelined, shutdown)
    }

    fn run<A: Applier + 'static>(
        self,
        store: EventStore,
        mut applier: A,
        shutdown: Shutdown,
    ) -> (JoinHandle<()>, ConsumerProgress) {
        let (progress, state) = watch::channel(Progress::default());
        let handle = tokio::spawn(async move {
            let name = applier.name().to_owned();
            let pool = store.pool().clone();
            let mut registered = false;
            let mut standing_by = false;
            while !shutdown.is_triggered() {
                // One instance of the service consumes at a time (callback_kit::exclusive).
                let lease = match Lease::try_take(&pool, &name).await {
                    Ok(lease) => lease,
                    Err(error) => {
                        tracing::warn!(consumer = %name, %error, "cannot ask for the consumer's lease; retrying");
                        None
                    }
                };
                let Some(mut lease) = lease else {
                    if !standing_by {
                        tracing::info!(consumer = %name, "another instance consumes this feed; standing by");
                        standing_by = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(exclusive::RETRY) => {}
                        () = shutdown.wait() => {}
                    }
                    continue;
                };
                standing_by = false;
                if !registered {
                    callback_kit::metrics::register_consumer(
                        &name,
                        &self.categories,
                        &self.event_types,
                    );
                    registered = true;
                }
                let stop = shutdown.child();
                let lost = {
                    let consuming = self.consume(&store, &mut applier, &progress, &stop);
                    let watching = async {
                        loop {
                            tokio::time::sleep(exclusive::CHECK).await;
                            if !lease.alive().await {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        () = consuming => false,
                        () = watching => true,
                    }
                };
                stop.trigger();
                progress.send_modify(|p| p.caught_up = false);
                if lost {
                    tracing::warn!(consumer = %name, "lost the consumer's lease (its connection broke); competing again");
                }
                lease.release().await;
            }
        });
        (handle, ConsumerProgress { state })
    }

    /// Sessions one after another, with backoff, until `shutdown`.
    async fn consume<A: Applier>(
        &self,
        store: &EventStore,
        applier: &mut A,
        progress: &watch::Sender<Progress>,
        shutdown: &Shutdown,
    ) {
        let mut backoff = Duration::from_millis(50);
        while !shutdown.is_triggered() {
            match self.session(store, applier, progress, shutdown).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(reason) => {
                    tracing::warn!(consumer = applier.name(), %reason, "feed consumer interrupted, retrying");
                }
            }
            progress.send_modify(|p| p.caught_up = false);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.wait() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: resume from the stored checkpoint and apply until the stream breaks.
    async fn session<A: Applier>(
        &self,
        store: &EventStore,
        applier: &mut A,
        progress: &watch::Sender<Progress>,
        shutdown: &Shutdown,
    ) -> Result<(), String> {
        let after = store
            .load_checkpoint(applier.name())
            .await
            .map_err(|e| e.to_string())?;
        applier.resume(store, after);
        progress.send_modify(|p| p.applied = p.applied.max(after));
        let mut client = EventFeedClient::new(traced(self.channel.clone()));
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
        tracing::info!(consumer = applier.name(), after = %after, "feed consumer connected");

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
            let full = batch.len() >= self.max_batch;
            let lull = received.is_none();
            let mut flush = lull || full;
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
                let mut committed = applier.apply(&batch, up_to).await?;
                // Only a full batch while catching up may leave its write in flight: anything
                // else (a lull, a heartbeat, caught up, the end) is committed before reporting.
                let settle = !full || lull || caught_up || ended.is_some();
                if settle {
                    committed = applier.settle().await?;
                }
                let newest = batch.last().map(|e| e.recorded_at);
                batch.clear();
                progress.send_modify(|p| {
                    p.applied = p.applied.max(committed);
                    p.caught_up |= caught_up && settle;
                });
                let applied = progress.borrow().applied;
                callback_kit::metrics::consumer_applied(
                    applier.name(),
                    (applied.transaction_id as i64, applied.position),
                    newest,
                    caught_up && settle,
                );
            } else if flush && caught_up {
                progress.send_modify(|p| p.caught_up = true);
                let applied = progress.borrow().applied;
                callback_kit::metrics::consumer_applied(
                    applier.name(),
                    (applied.transaction_id as i64, applied.position),
                    None,
                    true,
                );
            }
            if let Some(reason) = ended {
                return Err(reason);
            }
        }
    }
}

/// How a consumer session applies the batches it receives.
trait Applier: Send {
    fn name(&self) -> &str;

    /// A new session resumes after the stored checkpoint.
    fn resume(&mut self, store: &EventStore, stored: Checkpoint);

    /// Applies (or starts applying) a batch; returns the checkpoint committed so far.
    fn apply(
        &mut self,
        events: &[RecordedEvent],
        up_to: Checkpoint,
    ) -> impl Future<Output = Result<Checkpoint, String>> + Send;

    /// Waits until everything applied is committed; returns that checkpoint.
    fn settle(&mut self) -> impl Future<Output = Result<Checkpoint, String>> + Send;
}

/// Each batch in its own transaction before the next is received.
struct Immediate<P> {
    store: EventStore,
    projection: P,
    committed: Checkpoint,
}

impl<P> Applier for Immediate<P>
where
    P: Projection + Send,
    P::Error: std::fmt::Display + Send,
{
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn resume(&mut self, _store: &EventStore, stored: Checkpoint) {
        self.committed = stored;
    }

    async fn apply(
        &mut self,
        events: &[RecordedEvent],
        up_to: Checkpoint,
    ) -> Result<Checkpoint, String> {
        apply_batch(&self.store, &mut self.projection, events, up_to)
            .await
            .map_err(|e| e.to_string())?;
        self.committed = self.committed.max(up_to);
        Ok(self.committed)
    }

    async fn settle(&mut self) -> Result<Checkpoint, String> {
        Ok(self.committed)
    }
}

/// Folds the next batch while the previous one is written (see [`Pipeline`]).
struct Pipelined<P: BatchProjection> {
    projection: Arc<P>,
    /// One per session, resuming from the checkpoint stored when it began.
    pipeline: Option<Pipeline<P>>,
}

impl<P> Pipelined<P>
where
    P: BatchProjection,
    P::Error: std::fmt::Display,
{
    fn pipeline(&mut self) -> Result<&mut Pipeline<P>, String> {
        self.pipeline
            .as_mut()
            .ok_or_else(|| "the session has not resumed".to_owned())
    }
}

impl<P> Applier for Pipelined<P>
where
    P: BatchProjection,
    P::Error: std::fmt::Display,
{
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn resume(&mut self, store: &EventStore, stored: Checkpoint) {
        self.pipeline = Some(Pipeline::new(
            store.clone(),
            self.projection.clone(),
            stored,
        ));
    }

    async fn apply(
        &mut self,
        events: &[RecordedEvent],
        up_to: Checkpoint,
    ) -> Result<Checkpoint, String> {
        self.pipeline()?
            .submit(events, up_to)
            .await
            .map_err(|e| e.to_string())
    }

    async fn settle(&mut self) -> Result<Checkpoint, String> {
        self.pipeline()?.settle().await.map_err(|e| e.to_string())
    }
}
