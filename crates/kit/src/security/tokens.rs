//! Bearer tokens: JWTs signed by a key of the configured JWKS, from the configured issuer,
//! for the configured audience, not expired. The `permissions` claim lists
//! `"<tenant>:<role>"`; entries this system does not know (another application's
//! permissions from the same identity provider) are ignored, never widened.

use callback_rules::access::{Credential, Grant, Principal};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The longest token accepted (a header of that size is already suspicious).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The longest subject accepted.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// The keys tokens are checked against.
pub struct TokenKeys {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    issuer: String,
    audience: String,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
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
        })
    }

    /// The principal a token proves, or why it proves nothing (said to the caller as
    /// UNAUTHENTICATED; a token carries no personal data of customers).
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
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
                Ok(data) => return principal(data.claims),
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
