//! Bearer tokens: JWTs signed by a key of the configured JWKS, from the configured issuer,
//! for the configured audience, not expired. The `permissions` claim lists
//! `"<tenant>:<role>"`; entries this system does not know (another application's
//! permissions from the same identity provider) are ignored, never widened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use callback_rules::access::{Credential, Grant, Principal};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The longest token accepted (a header of that size is already suspicious).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The longest subject accepted.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// How long a verified token is taken on trust before its signature is checked again (never
/// past its own expiry). A caller sends the same token on every call: checking an EdDSA or
/// RSA signature each time was a measurable share of a claim's CPU on a loaded machine.
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(60);
/// The most verified tokens remembered (then the memory is cleared and refilled).
const MAX_REMEMBERED: usize = 10_000;

/// The keys tokens are checked against.
pub struct TokenKeys {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    issuer: String,
    audience: String,
    /// Tokens verified recently: the principal and until when it is trusted.
    verified: Mutex<HashMap<String, (Arc<Principal>, Instant)>>,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    permissions: Vec<String>,
}

impl TokenKeys {
    /// Reads a JWKS (`{"keys": [...]}`). Only asymmetric keys: a shared secret would let every
    /// service that can check a token also mint one.
    pub fn from_jwks(json: &[u8], issuer: String, audience: String) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        if set.keys.is_empty() {
            return Err("holds no keys".into());
        }
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::OctetKey(_), _) => {
                    return Err(format!(
                        "keys[{i}] is a symmetric key; only public keys are accepted"
                    ))
                }
                (_, Some(KeyAlgorithm::EdDSA)) | (AlgorithmParameters::OctetKeyPair(_), None) => {
                    Algorithm::EdDSA
                }
                (_, Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
                (_, Some(KeyAlgorithm::ES384)) => Algorithm::ES384,
                (_, Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (_, Some(KeyAlgorithm::RS384)) => Algorithm::RS384,
                (_, Some(KeyAlgorithm::RS512)) => Algorithm::RS512,
                (_, Some(KeyAlgorithm::PS256)) => Algorithm::PS256,
                (_, Some(KeyAlgorithm::PS384)) => Algorithm::PS384,
                (_, Some(KeyAlgorithm::PS512)) => Algorithm::PS512,
                (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None) => match ec.curve {
                    EllipticCurve::P256 => Algorithm::ES256,
                    EllipticCurve::P384 => Algorithm::ES384,
                    _ => return Err(format!("keys[{i}] uses a curve not supported")),
                },
                (_, Some(other)) => {
                    return Err(format!("keys[{i}] has algorithm {other:?}, not supported"))
                }
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
            keys.push((jwk.common.key_id.clone(), algorithm, key));
        }
        Ok(TokenKeys {
            keys,
            issuer,
            audience,
            verified: Mutex::default(),
        })
    }

    /// [`TokenKeys::verify`], remembering a verified token for a minute (at most until it
    /// expires), so a caller's repeated token is checked once.
    pub fn verify_remembered(&self, token: &str) -> Result<Arc<Principal>, String> {
        let now = Instant::now();
        if let Some((principal, until)) = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            if *until > now {
                return Ok(principal.clone());
            }
        }
        let (principal, expires_in) = self.verify_with_expiry(token)?;
        let principal = Arc::new(principal);
        let until = now + expires_in.min(VERIFIED_FOR);
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(token.to_owned(), (principal.clone(), until));
        Ok(principal)
    }

    /// The principal a token proves, or why it proves nothing (said to the caller as
    /// UNAUTHENTICATED; a token carries no personal data of customers).
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        self.verify_with_expiry(token)
            .map(|(principal, _)| principal)
    }

    /// The principal and how long until the token expires.
    fn verify_with_expiry(&self, token: &str) -> Result<(Principal, std::time::Duration), String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("token is over {MAX_TOKEN_BYTES} bytes"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("token is malformed: {e}"))?;
        let candidates: Vec<_> = self
            .keys
            .iter()
            .filter(|(kid, algorithm, _)| {
                *algorithm == header.alg && (header.kid.is_none() || *kid == header.kid)
            })
            .collect();
        if candidates.is_empty() {
            return Err("token is signed by no configured key (kid or alg unknown)".into());
        }
        let mut last = String::new();
        for (_, algorithm, key) in candidates {
            let mut validation = Validation::new(*algorithm);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
            validation.leeway = 30;
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let left = std::time::Duration::from_secs(data.claims.exp.saturating_sub(now));
                    return principal(data.claims).map(|p| (p, left));
                }
                Err(error) => last = describe(error.kind()),
            }
        }
        Err(last)
    }
}

fn principal(claims: Claims) -> Result<Principal, String> {
    let subject = claims.sub;
    if subject.is_empty()
        || subject.len() > MAX_SUBJECT_BYTES
        || subject.chars().any(char::is_control)
    {
        return Err(format!(
            "token subject must be 1-{MAX_SUBJECT_BYTES} bytes without control characters"
        ));
    }
    let grants = claims
        .permissions
        .iter()
        .filter_map(|p| Grant::parse(p).ok())
        .collect();
    Ok(Principal {
        subject,
        grants,
        credential: Credential::BearerToken,
    })
}

fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match kind {
        ExpiredSignature => "token has expired".into(),
        ImmatureSignature => "token is not valid yet".into(),
        InvalidIssuer => "token is from another issuer".into(),
        InvalidAudience => "token is for another audience".into(),
        InvalidSignature => "token signature does not verify".into(),
        MissingRequiredClaim(claim) => format!("token lacks the {claim} claim"),
        InvalidAlgorithm => "token algorithm does not match its key".into(),
        _ => "token is malformed".into(),
    }
}
