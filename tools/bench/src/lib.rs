//! Shared pieces of the benchmark binaries: choosing a database, describing the machine,
//! percentiles, and writing a section of `docs/BENCHMARKS.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};

/// A fresh database for one benchmark run, on `DATABASE_URL`'s server, else the local server
/// at 127.0.0.1:5432, else a private cluster with default (durable) settings.
pub struct BenchDb {
    pub pool: PgPool,
    pub url: String,
    _cluster: Option<callback_pgrunner::PrivateCluster>,
}

impl BenchDb {
    pub async fn create(name: &str, max_connections: u32) -> anyhow::Result<BenchDb> {
        Self::connect(name, max_connections, true).await
    }

    /// The database a previous run left, when `keep` data is wanted (`BENCH_REUSE=1`), else a
    /// fresh one; only on a server that outlives the run (not a private cluster).
    pub async fn reuse_or_create(name: &str, max_connections: u32) -> anyhow::Result<BenchDb> {
        let reuse = std::env::var("BENCH_REUSE").is_ok_and(|v| v == "1");
        Self::connect(name, max_connections, !reuse).await
    }

    async fn connect(name: &str, max_connections: u32, fresh: bool) -> anyhow::Result<BenchDb> {
        let (server, cluster) = match std::env::var("DATABASE_URL") {
            Ok(url) => (url, None),
            Err(_) if std::net::TcpStream::connect("127.0.0.1:5432").is_ok() => (
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
                None,
            ),
            Err(_) => {
                let dir =
                    std::env::temp_dir().join(format!("callback-bench-pg-{}", std::process::id()));
                let cluster = callback_pgrunner::PrivateCluster::start(&dir, &[])?;
                (cluster.url(), Some(cluster))
            }
        };
        let mut admin = PgConnection::connect(&server)
            .await
            .context("connecting to PostgreSQL")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut admin)
                .await?;
        if fresh || !exists {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await?;
        }
        admin.close().await?;
        let url = match server.rfind('/') {
            Some(i) if !server[..i].ends_with('/') => format!("{}/{name}", &server[..i]),
            _ => format!("{server}/{name}"),
        };
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(max_connections)
            .acquire_timeout(Duration::from_secs(60))
            .connect(&url)
            .await?;
        Ok(BenchDb {
            pool,
            url,
            _cluster: cluster,
        })
    }
}

/// Machine and server facts for the report.
pub async fn environment(pool: &PgPool) -> anyhow::Result<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("unknown".to_owned(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(pool)
        .await?;
    let mut settings = Vec::new();
    for name in [
        "synchronous_commit",
        "fsync",
        "wal_level",
        "shared_buffers",
        "max_wal_size",
        "commit_delay",
        "autovacuum",
    ] {
        let value: String = sqlx::query_scalar(&format!("SHOW {name}"))
            .fetch_one(pool)
            .await?;
        settings.push(format!("{name}={value}"));
    }
    Ok(format!(
        "- Machine: {cores} cores ({cpu}), {memory} memory; client and server share the cores.\n\
         - PostgreSQL: {}\n- Settings: {}\n",
        version.split(',').next().unwrap_or(&version),
        settings.join(", ")
    ))
}

/// The value at quantile `q` (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Replaces (or appends) the section between `<!-- name:start -->` and `<!-- name:end -->`.
pub fn write_section(name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let path = docs_path();
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nEach section is written by the benchmark named in it; rerun the command to \
         refresh it. Figures are from one run on the machine described in the section.\n"
            .to_owned()
    });
    let start = format!("<!-- {name}:start -->");
    let end = format!("<!-- {name}:end -->");
    let section = format!("{start}\n{body}\n{end}");
    let updated = match (existing.find(&start), existing.find(&end)) {
        (Some(s), Some(e)) if e > s => {
            format!(
                "{}{}{}",
                &existing[..s],
                section,
                &existing[e + end.len()..]
            )
        }
        _ => format!("{}\n{}\n", existing.trim_end(), section),
    };
    std::fs::write(&path, updated)?;
    Ok(path)
}

fn docs_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/BENCHMARKS.md")
}

/// Rows/s of plain single-row INSERTs (an ~800-byte row: uuid, text, JSON) from
/// `concurrency` connections for `duration`: the machine's raw reference in the same run.
pub async fn raw_single_insert_rate(
    pool: &PgPool,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS raw_reference (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         key uuid NOT NULL, stream text NOT NULL, payload json NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(pool)
    .await?;
    let payload = serde_json::json!({
        "note": "患者出院后回访，恢复情况良好，按时服药，对护理服务和医生解释表示满意，建议门诊复查时间提前告知。".repeat(4),
        "scores": [5, 4, 5, 5, 4], "tenant": "hospital-east", "department": "心内科病区"
    })
    .to_string();
    let deadline = std::time::Instant::now() + duration;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let pool = pool.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while std::time::Instant::now() < deadline {
                sqlx::query(
                    "INSERT INTO raw_reference (key, stream, payload) VALUES ($1, $2, $3::json)",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(format!("raw-{worker}"))
                .bind(&payload)
                .execute(&pool)
                .await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// An environment variable parsed as `T`, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Services running in this process as real gRPC servers on ephemeral ports.
pub struct InProcess {
    pub config: callback_kit::Config,
    shutdown: callback_kit::Shutdown,
    servers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    client: BenchClient,
}

/// What the benchmark's clients present: the CA to trust and a bearer token, when secured.
#[derive(Clone)]
pub struct BenchClient {
    ca_pem: Option<String>,
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for BenchClient {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// A channel of the benchmark's clients.
pub type BenchChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BenchClient>;

impl InProcess {
    /// Starts `kinds` against `database_url`, each with a pool of `connections`.
    pub async fn start(
        database_url: &str,
        kinds: &[callback_kit::ServiceKind],
        connections: u32,
    ) -> anyhow::Result<InProcess> {
        Self::start_secured(database_url, kinds, connections, false).await
    }

    /// With `secure`, the services serve TLS and the clients send tokens (a local PKI made
    /// for the run); without, plaintext and no authentication (the baseline).
    pub async fn start_secured(
        database_url: &str,
        kinds: &[callback_kit::ServiceKind],
        connections: u32,
        secure: bool,
    ) -> anyhow::Result<InProcess> {
        Self::start_with(database_url, kinds, connections, secure, &[]).await
    }

    /// Like [`InProcess::start_secured`], with more settings (e.g. the gateway's listeners).
    pub async fn start_with(
        database_url: &str,
        kinds: &[callback_kit::ServiceKind],
        connections: u32,
        secure: bool,
        settings: &[(&str, String)],
    ) -> anyhow::Result<InProcess> {
        let mut vars: std::collections::HashMap<String, String> = settings
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect();
        let mut client = BenchClient {
            ca_pem: None,
            bearer: None,
        };
        if secure {
            let dir =
                std::env::temp_dir().join(format!("callback-bench-pki-{}", std::process::id()));
            let pki = callback_devpki::DevPki::create(&dir)?;
            vars.extend(pki.settings());
            let token = pki.token(
                "bench-client",
                &["*:admin", "*:integration", "*:middleware", "*:supervisor"],
                24 * 3600,
            )?;
            client.ca_pem = Some(pki.ca_pem.clone());
            client.bearer = Some(format!("Bearer {token}").parse()?);
        }
        vars.insert("DATABASE_URL".to_owned(), database_url.to_owned());
        let mut listeners = Vec::new();
        for kind in kinds {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            vars.insert(kind.addr_var(), listener.local_addr()?.to_string());
            listeners.push((*kind, listener));
        }
        let config = if secure {
            callback_kit::Config::from_lookup(|k| vars.get(k).cloned())?
        } else {
            vars.insert(
                "CALLBACK_MASTER_KEY".into(),
                callback_vault::MasterKeys::generate_text("bench"),
            );
            callback_kit::Config::from_lookup_with_security(
                |k| vars.get(k).cloned(),
                callback_kit::Security::unauthenticated_for_benchmarks(),
            )?
        };
        let shutdown = callback_kit::Shutdown::new();
        let mut servers = Vec::new();
        for (kind, listener) in listeners {
            let pool = callback_kit::pool_options(connections)
                .connect(database_url)
                .await?;
            let (config, shutdown) = (config.clone(), shutdown.clone());
            servers.push(tokio::spawn(callbackd::serve_service(
                kind, pool, listener, config, shutdown,
            )));
        }
        Ok(InProcess {
            config,
            shutdown,
            servers,
            client,
        })
    }

    /// A channel to `kind` as the benchmark's client: over TLS with a token when secured.
    pub fn channel(&self, kind: callback_kit::ServiceKind) -> anyhow::Result<BenchChannel> {
        let tls = self.client.ca_pem.as_ref().map(|ca| {
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        });
        let channel = callback_kit::grpc::channel_with_config(self.config.url(kind), tls)?;
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel,
            self.client.clone(),
        ))
    }

    /// Publishes a tenant's settings on scheduling, retrying while the server starts.
    pub async fn publish_tenant(
        &self,
        tenant_id: &str,
        settings_json: String,
    ) -> anyhow::Result<()> {
        use callback_proto::v1::{scheduling_client::SchedulingClient, PublishTenantRequest};
        let mut client =
            SchedulingClient::new(self.channel(callback_kit::ServiceKind::Scheduling)?);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let request = PublishTenantRequest {
                tenant_id: tenant_id.to_owned(),
                settings_json: settings_json.clone(),
            };
            match client.publish_tenant(request).await {
                Ok(_) => return Ok(()),
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        for server in self.servers {
            let _ = server.await;
        }
    }
}
