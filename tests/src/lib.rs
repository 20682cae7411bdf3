//! Harness for end-to-end tests: starts services as real gRPC servers on ephemeral ports,
//! wired by the same configuration the binaries read, against one test database.

#![allow(clippy::unwrap_used)]

pub mod raw;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use callback_kit::{grpc, Config, ServiceKind, Shutdown};
use callback_testkit::TestDb;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The tests' PKI: a CA, the services' certificate, the harness's client certificate and a
/// token signer, made once per test process in a temporary folder.
pub struct TestPki {
    pub pki: callback_devpki::DevPki,
    pub ca_pem: String,
    pub harness: callback_devpki::ClientIdentity,
    /// The security settings every service of a [`System`] reads.
    pub settings: Vec<(String, String)>,
}

/// What the harness may do: everything but act as an agent itself, in every tenant.
pub const HARNESS_PERMISSIONS: &[&str] = &[
    "*:integration",
    "*:middleware",
    "*:handler",
    "*:supervisor",
    "*:admin",
    "*:bi",
    "*:service",
];

/// The subject the harness's certificate is mapped to (the reader of full views it asks for).
pub const HARNESS_SUBJECT: &str = "test-harness";

pub fn test_pki() -> &'static TestPki {
    static PKI: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("callback-test-pki-{}", std::process::id()));
        let mut pki = callback_devpki::DevPki::create(&dir).unwrap();
        let harness = pki.client(HARNESS_SUBJECT, HARNESS_PERMISSIONS).unwrap();
        TestPki {
            ca_pem: pki.ca_pem.clone(),
            settings: pki.settings(),
            harness,
            pki,
        }
    })
}

/// A token from the tests' signer for `subject` with `permissions`, valid for an hour.
pub fn token(subject: &str, permissions: &[&str]) -> String {
    test_pki().pki.token(subject, permissions, 3600).unwrap()
}

/// A client interceptor that sends `token` as a bearer token.
#[derive(Clone)]
pub struct Bearer(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Bearer(format!("Bearer {token}").parse().unwrap())
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Running services. Dropping it does not stop them; call [`System::stop`].
pub struct System {
    pub db: TestDb,
    pub config: Config,
    pub shutdown: Shutdown,
    running: HashMap<ServiceKind, (Shutdown, JoinHandle<()>)>,
    listeners: HashMap<ServiceKind, SocketAddr>,
    /// Each service's port, held from the reservation until the service starts on it, so that
    /// no other socket of a test running in parallel (a probe, an outgoing connection) takes it.
    reserved: HashMap<ServiceKind, TcpListener>,
    /// The integration gateway's MLLP and HTTP ports, held until it starts.
    reserved_gateway: Vec<TcpListener>,
    /// Where the integration gateway listens for MLLP and HTTP(S).
    pub mllp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// When set, the scheduling, complaint-routing and analytics services run on this clock
    /// (simulated time).
    scheduling_clock: Option<std::sync::Arc<dyn callback_rules::Clock>>,
}

impl System {
    /// Starts the given services; the others' addresses are reserved so that a service
    /// started later gets the address its peers were configured with.
    pub async fn start(kinds: &[ServiceKind]) -> System {
        Self::start_with(kinds, None).await
    }

    /// Like [`System::start`], with scheduling and complaint routing on simulated time.
    pub async fn start_on_clock(
        kinds: &[ServiceKind],
        clock: callback_rules::ManualClock,
    ) -> System {
        Self::start_with(kinds, Some(std::sync::Arc::new(clock))).await
    }

    /// Like [`System::start`] on `db`, the services connecting as the role of `service_url`
    /// and migrating as the owner at `owner_url` (`CALLBACK_MIGRATION_DATABASE_URL`).
    pub async fn start_as(
        kinds: &[ServiceKind],
        db: TestDb,
        service_url: String,
        owner_url: String,
    ) -> System {
        Self::start_on(kinds, None, db, Some((service_url, owner_url)), &[]).await
    }

    /// Like [`System::start`], with settings changed (`None` removes one): e.g. plaintext.
    pub async fn start_with_settings(
        kinds: &[ServiceKind],
        settings: &[(&str, Option<String>)],
    ) -> System {
        Self::start_on(kinds, None, TestDb::new().await, None, settings).await
    }

    async fn start_with(
        kinds: &[ServiceKind],
        scheduling_clock: Option<std::sync::Arc<dyn callback_rules::Clock>>,
    ) -> System {
        Self::start_on(kinds, scheduling_clock, TestDb::new().await, None, &[]).await
    }

    async fn start_on(
        kinds: &[ServiceKind],
        scheduling_clock: Option<std::sync::Arc<dyn callback_rules::Clock>>,
        db: TestDb,
        roles: Option<(String, String)>,
        settings: &[(&str, Option<String>)],
    ) -> System {
        let mut listeners = HashMap::new();
        let mut reserved = HashMap::new();
        for kind in ServiceKind::ALL {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(kind, listener.local_addr().unwrap());
            reserved.insert(kind, listener);
        }
        let mut vars: HashMap<String, String> = test_pki().settings.iter().cloned().collect();
        match &roles {
            Some((service_url, owner_url)) => {
                vars.insert("DATABASE_URL".into(), service_url.clone());
                vars.insert("CALLBACK_MIGRATION_DATABASE_URL".into(), owner_url.clone());
            }
            None => {
                vars.insert("DATABASE_URL".into(), db.url());
            }
        }
        vars.insert("CALLBACK_DB_MAX_CONNECTIONS".into(), "5".into());
        for (kind, addr) in &listeners {
            vars.insert(kind.addr_var(), addr.to_string());
        }
        let mut reserved_gateway = Vec::new();
        for variable in ["CALLBACK_MLLP_ADDR", "CALLBACK_INTEGRATION_HTTP_ADDR"] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            vars.insert(variable.into(), listener.local_addr().unwrap().to_string());
            reserved_gateway.push(listener);
        }
        for (key, value) in settings {
            match value {
                Some(value) => vars.insert((*key).to_owned(), value.clone()),
                None => vars.remove(*key),
            };
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
        let mut system = System {
            db,
            mllp_addr: config.integration.mllp_addr,
            http_addr: config.integration.http_addr,
            config,
            shutdown: Shutdown::new(),
            running: HashMap::new(),
            listeners,
            reserved,
            reserved_gateway,
            scheduling_clock,
        };
        for kind in kinds {
            system.start_service(*kind).await;
        }
        // A service not started refuses connections, as it would in production.
        system.reserved.clear();
        system.reserved_gateway.clear();
        for kind in kinds {
            system.wait_serving(*kind).await;
        }
        system
    }

    /// Starts one service on its configured address.
    pub async fn start_service(&mut self, kind: ServiceKind) {
        if kind == ServiceKind::IntegrationGateway {
            // It binds its MLLP and HTTP ports itself.
            self.reserved_gateway.clear();
        }
        let listener = match self.reserved.remove(&kind) {
            Some(listener) => listener,
            None => bind_retrying(self.listeners[&kind]).await,
        };
        let pool = callback_kit::pool_options(5)
            .connect(&self.config.database_url)
            .await
            .unwrap();
        let config = self.config.clone();
        let shutdown = self.shutdown.child();
        let stop = shutdown.clone();
        let clock = self.scheduling_clock.clone();
        let handle = tokio::spawn(async move {
            let result = match clock {
                Some(clock) => {
                    callbackd::serve_service_on_clock(kind, pool, listener, config, shutdown, clock)
                        .await
                }
                None => callbackd::serve_service(kind, pool, listener, config, shutdown).await,
            };
            if let Err(error) = result {
                panic!("{} failed: {error}", kind.name());
            }
        });
        self.running.insert(kind, (stop, handle));
    }

    /// Stops one service and waits until it has drained.
    pub async fn stop_service(&mut self, kind: ServiceKind) {
        if let Some((stop, handle)) = self.running.remove(&kind) {
            stop.trigger();
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("service did not stop within 30 s")
                .unwrap();
        }
    }

    pub async fn stop(mut self) {
        let kinds: Vec<ServiceKind> = self.running.keys().copied().collect();
        for kind in kinds {
            self.stop_service(kind).await;
        }
    }

    /// A channel as the test harness: mutual TLS with a client certificate mapped to every
    /// role but `agent` in every tenant.
    pub fn channel(&self, kind: ServiceKind) -> Channel {
        harness_channel(self.config.url(kind))
    }

    /// Starts another instance of `kind` on the system's database, on a port of its own: its
    /// URL and its task (stops with the system's shutdown or `stop`).
    pub async fn start_another(
        &self,
        kind: ServiceKind,
        stop: Shutdown,
    ) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let pool = callback_kit::pool_options(5)
            .connect(&self.config.database_url)
            .await
            .unwrap();
        let config = self.config.clone();
        let handle = tokio::spawn(async move {
            if let Err(error) = callbackd::serve_service(kind, pool, listener, config, stop).await {
                panic!("another {} failed: {error}", kind.name());
            }
        });
        (url, handle)
    }
}

/// A channel to `url` as the test harness (its client certificate).
pub fn harness_channel(url: &str) -> Channel {
    {
        let pki = test_pki();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .identity(Identity::from_pem(
                &pki.harness.cert_pem,
                &pki.harness.key_pem,
            ));
        grpc::channel_with_config(url, Some(tls)).unwrap()
    }
}

impl System {
    /// A channel over TLS without a client certificate: what an outside client has before
    /// it sends a token.
    pub fn anonymous_channel(&self, kind: ServiceKind) -> Channel {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&test_pki().ca_pem));
        grpc::channel_with_config(self.config.url(kind), Some(tls)).unwrap()
    }

    /// Polls the standard health service until the service reports SERVING.
    pub async fn wait_serving(&self, kind: ServiceKind) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel(kind));
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(response) = client.check(request).await {
                if response.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never became healthy",
                kind.name()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A stopped service's port may linger for a moment.
async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot bind {addr}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Gives `tenant` a calendar open round the clock every day, a pool `desk` with agent
/// `nurse-1`, and a policy calling every `patient.discharged` fact back within 7 days, from
/// at once.
pub async fn publish_round_the_clock_discharges(
    scheduling: &mut callback_proto::v1::scheduling_client::SchedulingClient<Channel>,
    tenant: &str,
) {
    let settings = serde_json::json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["desk"], "agents": [{"agent_id": "nurse-1", "pools": ["desk"]}]
    });
    scheduling
        .publish_tenant(callback_proto::v1::PublishTenantRequest {
            tenant_id: tenant.into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
    let policy = serde_json::json!({"policy_id": "discharge", "name": "出院回访",
        "trigger": {"event_type": "patient.discharged"},
        "steps": [{"name": "first", "owner": {"kind": "pool", "pool": "desk"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]});
    scheduling
        .publish_policy(callback_proto::v1::PublishPolicyRequest {
            tenant_id: tenant.into(),
            policy_json: policy.to_string(),
        })
        .await
        .unwrap();
}

/// Takes `database` away from every client (refusing new connections and terminating the
/// open ones), or gives it back: the database down, as services see it.
pub async fn set_connections(database: &str, allowed: bool) {
    use sqlx::{ConnectOptions, Connection};
    let mut admin = callback_testkit::server_options().connect().await.unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {database} WITH ALLOW_CONNECTIONS {allowed}"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    if !allowed {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .execute(&mut admin)
        .await
        .unwrap();
    }
    admin.close().await.unwrap();
}

/// Asks scheduling for the next callback `agent` may take in `tenant`.
pub async fn claim(
    client: &mut callback_proto::v1::scheduling_client::SchedulingClient<Channel>,
    tenant: &str,
    agent: &str,
) -> Option<callback_proto::v1::ClaimedCallback> {
    let request = callback_proto::v1::ClaimNextRequest {
        tenant_id: tenant.into(),
        agent_id: agent.into(),
        ..Default::default()
    };
    client
        .claim_next(request)
        .await
        .unwrap()
        .into_inner()
        .claimed
}

/// A callback's status and attempts as scheduling reports them.
pub async fn callback_state(
    client: &mut callback_proto::v1::scheduling_client::SchedulingClient<Channel>,
    tenant: &str,
    callback_id: &str,
) -> (String, u32) {
    let request = callback_proto::v1::GetCallbackRequest {
        tenant_id: tenant.into(),
        callback_id: callback_id.into(),
        as_of: None,
        without_history: false,
    };
    let view = client
        .get_callback(request)
        .await
        .unwrap()
        .into_inner()
        .callback
        .unwrap();
    (view.status, view.attempts)
}
