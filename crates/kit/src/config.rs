//! Configuration from environment variables, validated at start.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | PostgreSQL connection URL | required (callbackd dev starts a private cluster) |
//! | `CALLBACK_MIGRATION_DATABASE_URL` | the owner's URL: migrations and grants run as the owner, the service as `DATABASE_URL`'s role | unset (the service's role migrates) |
//! | `CALLBACK_DB_MAX_CONNECTIONS` | pool size per service | 16 |
//! | `CALLBACK_<SERVICE>_ADDR` | listen address of a service's gRPC API | 127.0.0.1:50051-50055 |
//! | `CALLBACK_<SERVICE>_URL` | where other services reach it | `http://` + its address |
//! | `CALLBACK_LOG_FORMAT` | `pretty` or `json` | pretty |
//! | `RUST_LOG` | log filter | info |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | OTLP/gRPC collector; traces are exported only when set | unset |
//! | `CALLBACK_REBUILD_WAIT_SECONDS` | how long a rebuild waits for older transactions | 60 |
//!
//! | `CALLBACK_MASTER_KEY_FILE` | master keys wrapping the subject keys of personal data: `<id>:<base64 32 bytes>` lines, current first | required (or `CALLBACK_MASTER_KEY` with the text) |
//!
//! | `CALLBACK_METRICS_ADDR` | plain HTTP listener of `/metrics` (Prometheus), `/healthz` (liveness) and `/readyz` (readiness), one per process | unset: none (`callbackd dev`: 127.0.0.1:9100) |
//! | `CALLBACK_MLLP_ADDR` | the integration gateway's HL7 v2 MLLP listener | 127.0.0.1:2575 |
//! | `CALLBACK_MLLP_TLS` | `on`: MLLP over TLS with client certificates (`CALLBACK_CLIENT_CERTS`); `off`: plain TCP | as `CALLBACK_TLS` |
//! | `CALLBACK_MLLP_MAX_FRAME_BYTES` | the largest MLLP frame accepted (the connection is closed beyond it) | 1048576 |
//! | `CALLBACK_INTEGRATION_HTTP_ADDR` | the gateway's HTTP listener (FHIR R4, webhooks; HTTPS when TLS is on) | 127.0.0.1:8090 |
//! | `CALLBACK_SMTP_URL` | the mail relay e-mail subscriptions are sent through: `smtp://[user:password@]host[:25]` (plain, e.g. an internal relay) or `smtps://...[:465]` (implicit TLS) | unset (no e-mail subscriptions) |
//! | `CALLBACK_SMTP_FROM` | the sender address of those e-mails | `callback@localhost` |
//! | `CALLBACK_INTEGRATION_SECRETS_FILE` | JSON `{"<tenant>": {"<name>": "<secret>"}}`: webhook senders' HMAC secrets and subscriptions' signing secrets | unset (no HMAC senders) |
//!
//! The security settings (TLS, tokens, client certificates) are in `crate::security`.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::security::Security;

/// The four services.
/// Every environment variable a service binary or `callbackd` reads (the per-service
/// `CALLBACK_<SERVICE>_ADDR` / `_URL` come from [`ServiceKind::addr_var`] and
/// [`ServiceKind::url_var`]). Deployment manifests are checked against this list
/// (`tests/tests/deploy.rs`), and a test here checks nothing else is read.
pub const VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "CALLBACK_MIGRATION_DATABASE_URL",
    "CALLBACK_DB_MAX_CONNECTIONS",
    "CALLBACK_LOG_FORMAT",
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "CALLBACK_TRACE_FILTER",
    "CALLBACK_REBUILD_WAIT_SECONDS",
    "CALLBACK_METRICS_ADDR",
    "CALLBACK_TLS",
    "CALLBACK_TLS_CERT",
    "CALLBACK_TLS_KEY",
    "CALLBACK_TLS_CA",
    "CALLBACK_CLIENT_CERTS",
    "CALLBACK_JWKS_FILE",
    "CALLBACK_JWT_ISSUER",
    "CALLBACK_JWT_AUDIENCE",
    "CALLBACK_REFLECTION",
    "CALLBACK_SERVICE_TOKEN_FILE",
    "CALLBACK_MASTER_KEY_FILE",
    "CALLBACK_MASTER_KEY",
    "CALLBACK_MLLP_ADDR",
    "CALLBACK_MLLP_TLS",
    "CALLBACK_MLLP_MAX_FRAME_BYTES",
    "CALLBACK_INTEGRATION_HTTP_ADDR",
    "CALLBACK_INTEGRATION_SECRETS_FILE",
    "CALLBACK_SMTP_URL",
    "CALLBACK_SMTP_FROM",
    "CALLBACK_DEV_DATA_DIR",
    "CALLBACK_DEV_CREDENTIALS_DIR",
];

/// What each variable of [`VARIABLES`] means, for `--help` (same order).
pub const VARIABLE_HELP: &[&str] = &[
    "PostgreSQL URL of the services' role (callbackd dev: a private cluster when unset)",
    "the owner's URL: migrations and grants run as the owner",
    "connection pool size per service, 1-1000 (16)",
    "pretty or json (pretty)",
    "log filter, tracing env-filter syntax (info)",
    "OTLP/gRPC collector; traces are exported only when set",
    "filter of the exported spans, apart from RUST_LOG's (info)",
    "how long a rebuild waits for older transactions, 1-86400 s (60)",
    "HTTP listener of /metrics, /healthz, /readyz, or off (callbackd dev: 127.0.0.1:9100)",
    "on, or off for plaintext behind an encrypting mesh (on)",
    "the services' certificate chain (PEM file)",
    "the services' private key (PEM file)",
    "CA certificates of client and service certificates (PEM file)",
    "JSON file mapping client certificates (SHA-256) to a subject and permissions",
    "the token signers' public keys (JWKS file)",
    "the iss tokens must carry",
    "the aud tokens must carry (callback)",
    "on or off: gRPC server reflection, v1 and v1alpha (on)",
    "a *:service token file; required with CALLBACK_TLS=off",
    "master keys of personal data, <id>:<base64> lines, current first",
    "the master keys as text instead of a file",
    "the integration gateway's HL7 MLLP listener (127.0.0.1:2575)",
    "on: MLLP over TLS with client certificates; off: plain TCP (as CALLBACK_TLS)",
    "the largest MLLP frame, 1024-67108864 bytes (1048576)",
    "the gateway's FHIR and webhook listener (127.0.0.1:8090)",
    "JSON {tenant: {name: secret}}: webhook senders' and subscriptions' secrets",
    "mail relay of e-mail subscriptions: smtp://[user:password@]host[:25] or smtps://",
    "sender address of those e-mails (callback@localhost)",
    "data folder of callbackd dev's private PostgreSQL (.callbackd/pgdata)",
    "where callbackd dev writes its trial credentials (.callbackd/credentials)",
];

/// Whether `name` is a variable the binaries read.
pub fn is_variable(name: &str) -> bool {
    VARIABLES.contains(&name)
        || ServiceKind::ALL
            .iter()
            .any(|kind| kind.addr_var() == name || kind.url_var() == name)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    Scheduling,
    CallLogging,
    ComplaintRouting,
    Analytics,
    /// HL7 v2 / FHIR / webhooks in, notifications out.
    IntegrationGateway,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 5] = [
        ServiceKind::Scheduling,
        ServiceKind::CallLogging,
        ServiceKind::ComplaintRouting,
        ServiceKind::Analytics,
        ServiceKind::IntegrationGateway,
    ];

    /// The name used in logs, traces and the event store's category registry.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Scheduling => "scheduling",
            ServiceKind::CallLogging => "call-logging",
            ServiceKind::ComplaintRouting => "complaint-routing",
            ServiceKind::Analytics => "analytics",
            ServiceKind::IntegrationGateway => "integration-gateway",
        }
    }

    fn env_key(self) -> &'static str {
        match self {
            ServiceKind::Scheduling => "SCHEDULING",
            ServiceKind::CallLogging => "CALL_LOGGING",
            ServiceKind::ComplaintRouting => "COMPLAINT_ROUTING",
            ServiceKind::Analytics => "ANALYTICS",
            ServiceKind::IntegrationGateway => "INTEGRATION_GATEWAY",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            ServiceKind::Scheduling => 50051,
            ServiceKind::CallLogging => 50052,
            ServiceKind::ComplaintRouting => 50053,
            ServiceKind::Analytics => 50054,
            ServiceKind::IntegrationGateway => 50055,
        }
    }

    /// `CALLBACK_<SERVICE>_ADDR`
    pub fn addr_var(self) -> String {
        format!("CALLBACK_{}_ADDR", self.env_key())
    }

    /// `CALLBACK_<SERVICE>_URL`
    pub fn url_var(self) -> String {
        format!("CALLBACK_{}_URL", self.env_key())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: String,
    pub reason: String,
}

/// Everything a service needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    /// The owner's URL: when set, migrations (and the grants to `database_url`'s role) run
    /// through it, and the service connects with a role that cannot alter the log.
    pub migration_database_url: Option<String>,
    pub db_max_connections: u32,
    /// Where each service listens.
    pub listen: HashMap<ServiceKind, SocketAddr>,
    /// Where each service is reached by the others.
    pub urls: HashMap<ServiceKind, String>,
    /// TLS, tokens, client certificates (`crate::security`).
    pub security: Security,
    /// The master keys that wrap the subject keys of personal data (current first).
    pub master_keys: callback_vault::MasterKeys,
    /// The integration gateway's own listeners and secrets.
    pub integration: IntegrationConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
}

/// The integration gateway's settings beside its gRPC API.
#[derive(Clone, Debug)]
pub struct IntegrationConfig {
    /// HL7 v2 over MLLP.
    pub mllp_addr: SocketAddr,
    /// MLLP over TLS with client certificates.
    pub mllp_tls: bool,
    pub mllp_max_frame_bytes: usize,
    /// FHIR R4 and webhooks.
    pub http_addr: SocketAddr,
    /// Webhook and subscription secrets, by tenant and name.
    pub secrets_file: Option<std::path::PathBuf>,
    /// The mail relay of e-mail subscriptions.
    pub smtp: Option<SmtpRelay>,
}

/// A mail relay: `smtp://` (plain) or `smtps://` (implicit TLS), with optional credentials.
#[derive(Clone)]
pub struct SmtpRelay {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
    pub from: String,
}

impl std::fmt::Debug for SmtpRelay {
    // The password stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmtpRelay {
    /// Reads `CALLBACK_SMTP_URL` and `CALLBACK_SMTP_FROM`.
    fn read(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let Some(url) = lookup("CALLBACK_SMTP_URL") else {
            return Ok(None);
        };
        let bad = |reason: &str| ConfigError {
            variable: "CALLBACK_SMTP_URL".into(),
            reason: reason.into(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("smtps://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("smtp://") {
            (false, rest)
        } else {
            return Err(bad("must start with smtp:// or smtps://"));
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((userinfo, address)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_owned(), password.to_owned())), address)
            }
            None => (None, rest),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            None => (address, if tls { 465 } else { 25 }),
        };
        if host.is_empty() {
            return Err(bad("names no host"));
        }
        let from = lookup("CALLBACK_SMTP_FROM").unwrap_or_else(|| "callback@localhost".into());
        if !from.contains('@') || from.chars().any(|c| c.is_control() || c == '<' || c == '>') {
            return Err(ConfigError {
                variable: "CALLBACK_SMTP_FROM".into(),
                reason: "is not an e-mail address".into(),
            });
        }
        Ok(Some(Self {
            tls,
            host: host.to_owned(),
            port,
            credentials,
            from,
        }))
    }
}

impl IntegrationConfig {
    fn read(
        lookup: &impl Fn(&str) -> Option<String>,
        security: &Security,
    ) -> Result<Self, ConfigError> {
        let addr = |variable: &str, default: u16| -> Result<SocketAddr, ConfigError> {
            match lookup(variable) {
                None => Ok(SocketAddr::from(([127, 0, 0, 1], default))),
                Some(text) => text.parse().map_err(|_| ConfigError {
                    variable: variable.into(),
                    reason: format!(
                        "`{}` is not a socket address like 127.0.0.1:{default}",
                        callback_rules::input::excerpt(&text)
                    ),
                }),
            }
        };
        let mllp_tls = match lookup("CALLBACK_MLLP_TLS").as_deref() {
            None => security.tls.is_some(),
            Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(ConfigError {
                    variable: "CALLBACK_MLLP_TLS".into(),
                    reason: format!(
                        "`{}` is neither on nor off",
                        callback_rules::input::excerpt(other)
                    ),
                })
            }
        };
        if mllp_tls && security.tls.is_none() {
            return Err(ConfigError {
                variable: "CALLBACK_MLLP_TLS".into(),
                reason: "on needs the TLS settings (CALLBACK_TLS_CERT, CALLBACK_TLS_KEY, CALLBACK_TLS_CA)"
                    .into(),
            });
        }
        let mllp_max_frame_bytes = match lookup("CALLBACK_MLLP_MAX_FRAME_BYTES") {
            None => 1 << 20,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1024..=(64 << 20)).contains(&n) => n,
                _ => {
                    return Err(ConfigError {
                        variable: "CALLBACK_MLLP_MAX_FRAME_BYTES".into(),
                        reason: format!(
                            "`{}` is not a number of bytes from 1024 to 67108864",
                            callback_rules::input::excerpt(&text)
                        ),
                    })
                }
            },
        };
        Ok(Self {
            mllp_addr: addr("CALLBACK_MLLP_ADDR", 2575)?,
            mllp_tls,
            mllp_max_frame_bytes,
            http_addr: addr("CALLBACK_INTEGRATION_HTTP_ADDR", 8090)?,
            secrets_file: lookup("CALLBACK_INTEGRATION_SECRETS_FILE").map(Into::into),
            smtp: SmtpRelay::read(lookup)?,
        })
    }
}

/// How long a rebuild or reset waits for transactions begun before it (anywhere on the
/// server) to end before giving up: `CALLBACK_REBUILD_WAIT_SECONDS`, 1 to 86400, default 60.
pub fn rebuild_wait(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<std::time::Duration, ConfigError> {
    const VARIABLE: &str = "CALLBACK_REBUILD_WAIT_SECONDS";
    match lookup(VARIABLE) {
        None => Ok(std::time::Duration::from_secs(60)),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if (1..=86_400).contains(&n) => Ok(std::time::Duration::from_secs(n)),
            _ => Err(ConfigError {
                variable: VARIABLE.into(),
                reason: format!(
                    "{} is not a number of seconds from 1 to 86400",
                    callback_rules::input::excerpt(&text)
                ),
            }),
        },
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(lookup, None)
    }

    /// Reads everything but the security settings through `lookup`.
    pub fn from_lookup_with_security(
        lookup: impl Fn(&str) -> Option<String>,
        security: Security,
    ) -> Result<Self, ConfigError> {
        Self::read(lookup, Some(security))
    }

    fn read(
        lookup: impl Fn(&str) -> Option<String>,
        security: Option<Security>,
    ) -> Result<Self, ConfigError> {
        let database_url = lookup("DATABASE_URL").ok_or_else(|| ConfigError {
            variable: "DATABASE_URL".into(),
            reason: "not set; give a PostgreSQL URL such as postgres://user@host:5432/db".into(),
        })?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError {
                variable: "DATABASE_URL".into(),
                reason: "must start with postgres:// or postgresql://".into(),
            });
        }
        let migration_database_url = match lookup("CALLBACK_MIGRATION_DATABASE_URL") {
            None => None,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(url)
            }
            Some(_) => {
                return Err(ConfigError {
                    variable: "CALLBACK_MIGRATION_DATABASE_URL".into(),
                    reason: "must start with postgres:// or postgresql://".into(),
                })
            }
        };
        let db_max_connections = match lookup("CALLBACK_DB_MAX_CONNECTIONS") {
            None => 16,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(ConfigError {
                        variable: "CALLBACK_DB_MAX_CONNECTIONS".into(),
                        reason: format!("`{text}` is not a number from 1 to 1000"),
                    })
                }
            },
        };
        let master_keys = master_keys(&lookup)?;
        let security = match security {
            Some(security) => security,
            None => Security::from_lookup(&lookup)?,
        };
        let mut listen = HashMap::new();
        let mut urls = HashMap::new();
        for kind in ServiceKind::ALL {
            let var = kind.addr_var();
            let addr = match lookup(&var) {
                None => SocketAddr::from(([127, 0, 0, 1], kind.default_port())),
                Some(text) => text.parse().map_err(|_| ConfigError {
                    variable: var.clone(),
                    reason: format!("`{text}` is not a socket address like 127.0.0.1:50051"),
                })?,
            };
            listen.insert(kind, addr);
            let url_var = kind.url_var();
            let url = match lookup(&url_var) {
                None => format!("{}://{addr}", security.scheme()),
                Some(text) if text.starts_with("http://") || text.starts_with("https://") => text,
                Some(text) => {
                    return Err(ConfigError {
                        variable: url_var,
                        reason: format!("`{text}` must start with http:// or https://"),
                    })
                }
            };
            urls.insert(kind, url);
        }
        let integration = IntegrationConfig::read(&lookup, &security)?;
        let metrics_addr = match lookup("CALLBACK_METRICS_ADDR").as_deref() {
            None | Some("off") => None,
            Some(text) => Some(text.parse().map_err(|_| ConfigError {
                variable: "CALLBACK_METRICS_ADDR".into(),
                reason: format!(
                    "`{}` is not a socket address like 0.0.0.0:9100 (or off)",
                    callback_rules::input::excerpt(text)
                ),
            })?),
        };
        Ok(Self {
            database_url,
            migration_database_url,
            db_max_connections,
            listen,
            urls,
            security,
            master_keys,
            integration,
            metrics_addr,
        })
    }

    pub fn listen_addr(&self, kind: ServiceKind) -> SocketAddr {
        self.listen[&kind]
    }

    pub fn url(&self, kind: ServiceKind) -> &str {
        &self.urls[&kind]
    }

    /// Connects the service's pool.
    pub async fn connect(&self) -> Result<sqlx::PgPool, sqlx::Error> {
        pool_options(self.db_max_connections)
            .connect(&self.database_url)
            .await
    }
}

/// `CALLBACK_MASTER_KEY_FILE` (a file), else `CALLBACK_MASTER_KEY` (the text itself):
/// `<id>:<base64 of 32 random bytes>` entries, current first (`callback_vault::MasterKeys`).
pub fn master_keys(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<callback_vault::MasterKeys, ConfigError> {
    let (variable, text) = match (
        lookup("CALLBACK_MASTER_KEY_FILE"),
        lookup("CALLBACK_MASTER_KEY"),
    ) {
        (Some(path), _) => (
            "CALLBACK_MASTER_KEY_FILE",
            std::fs::read_to_string(&path).map_err(|error| ConfigError {
                variable: "CALLBACK_MASTER_KEY_FILE".into(),
                reason: format!("cannot read {path}: {error}"),
            })?,
        ),
        (None, Some(text)) => ("CALLBACK_MASTER_KEY", text),
        (None, None) => {
            return Err(ConfigError {
                variable: "CALLBACK_MASTER_KEY_FILE".into(),
                reason: "not set; personal data is sealed with keys wrapped by a master key: \
                         give a file of `<id>:<base64 of 32 random bytes>` (or the text in \
                         CALLBACK_MASTER_KEY); `callbackd credentials` writes one for trials"
                    .into(),
            })
        }
    };
    callback_vault::MasterKeys::parse(&text).map_err(|reason| ConfigError {
        variable: variable.into(),
        reason,
    })
}

/// How long a pooled connection may sit idle before it is checked with a ping when taken.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The pool settings every service uses. A connection taken from the pool is pinged only when
/// it sat idle for a while: sqlx's default pings on every acquire, a round trip added to
/// every command (measured: about 0.7 ms of a 6 ms batch of claims under load). A connection
/// in steady use has just proved itself; a stale one is still caught before use.
pub fn pool_options(max_connections: u32) -> sqlx::postgres::PgPoolOptions {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

#[cfg(test)]
mod variable_tests {
    use super::*;

    #[test]
    fn every_variable_is_explained() {
        assert_eq!(VARIABLES.len(), VARIABLE_HELP.len());
    }

    #[test]
    fn configuration_reads_only_listed_variables() {
        let read = std::sync::Mutex::new(std::collections::BTreeSet::new());
        let dir =
            std::env::temp_dir().join(format!("callback-kit-variables-{}", std::process::id()));
        let pki = callback_devpki::DevPki::create(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mut values: std::collections::HashMap<String, String> =
            pki.settings().into_iter().collect();
        values.insert("DATABASE_URL".into(), "postgres://u@h/db".into());
        values.insert("CALLBACK_SMTP_URL".into(), "smtp://relay:25".into());
        let lookup = |key: &str| {
            read.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key.to_owned());
            values.get(key).cloned()
        };
        if let Err(error) = Config::from_lookup(lookup) {
            panic!("{error}");
        }
        let read = read
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(read.len() > 20, "{read:?}");
        for key in &read {
            assert!(is_variable(key), "{key} is read but not in VARIABLES");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vars`, with the security settings of a fresh local PKI where `vars` does not set them.
    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        let security = crate::security::tests::pki_settings();
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .or_else(|| security.get(key).cloned())
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let config = Config::from_lookup(lookup(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("CALLBACK_ANALYTICS_ADDR", "0.0.0.0:6000"),
        ]))
        .expect("valid");
        assert_eq!(config.db_max_connections, 16);
        assert_eq!(config.listen_addr(ServiceKind::Scheduling).port(), 50051);
        assert_eq!(config.listen_addr(ServiceKind::Analytics).port(), 6000);
        assert_eq!(config.url(ServiceKind::Analytics), "https://0.0.0.0:6000");
    }

    #[test]
    fn errors_name_the_variable() {
        let missing = Config::from_lookup(|_| None).unwrap_err();
        assert_eq!(missing.variable, "DATABASE_URL");
        let bad_addr = Config::from_lookup(lookup(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("CALLBACK_CALL_LOGGING_ADDR", "nonsense"),
        ]))
        .unwrap_err();
        assert_eq!(bad_addr.variable, "CALLBACK_CALL_LOGGING_ADDR");
        let bad_pool = Config::from_lookup(lookup(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("CALLBACK_DB_MAX_CONNECTIONS", "0"),
        ]))
        .unwrap_err();
        assert_eq!(bad_pool.variable, "CALLBACK_DB_MAX_CONNECTIONS");
        let bad_url = Config::from_lookup(lookup(&[("DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(bad_url.reason.contains("postgres://"));
    }
}
