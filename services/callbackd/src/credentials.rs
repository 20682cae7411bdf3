//! `callbackd dev`'s credentials: unless real keys are configured (any of the security
//! settings in the environment), a local CA, the services' certificate and a token per role
//! for the `demo` tenant, created afresh in `CALLBACK_DEV_CREDENTIALS_DIR` at every start (the
//! master key of personal data excepted: it is kept, as the data it protects is).

use std::collections::HashMap;
use std::path::PathBuf;

use callback_devpki::DevPki;

/// The settings that mean "use my own keys".
const SECURITY_SETTINGS: &[&str] = &[
    "CALLBACK_TLS",
    "CALLBACK_TLS_CERT",
    "CALLBACK_JWKS_FILE",
    "CALLBACK_CLIENT_CERTS",
];

/// The tenant the dev tokens are for.
pub const DEV_TENANT: &str = "demo";

/// How long a dev token lasts: a month of local work.
const DEV_TOKEN_SECONDS: u64 = 30 * 24 * 3600;

/// The roles a dev token is made for, with the token's subject.
const DEV_ROLES: &[(&str, &str)] = &[
    ("admin", "dev-admin"),
    ("supervisor", "dev-supervisor"),
    ("integration", "dev-his"),
    ("middleware", "dev-cti"),
    ("agent", "agent-1"),
    ("handler", "dev-handler"),
    ("bi", "dev-bi"),
];

/// A local PKI and a token per role for the `demo` tenant in `dir`, the services'
/// certificate also valid for `hosts`.
pub fn write(dir: &std::path::Path, hosts: &[&str]) -> anyhow::Result<DevPki> {
    let pki = DevPki::create_for(dir, hosts)?;
    std::fs::create_dir_all(dir.join("tokens"))?;
    for (role, subject) in DEV_ROLES {
        let permission = format!("{DEV_TENANT}:{role}");
        let token = pki.token(subject, &[&permission], DEV_TOKEN_SECONDS)?;
        pki.write(&format!("tokens/{role}.jwt"), &token)?;
    }
    Ok(pki)
}

/// Settings to serve with, and what to tell the user; `None` when the environment
/// configures security itself.
pub fn dev_credentials() -> anyhow::Result<Option<(HashMap<String, String>, String)>> {
    if SECURITY_SETTINGS
        .iter()
        .any(|key| std::env::var_os(key).is_some())
    {
        return Ok(None);
    }
    let dir = std::env::var_os("CALLBACK_DEV_CREDENTIALS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".callbackd/credentials"));
    let pki = write(&dir, &[])?;
    let shown = dir.display();
    let scheduling =
        std::env::var("CALLBACK_SCHEDULING_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let mut settings: HashMap<String, String> = pki.settings().into_iter().collect();
    // The integration gateway on this machine: MLLP in plain TCP on the loopback (as on a
    // hospital's interface network; CALLBACK_MLLP_TLS=on asks for client certificates), and a
    // webhook secret for the DMS sender `dms-demo` (kept across starts).
    if std::env::var_os("CALLBACK_MLLP_TLS").is_none() {
        settings.insert("CALLBACK_MLLP_TLS".into(), "off".into());
    }
    if std::env::var_os("CALLBACK_INTEGRATION_SECRETS_FILE").is_none() {
        let path = dir.join("integration-secrets.json");
        if !path.exists() {
            let secret = uuid::Uuid::new_v4().simple().to_string();
            let secrets = serde_json::json!({DEV_TENANT: {"dms-demo": secret}});
            std::fs::write(&path, secrets.to_string())?;
        }
        settings.insert(
            "CALLBACK_INTEGRATION_SECRETS_FILE".into(),
            path.display().to_string(),
        );
    }
    let mllp = std::env::var("CALLBACK_MLLP_ADDR").unwrap_or_else(|_| "127.0.0.1:2575".into());
    let http =
        std::env::var("CALLBACK_INTEGRATION_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let message = format!(
        "TLS and tokens for tenant `{DEV_TENANT}` are in {shown}: the CA is ca.pem, a token per \
         role (admin, supervisor, integration, middleware, agent as agent-1, handler, bi) in \
         tokens/, valid 30 days. Try:\n\n  grpcurl -cacert {shown}/ca.pem -H \"authorization: \
         Bearer $(cat {shown}/tokens/admin.jwt)\" -d '{{\"tenant_id\": \"{DEV_TENANT}\", \
         \"view\": \"due\"}}' {scheduling} callback.v1.Scheduling/ListCallbacks\n\n\
         HL7 v2 over MLLP on {mllp} (plain TCP), FHIR R4 at https://{http}/fhir/{DEV_TENANT}, \
         webhooks at https://{http}/webhooks/{DEV_TENANT}/dms (sender dms-demo, its secret in \
         {shown}/integration-secrets.json); see the README's integration examples.\n"
    );
    Ok(Some((settings, message)))
}
