use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio_stream::StreamExt;
use uuid::Uuid;

use crate::error::{violated_unique_constraint, Error, Result};
use crate::model::{
    is_valid_category, AppendResult, Checkpoint, ExpectedVersion, Filter, NewEvent, ReadPage,
    RecordedEvent, StreamName, MAX_BATCH_EVENTS,
};
use crate::notify::Notifier;
use crate::subscription::Subscription;

mod append;
mod read;

/// One stream's part of [`EventStore::append_streams_in`].
#[derive(Clone, Copy, Debug)]
pub struct StreamAppend<'a> {
    pub stream: &'a StreamName,
    pub expected: ExpectedVersion,
    pub events: &'a [NewEvent],
}

/// Handle to the event log. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    categories: Arc<RwLock<HashSet<String>>>,
    notifier: Notifier,
    horizon_wait: std::time::Duration,
}

impl EventStore {
    /// Runs the log's migrations and returns a handle. Call once per process.
    pub async fn open(pool: PgPool) -> Result<Self> {
        crate::migrator().run(&pool).await?;
        Self::open_migrated(pool).await
    }

    /// A handle on a log migrated by its owner (the pool's role may only read and append).
    pub async fn open_migrated(pool: PgPool) -> Result<Self> {
        let store = Self {
            notifier: Notifier::new(pool.clone()),
            pool,
            categories: Arc::default(),
            horizon_wait: crate::horizon::DEFAULT_HORIZON_WAIT,
        };
        store.reload_categories().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// How long one-off jobs wait for older transactions ([`EventStore::wait_for_horizon`])
    /// before giving up; default [`crate::DEFAULT_HORIZON_WAIT`].
    pub fn with_horizon_wait(mut self, wait: std::time::Duration) -> Self {
        self.horizon_wait = wait;
        self
    }

    pub fn horizon_wait(&self) -> std::time::Duration {
        self.horizon_wait
    }

    /// Declares the stream categories a service owns. Idempotent.
    #[tracing::instrument(name = "eventstore.register_categories", skip_all, fields(owner))]
    pub async fn register_categories(&self, owner: &str, categories: &[&str]) -> Result<()> {
        for category in categories {
            if !is_valid_category(category) {
                return Err(Error::InvalidStream(format!(
                    "category `{category}` must be lowercase letters, digits and `_`"
                )));
            }
        }
        let names: Vec<String> = categories.iter().map(|c| c.to_string()).collect();
        sqlx::query(
            "INSERT INTO stream_categories (name, owner) SELECT unnest($1::text[]), $2 \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&names)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        self.reload_categories().await
    }

    async fn reload_categories(&self) -> Result<()> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM stream_categories")
            .fetch_all(&self.pool)
            .await?;
        let mut known = self.categories.write().unwrap_or_else(|p| p.into_inner());
        known.extend(names);
        Ok(())
    }

    async fn check_category(&self, category: &str) -> Result<()> {
        let known = |c: &str| {
            self.categories
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(c)
        };
        if known(category) {
            return Ok(());
        }
        // Another process may have registered it since we loaded the list.
        self.reload_categories().await?;
        if known(category) {
            Ok(())
        } else {
            Err(Error::UnknownCategory(category.to_owned()))
        }
    }

    /// Starts a transaction for [`EventStore::append_in`].
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Commits a transaction that appended events and wakes subscribers.
    pub async fn commit(&self, tx: Transaction<'static, Postgres>) -> Result<()> {
        tx.commit().await?;
        self.notifier.committed();
        Ok(())
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}
