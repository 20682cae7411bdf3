//! Commands that arrive together, served by one transaction (group commit).
//!
//! Why: when many clients send the same command at once, each command's own work (a few rows
//! and events) is small beside what every transaction costs anyway: begin, commit and its
//! statements as separate round trips. Requests wait in a queue; a few workers each take
//! everything waiting (up to [`MAX_BATCH`]) and serve it with set-based statements. A lone
//! request is a batch of one, so an idle service answers as fast as without the queue.
//! Each service defines what one batch does; a batch that fails as a whole should be served
//! again request by request, so one request's problem is not every client's answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

/// At most this many requests are served by one transaction.
pub const MAX_BATCH: usize = 64;
/// Workers serving batches side by side per queue (each holds a connection while it works).
/// Measured with 50 claimers: two did as well as three or four.
const WORKERS: usize = 2;
/// Requests waiting beyond this make the caller wait to enqueue (back-pressure).
const QUEUE_CAPACITY: usize = 4096;

/// What a worker does with a batch: answer every request in it, using the handle `H` (the
/// service's application, cheap to clone).
pub type Serve<H, R> = fn(H, Vec<R>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// The request was not answered: its batch failed unexpectedly (a defect, logged with an
/// incident id; the queue goes on serving other batches) or the service is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the request's batch failed or the service is stopping; nothing of it was written")]
pub struct QueueClosed;

/// The sending end of one command's queue, started on first use (inside the runtime). Workers
/// get a handle from the caller that must not hold this queue, so they stop once every
/// handle of the service is gone.
pub struct BatchQueue<R> {
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
    /// Queues the request that `request` builds around its reply channel and waits for the
    /// answer. On first use starts the workers (one per two connections of `pool`, at most
    /// two: each keeps a connection busy), each serving batches with `serve` on a clone of
    /// `worker()`, which must not hold this queue.
    pub async fn ask<H: Clone + Send + 'static, T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> R,
        pool: &sqlx::PgPool,
        worker: impl FnOnce() -> H,
        serve: Serve<H, R>,
    ) -> Result<T, QueueClosed> {
        let sender = self.sender.get_or_init(|| {
            let workers = pool.options().get_max_connections() as usize / 2;
            start_workers(workers, worker(), serve)
        });
        let (reply, answer) = oneshot::channel();
        sender.send(request(reply)).await.map_err(|_| QueueClosed)?;
        // A worker that stopped (the runtime shutting down) drops the reply unanswered.
        answer.await.map_err(|_| QueueClosed)
    }
}

fn start_workers<H: Clone + Send + 'static, R: Send + 'static>(
    workers: usize,
    worker: H,
    serve: Serve<H, R>,
) -> mpsc::Sender<R> {
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    for _ in 0..workers.clamp(1, WORKERS) {
        let (worker, receiver) = (worker.clone(), receiver.clone());
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
                // Served on a task of its own: a batch that panics (a defect) loses only its
                // own requests, whose callers get an answer (their reply channels close), and
                // this worker goes on with the next batch, so one bad request never stops the
                // queue for every tenant.
                if let Err(failure) = tokio::spawn(serve(worker.clone(), batch)).await {
                    if failure.is_panic() {
                        let incident = uuid::Uuid::now_v7();
                        tracing::error!(%incident, "a batch of commands panicked; its requests were refused");
                    }
                }
            }
        });
    }
    sender
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request: a number to double, answered on its channel; 13 makes the batch panic.
    struct Double(u32, oneshot::Sender<u32>);

    fn serve(_: (), batch: Vec<Double>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            assert!(
                batch.iter().all(|r| r.0 != 13),
                "a defect hit by request 13"
            );
            for Double(n, reply) in batch {
                let _ = reply.send(n * 2);
            }
        })
    }

    #[tokio::test]
    async fn a_batch_that_panics_fails_only_its_own_requests() {
        let sender = start_workers(1, (), serve as Serve<(), Double>);
        let ask = |n: u32| {
            let sender = sender.clone();
            async move {
                let (reply, answer) = oneshot::channel();
                sender
                    .send(Double(n, reply))
                    .await
                    .map_err(|_| QueueClosed)?;
                answer.await.map_err(|_| QueueClosed)
            }
        };
        assert_eq!(ask(2).await.unwrap(), 4);
        assert!(ask(13).await.is_err(), "the panicking batch is refused");
        // The worker goes on: later requests are served.
        for n in [3, 4, 5] {
            assert_eq!(ask(n).await.unwrap(), n * 2);
        }
    }
}
