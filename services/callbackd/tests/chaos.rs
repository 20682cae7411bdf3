//! Chaos, bounded: the five services as separate processes (`callbackd serve SERVICE`) on a
//! database of the shared server, under a steady mixed load (facts in, claims and attempts,
//! complaints), while each service in turn is killed with SIGKILL and restarted, and then every
//! connection to the database is terminated. Clients retry what was not answered OK, with the
//! same idempotency keys, as real clients do. Then the log is reconciled: every request
//! answered OK is in it exactly once, analytics equals a recount of the log, and scheduling's
//! read model equals its rebuild. (The PostgreSQL server itself is not restarted: it is shared
//! with other work here; its connections are cut instead.)

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use callback_kit::ServiceKind;
use callback_proto::v1::call_logging_client::CallLoggingClient;
use callback_proto::v1::complaint_routing_client::ComplaintRoutingClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ClaimNextRequest, ComplaintCustomer, Disposition, FileComplaintRequest,
    IngestBusinessEventRequest, LogCallAttemptRequest, PublishPolicyRequest, PublishTenantRequest,
    Subject,
};
use callback_testkit::TestDb;
use serde_json::json;
use tokio::process::{Child, Command};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;

const TENANT: &str = "chaos";

struct Cluster {
    env: Vec<(String, String)>,
    urls: HashMap<ServiceKind, String>,
    children: HashMap<ServiceKind, Child>,
    log_dir: std::path::PathBuf,
}

impl Cluster {
    fn start(&mut self, kind: ServiceKind) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{}.log", kind.name())))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_callbackd"))
            .args(["serve", kind.name()])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.children.insert(kind, child);
    }

    async fn kill(&mut self, kind: ServiceKind) {
        if let Some(mut child) = self.children.remove(&kind) {
            child.start_kill().unwrap(); // SIGKILL
            child.wait().await.unwrap();
        }
    }
}

fn channel(url: &str, ca: &str) -> Channel {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    callback_kit::grpc::channel_with_config(url, Some(tls)).unwrap()
}

/// A passing fault a client retries (the service restarting, the database away).
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Aborted
    )
}

/// Calls `call` until it answers OK or a non-transient error (returned), with the same request.
macro_rules! retried {
    ($call:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout(Duration::from_secs(5), $call).await {
                Ok(Ok(response)) => break Ok(response.into_inner()),
                Ok(Err(status)) if transient(status.code()) => {}
                Ok(Err(status)) => break Err(status),
                Err(_) => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no answer within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_each_service_and_the_connections_under_load_then_reconcile() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("callback-chaos-{}", std::process::id()));
    let pki = callback_devpki::DevPki::create(&dir).unwrap();
    let token = pki
        .token(
            "chaos-client",
            &["*:admin", "*:integration", "*:middleware", "*:supervisor"],
            3600,
        )
        .unwrap();
    let mut env: Vec<(String, String)> = pki.settings();
    env.push(("DATABASE_URL".into(), db.url()));
    env.push(("CALLBACK_DB_MAX_CONNECTIONS".into(), "4".into()));
    env.push(("RUST_LOG".into(), "warn".into()));
    let mut urls = HashMap::new();
    for kind in ServiceKind::ALL {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        env.push((kind.addr_var(), format!("127.0.0.1:{port}")));
        urls.insert(kind, format!("https://127.0.0.1:{port}"));
    }
    for variable in ["CALLBACK_MLLP_ADDR", "CALLBACK_INTEGRATION_HTTP_ADDR"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        env.push((variable.into(), format!("127.0.0.1:{port}")));
    }
    let mut cluster = Cluster {
        env,
        urls,
        children: HashMap::new(),
        log_dir: dir.clone(),
    };
    for kind in ServiceKind::ALL {
        cluster.start(kind);
    }
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let auth = move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        Ok(request)
    };
    let ca = pki.ca_pem.clone();
    let scheduling_channel = channel(&cluster.urls[&ServiceKind::Scheduling], &ca);
    let mut scheduling =
        SchedulingClient::with_interceptor(scheduling_channel.clone(), auth.clone());
    let agents: Vec<_> = (0..8)
        .map(|i| json!({"agent_id": format!("nurse-{i}"), "pools": ["desk"]}))
        .collect();
    retried!(scheduling.publish_tenant(PublishTenantRequest {
        tenant_id: TENANT.into(),
        settings_json: json!({
            "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                         "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
            "pools": ["desk"], "agents": agents, "max_leases_per_agent": 0
        })
        .to_string(),
    }))
    .unwrap();
    retried!(scheduling.publish_policy(PublishPolicyRequest {
        tenant_id: TENANT.into(),
        policy_json: json!({"policy_id": "discharge", "name": "出院回访", "trigger": {"event_type": "patient.discharged"},
            "steps": [{"name": "first", "owner": {"kind": "pool", "pool": "desk"},
                       "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]})
        .to_string(),
    }))
    .unwrap();
    let complaints_channel = channel(&cluster.urls[&ServiceKind::ComplaintRouting], &ca);
    let mut complaints = ComplaintRoutingClient::with_interceptor(complaints_channel, auth.clone());
    retried!(
        complaints.publish_routing_rules(callback_proto::v1::PublishRoutingRulesRequest {
            tenant_id: TENANT.into(),
            rules_json: callback_testkit::fixtures::nursing_routing_rules(),
        })
    )
    .unwrap();

    // The load: facts, claims with attempts, complaints; each key retried until answered OK.
    let stop = Arc::new(AtomicBool::new(false));
    let facts = {
        let (stop, mut client) = (stop.clone(), scheduling.clone());
        tokio::spawn(async move {
            let mut ok = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let id = format!("fact-{}", ok.len());
                // A retry repeats the request exactly (a changed time is another fact).
                let request = IngestBusinessEventRequest {
                    tenant_id: TENANT.into(),
                    source: "his".into(),
                    source_event_id: id.clone(),
                    event_type: "patient.discharged".into(),
                    occurred_at: Some(callback_kit::wire::timestamp(
                        chrono::Utc::now() - chrono::Duration::hours(1),
                    )),
                    subject: Some(Subject {
                        subject_id: format!("P-{id}"),
                        phones: vec!["13912345678".into()],
                        ..Default::default()
                    }),
                    attributes_json: "{}".into(),
                };
                retried!(client.ingest_business_event(request.clone())).unwrap();
                ok.push(id);
            }
            ok
        })
    };
    let attempts = {
        let stop = stop.clone();
        let mut scheduling = scheduling.clone();
        let mut calls = CallLoggingClient::with_interceptor(
            channel(&cluster.urls[&ServiceKind::CallLogging], &ca),
            auth.clone(),
        );
        tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let agent = format!("nurse-{}", n % 8);
                let claimed = retried!(scheduling.claim_next(ClaimNextRequest {
                    tenant_id: TENANT.into(),
                    agent_id: agent.clone(),
                    ..Default::default()
                }))
                .unwrap()
                .claimed;
                let Some(claimed) = claimed else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let id = format!("attempt-{n}");
                let now = chrono::Utc::now();
                let answered = retried!(calls.log_call_attempt(LogCallAttemptRequest {
                    attempt_id: id.clone(),
                    tenant_id: TENANT.into(),
                    callback_id: claimed.callback_id.clone(),
                    lease_id: claimed.lease_id.clone(),
                    agent_id: agent.clone(),
                    channel: "phone".into(),
                    started_at: Some(callback_kit::wire::timestamp(
                        now - chrono::Duration::seconds(90)
                    )),
                    ended_at: Some(callback_kit::wire::timestamp(now)),
                    disposition: Some(Disposition {
                        kind: "reached".into(),
                        named_time: None
                    }),
                    ..Default::default()
                }));
                if answered.is_ok() {
                    ok.push(id);
                }
            }
            ok
        })
    };
    let filed = {
        let (stop, mut client) = (stop.clone(), complaints.clone());
        tokio::spawn(async move {
            let mut ok = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let id = format!("complaint-{}", ok.len());
                retried!(client.file_complaint(FileComplaintRequest {
                    tenant_id: TENANT.into(),
                    source: "hotline".into(),
                    source_id: id.clone(),
                    channel: "hotline".into(),
                    customer: Some(ComplaintCustomer {
                        customer_id: format!("C-{id}"),
                        name: "王芳".into(),
                        phones: vec![]
                    }),
                    text: "the ward was too noisy at night".into(),
                    category: "noise".into(),
                    ..Default::default()
                }))
                .unwrap();
                ok.push(id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ok
        })
    };

    // The chaos: each service killed in turn and restarted, then every database connection
    // terminated.
    for kind in ServiceKind::ALL {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.kill(kind).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.start(kind);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    let (facts, attempts, filed) = (
        facts.await.unwrap(),
        attempts.await.unwrap(),
        filed.await.unwrap(),
    );

    // Reconcile: every OK in the log exactly once.
    let once = |event_type: &'static str, ids: Vec<String>, key: &'static str| {
        let pool = db.pool.clone();
        async move {
            let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
                "SELECT {key}, count(*) FROM events WHERE event_type = $1 GROUP BY 1"
            ))
            .bind(event_type)
            .fetch_all(&pool)
            .await
            .unwrap();
            let counts: HashMap<String, i64> = counts.into_iter().collect();
            for id in &ids {
                let found = counts
                    .iter()
                    .filter(|(k, _)| k.ends_with(&format!(":{id}")) || *k == id)
                    .map(|(_, n)| *n)
                    .sum::<i64>();
                assert_eq!(found, 1, "{event_type} {id}: {found} times in the log");
            }
            assert!(
                counts.values().all(|n| *n == 1),
                "{event_type}: a key recorded twice"
            );
            counts.len()
        }
    };
    let logged_facts = once("BusinessEventIngested", facts.clone(), "stream_id").await;
    let logged_attempts = once(
        "CallAttemptLogged",
        attempts.clone(),
        "payload->>'attempt_id'",
    )
    .await;
    let logged_complaints = once("ComplaintFiled", filed.clone(), "payload->>'source_id'").await;

    // Analytics equals a recount of the log, once it has caught up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (scheduled, projected) = loop {
        let (scheduled, projected): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE event_type = 'CallbackScheduled'), \
                    (SELECT count(*) FROM an_callbacks)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if scheduled == projected || tokio::time::Instant::now() > deadline {
            break (scheduled, projected);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        projected, scheduled,
        "analytics equals the log's count of scheduled callbacks"
    );
    println!(
        "chaos: 5 services killed and restarted, {terminated} connections terminated; OK and in the log once: \
         {} facts ({logged_facts} in the log), {} attempts ({logged_attempts}), {} complaints ({logged_complaints}); \
         analytics {projected} callbacks = log {scheduled}",
        facts.len(),
        attempts.len(),
        filed.len()
    );
    assert!(
        facts.len() > 10 && !attempts.is_empty() && filed.len() > 5,
        "the load ran"
    );
    for kind in ServiceKind::ALL {
        cluster.kill(kind).await;
    }

    // Scheduling's read model equals its rebuild from the log.
    let snapshot = || {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String,)>(
                "SELECT concat_ws('|', callback_id, status, attempts, claimed_by, lease_until, due_at, deadline, \
                        give_up_at, end_reason, stream_version) FROM sched_callbacks ORDER BY callback_id",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let live = snapshot().await;
    let rebuilt = Command::new(env!("CARGO_BIN_EXE_callbackd"))
        .args(["rebuild", "scheduling"])
        .envs(cluster.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap();
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert_eq!(
        snapshot().await,
        live,
        "scheduling's read model differs from its rebuild"
    );
    println!(
        "chaos: scheduling's {} callbacks equal their rebuild from the log",
        live.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
