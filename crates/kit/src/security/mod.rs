//! Who may talk to a service, and how: TLS on every listener (mutual where the caller presents
//! a certificate), bearer tokens checked against a JWKS, client certificates mapped to
//! principals, and the one tower layer that authenticates every request but health checks.
//! What a principal may do is decided by `callback_rules::access`; the handlers check the
//! tenant of each request with [`authorized`].
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CALLBACK_TLS` | `on`, or `off` for plaintext (behind a mesh that encrypts) | on |
//! | `CALLBACK_TLS_CERT`, `CALLBACK_TLS_KEY` | the service's certificate chain and key (PEM files); also its client identity towards the other services | required with TLS |
//! | `CALLBACK_TLS_CA` | CA certificates (PEM file) that sign client certificates and the other services' certificates | required with TLS |
//! | `CALLBACK_CLIENT_CERTS` | JSON file mapping client certificates (SHA-256) to principals | none |
//! | `CALLBACK_JWKS_FILE` | the token signers' public keys (JWKS, JSON file) | none |
//! | `CALLBACK_JWT_ISSUER` | the `iss` tokens must carry | required with a JWKS |
//! | `CALLBACK_JWT_AUDIENCE` | the `aud` tokens must carry | `callback` |
//! | `CALLBACK_REFLECTION` | `on` or `off`: gRPC server reflection | on |
//! | `CALLBACK_SERVICE_TOKEN_FILE` | a `*:service` token the service presents to the others | required with `CALLBACK_TLS=off` |

mod audit;
mod layer;
mod tokens;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use callback_rules::access::{Credential, Grant, Principal};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::ConfigError;

pub use audit::{RefusalLog, REFUSALS_PER_MINUTE};
pub use layer::{authorized, authorized_caller, AuthLayer, AuthService, Caller};
pub use tokens::TokenKeys;

/// The security settings of a service, read and checked at start.
#[derive(Clone)]
pub struct Security {
    /// `None`: plaintext, explicitly configured.
    pub tls: Option<Tls>,
    pub tokens: Option<Arc<TokenKeys>>,
    /// Client certificates (SHA-256 of the DER, lowercase hex) and who they are.
    pub client_certs: Arc<HashMap<String, Principal>>,
    pub reflection: bool,
    /// The token this service presents to the others (`CALLBACK_SERVICE_TOKEN_FILE`): how
    /// services authenticate to each other without TLS, where no certificate travels.
    pub service_token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// Every caller is a principal with every role: only [`Security::unauthenticated_for_benchmarks`]
    /// sets it, for the baseline the benchmarks compare TLS and tokens against.
    pub(crate) unauthenticated: bool,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("tokens", &self.tokens.is_some())
            .field("client_certs", &self.client_certs.len())
            .field("reflection", &self.reflection)
            .finish()
    }
}

/// A service's certificate, key and trusted CAs, PEM.
#[derive(Clone)]
pub struct Tls {
    pub cert_pem: Arc<Vec<u8>>,
    pub key_pem: Arc<Vec<u8>>,
    pub ca_pem: Arc<Vec<u8>>,
}

impl Tls {
    /// What the server presents and which client certificates it verifies (optional: a
    /// caller may bring a token instead).
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&*self.cert_pem, &*self.key_pem))
            .client_ca_root(Certificate::from_pem(&*self.ca_pem))
            .client_auth_optional(true)
    }

    /// What the service presents when it calls another service (mutual TLS).
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&*self.ca_pem))
            .identity(Identity::from_pem(&*self.cert_pem, &*self.key_pem))
    }
}

/// Reads a file named by `variable`.
fn read_file(variable: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(PathBuf::from(path)).map_err(|error| ConfigError {
        variable: variable.into(),
        reason: format!("cannot read {path}: {error}"),
    })
}

fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &str,
    why: &str,
) -> Result<String, ConfigError> {
    lookup(variable).ok_or_else(|| ConfigError {
        variable: variable.into(),
        reason: format!("not set; {why}"),
    })
}

fn on_off(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match lookup(variable).as_deref() {
        None => Ok(default),
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(ConfigError {
            variable: variable.into(),
            reason: format!(
                "{} is neither on nor off",
                callback_rules::input::excerpt(other)
            ),
        }),
    }
}

impl Security {
    /// Reads the settings through `lookup`; every file is read and checked now, so a missing
    /// or malformed key stops the process at start, naming the setting.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let tls = if on_off(lookup, "CALLBACK_TLS", true)? {
            let why = "give a PEM file, or set CALLBACK_TLS=off for plaintext";
            let cert = required(lookup, "CALLBACK_TLS_CERT", why)?;
            let key = required(lookup, "CALLBACK_TLS_KEY", why)?;
            let ca = required(lookup, "CALLBACK_TLS_CA", why)?;
            let tls = Tls {
                cert_pem: Arc::new(read_file("CALLBACK_TLS_CERT", &cert)?),
                key_pem: Arc::new(read_file("CALLBACK_TLS_KEY", &key)?),
                ca_pem: Arc::new(read_file("CALLBACK_TLS_CA", &ca)?),
            };
            tls.check()?;
            Some(tls)
        } else {
            None
        };
        let tokens = match lookup("CALLBACK_JWKS_FILE") {
            None => None,
            Some(path) => {
                let jwks = read_file("CALLBACK_JWKS_FILE", &path)?;
                let issuer = required(
                    lookup,
                    "CALLBACK_JWT_ISSUER",
                    "tokens are only accepted from a named issuer",
                )?;
                let audience = lookup("CALLBACK_JWT_AUDIENCE").unwrap_or_else(|| "callback".into());
                let keys = TokenKeys::from_jwks(&jwks, issuer, audience).map_err(|reason| {
                    ConfigError {
                        variable: "CALLBACK_JWKS_FILE".into(),
                        reason,
                    }
                })?;
                Some(Arc::new(keys))
            }
        };
        let client_certs = match lookup("CALLBACK_CLIENT_CERTS") {
            None => HashMap::new(),
            Some(path) => {
                if tls.is_none() {
                    return Err(ConfigError {
                        variable: "CALLBACK_CLIENT_CERTS".into(),
                        reason: "client certificates need CALLBACK_TLS=on".into(),
                    });
                }
                parse_client_certs(&read_file("CALLBACK_CLIENT_CERTS", &path)?).map_err(
                    |reason| ConfigError {
                        variable: "CALLBACK_CLIENT_CERTS".into(),
                        reason,
                    },
                )?
            }
        };
        let service_token = match lookup("CALLBACK_SERVICE_TOKEN_FILE") {
            None if tls.is_none() => {
                return Err(ConfigError {
                    variable: "CALLBACK_SERVICE_TOKEN_FILE".into(),
                    reason: "not set; with CALLBACK_TLS=off no certificate travels, so the \
                             services authenticate to each other with a *:service token"
                        .into(),
                })
            }
            None => None,
            Some(path) => {
                let text = read_file("CALLBACK_SERVICE_TOKEN_FILE", &path)?;
                let token = String::from_utf8(text).unwrap_or_default();
                let value = format!("Bearer {}", token.trim())
                    .parse()
                    .ok()
                    .filter(|_| !token.trim().is_empty());
                Some(value.ok_or_else(|| ConfigError {
                    variable: "CALLBACK_SERVICE_TOKEN_FILE".into(),
                    reason: "is not a token (one line of text)".into(),
                })?)
            }
        };
        if tokens.is_none() && client_certs.is_empty() {
            return Err(ConfigError {
                variable: "CALLBACK_JWKS_FILE".into(),
                reason: "not set, and no CALLBACK_CLIENT_CERTS either: nobody could call the \
                         API (give the token signers' JWKS, a client certificate mapping, or both)"
                    .into(),
            });
        }
        Ok(Security {
            tls,
            tokens,
            client_certs: Arc::new(client_certs),
            reflection: on_off(lookup, "CALLBACK_REFLECTION", true)?,
            service_token,
            unauthenticated: false,
        })
    }

    /// Plaintext, and every caller may do everything: the baseline of the benchmarks that
    /// measure what TLS and tokens cost. No setting reaches this (a workspace test checks that
    /// only `tools/bench` calls it).
    pub fn unauthenticated_for_benchmarks() -> Self {
        Security {
            tls: None,
            tokens: None,
            client_certs: Arc::new(HashMap::new()),
            reflection: true,
            service_token: None,
            unauthenticated: true,
        }
    }

    /// The URL scheme other services reach this one with.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Who presented the client certificate `der`, if it is mapped.
    pub fn certificate_principal(&self, der: &[u8]) -> Option<&Principal> {
        self.client_certs.get(&fingerprint(der))
    }
}

impl Tls {
    /// Builds the server's TLS acceptor once, so a bad certificate or key is a configuration
    /// error at start, not a failure on the first connection.
    fn check(&self) -> Result<(), ConfigError> {
        let has_block = |pem: &[u8], what: &str| {
            String::from_utf8_lossy(pem).contains(&format!("-----BEGIN {what}"))
        };
        let problems = [
            (
                "CALLBACK_TLS_CERT",
                has_block(&self.cert_pem, "CERTIFICATE"),
            ),
            (
                "CALLBACK_TLS_KEY",
                String::from_utf8_lossy(&self.key_pem).contains("PRIVATE KEY-----"),
            ),
            ("CALLBACK_TLS_CA", has_block(&self.ca_pem, "CERTIFICATE")),
        ];
        for (variable, ok) in problems {
            if !ok {
                return Err(ConfigError {
                    variable: variable.into(),
                    reason: "is not a PEM file with the expected block".into(),
                });
            }
        }
        tonic::transport::Server::builder()
            .tls_config(self.server_config())
            .map_err(|error| ConfigError {
                variable: "CALLBACK_TLS_CERT".into(),
                reason: format!("the certificate, key or CA cannot be used: {error}"),
            })?;
        Ok(())
    }
}

/// SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `{"clients": [{"sha256": "...", "subject": "...", "permissions": ["t:role"]}]}`
fn parse_client_certs(json: &[u8]) -> Result<HashMap<String, Principal>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        clients: Vec<Client>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Client {
        sha256: String,
        subject: String,
        permissions: Vec<String>,
    }
    let file: File = serde_json::from_slice(json).map_err(|e| format!("not valid: {e}"))?;
    let mut map = HashMap::new();
    for (i, client) in file.clients.into_iter().enumerate() {
        let sha256 = client.sha256.to_ascii_lowercase().replace(':', "");
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("clients[{i}].sha256 is not a SHA-256 in hex"));
        }
        let grants = client
            .permissions
            .iter()
            .enumerate()
            .map(|(j, p)| {
                Grant::parse(p).map_err(|e| format!("clients[{i}].permissions[{j}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        map.insert(
            sha256,
            Principal {
                subject: client.subject,
                grants,
                credential: Credential::ClientCertificate,
            },
        );
    }
    Ok(map)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The settings of a local PKI made once for this test process.
    pub(crate) fn pki_settings() -> HashMap<String, String> {
        static SETTINGS: std::sync::OnceLock<HashMap<String, String>> = std::sync::OnceLock::new();
        SETTINGS
            .get_or_init(|| {
                let dir =
                    std::env::temp_dir().join(format!("callback-kit-pki-{}", std::process::id()));
                callback_devpki::DevPki::create(&dir)
                    .expect("a local PKI")
                    .settings()
                    .into_iter()
                    .collect()
            })
            .clone()
    }

    fn read(vars: &HashMap<String, String>) -> Result<Security, ConfigError> {
        Security::from_lookup(&|key: &str| vars.get(key).cloned())
    }

    fn file(name: &str, contents: &str) -> String {
        let path = std::env::temp_dir().join(format!("callback-kit-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("written");
        path.display().to_string()
    }

    #[test]
    fn a_remembered_token_is_trusted_no_longer_than_it_lives() {
        let dir = std::env::temp_dir().join(format!("callback-kit-tokens-{}", std::process::id()));
        let pki = callback_devpki::DevPki::create(&dir).expect("a local PKI");
        let jwks = std::fs::read(pki.path("jwks.json")).expect("jwks");
        let keys = TokenKeys::from_jwks(
            &jwks,
            callback_devpki::ISSUER.into(),
            callback_devpki::AUDIENCE.into(),
        )
        .expect("keys");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        // Expiring in 2 s: remembered for those 2 s, then checked again.
        let short = pki
            .token_with(serde_json::json!({"sub": "a", "permissions": ["t:bi"],
                "iss": callback_devpki::ISSUER, "aud": callback_devpki::AUDIENCE,
                "exp": now + 2}))
            .expect("token");
        let first = keys.verify_remembered(&short).expect("valid now");
        let again = keys.verify_remembered(&short).expect("remembered");
        assert!(Arc::ptr_eq(&first, &again), "verified once");
        std::thread::sleep(std::time::Duration::from_millis(3100));
        let checked = keys
            .verify_remembered(&short)
            .expect("within the clock-skew leeway");
        assert!(
            !Arc::ptr_eq(&first, &checked),
            "past its expiry: checked again"
        );
        // A token past its expiry and the leeway is refused, remembered or not.
        let old = pki
            .token_with(serde_json::json!({"sub": "a", "permissions": ["t:bi"],
                "iss": callback_devpki::ISSUER, "aud": callback_devpki::AUDIENCE,
                "exp": now - 60}))
            .expect("token");
        assert!(keys.verify_remembered(&old).is_err());
    }

    #[test]
    fn the_local_pki_is_a_valid_configuration() {
        let security = read(&pki_settings()).expect("valid");
        assert!(security.tls.is_some() && security.tokens.is_some());
        assert_eq!(security.client_certs.len(), 1);
        assert_eq!(security.scheme(), "https");
    }

    #[test]
    fn a_missing_or_malformed_key_names_its_setting() {
        let base = pki_settings();
        let cases: Vec<(&str, Option<String>, &str)> = vec![
            ("CALLBACK_TLS_CERT", None, "CALLBACK_TLS_CERT"),
            (
                "CALLBACK_TLS_KEY",
                Some(file("key", "not a key")),
                "CALLBACK_TLS_KEY",
            ),
            (
                "CALLBACK_TLS_CA",
                Some("/nonexistent/ca.pem".into()),
                "CALLBACK_TLS_CA",
            ),
            (
                "CALLBACK_JWKS_FILE",
                Some(file("jwks", "{\"keys\": 3}")),
                "CALLBACK_JWKS_FILE",
            ),
            (
                "CALLBACK_JWKS_FILE",
                Some(file(
                    "oct",
                    r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
                )),
                "CALLBACK_JWKS_FILE",
            ),
            ("CALLBACK_JWT_ISSUER", None, "CALLBACK_JWT_ISSUER"),
            (
                "CALLBACK_CLIENT_CERTS",
                Some(file(
                    "certs",
                    r#"{"clients": [{"sha256": "xy", "subject": "a", "permissions": []}]}"#,
                )),
                "CALLBACK_CLIENT_CERTS",
            ),
            ("CALLBACK_TLS", Some("maybe".into()), "CALLBACK_TLS"),
        ];
        for (key, value, named) in cases {
            let mut vars = base.clone();
            match value {
                Some(value) => vars.insert(key.into(), value),
                None => vars.remove(key),
            };
            let error = read(&vars).expect_err(key);
            assert_eq!(error.variable, named, "{key}: {error}");
        }
        let mut nobody = base.clone();
        nobody.remove("CALLBACK_JWKS_FILE");
        nobody.remove("CALLBACK_CLIENT_CERTS");
        assert_eq!(
            read(&nobody).expect_err("nobody").variable,
            "CALLBACK_JWKS_FILE"
        );
        let mut plaintext = base;
        plaintext.insert("CALLBACK_TLS".into(), "off".into());
        plaintext.remove("CALLBACK_CLIENT_CERTS");
        let error = read(&plaintext).expect_err("plaintext without a service token");
        assert_eq!(error.variable, "CALLBACK_SERVICE_TOKEN_FILE");
        plaintext.insert(
            "CALLBACK_SERVICE_TOKEN_FILE".into(),
            file("service-token", "eyJ.a.b\n"),
        );
        let security = read(&plaintext).expect("plaintext with tokens");
        assert_eq!(security.scheme(), "http");
        assert!(security.service_token.is_some());
    }
}
