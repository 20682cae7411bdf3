//! A fresh PostgreSQL database for each test, so tests run in parallel.
//!
//! The server is chosen once per test process: `DATABASE_URL` when set; else the local
//! server at 127.0.0.1:5432 (user `postgres`) when it answers; else a private cluster started
//! from the installed server binaries, stopped when the test process exits.
//! `CALLBACK_TEST_PRIVATE_PG=1` forces the private cluster.

#![allow(clippy::unwrap_used)] // test support: a failure to get a database should abort the test

pub mod fixtures;

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

/// A database created for one test. It is left behind after the test (for inspection) and
/// dropped by a later test run once it is six hours old.
pub struct TestDb {
    pub pool: PgPool,
    pub options: PgConnectOptions,
    pub name: String,
}

impl TestDb {
    /// Creates a fresh, empty database with a pool of up to 20 connections.
    pub async fn new() -> TestDb {
        Self::with_max_connections(20).await
    }

    pub async fn with_max_connections(max_connections: u32) -> TestDb {
        let server = server_options();
        let mut admin = server.connect().await.unwrap();
        drop_stale_databases(&mut admin).await;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!(
            "cbt_{secs}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let options = server.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await
            .unwrap();
        TestDb {
            pool,
            options,
            name,
        }
    }

    /// The database's connection URL, for code configured by URL.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// Another pool on the same database (e.g. for a second service instance).
    pub async fn new_pool(&self, max_connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(self.options.clone())
            .await
            .unwrap()
    }
}

/// Connection options of the server tests use (database `postgres`).
pub fn server_options() -> PgConnectOptions {
    static SERVER: OnceLock<String> = OnceLock::new();
    let url = SERVER.get_or_init(choose_server);
    PgConnectOptions::from_str(url).unwrap()
}

fn choose_server() -> String {
    let force_private = std::env::var("CALLBACK_TEST_PRIVATE_PG").is_ok_and(|v| v == "1");
    if !force_private {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        let local = "postgres://postgres@127.0.0.1:5432/postgres";
        if local_server_answers(local) {
            return local.to_owned();
        }
    }
    let data_dir = std::env::temp_dir().join(format!("callback-test-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    // Durability is pointless for throwaway test data; these settings make tests faster.
    let cluster = callback_pgrunner::PrivateCluster::start(
        &data_dir,
        &[
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
        ],
    )
    .unwrap_or_else(|e| panic!("no PostgreSQL for the tests: {e}"));
    let url = cluster.url();
    cluster
        .stop_when_process_exits(std::process::id(), true)
        .unwrap();
    url
}

/// True when a PostgreSQL server accepts our connection at `url`. Runs on its own thread with
/// its own runtime because it is called from inside tests' runtimes.
fn local_server_answers(url: &str) -> bool {
    if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().unwrap(),
        Duration::from_secs(1),
    )
    .is_err()
    {
        return false;
    }
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio_runtime();
        runtime.block_on(async {
            match PgConnection::connect(&url).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    true
                }
                Err(_) => false,
            }
        })
    })
    .join()
    .unwrap_or(false)
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Drops test databases older than six hours, once per process. Younger ones may belong to a
/// test run still in progress.
async fn drop_stale_databases(admin: &mut PgConnection) {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.set(()).is_err() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'cbt\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let created: Option<u64> = name.split('_').nth(1).and_then(|s| s.parse().ok());
        if created.is_some_and(|t| now.saturating_sub(t) > 6 * 3600) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *admin)
                .await;
        }
    }
}

/// A writing transaction left open in another database of the same server, as a backup tool,
/// an ETL job or a parallel test holds one: it keeps the server's visibility horizon back for
/// every database.
pub struct ForeignTransaction {
    conn: PgConnection,
    pub pid: i32,
}

impl ForeignTransaction {
    /// Opens the transaction (in database `postgres`) and takes a transaction id.
    pub async fn open(application_name: &str) -> ForeignTransaction {
        let mut conn = server_options()
            .application_name(application_name)
            .connect()
            .await
            .unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut conn)
            .await
            .unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        ForeignTransaction { conn, pid }
    }

    /// Ends the transaction.
    pub async fn release(mut self) {
        sqlx::query("COMMIT").execute(&mut self.conn).await.unwrap();
        self.conn.close().await.unwrap();
    }
}

/// Runs `job` (a rebuild, a reset, a report) while a foreign transaction that began before it
/// is open: asserts the job is still waiting after `hold`, then releases the transaction and
/// returns the job's result.
pub async fn while_a_foreign_transaction_is_open<T>(
    hold: Duration,
    job: impl std::future::Future<Output = T>,
) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    let foreign = ForeignTransaction::open("foreign-etl-job").await;
    let finished = AtomicBool::new(false);
    let job = async {
        let result = job.await;
        finished.store(true, Ordering::SeqCst);
        result
    };
    let release = async {
        tokio::time::sleep(hold).await;
        assert!(
            !finished.load(Ordering::SeqCst),
            "the job finished while a transaction begun before it was still open"
        );
        foreign.release().await;
    };
    let (result, ()) = tokio::join!(job, release);
    result
}
