//! Commands that arrive together are served by one transaction (group commit).
//!
//! Why: when many clients send the same command at once, each command's own work (a few rows
//! and events) is small beside what every transaction costs anyway: begin, commit and its
//! statements as separate round trips. Requests wait in a queue; a few workers each take
//! everything waiting (up to [`MAX_BATCH`]) and serve it with set-based statements. A lone
//! request is a batch of one, so an idle service answers as fast as without the queue.
//! Each command defines what one batch does (`claims.rs`, `ingests.rs`); a batch that fails
//! as a whole is served again request by request, so one request's problem is not every
//! client's answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use super::Scheduling;
use crate::error::{Error, Result};

/// At most this many requests are served by one transaction.
pub(super) const MAX_BATCH: usize = 64;
/// Workers serving batches side by side per command (each holds a connection while it works).
const WORKERS: usize = 2;
/// Requests waiting beyond this make the caller wait to enqueue (back-pressure).
const QUEUE_CAPACITY: usize = 4096;

/// What a worker does with a batch: answer every request in it.
pub(super) type Serve<R> = fn(Scheduling, Vec<R>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// The sending end of one command's queue, started on first use (inside the runtime). Workers
/// do not hold it, so they stop once every handle of the service is gone.
pub(super) struct BatchQueue<R> {
    sender: Arc<OnceLock<mpsc::Sender<R>>>,
}

impl<R> Default for BatchQueue<R> {
    fn default() -> Self {
        Self {
            sender: Arc::default(),
        }
    }
}

impl<R> Clone for BatchQueue<R> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<R: Send + 'static> BatchQueue<R> {
    pub(super) async fn submit(&self, app: &Scheduling, serve: Serve<R>, request: R) -> Result<()> {
        let sender = self.sender.get_or_init(|| start_workers(app, serve));
        sender
            .send(request)
            .await
            .map_err(|_| stopped("the command queue is closed"))
    }
}

pub(super) fn stopped(what: &str) -> Error {
    Error::Store(callback_eventstore::Error::Background(what.to_owned()))
}

fn start_workers<R: Send + 'static>(app: &Scheduling, serve: Serve<R>) -> mpsc::Sender<R> {
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    // Each worker keeps a connection busy; a small pool gets fewer.
    let pool_size = app.store.pool().options().get_max_connections() as usize;
    let workers = WORKERS.min((pool_size / 2).max(1));
    for _ in 0..workers {
        // A handle without the queues: the workers must not keep their own queue open.
        let worker = app.without_queues();
        let receiver = receiver.clone();
        tokio::spawn(async move {
            loop {
                let batch = {
                    let mut receiver = receiver.lock().await;
                    let Some(first) = receiver.recv().await else {
                        return;
                    };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    batch
                };
                serve(worker.clone(), batch).await;
            }
        });
    }
    sender
}
