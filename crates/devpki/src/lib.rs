//! A local public-key infrastructure for `callbackd dev`, the demo, the benchmarks and the
//! tests: a CA, one certificate the services serve and call each other with, client
//! certificates mapped to principals, an Ed25519 signing key with its JWKS, and tokens.
//!
//! Nothing here is used by a service at run time: services read the files this writes (the
//! same settings a production deployment gives them with its own CA and identity provider).
//! The keys are created fresh in a folder of the caller's choice and never leave it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The issuer and audience of every token this makes.
pub const ISSUER: &str = "callbackd-dev";
pub const AUDIENCE: &str = "callback";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    /// SHA-256 of the certificate's DER, lowercase hex: what `CALLBACK_CLIENT_CERTS` maps.
    pub sha256: String,
}

/// A principal a client certificate is mapped to.
struct Mapping {
    sha256: String,
    subject: String,
    permissions: Vec<String>,
}

/// The PKI, in `dir`.
pub struct DevPki {
    dir: PathBuf,
    ca_key: KeyPair,
    ca_params: CertificateParams,
    pub ca_pem: String,
    /// The services' own certificate (server and client use), mapped to `*:service`.
    pub service: ClientIdentity,
    signing_der: Vec<u8>,
    key_id: String,
    mappings: Vec<Mapping>,
}

impl DevPki {
    /// Creates a CA, the services' certificate (for `localhost`, `127.0.0.1` and `::1`) and a
    /// signing key, and writes them (with the JWKS and the client mapping) to `dir`.
    pub fn create(dir: &Path) -> Result<DevPki, PkiError> {
        Self::create_for(dir, &[])
    }

    /// Like [`DevPki::create`], with more names the services' certificate is valid for (the
    /// container names of a compose file, a host name).
    pub fn create_for(dir: &Path, hosts: &[&str]) -> Result<DevPki, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "callbackd local CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let signing = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let key_id = format!("dev-{}", &hex(&sha256(signing.public_key_raw()))[..16]);
        let mut pki = DevPki {
            dir: dir.to_owned(),
            ca_pem: ca_cert.pem(),
            ca_key,
            ca_params,
            service: ClientIdentity {
                cert_pem: String::new(),
                key_pem: String::new(),
                sha256: String::new(),
            },
            signing_der: signing.serialize_der(),
            key_id,
            mappings: Vec::new(),
        };
        pki.service = pki.issue("callback-services", Some(hosts))?;
        pki.map(
            &pki.service.sha256.clone(),
            "callback-services",
            &["*:service"],
        );
        let jwks = serde_json::json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": pki.key_id,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.public_key_raw()),
        }]});
        pki.write("ca.pem", &pki.ca_pem)?;
        pki.write("service.pem", &pki.service.cert_pem)?;
        pki.write("service-key.pem", &pki.service.key_pem)?;
        pki.write("jwks.json", &jwks.to_string())?;
        // The master key is kept across restarts: the data it protects outlives a restart
        // (`callbackd dev` keeps its database), and a new key would open none of it.
        if !pki.path("master.key").exists() {
            pki.write(
                "master.key",
                &format!(
                    "# master keys of personal data, current first (docs/SECURITY.md)\n{}\n",
                    callback_vault::MasterKeys::generate_text("dev-1")
                ),
            )?;
        }
        pki.write_mappings()?;
        Ok(pki)
    }

    /// A client certificate for `subject`, mapped to `permissions` (`"<tenant>:<role>"`);
    /// the mapping file is rewritten, so issue client certificates before starting services.
    pub fn client(
        &mut self,
        subject: &str,
        permissions: &[&str],
    ) -> Result<ClientIdentity, PkiError> {
        let identity = self.issue(subject, None)?;
        self.map(&identity.sha256, subject, permissions);
        self.write_mappings()?;
        Ok(identity)
    }

    /// A token for `subject` with `permissions`, valid for `ttl_seconds`.
    pub fn token(
        &self,
        subject: &str,
        permissions: &[&str],
        ttl_seconds: u64,
    ) -> Result<String, PkiError> {
        self.token_with(serde_json::json!({
            "sub": subject,
            "permissions": permissions,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now(),
            "exp": now() + ttl_seconds,
        }))
    }

    /// A token with exactly these claims (tests of expired, foreign or malformed tokens).
    pub fn token_with(&self, claims: serde_json::Value) -> Result<String, PkiError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        let key = jsonwebtoken::EncodingKey::from_ed_der(&self.signing_der);
        Ok(jsonwebtoken::encode(&header, &claims, &key)?)
    }

    /// Writes `contents` to `name` in the PKI's folder; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf, PkiError> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).map_err(|source| PkiError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The settings a service reads to serve TLS with the services' certificate, accept these
    /// tokens and client certificates.
    pub fn settings(&self) -> Vec<(String, String)> {
        let path = |name: &str| self.path(name).display().to_string();
        vec![
            ("CALLBACK_TLS".into(), "on".into()),
            ("CALLBACK_TLS_CERT".into(), path("service.pem")),
            ("CALLBACK_TLS_KEY".into(), path("service-key.pem")),
            ("CALLBACK_TLS_CA".into(), path("ca.pem")),
            ("CALLBACK_CLIENT_CERTS".into(), path("client-certs.json")),
            ("CALLBACK_JWKS_FILE".into(), path("jwks.json")),
            ("CALLBACK_JWT_ISSUER".into(), ISSUER.into()),
            ("CALLBACK_JWT_AUDIENCE".into(), AUDIENCE.into()),
            ("CALLBACK_MASTER_KEY_FILE".into(), path("master.key")),
        ]
    }

    /// A certificate for `subject`; with `server_hosts`, one a server presents for
    /// `localhost`, the loopback addresses and those hosts (and a client too).
    fn issue(
        &self,
        subject: &str,
        server_hosts: Option<&[&str]>,
    ) -> Result<ClientIdentity, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let names = match server_hosts {
            Some(hosts) => std::iter::once("localhost")
                .chain(hosts.iter().copied())
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, subject);
        if server_hosts.is_some() {
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            sha256: hex(&sha256(cert.der())),
        })
    }

    fn map(&mut self, sha256: &str, subject: &str, permissions: &[&str]) {
        self.mappings.push(Mapping {
            sha256: sha256.into(),
            subject: subject.into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
        });
    }

    fn write_mappings(&self) -> Result<(), PkiError> {
        let clients: Vec<serde_json::Value> = self
            .mappings
            .iter()
            .map(|m| {
                serde_json::json!({
                    "sha256": m.sha256,
                    "subject": m.subject,
                    "permissions": m.permissions,
                })
            })
            .collect();
        let json = serde_json::to_string_pretty(&serde_json::json!({ "clients": clients }))
            .unwrap_or_default();
        self.write("client-certs.json", &json)?;
        Ok(())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
