//! The one layer every request passes: health checks go through; every other call must
//! prove a principal (a bearer token, else a mapped client certificate) holding one of the
//! roles its RPC needs in some tenant. Handlers then check the tenant of the request itself
//! with [`authorized`] (the layer cannot read the message).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use callback_rules::access::{self, Principal, Role};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use super::{RefusalLog, Security};

/// The authenticated caller of a request and the roles its RPC accepts.
#[derive(Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub roles: &'static [Role],
    /// The RPC's path.
    pub method: Arc<str>,
    refusals: Option<RefusalLog>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("subject", &self.principal.subject)
            .field("method", &self.method)
            .finish()
    }
}

impl Caller {
    /// PERMISSION_DENIED unless the caller holds one of the RPC's roles in `tenant`. The
    /// message never says whether anything of that tenant exists. Refusals are recorded.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), Status> {
        self.principal
            .may(tenant, self.roles)
            .map_err(|refusal| self.refused(Some(tenant), refusal.message))
    }

    /// For claims and attempts: agents only as themselves, middleware for any agent.
    pub fn check_agent(&self, tenant: &str, agent_id: &str) -> Result<(), Status> {
        self.principal
            .may_act_as_agent(tenant, agent_id)
            .map_err(|refusal| self.refused(Some(tenant), refusal.message))
    }

    fn refused(&self, tenant: Option<&str>, message: String) -> Status {
        if let Some(log) = &self.refusals {
            // The tenant asked for goes on record only when it is an id (hostile input is
            // not copied into the log).
            let tenant = tenant.filter(|t| callback_rules::ids::id_problem(t).is_none());
            log.record(&self.principal, &self.method, tenant, &message);
        }
        Status::permission_denied(message)
    }

    pub fn subject(&self) -> &str {
        &self.principal.subject
    }
}

/// The request's message once its caller may act in the request's tenant.
pub fn authorized<T>(request: tonic::Request<T>, tenant: fn(&T) -> &str) -> Result<T, Status> {
    authorized_caller(request, tenant).map(|(_, message)| message)
}

/// Like [`authorized`], with the caller (for checks on the agent, audit records).
pub fn authorized_caller<T>(
    request: tonic::Request<T>,
    tenant: fn(&T) -> &str,
) -> Result<(Caller, T), Status> {
    // A request without a caller never passed the layer: refuse rather than assume.
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))?;
    let message = request.into_inner();
    caller.check_tenant(tenant(&message))?;
    Ok((caller, message))
}

/// The authentication layer of every server.
#[derive(Clone)]
pub struct AuthLayer {
    security: Security,
    refusals: Option<RefusalLog>,
}

impl AuthLayer {
    /// With `refusals`, every refusal of an authenticated caller is recorded as an event.
    pub fn new(security: Security, refusals: Option<RefusalLog>) -> Self {
        Self { security, refusals }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            security: self.security.clone(),
            refusals: self.refusals.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    security: Security,
    refusals: Option<RefusalLog>,
}

impl<S: NamedService> NamedService for AuthService<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was not polled ready stays; the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        if access::is_open(path) || access::is_reflection(path) {
            // Reflection switched off is simply not served (UNIMPLEMENTED).
            return Box::pin(inner.call(request));
        }
        let authenticated = if self.security.unauthenticated {
            Ok(Arc::new(everything()))
        } else {
            authenticate(&self.security, &request)
        };
        let principal: Arc<Principal> = match authenticated {
            Ok(principal) => principal,
            Err(message) => return refuse(Status::unauthenticated(message)),
        };
        let Some(roles) = access::required_roles(path) else {
            // Not an RPC of this API: the router answers UNIMPLEMENTED; a handler reached
            // this way finds no caller and refuses.
            return Box::pin(inner.call(request));
        };
        let refusal = if path == "/callback.v1.EventFeed/Subscribe" {
            access::may_subscribe(&principal)
                .err()
                .map(|refusal| refusal.message)
        } else if !principal.holds_any(roles) {
            let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
            Some(format!(
                "permission denied: this call needs one of {}",
                names.join(", ")
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            if let Some(log) = &self.refusals {
                log.record(&principal, path, None, &message);
            }
            return refuse(Status::permission_denied(message));
        }
        let method: Arc<str> = Arc::from(path);
        request.extensions_mut().insert(Caller {
            principal,
            roles,
            method,
            refusals: self.refusals.clone(),
        });
        Box::pin(inner.call(request))
    }
}

fn refuse<E: Send + 'static>(
    status: Status,
) -> BoxFuture<Result<http::Response<tonic::body::Body>, E>> {
    Box::pin(std::future::ready(Ok(status.into_http())))
}

/// The benchmarks' baseline caller.
fn everything() -> Principal {
    Principal {
        subject: "benchmark".into(),
        grants: Role::ALL
            .into_iter()
            .map(|role| callback_rules::access::Grant {
                tenants: callback_rules::access::Tenants::All,
                role,
            })
            .collect(),
        credential: callback_rules::access::Credential::BearerToken,
    }
}

/// The caller's principal: a bearer token when one is sent (the more specific identity, e.g.
/// an agent's token over middleware's connection), else a mapped client certificate.
fn authenticate<B>(
    security: &Security,
    request: &http::Request<B>,
) -> Result<Arc<Principal>, String> {
    if let Some(value) = request.headers().get(http::header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| "authorization header is not text".to_string())?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or_else(|| "authorization header must be `Bearer <token>`".to_string())?;
        let keys = security
            .tokens
            .as_ref()
            .ok_or_else(|| "bearer tokens are not accepted by this server".to_string())?;
        return keys.verify_remembered(token.trim());
    }
    let certificate = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .and_then(|certs| certs.first().cloned());
    match certificate {
        Some(der) => security
            .certificate_principal(der.as_ref())
            .cloned()
            .map(Arc::new)
            .ok_or_else(|| "client certificate is not mapped to a principal".to_string()),
        None => Err(
            "credentials required: send `authorization: Bearer <token>` \
                     or present a client certificate"
                .to_string(),
        ),
    }
}
