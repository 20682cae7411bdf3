//! Work that must run on one instance at a time when a service runs as several replicas
//! against one database: a feed consumer, a timer sweep. The instance that holds a PostgreSQL
//! session advisory lock named after the work runs it; the others wait. When the holder dies
//! (its connection drops, the server releases the lock) another takes over within
//! [`RETRY`]; when the holder's connection breaks while it lives, it stops the work within
//! [`CHECK`] and competes again.
//!
//! The lock keeps the work in one place (no two instances racing to apply the same batch, no
//! sweep done twice over); correctness does not rest on it alone: consumers store their
//! checkpoints with their rows (a batch applied twice is skipped), and every write checks the
//! stream's version, so the short overlap a broken connection may leave changes nothing.

use std::future::Future;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

/// The first key of every lock the system takes (`callback` in ASCII, truncated): the second is
/// `hashtext(name)`, so other applications' advisory locks on the server do not collide.
const CLASS: i32 = 0x6361_6c6c;
/// How often the holder checks its lock's connection.
pub const CHECK: Duration = Duration::from_secs(2);
/// How often a waiting instance tries to take the lock.
pub const RETRY: Duration = Duration::from_secs(2);

/// Holds the lock named `name` while it lives; dropping it closes the connection (releasing
/// the lock).
pub struct Lease {
    connection: PgConnection,
    name: String,
}

impl Lease {
    /// Takes the lock if nobody holds it.
    pub async fn try_take(pool: &PgPool, name: &str) -> Result<Option<Lease>, sqlx::Error> {
        // A connection of its own, outside the pool: the lock lives and dies with it.
        let mut connection = pool.acquire().await?.detach();
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(CLASS)
            .bind(name)
            .fetch_one(&mut connection)
            .await?;
        if taken {
            Ok(Some(Lease {
                connection,
                name: name.to_owned(),
            }))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }

    /// Whether the lock's connection still answers (a dropped connection lost the lock).
    pub async fn alive(&mut self) -> bool {
        tokio::time::timeout(CHECK, sqlx::query("SELECT 1").execute(&mut self.connection))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Gives the lock up.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(CLASS)
            .bind(&self.name)
            .execute(&mut self.connection)
            .await;
        let _ = self.connection.close().await;
    }
}

/// Runs `work` (given a shutdown of its own) whenever this instance holds the lock `name`,
/// until `shutdown`.
pub fn spawn<F, Fut>(pool: PgPool, name: String, shutdown: Shutdown, work: F) -> JoinHandle<()>
where
    F: Fn(Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut waiting_said = false;
        while !shutdown.is_triggered() {
            let lease = match Lease::try_take(&pool, &name).await {
                Ok(lease) => lease,
                Err(error) => {
                    tracing::warn!(task = %name, %error, "cannot ask for the lease; retrying");
                    None
                }
            };
            let Some(mut lease) = lease else {
                if !waiting_said {
                    tracing::info!(task = %name, "another instance runs this; standing by");
                    waiting_said = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = shutdown.wait() => return,
                }
                continue;
            };
            waiting_said = false;
            tracing::info!(task = %name, "took the lease");
            let stop = shutdown.child();
            let mut running = tokio::spawn(work(stop.clone()));
            let lost = loop {
                tokio::select! {
                    () = tokio::time::sleep(CHECK) => {
                        if !lease.alive().await {
                            break true;
                        }
                    }
                    () = shutdown.wait() => break false,
                    _ = &mut running => break false,
                }
            };
            stop.trigger();
            let _ = running.await;
            if lost {
                tracing::warn!(task = %name, "lost the lease (its connection broke); stopped, competing again");
            }
            lease.release().await;
            if !lost && !shutdown.is_triggered() {
                // The work ended by itself: not a reason to spin.
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = shutdown.wait() => {}
                }
            }
        }
    })
}
