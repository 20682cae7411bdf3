//! Wake-ups for subscribers.
//!
//! Writers do not `NOTIFY` inside their transactions: PostgreSQL serialises every notifying
//! transaction on one lock held through commit (`PreCommit_Notify`), which would cap all
//! writers at the rate of one fsync at a time. Instead, after a commit the writer pokes a
//! background task that sends one `NOTIFY` outside any write transaction, coalescing pokes
//! that arrive while it is busy. Subscribers in the same process are woken directly; those
//! in other processes through `LISTEN`, and a periodic poll covers anything missed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{mpsc, watch};

pub(crate) const CHANNEL: &str = "callback_events";

#[derive(Clone)]
pub(crate) struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// Bumped on every local commit and every notification received.
    wake: watch::Sender<u64>,
    /// Pokes for the task that sends `NOTIFY`; capacity 1 coalesces bursts.
    poke: Mutex<Option<mpsc::Sender<()>>>,
    listening: Mutex<bool>,
}

impl Notifier {
    pub(crate) fn new(pool: PgPool) -> Self {
        let (wake, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                pool,
                wake,
                poke: Mutex::new(None),
                listening: Mutex::new(false),
            }),
        }
    }

    /// Called after a transaction that appended events committed.
    pub(crate) fn committed(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
        let mut poke = self.inner.poke.lock().unwrap_or_else(|p| p.into_inner());
        let sender = poke.get_or_insert_with(|| spawn_sender(self.inner.pool.clone()));
        // Full means a NOTIFY is already pending and will cover this commit.
        let _ = sender.try_send(());
    }

    /// A receiver that changes whenever new events may be readable.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        let mut listening = self
            .inner
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !*listening {
            *listening = true;
            spawn_listener(self.inner.pool.clone(), self.inner.wake.clone());
        }
        self.inner.wake.subscribe()
    }
}

fn spawn_sender(pool: PgPool) -> mpsc::Sender<()> {
    let (sender, mut pokes) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        while pokes.recv().await.is_some() {
            if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&pool)
                .await
            {
                // Subscribers still poll; a lost notification only delays them.
                tracing::warn!(%error, "could not send event notification");
            }
        }
    });
    sender
}

fn spawn_listener(pool: PgPool, wake: watch::Sender<u64>) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            if pool.is_closed() {
                return;
            }
            if let Err(error) = listen(&pool, &wake).await {
                // Notifications may have been missed while the connection was down.
                wake.send_modify(|n| *n = n.wrapping_add(1));
                if !pool.is_closed() {
                    tracing::warn!(%error, "event listener failed, reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

async fn listen(pool: &PgPool, wake: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    loop {
        listener.recv().await?;
        wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}
