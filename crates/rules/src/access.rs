//! Who may call what: roles per tenant in the style Temporal uses for namespaces
//! (`"<tenant>:<role>"`, `"*:<role>"` for every tenant), what each RPC needs, and the checks a
//! handler makes on the tenant in its request. Pure: the transport layer authenticates the
//! caller and hands a [`Principal`] over; this module decides.

use std::fmt;

/// What a caller may do in a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A hospital HIS, a dealer DMS or a CRM: pushes business facts and telephony records.
    Integration,
    /// Call-center middleware: claims callbacks and reports attempts on behalf of any agent.
    Middleware,
    /// An agent at a desk: claims and logs attempts only as itself (its subject).
    Agent,
    /// A department's complaint handler: acts on and reads complaints.
    Handler,
    /// Lists, reports, full views of personal data with a reason.
    Supervisor,
    /// Publishes tenant settings, policies, questionnaires, routing rules, dispositions;
    /// erases subjects.
    Admin,
    /// Reports and CSV for BI tools.
    Bi,
    /// Another service of this system: event feeds, lease checks, facts it raises itself.
    Service,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::Integration,
        Role::Middleware,
        Role::Agent,
        Role::Handler,
        Role::Supervisor,
        Role::Admin,
        Role::Bi,
        Role::Service,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Integration => "integration",
            Role::Middleware => "middleware",
            Role::Agent => "agent",
            Role::Handler => "handler",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
            Role::Bi => "bi",
            Role::Service => "service",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The tenants a grant covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Tenants {
    /// `*`: every tenant (the services themselves, a platform operator).
    All,
    One(String),
}

/// One `"<tenant>:<role>"` entry of a token or certificate mapping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    pub tenants: Tenants,
    pub role: Role,
}

impl Grant {
    /// Reads `"<tenant>:<role>"`; the tenant is `*` or a tenant id as the API accepts it.
    pub fn parse(text: &str) -> Result<Grant, String> {
        let Some((tenant, role)) = text.rsplit_once(':') else {
            return Err(format!(
                "{} is not <tenant>:<role>",
                crate::input::excerpt(text)
            ));
        };
        let role = Role::parse(role).ok_or_else(|| {
            let known: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
            format!(
                "{} is not a role (one of {})",
                crate::input::excerpt(role),
                known.join(", ")
            )
        })?;
        let tenants = if tenant == "*" {
            Tenants::All
        } else if crate::ids::id_problem(tenant).is_none() {
            Tenants::One(tenant.to_owned())
        } else {
            return Err(format!(
                "{} is not a tenant id or *",
                crate::input::excerpt(tenant)
            ));
        };
        Ok(Grant { tenants, role })
    }

    fn covers(&self, tenant: &str) -> bool {
        match &self.tenants {
            Tenants::All => true,
            Tenants::One(one) => one == tenant,
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenants {
            Tenants::All => write!(f, "*:{}", self.role),
            Tenants::One(tenant) => write!(f, "{tenant}:{}", self.role),
        }
    }
}

/// How a caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    BearerToken,
    ClientCertificate,
}

/// An authenticated caller: a subject (the token's `sub`, or the name a client certificate is
/// mapped to) and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub grants: Vec<Grant>,
    pub credential: Credential,
}

/// Why a call is refused. The message never says whether the object asked for exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
}

impl Principal {
    /// Whether the caller holds any of `roles` in any tenant (what the transport layer checks
    /// before the request is even decoded).
    pub fn holds_any(&self, roles: &[Role]) -> bool {
        self.grants.iter().any(|grant| roles.contains(&grant.role))
    }

    /// The roles of `roles` the caller holds in `tenant`.
    pub fn roles_in<'a>(
        &'a self,
        tenant: &'a str,
        roles: &'a [Role],
    ) -> impl Iterator<Item = Role> + 'a {
        self.grants
            .iter()
            .filter(move |grant| grant.covers(tenant) && roles.contains(&grant.role))
            .map(|grant| grant.role)
    }

    /// Whether the caller holds one of `roles` for `tenant`.
    pub fn may(&self, tenant: &str, roles: &[Role]) -> Result<(), Refusal> {
        if self.roles_in(tenant, roles).next().is_some() {
            Ok(())
        } else {
            Err(Refusal {
                message: format!(
                    "permission denied: {} needs one of {} for this tenant",
                    self.subject_excerpt(),
                    role_list(roles)
                ),
            })
        }
    }

    /// For claims and attempts: an agent acts only as itself, middleware for any agent.
    pub fn may_act_as_agent(&self, tenant: &str, agent_id: &str) -> Result<(), Refusal> {
        if self.roles_in(tenant, &[Role::Middleware]).next().is_some() {
            return Ok(());
        }
        if self.roles_in(tenant, &[Role::Agent]).next().is_some() && self.subject == agent_id {
            return Ok(());
        }
        Err(Refusal {
            message: format!(
                "permission denied: agent_id must be the caller's own ({}) unless it holds middleware for this tenant",
                self.subject_excerpt()
            ),
        })
    }

    fn subject_excerpt(&self) -> String {
        crate::input::excerpt(&self.subject)
    }
}

fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// RPCs anyone may call: health checks (load balancers, orchestrators).
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// Server reflection: open unless switched off (it lists the API, nothing of a tenant).
pub fn is_reflection(path: &str) -> bool {
    path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// What each RPC of the API needs, by its HTTP/2 path. An RPC missing here is refused to
/// everybody (fail closed); a test checks every RPC of the descriptor set is listed.
pub fn required_roles(path: &str) -> Option<&'static [Role]> {
    use Role::*;
    let method = path.strip_prefix("/callback.v1.")?;
    let roles: &'static [Role] = match method {
        "Scheduling/PublishTenant"
        | "Scheduling/PublishPolicy"
        | "CallLogging/PublishQuestionnaire"
        | "CallLogging/PublishDispositions"
        | "ComplaintRouting/PublishRoutingRules"
        | "Analytics/PublishAnalyticsSettings"
        | "Scheduling/EraseSubject" => &[Admin],
        "Scheduling/IngestBusinessEvent" => &[Integration, Service],
        "Scheduling/ClaimNext" | "CallLogging/LogCallAttempt" => &[Agent, Middleware],
        "Scheduling/GetCallback" | "Scheduling/ListCallbacks" | "Scheduling/GetCallbacks" => {
            &[Supervisor, Admin, Middleware, Service]
        }
        "Scheduling/CheckLeases" => &[Service, Middleware],
        // The integration gateway (a service) forwards records its senders posted, having
        // checked their credentials for the tenant itself.
        "CallLogging/IngestTelephonyRecord" => &[Integration, Middleware, Service],
        "CallLogging/GetCallRecord" => &[Supervisor, Admin],
        "ComplaintRouting/FileComplaint" => &[Integration, Middleware, Agent, Supervisor],
        "ComplaintRouting/Acknowledge"
        | "ComplaintRouting/AddProgress"
        | "ComplaintRouting/RequestInformation"
        | "ComplaintRouting/ReceiveInformation"
        | "ComplaintRouting/Resolve"
        | "ComplaintRouting/Reject"
        | "ComplaintRouting/Transfer" => &[Handler, Supervisor],
        "ComplaintRouting/GetComplaint" | "ComplaintRouting/ListComplaints" => {
            &[Handler, Supervisor, Admin]
        }
        "Analytics/Report" | "Analytics/ExportCsv" | "Analytics/MonthlySummary" => {
            &[Bi, Supervisor, Admin]
        }
        "Analytics/SpotCheckSample" => &[Supervisor],
        "EventFeed/Subscribe" => &[Service],
        "IntegrationGateway/PublishIntegrationSettings" | "IntegrationGateway/RetryDeadLetter" => {
            &[Admin]
        }
        "IntegrationGateway/GetIntegrationSettings" | "IntegrationGateway/ListDeadLetters" => {
            &[Admin, Supervisor]
        }
        _ => return None,
    };
    Some(roles)
}

/// The event feeds carry every tenant's events: only a service holding `service` for every
/// tenant (`*:service`) may subscribe.
pub fn may_subscribe(principal: &Principal) -> Result<(), Refusal> {
    let all = principal
        .grants
        .iter()
        .any(|g| g.role == Role::Service && g.tenants == Tenants::All);
    if all {
        Ok(())
    } else {
        Err(Refusal {
            message: "permission denied: event feeds are for the services (*:service)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(subject: &str, grants: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            grants: grants.iter().map(|g| Grant::parse(g).unwrap()).collect(),
            credential: Credential::BearerToken,
        }
    }

    #[test]
    fn grants_read_tenant_and_role() {
        assert_eq!(
            Grant::parse("hospital-1:agent").unwrap(),
            Grant {
                tenants: Tenants::One("hospital-1".into()),
                role: Role::Agent
            }
        );
        assert_eq!(Grant::parse("*:service").unwrap().tenants, Tenants::All);
        assert!(Grant::parse("hospital-1")
            .unwrap_err()
            .contains("<tenant>:<role>"));
        assert!(Grant::parse("hospital-1:root")
            .unwrap_err()
            .contains("not a role"));
        assert!(Grant::parse(":agent").is_err());
        assert_eq!(Grant::parse("t:bi").unwrap().to_string(), "t:bi");
    }

    #[test]
    fn a_tenant_grant_does_not_reach_another_tenant() {
        let supervisor = principal("sup-1", &["a:supervisor"]);
        assert!(supervisor.may("a", &[Role::Supervisor]).is_ok());
        let refused = supervisor.may("b", &[Role::Supervisor]).unwrap_err();
        assert!(refused.message.contains("permission denied"));
        assert!(supervisor.may("a", &[Role::Admin]).is_err());
        let operator = principal("ops", &["*:supervisor"]);
        assert!(operator.may("b", &[Role::Supervisor]).is_ok());
    }

    #[test]
    fn agents_act_only_as_themselves_middleware_for_anyone() {
        let agent = principal("agent-7", &["a:agent"]);
        assert!(agent.may_act_as_agent("a", "agent-7").is_ok());
        assert!(agent.may_act_as_agent("a", "agent-8").is_err());
        assert!(agent.may_act_as_agent("b", "agent-7").is_err());
        let middleware = principal("cti", &["a:middleware"]);
        assert!(middleware.may_act_as_agent("a", "agent-8").is_ok());
        assert!(middleware.may_act_as_agent("b", "agent-8").is_err());
    }

    #[test]
    fn feeds_need_service_for_every_tenant() {
        assert!(may_subscribe(&principal("scheduling", &["*:service"])).is_ok());
        assert!(may_subscribe(&principal("x", &["a:service"])).is_err());
        assert!(may_subscribe(&principal("x", &["*:admin"])).is_err());
    }

    #[test]
    fn health_is_open_and_unknown_methods_are_closed() {
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(!is_open("/callback.v1.Scheduling/ClaimNext"));
        assert!(required_roles("/callback.v1.Scheduling/Nope").is_none());
        assert!(required_roles("/other.v1.Scheduling/ClaimNext").is_none());
        assert_eq!(
            required_roles("/callback.v1.EventFeed/Subscribe"),
            Some(&[Role::Service][..])
        );
    }
}
