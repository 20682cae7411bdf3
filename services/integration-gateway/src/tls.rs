//! TLS for the gateway's own listeners (MLLP with client certificates, HTTPS) and for
//! notifications to https:// receivers, on rustls with ring (as tonic uses), from the same
//! certificate, key and CA as the gRPC API (`CALLBACK_TLS_*`).

use std::sync::Arc;

use callback_kit::security::Tls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))
}

fn roots(ca_pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca_pem)? {
        roots
            .add(certificate)
            .map_err(|e| format!("CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The server side: with `client_certificates`, a client must present a certificate of the CA
/// (MLLP); without, none is asked for (HTTPS: tokens and signatures authenticate).
pub fn server_config(tls: &Tls, client_certificates: bool) -> Result<Arc<ServerConfig>, String> {
    let chain = certificates(&tls.cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| format!("key PEM: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if client_certificates {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&tls.ca_pem)?), provider())
                .build()
                .map_err(|e| e.to_string())?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side of notifications: the system's CA store, and the deployment's own CA when
/// TLS is configured (receivers inside the site).
pub fn client_config(tls: Option<&Tls>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    // Certificates the store holds but rustls cannot use are skipped, as browsers do.
    let native = rustls_native_certs::load_native_certs();
    for certificate in native.certs {
        let _ = roots.add(certificate);
    }
    if let Some(tls) = tls {
        for certificate in certificates(&tls.ca_pem)? {
            roots
                .add(certificate)
                .map_err(|e| format!("CA certificate: {e}"))?;
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
