//! Waiting until everything committed before now is readable.
//!
//! The global order is read only below the visibility horizon (the oldest transaction still
//! running anywhere on the PostgreSQL server, whatever its database): an event of a
//! transaction that is still open may yet commit with a smaller transaction id than events
//! already read. So "the read reached the horizon" means "read everything that is safe to read
//! now", not "read everything committed". A one-off job that must see the whole log (a rebuild,
//! a reset, a report) first waits until the horizon has passed every transaction that had begun
//! before it started: [`EventStore::wait_for_horizon`].

use std::time::{Duration, Instant};

use sqlx::Row;

use crate::error::{Error, Result};
use crate::store::EventStore;

/// How long a one-off job waits for older transactions before giving up, unless configured.
pub const DEFAULT_HORIZON_WAIT: Duration = Duration::from_secs(60);

/// After this long, the wait names the sessions it waits for (and again every `REPORT_EVERY`).
const FIRST_REPORT: Duration = Duration::from_secs(3);
const REPORT_EVERY: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// A session whose open transaction holds the horizon back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockingSession {
    pub pid: i32,
    pub application_name: String,
    pub database: String,
    /// How long its transaction has been open.
    pub age: Duration,
}

impl std::fmt::Display for BlockingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let application = if self.application_name.is_empty() {
            "(no application name)"
        } else {
            &self.application_name
        };
        write!(
            f,
            "pid {} ({application}) in database `{}`, transaction open for {} s",
            self.pid,
            self.database,
            self.age.as_secs()
        )
    }
}

/// Lists blocking sessions for an error message or a log line.
pub(crate) fn describe(sessions: &[BlockingSession]) -> String {
    if sessions.is_empty() {
        return "a transaction no session shows (a prepared transaction, or one that just ended)"
            .into();
    }
    sessions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl EventStore {
    /// Waits until every transaction that had begun before this call has ended anywhere on the
    /// server, so that a read up to the horizon then sees everything committed before the call.
    ///
    /// After a few seconds it logs which sessions it waits for; after the store's horizon wait
    /// ([`EventStore::with_horizon_wait`]) it gives up with [`Error::HorizonBlocked`], naming
    /// them. Call it before opening the job's own writing transaction: a transaction that
    /// holds an id would otherwise wait for itself.
    #[tracing::instrument(name = "eventstore.wait_for_horizon", skip_all)]
    pub async fn wait_for_horizon(&self) -> Result<()> {
        let started = Instant::now();
        let target = self.next_transaction_id().await?;
        let mut next_report = FIRST_REPORT;
        loop {
            let horizon: i64 =
                sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    .fetch_one(self.pool())
                    .await?;
            if horizon >= target {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= self.horizon_wait() {
                let blockers = self.blocking_sessions(target).await?;
                return Err(Error::HorizonBlocked {
                    waited_seconds: waited.as_secs(),
                    sessions: describe(&blockers),
                });
            }
            if waited >= next_report {
                let blockers = self.blocking_sessions(target).await?;
                tracing::warn!(
                    waited_seconds = waited.as_secs(),
                    sessions = %describe(&blockers),
                    "waiting for transactions begun before this read to end, to read the whole log"
                );
                next_report = waited + REPORT_EVERY;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A transaction id greater than that of every transaction begun (and holding an id) before
    /// the call. It is taken by a transaction of its own, which ends at once: the snapshot's
    /// `xmax` is not it, as that is only one past the latest *completed* transaction, and open
    /// transactions above it are not listed.
    pub async fn next_transaction_id(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Sessions whose transactions took an id below `target` and are still open.
    pub async fn blocking_sessions(&self, target: i64) -> Result<Vec<BlockingSession>> {
        // `backend_xid` is a 32-bit id; `age` compares it with the target across wraparound.
        let rows = sqlx::query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.datname, ''), \
                    coalesce(extract(epoch FROM now() - a.xact_start), 0)::float8 \
             FROM pg_stat_activity a \
             WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid() \
               AND age(a.backend_xid) > age($1::text::xid8::xid) \
             ORDER BY a.xact_start",
        )
        .bind(target)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let age: f64 = row.try_get(3)?;
                Ok(BlockingSession {
                    pid: row.try_get(0)?,
                    application_name: row.try_get(1)?,
                    database: row.try_get(2)?,
                    age: Duration::from_secs_f64(age.max(0.0)),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_sessions_are_named_with_pid_application_database_and_age() {
        let sessions = [BlockingSession {
            pid: 4242,
            application_name: "pg_dump".into(),
            database: "erp".into(),
            age: Duration::from_secs(75),
        }];
        assert_eq!(
            describe(&sessions),
            "pid 4242 (pg_dump) in database `erp`, transaction open for 75 s"
        );
        assert!(describe(&[]).contains("prepared transaction"));
    }
}
