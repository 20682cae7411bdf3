//! Identities and access, as an outside client meets them: every service over real TLS, real
//! tokens from a signer the services trust (and from one they do not), client certificates.
//! Every RPC comes from the published descriptors, so a new RPC is covered without touching
//! this test.

#![allow(clippy::unwrap_used)]

use callback_kit::ServiceKind;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ClaimNextRequest, IngestBusinessEventRequest, PublishPolicyRequest, PublishTenantRequest,
    Subject,
};
use callback_tests::raw::{rpcs, Rpc};
use callback_tests::{token, Bearer, System};
use serde_json::json;
use tonic::Code;

fn kind_of(rpc: &Rpc) -> Option<ServiceKind> {
    match rpc.service.as_str() {
        "Scheduling" | "EventFeed" => Some(ServiceKind::Scheduling),
        "CallLogging" => Some(ServiceKind::CallLogging),
        "ComplaintRouting" => Some(ServiceKind::ComplaintRouting),
        "Analytics" => Some(ServiceKind::Analytics),
        "IntegrationGateway" => Some(ServiceKind::IntegrationGateway),
        _ => None,
    }
}

/// Every permission a tenant can grant.
fn every_role_in(tenant: &str) -> Vec<String> {
    callback_rules::access::Role::ALL
        .iter()
        .map(|role| format!("{tenant}:{role}"))
        .collect()
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

async fn event_count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Tenant B with a published calendar, a policy and one scheduled callback; its id.
async fn tenant_b_with_a_callback(system: &System) -> String {
    let mut client = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let settings = json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["call-center"],
        "agents": [{"agent_id": "b-agent", "pools": ["call-center"]},
                   {"agent_id": "b-agent-2", "pools": ["call-center"]}]
    });
    client
        .publish_tenant(PublishTenantRequest {
            tenant_id: "tenant-b".into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
    let policy = json!({
        "policy_id": "repair-closed", "name": "维修回访",
        "trigger": {"event_type": "repair_order.closed"},
        "steps": [{"name": "within-week", "owner": {"kind": "pool", "pool": "call-center"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]
    });
    client
        .publish_policy(PublishPolicyRequest {
            tenant_id: "tenant-b".into(),
            policy_json: policy.to_string(),
        })
        .await
        .unwrap();
    let ingested = client
        .ingest_business_event(IngestBusinessEventRequest {
            tenant_id: "tenant-b".into(),
            source: "dms".into(),
            source_event_id: "ro-1".into(),
            event_type: "repair_order.closed".into(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            subject: Some(Subject {
                subject_id: "customer-1".into(),
                name: "王五".into(),
                phones: vec!["13700137000".into()],
                ..Default::default()
            }),
            attributes_json: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    ingested.scheduled[0].callback_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_but_health_needs_valid_credentials() {
    let system = System::start(&ServiceKind::ALL).await;
    let good = token("sup-1", &["tenant-a:supervisor"]);
    let mut foreign_signer = callback_devpki::DevPki::create(
        &std::env::temp_dir().join(format!("callback-foreign-pki-{}", std::process::id())),
    )
    .unwrap();
    let stranger = foreign_signer.client("stranger", &["*:admin"]).unwrap();
    let pki = &callback_tests::test_pki().pki;
    let now = chrono::Utc::now().timestamp();
    let claims = |overrides: serde_json::Value| {
        let mut claims = json!({"sub": "sup-1", "permissions": ["tenant-a:supervisor"],
            "iss": callback_devpki::ISSUER, "aud": callback_devpki::AUDIENCE, "exp": now + 600});
        for (key, value) in overrides.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(key);
            } else {
                claims[key] = value.clone();
            }
        }
        pki.token_with(claims).unwrap()
    };
    let bad_tokens = [
        ("no token", None),
        ("garbage", Some("not-a-jwt".to_owned())),
        ("expired", Some(claims(json!({"exp": now - 3600})))),
        (
            "another issuer",
            Some(claims(json!({"iss": "someone-else"}))),
        ),
        (
            "another audience",
            Some(claims(json!({"aud": "another-app"}))),
        ),
        ("no subject", Some(claims(json!({"sub": null})))),
        (
            "another signer",
            Some(
                foreign_signer
                    .token("sup-1", &["tenant-a:supervisor"], 600)
                    .unwrap(),
            ),
        ),
        // The right signature over other content: the payload swapped.
        ("tampered", {
            let other = token("sup-1", &["*:admin"]);
            let mut parts: Vec<&str> = good.split('.').collect();
            parts[1] = other.split('.').nth(1).unwrap();
            Some(parts.join("."))
        }),
    ];
    let mut problems = Vec::new();
    let mut calls = 0;
    for rpc in rpcs() {
        let Some(kind) = kind_of(&rpc) else { continue };
        let body = rpc.request(&[("tenant_id", "tenant-a")]);
        for (what, bad) in &bad_tokens {
            let metadata = bad.as_deref().map(bearer).unwrap_or_default();
            let answer = rpc
                .call(system.anonymous_channel(kind), body.clone(), &metadata)
                .await;
            calls += 1;
            match answer {
                Err(status) if status.code() == Code::Unauthenticated => {}
                other => problems.push(format!("{} with {what}: {other:?}", rpc.path)),
            }
        }
        // A client certificate from a CA the services do not trust: the handshake fails.
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                &callback_tests::test_pki().ca_pem,
            ))
            .identity(tonic::transport::Identity::from_pem(
                &stranger.cert_pem,
                &stranger.key_pem,
            ));
        let channel =
            callback_kit::grpc::channel_with_config(system.config.url(kind), Some(tls)).unwrap();
        if let Ok(()) = rpc.call(channel, body.clone(), &[]).await {
            problems.push(format!("{} accepted a certificate of another CA", rpc.path));
        }
    }
    assert!(calls > 200, "only {calls} calls");
    assert!(problems.is_empty(), "{problems:#?}");

    // Health stays open, over TLS, without credentials.
    for kind in ServiceKind::ALL {
        let mut health =
            tonic_health::pb::health_client::HealthClient::new(system.anonymous_channel(kind));
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
        assert_eq!(answer.into_inner().status, 1, "{kind:?} SERVING");
    }
    // Plaintext is not served on a TLS listener.
    let plain = callback_kit::grpc::channel(
        &system
            .config
            .url(ServiceKind::Scheduling)
            .replace("https://", "http://"),
    )
    .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain);
    assert!(health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_err());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_gets_permission_denied_on_every_object_of_another() {
    let system = System::start(&ServiceKind::ALL).await;
    let callback_id = tenant_b_with_a_callback(&system).await;
    let tenant_a = every_role_in("tenant-a");
    let tenant_a: Vec<&str> = tenant_a.iter().map(String::as_str).collect();
    let token_a = token("a-operator", &tenant_a);
    let before = event_count(&system.db.pool).await;
    let mut problems = Vec::new();
    for rpc in rpcs() {
        let Some(kind) = kind_of(&rpc) else { continue };
        if rpc.service == "EventFeed" {
            continue; // no tenant: below
        }
        // An existing object of B and one that does not exist get the same answer.
        let mut messages = Vec::new();
        for id in [callback_id.as_str(), "00000000-0000-0000-0000-000000000001"] {
            let body = rpc.request(&[
                ("tenant_id", "tenant-b"),
                ("callback_id", id),
                ("agent_id", "a-operator"),
                ("complaint_id", id),
                ("attempt_id", id),
            ]);
            let answer = rpc
                .call(system.anonymous_channel(kind), body, &bearer(&token_a))
                .await;
            match answer {
                Err(status) if status.code() == Code::PermissionDenied => {
                    messages.push(status.message().to_owned())
                }
                other => problems.push(format!("{}: {other:?}", rpc.path)),
            }
        }
        if messages.len() == 2 && messages[0] != messages[1] {
            problems.push(format!(
                "{}: says whether the object exists: {messages:?}",
                rpc.path
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // Every refusal is on record, with the authenticated principal, and nothing else was
    // written (the records are written in the background: wait for them).
    let expected = (rpcs().len() - 1) as i64 * 2;
    let pool = system.db.pool.clone();
    let records = callback_tests::eventually(
        std::time::Duration::from_secs(30),
        "the refusals recorded",
        || {
            let pool = pool.clone();
            async move {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT payload->>'subject', coalesce(payload->>'tenant_id', '') FROM events \
                     WHERE event_type = 'AccessRefused'",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                (rows.len() as i64 >= expected).then_some(rows)
            }
        },
    )
    .await;
    assert!(
        records
            .iter()
            .all(|(subject, tenant)| subject == "a-operator" && tenant == "tenant-b"),
        "{records:?}"
    );
    assert_eq!(
        event_count(&system.db.pool).await,
        before + records.len() as i64,
        "refusals wrote other events"
    );

    // A role missing in the right tenant is refused too: BI cannot publish settings.
    let bi = token("bi-tool", &["tenant-b:bi"]);
    let mut scheduling = SchedulingClient::with_interceptor(
        system.anonymous_channel(ServiceKind::Scheduling),
        Bearer::new(&bi),
    );
    let refused = scheduling
        .publish_tenant(PublishTenantRequest {
            tenant_id: "tenant-b".into(),
            settings_json: "{}".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claims_and_logs_only_as_itself() {
    let system = System::start(&[ServiceKind::Scheduling, ServiceKind::CallLogging]).await;
    tenant_b_with_a_callback(&system).await;
    let agent = token("b-agent", &["tenant-b:agent"]);
    let mut as_agent = SchedulingClient::with_interceptor(
        system.anonymous_channel(ServiceKind::Scheduling),
        Bearer::new(&agent),
    );
    let claim = |agent_id: &str| ClaimNextRequest {
        tenant_id: "tenant-b".into(),
        agent_id: agent_id.into(),
        ..Default::default()
    };
    let refused = as_agent.claim_next(claim("other-agent")).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("agent_id"), "{refused:?}");
    let claimed = as_agent
        .claim_next(claim("b-agent"))
        .await
        .unwrap()
        .into_inner()
        .claimed
        .expect("the agent's own claim");

    // Logging for another agent is refused before anything is looked at.
    let log = rpcs()
        .into_iter()
        .find(|rpc| rpc.method == "LogCallAttempt")
        .unwrap();
    let body = log.request(&[
        ("tenant_id", "tenant-b"),
        ("agent_id", "other-agent"),
        ("callback_id", &claimed.callback_id),
        ("lease_id", &claimed.lease_id),
    ]);
    let refused = log
        .call(
            system.anonymous_channel(ServiceKind::CallLogging),
            body,
            &bearer(&agent),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Middleware claims for any agent of its tenant, and of no other tenant.
    let middleware = token("cti", &["tenant-b:middleware"]);
    let mut as_middleware = SchedulingClient::with_interceptor(
        system.anonymous_channel(ServiceKind::Scheduling),
        Bearer::new(&middleware),
    );
    as_middleware.claim_next(claim("b-agent-2")).await.unwrap();
    let mut other_tenant = claim("b-agent-2");
    other_tenant.tenant_id = "tenant-a".into();
    let refused = as_middleware.claim_next(other_tenant).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_services_subscribe_to_feeds() {
    let system = System::start(&ServiceKind::ALL).await;
    tenant_b_with_a_callback(&system).await;
    let subscribe = rpcs()
        .into_iter()
        .find(|rpc| rpc.method == "Subscribe")
        .unwrap();
    let outsiders = [
        token("admin", &["*:admin", "*:supervisor", "*:bi"]),
        token("half-service", &["tenant-b:service"]),
        token("nobody", &[]),
    ];
    for kind in ServiceKind::ALL {
        for outsider in &outsiders {
            let refused = subscribe
                .call(
                    system.anonymous_channel(kind),
                    Vec::new(),
                    &bearer(outsider),
                )
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied, "{kind:?}");
        }
        // A service's own identity (here the harness's certificate, mapped to *:service)
        // reads the feed.
        subscribe
            .call(system.channel(kind), Vec::new(), &[])
            .await
            .unwrap();
        let service = token("scheduling", &["*:service"]);
        subscribe
            .call(
                system.anonymous_channel(kind),
                Vec::new(),
                &bearer(&service),
            )
            .await
            .unwrap();
    }
    system.stop().await;
}

#[test]
fn every_rpc_declares_the_roles_it_needs() {
    let missing: Vec<String> = rpcs()
        .iter()
        .filter(|rpc| callback_rules::access::required_roles(&rpc.path).is_none())
        .map(|rpc| rpc.path.clone())
        .collect();
    assert!(missing.is_empty(), "RPCs without roles: {missing:?}");
}

/// Plaintext, where a mesh encrypts: no certificate travels, so callers and the services
/// themselves authenticate with tokens; the whole path (ingest, claim, attempt checked with
/// scheduling, outcome applied from call-logging's feed) works on tokens alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_the_services_and_their_callers_use_tokens() {
    let service_token = callback_tests::test_pki()
        .pki
        .write(
            &format!("service-{}.jwt", std::process::id()),
            &token("callback-services", &["*:service"]),
        )
        .unwrap();
    let system = System::start_with_settings(
        &[ServiceKind::Scheduling, ServiceKind::CallLogging],
        &[
            ("CALLBACK_TLS", Some("off".into())),
            ("CALLBACK_CLIENT_CERTS", None),
            (
                "CALLBACK_SERVICE_TOKEN_FILE",
                Some(service_token.display().to_string()),
            ),
        ],
    )
    .await;
    assert!(system
        .config
        .url(ServiceKind::Scheduling)
        .starts_with("http://"));
    let operator = token(
        "operator",
        &[
            "tenant-b:admin",
            "tenant-b:integration",
            "tenant-b:middleware",
            "tenant-b:supervisor",
        ],
    );
    let plain = |kind| callback_kit::grpc::channel(system.config.url(kind)).unwrap();
    // Anonymous: refused, as over TLS.
    let refused = SchedulingClient::new(plain(ServiceKind::Scheduling))
        .claim_next(ClaimNextRequest {
            tenant_id: "tenant-b".into(),
            agent_id: "b-agent".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut scheduling =
        SchedulingClient::with_interceptor(plain(ServiceKind::Scheduling), Bearer::new(&operator));
    let settings = json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["call-center"], "agents": [{"agent_id": "b-agent", "pools": ["call-center"]}]
    });
    scheduling
        .publish_tenant(PublishTenantRequest {
            tenant_id: "tenant-b".into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
    let policy = json!({"policy_id": "repair", "name": "维修回访",
        "trigger": {"event_type": "repair_order.closed"},
        "steps": [{"name": "s", "owner": {"kind": "pool", "pool": "call-center"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]});
    scheduling
        .publish_policy(PublishPolicyRequest {
            tenant_id: "tenant-b".into(),
            policy_json: policy.to_string(),
        })
        .await
        .unwrap();
    scheduling
        .ingest_business_event(IngestBusinessEventRequest {
            tenant_id: "tenant-b".into(),
            source: "dms".into(),
            source_event_id: "ro-9".into(),
            event_type: "repair_order.closed".into(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            subject: Some(Subject {
                subject_id: "customer-9".into(),
                phones: vec!["13700137000".into()],
                ..Default::default()
            }),
            attributes_json: String::new(),
        })
        .await
        .unwrap();
    let claimed = scheduling
        .claim_next(ClaimNextRequest {
            tenant_id: "tenant-b".into(),
            agent_id: "b-agent".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .claimed
        .unwrap();
    // Call-logging checks the lease with scheduling on its service token.
    let now = chrono::Utc::now();
    callback_proto::v1::call_logging_client::CallLoggingClient::with_interceptor(
        plain(ServiceKind::CallLogging),
        Bearer::new(&operator),
    )
    .log_call_attempt(callback_proto::v1::LogCallAttemptRequest {
        attempt_id: "att-9".into(),
        tenant_id: "tenant-b".into(),
        callback_id: claimed.callback_id.clone(),
        lease_id: claimed.lease_id.clone(),
        agent_id: "b-agent".into(),
        channel: "phone".into(),
        started_at: Some(callback_kit::wire::timestamp(
            now - chrono::Duration::minutes(4),
        )),
        ended_at: Some(callback_kit::wire::timestamp(
            now - chrono::Duration::minutes(1),
        )),
        disposition: Some(callback_proto::v1::Disposition {
            kind: "reached".into(),
            named_time: None,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    // Scheduling applies the outcome it reads from call-logging's feed on its service token.
    callback_tests::eventually(
        std::time::Duration::from_secs(30),
        "the outcome applied",
        || {
            let mut scheduling = scheduling.clone();
            let id = claimed.callback_id.clone();
            async move {
                let view = scheduling
                    .get_callback(callback_proto::v1::GetCallbackRequest {
                        tenant_id: "tenant-b".into(),
                        callback_id: id,
                        as_of: None,
                        without_history: true,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .callback
                    .unwrap();
                (view.status == "completed").then_some(())
            }
        },
    )
    .await;
    system.stop().await;
}
