//! The `EventFeed` gRPC service.

use std::time::Duration;

use callback_eventstore::{EventStore, Filter, SubscriptionItem};
use callback_kit::status::{from_store_error, invalid_argument};
use callback_kit::Shutdown;
use callback_proto::v1::event_feed_server::{EventFeed, EventFeedServer};
use callback_proto::v1::{subscribe_response::Item, SubscribeRequest, SubscribeResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert::{checkpoint_from_proto, checkpoint_to_proto, event_to_proto};

const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Messages buffered per subscriber; beyond that the reader waits (and, being pull-based,
/// simply reads further back in the log once the client catches up).
const SEND_BUFFER: usize = 512;

/// Serves the events of the categories a service owns.
#[derive(Clone)]
pub struct FeedServer {
    store: EventStore,
    owned: Vec<String>,
    /// Ends every open stream, so graceful shutdown is not held up by subscribers.
    shutdown: Shutdown,
}

/// The most categories or event types one subscription may name.
pub const MAX_FILTER_ENTRIES: usize = 100;

impl FeedServer {
    pub fn new(store: EventStore, owned_categories: &[&str], shutdown: Shutdown) -> Self {
        Self {
            store,
            owned: owned_categories.iter().map(|c| c.to_string()).collect(),
            shutdown,
        }
    }

    pub fn into_service(self) -> EventFeedServer<Self> {
        EventFeedServer::new(self)
    }

    fn filter_for(&self, request: &SubscribeRequest) -> Result<Filter, Status> {
        // Bounded: every page read filters by these lists, so a subscription with 100,000
        // event types slowed every other query of the service.
        for (field, count) in [
            ("categories", request.categories.len()),
            ("event_types", request.event_types.len()),
        ] {
            if count > MAX_FILTER_ENTRIES {
                return Err(invalid_argument(
                    field,
                    format!("at most {MAX_FILTER_ENTRIES} entries, got {count}"),
                ));
            }
        }
        for category in &request.categories {
            if !self.owned.contains(category) {
                return Err(invalid_argument(
                    "categories",
                    format!(
                        "this service does not own category {}; it serves {}",
                        callback_rules::input::excerpt(category),
                        self.owned.join(", ")
                    ),
                ));
            }
        }
        if request
            .event_types
            .iter()
            .any(|t| t.is_empty() || t.len() > 100)
        {
            return Err(invalid_argument(
                "event_types",
                "each must be 1-100 characters",
            ));
        }
        let categories = if request.categories.is_empty() {
            self.owned.clone()
        } else {
            request.categories.clone()
        };
        Ok(Filter {
            categories,
            event_types: request.event_types.clone(),
        })
    }
}

#[tonic::async_trait]
impl EventFeed for FeedServer {
    type SubscribeStream = ReceiverStream<Result<SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        // Feeds carry every tenant's events: the services' own principals only. The layer
        // refuses everybody else already; a request that did not pass it is refused here.
        let caller = request
            .extensions()
            .get::<callback_kit::security::Caller>()
            .ok_or_else(|| Status::unauthenticated("no authenticated caller"))?;
        callback_rules::access::may_subscribe(&caller.principal)
            .map_err(|refusal| Status::permission_denied(refusal.message))?;
        let request = request.into_inner();
        let filter = self.filter_for(&request)?;
        if request.heartbeat_seconds > 3600 {
            return Err(invalid_argument("heartbeat_seconds", "at most 3600"));
        }
        let heartbeat = match request.heartbeat_seconds {
            0 => DEFAULT_HEARTBEAT,
            s => Duration::from_secs(u64::from(s)),
        };
        let after = checkpoint_from_proto(request.after.as_ref());
        let mut subscription = self.store.subscribe(after, filter);
        let (sender, receiver) = mpsc::channel(SEND_BUFFER);
        let shutdown = self.shutdown.clone();
        tracing::info!(after = %after, "feed subscriber connected");

        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(heartbeat);
            ticker.tick().await; // the first tick is immediate
            loop {
                let message = tokio::select! {
                    item = subscription.next() => match item {
                        Ok(SubscriptionItem::Event(event)) => Ok(Item::Event(event_to_proto(&event))),
                        Ok(SubscriptionItem::CaughtUp(cp)) => Ok(Item::CaughtUp(checkpoint_to_proto(cp))),
                        Err(error) => Err(from_store_error(error)),
                    },
                    _ = ticker.tick() => Ok(Item::Heartbeat(checkpoint_to_proto(subscription.checkpoint()))),
                    () = sender.closed() => break,
                    () = shutdown.wait() => {
                        let _ = sender.send(Err(Status::unavailable("the service is shutting down"))).await;
                        break;
                    }
                };
                let failed = message.is_err();
                let response = message.map(|item| SubscribeResponse { item: Some(item) });
                if sender.send(response).await.is_err() || failed {
                    break;
                }
            }
            tracing::info!("feed subscriber disconnected");
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
